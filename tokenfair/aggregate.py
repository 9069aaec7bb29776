"""Streaming the runs of a grid into the summary tables (`<results_dir>/summary/`); the figures and README
drawn from them are `tokenfair.report`'s.

Each run is read once (only the columns the metrics need), reduced over the id axis by numba kernels to
per (eval point, frequency bin, rare/frequent) sums, and dropped: memory is bounded by one run per worker,
whatever the size of the grid. Everything after that works on the small per-run results.

Outputs (each table as .parquet and .csv; the metric definitions, seed statistics and decay effects are in
`tokenfair.metrics`):
- runs: one row per run: its axes (every axis of every study; an unset value is null), parameter count, its
  regime from run.json (embedding_share: embedding and output-head parameters over all, a tied matrix once;
  tokens_per_id: the tokens it trains on per tokenizer id; epochs: steps x tokens per step over those tokens;
  cumulative_decay: the sum over steps of lr_t x weight decay), final step, run folder, studies (";"-joined
  names of the config's studies it belongs to, "main" = the top-level grid); per split `<split>_<metric>` at
  the final step: tokens, types_seen, loss_avg, loss_balanced, acc_avg, acc_balanced, ppl, loss_rare,
  loss_frequent, rare_gap, spearman, spearman_change (of log train count and the per-type loss change from
  the run of the same seed at the smallest decay). Splits: train, validation, test and ood-<corpus> per
  evaluation-only corpus, all binned by the run's own train counts (of the training corpus's train split, or
  of its first train.train_docs documents).
- bins: one row per run x split x train-frequency bin at the final step, with the bin's learning speed
  (learning_speed, of the bin's balanced loss curve; learning_speed_token, the paper's mean of the ids' own)
  and steps_to_80pct.
- bin_curves: one row per run x split x eval step x bin (the loss-over-training curves).
- runs_by_seed, bins_by_seed, bin_curves_by_seed: the same metrics over seeds, `<metric>_mean`, `_std`,
  `_ci95` (half-width of the 95% Student-t interval; std and ci95 are NaN for a single seed), n_seeds (and
  in runs_by_seed the list of seeds).
- decay_effects: per other axes x split x bin x decay: the change of the bin's token-balanced loss from the
  smallest decay, its paired-seed 95% interval, a paired t-test over seeds (t_stat, p_value), its
  Holm-Bonferroni correction over every bin x decay of one other axes x split (p_holm, significant,
  holm_family_size), the bin's least-squares slope of loss against decay, the exact sign-flip permutation test
  over seeds (p_perm) and a verdict (up / down / none / inconclusive; tokenfair.metrics).
- embedding_norms: one row per run x matrix (embedding / unembedding) x train-frequency bin: the mean L2 row
  norm of the bin's ids in the final model (norms.parquet's last step), and n_ids; embedding_norms_by_seed
  over seeds. embedding_norm_curves (and _by_seed): the same at every evaluation step (a `step` column).
- regime_map: per other axes x seed x split x bin, the bin's loss change from the smallest to the largest decay,
  paired per seed, with the run's train_docs and epochs when runs.csv has them (metrics.regime_map).
- partial aggregation only: missing (the grid points without a finished run).
- membership: one row per grid point x study it belongs to, with the point's axes and run folder
  (tokenfair.publish selects a study's rows with it; the README does not list it).

Heavy imports (numpy, pandas, pyarrow, numba, matplotlib) happen inside functions, so that the workflow can
import the output names at planning time cheaply.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import Counter
from typing import Any, Iterable

from . import paths
from .errors import DataError
from .io import read_json
from .paths import summary_dir
from .report import figure_names, parse_figure_stem  # noqa: F401 (the workflow's names of the figures)

log = logging.getLogger("tokenfair.aggregate")


# Below this many MB of per_token.parquet the aggregation runs in one process (env TOKENFAIR_PARALLEL_MIN_MB).
PARALLEL_MIN_MB = 200
PARALLEL_MIN_RUNS_FIGURES = 50
PER_TOKEN_COLUMNS = ["step", "split", "token_id", "loss_sum", "count", "correct"]
NORM_COLUMNS = ["token_id", "embedding_norm", "unembedding_norm"]
MATRICES = ("embedding", "unembedding")
RUN_METRICS = ("tokens", "types_seen", "loss_avg", "loss_balanced", "acc_avg", "acc_balanced", "ppl",
               "loss_rare", "loss_frequent", "rare_gap", "spearman", "spearman_change")
BIN_METRICS = ("n_seen", "occurrences", "loss_avg", "loss_balanced", "acc_avg", "acc_balanced",
               "learning_speed", "learning_speed_token", "steps_to_80pct")
CURVE_METRICS = ("n_seen", "loss_avg", "loss_balanced", "acc_avg")
# runs.csv's regime of each run, from its run.json (tokenfair.train.regime; epochs: tokenfair.runio.run_info)
REGIME_COLUMNS = ("embedding_share", "tokens_per_id", "epochs", "cumulative_decay")


# --------------------------------------------------------------------------------------------------
# names of the outputs (cheap: used at planning time)


def summary_outputs(plan, partial: bool = False) -> dict[str, list[str]]:
    """Every file the aggregation of a plan writes: {"tables": [...], "figures": [...], "readme": [path]}."""
    d = summary_dir(plan["results_dir"], partial)
    tables = [*paths.SUMMARY_TABLES, *(["missing"] if partial else []), paths.MEMBERSHIP]
    formats = plan["aggregate"]["figure_formats"]
    return {
        "tables": [os.path.join(d, f"{t}.{e}") for t in tables for e in ("csv", "parquet")],
        "figures": [os.path.join(d, paths.FIGURE_DIR, f"{f}.{e}") for f in figure_names(plan.splits, plan)
                    for e in formats],
        "readme": [os.path.join(d, paths.SUMMARY_README)],
    }


# --------------------------------------------------------------------------------------------------
# the runs of a grid


def run_files(plan, point: dict) -> dict[str, str]:
    """A point's run folder ("dir") and its files (tokenfair.plan.Plan.run_files)."""
    return plan.run_files(point)


