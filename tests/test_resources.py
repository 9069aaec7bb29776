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
    res = tfres.train_resources(cfg, s, lambda w: estimate(cfg, s))
    assert res["gpu"] == 1 and res["gpu_model"] == "a100" and res["slurm_partition"] == "gpu"
    assert res["slurm_account"] == "proj" and res["cpus_per_task"] == 1
    assert res["runtime"](Wildcards, 2) == 2 * res["runtime"](Wildcards, 1)
    assert res["mem_mb"](Wildcards, 2) > res["mem_mb"](Wildcards, 1)
    extra = res["slurm_extra"](Wildcards)
    assert "--signal=TERM@121" in extra.split() and "B:" not in extra


def test_slurm_extra_passes_the_executors_check():
    validation = pytest.importorskip("snakemake_executor_plugin_slurm.validation")
    cfg = cfg_with()
    res = tfres.train_resources(cfg, tfres.Site(), lambda w: estimate(cfg, tfres.Site()))

    class Job:
        class resources:
            slurm_extra = res["slurm_extra"](Wildcards)

    validation.validate_slurm_extra(Job)  # raises WorkflowError on an option the executor manages


def test_cpu_jobs_and_cpu_training_never_ask_for_a_gpu():
    s = tfres.Site(gpu_partition="gpu", cpu_partition="cpu", gpu_model="a100")
    assert tfres.placement(s, gpu=False) == {"slurm_partition": "cpu"}
    assert tfres.placement(tfres.Site(gpu_model="a100"), gpu=False) == {}
    cfg = cfg_with(train={"device": "cpu", "threads": 4})
    res = tfres.train_resources(cfg, s, lambda w: estimate(cfg, s))
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
    x 5 seeds, with the plan line's GPU-hours; configs/paper-cpu.yaml plans its 70 runs and its docs page."""
    import re
    import subprocess
    import sys

    def plan(*args):
        cmd = [sys.executable, "-m", "snakemake", "--directory", str(repo_root), "-n", "-q", "rules", *args]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=repo_root, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        return res.stdout + res.stderr

    out = plan("--configfile", "configs/paper.yaml", "--profile", "slurm")
    assert re.search(r"^train\s+240$", out, re.M), out
    line = re.search(r"tokenfair plan: (\d+) jobs \(.*train 240.*\); 240 GPUs; estimated ([\d.]+) GPU-hours \(h100\)", out)
    assert line and float(line.group(2)) > 50, out
    out = plan("--configfile", "configs/paper-cpu.yaml")
    assert re.search(r"^train\s+70$", out, re.M) and re.search(r"^publish\s+1$", out, re.M), out
