"""Benchmark: counting token ids with tokenfair.counts.count_ids (numba, parallel, per-thread histograms).

Baselines measured in the same run on the same array: np.bincount (which casts uint32 to an input-sized
int64 temporary), and the machine's read bandwidth as a numpy sum over the array. Also the peak memory each
count adds (Linux: the peak resident set size, reset before each call), to show count_ids makes no
input-sized temporary.

    python benchmarks/bench_counts.py            # 200M ids, vocab 32k and 152k, 5 repeats
    python benchmarks/bench_counts.py --quick    # 20M ids, 3 repeats

Ids are synthetic (Zipf-like, s = 1, drawn once with numpy, ids permuted so frequent ones are spread over the
vocabulary): this measures the kernel, not the tokenizer. Targets: >= 4x np.bincount, >= 50% of the sum.

What bounds the ratio: count_ids reads the ids once, so it cannot beat the numpy sum over the same array (the
read bandwidth); np.bincount / numpy sum is therefore the most count_ids can reach against np.bincount (the
"ceiling" line). Each line also shows the cores it got (process CPU time / wall time) and the machine's load:
on a shared machine the parallel kernel waits for its slowest thread, so load lowers its ratio first.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numba
import numpy as np

from tokenfair.counts import count_ids


def zipf_ids(n: int, vocab: int, seed: int = 0, chunk: int = 10_000_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    perm = rng.permutation(vocab).astype(np.uint32)
    out = np.empty(n, dtype=np.uint32)
    log_v = np.float32(np.log(vocab + 1))
    for s in range(0, n, chunk):
        u = rng.random(min(chunk, n - s), dtype=np.float32)
        rank = np.minimum((np.exp(u * log_v) - 1).astype(np.uint32), vocab - 1)  # P(rank k) ~ 1/(k+1.5)
        out[s : s + rank.size] = perm[rank]
    return out


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_extra_mb(fn) -> float | None:
    """Peak resident memory fn adds above the resident memory before it (MB); None where unsupported."""
    before = _status_kb("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset the peak (VmHWM) to the current resident size
    except OSError:
        return None
    fn()
    peak = _status_kb("VmHWM")
    return None if before is None or peak is None else max(0.0, (peak - before) / 1024)


def timed(fn) -> tuple[float, float]:
    """(wall seconds, process CPU seconds, all threads) of one call."""
    cpu, t = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20M ids, 3 repeats")
    ap.add_argument("--n", type=int, default=None, help="number of ids (default 200M, --quick 20M)")
    ap.add_argument("--vocab", type=int, nargs="+", default=[32_000, 152_000])
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    n = args.n or (20_000_000 if args.quick else 200_000_000)
    repeats = args.repeats or (3 if args.quick else 5)
    threads = min(args.threads, numba.config.NUMBA_NUM_THREADS)
    print(f"count_ids benchmark: {n:,} uint32 ids ({n * 4 / 1e9:.2f} GB), medians of {repeats} repeats, "
          f"numba {numba.__version__} with {threads} threads, "
          f"numpy {np.__version__}, {os.cpu_count()} cores")
    for vocab in args.vocab:
        t0 = time.perf_counter()
        ids = zipf_ids(n, vocab)
        gen_s = time.perf_counter() - t0
        count_ids(ids[:100_000], vocab, threads=threads)  # compile / load the cached kernel
        ours = count_ids(ids, vocab, threads=threads)
        ref = np.bincount(ids, minlength=vocab)
        assert np.array_equal(ours, ref), "count_ids disagrees with np.bincount"
        del ref
        top = np.sort(ours)[::-1]
        fns = {
            "numba count_ids": lambda: count_ids(ids, vocab, threads=threads),
            "np.bincount": lambda: np.bincount(ids, minlength=vocab),
            "numpy sum (read bandwidth)": lambda: ids.sum(),
        }
        runs: dict[str, list[float]] = {name: [] for name in fns}
        cpus: dict[str, list[float]] = {name: [] for name in fns}
        load = os.getloadavg()[0]
        for _ in range(repeats):  # interleaved, so that load from elsewhere hits all alike
            for name, fn in fns.items():
                wall, cpu = timed(fn)
                runs[name].append(wall)
                cpus[name].append(cpu)
        med = {k: statistics.median(v) for k, v in runs.items()}
        print(f"\nvocab {vocab:,} (ids drawn in {gen_s:.1f} s; top id holds {top[0] / n:.1%}, "
              f"{int((ours > 0).sum()):,} ids seen; load average {load:.1f} -> {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} cores)")
        for name, s in med.items():
            cores = sum(cpus[name]) / sum(runs[name])
            print(f"  {name:28s} {s * 1e3:8.1f} ms  {n / s / 1e9:6.2f} G ids/s  {n * 4 / s / 1e9:6.2f} GB/s"
                  f"  {cores:4.2f} cores   (min {min(runs[name]) * 1e3:.1f} ms, max {max(runs[name]) * 1e3:.1f} ms)")
        ratio_bc = med["np.bincount"] / med["numba count_ids"]
        ratio_bw = med["numpy sum (read bandwidth)"] / med["numba count_ids"]
        ceiling = med["np.bincount"] / med["numpy sum (read bandwidth)"]
        print(f"  numba vs np.bincount: {ratio_bc:.2f}x faster (target >= 4x: {'met' if ratio_bc >= 4 else 'NOT met'})")
        print(f"  numba vs read bandwidth: {ratio_bw:.0%} of the numpy sum's speed "
              f"(target >= 50%: {'met' if ratio_bw >= 0.5 else 'NOT met'})")
        print(f"  ceiling: np.bincount / numpy sum = {ceiling:.2f}x, what count_ids would reach reading at the "
              f"sum's bandwidth; it is at {ratio_bc / ceiling:.0%} of that")
        extra_ours = peak_extra_mb(fns["numba count_ids"])
        extra_bc = peak_extra_mb(fns["np.bincount"])
        if extra_ours is not None:
            print(f"  peak memory added: count_ids {extra_ours:.1f} MB (its histograms: "
                  f"{threads} x {vocab:,} x 4 B = {threads * vocab * 4 / 1e6:.1f} MB, output {vocab * 8 / 1e6:.1f} MB); "
                  f"np.bincount {extra_bc:.0f} MB (input {n * 4 / 1e6:.0f} MB: an int64 copy is {n * 8 / 1e6:.0f} MB)")
        del ids


if __name__ == "__main__":
    main()
