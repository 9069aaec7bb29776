"""`snakemake --profile slurm`: planning (no cluster needed), and the grid on a real one-node SLURM cluster
(scripts/slurm-local.sh: slurmctld + slurmd on this machine, two fake GPUs) compared with a local run;
preemption (`scontrol requeue`) and the time-limit signal (SIGTERM to the job step) resuming from `ckpt/`.

Snakemake runs as researchers type it: in the repository root (so `--profile slurm` finds ./slurm and the
workflow profile applies), with `--directory` pointing at a temporary folder.

The cluster tests are marked `slurm`. Without SLURM (or without root) they skip with the reason; with
TOKENFAIR_REQUIRE_SLURM=1 (CI) that is a failure instead."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import REPO, write_config
from tokenfair import config as tfconfig
from tokenfair import paths
from tokenfair import plan as tfplan
from tokenfair.errors import ConfigError

REQUIRE_SLURM = os.environ.get("TOKENFAIR_REQUIRE_SLURM") == "1"
CLUSTER_SCRIPT = REPO / "scripts" / "slurm-local.sh"
SLURM_COMMANDS = ("sbatch", "squeue", "sinfo", "scontrol", "sacct", "srun", "scancel")

# The default's grid shape (models x weight decays x seeds) at a few steps.
CONFIG = {
    "results_dir": "results",
    "corpora": {"sotu": {"source": "embedded", "name": "sotu", "lowercase": True, "max_train_docs": 3}},
    "tokenizers": {"bpe": {"type": "bpe", "vocab_size": 300}},
    "models": {"tiny-xs": "tiny-xs", "tiny-s": "tiny-s"},
    "weight_decays": [0.0, 1.0],
    "seeds": [0],
    "train": {
        "steps": 20,
        "batch_size": 4,
        "seq_len": 32,
        "eval_every": 10,
        "checkpoint_every": 10,
        "eval_train_tokens": 2048,
        "eval_val_tokens": 2048,
    },
}
RUNS = [p["run"] for p in tfplan.build(tfconfig.resolve(CONFIG)).points]
SITE_ENV = {"TOKENFAIR_GPU_PARTITION": "gpu", "TOKENFAIR_CPU_PARTITION": "cpu"}
STATUS = ["--slurm-init-seconds-before-status-checks", "2"]  # poll soon: the test jobs take seconds


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENFAIR_") and k != "SLURM_CONF"}
    env.update(extra)
    return env


def snakemake(workdir: Path, *args, env: dict | None = None, timeout: int = 600, output: Path | None = None):
    """Snakemake in the repository root on `workdir`, stderr merged into stdout. Waits and returns the
    CompletedProcess; with `output`, returns the running Popen writing into that file instead."""
    cmd = [sys.executable, "-m", "snakemake", "--directory", str(workdir), *args]
    kw = dict(cwd=REPO, env=env or clean_env(), text=True, stderr=subprocess.STDOUT)
    if output is not None:
        with open(output, "w") as fh:
            return subprocess.Popen(cmd, stdout=fh, **kw)
    return subprocess.run(cmd, stdout=subprocess.PIPE, timeout=timeout, **kw)


def run_folder(work: Path, run: str) -> Path:
    return work / paths.path("run", "results", corpus="sotu", tok="bpe", run=run)


# --------------------------------------------------------------------------------------------------
# `only:` (tokenfair.plan.select)


def selected(config: dict) -> list[dict]:
    return tfplan.build(tfconfig.resolve(config)).selected


def test_only_selects_grid_points_by_axis_values():
    assert [p["run"] for p in selected({**CONFIG, "only": {"model": ["tiny-s"], "weight_decay": [1]}})] == [
        "model~tiny-s/weight_decay~1.0/seed~0"]
    for spelled in ("0.0", "0", 0):  # --config hands values over as strings
        assert [p["model"] for p in selected({**CONFIG, "only": {"weight_decay": [spelled]}})] == ["tiny-xs", "tiny-s"]
    assert len(selected(CONFIG)) == len(RUNS) == 4


@pytest.mark.parametrize(
    "only,message",
    [
        ({"modle": ["tiny-s"]}, "config key only.modle: not a grid axis"),
        ({"model": ["tiny-l"]}, "config key only.model: 'tiny-l' is not a value of the grid (values: tiny-xs, tiny-s)"),
        ({"seed": [True]}, "config key only.seed: True is not a value"),
    ],
)
def test_only_names_an_unknown_axis_or_value(only, message):
    with pytest.raises(ConfigError) as err:
        selected({**CONFIG, "only": only})
    assert str(err.value).startswith(message)


# --------------------------------------------------------------------------------------------------
# planning with the profile: no cluster needed


@pytest.fixture(scope="module")
def plan_dir(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("plan")
    write_config(work, CONFIG)
    return work


def job_stats(output: str) -> dict[str, int]:
    """Snakemake's own "Job stats" table of a dry run: rule -> job count (`all` and the total left out)."""
    table = output.split("Job stats:")[1].split("\n\n")[0]
    rows = [l.split() for l in table.strip().splitlines()[2:]]
    return {r[0]: int(r[1]) for r in rows if r[0] not in ("all", "total")}


