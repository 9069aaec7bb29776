"""Figures: one function per figure, taking tables/arrays and returning a matplotlib Figure.

Figures are built with matplotlib.figure.Figure directly (no pyplot, no global state, no display backend).
`save_figure` writes a figure atomically to one or more files, the format taken from each extension.
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib.figure import Figure

from . import paths
from .io import atomic_path

SPLIT_STYLE = {"train": "-", "validation": "--", "test": ":"}


def save_figure(fig: Figure, paths, dpi: int = 150) -> None:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    for p in paths:
        fmt = os.path.splitext(os.fspath(p))[1].lstrip(".") or None
        with atomic_path(p) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")


def zipf_figure(counts_by_split: dict[str, np.ndarray], title: str = "") -> Figure:
    """Rank vs relative frequency on log-log axes, one line per split (ids never seen are left out)."""
    fig = Figure(figsize=(5.5, 4.0))
    ax = fig.add_subplot()
    for split, counts in counts_by_split.items():
        c = np.sort(np.asarray(counts, dtype=np.int64))[::-1]
        c = c[c > 0]
        if not c.size:
            continue
        rank = np.arange(1, c.size + 1)
        ax.loglog(rank, c / c.sum(), SPLIT_STYLE.get(split, "-"), lw=1.2,
                  label=f"{split} ({int(c.sum()):,} tokens, {c.size:,} ids seen)")
    ax.set_xlabel("rank (1 = most frequent token)")
    ax.set_ylabel("frequency (share of tokens)")
    ax.set_title(title or "Zipf plot")
    ax.grid(True, which="major", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return fig


# --------------------------------------------------------------------------------------------------
# Aggregation figures (summary/): each takes the summary tables of tokenfair.aggregate (DataFrames) and
# returns a Figure. One colour per weight decay everywhere (`decay_colors`), frequency on log axes, bands
# of +- one std over seeds where a point has several seeds. `keys` are the columns that make a panel
# (corpus, tokenizer, model and any extra axis).

DECAY_CMAP = "plasma"
UNSEEN_LABEL = "unseen (train count 0)"


def decay_colors(decays) -> dict[float, tuple]:
    """A fixed colour per weight decay value, from the sorted decays of the whole study."""
    from matplotlib import colormaps

    decays = sorted(set(float(d) for d in decays))
    cmap = colormaps[DECAY_CMAP]
    pos = np.linspace(0.0, 0.85, len(decays)) if len(decays) > 1 else [0.0]  # the top of plasma is too pale
    return {d: cmap(p) for d, p in zip(decays, pos)}


def _color(colors, decay):
    return colors.get(float(decay), "gray")


DECAY_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")  # with the colour: neighbours (0, 0.01) look different


def decay_marker(colors, decay) -> str:
    """The marker of a weight decay: one per decay of the study (the keys of `colors`), in decay order."""
    order = sorted(colors)
    d = float(decay)
    return DECAY_MARKERS[order.index(d) % len(DECAY_MARKERS)] if d in order else "o"


def axis_text(v) -> str:
    """How an axis value is printed in a label or table: null for an unset value (None / NaN), true / false,
    numbers in %g."""
    if paths.is_null(v):
        return "null"
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):g}"
    return str(v)


def _panels(df, keys, base: dict | None = None):
    """[(label, sub-DataFrame)] for each combination of the panel keys, sorted. The label names the model,
    corpus and tokenizer, then each other key whose value differs from the model's base value, `base` being
    {model: {axis: base train setting}} (every other key when `base` is None or lacks the model or axis)."""
    if df is None or not len(df):
        return []
    keys = [k for k in keys if k in df.columns]
    base = base or {}
    out = []
    for vals, sub in df.groupby(keys, sort=True, dropna=False):
        vals = vals if isinstance(vals, tuple) else (vals,)
        d = dict(zip(keys, vals))
        own = base.get(d.get("model"), {})
        label = f"{d.get('model', '')} | {d.get('corpus', '')} / {d.get('tokenizer', '')}"
        extra = [f"{k}={axis_text(v)}" for k, v in d.items() if k not in ("model", "corpus", "tokenizer")
                 and not (k in own and paths.same_value(v, own[k]))]
        out.append((label + ("\n" + ", ".join(extra) if extra else ""), sub))
    return out


BIG_GRID = 30  # panels above which a figure is laid out by fixed margins: constrained layout costs O(panels^2)


def _grid(n_rows: int, n_cols: int, w: float = 4.2, h: float = 3.2, **kw):
    size = (max(w * n_cols, 5.0), max(h * n_rows, 3.0))
    if n_rows * n_cols <= BIG_GRID:
        fig = Figure(figsize=size, layout="constrained")
        return fig, fig.subplots(n_rows, n_cols, squeeze=False, **kw)
    fig = Figure(figsize=size)
    fig.fixed_layout = True  # saved without a tight bounding box (another full draw): see report.render_figure
    axes = fig.subplots(n_rows, n_cols, squeeze=False, **kw)
    fig.subplots_adjust(left=1.0 / size[0], right=1 - 1.4 / size[0], bottom=0.7 / size[1], top=1 - 0.8 / size[1],
                        wspace=0.3, hspace=0.35)
    return fig, axes


def _empty(message: str = "no finished run yet") -> Figure:
    fig = Figure(figsize=(5.0, 3.0))
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return fig


def _band(ax, x, mean, std, color, marker: str = "o", **kw):
    """A line with a band of +-std where std is finite (none where it is NaN: one seed)."""
    x, mean, std = (np.asarray(v, dtype=np.float64) for v in (x, mean, std))
    ax.plot(x, mean, color=color, marker=marker, ms=4, lw=1.5, **kw)
    ok = np.isfinite(std)
    if ok.any():
        ax.fill_between(x[ok], (mean - std)[ok], (mean + std)[ok], color=color, alpha=0.2, lw=0)


def _decay_bands(ax, df, x: str, metric: str, colors, spread: str = "std"):
    """One line per weight decay of `df` (its colour and marker): the seed mean of `metric` against column `x`
    (sorted), with a band of +-<metric>_<spread> (std, or ci95); a missing spread draws no band."""
    for wd, d in df.groupby("weight_decay"):
        d = d.sort_values(x)
        width = d[f"{metric}_{spread}"] if f"{metric}_{spread}" in d else np.full(len(d), np.nan)
        _band(ax, d[x], d[f"{metric}_mean"], width, _color(colors, wd), decay_marker(colors, wd))


def _has_band(df, metric: str, spread: str = "std") -> bool:
    """Whether a band is drawn: some point of df has a finite spread (two or more seeds)."""
    col = f"{metric}_{spread}"
    return bool(len(df)) and col in df and bool(np.isfinite(df[col].astype(float)).any())


def band_note(has_band: bool, spread: str = "std") -> str:
    """The caption's words for the band: what it is, or that there is none (one seed)."""
    if not has_band:
        return "one seed: no band"
    return "band = ±1 std over seeds" if spread == "std" else "band = 95% Student-t interval over seeds"


