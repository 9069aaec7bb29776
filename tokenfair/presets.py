"""Model presets, architecture checks and size estimates, as plain data: no torch import (planning time uses this).

A model spec is a dict with `family` (llama, qwen2, openelm) and that family's architecture fields; the
vocabulary size is not part of it: it is set from the corpus tokenizer when the model is built.
`resolve_model_spec` turns a config entry ({preset: name, **overrides} or {family: ..., **fields}) into a
full spec, or raises ConfigError naming the key.

Field names are the transformers config names for llama / qwen2, and Apple's OpenELM config names for
openelm (`num_transformer_layers`, `model_dim`, `head_dim`, `num_gqa_groups`, `qkv_multipliers`,
`ffn_multipliers`, `ffn_dim_divisor`, `normalize_qk_projections`, `max_context_length`, ...). Two keys are
the same for every family:

- `tie_word_embeddings`: share the input embedding and the output projection (openelm also accepts
  Apple's `share_input_output_layers` as an alias; the resolved spec carries `tie_word_embeddings` only);
- `max_position_embeddings`: the longest window the model is meant for (openelm: equal to
  `max_context_length`, either may be given). config.py checks `train.seq_len` against it.

OpenELM's layer-wise scaling (per-layer query/KV heads and FFN widths) is computed by `openelm_layer_shapes`
exactly as Apple's configuration_openelm.py does (np.linspace, round(., 2), make_divisible).
"""

from __future__ import annotations

from numbers import Number

from .errors import ConfigError

FAMILIES = ("llama", "qwen2", "openelm")

# Defaults every llama/qwen2 spec gets (transformers config names).
_DECODER_DEFAULTS = {
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "max_position_embeddings": 2048,
    "head_dim": None,  # None: hidden_size // num_attention_heads
}

# Defaults every openelm spec gets (Apple's names). normalize_qk_projections and tie_word_embeddings default
# to True like every published OpenELM (Apple's config class defaults them to False).
_OPENELM_DEFAULTS = {
    "num_gqa_groups": 1,
    "qkv_multipliers": 1.0,
    "ffn_multipliers": 4.0,
    "ffn_dim_divisor": 256,
    "ffn_with_glu": True,
    "normalize_qk_projections": True,
    "tie_word_embeddings": True,
    "max_context_length": 2048,
    "rope_freq_constant": 10000,
    "rope_max_length": 4096,
    "rms_norm_eps": 1e-6,
}

# The keys a spec may hold, per family (anything else is a typo: ConfigError).
# `vocab_size` (optional) fixes the embedding rows above the tokenizer's ids; tokenfair.train applies it and
# passes the row count to build_model, whose `vocab_size` argument (like estimate_parameters') always wins.
_COMMON_KEYS = {
    "family", "preset", "vocab_size", "tie_word_embeddings", "max_position_embeddings", "initializer_range",
    "attention_dropout",
}
_DECODER_KEYS = _COMMON_KEYS | {
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "head_dim",
    "rms_norm_eps",
    "rope_theta",
    "hidden_act",
}
FAMILY_KEYS = {
    "llama": _DECODER_KEYS | {"attention_bias", "mlp_bias"},
    # transformers' Qwen2 always has q/k/v biases and no o/MLP biases: not switchable.
    "qwen2": set(_DECODER_KEYS),
    "openelm": _COMMON_KEYS
    | set(_OPENELM_DEFAULTS)
    | {"num_transformer_layers", "model_dim", "head_dim", "share_input_output_layers"},
}


def _openelm(layers: int, dim: int, head_dim: int) -> dict:
    """A published OpenELM size: Apple's OpenELM_CONFIGS (configuration_openelm.py) and the hub config.json."""
    return {
        **_OPENELM_DEFAULTS,
        "family": "openelm",
        "num_transformer_layers": layers,
        "model_dim": dim,
        "head_dim": head_dim,
        "num_gqa_groups": 4,
        "qkv_multipliers": [0.5, 1.0],
        "ffn_multipliers": [0.5, 4.0],
    }


