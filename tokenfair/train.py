"""The training stage: one grid point's model trained from scratch, evaluated per vocabulary id.

`run(settings, ...)` is the whole job, top to bottom: `setup` (the run's data, seeded model, optimizer and
schedule: a `Job`) -> a `RunState` (step, accumulators, log rows, timers), resumed from the checkpoint if
any -> `train_loop` -> `write_outputs`. `settings` is plain data, `tokenfair.plan.Plan.settings(point)`.

- Model: `tokenfair.models.build_model` at the tokenizer's vocabulary (SDPA attention), seeded by the run
  seed. Optimizer and schedule: `tokenfair.optim` (named groups, decoupled decay, warmup then cosine);
  gradient clipping and accumulation here. Windows and their order: `tokenfair.windows`.
- Evaluation at `windows.eval_steps` (train.eval_schedule), on a fixed sample of the train shard (all of it
  at the last step with train.eval_train_final all) and on each held-out shard: per vocabulary id, summed cross-entropy (nats), count and argmax hits, accumulated on
  the device with index_add_ in float64 (float32 on MPS) from fp32 logits (`tokenfair.losses`, which also
  computes the training objective; both in chunks of the logits).
- Device (`tokenfair.device`): bf16 autocast on CUDA, the decoder torch.compile'd there (train.compile), the
  micro-batch from the GPU's memory (the step's batch kept by gradient accumulation).
- No per-step host synchronisation: step losses and gradient norms stay on the device and are read with the
  pending evaluation sums once per log interval (`RunState.flush`), which reports a non-finite loss or
  gradient norm with the step it first occurred at. Evaluation ends with one device synchronisation so that
  the throughput in the log excludes it. A progress line (tokens/s, ETA) every PROGRESS_EVERY_S seconds.
- Checkpoints every `checkpoint_every` steps into `<run>/ckpt/` (`tokenfair.runio`; not a Snakemake output,
  so it survives a failed or killed job); a rerun resumes from it and ends bit-identical (CPU, same thread
  count) to an uninterrupted run. SIGTERM (SLURM time limit, preemption) checkpoints at the next step
  boundary and exits non-zero (`Preempted`). The checkpoint is removed once every output is complete.
- Outputs, each written under a temporary name and renamed (`tokenfair.runio`): model/, run.json,
  train_log.csv, norms.parquet, then per_token.parquet; TensorBoard event files as it trains.

Regularizers and mitigations (train settings, so grid axes): decay_group, tie_embeddings (config side),
embedding_decay_alpha (tokenfair.optim), dropout (add_dropout + attention dropout), label_smoothing and
z_loss (objective).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from . import export, optim, paths
from .device import autocast_for, compile_decoder, device_name, micro_batch, pick_device, synchronize
from .errors import DataError, TokenfairError
from .io import job_log, write_json, write_parquet
from .losses import evaluate, final_hidden, training_loss
from .runio import (CHECKPOINT_FILE, CHECKPOINT_VERSION, TensorBoard, final_metrics, fingerprint,
                    load_checkpoint, norms_table, per_token_table, rng_state, row_norms, run_info, save_checkpoint,
                    set_rng_state, set_special_ids, write_log_csv)
from .tokenization import load_tokenizer, special_ids, vocab_size
from .windows import Data, WindowSampler, eval_steps, get_batch, load_data

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 60.0  # a progress line (step, tokens/s, ETA) in the job's log at least this often


class NonFiniteLoss(TokenfairError, RuntimeError):
    """The training loss or gradient norm became NaN/inf; the message names the step."""


class Preempted(RuntimeError):
    """SIGTERM arrived: a checkpoint was written and the job must be rerun (requeued) to finish."""


# --------------------------------------------------------------------------------------------------
# one training step: no host synchronisation


def _grad_norm(params) -> torch.Tensor:
    norms = [torch.linalg.vector_norm(p.grad) for p in params if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms))


def add_dropout(model: torch.nn.Module, p: float) -> None:
    """train.dropout beyond attention dropout (a config field): on the token embeddings' output and on the
    hidden state entering the output head, in training mode only."""
    if p <= 0:
        return
    model.get_input_embeddings().register_forward_hook(lambda m, args, out: F.dropout(out, p, m.training))
    model.get_output_embeddings().register_forward_pre_hook(
        lambda m, args: (F.dropout(args[0], p, m.training), *args[1:]))


def train_step(decoder, head, optimizer, micro_batches, *, autocast, grad_clip: float, params, loss_kw=None):
    """Forward (the decoder, maybe compiled, then the output head), training objective (fp32 logits, chunked:
    tokenfair.losses), backward over the micro batches, clip, optimizer step. Returns (mean objective,
    pre-clip gradient norm) as device tensors."""
    total = None
    for x, y in micro_batches:
        with autocast:
            hidden = final_hidden(decoder, x)
        loss = training_loss(hidden, head, y, autocast=autocast, **(loss_kw or {}))
        (loss / len(micro_batches)).backward()
        total = loss.detach() if total is None else total + loss.detach()
    if grad_clip > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    else:
        grad_norm = _grad_norm(params)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total / len(micro_batches), grad_norm


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


# --------------------------------------------------------------------------------------------------
# the job: setup -> state -> loop -> outputs


@dataclass
class Job:
    """The live objects of one run, built once by `setup`."""

    settings: dict
    device: torch.device
    autocast: contextlib.AbstractContextManager
    acc_dtype: torch.dtype            # of the evaluation sums
    tokenizer: object                 # tokenizers.Tokenizer
    n_ids: int                        # the tokenizer's ids
    n_emb: int                        # embedding rows (>= n_ids)
    data: Data
    model: torch.nn.Module
    decoder: torch.nn.Module          # the model's decoder as the training steps call it (compiled: train.compile)
    micro_batches: int                # per step, of equal size (train.grad_accum on the CPU)
    n_params: int
    decay: dict                       # tokenfair.optim.decay_lists
    grad_params: list                 # the parameters, in the order the gradient norm sums them
    optimizer: optim.AdamW
    scheduler: torch.optim.lr_scheduler.LRScheduler
    sampler: WindowSampler
    eval_steps: frozenset             # the steps evaluated (windows.eval_steps)
    ckpt_dir: str
    fingerprint: str
    train_counts: np.ndarray | None   # of the train frequency table, when given
    tensorboard: TensorBoard | None = None  # opened by `run` once it knows the step it starts from

    @property
    def train(self) -> dict:
        return self.settings["train"]

    @property
    def tokens_per_step(self) -> int:
        return self.train["batch_size"] * self.train["grad_accum"] * self.train["seq_len"]

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "sampler": self.sampler.state_dict(),
                "rng": rng_state(self.device)}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        set_rng_state(state["rng"], self.device)


def setup(settings: dict, train_tokens: str, eval_tokens: dict[str, str], tokenizer_json: str, out_dir: str,
          train_frequency: str | None, train_index: str | None = None) -> Job:
    """Threads and device, the vocabulary, the data (the train shard's first train.train_docs documents when
    set: `train_index` says where they end), the seeded model, its optimizer and schedule."""
    from .models import count_parameters

    train = settings["train"]
    torch.set_num_threads(train["threads"])
    device = pick_device(train["device"])
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
    data = load_data(train_tokens, eval_tokens, train, n_emb, train_index)
    train_counts = None
    if train_frequency is not None:
        from .counts import dense_counts  # numba's import: only for the runs given the counts

        train_counts = dense_counts(train_frequency)
    model = build_seeded_model(spec, n_emb, train, device)
    row_scales = optim.frequency_row_scales(train, train_counts, n_emb, settings["run"])
    groups = optim.param_groups(model, train, row_scales)
    optimizer = optim.make_optimizer(model, groups, train, device)
    decay = optim.decay_lists(model, groups)
    inputs = {"train": train_tokens, "tokenizer": tokenizer_json, **eval_tokens,
              **({"frequency": train_frequency} if row_scales is not None else {})}
    return Job(
        settings=settings, device=device, autocast=autocast_for(device, train["precision"]),
        acc_dtype=torch.float32 if device.type == "mps" else torch.float64, tokenizer=tok, n_ids=n_ids,
        n_emb=n_emb, data=data, model=model, decoder=compile_decoder(model.get_decoder(), train["compile"], device),
        micro_batches=train["batch_size"] * train["grad_accum"] // micro_batch(spec, n_emb, train, device),
        n_params=count_parameters(model, n_ids), decay=decay,
        grad_params=optim.grad_norm_order(model, groups),
        optimizer=optimizer, scheduler=optim.lr_scheduler(optimizer, train),
        sampler=WindowSampler(len(data.train), train["seq_len"], train["seed"]),
        eval_steps=frozenset(eval_steps(train["steps"], train["eval_every"], train["eval_schedule"])),
        ckpt_dir=os.path.join(out_dir, paths.RUN_CHECKPOINT), fingerprint=fingerprint(settings, inputs, n_ids, n_emb),
        train_counts=train_counts,
    )


def regime(model: torch.nn.Module, train: dict, n_ids: int, train_tokens: int) -> dict:
    """run.json's regime of a run: train_docs (null: the whole train split), train_tokens (the tokens it trains
    on: the train shard, or its first train_docs documents), embedding_share (embedding and output-head
    parameters over all, a tied matrix once), tokens_per_id (train tokens per tokenizer id) and
    cumulative_decay (the sum over steps of the scheduled lr x weight decay); runs.csv has the last three and
    run_info's `epochs` (steps x tokens per step / train_tokens)."""
    from .models import count_parameters, embedding_parameters

    return {"train_docs": train.get("train_docs"), "train_tokens": int(train_tokens),
            "embedding_share": embedding_parameters(model, n_ids) / count_parameters(model, n_ids),
            "tokens_per_id": train_tokens / n_ids, "cumulative_decay": optim.cumulative_decay(train)}


