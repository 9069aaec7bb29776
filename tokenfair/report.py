"""The summary's figures and README, from the tables of `tokenfair.aggregate`; Markdown and number formatting
and the significance count shared with `tokenfair.publish`.

FIGURES is the one list of figure kinds: each entry names its draw function (tables -> a matplotlib Figure,
usually one function of `tokenfair.plots`), the tables it needs, its README caption and whether it is drawn
once per split (`<kind>_<split>`) or once for the whole study (`<kind>`). The summary's outputs
(`aggregate.summary_outputs`), the README and the Snakemake report labels (`parse_figure_stem`) all derive
from it; the report's long caption of a kind is `report/figure_<kind>.rst`. Adding a figure:

    @figure("my_figure", tables=["bins_by_seed"], caption="What it shows ({split})", per_split=True)
    def _my_figure(tables, split, ctx):
        return plots.my_figure(tables["bins_by_seed"], split, ctx.colors, ctx.others, base=ctx.base)

Importing this module is cheap (the workflow calls figure_names at planning time): matplotlib and pandas are
imported inside functions.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

if TYPE_CHECKING:
    from .plan import Plan

MAX_README_RUNS = 200  # above this the README shows the seed table only (runs.csv has every run)


# --------------------------------------------------------------------------------------------------
# the figure registry


@dataclass(frozen=True)
class FigureKind:
    name: str
    draw: Callable  # (tables: {name: DataFrame}, split: str | None, ctx: FigureContext) -> Figure
    tables: tuple[str, ...]  # the summary tables draw reads
    caption: str  # README caption; "{split}" is replaced by the split of a per-split figure
    per_split: bool
    when: Callable | None = None  # (plan) -> bool: drawn only for the plans it accepts (None: always)

    @property
    def report_caption(self) -> str:
        """The Snakemake report caption of this kind, relative to the repository root."""
        return os.path.join("report", f"figure_{self.name}.rst")


FIGURES: dict[str, FigureKind] = {}


def figure(name: str, tables: Iterable[str], caption: str, per_split: bool = False, when: Callable | None = None):
    """Decorator: register a draw function (tables, split, ctx) -> Figure as the figure kind `name`; with
    `when` (plan -> bool, cheap: called at planning time) only for the plans it accepts."""

    def register(draw):
        FIGURES[name] = FigureKind(name, draw, tuple(tables), caption, per_split, when)
        return draw

    return register


@dataclass(frozen=True)
class FigureContext:
    """What every figure of a study shares: the plan, its splits, one colour per decay, the columns that make
    a panel (others) and the base value of each extra axis per model (panel labels name only the others)."""

    plan: Plan
    splits: list[str]
    colors: dict
    others: list[str]
    base: dict


def reference_losses(vocabularies) -> dict:
    """{(corpus, tokenizer): {"uniform": ln(vocabulary size), "unigram": train unigram entropy}} (nats): the
    losses of the uniform and the unigram predictor, drawn as reference lines with every loss."""
    return {(r["corpus"], r["tokenizer"]): {"uniform": r["uniform_loss"], "unigram": r["train_entropy"]}
            for r in vocabularies.to_dict("records")}


@figure("bin_loss", ["bins_by_seed", "bins", "vocabularies"], per_split=True,
        caption="Token-balanced loss per train-frequency bin, one line per weight decay, a dot per seed; the "
                "uniform and unigram losses for reference ({split})")
def _bin_loss(t, split, ctx):
    from . import plots

    return plots.bin_loss(t["bins_by_seed"], split, ctx.colors, ctx.others, base=ctx.base,
                          refs=reference_losses(t["vocabularies"]), bins=t["bins"])


@figure("bin_loss_change", ["bins"], per_split=True,
        caption="Each bin's loss change from the smallest weight decay, paired per seed: a dot per seed, their mean "
                "and 95% t-interval ({split})")
def _bin_loss_change(t, split, ctx):
    from . import plots
    from .metrics import paired_changes

    return plots.bin_loss_change(paired_changes(t["bins"], ctx.others), split, ctx.colors, ctx.others,
                                 base=ctx.base)


@figure("bin_curves", ["bin_curves_by_seed", "vocabularies"], per_split=True,
        caption="Loss over training steps per frequency bin, one line per weight decay; the uniform and unigram "
                "losses for reference ({split})")
def _bin_curves(t, split, ctx):
    from . import plots

    return plots.bin_curves(t["bin_curves_by_seed"], split, ctx.colors, ctx.others, base=ctx.base,
                            refs=reference_losses(t["vocabularies"]))


@figure("decay_heatmap", ["decay_effects"], per_split=True,
        caption="Increase of each bin's loss over the smallest weight decay ({split})")
def _decay_heatmap(t, split, ctx):
    from . import plots

    return plots.decay_heatmap(t["decay_effects"], split, ctx.others, base=ctx.base)


@figure("bin_accuracy", ["bins_by_seed", "bins"], per_split=True,
        caption="Token-balanced next-token accuracy per train-frequency bin, one line per weight decay, a dot per "
                "seed ({split})")
def _bin_accuracy(t, split, ctx):
    from . import plots

    return plots.bin_accuracy(t["bins_by_seed"], split, ctx.colors, ctx.others, base=ctx.base, bins=t["bins"])


@figure("loss_vs_decay", ["runs_by_seed", "vocabularies"],
        caption="Average and token-balanced loss against weight decay; the uniform and unigram losses for reference")
def _loss_vs_decay(t, split, ctx):
    from . import plots

    return plots.loss_vs_decay(t["runs_by_seed"], ctx.splits, ctx.colors, ctx.others, base=ctx.base,
                               refs=reference_losses(t["vocabularies"]))


@figure("learning_speed", ["bins_by_seed"],
        caption="Per-bin learning speed (normalised area under the loss curve) by weight decay")
def _learning_speed(t, split, ctx):
    from . import plots

    return plots.learning_speed(t["bins_by_seed"], ctx.splits, ctx.colors, ctx.others, base=ctx.base)


@figure("embedding_norms", ["embedding_norms_by_seed"],
        caption="Mean embedding and unembedding row norm per train-frequency bin by weight decay")
def _embedding_norms(t, split, ctx):
    from . import plots

    return plots.embedding_norms(t["embedding_norms_by_seed"], ctx.colors, ctx.others, base=ctx.base)


@figure("frequency", ["vocabularies"], caption="Train frequency distribution (Zipf) and the share of rare tokens")
def _frequency(t, split, ctx):
    from . import plots
    from .io import read_parquet

    freq = {r["vocabulary"]: read_parquet(r["frequency_file"], ["token_id", "count", "rank", "percentile", "special"],
                                          what="the train frequency table").to_pandas()
            for r in t["vocabularies"].to_dict("records")}
    return plots.frequency_distribution(freq, ctx.plan["frequency"]["rare_percentile"])


@figure("embedding_norm_curves", ["embedding_norm_curves_by_seed"],
        caption="Mean embedding and output-head row norm per train-frequency bin over training, one line per bin, "
                "a column per weight decay (tied models: one matrix)")
def _embedding_norm_curves(t, split, ctx):
    from . import plots

    return plots.norm_curves(t["embedding_norm_curves_by_seed"], ctx.others, base=ctx.base)


def varies_epochs(plan) -> bool:
    """Whether some study varies how many epochs its runs see (an axis of paths.REGIME_AXES: the number of
    training documents, or of steps): the plans that get the regime map."""
    from .paths import REGIME_AXES

    return any(a in REGIME_AXES for a in plan.extra_axes)


@figure("regime_map", ["regime_map"], when=varies_epochs,
        caption="Regime map: each bin's loss change (largest decay minus smallest, paired per seed) against "
                "epochs, train and validation side by side")
def _regime_map(t, split, ctx):
    from . import plots

    return plots.regime_map(t["regime_map"], ctx.others, base=ctx.base)


def figure_names(splits: Iterable[str], plan=None) -> list[str]:
    """The stems of a study's figures: every per-split kind for each split, then the whole-study kinds; a kind
    with a `when` only when `plan` is given and `when(plan)`."""
    splits = list(splits)
    kinds = [k for k in FIGURES.values() if k.when is None or (plan is not None and k.when(plan))]
    return [f"{k.name}_{s}" for k in kinds if k.per_split for s in splits] + [k.name for k in kinds if not k.per_split]


def parse_figure_stem(stem: str, splits: Iterable[str]) -> tuple[str, str | None]:
    """(figure kind, split) of a stem of figure_names(splits); split None for a figure of the whole study.
    Matched against the known split names (a corpus name, so an ood split, may hold underscores)."""
    from .paths import is_split

    splits = list(splits)
    if stem in FIGURES and not FIGURES[stem].per_split:
        return stem, None
    for kind in (k.name for k in FIGURES.values() if k.per_split):
        split = stem[len(kind) + 1:]
        if stem.startswith(kind + "_") and split in splits and is_split(split):
            return kind, split
    raise ValueError(f"unknown figure {stem} (splits: {', '.join(splits)})")


def figure_tables() -> list[str]:
    """Every table some registered figure reads."""
    return list(dict.fromkeys(t for k in FIGURES.values() for t in k.tables))


def render_figure(stem: str, plan, tables: dict, out_dir: str, note: str | None) -> str:
    """Draw and save one figure of figure_names(plan.splits) in each configured format."""
    import matplotlib

    matplotlib.use("Agg")

    from . import plots
    from .paths import FIGURE_DIR
    from .io import atomic_path

    splits = plan.splits
    ctx = FigureContext(plan=plan, splits=splits, colors=plots.decay_colors(plan["weight_decays"]),
                        others=plan.other_axes, base=plan.base_values)
    kind, split = parse_figure_stem(stem, splits)
    fig = FIGURES[kind].draw(tables, split, ctx)
    files = [os.path.join(out_dir, FIGURE_DIR, f"{stem}.{ext}") for ext in plan["aggregate"]["figure_formats"]]
    if getattr(fig, "fixed_layout", False):  # a big grid of panels with fixed margins: no tight box
        if note:
            fig.text(0.5, 0.002, note, ha="center", va="bottom", fontsize=10, color="firebrick")
        for f in files:
            with atomic_path(f) as tmp:
                fig.savefig(tmp, format=os.path.splitext(f)[1][1:], dpi=90)
    else:
        if note:
            fig.text(0.5, -0.01, note, ha="center", va="top", fontsize=10, color="firebrick")
        plots.save_figure(fig, files, dpi=120)
    return stem


def _render_job(args) -> str:
    return render_figure(*args)


def write_figures(plan, tables: dict, out_dir: str, note: str | None, workers: int = 1) -> list[str]:
    """Every figure of figure_names(plan.splits); with workers > 1 drawn by that many processes
    (figures are independent; drawing is most of the time after the runs are read). Returns the stems."""
    from .paths import FIGURE_DIR

    os.makedirs(os.path.join(out_dir, FIGURE_DIR), exist_ok=True)
    stems = figure_names(plan.splits, plan)
    small = {t: tables[t] for t in figure_tables()}
    jobs = [(stem, plan, small, out_dir, note) for stem in stems]
    if workers <= 1:
        for job in jobs:
            _render_job(job)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        jobs.sort(key=lambda j: not j[0].startswith("bin_curves"))  # the biggest first
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=mp.get_context("spawn")) as pool:
            list(pool.map(_render_job, jobs))
    return stems


# --------------------------------------------------------------------------------------------------
# Markdown


def fmt(v, ci=None, digits: int = 4) -> str:
    """A table cell: "–" for a missing value (None, NaN), a float to `digits` decimals (with " ± ci" when a
    ci is given and not NaN), anything else as text."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if not isinstance(v, float):
        return str(v)
    s = f"{v:.{digits}f}"
    if ci is not None and not (isinstance(ci, float) and math.isnan(ci)):
        s += f" ± {ci:.{digits}f}"
    return s


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table of already formatted cells (no trailing newline)."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


