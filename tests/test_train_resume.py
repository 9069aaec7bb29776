"""Checkpoints for real: a training process SIGKILLed at any point, or sent SIGTERM (SLURM time limit), and
rerun finishes with a per_token.parquet byte-identical to an uninterrupted run's (CPU, same thread count).

The killed runs are subprocesses whose steps are slowed by a sleep (wrapped around tokenfair.train.train_step)
so that the kill lands mid-run; the numbers they compute are untouched."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tokenfair import paths
from tokenfair import train as tt
from tokenfair.runio import CHECKPOINT_FILE
from test_train import data, settings_for, tensorboard_scalars  # noqa: F401  (data: the shared session fixture)

RESUME = {"steps": 40, "checkpoint_every": 5}
CHILD = """
import json, logging, sys, time
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
import tokenfair.train as tt
args = json.load(open(sys.argv[1]))
real = tt.train_step
def slow(*a, **k):
    time.sleep(float(sys.argv[2]))
    return real(*a, **k)
tt.train_step = slow
tt.run(args["settings"], out_dir=args["out"], **args["data"])
"""


@pytest.fixture(scope="module")
def ref(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("ref") / "run"
    tt.run(settings_for(**RESUME), out_dir=str(out), **data)
    return out


def spawn(tmp: Path, out: Path, data: dict, settings: dict, delay: float = 0.03):
    (tmp / "child.py").write_text(CHILD)
    (tmp / "args.json").write_text(json.dumps({"settings": settings, "out": str(out), "data": data}))
    err = open(tmp / "child.err", "a")
    proc = subprocess.Popen([sys.executable, str(tmp / "child.py"), str(tmp / "args.json"), str(delay)],
                            stdout=subprocess.DEVNULL, stderr=err)
    err.close()
    return proc


def wait_for(cond, proc, tmp: Path, timeout: float = 90):
    t0 = time.monotonic()
    while not cond():
        if proc.poll() is not None:
            pytest.fail(f"the training process ended (rc {proc.returncode}) first:\n{(tmp / 'child.err').read_text()}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            pytest.fail("timed out waiting for the training process")
        time.sleep(0.005)


def ckpt_step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=False)["step"]


def assert_same_as(ref: Path, out: Path):
    assert (out / paths.RUN_PER_TOKEN).read_bytes() == (ref / paths.RUN_PER_TOKEN).read_bytes()
    assert (out / paths.RUN_NORMS).read_bytes() == (ref / paths.RUN_NORMS).read_bytes()  # the norms of every eval
    cols = lambda p: [r.split(",")[:4] for r in (p / paths.RUN_LOG).read_text().splitlines()]  # noqa: E731
    assert cols(out) == cols(ref)  # step, loss, lr, grad_norm: identical too
    assert not (out / paths.RUN_CHECKPOINT).exists()
    # TensorBoard: every step once, the same values (tokens/s aside: a timing)
    tb, tb_ref = tensorboard_scalars(out), tensorboard_scalars(ref)
    steps = lambda events: [s for s, _ in events]  # noqa: E731
    assert {t: steps(v) for t, v in tb.items()} == {t: steps(v) for t, v in tb_ref.items()}
    assert {t: v for t, v in tb.items() if t != "training/tokens_per_s"} == {
        t: v for t, v in tb_ref.items() if t != "training/tokens_per_s"}
    assert len(list((out / paths.RUN_TENSORBOARD).iterdir())) == 1


def test_sigkill_then_rerun_is_identical(ref, data, tmp_path):
    out = tmp_path / "run"
    ck = out / paths.RUN_CHECKPOINT / CHECKPOINT_FILE
    settings = settings_for(**RESUME)
    # 1: killed as soon as its first checkpoint exists
    p = spawn(tmp_path, out, data, settings)
    wait_for(ck.exists, p, tmp_path)
    p.kill()
    p.wait()
    first = ckpt_step(ck)
    assert 5 <= first < 40 and not (out / paths.RUN_PER_TOKEN).exists()
    # 2: resumes, killed mid-step a little after its next checkpoint
    mtime = ck.stat().st_mtime_ns
    p = spawn(tmp_path, out, data, settings)
    wait_for(lambda: ck.stat().st_mtime_ns != mtime, p, tmp_path)
    time.sleep(0.05)
    p.kill()
    p.wait()
    assert "resumed from" in (tmp_path / "child.err").read_text()
    second = ckpt_step(ck)
    assert first < second < 40 and not (out / paths.RUN_PER_TOKEN).exists()
    # a save that was killed half-way leaves a temporary file: ignored and removed
    (ck.parent / ".checkpoint.abc123.tmp.pt").write_bytes(b"half a checkpoint")
    # 3: the rerun finishes
    info = tt.run(settings, out_dir=str(out), **data)
    assert info["timings"]["resumes"] == 2  # by the second process, then by this one
    assert_same_as(ref, out)


def test_sigterm_checkpoints_at_once_and_exits_nonzero(ref, data, tmp_path):
    out = tmp_path / "run"
    ck = out / paths.RUN_CHECKPOINT / CHECKPOINT_FILE
    settings = settings_for(**{**RESUME, "checkpoint_every": 1000})  # no periodic checkpoint
    p = spawn(tmp_path, out, data, settings)
    wait_for(lambda: "step 10:" in (tmp_path / "child.err").read_text(), p, tmp_path)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=60) != 0
    err = (tmp_path / "child.err").read_text()
    assert "Preempted" in err and "signal 15" in err
    assert 10 <= ckpt_step(ck) < 40
    assert not any((out / f).exists() for f in (paths.RUN_PER_TOKEN, paths.RUN_JSON, paths.RUN_LOG, paths.RUN_MODEL))
    info = tt.run(settings, out_dir=str(out), **data)
    assert info["timings"]["resumes"] == 1
    assert_same_as(ref, out)


def _preempt_at(monkeypatch, call: int):
    real, calls = tt.train_step, []

    def step(*a, **k):
        calls.append(1)
        if len(calls) == call:
            signal.raise_signal(signal.SIGTERM)
        return real(*a, **k)

    monkeypatch.setattr(tt, "train_step", step)
    return real


def test_checkpoint_of_other_settings_is_not_resumed(ref, data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    settings = settings_for(**RESUME)
    real = _preempt_at(monkeypatch, 12)
    with pytest.raises(tt.Preempted, match="at step 12"):
        tt.run(settings, out_dir=str(out), **data)
    assert ckpt_step(out / paths.RUN_CHECKPOINT / CHECKPOINT_FILE) == 12
    monkeypatch.setattr(tt, "train_step", real)
    other = settings_for(**RESUME, lr=1e-3)
    info = tt.run(other, out_dir=str(out), **data)  # a changed lr: starts over
    assert info["timings"]["resumes"] == 0 and not (out / paths.RUN_CHECKPOINT).exists()
    # same settings, another thread count and checkpoint interval: resumed
    _preempt_at(monkeypatch, 12)
    with pytest.raises(tt.Preempted):
        tt.run(settings, out_dir=str(out), **data)
    monkeypatch.setattr(tt, "train_step", real)
    info = tt.run(settings_for(**{**RESUME, "checkpoint_every": 7, "threads": 2}), out_dir=str(out), **data)
    assert info["timings"]["resumes"] == 1
    torch.set_num_threads(1)


def test_frequency_aware_run_resumes_identically(data, tmp_path, monkeypatch):
    """The optimizer's per-row decay scales survive a preemption (they are the run's own, not the checkpoint's)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    freq = tmp_path / "train.parquet"
    counts = np.bincount(np.load(data["train_tokens"]), minlength=512).astype(np.int64)
    pq.write_table(pa.table({"token_id": np.arange(512, dtype=np.int64), "count": counts}), freq)
    settings = settings_for(**RESUME, weight_decay=1.0, embedding_decay_alpha=0.5)
    tt.run(settings, out_dir=str(tmp_path / "ref"), train_frequency=str(freq), **data)
    real = _preempt_at(monkeypatch, 12)
    with pytest.raises(tt.Preempted):
        tt.run(settings, out_dir=str(tmp_path / "run"), train_frequency=str(freq), **data)
    monkeypatch.setattr(tt, "train_step", real)
    info = tt.run(settings, out_dir=str(tmp_path / "run"), train_frequency=str(freq), **data)
    assert info["timings"]["resumes"] == 1 and info["row_decay_parameters"]
    assert_same_as(tmp_path / "ref", tmp_path / "run")


def test_run_killed_after_writing_events_past_its_checkpoint(ref, data, tmp_path, monkeypatch):
    """Killed at step 17 (checkpoint at 10, log rows at 15 already in TensorBoard): the rerun resumes at 10 and
    its TensorBoard folder holds every step once, as an uninterrupted run's."""
    out = tmp_path / "run"
    settings = settings_for(**{**RESUME, "checkpoint_every": 10})
    real, calls = tt.train_step, []

    def dying(*a, **k):
        calls.append(1)
        if len(calls) == 17:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(tt, "train_step", dying)
    with pytest.raises(KeyboardInterrupt):
        tt.run(settings, out_dir=str(out), **data)
    assert [s for s, _ in tensorboard_scalars(out)["training/loss"]] == [5, 10, 15]
    monkeypatch.setattr(tt, "train_step", real)
    info = tt.run(settings, out_dir=str(out), **data)
    assert info["timings"]["resumes"] == 1
    assert_same_as(ref, out)
