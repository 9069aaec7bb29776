"""Loading and checking a tokenfair config (its grid and paths: tokenfair.plan).

`resolve(config)` validates against `config.schema.yaml` (filling its defaults), then runs the checks a
JSON schema cannot express, reading only what is cheap (file existence, Parquet footers, the first JSON
line, tokenizer.json). Every error names the config key and says what was expected. It runs at planning
time, before any job, so it must stay fast: no torch import here.
"""

from __future__ import annotations

import copy
import functools
import glob
import os
from importlib import resources

import yaml

from .errors import ConfigError
from .paths import AXIS_ORDER, SPECIAL_TOKENS

N_BYTES = 256


@functools.lru_cache(maxsize=1)
def schema() -> dict:
    text = resources.files("tokenfair").joinpath("config.schema.yaml").read_text()
    return yaml.safe_load(text)


def _validator():
    import jsonschema

    base = jsonschema.Draft202012Validator
    validate_properties = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, sch):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub and prop not in instance:
                    instance[prop] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, sch)

    return jsonschema.validators.extend(base, {"properties": set_defaults})(schema())


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def validate(config: dict) -> dict:
    """Schema validation with defaults filled in; returns a new dict. Raises ConfigError naming the key."""
    cfg = copy.deepcopy(dict(config))
    errors = sorted(_validator().iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        # additionalProperties errors sit on the parent; name the offending key itself.
        if err.validator == "additionalProperties":
            extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            where = _key(list(err.absolute_path) + extra[:1])
            raise ConfigError(f"config key {where}: unknown key (allowed: {', '.join(sorted(err.schema.get('properties', {})))})")
        raise ConfigError(f"config key {_key(err.absolute_path)}: {err.message}")
    return cfg


def load(path: str, overrides: dict | None = None) -> dict:
    """Read a YAML config file, apply --config style overrides, and resolve it."""
    try:
        with open(path) as fh:
            cfg = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    cfg.update(overrides or {})
    return resolve(cfg)


def resolve(config: dict, check_files: bool = True) -> dict:
    """Validate, fill defaults, normalise and check a config. Returns the resolved config."""
    cfg = validate(config)
    cfg["models"] = _normalise_models(cfg["models"])
    cfg["weight_decays"] = [float(w) for w in cfg["weight_decays"]]
    _check_tokenizers(cfg, check_files)
    _check_corpora(cfg, check_files)
    _check_models(cfg)
    _check_axes(cfg["axes"], "axes")
    _check_studies(cfg)
    return cfg


# --------------------------------------------------------------------------------------------------
# checks


def _normalise_models(models) -> dict[str, dict]:
    if isinstance(models, list):
        models = {name: name for name in models}
    out = {}
    for name, spec in models.items():
        out[name] = {"preset": spec} if isinstance(spec, str) else dict(spec)
    return out


def corpus_tokenizers(cfg: dict, corpus: str) -> list[str]:
    spec = cfg["corpora"][corpus]
    return list(spec.get("tokenizers") or cfg["tokenizers"])


def _check_tokenizers(cfg: dict, check_files: bool) -> None:
    min_vocab = N_BYTES + len(SPECIAL_TOKENS)
    for tid, spec in cfg["tokenizers"].items():
        key = f"tokenizers.{tid}"
        if spec["type"] == "bpe":
            if "vocab_size" not in spec:
                raise ConfigError(f"config key {key}.vocab_size: required for a bpe tokenizer")
            size = spec["vocab_size"]
            if isinstance(size, bool) or not isinstance(size, (int, float)) or size != int(size):
                raise ConfigError(f"config key {key}.vocab_size: {size!r} is not an integer")
            spec["vocab_size"] = int(size)
            if spec["vocab_size"] < min_vocab:
                raise ConfigError(
                    f"config key {key}.vocab_size: {spec['vocab_size']} is below {min_vocab} "
                    f"(256 byte symbols + {len(SPECIAL_TOKENS)} special tokens)"
                )
            for k in ("path", "eod_token", "pad_token"):
                if k in spec:
                    raise ConfigError(f"config key {key}.{k}: only for a tokenizer of type file (a trained bpe "
                                      f"has {', '.join(SPECIAL_TOKENS)} as ids 0 and 1)")
        else:
            if "path" not in spec:
                raise ConfigError(f"config key {key}.path: required for a tokenizer of type file")
            if check_files:
                tok = check_tokenizer_file(spec["path"], f"{key}.path")
                _check_special_tokens(cfg, tid, spec, tok)


def check_tokenizer_file(path: str, key: str):
    """The tokenizer of a given tokenizer.json; ConfigError naming `key` when missing or malformed."""
    from .errors import DataError
    from .tokenization import load_tokenizer

    try:
        return load_tokenizer(path)
    except DataError as exc:
        raise ConfigError(f"config key {key}: {exc}") from None


def _check_special_tokens(cfg: dict, tid: str, spec: dict, tok) -> None:
    """A given tokenizer needs an end-of-document token when a corpus using it has eod: true."""
    from .tokenization import EOD_CANDIDATES, special_ids

    key = f"tokenizers.{tid}"
    for kind in ("eod", "pad"):
        name = spec.get(f"{kind}_token")
        if name is not None and tok.token_to_id(name) is None:
            raise ConfigError(f"config key {key}.{kind}_token: {name!r} is not in the vocabulary of {spec['path']}")
    if special_ids(tok, spec)["eod"] is None:
        users = [c for c, cs in cfg["corpora"].items() if cs.get("eod", True) and tid in corpus_tokenizers(cfg, c)]
        if users:
            raise ConfigError(
                f"config key {key}.eod_token: {spec['path']} has no end-of-document token (none of "
                f"{', '.join(EOD_CANDIDATES)}) but corpora.{users[0]} has eod: true; name one with eod_token "
                f"or set eod: false"
            )


def _check_corpora(cfg: dict, check_files: bool) -> None:
    if all(spec.get("eval_only") for spec in cfg["corpora"].values()):
        raise ConfigError(
            f"config key corpora: every corpus ({', '.join(cfg['corpora'])}) has eval_only: true, so there is "
            f"nothing to train on; set eval_only: false on at least one"
        )
    for name, spec in cfg["corpora"].items():
        key = f"corpora.{name}"
        if spec.get("eval_only"):
            # it is tokenized by each training corpus's tokenizer, and evaluated whole
            for k, why in (("tokenizers", "an eval_only corpus is tokenized by each training corpus's own "
                                          "tokenizer"),
                           ("max_train_docs", "an eval_only corpus is evaluated whole (all its documents)")):
                if spec.get(k) is not None:
                    raise ConfigError(f"config key {key}.{k}: {why}; remove {k} or set eval_only: false")
        for tid in spec.get("tokenizers") or []:
            if tid not in cfg["tokenizers"]:
                raise ConfigError(
                    f"config key {key}.tokenizers: unknown tokenizer id {tid!r} (defined: {', '.join(cfg['tokenizers'])})"
                )
        if spec["validation_fraction"] + spec["test_fraction"] >= 1:
            raise ConfigError(f"config key {key}: validation_fraction + test_fraction must be below 1")
        src = spec["source"]
        if src == "embedded":
            from .corpus import EMBEDDED

            if spec["name"] not in EMBEDDED:
                raise ConfigError(f"config key {key}.name: unknown embedded corpus {spec['name']!r} (have: {', '.join(EMBEDDED)})")
        elif src in ("text", "jsonl", "parquet"):
            if "path" not in spec:
                raise ConfigError(f"config key {key}.path: required for source {src}")
            if check_files:
                _check_corpus_files(spec, key)
        elif src == "hf":
            for req in ("repo", "revision", "files"):
                if req not in spec:
                    raise ConfigError(f"config key {key}.{req}: required for source hf")
            if not spec["files"]:
                raise ConfigError(f"config key {key}.files: name at least one file of {spec['repo']}")
            for listkey in ("files", "heldout_files"):
                for f in spec.get(listkey) or []:
                    if not f.endswith((".parquet", ".jsonl", ".json")):
                        raise ConfigError(f"config key {key}.{listkey}: {f} is not a .parquet, .jsonl or .json file")


def _check_corpus_files(spec: dict, key: str) -> None:
    """A text/jsonl/parquet corpus's path names files of its source, each readable (a cheap look)."""
    from .corpus import EXTENSIONS, FileCheckError, check_jsonl, check_parquet, input_files

    src = spec["source"]
    files = input_files(spec)
    if not files:
        missing = not glob.has_magic(spec["path"]) and not os.path.exists(spec["path"])
        what = "does not exist" if missing else f"matches no {src} file ({', '.join(EXTENSIONS[src])})"
        raise ConfigError(f"config key {key}.path: {spec['path']} {what}")
    try:
        for f in files:
            if src == "parquet":
                check_parquet(f, spec["text_column"])
            elif src == "jsonl":
                check_jsonl(f, spec["text_column"])
    except FileCheckError as exc:
        raise ConfigError(f"config key {key}.{exc.field}: {exc}") from None


def model_spec(cfg: dict, name: str) -> dict:
    """models.<name> without its `train:` overrides (what tokenfair.presets resolves)."""
    return {k: v for k, v in cfg["models"][name].items() if k != "train"}


def model_train(cfg: dict, name: str) -> dict:
    """models.<name>.train: the train settings this model overrides ({} when none)."""
    return dict(cfg["models"][name].get("train") or {})


def _check_train_values(values: dict, key: str) -> None:
    """Each key of `values` must be a train setting and its value valid for it (ConfigError naming key.k)."""
    import jsonschema

    train_schema = schema()["definitions"]["train"]["properties"]
    for k, v in values.items():
        if k not in train_schema:
            raise ConfigError(f"config key {key}.{k}: not a train setting (allowed: {', '.join(train_schema)})")
        try:
            jsonschema.validate(v, train_schema[k])
        except jsonschema.ValidationError as exc:
            raise ConfigError(f"config key {key}.{k}: {exc.message}") from None


def _check_models(cfg: dict) -> None:
    from .presets import resolve_model_spec

    for name in cfg["models"]:
        overrides = cfg["models"][name].get("train")
        if overrides is not None and not isinstance(overrides, dict):
            raise ConfigError(f"config key models.{name}.train: expected a mapping of train settings")
        _check_train_values(overrides or {}, f"models.{name}.train")
        resolved = resolve_model_spec(model_spec(cfg, name), key=f"models.{name}")
        maxpos = resolved.get("max_position_embeddings")
        seq_len = {**cfg["train"], **model_train(cfg, name)}["seq_len"]
        if maxpos is not None and seq_len > maxpos:
            where = f"models.{name}.train.seq_len" if "seq_len" in model_train(cfg, name) else "train.seq_len"
            raise ConfigError(
                f"config key {where}: {seq_len} exceeds models.{name}'s maximum positions ({maxpos})"
            )


def _check_axes(axes: dict, key: str) -> None:
    train_schema = schema()["definitions"]["train"]["properties"]
    import jsonschema

    for axis, values in axes.items():
        if axis not in AXIS_ORDER:  # never model, weight_decay or seed: those are every run's axes
            raise ConfigError(
                f"config key {key}.{axis}: not a train setting that can be an axis (allowed: {', '.join(AXIS_ORDER)})"
            )
        for v in values:
            try:
                jsonschema.validate(v, train_schema[axis])
            except jsonschema.ValidationError as exc:
                raise ConfigError(f"config key {key}.{axis}: value {v!r}: {exc.message}") from None


def _check_studies(cfg: dict) -> None:
    for name, study in cfg["studies"].items():
        key = f"studies.{name}"
        for field, have in (("models", cfg["models"]), ("tokenizers", cfg["tokenizers"])):
            for v in study.get(field) or []:
                if v not in have:
                    raise ConfigError(f"config key {key}.{field}: {v!r} is not defined in {field} "
                                      f"(defined: {', '.join(have)})")
        _check_axes(study.get("axes") or {}, f"{key}.axes")