PLAIN = {"weight_decay", "seed", "n_params", "final_step", "n_seeds", "n_tested", "n_rose", "n_fell",
         "n_inconclusive"}  # as %g


def df_table(df, cols: list[tuple[str, str]], axes=()) -> str:
    """md_table of df's columns [(column, header)]: the axes (decay, `axes`) keep their spelling (an unset
    axis value prints as null), counts and the decay print as %g, other numbers through fmt."""
    from .plots import axis_text

    def cell(c, v):
        if c in axes:
            return axis_text(v)
        if c in PLAIN and isinstance(v, float) and not math.isnan(v):
            return f"{v:g}"
        return fmt(v)

    return md_table([h for _, h in cols], [[cell(c, r[c]) for c, _ in cols] for r in df.to_dict("records")])


# --------------------------------------------------------------------------------------------------
# significance


def significance_flags(effects):
    """(tested, rose, fell): boolean Series over the rows of a decay_effects table. The one definition of a
    significant change: a bin is tested when it has a p-value (two or more paired seeds, not the reference
    decay), and its loss rose (fell) significantly when `significant` (Holm-corrected p below the level) and
    the change of the seed-mean loss from the reference decay, `delta`, is positive (negative)."""
    sig = effects["significant"].astype(bool)
    return effects["p_value"].notna(), sig & (effects["delta"] > 0), sig & (effects["delta"] < 0)


