"""Aggregation speed and memory: tokenfair.aggregate on synthetic per-token files vs a plain pandas groupby.

Generates a results tree per the file contracts (docs/architecture.md): a train and a validation frequency
table, and per_token.parquet files written the way tokenfair.train writes them (rows by step then split, one
row per vocabulary id, zeros included; pyarrow's default Parquet settings). To save disk only --distinct run
files are generated; the other runs are HARD LINKS to them, so the files read repeatedly sit in the page cache:
the timings are for warm reads (Parquet decoding and the reduction), not cold disk I/O.

Measured, each in its own process (peak RSS is that process's, and its workers'):
1. the full aggregation of all runs (`aggregate`, the package function the Snakemake rule runs): reading and
   reducing the runs, the tables, the figures and the README;
2. side by side on a subset of runs, repeats, medians: the reading + reduction of `collect` (one process)
   vs a plain pandas version (read_parquet of every run, merge with the train bins, groupby per
   run x split x step x bin and per run x split), for the same per-bin and per-run numbers. pandas holds the
   whole subset in memory, which is why it is a subset at full size.

    python benchmarks/bench_aggregate.py --quick      # 24 runs x 32k ids x 2 splits x 6 eval points
    python benchmarks/bench_aggregate.py              # 1,000 runs x 152k ids x 2 splits x 11 eval points
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CORPUS, TOK = "bench", "bpe"


def make_config(results_dir: str, n_runs: int, vocab: int, n_steps: int):
    """The plan (tokenfair.plan) of a synthetic grid of about n_runs runs."""
    from tokenfair import config as tfconfig
    from tokenfair import plan as tfplan

    n_models = 10 if n_runs >= 100 else 2
    n_decays = 10 if n_runs >= 100 else 3
    n_seeds = max(1, n_runs // (n_models * n_decays))
    steps = 100 * (n_steps - 1)
    return tfplan.build(tfconfig.resolve({
        "results_dir": results_dir,
        "corpora": {CORPUS: {"source": "embedded", "name": "sotu", "validation_fraction": 0.1}},
        "tokenizers": {TOK: {"type": "bpe", "vocab_size": vocab}},
        "models": {f"m{i}": "tiny-xs" for i in range(n_models)},
        "weight_decays": [round(0.1 * i, 3) for i in range(n_decays)],
        "seeds": list(range(n_seeds)),
        "train": {"steps": steps, "eval_every": 100},
    }, check_files=False))


def per_token_table(vocab: int, steps: list[int], samples: dict, rarity, wd: float, seed: int):
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    splits = list(samples)
    cols = {k: [] for k in ("step", "split", "loss_sum", "count", "correct")}
    for step in steps:  # step-major, then split, as tokenfair.train.per_token_table
        for i, split in enumerate(splits):
            n = samples[split]
            per = 1.0 + 5.0 * np.exp(-step / 300.0) + wd * 0.3 * rarity + rng.normal(0, 0.05, vocab)
            cols["step"].append(np.full(vocab, step, np.int32))
            cols["split"].append(np.full(vocab, i, np.int32))
            cols["loss_sum"].append(np.where(n > 0, per * n, 0.0))
            cols["count"].append(n)
            cols["correct"].append(rng.binomial(n, 0.4))
    split = pa.DictionaryArray.from_arrays(pa.array(np.concatenate(cols["split"])), pa.array(splits, pa.string()))
    return pa.table({
        "step": pa.array(np.concatenate(cols["step"])),
        "split": split.cast(pa.string()),
        "token_id": pa.array(np.tile(np.arange(vocab, dtype=np.int32), len(steps) * len(splits))),
        "loss_sum": pa.array(np.concatenate(cols["loss_sum"])),
        "count": pa.array(np.concatenate(cols["count"]).astype(np.int64)),
        "correct": pa.array(np.concatenate(cols["correct"]).astype(np.int64)),
    })


def generate(cfg: dict, vocab: int, n_steps: int, distinct: int) -> dict:
    """Frequency tables, `distinct` run files, hard links for the other runs, a run.json each."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tokenfair import paths
    from tokenfair.aggregate import run_files
    from tokenfair.counts import frequency_table

    t0 = time.perf_counter()
    R = cfg["results_dir"]
    rng = np.random.default_rng(0)
    p = 1.0 / np.arange(1, vocab + 1)
    p = rng.permutation(p / p.sum())
    special = np.zeros(vocab, dtype=bool)
    special[:2] = True
    train_counts = rng.multinomial(50 * vocab, p)
    tokens = [f"t{i}" for i in range(vocab)]
    for split, counts in (("train", train_counts), ("validation", rng.multinomial(5 * vocab, p))):
        path = paths.path("frequency", R, corpus=CORPUS, tok=TOK, split=split)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        pq.write_table(frequency_table(counts, tokens, special, cfg["frequency"]["bin_base"]), path)
    # the eval samples: fixed for every run (the contract), ~131k train and ~262k validation tokens
    samples = {"train": rng.multinomial(131_072, p).astype(np.int64),
               "validation": rng.multinomial(262_144, p).astype(np.int64)}
    rarity = np.log(train_counts.max() + 1) - np.log(train_counts + 1)
    steps = [100 * i for i in range(n_steps)]
    points = cfg.points
    sources, norm_sources, sizes = [], [], []
    for i, point in enumerate(points):
        f = run_files(cfg, point)
        os.makedirs(f["dir"], exist_ok=True)
        if i < distinct:
            pq.write_table(per_token_table(vocab, steps, samples, rarity, point["weight_decay"], i), f["per_token"])
            sources.append(f["per_token"])
            sizes.append(os.path.getsize(f["per_token"]))
            norm_sources.append(f["norms"])
            shrink = 1.0 / (1.0 + point["weight_decay"] * (1.0 + rarity / rarity.max()))  # rare rows shrink more
            pq.write_table(pa.table({"token_id": np.arange(vocab, dtype=np.int64),
                                     "embedding_norm": rng.uniform(0.5, 1.5, vocab) * shrink,
                                     "unembedding_norm": rng.uniform(0.5, 1.5, vocab) * shrink}), f["norms"])
        else:
            os.link(sources[i % distinct], f["per_token"])
            os.link(norm_sources[i % distinct], f["norms"])
        with open(f["run_json"], "w") as fh:
            json.dump({"parameters": 1_000_000, "seed": point["seed"], "tied_embeddings": False}, fh)
    return {"seconds": time.perf_counter() - t0, "file_bytes": sizes, "rows_per_run": vocab * 2 * n_steps,
            "runs": len(points)}


