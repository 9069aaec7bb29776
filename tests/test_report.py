"""tokenfair.report: the figure registry (one entry is enough for a figure to be drawn, listed as an output,
shown in the README and labelled in the Snakemake report), the Markdown and number formatting, the
significance count and the README's train entropy."""

import math
import os

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from tokenfair import aggregate as A
from tokenfair import paths
from tokenfair import report as R
from tokenfair.metrics import seed_stats, unigram_entropy
from test_aggregate import VOCAB, make_cfg, write_tree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_registry_names_every_figure_in_order():
    splits = ["train", "validation", "ood-py_docs"]
    names = R.figure_names(splits)
    assert names == [f"{k}_{s}" for k in ("bin_loss", "bin_loss_change", "bin_curves", "decay_heatmap", "bin_accuracy")
                                 for s in splits] + [
        "loss_vs_decay", "learning_speed", "embedding_norms", "frequency", "embedding_norm_curves"]
    for stem in names:  # every name parses back (an ood split's corpus name may hold underscores)
        kind, split = R.parse_figure_stem(stem, splits)
        assert (f"{kind}_{split}" if split else kind) == stem and kind in R.FIGURES
    assert A.parse_figure_stem("bin_loss_ood-py_docs", splits) == ("bin_loss", "ood-py_docs")  # the workflow's name
    with pytest.raises(ValueError, match="unknown figure"):
        R.parse_figure_stem("bin_loss_test", splits)
    for kind in R.FIGURES.values():  # each kind's report caption exists and its tables are the aggregation's
        assert os.path.isfile(os.path.join(ROOT, kind.report_caption)), kind.report_caption
        assert set(kind.tables) <= set(paths.SUMMARY_TABLES) | {"vocabularies"}, kind.name


def test_the_regime_map_is_drawn_only_when_a_study_varies_the_epochs(tmp_path):
    plain = make_cfg(tmp_path, models=["tiny-xs"])
    assert "regime_map" not in R.figure_names(plain.splits, plain) and not R.varies_epochs(plain)
    varied = make_cfg(tmp_path, models=["tiny-xs"], studies={"regime": {"axes": {"steps": [100, 200]}}})
    names = R.figure_names(varied.splits, varied)
    assert names[-1] == "regime_map" and R.parse_figure_stem("regime_map", varied.splits) == ("regime_map", None)
    assert os.path.join(A.summary_dir(varied["results_dir"]), "figures", "regime_map.png") in \
        A.summary_outputs(varied)["figures"]
    assert "regime_map" not in R.figure_names(varied.splits)  # without a plan: the unconditional kinds only


def _count_figure(tables, split, ctx):
    """A figure drawn only from registered tables: occurrences per bin of one split."""
    d = tables["bins_by_seed"]
    d = d[d["split"] == split]
    fig = Figure(figsize=(3, 2))
    fig.add_subplot().plot(d["bin"], d["occurrences_mean"], "o")
    return fig


def _runs_figure(tables, split, ctx):
    """A figure of the whole study: seeds per decay."""
    d = tables["runs_by_seed"]
    fig = Figure(figsize=(3, 2))
    fig.add_subplot().bar(d["weight_decay"].astype(str), d["n_seeds"])
    return fig


