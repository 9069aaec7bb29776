"""The optimizer of a run: named parameter groups, AdamW with per-row decay, the learning-rate schedule.

Every parameter lands in exactly one named group (OLMo / nanochat style), in this order:

| group | what |
|---|---|
| `matrices` | the >= 2-D weights of the blocks |
| `embeddings` | the input embedding (tied embeddings: the one shared tensor, so no `head`) |
| `head` | the output head (untied) |
| `norms_biases` | the 1-D parameters: norm weights and biases |

`train.decay_group` says which groups decay at `train.weight_decay` (the others at 0): `all` every group;
`matrices` matrices, embeddings and head; `matrices_no_embeddings` matrices only. AdamW's decay is
decoupled: p <- p - lr x weight_decay x p each step.

Frequency-aware decay (`train.embedding_decay_alpha`): a decayed `embeddings` / `head` group carries
`row_scales` s_i (`row_decay_scales`), and `AdamW` decays its row i at weight_decay x s_i instead:
row i <- row i x (1 - lr x weight_decay x s_i), right before the update, where AdamW applies its own.
`embedding_decay_rows` `both` scales both groups, `unembedding` the head only (tied: the shared tensor
either way). `frequency_row_scales` refuses scales whose largest lr x weight_decay x s_i reaches 1 (it would
flip the sign of that row).

The learning rate: linear warmup over warmup_steps, then cosine to lr x min_lr_ratio at the last step
(`lr_factor`, applied by `lr_scheduler`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .errors import DataError

GROUPS = ("matrices", "embeddings", "head", "norms_biases")
DECAYED = {  # train.decay_group -> the groups it decays
    "all": {"matrices", "embeddings", "head", "norms_biases"},
    "matrices": {"matrices", "embeddings", "head"},
    "matrices_no_embeddings": {"matrices"},
}


@dataclass
class ParamGroup:
    name: str                  # one of GROUPS
    names: list[str]           # its parameters, in the model's order
    decayed: bool              # train.decay_group decays it (at train.weight_decay, which may be 0)
    weight_decay: float        # train.weight_decay when decayed, else 0
    row_scales: np.ndarray | None = None  # frequency-aware decay: row i at weight_decay x row_scales[i]


def tied(model: torch.nn.Module) -> bool:
    """The output head is the input embedding (one tensor)."""
    out = model.get_output_embeddings()
    return out is not None and out.weight is model.get_input_embeddings().weight


def _group_of(model: torch.nn.Module):
    """The function parameter -> its group's name, for this model."""
    emb = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    head = out.weight if out is not None else None

    def group(p: torch.Tensor) -> str:
        if p is emb:
            return "embeddings"
        if p is head:
            return "head"
        return "matrices" if p.ndim >= 2 else "norms_biases"

    return group


def param_groups(model: torch.nn.Module, train: dict, row_scales: np.ndarray | None = None) -> list[ParamGroup]:
    """The non-empty named groups of `model` under train.decay_group / weight_decay, with `row_scales` on the
    groups that embedding_decay_rows names (when they are decayed)."""
    mode = train["decay_group"]
    if mode not in DECAYED:
        raise ValueError(f"unknown train.decay_group {mode!r}")
    group = _group_of(model)
    named = dict(model.named_parameters())  # a tied tensor is listed once
    names = {g: [] for g in GROUPS}
    for name, p in named.items():
        names[group(p)].append(name)
    placed = sorted(id(named[n]) for g in GROUPS for n in names[g])
    assert placed == sorted(id(p) for p in model.parameters()), "every parameter must be in exactly one group"
    scaled = {"head", "embeddings"} if train.get("embedding_decay_rows", "both") == "both" or tied(model) else {"head"}
    wd = float(train["weight_decay"])
    out = []
    for g in GROUPS:
        decayed = g in DECAYED[mode]
        scales = row_scales if decayed and g in scaled else None
        if names[g]:
            out.append(ParamGroup(g, names[g], decayed, wd if decayed else 0.0, scales))
    return out


def decay_lists(model: torch.nn.Module, groups: list[ParamGroup]) -> dict[str, list[str]]:
    """run.json's parameter lists, each in the model's order: `decay` (decayed uniformly), `no_decay`,
    `row_decay` (decayed per row)."""
    kind = {}
    for g in groups:
        for n in g.names:
            kind[n] = "row_decay" if g.row_scales is not None else "decay" if g.decayed else "no_decay"
    out = {"decay": [], "no_decay": [], "row_decay": []}
    for name, _ in model.named_parameters():
        out[kind[name]].append(name)
    return out


def grad_norm_order(model: torch.nn.Module, groups: list[ParamGroup]) -> list[torch.Tensor]:
    """The parameters in the order the gradient norm sums them (its last bits depend on the order): the
    decayed ones (uniformly or per row), then the others, each in the model's order."""
    decayed = {n for g in groups if g.decayed for n in g.names}
    named = list(model.named_parameters())
    return [p for n, p in named if n in decayed] + [p for n, p in named if n not in decayed]


