"""Loading and checking a tokenfair config, and enumerating its training grid.

`resolve(config)` validates against `config.schema.yaml` (filling its defaults), then runs the checks a
JSON schema cannot express, reading only what is cheap (file existence, Parquet footers, the first JSON
line, tokenizer.json). Every error names the config key and says what was expected. It runs at planning
time, before any job, so it must stay fast: no torch import here.
"""

from __future__ import annotations

import copy
import functools
import glob
import json
import os
from importlib import resources
from typing import Any, Iterator

import yaml

from .errors import ConfigError
from .paths import SPECIAL_TOKENS, format_value, parse_run_subpath, run_subpath, same_value

N_BYTES = 256
FIXED_AXES = ("model", "weight_decay")  # then config["axes"] in order, then "seed"


@functools.lru_cache(maxsize=1)
def schema() -> dict:
    text = resources.files("tokenfair").joinpath("config.schema.yaml").read_text()
    return yaml.safe_load(text)


def schema_path() -> str:
    return str(resources.files("tokenfair").joinpath("config.schema.yaml"))


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


def corpus_splits(spec: dict) -> list[str]:
    """The splits a corpus spec produces, in order; train always, others when configured."""
    splits = ["train"]
    if spec.get("validation_fraction", 0) > 0:
        splits.append("validation")
    if spec.get("test_fraction", 0) > 0 or spec.get("heldout_files"):
        splits.append("test")
    return splits


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
                files = input_files(spec)
                if not files:
                    what = "does not exist" if not glob.has_magic(spec["path"]) and not os.path.exists(spec["path"]) else f"matches no {src} file ({', '.join(_EXTENSIONS[src])})"
                    raise ConfigError(f"config key {key}.path: {spec['path']} {what}")
                for f in files:
                    if src == "parquet":
                        check_parquet(f, f"{key}.path", spec["text_column"])
                    elif src == "jsonl":
                        check_jsonl(f, f"{key}.path", spec["text_column"])
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


_EXTENSIONS = {"text": (".txt",), "jsonl": (".jsonl", ".json"), "parquet": (".parquet",)}


def input_files(spec: dict) -> list[str]:
    """The sorted input files of a text/jsonl/parquet corpus: a file, a directory (recursive) or a glob."""
    p = spec["path"]
    exts = _EXTENSIONS[spec["source"]]
    if os.path.isfile(p):
        return [p]
    if os.path.isdir(p):
        found = [
            os.path.join(root, f) for root, _, files in os.walk(p) for f in files if f.endswith(exts)
        ]
    else:
        found = [f for f in glob.glob(p, recursive=True) if os.path.isfile(f)]
    return sorted(found)


def check_parquet(path: str, key: str, text_column: str | None = None) -> None:
    """A cheap Parquet check: magic bytes, footer schema, and the text column's presence."""
    with open(path, "rb") as fh:
        head = fh.read(4)
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 4))
        tail = fh.read(4)
    if size < 12 or head != b"PAR1" or tail != b"PAR1":
        raise ConfigError(f"config key {key}: {path} is not a Parquet file (no PAR1 magic bytes)")
    if text_column is not None:
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(path).names
        except Exception as exc:
            raise ConfigError(f"config key {key}: {path} is not a readable Parquet file ({exc})") from None
        if text_column not in names:
            raise ConfigError(
                f"config key {key.rsplit('.', 1)[0]}.text_column: column {text_column!r} not in {path} "
                f"(columns: {', '.join(names)})"
            )