def test_a_registered_figure_is_drawn_listed_shown_and_labelled(tmp_path, monkeypatch):
    monkeypatch.setattr(R, "FIGURES", dict(R.FIGURES))  # the registration ends with the test
    R.figure("occurrences", ["bins_by_seed"], caption="Occurrences per bin ({split})", per_split=True)(_count_figure)
    R.figure("n_runs", ["runs_by_seed"], caption="Runs per decay")(_runs_figure)
    cfg = make_cfg(tmp_path / "results", models=["tiny-xs"], weight_decays=[0.0, 1.0], seeds=[0])
    counts = write_tree(cfg)
    A.aggregate(cfg, workers=1)
    out = A.summary_outputs(cfg)
    summary = A.summary_dir(cfg["results_dir"])
    for stem in ("occurrences_train", "occurrences_validation", "n_runs"):
        for ext in ("png", "pdf"):
            f = os.path.join(summary, "figures", f"{stem}.{ext}")
            assert f in out["figures"] and os.path.getsize(f) > 0
    readme = open(os.path.join(summary, "README.md")).read()
    assert "### Occurrences per bin (validation)\n\n![Occurrences per bin (validation)](figures/occurrences_validation.png)" in readme
    assert "![Runs per decay](figures/n_runs.png)" in readme
    # the rules' report() labels: every figure output parses to a kind with a caption file name and a split
    splits = cfg.splits
    assert R.parse_figure_stem("occurrences_train", splits) == ("occurrences", "train")
    assert R.parse_figure_stem("n_runs", splits) == ("n_runs", None)
    assert R.FIGURES["occurrences"].report_caption == os.path.join("report", "figure_occurrences.rst")
    # the train entropy line comes from the vocabularies table
    special = np.zeros(VOCAB, dtype=bool)
    special[:2] = True
    assert f"Train unigram entropy of c1 / t1: {unigram_entropy(counts, special):.4f} nats" in readme
    assert f"uniform loss ln({VOCAB}) = {math.log(VOCAB):.4f} nats" in readme


def test_fmt_and_tables():
    assert R.fmt(None) == R.fmt(math.nan) == "–"
    assert R.fmt(1.23456) == "1.2346" and R.fmt(1.23456, 0.1, digits=3) == "1.235 ± 0.100"
    assert R.fmt(2.0, math.nan, digits=3) == "2.000" and R.fmt(3) == "3" and R.fmt("tiny-s") == "tiny-s"
    assert R.md_table(["a", "b"], [["1", "2"]]) == "| a | b |\n|---|---|\n| 1 | 2 |"
    df = pd.DataFrame({"model": ["m"], "weight_decay": [0.1], "n_seeds": [3.0], "loss": [0.5], "alpha": [None]})
    assert R.df_table(df, [("model", "model"), ("weight_decay", "decay"), ("n_seeds", "n"), ("loss", "loss"),
                           ("alpha", "alpha")], axes=["alpha"]) == (
        "| model | decay | n | loss | alpha |\n|---|---|---|---|---|\n| m | 0.1 | 3 | 0.5000 | null |")


def test_significance_is_decided_by_the_sign_of_delta():
    # seeds 0, 1 paired at decay 0.5, seed 2 only at the reference: the paired t can point the other way from
    # delta (the change of the seed means); a significant bin counts where delta points.
    eff = pd.DataFrame({"model": "m", "split": ["train", "train", "validation", "train"],
                        "weight_decay_ref": 0.0, "weight_decay": [0.5, 0.5, 0.5, 0.0], "bin": [0, 1, 0, 0],
                        "delta": [0.2, -0.1, 0.3, 0.0], "t_stat": [-5.0, -3.0, 4.0, math.nan],
                        "p_value": [0.01, 0.02, math.nan, math.nan], "significant": [True, True, False, False],
                        "verdict": ["inconclusive", "down", "inconclusive", None]})
    tested, rose, fell = R.significance_flags(eff)
    assert tested.tolist() == [True, True, False, False]
    assert rose.tolist() == [True, False, False, False] and fell.tolist() == [False, True, False, False]
    counts = R.significance_counts(eff, ["model"], ["validation", "train"])
    assert counts[["split", "n_tested", "n_rose", "n_fell"]].values.tolist() == [["validation", 0, 0, 0],
                                                                                 ["train", 2, 1, 1]]
    # a verdict counts as inconclusive among the tested bins only (the validation bin has no test)
    assert counts["n_inconclusive"].tolist() == [0, 1]


def _regime_table():
    """A regime map of one model: epochs 2 and 20, two seeds, bins unseen and [1,3), train and validation."""
    rows = []
    for epochs, docs in ((2.0, 100), (20.0, 10)):
        for seed in (0, 1):
            for split in ("train", "validation"):
                for b in (-1, 0):
                    rows.append({"corpus": "c", "tokenizer": "t", "model": "m", "train_docs": docs, "epochs": epochs,
                                 "seed": seed, "weight_decay_ref": 0.0, "weight_decay": 1.0, "split": split, "bin": b,
                                 "bin_lo": 0 if b < 0 else 1, "bin_hi": 1 if b < 0 else 3, "n_types": 1,
                                 "delta": 0.1 * epochs * (1 if split == "train" else -1) + 0.01 * seed + 0.05 * b})
    return pd.DataFrame(rows)


