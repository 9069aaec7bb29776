# Shared by every stage: the resolved config, the results layout, the grid, and resource functions.
import os

from tokenfair import config as tfconfig
from tokenfair import paths

CFG = tfconfig.resolve(config)
R = CFG["results_dir"]
LOGS = os.path.join(R, "logs")
BENCH = os.path.join(R, "benchmarks")


def P(name):
    """The Snakemake pattern of an output kind (see tokenfair.paths)."""
    return paths.pattern(name, R)


wildcard_constraints:
    corpus=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    tok=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    split="|".join(paths.SPLITS),


def data_targets():
    out = []
    for corpus, tok in tfconfig.training_corpora(CFG):
        for split in tfconfig.corpus_splits(CFG["corpora"][corpus]):
            out.append(paths.path("frequency", R, corpus=corpus, tok=tok, split=split))
        out += [paths.path("zipf", R, corpus=corpus, tok=tok, ext=e) for e in ("png", "pdf")]
    return out


def all_targets(wildcards=None):
    return data_targets()