def check_jsonl(path: str, key: str, text_column: str) -> None:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"config key {key}: {path} first line is not JSON ({exc})") from None
                if not isinstance(row, dict) or text_column not in row:
                    raise ConfigError(
                        f"config key {key.rsplit('.', 1)[0]}.text_column: field {text_column!r} not in the first record of {path}"
                    )
                return


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
        if axis in FIXED_AXES or axis == "seed" or axis not in train_schema:
            raise ConfigError(
                f"config key {key}.{axis}: not a train setting that can be an axis (allowed: "
                f"{', '.join(k for k in train_schema)})"
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
    for name, _ in studies(cfg):
        for point in _study_points(cfg, name):
            train = {**cfg["train"], **model_train(cfg, point["model"]), **{a: point[a] for a in extra_axes(cfg)}}
            _check_run_train(train, f"studies.{name}" if name != MAIN else "train")


def _check_run_train(train: dict, key: str) -> None:
    """Combinations of train settings that cannot run together (checked per grid point)."""
    if train.get("embedding_decay_alpha") is not None and train["decay_group"] == "matrices_no_embeddings":
        raise ConfigError(
            f"config key {key}: embedding_decay_alpha {train['embedding_decay_alpha']} scales the decay of the "
            f"embedding rows, but decay_group matrices_no_embeddings does not decay them; use all or matrices"
        )


# --------------------------------------------------------------------------------------------------
# the grid


MAIN = "main"  # the top-level grid's study name


def studies(cfg: dict) -> list[tuple[str, dict]]:
    """(name, grid spec) of every study: "main" (the top-level models x weight_decays x axes x seeds) first,
    then `studies:` in config order, each with what it leaves out taken from the top level."""
    top = {"models": list(cfg["models"]), "weight_decays": cfg["weight_decays"], "seeds": cfg["seeds"],
           "tokenizers": list(cfg["tokenizers"]), "axes": cfg["axes"]}
    given = dict(cfg.get("studies", {}))
    named = [(MAIN, {**top, **given.pop(MAIN, {})}), *given.items()]  # `studies.main` narrows the top level
    out = []
    for name, st in named:
        out.append((name, {"models": st.get("models") or list(cfg["models"]),
                           "weight_decays": [float(w) for w in st.get("weight_decays") or cfg["weight_decays"]],
                           "seeds": st.get("seeds") or cfg["seeds"],
                           "tokenizers": st.get("tokenizers") or list(cfg["tokenizers"]),
                           "axes": st.get("axes") or {}}))
    return out


def extra_axes(cfg: dict) -> list[str]:
    """The train settings that some study varies, in the train schema's order (a fixed order, so a run's path
    does not depend on the order of the config's entries)."""
    used = set(cfg["axes"])
    for st in cfg.get("studies", {}).values():
        used |= set(st.get("axes") or {})
    return [k for k in schema()["definitions"]["train"]["properties"] if k in used]


def axis_names(cfg: dict) -> list[str]:
    return [*FIXED_AXES, *extra_axes(cfg), "seed"]


def eval_corpora(cfg: dict) -> list[str]:
    """Names of the evaluation-only (out-of-domain) corpora, in config order."""
    return [c for c, spec in cfg["corpora"].items() if spec.get("eval_only")]


def training_corpora(cfg: dict) -> Iterator[tuple[str, str]]:
    """(corpus, tokenizer id) pairs that models are trained on (every corpus but the eval_only ones)."""
    for corpus in cfg["corpora"]:
        if cfg["corpora"][corpus].get("eval_only"):
            continue
        for tok in corpus_tokenizers(cfg, corpus):
            yield corpus, tok


def base_value(cfg: dict, model: str, axis: str):
    """The value of a train setting when no axis sets it: the model's train:, else train:."""
    own = model_train(cfg, model)
    return own[axis] if axis in own else cfg["train"][axis]


def _study_points(cfg: dict, name: str) -> list[dict]:
    import itertools

    spec = dict(studies(cfg))[name]
    extra = extra_axes(cfg)
    points = []
    for corpus, tok in training_corpora(cfg):
        if tok not in spec["tokenizers"]:
            continue
        for model in spec["models"]:
            axes = {"weight_decay": spec["weight_decays"], **spec["axes"], "seed": spec["seeds"]}
            for values in itertools.product(*axes.values()):
                v = dict(zip(axes, values))
                point = {"model": model, "weight_decay": v["weight_decay"]}
                for a in extra:
                    point[a] = v[a] if a in v else base_value(cfg, model, a)
                point["seed"] = v["seed"]
                shown = {k: x for k, x in point.items()
                         if k in FIXED_AXES or k == "seed" or not same_value(x, base_value(cfg, model, k))}
                points.append({"corpus": corpus, "tok": tok, "run": run_subpath(shown), **point})
    return points


def grid(cfg: dict) -> list[dict[str, Any]]:
    """Every training target, each once: a dict with corpus, tok, run (the axis path), each axis value and
    studies (the names of the studies it belongs to)."""
    index: dict[tuple, dict] = {}
    for name, _ in studies(cfg):
        for p in _study_points(cfg, name):
            key = (p["corpus"], p["tok"], p["run"])
            if key in index:
                if name not in index[key]["studies"]:
                    index[key]["studies"].append(name)
            else:
                index[key] = {**p, "studies": [name]}
    return list(index.values())


def grid_index(cfg: dict) -> dict[tuple[str, str, str], dict]:
    """(corpus, tok, run path) -> grid point, for looking up a target from its wildcards."""
    return {(p["corpus"], p["tok"], p["run"]): p for p in grid(cfg)}


def select(cfg: dict, points: list[dict] | None = None) -> list[dict]:
    """The grid points that `only:` keeps (every point when it is empty). A value matches an axis value when
    equal as a number (1, "1" and 1.0) or as text. ConfigError names an unknown axis or a value the grid does
    not have."""
    points = grid(cfg) if points is None else points
    only = cfg.get("only") or {}
    names = ["corpus", "tok", "study", *axis_names(cfg)]

    def match(v, pv) -> bool:  # --config hands values over as strings: "0.1", "1"
        if pv is None:
            return v is None or str(v).lower() in ("null", "none")
        if isinstance(v, bool) or isinstance(pv, bool):
            return v is pv or str(v).lower() == format_value(pv)
        if isinstance(pv, (int, float)):
            try:
                return float(v) == pv
            except (TypeError, ValueError):
                return False
        return str(v) == str(pv)

    def values_of(p, axis):
        return p["studies"] if axis == "study" else [p[axis]]

    for axis, values in only.items():
        if axis not in names:
            raise ConfigError(f"config key only.{axis}: not a grid axis (axes: {', '.join(names)})")
        have = list(dict.fromkeys(v for p in points for v in values_of(p, axis)))
        for v in values:
            if not any(match(v, pv) for pv in have):
                raise ConfigError(
                    f"config key only.{axis}: {v!r} is not a value of the grid (values: {', '.join(value_strings(have))})"
                )
    return [p for p in points
            if all(any(match(v, pv) for v in vals for pv in values_of(p, axis)) for axis, vals in only.items())]


def run_settings(cfg: dict, point: dict) -> dict:
    """Everything one training target needs, as plain data: the resolved model spec, the train settings
    with this grid point's axis values applied, and its identity."""
    from .presets import resolve_model_spec

    train = {**cfg["train"], **model_train(cfg, point["model"])}
    for axis in extra_axes(cfg):
        train[axis] = point[axis]
    train["weight_decay"] = point["weight_decay"]
    train["seed"] = point["seed"]
    model = resolve_model_spec(model_spec(cfg, point["model"]), key=f"models.{point['model']}")
    if train.get("tie_embeddings") is not None:
        model["tie_word_embeddings"] = bool(train["tie_embeddings"])
    return {
        "corpus": point["corpus"],
        "tokenizer": point["tok"],
        "run": point["run"],
        # the axes its path names (not the study, nor axes at their base value: adding a study to a config
        # leaves the settings, hence the run, of every existing point unchanged)
        "axes": {a: point[a] for a in parse_run_subpath(point["run"])},
        "model_name": point["model"],
        "model": model,
        "train": train,
        "frequency": dict(cfg["frequency"]),
    }


def value_strings(values) -> list[str]:
    return [format_value(v) for v in values]
