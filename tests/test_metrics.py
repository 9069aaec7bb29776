"""Every metric against a hand-computed example.

The vocabulary (6 ids; train counts -> bins of base 3, percentile among the 5 non-special ids):
  id 0  special, train count 50                 -> left out of everything
  id 1  train 20  bin 2 [9, 27)  percentile 100 -> frequent (rare_percentile 70)
  id 2  train 10  bin 2 [9, 27)  percentile  80 -> frequent
  id 3  train  4  bin 1 [3, 9)   percentile  60 -> rare   (not seen in the validation sample)
  id 4  train  1  bin 0 [1, 3)   percentile  40 -> rare   (a bin with one type)
  id 5  train  0  bin -1 unseen  percentile  20 -> rare   (never in train, seen in validation)

Validation sample at the final step (count, loss_sum, correct):
  id 0 (3, 0.3, 3)  id 1 (4, 2.0, 3)  id 2 (2, 2.0, 1)  id 3 (0, 0, 0)  id 4 (1, 3.0, 0)  id 5 (1, 2.0, 0)
Seen non-special ids: 1, 2, 4, 5; per-type losses 0.5, 1.0, 3.0, 2.0; per-type accuracies 0.75, 0.5, 0, 0.
  average loss = (2+2+3+2)/(4+2+1+1) = 9/8 = 1.125          token-balanced = (0.5+1+3+2)/4 = 1.625
  accuracy (occurrences) = (3+1)/8 = 0.5                      token-balanced accuracy = 1.25/4 = 0.3125
  rare (ids 4, 5) = 2.5, frequent (ids 1, 2) = 0.75, gap = 1.75
  Spearman(log train count [20, 10, 1, 0], loss [0.5, 1, 3, 2]): ranks [4,3,2,1] vs [1,2,4,3],
  sum d^2 = 18, rho = 1 - 6*18/(4*15) = -0.8
"""

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tokenfair import metrics as M
from tokenfair.errors import DataError
from tokenfair.aggregate import read_per_token, summarise_norms, summarise_run

FREQ = pd.DataFrame({
    "token_id": np.arange(6, dtype=np.int32),
    "token": ["<|endoftext|>", "a", "b", "c", "d", "e"],
    "count": np.array([50, 20, 10, 4, 1, 0], dtype=np.int64),
    "frequency": np.array([50, 20, 10, 4, 1, 0]) / 85,
    "rank": np.array([1, 2, 3, 4, 5, 6], dtype=np.int32),
    "bin": np.array([3, 2, 2, 1, 0, -1], dtype=np.int16),
    "bin_lo": np.array([27, 9, 9, 3, 1, 0], dtype=np.int64),
    "bin_hi": np.array([81, 27, 27, 9, 3, 1], dtype=np.int64),
    "percentile": [np.nan, 100.0, 80.0, 60.0, 40.0, 20.0],
    "special": [True, False, False, False, False, False],
})
RARE_PCT = 70

VAL_COUNT = np.array([3, 4, 2, 0, 1, 1])
VAL_LOSS = np.array([0.3, 2.0, 2.0, 0.0, 3.0, 2.0])
VAL_CORRECT = np.array([3, 3, 1, 0, 0, 0])


@pytest.fixture(scope="module")
def groups():
    return M.groups_from_frequency(FREQ, RARE_PCT)


def test_groups_from_the_train_table(groups):
    assert groups.vocab_size == 6
    assert groups.bins.tolist() == [-1, 0, 1, 2]  # the special id's bin 3 is not a bin of the study
    assert groups.bin_lo.tolist() == [0, 1, 3, 9] and groups.bin_hi.tolist() == [1, 3, 9, 27]
    assert groups.n_types.tolist() == [1, 1, 1, 2]
    assert groups.rare.tolist() == [False, False, False, True, True, True]
    assert groups.category.tolist() == [-1, 2 * 3, 2 * 3, 2 * 2 + 1, 2 * 1 + 1, 0 + 1]
    # the default 95th percentile makes id 2 (percentile 80) rare too
    assert M.groups_from_frequency(FREQ, 95).rare.tolist() == [False, False, True, True, True, True]


def _val_sums(groups):
    return M.category_sums(VAL_LOSS[None], VAL_COUNT[None], VAL_CORRECT[None], groups.category, groups.n_categories)[0]


