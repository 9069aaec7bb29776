"""What a new user hits first: a config file's syntax, names that become folders, results_dir, and grid lists
given on the command line. Each error is a one-line ConfigError at planning time, before any job."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from conftest import REPO, minimal_config, run_snakemake, write_config
from tokenfair import config
from tokenfair.errors import ConfigError

EMBEDDED = {"c": {"source": "embedded"}}


def no_traceback(res: subprocess.CompletedProcess) -> str:
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "Traceback (most recent call last)" not in out, out
    return out


# ------------------------------------------------------------------------------------------------ YAML syntax

BROKEN = "results_dir: results\nseeds: [0\nweight_decays: [0.0]\n"  # the list is never closed


def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(BROKEN)
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}:3:14: not valid YAML: while parsing a flow "
                                          r"sequence: expected ',' or '\]', but got ':' \(opened on line 2\)$"):
        config.read_yaml(str(path))
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match=r"config.yaml: a config file is a mapping of keys .*not a list"):
        config.read_yaml(str(path))


def test_default_config_yaml_error_in_snakemake(tmp_path):
    (tmp_path / "config.yaml").write_text(BROKEN)
    out = no_traceback(run_snakemake(tmp_path, "-n"))
    assert "config.yaml:3:14: not valid YAML" in out, out


def test_check_command_names_the_line_of_any_config_file(tmp_path):
    """`snakemake --configfile` parses the file before the workflow runs (Snakemake's message names no line);
    `python -m tokenfair.config check FILE` does."""
    bad = tmp_path / "study.yaml"
    bad.write_text(BROKEN)
    good = write_config(tmp_path, minimal_config(EMBEDDED), "good.yaml")
    res = subprocess.run([sys.executable, "-m", "tokenfair.config", "check", str(good), str(bad)], cwd=REPO,
                         capture_output=True, text=True)
    assert res.returncode == 1 and res.stdout == f"{good}: ok\n", res.stdout + res.stderr
    assert res.stderr.startswith(f"{bad}:3:14: not valid YAML") and "Traceback" not in res.stderr, res.stderr
    write_config(tmp_path, minimal_config({"a/b": {"source": "embedded"}}), "names.yaml")
    res = subprocess.run([sys.executable, "-m", "tokenfair.config", "check", str(tmp_path / "names.yaml")],
                         cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 1 and "config key corpora: name 'a/b' is not allowed" in res.stderr, res.stderr


# ------------------------------------------------------------------------------------------------ names


@pytest.mark.parametrize(
    "change, key, name",
    [
        ({"models": {"tiny-s": "tiny-s", "org/tiny": "tiny-s"}}, "models", "org/tiny"),
        ({"models": {"~tiny": "tiny-s"}}, "models", "~tiny"),
        ({"models": ["tiny-s", "a~b"]}, "models.1", "a~b"),
        ({"corpora": {"my corpus": {"source": "embedded"}}}, "corpora", "my corpus"),
        ({"tokenizers": {"bpe/4k": {"type": "bpe", "vocab_size": 300}}}, "tokenizers", "bpe/4k"),
        ({"studies": {"a/b": {"seeds": [1]}}}, "studies", "a/b"),
    ],
)
def test_names_that_cannot_be_folders(change, key, name):
    cfg = {**minimal_config(EMBEDDED), **change}
    with pytest.raises(ConfigError) as exc:
        config.resolve(cfg)
    assert str(exc.value) == (
        f"config key {key}: name {name!r} is not allowed: names become folder names, so they must match "
        f"{config.NAME_PATTERN} (a letter or digit, then letters, digits, '_', '.' or '-')"
    )


def test_other_model_errors_still_name_the_key():
    cfg = {**minimal_config(EMBEDDED), "models": {"m": {"preset": "tiny-s", "train": {"dropout": 2}}}}
    with pytest.raises(ConfigError, match=r"config key models.m.train.dropout"):
        config.resolve(cfg)


# ------------------------------------------------------------------------------------------------ results_dir


def test_results_dir_that_is_a_file(tmp_path):
    (tmp_path / "results").write_text("not a folder")
    write_config(tmp_path, minimal_config(EMBEDDED), "config.yaml")
    out = no_traceback(run_snakemake(tmp_path, "-n"))
    assert "config key results_dir: results is a file; it must name a folder (new or existing)" in out, out
    with pytest.raises(ConfigError, match=r"config key results_dir: .*results/sub is inside .*results, a file"):
        config.resolve({**minimal_config(EMBEDDED), "results_dir": str(tmp_path / "results" / "sub")})
    config.resolve({**minimal_config(EMBEDDED), "results_dir": str(tmp_path / "new" / "folder")})


# ------------------------------------------------------------------------------------------------ --config lists


def test_strings_become_numbers_where_the_schema_wants_them():
    cfg = config.resolve({**minimal_config(EMBEDDED), "seeds": ["0", "1"], "weight_decays": ["0", "0.1"],
                          "train": {"steps": "5", "tensorboard": "false"},
                          "axes": {"dropout": ["0", "0.1"], "decay_group": ["all", "matrices"]},
                          "studies": {"ls": {"axes": {"label_smoothing": ["0.1"]}}}})
    assert cfg["seeds"] == [0, 1] and cfg["weight_decays"] == [0.0, 0.1]
    assert cfg["train"]["steps"] == 5 and cfg["train"]["tensorboard"] is False
    assert cfg["axes"] == {"dropout": [0, 0.1], "decay_group": ["all", "matrices"]}
    assert cfg["studies"]["ls"]["axes"] == {"label_smoothing": [0.1]}
    assert cfg["results_dir"] == "results" and cfg["models"] == {"tiny-s": {"preset": "tiny-s"}}
    with pytest.raises(ConfigError, match=r"config key seeds.0: 'zero' is not of type 'integer'"):
        config.resolve({**minimal_config(EMBEDDED), "seeds": ["zero"]})
    with pytest.raises(ConfigError, match=r"config key seeds.0: '0.5' is not of type 'integer'"):
        config.resolve({**minimal_config(EMBEDDED), "seeds": ["0.5"]})


def test_grid_lists_on_the_snakemake_command_line(tmp_path):
    write_config(tmp_path, minimal_config(EMBEDDED, train={"device": "cpu"}))
    res = run_snakemake(tmp_path, "-n", "--config", "seeds=[0,1]", "weight_decays=[0,0.1]")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    runs = sorted(set(re.findall(r"runs/(model~[^ ,]*?seed~\d)/", out)))
    assert runs == [f"model~tiny-s/weight_decay~{wd}/seed~{s}" for wd in ("0.0", "0.1") for s in (0, 1)], runs