def build_seeded_model(spec: dict, n_emb: int, train: dict, device: torch.device) -> torch.nn.Module:
    """The model at `n_emb` rows, initialised from the run seed (python, numpy and torch seeded), in training
    mode, with train.dropout."""
    from .models import build_model

    seed = train["seed"]
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    extra = {"attention_dropout": float(train["dropout"])} if train["dropout"] > 0 else {}
    model = build_model(spec, n_emb, attn_implementation="sdpa", **extra).to(device)
    add_dropout(model, float(train["dropout"]))
    model.train()
    return model


def _interval() -> dict:
    return {"loss": 0.0, "grad_norm": 0.0, "n": 0, "train_s": 0.0}


@dataclass
class RunState:
    """Where the loop is: what a checkpoint carries beside the model, optimizer, schedule, sampler and RNGs
    (`state_dict`), and the device-side values waiting for the next `flush` (none when a checkpoint is
    written). `clock`: the perf_counter() reading at elapsed time 0 (across resumes)."""

    clock: float
    step: int = 0
    rows: list = field(default_factory=list)        # evaluation sums on the host: (step, split, np [3, n_emb])
    log_rows: list = field(default_factory=list)    # train_log.csv rows
    interval: dict = field(default_factory=_interval)  # loss and gradient norm sums, steps, time since the last row
    totals: dict = field(default_factory=lambda: {"train_s": 0.0, "eval_s": 0.0, "checkpoint_s": 0.0,
                                                  "elapsed_s": 0.0, "resumes": 0})
    norm_rows: list = field(default_factory=list)   # row norms at each evaluation: (step, np [2, n_ids] float32)
    pending_steps: list = field(default_factory=list)  # (step, loss, grad-norm device tensors) since the flush
    pending_eval: list = field(default_factory=list)   # (step, split, [3, n_emb] device tensor)

    CARRIED = ("step", "rows", "norm_rows", "log_rows", "interval", "totals")

    def state_dict(self) -> dict:
        assert not (self.pending_steps or self.pending_eval), "flush before a checkpoint"
        return {k: getattr(self, k) for k in self.CARRIED}

    def load_state_dict(self, state: dict) -> None:
        for k in self.CARRIED:
            setattr(self, k, state[k])
        self.clock -= self.totals["elapsed_s"]
        self.totals["resumes"] += 1

    def elapsed(self) -> float:
        return time.perf_counter() - self.clock

    def add_train_time(self, seconds: float) -> None:
        self.interval["train_s"] += seconds
        self.totals["train_s"] += seconds

    def flush(self, acc_dtype: torch.dtype, run: str) -> list:
        """One host synchronisation: fetch the step losses, gradient norms and evaluation sums; returns the new
        evaluation rows."""
        if not self.pending_steps and not self.pending_eval:
            return []
        steps = [t for _, loss, gn in self.pending_steps for t in (loss, gn)]
        parts = [torch.stack(steps).to(acc_dtype)] if steps else []
        parts += [e[2].reshape(-1) for e in self.pending_eval]
        host = torch.cat(parts).cpu().numpy().astype(np.float64)
        for i, (s, _, _) in enumerate(self.pending_steps):
            loss, gn = host[2 * i], host[2 * i + 1]
            if not (math.isfinite(loss) and math.isfinite(gn)):
                raise NonFiniteLoss(
                    f"{run}: non-finite training {'loss' if not math.isfinite(loss) else 'gradient norm'} "
                    f"({loss if not math.isfinite(loss) else gn}) at step {s}; lower train.lr or raise "
                    f"train.warmup_steps (no output written)"
                )
            self.interval["loss"] += loss
            self.interval["grad_norm"] += gn
            self.interval["n"] += 1
        k, new = 2 * len(self.pending_steps), []
        for s, split, t in self.pending_eval:
            new.append((s, split, host[k : k + t.numel()].reshape(3, -1).copy()))
            k += t.numel()
        self.rows += new
        self.pending_steps.clear()
        self.pending_eval.clear()
        return new

    def log_row(self, lr: float, tokens_per_step: int, now: float) -> dict:
        """A train_log.csv row for the steps since the last one (flushed); starts the next interval."""
        n = max(1, self.interval["n"])
        row = {"step": self.step, "loss": self.interval["loss"] / n, "lr": lr,
               "grad_norm": self.interval["grad_norm"] / n,
               "tokens_per_s": self.interval["n"] * tokens_per_step / max(self.interval["train_s"], 1e-9),
               "elapsed_s": now - self.clock}
        self.log_rows.append(row)
        self.interval = _interval()
        return row