def test_dry_run_prints_the_grid_then_one_summary_line(plan_dir):
    res = snakemake(plan_dir, "--profile", "slurm", "-n")
    assert res.returncode == 0, res.stdout[-3000:]
    lines = res.stdout.rstrip().splitlines()
    stats = job_stats(res.stdout)
    assert stats["train"] == len(RUNS) and {"prepare", "tokenizer", "tokenize", "count"} <= set(stats)
    jobs = ", ".join(f"{rule} {n}" for rule, n in sorted(stats.items()))
    assert re.fullmatch(
        re.escape(f"tokenfair plan: {sum(stats.values())} jobs ({jobs}); {len(RUNS)} GPUs; estimated ")
        + r"\d+\.\d\d GPU-hours \(unset: costed as 312 TFLOP/s peak\)",
        lines[-1],
    ), lines[-1]
    listed = [l for l in lines if l.startswith("    wildcards: corpus=sotu, tok=bpe, run=")]
    assert sorted(l.split("run=")[1] for l in listed) == sorted(RUNS)
    assert lines.index(listed[-1]) < len(lines) - 1
    assert "Using profiles slurm and workflow specific profile profiles/default" in res.stdout


def test_dry_run_of_one_model_size_or_one_decay(plan_dir):
    res = snakemake(plan_dir, "--profile", "slurm", "-n", "--config", "only={model: [tiny-s]}")
    assert res.returncode == 0, res.stdout[-3000:]
    runs = re.findall(r"run=(\S+)", res.stdout)
    assert sorted(set(runs)) == ["model~tiny-s/weight_decay~0.0/seed~0", "model~tiny-s/weight_decay~1.0/seed~0"]
    assert re.search(r" train 2\b.*\); 2 GPUs;", res.stdout.splitlines()[-1])
    res = snakemake(plan_dir, "-n", "--config", "only={weight_decay: [1.0]}")
    assert sorted(set(re.findall(r"run=(\S+)", res.stdout))) == [
        "model~tiny-s/weight_decay~1.0/seed~0", "model~tiny-xs/weight_decay~1.0/seed~0"
    ]
    res = snakemake(plan_dir, "-n", "--config", "only={weight_decay: [0.5]}")
    assert res.returncode != 0 and "config key only.weight_decay: '0.5' is not a value of the grid" in res.stdout


def job_resources(output: str) -> dict[str, list[str]]:
    """rule name -> the `resources:` lines of its jobs in a dry run's listing."""
    out: dict[str, list[str]] = {}
    rule = None
    for line in output.splitlines():
        if line.startswith(("rule ", "localrule ")):
            rule = line.split()[1].rstrip(":")
        elif line.startswith("    resources: ") and rule not in (None, "all"):
            out.setdefault(rule, []).append(line)
    return out


def test_resources_cpu_rules_to_the_cpu_partition_train_to_one_gpu(plan_dir):
    env = clean_env(**SITE_ENV, TOKENFAIR_GPU_MODEL="a100", TOKENFAIR_SLURM_ACCOUNT="proj1")
    res = snakemake(plan_dir, "--profile", "slurm", "-n", env=env)
    assert res.returncode == 0, res.stdout[-3000:]
    resources = job_resources(res.stdout)
    assert set(resources) == set(job_stats(res.stdout)) and "train" in resources
    for rule, lines in resources.items():
        for line in lines:
            assert "slurm_account=proj1" in line and "runtime=" in line and "mem_mb=" in line
            if rule == "train":
                assert "gpu=1" in line and "gpu_model=a100" in line and "slurm_partition=gpu" in line
                assert re.search(r"slurm_extra=--signal=TERM@\d+ --open-mode=append", line)
            else:
                assert "slurm_partition=cpu" in line and "gpu" not in line.replace("slurm_partition=gpu", "")
    assert res.stdout.splitlines()[-1].endswith("GPU-hours (a100)")


