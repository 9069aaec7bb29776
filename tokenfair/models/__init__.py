"""Building a causal LM from a resolved model spec (see tokenfair.presets), with random init.

llama and qwen2 use the native transformers classes.
"""

from __future__ import annotations

_CONFIG_KEYS_DROPPED = ("family", "preset")


def hf_config(spec: dict, vocab_size: int, **extra):
    """The transformers config object for a resolved spec at a given vocabulary size."""
    from transformers import LlamaConfig, Qwen2Config

    fields = {k: v for k, v in spec.items() if k not in _CONFIG_KEYS_DROPPED}
    if fields.get("head_dim") is None:
        fields.pop("head_dim", None)
    family = spec["family"]
    if family == "llama":
        return LlamaConfig(vocab_size=vocab_size, **fields, **extra)
    if family == "qwen2":
        return Qwen2Config(vocab_size=vocab_size, **fields, **extra)
    raise ValueError(f"unknown model family {family!r}")


def build_model(spec: dict, vocab_size: int, **extra):
    """A randomly initialised AutoModelForCausalLM for `spec` at `vocab_size` (seed torch first)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_config(hf_config(spec, vocab_size, **extra))
