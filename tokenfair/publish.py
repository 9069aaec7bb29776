"""A study's summary as documentation: the headline numbers per study and a few figures, in one folder.

`publish(plan, summary_dir, out_dir)` (plan: tokenfair.plan) reads the aggregate stage's tables
(<results_dir>/summary/*.parquet) and writes `out_dir/README.md` and PNG figures into `out_dir`: the rule
`publish` (rules/aggregate.smk), whose folder is `aggregate.publish_dir`. Numbers are seed means with a
Student-t 95% half-width where a study has several seeds ("one seed: indicative" where it has one); nothing is
typed in by hand, so rerunning the rule regenerates the page from the runs. A change is written beside the
value it changes, in nats and in percent of the reference's magnitude: `0.916 ± 0.100 (+0.872, +2003%)`
(`change`: the change of the seed means).

Sections, by study (tokenfair.plan.Plan.studies; a table's rows of a study: the summary's membership table):
- header: the seeds of each study and the uniform loss ln V of each tokenizer (the loss of a model that gives
  every id the same probability; held-out losses sit near it).
- main: per variant (model, and any axis main varies) x split (train, validation, each out-of-domain split)
  x decay: average loss, token-balanced loss and the rare-frequent gap, each with its change from the smallest
  decay; the balanced / average ratio; the average as a share of ln V. Then per-bin significance counts.
- a study that varies the amount of data (an axis of paths.REGIME_AXES: train_docs, steps): its regime
  table (per data size: train tokens, epochs, tokens per id; for train and validation the change of the
  average loss, the balanced loss and the gap from the smallest to the largest decay, paired per seed, and
  the bins whose loss rose in every seed) and the regime_map figure (tokenfair.plots.regime_map).
- every other study: its variants (the axis values / tokenizers it varies) x decay: train rare and frequent
  loss and gap, validation average loss and gap, each out-of-domain gap, each with its change from the base
  at the same decay: the main study's runs of the same model, tokenizer and seeds.
"""

from __future__ import annotations

import math
import os

from . import paths
from .report import fmt, md_table, significance_flags

RARE_GAP = "rare_gap"  # aggregate's per-run column: loss_rare - loss_frequent (token-balanced within each)
RATIO = "balance_ratio"  # per run and split: loss_balanced / loss_avg (computed here)
DIGITS = 3  # decimals of the page's numbers
REGIME_FIGURE = "regime_map.png"
EMBEDDING_AXES = {"decay_group", "tie_embeddings", "embedding_decay_alpha"}  # studies that get a norms table


def regime_studies(plan) -> list[str]:
    """The studies whose varied axes include one of paths.REGIME_AXES (the amount of data, at a fixed
    tokenizer): they get a regime table, and the page the regime_map figure."""
    return [name for name, _ in plan.studies if set(varied(plan, name)) & set(paths.REGIME_AXES)]


def outputs(plan) -> list[str]:
    """The files `publish` writes into aggregate.publish_dir (none when it is not set)."""
    d = plan["aggregate"].get("publish_dir")
    if not d:
        return []
    figs = ["bin_loss.png"] + (["gap_vs_decay.png"] if len(plan.studies) > 1 else []) + (
        [REGIME_FIGURE] if regime_studies(plan) else [])
    return [os.path.join(d, "README.md"), *(os.path.join(d, f) for f in figs)]


# --------------------------------------------------------------------------------------------------
# which rows of the summary tables belong to which study


def in_study(df, membership, study: str):
    """The rows of a summary table that belong to `study`, by the summary's membership table (one row per
    grid point x study): matched on corpus, tokenizer and run where the table has a run column, else on the
    run's axes but the seed (a table over seeds)."""
    if df is None or not len(df):
        return df
    if "run" in df.columns:
        cols = ["corpus", "tokenizer", "run"]
    else:
        cols = [c for c in membership.columns if c not in ("run", "study", "seed")]
    keys = membership.loc[membership["study"] == study, cols].drop_duplicates()
    hit = df[cols].merge(keys, on=cols, how="left", indicator=True)["_merge"].eq("both").to_numpy()
    return df[hit]