def test_a_model_too_big_for_the_gpu_is_a_planning_error(tmp_path):
    write_config(tmp_path, {**CONFIG, "models": {"big": "qwen2-1.5b"}, "train": {"batch_size": 16, "seq_len": 2048}})
    res = snakemake(tmp_path, "--profile", "slurm", "-n", env=clean_env(TOKENFAIR_GPU_MODEL="v100"))
    assert res.returncode != 0
    assert "config key models.big: needs about" in res.stdout and "16 GB of a GPU here" in res.stdout
    assert "Traceback" not in res.stdout
    res = snakemake(tmp_path, "--profile", "slurm", "-n", env=clean_env(TOKENFAIR_GPU_MODEL="h200"))
    assert res.returncode == 0, res.stdout[-3000:]


def test_profile_without_slurm_on_the_path_is_one_clear_message(tmp_path):
    """A PATH with everything of this machine's PATH except SLURM's commands."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for folder in os.environ["PATH"].split(os.pathsep):
        if os.path.isdir(folder):
            for name in os.listdir(folder):
                if name not in SLURM_COMMANDS and not (bin_dir / name).exists():
                    (bin_dir / name).symlink_to(os.path.join(folder, name))
    work = tmp_path / "work"
    write_config(work, CONFIG)
    env = clean_env(PATH=str(bin_dir))
    res = snakemake(work, "--profile", "slurm", env=env, timeout=300)
    assert res.returncode != 0
    assert "SLURM's sbatch, squeue, sinfo not found on the PATH" in res.stdout
    assert "Traceback" not in res.stdout and "Job submission failed" not in res.stdout
    assert not (work / "results").exists()  # nothing ran
    res = snakemake(work, "--profile", "slurm", "-n", env=env)  # planning still works, no lock left behind
    assert res.returncode == 0 and res.stdout.splitlines()[-1].startswith("tokenfair plan: ")


# --------------------------------------------------------------------------------------------------
# the real cluster


def _no_slurm_reason() -> str | None:
    missing = [c for c in ("slurmctld", "slurmd", "munged") if not (shutil.which(c) or os.path.exists(f"/usr/sbin/{c}"))]
    missing += [c for c in ("sbatch", "squeue", "scontrol") if not shutil.which(c)]
    if missing:
        return f"SLURM is not installed ({', '.join(missing)} missing; apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "the local SLURM cluster needs root (slurmd runs jobs as their users)"
    return None


@pytest.fixture(scope="session")
def slurm_cluster():
    """The one-node cluster of scripts/slurm-local.sh (state in $TOKENFAIR_SLURM_DIR or the script's
    default): started here unless already up, and then stopped again."""
    reason = _no_slurm_reason()
    if reason:
        if REQUIRE_SLURM:
            pytest.fail(f"TOKENFAIR_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)
    up = subprocess.run([str(CLUSTER_SCRIPT), "status"], capture_output=True, text=True).returncode == 0
    if not up:
        res = subprocess.run([str(CLUSTER_SCRIPT), "start"], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, f"scripts/slurm-local.sh start failed:\n{res.stdout}\n{res.stderr}"
    yield
    if not up:
        subprocess.run([str(CLUSTER_SCRIPT), "stop"], capture_output=True, text=True, timeout=120)


def slurm_jobs(run_id: str) -> list[dict]:
    """SLURM's own record (scontrol) of every job a snakemake run submitted (job name = its run ID)."""
    out = subprocess.run(["scontrol", "-o", "show", "job"], capture_output=True, text=True, check=True).stdout
    jobs = []
    for line in out.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if fields.get("JobName") == run_id:
            jobs.append(fields)
    return sorted(jobs, key=lambda j: int(j["JobId"]))


def run_id(output: str) -> str:
    return re.search(r"SLURM run ID: (\S+)", output).group(1)


def sbatch_calls(output: str, rule: str) -> list[str]:
    return [l for l in output.splitlines() if "sbatch call: " in l and f"--comment rule_{rule}_" in l.replace("'", "")]


