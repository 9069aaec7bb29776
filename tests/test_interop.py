"""The model folder (tokenfair.export) in every supported transformers: tiny runs of each family (llama,
qwen2, openelm) on real mixed-case text of a lowercased corpus, loaded with the Auto classes in a subprocess
(tests/interop_check.py) of this python and, when TOKENFAIR_COMPAT_PYTHON names one, of that python too (a venv
with the lowest supported transformers; .ci/run builds it). TOKENFAIR_REQUIRE_COMPAT=1 fails instead of
skipping when it is unset. Each folder must give the training ids of raw text, the model's context length
and the recorded validation loss (mean and per target id)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tokenfair import config as tfconfig
from tokenfair import export, paths
from tokenfair import plan as tfplan
from tokenfair import train as tt
from tokenfair import windows as windows_mod
from tokenfair.corpus import normalise
from tokenfair.tokenization import encode_documents, load_tokenizer, train_bpe

REPO = Path(__file__).resolve().parents[1]
TRAIN = {"steps": 20, "batch_size": 8, "seq_len": 32, "lr": 3e-3, "warmup_steps": 2, "eval_every": 20,
         "log_every": 10, "checkpoint_every": 20, "eval_train_tokens": 1024, "eval_val_tokens": 1024, "threads": 1}
MODELS = {
    "llama": "tiny-xs",
    "qwen2": {"family": "qwen2", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
              "num_key_value_heads": 1, "intermediate_size": 64, "rope_theta": 1000000.0,
              "max_position_embeddings": 256},
    "openelm": "tiny-openelm",
}


def settings_for(name: str) -> dict:
    cfg = tfconfig.resolve({
        "corpora": {"sotu": {"source": "embedded", "lowercase": True}},
        "tokenizers": {"bpe": {"type": "bpe", "vocab_size": 512}},
        "models": {name: MODELS[name]}, "weight_decays": [0.1], "seeds": [0], "train": TRAIN,
    }, check_files=False)
    plan = tfplan.build(cfg)
    return plan.settings(plan.points[0])


@pytest.fixture(scope="module")
def expected(tmp_path_factory, speeches) -> Path:
    """Trains one run per family and writes the checker's EXPECTED.json."""
    root = tmp_path_factory.mktemp("interop")
    docs = [normalise(s, lowercase=True) for s in speeches[:10]]
    tok = train_bpe(docs[:8], 512)
    tok.save(str(root / "tokenizer.json"))
    for split, texts in (("train", docs[:8]), ("validation", docs[8:])):
        np.save(root / f"{split}.npy", encode_documents(tok, texts, 0)[0])
    # mixed case, \r\n newlines and surrounding white space, as a user's raw text
    text = "  " + speeches[10][:3000].replace("\n", "\r\n") + "\r\n"
    assert text.lower() != text
    cases = []
    for name in MODELS:
        settings = settings_for(name)
        out = root / name
        tt.run(settings, train_tokens=str(root / "train.npy"), eval_tokens={"validation": str(root / "validation.npy")},
               tokenizer_json=str(root / "tokenizer.json"), out_dir=str(out),
               corpus_spec={"lowercase": True, "eod": True})
        table = pq.read_table(out / paths.RUN_PER_TOKEN).to_pandas()
        final = table[(table.step == TRAIN["steps"]) & (table.split == "validation")]
        shard = np.load(root / "validation.npy")
        seq_len = TRAIN["seq_len"]
        starts = windows_mod.eval_starts(len(shard), seq_len, TRAIN["eval_val_tokens"])
        windows = shard[starts[:, None] + np.arange(seq_len + 1)]
        cases.append({
            "folder": str(out / paths.RUN_MODEL), "text": text,
            "ids": encode_documents(tok, [normalise(text, lowercase=True)])[0].tolist(),
            "max_length": settings["model"]["max_position_embeddings"], "windows": windows.tolist(),
            "loss": float(final.loss_sum.sum() / final["count"].sum()), "loss_sums": final.loss_sum.tolist(),
        })
    path = root / "expected.json"
    path.write_text(json.dumps(cases))
    return path


def check_with(python: str, expected: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # tokenfair for openelm, without installing it there
    res = subprocess.run([python, str(REPO / "tests" / "interop_check.py"), str(expected)], capture_output=True,
                         text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    assert res.stdout.count(": ok\n") == len(MODELS), res.stdout


def test_model_folders_load_in_this_transformers(expected):
    check_with(sys.executable, expected)


def test_model_folders_load_in_the_lowest_supported_transformers(expected):
    python = os.environ.get("TOKENFAIR_COMPAT_PYTHON")
    if not python:
        if os.environ.get("TOKENFAIR_REQUIRE_COMPAT") == "1":
            pytest.fail("TOKENFAIR_REQUIRE_COMPAT=1 but TOKENFAIR_COMPAT_PYTHON (a python with the lowest "
                        "supported transformers) is unset")
        pytest.skip("TOKENFAIR_COMPAT_PYTHON is unset")
    check_with(python, expected)


def test_normalizer_repeats_the_corpus_normalisation(speeches):
    texts = [speeches[0][:2000], " \r\nThe Congress\rOF the UNITED States\r\n\t", "Ärger ÉTÉ İstanbul ǅ", ""]
    for lowercase in (False, True):
        norm = export.normalizer(lowercase)
        for text in texts:
            assert norm.normalize_str(text) == normalise(text, lowercase=lowercase)
    # the documented differences
    assert export.normalizer(True).normalize_str("ΟΔΟΣ") == "οδοσ" != normalise("ΟΔΟΣ", lowercase=True)
    assert export.normalizer(False).normalize_str("\x1cx") == "\x1cx" != normalise("\x1cx")


def test_tokenizer_keeps_a_given_tokenizers_own_normalizer(tmp_path, paragraphs):
    from tokenizers import normalizers

    tok = train_bpe(paragraphs, 300)
    tok.normalizer = normalizers.NFKC()
    tok.save(str(tmp_path / "tokenizer.json"))
    folder_tok, config = export.hf_tokenizer(str(tmp_path / "tokenizer.json"), {"eod": 0, "pad": None},
                                             lowercase=True, max_length=64)
    assert folder_tok.normalizer.normalize_str(" ﬁNE\r\n") == "fine"  # lowercased, stripped, then NFKC
    assert config == {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 64,
                      "clean_up_tokenization_spaces": False, "eos_token": "<|endoftext|>",
                      "pad_token": "<|endoftext|>"}
    assert load_tokenizer(str(tmp_path / "tokenizer.json")).normalizer.__class__ is normalizers.NFKC  # unchanged


def test_legacy_config_names():
    new = {"rope_parameters": {"rope_theta": 1e6, "rope_type": "default"}, "dtype": "float32"}
    assert export.legacy_config(new) == {**new, "rope_theta": 1e6, "rope_scaling": None, "torch_dtype": "float32"}
    scaled = {"rope_parameters": {"rope_theta": 1e4, "rope_type": "linear", "factor": 2.0}}
    assert export.legacy_config(scaled)["rope_scaling"] == {"rope_type": "linear", "factor": 2.0}
    old = {"rope_theta": 1e4, "rope_scaling": None, "torch_dtype": "float32"}
    assert export.legacy_config(old) == old
