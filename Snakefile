# tokenfair: what weight decay does to each token of a language model's vocabulary.
# This file only wires the workflow; the stages are in rules/, the science in the tokenfair package.
from snakemake.utils import min_version

from tokenfair import config as tfconfig
from tokenfair import plan as tfplan

min_version("9.0")


# The embedded default, unless --configfile names another study (which then replaces it instead of being
# merged into it: two studies' corpora must never mix). Read with yaml first, so that a syntax error names
# its file, line and column (Snakemake parses a --configfile itself, before this file; `python -m
# tokenfair.config check FILE` names the line of an error there).
if not workflow.overwrite_configfiles:
    tfconfig.read_yaml("config.yaml")

    configfile: "config.yaml"


# Validated once: tokenfair.config.resolve applies the JSON schema (and its defaults) first, so that a bad key
# is reported in one line naming it, then the checks a schema cannot express (files, shapes), all before any
# job runs. Snakemake's `config` takes the resolved values (what the report's captions show). The plan
# (tokenfair.plan) derives the grid, its paths and settings from it, once; the rules read it, and the
# aggregate and publish jobs get it as a param.
CFG = tfconfig.resolve(config)
config.update(CFG)
PLAN = tfplan.build(CFG)


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/resources.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/aggregate.smk"


rule all:
    default_target: True
    input:
        all_targets,
