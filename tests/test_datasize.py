"""Data size at a fixed tokenizer (train.train_docs): the subset's frequency table, the plan's inputs and
tables, training on the first documents, and the regime columns of run.json / runs.csv (embedding_share,
tokens_per_id, epochs, cumulative_decay), each against a hand computation."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from conftest import minimal_config, run_snakemake, write_config
from tokenfair import config as tfconfig
from tokenfair import optim, paths
from tokenfair import plan as tfplan
from tokenfair import train as tt
from tokenfair.counts import count_split
from tokenfair.errors import DataError
from tokenfair.models import count_parameters, embedding_parameters
from tokenfair.tokenization import docs_end


def write_index(path, lengths):
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    pq.write_table(pa.table({"doc_id": [f"d{i}" for i in range(len(lengths))], "start": starts,
                             "length": np.asarray(lengths, dtype=np.int64)}), path)


def word_tokenizer(path, words):
    """A word-level tokenizer.json: ids 0 and 1 the special tokens, then `words`."""
    from tokenizers import Tokenizer, models

    vocab = {paths.EOD_TOKEN: 0, paths.PAD_TOKEN: 1, **{w: i + 2 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=paths.PAD_TOKEN))
    tok.add_special_tokens(list(paths.SPECIAL_TOKENS))
    tok.save(str(path))


# --------------------------------------------------------------------------------------------------
# the subset's frequency table


def test_subset_table_counts_the_first_documents(tmp_path):
    word_tokenizer(tmp_path / "tokenizer.json", ["a", "b", "c", "d"])  # ids 0..5
    docs = [[2, 3, 3, 0], [4, 4, 0], [5, 2, 0]]  # three documents, EOD (0) appended
    ids = np.array([i for d in docs for i in d], dtype=np.uint32)
    np.save(tmp_path / "train.npy", ids)
    write_index(tmp_path / "train.index.parquet", [len(d) for d in docs])
    assert docs_end(str(tmp_path / "train.index.parquet"), 2) == 7

    out = tmp_path / "train~docs2.parquet"
    count_split(str(tmp_path / "train.npy"), str(tmp_path / "tokenizer.json"), str(out),
                index_path=str(tmp_path / "train.index.parquet"), docs=2)
    t = pq.read_table(out).to_pydict()
    assert t["count"] == [2, 0, 1, 2, 2, 0] == np.bincount(ids[:7], minlength=6).tolist()
    assert t["bin"] == [0, -1, 0, 0, 0, -1]  # base 3: counts 1, 2 in bin 0; id 5 (only in document 3) unseen

    with pytest.raises(DataError, match=r"train\.train_docs is 4, but the train split has only 3 documents"):
        count_split(str(tmp_path / "train.npy"), str(tmp_path / "tokenizer.json"), str(tmp_path / "x.parquet"),
                    index_path=str(tmp_path / "train.index.parquet"), docs=4)


# --------------------------------------------------------------------------------------------------
# the plan


def docs_plan(**extra) -> tfplan.Plan:
    cfg = minimal_config({"sotu": {"source": "embedded"}}, axes={"train_docs": [2, 4]}, **extra)
    return tfplan.build(tfconfig.resolve(cfg, check_files=False))


def test_plan_trains_each_size_on_its_own_table_with_one_tokenizer():
    plan = docs_plan()
    r = plan["results_dir"]
    assert [p["run"] for p in plan.points] == [
        "model~tiny-s/weight_decay~0.0/train_docs~2/seed~0", "model~tiny-s/weight_decay~0.0/train_docs~4/seed~0"]
    inputs = [plan.train_inputs(p) for p in plan.points]
    assert {i["tokenizer"] for i in inputs} == {f"{r}/sotu/tok~bpe/tokenizer.json"}
    assert [i["frequency"] for i in inputs] == [f"{r}/sotu/tok~bpe/frequency/train~docs2.parquet",
                                                f"{r}/sotu/tok~bpe/frequency/train~docs4.parquet"]
    assert all(i["train"] == f"{r}/sotu/tok~bpe/tokens/train.npy" for i in inputs)
    assert all(i["train_index"] == f"{r}/sotu/tok~bpe/tokens/train.index.parquet" for i in inputs)
    assert [plan.settings(p)["train"]["train_docs"] for p in plan.points] == [2, 4]
    assert plan.frequency_tables() == [f"{r}/sotu/tok~bpe/frequency/train.parquet",
                                       f"{r}/sotu/tok~bpe/frequency/train~docs2.parquet",
                                       f"{r}/sotu/tok~bpe/frequency/train~docs4.parquet"]


def test_plan_without_train_docs_keeps_its_inputs():
    plan = tfplan.build(tfconfig.resolve(minimal_config({"sotu": {"source": "embedded"}}), check_files=False))
    (point,) = plan.points
    assert "train_index" not in plan.train_inputs(point)
    assert plan.train_inputs(point)["frequency"] == plan.frequency_file("sotu", "bpe")


def test_bad_train_docs_names_the_key():
    cfg = minimal_config({"sotu": {"source": "embedded"}}, train={"train_docs": 0})
    with pytest.raises(tfconfig.ConfigError, match="train_docs"):
        tfconfig.resolve(cfg, check_files=False)


def test_dry_run_plans_one_tokenizer_and_a_table_per_size(tmp_path):
    cfg = {"results_dir": "res", "corpora": {"sotu": {"source": "embedded", "max_train_docs": 4}},
           "tokenizers": {"bpe": {"type": "bpe", "vocab_size": 300}}, "models": ["tiny-xs"],
           "weight_decays": [0.0], "seeds": [0], "axes": {"train_docs": [2, 4]}, "train": {"steps": 5}}
    write_config(tmp_path, cfg)
    res = run_snakemake(tmp_path, "-n", "--quiet", "rules")
    assert res.returncode == 0, res.stderr
    assert re.search(r"^tokenizer\s+1$", res.stdout, re.M), res.stdout
    assert re.search(r"^count_docs\s+2$", res.stdout, re.M), res.stdout
    assert re.search(r"^train\s+2$", res.stdout, re.M), res.stdout


# --------------------------------------------------------------------------------------------------
# the regime columns


def test_cumulative_decay_by_hand():
    train = {"lr": 0.1, "steps": 4, "warmup_steps": 2, "min_lr_ratio": 0.0, "weight_decay": 0.5}
    # lr factors: warmup 1/2, 2/2; then cosine from 1 (step 2) to 0 (step 3): sum 2.5; x 0.1 x 0.5
    assert optim.cumulative_decay(train) == pytest.approx(0.125, abs=1e-15)
    assert optim.cumulative_decay({**train, "weight_decay": 0.0}) == 0.0


class TwoMatrices(torch.nn.Module):
    """An embedding (10 x 4), a 4 x 4 body and a 10-row head, tied or not."""

    def __init__(self, tied: bool):
        super().__init__()
        self.emb = torch.nn.Embedding(10, 4)
        self.body = torch.nn.Linear(4, 4, bias=False)
        self.head = torch.nn.Linear(4, 10, bias=False)
        if tied:
            self.head.weight = self.emb.weight

    def get_input_embeddings(self):
        return self.emb

    def get_output_embeddings(self):
        return self.head


def test_embedding_share_by_hand():
    untied, tied = TwoMatrices(False), TwoMatrices(True)
    assert embedding_parameters(untied) / count_parameters(untied) == 80 / 96  # (40 + 40) / (40 + 16 + 40)
    assert embedding_parameters(tied) / count_parameters(tied) == 40 / 56  # one matrix
    # rows beyond the tokenizer's 8 ids are not parameters of the model it trains
    assert embedding_parameters(untied, 8) / count_parameters(untied, 8) == 64 / 80


def test_run_on_the_first_document_records_its_regime(tmp_path, speeches):
    """A two-document shard; the run trains on the first: its windows, train evaluation and run.json's regime
    follow the first document's tokens only."""
    from tokenfair.tokenization import encode_documents, train_bpe

    docs = [s.lower() for s in speeches[:3]]
    tok = train_bpe(docs, 512)
    tok.save(str(tmp_path / "tokenizer.json"))
    ids, lengths = encode_documents(tok, docs[:2], 0)
    np.save(tmp_path / "train.npy", ids)
    write_index(tmp_path / "train.index.parquet", lengths)
    val, _ = encode_documents(tok, docs[2:], 0)
    np.save(tmp_path / "validation.npy", val)
    first = int(lengths[0])
    train = {"steps": 4, "batch_size": 2, "seq_len": 32, "lr": 0.01, "warmup_steps": 2, "min_lr_ratio": 0.1,
             "eval_every": 4, "eval_train_tokens": 64, "eval_train_final": "all", "eval_val_tokens": 256,
             "threads": 1, "train_docs": 1}
    cfg = tfconfig.resolve({"corpora": {"sotu": {"source": "embedded"}},
                            "tokenizers": {"bpe": {"type": "bpe", "vocab_size": 512}}, "models": ["tiny-xs"],
                            "weight_decays": [0.5], "seeds": [0], "train": train}, check_files=False)
    plan = tfplan.build(cfg)
    out = tmp_path / "run"
    info = tt.run(plan.settings(plan.points[0]), str(tmp_path / "train.npy"),
                  {"validation": str(tmp_path / "validation.npy")}, str(tmp_path / "tokenizer.json"), str(out),
                  train_index=str(tmp_path / "train.index.parquet"))
    run = json.loads((out / paths.RUN_JSON).read_text())
    assert run["train_docs"] == 1 and run["train_tokens"] == first < len(ids)
    assert run["tokens_per_id"] == first / 512
    assert run["epochs"] == 4 * 2 * 32 / first
    # lr factors 1/2, 1, then cosine from 1 to 0.1 over steps 2..3: 1, 0.1; sum 2.6 x 0.01 x 0.5
    assert run["cumulative_decay"] == pytest.approx(0.013, abs=1e-15)
    assert 0 < run["embedding_share"] < 1 and info["tokens_per_id"] == run["tokens_per_id"]
    # the train split evaluates every window of the first document: (first - 1) // 32 windows of 32 targets
    per = pq.read_table(out / paths.RUN_PER_TOKEN).to_pandas()
    final = per[(per.split == "train") & (per.step == 4)]
    assert final["count"].sum() == (first - 1) // 32 * 32

    with pytest.raises(DataError, match=r"train\.train_docs is 3, but the train split has only 2 documents"):
        settings = plan.settings(plan.points[0])
        tt.run({**settings, "train": {**settings["train"], "train_docs": 3}}, str(tmp_path / "train.npy"),
               {"validation": str(tmp_path / "validation.npy")}, str(tmp_path / "tokenizer.json"),
               str(tmp_path / "bad"), train_index=str(tmp_path / "train.index.parquet"))