def _decay_legend(fig, colors, decays_present, refs: bool = False):
    """The figure's legend: a colour per weight decay, and the reference lines' styles when `refs`."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=_color(colors, d), marker=decay_marker(colors, d), lw=2, label=f"wd {d:g}")
               for d in sorted(decays_present)]
    if handles and refs:
        handles += [Line2D([], [], color="0.4", ls=style, lw=1.0, label=label) for _, style, label in REFERENCES]
    if handles and fig.get_layout_engine() is not None:
        fig.legend(handles=handles, loc="outside right center", title="weight decay", fontsize=8)
    elif handles:  # fixed-margin layout: in the right margin _grid keeps
        fig.legend(handles=handles, loc="center right", bbox_to_anchor=(1.0, 0.5), title="weight decay", fontsize=8)


def _decay_axis(ax, decays):
    pos = sorted(d for d in decays if d > 0)
    if pos and len(set(decays)) > 1 and max(pos) / min(pos) >= 10:
        ax.set_xscale("symlog", linthresh=min(pos))
    ticks = sorted(set(decays))
    if len(ticks) <= 8:
        ax.set_xticks(ticks, [f"{d:g}" for d in ticks])
    ax.set_xlabel("weight decay" + (" (symlog)" if ax.get_xscale() == "symlog" else ""))


# the reference losses drawn wherever a loss is plotted: (key in refs, line style, legend label)
REFERENCES = (("uniform", ":", "uniform: ln(vocabulary size)"), ("unigram", "-.", "unigram: train entropy"))


def _reference_lines(ax, refs, sub) -> None:
    """Horizontal lines at the reference losses of the panel's corpus x tokenizer; `refs`:
    {(corpus, tokenizer): {"uniform": nats, "unigram": nats}} (None: no lines)."""
    if not refs or not {"corpus", "tokenizer"} <= set(sub.columns):
        return
    for key in sub[["corpus", "tokenizer"]].drop_duplicates().itertuples(index=False, name=None):
        for name, style, label in REFERENCES if key in refs else ():
            ax.axhline(refs[key][name], color="0.4", ls=style, lw=1.0, zorder=0, label=label)


def _seed_dots(ax, runs, x: str, metric: str, colors) -> None:
    """One small dot per seed (a row of a per-seed table) at (x, metric), in its decay's colour."""
    if runs is None or not len(runs):
        return
    ax.scatter(runs[x], runs[metric], s=6, c=[_color(colors, w) for w in runs["weight_decay"]], alpha=0.6, lw=0,
               zorder=3)


UNSEEN_X = 1 / 3  # where the unseen bin (train count 0) sits on a log axis of train counts: a bin left of [1, 3)


def _bin_ticks(ax, edges) -> None:
    """Tick labels naming each bin drawn on a train-count axis and its number of ids: rows of `edges`
    (bin, bin_lo, bin_hi, n_types; n_types may be missing), the unseen bin at UNSEEN_X."""
    ax.minorticks_off()
    xs, labels = [], []
    for r in edges.itertuples(index=False):
        n = getattr(r, "n_types", None)
        xs.append(UNSEEN_X if r.bin < 0 else r.bin_lo)
        labels.append(bin_label(int(r.bin), int(r.bin_lo), int(r.bin_hi), None if paths.is_null(n) else int(n)))
    ax.set_xticks(xs, labels, fontsize=6)


