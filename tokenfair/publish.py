"""A study's summary as documentation: the headline numbers per study and a few figures, in one folder.

`publish(plan, summary_dir, out_dir)` (plan: tokenfair.plan) reads the aggregate stage's tables
(<results_dir>/summary/*.parquet) and writes `out_dir/README.md` and PNG figures into `out_dir`: the rule
`publish` (rules/aggregate.smk), whose folder is `aggregate.publish_dir`. Numbers are seed means with a Student-t 95% half-width where a study has
several seeds; nothing is typed in by hand, so rerunning the rule regenerates the page from the runs.

Sections, by study (tokenfair.plan.Plan.studies; a table's rows of a study: the summary's membership table):
- main: per model x decay, the rare-frequent gap (rare minus frequent token-balanced loss) on train,
  validation and each out-of-domain split; average vs token-balanced loss; per-bin significance counts.
- every other study: its variants (the axis values / tokenizers it varies) x decay, the same gaps, beside
  the main study's runs of the same model, tokenizer and seeds (the base).
"""

from __future__ import annotations

import os

import numpy as np

from . import paths
from .report import fmt, md_table, significance_flags

RARE_GAP = "rare_gap"  # aggregate's per-run column: loss_rare - loss_frequent (token-balanced within each)
DIGITS = 3  # decimals of the page's numbers


def outputs(plan) -> list[str]:
    """The files `publish` writes into aggregate.publish_dir (none when it is not set)."""
    d = plan["aggregate"].get("publish_dir")
    if not d:
        return []
    figs = ["bin_loss.png"] + (["gap_vs_decay.png"] if len(plan.studies) > 1 else [])
    return [os.path.join(d, "README.md"), *(os.path.join(d, f) for f in figs)]


# --------------------------------------------------------------------------------------------------
# which rows of the summary tables belong to which study


def _key_value(v) -> str:
    """An axis value of a table row as text, for grouping and labels (None / NaN -> null, 1 -> 1.0)."""
    if paths.is_null(v):
        return "null"
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    return paths.format_value(v)


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
    """The columns a study varies beside weight_decay: its axes, and tokenizer when it has several."""
    spec = dict(plan.studies)[study]
    cols = list(spec["axes"])
    if len(spec["tokenizers"]) > 1:
        cols.insert(0, "tokenizer")
    if len(spec["models"]) > 1:
        cols.insert(0, "model")
    return cols


# --------------------------------------------------------------------------------------------------
# formatting (tokenfair.report's fmt and md_table, three decimals)


def metric(row, name: str) -> str:
    ci = row.get(f"{name}_ci95") if int(row.get("n_seeds", 1)) > 1 else None
    return fmt(row.get(f"{name}_mean"), ci, DIGITS)


# --------------------------------------------------------------------------------------------------
# the page

EMBEDDING_AXES = {"decay_group", "tie_embeddings", "embedding_decay_alpha"}  # studies that get a norms table


def norm_table(nrm, cols: list[str], name: str) -> list[str]:
    """Markdown lines: per variant x decay x matrix, the mean row norm of the rarest and of the most frequent
    train-count bin (seed means), from embedding_norms_by_seed."""
    if nrm is None or not len(nrm):
        return []
    nrm = nrm.assign(**{c: [_key_value(v) for v in nrm[c]] for c in cols})
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


