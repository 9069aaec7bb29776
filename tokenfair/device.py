"""The device of a run: which one (`pick_device`), the forward pass's precision (`autocast_for`), torch.compile
(`compile_decoder`), the micro-batch that fits its memory (`micro_batch_size`), waiting for it
(`synchronize`), its name in logs and run.json (`device_name`)."""

from __future__ import annotations

import contextlib
import logging

import torch

log = logging.getLogger(__name__)

MEMORY_SHARE = 0.9  # of a GPU's memory that a training step's estimated peak may take


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device is cuda, but this torch ({torch.__version__}) sees no CUDA device")
    if name == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("train.device is mps, but MPS is not available")
    return torch.device(name)


def autocast_for(device: torch.device, precision: str):
    """The forward-pass context: bf16 autocast for precision bf16 (auto: bf16 on CUDA), else nothing."""
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


def compile_decoder(decoder: torch.nn.Module, setting, device: torch.device) -> torch.nn.Module:
    """train.compile: `auto` compiles on CUDA only, true on every device, false never. Where torch.compile
    cannot work (a probe compile fails: no C++ compiler for the CPU, no triton for CUDA, an unsupported
    Python), a warning says why and the decoder trains eager."""
    if not (setting is True or (setting == "auto" and device.type == "cuda")):
        return decoder
    try:
        torch.compile(lambda t: t * 2 + 1)(torch.ones(8, device=device))
    except Exception as exc:  # any backend failure: report it, train eager
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        log.warning("train.compile %s: torch.compile is unavailable on %s (%s); training without it",
                    setting, device.type, reason)
        return decoder
    return torch.compile(decoder)


def micro_batch(spec: dict, n_emb: int, train: dict, device: torch.device) -> int:
    """Windows per micro-batch: train.batch_size on the CPU (and MPS); on CUDA the largest divisor of a step's
    batch_size x grad_accum windows whose estimated peak memory (presets.estimate_train_memory_gb) fits in
    MEMORY_SHARE of the GPU's."""
    if device.type != "cuda":
        return train["batch_size"]
    from .presets import estimate_train_memory_gb

    precision = "bf16" if isinstance(autocast_for(device, train["precision"]), torch.autocast) else "fp32"
    budget = MEMORY_SHARE * gpu_memory_gib(device)
    return micro_batch_size(train["batch_size"] * train["grad_accum"], lambda m: estimate_train_memory_gb(
        spec, n_emb, m, train["seq_len"], precision) <= budget)


def micro_batch_size(windows: int, fits) -> int:
    """The largest divisor of a step's `windows` whose micro-batch `fits(size)` (1 when none does): gradient
    accumulation over windows // size micro-batches keeps the step's batch."""
    return next((m for m in range(windows, 0, -1) if windows % m == 0 and fits(m)), 1)


def gpu_memory_gib(device: torch.device) -> float:
    return torch.cuda.get_device_properties(device).total_memory / 2**30