def frequency_file(plan, corpus: str, tok: str) -> str:
    """The train frequency table of a corpus x tokenizer (tokenfair.plan.Plan.frequency_file)."""
    return plan.frequency_file(corpus, tok)


# --------------------------------------------------------------------------------------------------
# one run




def _split_order(names: Iterable[str]) -> list[str]:
    names = list(names)
    return [s for s in paths.SPLITS if s in names] + sorted(s for s in names if s not in paths.SPLITS)


_BUFFERS: dict[tuple, tuple] = {}


def _dense_buffers(n_groups: int, n_vocab: int):
    """Zeroed [G, V] loss (float64), count and correct (int64) arrays, reused from run to run in a process
    (zeroing reused memory is cheaper than faulting in fresh pages). Valid until the next call."""
    import numpy as np

    key = (n_groups, n_vocab)
    if key not in _BUFFERS:
        _BUFFERS.clear()
        _BUFFERS[key] = (np.zeros(key), np.zeros(key, dtype=np.int64), np.zeros(key, dtype=np.int64))
    else:
        for b in _BUFFERS[key]:
            b.fill(0)
    return _BUFFERS[key]


def read_per_token(path: str, n_vocab: int):
    """Dense per-id sums of one per_token.parquet: (keys, loss, count, correct) with keys a list of
    (split, step) sorted by split order then step, and [len(keys), n_vocab] arrays (reused by the next
    call: copy them to keep them). Rows of the same (split, step, token_id) add up; ids without a row count
    as zeros."""
    import numpy as np
    import pyarrow as pa

    from .io import parquet_file
    from .metrics import scatter_rows

    pf = parquet_file(path, "the run's per-token losses", PER_TOKEN_COLUMNS, read_dictionary=["split"])
    table = pf.read(columns=PER_TOKEN_COLUMNS, use_threads=False)  # only the columns the metrics need
    if table.num_rows == 0:
        raise DataError(f"{path}: no rows")
    for c in PER_TOKEN_COLUMNS:
        if table.column(c).null_count:
            raise DataError(f"{path}: column {c} has null values")
    table = table.unify_dictionaries()
    chunks = []  # per record batch: arrays and segments of equal (split, step)
    seg_keys = []
    for batch in table.to_batches():
        if batch.num_rows == 0:
            continue
        split = batch.column("split")
        if not pa.types.is_dictionary(split.type):
            split = split.dictionary_encode()
        code = split.indices.to_numpy(zero_copy_only=False)
        split_names = split.dictionary.to_pylist()
        step = batch.column("step").to_numpy(zero_copy_only=False)
        start = np.flatnonzero(np.r_[True, (step[1:] != step[:-1]) | (code[1:] != code[:-1])])
        keys = [(split_names[c], int(s)) for c, s in zip(code[start].tolist(), step[start].tolist())]
        seg_keys.append(keys)
        cols = {c: batch.column(c).to_numpy(zero_copy_only=False) for c in ("token_id", "loss_sum", "count", "correct")}
        chunks.append((np.r_[start, batch.num_rows].astype(np.int64), cols))
    order = {s: i for i, s in enumerate(_split_order({k[0] for ks in seg_keys for k in ks}))}
    all_keys = sorted({k for ks in seg_keys for k in ks}, key=lambda k: (order[k[0]], k[1]))
    index = {k: i for i, k in enumerate(all_keys)}
    loss, count, correct = _dense_buffers(len(all_keys), n_vocab)
    for (bounds, cols), keys in zip(chunks, seg_keys):
        groups = np.array([index[k] for k in keys], dtype=np.int64)
        bad = scatter_rows(bounds, groups, cols["token_id"],
                           cols["loss_sum"].astype(np.float64, copy=False), cols["count"].astype(np.int64, copy=False),
                           cols["correct"].astype(np.int64, copy=False), loss, count, correct)
        if bad >= 0:
            raise DataError(f"{path}: token_id {cols['token_id'][bad]} is outside the vocabulary (0 .. {n_vocab - 1}) "
                            "of the corpus x tokenizer's frequency table")
    return all_keys, loss, count, correct


