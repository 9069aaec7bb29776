# Shared by every stage: the resolved config, the results layout, the grid, and resource functions.
import os

from tokenfair import paths

# CFG: the resolved config (Snakefile).

# Jobs (local, SLURM, or in a conda env) import the tokenfair package from this workflow's folder.
os.environ.update(PYTHONPATH=os.pathsep.join(p for p in (workflow.basedir, os.environ.get("PYTHONPATH")) if p))
R = CFG["results_dir"]
LOGS = os.path.join(R, "logs")
BENCH = os.path.join(R, "benchmarks")


def P(name):
    """The Snakemake pattern of an output kind (see tokenfair.paths)."""
    return paths.pattern(name, R)


wildcard_constraints:
    corpus=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    tok=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    split="|".join(paths.SPLITS),


def data_targets():
    """Frequency tables and Zipf figures of every training corpus x tokenizer, and its shard of every
    evaluation-only corpus (ood/<other>.npy)."""
    out = []
    for corpus, tok in tfconfig.training_corpora(CFG):
        for split in tfconfig.corpus_splits(CFG["corpora"][corpus]):
            out.append(paths.path("frequency", R, corpus=corpus, tok=tok, split=split))
        out += [paths.path("zipf", R, corpus=corpus, tok=tok, ext=e) for e in ("png", "pdf")]
        out += [paths.path("ood_tokens", R, corpus=corpus, tok=tok, other=o) for o in tfconfig.eval_corpora(CFG)]
    return out


# The training grid, indexed once: (corpus, tok, run path) -> grid point. Every per-job lookup goes through it
# (planning a 4,500-run grid must not rescan the grid per job).
GRID_INDEX = tfconfig.grid_index(CFG)


def train_point(wildcards):
    """The grid point a train job's wildcards (corpus, tok, run) name."""
    try:
        return GRID_INDEX[(wildcards.corpus, wildcards.tok, wildcards.run)]
    except KeyError:
        raise WorkflowError(
            f"{wildcards.corpus}/tok~{wildcards.tok}/runs/{wildcards.run} is not a point of this config's grid"
        ) from None


_SETTINGS = {}


def point_settings(point):
    """A grid point's settings as plain data (tokenfair.config.run_settings), computed once per point."""
    key = (point["corpus"], point["tok"], point["run"])
    if key not in _SETTINGS:
        _SETTINGS[key] = tfconfig.run_settings(CFG, point)
    return _SETTINGS[key]


def run_targets():
    """Every output of every selected grid point (`only:` narrows the grid; default all of it)."""
    out = []
    for p in tfconfig.select(CFG):
        folder = paths.path("run", R, corpus=p["corpus"], tok=p["tok"], run=p["run"])
        out += [os.path.join(folder, f) for f in (paths.RUN_PER_TOKEN, paths.RUN_LOG, paths.RUN_JSON, paths.RUN_NORMS,
                                                  paths.RUN_MODEL)]
    return out


def summary_targets():
    """The study's summary (rules/aggregate.smk). It needs the WHOLE grid, so it is left out when `only:`
    narrows the grid (then `snakemake aggregate_partial` summarises the runs that exist)."""
    if CFG.get("only"):
        return []
    from tokenfair.aggregate import summary_outputs

    return [f for files in summary_outputs(CFG).values() for f in files]


def all_targets(wildcards=None):
    return data_targets() + run_targets() + summary_targets() + (PUBLISHED if not CFG.get("only") else [])


# --- Cluster resources, the plan's cost, the SLURM check (tokenfair.resources, docs/slurm.md) -------------
import atexit
import shutil
import sys
from collections import Counter

from snakemake_interface_executor_plugins.settings import ExecMode
from tokenfair import resources as tfres

SITE = tfres.site(CFG)  # partitions, account, GPU model: environment over the config's `resources:`

# Every CPU-only rule adds `**CPU_JOB` to its resources (the CPU partition and account when configured, no GPU).
CPU_JOB = tfres.placement(SITE, gpu=False)


_ESTIMATES = {}


def run_estimate(point):
    """Size, time and GPU memory of one grid point's training run (tokenfair.resources.TrainEstimate)."""
    key = (point["corpus"], point["tok"], point["run"])
    if key not in _ESTIMATES:
        _ESTIMATES[key] = tfres.estimate_train(point_settings(point), tfres.vocab_size(CFG, point["tok"]), SITE)
    return _ESTIMATES[key]


def train_estimate(wildcards):
    return run_estimate(train_point(wildcards))


# The train rule's resources: `resources: **TRAIN_RESOURCES` (one GPU, runtime/memory from the preset and
# steps, growing per attempt, SIGTERM before the time limit).
TRAIN_RESOURCES = tfres.train_resources(CFG, SITE, train_estimate)

# Planning-time error when a selected run needs more GPU memory than the configured GPU model has.
tfres.check_gpu_memory(SITE, ((p["model"], run_estimate(p)) for p in tfconfig.select(CFG)))


