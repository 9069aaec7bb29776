"""BPE training, given tokenizer files, token shards and their reader."""

from __future__ import annotations

import json
import os
import random
import signal
import string
import subprocess
import sys
import time
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
# odd text: pieces without whitespace, stopping the trainer, memory and progress of large inputs

REPO = Path(__file__).resolve().parents[1]


def letters(n: int, seed: int = 0) -> str:
    """n random lowercase letters: one pre-tokenized piece, unlike any other (the trainer's worst case)."""
    return "".join(random.Random(seed).choices(string.ascii_lowercase, k=n))


def one_document(tmp_path, text: str) -> str:
    path = tmp_path / "documents.parquet"
    write_parquet({"doc_id": ["d"], "split": ["train"], "text": [text], "source": ["blob"]}, path)
    return str(path)


def train_command(documents: str, out: Path, max_piece_bytes) -> list[str]:
    """A process that trains like the tokenizer job (train_tokenizer, logging to stderr)."""
    spec = {"type": "bpe", "vocab_size": 4096, "max_piece_bytes": max_piece_bytes}
    code = ("import logging, sys; from tokenfair.tokenization import train_tokenizer; "
            "logging.basicConfig(level=logging.INFO); "
            f"train_tokenizer({spec!r}, sys.argv[1], sys.argv[2], 'b')")
    return [sys.executable, "-c", code, documents, str(out)]


def test_long_pieces_are_cut_for_training_only(paragraphs):
    """Pieces longer than max_piece_bytes are cut for training: no token is longer; text without such pieces
    trains exactly as without the cut, and the tokenizer encodes with the plain ByteLevel pre-tokenizer."""
    blob = "abcdefghij" * 5000  # one 50 kB piece
    cut = tz.train_bpe([blob, *paragraphs[:50]], 800, max_piece_bytes=64)
    assert max(len(t) for t in cut.get_vocab()) == 64  # (byte-level symbols: one character per byte)
    assert cut.decode(cut.encode(blob).ids) == blob
    assert json.loads(cut.to_str())["pre_tokenizer"]["type"] == "ByteLevel"  # encoding is not cut
    plain = tz.train_bpe(paragraphs, 600, max_piece_bytes=None)
    assert tz.train_bpe(paragraphs, 600, max_piece_bytes=64).to_str() == plain.to_str()
    with pytest.raises(ValueError, match="max_piece_bytes"):
        tz.train_bpe(paragraphs, 600, max_piece_bytes=0)


def test_document_without_whitespace_trains_in_bounded_time(tmp_path):
    """400 kB of letters in one piece took the trainer 90 s uncut (20 MB: days); cut at the default 1024
    bytes, about a second (20 MB: a minute or two)."""
    documents = one_document(tmp_path, letters(400_000))
    out = tmp_path / "tok" / "tokenizer.json"
    res = subprocess.run(train_command(documents, out, tz.MAX_PIECE_BYTES), capture_output=True, text=True,
                         cwd=REPO, timeout=30)
    assert res.returncode == 0, res.stderr
    tok = tz.load_tokenizer(str(out))
    assert tz.vocab_size(tok) == 4096 and max(len(t) for t in tok.get_vocab()) <= tz.MAX_PIECE_BYTES


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_training_stops_on_a_signal(tmp_path, signum):
    """SIGINT or SIGTERM stop the BPE trainer within seconds (its Rust loop would not see them for minutes):
    status 128 + signum, a log line saying so, no tokenizer.json nor temporary file, no trainer left."""
    documents = one_document(tmp_path, letters(400_000))  # uncut: 90 s of training
    out = tmp_path / "tok" / "tokenizer.json"
    proc = subprocess.Popen(train_command(documents, out, None), stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        seen = []
        for line in proc.stderr:  # the trainer has read the document: it is in its merge loop now
            seen.append(line)
            if "computing up to 4096 tokens" in line:
                break
        time.sleep(1.0)
        proc.send_signal(signum)
        sent = time.monotonic()
        rest = proc.communicate(timeout=10)[1]
        took = time.monotonic() - sent
    finally:
        proc.kill()
    assert proc.returncode == 128 + signum and took < 5, (proc.returncode, took, seen, rest)
    message = next(line for line in rest.splitlines() if "stopped by" in line)
    assert f"tokenizer.json (tokenizers.b): stopped by {signal.Signals(signum).name}" in message
    assert "nothing is written" in message
    assert list(out.parent.iterdir()) == []
    child = int(message.split("(pid ")[1].split(")")[0])
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="finds the trainer in Linux's /proc")
def test_a_killed_trainer_fails_the_job(tmp_path):
    """The trainer child killed from outside (as by the out-of-memory killer): the job fails saying so."""
    documents = one_document(tmp_path, letters(400_000))
    out = tmp_path / "tok" / "tokenizer.json"
    proc = subprocess.Popen(train_command(documents, out, None), stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        for line in proc.stderr:
            if "computing up to 4096 tokens" in line:
                break
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as fh:
            (child,) = map(int, fh.read().split())
        os.kill(child, signal.SIGKILL)
        rest = proc.communicate(timeout=10)[1]
    finally:
        proc.kill()
    assert proc.returncode == 1
    assert "the tokenizer trainer failed (killed by SIGKILL (out of memory?))" in rest, rest
    assert list(out.parent.iterdir()) == []


def test_training_errors_come_back_from_the_trainer(tmp_path):
    documents = tmp_path / "documents.parquet"
    write_parquet({"doc_id": ["d"], "split": ["validation"], "text": ["Peace."], "source": ["s"]}, documents)
    out = tmp_path / "tokenizer.json"
    with pytest.raises(DataError, match="the train split has no documents to train tokenizers.b on"):
        tz.train_tokenizer({"type": "bpe", "vocab_size": 300}, str(documents), str(out), "b")
    assert list(tmp_path.iterdir()) == [documents]


def test_encode_memory_formula_bounds_the_measurements():
    """encode_memory_mb, the tokenize job's memory, is above what encode_split used (its docstring's runs)."""
    for mb, used in ((5, 808), (10, 1460), (20, 2566)):  # one line of English of this many MB
        assert used <= tz.encode_memory_mb(mb * 10**6) < 1.25 * used
    assert 475 <= tz.encode_memory_mb(20 * 10**6, 20_000) < 1000  # the same text in 20 kB documents
    # a corpus of small documents: memory grows with the ids held, not with the documents encoded
    assert tz.encode_memory_mb(10**9, 20_000) < tz.encode_memory_mb(10**9, 5 * 10**6) < tz.encode_memory_mb(10**9)


def test_large_inputs_log_progress(bpe_path, documents, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(tz, "PROGRESS_CHARS", 20_000)
    monkeypatch.setattr(tz, "BATCH_CHARS", 1000)  # every paragraph is a "large" document here
    with caplog.at_level("INFO", logger="tokenfair.tokenization"):
        tz.encode_split(documents, bpe_path, "train", str(tmp_path / "t.npy"), str(tmp_path / "t.parquet"))
    lines = [r.getMessage() for r in caplog.records]
    chars = sum(len(t) for _, t in split_texts(documents, "train"))
    progress = [line for line in lines if "MB of text read so far" in line]
    assert len(progress) == chars // 20_000 and progress[0].startswith(f"{documents}: ")
    assert any("t.npy: encoding a document of 0 MB (about " in line for line in lines)


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
