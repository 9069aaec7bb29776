# Data stage: corpus spec -> documents.parquet -> tokenizer.json -> token shards -> frequency tables + Zipf
# figure (docs/architecture.md); an eval_only corpus's documents -> an ood/ shard per training tokenizer.
# Each rule runs one function of the tokenfair package through a thin script.
# Uses CFG, R, LOGS, BENCH and P from rules/common.smk. Resources: memory grows with the input and with each
# retry (attempt); CPU rules only, never a GPU.
import re

from tokenfair import corpus as tfcorpus
from tokenfair import tokenization as tftok


rule prepare:
    input:
        # a text/jsonl/parquet corpus's own files, so that editing or adding one reruns prepare
        files=lambda w: tfcorpus.local_files(CFG["corpora"][w.corpus]),
    output:
        documents=P("documents"),
    params:
        spec=lambda w: CFG["corpora"][w.corpus],
    log:
        os.path.join(LOGS, "prepare", "{corpus}.log"),
    benchmark:
        os.path.join(BENCH, "prepare", "{corpus}.tsv")
    threads: 1
    resources:
        # hf files are fetched by the job itself: their size is unknown when planning
        mem_mb=lambda w, input, attempt: int(
            (4000 if CFG["corpora"][w.corpus]["source"] == "hf" else 1000 + 6 * input.size_mb) * attempt
        ),
        runtime=lambda w, input, attempt: int(
            (60 if CFG["corpora"][w.corpus]["source"] == "hf" else 10 + input.size_mb / 100) * attempt
        ),
        **CPU_JOB,
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/prepare.py"


rule tokenizer:
    input:
        documents=P("documents"),
        given=lambda w: tftok.given_files(CFG["tokenizers"][w.tok]),
    output:
        tokenizer=P("tokenizer"),
    params:
        spec=lambda w: CFG["tokenizers"][w.tok],
    log:
        os.path.join(LOGS, "tokenizer", "{corpus}", "tok~{tok}.log"),
    benchmark:
        os.path.join(BENCH, "tokenizer", "{corpus}", "tok~{tok}.tsv")
    threads: 4
    resources:
        mem_mb=lambda w, input, attempt: int((2000 + 12 * input.size_mb) * attempt),
        runtime=lambda w, input, attempt: int((10 + input.size_mb / 30) * attempt),
        **CPU_JOB,
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/tokenizer.py"


rule tokenize:
    input:
        documents=P("documents"),
        tokenizer=P("tokenizer"),
    output:
        tokens=P("tokens"),
        index=P("tokens_index"),
    params:
        eod=lambda w: CFG["corpora"][w.corpus]["eod"],
        tokenizer=lambda w: CFG["tokenizers"][w.tok],
    log:
        os.path.join(LOGS, "tokenize", "{corpus}", "tok~{tok}", "{split}.log"),
    benchmark:
        os.path.join(BENCH, "tokenize", "{corpus}", "tok~{tok}", "{split}.tsv")
    threads: 4
    resources:
        mem_mb=lambda w, input, attempt: int((1500 + 6 * input.size_mb) * attempt),
        runtime=lambda w, input, attempt: int((10 + input.size_mb / 50) * attempt),
        **CPU_JOB,
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/tokenize_split.py"


rule tokenize_ood:
    # an evaluation-only corpus ({other}), all of its documents, through a training corpus's tokenizer, with
    # {other}'s own eod setting
    input:
        documents=lambda w: paths.path("documents", R, corpus=w.other),
        tokenizer=P("tokenizer"),
    output:
        tokens=P("ood_tokens"),
        index=P("ood_tokens_index"),
    wildcard_constraints:
        # only the eval_only corpora (a pattern that matches nothing when there is none)
        other="|".join(re.escape(c) for c in tfconfig.eval_corpora(CFG)) or "(?!)",
    params:
        eod=lambda w: CFG["corpora"][w.other]["eod"],
        tokenizer=lambda w: CFG["tokenizers"][w.tok],
    log:
        os.path.join(LOGS, "tokenize_ood", "{corpus}", "tok~{tok}", "{other}.log"),
    benchmark:
        os.path.join(BENCH, "tokenize_ood", "{corpus}", "tok~{tok}", "{other}.tsv")
    threads: 4
    resources:
        mem_mb=lambda w, input, attempt: int((1500 + 6 * input.size_mb) * attempt),
        runtime=lambda w, input, attempt: int((10 + input.size_mb / 50) * attempt),
        **CPU_JOB,
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/tokenize_ood.py"


rule count:
    input:
        tokens=P("tokens"),
        tokenizer=P("tokenizer"),
    output:
        frequency=P("frequency"),
    params:
        bin_base=CFG["frequency"]["bin_base"],
    log:
        os.path.join(LOGS, "count", "{corpus}", "tok~{tok}", "{split}.log"),
    benchmark:
        os.path.join(BENCH, "count", "{corpus}", "tok~{tok}", "{split}.tsv")
    threads: 2
    resources:
        mem_mb=lambda w, input, attempt: int((1500 + input.size_mb) * attempt),
        runtime=lambda w, input, attempt: int((10 + input.size_mb / 1000) * attempt),
        **CPU_JOB,
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/count.py"


rule zipf:
    input:
        frequency=lambda w: expand(
            P("frequency"), corpus=w.corpus, tok=w.tok, split=tfconfig.corpus_splits(CFG["corpora"][w.corpus])
        ),
    output:
        png=P("zipf").replace("{ext}", "png"),
        pdf=P("zipf").replace("{ext}", "pdf"),
    params:
        splits=lambda w: tfconfig.corpus_splits(CFG["corpora"][w.corpus]),
        title=lambda w: f"{w.corpus}, tokenizer {w.tok}",
    log:
        os.path.join(LOGS, "zipf", "{corpus}", "tok~{tok}.log"),
    benchmark:
        os.path.join(BENCH, "zipf", "{corpus}", "tok~{tok}.tsv")
    threads: 1
    resources:
        mem_mb=lambda w, input, attempt: int((1000 + 2 * input.size_mb) * attempt),
        runtime=lambda w, attempt: 10 * attempt,
        **CPU_JOB,
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/zipf.py"
