"""Planning speed: `snakemake -n` on a large tokenfair grid vs a bare expand() workflow of as many jobs.

Three baselines, planned in a temporary folder, alternating with tokenfair, several repeats; prints medians
and ratios (target: tokenfair within 1.2x of the same-shape bare workflow):
- bare: one rule, one output per job, nothing else;
- bare, same shape: tokenfair's DAG with constants: a data chain (prepare, tokenizer, tokenize and count per
  split), a train-shaped rule (4 inputs from those jobs, 4 outputs and a directory, log, benchmark, 3 params,
  threads, 6 resources, a conda environment and a script), an aggregate over 3 files of every run, and `all` asking for every run file, so
  that the ratio against it isolates what tokenfair's own planning code (grid, settings, estimates, input
  and resource functions) costs, not what Snakemake spends on a DAG of that size;
- the same shape with functions of the wildcards where tokenfair's train rule has them (its input, 3 params
  and 3 resources, each a dict lookup here): the ratio of the two shaped workflows is what Snakemake itself
  spends per job on calling such functions (it inspects each one's signature on every call), and tokenfair
  against this one is what tokenfair's own code and its other rules add.
With slurm-client installed but no controller running, every snakemake start costs ~9 s more (the SLURM
plugin asks `scontrol`): start `scripts/slurm-local.sh start` first, or the ratios are flattened.
Run from the repository root:

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

SHAPED = """
N = {n}
RUN = "out/{{i}}"
FILES = ["per_token.parquet", "train_log.csv", "run.json", "norms.parquet"]
rule all:
    input:
        expand("data/frequency/{{split}}.parquet", split=["train", "validation"]),
        expand(RUN + "/{{f}}", i=range(N), f=FILES + ["model"]),
        "summary/runs.csv",
rule prepare:
    output: "data/documents.parquet"
    shell: "touch {{output}}"
rule tokenizer:
    input: "data/documents.parquet"
    output: "data/tokenizer.json"
    shell: "touch {{output}}"
rule tokenize:
    input: "data/documents.parquet", "data/tokenizer.json"
    output: "data/tokens/{{split}}.npy"
    shell: "touch {{output}}"
rule count:
    input: "data/tokens/{{split}}.npy", "data/tokenizer.json"
    output: "data/frequency/{{split}}.parquet"
    shell: "touch {{output}}"
rule make:
    input:
        tokenizer="data/tokenizer.json", train="data/tokens/train.npy", validation="data/tokens/validation.npy",
        frequency="data/frequency/train.parquet",
    output:
        per_token=RUN + "/per_token.parquet",
        train_log=RUN + "/train_log.csv",
        run_json=RUN + "/run.json",
        norms=RUN + "/norms.parquet",
        model=directory(RUN + "/model"),
    params: settings={{"steps": 800, "lr": 0.003}}, tokenizer={{"type": "bpe"}}, corpus={{"source": "embedded"}}
    log: "logs/{{i}}.log"
    benchmark: "bench/{{i}}.tsv"
    threads: 1
    resources: runtime=15, mem_mb=3000, gpu=1, cpus_per_task=1, slurm_extra="--signal=TERM@121"
    conda: "train.yaml"
    script: "train.py"
rule aggregate:
    input: expand(RUN + "/{{f}}", i=range(N), f=["per_token.parquet", "run.json", "norms.parquet"])
    output: "summary/runs.csv"
    shell: "touch {{output}}"