def significance_counts(effects, others: list[str], splits: Iterable[str] = ()):
    """Per other axes x split x decay (against its reference decay) from a decay_effects table: n_tested bins,
    n_rose / n_fell those whose loss rose / fell significantly (significance_flags), n_inconclusive the tested
    bins whose `verdict` is inconclusive (too few seeds for the sign-flip test, or seeds that disagree). Rows
    sorted by the other axes, then the splits in the order `splits` (others after them), then decay."""
    import pandas as pd

    keys = [*others, "split", "weight_decay_ref", "weight_decay"]
    n = ["n_tested", "n_rose", "n_fell", "n_inconclusive"]
    cols = [*keys, *n]
    if effects is None or not len(effects):
        return pd.DataFrame(columns=cols)
    d = effects[effects["weight_decay"] != effects["weight_decay_ref"]].copy()
    d["n_tested"], d["n_rose"], d["n_fell"] = significance_flags(d)
    d["n_inconclusive"] = d["n_tested"] & (d["verdict"] == "inconclusive")
    order = list(dict.fromkeys([*splits, *sorted(set(d["split"]))]))
    d["split"] = pd.Categorical(d["split"], categories=order)
    out = d.groupby(keys, dropna=False, sort=True, observed=True)[n].sum().reset_index()
    out["split"] = out["split"].astype(str)
    for c in n:
        out[c] = out[c].astype("int64")
    return out[cols]