def test_regime_map_figure():
    from matplotlib.collections import PathCollection

    from tokenfair import plots

    fig = plots.regime_map(_regime_table(), ["corpus", "tokenizer", "model", "train_docs"])
    train, val = [ax for ax in fig.axes if ax.get_visible()]
    assert train.get_xscale() == val.get_xscale() == "log"
    assert [t.get_text() for t in train.get_xticklabels()] == ["2", "20"] and not train.get_xticks(minor=True).size
    assert train.get_shared_y_axes().joined(train, val)
    assert "train" in train.get_title() and "validation" in val.get_title()
    lines = {ln.get_label(): ln for ln in train.get_lines() if not ln.get_label().startswith("_")}
    assert set(lines) == {"unseen", "[1,3)"} and lines["unseen"].get_linestyle() == "--"
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["unseen", "[1,3)"]  # in train-count order
    np.testing.assert_allclose(lines["[1,3)"].get_ydata(), [0.205, 2.005])  # the seed means at epochs 2, 20
    dots = [c for c in train.collections if isinstance(c, PathCollection)]
    assert sum(len(c.get_offsets()) for c in dots) == 2 * 2 * 2  # a dot per seed x epochs x bin


def _bins(seeds, models=("m",)):
    """A per-seed bins table: decays 0, 0.01, 1; bins unseen (5 ids), [1,3) (one id), [3,9) (3 ids); the
    seed's loss at a decay = 1 + decay x (2 - bin) + 0.1 seed (+ 0.5 for model n, the unseen bin + 1)."""
    rows = []
    for model in models:
        for wd in (0.0, 0.01, 1.0):
            for seed in seeds:
                for split in ("train", "validation"):
                    for b, lo, hi, n in ((-1, 0, 1, 5), (0, 1, 3, 1), (1, 3, 9, 3)):
                        loss = 1 + wd * (2 - b) + 0.1 * seed + (0.5 if model == "n" else 0) + (b < 0)
                        rows.append({"corpus": "c", "tokenizer": "t", "model": model, "weight_decay": wd, "seed": seed,
                                     "split": split, "bin": b, "bin_lo": lo, "bin_hi": hi, "n_types": n,
                                     "loss_balanced": loss, "acc_balanced": 0.5})
    bins = pd.DataFrame(rows)
    keys = ["corpus", "tokenizer", "model", "weight_decay", "split", "bin", "bin_lo", "bin_hi"]
    return bins, seed_stats(bins, keys, ["loss_balanced", "acc_balanced"])


OTHERS = ["corpus", "tokenizer", "model"]


def _legend_styles(fig):
    return {h.get_label(): (h.get_color(), h.get_marker()) for h in fig.legends[0].legend_handles}


def test_bin_loss_figure_a_reader_can_trust():
    from matplotlib.collections import PolyCollection

    from tokenfair import plots

    colors = plots.decay_colors([0.0, 0.01, 1.0])
    bins, by_seed = _bins([0, 1], models=("m", "n"))
    fig = plots.bin_loss(by_seed, "validation", colors, OTHERS, bins=bins)
    a, b = [ax for ax in fig.axes if ax.get_visible()]
    assert a.get_shared_y_axes().joined(a, b)  # the split's panels share y
    ticks = [t.get_text() for t in a.get_xticklabels()]
    assert ticks == ["unseen\nn=5", "[1,3)\nn=1", "[3,9)\nn=3"]
    styles = _legend_styles(fig)
    assert styles["wd 0"] != styles["wd 0.01"] and styles["wd 0"][1] != styles["wd 0.01"][1]  # other marker
    assert any(isinstance(c, PolyCollection) for c in a.collections)  # two seeds: a band
    assert "band = ±1 std over seeds" in fig._suptitle.get_text() and "unseen" in fig._suptitle.get_text()
    bins1, by_seed1 = _bins([0])
    fig = plots.bin_loss(by_seed1, "validation", colors, OTHERS, bins=bins1)
    (a,) = [ax for ax in fig.axes if ax.get_visible()]
    assert not any(isinstance(c, PolyCollection) for c in a.collections)  # one seed: no band, and said so
    assert "one seed: no band" in fig._suptitle.get_text()