def run(settings: dict, train_tokens: str, eval_tokens: dict[str, str], tokenizer_json: str, out_dir: str,
        tokenizer_spec: dict | None = None, train_frequency: str | None = None,
        corpus_spec: dict | None = None, train_index: str | None = None) -> dict:
    """Train one grid point and write its outputs into `out_dir` (the run folder). Returns run.json's content.

    settings: `run_settings(cfg, point)`; train_tokens: tokens/train.npy; eval_tokens: split -> shard for
    the held-out splits (validation, test, ood-<corpus>); tokenizer_json: the corpus tokenizer;
    tokenizer_spec: its config entry (for eod_token / pad_token of a given tokenizer); train_frequency: the
    train frequency table (needed by train.embedding_decay_alpha; gives TensorBoard its bins); corpus_spec:
    the corpus's config entry (run.json records its normalisation: lowercase, eod); train_index:
    tokens/train.index.parquet (needed by train.train_docs: where its first documents end).
    """
    state = RunState(clock=time.perf_counter())
    os.makedirs(out_dir, exist_ok=True)
    job = setup(settings, train_tokens, eval_tokens, tokenizer_json, out_dir, train_frequency, train_index)
    log.info("%s: %s with %d parameters at %d ids on %s (%d threads); %d steps of %d tokens in %d micro-batches; %s",
             settings["run"], settings["model_name"], job.n_params, job.n_ids, device_name(job.device),
             job.train["threads"], job.train["steps"], job.tokens_per_step, job.micro_batches,
             ", ".join(f"{s} eval {len(job.data.starts[s]) * job.train['seq_len']} tokens" for s in job.data.splits))
    checkpoint = load_checkpoint(job.ckpt_dir, job.fingerprint)
    if checkpoint is not None:
        job.load_state_dict(checkpoint)
        state.load_state_dict(checkpoint)
        log.info("resumed from %s at step %d", os.path.join(job.ckpt_dir, CHECKPOINT_FILE), state.step)
    if job.train["tensorboard"]:
        job.tensorboard = TensorBoard(os.path.join(out_dir, paths.RUN_TENSORBOARD), job.n_ids, job.train_counts,
                                      settings["frequency"]["bin_base"], state.step if checkpoint is not None else None)
    del checkpoint
    try:
        with _sigterm_flag() as stop:
            train_loop(job, state, stop)
    finally:
        if job.tensorboard is not None:
            job.tensorboard.close()
    return write_outputs(job, state, tokenizer_json, tokenizer_spec, out_dir, corpus_spec)


