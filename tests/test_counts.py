"""Counting kernels, log bins, frequency tables and the Zipf figure."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tokenfair import counts as C
from tokenfair.errors import DataError


@pytest.fixture(scope="module")
def real_ids(speeches):
    """Token ids of real text: a byte-level BPE (vocab 500) over a few speeches."""
    from tokenfair.tokenization import train_bpe

    texts = speeches[:6]
    tok = train_bpe(texts, 500)
    ids = np.concatenate([np.array(e.ids + [0], np.uint32) for e in tok.encode_batch(texts)])
    return ids, tok


def test_count_ids_matches_bincount(real_ids):
    ids, tok = real_ids
    big = np.tile(ids, 3)  # > 65536 ids: the parallel, chunked path
    assert big.size > 65536
    for arr in (ids[:1000], big):
        for threads in (1, 2):
            got = C.count_ids(arr, 500, threads=threads)
            assert got.dtype == np.int64
            np.testing.assert_array_equal(got, np.bincount(arr, minlength=500))
    np.testing.assert_array_equal(C.count_ids(np.array([], np.uint32), 7), np.zeros(7))


def test_count_ids_rejects_out_of_vocabulary_and_wrong_dtype(real_ids):
    ids, _ = real_ids
    bad = ids.copy()
    bad[12345] = 500
    with pytest.raises(DataError, match=r"outside the vocabulary of 500 \(first: id 500 at position 12345\)"):
        C.count_ids(bad, 500)
    with pytest.raises(TypeError, match="uint32"):
        C.count_ids(ids.astype(np.int64), 500)


def _brute_bin(c: int, base) -> int:
    if c == 0:
        return -1
    b, k = Fraction(base), 0
    while math.ceil(b ** (k + 1)) <= c:
        k += 1
    return k


@pytest.mark.parametrize("base", [3, 2, 10, 1.5, 2.5, 3.0])
def test_log_bin_exact_at_powers(base):
    b = Fraction(base)
    edges = [math.ceil(b**k) for k in range(60) if math.ceil(b**k) < 2**62]
    values = sorted({0, 1, 2, *edges, *(e - 1 for e in edges), *(e + 1 for e in edges)})
    got = C.log_bin(values, base)
    assert got.dtype == np.int16
    assert got.tolist() == [_brute_bin(v, base) for v in values]


def test_log_bin_base3_examples():
    counts = [0, 1, 2, 3, 8, 9, 26, 27, 80, 81, 3**20 - 1, 3**20, 3**38]
    assert C.log_bin(counts, 3).tolist() == [-1, 0, 0, 1, 1, 2, 2, 3, 3, 4, 19, 20, 38]
    lo, hi = C.bin_edges(C.log_bin(counts, 3), 3)
    assert lo.tolist()[:5] == [0, 1, 1, 3, 3] and hi.tolist()[:5] == [1, 3, 3, 9, 9]
    assert lo[-1] == 3**38 and hi[-1] == 3**39


def test_frequency_table_contract():
    counts = np.array([5, 0, 9, 9, 1, 0, 3], dtype=np.int64)
    special = np.array([True, True, False, False, False, False, False])
    tokens = ["<|endoftext|>", "<|pad|>", "a", "b", "c", None, "e"]
    t = C.frequency_table(counts, tokens, special, base=3)
    assert t.schema == pa.schema([
        ("token_id", pa.int32()), ("token", pa.string()), ("count", pa.int64()), ("frequency", pa.float64()),
        ("rank", pa.int32()), ("bin", pa.int16()), ("bin_lo", pa.int64()), ("bin_hi", pa.int64()),
        ("percentile", pa.float64()), ("special", pa.bool_()),
    ])
    d = t.to_pydict()
    assert d["rank"] == [3, 6, 1, 2, 5, 7, 4]  # ties broken by id
    assert d["bin"] == [1, -1, 2, 2, 0, -1, 1]
    assert d["bin_lo"] == [3, 0, 9, 9, 1, 0, 3] and d["bin_hi"] == [9, 1, 27, 27, 3, 1, 9]
    assert math.isclose(sum(d["frequency"]), 1.0) and d["frequency"][0] == 5 / 27
    # non-special counts: 9 9 1 0 3 -> share of them <= each count
    assert all(math.isnan(p) for p in d["percentile"][:2])
    assert d["percentile"][2:] == [100.0, 100.0, 40.0, 20.0, 60.0]


def test_count_split_and_zipf(tmp_path, real_ids):
    from matplotlib.figure import Figure

    from tokenfair.plots import zipf_figure

    ids, tok = real_ids
    tok.save(str(tmp_path / "tokenizer.json"))
    np.save(tmp_path / "train.npy", ids)
    out = tmp_path / "freq" / "train.parquet"
    C.count_split(str(tmp_path / "train.npy"), str(tmp_path / "tokenizer.json"), str(out), base=3, threads=2)
    t = pq.read_table(out).to_pydict()
    assert t["count"] == np.bincount(ids, minlength=500).tolist()
    assert t["token"][:3] == ["<|endoftext|>", "<|pad|>", "!"] and t["special"][:3] == [True, True, False]

    fig = zipf_figure({"train": np.array(t["count"])}, title="sotu")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_xscale() == ax.get_yscale() == "log" and "rank" in ax.get_xlabel() and ax.get_ylabel()
    C.zipf({"train": str(out)}, [str(tmp_path / "z.png"), str(tmp_path / "z.pdf")], title="t")
    assert (tmp_path / "z.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "z.pdf").read_bytes()[:4] == b"%PDF"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporaries


def test_count_split_vocabulary_mismatch(tmp_path, real_ids):
    ids, tok = real_ids
    tok.save(str(tmp_path / "tokenizer.json"))
    np.save(tmp_path / "train.npy", np.append(ids, np.uint32(9999)))
    out = tmp_path / "train.parquet"
    with pytest.raises(DataError, match=r"train.npy: 1 token ids are outside the vocabulary of 500"):
        C.count_split(str(tmp_path / "train.npy"), str(tmp_path / "tokenizer.json"), str(out))
    assert not out.exists()
