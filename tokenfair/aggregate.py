"""Streaming the runs of a grid into the summary tables, figures and README (`<results_dir>/summary/`).

Each run is read once (only the columns the metrics need), reduced over the id axis by numba kernels to
per (eval point, frequency bin, rare/frequent) sums, and dropped: memory is bounded by one run per worker,
whatever the size of the grid. Everything after that works on the small per-run results.

Outputs (each table as .parquet and .csv; the metric definitions are in `tokenfair.metrics`):
- runs: one row per run: its axes (every axis of every study; an unset value is null), parameter count, final
  step, run folder, studies (";"-joined names of the config's studies it belongs to, "main" = the top-level
  grid); per split `<split>_<metric>` at the final step: tokens, types_seen, loss_avg, loss_balanced, acc_avg,
  acc_balanced, ppl, loss_rare, loss_frequent, rare_gap, spearman. Splits: train, validation, test and
  ood-<corpus> per evaluation-only corpus, all binned by the training corpus's train counts.
- bins: one row per run x split x train-frequency bin at the final step, with the bin's learning speed.
- bin_curves: one row per run x split x eval step x bin (the loss-over-training curves).
- runs_by_seed, bins_by_seed, bin_curves_by_seed: the same metrics over seeds, `<metric>_mean`, `_std`,
  `_ci95` (half-width of the 95% Student-t interval; std and ci95 are NaN for a single seed), n_seeds (and
  in runs_by_seed the list of seeds).
- decay_effects: per other axes x split x bin x decay: the change of the bin's token-balanced loss from the
  smallest decay, its paired-seed 95% interval, a paired t-test over seeds (t_stat, p_value), its
  Holm-Bonferroni correction over the bins (p_holm, significant), and the bin's least-squares slope of loss
  against decay.
- embedding_norms: one row per run x matrix (embedding / unembedding) x train-frequency bin: the mean L2 row
  norm of the bin's ids in the final model (norms.parquet), and n_ids; embedding_norms_by_seed over seeds.
- partial aggregation only: missing (the grid points without a finished run).
- membership: one row per grid point x study it belongs to, with the point's axes and run folder
  (tokenfair.publish selects a study's rows with it; the README does not list it).

Heavy imports (numpy, pandas, pyarrow, numba, matplotlib) happen inside functions, so that the workflow can
import the output names at planning time cheaply.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Any, Iterable

from . import paths
from .errors import DataError
from .paths import summary_dir
from .plan import extra_axes

log = logging.getLogger("tokenfair.aggregate")

TABLES = ("runs", "runs_by_seed", "bins", "bins_by_seed", "bin_curves", "bin_curves_by_seed", "decay_effects",
          "embedding_norms", "embedding_norms_by_seed")
PER_SPLIT_FIGURES = ("bin_loss", "bin_curves", "decay_heatmap")
STUDY_FIGURES = ("loss_vs_decay", "learning_speed", "embedding_norms", "frequency")
README = "README.md"
MAX_README_RUNS = 200  # above this the README shows the seed table only (runs.csv has every run)
FIGURE_DIR = "figures"

# Below this many MB of per_token.parquet the aggregation runs in one process (env TOKENFAIR_PARALLEL_MIN_MB).
PARALLEL_MIN_MB = 200
PARALLEL_MIN_RUNS_FIGURES = 50
PER_TOKEN_COLUMNS = ["step", "split", "token_id", "loss_sum", "count", "correct"]
NORM_COLUMNS = ["token_id", "embedding_norm", "unembedding_norm"]
MATRICES = ("embedding", "unembedding")
RUN_METRICS = ("tokens", "types_seen", "loss_avg", "loss_balanced", "acc_avg", "acc_balanced", "ppl",
               "loss_rare", "loss_frequent", "rare_gap", "spearman")
BIN_METRICS = ("n_seen", "occurrences", "loss_avg", "loss_balanced", "acc_avg", "acc_balanced",
               "learning_speed")
CURVE_METRICS = ("n_seen", "loss_avg", "loss_balanced", "acc_avg")
# run.json keys that may hold the parameter count (first found wins, top level then one level down);
# tokenfair.train writes "parameters"
PARAM_KEYS = ("parameters", "n_params", "num_params", "parameter_count", "n_parameters", "num_parameters")


# --------------------------------------------------------------------------------------------------
# names of the outputs (cheap: used at planning time)


def study_splits(plan) -> list[str]:
    """The splits the runs of the plan evaluate (tokenfair.plan.Plan.splits)."""
    return plan.splits


def figure_names(splits: Iterable[str]) -> list[str]:
    splits = list(splits)
    return [f"{f}_{s}" for f in PER_SPLIT_FIGURES for s in splits] + list(STUDY_FIGURES)


def parse_figure_stem(stem: str, splits: Iterable[str]) -> tuple[str, str | None]:
    """(figure kind, split) of a stem of figure_names(splits); split None for a figure of the whole study.
    Matched against the known split names (a corpus name, so an ood split, may hold underscores)."""
    splits = list(splits)
    if stem in STUDY_FIGURES:
        return stem, None
    for kind in PER_SPLIT_FIGURES:
        split = stem[len(kind) + 1:]
        if stem.startswith(kind + "_") and split in splits and paths.is_split(split):
            return kind, split
    raise ValueError(f"unknown figure {stem} (splits: {', '.join(splits)})")


def summary_outputs(plan, partial: bool = False) -> dict[str, list[str]]:
    """Every file the aggregation of a plan writes: {"tables": [...], "figures": [...], "readme": [path]}."""
    d = summary_dir(plan["results_dir"], partial)
    tables = [*TABLES, *(["missing"] if partial else []), paths.MEMBERSHIP]
    formats = plan["aggregate"]["figure_formats"]
    return {
        "tables": [os.path.join(d, f"{t}.{e}") for t in tables for e in ("csv", "parquet")],
        "figures": [os.path.join(d, FIGURE_DIR, f"{f}.{e}") for f in figure_names(plan.splits) for e in formats],
        "readme": [os.path.join(d, README)],
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


_GROUPS: dict[tuple, Any] = {}


def load_groups(freq_path: str, rare_percentile: float):
    """metrics.Groups of a train frequency table, cached per process (one per corpus x tokenizer)."""
    import pyarrow.parquet as pq

    from .metrics import FREQUENCY_COLUMNS, groups_from_frequency

    st = os.stat(freq_path)
    key = (os.path.abspath(freq_path), st.st_mtime_ns, st.st_size, float(rare_percentile))
    if key not in _GROUPS:
        try:
            names = pq.read_schema(freq_path).names
        except Exception as exc:
            raise DataError(f"{freq_path}: not a readable Parquet file ({exc})") from None
        cols = [c for c in FREQUENCY_COLUMNS if c in names]
        table = pq.read_table(freq_path, columns=cols)
        if len(_GROUPS) > 8:
            _GROUPS.clear()
        _GROUPS[key] = groups_from_frequency(table, rare_percentile, source=freq_path)
    return _GROUPS[key]


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
    import pyarrow.parquet as pq

    from .metrics import scatter_rows

    try:
        pf = pq.ParquetFile(path, read_dictionary=["split"])
        names = pf.schema_arrow.names
    except Exception as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
    lacking = [c for c in PER_TOKEN_COLUMNS if c not in names]
    if lacking:
        raise DataError(f"{path}: missing column(s) {', '.join(lacking)} (see docs/architecture.md)")
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


def param_count(meta: dict):
    for d in [meta] + [v for v in meta.values() if isinstance(v, dict)]:
        for k in PARAM_KEYS:
            if isinstance(d.get(k), (int, float)) and not isinstance(d.get(k), bool):
                return int(d[k])
    return None


def summarise_run(per_token_path: str, groups) -> dict:
    """The small result of one run: {"final_step", "run": {<split>_<metric>: value}, "bins": columns,
    "curves": columns}."""
    import numpy as np

    from . import metrics as M

    keys, loss, count, correct = read_per_token(per_token_path, groups.vocab_size)
    sums = M.category_sums(loss, count, correct, groups.category, groups.n_categories)  # [G, C, F]
    run: dict[str, Any] = {}
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
        # per bin over the eval steps
        per_bin = M.summarise(M.by_bin(sums[rows]))  # each [T, B]
        speed = M.learning_speed(steps, per_bin["loss_balanced"].T)  # [B]
        fin = {k: v[-1] for k, v in per_bin.items()}
        bins["split"] += [split] * nb
        bins["step"] += [int(steps[-1])] * nb
        bins["first_step"] += [int(steps[0])] * nb
        bins["bin"].append(groups.bins)
        bins["bin_lo"].append(groups.bin_lo)
        bins["bin_hi"].append(groups.bin_hi)
        bins["n_types"].append(groups.n_types)
        for k in BIN_METRICS:
            bins[k].append(speed if k == "learning_speed" else fin[k])
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

    return {"final_step": int(max(k[1] for k in keys)), "run": run, "bins": columns(bins), "curves": columns(curves)}


def summarise_norms(norms_path: str, groups, tied=None) -> dict:
    """Mean embedding and unembedding row norms per train-frequency bin of one run's norms.parquet (special
    ids left out): columns tied_embeddings, matrix, bin, bin_lo, bin_hi, n_ids, mean_norm (one row per matrix x
    bin). `tied` (run.json's tied_embeddings) unset: tied when the two norm columns are equal."""
    import numpy as np
    import pyarrow.parquet as pq

    from .metrics import norms_by_bin

    try:
        names = pq.read_schema(norms_path).names
    except Exception as exc:
        raise DataError(f"{norms_path}: not a readable Parquet file ({exc})") from None
    lacking = [c for c in NORM_COLUMNS if c not in names]
    if lacking:
        raise DataError(f"{norms_path}: missing column(s) {', '.join(lacking)} (see docs/architecture.md)")
    table = pq.read_table(norms_path, columns=NORM_COLUMNS, use_threads=False)
    for c in NORM_COLUMNS:
        if table.column(c).null_count:
            raise DataError(f"{norms_path}: column {c} has null values")
    ids = table.column("token_id").to_numpy().astype(np.int64)
    if len(ids) and (ids.min() < 0 or ids.max() >= groups.vocab_size):
        raise DataError(f"{norms_path}: token_id outside the vocabulary (0 .. {groups.vocab_size - 1}) of the "
                        "corpus x tokenizer's frequency table")
    if len(np.unique(ids)) != len(ids):
        raise DataError(f"{norms_path}: a token_id appears more than once")
    norms = {m: table.column(f"{m}_norm").to_numpy().astype(np.float64) for m in MATRICES}
    if tied is None:
        tied = bool(np.array_equal(norms["embedding"], norms["unembedding"]))
    nb = groups.n_bins
    out = {"tied_embeddings": np.full(nb * len(MATRICES), bool(tied)),
           "matrix": np.repeat(np.array(MATRICES, dtype=object), nb),
           "bin": np.tile(groups.bins, len(MATRICES)), "bin_lo": np.tile(groups.bin_lo, len(MATRICES)),
           "bin_hi": np.tile(groups.bin_hi, len(MATRICES))}
    per = [norms_by_bin(ids, norms[m], groups) for m in MATRICES]
    out["n_ids"] = np.concatenate([n for n, _ in per])
    out["mean_norm"] = np.concatenate([v for _, v in per])
    return out


def _run_job(job: dict) -> dict:
    """Worker entry point: one run -> its small result (picklable)."""
    t0 = time.perf_counter()
    groups = load_groups(job["frequency"], job["rare_percentile"])
    out = summarise_run(job["per_token"], groups)
    meta = {}
    if job.get("run_json") and os.path.exists(job["run_json"]):
        try:
            with open(job["run_json"], encoding="utf-8") as fh:
                meta = json.load(fh)
        except json.JSONDecodeError as exc:
            raise DataError(f"{job['run_json']}: not valid JSON ({exc})") from None
    meta = meta if isinstance(meta, dict) else {}
    out["n_params"] = param_count(meta)
    if not os.path.exists(job["norms"]):
        raise DataError(f"{job['norms']}: the run's embedding norms do not exist (see docs/architecture.md)")
    tied = meta.get("tied_embeddings")
    out["norms"] = summarise_norms(job["norms"], groups, tied if isinstance(tied, bool) else None)
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


def other_axes(plan) -> list[str]:
    """The columns that key a seed group apart from the decay (tokenfair.plan.Plan.other_axes)."""
    return plan.other_axes


def base_values(plan) -> dict:
    """{model: {extra axis: its base value}} (tokenfair.plan.Plan.base_values). Figure labels name only the
    axes that differ from it."""
    return plan.base_values


def studies_label(point: dict) -> str:
    """The studies a grid point belongs to, ";"-joined ("main": the top-level grid)."""
    return ";".join(point.get("studies") or ["main"])


def collect(plan, points: list[dict], workers: int = 1) -> dict:
    """Stream the runs of `points` (of a plan) into DataFrames runs, bins, bin_curves (one row group per run)."""
    import numpy as np
    import pandas as pd

    rare = plan["frequency"]["rare_percentile"]
    jobs = []
    for p in points:
        f = plan.run_files(p)
        freq = plan.frequency_file(p["corpus"], p["tok"])
        if not os.path.exists(freq):
            raise DataError(f"{freq}: the train frequency table of {p['corpus']} x {p['tok']} does not exist")
        jobs.append({"per_token": f["per_token"], "run_json": f["run_json"], "norms": f["norms"],
                     "frequency": freq, "rare_percentile": rare})
    runs, bins, curves, norms, secs = [], [], [], [], 0.0
    for p, res in zip(points, map_runs(jobs, workers)):
        ident = plan.identity(p)
        runs.append({**{k: v for k, v in ident.items() if k != "seed"}, "seed": ident["seed"],
                     "n_params": res["n_params"], "final_step": res["final_step"], "run": p["run"],
                     "studies": studies_label(p), **res["run"]})
        for kind, store in (("bins", bins), ("curves", curves), ("norms", norms)):
            cols = res[kind]
            n = len(cols["bin"])
            store.append(pd.DataFrame({**{k: [v] * n for k, v in ident.items()}, **cols}))
        secs += res["seconds"]
    runs_df = pd.DataFrame(runs)
    if len(runs_df):
        runs_df["n_params"] = runs_df["n_params"].astype("Int64")
    first = ("corpus", "tokenizer", "model")
    order = [*first, "n_params", *[c for c in plan.identity(points[0]) if c not in first]] if points else []
    runs_df = runs_df[order + [c for c in runs_df.columns if c not in order]] if len(runs_df) else runs_df
    frame = lambda parts: pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    out = {"runs": runs_df, "bins": frame(bins), "bin_curves": frame(curves), "embedding_norms": frame(norms)}
    for df in out.values():
        numeric_axes(df, plan.extra_axes)
    for name in ("bins", "bin_curves", "embedding_norms"):
        df = out[name]
        if len(df):
            for c in ("bin", "bin_lo", "bin_hi", "step", "n_ids"):
                if c in df.columns:
                    df[c] = df[c].astype(np.int64)
    out["seconds_in_runs"] = secs
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


def by_seed(df, keys: list[str], metrics: list[str], list_seeds: bool = False):
    """Mean, std (ddof 1), ci95 half-width (Student t) and n of each metric over the seeds of each key;
    `list_seeds` adds a `seeds` column ("0;1;2")."""
    import numpy as np
    import pandas as pd

    from .metrics import ci95_halfwidth

    if df is None or not len(df):
        return pd.DataFrame(columns=[*keys, "n_seeds", *(["seeds"] if list_seeds else [])])
    g = df.groupby(keys, sort=True, dropna=False)
    out = g.size().rename("n_seeds").to_frame()
    if list_seeds:
        out["seeds"] = g["seed"].agg(lambda s: ";".join(str(v) for v in sorted(s)))
    mean, std, n = g[metrics].mean(), g[metrics].std(ddof=1), g[metrics].count()
    cols = {}
    for m in metrics:
        cols[f"{m}_mean"] = mean[m]
        cols[f"{m}_std"] = std[m]
        cols[f"{m}_ci95"] = pd.Series(ci95_halfwidth(std[m].to_numpy(), n[m].to_numpy()), index=mean.index)
    out = pd.concat([out, pd.DataFrame(cols)], axis=1).reset_index()
    return out.replace([np.inf, -np.inf], np.nan)


def decay_effects(bins, bins_seed, others: list[str], metric: str = "loss_balanced", level: float = 0.05):
    """Per other axes x split x bin x decay: change of the seed-mean `metric` from the smallest decay
    (delta, delta_rel), its paired-seed 95% half-width (over the seeds both decays have), the paired t-test of
    those per-seed differences (t_stat, p_value; NaN below two paired seeds and at the reference decay
    itself), p_holm (Holm-Bonferroni over the bins tested within one other axes x split x decay) and
    `significant` (p_holm < level), and the bin's least-squares slope of the seed-mean metric against decay."""
    import numpy as np
    import pandas as pd

    from .metrics import ci95_halfwidth, holm, paired_t, slope

    key = [*others, "split", "bin"]
    cols = [*others, "split", "bin", "bin_lo", "bin_hi", "weight_decay_ref", "weight_decay", "loss_ref", "loss",
            "delta", "delta_rel", "delta_ci95", "n_paired_seeds", "t_stat", "p_value", "p_holm", "significant",
            "slope"]
    if bins_seed is None or not len(bins_seed):
        return pd.DataFrame(columns=cols)
    m = f"{metric}_mean"
    b = bins_seed[[*key, "bin_lo", "bin_hi", "weight_decay", m]].rename(columns={m: "loss"})
    ref = b.loc[b.groupby(key, dropna=False)["weight_decay"].idxmin(), [*key, "weight_decay", "loss"]]
    ref = ref.rename(columns={"weight_decay": "weight_decay_ref", "loss": "loss_ref"})
    out = b.merge(ref, on=key, how="left")
    out["delta"] = out["loss"] - out["loss_ref"]
    with np.errstate(divide="ignore", invalid="ignore"):
        out["delta_rel"] = out["delta"] / out["loss_ref"]
    # paired over seeds
    runs = bins[[*key, "weight_decay", "seed", metric]]
    r0 = runs.merge(ref[[*key, "weight_decay_ref"]], on=key)
    r0 = r0[r0["weight_decay"] == r0["weight_decay_ref"]][[*key, "seed", metric]].rename(columns={metric: "ref"})
    pair = runs.merge(r0, on=[*key, "seed"])
    pair["d"] = pair[metric] - pair["ref"]
    g = pair.groupby([*key, "weight_decay"], dropna=False)["d"]
    ps = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n": g.count()}).reset_index()
    ps["delta_ci95"] = ci95_halfwidth(ps["std"].to_numpy(), ps["n"].to_numpy())
    ps["t_stat"], ps["p_value"] = paired_t(ps["mean"].to_numpy(), ps["std"].to_numpy(), ps["n"].to_numpy())
    out = out.merge(ps[[*key, "weight_decay", "delta_ci95", "n", "t_stat", "p_value"]].rename(
        columns={"n": "n_paired_seeds"}), on=[*key, "weight_decay"], how="left")
    out["n_paired_seeds"] = out["n_paired_seeds"].fillna(0).astype(np.int64)
    at_ref = (out["weight_decay"] == out["weight_decay_ref"]).to_numpy()
    for c in ("t_stat", "p_value"):
        out[c] = np.where(at_ref, np.nan, out[c].to_numpy(dtype=np.float64))
    family = out.groupby([*others, "split", "weight_decay"], dropna=False, sort=False).ngroup().to_numpy()
    p = out["p_value"].to_numpy(dtype=np.float64)
    p_holm = np.full(len(out), np.nan)
    order = np.argsort(family, kind="stable")
    bounds = np.flatnonzero(np.r_[True, np.diff(family[order]) != 0, True])
    for a, z in zip(bounds[:-1], bounds[1:]):
        rows = order[a:z]
        p_holm[rows] = holm(p[rows])
    out["p_holm"] = p_holm
    out["significant"] = np.nan_to_num(p_holm, nan=1.0) < level
    slopes = out.groupby(key, dropna=False)[["weight_decay", "loss"]].apply(
        lambda d: slope(d["weight_decay"], d["loss"])).rename("slope").reset_index()
    out = out.merge(slopes, on=key, how="left")
    return out[cols].sort_values([*key, "weight_decay"], ignore_index=True)


def write_table(df, folder: str, name: str) -> list[str]:
    """<folder>/<name>.parquet and .csv, atomically."""
    import pyarrow as pa

    from .io import atomic_path, write_parquet

    os.makedirs(folder, exist_ok=True)
    pq_path, csv_path = os.path.join(folder, f"{name}.parquet"), os.path.join(folder, f"{name}.csv")
    write_parquet(pa.Table.from_pandas(df, preserve_index=False), pq_path)
    with atomic_path(csv_path) as tmp:
        df.to_csv(tmp, index=False)
    return [pq_path, csv_path]


def aggregate(plan, partial: bool = False, workers: int = 1, out_dir: str | None = None) -> dict:
    """Aggregate the runs of a plan (tokenfair.plan) into its summary folder (or `out_dir`).

    partial=False: every grid point must have finished (DataError naming the missing ones otherwise).
    partial=True: aggregate the runs that exist and list the others in missing.csv and the README.
    Returns the tables (DataFrames) and some timings."""
    import pandas as pd

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
    tables["runs_by_seed"] = by_seed(tables["runs"], seed_keys, run_metrics, list_seeds=True)
    bin_keys = [*seed_keys, "split", "bin", "bin_lo", "bin_hi"]
    tables["bins_by_seed"] = by_seed(tables["bins"], bin_keys, list(BIN_METRICS))
    tables["bin_curves_by_seed"] = by_seed(tables["bin_curves"], [*bin_keys, "step"], list(CURVE_METRICS))
    tables["decay_effects"] = decay_effects(tables["bins"], tables["bins_by_seed"], others,
                                            level=plan["aggregate"]["significance_level"])
    tables["embedding_norms_by_seed"] = by_seed(
        tables["embedding_norms"], [*seed_keys, "tied_embeddings", "matrix", "bin", "bin_lo", "bin_hi", "n_ids"],
        ["mean_norm"])
    miss = pd.DataFrame([{**plan.identity(m), "run": m["run"], "reason": m["reason"]} for m in missing],
                        columns=[*plan.identity(plan.points[0]), "run", "reason"])
    tables["missing"] = miss
    tables[paths.MEMBERSHIP] = membership(plan)
    for name in TABLES + (("missing",) if partial else ()) + (paths.MEMBERSHIP,):
        write_table(tables[name], out_dir, name)
    t_tables = time.perf_counter() - t0
    freq = {}
    for corpus, tok in dict.fromkeys((p["corpus"], p["tok"]) for p in plan.points):
        f = plan.frequency_file(corpus, tok)
        if os.path.exists(f):
            freq[f"{corpus} / {tok}"] = f
    note = (f"partial: {len(present)} of {len(present) + len(missing)} grid points ({len(missing)} missing, "
            "see missing.csv)") if partial else None
    # figures in parallel only for grids big enough to make panels many (a process costs ~2 s to start)
    fig_workers = workers if len(present) >= PARALLEL_MIN_RUNS_FIGURES else 1
    figs = write_figures(plan, tables, freq, out_dir, note, workers=fig_workers)
    write_readme(plan, tables, out_dir, figs, partial, len(present), len(missing))
    return {**tables, "seconds": {"runs": tables["seconds_in_runs"], "collect": t_collect,
                                  "tables": t_tables, "total": time.perf_counter() - t0},
            "processes": {"read": workers, "figures": fig_workers}}


# --------------------------------------------------------------------------------------------------
# figures and README


FIGURE_TABLES = ("bins_by_seed", "bin_curves_by_seed", "runs_by_seed", "decay_effects", "embedding_norms_by_seed")


def render_figure(stem: str, cfg: dict, tables: dict, freq_files: dict[str, str], out_dir: str,
                  note: str | None) -> str:
    """Draw and save one figure of figure_names(study_splits(cfg)) in each configured format."""
    import matplotlib

    matplotlib.use("Agg")
    import pyarrow.parquet as pq

    from . import plots
    from .io import atomic_path

    splits = study_splits(cfg)
    colors = plots.decay_colors(cfg["weight_decays"])  # one colour per decay of the study, in every figure
    others = other_axes(cfg)
    base = base_values(cfg)  # panel labels name only the axes that differ from the base train settings
    bs, cs, rs, de, ns = (tables[t] for t in FIGURE_TABLES)
    kind, split = parse_figure_stem(stem, splits)
    if kind == "bin_loss":
        fig = plots.bin_loss(bs, split, colors, others, base=base)
    elif kind == "bin_curves":
        fig = plots.bin_curves(cs, split, colors, others, base=base)
    elif kind == "decay_heatmap":
        fig = plots.decay_heatmap(de, split, others, base=base)
    elif stem == "loss_vs_decay":
        fig = plots.loss_vs_decay(rs, splits, colors, others, base=base)
    elif stem == "learning_speed":
        fig = plots.learning_speed(bs, splits, colors, others, base=base)
    elif stem == "embedding_norms":
        fig = plots.embedding_norms(ns, colors, others, base=base)
    elif stem == "frequency":
        freq = {k: pq.read_table(f, columns=["token_id", "count", "rank", "percentile", "special"]).to_pandas()
                for k, f in freq_files.items()}
        fig = plots.frequency_distribution(freq, cfg["frequency"]["rare_percentile"])
    else:
        raise ValueError(f"unknown figure {stem}")
    files = [os.path.join(out_dir, FIGURE_DIR, f"{stem}.{ext}") for ext in cfg["aggregate"]["figure_formats"]]
    if getattr(fig, "fixed_layout", False):  # a big grid of panels with fixed margins: no tight box
        if note:
            fig.text(0.5, 0.002, note, ha="center", va="bottom", fontsize=10, color="firebrick")
        for f in files:
            with atomic_path(f) as tmp:
                fig.savefig(tmp, format=os.path.splitext(f)[1][1:], dpi=90)
    else:
        if note:
            fig.text(0.5, -0.01, note, ha="center", va="top", fontsize=10, color="firebrick")
        plots.save_figure(fig, files, dpi=120)
    return stem


def _render_job(args) -> str:
    return render_figure(*args)


def write_figures(cfg: dict, tables: dict, freq_files: dict[str, str], out_dir: str, note: str | None,
                  workers: int = 1) -> list[str]:
    """Every figure of figure_names(study_splits(cfg)); with workers > 1 drawn by that many processes
    (figures are independent; drawing is most of the time after the runs are read). Returns the stems."""
    os.makedirs(os.path.join(out_dir, FIGURE_DIR), exist_ok=True)
    stems = figure_names(study_splits(cfg))
    small = {t: tables[t] for t in FIGURE_TABLES}
    jobs = [(stem, cfg, small, freq_files, out_dir, note) for stem in stems]
    if workers <= 1:
        for job in jobs:
            _render_job(job)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        jobs.sort(key=lambda j: not j[0].startswith("bin_curves"))  # the biggest first
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=mp.get_context("spawn")) as pool:
            list(pool.map(_render_job, jobs))
    return stems


