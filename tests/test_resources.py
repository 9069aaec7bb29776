"""tokenfair.resources: site settings, estimates, resource values per attempt, the GPU memory check."""

from __future__ import annotations

import pytest

from conftest import minimal_config
from tokenfair import config as tfconfig
from tokenfair import plan as tfplan
from tokenfair import presets
from tokenfair import resources as tfres
from tokenfair.errors import ConfigError

EMBEDDED = {"sotu": {"source": "embedded", "name": "sotu"}}


def cfg_with(**extra) -> dict:
    return tfconfig.resolve(minimal_config(EMBEDDED, **extra))


def estimate(cfg: dict, s: tfres.Site, point: int = 0) -> tfres.TrainEstimate:
    plan = tfplan.build(cfg)
    p = plan.points[point]
    return tfres.estimate_train(plan.settings(p), tfres.vocab_size(cfg, p["tok"]), s)


def WHOLE(wildcards) -> tfres.GpuShare:
    return tfres.GpuShare()


class Wildcards:
    corpus, tok, run = "sotu", "bpe", "model~tiny-s/weight_decay~0.0/seed~0"


def test_site_environment_overrides_config_and_says_where_from():
    cfg = cfg_with(resources={"gpu_partition": "gpu-cfg", "cpu_partition": "cpu-cfg", "gpu_model": "h100"})
    s = tfres.site(cfg, environ={"TOKENFAIR_GPU_PARTITION": "gpu-env", "TOKENFAIR_SLURM_ACCOUNT": "proj1"})
    assert (s.gpu_partition, s.cpu_partition, s.gpu_model, s.slurm_account) == ("gpu-env", "cpu-cfg", "h100", "proj1")
    assert s.describe("gpu_partition") == "gpu-env (from $TOKENFAIR_GPU_PARTITION)"
    assert s.describe("gpu_model") == "h100 (from config resources.gpu_model)"
    assert tfres.site(cfg_with(), environ={}) == tfres.Site()
    with pytest.raises(ConfigError, match="TOKENFAIR_GPU_MEMORY_GB"):
        tfres.site(cfg, environ={"TOKENFAIR_GPU_MEMORY_GB": "lots"})


@pytest.mark.parametrize(
    "model,memory,expected",
    [
        ("a100", None, 40),
        ("a100_80gb", None, 80),
        ("nvidia_h100_94gb_hbm3", None, 94),
        ("h100", None, 80),
        ("H200", None, 141),
        ("gh200", None, 96),
        ("l40s", None, 48),
        ("tesla", None, None),
        ("tesla", 24, 24),
        (None, 32, 32),
        (None, None, None),
    ],
)
def test_gpu_memory_of_a_gpu_model(model, memory, expected):
    assert tfres.gpu_memory_gb(tfres.Site(gpu_model=model, gpu_memory_gb=memory)) == expected


def test_estimate_scales_with_steps_and_model_size():
    s = tfres.Site(gpu_model="a100")
    small = estimate(cfg_with(train={"steps": 1000}), s)
    longer = estimate(cfg_with(train={"steps": 4000}), s)
    bigger = estimate(cfg_with(models={"q": "qwen2-0.5b"}, train={"steps": 4000, "seq_len": 1024}), s)
    assert small.gpu and small.parameters == presets.estimate_parameters(presets.resolve_model_spec("tiny-s"), 300)
    assert small.tokens == 1000 * 16 * 64 and longer.tokens == 4 * small.tokens
    assert small.hours < longer.hours < bigger.hours
    assert bigger.gpu_memory_gb == pytest.approx(
        presets.estimate_train_memory_gb(presets.resolve_model_spec("qwen2-0.5b"), 300, 16, 1024, "bf16")
    )
    # a faster GPU, less time; the CPU: no GPU memory, hours from the thread count
    on_h100 = estimate(cfg_with(models={"q": "qwen2-0.5b"}, train={"steps": 4000, "seq_len": 1024}), tfres.Site(gpu_model="h100"))
    assert on_h100.hours < bigger.hours
    cpu1 = estimate(cfg_with(train={"device": "cpu", "threads": 1}), s)
    cpu4 = estimate(cfg_with(train={"device": "cpu", "threads": 4}), s)
    assert not cpu1.gpu and cpu1.gpu_memory_gb == 0 and cpu4.hours < cpu1.hours