# --------------------------------------------------------------------------------------------------
# end to end: two data sizes, each binned by its own table


@pytest.mark.heavy
def test_workflow_two_sizes_each_binned_by_its_own_table(tmp_path):
    cfg = {"results_dir": "res", "corpora": {"sotu": {"source": "embedded", "max_train_docs": 3}},
           "tokenizers": {"bpe": {"type": "bpe", "vocab_size": 400}}, "models": ["tiny-xs"],
           "weight_decays": [0.0, 1.0], "seeds": [0], "axes": {"train_docs": [1, 2]},
           "train": {"steps": 4, "batch_size": 4, "seq_len": 32, "warmup_steps": 1, "eval_every": 2,
                     "eval_train_tokens": 512, "eval_val_tokens": 512, "device": "cpu"},
           "aggregate": {"figure_formats": ["png"]}}
    write_config(tmp_path, cfg)
    res = run_snakemake(tmp_path, timeout=900)
    assert res.returncode == 0, res.stderr[-4000:]
    tok = tmp_path / "res" / "sotu" / "tok~bpe"
    runs = pd.read_csv(tmp_path / "res" / "summary" / "runs.csv")
    assert len(runs) == 4
    assert runs[["embedding_share", "tokens_per_id", "epochs", "cumulative_decay"]].notna().all().all()
    ends = pq.read_table(tok / "tokens" / "train.index.parquet").to_pandas().eval("start + length").tolist()
    epochs = runs.groupby("train_docs")["epochs"].first()
    assert epochs[1] / epochs[2] == pytest.approx(ends[1] / ends[0], rel=1e-12)
    assert (runs.loc[runs.weight_decay == 0.0, "cumulative_decay"] == 0).all()
    assert (runs.loc[runs.weight_decay == 1.0, "cumulative_decay"] > 0).all()

    bins = pd.read_csv(tmp_path / "res" / "summary" / "bins.csv")
    for n in (1, 2):
        table = pq.read_table(tok / "frequency" / f"train~docs{n}.parquet").to_pandas()
        assert table["count"].sum() == ends[n - 1]
        own = table[~table.special].groupby("bin").size()
        mine = bins[(bins.train_docs == n) & (bins.split == "validation") & (bins.weight_decay == 0.0)]
        assert mine.set_index("bin")["n_types"].to_dict() == own.to_dict()