def varied(plan, study: str) -> list[str]:
    """The columns a study varies beside weight_decay: its axes, tokenizer when it has several, model when
    it has several."""
    spec = dict(plan.studies)[study]
    cols = list(spec["axes"])
    if len(spec["tokenizers"]) > 1:
        cols.insert(0, "tokenizer")
    if len(spec["models"]) > 1:
        cols.insert(0, "model")
    return cols


def as_text(df, cols: list[str]):
    """df with the columns `cols` as their printed text (plots.axis_text: null for an unset value), so that
    unset values group and merge, and labels print as in the figures."""
    from .plots import axis_text

    return df.assign(**{c: [axis_text(v) for v in df[c]] for c in cols})


def in_order(df, cols: list[str]):
    """df sorted by `cols`: a column of numbers (and null, last) by value, a column of text as text (as_text's
    "27" after "3")."""
    import numpy as np
    import pandas as pd

    def key(col):
        num = pd.to_numeric(col, errors="coerce")
        return num.fillna(np.inf) if num.notna().any() else col

    return df.sort_values(cols, key=key, kind="stable")


def label(row, cols: list[str], default: str) -> str:
    """A variant's name: "axis=value, ..." of its varied columns, or `default` when there are none."""
    return ", ".join(f"{c}={row[c]}" for c in cols) or default


# --------------------------------------------------------------------------------------------------
# numbers as text (tokenfair.report's fmt and md_table, three decimals)


def metric(row, name: str) -> str:
    """`name`'s seed mean ± its 95% half-width (the half-width only with several seeds)."""
    ci = row.get(f"{name}_ci95") if int(row.get("n_seeds", 1)) > 1 else None
    return fmt(row.get(f"{name}_mean"), ci, DIGITS)


def percent(p: float, sign: bool = True) -> str:
    """A percentage: no decimals from 10% on, one below ("+2003%", "-4.2%", "0.4%"); "–" for NaN."""
    if paths.is_null(p):
        return "–"
    return f"{p:{'+' if sign else ''}.{0 if abs(p) >= 10 else 1}f}%"


def change(value, ref) -> str:
    """" (+0.872, +2003%)": value - ref in nats and in percent of |ref|; "" without both numbers, no percent
    for a reference of 0."""
    if paths.is_null(value) or paths.is_null(ref):
        return ""
    d = float(value) - float(ref)
    return f" ({d:+.{DIGITS}f}" + (f", {percent(100 * d / abs(ref))})" if ref else ")")


def metric_change(row, ref, name: str) -> str:
    """metric(row, name) and its change from the same metric's mean in the row `ref` (None: no change)."""
    if ref is None:
        return metric(row, name)
    return metric(row, name) + change(row.get(f"{name}_mean"), ref.get(f"{name}_mean"))


def with_ratios(runs, splits: list[str]):
    """runs with `<split>_balance_ratio` = <split>_loss_balanced / <split>_loss_avg per run, for each split
    that has both."""
    have = [s for s in splits if f"{s}_loss_avg" in runs.columns and f"{s}_loss_balanced" in runs.columns]
    return runs.assign(**{f"{s}_{RATIO}": runs[f"{s}_loss_balanced"] / runs[f"{s}_loss_avg"] for s in have})


def n_ids(plan, tok: str) -> int:
    """V: the tokenizer's ids (its configured size, or its tokenizer.json's)."""
    from .resources import vocab_size

    return vocab_size(plan.config, tok)


def uniform_loss(plan, tok: str) -> float:
    """ln V: the loss of the uniform predictor over the tokenizer's ids."""
    return math.log(n_ids(plan, tok))


def seeds_note(spec) -> str:
    n = len(spec["seeds"])
    return "**one seed: indicative** (no interval)" if n == 1 else f"{n} seeds ({', '.join(map(str, spec['seeds']))})"


