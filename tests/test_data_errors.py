"""Bad input to the data stage: each error names the config key or the file, and nothing is half-written.

Planning-time errors (ConfigError from tokenfair.config.resolve, before any job) where the config and cheap
file reads can tell; job-time errors (DataError) otherwise.
"""

from __future__ import annotations

import json
import os

import pytest
from pathlib import Path

from conftest import minimal_config, parquet_bytes, run_snakemake, write_config
from tokenfair import config, corpus, plan
from tokenfair.errors import ConfigError, DataError


def resolve_corpus(spec: dict, tokenizers: dict | None = None, **extra):
    return config.resolve(minimal_config({"c": spec}, tokenizers, **extra))


@pytest.fixture
def texts(tmp_path, paragraphs):
    d = tmp_path / "texts"
    d.mkdir()
    for i, p in enumerate(paragraphs[:30]):
        (d / f"{i:02d}.txt").write_text(p)
    return d


# ------------------------------------------------------------------------------------------------ planning


@pytest.mark.parametrize(
    "spec, tokenizers, extra, key",
    [
        ({"source": "s3", "path": "x"}, None, {}, "corpora.c.source"),
        ({"source": "text", "path": "no/such/folder"}, None, {}, "corpora.c.path: no/such/folder does not exist"),
        ({"source": "text", "path": "no/such/*.txt"}, None, {}, "corpora.c.path: no/such/*.txt matches no text file"),
        ({"source": "jsonl"}, None, {}, "corpora.c.path: required"),
        ({"source": "hf", "repo": "stanfordnlp/imdb", "files": ["a.parquet"]}, None, {}, "corpora.c.revision"),
        ({"source": "hf", "repo": "r", "revision": "main", "files": ["a.csv"]}, None, {}, "corpora.c.files: a.csv"),
        ({"source": "embedded", "name": "brown"}, None, {}, "corpora.c.name"),
        ({"source": "embedded", "lowercase": True, "colour": "red"}, None, {}, "corpora.c.colour: unknown key"),
        ({"source": "embedded"}, {"b": {"type": "bpe", "vocab_size": 257}}, {}, "tokenizers.b.vocab_size: 257 is below 258"),
        ({"source": "embedded"}, {"b": {"type": "bpe", "vocab_size": "4k"}}, {}, "tokenizers.b.vocab_size"),
        ({"source": "embedded"}, {"b": {"type": "bpe", "vocab_size": 4096.5}}, {}, "tokenizers.b.vocab_size"),
        ({"source": "embedded"}, {"b": {"type": "bpe"}}, {}, "tokenizers.b.vocab_size: required"),
        ({"source": "embedded"}, {"b": {"type": "bpe", "vocab_size": 300, "vocab": 3}}, {}, "tokenizers.b.vocab: unknown key"),
        ({"source": "embedded"}, None, {"frequencies": {}}, "config key frequencies: unknown key"),
        ({"source": "embedded", "tokenizers": ["nope"]}, None, {}, "corpora.c.tokenizers: unknown tokenizer id 'nope'"),
    ],
)
def test_planning_errors_name_the_key(spec, tokenizers, extra, key):
    with pytest.raises(ConfigError) as exc:
        resolve_corpus(spec, tokenizers, **extra)
    assert key in str(exc.value)


@pytest.mark.parametrize(
    "corpora, key",
    [
        ({"c": {"source": "embedded"}, "ood": {"source": "embedded", "name": "pydoc", "eval_only": True,
                                                "tokenizers": ["bpe"]}},
         "config key corpora.ood.tokenizers: an eval_only corpus is tokenized by each training corpus's own tokenizer"),
        ({"c": {"source": "embedded"}, "ood": {"source": "embedded", "name": "pydoc", "eval_only": True,
                                                "max_train_docs": 10}},
         "config key corpora.ood.max_train_docs: an eval_only corpus is evaluated whole"),
        ({"ood": {"source": "embedded", "name": "pydoc", "eval_only": True},
          "ood2": {"source": "embedded", "eval_only": True}},
         "config key corpora: every corpus (ood, ood2) has eval_only: true, so there is nothing to train on"),
        ({"c": {"source": "embedded", "name": "brown", "eval_only": True}, "d": {"source": "embedded"}},
         "config key corpora.c.name: unknown embedded corpus 'brown' (have: sotu, pydoc)"),
    ],
)
def test_eval_only_errors_name_the_key(corpora, key):
    with pytest.raises(ConfigError) as exc:
        config.resolve(minimal_config(corpora))
    assert key in str(exc.value)