def _unseen_points(ax, df, metric: str, colors) -> bool:
    """The unseen bin's seed mean per decay at UNSEEN_X: a marker and its std bar, no line; whether any."""
    drawn = False
    for wd, d in df.groupby("weight_decay"):
        y = d[f"{metric}_mean"].astype(float).to_numpy()
        if not np.isfinite(y).any():
            continue
        e = d[f"{metric}_std"].astype(float).to_numpy() if f"{metric}_std" in d else np.full(len(d), np.nan)
        ax.errorbar(np.full(len(d), UNSEEN_X), y, yerr=np.where(np.isfinite(e), e, 0), ls="none",
                    marker=decay_marker(colors, wd), mfc="none", color=_color(colors, wd), ms=6, capsize=2)
        drawn = True
    return drawn


def _bin_metric(df, split: str, colors: dict, keys, metric: str, ylabel: str, title: str, base=None,
                refs=None, bins=None) -> Figure:
    """A per-bin metric vs train-frequency bin, one line per weight decay (seed means, a band of +-1 std where
    a point has several seeds), one panel per model x corpus (a shared y axis); the unseen bin (train count 0)
    as hollow markers left of the seen bins; tick labels name each bin and, given the per-seed table `bins`,
    its number of ids, and a dot per seed."""
    df = df[df["split"] == split] if len(df) else df
    panels = _panels(df, keys, base)
    if not panels:
        return _empty(f"no finished run with a {split} split")
    has_seeds = bins is not None and len(bins)
    seeds = dict(_panels(bins[(bins["split"] == split) & (bins["bin"] >= 0)], keys, base)) if has_seeds else {}
    n_ids = dict(_panels(bins[bins["split"] == split], keys, base)) if has_seeds else {}
    fig, axes = _grid(1, len(panels), sharey=True)
    for ax, (label, sub) in zip(axes[0], panels):
        seen = sub[sub["bin"] >= 0]
        _decay_bands(ax, seen, "bin_lo", metric, colors)
        _seed_dots(ax, seeds.get(label), "bin_lo", metric, colors)
        unseen = _unseen_points(ax, sub[sub["bin"] < 0], metric, colors)
        _reference_lines(ax, refs, sub)
        ax.set_xscale("log")
        shown = sub if unseen else seen
        edges = shown.drop_duplicates("bin")[["bin", "bin_lo", "bin_hi"]].sort_values("bin")
        if label in n_ids:
            edges = edges.merge(n_ids[label].drop_duplicates("bin")[["bin", "n_types"]], on="bin", how="left")
        _bin_ticks(ax, edges)
        ax.set_xlabel("train count of the bin (log; n = ids)")
        ax.set_title(label, fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    _decay_legend(fig, colors, set(df["weight_decay"]), refs=bool(refs))
    note = band_note(_has_band(df, metric))
    fig.suptitle(f"{title} ({split}, final step)\nline = mean over seeds, {note}" + ("; dots = seeds" if has_seeds
                 else "") + "; hollow = unseen in train", fontsize=10)
    return fig


def bin_loss(bins_by_seed, split: str, colors: dict, keys, metric: str = "loss_balanced", base=None,
             refs=None, bins=None) -> Figure:
    """Per-bin loss vs train-frequency bin, one line per weight decay, one panel per model x corpus, with the
    uniform and unigram reference losses (`refs`, see _reference_lines) and, given the per-seed table `bins`,
    a dot per seed."""
    kind = "token-balanced" if metric == "loss_balanced" else "average"
    return _bin_metric(bins_by_seed, split, colors, keys, metric, f"{kind} loss per bin ({split}, nats)",
                       "Loss per frequency bin by weight decay", base, refs, bins)


def bin_accuracy(bins_by_seed, split: str, colors: dict, keys, base=None, bins=None) -> Figure:
    """Per-bin token-balanced accuracy (mean of each seen id's argmax accuracy) vs train-frequency bin, one
    line per weight decay, one panel per model x corpus; given the per-seed table `bins`, a dot per seed."""
    return _bin_metric(bins_by_seed, split, colors, keys, "acc_balanced",
                       f"token-balanced accuracy per bin ({split})", "Next-token accuracy per frequency bin", base,
                       bins=bins)


def bin_loss_change(changes, split: str, colors: dict, keys, base=None) -> Figure:
    """Each bin's token-balanced loss change from the smallest decay, paired per seed (metrics.paired_changes:
    each seed's own run at a decay minus its own at the smallest decay): per decay a dot per seed, the mean of
    the seeds' changes (line and marker) and the 95% Student-t interval of those changes as a bar (none with
    one seed). x: the bins in train-count order, the unseen bin first (hollow, named "unseen"), each tick with
    its number of ids; one panel per model x corpus (x extra axes), sharing the y axis."""
    from .metrics import ci95_halfwidth

    df = changes[(changes["split"] == split) & np.isfinite(changes["delta"].astype(float))] if len(changes) \
        else changes
    panels = _panels(df, keys, base)
    if not panels:
        return _empty(f"no decay paired with a reference run on {split}")
    fig, axes = _grid(1, len(panels), w=4.8, sharey=True)
    decays = sorted(set(df["weight_decay"]))
    any_bar = False
    for ax, (label, sub) in zip(axes[0], panels):
        edges = sub.drop_duplicates("bin").sort_values("bin")[["bin", "bin_lo", "bin_hi", "n_types"]]
        pos = {int(b): i for i, b in enumerate(edges["bin"])}
        width = 0.6 / max(len(decays), 1)
        for k, wd in enumerate(decays):
            d = sub[sub["weight_decay"] == wd]
            if not len(d):
                continue
            g = d.groupby("bin")["delta"].agg(["mean", "std", "count"]).reset_index()
            x = np.array([pos[int(b)] for b in g["bin"]]) + (k - (len(decays) - 1) / 2) * width
            ci = ci95_halfwidth(g["std"].to_numpy(), g["count"].to_numpy())
            color, marker = _color(colors, wd), decay_marker(colors, wd)
            seen = (g["bin"] >= 0).to_numpy()
            ax.plot(x[seen], g["mean"].to_numpy()[seen], color=color, marker=marker, ms=5, lw=1.2)
            ax.plot(x[~seen], g["mean"].to_numpy()[~seen], ls="none", color=color, marker=marker, mfc="none", ms=6)
            ok = np.isfinite(ci)
            if ok.any():
                ax.errorbar(x[ok], g["mean"].to_numpy()[ok], yerr=ci[ok], ls="none", color=color, capsize=2, lw=1)
                any_bar = True
            dx = np.array([pos[int(b)] for b in d["bin"]]) + (k - (len(decays) - 1) / 2) * width
            ax.scatter(dx, d["delta"], s=8, color=color, alpha=0.5, lw=0, zorder=3)
        ax.axhline(0.0, color="0.3", lw=0.8)
        ax.set_xticks(range(len(edges)), [bin_label(int(r.bin), int(r.bin_lo), int(r.bin_hi), int(r.n_types))
                                          for r in edges.itertuples(index=False)], fontsize=6)
        ax.set_xlabel("train count of the bin (n = ids)")
        ref = sub["weight_decay_ref"].min()
        ax.set_title(f"{label}\n(each seed vs its own run at decay {ref:g})", fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0][0].set_ylabel(f"loss change ({split}, nats)")
    _decay_legend(fig, colors, set(df["weight_decay"]))
    bars = "bars = 95% Student-t interval of the paired changes" if any_bar else "one seed: no interval"
    fig.suptitle(f"Change of each bin's token-balanced loss from the smallest decay, paired per seed ({split}, final "
                 f"step)\ndots = seeds, line = their mean, {bars}; hollow = unseen in train", fontsize=10)
    return fig


def bin_curves(curves_by_seed, split: str, colors: dict, keys, metric: str = "loss_balanced", base=None,
               refs=None) -> Figure:
    """Loss over training steps, one panel per frequency bin (columns) and model x corpus (rows), one line
    per weight decay."""
    df = curves_by_seed[curves_by_seed["split"] == split] if len(curves_by_seed) else curves_by_seed
    if len(df):
        df = df[np.isfinite(df[f"{metric}_mean"].astype(float))]
    panels = _panels(df, keys, base)
    if not panels:
        return _empty(f"no finished run with a {split} split")
    bins = sorted(set(df["bin"]))
    edges = df.drop_duplicates("bin").set_index("bin")[["bin_lo", "bin_hi"]]
    # no sharex: with shared axes every autoscale walks all siblings (quadratic in panels x bins)
    fig, axes = _grid(len(panels), len(bins), w=2.6, h=2.3)
    x_range = (float(df["step"].min()), float(df["step"].max()))
    for r, (label, sub) in enumerate(panels):
        for c, b in enumerate(bins):
            ax = axes[r][c]
            _decay_bands(ax, sub[sub["bin"] == b], "step", metric, colors)
            _reference_lines(ax, refs, sub)
            if r == 0:
                lo, hi = edges.loc[b]
                ax.set_title(UNSEEN_LABEL if b < 0 else f"train count [{lo:,}, {hi:,})", fontsize=8)
            if c == 0:
                ax.set_ylabel(f"{label}\nloss ({split}, nats)", fontsize=8)
            if r == len(panels) - 1:
                ax.set_xlabel("training step")
            if x_range[1] > x_range[0]:
                ax.set_xlim(*x_range)
            ax.grid(True, alpha=0.3)
            ax.tick_params(labelsize=7)
    _decay_legend(fig, colors, set(df["weight_decay"]), refs=bool(refs))
    fig.suptitle(f"Token-balanced loss of each frequency bin over training ({split}; "
                 f"{band_note(_has_band(df, metric))})",
                 fontsize=10)
    return fig


def loss_vs_decay(runs_by_seed, splits, colors: dict, keys, base=None, refs=None) -> Figure:
    """Average loss (solid) and token-balanced loss (dashed) against weight decay, with the uniform and
    unigram reference losses (`refs`, see _reference_lines); rows = splits."""
    panels = _panels(runs_by_seed, keys, base)
    splits = [s for s in splits if len(runs_by_seed) and f"{s}_loss_avg_mean" in runs_by_seed.columns]
    if not panels or not splits:
        return _empty()
    fig, axes = _grid(len(splits), len(panels), sharey="row")  # a split shares y
    for r, s in enumerate(splits):
        for c, (label, sub) in enumerate(panels):
            ax = axes[r][c]
            sub = sub.sort_values("weight_decay")
            for m, style, name in (("loss_avg", "-", "average loss"), ("loss_balanced", "--", "token-balanced loss")):
                x, y, e = sub["weight_decay"], sub[f"{s}_{m}_mean"], sub[f"{s}_{m}_std"]
                ax.plot(x, y, style, color="0.35", lw=1.2, label=name, zorder=1)
                ax.errorbar(x, y, yerr=e.where(np.isfinite(e.astype(float)), 0), fmt="none", ecolor="0.5",
                            capsize=2, zorder=1)
                ax.scatter(x, y, c=[_color(colors, w) for w in x], s=30, zorder=2,
                           marker="o" if m == "loss_avg" else "s")
            _reference_lines(ax, refs, sub)
            _decay_axis(ax, list(sub["weight_decay"]))
            ax.set_ylabel(f"{s} loss (nats)")
            ax.set_title(label, fontsize=9)
            ax.grid(True, alpha=0.3)
            if r == 0 and c == 0:
                ax.legend(fontsize=8)
    _decay_legend(fig, colors, set(runs_by_seed["weight_decay"]))
    fig.suptitle("Average vs token-balanced loss against weight decay (final step; bars = ±1 std over seeds)",
                 fontsize=10)
    return fig


def learning_speed(bins_by_seed, splits, colors: dict, keys, base=None) -> Figure:
    """Per-bin learning speed (normalised area under the loss curve: 0 instant, 1 never) vs frequency bin,
    one line per weight decay; rows = splits."""
    df = bins_by_seed[bins_by_seed["bin"] >= 0] if len(bins_by_seed) else bins_by_seed
    panels = _panels(df, keys, base)
    splits = [s for s in splits if len(df) and (df["split"] == s).any()]
    if not panels or not splits:
        return _empty()
    fig, axes = _grid(len(splits), len(panels), sharey="row")  # a split shares y
    for r, s in enumerate(splits):
        for c, (label, sub) in enumerate(panels):
            ax = axes[r][c]
            _decay_bands(ax, sub[sub["split"] == s], "bin_lo", "learning_speed", colors)
            ax.set_xscale("log")
            ax.set_xlabel("train count of the bin (lower edge, log)")
            ax.set_ylabel(f"{s}: normalised area under loss curve")
            ax.set_title(label, fontsize=9)
            ax.grid(True, alpha=0.3)
    _decay_legend(fig, colors, set(df["weight_decay"]))
    fig.suptitle("Learning speed per frequency bin (0 = learned at once, 1 = never improved; "
                 f"{band_note(_has_band(df, 'learning_speed'))})",
                 fontsize=10)
    return fig


def decay_heatmap(decay_effects, split: str, keys, base=None) -> Figure:
    """Bin x decay heat map of the increase of the bin's token-balanced loss over the smallest decay."""
    from matplotlib.colors import TwoSlopeNorm

    df = decay_effects[decay_effects["split"] == split] if len(decay_effects) else decay_effects
    panels = _panels(df, keys, base)
    if not panels:
        return _empty(f"no finished run with a {split} split")
    vmax = float(np.nanmax(np.abs(df["delta"].astype(float)))) if np.isfinite(df["delta"].astype(float)).any() else 0.0
    vmax = vmax or 1e-9
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-vmax, vmax=vmax)
    fig, axes = _grid(1, len(panels), w=0.9 + 0.9 * df["weight_decay"].nunique(), h=0.8 + 0.32 * df["bin"].nunique())
    im = None
    for ax, (label, sub) in zip(axes[0], panels):
        mat = sub.pivot_table(index="bin", columns="weight_decay", values="delta", dropna=False)
        sig = (sub.assign(significant=sub["significant"].astype(float)).pivot_table(
            index="bin", columns="weight_decay", values="significant", dropna=False).reindex_like(mat)
               if "significant" in sub.columns else mat * np.nan)
        edges = sub.drop_duplicates("bin").set_index("bin")
        im = ax.imshow(mat.to_numpy(dtype=float), aspect="auto", origin="lower", cmap="RdBu_r", norm=norm)
        ax.set_xticks(range(mat.shape[1]), [f"{w:g}" for w in mat.columns])
        ax.set_yticks(range(mat.shape[0]), [
            "unseen" if b < 0 else f"[{edges.loc[b, 'bin_lo']:,}, {edges.loc[b, 'bin_hi']:,})" for b in mat.index],
            fontsize=7)
        if mat.size <= 300:
            star = sig.to_numpy(dtype=float) > 0
            for (i, j), v in np.ndenumerate(mat.to_numpy(dtype=float)):
                if np.isfinite(v):
                    ax.text(j, i, f"{v:+.2f}" + ("*" if star[i, j] else ""), ha="center", va="center", fontsize=6,
                            color="white" if abs(v) > 0.6 * vmax else "black")
        ref = sub["weight_decay_ref"].min()
        ax.set_xlabel("weight decay")
        if ax is axes[0][0]:
            ax.set_ylabel("train count of the bin (rare at the bottom)")
        ax.set_title(f"{label}\n(vs decay {ref:g})", fontsize=9)
    fig.colorbar(im, ax=axes[0].tolist(), label="loss increase over the smallest decay (nats)")
    fig.suptitle(f"Change of each bin's token-balanced loss with weight decay ({split}, final step, seed means)\n"
                 "* = significant (paired t-test over seeds, Holm-corrected over the panel's bins x decays)",
                 fontsize=10)
    return fig