def publish(plan, summary_dir: str, out_dir: str, command: str) -> list[str]:
    """Write out_dir/README.md and its figures from the summary tables of a plan; returns the files written."""
    from .io import atomic_path
    from . import plots
    from .plots import decay_colors, save_figure

    os.makedirs(out_dir, exist_ok=True)
    import pandas as pd

    from .metrics import seed_stats

    members = _read(summary_dir, paths.MEMBERSHIP)
    runs = _read(summary_dir, "runs")
    runs_seed = _read(summary_dir, "runs_by_seed")
    bins_seed = _read(summary_dir, "bins_by_seed")
    effects = _read(summary_dir, "decay_effects")
    norms = _read(summary_dir, "embedding_norms_by_seed")
    splits = plan.splits
    written = []
    lines = [f"# {os.path.basename(os.path.normpath(out_dir))}: the study's numbers and figures", "",
             f"Generated from `{plan['results_dir']}/summary/` by `{command}` (tokenfair.publish); do not edit by "
             "hand. Losses are in nats per token, from the final step. *Gap* = rare − frequent loss: the "
             f"token-balanced loss of the ids below the {plan['frequency']['rare_percentile']:g}th train-count "
             "percentile minus that of the others. With several seeds: mean ± Student-t 95% half-width.", ""]

    # --- main ---------------------------------------------------------------------------------------------
    main_runs = in_study(runs_seed, members, "main")
    main_bins = in_study(bins_seed, members, "main")
    models = list(dict.fromkeys(main_runs["model"]))
    colors = decay_colors(main_runs["weight_decay"])
    fig = plots.bin_loss_grid(main_bins, models, [s for s in splits if s in set(main_bins["split"])], colors)
    stem = os.path.join(out_dir, "bin_loss")
    save_figure(fig, [stem + ".png"])
    written.append(stem + ".png")
    lines += ["## main: the paper's decays", "",
              "![token-balanced loss per frequency bin](bin_loss.png)", "",
              "Token-balanced loss per train-count bin (powers of 3), per decay, on each split.", ""]
    gap_cols = [s for s in splits if f"{s}_{RARE_GAP}_mean" in main_runs.columns]
    header = ["model", "decay", "seeds"] + [f"gap {s}" for s in gap_cols] + [
        "train avg", "train balanced", "validation avg"]
    rows = []
    for _, r in main_runs.sort_values(["model", "weight_decay"]).iterrows():
        rows.append([str(r["model"]), f"{r['weight_decay']:g}", str(int(r["n_seeds"]))]
                    + [metric(r, f"{s}_{RARE_GAP}") for s in gap_cols]
                    + [metric(r, "train_loss_avg"), metric(r, "train_loss_balanced"), metric(r, "validation_loss_avg")])
    lines += [md_table(header, rows), ""]
    if effects is not None and "significant" in effects.columns:
        eff = in_study(effects, members, "main")
        level = plan["aggregate"]["significance_level"]
        lines += [f"Bins whose token-balanced loss differs from decay {eff['weight_decay_ref'].min():g} "
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
        lines += [md_table(["model", "split", "decay", "significant up / down / tested", "rarest bin Δ",
                            "rarest bin p (Holm)"], rows), ""]

    if norms is not None and len(norms):
        lines += norm_table(in_study(norms, members, "main"), ["model"], "main")  # label: model=<name>

    # --- the other studies -----------------------------------------------------------------------------------
    gap_panels: dict[str, list] = {}
    for name, spec in plan.studies:
        if name == "main":
            continue
        own, base = study_runs(plan, members, runs, name)
        cols = varied(plan, name)
        lines += [f"## {name}", "",
                  f"{', '.join(spec['models'])}; seeds {', '.join(map(str, spec['seeds']))}; decays "
                  f"{', '.join(f'{w:g}' for w in spec['weight_decays'])}; varies "
                  f"{', '.join(cols) if cols else 'nothing beyond the decay'}. "
                  "Rows marked *base* are the main study's runs of the same model, tokenizer and seeds.", ""]
        metrics = [f"{s}_{RARE_GAP}" for s in gap_cols] + ["train_loss_rare", "train_loss_frequent", "train_loss_avg",
                                                           "train_loss_balanced", "validation_loss_avg"]
        metrics = [m for m in metrics if f"{m}" in own.columns]
        names = {"train_loss_rare": "train rare", "train_loss_frequent": "train frequent", "train_loss_avg": "train avg",
                 "train_loss_balanced": "train balanced", "validation_loss_avg": "validation avg"}
        header = ["variant", "decay", "seeds"] + [names.get(m, "gap " + m[: -len(RARE_GAP) - 1]) for m in metrics]
        rows = []
        curves: dict[str, list] = {}  # variant -> its rows over seeds (plots.gap_vs_decay)
        for is_base, df in ((False, own), (True, base)):
            if df is None or not len(df):
                continue
            keys = [*cols, "weight_decay"]
            df = df.assign(**{c: [_key_value(v) for v in df[c]] for c in cols})  # None / NaN group as "null"
            agg = seed_stats(df, keys, metrics)
            shown = seed_stats(df, keys, [m for m in plots.GAP_METRICS if m in df.columns])
            for _, r in shown.iterrows():
                curves.setdefault("base" if is_base else ", ".join(f"{c}={r[c]}" for c in cols) or name, []).append(r)
            for _, r in agg.sort_values(keys).iterrows():
                label = "base" if is_base else ", ".join(f"{c}={r[c]}" for c in cols) or name
                rows.append([label, f"{r['weight_decay']:g}", str(int(r["n_seeds"]))]
                            + [metric(r, m) for m in metrics])
        lines += [md_table(header, rows), ""]
        for label, rs in curves.items():
            gap_panels.setdefault(name, []).append((label, pd.DataFrame(rs).sort_values("weight_decay")))
        if norms is not None and len(norms) and set(cols) & EMBEDDING_AXES:
            lines += norm_table(in_study(norms, members, name), cols, name)
    if gap_panels:
        fig = plots.gap_vs_decay(gap_panels)
        stem = os.path.join(out_dir, "gap_vs_decay")
        save_figure(fig, [stem + ".png"])
        written.append(stem + ".png")
        lines[lines.index("## main: the paper's decays"):lines.index("## main: the paper's decays")] = [
            "## Every variant at a glance", "", "![rare and frequent loss against decay](gap_vs_decay.png)", "",
            "Rare (solid) and frequent (dashed) token-balanced loss against weight decay, train above validation, "
            "one column per study: each variant, and its base (black: the main study's runs of the same model, "
            "tokenizer and seeds); seed means.", ""]
    readme = os.path.join(out_dir, "README.md")
    with atomic_path(readme) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    written.append(readme)
    return written
