"""Job resources for the cluster: what each rule asks SLURM for, and the plan's cost, torch-free.

Snakemake calls the resource values below per job (`wildcards`, `attempt`); `rules/resources.smk` wires them.
Site values (partitions, account, GPU model) are never in the project: they come from the environment
(`ENV`, which wins) or from the config's `resources:` section. Without any, jobs go to the cluster's default
partition and the GPU-memory check is skipped.

- CPU rules (`cpu_resources`, `prepare_resources`, `tokenize_resources`, `aggregate_resources`,
  `publish_resources`): mem_mb and runtime from the job's input size (or the grid's; tokenize: the text it
  encodes), growing with `attempt`, in the CPU partition and account
  when configured (`placement(site, gpu=False)`); never a GPU.
- train (`train_resources`): one GPU (unless `train.device: cpu`), `cpus_per_task` = `train.threads`,
  host memory and runtime from the model preset and the step count (`estimate_train`), growing with
  `attempt` (the profile's `retries` resubmit a timed-out run with more time; it resumes from `ckpt/`),
  and `slurm_extra` asking SLURM to send SIGTERM to the job step `signal_seconds` before the time limit, so
  the run writes its checkpoint first.
- Several runs per GPU (`runs_per_gpu`, `gpu_share`): on a site whose GPUs are split into SLURM shards
  (gres/shard, `gpu_shards` shards per GPU), a run small enough to share a GPU asks for the shards of its
  share instead of a whole GPU; SLURM then starts several such jobs side by side on one GPU. A run costs
  its share of a GPU's hours.
- Seed packs (`resources.pack_seeds`; `seed_packs`, `pack_resources`): one job trains every seed of a grid
  point at once on one whole GPU (one process per seed), where they fit together by the memory estimate; on
  any site. The pack holds the sum of its seeds' host memory and time limit, and costs the longest seed's
  GPU-hours.
- `check_gpu_memory` raises ConfigError at planning time when a model needs more GPU memory than the
  configured GPU model has.
"""

from __future__ import annotations

import functools
import math
import os
import re
from dataclasses import dataclass, field

from . import presets
from .errors import ConfigError

# resources: key -> environment variable that overrides it
ENV = {
    "gpu_partition": "TOKENFAIR_GPU_PARTITION",
    "cpu_partition": "TOKENFAIR_CPU_PARTITION",
    "gpu_model": "TOKENFAIR_GPU_MODEL",
    "gpu_memory_gb": "TOKENFAIR_GPU_MEMORY_GB",
    "gpu_shards": "TOKENFAIR_GPU_SHARDS",
    "slurm_account": "TOKENFAIR_SLURM_ACCOUNT",
}

# Memory (GB) and dense bf16 peak (TFLOP/s) of common GPU models, by the gres type names sites use.
# A size in the name ("a100_80gb", "h100-94g") gives the memory; resources.gpu_memory_gb overrides both.
GPUS = {
    "v100": (16, 125),
    "a10": (24, 125),
    "l4": (24, 121),
    "a40": (48, 150),
    "a6000": (48, 155),
    "l40": (48, 181),
    "l40s": (48, 362),
    "a100": (40, 312),
    "h100": (80, 989),
    "gh200": (96, 989),
    "h200": (141, 989),
    "mi250": (64, 362),
    "mi300": (192, 1307),
}
ASSUMED_TFLOPS = 312  # an unknown or unset GPU model is costed as an A100
MFU = 0.15  # share of the bf16 peak a step reaches: 0.13-0.23 measured for the paper models on an H200 (benchmarks/gpu_check.py)
GPU_STEP_FLOOR_S = 0.05  # small models are launch-bound: at least this per optimizer step
CPU_GFLOPS_PER_THREAD = 30  # the calibration run (tiny-m, 2 threads) did ~35 per thread, evaluations included
STARTUP_S = 60  # imports, reading the token shards, saving the model
CKPT_WRITE_BYTES_PER_S = 200e6  # shared file systems are slow; what signal_seconds allows for
# Runs sharing a GPU are packed into this share of its memory: the memory estimate was measured low by up to 14%
# (docs/gpu.md), and each process holds its own CUDA context.
PACK_MEMORY_SHARE = 0.8
AUTO_RUNS_PER_GPU = 8  # runs_per_gpu auto packs at most this many: a GPU node has ~8-16 CPU cores per GPU


