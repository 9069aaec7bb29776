# Train stage: one job per grid point (docs/architecture.md), or per point's seeds with resources.pack_seeds.
# Paramspace style: the {run} wildcard is the point's `axis~value/...` path (tokenfair.paths.run_subpath), so a
# new axis is a config entry (`axes:`), never a new rule. The job trains, evaluates per vocabulary id and writes
# the run folder (tokenfair.train.run).
# Uses RUN_DIR, RUN_REGEX, the train job lookups (TRAIN_THREADS, ...) and pack_outputs from rules/common.smk,
# TRAIN_RESOURCES, PACK_RULES and the pack lookups from rules/resources.smk.


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
        tokenizer=job_tokenizer,
        corpus=job_corpus,
    script:
        "../scripts/train.py"


# Seed packs (resources.pack_seeds, docs/slurm.md; none by default): one job trains every seed of a grid point
# at once, on one GPU. Its {point} wildcard is the run path without the seed; one rule per tuple of seeds
# (PACK_RULES), its {point} constrained to exactly the points packed with those seeds, so that it wins over
# train for their files (ruleorder) and every other run stays a train job.
for _rule, (_seeds, _points) in PACK_RULES.items():

    rule:
        name:
            _rule
        input:
            unpack(pack_inputs),
        output:
            **pack_outputs(_seeds),
        log:
            job=LOG("train_seeds", "{corpus}", "tok~{tok}", "{point}"),
            seeds=[LOG("train_seeds", "{corpus}", "tok~{tok}", "{point}", f"seed~{s}") for s in _seeds],
        benchmark:
            BENCH("train_seeds", "{corpus}", "tok~{tok}", "{point}")
        wildcard_constraints:
            point=_points,
        conda:
            "../envs/train.yaml"
        threads: pack_threads
        resources:
            **PACK_RESOURCES,
        params:
            seeds=list(_seeds),
            settings=pack_settings,
            tokenizer=job_tokenizer,
            corpus=job_corpus,
        script:
            "../scripts/train_seeds.py"

    workflow.ruleorder(_rule, "train")
