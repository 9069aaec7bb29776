"""The results layout: one home for every path pattern of the pipeline.

Patterns are relative to a config's `results_dir` and use Snakemake-style `{wildcards}`:
corpus, tok (tokenizer id), split, run (the `axis~value/...` grid path of one training target).
"""

from __future__ import annotations

import os

SPLITS = ("train", "validation", "test")
SPECIAL_TOKENS = ("<|endoftext|>", "<|pad|>")  # end-of-document, padding: ids 0 and 1 of a trained BPE
EOD_TOKEN, PAD_TOKEN = SPECIAL_TOKENS

PATTERNS = {
    "documents": "{corpus}/documents.parquet",
    "tokenizer": "{corpus}/tok~{tok}/tokenizer.json",
    "tokens": "{corpus}/tok~{tok}/tokens/{split}.npy",
    "tokens_index": "{corpus}/tok~{tok}/tokens/{split}.index.parquet",
    "frequency": "{corpus}/tok~{tok}/frequency/{split}.parquet",
    "zipf": "{corpus}/tok~{tok}/frequency/zipf.{ext}",
    "run": "{corpus}/tok~{tok}/runs/{run}",
    # an evaluation-only corpus ({other}, `eval_only: true`) tokenized by a training corpus's tokenizer
    "ood_tokens": "{corpus}/tok~{tok}/ood/{other}.npy",
    "ood_tokens_index": "{corpus}/tok~{tok}/ood/{other}.index.parquet",
}

# Files inside one run folder (PATTERNS["run"]).
RUN_PER_TOKEN = "per_token.parquet"
RUN_LOG = "train_log.csv"
RUN_JSON = "run.json"
RUN_MODEL = "model"
RUN_NORMS = "norms.parquet"  # final embedding / unembedding row norms per token id
RUN_CHECKPOINT = "ckpt"  # not a declared output: it survives a failed or killed job
RUN_TENSORBOARD = "tensorboard"  # TensorBoard event files (train.tensorboard); not a declared output


OOD_PREFIX = "ood-"


def ood_split(corpus: str) -> str:
    """The evaluation split name of an evaluation-only corpus (per_token.parquet's `split`): ood-<corpus>."""
    return f"{OOD_PREFIX}{corpus}"


def is_split(name: str) -> bool:
    """A split name of per_token.parquet: train, validation, test, or ood-<corpus>."""
    return name in SPLITS or (name.startswith(OOD_PREFIX) and len(name) > len(OOD_PREFIX))


def pattern(name: str, results_dir: str) -> str:
    """The Snakemake pattern of one output kind under results_dir, wildcards left in."""
    return os.path.join(results_dir, PATTERNS[name])


def path(name: str, results_dir: str, **wildcards) -> str:
    """A concrete path: pattern(name) with every wildcard filled."""
    return pattern(name, results_dir).format(**wildcards)


def format_value(value) -> str:
    """How a grid value is spelled in a path segment: 0 -> '0.0' for decays, True -> 'true'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def is_null(value) -> bool:
    """An unset grid value: None, or NaN / NA as a table gives it back."""
    if value is None:
        return True
    import pandas as pd

    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # not a scalar
        return False


def same_value(a, b) -> bool:
    """Whether two grid values are the same setting: both null, equal booleans, equal numbers or equal text
    (1, 1.0 and numpy numbers alike; a boolean never equals a number)."""
    import numpy as np

    if is_null(a) or is_null(b):
        return is_null(a) and is_null(b)
    if isinstance(a, (bool, np.bool_)) or isinstance(b, (bool, np.bool_)):
        return isinstance(a, (bool, np.bool_)) and isinstance(b, (bool, np.bool_)) and bool(a) == bool(b)
    if isinstance(a, (int, float, np.number)) and isinstance(b, (int, float, np.number)):
        return float(a) == float(b)
    return str(a) == str(b)


def run_subpath(axes: dict) -> str:
    """`axis~value/axis~value/...` for an ordered mapping of grid axes (Snakemake Paramspace style)."""
    return "/".join(f"{k}~{format_value(v)}" for k, v in axes.items())


def run_regex(axes) -> str:
    """The regex a run path matches for an ordered list of axis names (the {run} wildcard's constraint): the
    first two (model, weight_decay) and the last (seed) always, any of the others in between."""
    axes = list(axes)
    head, middle, tail = axes[:2], axes[2:-1], axes[-1:]
    parts = "/".join(f"{a}~[^/]+" for a in head)
    if middle:
        parts += "(?:/(?:" + "|".join(middle) + ")~[^/]+)*"
    return parts + "".join(f"/{a}~[^/]+" for a in tail)


def parse_run_subpath(subpath: str) -> dict[str, str]:
    """Inverse of run_subpath, values kept as strings."""
    out = {}
    for seg in subpath.strip("/").split("/"):
        key, sep, value = seg.partition("~")
        if not sep:
            raise ValueError(f"run path segment {seg!r} is not of the form axis~value")
        out[key] = value
    return out
