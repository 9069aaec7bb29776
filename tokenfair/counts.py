"""Token counting (numba), log-frequency bins, and the frequency tables (docs/architecture.md).

`log_bin` is the one definition of the frequency bins every stage uses: bin k holds the counts in
[base^k, base^(k+1)), count 0 is bin -1 ("unseen"). Edges are exact integers (ceil(base^k), computed with
rational arithmetic), so counts at exact powers (3, 9, 27, ... for base 3) always open their bin.
"""

from __future__ import annotations

import logging
import math
from fractions import Fraction

import numba
import numpy as np

from .errors import DataError

log = logging.getLogger(__name__)

_INT64_MAX = 2**63 - 1
# Per-thread histograms are uint32: a chunk never holds more ids than this, so no counter can overflow.
_MAX_CHUNK = 2**32 - 1


@numba.njit(parallel=True, cache=True, nogil=True)
def _count_chunks(ids, vocab_size, n_chunks):
    n = ids.shape[0]
    hist = np.zeros((n_chunks, vocab_size), dtype=np.uint32)
    bad = np.zeros(n_chunks, dtype=np.int64)
    for c in numba.prange(n_chunks):
        lo = n * c // n_chunks
        hi = n * (c + 1) // n_chunks
        h = hist[c]
        nbad = 0
        for i in range(lo, hi):
            v = ids[i]
            if v < vocab_size:
                h[v] += 1
            else:
                nbad += 1
        bad[c] = nbad
    out = np.zeros(vocab_size, dtype=np.int64)
    for c in range(n_chunks):
        h = hist[c]
        for j in range(vocab_size):
            out[j] += h[j]
    return out, bad.sum()


