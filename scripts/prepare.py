# Snakemake job (rule prepare): read one corpus, write its documents.parquet.
from tokenfair.corpus import prepare
from tokenfair.io import job_log

with job_log(snakemake.log[0]):
    prepare(snakemake.params.spec, snakemake.wildcards.corpus, snakemake.output.documents)
