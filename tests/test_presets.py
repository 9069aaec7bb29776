"""Model presets, shape checks and size estimates (torch-free, planning time)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tokenfair.errors import ConfigError
from tokenfair.presets import (
    PRESETS,
    estimate_parameters,
    estimate_train_memory_gb,
    make_divisible,
    openelm_layer_shapes,
    preset_names,
    resolve_model_spec,
)

PAPER_PRESETS = ["openelm-270m", "openelm-1.1b", "openelm-3b", "qwen2-0.5b", "qwen2-1.5b"]


def test_presets_module_is_torch_free():
    code = "import sys, tokenfair.presets as p; p.resolve_model_spec('openelm-3b'); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_tiny_presets_kept():
    assert {"tiny-xs", "tiny-s", "tiny-m"} <= set(PRESETS)
    assert set(PAPER_PRESETS) <= set(PRESETS)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_resolves_with_max_positions(name):
    spec = resolve_model_spec(name, key=f"models.{name}")
    assert spec["preset"] == name
    assert isinstance(spec["max_position_embeddings"], int) and spec["max_position_embeddings"] > 0
    assert isinstance(spec["tie_word_embeddings"], bool)
    if spec["family"] == "openelm":
        assert spec["max_position_embeddings"] == spec["max_context_length"]
        assert "share_input_output_layers" not in spec


def test_make_divisible_matches_apple():
    assert make_divisible(640, 256) == 768
    assert make_divisible(806.4, 256) == 768
    assert make_divisible(857.6, 256) == 1024  # 768 would be more than 10% below 857.6
    assert make_divisible(896, 256) == 1024
    assert make_divisible(100, 64) == 128  # rounding down to 64 would lose more than 10%
    assert make_divisible(3, 8) == 8  # never below the divisor


def test_openelm_270m_layer_shapes_by_hand():
    # Apple: qkv/ffn multipliers = round(np.linspace(lo, hi, 16), 2); query dim = make_divisible(1280 m,
    # 64 x 4 groups); FFN width = make_divisible(1280 m, 256); KV heads = query heads / 4.
    s = openelm_layer_shapes(resolve_model_spec("openelm-270m"))
    # layer 0: qkv 0.5 -> 640 -> (640+128)//256*256 = 768 = 12 heads; ffn 0.5 -> 640 -> 768
    assert (s["num_query_heads"][0], s["num_kv_heads"][0], s["ffn_dims"][0]) == (12, 3, 768)
    # layer 4: qkv 0.63 -> 806.4 -> 934//256*256 = 768 = 12 heads; ffn 1.43 -> 1830.4 -> 1958//256*256 = 1792
    assert (s["num_query_heads"][4], s["num_kv_heads"][4], s["ffn_dims"][4]) == (12, 3, 1792)
    # layer 5: qkv 0.67 -> 857.6 -> 768, but that is > 10% below 857.6 -> 1024 = 16 heads;
    #          ffn 1.67 -> 2137.6 -> 2265//256*256 = 2048
    assert (s["num_query_heads"][5], s["num_kv_heads"][5], s["ffn_dims"][5]) == (16, 4, 2048)
    # layer 6: qkv 0.7 -> 896 -> 1024 = 16 heads; ffn 1.9 -> 2432 -> 2560//256*256 = 2560
    assert (s["num_query_heads"][6], s["num_kv_heads"][6], s["ffn_dims"][6]) == (16, 4, 2560)
    # layer 12: qkv 0.9 -> 1152 -> 1280 = 20 heads; ffn 3.3 -> 4224 -> 4352//256*256 = 4352
    assert (s["num_query_heads"][12], s["num_kv_heads"][12], s["ffn_dims"][12]) == (20, 5, 4352)
    # layer 15: qkv 1.0 -> 1280 -> 1280 = 20 heads; ffn 4.0 -> 5120
    assert (s["num_query_heads"][15], s["num_kv_heads"][15], s["ffn_dims"][15]) == (20, 5, 5120)
    assert s["num_query_heads"] == [12] * 5 + [16] * 7 + [20] * 4  # as in apple/OpenELM-270M config.json
    assert len(s["ffn_dims"]) == 16


def test_openelm_3b_layer_shapes():
    s = openelm_layer_shapes(resolve_model_spec("openelm-3b"))
    # head_dim 128, 4 groups: query dims are multiples of 512; layer 0: 0.5 x 3072 = 1536 -> 12 heads
    assert s["num_query_heads"][0] == 12 and s["num_query_heads"][-1] == 24
    assert s["ffn_dims"][0] == 1536 and s["ffn_dims"][-1] == 12288
    assert all(q == 4 * kv for q, kv in zip(s["num_query_heads"], s["num_kv_heads"]))


def test_openelm_uniform_and_per_layer_multipliers():
    spec = resolve_model_spec(
        {"family": "openelm", "num_transformer_layers": 3, "model_dim": 64, "head_dim": 16,
         "qkv_multipliers": 1.0, "ffn_multipliers": [1.0, 2.0, 3.0], "ffn_dim_divisor": 16}
    )
    s = openelm_layer_shapes(spec)
    assert s["num_query_heads"] == [4, 4, 4] and s["num_kv_heads"] == [4, 4, 4]
    assert s["ffn_dims"] == [64, 128, 192]


PUBLISHED = {  # name, vocabulary size, published parameter count
    "openelm-270m": (32000, 270.0e6),  # Apple reports 0.27B; the hub checkpoint holds 271.5M
    "openelm-1.1b": (32000, 1.08e9),
    "openelm-3b": (32000, 3.04e9),
    "qwen2-0.5b": (151936, 494e6),
    "qwen2-1.5b": (151936, 1.54e9),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_estimate_parameters_near_published(name):
    vocab, published = PUBLISHED[name]
    n = estimate_parameters(resolve_model_spec(name), vocab)
    assert abs(n - published) / published < 0.02


def test_estimate_parameters_exact_qwen2():
    # Qwen2-0.5B / 1.5B as counted from their safetensors (tied embeddings).
    assert estimate_parameters(resolve_model_spec("qwen2-0.5b"), 151936) == 494_032_768
    assert estimate_parameters(resolve_model_spec("qwen2-1.5b"), 151936) == 1_543_714_304


def test_untying_adds_the_output_matrix():
    tied = resolve_model_spec("openelm-270m")
    untied = resolve_model_spec({"preset": "openelm-270m", "tie_word_embeddings": False})
    assert estimate_parameters(untied, 32000) - estimate_parameters(tied, 32000) == 32000 * 1280


def test_estimate_train_memory():
    spec = resolve_model_spec("qwen2-0.5b")
    small = estimate_train_memory_gb(spec, 151936, 1, 512)
    big = estimate_train_memory_gb(spec, 151936, 8, 2048)
    floor = 16 * 494_032_768 / 1024**3  # weights + grads + AdamW moments in fp32
    assert floor < small < big
    assert estimate_train_memory_gb(spec, 151936, 8, 2048, precision="fp32") > big
    # the 3B does not fit an 80 GB GPU at batch 16 x 2048 without sharding or checkpointing
    assert estimate_train_memory_gb(resolve_model_spec("openelm-3b"), 32000, 16, 2048) > 80
    assert estimate_train_memory_gb(resolve_model_spec("tiny-s"), 4096, 16, 64) < 2


def test_overrides_and_aliases():
    spec = resolve_model_spec({"preset": "openelm-270m", "max_position_embeddings": 1024})
    assert spec["max_context_length"] == spec["max_position_embeddings"] == 1024
    spec = resolve_model_spec({"preset": "openelm-270m", "max_context_length": 4096})
    assert spec["max_position_embeddings"] == 4096
    spec = resolve_model_spec({"preset": "openelm-270m", "share_input_output_layers": False})
    assert spec["tie_word_embeddings"] is False and "share_input_output_layers" not in spec
    spec = resolve_model_spec({"preset": "qwen2-0.5b", "tie_word_embeddings": False})
    assert spec["tie_word_embeddings"] is False
    assert resolve_model_spec(spec) == spec  # resolving a resolved spec changes nothing
    oe = resolve_model_spec("openelm-1.1b")
    assert resolve_model_spec(oe) == oe


BAD = [
    ({"preset": "nope"}, "preset"),
    ({"family": "gpt2", "hidden_size": 8}, "family"),
    ({"preset": "tiny-s", "hiden_size": 64}, "hiden_size"),
    ({"preset": "tiny-s", "hidden_size": 0}, "hidden_size"),
    ({"preset": "tiny-s", "num_hidden_layers": -1}, "num_hidden_layers"),
    ({"preset": "tiny-s", "intermediate_size": True}, "intermediate_size"),
    ({"preset": "tiny-s", "num_attention_heads": 3}, "num_attention_heads"),
    ({"preset": "tiny-s", "num_key_value_heads": 3}, "num_key_value_heads"),
    ({"preset": "tiny-s", "head_dim": 0}, "head_dim"),
    ({"preset": "tiny-s", "head_dim": 15}, "head_dim"),
    ({"preset": "qwen2-0.5b", "head_dim": 128}, "head_dim"),
    ({"preset": "qwen2-0.5b", "num_key_value_heads": 4}, "num_key_value_heads"),
    ({"preset": "qwen2-0.5b", "attention_bias": True}, "attention_bias"),
    ({"preset": "tiny-s", "max_position_embeddings": 0}, "max_position_embeddings"),
    ({"preset": "tiny-s", "tie_word_embeddings": "yes"}, "tie_word_embeddings"),
    ({"preset": "tiny-s", "rope_theta": -1.0}, "rope_theta"),
    ({"preset": "tiny-s", "attention_dropout": 1.5}, "attention_dropout"),
    ({"preset": "openelm-270m", "head_dim": 48}, "head_dim"),
    ({"preset": "openelm-270m", "head_dim": 5, "model_dim": 1280}, "head_dim"),
    ({"preset": "openelm-270m", "model_dim": 0}, "model_dim"),
    ({"preset": "openelm-270m", "num_transformer_layers": 0}, "num_transformer_layers"),
    ({"preset": "openelm-270m", "num_gqa_groups": 0}, "num_gqa_groups"),
    ({"preset": "openelm-270m", "ffn_dim_divisor": 0}, "ffn_dim_divisor"),
    ({"preset": "openelm-270m", "qkv_multipliers": [0.5, 0.7, 1.0]}, "qkv_multipliers"),
    ({"preset": "openelm-270m", "qkv_multipliers": [0.0, 1.0]}, "qkv_multipliers"),
    ({"preset": "openelm-270m", "ffn_multipliers": [1.0] * 3}, "ffn_multipliers"),
    ({"preset": "openelm-270m", "ffn_multipliers": -2}, "ffn_multipliers"),
    ({"preset": "openelm-270m", "normalize_qk_projections": 1}, "normalize_qk_projections"),
    ({"preset": "openelm-270m", "max_context_length": 0}, "max_context_length"),
    ({"preset": "openelm-270m", "max_context_length": 1024, "max_position_embeddings": 512}, "max_position_embeddings"),
    ({"preset": "openelm-270m", "tie_word_embeddings": True, "share_input_output_layers": False}, "share_input_output_layers"),
    ({"preset": "openelm-270m", "num_attention_heads": 8}, "num_attention_heads"),
    ({"family": "openelm", "model_dim": 64}, "num_transformer_layers"),
    ({"preset": "tiny-s", "vocab_size": 0}, "vocab_size"),
]


@pytest.mark.parametrize("entry,field", BAD, ids=[f for _, f in BAD])
def test_bad_shapes_name_the_key(entry, field):
    with pytest.raises(ConfigError, match=rf"config key models\.m\.{field}:"):
        resolve_model_spec(entry, key="models.m")


def test_config_checks_seq_len_against_openelm_context(tmp_path):
    from tokenfair import config, plan

    cfg = {
        "corpora": {"c": {"source": "text", "path": str(tmp_path / "x.txt")}},
        "tokenizers": {"t": {"type": "bpe", "vocab_size": 512}},
        "models": {"elm": {"preset": "openelm-270m", "max_context_length": 128}},
        "weight_decays": [0.1],
        "seeds": [0],
        "train": {"seq_len": 256},
    }
    with pytest.raises(ConfigError, match="train.seq_len"):
        config.resolve(cfg, check_files=False)
    cfg["train"]["seq_len"] = 128
    resolved = plan.build(config.resolve(cfg, check_files=False))
    assert resolved.settings(resolved.points[0])["model"]["max_position_embeddings"] == 128


def test_preset_names_sorted():
    assert preset_names() == sorted(PRESETS)


def test_the_default_is_the_faithful_miniature(repo_root):
    """config.yaml (issue 11): tied embeddings as in the paper's four presets; most parameters outside the
    embedding; a tokenizer trained on the whole train split while the models see a few of its documents."""
    import yaml

    from tokenfair import config as tfconfig
    from tokenfair import plan as tfplan
    from tokenfair.presets import estimate_parameters

    cfg = tfconfig.resolve(yaml.safe_load((repo_root / "config.yaml").read_text()))
    plan = tfplan.build(cfg)
    for point in plan.points:
        settings = plan.settings(point)
        model, vocab = settings["model"], cfg["tokenizers"][point["tok"]]["vocab_size"]
        assert model["tie_word_embeddings"] and settings["train"]["tie_embeddings"] in (None, True)
        embedding = vocab * model["hidden_size"]
        assert embedding / estimate_parameters(model, vocab) < 0.5
        assert cfg["corpora"][point["corpus"]]["max_train_docs"] is None  # the tokenizer sees the whole split
        assert settings["train"]["train_docs"] is not None  # the model sees a few documents of it
    assert len(cfg["seeds"]) >= 6  # the fewest for which the sign-flip test over seeds can reach p < 0.05
