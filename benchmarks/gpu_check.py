"""One GPU check of the train stage: the planner's estimates against measurement, and a smoke test of the job.

Step 1, here (needs the package's config stack): write what the GPU run needs into one folder:

    python benchmarks/gpu_check.py prepare --out gpu-check            # after `snakemake` made results/

  - plan.json: for each model of configs/paper.yaml, its run settings (decay 0.1, seed 0) and the planner's
    estimate (tokenfair.resources.estimate_train: hours of a 10k-step run, GPU memory of a step);
  - the default study's real-text inputs (tokenizer.json, train / validation shards, train frequency table).

Step 2, on a machine with a CUDA GPU (torch, transformers, tokenizers, pyarrow; no Snakemake needed):

    python benchmarks/gpu_check.py run --out gpu-check

  - paper models: tokens/s, step time, MFU and peak memory of tokenfair.train.train_step at the paper's batch
    and sequence length (benchmarks/gpu_throughput.py), next to the estimate; the measured hours of 10k steps
    (training only) next to the estimate;
  - smoke: tokenfair.train.run (the train rule's function) on CUDA on the default's real text, tiny-m, 800
    steps, once plain at decay 1.0 and once with the new axes at once (frequency-aware decay alpha 0.5,
    z-loss, dropout, label smoothing, tied embeddings); each must finish with finite losses and every output;
  - compiled: openelm-270m, qwen2-0.5b and openelm-3b as in "paper models", with torch.compile (the loss is
    the chunked one in both, tokenfair.losses);
  - shared: 1, 2, 4 and 8 processes training openelm-270m at once on the one GPU (what GPU shards do,
    docs/slurm.md): each process's and the summed tokens/s and MFU, timed over the same window;
  - mini: `snakemake --configfile configs/paper-gpu-mini.yaml` (needs Snakemake; `--skip-mini` leaves it out),
    its wall time against the planner's GPU-hours.

    python benchmarks/gpu_check.py run --out gpu-check --dry-run   # anywhere: what `run` would measure
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

DEFAULT_INPUTS = {"tokenizer.json": "sotu/tok~bpe4k/tokenizer.json", "train.npy": "sotu/tok~bpe4k/tokens/train.npy",
                  "validation.npy": "sotu/tok~bpe4k/tokens/validation.npy",
                  "frequency.parquet": "sotu/tok~bpe4k/frequency/train.parquet"}


def prepare(out: Path, results: Path) -> None:
    from tokenfair import config as C
    from tokenfair import plan as P
    from tokenfair import resources as R

    out.mkdir(parents=True, exist_ok=True)
    cfg = P.build(C.load(str(REPO / "configs" / "paper.yaml")))
    site = R.site(cfg)
    plan = {"gpu_model": site.gpu_model, "models": {}}
    for p in cfg.points:
        if p["weight_decay"] != 0.1 or p["seed"] != 0 or p["corpus"] != "imdb" or p["model"] in plan["models"]:
            continue
        s = cfg.settings(p)
        est = R.estimate_train(s, R.vocab_size(cfg, p["tok"]), site)
        plan["models"][p["model"]] = {"settings": s, "vocab": R.vocab_size(cfg, p["tok"]),
                                      "estimate": {"hours": est.hours, "gpu_memory_gb": est.gpu_memory_gb,
                                                   "parameters": est.parameters}}
    local = P.build(C.load(str(REPO / "config.yaml")))
    plan["smoke"] = local.settings(next(p for p in local.points if p["model"] == "tiny-m" and p["weight_decay"] == 1.0))
    (out / "plan.json").write_text(json.dumps(plan, indent=1))
    for name, rel in DEFAULT_INPUTS.items():
        shutil.copy(results / rel, out / name)
    print(f"wrote {out}: plan.json and {', '.join(DEFAULT_INPUTS)}")


def paper_models(plan: dict) -> list[dict]:
    import torch

    import gpu_throughput as G

    rows = []
    for name, m in plan["models"].items():
        t = m["settings"]["train"]
        args = G.parse_args(["--batch-size", str(t["batch_size"]), "--seq-len", str(t["seq_len"]),
                             "--vocab", str(m["vocab"]), "--steps", "20", "--warmup", "5"])
        r = G.measure(m["settings"]["model"]["preset"], args)
        hours = t["steps"] * r["step_ms"] / 1000 / 3600
        rows.append({**r, "model": name, "estimate_hours_10k": m["estimate"]["hours"], "measured_train_hours_10k": hours,
                     "estimate_gpu_memory_gb": m["estimate"]["gpu_memory_gb"]})
        print(f"{name}: {r['tokens_per_s']:,.0f} tokens/s, {r['step_ms']:.1f} ms/step, MFU {100 * r['mfu']:.1f}%, "
              f"peak {r['peak_memory_gb']:.1f} GB (estimate {m['estimate']['gpu_memory_gb']:.1f} GB); "
              f"10k steps {hours:.2f} h of training (estimate {m['estimate']['hours']:.2f} h with evaluation)",
              flush=True)
        torch.cuda.empty_cache()
    return rows


COMPILED_MODELS = ("openelm-270m", "qwen2-0.5b", "openelm-3b")  # paper_models has them without compile
SHARED_MODEL, SHARED_PROCESSES = "openelm-270m", (1, 2, 4, 8)
MINI = "configs/paper-gpu-mini.yaml"


def throughput_args(m: dict, steps: int, compile_: bool = False, start_at: float | None = None) -> list[str]:
    """gpu_throughput.py's arguments for a paper model at its plan's shapes."""
    t = m["settings"]["train"]
    args = ["--batch-size", str(t["batch_size"]), "--seq-len", str(t["seq_len"]), "--vocab", str(m["vocab"]),
            "--steps", str(steps), "--warmup", "5"]
    return args + (["--compile"] if compile_ else []) + (["--start-at", str(start_at)] if start_at else [])


def measurements(plan: dict) -> dict:
    """What `run` measures besides the smoke test, as plain data (printed by --dry-run)."""
    return {
        "compiled": [{"model": name, "args": throughput_args(plan["models"][name], 20, compile_=True)}
                     for name in COMPILED_MODELS],
        "shared": [{"model": SHARED_MODEL, "processes": k, "args": throughput_args(plan["models"][SHARED_MODEL], 100)}
                   for k in SHARED_PROCESSES],
        "mini": {"command": [sys.executable, "-m", "snakemake", "--configfile", MINI, "--cores", "all"]},
    }


def compiled(plan: dict) -> list[dict]:
    """openelm-270m, qwen2-0.5b, openelm-3b at the paper's shapes with torch.compile."""
    import torch

    import gpu_throughput as G

    rows = []
    for m in measurements(plan)["compiled"]:
        r = G.measure(plan["models"][m["model"]]["settings"]["model"]["preset"], G.parse_args(m["args"]))
        rows.append({**r, "model": m["model"]})
        print(f"{m['model']} compiled: {r['tokens_per_s']:,.0f} tokens/s, MFU {100 * r['mfu']:.1f}%, "
              f"peak {r['peak_memory_gb']:.1f} GB", flush=True)
        torch.cuda.empty_cache()
    return rows


