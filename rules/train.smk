# Train stage: one job per grid point (docs/architecture.md). Paramspace style: the {run} wildcard is the
# point's `axis~value/...` path (tokenfair.paths.run_subpath), so a new axis is a config entry (`axes:`), never
# a new rule. The job trains, evaluates per vocabulary id and writes the run folder (tokenfair.train.run).
# Uses CFG, R, LOGS, BENCH, P, GRID_INDEX, train_point and TRAIN_RESOURCES from rules/common.smk.

RUN_DIR = P("run")
# `model~<m>/weight_decay~<wd>/[<axis>~<v>/...]seed~<s>` with this config's axes, in grid order.
RUN_REGEX = "/".join(f"{axis}~[^/]+" for axis in tfconfig.axis_names(CFG))


_SETTINGS = {}


def train_settings(wildcards):
    """The run's settings as plain data (tokenfair.config.run_settings), from the grid index; once per run."""
    key = (wildcards.corpus, wildcards.tok, wildcards.run)
    if key not in _SETTINGS:
        _SETTINGS[key] = tfconfig.run_settings(CFG, train_point(wildcards))
    return _SETTINGS[key]


def train_inputs(wildcards):
    """The corpus x tokenizer's tokenizer.json and its token shards: train, and each held-out split."""
    w = {"corpus": wildcards.corpus, "tok": wildcards.tok}
    out = {"tokenizer": paths.path("tokenizer", R, **w)}
    for split in tfconfig.corpus_splits(CFG["corpora"][wildcards.corpus]):
        out[split] = paths.path("tokens", R, split=split, **w)
    return out


def train_threads(wildcards):
    return train_settings(wildcards)["train"]["threads"]


rule train:
    input:
        unpack(train_inputs),
    output:
        per_token=os.path.join(RUN_DIR, paths.RUN_PER_TOKEN),
        train_log=os.path.join(RUN_DIR, paths.RUN_LOG),
        run_json=os.path.join(RUN_DIR, paths.RUN_JSON),
        model=directory(os.path.join(RUN_DIR, paths.RUN_MODEL)),
    params:
        settings=train_settings,
        tokenizer=lambda wildcards: CFG["tokenizers"][wildcards.tok],
    wildcard_constraints:
        run=RUN_REGEX,
    log:
        os.path.join(LOGS, "train", "{corpus}", "tok~{tok}", "{run}.log"),
    benchmark:
        os.path.join(BENCH, "train", "{corpus}", "tok~{tok}", "{run}.tsv")
    threads: train_threads
    resources:
        **TRAIN_RESOURCES,
    conda:
        "../envs/train.yaml"
    script:
        "../scripts/train.py"
