# Aggregate stage: every run of the grid + the train frequency tables -> <results_dir>/summary/ (tables as
# Parquet + CSV, figures, README.md), each output captioned for `snakemake --report` (report/*.rst).
# `aggregate` needs the WHOLE grid; `aggregate_partial` (summary/partial/) aggregates the runs that exist
# now and lists the missing grid points; run it by name, e.g. after `--keep-going` left failures, or while
# another snakemake runs the grid: `snakemake aggregate_partial --nolock` (or scripts/aggregate.py --partial).
# Uses CFG, R, LOGS, BENCH from rules/common.smk.
from tokenfair import aggregate as tfagg


report: "../report/workflow.rst"


def agg_run_files(kind):
    return [tfagg.run_files(CFG, p)[kind] for p in tfconfig.grid(CFG)]


def agg_frequency_tables():
    return sorted({tfagg.frequency_file(CFG, c, t) for c, t in tfconfig.training_corpora(CFG)})


def agg_present_runs(wildcards):
    """The grid points that have finished now (planning time): a change of this set reruns the partial
    aggregation (params rerun trigger) without making it depend on, and so rerun, the training jobs."""
    present, _ = tfagg.find_runs(CFG)
    return sorted(os.path.join(p["corpus"], "tok~" + p["tok"], p["run"]) for p in present)


def agg_reported(outputs, category):
    """report() on every table (CSV) and figure (first format) and the README, with a caption each."""
    figure_ext = CFG["aggregate"]["figure_formats"][0]
    out = []
    for f in outputs["tables"]:
        name, ext = os.path.splitext(os.path.basename(f))
        out.append(report(f, caption=f"../report/{name}.rst", category=category, subcategory="tables",
                          labels={"table": name}) if ext == ".csv" else f)
    for f in outputs["figures"]:
        stem, ext = os.path.splitext(os.path.basename(f))
        head, _, split = stem.rpartition("_")
        kind, split = (head, split) if split in paths.SPLITS else (stem, "all")
        out.append(report(f, caption=f"../report/figure_{kind}.rst", category=category, subcategory="figures",
                          labels={"figure": kind, "split": split}) if ext == "." + figure_ext else f)
    return out


def agg_mem_mb(wildcards, threads, attempt):
    # peak RSS measured by benchmarks/bench_aggregate.py for 1,000 runs x 152k ids x 2 splits x 11 eval
    # points: ~560 MB per worker process (one run + imports), ~650 MB for the main process (the summary tables)
    return int((800 + 700 * threads) * attempt)


AGG = tfagg.summary_outputs(CFG)
AGG_PARTIAL = tfagg.summary_outputs(CFG, partial=True)


rule aggregate:
    input:
        per_token=agg_run_files("per_token"),
        run_json=agg_run_files("run_json"),
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
        runtime=lambda wildcards, attempt: (10 + len(tfconfig.grid(CFG)) // 20) * attempt,
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
        runtime=lambda wildcards, attempt: (10 + len(tfconfig.grid(CFG)) // 20) * attempt,
        **CPU_JOB,
    conda:
        "../envs/aggregate.yaml"
    script:
        "../scripts/aggregate.py"