def shared(plan: dict) -> list[dict]:
    """k processes of gpu_throughput.py on the one GPU, timed over the same window (--start-at)."""
    rows = []
    for m in measurements(plan)["shared"]:
        start = time.time() + 90  # model building, warm-up and CUDA start-up of every process first
        args = throughput_args(plan["models"][m["model"]], 100, start_at=start)
        cmd = [sys.executable, str(REPO / "benchmarks" / "gpu_throughput.py"), "--models",
               plan["models"][m["model"]]["settings"]["model"]["preset"], *args]
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(m["processes"])]
        each = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
        row = {**m, "tokens_per_s_each": [r["tokens_per_s"] for r in each],
               "tokens_per_s_total": sum(r["tokens_per_s"] for r in each), "mfu_total": sum(r["mfu"] for r in each),
               "peak_memory_gb_each": max(r["peak_memory_gb"] for r in each)}
        print(f"{m['processes']} x {m['model']} on one GPU: {row['tokens_per_s_total']:,.0f} tokens/s in all, "
              f"MFU {100 * row['mfu_total']:.1f}%", flush=True)
        rows.append(row)
    return rows


def mini(plan: dict, out: Path) -> dict:
    """configs/paper-gpu-mini.yaml end to end on this GPU machine (its own results_dir)."""
    m = measurements(plan)["mini"]
    t0 = time.perf_counter()
    res = subprocess.run(m["command"], cwd=REPO, capture_output=True, text=True)
    (out / "mini.log").write_text(res.stdout + res.stderr)
    row = {**m, "returncode": res.returncode, "wall_s": time.perf_counter() - t0}
    print(f"paper-gpu-mini: exit {res.returncode} after {row['wall_s']:.0f} s (log {out / 'mini.log'})", flush=True)
    return row