def holm_families(effects, others: list[str]) -> str:
    """The README's words for the Holm families of a decay_effects table: the number of tests of each
    (one number, or the range when the families differ)."""
    tested = effects.loc[effects["p_value"].notna()]
    sizes = tested.groupby([*others, "split"], dropna=False)["holm_family_size"].first()
    lo, hi = int(sizes.min()), int(sizes.max())
    return f"{lo}" if lo == hi else f"{lo}–{hi}"


# --------------------------------------------------------------------------------------------------
# the README


VOCABULARY_COLUMNS = ["vocabulary", "corpus", "tokenizer", "frequency_file", "vocab_size", "uniform_loss",
                      "train_entropy"]


def vocabularies(freq_files: dict[tuple[str, str], str], rare_percentile: float):
    """One row per corpus x tokenizer (the keys of freq_files) of the study: vocabulary ("<corpus> /
    <tokenizer>"), corpus, tokenizer, frequency_file (its train frequency table), vocab_size (its rows: the
    tokenizer's ids), uniform_loss (ln vocab_size: the loss of the uniform predictor) and train_entropy (nats:
    the unigram entropy of the train counts, special ids left out, metrics.unigram_entropy: the average loss
    of the unigram predictor). Used by the README and the figures; not written."""
    import pandas as pd

    from .metrics import load_groups
    from .metrics import unigram_entropy

    rows = []
    for (corpus, tok), path in freq_files.items():
        g = load_groups(path, rare_percentile)
        rows.append({"vocabulary": f"{corpus} / {tok}", "corpus": corpus, "tokenizer": tok, "frequency_file": path,
                     "vocab_size": g.vocab_size, "uniform_loss": math.log(g.vocab_size),
                     "train_entropy": unigram_entropy(g.train_count, g.special)})
    return pd.DataFrame(rows, columns=VOCABULARY_COLUMNS)


