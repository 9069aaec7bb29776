# Cluster resources, the plan's cost, the SLURM check (tokenfair.resources, docs/slurm.md). Every formula is
# in tokenfair.resources; this file wires it to the rules and to `snakemake -n`.
import atexit
import shutil
import sys
from collections import Counter

from snakemake_interface_executor_plugins.settings import ExecMode

from tokenfair import resources as tfres

SITE = tfres.site(PLAN)  # partitions, account, GPU model: environment over the config's `resources:`


_ESTIMATES = {}


def run_estimate(point):
    """Size, time and GPU memory of one grid point's training run (tokenfair.resources.TrainEstimate)."""
    key = (point["corpus"], point["tok"], point["run"])
    if key not in _ESTIMATES:
        _ESTIMATES[key] = tfres.estimate_train(PLAN.settings(point), tfres.vocab_size(PLAN, point["tok"]), SITE)
    return _ESTIMATES[key]


def train_estimate(wildcards):
    return run_estimate(train_point(wildcards))


# The train rule's resources: `resources: **TRAIN_RESOURCES` (one GPU, runtime/memory from the preset and
# steps, growing per attempt, SIGTERM before the time limit).
TRAIN_RESOURCES = tfres.train_resources(PLAN, SITE, train_estimate)

# Planning-time error when a selected run needs more GPU memory than the configured GPU model has.
tfres.check_gpu_memory(SITE, ((p["model"], run_estimate(p)) for p in PLAN.selected))


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