def summarise_run(per_token_path: str, groups) -> dict:
    """The small result of one run: {"final_step", "run": {<split>_<metric>: value}, "bins": columns,
    "curves": columns, "per_type": {split: per-type losses [V] at the final step, NaN where not seen}} (the
    per-type losses pair a run with its reference decay's: `spearman_changes`)."""
    import numpy as np

    from . import metrics as M

    keys, loss, count, correct = read_per_token(per_token_path, groups.vocab_size)
    sums = M.category_sums(loss, count, correct, groups.category, groups.n_categories)  # [G, C, F]
    run: dict[str, Any] = {}
    per_type: dict[str, np.ndarray] = {}
    bin_cols = ("split", "step", "first_step", "bin", "bin_lo", "bin_hi", "n_types", *BIN_METRICS)
    bins: dict[str, list] = {k: [] for k in bin_cols}
    curves: dict[str, list] = {k: [] for k in ("split", "step", "bin", "bin_lo", "bin_hi", *CURVE_METRICS)}
    nb = groups.n_bins
    for split in dict.fromkeys(k[0] for k in keys):
        rows = [i for i, k in enumerate(keys) if k[0] == split]
        steps = np.array([keys[i][1] for i in rows])
        last = rows[-1]
        # run level, final step
        whole = M.summarise(sums[last].sum(axis=0))
        rare = M.summarise(M.by_rarity(sums[last], True))
        freq = M.summarise(M.by_rarity(sums[last], False))
        vals = {
            "tokens": int(whole["occurrences"]), "types_seen": int(whole["n_seen"]),
            "loss_avg": float(whole["loss_avg"]), "loss_balanced": float(whole["loss_balanced"]),
            "acc_avg": float(whole["acc_avg"]), "acc_balanced": float(whole["acc_balanced"]),
            "ppl": float(whole["ppl"]), "loss_rare": float(rare["loss_balanced"]),
            "loss_frequent": float(freq["loss_balanced"]),
            "rare_gap": float(rare["loss_balanced"] - freq["loss_balanced"]),
            "spearman": M.frequency_loss_spearman(groups.train_count, loss[last], count[last], groups.special,
                                                  cache=groups.rank_cache),
        }
        run.update({f"{split}_{k}": v for k, v in vals.items()})
        per_type[split] = M.per_type_loss(loss[last], count[last])
        # per bin over the eval steps
        per_bin = M.summarise(M.by_bin(sums[rows]))  # each [T, B]
        fin = {k: v[-1] for k, v in per_bin.items()}
        fin["learning_speed"] = M.learning_speed(steps, per_bin["loss_balanced"].T)  # [B]
        fin["learning_speed_token"] = M.learning_speed_token(steps, loss[rows], count[rows], groups)
        fin["steps_to_80pct"] = M.steps_to_fraction(steps, per_bin["loss_balanced"].T, 0.8)
        bins["split"] += [split] * nb
        bins["step"] += [int(steps[-1])] * nb
        bins["first_step"] += [int(steps[0])] * nb
        bins["bin"].append(groups.bins)
        bins["bin_lo"].append(groups.bin_lo)
        bins["bin_hi"].append(groups.bin_hi)
        bins["n_types"].append(groups.n_types)
        for k in BIN_METRICS:
            bins[k].append(fin[k])
        T = len(rows)
        curves["split"] += [split] * (T * nb)
        curves["step"].append(np.repeat(steps, nb))
        curves["bin"].append(np.tile(groups.bins, T))
        curves["bin_lo"].append(np.tile(groups.bin_lo, T))
        curves["bin_hi"].append(np.tile(groups.bin_hi, T))
        for k in CURVE_METRICS:
            curves[k].append(per_bin[k].ravel())
    def columns(d):  # lists of scalars or of per-split arrays -> one array per column
        return {k: np.asarray(v) if k == "split" or (v and np.isscalar(v[0])) else np.concatenate(v) for k, v in d.items()}

    return {"final_step": int(max(k[1] for k in keys)), "run": run, "bins": columns(bins), "curves": columns(curves),
            "per_type": per_type}