def test_whole_vocabulary_metrics(groups):
    m = M.summarise(_val_sums(groups).sum(axis=0))
    assert m["occurrences"] == 8 and m["n_seen"] == 4  # the special id's 3 occurrences are left out
    assert m["loss_avg"] == pytest.approx(9 / 8)
    assert m["loss_balanced"] == pytest.approx(1.625)
    assert m["acc_avg"] == pytest.approx(0.5)
    assert m["acc_balanced"] == pytest.approx(0.3125)
    assert m["ppl"] == pytest.approx(math.exp(9 / 8))


def test_rare_frequent_gap(groups):
    s = _val_sums(groups)
    rare, freq = M.summarise(M.by_rarity(s, True)), M.summarise(M.by_rarity(s, False))
    assert rare["loss_balanced"] == pytest.approx(2.5)
    assert freq["loss_balanced"] == pytest.approx(0.75)
    assert rare["n_seen"] == 2 and freq["n_seen"] == 2  # id 3 (rare) is not seen in this split


def test_bins_including_unseen_and_single_type(groups):
    b = M.summarise(M.by_bin(_val_sums(groups)))  # bins -1, 0, 1, 2
    assert b["n_seen"].tolist() == [1, 1, 0, 2]
    assert b["occurrences"].tolist() == [1, 1, 0, 6]
    np.testing.assert_allclose(b["loss_balanced"], [2.0, 3.0, np.nan, 0.75])
    np.testing.assert_allclose(b["loss_avg"], [2.0, 3.0, np.nan, 4 / 6])
    np.testing.assert_allclose(b["acc_avg"], [0.0, 0.0, np.nan, 4 / 6])
    np.testing.assert_allclose(b["acc_balanced"], [0.0, 0.0, np.nan, 0.625])