def embedding_norms(norms_by_seed, colors: dict, keys, base=None) -> Figure:
    """Mean L2 row norm of the embedding and unembedding matrices per train-frequency bin (x: the bin's lower
    train count, log), one line per weight decay. One row of panels per combination of the keys: embedding and
    unembedding side by side, or one panel when the two are tied (the same matrix)."""
    df = norms_by_seed[norms_by_seed["bin"] >= 0] if len(norms_by_seed) else norms_by_seed
    if len(df):
        df = df[np.isfinite(df["mean_norm_mean"].astype(float))]
    panels = _panels(df, keys, base)
    if not panels:
        return _empty("no finished run with embedding norms yet")
    tied = [bool(sub["tied_embeddings"].astype(bool).all()) for _, sub in panels]
    n_cols = 1 if all(tied) else 2
    fig, axes = _grid(len(panels), n_cols, sharey=True)
    for r, ((label, sub), is_tied) in enumerate(zip(panels, tied)):
        for c, matrix in enumerate(["embedding"] if is_tied else ["embedding", "unembedding"]):
            ax = axes[r][c]
            _decay_bands(ax, sub[sub["matrix"] == matrix], "bin_lo", "mean_norm", colors)
            ax.set_xscale("log")
            ax.set_xlabel("train count of the bin (lower edge, log)")
            ax.set_ylabel("mean row L2 norm")
            what = "embedding = unembedding (tied)" if is_tied else f"{matrix} (input)" if matrix == "embedding" \
                else "unembedding (output head)"
            ax.set_title(f"{label}\n{what}", fontsize=9)
            ax.grid(True, alpha=0.3)
        if is_tied and n_cols == 2:
            axes[r][1].set_axis_off()
    _decay_legend(fig, colors, set(df["weight_decay"]))
    fig.suptitle("Mean embedding row norm per train-frequency bin by weight decay (final model; "
                 f"{band_note(_has_band(df, 'mean_norm'))})", fontsize=10)
    return fig


