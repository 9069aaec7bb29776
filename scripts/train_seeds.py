# Snakemake job (rules train_seeds_*, resources.pack_seeds): every seed of one grid point trained at once, one
# process per seed (tokenfair.train.run_job, as the rule train's job), each with its run folder and its log.
# SIGTERM (SLURM time limit, preemption) goes on to every seed: each checkpoints into its <run>/ckpt/ and the
# job exits 143; the rerun resumes them all. A seed that fails stops the others (they checkpoint) and fails the
# job, naming it and its log.
import multiprocessing
import os
import signal
import sys
from multiprocessing.connection import wait

from tokenfair import plan, train
from tokenfair.io import job_log


def train_seeds(log, seeds, settings, seed_logs, out_dirs, arguments) -> int:
    """Start a process per seed, wait for them all; the job's exit status: 0, 143 (stopped by SIGTERM) or 1."""
    spawn = multiprocessing.get_context("spawn")  # fresh processes: no forked torch state
    procs, stopping = {}, []

    def forward(signum, frame):
        stopping.append(signum)
        for p in procs.values():
            p.terminate()  # SIGTERM: the run checkpoints at its next step

    signal.signal(signal.SIGTERM, forward)
    for seed, s, seed_log, out_dir in zip(seeds, settings, seed_logs, out_dirs):
        p = spawn.Process(target=train.run_job, args=(seed_log, s), kwargs={"out_dir": out_dir, **arguments})
        p.start()
        procs[seed] = p
        log.info("seed %s: pid %d, log %s", seed, p.pid, seed_log)
        if stopping:
            p.terminate()
    running = dict(procs)
    while running:
        wait([p.sentinel for p in running.values()])
        for seed in [k for k, p in running.items() if p.exitcode is not None]:
            if running.pop(seed).exitcode != 0:
                for other in running.values():  # the others checkpoint now: their rerun resumes
                    other.terminate()
    stopped = [s for s in seeds if procs[s].exitcode in (143, -signal.SIGTERM)]
    failed = [s for s in seeds if procs[s].exitcode not in (0, 143, -signal.SIGTERM)]
    for seed in failed:
        msg = f"seed {seed} failed (exit {procs[seed].exitcode}); see {seed_logs[seeds.index(seed)]}"
        log.error("%s", msg)
        print(msg, file=sys.__stderr__, flush=True)
    if stopped:
        log.warning("seeds %s stopped by SIGTERM after their checkpoint; the rerun resumes them", ", ".join(stopped))
    return 1 if failed else 143 if stopped else 0


if __name__ == "__main__":  # spawn runs this file again in each seed's process, as __mp_main__: nothing to do there
    with job_log(snakemake.log.job) as log:
        seeds = snakemake.params.seeds
        code = train_seeds(
            log,
            seeds,
            snakemake.params.settings,
            snakemake.log.seeds,
            [os.path.dirname(snakemake.output[f"per_token_{s}"]) for s in seeds],
            plan.run_arguments(snakemake.input, snakemake.params.tokenizer, snakemake.params.corpus),
        )
    sys.exit(code)