def _qwen2(hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int) -> dict:
    """A published Qwen2 size (Qwen/Qwen2-*B config.json); q/k/v biases come with the transformers class."""
    return {
        "family": "qwen2",
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "intermediate_size": intermediate,
        "tie_word_embeddings": True,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        # The hub config says 131072 (the Qwen2 report pretrained the small models at 32,768 tokens).
        "max_position_embeddings": 131072,
    }


_TINY_M = {
    "family": "llama",
    "hidden_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "intermediate_size": 512,
    "max_position_embeddings": 512,
}

PRESETS: dict[str, dict] = {
    # CPU-sized presets for the embedded default and tests.
    "tiny-xs": {
        "family": "llama",
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
        "max_position_embeddings": 512,
    },
    "tiny-s": {
        "family": "llama",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 256,
        "max_position_embeddings": 512,
    },
    "tiny-m": _TINY_M,
    # The faithful miniature of the embedded default: tied input and output embeddings as in all four of the
    # paper's models, and most parameters outside the embedding (at vocabulary 2048: 262k of 787k, 33%).
    "tiny-tied": {**_TINY_M, "tie_word_embeddings": True},
    # A CPU-sized OpenELM with the published models' layer-wise scaling, GQA, QK norm and tying.
    "tiny-openelm": {
        **_openelm(4, 128, 16),
        "num_gqa_groups": 2,
        "ffn_dim_divisor": 32,
        "max_context_length": 512,
        "rope_max_length": 1024,
    },
    # The paper's models (arXiv 2410.11985), plus OpenELM-450M and 1.1B, at their published architectures.
    "openelm-270m": _openelm(16, 1280, 64),
    "openelm-450m": _openelm(20, 1536, 64),
    "openelm-1.1b": _openelm(28, 2048, 64),
    "openelm-3b": _openelm(36, 3072, 128),
    "qwen2-0.5b": _qwen2(896, 24, 14, 2, 4864),
    "qwen2-1.5b": _qwen2(1536, 28, 12, 2, 8960),
}


def preset_names() -> list[str]:
    return sorted(PRESETS)


# --------------------------------------------------------------------------------------------------
# resolving and checking


def resolve_model_spec(entry: dict | str, key: str = "models") -> dict:
    """A full model spec from a config entry; raises ConfigError naming `key` on anything wrong."""
    if isinstance(entry, str):
        entry = {"preset": entry}
    entry = dict(entry)
    preset = entry.pop("preset", None)
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"config key {key}.preset: unknown preset {preset!r} (known: {', '.join(preset_names())})")
        spec = {**PRESETS[preset], **entry, "preset": preset}
    else:
        spec = dict(entry)
    family = spec.get("family")
    if family not in FAMILIES:
        raise ConfigError(f"config key {key}.family: unknown family {family!r} (known: {', '.join(FAMILIES)})")
    allowed = FAMILY_KEYS[family]
    for field in spec:
        if field not in allowed:
            raise ConfigError(
                f"config key {key}.{field}: not a {family} model field (allowed: {', '.join(sorted(allowed))})"
            )
    if family in ("llama", "qwen2"):
        spec = {**_DECODER_DEFAULTS, **spec}
        _check_decoder(spec, key)
    else:
        spec = _resolve_openelm(spec, entry, key)
        _check_openelm(spec, key)
    _check_common(spec, key)
    return spec


