"""tokenfair.publish: a study's docs page from constructed summary tables, every number checked by hand."""

import math
import os

import numpy as np
import pandas as pd

from tokenfair import aggregate as A
from tokenfair import publish as P
from tokenfair.io import write_table
from tokenfair.metrics import seed_stats
from test_aggregate import make_cfg

T95_1 = 12.7062047  # t(0.975, 1): the 95% half-width of two seeds is T95_1 * std / sqrt(2)


def test_a_change_is_written_in_nats_and_in_percent_of_the_reference():
    assert P.change(0.9, 0.6) == " (+0.300, +50%)"
    assert P.change(0.61, 0.6) == " (+0.010, +1.7%)"  # one decimal below 10%
    assert P.change(0.5, 0.6) == " (-0.100, -17%)"
    assert P.change(-0.1, -0.2) == " (+0.100, +50%)"  # percent of the reference's magnitude: the sign is the change's
    assert P.change(0.1, 0.0) == " (+0.100)"  # no percent of 0
    assert P.change(None, 0.6) == P.change(0.9, math.nan) == ""
    assert P.percent(2003.4) == "+2003%" and P.percent(0.42, sign=False) == "0.4%" and P.percent(math.nan) == "–"


def test_variants_are_listed_by_value():
    df = pd.DataFrame({"model": ["b", "a", "a", "a"], "train_docs": ["27", "3", "null", "9"]})
    assert P.in_order(df, ["train_docs"])["train_docs"].tolist() == ["3", "9", "27", "null"]
    assert P.in_order(df, ["model", "train_docs"]).index.tolist() == [1, 3, 2, 0]


# --------------------------------------------------------------------------------------------------
# a page from constructed tables: main (decays 0 and 1, seeds 0 and 1), a regime study (train_docs 1 and 2),
# a one-seed mitigation at decay 1

def _plan(tmp_path):
    return make_cfg(tmp_path / "res", models=["tiny-xs"], weight_decays=[0.0, 1.0], seeds=[0, 1],
                    studies={"regime": {"axes": {"train_docs": [1, 2]}},
                             "smooth": {"weight_decays": [1.0], "seeds": [0], "axes": {"label_smoothing": [0.1]}}},
                    aggregate={"figure_formats": ["png"], "publish_dir": str(tmp_path / "page")})


# per metric: (value at decay 0 and seed 0, its rise with decay at 10 epochs): a run's value is
# c + 0.2 seed + decay x k x (epochs / 10) x (1 + seed), + 0.3 with label smoothing
METRICS = {"train_loss_avg": (0.5, 1.0), "train_loss_balanced": (0.8, 2.0), "train_rare_gap": (0.1, 0.5),
           "train_loss_rare": (1.0, 3.0), "train_loss_frequent": (0.4, 0.5),
           "validation_loss_avg": (6.0, -1.0), "validation_loss_balanced": (7.0, -2.0),
           "validation_rare_gap": (2.0, -0.5), "validation_loss_rare": (8.0, -2.0),
           "validation_loss_frequent": (6.0, -1.5)}


def _epochs(docs):
    return 10.0 if pd.isna(docs) else 10.0 / docs  # the whole split (main): 10 epochs; train_docs 1: 10, 2: 5


def _tables(plan):
    """runs, bins and the membership table of the plan's points. Bins: train [1,3) rises with decay in both
    seeds, [3,9) in seed 0 only, the unseen bin has no train loss; on validation every bin falls."""
    members = A.membership(plan)
    runs, bins = [], []
    for p in members.drop(columns="study").drop_duplicates("run").to_dict("records"):
        wd, seed, docs = p["weight_decay"], p["seed"], p["train_docs"]
        smooth = 0.3 if p["label_smoothing"] > 0 else 0.0  # the base value is 0
        f = wd * _epochs(docs) / 10 * (1 + seed)
        runs.append({**p, "epochs": _epochs(docs), "tokens_per_id": 20.0 if pd.isna(docs) else 2.0 * docs,
                     **{m: c + 0.2 * seed + k * f + smooth for m, (c, k) in METRICS.items()}})
        for split, b, change in (("train", -1, math.nan), ("train", 0, 1.0), ("train", 1, 1.0 - 2 * seed),
                                 ("validation", -1, -1.0), ("validation", 0, -1.0), ("validation", 1, -0.5)):
            bins.append({**{k: v for k, v in p.items() if k != "run"}, "split": split, "bin": b,
                         "bin_lo": 0 if b < 0 else 3 ** b, "bin_hi": 3 ** (b + 1), "n_types": 5,
                         "loss_balanced": 2.0 + wd * change * _epochs(docs) / 10})
    return members, A.numeric_axes(pd.DataFrame(runs), plan.extra_axes), A.numeric_axes(pd.DataFrame(bins),
                                                                                         plan.extra_axes)


