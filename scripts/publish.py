# Snakemake job (rule publish): the study's summary as a docs page (tokenfair.publish) in aggregate.publish_dir.
import os

from tokenfair import plan as tfplan
from tokenfair import publish
from tokenfair.io import job_log

with job_log(snakemake.log[0]) as log:
    plan = tfplan.from_dict(snakemake.params.plan)
    summary = os.path.dirname(snakemake.input.tables[0])
    files = publish.publish(plan, summary, plan["aggregate"]["publish_dir"], snakemake.params.command)
    log.info("wrote %s", ", ".join(files))
