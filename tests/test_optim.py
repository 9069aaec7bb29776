"""The optimizer (tokenfair.optim): every parameter in exactly one named group for every preset, decay
group and tying; the groups' decays; the per-row decay AdamW applies against its closed form; the sign
guard; resuming keeps the row scales."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tokenfair import optim
from tokenfair.errors import DataError
from tokenfair.models import build_model
from tokenfair.presets import PRESETS, resolve_model_spec

CPU = torch.device("cpu")
MODES = ("all", "matrices", "matrices_no_embeddings")


def _train(**kw) -> dict:
    return {"decay_group": "matrices", "weight_decay": 0.5, "lr": 1e-2, "betas": [0.9, 0.95], "eps": 1e-8,
            "embedding_decay_rows": "both", **kw}


def _meta(preset: str, tie: bool):
    with torch.device("meta"):
        return build_model(resolve_model_spec(preset), 1000, tie_word_embeddings=tie)


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_parameter_in_exactly_one_group(preset, tie):
    model = _meta(preset, tie)
    assert optim.tied(model) is tie
    emb = model.get_input_embeddings().weight
    params = dict(model.named_parameters())
    for mode in MODES:
        groups = optim.param_groups(model, _train(decay_group=mode))
        names = [n for g in groups for n in g.names]
        assert sorted(names) == sorted(params) and len(set(names)) == len(names), mode
        by_name = {g.name: g for g in groups}
        assert [g.name for g in groups] == [g for g in optim.GROUPS if g in by_name]  # fixed order, none empty
        assert [params[n] for n in by_name["embeddings"].names] == [emb]  # tied: the one tensor, here only
        assert ("head" in by_name) is not tie
        assert all(params[n].ndim >= 2 for n in by_name["matrices"].names)
        assert all(params[n].ndim == 1 for n in by_name["norms_biases"].names)
        decays = {g.name: g.weight_decay for g in groups}
        expect = {g: 0.5 if g in optim.DECAYED[mode] else 0.0 for g in by_name}
        assert decays == expect, mode
        lists = optim.decay_lists(model, groups)
        assert lists["row_decay"] == [] and sorted(lists["decay"] + lists["no_decay"]) == sorted(params)


def test_group_names_and_decays_of_tiny_xs():
    model = build_model(resolve_model_spec("tiny-xs"), 300)
    groups = optim.param_groups(model, _train(decay_group="matrices_no_embeddings", weight_decay=0.1))
    assert [(g.name, g.decayed, g.weight_decay) for g in groups] == [
        ("matrices", True, 0.1), ("embeddings", False, 0.0), ("head", False, 0.0), ("norms_biases", False, 0.0)]
    assert groups[1].names == ["model.embed_tokens.weight"] and groups[2].names == ["lm_head.weight"]
    assert "model.norm.weight" in groups[3].names and "model.layers.0.self_attn.q_proj.weight" in groups[0].names
    with pytest.raises(ValueError, match="unknown train.decay_group 'some'"):
        optim.param_groups(model, _train(decay_group="some"))


@pytest.mark.parametrize("tie, rows, scaled", [
    (False, "both", ["embeddings", "head"]), (False, "unembedding", ["head"]),
    (True, "both", ["embeddings"]), (True, "unembedding", ["embeddings"]),  # tied: the shared tensor either way
])
def test_row_scales_go_to_the_groups_embedding_decay_rows_names(tie, rows, scaled):
    model = build_model(resolve_model_spec("tiny-xs"), 300, tie_word_embeddings=tie)
    s = np.linspace(0.5, 1.5, 300)
    groups = optim.param_groups(model, _train(embedding_decay_rows=rows), s)
    assert [g.name for g in groups if g.row_scales is not None] == scaled
    lists = optim.decay_lists(model, groups)
    assert lists["row_decay"] == [n for g in groups if g.name in scaled for n in g.names]
    # not decayed: no row scales
    groups = optim.param_groups(model, _train(decay_group="matrices_no_embeddings", embedding_decay_rows=rows), s)
    assert all(g.row_scales is None for g in groups)


@pytest.mark.parametrize("tie", [False, True])
def test_per_row_decay_equals_the_closed_form(tie):
    """One AdamW step: row i of a row-scaled group becomes row_i (1 - lr wd s_i) - lr g/(|g| + eps) (the first
    Adam update), a uniformly decayed matrix p (1 - lr wd) - lr g/(|g| + eps); zero gradient: decay only."""
    torch.manual_seed(0)
    model = build_model(resolve_model_spec("tiny-xs"), 300, tie_word_embeddings=tie)
    train = _train(weight_decay=0.7, lr=0.05)
    s = optim.row_decay_scales(np.arange(300) ** 2, 0.5, 300)
    groups = optim.param_groups(model, train, s)
    opt = optim.make_optimizer(model, groups, train, CPU)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    grads["model.embed_tokens.weight"][:10] = 0  # rows without gradient: decayed only
    for n, p in model.named_parameters():
        p.grad = grads[n].clone()
    opt.step()
    lr, wd, eps = 0.05, 0.7, 1e-8
    adam = {n: lr * g / (g.abs() + eps) for n, g in grads.items()}
    row = torch.from_numpy(1 - lr * wd * s).float().unsqueeze(1)
    p = dict(model.named_parameters())
    for n in [n for g in groups if g.row_scales is not None for n in g.names]:
        torch.testing.assert_close(p[n].detach(), before[n] * row - adam[n], rtol=1e-6, atol=1e-7)
    emb = "model.embed_tokens.weight"
    torch.testing.assert_close(p[emb].detach()[:10], before[emb][:10] * row[:10], rtol=1e-6, atol=0)
    q = "model.layers.0.self_attn.q_proj.weight"
    torch.testing.assert_close(p[q].detach(), before[q] * (1 - lr * wd) - adam[q], rtol=1e-6, atol=1e-7)
    norm = "model.norm.weight"
    torch.testing.assert_close(p[norm].detach(), before[norm] - adam[norm], rtol=1e-6, atol=1e-7)
    assert [g["weight_decay"] for g in opt.param_groups] == [g.weight_decay for g in groups]  # restored


def test_alpha_zero_is_plain_decay_exactly():
    """Scales of 1 (alpha 0) give bit for bit AdamW's own decoupled decay."""
    def stepped(row_scales):
        torch.manual_seed(0)
        model = build_model(resolve_model_spec("tiny-xs"), 300)
        opt = optim.make_optimizer(model, optim.param_groups(model, _train(), row_scales), _train(), CPU)
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        opt.step()
        return model.get_input_embeddings().weight.detach()

    plain, scaled = stepped(None), stepped(optim.row_decay_scales(np.zeros(300), 0.0, 300))
    assert torch.equal(plain, scaled)


