"""The losses computed from a model's logits: the training objective (`objective`) and the per-id accounting
of an evaluation (`evaluate`: summed cross-entropy, count and argmax hits of each vocabulary id)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .windows import get_batch


def objective(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0, z_loss: float = 0.0):
    """The training loss: cross-entropy of fp32 logits (label-smoothed by train.label_smoothing) plus
    train.z_loss x mean(logsumexp(logits)^2). Evaluation always uses the plain cross-entropy."""
    logits = logits.float().reshape(-1, logits.size(-1))
    loss = F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
    if z_loss > 0:
        loss = loss + z_loss * torch.logsumexp(logits, dim=-1).pow(2).mean()
    return loss


@torch.no_grad()
def evaluate(model, shard, starts, seq_len: int, batch_size: int, *, device, autocast, acc_dtype, n_rows: int):
    """Per-id sums over the windows at `starts`: a [3, n_rows] device tensor of (summed cross-entropy in nats,
    count, argmax hits) of each id as the target."""
    sums = torch.zeros(3, n_rows, dtype=acc_dtype, device=device)
    was_training = model.training
    model.eval()
    for i in range(0, len(starts), batch_size):
        x, y = get_batch(shard, starts[i : i + batch_size], seq_len, device)
        with autocast:
            logits = model(input_ids=x, use_cache=False).logits
        logits = logits.float().reshape(-1, logits.size(-1))
        loss = F.cross_entropy(logits, y, reduction="none")
        sums[0].index_add_(0, y, loss.to(acc_dtype))
        sums[1].index_add_(0, y, torch.ones_like(loss, dtype=acc_dtype))
        sums[2].index_add_(0, y, (logits.argmax(-1) == y).to(acc_dtype))
    model.train(was_training)
    return sums
