# Snakemake job (rules count, count_docs): count one token shard (numba), or its first documents, into its
# frequency table.
from tokenfair.counts import count_split
from tokenfair.io import job_log

with job_log(snakemake.log[0]):
    count_split(
        snakemake.input.tokens,
        snakemake.input.tokenizer,
        snakemake.output.frequency,
        base=snakemake.params.bin_base,
        threads=snakemake.threads,
        index_path=snakemake.input.get("index"),
        docs=snakemake.params.get("docs"),
    )