@dataclass(frozen=True)
class Site:
    """Where jobs go: partitions, account, GPU model; `source` says where each value came from."""

    gpu_partition: str | None = None
    cpu_partition: str | None = None
    gpu_model: str | None = None
    gpu_memory_gb: float | None = None
    gpu_shards: int | None = None
    slurm_account: str | None = None
    source: dict = field(default_factory=dict, compare=False)

    def describe(self, key: str) -> str:
        return f"{getattr(self, key)} (from {self.source.get(key, 'default')})"


def site(cfg: dict, environ=None) -> Site:
    """The site settings: environment variables (ENV) over the config's `resources:` section."""
    environ = os.environ if environ is None else environ
    section = cfg.get("resources") or {}
    values, source = {}, {}
    for key, var in ENV.items():
        if environ.get(var):
            values[key], source[key] = environ[var], f"${var}"
        elif section.get(key) is not None:
            values[key], source[key] = section[key], f"config resources.{key}"
    for key, kind, what in (("gpu_memory_gb", float, "GPU memory in GB must be a number"),
                            ("gpu_shards", int, "shards per GPU must be a whole number")):
        if key in values:
            try:
                values[key] = kind(values[key])
            except ValueError:
                raise ConfigError(f"{source[key]}: {what}, got {values[key]!r}") from None
    return Site(**values, source=source)


def gpu_memory_gb(s: Site) -> float | None:
    """The configured GPU model's memory in GB: gpu_memory_gb, a size in the name, or the GPUS table."""
    if s.gpu_memory_gb is not None:
        return s.gpu_memory_gb
    if not s.gpu_model:
        return None
    name = s.gpu_model.lower()
    for part in re.split(r"[^a-z0-9]+", name):
        if re.fullmatch(r"\d+gb?", part):
            return float(part.rstrip("gb"))
    known = _known_gpu(name)
    return float(GPUS[known][0]) if known else None


def gpu_tflops(s: Site) -> float:
    known = _known_gpu((s.gpu_model or "").lower())
    return float(GPUS[known][1]) if known else float(ASSUMED_TFLOPS)


def _known_gpu(name: str) -> str | None:
    """The GPUS key a gres type name refers to: the longest key that starts one of its parts."""
    parts = re.split(r"[^a-z0-9]+", name)
    hits = [k for k in GPUS for p in parts if p.startswith(k) or p.endswith(k)]
    return max(hits, key=len) if hits else None


# --------------------------------------------------------------------------------------------------
# estimates


@functools.lru_cache(maxsize=None)
def _tokenizer_file_vocab(path: str) -> int:
    from tokenizers import Tokenizer

    from .tokenization import vocab_size as tokenizer_vocab_size

    return tokenizer_vocab_size(Tokenizer.from_file(path))


def vocab_size(cfg: dict, tok: str) -> int:
    """A tokenizer id's vocabulary size: the configured bpe size, or read from a given tokenizer.json."""
    spec = cfg["tokenizers"][tok]
    if spec["type"] == "bpe":
        return int(spec["vocab_size"])
    return _tokenizer_file_vocab(spec["path"])


@dataclass(frozen=True)
class TrainEstimate:
    parameters: int
    tokens: int  # trained tokens: steps x batch x grad_accum x seq_len
    hours: float  # wall-clock of one run on one device
    gpu_memory_gb: float  # peak during a training step (0 on the CPU)
    gpu: bool  # runs on a GPU
    checkpoint_gb: float  # weights + AdamW moments, fp32
    batch_size: int
    seq_len: int


def _layers_hidden(spec: dict) -> tuple[int, int]:
    if spec["family"] == "openelm":
        return spec["num_transformer_layers"], spec["model_dim"]
    return spec["num_hidden_layers"], spec["hidden_size"]