def test_spearman_by_hand():
    assert M.frequency_loss_spearman(FREQ["count"], VAL_LOSS, VAL_COUNT, FREQ["special"]) == pytest.approx(-0.8)
    # ties get average ranks: x ranks [1, 2.5, 2.5, 4], y ranks [1, 3, 2, 4] -> 4.5 / sqrt(4.5 * 5)
    assert M.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(3 / math.sqrt(10))
    assert M.rankdata([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]
    assert math.isnan(M.spearman([1], [2])) and math.isnan(M.spearman([1, 1], [2, 3]))


def test_learning_speed_three_points():
    # area (4+2)/2*100 + (2+1)/2*200 = 600; / (300 * 4) = 0.5
    assert M.learning_speed([0, 100, 300], [4.0, 2.0, 1.0]) == pytest.approx(0.5)
    np.testing.assert_allclose(M.learning_speed([0, 100, 300], [[4.0, 2.0, 1.0], [3.0, 3.0, 3.0]]), [0.5, 1.0])
    assert np.isnan(M.learning_speed([0, 100, 300], [np.nan, 2.0, 1.0]))  # an empty bin at some step
    assert np.isnan(M.learning_speed([0, 100, 300], [0.0, 0.0, 0.0]))
    assert np.isnan(M.learning_speed([100], [4.0]))


def test_learning_speed_per_token_differs_from_per_bin(groups):
    """Steps 0, 100, 200; per-type loss curves (count per step):
      id 0 special                          -> left out
      id 1 [4, 2, 2]  (1)  bin 2            -> area 3*100 + 2*100 = 500, / (200 * 4) = 0.625
      id 2 [2, 2, 1]  (2)  bin 2            -> area 2*100 + 1.5*100 = 350, / (200 * 2) = 0.875
      id 3 never seen      bin 1            -> NaN
      id 4 [6, 3, 3]  (1)  bin 0, one id    -> area 4.5*100 + 3*100 = 750, / (200 * 6) = 0.625
      id 5 [2, 1, 1]  (1)  bin -1 (train 0) -> area 1.5*100 + 1*100 = 250, / (200 * 2) = 0.625
    Bin 2 per token: (0.625 + 0.875) / 2 = 0.75; per bin, of its balanced curve [3, 2, 1.5]:
    (2.5*100 + 1.75*100) / (200 * 3) = 425 / 600 = 0.7083."""
    steps = [0, 100, 200]
    count = np.array([[2, 1, 2, 0, 1, 1]] * 3)
    per = np.array([[9.0, 4, 2, 0, 6, 2], [9.0, 2, 2, 0, 3, 1], [9.0, 2, 1, 0, 3, 1]])
    speed = M.learning_speed_token(steps, per * count, count, groups)
    np.testing.assert_allclose(speed, [0.625, 0.625, np.nan, 0.75])
    assert M.learning_speed(steps, [3.0, 2.0, 1.5]) == pytest.approx(425 / 600)
    count[2, 5] = 0  # id 5 not seen at the last step: bin -1 has no id seen at every step
    assert np.isnan(M.learning_speed_token(steps, per * count, count, groups)[0])


def test_steps_to_80pct_of_the_improvement():
    # [4, 2, 1]: improvement 3, level 4 - 2.4 = 1.6, between (100, 2) and (300, 1): 100 + 0.4 / 1 * 200 = 180
    assert M.steps_to_fraction([0, 100, 300], [4.0, 2.0, 1.0]) == pytest.approx(180)
    # [4, 1, 1.5] ends 2.5 lower: level 2, between (0, 4) and (100, 1): 2 / 3 * 100 (the overshoot is ignored)
    # [6, 3, 2]: a curve that ends higher than [4, 2, 1] but reaches its level 6 - 3.2 = 2.8 sooner:
    # between (100, 3) and (300, 2): 100 + 0.2 * 200 = 140
    np.testing.assert_allclose(M.steps_to_fraction([0, 100, 300], [[4.0, 1.0, 1.5], [6.0, 3.0, 2.0]]),
                               [200 / 3, 140])
    for flat_or_rising in ([4.0, 4.0, 4.0], [1.0, 2.0, 3.0], [4.0, np.nan, 1.0]):
        assert np.isnan(M.steps_to_fraction([0, 100, 300], flat_or_rising))
    assert np.isnan(M.steps_to_fraction([100], [4.0]))
    assert M.steps_to_fraction([0, 10], [2.0, 1.0], fraction=0.5) == pytest.approx(5)


def test_spearman_of_the_loss_change_by_hand(groups):
    """Per-type losses at the reference decay and at a larger one (NaN: not seen):
      id 0 special; id 3 not seen at the reference -> out. Ids 1, 2, 4, 5 (train 20, 10, 1, 0; ranks 4 3 2 1)
      change 0.1, 0.3, 0.5, 0.2 (ranks 1 3 4 2): sum d^2 = 9 + 0 + 4 + 1 = 14, rho = 1 - 6*14/(4*15) = -0.4."""
    ref = np.array([0.1, 1.0, 1.0, np.nan, 2.0, 3.0])
    at = np.array([9.0, 1.1, 1.3, 5.0, 2.5, 3.2])
    assert M.loss_change_spearman(groups.train_count, at, ref, groups.special) == pytest.approx(-0.4)
    cache = {}
    assert M.loss_change_spearman(groups.train_count, at, ref, groups.special, cache) == pytest.approx(-0.4)
    assert len(cache) == 1
    assert np.isnan(M.loss_change_spearman(groups.train_count, ref, ref, groups.special))  # no change: constant


def test_slope_least_squares():
    # Sxx = 1.01 - 1.21/3, Sxy = 2.63 - 1.1*4.8/3
    assert M.slope([0.0, 0.1, 1.0], [1.0, 1.3, 2.5]) == pytest.approx(0.87 / (1.01 - 1.21 / 3))
    assert M.slope([0.0, 0.1, 1.0], [1.0, np.nan, 2.0]) == pytest.approx(1.0)
    assert math.isnan(M.slope([0.1, 0.1], [1.0, 2.0]))


def test_t_quantiles_and_seed_stats():
    for df, t in ((1, 12.706204736), (2, 4.302652730), (4, 2.776445105), (9, 2.262157163), (30, 2.042272456)):
        assert M.t_quantile(0.975, df) == pytest.approx(t, rel=1e-8)
    df = pd.DataFrame({"k": ["one", "two", "two", "four", "four", "four", "four"], "seed": [0, 0, 1, 0, 1, 2, 3],
                       "x": [1.0, 1.0, 2.0, 1.0, np.nan, 2.0, 3.0]})
    st = M.seed_stats(df, ["k"], ["x"], list_seeds=True).set_index("k")
    one, two, four = st.loc["one"], st.loc["two"], st.loc["four"]
    assert (one["x_mean"], one["n_seeds"]) == (1.0, 1) and math.isnan(one["x_std"]) and math.isnan(one["x_ci95"])
    assert two["x_mean"] == 1.5 and two["x_std"] == pytest.approx(math.sqrt(0.5)) and two["seeds"] == "0;1"
    assert two["x_ci95"] == pytest.approx(12.706204736 * math.sqrt(0.5) / math.sqrt(2))  # = 6.3531
    # a NaN is skipped: mean, std and interval over the 3 others (the group still has 4 rows)
    assert (four["x_mean"], four["x_std"], four["n_seeds"]) == (2.0, 1.0, 4)
    assert four["x_ci95"] == pytest.approx(4.302652730 / math.sqrt(3))


def _write_per_token(path, rows, row_group_size=None):
    pq.write_table(pa.table({
        "step": pa.array([r[0] for r in rows], pa.int32()),
        "split": pa.array([r[1] for r in rows], pa.string()),
        "token_id": pa.array([r[2] for r in rows], pa.int32()),
        "loss_sum": pa.array([r[3] for r in rows], pa.float64()),
        "count": pa.array([r[4] for r in rows], pa.int64()),
        "correct": pa.array([r[5] for r in rows], pa.int64()),
    }), path, row_group_size=row_group_size)


def test_one_run_from_its_file(tmp_path, groups):
    """The hand example through the file reader: rows shuffled, in several row groups, a train split too.

    Train: ids 1, 2, 3, 4 seen (id 5 never in train, so bin -1 is empty on train). Per-type train losses
    over steps 0, 100, 300: bin 2 (ids 1, 2) balanced [4, 2, 1] -> learning speed 0.5 (see above)."""
    rows = []
    train_curve = {1: [4.0, 2.0, 1.0], 2: [4.0, 2.0, 1.0], 3: [5.0, 5.0, 5.0], 4: [6.0, 3.0, 3.0]}
    for t, step in enumerate((0, 100, 300)):
        for v in range(6):
            c = {0: 5, 1: 2, 2: 1, 3: 1, 4: 1, 5: 0}[v]
            per = train_curve.get(v, [0.1] * 3)[t] if c else 0.0
            rows.append((step, "train", v, per * c, c, c // 2))
            rows.append((step, "validation", v, VAL_LOSS[v] * (t + 1) if t < 2 else VAL_LOSS[v], VAL_COUNT[v],
                         VAL_CORRECT[v]))
    order = np.random.default_rng(0).permutation(len(rows))
    _write_per_token(tmp_path / "pt.parquet", [rows[i] for i in order], row_group_size=7)
    keys, loss, count, correct = read_per_token(str(tmp_path / "pt.parquet"), 6)
    assert keys == [("train", 0), ("train", 100), ("train", 300), ("validation", 0), ("validation", 100),
                    ("validation", 300)]
    np.testing.assert_allclose(loss[5], VAL_LOSS)
    res = summarise_run(str(tmp_path / "pt.parquet"), groups)
    r = res["run"]
    assert res["final_step"] == 300
    assert r["validation_loss_avg"] == pytest.approx(1.125) and r["validation_loss_balanced"] == pytest.approx(1.625)
    assert r["validation_acc_avg"] == pytest.approx(0.5) and r["validation_acc_balanced"] == pytest.approx(0.3125)
    assert r["validation_rare_gap"] == pytest.approx(1.75) and r["validation_spearman"] == pytest.approx(-0.8)
    assert r["validation_tokens"] == 8 and r["validation_types_seen"] == 4
    assert r["train_loss_balanced"] == pytest.approx((1 + 1 + 5 + 3) / 4)
    b = pd.DataFrame(res["bins"])
    tb = b[b["split"] == "train"].set_index("bin")
    assert tb.loc[-1, "n_seen"] == 0 and np.isnan(tb.loc[-1, "loss_balanced"])  # the unseen bin on train
    assert tb.loc[2, "learning_speed"] == pytest.approx(0.5)
    assert tb.loc[1, "learning_speed"] == pytest.approx(1.0)  # id 3 never improved
    assert tb.loc[0, "learning_speed"] == pytest.approx((4.5 * 100 + 3 * 200) / (300 * 6))
    # ids 1 and 2 have the bin's curve [4, 2, 1]: per token as per bin; bin 0 holds id 4 alone
    assert tb.loc[2, "learning_speed_token"] == pytest.approx(0.5)
    assert tb.loc[0, "learning_speed_token"] == pytest.approx(tb.loc[0, "learning_speed"])
    assert np.isnan(tb.loc[-1, "learning_speed_token"]) and np.isnan(tb.loc[-1, "steps_to_80pct"])  # never seen
    # [4, 2, 1] over 0, 100, 300: level 1.6 at 100 + 0.4 * 200 = 180; [6, 3, 3]: level 3.6 at 0.8 * 100 = 80
    assert tb.loc[2, "steps_to_80pct"] == pytest.approx(180) and tb.loc[0, "steps_to_80pct"] == pytest.approx(80)
    assert np.isnan(tb.loc[1, "steps_to_80pct"])  # id 3 never improved
    vb = b[b["split"] == "validation"].set_index("bin")
    assert vb.loc[-1, "loss_balanced"] == pytest.approx(2.0) and vb.loc[2, "loss_avg"] == pytest.approx(4 / 6)
    assert vb.loc[2, "n_types"] == 2 and vb.loc[0, "n_types"] == 1
    c = pd.DataFrame(res["curves"])
    assert len(c) == 2 * 3 * 4
    assert c[(c["split"] == "train") & (c["bin"] == 2)]["loss_balanced"].tolist() == pytest.approx([4.0, 2.0, 1.0])


def test_bad_token_id_names_the_file(tmp_path):
    from tokenfair.errors import DataError

    _write_per_token(tmp_path / "pt.parquet", [(0, "train", 9, 1.0, 1, 0)])
    with pytest.raises(DataError, match="pt.parquet.*token_id 9"):
        read_per_token(str(tmp_path / "pt.parquet"), 6)


def test_unigram_entropy_by_hand():
    from tokenfair.metrics import unigram_entropy

    # ids: special (left out), counts 2, 2, 0 -> two equally likely types: ln 2
    assert unigram_entropy([5, 2, 2, 0], [True, False, False, False]) == pytest.approx(np.log(2))
    # 3:1 -> -(0.75 ln 0.75 + 0.25 ln 0.25)
    assert unigram_entropy([3, 1], [False, False]) == pytest.approx(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25)))
    assert np.isnan(unigram_entropy([0, 0], [False, False]))


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> step-down max 0.02, 0.03, 0.06, 0.06
    np.testing.assert_allclose(M.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    # NaN is not a test: m = 2
    np.testing.assert_allclose(M.holm([0.01, np.nan, 0.04]), [0.02, np.nan, 0.04])
    np.testing.assert_allclose(M.holm([0.5, 0.6]), [1.0, 1.0])  # capped at 1
    np.testing.assert_allclose(M.holm([0.02, 0.02]), [0.04, 0.04])  # ties
    assert M.holm([]).shape == (0,) and np.isnan(M.holm([np.nan])).all()


def test_sign_flip_p_by_hand():
    # 3 seeds, d = 1, 2, 3: the 8 sums +-1 +-2 +-3 are 6, 4, 2, 0, 0, -2, -4, -6; |sum| >= 6 twice: p = 2/8
    assert M.sign_flip_p([1.0, 2.0, 3.0]) == 0.25  # the smallest p of 3 seeds: never below 0.05
    assert M.sign_flip_p([-0.3, -0.1, -0.2]) == 0.25  # two-sided
    # d = 1, -2, 4: sum 3; the sums are 7, -1, 3, -5, 5, -3, 1, -7: |sum| >= 3 six times
    assert M.sign_flip_p([1.0, -2.0, 4.0]) == 0.75
    # 6 seeds, d = 1..6: only the two all-equal-sign assignments reach |sum| 21: p = 2/64 < 0.05
    assert M.sign_flip_p([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]) == 2 / 64
    # d = 1..5, -6: sum 9 = 21 - 2 S (S: the sum of the flipped subset); |21 - 2S| >= 9 for S <= 6 (14 subsets
    # of 1..6: {}, 6 singletons, {12 13 14 15 23 24}, {123}) or S >= 15 (their 14 complements): p = 28/64
    assert M.sign_flip_p([1.0, 2.0, 3.0, 4.0, 5.0, -6.0]) == 28 / 64
    # a sum 0 up to rounding reaches every assignment; no difference is no test
    assert M.sign_flip_p([0.1, 0.2, 0.3, -0.6]) == 1.0 and M.sign_flip_p([0.0, 0.0]) == 1.0
    assert np.isnan(M.sign_flip_p([])) and M.sign_flip_p([0.5, np.nan]) == 1.0
    # 2 / 2^n < level from n = 6 at 0.05 (2/32 = 0.0625, 2/64 = 0.03125), n = 8 at 0.01
    assert M.min_seeds(0.05) == 6 and M.min_seeds(0.01) == 8 and M.min_seeds(0.5) == 3
    with pytest.raises(ValueError):
        M.min_seeds(0.0)


def _effects_tables(diffs: dict):
    """Per-seed bins and their seed stats: model m, splits train and validation, bins 0 and 1, decays 0 (loss
    1 for every seed), and each decay of `diffs` ({decay: per-seed differences of every bin and split})."""
    import pandas as pd

    rows = []
    for split in ("train", "validation"):
        for b in (0, 1):
            for wd, d in [(0.0, None), *diffs.items()]:
                for seed, x in enumerate(d if d is not None else next(iter(diffs.values()))):
                    rows.append({"model": "m", "split": split, "bin": b, "bin_lo": 3**b, "bin_hi": 3 ** (b + 1),
                                 "weight_decay": wd, "seed": seed,
                                 "loss_balanced": 1.0 + (0.0 if d is None else x * (b + 1))})
    bins = pd.DataFrame(rows)
    stats = M.seed_stats(bins, ["model", "split", "bin", "bin_lo", "bin_hi", "weight_decay"], ["loss_balanced"])
    return bins, stats


def test_decay_effects_holm_family_is_a_panel():
    # 3 seeds, decays 0.1 and 1: one family per model x split = 2 bins x 2 decays = 4 tests
    bins, stats = _effects_tables({0.1: [0.1, 0.2, 0.4], 1.0: [0.5, -0.1, 0.3]})
    de = M.decay_effects(bins, stats, ["model"])
    tested = de[de["weight_decay"] > 0]
    assert (tested["holm_family_size"] == 4).all() and len(tested) == 8
    for split, fam in tested.groupby("split"):
        np.testing.assert_allclose(fam["p_holm"], M.holm(fam["p_value"].to_numpy()))
        assert not np.allclose(fam["p_holm"], fam.groupby("weight_decay")["p_value"].transform(
            lambda p: M.holm(p.to_numpy())))  # not the per-decay family of before
    # the sign-flip test: 3 agreeing seeds reach only 0.25; disagreeing ones more
    np.testing.assert_allclose(tested.loc[tested["weight_decay"] == 0.1, "p_perm"], 0.25)
    np.testing.assert_allclose(tested.loc[tested["weight_decay"] == 1.0, "p_perm"], M.sign_flip_p([0.5, -0.1, 0.3]))
    assert (tested["verdict"] == "inconclusive").all()  # 3 < 6 seeds
    ref = de[de["weight_decay"] == 0.0]
    assert ref["verdict"].isna().all() and ref["p_perm"].isna().all() and (ref["holm_family_size"] == 4).all()


def test_decay_effects_verdict_with_six_seeds():
    up = [0.30, 0.32, 0.29, 0.31, 0.30, 0.33]  # agreeing and tight: significant after Holm
    mixed = [0.3, -0.2, 0.5, 0.1, 0.4, 0.2]  # one seed the other way: inconclusive whatever the p
    flat = [0.01, -0.01, 0.0, 0.01, -0.01, 0.0]
    bins, stats = _effects_tables({0.1: [-x for x in up], 0.3: mixed, 1.0: up})
    de = M.decay_effects(bins, stats, ["model"]).set_index(["split", "bin", "weight_decay"])
    assert (de.loc[("train", 0, 1.0), "verdict"], de.loc[("train", 0, 0.1), "verdict"]) == ("up", "down")
    assert de.loc[("train", 0, 1.0), "p_perm"] == 2 / 64 and de.loc[("train", 0, 1.0), "holm_family_size"] == 6
    assert (de.xs(0.3, level="weight_decay")["verdict"] == "inconclusive").all()
    bins, stats = _effects_tables({1.0: flat})
    de = M.decay_effects(bins, stats, ["model"])
    # seeds that disagree are inconclusive; none only when they agree yet miss the level
    assert (de.loc[de["weight_decay"] == 1.0, "verdict"] == "inconclusive").all()
    bins, stats = _effects_tables({1.0: [0.1, 0.5, 0.01, 0.9, 0.02, 2.0]})
    de = M.decay_effects(bins, stats, ["model"], level=0.01)  # n_min 8 at 0.01
    assert (de.loc[de["weight_decay"] == 1.0, "verdict"] == "inconclusive").all()
    de = M.decay_effects(bins, stats, ["model"], level=0.05)
    row = de[de["weight_decay"] == 1.0].iloc[0]
    assert row["p_holm"] >= 0.05 and row["verdict"] == "none"  # agreeing, but a wide spread: not significant


def _t_from(d):
    d = np.asarray(d, dtype=np.float64)
    return M.paired_t(d.mean(), d.std(ddof=1) if len(d) > 1 else np.nan, len(d))


def test_paired_t_test_by_hand():
    # d = 0.1, 0.3, 0.2, 0.4: mean 0.25, std sqrt(0.05/3), t = 0.25 / (std / 2) = sqrt(15), df 3;
    # two-sided p for df 3 = 1 - (2/pi)(theta + sin theta cos theta), tan theta = t / sqrt(3) = sqrt(5)
    t, p = _t_from([0.1, 0.3, 0.2, 0.4])
    assert t == pytest.approx(math.sqrt(15))
    assert p == pytest.approx(1 - 2 / math.pi * (math.atan(math.sqrt(5)) + math.sqrt(5) / 6))  # 0.0304663
    t, p = _t_from([-0.1, -0.3, -0.2, -0.4])  # the sign goes to t, not to p
    assert t == pytest.approx(-math.sqrt(15)) and p == pytest.approx(0.0304663, abs=1e-7)
    # d = 1, 3: mean 2, std sqrt 2, t = 2 / (sqrt 2 / sqrt 2) = 2, df 1 (Cauchy): p = 1 - (2/pi) atan 2
    t, p = _t_from([1.0, 3.0])
    assert t == pytest.approx(2.0) and p == pytest.approx(1 - 2 / math.pi * math.atan(2.0))
    # degenerate: one pair, all equal and nonzero, all zero
    assert all(np.isnan(v) for v in _t_from([0.5]))
    assert _t_from([0.2, 0.2, 0.2]) == (np.inf, 0.0)
    assert _t_from([-0.2, -0.2]) == (-np.inf, 0.0)
    assert _t_from([0.0, 0.0]) == (0.0, 1.0)
    # elementwise
    t, p = M.paired_t([2.0, 0.0, 1.0], [math.sqrt(2), 0.0, 1.0], [2, 3, 1])
    np.testing.assert_allclose(t, [2.0, 0.0, np.nan])
    np.testing.assert_allclose(p, [1 - 2 / math.pi * math.atan(2.0), 1.0, np.nan])
    np.testing.assert_allclose(M.t_two_sided_p([0.0, np.inf, 1.0], [3, 3, 0]), [1.0, 0.0, np.nan])


def test_norms_by_bin(groups):
    # bins -1 (id 5), 0 (id 4), 1 (id 3), 2 (ids 1, 2); id 0 is special
    n, mean = M.norms_by_bin(np.arange(6), [10.0, 1.0, 3.0, 5.0, 7.0, 9.0], groups)
    assert n.tolist() == [1, 1, 1, 2]
    np.testing.assert_allclose(mean, [9.0, 7.0, 5.0, 2.0])
    n, mean = M.norms_by_bin([5, 1, 0], [9.0, 1.0, 10.0], groups)  # some ids only
    assert n.tolist() == [1, 0, 0, 1]
    np.testing.assert_allclose(mean, [9.0, np.nan, np.nan, 1.0])


def test_norm_curves_per_bin_and_step(groups, tmp_path):
    # norms.parquet with a block per evaluation step; bins -1 (id 5, unseen), 0 (id 4: one id), 1 (id 3),
    # 2 (ids 1, 2); id 0 is special. Output head = 2 x embedding (untied).
    emb = {0: [10.0, 1.0, 3.0, 5.0, 7.0, 9.0], 40: [20.0, 2.0, 4.0, 6.0, 8.0, 4.0]}
    path = tmp_path / "norms.parquet"
    pq.write_table(pa.table({"step": pa.array(np.repeat([0, 40], 6), pa.int32()),
                             "token_id": np.tile(np.arange(6, dtype=np.int64), 2),
                             "embedding_norm": pa.array(np.r_[emb[0], emb[40]], pa.float32()),
                             "unembedding_norm": pa.array(2 * np.r_[emb[0], emb[40]], pa.float32())}), path)
    out = summarise_norms(str(path), groups)
    curves = pd.DataFrame(out["curves"])
    assert not curves["tied_embeddings"].any()
    got = curves.set_index(["step", "matrix", "bin"])["mean_norm"]
    # step 0: unseen 9, [1,3) 7, [3,9) 5, [9,27) (1 + 3) / 2 = 2; step 40: 4, 8, 6, (2 + 4) / 2 = 3
    assert [got[0, "embedding", b] for b in (-1, 0, 1, 2)] == [9.0, 7.0, 5.0, 2.0]
    assert [got[40, "embedding", b] for b in (-1, 0, 1, 2)] == [4.0, 8.0, 6.0, 3.0]
    assert [got[40, "unembedding", b] for b in (-1, 0, 1, 2)] == [8.0, 16.0, 12.0, 6.0]
    assert curves.loc[curves["step"] == 40, "n_ids"].tolist() == [1, 1, 1, 2] * 2
    final = pd.DataFrame(out["final"])  # the last step's block is the final model's
    assert final["mean_norm"].tolist() == [4.0, 8.0, 6.0, 3.0, 8.0, 16.0, 12.0, 6.0]
    # a file of the final model only (no step column) is one block at the given final step
    pq.write_table(pa.table({"token_id": np.arange(6, dtype=np.int64), "embedding_norm": emb[0],
                             "unembedding_norm": emb[0]}), path)
    out = summarise_norms(str(path), groups, final_step=40)
    assert set(out["curves"]["step"]) == {40} and out["final"]["tied_embeddings"].all()
    pq.write_table(pa.table({"step": pa.array([0, 0], pa.int32()), "token_id": np.array([1, 1], dtype=np.int64),
                             "embedding_norm": [1.0, 1.0], "unembedding_norm": [1.0, 1.0]}), path)
    with pytest.raises(DataError, match="more than once at step 0"):
        summarise_norms(str(path), groups)


def test_regime_map_pairs_each_seed_with_its_own_reference():
    # two data sizes (train_docs 10, 40), decays 0, 0.1, 1 (the largest, 1, against 0), seeds 0 and 1; bins
    # -1 (unseen) and 0 (one id); the middle decay is not in the map.
    rows = []
    loss = {(10, 0.0, 0): 2.0, (10, 0.1, 0): 9.0, (10, 1.0, 0): 2.5, (10, 0.0, 1): 3.0, (10, 1.0, 1): 3.1,
            (40, 0.0, 0): 1.0, (40, 1.0, 0): 1.75, (40, 0.0, 1): 0.5, (40, 1.0, 1): 1.5, (40, 0.1, 1): 7.0}
    for (docs, wd, seed), v in loss.items():
        for b, extra in ((-1, 1.0), (0, 0.0)):
            rows.append({"model": "m", "train_docs": docs, "weight_decay": wd, "seed": seed, "split": "train",
                         "bin": b, "bin_lo": 0 if b < 0 else 1, "bin_hi": 1 if b < 0 else 3, "n_types": 1,
                         "loss_balanced": v + extra * wd})
    bins = pd.DataFrame(rows)
    runs = bins.drop_duplicates(["train_docs", "weight_decay", "seed"])[["model", "train_docs", "weight_decay",
                                                                        "seed"]].copy()
    runs["epochs"] = 200.0 / runs["train_docs"]  # 20 and 5
    out = M.regime_map(bins, runs, ["model", "train_docs"])
    assert len(out) == 2 * 2 * 2  # data sizes x seeds x bins
    assert (out["weight_decay"] == 1.0).all() and (out["weight_decay_ref"] == 0.0).all()
    got = out.set_index(["train_docs", "seed", "bin"])
    # bin 0: the seed's own change; unseen: + 1 x decay
    assert got.loc[(10, 0, 0), "delta"] == pytest.approx(0.5) and got.loc[(10, 1, 0), "delta"] == pytest.approx(0.1)
    assert got.loc[(40, 0, 0), "delta"] == pytest.approx(0.75) and got.loc[(40, 1, 0), "delta"] == pytest.approx(1.0)
    assert got.loc[(40, 1, -1), "delta"] == pytest.approx(2.0) and got.loc[(40, 1, -1), "loss_ref"] == 0.5
    assert got.loc[(10, 0, 0), "epochs"] == 20.0 and got.loc[(40, 1, -1), "epochs"] == 5.0
    # a seed without its reference run has no row; a group with one decay neither; no epochs column: NaN
    part = M.regime_map(bins[~((bins["seed"] == 1) & (bins["weight_decay"] == 0.0))], runs[["model", "train_docs",
                        "weight_decay", "seed"]], ["model", "train_docs"])
    assert sorted(set(part["seed"])) == [0] and part["epochs"].isna().all()
    assert not len(M.regime_map(bins[bins["weight_decay"] == 0.0], runs, ["model", "train_docs"]))
    # every decay's paired changes: the middle decay 0.1 has seed 0 at 10 docs and seed 1 at 40 docs
    every = M.paired_changes(bins, ["model", "train_docs"]).set_index(["train_docs", "weight_decay", "seed", "bin"])
    assert len(every) == len(out) + 2 * 2
    assert every.loc[(10, 0.1, 0, 0), "delta"] == pytest.approx(7.0)
    assert every.loc[(40, 0.1, 1, -1), "delta"] == pytest.approx(6.6)  # 7 + 0.1 - 0.5
