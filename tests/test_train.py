"""The training stage (tokenfair.train): the output contracts, bit-identical reruns, the parameter groups,
the fixed evaluation sample, the Hugging Face round trip, failures, the rule, and the GPU benchmark's FLOPs.

Real text: a byte-level BPE (512 ids) trained on a few State of the Union speeches; tiny-xs; 30 steps."""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tokenfair import config as tfconfig
from tokenfair import optim, paths
from tokenfair import plan as tfplan
from tokenfair import train as tt
from tokenfair import windows
from tokenfair.device import autocast_for
from tokenfair.errors import DataError
from tokenfair.losses import evaluate

REPO = Path(__file__).resolve().parents[1]
OUTPUTS = (paths.RUN_PER_TOKEN, paths.RUN_LOG, paths.RUN_JSON, paths.RUN_NORMS, paths.RUN_MODEL)
TRAIN = {"steps": 30, "batch_size": 8, "seq_len": 32, "lr": 3e-3, "warmup_steps": 3, "eval_every": 10,
         "log_every": 5, "checkpoint_every": 10, "eval_train_tokens": 2048, "eval_val_tokens": 2048, "threads": 1}


# --------------------------------------------------------------------------------------------------
# shared helpers (test_train_resume.py imports them)


def make_data(root: Path, speeches: list[str]) -> dict:
    """tokenizer.json (BPE, 512 ids) and train/validation shards from real speeches; returns run() inputs."""
    from tokenfair.tokenization import encode_documents, train_bpe

    root.mkdir(parents=True, exist_ok=True)
    docs = [s.lower() for s in speeches[:10]]
    tok = train_bpe(docs[:8], 512)
    tok.save(str(root / "tokenizer.json"))
    for split, texts in (("train", docs[:8]), ("validation", docs[8:])):
        ids, _ = encode_documents(tok, texts, 0)
        np.save(root / f"{split}.npy", ids)
    return {"train_tokens": str(root / "train.npy"), "eval_tokens": {"validation": str(root / "validation.npy")},
            "tokenizer_json": str(root / "tokenizer.json")}


def settings_for(model: str = "tiny-xs", weight_decay: float = 0.1, seed: int = 0, **train) -> dict:
    cfg = tfconfig.resolve({
        "corpora": {"sotu": {"source": "embedded"}}, "tokenizers": {"bpe": {"type": "bpe", "vocab_size": 512}},
        "models": [model], "weight_decays": [weight_decay], "seeds": [seed], "train": {**TRAIN, **train},
    }, check_files=False)
    plan = tfplan.build(cfg)
    return plan.settings(plan.points[0])


def run_into(out: Path, data: dict, settings: dict | None = None) -> dict:
    return tt.run(settings or settings_for(), out_dir=str(out), **data)