def _peak_rss_mb() -> tuple[float, float]:
    """(this process's peak RSS, the largest peak RSS of its finished children) in MB (Linux: KB units)."""
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)


def _child(kind: str, cfg: dict, args: dict, queue) -> None:
    try:
        from tokenfair import aggregate as A

        if kind == "aggregate":
            res = A.aggregate(cfg, workers=args["workers"])
            me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
            out = {"seconds": res["seconds"], "processes": res["processes"], "n_runs": len(res["runs"]),
                   "cpu_main": me.ru_utime + me.ru_stime,
                   "cpu_workers": kids.ru_utime + kids.ru_stime}
        elif kind == "collect":
            points = cfg.points[: args["n"]]
            A.collect(cfg, points[:1])  # numba's cache load and imports out of the timing
            times, cpus = [], []
            for _ in range(args["repeats"]):
                t0, c0 = time.perf_counter(), time.process_time()
                A.collect(cfg, points, workers=1)
                times.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
            out = {"times": times, "cpus": cpus}
        else:
            times, cpus = [], []
            for _ in range(args["repeats"]):
                t0, c0 = time.perf_counter(), time.process_time()
                pandas_baseline(cfg, args["n"])
                times.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
            out = {"times": times, "cpus": cpus}
        out["rss_self_mb"], out["rss_children_mb"] = _peak_rss_mb()
        queue.put(out)
    except BaseException as exc:  # report, don't hang the parent
        queue.put({"error": repr(exc)})
        raise


def in_process(kind: str, cfg: dict, **args) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_child, args=(kind, cfg, args, q))
    proc.start()
    out = q.get()
    proc.join()
    if "error" in out:
        sys.exit(f"{kind} failed: {out['error']}")
    return out