def _significance_section(plan, tables, extra, runs) -> list[str]:
    """README lines: per model (x other axes) x split x decay, how many bins' loss rose / fell significantly
    over the reference decay."""

    from .metrics import min_seeds

    level = plan["aggregate"]["significance_level"]
    effects = tables["decay_effects"]
    lines = ["\n## Which bins change significantly with weight decay\n",
             "Per train-frequency bin, a paired two-sided Student t-test over seeds of the per-seed difference of "
             "the bin's token-balanced loss (final step) between a decay and the reference (smallest) decay, over "
             "the seeds both have (at least two); the p-values are Holm-Bonferroni corrected over all the bins x "
             "decays tested within each model (x other axes) x split, one panel of the decay heat map and one "
             "block of the table below, and a bin counts when the corrected p < "
             f"{level:g}. With one seed nothing can be tested. The t-test assumes the per-seed differences are "
             "normal; beside it an exact sign-flip permutation test (p_perm) assumes only that they are "
             f"symmetric, and cannot reach {level:g} with fewer than {min_seeds(level)} paired seeds (its smallest "
             "p is 2 / 2^n): a bin's verdict is *inconclusive* below that many seeds or when the seeds' differences "
             "disagree in sign, whatever the t-test says. Every p-value is in [decay_effects.csv](decay_effects.csv) "
             "(t_stat, p_value, p_holm, significant, p_perm, holm_family_size, verdict).\n"]
    counts = significance_counts(effects, plan.other_axes, plan.splits)
    if not len(counts) or not counts["n_tested"].any():
        lines.append("No bin could be tested: no decay has two or more seeds paired with the reference decay.\n")
        return lines
    lines.append(f"Holm over the {holm_families(effects, plan.other_axes)} tests of each model (x other axes) x "
                 "split.\n")
    cols = [("model", "model"), *[(a, a) for a in extra], ("split", "split"), ("weight_decay", "decay"),
            ("weight_decay_ref", "vs decay"), ("n_tested", "bins tested"), ("n_rose", "loss rose"),
            ("n_fell", "loss fell"), ("n_inconclusive", "inconclusive")]
    if len(runs) and (runs["corpus"].nunique() > 1 or runs["tokenizer"].nunique() > 1):
        cols = [("corpus", "corpus"), ("tokenizer", "tokenizer"), *cols]
    lines.append(df_table(counts, cols, [*extra, "weight_decay_ref"]) + "\n")
    return lines


