# Snakemake job (rule count): count one token shard (numba) into its frequency table.
from tokenfair.counts import count_split
from tokenfair.io import job_log

with job_log(snakemake.log[0]):
    count_split(
        snakemake.input.tokens,
        snakemake.input.tokenizer,
        snakemake.output.frequency,
        base=snakemake.params.bin_base,
        threads=snakemake.threads,
    )