def estimate_train(settings: dict, vocab: int, s: Site) -> TrainEstimate:
    """Cost of one training run (`settings` from tokenfair.plan.Plan.settings) on the site's device."""
    spec, t = settings["model"], settings["train"]
    gpu = t["device"] != "cpu"
    n = presets.estimate_parameters(spec, vocab)
    layers, hidden = _layers_hidden(spec)
    seq = t["seq_len"]
    per_token = 6 * n + 12 * layers * hidden * seq  # forward + backward, attention scores included
    tokens = t["steps"] * t["batch_size"] * t["grad_accum"] * seq
    evals = t["steps"] // t["eval_every"] + 1
    eval_tokens = evals * (t["eval_train_tokens"] + t["eval_val_tokens"])
    flops = per_token * tokens + per_token / 3 * eval_tokens
    if gpu:
        seconds = max(flops / (gpu_tflops(s) * 1e12 * MFU), t["steps"] * t["grad_accum"] * GPU_STEP_FLOOR_S)
        precision = "fp32" if t["precision"] == "fp32" else "bf16"
        mem = presets.estimate_train_memory_gb(spec, vocab, t["batch_size"], seq, precision)
    else:
        seconds = flops / (CPU_GFLOPS_PER_THREAD * 1e9 * t["threads"])
        mem = 0.0
    return TrainEstimate(
        parameters=n,
        tokens=tokens,
        hours=(STARTUP_S + seconds) / 3600,
        gpu_memory_gb=mem,
        gpu=gpu,
        checkpoint_gb=16 * n / 1e9,
        batch_size=t["batch_size"],
        seq_len=seq,
    )


def check_gpu_memory(s: Site, estimates) -> None:
    """ConfigError when a run ((model name, TrainEstimate) pairs) needs more GPU memory than the site's GPU
    model has. No GPU model configured: no check."""
    have = gpu_memory_gb(s)
    if have is None:
        return
    which = s.describe("gpu_model") if s.gpu_model else s.describe("gpu_memory_gb")
    for name, est in estimates:
        if est.gpu and est.gpu_memory_gb > have:
            raise ConfigError(
                f"config key models.{name}: needs about {est.gpu_memory_gb:.0f} GB of GPU memory to train "
                f"({est.parameters / 1e6:.0f}M parameters at batch_size {est.batch_size} x seq_len "
                f"{est.seq_len}), more than the {have:g} GB of a GPU here (gpu_model {which}): lower "
                f"train.batch_size and raise train.grad_accum (same tokens per step), or ask for a larger GPU "
                f"({ENV['gpu_model']} / {ENV['gpu_memory_gb']})"
            )