# --------------------------------------------------------------------------------------------------
# the sections


SPLIT_COLUMNS = (("loss_avg", "avg loss"), ("loss_balanced", "balanced loss"), (RARE_GAP, "gap"))


def main_table(plan, runs, cols: list[str]) -> list[str]:
    """Markdown lines: per variant (`cols`) x split x decay, the average and balanced loss and the gap (each
    with its change from the variant's smallest decay), the balanced / average ratio and the average as a
    share of ln V. `runs`: the study's per-seed runs."""
    from .metrics import seed_stats

    splits = [s for s in plan.splits if f"{s}_loss_avg" in runs.columns and runs[f"{s}_loss_avg"].notna().any()]
    names = [f"{s}_{m}" for s in splits for m, _ in SPLIT_COLUMNS + ((RATIO, ""),)]
    df = as_text(with_ratios(runs, splits), cols)
    keys = [*cols, *(["tokenizer"] if "tokenizer" not in cols else []), "weight_decay"]
    agg = in_order(seed_stats(df, keys, [m for m in names if m in df.columns]), keys)
    ref_decay = agg["weight_decay"].min()
    rows = []
    for _, d in agg.groupby(keys[:-1], sort=False):
        ref = d[d["weight_decay"] == d["weight_decay"].min()].iloc[0]
        for s in splits:
            for _, r in d.iterrows():
                u = uniform_loss(plan, r["tokenizer"])
                rows.append([*(str(r[c]) for c in cols), s, f"{r['weight_decay']:g}", str(int(r["n_seeds"]))]
                            + [metric_change(r, None if r["weight_decay"] == ref["weight_decay"] else ref, f"{s}_{m}")
                               for m, _ in SPLIT_COLUMNS]
                            + [metric(r, f"{s}_{RATIO}"),
                               percent(100 * r[f"{s}_loss_avg_mean"] / u, sign=False)])
    header = [*cols, "split", "decay", "seeds", *(h for _, h in SPLIT_COLUMNS), "balanced / avg", "avg / ln V"]
    return [f"Per split and decay: seed means ± 95% half-width; in brackets the change from decay {ref_decay:g} "
            "(of the seed means) in nats and in percent of the magnitude of the decay-"
            f"{ref_decay:g} value. *balanced / avg*: the token-balanced over the average loss (per seed, then "
            "averaged); *avg / ln V*: the average loss as a share of the uniform loss.", "",
            md_table(header, rows), ""]


def significance_table(plan, eff) -> list[str]:
    """Markdown lines: per model x split x decay, the bins whose token-balanced loss rose / fell significantly,
    and the rarest bin's change and Holm p."""
    level = plan["aggregate"]["significance_level"]
    lines = [f"Bins whose token-balanced loss differs from decay {eff['weight_decay_ref'].min():g} "
             "(paired t-test over seeds, Holm-corrected over the bins x decays of each model x split, "
             f"level {level:g}): up / down / tested.", ""]
    rows = []
    for (model, split, wd), d in eff[eff["weight_decay"] != eff["weight_decay_ref"]].groupby(
            ["model", "split", "weight_decay"], sort=True):
        tested, up, down = (int(f.sum()) for f in significance_flags(d))
        rare = d[d["bin_lo"] > 0].sort_values("bin_lo").head(1)
        rows.append([model, split, f"{wd:g}", f"{up} / {down} / {tested}",
                     fmt(rare["delta"].iloc[0], digits=DIGITS) if len(rare) else "–",
                     fmt(rare["p_holm"].iloc[0], digits=DIGITS) if len(rare) else "–"])
    return lines + [md_table(["model", "split", "decay", "significant up / down / tested", "rarest bin Δ",
                              "rarest bin p (Holm)"], rows), ""]