def train_loop(job: Job, state: RunState, stop: dict) -> None:
    """Train from state.step to train.steps: evaluate at job.eval_steps (step 0 unless resumed past it); a
    log row every log_every steps; a checkpoint every checkpoint_every steps and on SIGTERM (then Preempted)."""
    train, steps = job.train, job.train["steps"]
    if not any(r[0] == 0 for r in state.rows):  # a resumed run has its step-0 evaluation already
        state.totals["eval_s"] += evaluate_splits(job, state, 0)
    t_mark = time.perf_counter()  # start of the current stretch of pure training time
    last_checkpoint = state.step if state.step > 0 else None
    pace = (state.step, t_mark)  # this process's first step and its start: the pace of the progress lines
    last_progress = t_mark
    while state.step < steps:
        if stop["signal"] is not None:
            state.add_train_time(time.perf_counter() - t_mark)
            if last_checkpoint != state.step:
                state.totals["checkpoint_s"] += write_checkpoint(job, state)
            raise Preempted(f"{job.settings['run']}: signal {stop['signal']} at step {state.step}; checkpoint "
                            f"written to {job.ckpt_dir}, rerun to resume")
        lr = job.scheduler.get_last_lr()[0]
        starts = job.sampler.next_starts(train["batch_size"] * train["grad_accum"])
        micro = [get_batch(job.data.train, c, train["seq_len"], job.device)
                 for c in np.split(starts, job.micro_batches)]
        loss, grad_norm = train_step(job.decoder, job.model.get_output_embeddings(), job.optimizer, micro,
                                     autocast=job.autocast, grad_clip=train["grad_clip"], params=job.grad_params,
                                     loss_kw=loss_kwargs(train))
        job.scheduler.step()
        state.step += 1
        state.pending_steps.append((state.step, loss, grad_norm))
        if time.perf_counter() - last_progress >= PROGRESS_EVERY_S:
            last_progress = log_progress(job, state, *pace)

        step = state.step
        is_eval = step in job.eval_steps
        is_log = step % train["log_every"] == 0 or step == steps
        is_ckpt = step % train["checkpoint_every"] == 0 and step < steps
        if not (is_eval or is_log or is_ckpt):
            continue
        if is_log or is_ckpt:
            flush(job, state)
        now = time.perf_counter()
        state.add_train_time(now - t_mark)
        if is_log:
            row = state.log_row(lr, job.tokens_per_step, now)
            if job.tensorboard is not None:
                job.tensorboard.log_row(row)
            log.info("step %d: loss %.4f lr %.3g grad_norm %.3f %.0f tokens/s", step, row["loss"], lr,
                     row["grad_norm"], row["tokens_per_s"])
        if is_eval:
            state.totals["eval_s"] += evaluate_splits(job, state, step)
        if is_ckpt:
            state.totals["checkpoint_s"] += write_checkpoint(job, state)
            last_checkpoint = step
        t_mark = time.perf_counter()
    flush(job, state)


