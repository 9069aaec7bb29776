# Snakemake job (rule publish): the study's summary as a docs page (tokenfair.publish) in aggregate.publish_dir.
import os

from tokenfair import config as tfconfig
from tokenfair import publish
from tokenfair.io import job_log

with job_log(snakemake.log[0]) as log:
    cfg = tfconfig.resolve(snakemake.config, check_files=False)
    summary = os.path.dirname(snakemake.input.tables[0])
    files = publish.publish(cfg, summary, cfg["aggregate"]["publish_dir"], snakemake.params.command)
    log.info("wrote %s", ", ".join(files))
