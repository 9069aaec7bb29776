# Snakemake job (rule train): train one grid point and write its run folder (tokenfair.train.run_job).
# SIGTERM (SLURM time limit, preemption) checkpoints into <run>/ckpt/ and exits 143; the rerun resumes.
import os

from tokenfair import plan, train

train.run_job(
    snakemake.log[0],
    snakemake.params.settings,
    out_dir=os.path.dirname(snakemake.output.per_token),
    **plan.run_arguments(snakemake.input, snakemake.params.tokenizer, snakemake.params.corpus),
)