def log_progress(job: Job, state: RunState, first_step: int, start: float) -> float:
    """A progress line: step, share done, tokens/s and ETA at this process's pace (evaluations and checkpoints
    included), elapsed time across resumes. Returns the time it was written."""
    now = time.perf_counter()
    steps, per_s = job.train["steps"], (state.step - first_step) / max(now - start, 1e-9)
    log.info("progress: step %d/%d (%.0f%%), %.0f tokens/s, %s elapsed, ETA %s", state.step, steps,
             100 * state.step / steps, per_s * job.tokens_per_step, _hms(state.elapsed()),
             _hms((steps - state.step) / per_s) if per_s > 0 else "unknown")
    return now


def _hms(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}"


def flush(job: Job, state: RunState) -> None:
    """RunState.flush; the new evaluations go to TensorBoard."""
    for step, split, sums in state.flush(job.acc_dtype, job.settings["run"]):
        if job.tensorboard is not None:
            job.tensorboard.evaluation(step, split, sums)


def loss_kwargs(train: dict) -> dict:
    return {"label_smoothing": float(train["label_smoothing"]), "z_loss": float(train["z_loss"])}


def evaluate_splits(job: Job, state: RunState, at_step: int) -> float:
    """Queue the per-id sums of every evaluation split (read at the next flush) and record the embedding and
    output-head row norms (norms.parquet); returns the seconds taken."""
    t0 = time.perf_counter()
    state.norm_rows.append((at_step, row_norms(job.model, job.n_ids)))
    starts = job.data.final if at_step == job.train["steps"] else job.data.starts
    for split in job.data.splits:
        sums = evaluate(job.model, job.data.shards[split], starts[split], job.train["seq_len"],
                        job.train["eval_batch_size"], device=job.device, autocast=job.autocast,
                        acc_dtype=job.acc_dtype, n_rows=job.n_emb)
        state.pending_eval.append((at_step, split, sums))
    synchronize(job.device)
    return time.perf_counter() - t0


