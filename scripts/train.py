# Snakemake job (rule train): train one grid point and write its run folder (tokenfair.train.run).
# SIGTERM (SLURM time limit, preemption) checkpoints into <run>/ckpt/ and exits 143; the rerun resumes.
import os
import sys

from tokenfair import train
from tokenfair.io import job_log

with job_log(snakemake.log[0]) as log:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no progress bars in the job log
    inputs = snakemake.input
    try:
        train.run(
            snakemake.params.settings,
            train_tokens=inputs.train,
            eval_tokens={k: inputs[k] for k in inputs.keys()
                         if k not in ("train", "train_index", "tokenizer", "frequency")},
            tokenizer_json=inputs.tokenizer,
            out_dir=os.path.dirname(snakemake.output.per_token),
            tokenizer_spec=snakemake.params.tokenizer,
            train_frequency=inputs.frequency,
            corpus_spec=snakemake.params.corpus,
            train_index=inputs.get("train_index"),
        )
    except train.Preempted as exc:
        log.warning("%s", exc)
        print(f"Preempted: {exc}", file=sys.__stderr__, flush=True)
        sys.exit(143)