def write_readme(plan, tables, out_dir, figures, partial, n_present, n_missing) -> str:
    """<out_dir>/README.md: the study, per-run and over-seed tables, the significance counts, every figure
    (with its registry caption) and links to the tables."""
    from .paths import FIGURE_DIR, SUMMARY_README, SUMMARY_TABLES
    from .io import atomic_path

    runs, rs = tables["runs"], tables["runs_by_seed"]
    splits = [s for s in plan.splits if len(runs) and f"{s}_loss_avg" in runs.columns]
    extra = plan.extra_axes
    lines = [f"# Summary of `{os.path.basename(os.path.normpath(plan['results_dir']))}`\n"]
    pairs = ", ".join(sorted(set(runs["corpus"] + " / " + runs["tokenizer"]))) if len(runs) else "–"
    if partial:
        lines.append(f"**Partial aggregation: {n_present} of {n_present + n_missing} grid points have finished; "
                     f"{n_missing} are missing (listed in [missing.csv](missing.csv)).**\n")
    lines.append(
        f"{n_present} runs; corpora x tokenizers: {pairs}; "
        f"weight decays {', '.join(f'{w:g}' for w in sorted(set(plan['weight_decays'])))}; seeds "
        f"{', '.join(str(s) for s in plan['seeds'])}. Special tokens are left out of every metric. "
        f"Rare = train-count percentile below {plan['frequency']['rare_percentile']}, frequent = the rest; bins = "
        f"powers of {plan['frequency']['bin_base']} of the train count.\n")
    for r in tables["vocabularies"].to_dict("records"):
        lines.append(f"Train unigram entropy of {r['vocabulary']}: {r['train_entropy']:.4f} "
                     "nats (the average train loss of a model that knows only token frequencies, from "
                     f"`{os.path.basename(r['frequency_file'])}`, the train table most runs saw); uniform loss "
                     f"ln({r['vocab_size']}) = {r['uniform_loss']:.4f} nats.\n")
    lines.append(
        "Definitions: *avg loss* = loss per occurrence; *balanced loss* = mean over the vocabulary ids seen in "
        "the split of each id's own mean loss; *acc* = share of occurrences predicted right (argmax); "
        "*balanced acc* = mean over seen ids of each id's accuracy; *gap* = balanced loss of the rare ids minus "
        "that of the frequent ids; *rho* = Spearman correlation of log train frequency and per-id loss; "
        "*rho change* = Spearman correlation of log train frequency and the change of per-id loss from the run "
        "of the same seed at the smallest decay. All at the final step.\n")
    lines.append("## Per run (the numbers of the paper's Table 1)\n")
    if len(runs):
        several = runs["corpus"].nunique() > 1 or runs["tokenizer"].nunique() > 1
        cols = [("model", "model"), ("n_params", "params"), ("weight_decay", "decay"), *[(a, a) for a in extra],
                ("seed", "seed"), ("final_step", "step")]
        if "studies" in runs.columns and (runs["studies"] != "main").any():
            cols.append(("studies", "studies"))
        if several:
            cols = [("corpus", "corpus"), ("tokenizer", "tokenizer"), *cols]
        for s in splits:
            cols += [(f"{s}_loss_avg", f"{s} avg loss"), (f"{s}_loss_balanced", f"{s} balanced loss"),
                     (f"{s}_acc_avg", f"{s} acc"), (f"{s}_acc_balanced", f"{s} balanced acc"),
                     (f"{s}_rare_gap", f"{s} gap"), (f"{s}_spearman", f"{s} rho"),
                     (f"{s}_spearman_change", f"{s} rho change")]
        if len(runs) <= MAX_README_RUNS:
            lines.append(df_table(runs, cols, extra) + "\n")
        else:
            lines.append(f"{len(runs)} runs: see [runs.csv](runs.csv); the table below has them over seeds.\n")
        lines.append("\n## Over seeds (mean ± std; n seeds; std is – for one seed)\n")
        rows = rs.copy()
        cols = [("model", "model"), ("weight_decay", "decay"), *[(a, a) for a in extra], ("n_seeds", "n")]
        if several:
            cols = [("corpus", "corpus"), ("tokenizer", "tokenizer"), *cols]
        for s in splits:
            for m, h in (("loss_avg", "avg loss"), ("loss_balanced", "balanced loss"), ("acc_avg", "acc"),
                         ("rare_gap", "gap")):
                rows[f"{s}_{m}_pm"] = [f"{fmt(a)} ± {fmt(b)}" for a, b in zip(rows[f"{s}_{m}_mean"], rows[f"{s}_{m}_std"])]
                cols.append((f"{s}_{m}_pm", f"{s} {h}"))
        lines.append(df_table(rows, cols, extra) + "\n")
    else:
        lines.append("No finished run yet.\n")
    lines += _significance_section(plan, tables, extra, runs)
    lines.append("\n## Figures\n")
    png = "png" if "png" in plan["aggregate"]["figure_formats"] else plan["aggregate"]["figure_formats"][0]
    all_splits = plan.splits
    for stem in figures:
        kind, split = parse_figure_stem(stem, all_splits)
        cap = FIGURES[kind].caption.format(split=split)
        lines.append(f"### {cap}\n\n![{cap}]({FIGURE_DIR}/{stem}.{png})\n")
    lines.append("\n## Tables\n")
    for name in SUMMARY_TABLES + (("missing",) if partial else ()):
        lines.append(f"- [{name}.csv]({name}.csv) ([parquet]({name}.parquet))")
    lines.append("\nDefinitions of every column: `tokenfair/metrics.py` and `tokenfair/aggregate.py` docstrings.\n")
    path = os.path.join(out_dir, SUMMARY_README)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines))
    return path