def runs_per_gpu(est: TrainEstimate, s: Site, cap) -> int:
    """How many runs of this size share one GPU: floor(PACK_MEMORY_SHARE x GPU memory / the run's estimated
    GPU memory), at most `cap` (config resources.runs_per_gpu). One on the CPU; with the GPU
    memory unknown, `cap` when it is a number, else one. auto packs at most AUTO_RUNS_PER_GPU."""
    if not est.gpu:
        return 1
    have = gpu_memory_gb(s)
    fit = max(1, int(PACK_MEMORY_SHARE * have // est.gpu_memory_gb)) if have else None
    if cap == "auto":
        return min(fit, AUTO_RUNS_PER_GPU) if fit else 1
    return min(int(cap), fit) if fit else int(cap)


@dataclass(frozen=True)
class GpuShare:
    """What one training run holds of a GPU: `shards` of the site's `per_gpu` (0 of 0: a whole GPU)."""

    shards: int = 0
    per_gpu: int = 0

    @property
    def fraction(self) -> float:
        return self.shards / self.per_gpu if self.shards else 1.0


def gpu_share(est: TrainEstimate, s: Site, cap) -> GpuShare:
    """A run's share of a GPU: ceil(shards per GPU / runs_per_gpu) shards, so that the runs SLURM puts on one
    GPU fit its memory together; a whole GPU when the site has no shards (or the run fills a GPU)."""
    if not s.gpu_shards:
        return GpuShare()
    k = -(-s.gpu_shards // runs_per_gpu(est, s, cap))
    return GpuShare() if k >= s.gpu_shards else GpuShare(k, s.gpu_shards)


def check_gpu_sharing(s: Site, cap) -> None:
    """ConfigError when resources.runs_per_gpu asks for several runs per GPU on a site without GPU shards."""
    if not s.gpu_shards and cap != "auto" and int(cap) > 1:
        raise ConfigError(
            f"config key resources.runs_per_gpu: {cap} runs per GPU need GPUs split into SLURM shards "
            f"(gres/shard); set resources.gpu_shards ({ENV['gpu_shards']}) to the shards per GPU of your site"
        )


# --------------------------------------------------------------------------------------------------
# resources


def grow(value: float, attempt: int, rate: float = 1.0) -> int:
    """value on the first attempt, value x (1 + rate x (attempt - 1)) on later ones, rounded up."""
    return int(math.ceil(value * (1 + rate * (attempt - 1))))


def placement(s: Site, gpu: bool) -> dict:
    """Partition, account and GPU model of a job; a CPU job (gpu=False) gets no GPU key at all."""
    out = {}
    partition = s.gpu_partition if gpu else s.cpu_partition
    if partition:
        out["slurm_partition"] = partition
    if s.slurm_account:
        out["slurm_account"] = s.slurm_account
    if gpu and s.gpu_model:
        out["gpu_model"] = s.gpu_model
    return out


def runtime_minutes(est: TrainEstimate, attempt: int = 1) -> int:
    """The time limit asked for: 1.5 x the estimate + 10 min, at least 15 min, x attempt."""
    return grow(math.ceil(max(15.0, est.hours * 60 * 1.5 + 10)), attempt)


def host_mem_mb(est: TrainEstimate, attempt: int = 1) -> int:
    """Host memory: 3 GB for torch/CUDA and the data, plus twice the checkpoint (load/save); +50% a retry."""
    return grow(3000 + 2 * est.checkpoint_gb * 1000, attempt, 0.5)


def signal_seconds(*estimates: TrainEstimate) -> int:
    """How long before the time limit SLURM sends SIGTERM: time to write the checkpoints of the job's runs
    (one, or a seed pack's, written at once), and SLURM's signal timer resolution (up to 60 s early)."""
    return int(120 + math.ceil(sum(e.checkpoint_gb for e in estimates) * 1e9 / CKPT_WRITE_BYTES_PER_S))


def _training_job(cfg: dict, s: Site, estimates_of) -> dict:
    """What a train job and a seed pack ask for, from `estimates_of(wildcards)`, the TrainEstimates of the
    job's runs: the sum of their host memory and of their time limits (an upper bound for a pack, whose seeds
    run at once), one SIGTERM before the limit leaving time for every run's checkpoint."""
    return {
        "mem_mb": lambda wildcards, attempt: sum(host_mem_mb(e, attempt) for e in estimates_of(wildcards)),
        "runtime": lambda wildcards, attempt: sum(runtime_minutes(e, attempt) for e in estimates_of(wildcards)),
        "cpus_per_task": max(1, int(cfg["train"]["threads"])),
        # SIGTERM to the job step (not B:, the batch shell): it reaches the training process through srun;
        # append: a requeued job keeps the log of its earlier start.
        "slurm_extra": lambda wildcards: f"--signal=TERM@{signal_seconds(*estimates_of(wildcards))} --open-mode=append",
        **placement(s, gpu=cfg["train"]["device"] != "cpu"),
    }


def train_resources(cfg: dict, s: Site, estimate_of, share_of) -> dict:
    """Resources of the train rule; `estimate_of(wildcards)` gives a run's TrainEstimate, `share_of(wildcards)`
    its GpuShare."""
    gpu = cfg["train"]["device"] != "cpu"
    out = _training_job(cfg, s, lambda wildcards: [estimate_of(wildcards)])
    if gpu and s.gpu_shards:
        # A run's share of a GPU on a site with GPU shards: gpu=0 and no gpu_model (with a model the executor
        # would add --gpus=<gpu_model>:1), gres=shard:[<gpu_model>:]<k> (--gres); a run that fills a GPU: gpu=1.
        typed = f"{s.gpu_model}:" if s.gpu_model else ""
        out["gpu"] = lambda wildcards: 0 if share_of(wildcards).shards else 1
        out["gres"] = lambda wildcards: f"shard:{typed}{k}" if (k := share_of(wildcards).shards) else ""
        if s.gpu_model:
            out["gpu_model"] = lambda wildcards: "" if share_of(wildcards).shards else s.gpu_model
    elif gpu:
        out["gpu"] = 1  # the executor's spelling: --gpus=1 (or --gpus=<gpu_model>:1)
    return out


# --------------------------------------------------------------------------------------------------
# seed packs (resources.pack_seeds): one job trains every seed of a grid point at once, on one GPU

PACK_RULE = "train_seeds"  # the pack rules' names: train_seeds_<seed>_<seed>..., one per tuple of seeds


def split_seed(run: str) -> tuple[str, str]:
    """A run path's point (the path without its seed, always the last segment: paths.run_regex) and seed."""
    point, _, last = run.rpartition("/")
    axis, _, seed = last.partition("~")
    if axis != "seed" or not point:
        raise ValueError(f"run path {run!r} does not end with its seed~<s> segment")
    return point, seed


def packs_fit(est: TrainEstimate, s: Site, cap, n: int) -> bool:
    """Whether n runs of this size train together on one GPU: runs_per_gpu(est, s, cap) >= n where the GPU
    memory is known; on the CPU, always; with the GPU memory unknown, unless resources.runs_per_gpu caps it
    below n."""
    if not est.gpu:
        return True
    if gpu_memory_gb(s) is None:
        return cap == "auto" or int(cap) >= n
    return runs_per_gpu(est, s, cap) >= n


def seed_packs(plan, estimate_of, s: Site) -> dict[str, tuple[str, ...]]:
    """The seed packs of a plan (tokenfair.plan.Plan): point (run path without its seed) -> its seeds as the
    path spells them, in numeric order; none unless resources.pack_seeds. `estimate_of(point)`: a grid point's
    TrainEstimate. A selected point packs when it has two seeds or more, every corpus x tokenizer trains it
    with the same seeds (so that its path alone names the job that makes a run: `pack_rules`), and its runs
    fit on one GPU together (`packs_fit`, at most resources.runs_per_gpu). Every other run stays a job of the
    rule train."""
    if not plan["resources"]["pack_seeds"]:
        return {}
    seeds: dict[str, dict[tuple[str, str], list[str]]] = {}
    for p in plan.selected:
        point, seed = split_seed(p["run"])
        seeds.setdefault(point, {}).setdefault((p["corpus"], p["tok"]), []).append(seed)
    fits: dict[str, bool] = {}
    for p in plan.selected:
        point = split_seed(p["run"])[0]
        n = len(seeds[point][(p["corpus"], p["tok"])])
        fits[point] = fits.get(point, True) and packs_fit(estimate_of(p), s, plan["resources"]["runs_per_gpu"], n)
    out = {}
    for point, by_data in seeds.items():
        tuples = {tuple(sorted(v, key=int)) for v in by_data.values()}
        if len(tuples) == 1 and fits[point] and len(seed_tuple := tuples.pop()) > 1:
            out[point] = seed_tuple
    return out


def pack_rules(packs: dict[str, tuple[str, ...]]) -> dict[str, tuple[tuple[str, ...], str]]:
    """One pack rule per tuple of seeds: rule name -> (the seeds, the regex of its {point} wildcard: exactly
    the points packed with these seeds)."""
    points: dict[tuple[str, ...], list[str]] = {}
    for point, seeds in packs.items():
        points.setdefault(seeds, []).append(point)
    return {f"{PACK_RULE}_{'_'.join(seeds)}": (seeds, "|".join(re.escape(p) for p in sorted(ps)))
            for seeds, ps in sorted(points.items())}


def pack_settings(settings: list[dict]) -> list[dict]:
    """The settings of a pack's seeds as its processes get them: the job's train.threads split among them
    (at least one each)."""
    threads = max(1, settings[0]["train"]["threads"] // len(settings))
    return [{**s, "train": {**s["train"], "threads": threads}} for s in settings]


def pack_resources(cfg: dict, s: Site, estimates_of) -> dict:
    """Resources of a pack rule; `estimates_of(wildcards)` gives its seeds' TrainEstimates. One whole GPU
    (the site's GPU model, partition), host memory and time limit the sums of its seeds' (the time an upper
    bound: the seeds train at once), SIGTERM before the limit as for train, all growing per attempt alike."""
    out = _training_job(cfg, s, estimates_of)
    if cfg["train"]["device"] != "cpu":
        out["gpu"] = 1
    return out


def pack_cost(estimates) -> tuple[int, float, float]:
    """(GPUs, GPU-hours, CPU-hours) of a pack for the plan's summary line: one GPU for the longest seed's
    estimate (its seeds taken to run at once as fast as alone: a lower bound), or on the CPU the sum of its
    seeds' hours."""
    if estimates[0].gpu:
        return 1, max(e.hours for e in estimates), 0.0
    return 0, 0.0, sum(e.hours for e in estimates)


# CPU rules whose cost follows the size of their input (MB): host memory (MB) = mem_base + mem_per_mb x input
# (None: the rule's own formula), runtime (minutes) = minutes + input / mb_per_minute (no such term when None);
# both x attempt.
CPU_RULES = {  # rule: (mem_base, mem_per_mb, minutes, mb_per_minute)
    "tokenizer": (2000, 12, 10, 30),
    "tokenize": (None, None, 10, 50),  # and tokenize_ood; memory from the text it encodes: tokenize_resources
    "count": (1500, 1, 10, 1000),
    "zipf": (1000, 2, 10, None),
}


def cpu_resources(s: Site, rule: str) -> dict:
    """Resources of a CPU rule of CPU_RULES (`resources: **cpu_resources(SITE, rule)`)."""
    mem_base, mem_per_mb, minutes, mb_per_minute = CPU_RULES[rule]
    out = {
        "runtime": lambda wildcards, input, attempt: int(
            (minutes + (input.size_mb / mb_per_minute if mb_per_minute else 0)) * attempt),
        **placement(s, gpu=False),
    }
    if mem_base is not None:
        out["mem_mb"] = lambda wildcards, input, attempt: int((mem_base + mem_per_mb * input.size_mb) * attempt)
    return out


def documents_text_bytes(documents_path: str, split: str | None = None) -> tuple[int, int]:
    """(text bytes, largest document's bytes) of one split of documents.parquet (None: every document), from
    its text column alone. FileNotFoundError naming it while it does not exist (Snakemake's dry run then shows
    the job's memory as to be determined)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    with open(documents_path, "rb") as fh:
        table = pq.read_table(fh, columns=["split", "text"], filters=None if split is None else [("split", "=", split)])
    lengths = pc.binary_length(table["text"])
    return int(pc.sum(lengths).as_py() or 0), int(pc.max(lengths).as_py() or 0)


def tokenize_resources(s: Site) -> dict:
    """Resources of tokenize and tokenize_ood: memory from the text of the split it encodes and its largest
    document (tokenfair.tokenization.encode_memory_mb, measured), x attempt; runtime as CPU_RULES says."""
    from .tokenization import encode_memory_mb

    def mem_mb(wildcards, input, attempt):
        return grow(encode_memory_mb(*documents_text_bytes(input.documents, wildcards.get("split"))), attempt)

    return {**cpu_resources(s, "tokenize"), "mem_mb": mem_mb}


def prepare_resources(s: Site, corpora: dict) -> dict:
    """Resources of prepare: from the corpus's own files; an hf corpus's files are fetched by the job itself,
    their size unknown when planning."""

    def hf(wildcards) -> bool:
        return corpora[wildcards.corpus]["source"] == "hf"

    return {
        "mem_mb": lambda wildcards, input, attempt: int(
            (4000 if hf(wildcards) else 1000 + 6 * input.size_mb) * attempt),
        "runtime": lambda wildcards, input, attempt: int(
            (60 if hf(wildcards) else 10 + input.size_mb / 100) * attempt),
        **placement(s, gpu=False),
    }


def aggregate_resources(s: Site, n_points: int) -> dict:
    """Resources of aggregate and aggregate_partial (a grid of n_points). Peak RSS measured by
    benchmarks/bench_aggregate.py for 1,000 runs x 152k ids x 2 splits x 11 eval points: ~560 MB per worker
    process (one run + imports), ~650 MB for the main process (the summary tables)."""
    return {
        "mem_mb": lambda wildcards, threads, attempt: int((800 + 700 * threads) * attempt),
        "runtime": lambda wildcards, attempt: (10 + n_points // 20) * attempt,
        **placement(s, gpu=False),
    }


def publish_resources(s: Site) -> dict:
    """Resources of publish (a few summary tables and two figures)."""
    return {
        "mem_mb": lambda wildcards, attempt: 2000 * attempt,
        "runtime": lambda wildcards, attempt: 10 * attempt,
        **placement(s, gpu=False),
    }


def summary_line(rule_counts: dict[str, int], gpus: int, gpu_hours: float, cpu_hours: float, s: Site) -> str:
    """The one line `snakemake -n` ends with: jobs per rule, GPUs, estimated GPU-hours."""

    def n(count: int, word: str) -> str:
        return f"{count} {word}{'' if count == 1 else 's'}"

    jobs = ", ".join(f"{rule} {k}" for rule, k in sorted(rule_counts.items()))
    gpu_name = s.gpu_model or f"unset: costed as {ASSUMED_TFLOPS} TFLOP/s peak"
    line = (
        f"tokenfair plan: {n(sum(rule_counts.values()), 'job')} ({jobs}); {n(gpus, 'GPU')}; "
        f"estimated {gpu_hours:.2f} GPU-hours ({gpu_name})"
    )
    if cpu_hours:
        line += f" + {cpu_hours:.2f} CPU-hours of training"
    return line
