"""Load run model folders as a user would, with whatever transformers this python has, and check them.

    python tests/interop_check.py EXPECTED.json

EXPECTED.json: a list of cases, each {"folder", "text", "ids", "max_length", "windows", "loss", "loss_sums"}:
the folder's tokenizer must encode `text` into `ids` (the training ids of the normalised text) and say
`max_length`; its AutoModelForCausalLM must give, over `windows` (token windows of seq_len + 1), the recorded
mean next-token loss `loss` to 1e-4 and the recorded summed loss of each target id `loss_sums` to 1e-5 (the
sums, unlike the mean, do not average out small errors: a model built with another rope_theta misses them). The tokenizer is loaded with PreTrainedTokenizerFast (every family, every version) and with
AutoTokenizer, except for qwen2 in transformers 5, whose AutoTokenizer builds Qwen2's own tokenizer (its
normalizer and pre-tokenizer) from any qwen2 folder's vocabulary. tokenfair is imported only for an openelm
folder (it registers the model with the Auto classes): llama and qwen2 must load with transformers alone.
Prints one line per case; exits 1 on any mismatch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import transformers
from torch.nn import functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

TRANSFORMERS_MAJOR = int(transformers.__version__.split(".")[0])


def check(case: dict) -> tuple[list[str], float]:
    folder = case["folder"]
    model_type = json.loads((Path(folder) / "config.json").read_text())["model_type"]
    if model_type == "openelm":
        import tokenfair.models  # noqa: F401

    errors = []
    loaders = [PreTrainedTokenizerFast]
    if not (model_type == "qwen2" and TRANSFORMERS_MAJOR >= 5):
        loaders.append(AutoTokenizer)
    for loader in loaders:
        tok = loader.from_pretrained(folder)
        ids = tok(case["text"], add_special_tokens=False)["input_ids"]
        if ids != case["ids"]:
            errors.append(f"{loader.__name__}: ids differ from training: {ids[:12]}... vs {case['ids'][:12]}...")
        if tok.model_max_length != case["max_length"]:
            errors.append(f"{loader.__name__}: model_max_length {tok.model_max_length}, expected {case['max_length']}")

    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    windows = torch.tensor(case["windows"], dtype=torch.int64)
    with torch.no_grad():
        logits = model(input_ids=windows[:, :-1]).logits.float()
    targets = windows[:, 1:].reshape(-1)
    losses = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets, reduction="none").double()
    loss = float(losses.mean())
    if abs(loss - case["loss"]) > 1e-4:
        errors.append(f"validation loss {loss:.6f}, recorded {case['loss']:.6f}")
    recorded = torch.tensor(case["loss_sums"], dtype=torch.float64)
    sums_error = float((torch.zeros_like(recorded).index_add_(0, targets, losses) - recorded).abs().max())
    if sums_error > 1e-5:
        errors.append(f"per-id validation loss sums differ from the recorded ones by up to {sums_error:.1e}")
    return errors, sums_error


def main(expected: str) -> int:
    failed = False
    for case in json.loads(Path(expected).read_text()):
        errors, sums_error = check(case)
        failed |= bool(errors)
        print(f"transformers {transformers.__version__}: {case['folder']}: per-id sums within {sums_error:.0e}: "
              f"{'; '.join(errors) or 'ok'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