def smoke(plan: dict, out: Path) -> list[dict]:
    import pyarrow.parquet as pq

    from tokenfair import paths
    from tokenfair import train as tt

    data = {"train_tokens": str(out / "train.npy"), "eval_tokens": {"validation": str(out / "validation.npy")},
            "tokenizer_json": str(out / "tokenizer.json")}
    base = plan["smoke"]
    variants = {
        "plain": base,
        "axes": {**base, "run": base["run"] + "+axes",
                 "train": {**base["train"], "embedding_decay_alpha": 0.5, "z_loss": 1e-4, "dropout": 0.1,
                           "label_smoothing": 0.1},
                 "model": {**base["model"], "tie_word_embeddings": True}},
    }
    rows = []
    for name, settings in variants.items():
        settings = {**settings, "train": {**settings["train"], "device": "cuda", "precision": "auto"}}
        run_dir = out / "smoke" / name
        shutil.rmtree(run_dir, ignore_errors=True)
        t0 = time.perf_counter()
        info = tt.run(settings, out_dir=str(run_dir), train_frequency=str(out / "frequency.parquet"), **data)
        wall = time.perf_counter() - t0
        files = sorted(os.listdir(run_dir))
        assert files == sorted([paths.RUN_PER_TOKEN, paths.RUN_LOG, paths.RUN_JSON, paths.RUN_NORMS, paths.RUN_MODEL,
                                paths.RUN_TENSORBOARD]), files
        n = pq.read_table(run_dir / paths.RUN_PER_TOKEN).num_rows
        row = {"variant": name, "wall_s": wall, "device": info["device"], "precision": info["precision"],
               "final": info["final"], "tied": info["tied_embeddings"], "row_decay": info["row_decay_parameters"],
               "per_token_rows": n, "timings": info["timings"]}
        print(f"smoke {name}: {wall:.1f} s on {info['device']} ({info['precision']}); final "
              + ", ".join(f"{s} {v['loss']:.4f}" for s, v in info["final"].items()), flush=True)
        rows.append(row)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("step", choices=["prepare", "run"])
    ap.add_argument("--out", default="gpu-check")
    ap.add_argument("--results", default="results", help="prepare: the default study's results_dir")
    ap.add_argument("--report", default=None, help="run: write the JSON report here")
    ap.add_argument("--dry-run", action="store_true", help="run: print what it would measure, needs no GPU")
    ap.add_argument("--skip-mini", action="store_true", help="run: leave out configs/paper-gpu-mini.yaml")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.step == "prepare":
        prepare(out, Path(args.results))
        return 0
    plan = json.loads((out / "plan.json").read_text())
    if args.dry_run:
        print(json.dumps(measurements(plan), indent=1))
        return 0
    import torch

    if not torch.cuda.is_available():
        print(f"gpu_check.py run needs a CUDA GPU; this torch ({torch.__version__}) sees none", file=sys.stderr)
        return 2
    report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "smoke": smoke(plan, out)}
    report["paper_models"] = paper_models(plan)
    report["compiled"] = compiled(plan)
    report["shared"] = shared(plan)
    if not args.skip_mini:
        report["mini"] = mini(plan, out)
    text = json.dumps(report, indent=1, default=str)
    if args.report:
        Path(args.report).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