def frequency_distribution(freq_tables: dict, rare_percentile: float) -> Figure:
    """Zipf plot of the train counts of each corpus x tokenizer (zipf_figure, special ids left out; the
    dotted line marks where "rare" starts), and the share of rare ids among the vocabulary and among the
    train occurrences."""
    if not freq_tables:
        return _empty("no train frequency table yet")
    plain = {}
    shares = []
    for label, t in freq_tables.items():
        special = np.asarray(t["special"], dtype=bool)
        counts = np.asarray(t["count"], dtype=np.int64)[~special]
        rare = np.asarray(t["percentile"], dtype=np.float64)[~special] < rare_percentile
        plain[label] = counts
        total = counts.sum()
        shares.append((label, rare.mean() if rare.size else np.nan, counts[rare].sum() / total if total else np.nan,
                       int((~rare).sum())))
    fig = zipf_figure(plain, title="Train token frequency (special ids left out)")
    fig.set_size_inches(11.0, 4.2)
    gs = fig.add_gridspec(1, 2, wspace=0.35)
    ax = fig.axes[0]
    ax.set_subplotspec(gs[0])
    for label, _, _, n_freq in shares:
        ax.axvline(n_freq + 0.5, ls=":", color="0.3", lw=1)
    ax.text(0.02, 0.02, f"dotted: rare starts (percentile < {rare_percentile:g})", transform=ax.transAxes, fontsize=7)
    ax2 = fig.add_subplot(gs[1])
    x = np.arange(len(shares))
    ax2.bar(x - 0.2, [s[1] * 100 for s in shares], width=0.4, label="share of vocabulary ids", color="tab:blue")
    ax2.bar(x + 0.2, [s[2] * 100 for s in shares], width=0.4, label="share of train occurrences", color="tab:orange")
    for xi, s in zip(x, shares):
        ax2.text(xi - 0.2, s[1] * 100, f"{s[1] * 100:.1f}%", ha="center", va="bottom", fontsize=7)
        ax2.text(xi + 0.2, s[2] * 100, f"{s[2] * 100:.1f}%", ha="center", va="bottom", fontsize=7)
    ax2.set_xticks(x, [s[0] for s in shares], fontsize=8)
    ax2.set_xlim(-0.9, len(shares) - 0.1)
    ax2.set_ylabel("% that are rare tokens")
    ax2.set_ylim(0, 105)
    ax2.set_title(f"Rare tokens (train percentile < {rare_percentile:g})")
    ax2.legend(fontsize=8)
    return fig


