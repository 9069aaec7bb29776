# Data stage: corpus spec -> documents.parquet -> tokenizer.json -> token shards -> frequency tables (and
# those of the train split's first documents, train.train_docs) + Zipf figure (docs/architecture.md); an
# eval_only corpus's documents -> an ood/ shard per training tokenizer.
# Each rule runs one function of the tokenfair package through a thin script.
# Uses PLAN, R, P, LOG and BENCH from rules/common.smk, SITE from rules/resources.smk. Resources
# (tokenfair.resources): memory grows with the input and with each retry (attempt); CPU rules only, never a GPU.
import re

from tokenfair import corpus as tfcorpus
from tokenfair import tokenization as tftok


rule prepare:
    input:
        # a text/jsonl/parquet corpus's own files, so that editing or adding one reruns prepare
        files=lambda w: tfcorpus.local_files(PLAN["corpora"][w.corpus]),
    output:
        documents=P("documents"),
    log:
        LOG("prepare", "{corpus}"),
    benchmark:
        BENCH("prepare", "{corpus}")
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        **tfres.prepare_resources(SITE, PLAN["corpora"]),
    params:
        spec=lambda w: PLAN["corpora"][w.corpus],
    script:
        "../scripts/prepare.py"


rule tokenizer:
    input:
        documents=P("documents"),
        given=lambda w: tftok.given_files(PLAN["tokenizers"][w.tok]),
    output:
        tokenizer=P("tokenizer"),
    log:
        LOG("tokenizer", "{corpus}", "tok~{tok}"),
    benchmark:
        BENCH("tokenizer", "{corpus}", "tok~{tok}")
    conda:
        "../envs/data.yaml"
    threads: 4
    resources:
        **tfres.cpu_resources(SITE, "tokenizer"),
    params:
        spec=lambda w: PLAN["tokenizers"][w.tok],
    script:
        "../scripts/tokenizer.py"


rule tokenize:
    input:
        documents=P("documents"),
        tokenizer=P("tokenizer"),
    output:
        tokens=P("tokens"),
        index=P("tokens_index"),
    log:
        LOG("tokenize", "{corpus}", "tok~{tok}", "{split}"),
    benchmark:
        BENCH("tokenize", "{corpus}", "tok~{tok}", "{split}")
    conda:
        "../envs/data.yaml"
    threads: 4
    resources:
        **tfres.tokenize_resources(SITE),
    params:
        eod=lambda w: PLAN["corpora"][w.corpus]["eod"],
        tokenizer=lambda w: PLAN["tokenizers"][w.tok],
    script:
        "../scripts/tokenize_split.py"


# An evaluation-only corpus ({other}), all of its documents, through a training corpus's tokenizer, with
# {other}'s own eod setting.
use rule tokenize as tokenize_ood with:
    input:
        documents=lambda w: paths.path("documents", R, corpus=w.other),
        tokenizer=P("tokenizer"),
    output:
        tokens=P("ood_tokens"),
        index=P("ood_tokens_index"),
    log:
        LOG("tokenize_ood", "{corpus}", "tok~{tok}", "{other}"),
    benchmark:
        BENCH("tokenize_ood", "{corpus}", "tok~{tok}", "{other}")
    wildcard_constraints:
        # only the eval_only corpora (a pattern that matches nothing when there is none)
        other="|".join(re.escape(c) for c in PLAN.eval_corpora) or "(?!)",
    params:
        eod=lambda w: PLAN["corpora"][w.other]["eod"],
        tokenizer=lambda w: PLAN["tokenizers"][w.tok],


rule count:
    input:
        tokens=P("tokens"),
        tokenizer=P("tokenizer"),
    output:
        frequency=P("frequency"),
    log:
        LOG("count", "{corpus}", "tok~{tok}", "{split}"),
    benchmark:
        BENCH("count", "{corpus}", "tok~{tok}", "{split}")
    conda:
        "../envs/data.yaml"
    threads: 2
    resources:
        **tfres.cpu_resources(SITE, "count"),
    params:
        bin_base=PLAN["frequency"]["bin_base"],
    script:
        "../scripts/count.py"


# The counts of the train split's first {docs} documents (train.train_docs): the bins of the runs trained on
# them. The same counting as rule count, cut where the index says document {docs} ends.
use rule count as count_docs with:
    input:
        tokens=P("tokens").replace("{split}", "train"),
        index=P("tokens_index").replace("{split}", "train"),
        tokenizer=P("tokenizer"),
    output:
        frequency=P("frequency_docs"),
    log:
        LOG("count_docs", "{corpus}", "tok~{tok}", "train~docs{docs}"),
    benchmark:
        BENCH("count_docs", "{corpus}", "tok~{tok}", "train~docs{docs}")
    wildcard_constraints:
        docs=r"[1-9][0-9]*",
    params:
        bin_base=PLAN["frequency"]["bin_base"],
        docs=lambda w: int(w.docs),


rule zipf:
    input:
        frequency=lambda w: expand(P("frequency"), corpus=w.corpus, tok=w.tok, split=PLAN.corpus_splits(w.corpus)),
    output:
        png=P("zipf").replace("{ext}", "png"),
        pdf=P("zipf").replace("{ext}", "pdf"),
    log:
        LOG("zipf", "{corpus}", "tok~{tok}"),
    benchmark:
        BENCH("zipf", "{corpus}", "tok~{tok}")
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        **tfres.cpu_resources(SITE, "zipf"),
    params:
        splits=lambda w: PLAN.corpus_splits(w.corpus),
        title=lambda w: f"{w.corpus}, tokenizer {w.tok}",
    script:
        "../scripts/zipf.py"
