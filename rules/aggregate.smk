# Aggregate stage: every run of the grid + the train frequency tables -> <results_dir>/summary/ (tables as
# Parquet + CSV, figures, README.md), each output captioned for `snakemake --report` (report/*.rst).
# `aggregate` needs the WHOLE grid; `aggregate_partial` (summary/partial/) aggregates the runs that exist
# now and lists the missing grid points; run it by name, e.g. after `--keep-going` left failures, or while
# another snakemake runs the grid: `snakemake aggregate_partial --nolock` (or scripts/aggregate.py --partial).
# The jobs get the plan as plain data (params.plan), never the raw config.
# Uses PLAN, AGG, AGG_PARTIAL and the agg_* functions from rules/common.smk, SITE from rules/resources.smk.


rule aggregate:
    input:
        per_token=agg_run_files("per_token"),
        run_json=agg_run_files("run_json"),
        norms=agg_run_files("norms"),
        frequency=PLAN.frequency_tables(),
    output:
        tables=agg_reported({"tables": AGG["tables"], "figures": []}, "Summary"),
        figures=agg_reported({"tables": [], "figures": AGG["figures"]}, "Summary"),
        readme=report(
            AGG["readme"][0],
            caption="../report/readme.rst",
            category="Summary",
            subcategory="README",
            labels={"file": "README.md"},
        ),
    log:
        LOG("aggregate", "aggregate"),
    benchmark:
        BENCH("aggregate", "aggregate")
    conda:
        "../envs/aggregate.yaml"
    threads: 2
    resources:
        **tfres.aggregate_resources(SITE, len(PLAN.points)),
    params:
        partial=False,
        plan=PLAN.to_dict(),
    script:
        "../scripts/aggregate.py"


use rule aggregate as aggregate_partial with:
    input:
        frequency=ancient(PLAN.frequency_tables()),
    output:
        tables=agg_reported({"tables": AGG_PARTIAL["tables"], "figures": []}, "Partial summary"),
        figures=agg_reported({"tables": [], "figures": AGG_PARTIAL["figures"]}, "Partial summary"),
        readme=report(
            AGG_PARTIAL["readme"][0],
            caption="../report/readme.rst",
            category="Partial summary",
            subcategory="README",
            labels={"file": "README.md"},
        ),
    log:
        LOG("aggregate", "aggregate_partial"),
    benchmark:
        BENCH("aggregate", "aggregate_partial")
    params:
        partial=True,
        present=agg_present_runs,
        plan=PLAN.to_dict(),


if PUBLISHED:

    rule publish:
        input:
            tables=[f for f in AGG["tables"] if f.endswith(".parquet")],
        output:
            PUBLISHED,
        log:
            LOG("aggregate", "publish"),
        benchmark:
            BENCH("aggregate", "publish")
        conda:
            "../envs/aggregate.yaml"
        threads: 1
        resources:
            **tfres.publish_resources(SITE),
        params:
            command=PUBLISH_COMMAND,
            plan=PLAN.to_dict(),
        script:
            "../scripts/publish.py"