def write_checkpoint(job: Job, state: RunState) -> float:
    """Flush, then save everything a resume needs at state.step; returns the seconds taken."""
    t0 = time.perf_counter()
    flush(job, state)
    if job.tensorboard is not None:
        job.tensorboard.flush()  # every event up to this step on disk before the checkpoint that skips them
    state.totals["elapsed_s"] = state.elapsed()
    save_checkpoint(job.ckpt_dir, {"version": CHECKPOINT_VERSION, "fingerprint": job.fingerprint,
                                   **job.state_dict(), **state.state_dict()})
    return time.perf_counter() - t0


def write_outputs(job: Job, state: RunState, tokenizer_json: str, tokenizer_spec: dict | None, out_dir: str,
                  corpus_spec: dict | None) -> dict:
    """model/, run.json, train_log.csv, norms.parquet, then per_token.parquet; then drop the checkpoint."""
    train, model = job.train, job.model
    final = final_metrics(state.rows, train["steps"], job.n_ids)
    ids = special_ids(job.tokenizer, tokenizer_spec)
    set_special_ids(model, ids)
    # the folder's tokenizer normalises as the corpus did; its context length is the model's positions
    export.save_model(model, tokenizer_json, ids, os.path.join(out_dir, paths.RUN_MODEL),
                      lowercase=bool((corpus_spec or {}).get("lowercase", False)),
                      max_length=job.settings["model"]["max_position_embeddings"])
    info = run_info(
        job.settings, decay=job.decay, tied=optim.tied(model), n_params=job.n_params, n_ids=job.n_ids,
        n_emb=job.n_emb, device=device_name(job.device),
        precision="bf16" if isinstance(job.autocast, torch.autocast) else "fp32",
        tokens_per_step=job.tokens_per_step, micro_batches=job.micro_batches,
        train_tokens=len(job.data.train),
        eval_tokens={s: int(len(job.data.starts[s]) * train["seq_len"]) for s in job.data.splits},
        final=final, timings={**state.totals, "elapsed_s": state.elapsed()}, corpus_spec=corpus_spec,
    )
    info.update(regime(model, train, job.n_ids, len(job.data.train)))
    write_json(info, os.path.join(out_dir, paths.RUN_JSON))
    write_log_csv(state.log_rows, os.path.join(out_dir, paths.RUN_LOG))
    write_parquet(norms_table(state.norm_rows, job.n_ids), os.path.join(out_dir, paths.RUN_NORMS))
    write_parquet(per_token_table(state.rows, job.n_ids, job.data.splits), os.path.join(out_dir, paths.RUN_PER_TOKEN))
    shutil.rmtree(job.ckpt_dir, ignore_errors=True)
    log.info("%s: done in %.1f s; final %s", out_dir, info["timings"]["elapsed_s"],
             ", ".join(f"{s} loss {v['loss']:.4f}" for s, v in final.items()))
    return info


def run_job(log_path: str, settings: dict, **kwargs) -> None:
    """A train job's process (scripts/train.py, and each seed's of scripts/train_seeds.py): `run(settings,
    **kwargs)` with stderr and logging into its log file (tokenfair.io.job_log). SIGTERM (SLURM time limit,
    preemption) stops it with exit status 143 (SystemExit) once its checkpoint is written; the rerun resumes."""
    with job_log(log_path) as jlog:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # no progress bars in the job log
        try:
            run(settings, **kwargs)
        except Preempted as exc:
            jlog.warning("%s", exc)
            print(f"Preempted: {exc}", file=sys.__stderr__, flush=True)
            raise SystemExit(143) from None
