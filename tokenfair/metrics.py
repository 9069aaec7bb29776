"""Per-token metrics: from per-id sums to losses, frequency bins, fairness, learning speed, seed statistics.

Definitions (every metric leaves the special tokens out; "seen" means count > 0 in the split evaluated):

- average loss `loss_avg` = sum of loss_sum / sum of count over the ids of a group: the loss per occurrence,
  each occurrence weighted equally (the usual language-model loss). Perplexity `ppl` = exp(loss_avg).
- per-type loss of an id = its loss_sum / its count (defined for seen ids only).
- token-balanced loss `loss_balanced` = mean of the per-type loss over the seen ids of a group, each id
  weighted equally whatever its count.
- accuracy `acc_avg` (occurrence-weighted) = sum of correct / sum of count: the share of occurrences whose
  argmax prediction is right. Token-balanced accuracy `acc_balanced` = mean over the seen ids of the id's own
  accuracy correct / count.
- frequency bins and "rare" come from the TRAIN frequency table of the run's corpus x tokenizer: an id's bin
  is its `bin` column (k for train counts in [base^k, base^(k+1)), -1 "unseen" for train count 0); it is rare
  when its `percentile` is below `frequency.rare_percentile`, frequent otherwise.
- rare-frequent gap = loss_balanced of the rare ids - loss_balanced of the frequent ids (seen in the split).
- Spearman = rank correlation (average ranks for ties) between the log train frequency of the seen ids and
  their per-type loss; an id with train count 0 ranks lowest (log 0 = -inf).
- learning speed of a curve y over eval steps s_0 < ... < s_T = trapezoid area under y divided by
  (s_T - s_0) * y(s_0): 1 = never improved (flat), 0 = learned instantly; below 0 or above 1 when the loss
  goes negative or rises. NaN with fewer than two steps, a non-positive or missing initial value, or a NaN
  anywhere on the curve.
  This is `learning_speed`, of a bin's token-balanced loss curve (one area per bin).
- per-token learning speed `learning_speed_token` (the paper's definition) = the mean, over the non-special
  ids of a bin seen at EVERY eval step, of each id's own learning speed (the above, of its per-type loss
  curve). It differs from `learning_speed` (the area of the mean curve normalised by the mean initial
  loss): an id that starts high and falls far weighs as much as one that starts low.
- `steps_to_80pct` of a curve = the step at which it first made 80% of its total improvement y(s_0) - y(s_T)
  (first reaches y(s_0) - 0.8 (y(s_0) - y(s_T))), interpolated linearly between the two eval steps around that
  level; NaN without an improvement (y(s_T) >= y(s_0)), with fewer than two steps or a NaN on the curve. It
  tells "learns slowly" (late) from "ends higher" (a level, not a time), which one area mixes.
- `spearman_change` = Spearman between the log train frequency and the CHANGE of the per-type loss from the
  reference (smallest) decay, per seed: over the non-special ids seen in both runs (the same seed and other
  axes), y = per-type loss at the decay - per-type loss at the reference decay. Negative: the decay hurts
  rare ids more. NaN at the reference decay itself and without a reference run of the seed.
- over seeds (`seed_stats`, the summary's *_by_seed tables and publish): mean, sample std (ddof 1), and the
  half-width of the 95% Student-t interval t(0.975, n-1) * std / sqrt(n); with a single seed std and the
  interval are NaN.
- slope = ordinary least squares slope of y on x (NaN with fewer than two distinct x).
- paired t-test of the per-seed differences d_1..d_n (the same seed at two decays): t = mean(d) /
  (std(d) / sqrt(n)) with n - 1 degrees of freedom, two-sided p = P(|T| >= |t|). NaN below two pairs; when
  every difference is the same nonzero value (std below 1e-12 |mean|: rounding) t = +-inf and p = 0, when
  every difference is 0, t = 0 and p = 1.
- Holm-Bonferroni: the k-th smallest of m p-values (k = 1..m) becomes min(1, max over j <= k of
  (m - j + 1) p_(j)); NaN p-values are not tests (they stay NaN and do not count in m).
- exact paired sign-flip permutation test (`sign_flip_p`) of the per-seed differences d_1..d_n: under "no
  effect" each d_i is as likely +|d_i| as -|d_i|; p = the share of the 2^n sign assignments s whose
  |mean(s d)| >= |mean(d)| (two-sided, exact, rounding-tolerant). Its smallest p is 2 / 2^n (every sign
  agreeing), so below `min_seeds(level)` paired seeds (the least n with 2 / 2^n < level: 6 at 0.05) no
  result can reach the level: with 3 seeds p >= 0.25. It rests on no normality, unlike the t-test.
- decay effects (`decay_effects`, summary/decay_effects.csv): per bin, delta = seed-mean loss at a decay minus
  at the smallest decay, the paired t-test (p_value) and sign-flip test (p_perm) of the per-seed differences.
  One Holm family per published panel: every bin x decay tested within one other axes x split (one panel of
  the decay_heatmap figure, one block of the README's significance table), holm_family_size tests; a bin
  changed significantly when p_holm < aggregate.significance_level, up or down by the sign of delta
  (tokenfair.report.significance_flags). verdict: "inconclusive" below min_seeds(level) paired seeds or when
  the seeds' differences disagree in sign, else "up" / "down" when significant (by the sign of delta), else
  "none"; empty at the reference decay.
- embedding norms per bin: the mean L2 norm of the rows of the non-special ids of each train-frequency bin.
- paired changes (`paired_changes`): per seed, a bin's loss at a decay minus the same seed's at the smallest
  decay (never a difference of seed means); the regime map (`regime_map`, summary/regime_map.csv) is the
  largest decay's, per other axes (a data size among them) x seed x split x bin, beside the run's epochs.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from dataclasses import dataclass, field

import numba
import numpy as np

from .errors import DataError

# Per (eval point, category) sums accumulated by `category_sums`, in this order on the last axis.
FIELDS = ("n_seen", "occurrences", "loss_sum", "correct_sum", "type_loss_sum", "type_acc_sum")
N_SEEN, OCC, LOSS, CORRECT, TYPE_LOSS, TYPE_ACC = range(len(FIELDS))

FREQUENCY_COLUMNS = ("token_id", "count", "bin", "bin_lo", "bin_hi", "percentile", "special")


# --------------------------------------------------------------------------------------------------
# vocabulary groups from the train frequency table


@dataclass(frozen=True)
class Groups:
    """How the ids of a vocabulary are grouped, from the train frequency table of one corpus x tokenizer.

    `category[v]` = 2 * (index of v's bin in `bins`) + (1 if v is rare), or -1 for a special id.
    """

    special: np.ndarray  # bool[V]
    train_count: np.ndarray  # int64[V]
    rare: np.ndarray  # bool[V]
    bins: np.ndarray  # int64[B], the bin numbers of the non-special ids, ascending (-1 = unseen first)
    bin_lo: np.ndarray  # int64[B]
    bin_hi: np.ndarray  # int64[B]
    n_types: np.ndarray  # int64[B], non-special ids per bin
    category: np.ndarray  # int32[V]
    rank_cache: dict = field(default_factory=dict, repr=False, compare=False)  # see frequency_loss_spearman

    @property
    def vocab_size(self) -> int:
        return len(self.special)

    @property
    def n_bins(self) -> int:
        return len(self.bins)

    @property
    def n_categories(self) -> int:
        return 2 * len(self.bins)


def groups_from_frequency(table, rare_percentile: float, source: str = "frequency table") -> Groups:
    """Groups from a train frequency table (a DataFrame, pyarrow Table or dict of columns per the contract)."""
    names = list(table.column_names) if hasattr(table, "column_names") else list(table.keys())
    lacking = [c for c in FREQUENCY_COLUMNS if c not in names]
    if lacking:
        raise DataError(f"{source}: missing column(s) {', '.join(lacking)}")
    col = {c: np.asarray(table[c]) for c in FREQUENCY_COLUMNS}
    order = np.argsort(col["token_id"], kind="stable")
    col = {c: v[order] for c, v in col.items()}
    if not np.array_equal(col["token_id"], np.arange(len(order))):
        raise DataError(f"{source}: token_id must be 0 .. vocab size - 1, one row each")
    special = col["special"].astype(bool)
    percentile = col["percentile"].astype(np.float64)
    rare = ~special & (percentile < rare_percentile)
    bins_v = col["bin"].astype(np.int64)
    idx = np.flatnonzero(~special)
    bins, first_pos, slot = np.unique(bins_v[idx], return_index=True, return_inverse=True)
    first = idx[first_pos]  # one id of each bin (the edges are the same for all its ids)
    category = np.full(len(special), -1, dtype=np.int32)
    category[idx] = 2 * slot + rare[idx]
    return Groups(
        special=special,
        train_count=col["count"].astype(np.int64),
        rare=rare,
        bins=bins,
        bin_lo=col["bin_lo"][first].astype(np.int64),
        bin_hi=col["bin_hi"][first].astype(np.int64),
        n_types=np.bincount(slot, minlength=len(bins)).astype(np.int64),
        category=category,
    )


def unigram_entropy(count, special) -> float:
    """Entropy (nats) of the unigram distribution of the non-special ids' counts: the loss per occurrence of
    a model that predicts every token from its frequency alone, the baseline an average loss is read against."""
    c = np.asarray(count, dtype=np.float64)[~np.asarray(special, dtype=bool)]
    c = c[c > 0]
    if not len(c):
        return float("nan")
    p = c / c.sum()
    return float(-(p * np.log(p)).sum())


# --------------------------------------------------------------------------------------------------
# kernels over the id axis


@numba.njit(cache=True, nogil=True)
def scatter_rows(seg_start, seg_group, token_id, loss, count, correct, out_loss, out_count, out_correct):
    """Add each row (token_id, loss, count, correct) into row `group` of the dense [G, V] outputs.

    Rows come in segments: rows seg_start[s] .. seg_start[s+1]-1 belong to group seg_group[s].
    Returns the index of the first row whose token_id is outside [0, V), or -1.
    """
    n_vocab = out_loss.shape[1]
    for s in range(len(seg_group)):
        g = seg_group[s]
        for i in range(seg_start[s], seg_start[s + 1]):
            t = token_id[i]
            if t < 0 or t >= n_vocab:
                return i
            out_loss[g, t] += loss[i]
            out_count[g, t] += count[i]
            out_correct[g, t] += correct[i]
    return -1


@numba.njit(cache=True, nogil=True)
def _category_sums(loss, count, correct, category, n_categories):
    n_groups, n_vocab = loss.shape
    out = np.zeros((n_groups, n_categories, 6))
    for g in range(n_groups):
        for v in range(n_vocab):
            c = category[v]
            n = count[g, v]
            if c < 0 or n <= 0:
                continue
            out[g, c, 0] += 1.0
            out[g, c, 1] += n
            out[g, c, 2] += loss[g, v]
            out[g, c, 3] += correct[g, v]
            out[g, c, 4] += loss[g, v] / n
            out[g, c, 5] += correct[g, v] / n
    return out


def category_sums(loss, count, correct, category, n_categories) -> np.ndarray:
    """[G, C, len(FIELDS)] sums over the seen ids of each category, for dense [G, V] per-id sums."""
    loss = np.ascontiguousarray(np.atleast_2d(loss), dtype=np.float64)
    count = np.ascontiguousarray(np.atleast_2d(count), dtype=np.int64)
    correct = np.ascontiguousarray(np.atleast_2d(correct), dtype=np.int64)
    return _category_sums(loss, count, correct, np.asarray(category, dtype=np.int32), int(n_categories))


def by_bin(sums: np.ndarray) -> np.ndarray:
    """Category sums [..., C, F] -> bin sums [..., B, F] (rare and frequent ids of a bin together)."""
    return sums.reshape(*sums.shape[:-2], sums.shape[-2] // 2, 2, sums.shape[-1]).sum(axis=-2)


def by_rarity(sums: np.ndarray, rare: bool) -> np.ndarray:
    """Category sums [..., C, F] -> sums [..., F] over the rare (or the frequent) ids of every bin."""
    return sums[..., int(rare) :: 2, :].sum(axis=-2)


def _div(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), np.nan)


def summarise(sums: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics from sums [..., F]: n_seen, occurrences, loss_avg, loss_balanced, acc_avg, acc_balanced, ppl.
    An empty group (no seen id) gives NaN."""
    s = np.asarray(sums, dtype=np.float64)
    loss_avg = _div(s[..., LOSS], s[..., OCC])
    return {
        "n_seen": s[..., N_SEEN].astype(np.int64),
        "occurrences": s[..., OCC].astype(np.int64),
        "loss_avg": loss_avg,
        "loss_balanced": _div(s[..., TYPE_LOSS], s[..., N_SEEN]),
        "acc_avg": _div(s[..., CORRECT], s[..., OCC]),
        "acc_balanced": _div(s[..., TYPE_ACC], s[..., N_SEEN]),
        "ppl": np.exp(loss_avg),
    }


# --------------------------------------------------------------------------------------------------
# curves, correlation, slopes


def learning_speed(steps, curve) -> np.ndarray:
    """Normalised area under loss curves: trapezoid(curve, steps) / ((steps[-1]-steps[0]) * curve[..., 0]).

    `curve` is [..., T] over the ascending eval `steps` [T]. See the module docstring for the NaN cases."""
    steps = np.asarray(steps, dtype=np.float64)
    curve = np.asarray(curve, dtype=np.float64)
    if curve.shape[-1] < 2 or steps[-1] <= steps[0]:
        return np.full(curve.shape[:-1], np.nan)
    area = np.trapezoid(curve, steps, axis=-1)
    first = curve[..., 0]
    return _div(area, (steps[-1] - steps[0]) * np.where(first > 0, first, np.nan)) * np.where(
        np.isnan(curve).any(axis=-1), np.nan, 1.0
    )


def per_type_loss(loss_sum, count) -> np.ndarray:
    """loss_sum / count elementwise; NaN where count is 0 (an id not seen)."""
    return _div(loss_sum, count)


def learning_speed_token(steps, loss_sum, count, groups: Groups) -> np.ndarray:
    """[B] per bin of `groups`, the mean of the learning speeds of its non-special ids seen at every step,
    each over its own per-type loss curve; `loss_sum`, `count` are per-id sums [T, V] at the ascending eval
    `steps` [T]. NaN for a bin without such an id."""
    count = np.asarray(count)
    seen = np.flatnonzero((count > 0).all(axis=0) & (groups.category >= 0))
    speed = learning_speed(steps, per_type_loss(np.asarray(loss_sum)[:, seen], count[:, seen]).T)
    slot = groups.category[seen] // 2
    n = np.bincount(slot, minlength=groups.n_bins)
    return _div(np.bincount(slot, weights=speed, minlength=groups.n_bins), n)


def steps_to_fraction(steps, curve, fraction: float = 0.8) -> np.ndarray:
    """The step at which each curve [..., T] over the ascending `steps` [T] first made `fraction` of its
    total improvement, interpolated linearly (see `steps_to_80pct` in the module docstring for NaN)."""
    steps = np.asarray(steps, dtype=np.float64)
    curve = np.asarray(curve, dtype=np.float64)
    out = np.full(curve.shape[:-1], np.nan)
    if curve.shape[-1] < 2:
        return out
    for i in np.ndindex(out.shape):
        y = curve[i]
        if np.isnan(y).any() or not y[-1] < y[0]:
            continue
        level = y[0] - fraction * (y[0] - y[-1])
        k = int(np.argmax(y <= level))  # >= 1: y[0] is above the level
        out[i] = steps[k - 1] + (y[k - 1] - level) / (y[k - 1] - y[k]) * (steps[k] - steps[k - 1])
    return out


def rankdata(a) -> np.ndarray:
    """Ranks 1..n, ties get the average of the ranks they span (scipy.stats.rankdata 'average')."""
    a = np.asarray(a)
    order = np.argsort(a)  # any sort: tied values get the same average rank whatever their order
    sa = a[order]
    new = np.r_[True, sa[1:] != sa[:-1]]
    dense = np.cumsum(new)
    bounds = np.r_[np.flatnonzero(new), len(a)]
    avg = 0.5 * (bounds[dense] + bounds[dense - 1] + 1)
    ranks = np.empty(len(a), dtype=np.float64)
    ranks[order] = avg
    return ranks


def spearman(x, y, x_ranks=None) -> float:
    """Spearman rank correlation; NaN with fewer than 2 points or a constant variable. `x_ranks`, when
    given, is rankdata(x) (computed once for many y)."""
    y = np.asarray(y, dtype=np.float64)
    if len(y) < 2:
        return math.nan
    rx = (rankdata(np.asarray(x, dtype=np.float64)) if x_ranks is None else x_ranks) - (len(y) + 1) / 2
    ry = rankdata(y) - (len(y) + 1) / 2
    # elementwise sums, not `@`: a BLAS dot may wake a thread pool per call (slow on a shared machine)
    den = math.sqrt(float(np.sum(rx * rx)) * float(np.sum(ry * ry)))
    return float(np.sum(rx * ry)) / den if den > 0 else math.nan


def frequency_loss_spearman(train_count, loss_sum, count, special, cache: dict | None = None) -> float:
    """Spearman between log train frequency and per-type loss over the non-special ids seen (count > 0).

    Ranks of log train frequency = ranks of the train count (log is monotone). `cache` (a dict kept by the
    caller for one train table) keeps those ranks per set of seen ids: the eval samples, so the seen ids,
    are the same for every run of a corpus x tokenizer."""
    count = np.asarray(count)
    mask = (count > 0) & ~np.asarray(special, dtype=bool)
    y = np.asarray(loss_sum, dtype=np.float64)[mask] / count[mask]
    return _count_spearman(train_count, mask, y, cache)


def loss_change_spearman(train_count, per_type, per_type_ref, special, cache: dict | None = None) -> float:
    """Spearman between log train frequency and per_type - per_type_ref (per-type losses [V], NaN for an id
    not seen) over the non-special ids seen in both; `cache` as in frequency_loss_spearman."""
    per_type = np.asarray(per_type, dtype=np.float64)
    per_type_ref = np.asarray(per_type_ref, dtype=np.float64)
    mask = np.isfinite(per_type) & np.isfinite(per_type_ref) & ~np.asarray(special, dtype=bool)
    return _count_spearman(train_count, mask, per_type[mask] - per_type_ref[mask], cache)


def _count_spearman(train_count, mask, y, cache: dict | None) -> float:
    """Spearman between the train counts of the ids in `mask` and `y` (one value per such id)."""
    if cache is None:
        return spearman(np.asarray(train_count)[mask], y)
    key = hashlib.blake2b(np.packbits(mask).tobytes(), digest_size=16).digest()
    if key not in cache:
        if len(cache) > 16:
            cache.clear()
        cache[key] = rankdata(np.asarray(train_count)[mask])
    return spearman(None, y, x_ranks=cache[key])


def slope(x, y) -> float:
    """Least-squares slope of y on x over the finite pairs; NaN with fewer than 2 distinct x."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(np.unique(x)) < 2:
        return math.nan
    dx = x - x.mean()
    return float(np.sum(dx * (y - y.mean())) / np.sum(dx * dx))


# --------------------------------------------------------------------------------------------------
# seed statistics


def t_two_sided_cdf(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer df >= 1 (closed forms, Abramowitz & Stegun 26.7.3-4)."""
    if t <= 0:
        return 0.0
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2 == 1:
        if df == 1:
            return 2 * theta / math.pi
        term = total = math.cos(theta)
        for j in range(1, df - 2, 2):  # cos^j -> cos^(j+2), last exponent df-2
            term *= (j + 1) / (j + 2) * c2
            total += term
        return 2 / math.pi * (theta + math.sin(theta) * total)
    term = total = 1.0
    for j in range(0, df - 2, 2):
        term *= (j + 1) / (j + 2) * c2
        total += term
    return math.sin(theta) * total


@functools.lru_cache(maxsize=256)
def t_quantile(p: float, df: int) -> float:
    """The p quantile (p > 0.5) of Student's t with integer df >= 1, by bisection on the exact CDF."""
    if df < 1:
        return math.nan
    target = 2 * p - 1
    lo, hi = 0.0, 1.0
    while t_two_sided_cdf(hi, df) < target:
        hi *= 2
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_two_sided_cdf(mid, df) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def ci95_halfwidth(std, n) -> np.ndarray:
    """t(0.975, n-1) * std / sqrt(n), elementwise; NaN where n < 2."""
    std = np.asarray(std, dtype=np.float64)
    n = np.asarray(n, dtype=np.int64)
    ns, inverse = np.unique(n.ravel(), return_inverse=True)
    tq = np.array([t_quantile(0.975, int(k) - 1) if k >= 2 else math.nan for k in ns])[inverse].reshape(n.shape)
    with np.errstate(invalid="ignore"):
        return tq * std / np.sqrt(np.where(n > 0, n, 1))


def seed_stats(df, keys: list[str], metrics: list[str], list_seeds: bool = False):
    """Statistics over seeds, the one definition: per group of `keys` in a DataFrame of per-seed rows, each
    metric's `<metric>_mean`, `_std` (ddof 1), `_ci95` (Student-t 95% half-width; std and ci95 NaN below two
    seeds), NaN values skipped, and n_seeds (rows in the group); `list_seeds` adds `seeds` ("0;1;2")."""
    import pandas as pd

    if df is None or not len(df):
        return pd.DataFrame(columns=[*keys, "n_seeds", *(["seeds"] if list_seeds else [])])
    g = df.groupby(keys, sort=True, dropna=False)
    out = g.size().rename("n_seeds").to_frame()
    if list_seeds:
        out["seeds"] = g["seed"].agg(lambda s: ";".join(str(v) for v in sorted(s)))
    mean, std, n = g[metrics].mean(), g[metrics].std(ddof=1), g[metrics].count()
    cols = {}
    for m in metrics:
        cols[f"{m}_mean"] = mean[m]
        cols[f"{m}_std"] = std[m]
        cols[f"{m}_ci95"] = pd.Series(ci95_halfwidth(std[m].to_numpy(), n[m].to_numpy()), index=mean.index)
    out = pd.concat([out, pd.DataFrame(cols)], axis=1).reset_index()
    return out.replace([np.inf, -np.inf], np.nan)


def t_two_sided_p(t, df) -> np.ndarray:
    """P(|T| >= |t|) for Student's t with integer df >= 1, elementwise (t may be +-inf: p = 0); NaN where t
    or df is NaN or df < 1."""
    t = np.asarray(t, dtype=np.float64)
    df = np.broadcast_to(np.asarray(df, dtype=np.float64), t.shape)
    out = np.full(t.shape, np.nan)
    for i in np.ndindex(t.shape):
        ti, di = t[i], df[i]
        if np.isnan(ti) or np.isnan(di) or di < 1:
            continue
        out[i] = 0.0 if np.isinf(ti) else max(0.0, 1.0 - t_two_sided_cdf(abs(float(ti)), int(di)))
    return out


EQUAL_RTOL = 1e-12  # a std below this share of |mean| is rounding: the differences are all equal


def paired_t(mean, std, n) -> tuple[np.ndarray, np.ndarray]:
    """(t, two-sided p) of paired Student t-tests from the mean, sample std (ddof 1) and number n of the
    paired differences of each test, elementwise. See the module docstring for the degenerate cases."""
    mean = np.asarray(mean, dtype=np.float64)
    std = np.asarray(std, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    mean, std, n = np.broadcast_arrays(mean, std, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = mean / (std / np.sqrt(n))
    # equal differences: their std is 0 up to the rounding of their mean (0.6 / 3 != 0.2 in floating point)
    equal = std <= EQUAL_RTOL * np.abs(mean)
    t = np.where(equal, np.where(mean == 0, 0.0, np.copysign(np.inf, mean)), t)
    ok = (n >= 2) & np.isfinite(mean) & np.isfinite(std)
    t = np.where(ok, t, np.nan)
    p = t_two_sided_p(t, np.where(ok, n - 1, np.nan))
    return t, p


def holm(p) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1), in the order given; NaN stays NaN
    and is not counted as a test."""
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m = len(idx)
    if not m:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adj, 1.0)
    return out


def norms_by_bin(token_id, norm, groups: Groups) -> tuple[np.ndarray, np.ndarray]:
    """(n_ids[B], mean row norm[B]) over the non-special ids of each bin of `groups` (NaN for a bin none of
    whose ids is given). `token_id` must be unique ids inside the vocabulary of `groups`."""
    token_id = np.asarray(token_id, dtype=np.int64)
    norm = np.asarray(norm, dtype=np.float64)
    slot = groups.category[token_id] // 2  # -1 (special) stays negative
    keep = groups.category[token_id] >= 0
    n = np.bincount(slot[keep], minlength=groups.n_bins).astype(np.int64)
    total = np.bincount(slot[keep], weights=norm[keep], minlength=groups.n_bins)
    return n, _div(total, n)


def min_seeds(level: float) -> int:
    """The least number n of paired seeds with which the sign-flip test can reach `level`: 2 / 2^n < level
    (6 at 0.05, 8 at 0.01)."""
    if not 0 < level < 1:
        raise ValueError(f"a significance level is in (0, 1), not {level}")
    n = 1
    while 2.0 / 2**n >= level:
        n += 1
    return n


MAX_SIGN_FLIP_N = 20  # 2^20 sign assignments: beyond, an exact enumeration is not what seeds call for


def sign_flip_p(d) -> float:
    """Exact two-sided p of the paired sign-flip permutation test of the differences d (module docstring):
    the share of the 2^n sign assignments whose |mean| reaches the observed |mean(d)|. NaN for no difference
    (NaN values are dropped); 1 when every difference is 0."""
    d = np.asarray(d, dtype=np.float64)
    d = d[~np.isnan(d)]
    n = len(d)
    if not n:
        return math.nan
    if n > MAX_SIGN_FLIP_N:
        raise ValueError(f"sign_flip_p enumerates 2^n assignments; n = {n} > {MAX_SIGN_FLIP_N}")
    signs = 1.0 - 2.0 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)
    stat = np.abs(signs @ d)
    obs = abs(d.sum())
    return float(np.mean(stat >= obs - 1e-9 * max(obs, np.abs(d).sum())))


def decay_effects(bins, bins_seed, others: list[str], metric: str = "loss_balanced", level: float = 0.05):
    """Per other axes x split x bin x decay: change of the seed-mean `metric` from the smallest decay
    (delta, delta_rel), its paired-seed 95% half-width (over the seeds both decays have), the paired t-test of
    those per-seed differences (t_stat, p_value; NaN below two paired seeds and at the reference decay
    itself) and their exact sign-flip test (p_perm; NaN at the reference decay), p_holm (Holm-Bonferroni over
    every bin x decay tested within one other axes x split: one published panel, holm_family_size tests),
    `significant` (p_holm < level), `verdict` (module docstring) and the bin's least-squares slope of the
    seed-mean metric against decay."""
    import pandas as pd

    key = [*others, "split", "bin"]
    cols = [*others, "split", "bin", "bin_lo", "bin_hi", "weight_decay_ref", "weight_decay", "loss_ref", "loss",
            "delta", "delta_rel", "delta_ci95", "n_paired_seeds", "t_stat", "p_value", "p_holm", "significant",
            "slope", "p_perm", "holm_family_size", "verdict"]
    if bins_seed is None or not len(bins_seed):
        return pd.DataFrame(columns=cols)
    m = f"{metric}_mean"
    b = bins_seed[[*key, "bin_lo", "bin_hi", "weight_decay", m]].rename(columns={m: "loss"})
    ref = b.loc[b.groupby(key, dropna=False)["weight_decay"].idxmin(), [*key, "weight_decay", "loss"]]
    ref = ref.rename(columns={"weight_decay": "weight_decay_ref", "loss": "loss_ref"})
    out = b.merge(ref, on=key, how="left")
    out["delta"] = out["loss"] - out["loss_ref"]
    with np.errstate(divide="ignore", invalid="ignore"):
        out["delta_rel"] = out["delta"] / out["loss_ref"]
    # paired over seeds
    runs = bins[[*key, "weight_decay", "seed", metric]]
    r0 = runs.merge(ref[[*key, "weight_decay_ref"]], on=key)
    r0 = r0[r0["weight_decay"] == r0["weight_decay_ref"]][[*key, "seed", metric]].rename(columns={metric: "ref"})
    pair = runs.merge(r0, on=[*key, "seed"])
    pair["d"] = pair[metric] - pair["ref"]
    g = pair.groupby([*key, "weight_decay"], dropna=False)["d"]
    ps = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n": g.count(), "p_perm": g.agg(sign_flip_p),
                       "disagree": (g.min() < 0) & (g.max() > 0)}).reset_index()
    ps["delta_ci95"] = ci95_halfwidth(ps["std"].to_numpy(), ps["n"].to_numpy())
    ps["t_stat"], ps["p_value"] = paired_t(ps["mean"].to_numpy(), ps["std"].to_numpy(), ps["n"].to_numpy())
    out = out.merge(ps[[*key, "weight_decay", "delta_ci95", "n", "t_stat", "p_value", "p_perm", "disagree"]].rename(
        columns={"n": "n_paired_seeds"}), on=[*key, "weight_decay"], how="left")
    out["n_paired_seeds"] = out["n_paired_seeds"].fillna(0).astype(np.int64)
    at_ref = (out["weight_decay"] == out["weight_decay_ref"]).to_numpy()
    for c in ("t_stat", "p_value", "p_perm"):
        out[c] = np.where(at_ref, np.nan, out[c].to_numpy(dtype=np.float64))
    # one Holm family per other axes x split: every bin x decay of one published panel
    family = out.groupby([*others, "split"], dropna=False, sort=False).ngroup().to_numpy()
    p = out["p_value"].to_numpy(dtype=np.float64)
    p_holm = np.full(len(out), np.nan)
    size = np.zeros(len(out), dtype=np.int64)
    order = np.argsort(family, kind="stable")
    bounds = np.flatnonzero(np.r_[True, np.diff(family[order]) != 0, True])
    for a, z in zip(bounds[:-1], bounds[1:]):
        rows = order[a:z]
        p_holm[rows] = holm(p[rows])
        size[rows] = np.count_nonzero(~np.isnan(p[rows]))
    out["p_holm"] = p_holm
    out["holm_family_size"] = size
    out["significant"] = np.nan_to_num(p_holm, nan=1.0) < level
    sign = np.sign(out["delta"].to_numpy(dtype=np.float64))
    inconclusive = (out["n_paired_seeds"].to_numpy() < min_seeds(level)) | out["disagree"].fillna(False).to_numpy(bool)
    verdict = np.where(inconclusive, "inconclusive",
                       np.where(out["significant"] & (sign > 0), "up",
                                np.where(out["significant"] & (sign < 0), "down", "none")))
    out["verdict"] = pd.Series(verdict, dtype=object).where(~at_ref, None)
    slopes = out.groupby(key, dropna=False)[["weight_decay", "loss"]].apply(
        lambda d: slope(d["weight_decay"], d["loss"])).rename("slope").reset_index()
    out = out.merge(slopes, on=key, how="left")
    return out[cols].sort_values([*key, "weight_decay"], ignore_index=True)


_GROUPS: dict[tuple, "Groups"] = {}


def load_groups(freq_path: str, rare_percentile: float):
    """metrics.Groups of a train frequency table, cached per process (one per corpus x tokenizer)."""
    from .io import read_parquet

    st = os.stat(freq_path)
    key = (os.path.abspath(freq_path), st.st_mtime_ns, st.st_size, float(rare_percentile))
    if key not in _GROUPS:
        table = read_parquet(freq_path, list(FREQUENCY_COLUMNS), what="the train frequency table")
        if len(_GROUPS) > 8:
            _GROUPS.clear()
        _GROUPS[key] = groups_from_frequency(table, rare_percentile, source=freq_path)
    return _GROUPS[key]


def paired_changes(bins, others: list[str], metric: str = "loss_balanced"):
    """Per other axes x seed x split x bin x decay above the group's smallest one (weight_decay_ref): the
    change of `metric` paired per seed, delta = the seed's own metric at the decay (loss) minus its own at the
    smallest decay (loss_ref), over the seeds both decays have. The mean of a bin x decay's deltas is
    decay_effects' delta when every seed has both runs. A group with one decay has no row."""
    import pandas as pd

    cols = [*others, "seed", "weight_decay_ref", "weight_decay", "split", "bin", "bin_lo", "bin_hi", "n_types",
            "loss_ref", "loss", "delta"]
    if bins is None or not len(bins):
        return pd.DataFrame(columns=cols)
    b = bins[[*others, "weight_decay", "seed", "split", "bin", "bin_lo", "bin_hi", "n_types", metric]]
    ref = b.groupby(others, dropna=False)["weight_decay"].min().rename("weight_decay_ref").reset_index()
    b = b.merge(ref, on=others)
    key = [*others, "seed", "split", "bin"]
    at_ref = b[b["weight_decay"] == b["weight_decay_ref"]][[*key, metric]].rename(columns={metric: "loss_ref"})
    out = b[b["weight_decay"] > b["weight_decay_ref"]].merge(at_ref, on=key).rename(columns={metric: "loss"})
    out["delta"] = out["loss"] - out["loss_ref"]
    out = out[cols].sort_values([*others, "split", "bin", "weight_decay", "seed"], kind="stable")
    return out.reset_index(drop=True)


REGIME_RUN_COLUMNS = ("train_docs", "epochs")  # runs.csv columns the regime map carries when present


def regime_map(bins, runs, others: list[str], metric: str = "loss_balanced"):
    """paired_changes at each group's largest decay only (loss change from the smallest to the largest decay,
    paired per seed), with the columns of REGIME_RUN_COLUMNS that runs.csv has (of the run at the largest
    decay; NaN where missing), so that the change can be drawn against epochs."""
    extra = [c for c in REGIME_RUN_COLUMNS if c not in others]
    out = paired_changes(bins, others, metric)
    if len(out):
        out = out[out["weight_decay"] == out.groupby(others, dropna=False)["weight_decay"].transform("max")]
    have = [c for c in extra if runs is not None and c in runs.columns]
    if have and len(out):
        out = out.merge(runs[[*others, "weight_decay", "seed", *have]], on=[*others, "weight_decay", "seed"],
                        how="left")
    for c in extra:
        if c not in out.columns:
            out[c] = np.nan
    cols = [*others, *extra, *[c for c in out.columns if c not in others and c not in extra]]
    return out[cols].sort_values([*others, "split", "bin", "seed"], kind="stable").reset_index(drop=True)
