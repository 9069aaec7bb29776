# Shared by every stage: the results layout, the grid's targets and the per-job lookups, all from the plan
# (PLAN, tokenfair.plan, built in the Snakefile).
import os

from snakemake.exceptions import WorkflowError

from tokenfair import aggregate as tfagg
from tokenfair import paths
from tokenfair import publish as tfpublish
from tokenfair import report as tfreport

# Jobs (local, SLURM, or in a conda env) import the tokenfair package from this workflow's folder.
os.environ.update(PYTHONPATH=os.pathsep.join(p for p in (workflow.basedir, os.environ.get("PYTHONPATH")) if p))
R = PLAN["results_dir"]


def P(name):
    """The Snakemake pattern of an output kind (see tokenfair.paths)."""
    return paths.pattern(name, R)


def LOG(rule, *parts):
    """A job's log file (tokenfair.paths.log)."""
    return paths.log(R, rule, *parts)


def BENCH(rule, *parts):
    """A job's benchmark file (tokenfair.paths.benchmark)."""
    return paths.benchmark(R, rule, *parts)


wildcard_constraints:
    corpus=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    tok=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    split="|".join(paths.SPLITS),


# --- Targets ------------------------------------------------------------------------------------------------
def summary_targets():
    """The study's summary (rules/aggregate.smk). It needs the WHOLE grid, so it is left out when `only:`
    narrows the grid (then `snakemake aggregate_partial` summarises the runs that exist)."""
    if PLAN.get("only"):
        return []
    return [f for files in AGG.values() for f in files] + PUBLISHED


def all_targets(wildcards=None):
    """Data products, every file of every selected run (`only:` narrows the grid; default all of it), the
    summary."""
    return PLAN.data_targets() + PLAN.run_targets() + summary_targets()


# --- Train stage (rules/train.smk) --------------------------------------------------------------------------
RUN_DIR = P("run")
# `model~<m>/weight_decay~<wd>/[<axis>~<v>/...]seed~<s>` with this config's axes, in grid order.
RUN_REGEX = paths.run_regex(PLAN.axis_names)


def train_point(wildcards):
    """The grid point a train job's wildcards (corpus, tok, run) name."""
    try:
        return PLAN.point(wildcards.corpus, wildcards.tok, wildcards.run)
    except KeyError:
        raise WorkflowError(
            f"{wildcards.corpus}/tok~{wildcards.tok}/runs/{wildcards.run} is not a point of this config's grid"
        ) from None


def train_settings(wildcards):
    """The train job's settings (params), from the plan."""
    return PLAN.settings(train_point(wildcards))


def train_inputs(wildcards):
    """The train job's inputs (tokenfair.plan.Plan.train_inputs)."""
    return PLAN.train_inputs(train_point(wildcards))


def train_threads(wildcards):
    return train_settings(wildcards)["train"]["threads"]


# The train rule's threads: one number when every run has the same (planning a large grid then calls one
# function fewer per job), else per job.
TRAIN_THREADS = PLAN.shared_train_value("threads") or train_threads


def job_tokenizer(wildcards):
    """The tokenizer's config entry (eod_token / pad_token of a given tokenizer)."""
    return PLAN["tokenizers"][wildcards.tok]


def job_corpus(wildcards):
    """The corpus's config entry (run.json records its normalisation)."""
    return PLAN["corpora"][wildcards.corpus]


def pack_outputs(seeds):
    """The run folders' files of a pack's seeds: <kind>_<seed> -> .../runs/{point}/seed~<seed>/<file>."""
    out = {}
    for seed in seeds:
        folder = paths.path("run", R, corpus="{corpus}", tok="{tok}", run=f"{{point}}/seed~{seed}")
        for kind, name in paths.RUN_FILES.items():
            f = os.path.join(folder, name)
            out[f"{kind}_{seed}"] = directory(f) if kind == "model" else f
    return out


# --- Aggregate stage (rules/aggregate.smk) ------------------------------------------------------------------
AGG = tfagg.summary_outputs(PLAN)
AGG_PARTIAL = tfagg.summary_outputs(PLAN, partial=True)


def agg_run_files(kind):
    return [PLAN.run_files(p)[kind] for p in PLAN.points]


def agg_present_runs(wildcards):
    """The grid points that have finished now (planning time): a change of this set reruns the partial
    aggregation (params rerun trigger) without making it depend on, and so rerun, the training jobs."""
    present, _ = PLAN.present_runs()
    return sorted(os.path.join(p["corpus"], f"tok~{p['tok']}", p["run"]) for p in present)


def _captioned(f, caption, category, subcategory, labels):
    return report(f, caption=caption, category=category, subcategory=subcategory, labels=labels)


def agg_reported(outputs, category):
    """report() on every table (CSV) and figure (first format) and the README, with a caption each (a figure's
    from the figure registry, tokenfair.report.FIGURES). Snakemake's report shows only images, HTML and PDF
    inline, a CSV as a download link: the caption of a summary table (report/<table>.rst) shows the table itself
    with a csv-table directive (the per-run bin and curve tables stay downloads: too long for a page)."""
    figure_ext = PLAN["aggregate"]["figure_formats"][0]
    out = []
    for f in outputs["tables"]:
        name, ext = os.path.splitext(os.path.basename(f))
        labels = {"table": name}
        out.append(_captioned(f, f"../report/{name}.rst", category, "tables", labels) if ext == ".csv" else f)
    for f in outputs["figures"]:
        stem, ext = os.path.splitext(os.path.basename(f))
        kind, split = tfagg.parse_figure_stem(stem, PLAN.splits)  # split None: a figure of the whole study
        split = split if split is not None and paths.is_split(split) else "all"
        caption = f"../{tfreport.FIGURES[kind].report_caption}"
        labels = {"figure": kind, "split": split}
        out.append(_captioned(f, caption, category, "figures", labels) if ext == f".{figure_ext}" else f)
    return out


# --- Publish (rules/aggregate.smk): the study's docs page, when aggregate.publish_dir is set ----------------
PUBLISHED = tfpublish.outputs(PLAN)
PUBLISH_COMMAND = "snakemake publish" + "".join(  # the target first: --configfile takes several values
    f" --configfile {os.path.relpath(f, workflow.basedir)}" for f in workflow.overwrite_configfiles
)
