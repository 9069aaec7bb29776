# Train stage: one job per grid point (docs/architecture.md). Paramspace style: the {run} wildcard is the
# point's `axis~value/...` path (tokenfair.paths.run_subpath), so a new axis is a config entry (`axes:`), never
# a new rule. The job trains, evaluates per vocabulary id and writes the run folder (tokenfair.train.run).
# Uses RUN_DIR, RUN_REGEX, train_inputs, train_settings, TRAIN_THREADS from rules/common.smk and
# TRAIN_RESOURCES from rules/resources.smk.


rule train:
    input:
        unpack(train_inputs),
    output:
        # the run folder's files (tokenfair.paths.RUN_FILES); the model is a folder
        **{kind: os.path.join(RUN_DIR, name) for kind, name in paths.RUN_FILES.items() if kind != "model"},
        model=directory(os.path.join(RUN_DIR, paths.RUN_MODEL)),
    log:
        LOG("train", "{corpus}", "tok~{tok}", "{run}"),
    benchmark:
        BENCH("train", "{corpus}", "tok~{tok}", "{run}")
    wildcard_constraints:
        run=RUN_REGEX,
    conda:
        "../envs/train.yaml"
    threads: TRAIN_THREADS
    resources:
        **TRAIN_RESOURCES,
    params:
        settings=train_settings,
        tokenizer=lambda wildcards: PLAN["tokenizers"][wildcards.tok],
        corpus=lambda wildcards: PLAN["corpora"][wildcards.corpus],
    script:
        "../scripts/train.py"