# --------------------------------------------------------------------------------------------------
# a study's docs page (tokenfair.publish)


def bin_loss_grid(bins_by_seed, models: list[str], splits: list[str], colors: dict) -> Figure:
    """Rows: models; columns: splits. Token-balanced loss per train-frequency bin, one line per decay,
    a band of the 95% half-width over seeds."""
    fig, axes = _grid(len(models), len(splits), sharex=True)
    for i, model in enumerate(models):
        for j, split in enumerate(splits):
            ax = axes[i][j]
            sub = bins_by_seed[(bins_by_seed["model"] == model) & (bins_by_seed["split"] == split)]
            sub = sub[sub["bin_lo"] > 0]
            _decay_bands(ax, sub, "bin_lo", "loss_balanced", colors, spread="ci95")
            ax.set_xscale("log")
            ax.set_title(f"{model}, {split}", fontsize=9)
            ax.set_xlabel("train count of the token (bin start)")
            ax.set_ylabel("token-balanced loss (nats)")
            ax.grid(alpha=0.3)
    _decay_legend(fig, colors, sorted(set(bins_by_seed["weight_decay"])))
    return fig


GAP_SPLITS = ("train", "validation")
GAP_METRICS = tuple(f"{s}_loss_{k}" for s in GAP_SPLITS for k in ("rare", "frequent"))  # runs.csv columns