def _significance_section(cfg, tables, extra, runs) -> list[str]:
    """README lines: per model (x other axes) x split x decay, how many bins' loss rose / fell significantly
    over the reference decay."""
    level = cfg["aggregate"]["significance_level"]
    lines = ["\n## Which bins change significantly with weight decay\n",
             "Per train-frequency bin, a paired two-sided Student t-test over seeds of the per-seed difference of "
             "the bin's token-balanced loss (final step) between a decay and the reference (smallest) decay, over "
             "the seeds both have (at least two); the p-values are Holm-Bonferroni corrected over the bins tested "
             f"within each model (x other axes) x split x decay, and a bin counts when the corrected p < {level:g}. "
             "With one seed nothing can be tested. Every p-value is in [decay_effects.csv](decay_effects.csv) "
             "(t_stat, p_value, p_holm, significant).\n"]
    counts = significance_counts(tables["decay_effects"], other_axes(cfg), study_splits(cfg))
    if not len(counts) or not counts["n_tested"].any():
        lines.append("No bin could be tested: no decay has two or more seeds paired with the reference decay.\n")
        return lines
    cols = [("model", "model"), *[(a, a) for a in extra], ("split", "split"), ("weight_decay", "decay"),
            ("weight_decay_ref", "vs decay"), ("n_tested", "bins tested"), ("n_rose", "loss rose"),
            ("n_fell", "loss fell")]
    if len(runs) and (runs["corpus"].nunique() > 1 or runs["tokenizer"].nunique() > 1):
        cols = [("corpus", "corpus"), ("tokenizer", "tokenizer"), *cols]
    lines.append(_md_table(counts, cols, [*extra, "weight_decay_ref"]))
    return lines


