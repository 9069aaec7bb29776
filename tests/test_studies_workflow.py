"""End to end: a config with several studies, an evaluation-only corpus and two tokenizers runs through
Snakemake (data, train, aggregate), then `publish` writes its docs page. Real text, tiny-xs, a few steps."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from conftest import run_snakemake, write_config

pytestmark = pytest.mark.heavy

CFG = {
    "results_dir": "res",
    "corpora": {
        "sotu": {"source": "embedded", "max_train_docs": 3, "lowercase": True},
        "pydoc": {"source": "embedded", "name": "pydoc", "eval_only": True, "lowercase": True},
    },
    "tokenizers": {"bpe": {"type": "bpe", "vocab_size": 400}, "bpe2": {"type": "bpe", "vocab_size": 600}},
    "models": ["tiny-xs"],
    "weight_decays": [0.0, 1.0],
    "seeds": [0, 1],
    "studies": {
        "main": {"tokenizers": ["bpe"]},
        "groups": {"seeds": [0], "tokenizers": ["bpe"], "weight_decays": [1.0],
                   "axes": {"decay_group": ["matrices_no_embeddings"]}},
        "alpha": {"seeds": [0], "tokenizers": ["bpe"], "weight_decays": [1.0], "axes": {"embedding_decay_alpha": [0.5]}},
        "vocab": {"seeds": [0], "tokenizers": ["bpe", "bpe2"]},
    },
    "train": {"steps": 6, "batch_size": 4, "seq_len": 32, "warmup_steps": 1, "eval_every": 3, "eval_train_tokens": 512,
              "eval_val_tokens": 512, "checkpoint_every": 100, "device": "cpu"},
    "aggregate": {"figure_formats": ["png"], "publish_dir": "published"},
}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("studies")
    write_config(root, CFG)
    res = run_snakemake(root, "publish", timeout=900)
    assert res.returncode == 0, res.stderr[-4000:]
    return root, res


def test_every_study_point_trained_once(study):
    root, res = study
    runs = pd.read_csv(root / "res" / "summary" / "runs.csv")
    # main 1 tok x 2 decays x 2 seeds; groups +1; alpha +1; vocab: bpe2 x 2 decays (bpe's are main's)
    assert len(runs) == 4 + 1 + 1 + 2
    assert set(runs["tokenizer"]) == {"bpe", "bpe2"}
    shared = runs[(runs["tokenizer"] == "bpe") & (runs["weight_decay"] == 1.0) & (runs["seed"] == 0)
                  & (runs["decay_group"] == "matrices") & runs["embedding_decay_alpha"].isna()]
    assert len(shared) == 1 and set(shared["studies"].iloc[0].split(";")) == {"main", "vocab"}
    assert "validation_loss_avg" in runs and "ood-pydoc_loss_avg" in runs and runs["ood-pydoc_loss_avg"].notna().all()


def test_publish_writes_the_page(study):
    root, _ = study
    page = (root / "published" / "README.md").read_text()
    for section in ("## main", "## groups", "## alpha", "## vocab"):
        assert section in page
    assert (root / "published" / "bin_loss.png").stat().st_size > 10_000
    assert (root / "published" / "gap_vs_decay.png").exists()
    assert "decay_group=matrices_no_embeddings" in page and "embedding_decay_alpha=0.5" in page
    assert re.search(r"\| tiny-xs \| train \| 1 \| 2 \|", page)  # main: train at decay 1 over 2 seeds
    assert "ood-pydoc gap" in page and "| ood-pydoc | 1 | 2 |" in page
    eff = pd.read_csv(root / "res" / "summary" / "decay_effects.csv")
    assert {"p_value", "p_holm", "significant"} <= set(eff.columns)
