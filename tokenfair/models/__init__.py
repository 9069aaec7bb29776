"""Building a causal LM from a resolved model spec (see tokenfair.presets), with random init.

llama and qwen2 use the native transformers classes; openelm is implemented in tokenfair.models.openelm and
registered with the Auto classes when this package is imported, so
`AutoModelForCausalLM.from_pretrained(folder)` loads any saved model after `import tokenfair.models`.

`build_model(spec, vocab_size, **extra)` is the single entry point. `extra` holds config fields that are not
architecture (they override the spec's): e.g. `attention_dropout`, `tie_word_embeddings`, `initializer_range`.
Every model returns transformers-style outputs: `.logits` [B, S, vocab] and, given `labels`, `.loss` (mean
next-token cross-entropy, labels shifted inside). Initialisation is deterministic given torch's seed.
"""

from __future__ import annotations

from .openelm import OpenELMConfig, OpenELMForCausalLM, register as _register_openelm

_CONFIG_KEYS_DROPPED = ("family", "preset", "vocab_size")  # the vocab_size argument wins

_register_openelm()


def hf_config(spec: dict, vocab_size: int, **extra):
    """The transformers config object for a resolved spec at a given vocabulary size."""
    from transformers import LlamaConfig, Qwen2Config

    fields = {k: v for k, v in spec.items() if k not in _CONFIG_KEYS_DROPPED}
    if fields.get("head_dim") is None:
        fields.pop("head_dim", None)
    fields.update(extra)
    family = spec["family"]
    if family == "llama":
        return LlamaConfig(vocab_size=vocab_size, **fields)
    if family == "qwen2":
        return Qwen2Config(vocab_size=vocab_size, **fields)
    if family == "openelm":
        fields.pop("max_position_embeddings", None)  # == max_context_length in a resolved spec
        return OpenELMConfig(vocab_size=vocab_size, **fields)
    raise ValueError(f"unknown model family {family!r}")


def build_model(spec: dict, vocab_size: int, **extra):
    """A randomly initialised causal LM for `spec` at `vocab_size` (seed torch first).

    Under `with torch.device("meta"):` nothing is allocated nor initialised (for counting big presets)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_config(hf_config(spec, vocab_size, **extra))


def count_parameters(model, n_ids: int | None = None) -> int:
    """Parameters of a model, tied weights counted once (equals tokenfair.presets.estimate_parameters). With
    `n_ids` (the tokenizer's ids), embedding and head rows beyond them (a spec's larger vocab_size) are not
    counted."""
    total = sum(p.numel() for p in model.parameters())
    if n_ids is not None:
        rows = {id(m.weight): m.weight for m in (model.get_input_embeddings(), model.get_output_embeddings())
                if m is not None}
        total -= sum(max(0, w.shape[0] - n_ids) * w.shape[1] for w in rows.values())
    return total


def embedding_parameters(model, n_ids: int | None = None) -> int:
    """Parameters of the input embedding and the output head (one matrix when tied), rows beyond `n_ids` left
    out as in count_parameters."""
    rows = {id(m.weight): m.weight for m in (model.get_input_embeddings(), model.get_output_embeddings())
            if m is not None}
    return sum(min(w.shape[0], n_ids if n_ids is not None else w.shape[0]) * w.shape[1] for w in rows.values())


__all__ = ["OpenELMConfig", "OpenELMForCausalLM", "build_model", "count_parameters", "embedding_parameters",
           "hf_config"]