@pytest.fixture(scope="module")
def grid_runs(slurm_cluster, tmp_path_factory):
    """The test grid run twice: on SLURM (--profile slurm) and locally, at the same time."""
    local = tmp_path_factory.mktemp("local")
    write_config(local, CONFIG)
    local_proc = snakemake(local, output=local / "snakemake.out")
    work = tmp_path_factory.mktemp("slurm")
    write_config(work, CONFIG)
    t0 = time.perf_counter()
    res = snakemake(work, "--profile", "slurm", *STATUS, "--verbose", env=clean_env(**SITE_ENV), timeout=900)
    seconds = time.perf_counter() - t0
    local_proc.wait(timeout=600)
    assert res.returncode == 0, res.stdout[-6000:]
    assert local_proc.returncode == 0, (local / "snakemake.out").read_text()[-3000:]
    print(f"grid on SLURM: {seconds:.0f} s")
    return work, local, res.stdout


@pytest.mark.slurm
def test_every_train_job_went_through_sbatch_with_one_gpu(grid_runs):
    work, _, output = grid_runs
    calls = sbatch_calls(output, "train")
    assert len(calls) == len(RUNS)
    for call in calls:
        assert " --gpus=1 " in call and " -p gpu " in call and re.search(r" --signal=TERM@\d+ ", call)
        assert " --requeue " in call and " --cpus-per-task=1 " in call
    others = [l for l in output.splitlines() if "sbatch call: " in l and l not in calls]
    assert len(others) >= 6  # prepare, tokenizer, tokenize x 2, count x 2, ...
    for call in others:
        assert " -p cpu " in call and "--gpus" not in call and "--gres" not in call
    # SLURM's record of the same jobs: every one finished; train on the gpu partition with a GPU
    jobs = slurm_jobs(run_id(output))
    assert len(jobs) == len(calls) + len(others) and all(j["JobState"] == "COMPLETED" for j in jobs)
    train = [j for j in jobs if j["Comment"].startswith("rule_train_")]
    assert len(train) == len(RUNS)
    assert all(j["Partition"] == "gpu" and j["TresPerJob"] == "gres:gpu:1" for j in train)
    assert all(j["Partition"] == "cpu" and "gpu" not in j.get("TresPerJob", "") for j in jobs if j not in train)
    for run in RUNS:
        assert (run_folder(work, run) / paths.RUN_PER_TOKEN).is_file()


def assert_same_per_token(work, local, runs=RUNS):
    """Every run of `runs` wrote a non-empty per_token.parquet equal to the local run's."""
    for run in runs:
        a = pq.read_table(run_folder(work, run) / paths.RUN_PER_TOKEN)
        b = pq.read_table(run_folder(local, run) / paths.RUN_PER_TOKEN)
        assert a.num_rows > 0 and a.equals(b), run


@pytest.mark.slurm
def test_slurm_results_equal_a_local_run(grid_runs):
    work, local, _ = grid_runs
    assert_same_per_token(work, local)
    freq = paths.path("frequency", "results", corpus="sotu", tok="bpe", split="train")
    assert pq.read_table(work / freq).to_pandas().equals(pq.read_table(local / freq).to_pandas())  # NaN == NaN


@pytest.fixture(scope="module")
def shared_runs(grid_runs, tmp_path_factory):
    """The test grid with two runs per GPU: the local cluster splits each fake GPU into 4 shards
    (resources.gpu_shards: 4), so every train job asks for 2 of them."""
    work = tmp_path_factory.mktemp("shared")
    write_config(work, {**CONFIG, "resources": {"gpu_shards": 4, "runs_per_gpu": 2}})
    res = snakemake(work, "--profile", "slurm", *STATUS, "--verbose", env=clean_env(**SITE_ENV), timeout=900)
    assert res.returncode == 0, res.stdout[-6000:]
    return work, grid_runs[1], res.stdout


def _most_at_once(jobs: list[dict]) -> int:
    """The most of these SLURM jobs running at the same time (StartTime / EndTime, whole seconds)."""
    events = sorted((t, d) for j in jobs for t, d in ((j["StartTime"], 1), (j["EndTime"], -1)))  # ends first
    most = now = 0
    for _, d in events:
        now += d
        most = max(most, now)
    return most


