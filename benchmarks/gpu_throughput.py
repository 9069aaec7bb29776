"""GPU training throughput and MFU of the paper's models, through tokenfair.train's own step function.

    python benchmarks/gpu_throughput.py                       # openelm-270m and qwen2-0.5b, seq 128, H100 peak
    python benchmarks/gpu_throughput.py --peak-tflops 312 --batch-size 32 --compile --models qwen2-0.5b

Each model is built from its preset at `--vocab` ids (the paper's tokenizers have ~32k), trained with
`tokenfair.train.train_step` (bf16 autocast, SDPA attention, fused AdamW, fp32 master weights, gradient
clipping) on random token windows (content does not change the speed), `--warmup` steps untimed, then
`--steps` steps timed between two device synchronisations.

Model FLOPs per trained token (forward + backward), the PaLM / nanoGPT convention:
    6 * N  +  12 * seq_len * sum over layers of (query heads x head_dim)
N counts the parameters that take part in matrix multiplies: all of them but the input embedding (a lookup);
the output head counts even when it is tied to the embedding. The attention term is the exact per-layer width
(OpenELM's query heads grow layer by layer) and counts the full seq x seq score matrix (no causal halving).
MFU = FLOPs per token x tokens/s / (`--peak-tflops` x 1e12), against a dense bf16 peak (H100 SXM: 989).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

MODELS = ("openelm-270m", "qwen2-0.5b")


def matmul_parameters(model: torch.nn.Module) -> int:
    """Parameters taking part in matrix multiplies: all but the input embedding, the output head counted
    once even when tied to the embedding."""
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    total = sum(p.numel() for p in model.parameters())  # tied weights appear once
    total -= emb.numel()
    if head is emb:
        total += head.numel()
    return total


def query_widths(config) -> list[int]:
    """Per layer: query heads x head_dim (OpenELM's layer-wise scaling included)."""
    if getattr(config, "num_query_heads", None) is not None:  # openelm
        return [int(n) * int(config.head_dim) for n in config.num_query_heads]
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return [heads * head_dim] * config.num_hidden_layers


def attention_flops_per_token(widths: list[int], seq_len: int) -> int:
    """Forward + backward FLOPs per token of the two attention matmuls (QK^T and AV): 3 x 2 x 2 x seq x width."""
    return 12 * seq_len * sum(widths)


def flops_per_token(n_matmul: int, widths: list[int], seq_len: int) -> int:
    return 6 * n_matmul + attention_flops_per_token(widths, seq_len)


def mfu(flops_token: float, tokens_per_s: float, peak_tflops: float) -> float:
    return flops_token * tokens_per_s / (peak_tflops * 1e12)


def measure(preset: str, args) -> dict:
    from tokenfair import optim
    from tokenfair import train as tt
    from tokenfair.device import autocast_for
    from tokenfair.models import build_model
    from tokenfair.presets import resolve_model_spec

    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.manual_seed(0)
    spec = resolve_model_spec(preset)
    spec.pop("vocab_size", None)
    model = build_model(spec, args.vocab, attn_implementation="sdpa").to(device)
    model.train()
    settings = {"decay_group": "matrices", "weight_decay": 0.1, "lr": 3e-4, "betas": [0.9, 0.95], "eps": 1e-8}
    optimizer = optim.make_optimizer(model, optim.param_groups(model, settings), settings, device)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    decoder = torch.compile(model.get_decoder()) if args.compile else model.get_decoder()
    head = model.get_output_embeddings()
    autocast = autocast_for(device, "bf16")

    def batches():
        w = torch.randint(0, args.vocab, (args.batch_size, args.seq_len + 1), device=device)
        return [(w[:, :-1], w[:, 1:].reshape(-1))]

    torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        tt.train_step(decoder, head, optimizer, batches(), autocast=autocast, grad_clip=1.0, params=params)
    torch.cuda.synchronize(device)
    data = [batches() for _ in range(args.steps)]
    if args.start_at:  # several processes on one GPU (gpu_check.py): time the same window
        time.sleep(max(0.0, args.start_at - time.time()))
    t0 = time.perf_counter()
    for b in data:
        loss, _ = tt.train_step(decoder, head, optimizer, b, autocast=autocast, grad_clip=1.0, params=params)
    torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    tokens_per_s = args.steps * args.batch_size * args.seq_len / seconds
    n_matmul = matmul_parameters(model)
    fpt = flops_per_token(n_matmul, query_widths(model.config), args.seq_len)
    return {
        "model": preset, "parameters": sum(p.numel() for p in model.parameters()), "matmul_parameters": n_matmul,
        "vocab": args.vocab, "batch_size": args.batch_size, "seq_len": args.seq_len, "compile": args.compile,
        "step_ms": 1000 * seconds / args.steps, "tokens_per_s": tokens_per_s, "flops_per_token": fpt,
        "mfu": mfu(fpt, tokens_per_s, args.peak_tflops), "peak_tflops": args.peak_tflops,
        "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 1e9, "final_loss": float(loss),
        "device": torch.cuda.get_device_name(device), "torch": torch.__version__,
    }


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU (H100 SXM: 989)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--start-at", type=float, default=None, help="after warm-up, wait until this Unix time")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print(f"gpu_throughput.py needs a CUDA GPU; this torch ({torch.__version__}) sees none", file=sys.stderr)
        return 2
    for preset in args.models:
        r = measure(preset, args)
        print(f"{r['model']}: {r['parameters'] / 1e6:.0f}M params, batch {r['batch_size']} x seq {r['seq_len']}: "
              f"{r['tokens_per_s']:,.0f} tokens/s, {r['step_ms']:.1f} ms/step, MFU {100 * r['mfu']:.1f}% "
              f"(of {r['peak_tflops']:g} TFLOP/s), peak memory {r['peak_memory_gb']:.1f} GB")
        print(json.dumps(r))
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