def gap_vs_decay(panels: dict[str, list[tuple[str, "object"]]]) -> Figure:
    """Rare (solid) and frequent (dashed) token-balanced loss against weight decay: one column per study, a row
    per split of GAP_SPLITS the tables have (train above validation), all panels on one symlog decay axis and
    each row on one loss axis. `panels`: {study: [(variant, its seed_stats rows over GAP_METRICS, by decay)]};
    the variant "base" (the main study's runs of the same model, tokenizer and seeds) in black."""
    from matplotlib import colormaps
    from matplotlib.lines import Line2D

    frames = [d for lines in panels.values() for _, d in lines]
    splits = [s for s in GAP_SPLITS if any(f"{s}_loss_rare_mean" in d.columns for d in frames)]
    if not panels or not splits:
        return _empty("no study beside main")
    decays = sorted({float(w) for d in frames for w in d["weight_decay"]})
    pos = [w for w in decays if w > 0]
    fig, axes = _grid(len(splits), len(panels), w=3.8, h=3.0, sharex=True, sharey="row")
    cmap = colormaps["tab10"]
    for c, (study, lines) in enumerate(panels.items()):
        i = 0
        for label, d in lines:
            color = "black" if label == "base" else cmap(i % 10)
            i += label != "base"
            for r, split in enumerate(splits):
                ax = axes[r][c]
                for kind, ls, marker in (("rare", "-", "o"), ("frequent", "--", "s")):
                    col = f"{split}_loss_{kind}_mean"
                    if col in d.columns:
                        ax.plot(d["weight_decay"], d[col], color=color, ls=ls, marker=marker, ms=3, lw=1.3,
                                label=label if kind == "rare" else None)
        for r, split in enumerate(splits):
            ax = axes[r][c]
            ax.set_title(f"{study} ({split})", fontsize=9)
            ax.grid(alpha=0.3)
            if c == 0:
                ax.set_ylabel(f"{split} token-balanced loss (nats)")
            if r == len(splits) - 1:
                ax.set_xlabel("weight decay (symlog)" if pos else "weight decay")
            if r == 0:
                ax.legend(fontsize=6, loc="best")
    if pos:
        axes[0][0].set_xscale("symlog", linthresh=min(pos))
    if len(decays) <= 8:
        axes[0][0].set_xticks(decays, [f"{w:g}" for w in decays])
    kinds = [Line2D([], [], color="0.3", ls="-", marker="o", label="rare ids"),
             Line2D([], [], color="0.3", ls="--", marker="s", label="frequent ids")]
    fig.legend(handles=kinds, loc="outside lower center" if fig.get_layout_engine() is not None else "lower center",
               ncols=2, fontsize=8)
    fig.suptitle("Rare and frequent token-balanced loss against weight decay (final step, seed means)", fontsize=10)
    return fig


# --------------------------------------------------------------------------------------------------
# mechanism over training, the regime map


BIN_CMAP = "viridis"  # frequency colour: dark = rare, bright = frequent; the unseen bin is grey and dashed
UNSEEN_STYLE = {"color": "0.45", "ls": "--", "marker": "x"}


def bin_colors(bins) -> dict[int, tuple]:
    """A fixed colour per train-frequency bin (the seen bins along BIN_CMAP, rare dark), grey for unseen (-1)."""
    from matplotlib import colormaps

    seen = sorted(int(b) for b in set(bins) if b >= 0)
    pos = np.linspace(0.0, 0.9, len(seen)) if len(seen) > 1 else [0.0]
    out = {b: colormaps[BIN_CMAP](p) for b, p in zip(seen, pos)}
    return {**out, -1: UNSEEN_STYLE["color"]} if any(b < 0 for b in bins) else out


def bin_label(b: int, lo: int, hi: int, n: int | None = None) -> str:
    """A bin's name: "unseen" for bin -1 (train count 0), else its train-count range "[lo,hi)"; with n,
    the number of ids on a second line."""
    name = "unseen" if b < 0 else f"[{lo:,},{hi:,})"
    return name if n is None else f"{name}\nn={n:,}"


def _bin_line(ax, x, y, b: int, colors, label: str, **kw):
    style = {"color": colors.get(b, "gray"), "ls": "-", "marker": "o"} if b >= 0 else dict(UNSEEN_STYLE)
    ax.plot(x, y, ms=3, lw=1.4, label=label, gid=b, **{**style, **kw})


