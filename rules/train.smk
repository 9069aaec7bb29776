# Train stage: one job per grid point (docs/architecture.md). Paramspace style: the {run} wildcard is the
# point's `axis~value/...` path (tokenfair.paths.run_subpath), so a new axis is a config entry (`axes:`), never
# a new rule. The job trains, evaluates per vocabulary id and writes the run folder (tokenfair.train.run).
# Uses RUN_DIR, RUN_REGEX, train_inputs, train_settings, train_threads and TRAIN_RESOURCES from rules/common.smk.

rule train:
    input:
        unpack(train_inputs),
    output:
        per_token=os.path.join(RUN_DIR, paths.RUN_PER_TOKEN),
        train_log=os.path.join(RUN_DIR, paths.RUN_LOG),
        run_json=os.path.join(RUN_DIR, paths.RUN_JSON),
        norms=os.path.join(RUN_DIR, paths.RUN_NORMS),
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