def test_load_state_dict_keeps_the_row_scales():
    model = build_model(resolve_model_spec("tiny-xs"), 300)
    s = optim.row_decay_scales(np.arange(300), 1.0, 300)
    opt = optim.make_optimizer(model, optim.param_groups(model, _train(), s), _train(), CPU)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    state = opt.state_dict()
    state["param_groups"][1]["row_scales"] = torch.zeros(300, dtype=torch.float64)  # as if from another device
    again = optim.make_optimizer(model, optim.param_groups(model, _train(), s), _train(), CPU)
    live = again.param_groups[1]["row_scales"]
    again.load_state_dict(state)
    assert again.param_groups[1]["row_scales"] is live and again.state[model.lm_head.weight]["step"] == 1


def test_sign_guard():
    counts = np.array([0, 1, 10, 1000], dtype=np.int64)
    t = {"embedding_decay_alpha": 1.0, "lr": 0.01, "weight_decay": 100.0}
    with pytest.raises(DataError, match=r"run-x: train.embedding_decay_alpha 1.0 .* = 3.94 per step"):
        optim.frequency_row_scales(t, counts, 4, "run-x")  # 0.01 x 100 x 1001 / mean(1, 2, 11, 1001)
    s = optim.frequency_row_scales({**t, "weight_decay": 10.0}, counts, 4, "run-x")  # 0.39: fine
    np.testing.assert_allclose(s, optim.row_decay_scales(counts, 1.0, 4))
    assert optim.frequency_row_scales({**t, "embedding_decay_alpha": None}, None, 4, "run-x") is None
    with pytest.raises(ValueError, match="needs the train frequency table"):
        optim.frequency_row_scales(t, None, 4, "run-x")


def test_grad_norm_order_is_decayed_first_then_the_rest():
    model = build_model(resolve_model_spec("tiny-xs"), 300)
    named = list(model.named_parameters())
    for mode in MODES:
        for scales in (None, np.ones(300)):
            groups = optim.param_groups(model, _train(decay_group=mode), scales)
            lists = optim.decay_lists(model, groups)
            decayed = set(lists["decay"] + lists["row_decay"])
            expect = [p for n, p in named if n in decayed] + [p for n, p in named if n not in decayed]
            assert [id(p) for p in optim.grad_norm_order(model, groups)] == [id(p) for p in expect]
