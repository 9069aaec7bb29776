"""Building the three families: published sizes on the meta device, tiny models on the CPU, save/load."""

from __future__ import annotations

import math

import pytest
import torch

import tokenfair.models  # noqa: F401  (registers openelm with the Auto classes)
from tokenfair.models import build_model, count_parameters, hf_config
from tokenfair.presets import estimate_parameters, openelm_layer_shapes, resolve_model_spec

torch.set_num_threads(1)

PUBLISHED = {  # preset: (published vocabulary size, published parameter count)
    "openelm-270m": (32000, 272e6),
    "openelm-1.1b": (32000, 1.08e9),
    "openelm-3b": (32000, 3.04e9),
    "qwen2-0.5b": (151936, 494e6),
    "qwen2-1.5b": (151936, 1.54e9),
}


def _meta_model(spec, vocab, **extra):
    with torch.device("meta"):
        return build_model(spec, vocab, **extra)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_parameter_counts_on_meta(name):
    vocab, published = PUBLISHED[name]
    spec = resolve_model_spec(name)
    model = _meta_model(spec, vocab)
    n = count_parameters(model)
    assert abs(n - published) / published < 0.02, (name, n)
    assert n == estimate_parameters(spec, vocab)
    assert next(model.parameters()).device.type == "meta"


def test_qwen2_has_qkv_biases_and_tied_head():
    model = _meta_model(resolve_model_spec("qwen2-0.5b"), 151936)
    attn = model.model.layers[0].self_attn
    assert attn.q_proj.bias is not None and attn.k_proj.bias is not None and attn.v_proj.bias is not None
    assert attn.o_proj.bias is None
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert attn.k_proj.out_features == 2 * 64


def test_openelm_modules_follow_layerwise_scaling():
    spec = resolve_model_spec("openelm-270m")
    model = _meta_model(spec, 32000)
    shapes = openelm_layer_shapes(spec)
    for i, layer in enumerate(model.transformer.layers):
        q, kv, f = shapes["num_query_heads"][i], shapes["num_kv_heads"][i], shapes["ffn_dims"][i]
        assert layer.attn.qkv_proj.weight.shape == ((q + 2 * kv) * 64, 1280)
        assert layer.attn.out_proj.weight.shape == (1280, q * 64)
        assert layer.attn.q_norm.weight.shape == (64,) and layer.attn.k_norm.weight.shape == (64,)
        assert layer.ffn.proj_1.weight.shape == (2 * f, 1280)
        assert layer.ffn.proj_2.weight.shape == (1280, f)
        assert layer.attn.qkv_proj.bias is None and layer.ffn.proj_1.bias is None
    assert model.transformer.layers[0].attn.qkv_proj.weight.shape[0] == (12 + 2 * 3) * 64
    assert model.lm_head.weight is model.transformer.token_embeddings.weight
    assert model.config.max_position_embeddings == 2048 and model.config.hidden_size == 1280


VARIANTS = [
    {"preset": "tiny-s"},
    {"preset": "tiny-s", "tie_word_embeddings": True, "attention_bias": True, "mlp_bias": True},
    {"preset": "tiny-s", "head_dim": 32},
    {"family": "qwen2", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
     "num_key_value_heads": 2, "intermediate_size": 96},
    {"preset": "tiny-openelm"},
    {"preset": "tiny-openelm", "tie_word_embeddings": False, "normalize_qk_projections": False, "ffn_with_glu": False},
    {"preset": "openelm-3b", "tie_word_embeddings": False},
]


@pytest.mark.parametrize("entry", VARIANTS, ids=range(len(VARIANTS)))
def test_estimate_equals_built_count(entry):
    spec = resolve_model_spec(entry)
    assert count_parameters(_meta_model(spec, 1000)) == estimate_parameters(spec, 1000)


TINY = {
    "llama": {"preset": "tiny-s"},
    "qwen2": {"family": "qwen2", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "intermediate_size": 96, "tie_word_embeddings": True,
              "max_position_embeddings": 512},
    "openelm": {"preset": "tiny-openelm"},
}
VOCAB = 300


def _tiny(family, seed=0, **extra):
    torch.manual_seed(seed)
    return build_model(resolve_model_spec(TINY[family]), VOCAB, **extra)


def _tied(model) -> bool:
    a, b = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    return a is b and a.data_ptr() == b.data_ptr()


def test_openelm_forward_backward():
    model = _tiny("openelm")
    model.train()
    x = torch.randint(0, VOCAB, (2, 24))
    out = model(input_ids=x, labels=x)
    assert out.logits.shape == (2, 24, VOCAB)
    assert math.isfinite(out.loss.item())
    assert abs(out.loss.item() - math.log(VOCAB)) < 1.0  # near uniform at init
    ref = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, VOCAB), x[:, 1:].reshape(-1))
    assert torch.allclose(out.loss, ref)
    out.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model(input_ids=x).loss is None