def _page(tmp_path):
    plan = _plan(tmp_path)
    members, runs, bins = _tables(plan)
    out = tmp_path / "summary"
    keys = [*plan.other_axes[:3], "weight_decay", *plan.other_axes[3:]]
    for name, df in (("membership", members), ("runs", runs), ("bins", bins),
                     ("bins_by_seed", seed_stats(bins, [*keys, "split", "bin", "bin_lo", "bin_hi"],
                                                 ["loss_balanced"]))):
        write_table(df, str(out), name)
    written = P.publish(plan, str(out), plan["aggregate"]["publish_dir"], "snakemake publish")
    return plan, written, (tmp_path / "page" / "README.md").read_text()


def test_the_page_gives_changes_held_out_results_and_the_uniform_loss(tmp_path):
    plan, written, page = _page(tmp_path)
    assert sorted(written) == sorted(P.outputs(plan))  # the rule declares what publish writes
    assert {os.path.basename(f) for f in written} == {"README.md", "bin_loss.png", "gap_vs_decay.png",
                                                      "regime_map.png"}
    assert "Seeds per study: main 2; regime 2; smooth 1." in page
    assert f"t1: ln 300 = {math.log(300):.3f} nats" in page  # the uniform loss ln V
    # main, train avg loss: decay 0 seeds 0.5, 0.7 (mean 0.6); decay 1 seeds 0.5 + 1 = 1.5, 0.7 + 2 = 2.7
    # (mean 2.1, std 0.6 sqrt 2): a change of +1.5 nats, +250% of 0.6
    ci = T95_1 * 0.6 * math.sqrt(2) / math.sqrt(2)
    # balanced 0.9 -> 0.9 + 3 = 3.9 (+333%); gap 0.2 -> 0.95 (+375%); balanced / avg per seed (0.8/0.5, 1.0/0.7)
    # at decay 0; train avg 0.6 is 0.6 / ln 300 = 10.5% of the uniform loss
    ratio = np.array([0.8 / 0.5, 1.0 / 0.7])
    ratio_ci = T95_1 * ratio.std(ddof=1) / math.sqrt(2)
    seed_ci = T95_1 * 0.1  # of two seeds 0.2 apart: std 0.2 / sqrt 2
    assert (f"| tiny-xs | train | 0 | 2 | 0.600 ± {seed_ci:.3f} | 0.900 ± {seed_ci:.3f} | 0.200 ± {seed_ci:.3f} "
            f"| {ratio.mean():.3f} ± {ratio_ci:.3f} | 11% |") in page
    assert f"| tiny-xs | train | 1 | 2 | 2.100 ± {ci:.3f} (+1.500, +250%) |" in page
    assert "(+3.000, +333%)" in page and "(+0.750, +375%)" in page
    # held out beside train: validation avg 6.1 -> 4.6 (-1.5, -25%), 6.1 / ln 300 = 107% of the uniform loss
    assert "| tiny-xs | validation | 0 | 2 | 6.100 ± " in page and "(-1.500, -25%)" in page
    assert f"| {100 * 6.1 / math.log(300):.0f}% |" in page


def test_the_regime_section_pairs_the_seeds_per_data_size(tmp_path):
    _, _, page = _page(tmp_path)
    section = page[page.index("## regime"):page.index("## smooth")]
    # train_docs 1 (10 epochs, 2 tokens per id: 600 train tokens of 300 ids): train avg rises by 1 (seed 0)
    # and 2 (seed 1): 1.5 ± T95_1 x 0.5, +250% of the decay-0 mean 0.6; validation avg falls by 1 and 2
    # (-1.5, -25% of 6.1). train_docs 2 (5 epochs): half the changes.
    one = f"| 1 | 2 | 600 | 10.0 | 2.0 | 1.500 ± {T95_1 * 0.5:.3f} (+250%) | 3.000 ± {T95_1:.3f} (+333%) |"
    assert one in section
    assert f"| 2 | 2 | 1200 | 5.0 | 4.0 | 0.750 ± {T95_1 * 0.25:.3f} (+125%) |" in section
    assert f"-1.500 ± {T95_1 * 0.5:.3f} (-25%)" in section
    # bins up in every seed: train [1,3) of [1,3), [3,9) (the unseen bin has no train loss); validation none of 3
    row = next(line for line in section.splitlines() if line.startswith("| 1 |"))
    assert row.split(" | ")[8].strip() == "1 / 2" and row.rstrip(" |").endswith("| 0 / 3")
    assert "![regime map](regime_map.png)" in section and "Change from decay 0 to decay 1, paired per seed" in section


def test_a_mitigation_is_compared_with_its_base_at_the_same_decay(tmp_path):
    _, _, page = _page(tmp_path)
    section = page[page.index("## smooth"):]
    assert "**one seed: indicative**" in section
    # seed 0 at decay 1: base train rare 1 + 3 = 4.0, with label smoothing 4.3 (+0.3, +7.5%); frequent 0.9 -> 1.2
    # (+33%); validation avg 5.0 -> 5.3 (+6.0%)
    assert "| label_smoothing=0.1 | 1 | 1 | 4.300 (+0.300, +7.5%) | 1.200 (+0.300, +33%) |" in section
    assert "| base | 1 | 1 | 4.000 | 0.900 |" in section
    assert "| variant | decay | seeds | train rare | train frequent | train gap | validation avg | validation gap |" \
        in section
