"""The device choices of a run (tokenfair.device): torch.compile (train.compile) and its fallback, the
micro-batch that fits the GPU's memory; compiled and eager training steps agree (heavy: compiling takes a
minute on the CPU)."""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import pytest
import torch

from tokenfair import device as tdevice
from tokenfair import optim
from tokenfair import train as tt
from tokenfair.models import build_model
from tokenfair.presets import resolve_model_spec

CPU = torch.device("cpu")


def test_micro_batch_size_is_the_largest_divisor_that_fits():
    assert tdevice.micro_batch_size(16, lambda m: m <= 5) == 4
    assert tdevice.micro_batch_size(16, lambda m: True) == 16  # fewer accumulation steps when memory allows
    assert tdevice.micro_batch_size(16, lambda m: False) == 1
    assert tdevice.micro_batch_size(7, lambda m: m <= 6) == 1
    assert tdevice.micro_batch_size(12, lambda m: m * 1.5 <= 9) == 6
    train = {"batch_size": 8, "grad_accum": 4, "seq_len": 64, "precision": "auto"}
    assert tdevice.micro_batch(resolve_model_spec("tiny-s"), 512, train, CPU) == 8  # the CPU: as configured


def test_compile_setting_and_its_fallback(monkeypatch, caplog):
    decoder = build_model(resolve_model_spec("tiny-xs"), 300).get_decoder()
    assert tdevice.compile_decoder(decoder, False, CPU) is decoder
    assert tdevice.compile_decoder(decoder, "auto", CPU) is decoder  # auto: CUDA only

    def unavailable(*a, **k):
        raise RuntimeError("no working C++ compiler found\nmore detail")

    monkeypatch.setattr(torch, "compile", unavailable)
    with caplog.at_level(logging.WARNING, logger="tokenfair.device"):
        assert tdevice.compile_decoder(decoder, True, CPU) is decoder
    assert ("train.compile True: torch.compile is unavailable on cpu (RuntimeError: no working C++ compiler found); "
            "training without it") in caplog.text


@pytest.mark.heavy
def test_compiled_and_eager_steps_give_the_same_losses():
    def losses(compiled: bool) -> list[float]:
        torch.manual_seed(0)
        model = build_model(resolve_model_spec("tiny-xs"), 300, attn_implementation="sdpa")
        train = {"decay_group": "matrices", "weight_decay": 0.1, "lr": 3e-3, "betas": [0.9, 0.95], "eps": 1e-8}
        groups = optim.param_groups(model, train)
        opt = optim.make_optimizer(model, groups, train, CPU)
        decoder = tdevice.compile_decoder(model.get_decoder(), compiled, CPU)
        assert (decoder is not model.get_decoder()) is compiled
        rng = np.random.default_rng(0)
        out = []
        for _ in range(4):
            w = torch.from_numpy(rng.integers(0, 300, size=(8, 33)))
            loss, _ = tt.train_step(decoder, model.get_output_embeddings(), opt, [(w[:, :-1], w[:, 1:].reshape(-1))],
                                    autocast=contextlib.nullcontext(), grad_clip=1.0,
                                    params=optim.grad_norm_order(model, groups))
            out.append(float(loss))
        return out

    eager, compiled = losses(False), losses(True)
    assert compiled == pytest.approx(eager, rel=1e-4) and eager[-1] < eager[0]