def read_norms(norms_path: str, groups, final_step: int | None = None) -> list:
    """The blocks of one run's norms.parquet, checked: [(step, token_id [n], {matrix: norms [n] float64})] in step
    order, one per evaluation step. A file without a `step` column (written before the norms were recorded at
    every evaluation) is one block at `final_step`."""
    import numpy as np

    from .io import parquet_file

    pf = parquet_file(norms_path, "the run's embedding norms", NORM_COLUMNS)
    has_step = "step" in pf.schema_arrow.names
    table = pf.read(columns=(["step"] if has_step else []) + NORM_COLUMNS, use_threads=False)
    for c in table.column_names:
        if table.column(c).null_count:
            raise DataError(f"{norms_path}: column {c} has null values")
    ids = table.column("token_id").to_numpy().astype(np.int64)
    if len(ids) and (ids.min() < 0 or ids.max() >= groups.vocab_size):
        raise DataError(f"{norms_path}: token_id outside the vocabulary (0 .. {groups.vocab_size - 1}) of the "
                        "corpus x tokenizer's frequency table")
    step = table.column("step").to_numpy().astype(np.int64) if has_step else np.full(len(ids), final_step or 0)
    norms = {m: table.column(f"{m}_norm").to_numpy().astype(np.float64) for m in MATRICES}
    blocks = []
    for s in np.unique(step):
        at = step == s
        if len(np.unique(ids[at])) != int(at.sum()):
            raise DataError(f"{norms_path}: a token_id appears more than once" + (f" at step {s}" if has_step else ""))
        blocks.append((int(s), ids[at], {m: v[at] for m, v in norms.items()}))
    return blocks


def _norm_rows(ids, norms: dict, groups, tied: bool) -> dict:
    """Columns tied_embeddings, matrix, bin, bin_lo, bin_hi, n_ids, mean_norm of one block of row norms (one row
    per matrix x bin; special ids left out)."""
    import numpy as np

    from .metrics import norms_by_bin

    nb, k = groups.n_bins, len(MATRICES)
    per = [norms_by_bin(ids, norms[m], groups) for m in MATRICES]
    return {"tied_embeddings": np.full(nb * k, bool(tied)), "matrix": np.repeat(np.array(MATRICES, dtype=object), nb),
            "bin": np.tile(groups.bins, k), "bin_lo": np.tile(groups.bin_lo, k), "bin_hi": np.tile(groups.bin_hi, k),
            "n_ids": np.concatenate([n for n, _ in per]), "mean_norm": np.concatenate([v for _, v in per])}