def row_decay_scales(train_counts: np.ndarray, alpha: float, n_rows: int) -> np.ndarray:
    """Frequency-aware decay (train.embedding_decay_alpha): per embedding row i, s_i proportional to
    (train count of id i + 1)^alpha, normalised to mean 1 over the n_rows rows (rows beyond the tokenizer's
    ids count 0). alpha 0 gives every row 1: plain decay."""
    counts = np.zeros(n_rows, dtype=np.float64)
    n = min(n_rows, len(train_counts))
    counts[:n] = np.asarray(train_counts, dtype=np.float64)[:n]
    s = (counts + 1.0) ** float(alpha)
    return s / s.mean()


def frequency_row_scales(train: dict, train_counts: np.ndarray | None, n_rows: int, run: str) -> np.ndarray | None:
    """The row scales of train.embedding_decay_alpha from the train counts (the frequency table's; None without
    alpha); DataError when the most frequent row's lr x weight_decay x s reaches 1."""
    alpha = train["embedding_decay_alpha"]
    if alpha is None:
        return None
    if train_counts is None:
        raise ValueError("train.embedding_decay_alpha needs the train frequency table (train_frequency)")
    scales = row_decay_scales(train_counts, alpha, n_rows)
    worst = train["lr"] * float(train["weight_decay"]) * float(scales.max())
    if worst >= 1:
        raise DataError(
            f"{run}: train.embedding_decay_alpha {alpha} gives the most frequent id's row a decay of "
            f"lr x weight_decay x s = {worst:.3g} per step (>= 1 flips its sign); lower embedding_decay_alpha, "
            f"weight_decay or lr"
        )
    return scales


class AdamW(torch.optim.AdamW):
    """torch's AdamW whose param groups may carry `row_scales` (a device tensor, one scale per row): such a
    group is decayed per row, row i <- row i x (1 - lr x weight_decay x s_i), right before the update (as
    AdamW orders its own decay), and AdamW's uniform decay is skipped for it."""

    @torch.no_grad()
    def step(self, closure=None):
        scaled = [g for g in self.param_groups if g["row_scales"] is not None]
        for g in scaled:
            if g["weight_decay"] != 0:
                for p in g["params"]:
                    factor = (1.0 - g["lr"] * g["weight_decay"] * g["row_scales"][: p.shape[0]]).to(p.dtype)
                    p.mul_(factor.unsqueeze(1))
        decays = [g["weight_decay"] for g in scaled]
        for g in scaled:
            g["weight_decay"] = 0.0
        try:
            return super().step(closure)
        finally:
            for g, wd in zip(scaled, decays):
                g["weight_decay"] = wd

    def load_state_dict(self, state_dict: dict) -> None:
        """The moments and step counts from `state_dict`; the row scales stay this optimizer's (they come from
        the settings and the frequency table, and live on this device)."""
        scales = [g["row_scales"] for g in self.param_groups]
        super().load_state_dict(state_dict)
        for g, s in zip(self.param_groups, scales):
            g["row_scales"] = s


def make_optimizer(model: torch.nn.Module, groups: list[ParamGroup], train: dict, device: torch.device) -> AdamW:
    """AdamW over the named groups (fused on CUDA); each torch param group has the group's `name`,
    `weight_decay` and `row_scales`."""
    named = dict(model.named_parameters())
    torch_groups = []
    for g in groups:
        scales = None if g.row_scales is None else torch.from_numpy(np.asarray(g.row_scales, np.float64)).to(device)
        torch_groups.append({"params": [named[n] for n in g.names], "name": g.name, "weight_decay": g.weight_decay,
                             "row_scales": scales})
    kwargs = {"fused": True} if device.type == "cuda" else {}
    return AdamW(torch_groups, lr=train["lr"], betas=tuple(train["betas"]), eps=train["eps"], **kwargs)


def lr_factor(step: int, train: dict) -> float:
    """Multiplier of train.lr for update `step` (0-based): linear warmup over warmup_steps, then cosine from
    1 to min_lr_ratio at the last step."""
    warmup, steps, floor = train["warmup_steps"], train["steps"], train["min_lr_ratio"]
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - 1 - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def cumulative_decay(train: dict) -> float:
    """The sum over the updates t of lr_t x weight_decay (lr_t = train.lr x lr_factor(t), weight_decay the
    matrices group's): AdamW's decoupled decay shrinks a decayed weight by (1 - lr_t x weight_decay) per
    update, about exp(-cumulative_decay) over the run."""
    return math.fsum(train["lr"] * lr_factor(t, train) for t in range(train["steps"])) * train["weight_decay"]


def lr_scheduler(optimizer: torch.optim.Optimizer, train: dict) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, train))