onstart:
    # Before any submission: without SLURM's commands the executor fails job by job with a confusing error.
    if workflow.executor_plugin.name == "slurm":
        missing = [c for c in ("sbatch", "squeue", "sinfo") if shutil.which(c) is None]
        if missing:
            raise WorkflowError(
                f"--profile slurm / --executor slurm: SLURM's {', '.join(missing)} not found on the PATH of this "
                "machine. Run on the cluster's login node (or load its slurm module), or run locally without "
                "--profile slurm; `snakemake --profile slurm -n` plans without SLURM."
            )


def _plan_summary():
    """After `snakemake -n`: one line with jobs per rule, GPUs and estimated GPU-hours of what would run."""
    if not workflow.dryrun or workflow.scheduler is None or workflow.exec_mode != ExecMode.DEFAULT:
        return
    dag = workflow.dag
    jobs = [j for j in dag.jobs if dag.needrun(j) and not j.is_norun]
    if not jobs:
        return  # snakemake said "Nothing to be done"
    gpus = sum(int(j.resources.get("gpu", 0)) for j in jobs)
    runs = [train_estimate(j.wildcards) for j in jobs if j.rule.name == "train"]
    gpu_hours = sum(e.hours for e in runs if e.gpu)
    cpu_hours = sum(e.hours for e in runs if not e.gpu)
    counts = Counter(j.rule.name for j in jobs)
    print(tfres.summary_line(counts, gpus, gpu_hours, cpu_hours, SITE), file=sys.stderr)


atexit.register(_plan_summary)


# --- Train stage (rules/train.smk) --------------------------------------------------------------------------
RUN_DIR = P("run")
# `model~<m>/weight_decay~<wd>/[<axis>~<v>/...]seed~<s>` with this config's axes, in grid order.
RUN_REGEX = paths.run_regex(tfconfig.axis_names(CFG))


def train_settings(wildcards):
    """The train job's settings (params), from the grid index."""
    return point_settings(train_point(wildcards))


def train_inputs(wildcards):
    """The corpus x tokenizer's tokenizer.json and its token shards: train, each held-out split, each
    evaluation-only corpus (ood-<name>, through this tokenizer); the train frequency table when the run's
    decay of the embedding rows follows token frequency (train.embedding_decay_alpha)."""
    w = {"corpus": wildcards.corpus, "tok": wildcards.tok}
    out = {"tokenizer": paths.path("tokenizer", R, **w)}
    for split in tfconfig.corpus_splits(CFG["corpora"][wildcards.corpus]):
        out[split] = paths.path("tokens", R, split=split, **w)
    for other in tfconfig.eval_corpora(CFG):
        out[paths.ood_split(other)] = paths.path("ood_tokens", R, other=other, **w)
    if train_settings(wildcards)["train"]["embedding_decay_alpha"] is not None:
        out["frequency"] = paths.path("frequency", R, split="train", **w)
    return out


def train_threads(wildcards):
    return train_settings(wildcards)["train"]["threads"]


# --- Aggregate stage (rules/aggregate.smk) ------------------------------------------------------------------
from tokenfair import aggregate as tfagg


def agg_run_files(kind):
    return [tfagg.run_files(CFG, p)[kind] for p in tfconfig.grid(CFG)]


def agg_frequency_tables():
    return sorted({tfagg.frequency_file(CFG, c, t) for c, t in tfconfig.training_corpora(CFG)})


def agg_present_runs(wildcards):
    """The grid points that have finished now (planning time): a change of this set reruns the partial
    aggregation (params rerun trigger) without making it depend on, and so rerun, the training jobs."""
    present, _ = tfagg.find_runs(CFG)
    return sorted(os.path.join(p["corpus"], f"tok~{p['tok']}", p["run"]) for p in present)


AGG_SPLITS = tfagg.study_splits(CFG)  # train, validation, test, ood-<corpus>: the figures' split names


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
        kind, split = tfagg.parse_figure_stem(stem, AGG_SPLITS)  # split None: a figure of the whole study
        split = split if split is not None and paths.is_split(split) else "all"
        out.append(report(f, caption=f"../report/figure_{kind}.rst", category=category, subcategory="figures",
                          labels={"figure": kind, "split": split}) if ext == f".{figure_ext}" else f)
    return out


def agg_mem_mb(wildcards, threads, attempt):
    # peak RSS measured by benchmarks/bench_aggregate.py for 1,000 runs x 152k ids x 2 splits x 11 eval
    # points: ~560 MB per worker process (one run + imports), ~650 MB for the main process (the summary tables)
    return int((800 + 700 * threads) * attempt)


AGG = tfagg.summary_outputs(CFG)
AGG_PARTIAL = tfagg.summary_outputs(CFG, partial=True)


def agg_runtime(wildcards, attempt):
    return (10 + len(tfconfig.grid(CFG)) // 20) * attempt


# --- Publish (rules/aggregate.smk): the study's docs page, when aggregate.publish_dir is set ----------------
from tokenfair import publish as tfpublish

PUBLISHED = tfpublish.outputs(CFG)
PUBLISH_COMMAND = "snakemake publish" + "".join(  # the target first: --configfile takes several values
    f" --configfile {os.path.relpath(f, workflow.basedir)}" for f in workflow.overwrite_configfiles)
