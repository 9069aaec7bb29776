"""BPE training, given tokenizer files, token shards and their reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer

from tokenfair import tokenization as tz
from tokenfair.corpus import build_documents, documents_table, Doc
from tokenfair.errors import DataError
from tokenfair.io import write_parquet
from tokenfair.paths import SPECIAL_TOKENS


@pytest.fixture(scope="module")
def documents(tmp_path_factory, paragraphs):
    """documents.parquet of 400 real paragraphs, 20% validation."""
    spec = {"source": "text", "validation_fraction": 0.2, "test_fraction": 0.0, "lowercase": False}
    cols = build_documents([Doc(p, "mem") for p in paragraphs], spec)
    path = tmp_path_factory.mktemp("docs") / "documents.parquet"
    write_parquet(documents_table(cols), path)
    return str(path)


@pytest.fixture(scope="module")
def bpe_path(documents, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tz.train_tokenizer({"type": "bpe", "vocab_size": 600, "min_frequency": 2}, documents, str(out), "bpe")
    return str(out)


def split_texts(documents, split):
    t = pq.read_table(documents).to_pydict()
    return [(d, x) for d, x, s in zip(t["doc_id"], t["text"], t["split"]) if s == split]


def test_bpe_specials_bytes_and_size(bpe_path, documents):
    tok = Tokenizer.from_file(bpe_path)
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1]
    assert tok.get_vocab_size() == tz.vocab_size(tok) == 600
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = tok.get_vocab()
    assert all(ch in vocab for ch in ByteLevel.alphabet())  # all 256 byte symbols
    assert list(np.flatnonzero(tz.special_mask(tok))) == [0, 1]
    text = split_texts(documents, "validation")[0][1] + " naïve café ☃"
    assert tok.decode(tok.encode(text).ids) == text  # byte-level: lossless, even on unseen characters


def test_bpe_trains_on_the_train_split_only(documents, tmp_path):
    out = tmp_path / "t.json"
    info = tz.train_tokenizer({"type": "bpe", "vocab_size": 400, "min_frequency": 2}, documents, str(out), "b")
    assert info["documents"] == len(split_texts(documents, "train"))


def test_shard_matches_per_document_encoding(bpe_path, documents, tmp_path):
    tokens, index = tmp_path / "tokens" / "validation.npy", tmp_path / "tokens" / "validation.index.parquet"
    info = tz.encode_split(documents, bpe_path, "validation", str(tokens), str(index), eod=True, threads=2)
    tok = Tokenizer.from_file(bpe_path)
    docs = split_texts(documents, "validation")
    expected = np.concatenate([np.array(tok.encode(t, add_special_tokens=False).ids + [0], np.uint32) for _, t in docs])
    ids = tz.load_tokens(str(tokens))
    assert isinstance(ids, np.memmap) and ids.dtype == np.uint32 and not ids.flags.writeable
    np.testing.assert_array_equal(ids, expected)
    idx = tz.load_index(str(index))
    assert idx.schema == pa.schema([("doc_id", pa.string()), ("start", pa.int64()), ("length", pa.int64())])
    idx = idx.to_pydict()
    assert idx["doc_id"] == [d for d, _ in docs]
    assert all(ids[s + n - 1] == 0 for s, n in zip(idx["start"], idx["length"]))  # each document ends in EOD
    assert idx["start"][1:] == list(np.cumsum(idx["length"])[:-1]) and info["tokens"] == len(ids)
    assert sorted(p.name for p in tokens.parent.iterdir()) == ["validation.index.parquet", "validation.npy"]


def test_shard_without_eod_and_small_batches(bpe_path, documents, tmp_path, monkeypatch):
    monkeypatch.setattr(tz, "BATCH_DOCS", 7)  # many batches: the shard must not depend on batching
    tz.encode_split(documents, bpe_path, "train", str(tmp_path / "a.npy"), str(tmp_path / "a.parquet"), eod=False)
    tok = Tokenizer.from_file(bpe_path)
    expected = [i for _, t in split_texts(documents, "train") for i in tok.encode(t, add_special_tokens=False).ids]
    got = tz.load_tokens(str(tmp_path / "a.npy"), mmap=False)
    assert not isinstance(got, np.memmap)
    np.testing.assert_array_equal(got, np.array(expected, np.uint32))
    assert 0 not in got


def test_given_tokenizer_file_and_its_eod(documents, tmp_path, paragraphs):
    """A given tokenizer.json is copied as is; its EOD is auto-detected (</s>) or named (eod_token)."""
    from tokenizers import models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(paragraphs, trainers.BpeTrainer(vocab_size=500, special_tokens=["<unk>", "<pad>", "</s>"],
                                                            show_progress=False))
    given = tmp_path / "given.json"
    tok.save(str(given))
    out = tmp_path / "res" / "tokenizer.json"
    tz.train_tokenizer({"type": "file", "path": str(given)}, documents, str(out), "given")
    assert out.read_bytes() == given.read_bytes()
    assert tz.special_ids(str(out)) == {"eod": 2, "pad": 1}
    assert tz.special_ids(str(out), {"eod_token": "<unk>"})["eod"] == 0
    tz.encode_split(documents, str(out), "validation", str(tmp_path / "v.npy"), str(tmp_path / "v.parquet"))
    idx = pq.read_table(tmp_path / "v.parquet").to_pydict()
    ids = tz.load_tokens(str(tmp_path / "v.npy"))
    assert {int(ids[s + n - 1]) for s, n in zip(idx["start"], idx["length"])} == {2}

    # a tokenizer without any end-of-document token: clear error when the corpus wants EOD
    tok2 = Tokenizer(models.BPE(unk_token="<unk>"))
    tok2.pre_tokenizer = pre_tokenizers.Whitespace()
    tok2.train_from_iterator(paragraphs[:50], trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>"], show_progress=False))
    tok2.save(str(tmp_path / "noeod.json"))
    with pytest.raises(DataError, match="no end-of-document token"):
        tz.encode_split(documents, str(tmp_path / "noeod.json"), "validation", str(tmp_path / "x.npy"),
                        str(tmp_path / "x.parquet"))
    assert not (tmp_path / "x.npy").exists() and not (tmp_path / "x.parquet").exists()


def test_malformed_tokenizer_and_shard(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"version": "1.0", "model": ')
    with pytest.raises(DataError, match="not a valid tokenizer.json"):
        tz.load_tokenizer(str(bad))
    np.save(tmp_path / "x.npy", np.arange(5, dtype=np.int64))
    with pytest.raises(DataError, match="uint32"):
        tz.load_tokens(str(tmp_path / "x.npy"))


def test_shard_of_every_split(bpe_path, documents, tmp_path):
    """split None: every document of documents.parquet in file order (an eval_only corpus's ood/ shard)."""
    tz.encode_split(documents, bpe_path, None, str(tmp_path / "all.npy"), str(tmp_path / "all.parquet"), eod=True)
    tok = Tokenizer.from_file(bpe_path)
    t = pq.read_table(documents).to_pydict()
    assert set(t["split"]) == {"train", "validation"}
    expected = [i for x in t["text"] for i in tok.encode(x, add_special_tokens=False).ids + [0]]
    np.testing.assert_array_equal(tz.load_tokens(str(tmp_path / "all.npy")), np.array(expected, np.uint32))
    assert tz.load_index(str(tmp_path / "all.parquet")).column("doc_id").to_pylist() == t["doc_id"]


# --------------------------------------------------------------------------------------------------
# the shipped given tokenizer: tokenizers/pydoc-bpe4k (trained on the embedded pydoc corpus)

SHIPPED = Path(__file__).resolve().parents[1] / "tokenizers" / "pydoc-bpe4k"


def test_shipped_pydoc_tokenizer_loads():
    tok = tz.load_tokenizer(str(SHIPPED / "tokenizer.json"))
    assert tz.vocab_size(tok) == tok.get_vocab_size() == 4096
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1]
    assert tz.special_ids(tok) == {"eod": 0, "pad": 1}
    assert list(np.flatnonzero(tz.special_mask(tok))) == [0, 1]
    text = "The Congress shall make no law respecting an establishment of religion. naïve ☃"
    assert tok.decode(tok.encode(text).ids) == text


def test_shipped_pydoc_tokenizer_is_what_its_command_makes(tmp_path):
    """The README's command remakes the shipped file byte for byte (when this Python has the same topics)."""
    import hashlib
    import json
    import re
    import subprocess
    import sys

    from pydoc_data.topics import topics

    readme = (SHIPPED / "README.md").read_text()
    recorded = re.search(r"pydoc_data.topics sha256: ([0-9a-f]{64})", readme).group(1)
    command = re.search(r"^python -m tokenfair\.tokenization .*$", readme, re.M).group(0)
    if hashlib.sha256(json.dumps(topics, sort_keys=True).encode()).hexdigest() != recorded:
        pytest.skip(f"this Python ({sys.version.split()[0]}) ships other pydoc topics than the shipped file's")
    out = tmp_path / "tokenizer.json"
    args = command.split()[1:]
    args[args.index("--out") + 1] = str(out)
    res = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=SHIPPED.parents[1],
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert out.read_bytes() == (SHIPPED / "tokenizer.json").read_bytes()
