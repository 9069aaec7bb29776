"""A run's `model/` folder: what a user loads with the Auto classes of every supported transformers version.

`save_model` writes, into one folder (renamed into place when complete):
- `config.json` + `model.safetensors` (+ `generation_config.json`): `save_pretrained`, with the names that
  transformers 4 reads added beside those that transformers 5 writes (`legacy_config`);
- `tokenizer.json`: the run's tokenizer with a normalizer that repeats `tokenfair.corpus.normalise` in front of
  the tokenizer's own (`normalizer`): the training shards were encoded from normalised documents, so raw text
  through `AutoTokenizer` gives the training ids;
- `tokenizer_config.json`: `tokenizer_class` PreTrainedTokenizerFast (a class of transformers 4 and 5;
  transformers 5's own save_pretrained names TokenizersBackend, which 4 lacks), the end-of-document token as
  eos, the padding token as pad, and `model_max_length` the model's number of positions.

The run's own tokenizer.json (results/<corpus>/tok~<t>/) is read, never changed.

Where the normalizer and `normalise` differ (none of these occurs in the embedded corpora): `str.strip` also
strips the separators U+001C..U+001F, which are not Unicode white space (`Strip` keeps them); `str.lower`
lowercases a word-final capital sigma to "ς", `Lowercase` to "σ"; `Lowercase` follows a newer Unicode than
Python 3.11's and also lowercases 55 capital letters added since (e.g. U+A7CB), which `str.lower` keeps.

Loading (tested with transformers 4.45, 4.57 and 5.24): `AutoModelForCausalLM.from_pretrained(folder)`; llama
and qwen2 need transformers alone, openelm needs `import tokenfair.models` first (it registers the model with
the Auto classes). The tokenizer: `PreTrainedTokenizerFast.from_pretrained(folder)` in every version and family;
`AutoTokenizer` gives the same, except for qwen2 in transformers 5, whose AutoTokenizer builds Qwen2's own
tokenizer (its normalizer and pre-tokenizer around our vocabulary) for every qwen2 model type.
"""

from __future__ import annotations

import json
import os

from .io import atomic_dir, write_json
from .tokenization import load_tokenizer

TOKENIZER_CLASS = "PreTrainedTokenizerFast"


def normalizer(lowercase: bool):
    """`tokenfair.corpus.normalise` as a `tokenizers` normalizer: \\r\\n and \\r to \\n, strip, lowercase if asked."""
    from tokenizers import normalizers

    steps = [normalizers.Replace("\r\n", "\n"), normalizers.Replace("\r", "\n"), normalizers.Strip()]
    if lowercase:
        steps.append(normalizers.Lowercase())
    return normalizers.Sequence(steps)


def hf_tokenizer(tokenizer_json: str, ids: dict, *, lowercase: bool, max_length: int):
    """The folder's tokenizer: (a `tokenizers.Tokenizer` that normalises like the corpus, tokenizer_config.json).

    ids: `tokenization.special_ids` (eod is the eos token; pad, else eod, the pad token)."""
    from tokenizers import normalizers

    tok = load_tokenizer(tokenizer_json)
    own = tok.normalizer
    tok.normalizer = normalizer(lowercase) if own is None else normalizers.Sequence([normalizer(lowercase), own])
    config = {"tokenizer_class": TOKENIZER_CLASS, "model_max_length": int(max_length),
              "clean_up_tokenization_spaces": False}
    if ids.get("eod") is not None:
        config["eos_token"] = tok.id_to_token(ids["eod"])
    pad = ids.get("pad") if ids.get("pad") is not None else ids.get("eod")
    if pad is not None:
        config["pad_token"] = tok.id_to_token(pad)
    return tok, config


def legacy_config(config: dict) -> dict:
    """config.json with the transformers-4 names of fields transformers 5 renamed, beside the new ones:
    `rope_theta` / `rope_scaling` (5: `rope_parameters`) and `torch_dtype` (5: `dtype`)."""
    out = dict(config)
    rope = out.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" not in out:
        out["rope_theta"] = rope["rope_theta"]
        scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
        out["rope_scaling"] = None if scaling.get("rope_type", "default") == "default" else scaling
    if "dtype" in out and "torch_dtype" not in out:
        out["torch_dtype"] = out["dtype"]
    return out


def save_model(model, tokenizer_json: str, ids: dict, model_dir: str, *, lowercase: bool, max_length: int) -> None:
    """Write the model folder (see the module docstring) into a temporary folder, then rename it to model_dir.

    lowercase: the corpus's `lowercase`; max_length: the model's positions (spec `max_position_embeddings`)."""
    tok, tok_config = hf_tokenizer(tokenizer_json, ids, lowercase=lowercase, max_length=max_length)
    with atomic_dir(model_dir) as tmp:
        model.save_pretrained(tmp)
        config_path = os.path.join(tmp, "config.json")
        with open(config_path, encoding="utf-8") as fh:
            config = json.load(fh)
        write_json(legacy_config(config), config_path, sort_keys=True)
        tok.save(os.path.join(tmp, "tokenizer.json"))
        write_json(tok_config, os.path.join(tmp, "tokenizer_config.json"), sort_keys=True)