@pytest.mark.slurm
def test_runs_sharing_a_gpu_run_side_by_side_and_equal_separate_runs(shared_runs):
    work, local, output = shared_runs
    calls = sbatch_calls(output, "train")
    assert len(calls) == len(RUNS)
    for call in calls:
        assert " --gres=shard:2 " in call and "--gpus" not in call and " -p gpu " in call
    jobs = [j for j in slurm_jobs(run_id(output)) if j["Comment"].startswith("rule_train_")]
    assert len(jobs) == len(RUNS) and all(j["JobState"] == "COMPLETED" for j in jobs)
    assert all(j["TresPerNode"] == "gres:shard:2" for j in jobs)
    # 4 runs on the cluster's 2 GPUs: three or more at once means two of them on one GPU
    assert _most_at_once(jobs) >= 3, [(j["StartTime"], j["EndTime"]) for j in jobs]
    assert_same_per_token(work, local)


@pytest.fixture(scope="module")
def packed_runs(grid_runs, tmp_path_factory):
    """The test grid with seeds 0 and 1 and resources.pack_seeds: each grid point's two seeds trained by one
    job on one (fake) GPU. Beside it, seed 1's runs trained locally one job each (in grid_runs' local folder,
    which holds seed 0's), for the comparison."""
    local = grid_runs[1]
    seed1 = write_config(local, {**CONFIG, "seeds": [0, 1], "only": {"seed": [1]}}, name="seed1.yaml")
    local_proc = snakemake(local, "--configfile", str(seed1), output=local / "seed1.out")
    work = tmp_path_factory.mktemp("packed")
    write_config(work, {**CONFIG, "seeds": [0, 1], "resources": {"pack_seeds": True}})
    res = snakemake(work, "--profile", "slurm", *STATUS, "--verbose", env=clean_env(**SITE_ENV), timeout=900)
    local_proc.wait(timeout=600)
    assert res.returncode == 0, res.stdout[-6000:]
    assert local_proc.returncode == 0, (local / "seed1.out").read_text()[-3000:]
    return work, local, res.stdout


@pytest.mark.slurm
def test_seed_packs_train_each_points_seeds_in_one_gpu_job(packed_runs):
    work, local, output = packed_runs
    points = sorted({run.rsplit("/", 1)[0] for run in RUNS})
    calls = sbatch_calls(output, "train_seeds_0_1")
    assert len(calls) == len(points) == 4
    assert not [c for c in output.splitlines() if "sbatch call: " in c and "rule_train_wildcards_" in c]
    for call in calls:
        assert " --gpus=1 " in call and " -p gpu " in call and re.search(r" --signal=TERM@\d+ ", call)
        assert " --requeue " in call and " --cpus-per-task=1 " in call
    # SLURM's record: one job per point, each named by its point, one whole GPU, finished
    jobs = [j for j in slurm_jobs(run_id(output)) if j["Comment"].startswith("rule_train_seeds_0_1_")]
    assert sorted(j["Comment"] for j in jobs) == sorted(
        "rule_train_seeds_0_1_wildcards_sotu_bpe_" + p.replace("/", "_") for p in points)
    assert all(j["JobState"] == "COMPLETED" and j["TresPerJob"] == "gres:gpu:1" for j in jobs)
    # every seed's run finished and equals its separate run
    seed1 = [f"{p}/seed~1" for p in points]
    for run in RUNS + seed1:
        log = work / "results" / "logs" / "train_seeds" / "sotu" / "tok~bpe" / f"{run}.log"
        assert "done in" in log.read_text()
        assert not (run_folder(work, run) / paths.RUN_CHECKPOINT).exists()
    assert_same_per_token(work, local, RUNS + seed1)
    assert not pq.read_table(run_folder(work, seed1[0]) / paths.RUN_PER_TOKEN).equals(
        pq.read_table(run_folder(work, f"{points[0]}/seed~0") / paths.RUN_PER_TOKEN))  # two seeds, two runs


LONG = "model~tiny-xs/weight_decay~0.0/seed~{}"  # seeds 1 and 2: new grid points, long enough to interrupt


