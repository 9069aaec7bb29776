# Snakemake job (rule zipf): the rank-frequency figure of one corpus x tokenizer, png + pdf.
from tokenfair.counts import zipf
from tokenfair.io import job_log

with job_log(snakemake.log[0]):
    zipf(
        dict(zip(snakemake.params.splits, snakemake.input.frequency)),
        [snakemake.output.png, snakemake.output.pdf],
        title=snakemake.params.title,
    )
