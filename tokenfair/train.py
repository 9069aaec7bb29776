"""The training stage: one grid point's model trained from scratch, evaluated per vocabulary id.

`run(settings, ...)` is the whole job, readable top to bottom (nanoGPT style); `settings` is plain data,
`tokenfair.config.run_settings(cfg, point)`. What it does:

1. Seed torch, build the model at the tokenizer's vocabulary (`tokenfair.models.build_model`, SDPA
   attention), AdamW with decoupled decay on an explicit parameter group (`train.decay_group`), linear
   warmup then cosine to `min_lr_ratio`, gradient clipping, gradient accumulation.
2. Training windows: the train shard cut into windows of seq_len + 1 tokens at stride seq_len (every token
   is a target once per epoch), visited in a fresh random order each epoch; the order comes from a numpy
   PCG64 seeded by the run seed (the same for every decay of a seed: paired comparisons).
3. Evaluation at step 0, every `eval_every` steps and the final step, on a fixed sample of the train shard
   (`eval_train_tokens`: evenly spaced windows, chosen from the shard alone, never from the seed, so every
   run of a corpus x tokenizer sees the same windows) and on the validation (and test) shard
   (`eval_val_tokens`). Per vocabulary id: summed cross-entropy (nats), count, argmax hits, accumulated on
   the device with index_add_ in float64 (float32 on MPS) from fp32 logits.
4. No per-step host synchronisation: step losses and gradient norms stay on the device and are read, with
   the pending evaluation sums, once per log interval ("flush"); a non-finite loss or gradient norm is then
   reported with the step it first occurred at. Evaluation ends with one device synchronisation so that the
   throughput in the log excludes it.
5. Checkpoints every `checkpoint_every` steps into `<run>/ckpt/` (not a Snakemake output, so it survives a
   failed or killed job); a rerun resumes from it and ends bit-identical (CPU, same thread count) to an
   uninterrupted run. SIGTERM (SLURM time limit, preemption) checkpoints at the next step boundary and
   exits non-zero (`Preempted`). The checkpoint is removed once every output is complete.
6. Outputs, each written under a temporary name and renamed (tokenfair.io): model/ (save_pretrained + the
   fast tokenizer), run.json, train_log.csv, norms.parquet (embedding / unembedding row norms per id), and
   per_token.parquet last.

Regularizers and mitigations (train settings, so grid axes): decay_group, tie_embeddings (config side),
embedding_decay_alpha (frequency-aware per-row decay of the embedding matrices, RowDecay), dropout
(add_dropout + attention dropout), label_smoothing and z_loss (objective).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io as _io
import json
import logging
import math
import os
import platform
import random
import shutil
import signal
import subprocess
import threading
import time

import numpy as np
import torch
import torch.nn.functional as F

from . import export, paths
from .errors import DataError, TokenfairError
from .io import atomic_dir, atomic_path, write_json, write_parquet
from .tokenization import load_tokenizer, load_tokens, special_ids, vocab_size

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_VERSION = 1
LOG_COLUMNS = ("step", "loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s")
# Train settings that change how a run executes but not what it computes: a checkpoint written under
# other values of these is still resumed (bit-identity across a resume needs the same thread count).
EXECUTION_KEYS = ("device", "threads", "compile", "checkpoint_every", "log_every")


class NonFiniteLoss(TokenfairError, RuntimeError):
    """The training loss or gradient norm became NaN/inf; the message names the step."""


class Preempted(RuntimeError):
    """SIGTERM arrived: a checkpoint was written and the job must be rerun (requeued) to finish."""


# --------------------------------------------------------------------------------------------------
# data: training windows and the fixed evaluation windows


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


def eval_starts(n_tokens: int, seq_len: int, budget_tokens: int) -> np.ndarray:
    """Start offsets of the evaluation windows of a shard: ceil(budget / seq_len) windows of the packed grid
    (stride seq_len), evenly spaced over the shard; all of them when the shard is smaller. Depends only on
    the shard's length and seq_len, so every run of a corpus x tokenizer evaluates the same tokens."""
    total = (n_tokens - 1) // seq_len
    k = min(total, -(-budget_tokens // seq_len))
    return (np.arange(k, dtype=np.int64) * total // k) * seq_len


def get_batch(shard: np.ndarray, starts: np.ndarray, seq_len: int, device: torch.device):
    """(inputs [B, T], targets [B*T]) as int64 on `device` for windows starting at `starts`."""
    idx = starts[:, None] + np.arange(seq_len + 1, dtype=np.int64)
    w = torch.from_numpy(shard[idx].astype(np.int64))
    if device.type == "cuda":
        w = w.pin_memory().to(device, non_blocking=True)
    elif device.type != "cpu":
        w = w.to(device)
    return w[:, :-1], w[:, 1:].reshape(-1)


def _shard(path: str, seq_len: int, n_emb: int) -> np.ndarray:
    arr = load_tokens(path)
    if len(arr) < seq_len + 1:
        raise DataError(f"{path}: {len(arr)} tokens, fewer than one training window (train.seq_len {seq_len} + 1)")
    top = int(arr.max())
    if top >= n_emb:
        raise DataError(f"{path}: holds token id {top}, but the model's embedding has only {n_emb} rows")
    return arr


# --------------------------------------------------------------------------------------------------
# model, optimizer, schedule


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


def embedding_parameter_names(model: torch.nn.Module, which: str = "both") -> list[str]:
    """Names of the input embedding and output head weights (one name when they are tied); `which`
    "unembedding": the output head's only (train.embedding_decay_rows)."""
    mods = (model.get_output_embeddings(),) if which == "unembedding" else (
        model.get_input_embeddings(), model.get_output_embeddings())
    ids = {id(m.weight) for m in mods if m is not None}
    return [n for n, p in model.named_parameters() if id(p) in ids]


def decay_groups(model: torch.nn.Module, mode: str) -> tuple[list[str], list[str]]:
    """(names of the parameters AdamW decays, names of those it does not) for `train.decay_group`:
    `all`; `matrices` (every >= 2-D parameter, embeddings and head included; norms and biases not);
    `matrices_no_embeddings` (matrices but not the input embedding nor the output head)."""
    embeddings = set(embedding_parameter_names(model))
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if mode == "all":
            yes = True
        elif mode == "matrices":
            yes = p.ndim >= 2
        elif mode == "matrices_no_embeddings":
            yes = p.ndim >= 2 and name not in embeddings
        else:
            raise ValueError(f"unknown train.decay_group {mode!r}")
        (decay if yes else no_decay).append(name)
    return decay, no_decay


def row_decay_scales(train_counts: np.ndarray, alpha: float, n_rows: int) -> np.ndarray:
    """Frequency-aware decay (train.embedding_decay_alpha): per embedding row i, s_i proportional to
    (train count of id i + 1)^alpha, normalised to mean 1 over the n_rows rows (rows beyond the tokenizer's
    ids count 0). alpha 0 gives every row 1: plain decay."""
    counts = np.zeros(n_rows, dtype=np.float64)
    n = min(n_rows, len(train_counts))
    counts[:n] = np.asarray(train_counts, dtype=np.float64)[:n]
    s = (counts + 1.0) ** float(alpha)
    return s / s.mean()


def make_optimizer(model: torch.nn.Module, train: dict, device: torch.device, row_scales: np.ndarray | None = None):
    """AdamW (decoupled decay: p <- p - lr * weight_decay * p each step) over the decay / no-decay groups.

    With `row_scales` (train.embedding_decay_alpha), the embedding and unembedding matrices leave AdamW's
    decay and form a third group whose rows decay at weight_decay x row_scales (RowDecay), applied where
    AdamW applies its own: right before the update."""
    decay, no_decay = decay_groups(model, train["decay_group"])
    named = dict(model.named_parameters())
    row = []
    if row_scales is not None:
        row = [n for n in embedding_parameter_names(model, train.get("embedding_decay_rows", "both")) if n in decay]
    wd = float(train["weight_decay"])
    groups = [
        {"params": [named[n] for n in decay if n not in row], "weight_decay": wd},
        {"params": [named[n] for n in no_decay], "weight_decay": 0.0},
        {"params": [named[n] for n in row], "weight_decay": 0.0},
    ]
    row_decay = RowDecay(groups[2], wd, row_scales, device) if row else None
    groups = [g for g in groups if g["params"]]
    kwargs = {"fused": True} if device.type == "cuda" else {}
    opt = torch.optim.AdamW(groups, lr=train["lr"], betas=tuple(train["betas"]), eps=train["eps"], **kwargs)
    return opt, {"decay": [n for n in decay if n not in row], "no_decay": no_decay, "row_decay": row}, row_decay


class RowDecay:
    """Decoupled per-row decay of the embedding matrices: row i <- row i x (1 - lr x weight_decay x s_i), with
    lr the group's current rate (the schedule's), before the AdamW update (as AdamW orders its own decay)."""

    def __init__(self, group: dict, weight_decay: float, scales: np.ndarray, device: torch.device):
        self.group, self.weight_decay = group, weight_decay
        self.scales = torch.from_numpy(np.asarray(scales, dtype=np.float64)).to(device)

    @torch.no_grad()
    def apply(self) -> None:
        if self.weight_decay == 0:
            return
        for p in self.group["params"]:
            factor = (1.0 - self.group["lr"] * self.weight_decay * self.scales[: p.shape[0]]).to(p.dtype)
            p.mul_(factor.unsqueeze(1))


def lr_factor(step: int, train: dict) -> float:
    """Multiplier of train.lr for update `step` (0-based): linear warmup over warmup_steps, then cosine from
    1 to min_lr_ratio at the last step."""
    warmup, steps, floor = train["warmup_steps"], train["steps"], train["min_lr_ratio"]
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - 1 - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def count_parameters(model: torch.nn.Module, n_ids: int) -> int:
    """Parameters of the model at the tokenizer's vocabulary (tied weights once; embedding rows beyond the
    tokenizer's ids, when a spec fixes a larger vocab_size, not counted)."""
    from .models import count_parameters as count_all

    total = count_all(model)
    seen = set()
    for m in (model.get_input_embeddings(), model.get_output_embeddings()):
        if m is not None and id(m.weight) not in seen:
            seen.add(id(m.weight))
            total -= max(0, m.weight.shape[0] - n_ids) * m.weight.shape[1]
    return total


# --------------------------------------------------------------------------------------------------
# one training step and one evaluation: no host synchronisation in either


def _grad_norm(params) -> torch.Tensor:
    norms = [torch.linalg.vector_norm(p.grad) for p in params if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms))


def objective(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0, z_loss: float = 0.0):
    """The training loss: cross-entropy of fp32 logits (label-smoothed by train.label_smoothing) plus
    train.z_loss x mean(logsumexp(logits)^2). Evaluation always uses the plain cross-entropy."""
    logits = logits.float().reshape(-1, logits.size(-1))
    loss = F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
    if z_loss > 0:
        loss = loss + z_loss * torch.logsumexp(logits, dim=-1).pow(2).mean()
    return loss


def add_dropout(model: torch.nn.Module, p: float) -> None:
    """train.dropout beyond attention dropout (a config field): on the token embeddings' output and on the
    hidden state entering the output head, in training mode only."""
    if p <= 0:
        return
    model.get_input_embeddings().register_forward_hook(lambda m, args, out: F.dropout(out, p, m.training))
    model.get_output_embeddings().register_forward_pre_hook(
        lambda m, args: (F.dropout(args[0], p, m.training), *args[1:]))


def train_step(model, optimizer, micro_batches, *, autocast, grad_clip: float, params, loss_kw=None, row_decay=None):
    """Forward, training objective (fp32 logits), backward over the micro batches, clip, AdamW step (and the
    per-row embedding decay, if any). Returns (mean objective, pre-clip gradient norm) as device tensors."""
    total = None
    for x, y in micro_batches:
        with autocast:
            logits = model(input_ids=x, use_cache=False).logits
        loss = objective(logits, y, **(loss_kw or {}))
        (loss / len(micro_batches)).backward()
        total = loss.detach() if total is None else total + loss.detach()
    if grad_clip > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    else:
        grad_norm = _grad_norm(params)
    if row_decay is not None:
        row_decay.apply()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total / len(micro_batches), grad_norm


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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


# --------------------------------------------------------------------------------------------------
# checkpoints


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(ckpt_dir: str, state: dict) -> str:
    """torch.save under a temporary name, fsync, rename: a kill at any point leaves the previous one."""
    os.makedirs(ckpt_dir, exist_ok=True)
    path = os.path.join(ckpt_dir, CHECKPOINT_FILE)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    return path


def load_checkpoint(ckpt_dir: str, fingerprint: str) -> dict | None:
    """The checkpoint in ckpt_dir if it belongs to this run (same fingerprint), else None. Leftover
    temporary files of a save that was killed are removed."""
    if not os.path.isdir(ckpt_dir):
        return None
    for name in os.listdir(ckpt_dir):
        if name.startswith("."):
            os.remove(os.path.join(ckpt_dir, name))
    path = os.path.join(ckpt_dir, CHECKPOINT_FILE)
    if not os.path.isfile(path):
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a file from another torch, or damaged: start over
        log.warning("%s: cannot read the checkpoint (%s); starting from step 0", path, exc)
        return None
    if state.get("version") != CHECKPOINT_VERSION or state.get("fingerprint") != fingerprint:
        log.warning("%s: checkpoint of other settings or inputs; ignored, starting from step 0", path)
        return None
    return state


def fingerprint(settings: dict, inputs: dict, n_ids: int, n_emb: int) -> str:
    """What a checkpoint must match to be resumed: the settings that change results, the inputs' sizes."""
    train = {k: v for k, v in settings["train"].items() if k not in EXECUTION_KEYS}
    data = {"settings": {**settings, "train": train}, "n_ids": n_ids, "n_emb": n_emb,
            "inputs": {k: os.path.getsize(p) for k, p in sorted(inputs.items())}}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


# --------------------------------------------------------------------------------------------------
# outputs


def per_token_table(rows: list, n_ids: int, split_order: list[str]):
    """The per_token.parquet table (docs/architecture.md) from [(step, split, [3, n] sums)]."""
    import pyarrow as pa

    rows = sorted(rows, key=lambda r: (r[0], split_order.index(r[1])))
    n = len(rows)
    sums = np.stack([r[2][:, :n_ids] for r in rows]) if rows else np.zeros((0, 3, n_ids))
    split_idx = np.repeat(np.array([split_order.index(r[1]) for r in rows], dtype=np.int32), n_ids)
    split = pa.DictionaryArray.from_arrays(pa.array(split_idx, pa.int32()), pa.array(split_order, pa.string()))
    return pa.table({
        "step": pa.array(np.repeat(np.array([r[0] for r in rows], dtype=np.int32), n_ids), pa.int32()),
        "split": split.cast(pa.string()),
        "token_id": pa.array(np.tile(np.arange(n_ids, dtype=np.int32), n), pa.int32()),
        "loss_sum": pa.array(sums[:, 0].reshape(-1).astype(np.float64), pa.float64()),
        "count": pa.array(np.rint(sums[:, 1]).reshape(-1).astype(np.int64), pa.int64()),
        "correct": pa.array(np.rint(sums[:, 2]).reshape(-1).astype(np.int64), pa.int64()),
    })


def embedding_norms(model: torch.nn.Module, n_ids: int):
    """norms.parquet: per tokenizer id, the L2 norm of its input-embedding row and of its output-head row."""
    import pyarrow as pa

    with torch.no_grad():
        emb = model.get_input_embeddings().weight[:n_ids].float()
        head = model.get_output_embeddings().weight[:n_ids].float()
        e = torch.linalg.vector_norm(emb, dim=1).double().cpu().numpy()
        u = torch.linalg.vector_norm(head, dim=1).double().cpu().numpy()
    return pa.table({"token_id": pa.array(np.arange(n_ids, dtype=np.int64)), "embedding_norm": pa.array(e),
                     "unembedding_norm": pa.array(u)})


def tied(model: torch.nn.Module) -> bool:
    out = model.get_output_embeddings()
    return out is not None and out.weight is model.get_input_embeddings().weight


def hf_tokenizer(tokenizer_json: str, ids: dict):
    """The tokenizer as a transformers fast tokenizer, with eos/pad set from the end-of-document and padding ids."""
    from transformers import PreTrainedTokenizerFast

    tok = load_tokenizer(tokenizer_json)
    kwargs = {}
    if ids.get("eod") is not None:
        kwargs["eos_token"] = tok.id_to_token(ids["eod"])
    pad = ids.get("pad") if ids.get("pad") is not None else ids.get("eod")
    if pad is not None:
        kwargs["pad_token"] = tok.id_to_token(pad)
    return PreTrainedTokenizerFast(tokenizer_file=tokenizer_json, **kwargs)


def save_model(model, tokenizer, model_dir: str) -> None:
    """save_pretrained (config + safetensors) and the tokenizer into a temporary folder, then rename it."""
    with atomic_dir(model_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


def write_log_csv(rows: list[dict], path: str) -> None:
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(buf.getvalue())


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("tokenfair", "torch", "transformers", "tokenizers", "numpy", "pyarrow", "safetensors"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    out["cuda"] = torch.version.cuda
    return out


def git_commit() -> str | None:
    """The commit of the checkout this package runs from, or None (not a git checkout, no git)."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        res = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode != 0:
        return None
    return res.stdout.strip() or None


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


# --------------------------------------------------------------------------------------------------
# the job


@contextlib.contextmanager
def _sigterm_flag():
    """A dict whose 'signal' is set when SIGTERM arrives (handler installed in the main thread only)."""
    flag = {"signal": None}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        flag["signal"] = signum
        log.warning("received signal %d: checkpointing at the next step boundary", signum)

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, old)


def run(settings: dict, train_tokens: str, eval_tokens: dict[str, str], tokenizer_json: str, out_dir: str,
        tokenizer_spec: dict | None = None, train_frequency: str | None = None, lowercase: bool = False) -> dict:
    """Train one grid point and write its outputs into `out_dir` (the run folder). Returns run.json's content.

    settings: `run_settings(cfg, point)`; train_tokens: tokens/train.npy; eval_tokens: split -> shard for
    the held-out splits (validation, test, ood-<corpus>); tokenizer_json: the corpus tokenizer;
    tokenizer_spec: its config entry (for eod_token / pad_token of a given tokenizer); train_frequency: the
    train frequency table, needed by train.embedding_decay_alpha; lowercase: the corpus's `lowercase` (the
    model folder's tokenizer lowercases then, as the corpus did).
    """
    t_start = time.perf_counter()
    train = settings["train"]
    seq_len, steps, seed = train["seq_len"], train["steps"], train["seed"]
    if "train" in eval_tokens:
        raise ValueError("eval_tokens holds the held-out splits; the train sample comes from train_tokens")
    os.makedirs(out_dir, exist_ok=True)
    ckpt_dir = os.path.join(out_dir, paths.RUN_CHECKPOINT)

    # --- device, threads, tokenizer, model ------------------------------------------------------------
    torch.set_num_threads(train["threads"])
    device = pick_device(train["device"])
    autocast = autocast_for(device, train["precision"])
    acc_dtype = torch.float32 if device.type == "mps" else torch.float64
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    tok = load_tokenizer(tokenizer_json)
    n_ids = vocab_size(tok)
    spec = dict(settings["model"])
    n_emb = int(spec.pop("vocab_size", None) or n_ids)
    if n_ids > n_emb:
        raise DataError(
            f"{tokenizer_json}: the tokenizer has {n_ids} ids, more than model {settings['model_name']}'s "
            f"embedding ({n_emb} rows, models.{settings['model_name']}.vocab_size)"
        )
    train_shard = _shard(train_tokens, seq_len, n_emb)
    unknown = [s for s in eval_tokens if not paths.is_split(s)]
    if unknown:
        raise ValueError(f"eval_tokens: {unknown[0]!r} is not a split name (validation, test, ood-<corpus>)")
    eval_splits = ["train"] + [s for s in paths.SPLITS if s in eval_tokens] + sorted(
        s for s in eval_tokens if s not in paths.SPLITS)
    shards = {"train": train_shard, **{s: _shard(eval_tokens[s], seq_len, n_emb) for s in eval_splits[1:]}}
    budgets = {s: train["eval_train_tokens"] if s == "train" else train["eval_val_tokens"] for s in eval_splits}
    starts = {s: eval_starts(len(shards[s]), seq_len, budgets[s]) for s in eval_splits}

    from .models import build_model

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    extra = {"attention_dropout": float(train["dropout"])} if train["dropout"] > 0 else {}
    model = build_model(spec, n_emb, attn_implementation="sdpa", **extra).to(device)
    add_dropout(model, float(train["dropout"]))
    model.train()
    n_params = count_parameters(model, n_ids)
    row_scales = None
    if train["embedding_decay_alpha"] is not None:
        if train_frequency is None:
            raise ValueError("train.embedding_decay_alpha needs the train frequency table (train_frequency)")
        from .counts import dense_counts  # numba's import: only for the runs that need the counts

        row_scales = row_decay_scales(dense_counts(train_frequency), train["embedding_decay_alpha"], n_emb)
        worst = train["lr"] * float(train["weight_decay"]) * float(row_scales.max())
        if worst >= 1:
            raise DataError(
                f"{settings['run']}: train.embedding_decay_alpha {train['embedding_decay_alpha']} gives the most "
                f"frequent id's row a decay of lr x weight_decay x s = {worst:.3g} per step (>= 1 flips its sign); "
                f"lower embedding_decay_alpha, weight_decay or lr"
            )
    optimizer, groups, row_decay = make_optimizer(model, train, device, row_scales)
    loss_kw = {"label_smoothing": float(train["label_smoothing"]), "z_loss": float(train["z_loss"])}
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, train))
    params = [p for g in optimizer.param_groups for p in g["params"]]
    step_model = torch.compile(model) if train["compile"] else model
    sampler = WindowSampler(len(train_shard), seq_len, seed)
    tokens_per_step = train["batch_size"] * train["grad_accum"] * seq_len
    log.info("%s: %s with %d parameters at %d ids on %s (%d threads); %d steps of %d tokens; %s",
             settings["run"], settings["model_name"], n_params, n_ids, _device_name(device), train["threads"],
             steps, tokens_per_step, ", ".join(f"{s} eval {len(starts[s]) * seq_len} tokens" for s in eval_splits))

    # --- state that a checkpoint carries ------------------------------------------------------------
    rows: list = []        # evaluation results on the host: (step, split, np [3, n_emb])
    log_rows: list = []    # train_log.csv rows
    interval = {"loss": 0.0, "grad_norm": 0.0, "n": 0, "train_s": 0.0}  # since the last log row
    totals = {"train_s": 0.0, "eval_s": 0.0, "checkpoint_s": 0.0, "elapsed_s": 0.0, "resumes": 0}
    step = 0
    inputs = {"train": train_tokens, "tokenizer": tokenizer_json, **eval_tokens,
              **({"frequency": train_frequency} if row_scales is not None else {})}
    fp = fingerprint(settings, inputs, n_ids, n_emb)
    state = load_checkpoint(ckpt_dir, fp)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.load_state_dict(state["sampler"])
        _set_rng_state(state["rng"], device)
        rows, log_rows, interval, totals, step = (state[k] for k in ("rows", "log_rows", "interval", "totals", "step"))
        totals["resumes"] += 1
        log.info("resumed from %s at step %d", os.path.join(ckpt_dir, CHECKPOINT_FILE), step)
        del state
    elapsed_base = totals["elapsed_s"] - t_start  # elapsed_s = elapsed_base + perf_counter(), across resumes

    # --- device-side bookkeeping, read once per flush -------------------------------------------------
    pending_steps: list = []  # (step, loss tensor, grad-norm tensor) since the last flush
    pending_eval: list = []   # (step, split, [3, n_emb] tensor)

    def flush():
        """One host synchronisation: fetch the step losses, gradient norms and evaluation sums."""
        if not pending_steps and not pending_eval:
            return
        parts = [torch.stack([t for _, l, g in pending_steps for t in (l, g)]).to(acc_dtype)] if pending_steps else []
        parts += [e[2].reshape(-1) for e in pending_eval]
        host = torch.cat(parts).cpu().numpy().astype(np.float64)
        k = 2 * len(pending_steps)
        for i, (s, _, _) in enumerate(pending_steps):
            loss, gn = host[2 * i], host[2 * i + 1]
            if not (math.isfinite(loss) and math.isfinite(gn)):
                raise NonFiniteLoss(
                    f"{settings['run']}: non-finite training {'loss' if not math.isfinite(loss) else 'gradient norm'} "
                    f"({loss if not math.isfinite(loss) else gn}) at step {s}; lower train.lr or raise "
                    f"train.warmup_steps (no output written)"
                )
            interval["loss"] += loss
            interval["grad_norm"] += gn
            interval["n"] += 1
        for s, split, t in pending_eval:
            rows.append((s, split, host[k : k + t.numel()].reshape(3, -1).copy()))
            k += t.numel()
        pending_steps.clear()
        pending_eval.clear()

    def run_eval(at_step):
        t0 = time.perf_counter()
        for split in eval_splits:
            sums = evaluate(model, shards[split], starts[split], seq_len, train["eval_batch_size"], device=device,
                            autocast=autocast, acc_dtype=acc_dtype, n_rows=n_emb)
            pending_eval.append((at_step, split, sums))
        _sync(device)
        return time.perf_counter() - t0

    def checkpoint(at_step):
        t0 = time.perf_counter()
        flush()
        totals["elapsed_s"] = elapsed_base + time.perf_counter()
        save_checkpoint(ckpt_dir, {
            "version": CHECKPOINT_VERSION, "fingerprint": fp, "step": at_step,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "sampler": sampler.state_dict(), "rng": _rng_state(device),
            "rows": rows, "log_rows": log_rows, "interval": interval, "totals": totals,
        })
        return time.perf_counter() - t0

    # --- the loop ---------------------------------------------------------------------------------------
    with _sigterm_flag() as stop:
        if not any(r[0] == 0 for r in rows):  # a resumed run has its step-0 evaluation already
            totals["eval_s"] += run_eval(0)
        t_mark = time.perf_counter()  # start of the current stretch of pure training time
        last_checkpoint = step if step > 0 else None
        while step < steps:
            if stop["signal"] is not None:
                interval["train_s"] += time.perf_counter() - t_mark
                totals["train_s"] += time.perf_counter() - t_mark
                if last_checkpoint != step:
                    totals["checkpoint_s"] += checkpoint(step)
                raise Preempted(f"{settings['run']}: signal {stop['signal']} at step {step}; checkpoint written "
                                f"to {ckpt_dir}, rerun to resume")
            lr = scheduler.get_last_lr()[0]
            st = sampler.next_starts(train["batch_size"] * train["grad_accum"])
            micro = [get_batch(train_shard, c, seq_len, device) for c in np.split(st, train["grad_accum"])]
            loss, grad_norm = train_step(step_model, optimizer, micro, autocast=autocast, grad_clip=train["grad_clip"],
                                         params=params, loss_kw=loss_kw, row_decay=row_decay)
            scheduler.step()
            step += 1
            pending_steps.append((step, loss, grad_norm))

            is_eval = step % train["eval_every"] == 0 or step == steps
            is_log = step % train["log_every"] == 0 or step == steps
            is_ckpt = step % train["checkpoint_every"] == 0 and step < steps
            if not (is_eval or is_log or is_ckpt):
                continue
            if is_log or is_ckpt:
                flush()
            now = time.perf_counter()
            interval["train_s"] += now - t_mark
            totals["train_s"] += now - t_mark
            if is_log:
                n = max(1, interval["n"])
                log_rows.append({
                    "step": step, "loss": interval["loss"] / n, "lr": lr, "grad_norm": interval["grad_norm"] / n,
                    "tokens_per_s": interval["n"] * tokens_per_step / max(interval["train_s"], 1e-9),
                    "elapsed_s": elapsed_base + now,
                })
                log.info("step %d: loss %.4f lr %.3g grad_norm %.3f %.0f tokens/s", step, log_rows[-1]["loss"], lr,
                         log_rows[-1]["grad_norm"], log_rows[-1]["tokens_per_s"])
                interval = {"loss": 0.0, "grad_norm": 0.0, "n": 0, "train_s": 0.0}
            if is_eval:
                totals["eval_s"] += run_eval(step)
            if is_ckpt:
                totals["checkpoint_s"] += checkpoint(step)
                last_checkpoint = step
            t_mark = time.perf_counter()
        flush()

    # --- outputs: model/, run.json, train_log.csv, then per_token.parquet; then drop the checkpoint ---
    final = {}
    for s, split, sums in rows:
        if s == steps:
            loss_sum, count, correct = sums[:, :n_ids].sum(axis=1)
            final[split] = {"loss": float(loss_sum / max(count, 1)), "accuracy": float(correct / max(count, 1)),
                            "tokens": int(count)}
    ids = special_ids(tok, tokenizer_spec)
    model.config.eos_token_id = ids.get("eod")
    model.config.pad_token_id = ids.get("pad") if ids.get("pad") is not None else ids.get("eod")
    model.config.bos_token_id = None
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.eos_token_id = model.config.eos_token_id
        model.generation_config.pad_token_id = model.config.pad_token_id
        model.generation_config.bos_token_id = None
    export.save_model(model, tokenizer_json, ids, os.path.join(out_dir, paths.RUN_MODEL), lowercase=lowercase,
                      max_length=spec["max_position_embeddings"])
    info = {
        "run": settings["run"], "corpus": settings["corpus"], "tokenizer": settings["tokenizer"],
        "axes": settings["axes"], "model_name": settings["model_name"], "seed": seed,
        "lr": train["lr"], "weight_decay": train["weight_decay"], "lr_x_weight_decay": train["lr"] * train["weight_decay"],
        "decay_group": train["decay_group"], "decay_parameters": groups["decay"], "no_decay_parameters": groups["no_decay"],
        "row_decay_parameters": groups["row_decay"], "tied_embeddings": tied(model),
        "parameters": n_params, "vocab_size": n_ids, "embedding_rows": n_emb,
        "device": _device_name(device), "threads": train["threads"], "precision": "bf16" if isinstance(autocast, torch.autocast) else "fp32",
        "tokens_per_step": tokens_per_step, "tokens_seen": steps * tokens_per_step,
        "epochs": steps * tokens_per_step / (sampler.n_windows * seq_len),
        "eval_tokens": {s: int(len(starts[s]) * seq_len) for s in eval_splits},
        "final": final, "timings": {**totals, "elapsed_s": elapsed_base + time.perf_counter()},
        "git_commit": git_commit(), "versions": versions(), "settings": settings,
    }
    write_json(info, os.path.join(out_dir, paths.RUN_JSON))
    write_log_csv(log_rows, os.path.join(out_dir, paths.RUN_LOG))
    write_parquet(embedding_norms(model, n_ids), os.path.join(out_dir, paths.RUN_NORMS))
    write_parquet(per_token_table(rows, n_ids, eval_splits), os.path.join(out_dir, paths.RUN_PER_TOKEN))
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    log.info("%s: done in %.1f s; final %s", out_dir, info["timings"]["elapsed_s"],
             ", ".join(f"{s} loss {v['loss']:.4f}" for s, v in final.items()))
    return info