def test_openelm_is_causal_and_masks_padding():
    model = _tiny("openelm").eval()
    x = torch.randint(0, VOCAB, (1, 16))
    y = x.clone()
    y[0, 10:] = (y[0, 10:] + 1) % VOCAB
    with torch.no_grad():
        lx, ly = model(input_ids=x).logits, model(input_ids=y).logits
        assert torch.allclose(lx[0, :10], ly[0, :10], atol=1e-5)
        assert not torch.allclose(lx[0, 10:], ly[0, 10:])
        # all-ones mask == no mask; right padding leaves the real positions unchanged
        assert torch.equal(model(input_ids=x, attention_mask=torch.ones_like(x)).logits, lx)
        mask = torch.ones_like(x)
        mask[0, 12:] = 0
        padded = model(input_ids=x, attention_mask=mask).logits
        assert torch.allclose(padded[0, :12], lx[0, :12], atol=1e-5)
        assert torch.isfinite(padded).all()


@pytest.mark.parametrize("family", sorted(TINY))
def test_tying_switch(family):
    default_tied = {"llama": False, "qwen2": True, "openelm": True}[family]
    assert _tied(_tiny(family)) is default_tied
    flipped = _tiny(family, tie_word_embeddings=not default_tied)
    assert _tied(flipped) is (not default_tied)
    spec = resolve_model_spec(TINY[family])
    assert count_parameters(flipped) == estimate_parameters({**spec, "tie_word_embeddings": not default_tied}, VOCAB)


@pytest.mark.parametrize("family", sorted(TINY))
def test_init_is_deterministic_given_the_seed(family):
    a, b, c = _tiny(family, seed=1), _tiny(family, seed=1), _tiny(family, seed=2)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_openelm_init_scales():
    model = _tiny("openelm")
    cfg = model.config
    emb = model.transformer.token_embeddings.weight
    assert abs(emb.std().item() - cfg.model_dim**-0.5) < 0.2 * cfg.model_dim**-0.5
    out = torch.cat([layer.attn.out_proj.weight.flatten() for layer in model.transformer.layers])
    want = cfg.model_dim**-0.5 * (2 * cfg.num_transformer_layers) ** -0.5
    assert abs(out.std().item() - want) < 0.2 * want
    assert torch.equal(model.transformer.norm.weight, torch.ones(cfg.model_dim))


@pytest.mark.parametrize("family", sorted(TINY))
@pytest.mark.parametrize("tie", [True, False])
def test_save_load_round_trip(family, tie, tmp_path):
    from transformers import AutoModelForCausalLM

    model = _tiny(family, tie_word_embeddings=tie).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    assert _tied(loaded) is tie
    want, got = model.state_dict(), loaded.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    x = torch.randint(0, VOCAB, (2, 12))
    with torch.no_grad():
        assert torch.equal(model(input_ids=x).logits, loaded(input_ids=x).logits)


def test_openelm_config_round_trip_and_extra(tmp_path):
    from transformers import AutoConfig

    spec = resolve_model_spec("openelm-270m")
    cfg = hf_config(spec, 32000, attention_dropout=0.1)
    assert cfg.attention_dropout == 0.1 and cfg.tie_word_embeddings and cfg.share_input_output_layers
    cfg.save_pretrained(tmp_path)
    back = AutoConfig.from_pretrained(tmp_path)
    assert type(back).__name__ == "OpenELMConfig"
    for field in ("num_query_heads", "num_kv_heads", "ffn_dims", "qkv_multipliers", "ffn_multipliers",
                  "max_context_length", "tie_word_embeddings", "attention_dropout", "vocab_size"):
        assert getattr(back, field) == getattr(cfg, field), field


def test_openelm_gradient_checkpointing_matches():
    model = _tiny("openelm").train()
    x = torch.randint(0, VOCAB, (2, 16))
    model(input_ids=x, labels=x).loss.backward()
    g = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    # transformers 5.24 renamed it (the old name warns); 5.17 has only gradient_checkpointing_enable
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()
    assert model.transformer.gradient_checkpointing
    model(input_ids=x, labels=x).loss.backward()
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, g[n], atol=1e-6), n


@pytest.mark.parametrize("family", sorted(TINY))
def test_build_model_interface_used_by_training(family):
    # tokenfair.train: build_model(spec, rows, attn_implementation="sdpa"); model(input_ids=x, use_cache=False).logits
    spec = resolve_model_spec({**TINY[family], "vocab_size": 512})
    torch.manual_seed(0)
    model = build_model(spec, 320, attn_implementation="sdpa", attention_dropout=0.0)
    assert model.get_input_embeddings().weight.shape[0] == 320  # the argument wins over the spec's vocab_size
    x = torch.randint(0, 320, (2, 8))
    assert model(input_ids=x, use_cache=False).logits.shape == (2, 8, 320)
    assert count_parameters(model) == estimate_parameters(spec, 320)


def test_count_parameters_at_the_tokenizers_ids():
    """Embedding and head rows beyond the tokenizer's ids (a spec's larger vocab_size) are not counted; a tied
    matrix once."""
    untied, tied = _tiny("llama"), _tiny("qwen2")
    assert count_parameters(untied, VOCAB - 100) == count_parameters(untied) - 2 * 100 * untied.config.hidden_size
    assert count_parameters(tied, VOCAB - 100) == count_parameters(tied) - 100 * tied.config.hidden_size
    assert count_parameters(tied, VOCAB) == count_parameters(tied)