def _fmt(v, digits=4):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _md_table(df, cols: list[tuple[str, str]], axes=()) -> str:
    """A Markdown table of df's columns [(column, header)]; the axes (decay, `axes`) keep their spelling
    (an unset axis value prints as null)."""
    from .plots import axis_text

    plain = {"weight_decay", "seed", "n_params", "final_step", "n_seeds", "n_tested", "n_rose", "n_fell"}

    def cell(c, v):
        if c in axes:
            return axis_text(v)
        if c in plain:
            return f"{v:g}" if isinstance(v, float) and not math.isnan(v) else _fmt(v)
        return _fmt(v)

    head = "| " + " | ".join(h for _, h in cols) + " |\n|" + "---|" * len(cols) + "\n"
    body = "".join("| " + " | ".join(cell(c, r[c]) for c, _ in cols) + " |\n" for r in df.to_dict("records"))
    return head + body


def significance_counts(effects, others: list[str], splits: Iterable[str] = ()):
    """Per other axes x split x decay (against its reference decay) from a decay_effects table: n_tested bins
    (with a p-value), n_rose / n_fell those whose loss rose / fell significantly after the Holm correction.
    Rows sorted by the other axes, then the splits in the order `splits` (others after them), then decay."""
    import pandas as pd

    keys = [*others, "split", "weight_decay_ref", "weight_decay"]
    cols = [*keys, "n_tested", "n_rose", "n_fell"]
    if effects is None or not len(effects):
        return pd.DataFrame(columns=cols)
    d = effects[effects["weight_decay"] != effects["weight_decay_ref"]].copy()
    d["n_tested"] = d["p_value"].notna()
    d["n_rose"] = d["significant"].astype(bool) & (d["t_stat"] > 0)
    d["n_fell"] = d["significant"].astype(bool) & (d["t_stat"] < 0)
    order = list(dict.fromkeys([*splits, *sorted(set(d["split"]))]))
    d["split"] = pd.Categorical(d["split"], categories=order)
    out = d.groupby(keys, dropna=False, sort=True, observed=True)[["n_tested", "n_rose", "n_fell"]].sum().reset_index()
    out["split"] = out["split"].astype(str)
    for c in ("n_tested", "n_rose", "n_fell"):
        out[c] = out[c].astype("int64")
    return out[cols]


