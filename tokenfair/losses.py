"""The losses computed from a model's output head: the training objective (`training_loss`, `objective`) and
the per-id accounting of an evaluation (`evaluate`: summed cross-entropy, count and argmax hits of each
vocabulary id).

Both run the head over the decoder's last hidden state (`final_hidden`) CHUNK_BYTES of fp32 logits at a
time, over the flattened sequence, so that the full [tokens, vocab] fp32 logits never exist at once (a
paper-size batch at a 150k vocabulary would need gigabytes). Training: each chunk's objective is a sum under
activation checkpointing, so its logits are recomputed in the backward instead of kept; the gradients are
exact (no entry dropped). Evaluation: reduction 'none' per chunk, then index_add_ into the per-id sums. When
the logits fit in one chunk (every CPU preset) it is the plain computation, bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .windows import get_batch

CHUNK_BYTES = 1 << 28  # fp32 logits computed at once: 256 MiB


def chunk_rows(vocab: int) -> int:
    """Tokens per chunk: CHUNK_BYTES of fp32 logits at `vocab` columns (at least 1)."""
    return max(1, CHUNK_BYTES // (4 * vocab))


def final_hidden(decoder, x: torch.Tensor) -> torch.Tensor:
    """The decoder's (model.get_decoder(), maybe compiled) last hidden state [B, T, H]: what the head reads."""
    return decoder(input_ids=x, use_cache=False)[0]


def objective(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0, z_loss: float = 0.0,
              reduction: str = "mean"):
    """The training loss: cross-entropy of fp32 logits (label-smoothed by train.label_smoothing) plus
    train.z_loss x logsumexp(logits)^2, both averaged over the tokens (or summed: reduction 'sum').
    Evaluation always uses the plain cross-entropy."""
    logits = logits.float().reshape(-1, logits.size(-1))
    loss = F.cross_entropy(logits, targets, label_smoothing=label_smoothing, reduction=reduction)
    if z_loss > 0:
        z = torch.logsumexp(logits, dim=-1).pow(2)
        loss = loss + z_loss * (z.mean() if reduction == "mean" else z.sum())
    return loss


def training_loss(hidden: torch.Tensor, head: torch.nn.Module, targets: torch.Tensor, *, autocast,
                  label_smoothing: float = 0.0, z_loss: float = 0.0) -> torch.Tensor:
    """`objective` of head(hidden) for hidden [B, T, H] and targets [B*T], the head under `autocast`; chunked
    with activation checkpointing when the fp32 logits exceed one chunk."""
    n, rows = targets.numel(), chunk_rows(head.weight.shape[0])
    if n <= rows:
        with autocast:
            logits = head(hidden)
        return objective(logits, targets, label_smoothing, z_loss)
    flat = hidden.reshape(n, -1)
    total = 0.0
    for i in range(0, n, rows):
        total = total + checkpoint(_chunk_objective_sum, head, flat[i : i + rows], targets[i : i + rows], autocast,
                                   label_smoothing, z_loss, use_reentrant=False)
    return total / n


def _chunk_objective_sum(head, hidden, targets, autocast, label_smoothing, z_loss):
    with autocast:
        logits = head(hidden)
    return objective(logits, targets, label_smoothing, z_loss, reduction="sum")


@torch.no_grad()
def evaluate(model, shard, starts, seq_len: int, batch_size: int, *, device, autocast, acc_dtype, n_rows: int):
    """Per-id sums over the windows at `starts`: a [3, n_rows] device tensor of (summed cross-entropy in nats,
    count, argmax hits) of each id as the target."""
    sums = torch.zeros(3, n_rows, dtype=acc_dtype, device=device)
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    was_training = model.training
    model.eval()
    for i in range(0, len(starts), batch_size):
        x, y = get_batch(shard, starts[i : i + batch_size], seq_len, device)
        with autocast:
            hidden = final_hidden(decoder, x)
        rows = chunk_rows(head.weight.shape[0])
        chunks = [(hidden, y)] if len(y) <= rows else [
            (h, y[j : j + rows]) for j, h in zip(range(0, len(y), rows), hidden.reshape(len(y), -1).split(rows))]
        for h, t in chunks:
            with autocast:
                logits = head(h)
            add_id_sums(sums, logits.float().reshape(-1, logits.size(-1)), t)
    model.train(was_training)
    return sums


def add_id_sums(sums: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
    """Add each target id's cross-entropy, count and argmax hits (fp32 logits [N, V], targets [N]) into the
    [3, rows] sums."""
    loss = F.cross_entropy(logits, targets, reduction="none")
    sums[0].index_add_(0, targets, loss.to(sums.dtype))
    sums[1].index_add_(0, targets, torch.ones_like(loss, dtype=sums.dtype))
    sums[2].index_add_(0, targets, (logits.argmax(-1) == targets).to(sums.dtype))