def test_eval_only_corpus_is_accepted():
    cfg = config.resolve(minimal_config({"c": {"source": "embedded"},
                                         "ood": {"source": "embedded", "name": "pydoc", "eval_only": True}}))
    p = plan.build(cfg)
    assert p.eval_corpora == ["ood"] and p.training_corpora == [("c", "bpe")]


def test_vocab_size_integral_float_is_accepted():
    cfg = resolve_corpus({"source": "embedded"}, {"b": {"type": "bpe", "vocab_size": 512.0}})
    assert cfg["tokenizers"]["b"]["vocab_size"] == 512 and isinstance(cfg["tokenizers"]["b"]["vocab_size"], int)


def test_not_parquet_and_missing_text_column(tmp_path, paragraphs):
    fake = tmp_path / "fake.parquet"
    fake.write_text(json.dumps({"text": "a csv in disguise"}))
    with pytest.raises(ConfigError, match=r"corpora.c.path: .*fake.parquet is not a Parquet file"):
        resolve_corpus({"source": "parquet", "path": str(fake)})
    good = tmp_path / "good.parquet"
    good.write_bytes(parquet_bytes({"review": paragraphs[:3]}))
    with pytest.raises(ConfigError, match=r"corpora.c.text_column: column 'text' not in .*good.parquet \(columns: review\)"):
        resolve_corpus({"source": "parquet", "path": str(good)})
    jl = tmp_path / "d.jsonl"
    jl.write_text(json.dumps({"review": paragraphs[0]}) + "\n")
    with pytest.raises(ConfigError, match=r"corpora.c.text_column: field 'body' not in the first record of .*d.jsonl"):
        resolve_corpus({"source": "jsonl", "path": str(jl), "text_column": "body"})