def summarise_norms(norms_path: str, groups, tied=None, final_step: int | None = None) -> dict:
    """Mean embedding and unembedding row norms per train-frequency bin of one run's norms.parquet (special
    ids left out): {"final": the final model's (the last block), "curves": every evaluation step's (a `step`
    column more)}, each columns tied_embeddings, matrix, bin, bin_lo, bin_hi, n_ids, mean_norm (one row per
    [step x] matrix x bin). `tied` (run.json's tied_embeddings) unset: tied when the final model's two norm
    columns are equal. `final_step`: the step of a file without a step column (read_norms)."""
    import numpy as np

    blocks = read_norms(norms_path, groups, final_step)
    if not blocks:
        raise DataError(f"{norms_path}: no rows")
    _, ids, norms = blocks[-1]
    if tied is None:
        tied = bool(np.array_equal(norms["embedding"], norms["unembedding"]))
    curves = [{"step": np.full(2 * groups.n_bins, s, dtype=np.int64), **_norm_rows(i, n, groups, tied)}
              for s, i, n in blocks]
    return {"final": _norm_rows(ids, norms, groups, tied),
            "curves": {k: np.concatenate([c[k] for c in curves]) for k in curves[0]}}


def _number(v) -> float | None:
    """A run.json number as a float; None when absent (a run written before the key existed) or not a number."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _run_job(job: dict) -> dict:
    """Worker entry point: one run -> its small result (picklable)."""
    from . import metrics  # numba: imported by jobs, not at planning time
    t0 = time.perf_counter()
    groups = metrics.load_groups(job["frequency"], job["rare_percentile"])
    out = summarise_run(job["per_token"], groups)
    meta = read_json(job["run_json"]) if job.get("run_json") and os.path.exists(job["run_json"]) else {}
    meta = meta if isinstance(meta, dict) else {}
    n = meta.get("parameters")  # written by tokenfair.train
    out["n_params"] = int(n) if isinstance(n, (int, float)) and not isinstance(n, bool) else None
    out["regime"] = {c: _number(meta.get(c)) for c in REGIME_COLUMNS}
    if not os.path.exists(job["norms"]):
        raise DataError(f"{job['norms']}: the run's embedding norms do not exist (see docs/architecture.md)")
    tied = meta.get("tied_embeddings")
    norms = summarise_norms(job["norms"], groups, tied if isinstance(tied, bool) else None, out["final_step"])
    out["norms"], out["norm_curves"] = norms["final"], norms["curves"]
    out["seconds"] = time.perf_counter() - t0
    return out


def map_runs(jobs: list[dict], workers: int = 1) -> Iterable[dict]:
    """Results of _run_job in job order; workers > 1 uses that many processes (each holds one run)."""
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield _run_job(job)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        yield from pool.map(_run_job, jobs, chunksize=max(1, min(16, len(jobs) // (4 * workers))))


# --------------------------------------------------------------------------------------------------
# the study


def studies_label(point: dict) -> str:
    """The studies a grid point belongs to, ";"-joined ("main": the top-level grid)."""
    return ";".join(point.get("studies") or ["main"])


def collect(plan, points: list[dict], workers: int = 1) -> dict:
    """Stream the runs of `points` (of a plan) into DataFrames runs, bins, bin_curves (one row group per run)."""
    from . import metrics  # numba: imported by jobs, not at planning time
    import numpy as np
    import pandas as pd

    rare = plan["frequency"]["rare_percentile"]
    jobs = []
    for p in points:
        f = plan.run_files(p)
        freq = plan.run_frequency_file(p)  # each run binned by the counts of what it trained on
        if not os.path.exists(freq):
            raise DataError(f"{freq}: the train frequency table of {p['corpus']} x {p['tok']} does not exist")
        jobs.append({"per_token": f["per_token"], "run_json": f["run_json"], "norms": f["norms"],
                     "frequency": freq, "rare_percentile": rare})
    runs, bins, curves, norms, norm_curves, secs = [], [], [], [], [], 0.0
    idents, per_types = [], []
    for p, res in zip(points, map_runs(jobs, workers)):
        ident = plan.identity(p)
        idents.append(ident)
        per_types.append(res["per_type"])
        runs.append({**{k: v for k, v in ident.items() if k != "seed"}, "seed": ident["seed"],
                     "n_params": res["n_params"], **res["regime"], "final_step": res["final_step"],
                     "run": p["run"], "studies": studies_label(p), **res["run"]})
        for kind, store in (("bins", bins), ("curves", curves), ("norms", norms), ("norm_curves", norm_curves)):
            cols = res[kind]
            n = len(cols["bin"])
            store.append(pd.DataFrame({**{k: [v] * n for k, v in ident.items()}, **cols}))
        secs += res["seconds"]
    groups = [metrics.load_groups(j["frequency"], rare) for j in jobs]
    for row, vals in zip(runs, spearman_changes(idents, per_types, groups, plan.other_axes)):
        row.update(vals)
    del per_types
    runs_df = pd.DataFrame(runs)
    if len(runs_df):
        runs_df["n_params"] = runs_df["n_params"].astype("Int64")
    first = ("corpus", "tokenizer", "model")
    order = [*first, "n_params", *[c for c in plan.identity(points[0]) if c not in first]] if points else []
    runs_df = runs_df[order + [c for c in runs_df.columns if c not in order]] if len(runs_df) else runs_df
    frame = lambda parts: pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    out = {"runs": runs_df, "bins": frame(bins), "bin_curves": frame(curves), "embedding_norms": frame(norms),
           "embedding_norm_curves": frame(norm_curves)}
    for df in out.values():
        numeric_axes(df, plan.extra_axes)
    for name in ("bins", "bin_curves", "embedding_norms", "embedding_norm_curves"):
        df = out[name]
        if len(df):
            for c in ("bin", "bin_lo", "bin_hi", "step", "n_ids"):
                if c in df.columns:
                    df[c] = df[c].astype(np.int64)
    out["seconds_in_runs"] = secs
    return out


def spearman_changes(idents: list[dict], per_types: list[dict], groups: list, others: list[str]) -> list[dict]:
    """Per run (identities, final per-type losses per split, metrics.Groups), {<split>_spearman_change}:
    metrics.loss_change_spearman against the run of the same seed and other axes at the smallest decay those
    other axes have; NaN at that decay itself and without that seed's run there."""
    from . import metrics  # numba: imported by jobs, not at planning time
    key = [tuple(repr(i[a]) for a in others) for i in idents]
    ref_decay: dict[tuple, float] = {}
    for k, i in zip(key, idents):
        ref_decay[k] = min(ref_decay.get(k, math.inf), i["weight_decay"])
    where = {(k, i["seed"], i["weight_decay"]): n for n, (k, i) in enumerate(zip(key, idents))}
    out = []
    for n, (k, i) in enumerate(zip(key, idents)):
        r = where.get((k, i["seed"], ref_decay[k]))
        g = groups[n]
        out.append({f"{split}_spearman_change": math.nan if r in (None, n) or split not in per_types[r] else
                    metrics.loss_change_spearman(g.train_count, y, per_types[r][split], g.special, g.rank_cache)
                    for split, y in per_types[n].items()})
    return out


