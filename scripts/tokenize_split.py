# Snakemake job (rule tokenize): encode one split of documents.parquet into a uint32 token shard + index.
from tokenfair.io import job_log
from tokenfair.tokenization import encode_split

with job_log(snakemake.log[0]):
    encode_split(
        snakemake.input.documents,
        snakemake.input.tokenizer,
        snakemake.wildcards.split,
        snakemake.output.tokens,
        snakemake.output.index,
        eod=snakemake.params.eod,
        tokenizer_spec=snakemake.params.tokenizer,
        threads=snakemake.threads,
    )