def norm_table(nrm, cols: list[str], name: str) -> list[str]:
    """Markdown lines: per variant x decay x matrix, the mean row norm of the rarest and of the most frequent
    train-count bin (seed means), from embedding_norms_by_seed."""
    import numpy as np
    if nrm is None or not len(nrm):
        return []
    if "tied_embeddings" in nrm.columns:  # a tied model's output head is its embedding: one row
        nrm = nrm[~(nrm["tied_embeddings"].astype(bool) & (nrm["matrix"] != "embedding"))]
        nrm = nrm.assign(matrix=np.where(nrm["tied_embeddings"].astype(bool), "tied (both)", nrm["matrix"]))
    nrm = as_text(nrm, cols)
    rows = []
    for keys, d in nrm.groupby([*cols, "weight_decay", "matrix"], sort=True):
        d = d[d["bin_lo"] > 0].sort_values("bin_lo")
        if not len(d):
            continue
        rows.append([", ".join(f"{c}={k}" for c, k in zip(cols, keys)) or name, f"{keys[len(cols)]:g}", str(keys[-1]),
                     fmt(d["mean_norm_mean"].iloc[0], digits=DIGITS), fmt(d["mean_norm_mean"].iloc[-1], digits=DIGITS),
                     fmt(d["mean_norm_mean"].iloc[0] / d["mean_norm_mean"].iloc[-1], digits=DIGITS)])
    return ["Embedding (input) and unembedding (output head) row norms, final model, mean over the ids of the "
            "rarest and of the most frequent train-count bin (seed means):", "",
            md_table(["variant", "decay", "matrix", "rarest bin", "most frequent bin", "ratio"], rows), ""]


REGIME_SPLITS = ("train", "validation")
REGIME_METRICS = (("loss_avg", "Δ avg"), ("loss_balanced", "Δ balanced"), (RARE_GAP, "Δ gap"))


def paired_run_changes(runs, keys: list[str], metrics: list[str]):
    """(deltas, refs): per `keys` x seed, each metric at the largest decay of `runs` minus the same seed's at
    the smallest decay, and the values at the smallest decay, over the seeds that have both."""
    idx = [*keys, "seed"]
    lo, hi = (runs[runs["weight_decay"] == w].set_index(idx)[metrics]
              for w in (runs["weight_decay"].min(), runs["weight_decay"].max()))
    both = lo.index.intersection(hi.index)
    return (hi.loc[both] - lo.loc[both]).reset_index(), lo.loc[both].reset_index()


def bins_rising(regime, keys: list[str]):
    """Per `keys` x split: n_up, the bins whose loss change (regime_map's delta, paired per seed) is positive
    in every seed, and n_bins, the bins with a change in some seed."""
    import numpy as np
    d = regime[np.isfinite(regime["delta"].astype(float))]
    per_bin = d.groupby([*keys, "split", "bin"])["delta"].agg(lambda x: bool((x > 0).all())).rename("up")
    return per_bin.groupby([*keys, "split"]).agg(n_up="sum", n_bins="size").reset_index()


