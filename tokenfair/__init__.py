"""tokenfair: what weight decay does to each token of a language model's vocabulary.

The science lives here as importable, unit-tested functions; the Snakemake workflow (Snakefile, rules/,
scripts/) only wires files to these functions.
"""

__version__ = "0.1.0"
