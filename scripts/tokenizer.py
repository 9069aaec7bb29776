# Snakemake job (rule tokenizer): train a byte-level BPE on the train split, or copy a given tokenizer.json.
from tokenfair.io import job_log
from tokenfair.tokenization import set_threads, train_tokenizer

set_threads(snakemake.threads)  # before tokenizers starts its thread pool
with job_log(snakemake.log[0]):
    train_tokenizer(snakemake.params.spec, snakemake.input.documents, snakemake.output.tokenizer, snakemake.wildcards.tok)