def _resolve_openelm(spec: dict, entry: dict, key: str) -> dict:
    spec = {**_OPENELM_DEFAULTS, **spec}
    # tie_word_embeddings <- share_input_output_layers (Apple's name), the entry winning over the preset
    if "share_input_output_layers" in spec:
        share = spec.pop("share_input_output_layers")
        if "tie_word_embeddings" in entry and "share_input_output_layers" in entry and entry["tie_word_embeddings"] != share:
            raise ConfigError(
                f"config key {key}.share_input_output_layers: {share!r} contradicts tie_word_embeddings "
                f"{entry['tie_word_embeddings']!r} (they are the same switch; give one)"
            )
        if "tie_word_embeddings" not in entry:
            spec["tie_word_embeddings"] = share
    # max_position_embeddings == max_context_length, whichever the entry (else the preset) gives
    if "max_position_embeddings" in entry and "max_context_length" in entry:
        if entry["max_position_embeddings"] != entry["max_context_length"]:
            raise ConfigError(
                f"config key {key}.max_position_embeddings: {entry['max_position_embeddings']!r} differs from "
                f"max_context_length {entry['max_context_length']!r} (openelm: the same number; give one)"
            )
    elif "max_position_embeddings" in entry:
        spec["max_context_length"] = entry["max_position_embeddings"]
    spec["max_position_embeddings"] = spec["max_context_length"]
    return spec


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, Number) and not isinstance(v, bool)


def _positive_int(spec: dict, field: str, key: str) -> None:
    v = spec.get(field)
    if not _is_int(v) or v < 1:
        raise ConfigError(f"config key {key}.{field}: must be a positive integer, got {v!r}")


def _positive_number(spec: dict, field: str, key: str) -> None:
    v = spec.get(field)
    if not _is_number(v) or not v > 0:
        raise ConfigError(f"config key {key}.{field}: must be a positive number, got {v!r}")


def _boolean(spec: dict, field: str, key: str) -> None:
    v = spec.get(field)
    if not isinstance(v, bool):
        raise ConfigError(f"config key {key}.{field}: must be true or false, got {v!r}")


def _check_common(spec: dict, key: str) -> None:
    _positive_int(spec, "max_position_embeddings", key)
    _boolean(spec, "tie_word_embeddings", key)
    if "initializer_range" in spec:
        _positive_number(spec, "initializer_range", key)
    if "attention_dropout" in spec:
        v = spec["attention_dropout"]
        if not _is_number(v) or not 0 <= v < 1:
            raise ConfigError(f"config key {key}.attention_dropout: must be a number in [0, 1), got {v!r}")
    _positive_number(spec, "rms_norm_eps", key)
    if "vocab_size" in spec:
        _positive_int(spec, "vocab_size", key)


def _check_decoder(spec: dict, key: str) -> None:
    required = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size")
    for field in required:
        _positive_int(spec, field, key)
    h, nq, nkv = spec["hidden_size"], spec["num_attention_heads"], spec["num_key_value_heads"]
    head_dim = spec.get("head_dim")
    if head_dim is None:
        if h % nq:
            raise ConfigError(
                f"config key {key}.num_attention_heads: {nq} heads do not divide hidden_size {h} "
                f"(set head_dim explicitly, or pick a divisor)"
            )
        head_dim = h // nq
    else:
        _positive_int(spec, "head_dim", key)
        if spec["family"] == "qwen2" and head_dim * nq != h:
            raise ConfigError(
                f"config key {key}.head_dim: qwen2 needs num_attention_heads x head_dim == hidden_size "
                f"({nq} x {head_dim} != {h})"
            )
    if head_dim % 2:
        raise ConfigError(f"config key {key}.head_dim: RoPE needs an even head size, got {head_dim}")
    if nq % nkv:
        raise ConfigError(f"config key {key}.num_key_value_heads: {nkv} KV heads do not divide {nq} query heads")
    _positive_number(spec, "rope_theta", key)
    for field in ("attention_bias", "mlp_bias"):
        if field in spec:
            _boolean(spec, field, key)


def _check_multipliers(spec: dict, field: str, key: str, n_layers: int, allow_per_layer: bool) -> None:
    v = spec.get(field)
    if _is_number(v):
        values = [v]
    elif isinstance(v, (list, tuple)) and (len(v) == 2 or (allow_per_layer and len(v) == n_layers)):
        values = list(v)
    else:
        shapes = f"a number, [first, last] or {n_layers} per-layer numbers" if allow_per_layer else "a number or [first, last]"
        raise ConfigError(f"config key {key}.{field}: must be {shapes}, got {v!r}")
    if not all(_is_number(m) and m > 0 for m in values):
        raise ConfigError(f"config key {key}.{field}: multipliers must be positive numbers, got {v!r}")


