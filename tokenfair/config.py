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
import re
import sys
from importlib import resources

import yaml

from .errors import ConfigError
from .paths import AXIS_ORDER, SPECIAL_TOKENS

N_BYTES = 256
# Corpus, tokenizer, model and study names become folder names (`model~<name>`) and Snakemake wildcards.
NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.-]*$"


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


def _message(err) -> str:
    """One line for a schema error, naming the key: the offending key of an unknown-key error, the offending
    name of a name pattern (names become folder names and wildcards), the matching branch of a oneOf."""
    if err.validator in ("oneOf", "anyOf") and err.context:
        # the branch of the instance's own type (e.g. the mapping form of `models`), when one has it
        typed = [e for e in err.context if e.validator != "type" and not any(
            o.validator == "type" and o.schema_path[0] == e.schema_path[0] and not o.relative_path
            for o in err.context)]
        if typed:
            return _message(sorted(typed, key=lambda e: (-len(e.absolute_path), list(e.schema_path)))[0])
    if err.validator == "pattern" and err.schema.get("pattern") == NAME_PATTERN:
        return (f"config key {_key(err.absolute_path)}: name {err.instance!r} is not allowed: names become "
                f"folder names, so they must match {NAME_PATTERN} (a letter or digit, then letters, digits, "
                f"'_', '.' or '-')")
    if err.validator == "additionalProperties":
        # the error sits on the parent; name the offending key itself
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        where = _key(list(err.absolute_path) + extra[:1])
        return f"config key {where}: unknown key (allowed: {', '.join(sorted(err.schema.get('properties', {})))})"
    return f"config key {_key(err.absolute_path)}: {err.message}"


def validate(config: dict) -> dict:
    """Schema validation with defaults filled in; returns a new dict. Raises ConfigError naming the key."""
    cfg = coerce(copy.deepcopy(dict(config)))
    errors = sorted(_validator().iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError(_message(errors[0]))
    return cfg


# --------------------------------------------------------------------------------------------------
# values from the command line


def _deref(sch: dict) -> dict:
    ref = sch.get("$ref") if isinstance(sch, dict) else None
    if ref:
        node = schema()
        for part in ref.lstrip("#/").split("/"):
            node = node[part]
        return node
    return sch if isinstance(sch, dict) else {}


def _from_string(value: str, sch: dict):
    """A string where the schema wants a number, a boolean or null, as that value (unchanged otherwise)."""
    types = sch.get("type", [])
    types = [types] if isinstance(types, str) else types
    if not types or "string" in types:
        return value
    text = value.strip()
    if "integer" in types and re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    if "number" in types:
        try:
            return int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)
        except ValueError:
            pass
    if "boolean" in types and text.lower() in ("true", "false"):
        return text.lower() == "true"
    if "null" in types and text in ("null", "~"):
        return None
    return value


def coerce(value, sch: dict | None = None):
    """Snakemake passes the items of a `--config` list or mapping as strings (`--config 'seeds=[0,1]'` gives
    ['0', '1']): each string where the schema wants a number, a boolean or null becomes that value. Axis
    values (`axes:`, a study's `axes:`) follow their train setting's schema."""
    sch = _deref(schema() if sch is None else sch)
    if isinstance(value, str):
        return _from_string(value, sch)
    if isinstance(value, list):
        return [coerce(v, sch.get("items", {})) for v in value]
    if isinstance(value, dict):
        if sch.get("x-axes"):
            train = schema()["definitions"]["train"]["properties"]
            return {k: coerce(v, {"items": train.get(k, {})}) for k, v in value.items()}
        props, extra = sch.get("properties", {}), sch.get("additionalProperties")
        return {k: coerce(v, props.get(k, extra if isinstance(extra, dict) else {})) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------------------------------
# config files


def read_yaml(path: str) -> dict:
    """A YAML config file as a mapping; ConfigError naming the file, line and column of a syntax error."""
    try:
        with open(path, encoding="utf-8") as fh:
            cfg = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else path
        problem = ": ".join(str(x) for x in (getattr(exc, "context", None), getattr(exc, "problem", None)) if x)
        start = getattr(exc, "context_mark", None)
        if start is not None and mark is not None and start.line != mark.line:
            problem += f" (opened on line {start.line + 1})"
        raise ConfigError(f"{where}: not valid YAML: {problem or exc}") from None
    if cfg is None:
        return {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: a config file is a mapping of keys (results_dir:, corpora:, ...), "
                          f"not a {type(cfg).__name__}")
    return cfg


def load(path: str, overrides: dict | None = None) -> dict:
    """Read a YAML config file, apply --config style overrides, and resolve it."""
    cfg = read_yaml(path)
    cfg.update(overrides or {})
    return resolve(cfg)


def resolve(config: dict, check_files: bool = True) -> dict:
    """Validate, fill defaults, normalise and check a config. Returns the resolved config."""
    cfg = validate(config)
    if check_files:
        _check_results_dir(cfg["results_dir"])
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


def _check_results_dir(results_dir: str) -> None:
    """results_dir is a folder, or can become one: neither it nor a folder above it is a file."""
    path = os.path.normpath(results_dir)
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    if path and not os.path.isdir(path):
        what = "is a file" if path == os.path.normpath(results_dir) else f"is inside {path}, a file"
        raise ConfigError(f"config key results_dir: {results_dir} {what}; it must name a folder (new or existing)")


def main(argv: list[str] | None = None) -> int:
    """`python -m tokenfair.config check FILE...`: each config file's YAML (file:line:column of a syntax
    error), then `resolve` (the schema, the names, the files it names); the grid's own checks
    (tokenfair.plan) run with `snakemake -n --configfile FILE`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tokenfair.config", description=main.__doc__)
    parser.add_argument("command", choices=["check"])
    parser.add_argument("files", nargs="+", metavar="FILE")
    args = parser.parse_args(argv)
    status = 0
    for path in args.files:
        try:
            resolve(read_yaml(path))
            print(f"{path}: ok")
        except ConfigError as exc:
            print(f"{path}: {exc}" if not str(exc).startswith(path) else str(exc), file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
