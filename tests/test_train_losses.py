"""The training objective and the per-id evaluation sums computed in chunks (tokenfair.losses) equal the plain
computation: loss, every gradient (no small entry dropped: ids that are not targets, ids seen once), per-id
sums. Real model (tiny-xs), real text ids."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from tokenfair import losses
from tokenfair.models import build_model
from tokenfair.presets import resolve_model_spec

VOCAB = 512


@pytest.fixture(scope="module")
def batch(speeches):
    """[8, 32] inputs and targets of real text ids (a byte-level BPE of 512 ids), with ids seen once."""
    from tokenfair.tokenization import encode_documents, train_bpe

    docs = [s.lower() for s in speeches[:3]]
    ids, _ = encode_documents(train_bpe(docs, VOCAB), docs, 0)
    w = torch.from_numpy(ids[: 8 * 33].astype(np.int64)).view(8, 33)
    x, y = w[:, :-1], w[:, 1:].reshape(-1)
    counts = torch.bincount(y, minlength=VOCAB)
    assert (counts == 1).sum() >= 5 and (counts == 0).sum() > 100  # rare ids and ids that are no target
    return x, y


def model(seed=0):
    torch.manual_seed(seed)
    return build_model(resolve_model_spec("tiny-xs"), VOCAB, attn_implementation="sdpa")


def loss_and_grads(m, x, y, **kw):
    m.zero_grad(set_to_none=True)
    loss = losses.training_loss(losses.final_hidden(m.get_decoder(), x), m.get_output_embeddings(), y,
                                autocast=contextlib.nullcontext(), **kw)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in m.named_parameters()}


@pytest.mark.parametrize("kw", [{}, {"label_smoothing": 0.1, "z_loss": 1e-3}])
def test_chunked_training_loss_equals_the_plain_one(batch, monkeypatch, kw):
    x, y = batch
    m = model()
    plain_loss, plain = loss_and_grads(m, x, y, **kw)
    assert plain_loss == losses.objective(m(input_ids=x).logits, y, **kw)  # one chunk: the plain objective
    monkeypatch.setattr(losses, "CHUNK_BYTES", 4 * VOCAB * 37)  # 37 tokens per chunk: 7 chunks, the last partial
    assert losses.chunk_rows(VOCAB) == 37
    loss, grads = loss_and_grads(m, x, y, **kw)
    torch.testing.assert_close(loss, plain_loss, rtol=1e-6, atol=0)
    for name, g in grads.items():
        torch.testing.assert_close(g, plain[name], rtol=1e-5, atol=1e-8, msg=name)
    head = grads["lm_head.weight"]
    counts = torch.bincount(y, minlength=VOCAB)
    assert (head[counts == 0].abs().sum(1) > 0).all()  # ids that are no target still get their (small) gradient
    torch.testing.assert_close(head[counts == 1], plain["lm_head.weight"][counts == 1], rtol=1e-5, atol=1e-9)


def test_chunked_evaluation_sums_equal_the_plain_ones(batch, monkeypatch):
    x, y = batch
    shard = torch.cat([x[:, 0:1], y.view(8, 32)], dim=1).reshape(-1).numpy().astype(np.uint32)
    starts = np.arange(8, dtype=np.int64) * 33
    m = model()
    kw = dict(device=torch.device("cpu"), autocast=contextlib.nullcontext(), acc_dtype=torch.float64, n_rows=VOCAB)
    plain = losses.evaluate(m, shard, starts, 32, 3, **kw)
    assert plain[1].sum() == 8 * 32 and (plain[1] == 1).sum() >= 5
    monkeypatch.setattr(losses, "CHUNK_BYTES", 4 * VOCAB * 10)  # 10 tokens per chunk
    chunked = losses.evaluate(m, shard, starts, 32, 3, **kw)
    assert torch.equal(chunked[1:], plain[1:])  # counts and argmax hits exactly
    torch.testing.assert_close(chunked[0], plain[0], rtol=1e-6, atol=1e-9)
