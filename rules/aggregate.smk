# Aggregate stage: every run of the grid + the train frequency tables -> <results_dir>/summary/ (tables as
# Parquet + CSV, figures, README.md), each output captioned for `snakemake --report` (report/*.rst).
# `aggregate` needs the WHOLE grid; `aggregate_partial` (summary/partial/) aggregates the runs that exist
# now and lists the missing grid points; run it by name, e.g. after `--keep-going` left failures, or while
# another snakemake runs the grid: `snakemake aggregate_partial --nolock` (or scripts/aggregate.py --partial).
# Uses AGG, AGG_PARTIAL and the agg_* functions from rules/common.smk.


report: "../report/workflow.rst"


rule aggregate:
    input:
        per_token=agg_run_files("per_token"),
        run_json=agg_run_files("run_json"),
        norms=agg_run_files("norms"),
        frequency=agg_frequency_tables(),
    output:
        tables=agg_reported({"tables": AGG["tables"], "figures": []}, "Summary"),
        figures=agg_reported({"tables": [], "figures": AGG["figures"]}, "Summary"),
        readme=report(AGG["readme"][0], caption="../report/readme.rst", category="Summary",
                      subcategory="README", labels={"file": "README.md"}),
    params:
        partial=False,
        rare_percentile=CFG["frequency"]["rare_percentile"],
        formats=CFG["aggregate"]["figure_formats"],
    log:
        os.path.join(LOGS, "aggregate", "aggregate.log"),
    benchmark:
        os.path.join(BENCH, "aggregate", "aggregate.tsv")
    threads: 2
    resources:
        mem_mb=agg_mem_mb,
        runtime=agg_runtime,
        **CPU_JOB,
    conda:
        "../envs/aggregate.yaml"
    script:
        "../scripts/aggregate.py"


rule aggregate_partial:
    input:
        frequency=ancient(agg_frequency_tables()),
    output:
        tables=agg_reported({"tables": AGG_PARTIAL["tables"], "figures": []}, "Partial summary"),
        figures=agg_reported({"tables": [], "figures": AGG_PARTIAL["figures"]}, "Partial summary"),
        readme=report(AGG_PARTIAL["readme"][0], caption="../report/readme.rst", category="Partial summary",
                      subcategory="README", labels={"file": "README.md"}),
    params:
        partial=True,
        present=agg_present_runs,
        rare_percentile=CFG["frequency"]["rare_percentile"],
        formats=CFG["aggregate"]["figure_formats"],
    log:
        os.path.join(LOGS, "aggregate", "aggregate_partial.log"),
    benchmark:
        os.path.join(BENCH, "aggregate", "aggregate_partial.tsv")
    threads: 2
    resources:
        mem_mb=agg_mem_mb,
        runtime=agg_runtime,
        **CPU_JOB,
    conda:
        "../envs/aggregate.yaml"
    script:
        "../scripts/aggregate.py"


if PUBLISHED:

    rule publish:
        input:
            tables=[f for f in AGG["tables"] if f.endswith(".parquet")],
        output:
            PUBLISHED,
        params:
            command=PUBLISH_COMMAND,
        log:
            os.path.join(LOGS, "aggregate", "publish.log"),
        benchmark:
            os.path.join(BENCH, "aggregate", "publish.tsv")
        threads: 1
        resources:
            mem_mb=lambda w, attempt: 2000 * attempt,
            runtime=lambda w, attempt: 10 * attempt,
            **CPU_JOB,
        conda:
            "../envs/aggregate.yaml"
        script:
            "../scripts/publish.py"
