"""The device of a run: which one (`pick_device`), the forward pass's precision (`autocast_for`), waiting for
it (`synchronize`), its name in logs and run.json (`device_name`)."""

from __future__ import annotations

import contextlib

import torch


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
