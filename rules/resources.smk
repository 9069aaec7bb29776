# Cluster resources, the plan's cost, the SLURM check (tokenfair.resources, docs/slurm.md). Every formula is
# in tokenfair.resources; this file wires it to the rules and to `snakemake -n`.
import atexit
import math
import shutil
import subprocess
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


def train_share(wildcards):
    """The train job's share of a GPU (several runs per GPU on a site with GPU shards, docs/slurm.md)."""
    return tfres.gpu_share(train_estimate(wildcards), SITE, PLAN["resources"]["runs_per_gpu"])


# The train rule's resources: `resources: **TRAIN_RESOURCES` (a GPU or a share of one, runtime/memory
# from the preset and steps, growing per attempt, SIGTERM before the time limit).
TRAIN_RESOURCES = tfres.train_resources(PLAN, SITE, train_estimate, train_share)

# Seed packs (resources.pack_seeds, docs/slurm.md; none by default): point (run path without its seed) -> the
# seeds one job trains at once; PACK_RULES: one rule per tuple of seeds (rules/train.smk) -> (seeds, {point} regex).
SEED_PACKS = tfres.seed_packs(PLAN, run_estimate, SITE)
PACK_RULES = tfres.pack_rules(SEED_PACKS)


def pack_points(wildcards):
    """The grid points, one per seed, of a pack job's wildcards (corpus, tok, point)."""
    return [
        PLAN.point(wildcards.corpus, wildcards.tok, f"{wildcards.point}/seed~{seed}")
        for seed in SEED_PACKS[wildcards.point]
    ]


def pack_estimates(wildcards):
    return [run_estimate(p) for p in pack_points(wildcards)]


def pack_inputs(wildcards):
    """A pack job's inputs: its seeds' (the same data, tokenizer and frequency table for every seed)."""
    return PLAN.train_inputs(pack_points(wildcards)[0])


def pack_settings(wildcards):
    return tfres.pack_settings([PLAN.settings(p) for p in pack_points(wildcards)])


def pack_threads(wildcards):
    return PLAN.settings(pack_points(wildcards)[0])["train"]["threads"]


# A pack's resources: one whole GPU, the sums of its seeds' host memory and time limits (tokenfair.resources).
PACK_RESOURCES = tfres.pack_resources(PLAN, SITE, pack_estimates)

# Planning-time errors: a selected run needs more GPU memory than the configured GPU model has; several runs
# per GPU asked for on a site without GPU shards.
tfres.check_gpu_memory(SITE, ((p["model"], run_estimate(p)) for p in PLAN.selected))
tfres.check_gpu_sharing(SITE, PLAN["resources"]["runs_per_gpu"])


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
        if (
            SITE.gpu_shards
            and "shard" not in subprocess.run(["sinfo", "-h", "-o", "%G"], capture_output=True, text=True).stdout
        ):
            raise WorkflowError(
                f"resources.gpu_shards is {SITE.describe('gpu_shards')}, but no node of this cluster has GPU "
                "shards (sinfo lists no gres/shard): unset it, or ask your admins for gres/shard (docs/slurm.md)"
            )


def _plan_summary():
    """After `snakemake -n`: one line with jobs per rule, GPUs and estimated GPU-hours of what would run."""
    if not workflow.dryrun or workflow.scheduler is None or workflow.exec_mode != ExecMode.DEFAULT:
        return
    dag = workflow.dag
    jobs = [j for j in dag.jobs if dag.needrun(j) and not j.is_norun]
    if not jobs:
        return  # snakemake said "Nothing to be done"
    runs = [j.wildcards for j in jobs if j.rule.name == "train"]
    gpu_runs = [(train_estimate(w), train_share(w).fraction) for w in runs if train_estimate(w).gpu]
    packs = [tfres.pack_cost(pack_estimates(j.wildcards)) for j in jobs if j.rule.name in PACK_RULES]
    # whole GPUs, a share of one counted as its fraction, a pack as one
    gpus = math.ceil(round(sum(f for _, f in gpu_runs) + sum(g for g, _, _ in packs), 6))
    gpu_hours = sum(e.hours * f for e, f in gpu_runs) + sum(h for _, h, _ in packs)
    cpu_hours = sum(e.hours for e in map(train_estimate, runs) if not e.gpu) + sum(c for _, _, c in packs)
    counts = Counter(j.rule.name for j in jobs)
    print(tfres.summary_line(counts, gpus, gpu_hours, cpu_hours, SITE), file=sys.stderr)


atexit.register(_plan_summary)