def write_readme(cfg, tables, out_dir, figures, partial, n_present, n_missing) -> str:
    from .io import atomic_path

    runs, rs = tables["runs"], tables["runs_by_seed"]
    splits = [s for s in study_splits(cfg) if len(runs) and f"{s}_loss_avg" in runs.columns]
    extra = extra_axes(cfg)
    lines = [f"# Summary of `{os.path.basename(os.path.normpath(cfg['results_dir']))}`\n"]
    pairs = ", ".join(sorted(set(runs["corpus"] + " / " + runs["tokenizer"]))) if len(runs) else "–"
    if partial:
        lines.append(f"**Partial aggregation: {n_present} of {n_present + n_missing} grid points have finished; "
                     f"{n_missing} are missing (listed in [missing.csv](missing.csv)).**\n")
    lines.append(
        f"{n_present} runs; corpora x tokenizers: {pairs}; "
        f"weight decays {', '.join(f'{w:g}' for w in sorted(set(cfg['weight_decays'])))}; seeds "
        f"{', '.join(str(s) for s in cfg['seeds'])}. Special tokens are left out of every metric. "
        f"Rare = train-count percentile below {cfg['frequency']['rare_percentile']}, frequent = the rest; bins = "
        f"powers of {cfg['frequency']['bin_base']} of the train count.\n")
    from .plan import training_corpora
    from .metrics import unigram_entropy

    for corpus, tok in training_corpora(cfg):
        path = frequency_file(cfg, corpus, tok)
        if os.path.exists(path):
            g = load_groups(path, cfg["frequency"]["rare_percentile"])
            lines.append(f"Train unigram entropy of {corpus} / {tok}: {unigram_entropy(g.train_count, g.special):.4f} "
                         "nats (the average train loss of a model that knows only token frequencies).\n")
    lines.append(
        "Definitions: *avg loss* = loss per occurrence; *balanced loss* = mean over the vocabulary ids seen in "
        "the split of each id's own mean loss; *acc* = share of occurrences predicted right (argmax); "
        "*balanced acc* = mean over seen ids of each id's accuracy; *gap* = balanced loss of the rare ids minus "
        "that of the frequent ids; *rho* = Spearman correlation of log train frequency and per-id loss. "
        "All at the final step.\n")
    lines.append("## Per run (the numbers of the paper's Table 1)\n")
    if len(runs):
        cols = [("model", "model"), ("n_params", "params"), ("weight_decay", "decay"), *[(a, a) for a in extra],
                ("seed", "seed"), ("final_step", "step")]
        if "studies" in runs.columns and (runs["studies"] != "main").any():
            cols.append(("studies", "studies"))
        if runs["corpus"].nunique() > 1 or runs["tokenizer"].nunique() > 1:
            cols = [("corpus", "corpus"), ("tokenizer", "tokenizer"), *cols]
        for s in splits:
            cols += [(f"{s}_loss_avg", f"{s} avg loss"), (f"{s}_loss_balanced", f"{s} balanced loss"),
                     (f"{s}_acc_avg", f"{s} acc"), (f"{s}_acc_balanced", f"{s} balanced acc"),
                     (f"{s}_rare_gap", f"{s} gap"), (f"{s}_spearman", f"{s} rho")]
        if len(runs) <= MAX_README_RUNS:
            lines.append(_md_table(runs, cols, extra))
        else:
            lines.append(f"{len(runs)} runs: see [runs.csv](runs.csv); the table below has them over seeds.\n")
        lines.append("\n## Over seeds (mean ± std; n seeds; std is – for one seed)\n")
        rows = rs.copy()
        cols = [("model", "model"), ("weight_decay", "decay"), *[(a, a) for a in extra], ("n_seeds", "n")]
        if runs["corpus"].nunique() > 1 or runs["tokenizer"].nunique() > 1:
            cols = [("corpus", "corpus"), ("tokenizer", "tokenizer"), *cols]
        for s in splits:
            for m, h in (("loss_avg", "avg loss"), ("loss_balanced", "balanced loss"), ("acc_avg", "acc"),
                         ("rare_gap", "gap")):
                rows[f"{s}_{m}_pm"] = [f"{_fmt(a)} ± {_fmt(b)}" for a, b in zip(rows[f"{s}_{m}_mean"], rows[f"{s}_{m}_std"])]
                cols.append((f"{s}_{m}_pm", f"{s} {h}"))
        lines.append(_md_table(rows, cols, extra))
    else:
        lines.append("No finished run yet.\n")
    lines += _significance_section(cfg, tables, extra, runs)
    lines.append("\n## Figures\n")
    captions = {
        "bin_loss": "Token-balanced loss per train-frequency bin, one line per weight decay ({s})",
        "bin_curves": "Loss over training steps per frequency bin, one line per weight decay ({s})",
        "decay_heatmap": "Increase of each bin's loss over the smallest weight decay ({s})",
        "loss_vs_decay": "Average and token-balanced loss against weight decay",
        "learning_speed": "Per-bin learning speed (normalised area under the loss curve) by weight decay",
        "embedding_norms": "Mean embedding and unembedding row norm per train-frequency bin by weight decay",
        "frequency": "Train frequency distribution (Zipf) and the share of rare tokens",
    }
    png = "png" if "png" in cfg["aggregate"]["figure_formats"] else cfg["aggregate"]["figure_formats"][0]
    all_splits = study_splits(cfg)
    for stem in figures:
        kind, split = parse_figure_stem(stem, all_splits)
        cap = captions[kind].format(s=split)
        lines.append(f"### {cap}\n\n![{cap}]({FIGURE_DIR}/{stem}.{png})\n")
    lines.append("\n## Tables\n")
    for name in TABLES + (("missing",) if partial else ()):
        lines.append(f"- [{name}.csv]({name}.csv) ([parquet]({name}.parquet))")
    lines.append("\nDefinitions of every column: `tokenfair/metrics.py` and `tokenfair/aggregate.py` docstrings.\n")
    path = os.path.join(out_dir, README)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines))
    return path