@pytest.fixture(scope="module")
def interrupted(grid_runs):
    """Two new runs (seeds 1 and 2) through `snakemake --profile slurm`; once both have a checkpoint, seed 1
    is preempted (`scontrol requeue`) and seed 2 gets the time-limit signal (`scancel --signal=TERM`: like
    `--signal=TERM@s` it signals the job steps, not the batch shell). The workflow must still complete."""
    work = grid_runs[0]
    cfg = {
        **CONFIG,
        "seeds": [0, 1, 2],
        "train": {**CONFIG["train"], "steps": 600, "checkpoint_every": 10},
        "only": {"model": ["tiny-xs"], "weight_decay": [0.0], "seed": [1, 2]},
    }
    out = work / "interrupted.out"
    t0 = time.perf_counter()
    proc = snakemake(
        work, "--profile", "slurm", "--configfile", str(write_config(work, cfg, name="interrupted.yaml")), *STATUS,
        "--verbose", "--slurm-keep-successful-logs", env=clean_env(**SITE_ENV), output=out,
    )
    folders = {seed: run_folder(work, LONG.format(seed)) for seed in (1, 2)}
    deadline = time.monotonic() + 300
    while not all((f / paths.RUN_CHECKPOINT).is_dir() for f in folders.values()):
        assert proc.poll() is None, out.read_text()[-3000:]
        assert time.monotonic() < deadline, "no checkpoints within 300 s:\n" + out.read_text()[-3000:]
        time.sleep(0.2)
    running = {}
    for j in slurm_jobs(run_id(out.read_text())):
        seed = int(j["Comment"].rsplit("seed~", 1)[1])
        running[seed] = j
    assert [running[s]["JobState"] for s in (1, 2)] == ["RUNNING", "RUNNING"], running
    subprocess.run(["scontrol", "requeue", running[1]["JobId"]], check=True)
    subprocess.run(["scancel", "--signal=TERM", running[2]["JobId"]], check=True)
    assert proc.wait(timeout=600) == 0, out.read_text()[-5000:]
    print(f"interrupted runs on SLURM: {time.perf_counter() - t0:.0f} s")
    jobs = {s: [j for j in slurm_jobs(run_id(out.read_text())) if j["Comment"].endswith(f"seed~{s}")] for s in (1, 2)}
    return work, folders, jobs


def resumed_step(work: Path, folder: Path, seed: int) -> int:
    """The step a finished run resumed from: run.json counts one resume, the job's log says where."""
    info = json.loads((folder / paths.RUN_JSON).read_text())
    assert info["timings"]["resumes"] == 1
    log = work / "results" / "logs" / "train" / "sotu" / "tok~bpe" / f"{LONG.format(seed)}.log"
    m = re.search(r"resumed from \S+ at step (\d+)", log.read_text())
    assert m, log.read_text()[-2000:]
    assert (folder / paths.RUN_PER_TOKEN).is_file() and not (folder / paths.RUN_CHECKPOINT).exists()
    return int(m.group(1))


def slurm_log(work: Path, job_id: str) -> str:
    return next((work / "logs" / "slurm" / "rule_train").rglob(f"{job_id}.log")).read_text()


@pytest.mark.slurm
def test_requeued_train_job_resumes_from_its_checkpoint(interrupted):
    """Preemption: SIGTERM reached python through sbatch -> srun step; it checkpointed and exited; SLURM
    started the same job again, which resumed from ckpt/ (not step 0)."""
    work, folders, jobs = interrupted
    (job,) = jobs[1]
    assert job["JobState"] == "COMPLETED" and job["Restarts"] == "1"
    assert resumed_step(work, folders[1], 1) >= 10
    log = slurm_log(work, job["JobId"])  # both starts: --open-mode=append
    assert "Preempted: " + LONG.format(1) + ": signal 15 at step" in log and log.count("srun -n1") == 2


@pytest.mark.slurm
def test_time_limit_signal_checkpoints_and_the_retry_resumes(interrupted):
    """The time limit: SIGTERM to the job step; the run checkpointed and failed; Snakemake resubmitted it
    (profile `retries`) with twice the time limit and it resumed."""
    work, folders, jobs = interrupted
    first, second = jobs[2]
    assert (first["JobState"], second["JobState"]) == ("FAILED", "COMPLETED")

    def minutes(limit: str) -> int:
        h, m, _ = (int(x) for x in limit.split(":"))
        return 60 * h + m

    assert minutes(second["TimeLimit"]) == 2 * minutes(first["TimeLimit"])
    assert resumed_step(work, folders[2], 2) >= 10
    assert "Preempted: " + LONG.format(2) + ": signal 15 at step" in slurm_log(work, first["JobId"])
