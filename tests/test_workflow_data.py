"""The data stage through real Snakemake runs (subprocesses, --cores 2, results in tmp_path)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from tokenizers import Tokenizer

from conftest import jsonl_bytes, minimal_config, parquet_bytes, run_snakemake, write_config
from tokenfair import config as tfconfig
from tokenfair import plan as tfplan

REV = "89abcdef0123456789abcdef0123456789abcdef"


def data_targets(cfg: dict) -> list[str]:
    """Every data-stage output of a config (relative to its working directory)."""
    return tfplan.build(tfconfig.resolve(cfg, check_files=False)).data_targets()


def independent_counts(documents, tokenizer_json, split, eod=True):
    """Re-encode a split's documents with the saved tokenizer, one by one, and bincount."""
    tok = Tokenizer.from_file(str(tokenizer_json))
    t = pq.read_table(documents).to_pydict()
    eod_ids = [tok.token_to_id("<|endoftext|>")] if eod else []
    ids = [i for text, s in zip(t["text"], t["split"]) if s == split for i in tok.encode(text).ids + eod_ids]
    return np.bincount(np.array(ids, dtype=np.int64), minlength=tok.get_vocab_size()), tok


@pytest.fixture(scope="module")
def default_run(tmp_path_factory, repo_root):
    """The repository's config.yaml (the embedded default) run through the data stage."""
    work = tmp_path_factory.mktemp("default")
    shutil.copy(repo_root / "config.yaml", work / "config.yaml")
    cfg = yaml.safe_load((work / "config.yaml").read_text())
    res = run_snakemake(work, *data_targets(cfg))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return work, tfplan.build(tfconfig.resolve(cfg))


def test_default_frequency_tables_match_an_independent_count(default_run):
    """Acceptance check: the embedded corpus's tables equal a re-encoding + np.bincount, exactly."""
    work, cfg = default_run
    r = work / cfg["results_dir"]
    for corpus, tok_id in cfg.training_corpora:
        docs = r / corpus / "documents.parquet"
        tokenizer = r / corpus / f"tok~{tok_id}" / "tokenizer.json"
        for split in cfg.corpus_splits(corpus):
            expected, tok = independent_counts(docs, tokenizer, split)
            table = pq.read_table(r / corpus / f"tok~{tok_id}" / "frequency" / f"{split}.parquet").to_pydict()
            np.testing.assert_array_equal(np.array(table["count"]), expected)
            assert table["token"] == [tok.id_to_token(i) for i in range(tok.get_vocab_size())]
            shard = np.load(r / corpus / f"tok~{tok_id}" / "tokens" / f"{split}.npy", mmap_mode="r")
            assert shard.dtype == np.uint32 and sum(table["count"]) == shard.size  # the train table = the train shard
        for ext in ("png", "pdf"):
            assert (r / corpus / f"tok~{tok_id}" / "frequency" / f"zipf.{ext}").stat().st_size > 1000
    # the tokenizer, the shards and these tables are the whole train split's (the models see train.train_docs
    # of its documents: a subset table per run, tests/test_datasize.py)
    n = pq.read_table(r / "sotu" / "documents.parquet").to_pydict()["split"]
    assert cfg["corpora"]["sotu"]["max_train_docs"] is None and n.count("train") > 200 and n.count("validation") > 0


def test_default_logs_and_benchmarks(default_run):
    work, cfg = default_run
    logs = work / cfg["results_dir"] / "logs"
    bench = work / cfg["results_dir"] / "benchmarks"
    for rule in ("prepare", "tokenizer", "tokenize", "count", "zipf"):
        assert any((logs / rule).rglob("*.log")), rule
        assert any((bench / rule).rglob("*.tsv")), rule
    assert "byte-level BPE with 2048 tokens" in (logs / "tokenizer" / "sotu" / "tok~bpe2k.log").read_text()


