"""Model presets and architecture checks, as plain data: no torch import (planning time uses this).

A model spec is a dict with `family` (llama, qwen2, openelm) and that family's architecture fields; the
vocabulary size is not part of it: it is set from the corpus tokenizer when the model is built.
`resolve_model_spec` turns a config entry ({preset: name, **overrides} or {family: ..., **fields}) into a
full spec, or raises ConfigError naming the key.
"""

from __future__ import annotations

from .errors import ConfigError

FAMILIES = ("llama", "qwen2", "openelm")

# Fields every llama/qwen2 spec has (transformers config names).
_DECODER_DEFAULTS = {
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "max_position_embeddings": 2048,
    "head_dim": None,  # None: hidden_size // num_attention_heads
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
    "tiny-m": {
        "family": "llama",
        "hidden_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "intermediate_size": 512,
        "max_position_embeddings": 512,
    },
}


def preset_names() -> list[str]:
    return sorted(PRESETS)


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
        spec = entry
    family = spec.get("family")
    if family not in FAMILIES:
        raise ConfigError(f"config key {key}.family: unknown family {family!r} (known: {', '.join(FAMILIES)})")
    if family in ("llama", "qwen2"):
        spec = {**_DECODER_DEFAULTS, **spec}
        _check_decoder(spec, key)
    return spec


def _check_decoder(spec: dict, key: str) -> None:
    required = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size")
    for field in required:
        v = spec.get(field)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"config key {key}.{field}: must be a positive integer, got {v!r}")
    h, nq, nkv = spec["hidden_size"], spec["num_attention_heads"], spec["num_key_value_heads"]
    head_dim = spec.get("head_dim")
    if head_dim is None:
        if h % nq:
            raise ConfigError(
                f"config key {key}.num_attention_heads: {nq} heads do not divide hidden_size {h} "
                f"(set head_dim explicitly, or pick a divisor)"
            )
    elif spec["family"] == "qwen2" and head_dim * nq != h:
        raise ConfigError(
            f"config key {key}.head_dim: qwen2 needs num_attention_heads x head_dim == hidden_size "
            f"({nq} x {head_dim} != {h})"
        )
    if nq % nkv:
        raise ConfigError(f"config key {key}.num_key_value_heads: {nkv} KV heads do not divide {nq} query heads")