def membership(plan):
    """The membership table: one row per grid point x study it belongs to (its identity, run, study), the
    axes typed as in the other tables."""
    import pandas as pd

    df = pd.DataFrame(list(plan.membership()), columns=[*plan.identity(plan.points[0]), "run", "study"])
    numeric_axes(df, plan.extra_axes)
    return df


def numeric_axes(df, axes: Iterable[str]):
    """In place: an axis column that holds numbers and nulls (None: a setting left unset, e.g.
    embedding_decay_alpha) becomes float64 with NaN, the dtype the seed groups give it, so that the tables
    merge on it (an object column of numbers does not merge with a float one). Returns df."""
    import numpy as np

    for a in axes:
        if df is None or a not in df.columns or df[a].dtype != object:
            continue
        vals = [v for v in df[a].unique() if v is not None and not (isinstance(v, float) and math.isnan(v))]
        if vals and all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
                        for v in vals):
            df[a] = df[a].astype(np.float64)
    return df


def aggregate(plan, partial: bool = False, workers: int = 1, out_dir: str | None = None) -> dict:
    """Aggregate the runs of a plan (tokenfair.plan) into its summary folder (or `out_dir`).

    partial=False: every grid point must have finished (DataError naming the missing ones otherwise).
    partial=True: aggregate the runs that exist and list the others in missing.csv and the README.
    Returns the tables (DataFrames) and some timings."""
    import pandas as pd

    from .io import write_table
    from .metrics import decay_effects, regime_map, seed_stats
    from .report import vocabularies, write_figures, write_readme

    t0 = time.perf_counter()
    out_dir = out_dir or summary_dir(plan["results_dir"], partial)
    present, missing = plan.present_runs()
    if missing and not partial:
        first = missing[0]
        raise DataError(f"{len(missing)} of {len(plan.points)} grid points have no finished run, e.g. "
                        f"{plan.run_files(first)['dir']} ({first['reason']}); run the grid, or aggregate_partial")
    # Worker processes cost seconds to start (imports): worth it only for enough data to read and draw.
    size = sum(os.path.getsize(plan.run_files(p)["per_token"]) for p in present)
    if size < float(os.environ.get("TOKENFAIR_PARALLEL_MIN_MB", PARALLEL_MIN_MB)) * 1e6:
        workers = 1
    log.info("aggregating %d runs (%d missing, %.0f MB of per-token files, %d processes) into %s",
             len(present), len(missing), size / 1e6, workers, out_dir)
    tables = collect(plan, present, workers)
    t_collect = time.perf_counter() - t0
    others = plan.other_axes
    seed_keys = [*others[:3], "weight_decay", *others[3:]]
    run_metrics = [c for c in tables["runs"].columns if any(c.endswith("_" + m) for m in RUN_METRICS)]
    tables["runs_by_seed"] = seed_stats(tables["runs"], seed_keys, run_metrics, list_seeds=True)
    bin_keys = [*seed_keys, "split", "bin", "bin_lo", "bin_hi"]
    tables["bins_by_seed"] = seed_stats(tables["bins"], bin_keys, list(BIN_METRICS))
    tables["bin_curves_by_seed"] = seed_stats(tables["bin_curves"], [*bin_keys, "step"], list(CURVE_METRICS))
    tables["decay_effects"] = decay_effects(tables["bins"], tables["bins_by_seed"], others,
                                            level=plan["aggregate"]["significance_level"])
    tables["embedding_norms_by_seed"] = seed_stats(
        tables["embedding_norms"], [*seed_keys, "tied_embeddings", "matrix", "bin", "bin_lo", "bin_hi", "n_ids"],
        ["mean_norm"])
    tables["embedding_norm_curves_by_seed"] = seed_stats(
        tables["embedding_norm_curves"],
        [*seed_keys, "tied_embeddings", "matrix", "bin", "bin_lo", "bin_hi", "n_ids", "step"], ["mean_norm"])
    tables["regime_map"] = regime_map(tables["bins"], tables["runs"], others)
    miss = pd.DataFrame([{**plan.identity(m), "run": m["run"], "reason": m["reason"]} for m in missing],
                        columns=[*plan.identity(plan.points[0]), "run", "reason"])
    tables["missing"] = miss
    tables[paths.MEMBERSHIP] = membership(plan)
    for name in paths.SUMMARY_TABLES + (("missing",) if partial else ()) + (paths.MEMBERSHIP,):
        write_table(tables[name], out_dir, name)
    t_tables = time.perf_counter() - t0
    # the reference lines' train table per corpus x tokenizer: the one most of its points train on (with
    # train.train_docs, that subset's; a regime study's other sizes keep the main one's reference)
    tables_of = Counter((p["corpus"], p["tok"], plan.run_frequency_file(p)) for p in plan.points)
    freq = {}
    for (corpus, tok, f), _ in tables_of.most_common():
        if (corpus, tok) not in freq and os.path.exists(f):
            freq[corpus, tok] = f
    note = (f"partial: {len(present)} of {len(present) + len(missing)} grid points ({len(missing)} missing, "
            "see missing.csv)") if partial else None
    # figures in parallel only for grids big enough to make panels many (a process costs ~2 s to start)
    fig_workers = workers if len(present) >= PARALLEL_MIN_RUNS_FIGURES else 1
    tables["vocabularies"] = vocabularies(freq, plan["frequency"]["rare_percentile"])
    figs = write_figures(plan, tables, out_dir, note, workers=fig_workers)
    write_readme(plan, tables, out_dir, figs, partial, len(present), len(missing))
    return {**tables, "seconds": {"runs": tables["seconds_in_runs"], "collect": t_collect,
                                  "tables": t_tables, "total": time.perf_counter() - t0},
            "processes": {"read": workers, "figures": fig_workers}}
