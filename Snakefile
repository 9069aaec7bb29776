# tokenfair: what weight decay does to each token of a language model's vocabulary.
# This file only wires the workflow; the stages are in rules/, the science in the tokenfair package.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


validate(config, "tokenfair/config.schema.yaml")


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/aggregate.smk"


rule all:
    input:
        all_targets,
    default_target: True