def _bin_legend(fig, axes) -> None:
    """The figure's legend of the bins drawn by _bin_line in any panel: each bin once, in train-count order."""
    lines = {}
    for ax in np.ravel(axes):
        for ln in ax.get_lines():
            if ln.get_gid() is not None:
                lines.setdefault(ln.get_gid(), ln)
    order = sorted(lines)
    where = {"loc": "outside right center"} if fig.get_layout_engine() is not None else \
        {"loc": "center right", "bbox_to_anchor": (1.0, 0.5)}  # fixed margins: in the right one _grid keeps
    fig.legend([lines[b] for b in order], [lines[b].get_label() for b in order], title="train count of the bin",
               fontsize=8, **where)


def norm_curves(curves_by_seed, keys, base=None) -> Figure:
    """Mean row norm of each train-frequency bin over training steps, one line per bin (frequency colour, the
    unseen bin grey and dashed), one column per weight decay; rows: per model x corpus (x extra axes) the input
    embedding and the output head, or one row when the model ties them (one matrix, said in the title)."""
    df = curves_by_seed
    if len(df):
        df = df[np.isfinite(df["mean_norm_mean"].astype(float))]
    panels = _panels(df, keys, base)
    if not panels:
        return _empty("no finished run with embedding norms yet")
    decays = sorted(set(df["weight_decay"]))
    rows = []
    for label, sub in panels:
        tied = bool(sub["tied_embeddings"].astype(bool).all())
        for matrix in ["embedding"] if tied else ["embedding", "unembedding"]:
            what = "tied: embedding = output head (one matrix)" if tied else \
                "input embedding" if matrix == "embedding" else "output head (unembedding)"
            rows.append((f"{label}\n{what}", sub[sub["matrix"] == matrix]))
    colors = bin_colors(df["bin"])
    fig, axes = _grid(len(rows), len(decays), w=3.4, h=2.8, sharey="row")
    for r, (label, sub) in enumerate(rows):
        for c, wd in enumerate(decays):
            ax = axes[r][c]
            for b, d in sub[sub["weight_decay"] == wd].groupby("bin"):
                d = d.sort_values("step")
                _bin_line(ax, d["step"], d["mean_norm_mean"], int(b), colors,
                          bin_label(int(b), int(d["bin_lo"].iloc[0]), int(d["bin_hi"].iloc[0])))
            if r == 0:
                ax.set_title(f"weight decay {wd:g}", fontsize=9)
            if c == 0:
                ax.set_ylabel(f"{label}\nmean row L2 norm", fontsize=8)
            if r == len(rows) - 1:
                ax.set_xlabel("training step")
            ax.grid(True, alpha=0.3)
            ax.tick_params(labelsize=7)
    _bin_legend(fig, axes)
    fig.suptitle("Mean embedding row norm per train-frequency bin over training (seed means)", fontsize=10)
    return fig


def regime_map(regime, keys, base=None) -> Figure:
    """Each bin's loss change from the smallest to the largest decay (paired per seed) against the runs'
    epochs (log x): a line through the seed means per bin (frequency colour; unseen grey, dashed), a dot per
    seed; train and validation side by side with a shared y axis; a row per model x corpus (the data-size
    axes, train_docs and steps, are the x axis, not panels)."""
    df = regime
    if len(df):
        df = df[np.isfinite(df["delta"].astype(float)) & np.isfinite(df["epochs"].astype(float))]
    splits = [s for s in ("train", "validation") if len(df) and (df["split"] == s).any()]
    panel_keys = [k for k in keys if k not in paths.REGIME_AXES]
    panels = _panels(df, panel_keys, base)
    if not panels or not splits:
        return _empty("no run with epochs and two decays yet")
    colors = bin_colors(df["bin"])
    fig, axes = _grid(len(panels), len(splits), w=4.6, h=3.4, sharey=True)
    for r, (label, sub) in enumerate(panels):
        for c, split in enumerate(splits):
            ax = axes[r][c]
            s = sub[sub["split"] == split]
            for b, d in s.groupby("bin"):
                mean = d.groupby("epochs")["delta"].mean()
                _bin_line(ax, mean.index, mean.to_numpy(), int(b), colors,
                          bin_label(int(b), int(d["bin_lo"].iloc[0]), int(d["bin_hi"].iloc[0])))
                ax.scatter(d["epochs"], d["delta"], s=8, color=colors.get(int(b), "gray"), alpha=0.6, lw=0, zorder=3)
            ax.axhline(0.0, color="0.3", lw=0.8)
            ax.set_xscale("log")
            ticks = sorted(set(np.round(df["epochs"].astype(float), 1)))  # the runs' epochs, not log minor labels
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.set_xticks([], minor=True)
            ax.set_xlabel("epochs (log)")
            decays = s[["weight_decay_ref", "weight_decay"]].drop_duplicates()
            vs = ", ".join(f"{t:g} − {f:g}" for f, t in decays.itertuples(index=False, name=None))
            ax.set_title(f"{label}\n{split} (decay {vs})", fontsize=9)
            if c == 0:
                ax.set_ylabel("loss change (nats)")
            ax.grid(True, alpha=0.3)
    _bin_legend(fig, axes)
    fig.suptitle("Regime map: each bin's token-balanced loss change, largest decay minus smallest, against "
                 "epochs\n(final step; line = mean over seeds, dots = seeds)", fontsize=10)
    return fig
