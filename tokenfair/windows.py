"""The token windows of a run: training windows in a seeded random order per epoch (`WindowSampler`), the
fixed evaluation windows of each split (`eval_starts`) and the steps they are evaluated at (`eval_steps`),
batches on the device (`get_batch`), and a run's shards (`load_data`; the train shard cut to its first
train.train_docs documents when set)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import paths
from .errors import DataError
from .tokenization import docs_end, load_tokens


class WindowSampler:
    """Training windows [start, start + seq_len + 1) with start = k * seq_len, k < n_windows, in a random
    order per epoch. State (checkpointed): the generator state at the epoch's start, epoch, position."""

    def __init__(self, n_tokens: int, seq_len: int, seed: int):
        self.seq_len = seq_len
        self.n_windows = (n_tokens - 1) // seq_len
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.epoch, self.pos = 0, 0
        self._shuffle()

    def _shuffle(self):
        self.epoch_state = self.rng.bit_generator.state  # a fresh dict
        self.order = self.rng.permutation(self.n_windows)

    def next_starts(self, n: int) -> np.ndarray:
        out = np.empty(n, dtype=np.int64)
        i = 0
        while i < n:
            if self.pos == self.n_windows:
                self.epoch, self.pos = self.epoch + 1, 0
                self._shuffle()
            take = min(n - i, self.n_windows - self.pos)
            out[i : i + take] = self.order[self.pos : self.pos + take]
            i, self.pos = i + take, self.pos + take
        return out * self.seq_len

    def state_dict(self) -> dict:
        return {"epoch_state": self.epoch_state, "epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["epoch_state"]
        self._shuffle()
        self.epoch, self.pos = state["epoch"], state["pos"]


def eval_starts(n_tokens: int, seq_len: int, budget_tokens: int | None) -> np.ndarray:
    """Start offsets of the evaluation windows of a shard: ceil(budget / seq_len) windows of the packed grid
    (stride seq_len), evenly spaced over the shard; all of them when the shard is smaller or the budget is
    None. Depends only on the shard's length and seq_len, so every run of a corpus x tokenizer evaluates the
    same tokens. The windows [start, start + seq_len + 1) of the whole grid overlap by one token: their
    targets are every token of the shard but the first and the tail of fewer than seq_len tokens."""
    total = (n_tokens - 1) // seq_len
    k = total if budget_tokens is None else min(total, -(-budget_tokens // seq_len))
    return (np.arange(k, dtype=np.int64) * total // k) * seq_len


def eval_steps(steps: int, eval_every: int, schedule: str = "linear") -> list[int]:
    """The ascending steps evaluated, 0 and `steps` always among them. linear: the multiples of eval_every.
    log: round(steps^(k/n)) for k = 0..n with n = ceil(steps / eval_every), deduplicated (as many evaluations
    as linear at most, geometrically spaced: dense early, where the loss falls fastest)."""
    if schedule == "linear":
        return sorted({*range(0, steps, eval_every), steps})
    if schedule == "log":
        n = -(-steps // eval_every)
        return sorted({0, steps, *(round(steps ** (k / n)) for k in range(n + 1))})
    raise ValueError(f"eval_schedule {schedule!r}: expected linear or log")


def get_batch(shard: np.ndarray, starts: np.ndarray, seq_len: int, device: torch.device):
    """(inputs [B, T], targets [B*T]) as int64 on `device` for windows starting at `starts`."""
    idx = starts[:, None] + np.arange(seq_len + 1, dtype=np.int64)
    w = torch.from_numpy(shard[idx].astype(np.int64))
    if device.type == "cuda":
        w = w.pin_memory().to(device, non_blocking=True)
    elif device.type != "cpu":
        w = w.to(device)
    return w[:, :-1], w[:, 1:].reshape(-1)


def read_shard(path: str, seq_len: int, n_emb: int, end: int | None = None) -> np.ndarray:
    """A token shard (its first `end` tokens when given), checked: one window at least, no id beyond n_emb."""
    arr = load_tokens(path)[:end]
    if len(arr) < seq_len + 1:
        what = "tokens" if end is None else "tokens in its first train.train_docs documents"
        raise DataError(f"{path}: {len(arr)} {what}, fewer than one training window (train.seq_len {seq_len} + 1)")
    top = int(arr.max())
    if top >= n_emb:
        raise DataError(f"{path}: holds token id {top}, but the model's embedding has only {n_emb} rows")
    return arr


@dataclass
class Data:
    """The token shards of a run and its fixed evaluation windows."""

    train: np.ndarray                 # the train shard (training windows), or its first train.train_docs documents
    splits: list[str]                 # evaluation splits: train, validation, test, then ood-<corpus> sorted
    shards: dict[str, np.ndarray]     # split -> shard
    starts: dict[str, np.ndarray]     # split -> evaluation window starts
    final: dict[str, np.ndarray]      # split -> evaluation window starts at the last step (train.eval_train_final)


def load_data(train_tokens: str, eval_tokens: dict[str, str], train: dict, n_emb: int,
              train_index: str | None = None) -> Data:
    """A run's shards and evaluation windows. With train.train_docs, the train shard (training windows and the
    train evaluation split alike) is its prefix that ends with its train_docs-th document (`train_index`, the
    shard's index, says where)."""
    if "train" in eval_tokens:
        raise ValueError("eval_tokens holds the held-out splits; the train sample comes from train_tokens")
    seq_len = train["seq_len"]
    n_docs = train.get("train_docs")
    if n_docs is not None and train_index is None:
        raise ValueError("train.train_docs needs the train shard's index (train_index)")
    train_shard = read_shard(train_tokens, seq_len, n_emb, None if n_docs is None else docs_end(train_index, n_docs))
    unknown = [s for s in eval_tokens if not paths.is_split(s)]
    if unknown:
        raise ValueError(f"eval_tokens: {unknown[0]!r} is not a split name (validation, test, ood-<corpus>)")
    splits = ["train"] + [s for s in paths.SPLITS if s in eval_tokens] + sorted(
        s for s in eval_tokens if s not in paths.SPLITS)
    shards = {"train": train_shard, **{s: read_shard(eval_tokens[s], seq_len, n_emb) for s in splits[1:]}}
    budgets = {s: train["eval_train_tokens"] if s == "train" else train["eval_val_tokens"] for s in splits}
    budgets.update({s: train["eval_ood_tokens"] for s in splits if s.startswith(paths.OOD_PREFIX)})
    starts = {s: eval_starts(len(shards[s]), seq_len, budgets[s]) for s in splits}
    final = dict(starts)
    if train["eval_train_final"] == "all":
        final["train"] = eval_starts(len(train_shard), seq_len, None)
    return Data(train_shard, splits, shards, starts, final)