def test_bin_loss_change_is_paired_per_seed():
    from matplotlib.collections import LineCollection, PathCollection

    from tokenfair import plots
    from tokenfair.metrics import paired_changes

    colors = plots.decay_colors([0.0, 0.01, 1.0])
    bins, _ = _bins([0, 1, 2])
    changes = paired_changes(bins, OTHERS)
    fig = plots.bin_loss_change(changes, "train", colors, OTHERS)
    (ax,) = [a for a in fig.axes if a.get_visible()]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["unseen\nn=5", "[1,3)\nn=1", "[3,9)\nn=3"]
    means = [ln for ln in ax.get_lines() if ln.get_marker() == plots.decay_marker(colors, 1.0) and len(ln.get_xdata())]
    # decay 1, each seed's change = 1 x (2 - bin) whatever the seed: [1,3) 2, [3,9) 1, unseen 3
    assert sorted(np.concatenate([ln.get_ydata() for ln in means]).tolist()) == pytest.approx([1.0, 2.0, 3.0])
    dots = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert sum(len(c.get_offsets()) for c in dots) == 2 * 3 * 3  # decays x bins x seeds
    assert any(isinstance(c, LineCollection) for c in ax.collections)  # the 95% interval bars
    one = plots.bin_loss_change(paired_changes(_bins([0])[0], OTHERS), "train", colors, OTHERS)
    (ax,) = [a for a in one.axes if a.get_visible()]
    assert not any(isinstance(c, LineCollection) for c in ax.collections)
    assert "one seed: no interval" in one._suptitle.get_text()


def test_gap_vs_decay_draws_rare_and_frequent_per_split():
    from tokenfair import plots

    def rows(shift):
        return pd.DataFrame({"weight_decay": [0.0, 0.01, 1.0], "train_loss_rare_mean": [2.0 + shift, 2.1, 3.0],
                             "train_loss_frequent_mean": [1.0, 1.0, 1.2], "validation_loss_rare_mean": [5.0, 5.0, 5.5],
                             "validation_loss_frequent_mean": [3.0, 3.0, 3.1]})

    fig = plots.gap_vs_decay({"alpha": [("alpha=0.5", rows(0.5)), ("base", rows(0.0))], "groups": [("base", rows(0))]})
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 4  # train row over validation row, a column per study
    (tr_a, tr_g), (va_a, va_g) = np.array(axes).reshape(2, 2)
    assert all(ax.get_xscale() == "symlog" for ax in axes) and tr_a.get_shared_x_axes().joined(tr_a, va_g)
    assert tr_a.get_shared_y_axes().joined(tr_a, tr_g) and not tr_a.get_shared_y_axes().joined(tr_a, va_a)
    assert va_a.get_xlabel() == "weight decay (symlog)"
    assert "nats" in tr_a.get_ylabel() and "validation" in va_a.get_ylabel()
    assert len(tr_a.get_lines()) == 2 * 2  # rare and frequent per variant
    styles = {(ln.get_linestyle(), ln.get_ydata()[0]) for ln in va_a.get_lines()}
    assert styles == {("-", 5.0), ("--", 3.0)}


def test_loss_vs_decay_shares_y_within_a_split():
    from tokenfair import plots

    cols = {f"{s}_{k}_{st}": (1.0 if st == "mean" else 0.1) + (s == "validation") * 5
            for s in ("train", "validation") for k in ("loss_avg", "loss_balanced") for st in ("mean", "std")}
    rows = [{"corpus": "c", "tokenizer": "t", "model": m, "weight_decay": wd, **cols}
            for m in ("m", "n") for wd in (0.0, 0.01, 1.0)]
    fig = plots.loss_vs_decay(pd.DataFrame(rows), ["train", "validation"], plots.decay_colors([0.0, 0.01, 1.0]), OTHERS)
    (tm, tn), (vm, vn) = np.array([ax for ax in fig.axes if ax.get_visible()]).reshape(2, 2)
    assert tm.get_shared_y_axes().joined(tm, tn) and vm.get_shared_y_axes().joined(vm, vn)
    assert not tm.get_shared_y_axes().joined(tm, vm)