def regime_table(plan, runs, regime, cols: list[str]) -> list[str]:
    """Markdown lines: per variant (`cols`, a data-size axis among them): train tokens, epochs, tokens per id,
    then for train and validation the change of the average loss, the balanced loss and the gap from the
    smallest to the largest decay (mean ± 95% half-width over the paired seeds, and percent of the smallest
    decay's mean) and the bins whose loss rose in every seed. `runs`: the study's per-seed runs; `regime`:
    its metrics.regime_map table."""
    from .metrics import seed_stats

    splits = [s for s in REGIME_SPLITS if f"{s}_loss_avg" in runs.columns]
    names = [f"{s}_{m}" for s in splits for m, _ in REGIME_METRICS if f"{s}_{m}" in runs.columns]
    df = as_text(runs, cols)
    deltas, refs = paired_run_changes(df, cols, names)
    t = seed_stats(deltas, cols, names).merge(
        refs.groupby(cols, as_index=False)[names].mean().rename(columns={n: f"{n}_ref" for n in names}), on=cols)
    size = {c: (c, "mean") for c in ("epochs", "tokens_per_id") if c in df.columns}
    t = t.merge(df.groupby(cols, as_index=False).agg(tokenizer=("tokenizer", "first"), **size), on=cols)
    rising = bins_rising(as_text(regime, cols), cols)
    for s in splits:
        up = rising[rising["split"] == s].drop(columns="split")
        t = t.merge(up.rename(columns={"n_up": f"{s}_n_up", "n_bins": f"{s}_n_bins"}), on=cols, how="left")
    rows = []
    for r in in_order(t, cols).to_dict("records"):
        per_id = r.get("tokens_per_id")
        tokens = None if paths.is_null(per_id) else float(round(per_id * n_ids(plan, r["tokenizer"])))
        row = [*(str(r[c]) for c in cols), str(int(r["n_seeds"])), fmt(tokens, digits=0),
               fmt(r.get("epochs"), digits=1), fmt(per_id, digits=1)]
        for s in splits:
            for m, _ in REGIME_METRICS:
                name = f"{s}_{m}"
                ref = r.get(f"{name}_ref")
                pct = "" if paths.is_null(r.get(f"{name}_mean")) or paths.is_null(ref) or not ref else \
                    f" ({percent(100 * r[f'{name}_mean'] / abs(ref))})"
                row.append(metric(r, name) + pct)
            n = r.get(f"{s}_n_bins")
            row.append("–" if paths.is_null(n) else f"{int(r[f'{s}_n_up'])} / {int(n)}")
        rows.append(row)
    lo, hi = runs["weight_decay"].min(), runs["weight_decay"].max()
    header = [*cols, "paired seeds", "train tokens", "epochs", "tokens per id"] + [
        f"{s} {h}" for s in splits for h in [*(h for _, h in REGIME_METRICS), "bins up in every seed"]]
    return [f"Change from decay {lo:g} to decay {hi:g}, paired per seed (each seed's own decay-{hi:g} value minus "
            f"its decay-{lo:g} value): mean ± 95% half-width over the paired seeds, and in brackets in percent of "
            f"the magnitude of the decay-{lo:g} mean. *bins up in every seed*: the train-count bins whose "
            "token-balanced loss rose in every seed, of the bins with a change. Train tokens: the tokens the runs "
            "train on; epochs: how often they see them.", "", md_table(header, rows), ""]


def study_metrics(splits: list[str], columns) -> list[tuple[str, str]]:
    """(runs.csv column, header) of a study's table: train rare and frequent loss and gap, validation average
    loss and gap, each out-of-domain split's gap; those the table has."""
    out = [("train_loss_rare", "train rare"), ("train_loss_frequent", "train frequent"),
           (f"train_{RARE_GAP}", "train gap"), ("validation_loss_avg", "validation avg"),
           (f"validation_{RARE_GAP}", "validation gap")]
    out += [(f"{s}_{RARE_GAP}", f"{s} gap") for s in splits if s.startswith(paths.OOD_PREFIX)]
    return [(m, h) for m, h in out if m in columns]