"""


# The same shape with tokenfair's functions of the wildcards where tokenfair has them (input, 3 params, 3
# resources; each a dict lookup): what Snakemake spends calling per-job functions, without tokenfair's code.
SHAPED_FUNCTIONS = (
    SHAPED.replace(
        """    input:
        tokenizer="data/tokenizer.json", train="data/tokens/train.npy", validation="data/tokens/validation.npy",
        frequency="data/frequency/train.parquet",""",
        """    input: unpack(lambda w: INPUTS)""")
    .replace(
        """    params: settings={{"steps": 800, "lr": 0.003}}, tokenizer={{"type": "bpe"}}, corpus={{"source": "embedded"}}""",
        """    params: settings=lambda w: PARAMS[w.i], tokenizer=lambda w: TOKENIZER, corpus=lambda w: CORPUS""")
    .replace(
        '    resources: runtime=15, mem_mb=3000, gpu=1, cpus_per_task=1, slurm_extra="--signal=TERM@121"',
        '    resources: runtime=lambda w, attempt: 15 * attempt, mem_mb=lambda w, attempt: 3000 * attempt, gpu=1,'
        ' cpus_per_task=1, slurm_extra=lambda w: "--signal=TERM@121"')
    .replace('RUN = "out/{{i}}"', """RUN = "out/{{i}}"
INPUTS = dict(tokenizer="data/tokenizer.json", train="data/tokens/train.npy",
              validation="data/tokens/validation.npy", frequency="data/frequency/train.parquet")
PARAMS = {{str(i): {{"steps": 800, "lr": 0.003, "seed": i}} for i in range(N)}}
TOKENIZER, CORPUS = {{"type": "bpe"}}, {{"source": "embedded"}}""")
)


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
        shaped, shaped_fn = os.path.join(tmp, "shaped"), os.path.join(tmp, "shaped_functions")
        for folder, template in ((shaped, SHAPED), (shaped_fn, SHAPED_FUNCTIONS)):
            os.makedirs(folder)
            with open(os.path.join(folder, "Snakefile"), "w") as fh:
                fh.write(template.format(n=n))
            for name in ("train.yaml", "train.py"):  # never run: the rule's conda env and script exist
                with open(os.path.join(folder, name), "w") as fh:
                    fh.write("dependencies: [python]\n" if name.endswith(".yaml") else "")
        cfg_path = os.path.join(tmp, "grid.yaml")
        with open(cfg_path, "w") as fh:
            yaml.safe_dump(grid_config(n_models, n_decays, n_seeds, os.path.join(tmp, "results")), fh)
        ours_args = ["--configfile", cfg_path, "--snakefile", os.path.join(ROOT, "Snakefile"), "--directory", ROOT]
        t_bare, t_shaped, t_fn, t_ours = [], [], [], []
        for _ in range(a.repeats):
            tb, jb = plan(["--cores", "1"], bare)
            ts, js = plan(["--cores", "1"], shaped)
            tf, jf = plan(["--cores", "1"], shaped_fn)
            to, jo = plan(["--cores", "1", *ours_args], tmp)
            t_bare.append(tb)
            t_shaped.append(ts)
            t_fn.append(tf)
            t_ours.append(to)
        shutil.rmtree(os.path.join(ROOT, ".snakemake", "locks"), ignore_errors=True)
    mb, ms, mf, mo = (statistics.median(t) for t in (t_bare, t_shaped, t_fn, t_ours))
    print(f"training grid points: {n}")
    print(f"bare expand() workflow:                     {jb} jobs, median {mb:.2f} s over {a.repeats} runs")
    print(f"bare, train-rule-shaped workflow:           {js} jobs, median {ms:.2f} s over {a.repeats} runs")
    print(f"the same with functions of the wildcards:   {jf} jobs, median {mf:.2f} s over {a.repeats} runs")
    print(f"tokenfair workflow:                         {jo} jobs, median {mo:.2f} s over {a.repeats} runs")
    print(f"ratio tokenfair / bare:                     {mo / mb:.2f}x")
    print(f"ratio tokenfair / same shape:               {mo / ms:.2f}x (target <= 1.2x)")
    print(f"ratio same shape with functions / without:  {mf / ms:.2f}x (what Snakemake spends on per-job functions)")
    print(f"ratio tokenfair / same shape with functions: {mo / mf:.2f}x (tokenfair's own planning code, more rules)")


if __name__ == "__main__":
    main()
