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
    # the train split's first {docs} documents (train.train_docs): the counts of what such a run trains on
    "frequency_docs": "{corpus}/tok~{tok}/frequency/train~docs{docs}.parquet",
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
RUN_NORMS = "norms.parquet"  # embedding / unembedding row norms per token id at every evaluation step
RUN_CHECKPOINT = "ckpt"  # not a declared output: it survives a failed or killed job
RUN_TENSORBOARD = "tensorboard"  # TensorBoard event files (train.tensorboard); not a declared output
# The outputs of a train job, by name (rules/train.smk); RUN_MODEL is a folder.
RUN_FILES = {"per_token": RUN_PER_TOKEN, "train_log": RUN_LOG, "run_json": RUN_JSON, "norms": RUN_NORMS,
             "model": RUN_MODEL}
RUN_SUMMARISED = ("per_token", "run_json", "norms")  # what the aggregation reads: a run is finished with them

# The summary of a study (tokenfair.aggregate) and the partial one (the runs that exist now).
SUMMARY = "summary"
PARTIAL = os.path.join(SUMMARY, "partial")
# the summary tables (each .parquet and .csv)
SUMMARY_TABLES = ("runs", "runs_by_seed", "bins", "bins_by_seed", "bin_curves", "bin_curves_by_seed", "decay_effects",
                  "embedding_norms", "embedding_norms_by_seed", "embedding_norm_curves",
                  "embedding_norm_curves_by_seed", "regime_map")
SUMMARY_README = "README.md"
FIGURE_DIR = "figures"  # the summary's figures, under its folder
MEMBERSHIP = "membership"  # summary table: the studies of each grid point (long form)
# The axes that change how many epochs a run sees: a study varying one gets the regime_map figure (loss change
# against epochs; tokenfair.report)
REGIME_AXES = ("train_docs", "steps")

# Job logs and Snakemake benchmarks: <results_dir>/logs/<rule>/..., <results_dir>/benchmarks/<rule>/...
LOGS = "logs"
BENCH = "benchmarks"

# The run-path axes: model and weight_decay first, then the train settings a study varies in AXIS_ORDER,
# then seed. AXIS_ORDER is every train setting that can be an axis. Its order is part of every run's path:
# reordering it re-paths, hence reruns, every run with two or more of these axes; a new train setting goes
# at its end.
FIXED_AXES = ("model", "weight_decay")
AXIS_ORDER = (
    "steps", "batch_size", "grad_accum", "seq_len", "lr", "min_lr_ratio", "warmup_steps", "betas", "eps",
    "grad_clip", "decay_group", "tie_embeddings", "embedding_decay_alpha", "embedding_decay_rows", "dropout",
    "label_smoothing", "z_loss", "eval_every", "eval_train_tokens", "eval_val_tokens", "eval_batch_size",
    "log_every", "checkpoint_every", "device", "threads", "precision", "compile",
    "tensorboard", "eval_ood_tokens", "eval_schedule", "eval_train_final",
    "train_docs",
)


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


def run_files(results_dir: str, corpus: str, tok: str, run: str) -> dict[str, str]:
    """A run folder ("dir") and each of its files (RUN_FILES)."""
    folder = path("run", results_dir, corpus=corpus, tok=tok, run=run)
    return {"dir": folder, **{kind: os.path.join(folder, name) for kind, name in RUN_FILES.items()}}


def summary_dir(results_dir: str, partial: bool = False) -> str:
    return os.path.join(results_dir, PARTIAL if partial else SUMMARY)


def log(results_dir: str, rule: str, *parts: str) -> str:
    """A job's log: <results_dir>/logs/<rule>/<parts>.log (parts may hold wildcards)."""
    return os.path.join(results_dir, LOGS, rule, *parts) + ".log"


def benchmark(results_dir: str, rule: str, *parts: str) -> str:
    """A job's Snakemake benchmark: <results_dir>/benchmarks/<rule>/<parts>.tsv."""
    return os.path.join(results_dir, BENCH, rule, *parts) + ".tsv"


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