def variants_table(plan, own, base, cols: list[str], name: str):
    """(Markdown lines, gap_vs_decay panels): per variant (`cols`) x decay, study_metrics each with its change
    from the base (the main study's runs of the same model, tokenizer and seeds) at the same decay, and the
    base's rows (marked *base*)."""
    from . import plots
    from .metrics import seed_stats

    metrics = study_metrics(plan.splits, own.columns)
    keys = [*cols, "weight_decay"]
    stats = {}
    for is_base, df in ((False, own), (True, base)):
        if df is not None and len(df):
            df = as_text(df, cols)
            stats[is_base] = (in_order(seed_stats(df, keys, [m for m, _ in metrics]), keys),
                              seed_stats(df, keys, [m for m in plots.GAP_METRICS if m in df.columns]))
    shared = [c for c in cols if c in ("model", "tokenizer")]  # a base row's own columns; its axes are the base's
    at = [*shared, "weight_decay"]
    refs = {tuple(r[at]): r for _, r in stats[True][0].iterrows()} if True in stats else {}
    rows, panels = [], []
    for is_base, (agg, shown) in stats.items():
        for _, r in agg.iterrows():
            text = ", ".join(["base", *(f"{c}={r[c]}" for c in shared)]) if is_base else label(r, cols, name)
            rows.append([text, f"{r['weight_decay']:g}", str(int(r["n_seeds"]))]
                        + [metric_change(r, None if is_base else refs.get(tuple(r[at])), m) for m, _ in metrics])
        groups = shared if is_base else cols
        for _, d in in_order(shown, groups).groupby(groups, sort=False) if groups else [(None, shown)]:
            panels.append(("base" if is_base else label(d.iloc[0], cols, name), d.sort_values("weight_decay")))
    lines = ["Seed means ± 95% half-width; in brackets the change from the *base* row at the same decay (of the "
             "seed means) in nats and in percent of the magnitude of the base's value.", "",
             md_table(["variant", "decay", "seeds", *(h for _, h in metrics)], rows), ""]
    return lines, panels


def study_header(plan, name: str, spec, cols: list[str]) -> list[str]:
    return [f"## {name}", "",
            f"{', '.join(spec['models'])}; {seeds_note(spec)}; decays "
            f"{', '.join(f'{w:g}' for w in spec['weight_decays'])}; varies "
            f"{', '.join(cols) if cols else 'nothing beyond the decay'}.", ""]


def _read(summary_dir: str, name: str):
    from .io import read_parquet

    path = os.path.join(summary_dir, f"{name}.parquet")
    return read_parquet(path, what=f"the summary table {name}").to_pandas() if os.path.exists(path) else None


def study_runs(plan, members, runs, study: str):
    """Per-seed runs of `study`, and its base: the main study's runs of the same models, tokenizers, decays
    and seeds that the study does not hold itself (the axes at their base values). `members`: the summary's
    membership table."""
    spec = dict(plan.studies)[study]
    own = in_study(runs, members, study)
    main = in_study(runs, members, "main")
    base = main[main["model"].isin(spec["models"]) & main["tokenizer"].isin(spec["tokenizers"])
                & main["weight_decay"].isin(spec["weight_decays"]) & main["seed"].isin(spec["seeds"])]
    return own, base[~base["run"].isin(own["run"])] if "run" in base else base


def study_regime(plan, members, runs, bins, study: str):
    """The regime map of a study's own runs (metrics.regime_map, as the summary's: each bin's loss change from
    the study's smallest to its largest decay, paired per seed, with the runs' epochs)."""
    from .metrics import regime_map

    seeds = dict(plan.studies)[study]["seeds"]
    own_bins = in_study(bins, members, study)
    return regime_map(own_bins[own_bins["seed"].isin(seeds)], in_study(runs, members, study), plan.other_axes)


def header_lines(plan, out_dir: str, command: str) -> list[str]:
    seeds = "; ".join(f"{name} {len(spec['seeds'])}" for name, spec in plan.studies)
    uniform = "; ".join(f"{tok}: ln {n_ids(plan, tok)} = {uniform_loss(plan, tok):.{DIGITS}f}"
                        for tok in plan["tokenizers"])
    return [f"# {os.path.basename(os.path.normpath(out_dir))}: the study's numbers and figures", "",
            f"Generated from `{plan['results_dir']}/summary/` by `{command}` (tokenfair.publish); do not edit by "
            "hand. Losses are in nats per token, from the final step. *Gap* = rare − frequent loss: the "
            f"token-balanced loss of the ids below the {plan['frequency']['rare_percentile']:g}th train-count "
            "percentile minus that of the others. With several seeds: mean ± Student-t 95% half-width; with one "
            "seed a number is indicative only.", "",
            f"Seeds per study: {seeds}. Uniform loss ln V (a model that gives each of the V ids the same "
            f"probability), per tokenizer: {uniform} nats; a held-out loss near it means the model predicts "
            "that text hardly better than chance.", ""]