def test_tokenizer_file_errors(tmp_path, paragraphs):
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"model": {"type": "BPE", "vocab": ')
    with pytest.raises(ConfigError, match=r"tokenizers.t.path: .*tokenizer.json: not a valid tokenizer.json"):
        resolve_corpus({"source": "embedded"}, {"t": {"type": "file", "path": str(bad)}})
    with pytest.raises(ConfigError, match=r"tokenizers.t.path: .*missing.json: tokenizer file does not exist"):
        resolve_corpus({"source": "embedded"}, {"t": {"type": "file", "path": str(tmp_path / "missing.json")}})

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(paragraphs[:40], trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>"], show_progress=False))
    tok.save(str(tmp_path / "noeod.json"))
    spec = {"t": {"type": "file", "path": str(tmp_path / "noeod.json")}}
    with pytest.raises(ConfigError, match=r"tokenizers.t.eod_token: .*no end-of-document token .*corpora.c has eod: true"):
        resolve_corpus({"source": "embedded"}, spec)
    resolve_corpus({"source": "embedded", "eod": False}, spec)  # fine without EOD
    resolve_corpus({"source": "embedded"}, {"t": {**spec["t"], "eod_token": "<unk>"}})  # or with one named
    with pytest.raises(ConfigError, match=r"tokenizers.t.eod_token: '</s>' is not in the vocabulary"):
        resolve_corpus({"source": "embedded"}, {"t": {**spec["t"], "eod_token": "</s>"}})
    with pytest.raises(ConfigError, match=r"tokenizers.b.eod_token: only for a tokenizer of type file"):
        resolve_corpus({"source": "embedded"}, {"b": {"type": "bpe", "vocab_size": 300, "eod_token": "x"}})


def test_snakemake_dry_run_reports_config_errors(tmp_path):
    """The planning-time errors stop a real `snakemake -n` with the key in its output."""
    cases = [
        ({"tokenizers": {"b": {"type": "bpe", "vocab_size": 100}}}, "tokenizers.b.vocab_size: 100 is below 258"),
        ({"corpora": {"c": {"source": "embedded", "shuffle": True}}}, "shuffle"),
    ]
    for i, (change, expected) in enumerate(cases):
        cfg = minimal_config({"c": {"source": "embedded"}})
        cfg.update(change)
        work = tmp_path / f"w{i}"
        write_config(work, cfg)
        res = run_snakemake(work, "-n")
        assert res.returncode != 0
        assert expected in res.stdout + res.stderr, res.stdout + res.stderr
        assert not (work / "results").exists()


# ------------------------------------------------------------------------------------------------ job time


def test_empty_corpus_fails_and_writes_nothing(tmp_path):
    d = tmp_path / "texts"
    d.mkdir()
    (d / "a.txt").write_text("")
    (d / "b.txt").write_text("  \n\n \n")
    out = tmp_path / "out" / "documents.parquet"
    spec = resolve_corpus({"source": "text", "path": str(d)})["corpora"]["c"]
    with pytest.raises(DataError, match=r"corpus c: no documents, every input is empty: .*a.txt, .*b.txt \(corpora.c\)"):
        corpus.prepare(spec, "c", str(out))
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_empty_split_fails(texts, tmp_path):
    spec = resolve_corpus({"source": "text", "path": str(texts), "validation_fraction": 0.001})["corpora"]["c"]
    with pytest.raises(DataError, match=r"the validation split is empty \(corpora.c.validation_fraction = 0.001 selects none of 30"):
        corpus.prepare(spec, "c", str(tmp_path / "documents.parquet"))
    spec = resolve_corpus({"source": "text", "path": str(texts), "validation_fraction": 0.5, "test_fraction": 0.0,
                           "max_train_docs": 2})["corpora"]["c"]
    counts = corpus.prepare(spec, "c", str(tmp_path / "documents.parquet"))
    assert counts["train"] == 2 and counts["validation"] > 5  # max_train_docs never empties validation


def test_jsonl_later_record_without_text_column(tmp_path, paragraphs):
    jl = tmp_path / "d.jsonl"
    jl.write_text(json.dumps({"text": paragraphs[0]}) + "\n" + json.dumps({"body": paragraphs[1]}) + "\n")
    spec = resolve_corpus({"source": "jsonl", "path": str(jl)})["corpora"]["c"]
    with pytest.raises(DataError, match=r"d.jsonl line 2: no field 'text' \(corpora.c.text_column\)"):
        corpus.prepare(spec, "c", str(tmp_path / "documents.parquet"))
    assert not (tmp_path / "documents.parquet").exists()


def test_snakemake_job_error_names_the_file(tmp_path):
    """A job-time DataError fails the run, shows its message in Snakemake's output, and leaves no output."""
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "empty.txt").write_text("\n")
    write_config(tmp_path, minimal_config({"c": {"source": "text", "path": "texts"}}))
    res = run_snakemake(tmp_path, "results/c/documents.parquet")
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "DataError: corpus c: no documents, every input is empty: texts/empty.txt" in out, out
    assert not (tmp_path / "results" / "c" / "documents.parquet").exists()
    assert "no documents" in (tmp_path / "results" / "logs" / "prepare" / "c.log").read_text()


def test_atomic_writes_leave_nothing_on_failure(tmp_path):
    import numpy as np

    from tokenfair.io import atomic_path, write_json, write_parquet

    out = tmp_path / "sub" / "table.parquet"
    with pytest.raises(RuntimeError):
        with atomic_path(out) as tmp:
            assert tmp.endswith(".parquet") and os.path.dirname(tmp) == str(out.parent)
            open(tmp, "w").write("half")
            raise RuntimeError("killed")
    assert list(out.parent.iterdir()) == []
    write_parquet({"a": [1, 2]}, out)
    with atomic_path(tmp_path / "x.npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.arange(3, dtype=np.uint32))
    write_json({"k": 1}, tmp_path / "x.json")
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["table.parquet", "x.json", "x.npy"]
    assert np.load(tmp_path / "x.npy").tolist() == [0, 1, 2] and json.loads((tmp_path / "x.json").read_text()) == {"k": 1}
    assert (out.stat().st_mode & 0o777) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_atomic_dir_replaces_a_folder_whole_or_not_at_all(tmp_path):
    from tokenfair.io import atomic_dir

    out = tmp_path / "model"
    out.mkdir()
    (out / "old.bin").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (Path(tmp) / "half.bin").write_text("half")
            raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"] and os.listdir(out) == ["old.bin"]
    with atomic_dir(out) as tmp:
        (Path(tmp) / "new.bin").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"] and os.listdir(out) == ["new.bin"]


def test_parquet_text_column_must_hold_text(tmp_path, paragraphs):
    ints = tmp_path / "ints.parquet"
    ints.write_bytes(parquet_bytes({"text": list(range(3)), "body": paragraphs[:3]}))
    with pytest.raises(ConfigError, match=r"^config key corpora.c.text_column: column 'text' of .*ints.parquet holds "
                                          r"int64, not text \(allowed: string, large_string\)$"):
        resolve_corpus({"source": "parquet", "path": str(ints)})
    resolve_corpus({"source": "parquet", "path": str(ints), "text_column": "body"})
    import pyarrow as pa
    import pyarrow.parquet as pq

    large = tmp_path / "large.parquet"
    pq.write_table(pa.table({"text": pa.array(paragraphs[:3], pa.large_string())}), large)
    resolve_corpus({"source": "parquet", "path": str(large)})


def check_embeddings(spec: dict, tokenizers: dict, **extra) -> None:
    cfg = resolve_corpus(spec, tokenizers, **extra)
    plan.build(cfg)


def test_given_tokenizer_larger_than_the_model_embedding(tmp_path):
    """models.<m>.vocab_size fixes the embedding rows; a given tokenizer with more ids fails at planning, not
    when its train job starts."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<|endoftext|>": 0, **{f"t{i}": i + 1 for i in range(399)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    given = {"given": {"type": "file", "path": str(tmp_path / "tokenizer.json")}}
    small = {"small": {"preset": "tiny-s", "vocab_size": 300}}
    with pytest.raises(ConfigError, match=r"^config key models.small.vocab_size: 300 embedding rows, but "
                                          r"tokenizers.given \(.*tokenizer.json\) has 400 ids \(study main\); raise "
                                          r"vocab_size to at least 400 or leave it unset"):
        check_embeddings({"source": "embedded"}, given, models=small)
    check_embeddings({"source": "embedded"}, given, models={"small": {"preset": "tiny-s", "vocab_size": 400}})
    check_embeddings({"source": "embedded"}, given, models={"tiny-s": "tiny-s"})  # unset: the tokenizer's size
    # only the pairs a study trains: the small model with a bpe of 300, the given tokenizer with tiny-s
    both = {**given, "bpe": {"type": "bpe", "vocab_size": 300}}
    check_embeddings({"source": "embedded"}, both, models={**small, "tiny-s": "tiny-s"},
                     studies={"main": {"models": ["tiny-s"]}, "vocab": {"models": ["small"], "tokenizers": ["bpe"]}})
    with pytest.raises(ConfigError, match=r"config key models.small.vocab_size: .*\(study vocab\)"):
        check_embeddings({"source": "embedded"}, both, models={**small, "tiny-s": "tiny-s"},
                         studies={"main": {"models": ["tiny-s"]}, "vocab": {"models": ["small"]}})
    # in a real `snakemake -n`, before any job
    work = tmp_path / "work"
    write_config(work, minimal_config({"c": {"source": "embedded"}}, given, models=small))
    res = run_snakemake(work, "-n")
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "config key models.small.vocab_size: 300 embedding rows" in out, out
    assert "Traceback (most recent call last)" not in out and not (work / "results").exists()