def _check_openelm(spec: dict, key: str) -> None:
    for field in ("num_transformer_layers", "model_dim", "head_dim", "num_gqa_groups", "ffn_dim_divisor",
                  "max_context_length", "rope_max_length"):
        _positive_int(spec, field, key)
    for field in ("ffn_with_glu", "normalize_qk_projections"):
        _boolean(spec, field, key)
    _positive_number(spec, "rope_freq_constant", key)
    d, hd, n = spec["model_dim"], spec["head_dim"], spec["num_transformer_layers"]
    if d % hd:
        raise ConfigError(
            f"config key {key}.head_dim: openelm needs model_dim divisible by head_dim "
            f"(query heads x head_dim == model_dim at multiplier 1; {d} % {hd} != 0)"
        )
    if hd % 2:
        raise ConfigError(f"config key {key}.head_dim: RoPE needs an even head size, got {hd}")
    _check_multipliers(spec, "qkv_multipliers", key, n, allow_per_layer=False)
    _check_multipliers(spec, "ffn_multipliers", key, n, allow_per_layer=True)
    shapes = openelm_layer_shapes(spec)
    for i, (q, kv) in enumerate(zip(shapes["num_query_heads"], shapes["num_kv_heads"])):
        if kv < 1 or q % kv:
            raise ConfigError(
                f"config key {key}.num_gqa_groups: layer {i} has {q} query heads and {kv} KV heads "
                f"({spec['num_gqa_groups']} groups); KV heads must divide query heads"
            )


# --------------------------------------------------------------------------------------------------
# OpenELM layer-wise scaling (Apple's configuration_openelm.py, reproduced number for number)


