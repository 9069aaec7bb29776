# Snakemake job (rules tokenize and tokenize_ood): encode documents.parquet into a uint32 token shard + index.
# tokenize: one split ({split}); tokenize_ood: every document of an evaluation-only corpus ({other}) through a
# training corpus's tokenizer (ood/<other>.npy, the same format as tokens/<split>.npy). The file keeps its name
# from when it served tokenize only: Snakemake records a script rule's `script:` line, and a new one would
# rerun every tokenize job of an existing results folder, hence every run.
from tokenfair.io import job_log
from tokenfair.tokenization import encode_split

with job_log(snakemake.log[0]):
    encode_split(
        snakemake.input.documents,
        snakemake.input.tokenizer,
        snakemake.wildcards.get("split"),  # None: all splits, in documents.parquet order
        snakemake.output.tokens,
        snakemake.output.index,
        eod=snakemake.params.eod,
        tokenizer_spec=snakemake.params.tokenizer,
        threads=snakemake.threads,
    )
