"""What a training run reads back and writes: its checkpoint, and its outputs (docs/architecture.md).

Checkpoint: `<run>/ckpt/checkpoint.pt`, written atomically (temporary name, fsync, rename) and resumed only
when its `fingerprint` (the settings that change results, the inputs' sizes) and `CHECKPOINT_VERSION` match.
Outputs: per_token.parquet (`per_token_table`), norms.parquet (`row_norms` at each evaluation,
`norms_table`), train_log.csv (`write_log_csv`), run.json (`run_info`), and the TensorBoard
event files in tensorboard/ (`TensorBoard`), written while the run trains. model/ is
`tokenfair.export.save_model`'s.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import io as _io
import json
import logging
import os
import platform
import random
import shutil
import subprocess

import numpy as np
import torch

from .io import atomic_path

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_VERSION = 3  # 2: the optimizer's named parameter groups (tokenfair.optim); 3: row norms per evaluation
LOG_COLUMNS = ("step", "loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s")
# Train settings that change how a run executes but not what it computes: a checkpoint written under
# other values of these is still resumed (bit-identity across a resume needs the same thread count).
EXECUTION_KEYS = ("device", "threads", "compile", "checkpoint_every", "log_every", "tensorboard")


# --------------------------------------------------------------------------------------------------
# checkpoints


def rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
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
    """The checkpoint in ckpt_dir if it belongs to this run (same fingerprint and version), else None.
    Leftover temporary files of a save that was killed are removed."""
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


def final_metrics(rows: list, step: int, n_ids: int) -> dict:
    """split -> loss, accuracy and token count of the evaluation at `step` (run.json's `final`)."""
    final = {}
    for s, split, sums in rows:
        if s == step:
            loss_sum, count, correct = sums[:, :n_ids].sum(axis=1)
            final[split] = {"loss": float(loss_sum / max(count, 1)), "accuracy": float(correct / max(count, 1)),
                            "tokens": int(count)}
    return final


def row_norms(model: torch.nn.Module, n_ids: int) -> np.ndarray:
    """[2, n_ids] float32: per tokenizer id, the L2 norm of its input-embedding row (0) and of its output-head
    row (1); the two are equal when the model ties them."""
    with torch.no_grad():
        emb = model.get_input_embeddings().weight[:n_ids].float()
        head = model.get_output_embeddings().weight[:n_ids].float()
        return torch.stack([torch.linalg.vector_norm(emb, dim=1),
                            torch.linalg.vector_norm(head, dim=1)]).cpu().numpy()


def norms_table(rows: list, n_ids: int):
    """norms.parquet (docs/architecture.md) from [(step, row_norms [2, n_ids])]: one block of n_ids rows per
    evaluation step, in step order; the last block is the final model's."""
    import pyarrow as pa

    rows = sorted(rows, key=lambda r: r[0])
    norms = np.stack([r[1] for r in rows]) if rows else np.zeros((0, 2, n_ids), dtype=np.float32)
    return pa.table({
        "step": pa.array(np.repeat(np.array([r[0] for r in rows], dtype=np.int32), n_ids), pa.int32()),
        "token_id": pa.array(np.tile(np.arange(n_ids, dtype=np.int64), len(rows)), pa.int64()),
        "embedding_norm": pa.array(norms[:, 0].reshape(-1).astype(np.float32), pa.float32()),
        "unembedding_norm": pa.array(norms[:, 1].reshape(-1).astype(np.float32), pa.float32()),
    })


def write_log_csv(rows: list[dict], path: str) -> None:
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(buf.getvalue())


class TensorBoard:
    """A run's TensorBoard event files in `log_dir` (train.tensorboard). Per log row: training/loss,
    training/lr, training/grad_norm, training/tokens_per_s. Per evaluation: eval_<split>/loss and, given the
    train counts, the loss per occurrence of each train-count bin (tokenfair.counts.log_bin):
    eval_<split>/loss_bin<k>_<lo>-<hi>, and eval_<split>/loss_unseen for the ids never seen in training.
    A fresh run (resume_step None) starts from an empty folder; a resumed one rewrites the events up to its
    checkpoint's step into its own event file and removes the older files (which may hold steps past the
    checkpoint): every step is in the folder once."""

    def __init__(self, log_dir: str, n_ids: int, train_counts: np.ndarray | None, bin_base: float,
                 resume_step: int | None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ImportError("train.tensorboard needs the tensorboard package (pip install tensorboard); "
                              "or set train.tensorboard: false") from exc
        if resume_step is None:
            shutil.rmtree(log_dir, ignore_errors=True)
        old = sorted(glob.glob(os.path.join(log_dir, "events.out.tfevents.*")))
        kept = _scalar_events(old, resume_step) if old else []
        self.writer = SummaryWriter(log_dir)
        for event in kept:
            self.writer.file_writer.add_event(event, walltime=event.wall_time)
        self.writer.flush()
        for path in old:  # after the flush: a kill in between leaves copies, which _scalar_events dedupes
            os.remove(path)
        self.n_ids = n_ids
        self.bin_index, self.bin_tags = None, []
        if train_counts is not None:
            from .counts import bin_edges, log_bin

            counts = np.zeros(n_ids, dtype=np.int64)
            counts[: min(n_ids, len(train_counts))] = train_counts[:n_ids]
            bins = log_bin(counts, bin_base).astype(np.int64)
            self.bin_index = bins + 1  # 0: unseen
            top = int(bins.max())
            lo, hi = bin_edges(np.arange(top + 1), bin_base)
            self.bin_tags = ["loss_unseen"] + [f"loss_bin{k:02d}_{lo[k]}-{hi[k]}" for k in range(top + 1)]

    def log_row(self, row: dict) -> None:
        for key in ("loss", "lr", "grad_norm", "tokens_per_s"):
            self.writer.add_scalar(f"training/{key}", row[key], row["step"])

    def evaluation(self, step: int, split: str, sums: np.ndarray) -> None:
        loss_sum, count = sums[0, : self.n_ids], sums[1, : self.n_ids]
        self.writer.add_scalar(f"eval_{split}/loss", loss_sum.sum() / max(count.sum(), 1), step)
        if self.bin_index is None:
            return
        losses = np.bincount(self.bin_index, weights=loss_sum, minlength=len(self.bin_tags))
        counts = np.bincount(self.bin_index, weights=count, minlength=len(self.bin_tags))
        for tag, loss, n in zip(self.bin_tags, losses, counts):
            if n > 0:
                self.writer.add_scalar(f"eval_{split}/{tag}", loss / n, step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _scalar_events(paths: list[str], up_to_step: int) -> list:
    """The scalar events of TensorBoard event files up to a step, once per (tag, step), in file order (as
    written: the legacy loader does not migrate them to tensors)."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    events = {}
    for path in paths:
        for e in LegacyEventFileLoader(path).Load():
            if e.HasField("summary") and e.step <= up_to_step:
                events[(e.summary.value[0].tag, e.step)] = e
    return list(events.values())


def run_info(settings: dict, *, decay: dict, tied: bool, n_params: int, n_ids: int, n_emb: int, device: str,
             precision: str, tokens_per_step: int, micro_batches: int, train_tokens: int, eval_tokens: dict,
             final: dict, timings: dict, corpus_spec: dict | None) -> dict:
    """run.json's content (docs/architecture.md): the settings and axes, the corpus normalisation (lowercase,
    eod: from `corpus_spec`, the corpus's config entry; null when not given), lr x weight decay, which
    parameters decay (`decay`: tokenfair.optim.decay_lists), sizes, device, the final evaluation, timings,
    versions."""
    train = settings["train"]
    steps = train["steps"]
    return {
        "run": settings["run"], "corpus": settings["corpus"], "tokenizer": settings["tokenizer"],
        "axes": settings["axes"], "model_name": settings["model_name"], "seed": train["seed"],
        "corpus_normalisation": None if corpus_spec is None else {k: corpus_spec[k] for k in ("lowercase", "eod")},
        "lr": train["lr"], "weight_decay": train["weight_decay"],
        "lr_x_weight_decay": train["lr"] * train["weight_decay"], "decay_group": train["decay_group"],
        "decay_parameters": decay["decay"], "no_decay_parameters": decay["no_decay"],
        "row_decay_parameters": decay["row_decay"], "tied_embeddings": tied,
        "parameters": n_params, "vocab_size": n_ids, "embedding_rows": n_emb,
        "device": device, "threads": train["threads"], "precision": precision,
        "tokens_per_step": tokens_per_step, "micro_batches": micro_batches, "tokens_seen": steps * tokens_per_step,
        "epochs": steps * tokens_per_step / train_tokens,
        "eval_tokens": eval_tokens, "final": final, "timings": timings,
        "git_commit": git_commit(), "versions": versions(), "settings": settings,
    }


def set_special_ids(model, ids: dict) -> None:
    """The model's (and its generation config's) eos / pad ids from the tokenizer's end-of-document and padding
    ids (tokenization.special_ids); no bos."""
    model.config.eos_token_id = ids.get("eod")
    model.config.pad_token_id = ids.get("pad") if ids.get("pad") is not None else ids.get("eod")
    model.config.bos_token_id = None
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.eos_token_id = model.config.eos_token_id
        model.generation_config.pad_token_id = model.config.pad_token_id
        model.generation_config.bos_token_id = None


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