def make_divisible(v: float, divisor: int = 8, min_value: float | None = None) -> int:
    """Round v to the nearest multiple of divisor, never below min_value (default divisor) nor 10% below v."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return int(new_v)


def _layer_multipliers(m, n_layers: int) -> list[float]:
    """A number -> the same for every layer; [first, last] -> np.linspace rounded to 2 decimals (numpy's round,
    as Apple's code does); a per-layer list as given."""
    if _is_number(m):
        return [m] * n_layers
    m = list(m)
    if len(m) == 2:
        import numpy as np

        return [float(round(v, 2)) for v in np.linspace(m[0], m[1], num=n_layers, dtype=float)]
    return m


def openelm_layer_shapes(spec: dict) -> dict[str, list[int]]:
    """Per layer: num_query_heads, num_kv_heads and ffn_dims (the SwiGLU hidden width) of an openelm spec."""
    n, d, hd = spec["num_transformer_layers"], spec["model_dim"], spec["head_dim"]
    groups = spec.get("num_gqa_groups", _OPENELM_DEFAULTS["num_gqa_groups"])
    divisor = spec.get("ffn_dim_divisor", _OPENELM_DEFAULTS["ffn_dim_divisor"])
    qkv = _layer_multipliers(spec.get("qkv_multipliers", _OPENELM_DEFAULTS["qkv_multipliers"]), n)
    ffn = _layer_multipliers(spec.get("ffn_multipliers", _OPENELM_DEFAULTS["ffn_multipliers"]), n)
    query_dims = [make_divisible(d * m, divisor=hd * groups) for m in qkv]
    q_heads = [q // hd for q in query_dims]
    return {
        "num_query_heads": q_heads,
        "num_kv_heads": [q // groups for q in q_heads],
        "ffn_dims": [make_divisible(m * d, divisor=divisor) for m in ffn],
    }


# --------------------------------------------------------------------------------------------------
# sizes (torch-free, for planning: GPU memory and GPU-hours)


def _layers(spec: dict) -> list[dict]:
    """Per layer: hidden, q_heads, kv_heads, head_dim, ffn (gated width) and the bias switches."""
    if spec["family"] == "openelm":
        s = openelm_layer_shapes(spec)
        return [
            {
                "hidden": spec["model_dim"],
                "q": q,
                "kv": kv,
                "head_dim": spec["head_dim"],
                "ffn": f,
                "glu": spec.get("ffn_with_glu", True),
                "qk_norm": spec.get("normalize_qk_projections", True),
                "qkv_bias": False,
                "o_bias": False,
                "mlp_bias": False,
            }
            for q, kv, f in zip(s["num_query_heads"], s["num_kv_heads"], s["ffn_dims"])
        ]
    h, nq = spec["hidden_size"], spec["num_attention_heads"]
    qwen2 = spec["family"] == "qwen2"
    attention_bias = bool(spec.get("attention_bias", False))
    layer = {
        "hidden": h,
        "q": nq,
        "kv": spec["num_key_value_heads"],
        "head_dim": spec.get("head_dim") or h // nq,
        "ffn": spec["intermediate_size"],
        "glu": True,
        "qk_norm": False,
        "qkv_bias": qwen2 or attention_bias,
        "o_bias": attention_bias and not qwen2,
        "mlp_bias": bool(spec.get("mlp_bias", False)) and not qwen2,
    }
    return [layer] * spec["num_hidden_layers"]


def _hidden(spec: dict) -> int:
    return spec["model_dim"] if spec["family"] == "openelm" else spec["hidden_size"]


def estimate_parameters(spec: dict, vocab_size: int) -> int:
    """The exact parameter count of the model `build_model(spec, vocab_size)` builds (tied weights once)."""
    h = _hidden(spec)
    total = vocab_size * h + h  # embedding + final norm
    if not spec.get("tie_word_embeddings", False):
        total += vocab_size * h
    for L in _layers(spec):
        q, kv, hd, f = L["q"] * L["head_dim"], L["kv"] * L["head_dim"], L["head_dim"], L["ffn"]
        total += h * (q + 2 * kv) + q * h  # q, k, v, o
        total += (q + 2 * kv) if L["qkv_bias"] else 0
        total += h if L["o_bias"] else 0
        total += 2 * hd if L["qk_norm"] else 0
        up = 2 * f if L["glu"] else f
        total += h * up + f * h  # gate/up, down
        total += (up + h) if L["mlp_bias"] else 0
        total += 2 * h  # the two RMSNorms
    return int(total)


GIB = 1024**3


def estimate_train_memory_gb(
    spec: dict, vocab_size: int, batch_size: int, seq_len: int, precision: str = "bf16"
) -> float:
    """A rough peak GPU memory of one training step, in GiB (2**30 bytes).

    - weights, gradients and AdamW's two moments, all fp32: 16 bytes per parameter;
    - activations kept for backward, per token of the micro-batch (`batch_size` x `seq_len`, one forward
      pass; gradient accumulation does not add to it), at 2 bytes per value under bf16 autocast (4 under
      fp32), with SDPA/flash attention (no seq_len^2 score matrix): per layer the two norm inputs (kept in
      fp32: 4 x hidden), q/k/v before and after RoPE/QK-norm (2 x (q + 2 kv) x head_dim), the attention
      output (q x head_dim), the gated MLP's gate, up, activation and product (4 x ffn); plus the embedding
      output (hidden);
    - the logits: batch x seq_len x vocab values at 2 + 4 + 4 bytes (the bf16 logits, their fp32 log-softmax
      and its fp32 gradient) -- large for a 150k vocabulary;
    - 1 GiB for the CUDA context, kernels' workspaces and allocator slack.
    No activation checkpointing, no ZeRO/FSDP sharding. Treat it as a +-30% planning number.
    """
    act_bytes = 4 if precision == "fp32" else 2
    params = estimate_parameters(spec, vocab_size)
    tokens = batch_size * seq_len
    h = _hidden(spec)
    per_token = h
    for L in _layers(spec):
        hd = L["head_dim"]
        per_token += 4 * h + 2 * (L["q"] + 2 * L["kv"]) * hd + L["q"] * hd + 4 * L["ffn"]
    logits_bytes = tokens * vocab_size * ((4 if precision == "fp32" else 2) + 4 + 4)
    total = 16 * params + tokens * per_token * act_bytes + logits_bytes + GIB
    return total / GIB