def test_calibration_run_estimate_is_near_its_measured_time():
    """The calibration run (tiny-m, vocab 4096, 720 steps x 16 x 128, 2 CPU threads) took ~200 s here;
    the estimate must neither undercut it nor be wildly above."""
    cfg = cfg_with(
        models={"tiny-m": "tiny-m"},
        tokenizers={"bpe": {"type": "bpe", "vocab_size": 4096}},
        train={"steps": 720, "batch_size": 16, "seq_len": 128, "device": "cpu", "threads": 2},
    )
    assert 200 < estimate(cfg, tfres.Site()).hours * 3600 < 3 * 200


def test_vocab_size_of_a_given_tokenizer_file(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    tok.train_from_iterator(["some text to learn from"] * 20, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"]))
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    cfg = cfg_with(tokenizers={"given": {"type": "file", "path": str(path)}})
    assert tfres.vocab_size(cfg, "given") == tok.get_vocab_size()


def test_runtime_and_memory_grow_with_attempt():
    est = estimate(cfg_with(models={"q": "qwen2-0.5b"}, train={"steps": 20000, "seq_len": 1024}), tfres.Site(gpu_model="a100"))
    r = [tfres.runtime_minutes(est, a) for a in (1, 2, 3)]
    m = [tfres.host_mem_mb(est, a) for a in (1, 2, 3)]
    assert r[0] >= est.hours * 60 * 1.5 and r == [r[0], 2 * r[0], 3 * r[0]]
    assert m[0] < m[1] < m[2] and m[0] > 3000 + 2 * est.checkpoint_gb * 1000 - 1
    tiny = estimate(cfg_with(train={"steps": 10}), tfres.Site())
    assert tfres.runtime_minutes(tiny) == 15  # the floor
    # time to write the checkpoint before the limit: at least SLURM's 60 s signal resolution + margin
    assert tfres.signal_seconds(tiny) == 121
    assert tfres.signal_seconds(est) > tfres.signal_seconds(tiny)


def test_train_resources_ask_for_one_gpu_and_sigterm_before_the_limit():
    cfg = cfg_with()
    s = tfres.Site(gpu_partition="gpu", cpu_partition="cpu", gpu_model="a100", slurm_account="proj")
    res = tfres.train_resources(cfg, s, lambda w: estimate(cfg, s), WHOLE)
    assert res["gpu"] == 1 and res["gpu_model"] == "a100" and res["slurm_partition"] == "gpu"
    assert res["slurm_account"] == "proj" and res["cpus_per_task"] == 1
    assert res["runtime"](Wildcards, 2) == 2 * res["runtime"](Wildcards, 1)
    assert res["mem_mb"](Wildcards, 2) > res["mem_mb"](Wildcards, 1)
    extra = res["slurm_extra"](Wildcards)
    assert "--signal=TERM@121" in extra.split() and "B:" not in extra


def test_runs_per_gpu_from_the_memory_estimate_and_the_cap():
    cfg = cfg_with(models={"e": "openelm-270m"}, tokenizers={"bpe": {"type": "bpe", "vocab_size": 32000}},
                   train={"batch_size": 32, "seq_len": 128})
    h100, h200 = tfres.Site(gpu_model="h100"), tfres.Site(gpu_model="h200")
    est = estimate(cfg, h100)
    fit = int(tfres.PACK_MEMORY_SHARE * 80 // est.gpu_memory_gb)
    assert 2 <= fit and tfres.runs_per_gpu(est, h100, "auto") == min(fit, tfres.AUTO_RUNS_PER_GPU)
    assert tfres.runs_per_gpu(est, h100, 3) == 3 and tfres.runs_per_gpu(est, h100, 1000) == fit
    assert tfres.runs_per_gpu(est, h200, "auto") == tfres.AUTO_RUNS_PER_GPU
    assert tfres.runs_per_gpu(est, tfres.Site(), "auto") == 1  # GPU memory unknown
    assert tfres.runs_per_gpu(est, tfres.Site(), 4) == 4  # ... the cap is taken as said
    big = estimate(cfg_with(models={"q": "qwen2-1.5b"}, train={"batch_size": 32, "seq_len": 2048}), h100)
    assert tfres.runs_per_gpu(big, h100, 8) == 1
    cpu = estimate(cfg_with(train={"device": "cpu"}), h100)
    assert tfres.runs_per_gpu(cpu, h100, 8) == 1


@pytest.mark.parametrize("shards,cap,expected", [(8, 3, (3, 8)), (8, 4, (2, 8)), (8, 8, (1, 8)), (4, 3, (2, 4)),
                                                 (8, 1, (0, 0)), (None, 4, (0, 0))])
def test_gpu_share_fits_the_runs_one_gpu_takes(shards, cap, expected):
    """ceil(shards / runs) shards a run: the runs SLURM may put on one GPU are never more than runs_per_gpu."""
    s = tfres.Site(gpu_memory_gb=80, gpu_shards=shards)
    share = tfres.gpu_share(estimate(cfg_with(), s), s, cap)
    assert (share.shards, share.per_gpu) == expected
    assert share.fraction == (share.shards / share.per_gpu if share.shards else 1.0)
    if share.shards:
        assert share.per_gpu // share.shards <= cap


def test_several_runs_per_gpu_need_gpu_shards():
    tfres.check_gpu_sharing(tfres.Site(), "auto")
    tfres.check_gpu_sharing(tfres.Site(), 1)
    tfres.check_gpu_sharing(tfres.Site(gpu_shards=4), 4)
    with pytest.raises(ConfigError, match=r"^config key resources.runs_per_gpu: 4 runs per GPU need .*TOKENFAIR_GPU_SHARDS"):
        tfres.check_gpu_sharing(tfres.Site(), 4)
    assert tfres.site(cfg_with(), environ={"TOKENFAIR_GPU_SHARDS": "8"}).gpu_shards == 8
    with pytest.raises(ConfigError, match="TOKENFAIR_GPU_SHARDS: shards per GPU must be a whole number"):
        tfres.site(cfg_with(), environ={"TOKENFAIR_GPU_SHARDS": "half"})


def test_train_resources_of_a_run_sharing_a_gpu():
    cfg = cfg_with()
    for model, gres in ((None, "shard:2"), ("a100", "shard:a100:2")):
        s = tfres.Site(gpu_partition="gpu", gpu_model=model, gpu_memory_gb=80, gpu_shards=4)
        res = tfres.train_resources(cfg, s, lambda w: estimate(cfg, s), lambda w: tfres.GpuShare(2, 4))
        assert (res["gpu"](Wildcards), res["gres"](Wildcards)) == (0, gres)
        assert res["gpu_model"](Wildcards) == "" if model else "gpu_model" not in res
        whole = tfres.train_resources(cfg, s, lambda w: estimate(cfg, s), WHOLE)
        assert (whole["gpu"](Wildcards), whole["gres"](Wildcards)) == (1, "")
        assert whole["gpu_model"](Wildcards) == model if model else "gpu_model" not in whole


def test_slurm_extra_passes_the_executors_check():
    validation = pytest.importorskip("snakemake_executor_plugin_slurm.validation")
    cfg = cfg_with()
    res = tfres.train_resources(cfg, tfres.Site(), lambda w: estimate(cfg, tfres.Site()), WHOLE)

    class Job:
        class resources:
            slurm_extra = res["slurm_extra"](Wildcards)

    validation.validate_slurm_extra(Job)  # raises WorkflowError on an option the executor manages


def test_cpu_jobs_and_cpu_training_never_ask_for_a_gpu():
    s = tfres.Site(gpu_partition="gpu", cpu_partition="cpu", gpu_model="a100")
    assert tfres.placement(s, gpu=False) == {"slurm_partition": "cpu"}
    assert tfres.placement(tfres.Site(gpu_model="a100"), gpu=False) == {}
    cfg = cfg_with(train={"device": "cpu", "threads": 4})
    res = tfres.train_resources(cfg, s, lambda w: estimate(cfg, s), WHOLE)
    assert not {"gpu", "gpu_model", "gres"} & set(res) and res["slurm_partition"] == "cpu"
    assert res["cpus_per_task"] == 4
    rules = [*(tfres.cpu_resources(s, r) for r in tfres.CPU_RULES), tfres.prepare_resources(s, {}),
             tfres.aggregate_resources(s, 10), tfres.publish_resources(s)]
    assert all(not {"gpu", "gpu_model", "gres"} & set(r) and r["slurm_partition"] == "cpu" for r in rules)


def test_cpu_rules_grow_with_their_input_and_attempt():
    class Input:
        size_mb = 300

    class Corpus:
        corpus = "web"

    s = tfres.Site()
    count = tfres.cpu_resources(s, "count")
    assert (count["mem_mb"](Corpus, Input, 1), count["runtime"](Corpus, Input, 1)) == (1500 + 300, 10)
    assert count["mem_mb"](Corpus, Input, 2) == 2 * (1500 + 300)
    assert tfres.cpu_resources(s, "tokenize")["runtime"](Corpus, Input, 1) == 10 + 6  # memory: test_tokenize_memory.py
    assert tfres.cpu_resources(s, "zipf")["runtime"](Corpus, Input, 3) == 30  # not the input's size
    prepare = tfres.prepare_resources(s, {"web": {"source": "hf"}})
    assert (prepare["mem_mb"](Corpus, Input, 1), prepare["runtime"](Corpus, Input, 2)) == (4000, 120)  # size unknown
    prepare = tfres.prepare_resources(s, {"web": {"source": "text"}})
    assert (prepare["mem_mb"](Corpus, Input, 1), prepare["runtime"](Corpus, Input, 1)) == (1000 + 6 * 300, 13)
    aggregate = tfres.aggregate_resources(s, 400)
    assert (aggregate["mem_mb"](Corpus, 2, 1), aggregate["runtime"](Corpus, 2)) == (800 + 1400, 2 * (10 + 20))


def test_gpu_memory_check_names_the_model_and_the_gpu():
    cfg = cfg_with(models={"big": "qwen2-1.5b"}, train={"batch_size": 16, "seq_len": 2048})
    est = estimate(cfg, tfres.Site())
    assert est.gpu_memory_gb > 80
    with pytest.raises(ConfigError) as err:
        tfres.check_gpu_memory(tfres.site(cfg, {"TOKENFAIR_GPU_MODEL": "a100"}), [("big", est)])
    msg = str(err.value)
    assert msg.startswith("config key models.big:") and "40 GB" in msg and "$TOKENFAIR_GPU_MODEL" in msg
    assert "batch_size 16 x seq_len 2048" in msg
    tfres.check_gpu_memory(tfres.Site(gpu_model="h200"), [("big", est)])  # 141 GB: fits
    tfres.check_gpu_memory(tfres.Site(), [("big", est)])  # no GPU model known: no check
    cpu = estimate(cfg_with(models={"big": "qwen2-1.5b"}, train={"device": "cpu"}), tfres.Site())
    tfres.check_gpu_memory(tfres.Site(gpu_model="v100"), [("big", cpu)])  # trains on the CPU


def test_summary_line():
    line = tfres.summary_line({"train": 6, "prepare": 1}, 6, 1.234, 0.0, tfres.Site(gpu_model="h100"))
    assert line == "tokenfair plan: 7 jobs (prepare 1, train 6); 6 GPUs; estimated 1.23 GPU-hours (h100)"
    assert "CPU-hours" in tfres.summary_line({"train": 1}, 0, 0.0, 0.5, tfres.Site())
    assert tfres.summary_line({"train": 1}, 1, 0.5, 0.0, tfres.Site()).startswith("tokenfair plan: 1 job (train 1); 1 GPU;")


@pytest.mark.heavy
def test_paper_configs_plan_with_their_job_counts(repo_root):
    """configs/paper.yaml plans on the SLURM profile (no cluster needed for -n): 2 corpora x 4 models x 6 decays
    x 5 seeds, with the plan line's GPU-hours; configs/paper-cpu.yaml plans its 45 runs (main: 6 seeds x 3
    decays; the regime map 18 more; 3 mitigations x 3 seeds) and its docs page."""
    import os
    import re
    import subprocess
    import sys

    def plan(*args, **environ):
        cmd = [sys.executable, "-m", "snakemake", "--directory", str(repo_root), "-n", "-q", "rules", *args]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENFAIR_")} | environ
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=repo_root, timeout=300, env=env)
        assert res.returncode == 0, res.stderr[-3000:]
        return res.stdout + res.stderr

    out = plan("--configfile", "configs/paper.yaml", "--profile", "slurm")
    assert re.search(r"^train\s+240$", out, re.M), out
    line = re.search(r"tokenfair plan: (\d+) jobs \(.*train 240.*\); 240 GPUs; estimated ([\d.]+) GPU-hours \(h100\)", out)
    assert line and float(line.group(2)) > 50, out
    # on a site whose H100s are split into 8 shards: 2 or 4 runs of the three smaller models on one GPU
    out = plan("--configfile", "configs/paper.yaml", "--profile", "slurm", TOKENFAIR_GPU_SHARDS="8")
    shared = re.search(r"\(.*train 240.*\); 120 GPUs; estimated ([\d.]+) GPU-hours \(h100\)", out)
    assert shared and float(shared.group(1)) < 0.75 * float(line.group(2)), out
    out = plan("--configfile", "configs/paper-cpu.yaml", "--forceall")  # every job, whatever results/ holds
    assert re.search(r"^train\s+45$", out, re.M) and re.search(r"^publish\s+1$", out, re.M), out


MINI = "configs/paper-gpu-mini.yaml"


@pytest.mark.heavy
def test_paper_gpu_mini_fits_8_gpu_minutes_of_an_h200(repo_root):
    """configs/paper-gpu-mini.yaml: the paper's tied OpenELM-270M at sequence length 128, its six decays, a 32k
    BPE on the whole training split, planned within 8 minutes of one H200."""
    import yaml

    raw = yaml.safe_load((repo_root / MINI).read_text())
    cfg = tfconfig.resolve(raw)
    plan = tfplan.build(cfg)
    s = tfres.site(cfg, environ={})
    assert s.gpu_model == "h200" and cfg["weight_decays"] == [0.0, 0.01, 0.1, 0.3, 1.0, 2.0]
    assert cfg["corpora"]["sotu"]["max_train_docs"] is None and cfg["tokenizers"]["bpe32k"]["vocab_size"] == 32000
    settings = [plan.settings(p) for p in plan.points]
    assert all(st["model"]["family"] == "openelm" and st["model"]["tie_word_embeddings"] for st in settings)
    assert all(st["train"]["seq_len"] == 128 and st["train"]["device"] == "cuda" for st in settings)
    minutes = 60 * sum(tfres.estimate_train(st, 32000, s).hours for st in settings)
    assert 7 < minutes <= 8, minutes


@pytest.mark.heavy
def test_paper_gpu_mini_runs_end_to_end_shrunk_on_cpu(repo_root, tmp_path):
    """The same config through snakemake on the CPU, shrunk by overrides only: the family's tiny preset,
    vocabulary 512, 3 training speeches, 20 steps. Every run trains and is evaluated on held-out text."""
    import subprocess
    import sys

    import pyarrow.parquet as pq
    import yaml

    from conftest import write_config

    cfg = yaml.safe_load((repo_root / MINI).read_text())
    cfg["results_dir"] = str(tmp_path / "results")
    cfg["models"] = {"openelm-270m": "tiny-openelm"}
    cfg["tokenizers"]["bpe32k"]["vocab_size"] = 512
    cfg["corpora"]["sotu"]["max_train_docs"] = 3
    cfg["train"].update(steps=20, batch_size=4, warmup_steps=2, eval_every=10, checkpoint_every=10,
                        eval_train_tokens=2048, eval_val_tokens=2048, device="cpu", precision="fp32", threads=1)
    cfg["resources"] = {}
    config = write_config(tmp_path, cfg)
    cmd = [sys.executable, "-m", "snakemake", "--configfile", str(config), "--cores", "2", "--directory", str(tmp_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=repo_root, timeout=900)
    assert res.returncode == 0, res.stderr[-4000:]
    plan = tfplan.build(tfconfig.resolve(cfg))
    assert len(plan.points) == 6
    for p in plan.points:
        table = pq.read_table(plan.run_files(p)["per_token"]).to_pandas()
        assert set(table["split"]) == {"train", "validation"} and table["count"].sum() > 0
        assert table["token_id"].max() < 512
    assert (tmp_path / "results" / "summary" / "runs.csv").is_file()
