"""The plan: everything the workflow derives from a resolved config, derived once.

`build(cfg)` turns a resolved config (tokenfair.config.resolve) into a `Plan`: the training grid (each point
with the studies it belongs to), its axes and their base values, the splits, the training and evaluation
corpora, the points `only:` selects, each point's run settings and train-job inputs, and every output path.
The Snakefile builds it once; jobs get `Plan.to_dict()` (plain data) as a param and rebuild it with
`Plan.from_dict()`, never re-resolving the raw config.

A Plan reads like its config too (`plan["results_dir"]`): the settings stay where the config has them.
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Mapping
from typing import Any, Iterator

from . import paths
from .config import corpus_tokenizers, model_spec, model_train
from .corpus import corpus_splits
from .errors import ConfigError
from .paths import AXIS_ORDER, FIXED_AXES, format_value, parse_run_subpath, run_subpath, same_value

MAIN = "main"  # the top-level grid's study name


# --------------------------------------------------------------------------------------------------
# the grid, from a resolved config


def studies(cfg) -> list[tuple[str, dict]]:
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


def extra_axes(cfg) -> list[str]:
    """The train settings that some study varies, in AXIS_ORDER (a fixed order, so a run's path does not
    depend on the order of the config's entries)."""
    used = set(cfg["axes"])
    for st in cfg.get("studies", {}).values():
        used |= set(st.get("axes") or {})
    return [k for k in AXIS_ORDER if k in used]


def base_value(cfg, model: str, axis: str):
    """The value of a train setting when no axis sets it: the model's train:, else train:."""
    own = model_train(cfg, model)
    return own[axis] if axis in own else cfg["train"][axis]


def eval_corpora(cfg) -> list[str]:
    """Names of the evaluation-only (out-of-domain) corpora, in config order."""
    return [c for c, spec in cfg["corpora"].items() if spec.get("eval_only")]


def training_corpora(cfg) -> list[tuple[str, str]]:
    """(corpus, tokenizer id) pairs that models are trained on (every corpus but the eval_only ones)."""
    return [(corpus, tok) for corpus, spec in cfg["corpora"].items() if not spec.get("eval_only")
            for tok in corpus_tokenizers(cfg, corpus)]


def _study_points(cfg, spec: dict, extra: list[str]) -> list[dict]:
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


def _check_run_train(train: dict, key: str) -> None:
    """Combinations of train settings that cannot run together (checked per grid point)."""
    if train.get("embedding_decay_alpha") is not None and train["decay_group"] == "matrices_no_embeddings":
        raise ConfigError(
            f"config key {key}: embedding_decay_alpha {train['embedding_decay_alpha']} scales the decay of the "
            f"embedding rows, but decay_group matrices_no_embeddings does not decay them; use all or matrices"
        )


def grid(cfg) -> list[dict[str, Any]]:
    """Every training target, each once: a dict with corpus, tok, run (the axis path), each axis value and
    studies (the names of the studies it belongs to). ConfigError when a point's settings cannot run together."""
    extra = extra_axes(cfg)
    index: dict[tuple, dict] = {}
    for name, spec in studies(cfg):
        for p in _study_points(cfg, spec, extra):
            train = {**cfg["train"], **model_train(cfg, p["model"]), **{a: p[a] for a in extra}}
            _check_run_train(train, f"studies.{name}" if name != MAIN else "train")
            key = (p["corpus"], p["tok"], p["run"])
            if key in index:
                if name not in index[key]["studies"]:
                    index[key]["studies"].append(name)
            else:
                index[key] = {**p, "studies": [name]}
    return list(index.values())


def value_strings(values) -> list[str]:
    return [format_value(v) for v in values]


def _match(v, pv) -> bool:
    """Whether an `only:` value names a grid value: equal as a number (1, "1" and 1.0) or as text (--config
    hands values over as strings: "0.1", "1")."""
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


def select(cfg, points: list[dict], axis_names: list[str]) -> list[dict]:
    """The grid points that `only:` keeps (every point when it is empty). ConfigError names an unknown axis or
    a value the grid does not have."""
    only = cfg.get("only") or {}
    names = ["corpus", "tok", "study", *axis_names]

    def values_of(p, axis):
        return p["studies"] if axis == "study" else [p[axis]]

    for axis, values in only.items():
        if axis not in names:
            raise ConfigError(f"config key only.{axis}: not a grid axis (axes: {', '.join(names)})")
        have = list(dict.fromkeys(v for p in points for v in values_of(p, axis)))
        for v in values:
            if not any(_match(v, pv) for pv in have):
                raise ConfigError(
                    f"config key only.{axis}: {v!r} is not a value of the grid "
                    f"(values: {', '.join(value_strings(have))})"
                )
    return [p for p in points
            if all(any(_match(v, pv) for v in vals for pv in values_of(p, axis)) for axis, vals in only.items())]


def _axis_value(v):
    """A grid value as a summary table holds it (a list, e.g. betas, as its path text)."""
    return v if isinstance(v, (int, float, str, bool)) or v is None else format_value(v)


# --------------------------------------------------------------------------------------------------
# the plan


def key(point: dict) -> tuple[str, str, str]:
    """A grid point's key: (corpus, tokenizer id, run path)."""
    return point["corpus"], point["tok"], point["run"]


class Plan(Mapping):
    """A resolved config and everything derived from it (see the module docstring). Build with `build(cfg)`;
    to and from plain data with `to_dict()` / `from_dict()`."""

    def __init__(self, config: dict, points: list[dict], selected: list[tuple[str, str, str]]):
        self.config = config
        self.points = points  # every grid point, each with its studies
        self.selected = [self.point(*k) for k in selected]  # the points `only:` keeps (all when unset)
        self._settings: dict[tuple, dict] = {}

    # a Plan reads like its config
    def __getitem__(self, name):
        return self.config[name]

    def __iter__(self):
        return iter(self.config)

    def __len__(self):
        return len(self.config)

    def __reduce__(self):  # pickled (worker processes) as plain data
        return from_dict, (self.to_dict(),)

    def to_dict(self) -> dict:
        """Plain data (a job's params). The config's top-level keys are sorted: Snakemake puts `--config` keys
        first, and a job's params must not change (and rerun it) with the order the keys were given in."""
        return {"config": {k: self.config[k] for k in sorted(self.config)}, "points": self.points, "selected": [list(key(p)) for p in self.selected]}

    @classmethod
    def from_dict(cls, data: Mapping) -> Plan:
        return cls(dict(data["config"]), [dict(p) for p in data["points"]], [tuple(k) for k in data["selected"]])

    # --- the grid ---------------------------------------------------------------------------------------
    @functools.cached_property
    def index(self) -> dict[tuple[str, str, str], dict]:
        """(corpus, tok, run path) -> grid point."""
        return {key(p): p for p in self.points}

    def point(self, corpus: str, tok: str, run: str) -> dict:
        """The grid point of a train job's wildcards; KeyError when the config's grid has none."""
        return self.index[(corpus, tok, run)]

    @functools.cached_property
    def studies(self) -> list[tuple[str, dict]]:
        return studies(self.config)

    @functools.cached_property
    def extra_axes(self) -> list[str]:
        return extra_axes(self.config)

    def shared_train_value(self, key: str):
        """The value of train setting `key` in every run of the config (no axis varies it, every model has the
        same), else None: the train rule then takes it as a constant instead of a function per job."""
        if key in self.extra_axes:
            return None
        values = {base_value(self.config, m, key) for m in self.config["models"]}
        return values.pop() if len(values) == 1 else None

    @property
    def axis_names(self) -> list[str]:
        """The axes of a run path, in path order: model, weight_decay, the extra axes, seed."""
        return [*FIXED_AXES, *self.extra_axes, "seed"]

    @property
    def other_axes(self) -> list[str]:
        """The columns that key a seed group apart from the decay: corpus, tokenizer, model, extra axes."""
        return ["corpus", "tokenizer", "model", *self.extra_axes]

    @functools.cached_property
    def base_values(self) -> dict:
        """{model: {extra axis: its base value}}: the value a study that does not vary the axis trains with
        (the model's own train: override, else train:)."""
        return {m: {a: _axis_value(base_value(self.config, m, a)) for a in self.extra_axes}
                for m in self.config["models"]}

    def identity(self, point: dict) -> dict:
        """The columns that name a run: corpus, tokenizer, model, weight_decay, the extra axes, seed. An axis a
        point does not carry takes the config's base train value (a study that does not vary it)."""
        return {"corpus": point["corpus"], "tokenizer": point["tok"],
                **{a: _axis_value(point[a] if a in point else base_value(self.config, point["model"], a))
                   for a in self.axis_names}}

    # --- corpora and splits -----------------------------------------------------------------------------
    @functools.cached_property
    def training_corpora(self) -> list[tuple[str, str]]:
        return training_corpora(self.config)

    @functools.cached_property
    def eval_corpora(self) -> list[str]:
        return eval_corpora(self.config)

    def corpus_splits(self, corpus: str) -> list[str]:
        return corpus_splits(self.config["corpora"][corpus])

    @functools.cached_property
    def splits(self) -> list[str]:
        """The splits the runs evaluate: train, validation, test (those some training corpus has), then
        ood-<corpus> for each evaluation-only corpus in config order."""
        have = {s for c in dict.fromkeys(c for c, _ in self.training_corpora) for s in self.corpus_splits(c)}
        return [s for s in paths.SPLITS if s in have] + [paths.ood_split(c) for c in self.eval_corpora]

    # --- per point --------------------------------------------------------------------------------------
    def settings(self, point: dict) -> dict:
        """Everything one training target needs, as plain data: the resolved model spec, the train settings
        with this grid point's axis values applied, and its identity (computed once per point)."""
        k = key(point)
        if k not in self._settings:
            self._settings[k] = run_settings(self.config, point, self.extra_axes)
        return self._settings[k]

    def train_docs(self, point: dict) -> int | None:
        """A point's train.train_docs: the first documents of the train split it trains on (None: all)."""
        return point["train_docs"] if "train_docs" in point else base_value(self.config, point["model"], "train_docs")

    def train_inputs(self, point: dict) -> dict[str, str]:
        """A train job's inputs: the corpus x tokenizer's tokenizer.json and its token shards (train, each
        held-out split, each evaluation-only corpus as ood-<name>), the train shard's index when the point
        trains on its first train_docs documents, and the point's train frequency table (run_frequency_file:
        the bins of the TensorBoard curves; the per-row decay of train.embedding_decay_alpha)."""
        r, w = self.config["results_dir"], {"corpus": point["corpus"], "tok": point["tok"]}
        out = {"tokenizer": paths.path("tokenizer", r, **w)}
        for split in self.corpus_splits(point["corpus"]):
            out[split] = paths.path("tokens", r, split=split, **w)
        for other in self.eval_corpora:
            out[paths.ood_split(other)] = paths.path("ood_tokens", r, other=other, **w)
        if self.train_docs(point) is not None:
            out["train_index"] = paths.path("tokens_index", r, split="train", **w)
        out["frequency"] = self.run_frequency_file(point)
        return out

    # --- paths ------------------------------------------------------------------------------------------
    def run_files(self, point: dict) -> dict[str, str]:
        """The run folder ("dir") of a point and each file in it (paths.RUN_FILES)."""
        return paths.run_files(self.config["results_dir"], point["corpus"], point["tok"], point["run"])

    def frequency_file(self, corpus: str, tok: str, train_docs: int | None = None) -> str:
        """The train frequency table of a corpus x tokenizer: of its whole train split, or of the split's
        first `train_docs` documents (rules count_docs)."""
        r = self.config["results_dir"]
        if train_docs is None:
            return paths.path("frequency", r, corpus=corpus, tok=tok, split="train")
        return paths.path("frequency_docs", r, corpus=corpus, tok=tok, docs=int(train_docs))

    def run_frequency_file(self, point: dict) -> str:
        """The train frequency table of what a point trains on: its bins, rare / frequent ids, unseen ids."""
        return self.frequency_file(point["corpus"], point["tok"], self.train_docs(point))

    def frequency_tables(self) -> list[str]:
        """Every training corpus x tokenizer's train table and the table of every grid point (the aggregation's
        inputs)."""
        return sorted({self.frequency_file(c, t) for c, t in self.training_corpora}
                      | {self.run_frequency_file(p) for p in self.points})

    def data_targets(self) -> list[str]:
        """Frequency tables and Zipf figures of every training corpus x tokenizer, and its shard of every
        evaluation-only corpus (ood/<other>.npy)."""
        r, out = self.config["results_dir"], []
        for corpus, tok in self.training_corpora:
            w = {"corpus": corpus, "tok": tok}
            out += [paths.path("frequency", r, split=s, **w) for s in self.corpus_splits(corpus)]
            out += [paths.path("zipf", r, ext=e, **w) for e in ("png", "pdf")]
            out += [paths.path("ood_tokens", r, other=o, **w) for o in self.eval_corpora]
        return out

    def run_targets(self) -> list[str]:
        """Every file of every selected point's run folder."""
        return [f for p in self.selected for kind, f in self.run_files(p).items() if kind != "dir"]

    def present_runs(self) -> tuple[list[dict], list[dict]]:
        """(present, missing) grid points now; a run is present when its per_token.parquet, run.json and
        norms.parquet exist. A missing point carries a `reason`."""
        present, missing = [], []
        for point in self.points:
            f = self.run_files(point)
            lacking = [os.path.basename(f[k]) for k in paths.RUN_SUMMARISED if not os.path.exists(f[k])]
            if lacking:
                missing.append({**point, "reason": "no " + " and no ".join(lacking)})
            else:
                present.append(point)
        return present, missing

    def membership(self) -> Iterator[dict]:
        """One row per grid point and study it belongs to: its identity, run path and the study."""
        for p in self.points:
            ident = self.identity(p)
            for s in p["studies"]:
                yield {**ident, "run": p["run"], "study": s}


def run_arguments(inputs: Mapping[str, str], tokenizer_spec: dict, corpus_spec: dict) -> dict:
    """tokenfair.train.run's arguments (but settings and out_dir) from a train job's named inputs
    (`Plan.train_inputs`: every name that is not the train shard, its index, the tokenizer or the frequency
    table is an evaluation split) and its tokenizer's and corpus's config entries."""
    own = ("train", "train_index", "tokenizer", "frequency")
    return {
        "train_tokens": inputs["train"],
        "eval_tokens": {k: inputs[k] for k in inputs.keys() if k not in own},
        "tokenizer_json": inputs["tokenizer"],
        "tokenizer_spec": tokenizer_spec,
        "train_frequency": inputs["frequency"],
        "corpus_spec": corpus_spec,
        "train_index": inputs.get("train_index"),
    }


def run_settings(cfg, point: dict, extra: list[str]) -> dict:
    """A grid point's settings as plain data: the resolved model spec, the train settings with the point's
    axis values (`extra`: the plan's extra axes) applied, and its identity."""
    from .presets import resolve_model_spec

    train = {**cfg["train"], **model_train(cfg, point["model"])}
    for axis in extra:
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


def build(cfg: dict) -> Plan:
    """The plan of a resolved config. ConfigError for what only the grid shows: settings of a point that
    cannot run together, a given tokenizer larger than the embedding of a model it trains, an `only:` axis or
    value the grid does not have."""
    points = grid(cfg)
    _check_embeddings(cfg, points)
    extra = extra_axes(cfg)
    selected = select(cfg, points, [*FIXED_AXES, *extra, "seed"])
    return Plan(cfg, points, [key(p) for p in selected])


def _check_embeddings(cfg, points) -> None:
    """A given tokenizer (type: file) has no id beyond the embedding of a model it is trained with
    (models.<m>.vocab_size, when set; unset, the embedding is the tokenizer's size): checked once per model x
    tokenizer the grid trains, naming the studies of its first point."""
    from .presets import resolve_model_spec
    from .resources import vocab_size

    pairs = {}
    for p in points:
        pairs.setdefault((p["model"], p["tok"]), p["studies"])
    for (m, tid), studies in pairs.items():
        rows = resolve_model_spec(model_spec(cfg, m), key=f"models.{m}").get("vocab_size")
        spec = cfg["tokenizers"][tid]
        if rows is None or spec["type"] != "file":
            continue
        n_ids = vocab_size(cfg, tid)
        if n_ids > rows:
            raise ConfigError(
                f"config key models.{m}.vocab_size: {rows} embedding rows, but tokenizers.{tid} "
                f"({spec['path']}) has {n_ids} ids (study {', '.join(studies)}); raise vocab_size to at "
                f"least {n_ids} or leave it unset (the tokenizer's size)"
            )


def from_dict(data: Mapping) -> Plan:
    return Plan.from_dict(data)