def test_tiny_workflow_text_hf_and_given_tokenizer(tmp_path, hf_hub, paragraphs):
    """A text corpus (blocks) with a given tokenizer, and an hf corpus (stand-in Hub, a held-out file) with a
    trained one; then a rerun plans nothing, and editing a corpus file reruns its prepare."""
    from tokenizers import models, pre_tokenizers, trainers

    texts = tmp_path / "texts"
    texts.mkdir()
    for i in range(4):
        (texts / f"part{i}.txt").write_text("\n\n".join(paragraphs[i * 20 : (i + 1) * 20]))
    given = Tokenizer(models.BPE(unk_token="<unk>"))
    given.pre_tokenizer = pre_tokenizers.Whitespace()
    given.train_from_iterator(paragraphs, trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "</s>"],
                                                              show_progress=False))
    given.save(str(tmp_path / "given.json"))
    repo = "stanfordnlp/imdb"
    hf_hub.add(repo, REV, "plain_text/train-00000-of-00001.parquet",
               parquet_bytes({"text": paragraphs[100:160], "label": [0] * 60}))
    hf_hub.add(repo, REV, "plain_text/test-00000-of-00001.jsonl",
               jsonl_bytes([{"text": p, "label": 1} for p in paragraphs[160:170]]))
    cfg = minimal_config(
        {
            "speeches": {"source": "text", "path": "texts/*.txt", "documents": "block", "validation_fraction": 0.2,
                         "tokenizers": ["given"]},
            "imdb": {"source": "hf", "repo": repo, "revision": REV, "lowercase": True,
                     "files": ["plain_text/train-00000-of-00001.parquet"],
                     "heldout_files": ["plain_text/test-00000-of-00001.jsonl"], "tokenizers": ["bpe"]},
        },
        {"bpe": {"type": "bpe", "vocab_size": 320}, "given": {"type": "file", "path": "given.json"}},
    )
    write_config(tmp_path, cfg)
    env = {"HF_ENDPOINT": hf_hub.endpoint, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0"}
    targets = data_targets(cfg)
    res = run_snakemake(tmp_path, *targets, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert all((tmp_path / t).exists() for t in targets)

    r = tmp_path / "results"
    imdb = pq.read_table(r / "imdb" / "documents.parquet").to_pydict()
    assert sorted(t for t, s in zip(imdb["text"], imdb["split"]) if s == "test") == sorted(p.lower() for p in paragraphs[160:170])
    # the given tokenizer is copied as is, and its </s> ends every document
    assert (r / "speeches" / "tok~given" / "tokenizer.json").read_bytes() == (tmp_path / "given.json").read_bytes()
    expected, _ = independent_counts(r / "speeches" / "documents.parquet", tmp_path / "given.json", "train", eod=False)
    expected[given.token_to_id("</s>")] += sum(s == "train" for s in pq.read_table(r / "speeches" / "documents.parquet").column("split").to_pylist())
    got = pq.read_table(r / "speeches" / "tok~given" / "frequency" / "train.parquet").column("count").to_numpy()
    np.testing.assert_array_equal(got, expected)
    assert not [p for p in r.rglob(".*") if p.is_file()]  # no temporaries left anywhere

    again = run_snakemake(tmp_path, "-n", *targets, env=env)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, again.stdout[-2000:]

    part = texts / "part0.txt"
    part.write_text(part.read_text() + "\n\nA new paragraph on the state of the union.\n")
    st = part.stat()
    os.utime(part, (st.st_atime + 5, st.st_mtime + 5))
    plan = run_snakemake(tmp_path, "-n", *targets, env=env)
    out = plan.stdout + plan.stderr
    assert plan.returncode == 0 and "rule prepare:" in out, out[-2000:]
    assert "wildcards: corpus=speeches" in out and "wildcards: corpus=imdb\n" not in out


def test_eval_only_corpus_tokenized_by_each_training_tokenizer(tmp_path, repo_root):
    """An eval_only corpus (the embedded pydoc topics, lowercased, eod: true) beside a training corpus with
    eod: false: a plain run plans its ood/ shard for each training tokenizer (a trained BPE and the shipped
    pydoc-bpe4k file), and each shard is exactly encode_batch of all its documents (every split, in order)
    + that tokenizer's EOD id: the eval_only corpus's own eod setting, not the training corpus's."""
    given = repo_root / "tokenizers" / "pydoc-bpe4k" / "tokenizer.json"
    cfg = minimal_config(
        {"sotu": {"source": "embedded", "lowercase": True, "max_train_docs": 3, "eod": False},
         "pydoc": {"source": "embedded", "name": "pydoc", "lowercase": True, "eval_only": True}},
        {"bpe": {"type": "bpe", "vocab_size": 300}, "given": {"type": "file", "path": str(given)}},
    )
    write_config(tmp_path, cfg)
    ood = [t for t in data_targets(cfg) if "/ood/" in t]
    assert sorted(ood) == ["results/sotu/tok~bpe/ood/pydoc.npy", "results/sotu/tok~given/ood/pydoc.npy"]
    plan = run_snakemake(tmp_path, "-n")  # the default target: data_targets() includes the ood shards
    out = plan.stdout + plan.stderr
    assert plan.returncode == 0, out[-3000:]
    assert all(t in out for t in ood) and "tokenizer.json" in out
    assert "results/pydoc/tok~" not in out  # no tokenizer, shard or run of the eval_only corpus itself

    res = run_snakemake(tmp_path, *ood)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    r = tmp_path / "results"
    docs = pq.read_table(r / "pydoc" / "documents.parquet").to_pydict()
    assert {"train", "validation"} <= set(docs["split"]) and len(docs["text"]) > 50
    assert all(t == t.lower() for t in docs["text"])
    for tok_id in ("bpe", "given"):
        folder = r / "sotu" / f"tok~{tok_id}"
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        eod = tok.token_to_id("<|endoftext|>")
        encs = tok.encode_batch(docs["text"], add_special_tokens=False)
        expected = np.array([i for e in encs for i in e.ids + [eod]], dtype=np.uint32)
        shard = np.load(folder / "ood" / "pydoc.npy")
        assert shard.dtype == np.uint32
        np.testing.assert_array_equal(shard, expected)
        index = pq.read_table(folder / "ood" / "pydoc.index.parquet").to_pydict()
        assert index["doc_id"] == docs["doc_id"]
        assert index["length"] == [len(e.ids) + 1 for e in encs]
        assert index["start"] == [0, *np.cumsum(index["length"])[:-1].tolist()]
        assert (tmp_path / "results" / "logs" / "tokenize_ood" / "sotu" / f"tok~{tok_id}" / "pydoc.log").exists()
    assert (r / "sotu" / "tok~given" / "tokenizer.json").read_bytes() == given.read_bytes()
    assert not list(r.glob("pydoc/tok~*"))