def publish(plan, summary_dir: str, out_dir: str, command: str) -> list[str]:
    """Write out_dir/README.md and its figures from the summary tables of a plan; returns the files written."""
    from .io import atomic_path
    from . import plots
    from .plots import decay_colors, save_figure

    os.makedirs(out_dir, exist_ok=True)
    members = _read(summary_dir, paths.MEMBERSHIP)
    runs = _read(summary_dir, "runs")
    bins = _read(summary_dir, "bins")
    bins_seed = _read(summary_dir, "bins_by_seed")
    effects = _read(summary_dir, "decay_effects")
    norms = _read(summary_dir, "embedding_norms_by_seed")
    written = []

    def figure(fig, name: str):
        save_figure(fig, [os.path.join(out_dir, name)])
        written.append(os.path.join(out_dir, name))

    lines = header_lines(plan, out_dir, command)
    glance = len(lines)  # where "Every variant at a glance" goes when there are studies beside main
    regimes = regime_studies(plan)
    regime_rows = []
    gap_panels: dict[str, list] = {}
    for name, spec in plan.studies:
        cols = varied(plan, name)
        if name == "main":
            main_bins = in_study(bins_seed, members, "main")
            models = list(dict.fromkeys(main_bins["model"]))
            figure(plots.bin_loss_grid(main_bins, models, [s for s in plan.splits if s in set(main_bins["split"])],
                                       decay_colors(main_bins["weight_decay"])), "bin_loss.png")
            lines += ["## main: the paper's decays", "", f"{', '.join(spec['models'])}; {seeds_note(spec)}.", "",
                      "![token-balanced loss per frequency bin](bin_loss.png)", "",
                      "Token-balanced loss per train-count bin (powers of 3), per decay, on each split.", ""]
            lines += main_table(plan, in_study(runs, members, "main"), cols if "model" in cols else ["model", *cols])
            if effects is not None and "significant" in effects.columns:
                lines += significance_table(plan, in_study(effects, members, "main"))
            lines += norm_table(in_study(norms, members, "main"), ["model"], "main")
        else:
            lines += study_header(plan, name, spec, cols)
            own, base = study_runs(plan, members, runs, name)
            table, panels = variants_table(plan, own, base, cols, name)
            gap_panels[name] = panels
            if name not in regimes:
                lines += table + (norm_table(in_study(norms, members, name), cols, name)
                                  if set(cols) & EMBEDDING_AXES else [])
        if name in regimes:
            regime = study_regime(plan, members, runs, bins, name)
            regime_rows.append(regime)
            lines += regime_table(plan, in_study(runs, members, name), regime, cols)
            if name == regimes[0]:
                lines += [f"![regime map]({REGIME_FIGURE})", "",
                          "Each train-count bin's token-balanced loss change from the smallest to the largest decay "
                          "(paired per seed: a dot per seed, the line through their means) against the epochs the "
                          f"runs see, train beside validation; studies {', '.join(regimes)}.", ""]
    if regime_rows:
        import pandas as pd

        figure(plots.regime_map(pd.concat(regime_rows, ignore_index=True), plan.other_axes, base=plan.base_values),
               REGIME_FIGURE)
    if gap_panels:
        figure(plots.gap_vs_decay(gap_panels), "gap_vs_decay.png")
        lines[glance:glance] = [
            "## Every variant at a glance", "", "![rare and frequent loss against decay](gap_vs_decay.png)", "",
            "Rare (solid) and frequent (dashed) token-balanced loss against weight decay, train above validation, "
            "one column per study: each variant, and its base (black: the main study's runs of the same model, "
            "tokenizer and seeds); seed means.", ""]
    readme = os.path.join(out_dir, "README.md")
    with atomic_path(readme) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    written.append(readme)
    return written

