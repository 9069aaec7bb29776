"""Seed packs (resources.pack_seeds): which grid points one job trains together, the rule that makes their
runs, what such a job asks for, and that its runs equal separate runs (docs/slurm.md "Several runs per GPU")."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from conftest import REPO, minimal_config, run_snakemake, write_config
from tokenfair import config as tfconfig
from tokenfair import paths
from tokenfair import plan as tfplan
from tokenfair import resources as tfres

EMBEDDED = {"sotu": {"source": "embedded", "name": "sotu"}}
A0, A1 = "model~tiny-s/weight_decay~0.0", "model~tiny-s/weight_decay~1.0"


def plan_of(**extra) -> tfplan.Plan:
    cfg = minimal_config(EMBEDDED, **{"weight_decays": [0.0, 1.0], "seeds": [0, 1], **extra})
    return tfplan.build(tfconfig.resolve(cfg))


def estimate(gpu: bool = True, gpu_memory_gb: float = 30.0, hours: float = 1.0, checkpoint_gb: float = 1.0):
    return tfres.TrainEstimate(parameters=10**6, tokens=10**6, hours=hours, gpu_memory_gb=gpu_memory_gb if gpu else 0.0,
                               gpu=gpu, checkpoint_gb=checkpoint_gb, batch_size=16, seq_len=64)


def packs(plan, est, site=tfres.Site()):
    return tfres.seed_packs(plan, lambda point: est, site)


# --------------------------------------------------------------------------------------------------
# which points pack


def test_split_seed_is_the_last_segment():
    assert tfres.split_seed("model~m/weight_decay~0.1/dropout~0.1/seed~12") == ("model~m/weight_decay~0.1/dropout~0.1", "12")
    with pytest.raises(ValueError, match="seed~<s>"):
        tfres.split_seed("model~m/weight_decay~0.1")


def test_no_packs_unless_asked_for():
    assert packs(plan_of(), estimate()) == {}
    assert packs(plan_of(resources={"pack_seeds": False}), estimate(gpu=False)) == {}


def test_packs_on_the_cpu_or_with_the_gpu_memory_unknown():
    plan = plan_of(resources={"pack_seeds": True})
    both = {A0: ("0", "1"), A1: ("0", "1")}
    assert packs(plan, estimate(gpu=False)) == both
    assert packs(plan, estimate(gpu_memory_gb=500)) == both  # no GPU model: always
    # unless runs_per_gpu says one run per GPU
    assert packs(plan_of(resources={"pack_seeds": True, "runs_per_gpu": 1}), estimate()) == {}
    assert packs(plan_of(resources={"pack_seeds": True, "runs_per_gpu": 1}), estimate(gpu=False)) == both


def test_packs_where_the_seeds_fit_in_the_gpu_memory():
    two = plan_of(resources={"pack_seeds": True})
    three = plan_of(resources={"pack_seeds": True}, seeds=[0, 1, 2])
    # 30 GB a run: 0.8 x 80 GB holds floor(64 / 30) = 2 runs, 0.8 x 40 GB one
    assert packs(two, estimate(), tfres.Site(gpu_memory_gb=80)) == {A0: ("0", "1"), A1: ("0", "1")}
    assert packs(three, estimate(), tfres.Site(gpu_memory_gb=80)) == {}
    assert packs(two, estimate(), tfres.Site(gpu_model="a100")) == {}
    # an H200 (141 GB): floor(112.8 / 30) = 3
    assert packs(three, estimate(), tfres.Site(gpu_model="h200")) == {A0: ("0", "1", "2"), A1: ("0", "1", "2")}
    # the memory of one point decides for that point only
    big = {A0: estimate(gpu_memory_gb=40), A1: estimate(gpu_memory_gb=20)}
    assert tfres.seed_packs(two, lambda p: big[tfres.split_seed(p["run"])[0]], tfres.Site(gpu_memory_gb=80)) == {
        A1: ("0", "1")}


def test_packs_need_two_seeds_and_the_same_seeds_for_every_tokenizer():
    assert packs(plan_of(resources={"pack_seeds": True}, seeds=[3]), estimate(gpu=False)) == {}
    # seeds in numeric order, whatever the config's
    assert packs(plan_of(resources={"pack_seeds": True}, seeds=[10, 2]), estimate(gpu=False)) == {
        A0: ("2", "10"), A1: ("2", "10")}
    # decay 0.0 is trained on bpe with seeds 0, 1 and on bpe2 with seed 0, 1, 2: its path alone cannot say which
    # job makes seed~0, so it stays a train job per run; decay 1.0 (only on bpe) packs
    plan = plan_of(
        resources={"pack_seeds": True},
        tokenizers={"bpe": {"type": "bpe", "vocab_size": 300}, "bpe2": {"type": "bpe", "vocab_size": 400}},
        studies={"main": {"tokenizers": ["bpe"]},
                 "vocab": {"tokenizers": ["bpe2"], "weight_decays": [0.0], "seeds": [0, 1, 2]}},
    )
    assert packs(plan, estimate(gpu=False)) == {A1: ("0", "1")}
    # `only:` packs the selected seeds
    only = plan_of(resources={"pack_seeds": True}, seeds=[0, 1, 2], only={"seed": [1, 2]})
    assert packs(only, estimate(gpu=False)) == {A0: ("1", "2"), A1: ("1", "2")}
    assert packs(plan_of(resources={"pack_seeds": True}, only={"seed": [1]}), estimate(gpu=False)) == {}


def test_pack_rules_one_per_seed_tuple_matching_exactly_its_points():
    b = "model~tiny-xs/weight_decay~0.0/dropout~0.1"
    rules = tfres.pack_rules({A0: ("0", "1"), A1: ("0", "1"), b: ("0", "1", "2")})
    assert list(rules) == ["train_seeds_0_1", "train_seeds_0_1_2"]
    assert rules["train_seeds_0_1"][0] == ("0", "1") and rules["train_seeds_0_1_2"][0] == ("0", "1", "2")
    regex = rules["train_seeds_0_1"][1]
    assert re.fullmatch(regex, A0) and re.fullmatch(regex, A1)
    for other in (b, A0 + "/seed~0", "model~tiny-s/weight_decay~0.01", "model~tiny-s/weight_decay~0x0",
                  "model~tiny-s/weight_decay~1.0/dropout~0.1", "x" + A0):
        assert not re.fullmatch(f"(?:{regex})", other), other
    assert re.fullmatch(rules["train_seeds_0_1_2"][1], b) and not re.fullmatch(rules["train_seeds_0_1_2"][1], A0)
    assert tfres.pack_rules({}) == {}


# --------------------------------------------------------------------------------------------------
# what a pack asks for, what it costs, how its processes are set


class Wildcards:
    corpus, tok, point = "sotu", "bpe", A0


def test_pack_resources_sum_their_seeds_and_take_one_gpu():
    cfg = tfconfig.resolve(minimal_config(EMBEDDED, train={"threads": 4}))
    s = tfres.Site(gpu_partition="gpu", gpu_model="h100", slurm_account="proj")
    seeds = [estimate(), estimate()]
    res = tfres.pack_resources(cfg, s, lambda w: seeds)
    # host memory: 3000 + 2 x 1000 MB per seed, +50% a retry; time: max(15, 1.5 x 60 + 10) = 100 min per seed
    assert (res["mem_mb"](Wildcards, 1), res["mem_mb"](Wildcards, 2)) == (10000, 15000)
    assert (res["runtime"](Wildcards, 1), res["runtime"](Wildcards, 2)) == (200, 400)
    # SIGTERM 120 s + both checkpoints (2 GB at 200 MB/s: 10 s) before the limit
    assert res["slurm_extra"](Wildcards) == "--signal=TERM@130 --open-mode=append"
    assert res["gpu"] == 1 and res["gpu_model"] == "h100" and res["slurm_partition"] == "gpu"
    assert res["slurm_account"] == "proj" and res["cpus_per_task"] == 4 and "gres" not in res
    # a single run's train job asks for what a pack of one would
    one = tfres.train_resources(cfg, s, lambda w: seeds[0], lambda w: tfres.GpuShare())
    assert one["mem_mb"](Wildcards, 1) == 5000 and one["runtime"](Wildcards, 1) == 100
    assert one["slurm_extra"](Wildcards) == "--signal=TERM@125 --open-mode=append"
    # on the CPU: no GPU, the CPU partition
    cpu = tfres.pack_resources(tfconfig.resolve(minimal_config(EMBEDDED, train={"device": "cpu"})),
                               tfres.Site(gpu_partition="gpu", cpu_partition="cpu"), lambda w: seeds)
    assert "gpu" not in cpu and cpu["slurm_partition"] == "cpu"


def test_pack_cost_is_one_gpu_for_its_longest_seed():
    assert tfres.pack_cost([estimate(hours=1.0), estimate(hours=1.5)]) == (1, 1.5, 0.0)
    assert tfres.pack_cost([estimate(gpu=False, hours=1.0), estimate(gpu=False, hours=1.5)]) == (0, 0.0, 2.5)


def test_pack_settings_split_the_threads():
    def settings(threads, seed):
        return {"run": f"{A0}/seed~{seed}", "train": {"threads": threads, "seed": seed}}

    assert [s["train"] for s in tfres.pack_settings([settings(4, 0), settings(4, 1)])] == [
        {"threads": 2, "seed": 0}, {"threads": 2, "seed": 1}]
    assert [s["train"]["threads"] for s in tfres.pack_settings([settings(1, 0), settings(1, 1)])] == [1, 1]
    assert [s["train"]["threads"] for s in tfres.pack_settings([settings(8, s) for s in range(3)])] == [2, 2, 2]


def test_run_arguments_from_a_train_jobs_inputs():
    inputs = {"tokenizer": "t.json", "train": "train.npy", "validation": "v.npy", "ood-pydoc": "o.npy",
              "train_index": "train.index.parquet", "frequency": "f.parquet"}
    assert tfplan.run_arguments(inputs, {"type": "bpe"}, {"source": "embedded"}) == {
        "train_tokens": "train.npy", "eval_tokens": {"validation": "v.npy", "ood-pydoc": "o.npy"},
        "tokenizer_json": "t.json", "tokenizer_spec": {"type": "bpe"}, "train_frequency": "f.parquet",
        "corpus_spec": {"source": "embedded"}, "train_index": "train.index.parquet"}
    del inputs["train_index"]
    assert tfplan.run_arguments(inputs, {}, {})["train_index"] is None


# --------------------------------------------------------------------------------------------------
# the workflow: planning, and a pack trained for real (CPU)

CFG = {
    "results_dir": "res",
    "corpora": {"sotu": {"source": "embedded", "max_train_docs": 3, "lowercase": True}},
    "tokenizers": {"bpe": {"type": "bpe", "vocab_size": 300}},
    "models": ["tiny-xs"],
    "weight_decays": [0.0, 1.0],
    "seeds": [0, 1],
    "train": {"steps": 6, "batch_size": 4, "seq_len": 32, "warmup_steps": 1, "eval_every": 3, "eval_train_tokens": 512,
              "eval_val_tokens": 512, "checkpoint_every": 100},
    "resources": {"pack_seeds": True},
}
# a study with one seed: its point stays a train job
MIXED = {**CFG, "studies": {"half": {"weight_decays": [0.5], "seeds": [0]}}}


def job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:")[1].split("\n\n")[0]
    rows = [line.split() for line in table.strip().splitlines()[2:]]
    return {r[0]: int(r[1]) for r in rows if r[0] not in ("all", "total")}


def test_dry_run_plans_a_pack_per_point_and_counts_it_as_one_gpu(tmp_path):
    write_config(tmp_path, MIXED)
    res = run_snakemake(tmp_path, "-n", timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout + res.stderr
    counts = job_counts(out)
    assert counts["train_seeds_0_1"] == 2 and counts["train"] == 1
    assert re.search(r"run=model~tiny-xs/weight_decay~0\.5/seed~0\b", out)
    for wd in ("0.0", "1.0"):
        assert f"point=model~tiny-xs/weight_decay~{wd}" in out
    line = out.rstrip().splitlines()[-1]
    # 2 packs + 1 run: 3 GPUs (device auto, no GPU model)
    assert line.startswith("tokenfair plan: ") and "train 1, train_seeds_0_1 2" in line and "; 3 GPUs;" in line
    # (without pack_seeds: a train job per run, tests/test_slurm.py's dry runs)


@pytest.mark.heavy
def test_a_pack_trains_its_seeds_in_one_job_as_separate_runs_would(tmp_path):
    write_config(tmp_path, {**CFG, "weight_decays": [1.0]})
    point = "model~tiny-xs/weight_decay~1.0"
    res = run_snakemake(tmp_path, "--until", "train_seeds_0_1", timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    assert job_counts(res.stderr)["train_seeds_0_1"] == 1 and "train" not in job_counts(res.stderr)
    logs = tmp_path / "res" / "logs" / "train_seeds" / "sotu" / "tok~bpe"
    assert (logs / f"{point}.log").is_file()
    packed = {}
    for seed in (0, 1):
        assert "done in" in (logs / point / f"seed~{seed}.log").read_text()
        folder = tmp_path / paths.path("run", "res", corpus="sotu", tok="bpe", run=f"{point}/seed~{seed}")
        assert not (folder / paths.RUN_CHECKPOINT).exists()
        packed[seed] = pq.read_table(folder / paths.RUN_PER_TOKEN)
    assert not packed[0].equals(packed[1])  # two seeds, two runs
    # the same runs one job each (the data kept): the same numbers
    write_config(tmp_path, {**CFG, "weight_decays": [1.0], "resources": {"pack_seeds": False}})
    res = run_snakemake(tmp_path, "--until", "train", "--forcerun", "train", timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    assert job_counts(res.stderr) == {"train": 2}
    for seed in (0, 1):
        folder = tmp_path / paths.path("run", "res", corpus="sotu", tok="bpe", run=f"{point}/seed~{seed}")
        assert pq.read_table(folder / paths.RUN_PER_TOKEN).equals(packed[seed]), seed


@pytest.mark.heavy
def test_a_preempted_pack_checkpoints_every_seed_and_the_rerun_resumes_them(tmp_path):
    """SIGTERM to the pack job (as SLURM sends it): both seeds checkpoint, the job fails with 143 and no run
    folder looks complete; the rerun resumes both seeds from their checkpoints."""
    train = {**CFG["train"], "steps": 1200, "eval_every": 1000, "checkpoint_every": 20}
    write_config(tmp_path, {**CFG, "weight_decays": [1.0], "train": train})
    point = "model~tiny-xs/weight_decay~1.0"
    folders = [tmp_path / paths.path("run", "res", corpus="sotu", tok="bpe", run=f"{point}/seed~{s}") for s in (0, 1)]
    logs = tmp_path / "res" / "logs" / "train_seeds" / "sotu" / "tok~bpe"
    job_log = logs / f"{point}.log"
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
           "--cores", "2", "--until", "train_seeds_0_1"]
    with open(tmp_path / "first.out", "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not all((f / paths.RUN_CHECKPOINT / "checkpoint.pt").exists() for f in folders):
        assert proc.poll() is None, (tmp_path / "first.out").read_text()[-3000:]
        assert time.monotonic() < deadline, "no checkpoints within 300 s"
        time.sleep(0.05)
    # the job's process: the parent of the seeds' processes (their pids are in its log)
    child = int(re.search(r"seed 0: pid (\d+)", job_log.read_text()).group(1))
    with open(f"/proc/{child}/stat") as fh:
        parent = int(fh.read().rsplit(")", 1)[1].split()[1])
    os.kill(parent, signal.SIGTERM)
    assert proc.wait(timeout=300) != 0
    assert "seeds 0, 1 stopped by SIGTERM" in job_log.read_text()
    for f in folders:
        assert (f / paths.RUN_CHECKPOINT / "checkpoint.pt").exists() and not (f / paths.RUN_PER_TOKEN).exists()
    res = run_snakemake(tmp_path, "--until", "train_seeds_0_1", timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    for seed, f in enumerate(folders):
        assert re.search(r"resumed from \S+ at step [1-9]", (logs / point / f"seed~{seed}.log").read_text())
        assert (f / paths.RUN_PER_TOKEN).exists() and not (f / paths.RUN_CHECKPOINT).exists()