def count_ids(ids: np.ndarray, vocab_size: int, threads: int | None = None) -> np.ndarray:
    """Occurrences of each id in [0, vocab_size) in a 1-D uint32 array: an int64 array of vocab_size.

    Parallel over threads (numba prange), each with its own histogram; memory beyond the output is
    threads x vocab_size x 4 bytes, never proportional to the input. Raises DataError on an id >= vocab_size.
    """
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"count_ids expects a 1-D array, not shape {ids.shape}")
    if ids.dtype != np.uint32:
        raise TypeError(f"count_ids expects uint32 ids, not {ids.dtype}")
    vocab_size = int(vocab_size)
    if vocab_size < 1:
        raise ValueError("vocab_size must be positive")
    if threads:
        numba.set_num_threads(min(int(threads), numba.config.NUMBA_NUM_THREADS))
    n_threads = numba.get_num_threads()
    n_chunks = max(n_threads, -(-ids.shape[0] // _MAX_CHUNK))
    if ids.shape[0] < 65536:
        n_chunks = 1
    counts, n_bad = _count_chunks(ids, np.uint32(min(vocab_size, 2**32 - 1)), n_chunks)
    if n_bad:
        pos = int(np.argmax(ids >= vocab_size))
        raise DataError(
            f"{n_bad} token ids are outside the vocabulary of {vocab_size} (first: id {int(ids[pos])} at position {pos})"
        )
    return counts


# --------------------------------------------------------------------------------------------------
# bins


def _edges(base: float, max_count: int) -> np.ndarray:
    """Integer bin edges ceil(base^k), k = 0, 1, ..., up to the first edge above max_count."""
    b = Fraction(base)  # exact value of the float, so the edges are exact
    if b <= 1:
        raise ValueError(f"bin base must be above 1, not {base}")
    edges = [1]
    power = Fraction(1)
    while edges[-1] <= max_count and edges[-1] < _INT64_MAX:
        power *= b
        edges.append(min(math.ceil(power), _INT64_MAX))
    return np.array(edges, dtype=np.int64)


def log_bin(counts, base: float = 3) -> np.ndarray:
    """The log-frequency bin of each count: k for counts in [base^k, base^(k+1)), -1 for 0 (int16)."""
    counts = np.asarray(counts, dtype=np.int64)
    if counts.size and counts.min() < 0:
        raise ValueError("counts must be non-negative")
    max_count = int(counts.max()) if counts.size else 0
    edges = _edges(base, max_count)
    bins = np.searchsorted(edges, counts, side="right") - 1  # count 0 -> -1
    return bins.astype(np.int16)


def bin_edges(bins, base: float = 3) -> tuple[np.ndarray, np.ndarray]:
    """Integer edges [lo, hi) of each bin: (ceil(base^k), ceil(base^(k+1))); (0, 1) for the unseen bin."""
    bins = np.asarray(bins, dtype=np.int64)
    top = int(bins.max()) if bins.size else 0
    edges = [1]
    power = Fraction(1)
    b = Fraction(base)
    for _ in range(max(top, 0) + 1):
        power *= b
        edges.append(min(math.ceil(power), _INT64_MAX))  # the top edge saturates at the int64 maximum
    edges = np.array([0, *edges], dtype=np.int64)  # index k+1 holds ceil(base^k); index 0 the unseen edge 0
    return edges[bins + 1], edges[bins + 2]


# --------------------------------------------------------------------------------------------------
# the frequency table


def frequency_table(counts: np.ndarray, tokens: list[str | None], special: np.ndarray, base: float = 3):
    """One row per vocabulary id, as a pyarrow Table with the columns of frequency/<split>.parquet."""
    import pyarrow as pa

    counts = np.asarray(counts, dtype=np.int64)
    size = counts.shape[0]
    special = np.asarray(special, dtype=bool)
    if len(tokens) != size or special.shape[0] != size:
        raise ValueError("counts, tokens and special must have one entry per id")
    total = int(counts.sum())
    frequency = counts / total if total else np.zeros(size)
    ids = np.arange(size, dtype=np.int64)
    order = np.lexsort((ids, -counts))  # most frequent first, ties by id
    rank = np.empty(size, dtype=np.int32)
    rank[order] = np.arange(1, size + 1, dtype=np.int32)
    bins = log_bin(counts, base)
    lo, hi = bin_edges(bins, base)
    plain = np.sort(counts[~special])
    percentile = np.full(size, np.nan)
    if plain.size:
        percentile[~special] = np.searchsorted(plain, counts[~special], side="right") / plain.size * 100.0
    return pa.table({
        "token_id": pa.array(ids.astype(np.int32)),
        "token": pa.array(tokens, type=pa.string()),
        "count": pa.array(counts),
        "frequency": pa.array(frequency.astype(np.float64)),
        "rank": pa.array(rank),
        "bin": pa.array(bins.astype(np.int16)),
        "bin_lo": pa.array(lo),
        "bin_hi": pa.array(hi),
        "percentile": pa.array(percentile),
        "special": pa.array(special),
    })


def count_split(tokens_path: str, tokenizer_path: str, out_path: str, base: float = 3,
                threads: int | None = None, index_path: str | None = None, docs: int | None = None) -> dict:
    """Count a token shard against its tokenizer's vocabulary and write frequency/<split>.parquet; with `docs`
    (and the shard's `index_path`), only its first `docs` documents (frequency/train~docs<n>.parquet)."""
    from .io import write_parquet
    from .tokenization import docs_end, load_tokenizer, load_tokens, special_mask, token_strings, vocab_size

    tok = load_tokenizer(tokenizer_path)
    size = vocab_size(tok)
    ids = load_tokens(tokens_path)
    if docs is not None:
        ids = ids[: docs_end(index_path, docs)]
    try:
        counts = count_ids(ids, size, threads=threads)
    except DataError as exc:
        raise DataError(f"{tokens_path}: {exc} of {tokenizer_path}") from None
    table = frequency_table(counts, token_strings(tok, size), special_mask(tok, size), base)
    write_parquet(table, out_path)
    seen = int((counts > 0).sum())
    log.info("%s: %d tokens, %d of %d ids seen", out_path, int(counts.sum()), seen, size)
    return {"tokens": int(counts.sum()), "seen": seen, "vocab_size": size}


def read_frequency(path: str):
    from .io import read_parquet

    return read_parquet(path, what="the frequency table")


def dense_counts(path: str) -> np.ndarray:
    """The counts of a frequency table as a dense array indexed by token_id."""
    t = read_frequency(path)
    ids = t.column("token_id").to_numpy()
    out = np.zeros(int(ids.max()) + 1 if len(ids) else 0, dtype=np.int64)
    out[ids] = t.column("count").to_numpy()
    return out


def zipf(frequency_paths: dict[str, str], out_paths: list[str], title: str = "") -> None:
    """The Zipf figure of one corpus x tokenizer (one line per split), saved to each of out_paths."""
    from .plots import save_figure, zipf_figure

    tables = {split: read_frequency(p) for split, p in frequency_paths.items()}
    fig = zipf_figure({s: t.column("count").to_numpy() for s, t in tables.items()}, title=title)
    save_figure(fig, out_paths)
