"""Planning speed: `snakemake -n` on a large tokenfair grid vs a bare expand() workflow of as many jobs.

Both are planned in a temporary folder, alternating, several repeats; prints medians and the ratio
(target: tokenfair within 1.3x of the bare workflow). Run from the repository root:

    python benchmarks/bench_plan.py            # 4,500 training jobs
    python benchmarks/bench_plan.py --quick    # 450
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BARE = """
N = {n}
rule all:
    input: expand("out/{{i}}/per_token.parquet", i=range(N))
rule make:
    output: "out/{{i}}/per_token.parquet"
    shell: "touch {{output}}"
"""


def grid_config(n_models: int, n_decays: int, n_seeds: int, results_dir: str) -> dict:
    with open(os.path.join(ROOT, "config.yaml")) as fh:
        cfg = yaml.safe_load(fh)
    presets = ["tiny-xs", "tiny-s", "tiny-m"]
    cfg["models"] = {f"m{i}": presets[i % len(presets)] for i in range(n_models)}
    cfg["weight_decays"] = [round(0.1 * i, 3) for i in range(n_decays)]
    cfg["seeds"] = list(range(n_seeds))
    cfg["results_dir"] = results_dir
    return cfg


def plan(args: list[str], cwd: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    proc = subprocess.run(["snakemake", "-n", "--quiet", "rules", *args], cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"snakemake -n failed in {cwd}:\n{proc.stdout}\n{proc.stderr}")
    m = re.search(r"^total\s+(\d+)", proc.stdout + proc.stderr, re.M)
    return elapsed, int(m.group(1)) if m else -1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="450 jobs instead of 4,500")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    n_models, n_decays, n_seeds = (5, 9, 10) if a.quick else (5, 9, 100)
    n = n_models * n_decays * n_seeds
    with tempfile.TemporaryDirectory() as tmp:
        bare = os.path.join(tmp, "bare")
        os.makedirs(bare)
        with open(os.path.join(bare, "Snakefile"), "w") as fh:
            fh.write(BARE.format(n=n))
        cfg_path = os.path.join(tmp, "grid.yaml")
        with open(cfg_path, "w") as fh:
            yaml.safe_dump(grid_config(n_models, n_decays, n_seeds, os.path.join(tmp, "results")), fh)
        ours_args = ["--configfile", cfg_path, "--snakefile", os.path.join(ROOT, "Snakefile"), "--directory", ROOT]
        t_bare, t_ours = [], []
        for _ in range(a.repeats):
            tb, jb = plan(["--cores", "1"], bare)
            to, jo = plan(["--cores", "1", *ours_args], tmp)
            t_bare.append(tb)
            t_ours.append(to)
        shutil.rmtree(os.path.join(ROOT, ".snakemake", "locks"), ignore_errors=True)
    mb, mo = statistics.median(t_bare), statistics.median(t_ours)
    print(f"training grid points: {n}")
    print(f"bare expand() workflow: {jb} jobs, median {mb:.2f} s over {a.repeats} runs")
    print(f"tokenfair workflow:     {jo} jobs, median {mo:.2f} s over {a.repeats} runs")
    print(f"ratio tokenfair / bare: {mo / mb:.2f}x (target <= 1.3x)")


if __name__ == "__main__":
    main()