def pandas_baseline(cfg: dict, n: int):
    """The same per-bin (per step) and per-run numbers with plain pandas: read every run, merge, groupby."""
    import numpy as np
    import pandas as pd

    from tokenfair.aggregate import frequency_file, run_files

    rare_pct = cfg["frequency"]["rare_percentile"]
    freq = pd.read_parquet(frequency_file(cfg, CORPUS, TOK), columns=["token_id", "bin", "percentile", "special"])
    freq["rare"] = freq["percentile"] < rare_pct
    frames = []
    for i, point in enumerate(cfg.points[:n]):
        df = pd.read_parquet(run_files(cfg, point)["per_token"])
        df["run"] = i
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    df = df.merge(freq, on="token_id")
    df = df[~df["special"] & (df["count"] > 0)]
    df["per_type"] = df["loss_sum"] / df["count"]
    df["acc_type"] = df["correct"] / df["count"]
    agg = {"n_seen": ("token_id", "size"), "occ": ("count", "sum"), "loss": ("loss_sum", "sum"),
           "correct": ("correct", "sum"), "balanced": ("per_type", "mean"), "acc_bal": ("acc_type", "mean")}
    bins = df.groupby(["run", "split", "step", "bin"]).agg(**agg)
    bins["loss_avg"] = bins["loss"] / bins["occ"]
    last = df[df["step"] == df.groupby(["run", "split"])["step"].transform("max")]
    runs = last.groupby(["run", "split"]).agg(**agg)
    runs["loss_avg"] = runs["loss"] / runs["occ"]
    rare = last.groupby(["run", "split", "rare"])["per_type"].mean().unstack()
    runs["gap"] = rare[True] - rare[False]
    return bins, runs, np.asarray(runs["loss_avg"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="24 runs x 32k ids x 6 eval points")
    ap.add_argument("--runs", type=int)
    ap.add_argument("--vocab", type=int)
    ap.add_argument("--steps", type=int, help="evaluation points per run")
    ap.add_argument("--distinct", type=int, help="distinct run files generated; the others are hard links")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--subset", type=int, help="runs of the side-by-side comparison with pandas")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", help="folder for the synthetic tree (default: a temporary folder, deleted)")
    ap.add_argument("--keep", action="store_true", help="keep the synthetic tree")
    a = ap.parse_args()
    q = a.quick
    runs = a.runs or (24 if q else 1000)
    vocab = a.vocab or (32_000 if q else 152_000)
    steps = a.steps or (6 if q else 11)
    distinct = a.distinct or (4 if q else 8)
    subset = min(runs, a.subset or (24 if q else 10))

    base = a.dir or tempfile.mkdtemp(prefix="tokenfair-bench-agg-")
    results = os.path.join(base, "results")
    try:
        cfg = make_config(results, runs, vocab, steps)
        gen = generate(cfg, vocab, steps, min(distinct, runs))
        n = gen["runs"]
        rows = n * gen["rows_per_run"]
        per_run = statistics.mean(gen["file_bytes"])
        print(f"synthetic tree: {n} runs x {vocab:,} ids x 2 splits x {steps} eval points = {rows:,} rows "
              f"({gen['rows_per_run']:,} a run); {len(gen['file_bytes'])} distinct per_token.parquet files, the other "
              f"{n - len(gen['file_bytes'])} runs are hard links to them (warm page cache); generated in "
              f"{gen['seconds']:.1f} s")
        print(f"disk: per_token.parquet {per_run / 1e6:.1f} MB a run (pyarrow defaults, snappy) -> "
              f"{per_run * 1000 / 1e9:.1f} GB for 1,000 runs; this tree holds {sum(gen['file_bytes']) / 1e6:.0f} MB")

        load0 = os.getloadavg()[0]
        full = in_process("aggregate", cfg, workers=a.workers)
        s = full["seconds"]
        used = full["processes"]
        print(f"\n[1] aggregate(workers={a.workers}), all {n} runs, {used['read']} process(es) reading, "
              f"{used['figures']} drawing (one below aggregate.PARALLEL_MIN_MB / PARALLEL_MIN_RUNS_FIGURES);\n"
              f"    load average {load0:.1f} before, {os.getloadavg()[0]:.1f} after, {os.cpu_count()} cores shared "
              "with other users:")
        print(f"    wall: read + reduce the runs {s['collect']:.1f} s = {rows / s['collect'] / 1e6:.1f} M rows/s "
              f"({s['collect'] / n * 1000:.0f} ms a run); seed tables + decay effects + writing "
              f"{s['tables'] - s['collect']:.1f} s; figures + README {s['total'] - s['tables']:.1f} s; "
              f"total {s['total']:.1f} s ({rows / s['total'] / 1e6:.1f} M rows/s overall)")
        cpu = full["cpu_workers"] + full["cpu_main"]
        print(f"    CPU time of all its processes {cpu:.0f} s (worker processes {full['cpu_workers']:.0f} s, main "
              f"{full['cpu_main']:.0f} s): with {max(used.values())} free core(s) the whole aggregation needs at least "
              f"~{cpu / max(used.values()):.0f} s")
        print(f"    peak RSS: main process {full['rss_self_mb']:.0f} MB"
              + (f", largest worker {full['rss_children_mb']:.0f} MB" if full["rss_children_mb"] else ""))

        sub_rows = subset * gen["rows_per_run"]
        ours = in_process("collect", cfg, n=subset, repeats=a.repeats)
        pdx = in_process("pandas", cfg, n=subset, repeats=a.repeats)
        t_ours, t_pd = statistics.median(ours["times"]), statistics.median(pdx["times"])
        c_ours, c_pd = statistics.median(ours["cpus"]), statistics.median(pdx["cpus"])
        print(f"\n[2] side by side, {subset} runs ({sub_rows:,} rows), one process each, median of {a.repeats}"
              + (" (a subset: pandas holds every row of the runs it groups)" if subset < n else "") + ":")
        print(f"    tokenfair collect(): {t_ours:.2f} s wall ({c_ours:.2f} s CPU) = {sub_rows / t_ours / 1e6:.1f} M rows/s, "
              f"peak RSS {ours['rss_self_mb']:.0f} MB")
        print(f"    plain pandas groupby: {t_pd:.2f} s wall ({c_pd:.2f} s CPU) = {sub_rows / t_pd / 1e6:.1f} M rows/s, "
              f"peak RSS {pdx['rss_self_mb']:.0f} MB")
        print(f"    ratio pandas / tokenfair: wall x{t_pd / t_ours:.1f}, CPU x{c_pd / c_ours:.1f}, "
              f"peak memory x{pdx['rss_self_mb'] / ours['rss_self_mb']:.1f}")
        if subset < n:
            print(f"    pandas extrapolated to {n} runs: ~{t_pd / subset * n:.0f} s and ~"
                  f"{pdx['rss_self_mb'] / subset * n / 1024:.0f} GB (if it could hold them)")
    finally:
        if a.keep:
            print(f"\nkept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