def tensorboard_scalars(run_dir: Path) -> dict:
    """{tag: [(step, value)]} of a run's TensorBoard folder, as TensorBoard reads it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / paths.RUN_TENSORBOARD), size_guidance={"scalars": 0})
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


@pytest.fixture(scope="session")
def data(tmp_path_factory, speeches):
    """One real-text tokenizer and shards for every training test (test_train_resume.py uses it too)."""
    return make_data(tmp_path_factory.mktemp("data"), speeches)


@pytest.fixture(scope="module")
def ref(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("ref") / "run"
    info = run_into(out, data)
    return out, info


# --------------------------------------------------------------------------------------------------
# outputs


def test_outputs_follow_the_contract(ref, data):
    out, info = ref
    assert sorted(os.listdir(out)) == sorted(OUTPUTS + (paths.RUN_TENSORBOARD,))  # no ckpt/, no temporary files
    t = pq.read_table(out / paths.RUN_PER_TOKEN)
    assert [(f.name, str(f.type)) for f in t.schema] == [
        ("step", "int32"), ("split", "string"), ("token_id", "int32"), ("loss_sum", "double"),
        ("count", "int64"), ("correct", "int64")]
    df = t.to_pandas()
    n_ids = info["vocab_size"]
    assert n_ids == 512
    keys = df[["step", "split"]].drop_duplicates().values.tolist()
    assert keys == [[s, sp] for s in (0, 10, 20, 30) for sp in ("train", "validation")]
    assert len(df) == len(keys) * n_ids
    for (step, split), g in df.groupby(["step", "split"], sort=False):
        assert g.token_id.tolist() == list(range(n_ids))  # every id, zeros included
        assert g["count"].sum() == 2048 == info["eval_tokens"][split]
        assert (g.correct <= g["count"]).all() and (g.loss_sum >= 0).all()
        assert (g.loss_sum[g["count"] == 0] == 0).all() and (g["count"] == 0).any()
    # the evaluation windows are the same at every step; loss falls with training
    train_counts = [g["count"].to_numpy() for _, g in df[df.split == "train"].groupby("step")]
    assert all((c == train_counts[0]).all() for c in train_counts)
    mean = df.groupby(["step", "split"]).apply(lambda g: g.loss_sum.sum() / g["count"].sum(), include_groups=False)
    assert mean[(0, "train")] == pytest.approx(np.log(n_ids), abs=0.1)
    assert mean[(30, "train")] < mean[(0, "train")] - 0.5
    assert info["final"]["validation"]["loss"] == pytest.approx(mean[(30, "validation")], rel=1e-12)

    log = (out / paths.RUN_LOG).read_text().splitlines()
    assert log[0] == "step,loss,lr,grad_norm,tokens_per_s,elapsed_s"
    rows = [list(map(float, r.split(","))) for r in log[1:]]
    assert [int(r[0]) for r in rows] == [5, 10, 15, 20, 25, 30]
    assert all(r[4] > 0 and r[5] > 0 for r in rows)
    assert rows[-1][2] == pytest.approx(3e-3 * 0.1)  # cosine down to min_lr_ratio at the last step

    run = json.loads((out / paths.RUN_JSON).read_text())
    assert run["lr_x_weight_decay"] == pytest.approx(3e-3 * 0.1)
    assert run["weight_decay"] == 0.1 and run["lr"] == 3e-3 and run["seed"] == 0 and run["threads"] == 1
    assert "model.embed_tokens.weight" in run["decay_parameters"] and "lm_head.weight" in run["decay_parameters"]
    assert "model.norm.weight" in run["no_decay_parameters"]
    assert run["axes"] == {"model": "tiny-xs", "weight_decay": 0.1, "seed": 0}
    assert run["settings"]["train"]["steps"] == 30 and run["device"] == "cpu"
    assert set(run["versions"]) >= {"torch", "transformers", "python"} and "git_commit" in run
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out / paths.RUN_MODEL)
    assert run["parameters"] == sum(p.numel() for p in model.parameters())


def test_same_config_and_seed_is_bit_identical(ref, data, tmp_path):
    run_into(tmp_path / "again", data)
    assert (tmp_path / "again" / paths.RUN_PER_TOKEN).read_bytes() == (ref[0] / paths.RUN_PER_TOKEN).read_bytes()


def test_eval_sample_does_not_depend_on_the_seed(ref, data, tmp_path):
    info = run_into(tmp_path / "s1", data, settings_for(seed=1))
    a = pq.read_table(ref[0] / paths.RUN_PER_TOKEN).to_pandas()
    b = pq.read_table(tmp_path / "s1" / paths.RUN_PER_TOKEN).to_pandas()
    assert (a["count"] == b["count"]).all()  # same windows, train and validation
    assert not np.allclose(a.loss_sum, b.loss_sum)  # another init and data order
    assert info["final"]["train"]["loss"] != ref[1]["final"]["train"]["loss"]


def test_saved_model_reloads_and_reproduces_the_final_loss(ref, data):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, info = ref
    folder = out / paths.RUN_MODEL
    model = AutoModelForCausalLM.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.eos_token == paths.EOD_TOKEN and tok.pad_token == paths.PAD_TOKEN
    assert tok.eos_token_id == 0 and tok.pad_token_id == 1 and model.config.eos_token_id == 0
    text = "the state of the union is strong"
    from tokenizers import Tokenizer

    assert tok(text)["input_ids"] == Tokenizer.from_file(data["tokenizer_json"]).encode(text).ids
    shard = np.load(data["eval_tokens"]["validation"], mmap_mode="r")
    starts = windows.eval_starts(len(shard), 32, 2048)
    sums = evaluate(model, shard, starts, 32, 32, device=torch.device("cpu"),
                       autocast=autocast_for(torch.device("cpu"), "fp32"), acc_dtype=torch.float64, n_rows=512)
    loss = float(sums[0].sum() / sums[1].sum())
    assert loss == pytest.approx(info["final"]["validation"]["loss"], rel=1e-9)


def test_openelm_run_reloads_with_the_auto_classes(data, tmp_path):
    import tokenfair.models  # noqa: F401  (registers openelm with the Auto classes)
    from transformers import AutoModelForCausalLM

    info = run_into(tmp_path / "run", data, settings_for(model="tiny-openelm", steps=4, eval_every=4))
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / paths.RUN_MODEL)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tied
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    shard = np.load(data["eval_tokens"]["validation"], mmap_mode="r")
    sums = evaluate(model, shard, windows.eval_starts(len(shard), 32, 2048), 32, 32, device=torch.device("cpu"),
                       autocast=autocast_for(torch.device("cpu"), "fp32"), acc_dtype=torch.float64, n_rows=512)
    assert float(sums[0].sum() / sums[1].sum()) == pytest.approx(info["final"]["validation"]["loss"], rel=1e-9)


def test_tensorboard_has_the_log_rows_and_each_bins_loss_at_every_evaluation(ref, data, tmp_path):
    from tokenfair.counts import bin_edges, log_bin

    out, info = ref  # no frequency table: each split's loss only
    tb = tensorboard_scalars(out)
    rows = [r.split(",") for r in (out / paths.RUN_LOG).read_text().splitlines()[1:]]
    for i, key in enumerate(("loss", "lr", "grad_norm", "tokens_per_s"), start=1):
        assert tb[f"training/{key}"] == [(int(r[0]), pytest.approx(float(r[i]), rel=1e-6)) for r in rows]
    df = pq.read_table(out / paths.RUN_PER_TOKEN).to_pandas()
    for split in ("train", "validation"):
        g = df[df.split == split].groupby("step")
        assert tb[f"eval_{split}/loss"] == [(s, pytest.approx(v, rel=1e-6))
                                            for s, v in (g.loss_sum.sum() / g["count"].sum()).items()]
    assert sorted(t.split("/")[0] for t in tb) == ["eval_train", "eval_validation"] + ["training"] * 4
    # with the train frequency table: the loss of each train-count bin, per split, at every evaluation
    import pyarrow as pa

    counts = np.bincount(np.load(data["train_tokens"]), minlength=512)
    pq.write_table(pa.table({"token_id": np.arange(512), "count": counts}), tmp_path / "freq.parquet")
    tt.run(settings_for(steps=10, eval_every=5), out_dir=str(tmp_path / "run"),
           train_frequency=str(tmp_path / "freq.parquet"), **data)
    tb = tensorboard_scalars(tmp_path / "run")
    df = pq.read_table(tmp_path / "run" / paths.RUN_PER_TOKEN).to_pandas()
    bins = log_bin(counts, 3)
    lo, hi = bin_edges(bins, 3)
    tags = [f"loss_bin{b:02d}_{a}-{c}" for b, a, c in zip(bins, lo, hi)]
    df["tag"] = np.where(bins < 0, "loss_unseen", tags)[df.token_id]
    sums = df.groupby(["split", "tag", "step"])[["loss_sum", "count"]].sum()
    expect = {}
    for (split, tag, step), r in sums[sums["count"] > 0].iterrows():
        expect.setdefault(f"eval_{split}/{tag}", []).append((step, pytest.approx(r.loss_sum / r["count"], rel=1e-6)))
    assert {t: v for t, v in tb.items() if "loss_" in t} == expect
    assert "eval_train/loss_bin00_1-3" in expect and len([t for t in expect if t.startswith("eval_validation/")]) >= 5
    assert [s for s, _ in expect["eval_validation/loss_bin02_9-27"]] == [0, 5, 10]


def test_progress_lines_and_corpus_normalisation(data, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(tt, "PROGRESS_EVERY_S", 0.0)  # a line after every step
    caplog.set_level("INFO", logger="tokenfair.train")
    info = tt.run(settings_for(steps=4, eval_every=4, tensorboard=False), out_dir=str(tmp_path / "run"),
                  corpus_spec={"source": "embedded", "lowercase": True, "eod": True}, **data)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress:")]
    assert len(lines) == 4 and lines[0].startswith("progress: step 1/4 (25%), ")
    assert re.fullmatch(r"progress: step 4/4 \(100%\), \d+ tokens/s, 0:00:\d\d elapsed, ETA 0:00:00", lines[-1])
    assert info["corpus_normalisation"] == {"lowercase": True, "eod": True}
    assert not (tmp_path / "run" / paths.RUN_TENSORBOARD).exists()  # train.tensorboard false


# --------------------------------------------------------------------------------------------------
# pieces


def test_decay_groups():
    from tokenfair.models import build_model
    from tokenfair.presets import resolve_model_spec

    def decay_groups(model, mode):
        lists = optim.decay_lists(model, optim.param_groups(model, {"decay_group": mode, "weight_decay": 0.5}))
        return lists["decay"], lists["no_decay"]

    llama = build_model(resolve_model_spec("tiny-xs"), 300)
    names = [n for n, _ in llama.named_parameters()]
    d, nd = decay_groups(llama, "all")
    assert d == names and nd == []
    d, nd = decay_groups(llama, "matrices")
    assert {"model.embed_tokens.weight", "lm_head.weight", "model.layers.0.self_attn.q_proj.weight"} <= set(d)
    assert set(nd) == {n for n in names if "norm" in n}
    d, nd = decay_groups(llama, "matrices_no_embeddings")
    assert "model.embed_tokens.weight" in nd and "lm_head.weight" in nd and "model.layers.0.mlp.up_proj.weight" in d
    elm = build_model(resolve_model_spec("tiny-openelm"), 300)  # tied embedding and head
    d, nd = decay_groups(elm, "matrices_no_embeddings")
    assert "transformer.token_embeddings.weight" in nd and not any("embeddings" in n for n in d)
    train = {"decay_group": "matrices", "weight_decay": 0.5, "lr": 1e-3, "betas": [0.9, 0.95], "eps": 1e-8}
    opt = optim.make_optimizer(llama, optim.param_groups(llama, train), train, torch.device("cpu"))
    assert [(g["name"], g["weight_decay"]) for g in opt.param_groups] == [
        ("matrices", 0.5), ("embeddings", 0.5), ("head", 0.5), ("norms_biases", 0.0)]
    assert sum(len(g["params"]) for g in opt.param_groups) == len(names)


def test_lr_schedule():
    t = {"warmup_steps": 10, "steps": 111, "min_lr_ratio": 0.1}
    f = [optim.lr_factor(s, t) for s in range(111)]
    assert f[0] == pytest.approx(0.1) and f[9] == 1.0 and f[10] == 1.0
    assert f[-1] == pytest.approx(0.1) and f[60] == pytest.approx(0.55)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert optim.lr_factor(0, {"warmup_steps": 0, "steps": 1, "min_lr_ratio": 0.0}) == 1.0


def test_eval_starts_and_sampler():
    s = windows.eval_starts(1001, 10, 250)  # 100 windows, 25 of them evenly spaced
    assert len(s) == 25 and s[0] == 0 and (np.diff(s) == 40).all()
    assert (windows.eval_starts(1001, 10, 10**6) == np.arange(100) * 10).all()  # the whole shard
    a = windows.WindowSampler(1001, 10, seed=3)
    first = a.next_starts(100)
    assert sorted(first.tolist()) == list(range(0, 1000, 10))  # one epoch: every window once
    a.next_starts(37)
    state = a.state_dict()
    b = windows.WindowSampler(1001, 10, seed=3)
    b.load_state_dict(state)
    assert (a.next_starts(150) == b.next_starts(150)).all()
    assert not (windows.WindowSampler(1001, 10, seed=4).next_starts(100) == first).all()


def test_eval_steps_linear_and_log():
    assert windows.eval_steps(30, 10) == [0, 10, 20, 30]
    assert windows.eval_steps(25, 10, "linear") == [0, 10, 20, 25]  # the last step always
    # n = ceil(100 / 25) = 4: round(100^(k/4)) = 1, 3 (3.16), 10, 32 (31.6), 100
    assert windows.eval_steps(100, 25, "log") == [0, 1, 3, 10, 32, 100]
    # n = 10: 10^(k/10) = 1, 1.26, 1.58, 2, 2.51, 3.16, 3.98, 5.01, 6.31, 7.94, 10, rounded and deduplicated;
    # never more evaluations than linear
    log10 = windows.eval_steps(10, 1, "log")
    assert log10 == [0, 1, 2, 3, 4, 5, 6, 8, 10] and len(log10) <= len(windows.eval_steps(10, 1))
    with pytest.raises(ValueError, match="eval_schedule"):
        windows.eval_steps(10, 1, "cosine")


def test_ood_splits_are_evaluated_whole_unless_budgeted(data):
    val = data["eval_tokens"]["validation"]
    n = len(np.load(val))
    whole = windows.eval_starts(n, 32, None)
    assert len(whole) == (n - 1) // 32
    train = settings_for(eval_val_tokens=64)["train"]
    d = windows.load_data(data["train_tokens"], {"validation": val, "ood-other": val}, train, 512)
    assert len(d.starts["validation"]) == 2 and (d.starts["ood-other"] == whole).all()
    assert (d.final["train"] == d.starts["train"]).all()  # eval_train_final: sample
    d = windows.load_data(data["train_tokens"], {"ood-other": val}, {**train, "eval_ood_tokens": 96}, 512)
    assert len(d.starts["ood-other"]) == 3


def test_log_schedule_and_every_train_occurrence_at_the_last_step(data, tmp_path):
    out = tmp_path / "run"
    tt.run(settings_for(steps=4, eval_every=2, eval_schedule="log", eval_train_final="all", tensorboard=False),
           out_dir=str(out), **data)
    df = pq.read_table(out / paths.RUN_PER_TOKEN).to_pandas()
    assert sorted(df["step"].unique()) == [0, 1, 2, 4]
    shard = np.load(data["train_tokens"]).astype(np.int64)
    counts = np.bincount(shard, minlength=512)  # the train frequency table's counts (count.py counts the shard)
    # every occurrence but the shard's first token and its tail shorter than seq_len (the packed windows'
    # targets: positions 1 .. 32 * ((len - 1) // 32))
    end = 1 + 32 * ((len(shard) - 1) // 32)
    expect = counts - np.bincount(shard[:1], minlength=512) - np.bincount(shard[end:], minlength=512)
    train = df[df["split"] == "train"]
    final = train[train["step"] == 4].sort_values("token_id")["count"].to_numpy()
    assert (final == expect).all()
    sample = train[train["step"] == 2]["count"].sum()
    assert sample == 2048 < final.sum()  # earlier steps: the fixed sample of eval_train_tokens


# --------------------------------------------------------------------------------------------------
# failures


def _outputs_absent(out: Path):
    return not any((out / f).exists() for f in OUTPUTS)


def test_tokenizer_larger_than_the_embedding_fails_at_start(data, tmp_path):
    s = settings_for()
    s["model"]["vocab_size"] = 300
    with pytest.raises(DataError, match=r"512 ids.*300 rows"):
        run_into(tmp_path / "run", data, s)
    assert _outputs_absent(tmp_path / "run")


def test_non_finite_loss_names_the_step(data, tmp_path, monkeypatch):
    real, calls = tt.train_step, []

    def poisoned(model, *a, **k):
        calls.append(1)
        if len(calls) == 7:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
        return real(model, *a, **k)

    monkeypatch.setattr(tt, "train_step", poisoned)
    with pytest.raises(tt.NonFiniteLoss, match="at step 7"):
        run_into(tmp_path / "run", data)
    assert _outputs_absent(tmp_path / "run")
    assert len(calls) == 10  # found at the next log interval, not at every step


# --------------------------------------------------------------------------------------------------
# the rule


def test_rule_plans_one_train_job_per_grid_point(tmp_path):
    from conftest import run_snakemake, write_config

    cfg = {
        "results_dir": "res", "corpora": {"sotu": {"source": "embedded", "max_train_docs": 4}},
        "tokenizers": {"bpe": {"type": "bpe", "vocab_size": 300}}, "models": ["tiny-xs", "tiny-s"],
        "weight_decays": [0.0, 0.1], "seeds": [0], "axes": {"grad_clip": [0.5, 1.0]},
        "train": {"steps": 5, "threads": 2},
    }
    write_config(tmp_path, cfg)
    res = run_snakemake(tmp_path, "-n", "--quiet", "rules")
    assert res.returncode == 0, res.stderr
    assert re.search(r"^train\s+8$", res.stdout, re.M), res.stdout  # 2 models x 2 decays x 2 clips x 1 seed
    res = run_snakemake(tmp_path, "-n", "-p", "res/sotu/tok~bpe/runs/model~tiny-s/weight_decay~0.1/grad_clip~0.5/seed~0/per_token.parquet")
    assert res.returncode == 0, res.stderr
    assert "rule train:" in res.stdout and "threads: 2" in res.stdout


# --------------------------------------------------------------------------------------------------
# the GPU benchmark's arithmetic (it needs CUDA to run)


def _gpu_bench():
    spec = importlib.util.spec_from_file_location("gpu_throughput", REPO / "benchmarks" / "gpu_throughput.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_benchmark_flops():
    from tokenfair.models import build_model
    from tokenfair.presets import resolve_model_spec

    g = _gpu_bench()
    # tiny-s: hidden 64, 2 layers, 4 heads (head_dim 16), 2 KV heads, FFN 256, untied, vocab 300
    m = build_model(resolve_model_spec("tiny-s"), 300)
    per_layer = 64 * 64 + 2 * 64 * 32 + 64 * 64 + 3 * 64 * 256 + 2 * 64
    assert g.matmul_parameters(m) == 2 * per_layer + 64 + 300 * 64  # all but the input embedding
    assert g.query_widths(m.config) == [64, 64]
    assert g.flops_per_token(g.matmul_parameters(m), [64, 64], 128) == 6 * g.matmul_parameters(m) + 12 * 128 * 128
    # tied openelm: the head counts although it is the embedding; per-layer query widths grow
    e = build_model(resolve_model_spec("tiny-openelm"), 300)
    assert g.matmul_parameters(e) == sum(p.numel() for p in e.parameters())
    widths = g.query_widths(e.config)
    assert widths == [n * 16 for n in e.config.num_query_heads] and widths[0] < widths[-1]
    assert g.mfu(1e9, 1e5, 989) == pytest.approx(1e14 / 989e12)
    if not torch.cuda.is_available():
        assert g.main(["--steps", "1"]) == 2  # fails clearly
