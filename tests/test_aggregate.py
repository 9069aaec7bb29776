"""End to end: synthetic run folders laid out like a real results tree -> tokenfair.aggregate.aggregate."""

import json
import math
import os
import re
import shutil
import zlib

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tokenfair import aggregate as A
from tokenfair import config as tfconfig
from tokenfair import metrics as M
from tokenfair import paths
from tokenfair import plan as tfplan
from tokenfair.counts import frequency_table
from tokenfair.errors import DataError
from tokenfair.report import significance_counts

VOCAB = 300
STEPS = (0, 50, 100)


def make_cfg(results_dir, **over):
    cfg = {
        "results_dir": str(results_dir),
        "corpora": {"c1": {"source": "embedded", "name": "sotu", "validation_fraction": 0.1}},
        "tokenizers": {"t1": {"type": "bpe", "vocab_size": VOCAB}},
        "models": ["tiny-xs", "tiny-s"],
        "weight_decays": [0.0, 0.1, 1.0],
        "seeds": [0, 1],
        **over,
    }
    return tfplan.build(tfconfig.resolve(cfg, check_files=False))


def train_counts():
    rng = np.random.default_rng(1)
    p = 1 / np.arange(1, VOCAB + 1) ** 1.1
    counts = rng.multinomial(20_000, p / p.sum()).astype(np.int64)
    counts[-20:] = 0  # some ids never seen in train
    return counts


def norm_values(counts, point):
    """The synthetic embedding / unembedding row norms of a run (known values: the tests average them by hand):
    rows of frequent ids are longer, decay shrinks them; tied (tiny-xs by default) = one matrix."""
    emb = 1.0 + 0.5 * np.log1p(counts) - 0.3 * point["weight_decay"] + 0.01 * point["seed"]
    tied = point.get("tie_embeddings")
    tied = point["model"] == "tiny-xs" if tied is None else bool(tied)
    return emb, (emb.copy() if tied else 2.0 * emb + 0.1), tied


def norm_scale(step):
    """The synthetic norms at an evaluation step: the final ones times 2 at step 0, 1.5 at 50, 1 at the end."""
    return 2.0 - step / STEPS[-1]


def write_tree(cfg):
    """Frequency tables and one synthetic run per grid point: loss grows with decay for rare ids. Every split
    of plan.splits (ood-<corpus> included) is evaluated."""
    counts = train_counts()
    special = np.zeros(VOCAB, dtype=bool)
    special[:2] = True
    tokens = [f"t{i}" for i in range(VOCAB)]
    base = cfg["frequency"]["bin_base"]
    for split in ("train", "validation"):
        c = counts if split == "train" else np.random.default_rng(2).multinomial(3000, (counts + 0.5) / (counts + 0.5).sum())
        path = paths.path("frequency", cfg["results_dir"], corpus="c1", tok="t1", split=split)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        pq.write_table(frequency_table(c, tokens, special, base), path)
    rarity = np.log(counts.max() + 1) - np.log(counts + 1)  # 0 for the most frequent id
    splits = cfg.splits
    sample = {"train": np.random.default_rng(3).multinomial(4000, counts / counts.sum()),
              "validation": np.random.default_rng(4).multinomial(2000, (counts + 0.5) / (counts + 0.5).sum())}
    for i, s in enumerate(splits):
        if s not in sample:  # an evaluation-only corpus: a flatter distribution
            sample[s] = np.random.default_rng(10 + i).multinomial(2000, (counts + 5.0) / (counts + 5.0).sum())
    for point in cfg.points:
        rng = np.random.default_rng(zlib.crc32(point["run"].encode()))
        cols = {k: [] for k in A.PER_TOKEN_COLUMNS}
        for split in splits:
            n = sample[split]
            for step in STEPS:
                per = 1.0 + 4.0 * math.exp(-step / 30) + point["weight_decay"] * 0.4 * rarity + rng.normal(0, 0.05, VOCAB)
                cols["step"].append(np.full(VOCAB, step, np.int32))
                cols["split"] += [split] * VOCAB
                cols["token_id"].append(np.arange(VOCAB, dtype=np.int32))
                cols["loss_sum"].append(per * n)
                cols["count"].append(n.astype(np.int64))
                cols["correct"].append((n * np.clip(0.8 - 0.1 * rarity, 0, 1)).astype(np.int64))
        table = pa.table({k: (pa.array(v, pa.string()) if k == "split" else pa.array(np.concatenate(v)))
                          for k, v in cols.items()})
        f = A.run_files(cfg, point)
        os.makedirs(f["dir"], exist_ok=True)
        pq.write_table(table, f["per_token"])
        emb, unemb, tied = norm_values(counts, point)
        grow = np.repeat([norm_scale(s) for s in STEPS], VOCAB)  # a block per evaluation step, the last the final
        pq.write_table(pa.table({"step": pa.array(np.repeat(np.array(STEPS, dtype=np.int32), VOCAB)),
                                 "token_id": pa.array(np.tile(np.arange(VOCAB, dtype=np.int64), len(STEPS))),
                                 "embedding_norm": pa.array(np.tile(emb, len(STEPS)) * grow),
                                 "unembedding_norm": pa.array(np.tile(unemb, len(STEPS)) * grow)}), f["norms"])
        with open(f["run_json"], "w") as fh:
            json.dump({"parameters": 1000 if point["model"] == "tiny-xs" else 5000, "seed": point["seed"],
                       "tied_embeddings": tied}, fh)
    return counts


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    cfg = make_cfg(root)
    counts = write_tree(cfg)
    res = A.aggregate(cfg, workers=1)
    return cfg, counts, res


def test_every_output_is_written(study):
    cfg, _, _ = study
    outs = A.summary_outputs(cfg)
    for f in outs["tables"] + outs["figures"] + outs["readme"]:
        assert os.path.getsize(f) > 0, f
    assert any(f.endswith("bin_loss_validation.png") for f in outs["figures"])
    assert any(f.endswith("frequency.pdf") for f in outs["figures"])
    readme = open(outs["readme"][0]).read()
    for f in outs["figures"]:
        if f.endswith(".png"):
            assert f"(figures/{os.path.basename(f)})" in readme  # embedded by relative link
    assert "Partial" not in readme


def test_runs_table_matches_a_direct_computation(study):
    cfg, counts, res = study
    runs = pd.read_csv(os.path.join(A.summary_dir(cfg["results_dir"]), "runs.csv"))
    assert len(runs) == 12 and runs["final_step"].eq(100).all()
    assert set(runs.columns) >= {"corpus", "tokenizer", "model", "n_params", "weight_decay", "seed",
                                 "train_loss_avg", "validation_loss_balanced", "train_acc_avg", "train_ppl",
                                 "validation_rare_gap", "train_spearman"}
    assert runs.groupby("model")["n_params"].first().to_dict() == {"tiny-s": 5000, "tiny-xs": 1000}
    # one run by plain pandas
    point = cfg.points[5]
    pt = pd.read_parquet(A.run_files(cfg, point)["per_token"])
    pt = pt[(pt["step"] == 100) & (pt["split"] == "validation") & (pt["token_id"] >= 2)]
    seen = pt[pt["count"] > 0]
    row = runs[(runs["model"] == point["model"]) & (runs["weight_decay"] == point["weight_decay"])
               & (runs["seed"] == point["seed"])].iloc[0]
    assert row["validation_loss_avg"] == pytest.approx(seen["loss_sum"].sum() / seen["count"].sum())
    assert row["validation_loss_balanced"] == pytest.approx((seen["loss_sum"] / seen["count"]).mean())
    assert row["validation_acc_avg"] == pytest.approx(seen["correct"].sum() / seen["count"].sum())
    assert row["validation_ppl"] == pytest.approx(math.exp(row["validation_loss_avg"]))
    freq = pd.read_parquet(paths.path("frequency", cfg["results_dir"], corpus="c1", tok="t1", split="train"))
    rare_ids = set(freq.loc[(~freq["special"]) & (freq["percentile"] < 95), "token_id"])
    per = (seen["loss_sum"] / seen["count"]).to_numpy()
    is_rare = seen["token_id"].isin(rare_ids).to_numpy()
    assert row["validation_rare_gap"] == pytest.approx(per[is_rare].mean() - per[~is_rare].mean())
    assert row["validation_spearman"] == pytest.approx(M.spearman(counts[seen["token_id"]], per))
    # the synthetic effect: rare ids lose more with decay, so the correlation is negative with decay
    assert runs.loc[runs["weight_decay"] == 1.0, "train_spearman"].lt(-0.5).all()


def test_spearman_of_the_loss_change_pairs_each_seed_with_the_reference_decay(study):
    cfg, counts, res = study
    runs = res["runs"]
    point = next(p for p in cfg.points if p["weight_decay"] == 0.1 and p["seed"] == 1 and p["model"] == "tiny-s")
    ref = next(p for p in cfg.points if p["weight_decay"] == 0.0 and p["seed"] == 1 and p["model"] == "tiny-s")

    def per_type(p):
        pt = pd.read_parquet(A.run_files(cfg, p)["per_token"])
        pt = pt[(pt["step"] == 100) & (pt["split"] == "validation") & (pt["token_id"] >= 2) & (pt["count"] > 0)]
        return (pt["loss_sum"] / pt["count"]).to_numpy(), pt["token_id"].to_numpy()

    (at, ids), (at_ref, ids_ref) = per_type(point), per_type(ref)
    assert (ids == ids_ref).all()  # the same evaluation sample
    row = runs[(runs["model"] == "tiny-s") & (runs["weight_decay"] == 0.1) & (runs["seed"] == 1)].iloc[0]
    assert row["validation_spearman_change"] == pytest.approx(M.spearman(counts[ids], at - at_ref))
    assert runs.loc[runs["weight_decay"] == 0.0, "validation_spearman_change"].isna().all()
    # the synthetic effect: the loss rises with decay in proportion to rarity (noise aside)
    assert runs.loc[runs["weight_decay"] == 1.0, "train_spearman_change"].lt(-0.9).all()
    by_seed = res["runs_by_seed"]
    assert by_seed["validation_spearman_change_mean"].notna().sum() == 4  # 2 models x decays 0.1 and 1.0
    new_bins = res["bins"][["learning_speed_token", "steps_to_80pct"]]
    assert new_bins.notna().any().all() and "steps_to_80pct_ci95" in res["bins_by_seed"]


def test_bins_seeds_and_decay_effects(study):
    cfg, _, res = study
    bins, bs, de = res["bins"], res["bins_by_seed"], res["decay_effects"]
    assert len(bins) == 12 * 2 * bins["bin"].nunique()
    train_unseen = bins[(bins["split"] == "train") & (bins["bin"] == -1)]
    assert (train_unseen["n_seen"] == 0).all() and train_unseen["loss_balanced"].isna().all()
    assert bins["learning_speed"].dropna().between(0, 1.2).all()
    # two seeds: the interval by hand
    assert (bs["n_seeds"] == 2).all()
    g = bins[(bins["model"] == "tiny-s") & (bins["weight_decay"] == 0.1) & (bins["split"] == "validation") & (bins["bin"] == 2)]
    r = bs[(bs["model"] == "tiny-s") & (bs["weight_decay"] == 0.1) & (bs["split"] == "validation") & (bs["bin"] == 2)].iloc[0]
    v = g["loss_balanced"].to_numpy()
    assert r["loss_balanced_mean"] == pytest.approx(v.mean())
    assert r["loss_balanced_ci95"] == pytest.approx(12.706204736 * abs(v[0] - v[1]) / math.sqrt(2) / math.sqrt(2))
    # decay effects: zero at the reference, growing with decay more for rare bins
    assert de.loc[de["weight_decay"] == 0.0, "delta"].abs().max() == 0
    d1 = de[(de["weight_decay"] == 1.0) & (de["split"] == "train") & (de["model"] == "tiny-s") & (de["bin"] >= 0)]
    d1 = d1.sort_values("bin")
    assert d1["delta"].iloc[0] > d1["delta"].iloc[-1] > -0.1
    assert (d1["slope"] > 0).all() and (d1["n_paired_seeds"] == 2).all() and d1["delta_ci95"].notna().all()
    one = de[(de["model"] == "tiny-s") & (de["split"] == "train") & (de["bin"] == d1["bin"].iloc[0])]
    assert one["slope"].iloc[0] == pytest.approx(M.slope(one["weight_decay"], one["loss"]))


def test_single_seed_and_an_extra_axis(tmp_path):
    cfg = make_cfg(tmp_path, seeds=[0], models=["tiny-xs"], weight_decays=[0.0, 1.0], axes={"lr": [0.001, 0.003]},
                   aggregate={"figure_formats": ["png"]})
    write_tree(cfg)
    res = A.aggregate(cfg)
    rs = res["runs_by_seed"]
    assert len(rs) == 4 and sorted(rs["lr"]) == [0.001, 0.001, 0.003, 0.003]
    assert (rs["n_seeds"] == 1).all() and rs["train_loss_avg_std"].isna().all() and rs["train_loss_avg_ci95"].isna().all()
    de = res["decay_effects"]
    assert de["delta_ci95"].isna().all()  # one seed: no interval
    assert de[["t_stat", "p_value", "p_holm"]].isna().all().all() and not de["significant"].any()  # nor a test
    assert len(de) == 2 * 2 * res["bins"]["bin"].nunique() * 2  # lr x split x bin x decay
    assert de.groupby(["lr", "split", "bin"])["weight_decay_ref"].nunique().eq(1).all()
    readme = open(os.path.join(A.summary_dir(cfg["results_dir"]), "README.md")).read()
    assert "| lr |" in readme and "No bin could be tested" in readme


def test_significance_by_hand(study):
    cfg, _, res = study
    bins, de = res["bins"], res["decay_effects"]
    assert cfg["aggregate"]["significance_level"] == 0.05  # the schema default
    at_ref = de["weight_decay"] == de["weight_decay_ref"]
    assert de.loc[at_ref, ["t_stat", "p_value", "p_holm"]].isna().all().all() and not de.loc[at_ref, "significant"].any()
    fam = de[(de["model"] == "tiny-s") & (de["split"] == "validation") & (de["weight_decay"] == 0.1)].sort_values("bin")
    unseen = fam[fam["bin"] == -1].iloc[0]  # no validation occurrence of an id never seen in train: not a test
    assert unseen["n_paired_seeds"] == 0 and np.isnan(unseen["p_value"]) and np.isnan(unseen["p_holm"])
    fam = fam[fam["bin"] >= 0]
    assert fam["p_value"].notna().all()  # every other bin is tested (NaN p-values are not counted by Holm)
    for _, row in fam.iterrows():
        sel = (bins["model"] == "tiny-s") & (bins["split"] == "validation") & (bins["bin"] == row["bin"])
        a = bins[sel & (bins["weight_decay"] == 0.1)].sort_values("seed")["loss_balanced"].to_numpy()
        b = bins[sel & (bins["weight_decay"] == 0.0)].sort_values("seed")["loss_balanced"].to_numpy()
        d = a - b  # two seeds: t = mean / (|d0 - d1| / sqrt 2 / sqrt 2), df 1: p = 1 - (2/pi) atan |t|
        t = d.mean() / (abs(d[0] - d[1]) / 2)
        assert row["t_stat"] == pytest.approx(t) and row["p_value"] == pytest.approx(1 - 2 / math.pi * math.atan(abs(t)))
        # sign flips of two seeds: |d0 + d1| is reached by 2 of the 4 assignments when the signs agree, else by all
        assert row["p_perm"] == (0.5 if d[0] * d[1] > 0 else 1.0)
    # Holm over every bin x decay of one model x split (one published panel), by hand
    panel = de[(de["model"] == "tiny-s") & (de["split"] == "validation") & de["p_value"].notna()]
    assert set(panel["weight_decay"]) == {0.1, 1.0} and (panel["holm_family_size"] == len(panel)).all()
    p = panel["p_value"].to_numpy()
    order = np.argsort(p)
    adj = np.minimum(np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order]), 1)
    np.testing.assert_allclose(panel["p_holm"].to_numpy()[order], adj)
    assert (fam["significant"] == (fam["p_holm"] < 0.05)).all()
    assert (fam["verdict"] == "inconclusive").all()  # 2 paired seeds: the sign-flip test cannot reach 0.05
    # the README counts them
    counts = significance_counts(de, cfg.other_axes, cfg.splits)
    row = counts[(counts["model"] == "tiny-s") & (counts["split"] == "validation") & (counts["weight_decay"] == 0.1)].iloc[0]
    assert row["n_tested"] == len(fam) and row["n_rose"] == (fam["significant"] & (fam["delta"] > 0)).sum()
    assert row["n_fell"] == (fam["significant"] & (fam["delta"] < 0)).sum()
    train1 = counts[(counts["split"] == "train") & (counts["weight_decay"] == 1.0)]
    assert (train1["n_tested"] == res["bins"]["bin"].nunique() - 1).all()  # the unseen bin is empty on train
    readme = open(os.path.join(A.summary_dir(cfg["results_dir"]), "README.md")).read()
    assert "Holm-Bonferroni" in readme and "With one seed nothing can be tested" in readme
    assert (f"| tiny-s | validation | 0.1 | 0 | {row['n_tested']} | {row['n_rose']} | {row['n_fell']} |") in readme


def test_embedding_norms_by_hand(study):
    cfg, counts, res = study
    en, ens = res["embedding_norms"], res["embedding_norms_by_seed"]
    freq = pd.read_parquet(paths.path("frequency", cfg["results_dir"], corpus="c1", tok="t1", split="train"))
    plain = freq[~freq["special"]]
    n_bins = plain["bin"].nunique()
    assert len(en) == 12 * 2 * n_bins and set(en["matrix"]) == {"embedding", "unembedding"}
    for point in (cfg.points[5], cfg.points[0]):  # tiny-s (separate head) and tiny-xs (tied)
        emb, unemb, tied = norm_values(counts, point)
        run = en[(en["model"] == point["model"]) & (en["weight_decay"] == point["weight_decay"])
                 & (en["seed"] == point["seed"])]
        assert run["tied_embeddings"].eq(tied).all()
        for matrix, v in (("embedding", emb), ("unembedding", unemb)):
            want = pd.Series(v[plain["token_id"]], index=plain.index).groupby(plain["bin"]).agg(["mean", "size"])
            got = run[run["matrix"] == matrix].set_index("bin")
            np.testing.assert_allclose(got.loc[want.index, "mean_norm"], want["mean"])
            assert got.loc[want.index, "n_ids"].tolist() == want["size"].tolist()
    # over seeds: seed s adds 0.01 s to every row, so the mean over seeds 0, 1 adds 0.005 and the std is 0.01/sqrt 2
    r = ens[(ens["model"] == "tiny-s") & (ens["weight_decay"] == 1.0) & (ens["matrix"] == "embedding")]
    one = en[(en["model"] == "tiny-s") & (en["weight_decay"] == 1.0) & (en["matrix"] == "embedding") & (en["seed"] == 0)]
    np.testing.assert_allclose(r.sort_values("bin")["mean_norm_mean"], one.sort_values("bin")["mean_norm"] + 0.005)
    np.testing.assert_allclose(r["mean_norm_std"], 0.01 / math.sqrt(2))
    assert (r["n_seeds"] == 2).all()
    # the figure: tiny-s has an embedding and an unembedding panel, tiny-xs (tied) one
    from tokenfair import plots

    fig = plots.embedding_norms(ens, plots.decay_colors(cfg["weight_decays"]), cfg.other_axes)
    shown = [ax for ax in fig.axes if ax.axison]
    assert len(shown) == 3 and all(ax.get_xscale() == "log" for ax in shown)
    assert sum("tied" in ax.get_title() for ax in shown) == 1


def test_embedding_norm_curves(study):
    """Every evaluation step's norms per bin: the last step is embedding_norms, step s is it times norm_scale(s);
    the figure has a column per decay, a row per matrix (one for the tied tiny-xs), a line per bin."""
    from matplotlib.lines import Line2D

    from tokenfair import plots

    cfg, counts, res = study
    en, curves, by_seed = res["embedding_norms"], res["embedding_norm_curves"], res["embedding_norm_curves_by_seed"]
    assert sorted(set(curves["step"])) == list(STEPS) and len(curves) == len(STEPS) * len(en)
    keys = ["model", "weight_decay", "seed", "matrix", "bin"]
    last = curves[curves["step"] == STEPS[-1]].set_index(keys).sort_index()
    pd.testing.assert_series_equal(last["mean_norm"], en.set_index(keys).sort_index()["mean_norm"])
    for step in STEPS[:-1]:
        at = curves[curves["step"] == step].set_index(keys).sort_index()
        np.testing.assert_allclose(at["mean_norm"], norm_scale(step) * last["mean_norm"])
    assert set(by_seed["n_seeds"]) == {2}
    fig = plots.norm_curves(by_seed, cfg.other_axes)
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert len(shown) == 3 * 3  # rows: tiny-s embedding, tiny-s head, tiny-xs tied; columns: 3 decays
    assert sum("tied" in ax.get_ylabel() for ax in shown) == 1  # the row label of tiny-xs, in its first column
    n_bins = res["embedding_norms"]["bin"].nunique()
    assert all(len([ln for ln in ax.get_lines() if isinstance(ln, Line2D)]) == n_bins for ax in shown)
    unseen = [ln for ln in shown[0].get_lines() if ln.get_label() == "unseen"]
    assert len(unseen) == 1 and unseen[0].get_linestyle() == "--"
    assert shown[0].get_shared_y_axes().joined(shown[0], shown[1])  # a row shares its y axis


def test_regime_map_of_a_data_size_study(tmp_path):
    """A study varying train_docs: regime_map.csv pairs each seed's largest decay with its own decay 0 per data
    size, carries the runs' epochs, and its figure is an output."""
    cfg = make_cfg(tmp_path, models=["tiny-s"], weight_decays=[0.0, 1.0], seeds=[0, 1],
                   studies={"regime": {"axes": {"train_docs": [5, 20]}}}, aggregate={"figure_formats": ["png"]})
    write_tree(cfg)
    train = paths.path("frequency", cfg["results_dir"], corpus="c1", tok="t1", split="train")
    for p in cfg.points:  # each size's own train table (here the same counts) and its epochs in run.json
        docs = cfg.train_docs(p)
        if docs is not None:
            shutil.copy(train, cfg.run_frequency_file(p))
        f = A.run_files(cfg, p)
        meta = json.load(open(f["run_json"]))
        json.dump({**meta, "epochs": 100.0 / (docs or 100)}, open(f["run_json"], "w"))
    res = A.aggregate(cfg)
    rm, bins = res["regime_map"], res["bins"]
    assert set(rm["train_docs"].dropna()) == {5, 20} and (rm["weight_decay"] == 1.0).all()
    by = {k: set(v) for k, v in rm.groupby(rm["train_docs"].fillna(-1))["epochs"]}
    assert by == {5.0: {20.0}, 20.0: {5.0}, -1: {1.0}}
    b = rm.loc[rm["bin"] >= 0, "bin"].min()  # the rarest seen bin
    row = rm[(rm["train_docs"] == 5) & (rm["seed"] == 1) & (rm["split"] == "validation") & (rm["bin"] == b)].iloc[0]
    at = bins[(bins["train_docs"] == 5) & (bins["seed"] == 1) & (bins["split"] == "validation") & (bins["bin"] == b)]
    loss = at.set_index("weight_decay")["loss_balanced"]
    assert row["delta"] == pytest.approx(loss[1.0] - loss[0.0]) and row["loss_ref"] == pytest.approx(loss[0.0])
    fig = os.path.join(A.summary_dir(cfg["results_dir"]), "figures", "regime_map.png")
    assert fig in A.summary_outputs(cfg)["figures"] and os.path.getsize(fig) > 0


def test_norms_are_checked(tmp_path, study):
    cfg, _, _ = study
    groups = M.load_groups(A.frequency_file(cfg, "c1", "t1"), 95)
    bad = tmp_path / "norms.parquet"
    pq.write_table(pa.table({"token_id": [0, VOCAB], "embedding_norm": [1.0, 1.0], "unembedding_norm": [1.0, 1.0]}), bad)
    with pytest.raises(DataError, match="norms.parquet.*outside the vocabulary"):
        A.summarise_norms(str(bad), groups)
    pq.write_table(pa.table({"token_id": [0, 1], "embedding_norm": [1.0, 1.0]}), bad)
    with pytest.raises(DataError, match="norms.parquet: missing column.s. unembedding_norm"):
        A.summarise_norms(str(bad), groups)
    bad.write_text("not parquet")  # every Parquet input is read by tokenfair.io: the error names the file
    with pytest.raises(DataError, match="norms.parquet: cannot read the run's embedding norms, not a Parquet file"):
        A.summarise_norms(str(bad), groups)
    with pytest.raises(DataError, match="norms.parquet: cannot read the run's per-token losses, not a Parquet file"):
        A.read_per_token(str(bad), VOCAB)


def test_ood_split_null_axes_and_studies(tmp_path):
    """An evaluation-only corpus (a name with an underscore), an axis whose base value is null, and a second
    study sharing some points with the main grid."""
    from tokenfair import plots

    corpora = {"c1": {"source": "embedded", "name": "sotu", "validation_fraction": 0.1},
               "web_news": {"source": "embedded", "name": "sotu", "eval_only": True}}
    cfg = make_cfg(tmp_path, corpora=corpora, models=["tiny-xs"], weight_decays=[0.0, 1.0], seeds=[0, 1],
                   axes={"tie_embeddings": [None, True]},
                   studies={"abl": {"axes": {"embedding_decay_alpha": [None, 0.5]}, "seeds": [0]}},
                   aggregate={"figure_formats": ["png"]})
    assert cfg.splits == ["train", "validation", "ood-web_news"]
    assert cfg.other_axes == ["corpus", "tokenizer", "model", "tie_embeddings", "embedding_decay_alpha"]
    assert A.parse_figure_stem("bin_loss_ood-web_news", cfg.splits) == ("bin_loss", "ood-web_news")
    assert A.parse_figure_stem("bin_curves_train", cfg.splits) == ("bin_curves", "train")
    assert A.parse_figure_stem("embedding_norms", cfg.splits) == ("embedding_norms", None)
    write_tree(cfg)
    res = A.aggregate(cfg)
    out = A.summary_dir(cfg["results_dir"])
    for f in A.summary_outputs(cfg)["figures"]:
        assert os.path.getsize(f) > 0, f
    assert os.path.exists(os.path.join(out, "figures", "decay_heatmap_ood-web_news.png"))
    runs = pd.read_csv(os.path.join(out, "runs.csv"))
    # main: 2 decays x 2 tie x 2 seeds; abl adds alpha 0.5 at seed 0 (its alpha-null points are main's)
    assert len(runs) == 10 and "ood-web_news_loss_balanced" in runs.columns
    assert sorted(runs["studies"].value_counts().items()) == [("abl", 2), ("main", 6), ("main;abl", 2)]
    # the ood split is binned by the training corpus's train counts
    bins = res["bins"]
    ood = bins[bins["split"] == "ood-web_news"]
    assert set(ood["bin"]) == set(bins.loc[bins["split"] == "train", "bin"]) and ood["n_seen"].sum() > 0
    # null axis values survive the seed groups and the merges of decay_effects
    rs, de = res["runs_by_seed"], res["decay_effects"]
    assert len(rs) == 2 * 3  # decay x (tie null alpha null, tie true alpha null, tie null alpha 0.5)
    base = de[de["tie_embeddings"].isna() & de["embedding_decay_alpha"].isna() & de["loss"].notna()]
    assert len(base) > 30 and (base["n_paired_seeds"] == 2).all() and base["loss_ref"].notna().all()
    alpha = de[de["embedding_decay_alpha"] == 0.5]  # one seed
    assert (alpha.loc[alpha["loss"].notna(), "n_paired_seeds"] == 1).all() and alpha["p_value"].isna().all()
    assert len(de) == 3 * 3 * bins["bin"].nunique() * 2  # axes combos x split x bin x decay
    en = res["embedding_norms_by_seed"]
    assert en.loc[en["tie_embeddings"] == True, "tied_embeddings"].all()  # noqa: E712
    # labels name only the axes off their base value, null spelled null
    labels = sorted(label for label, _ in plots._panels(rs, cfg.other_axes, cfg.base_values))
    assert [lab.split("\n")[1:] for lab in labels] == [[], ["embedding_decay_alpha=0.5"], ["tie_embeddings=true"]]
    labels = [label for label, _ in plots._panels(rs, cfg.other_axes)]
    assert any("tie_embeddings=null" in lab and "embedding_decay_alpha=null" in lab for lab in labels)
    readme = open(os.path.join(out, "README.md")).read()
    assert "ood-web_news" in readme and "| null |" in readme
    # the study's docs page: a column of rare / frequent loss per study beside main, train over validation
    from tokenfair.publish import publish

    written = publish(cfg, out, str(tmp_path / "published"), "snakemake publish")
    assert str(tmp_path / "published" / "gap_vs_decay.png") in written
    assert "Rare (solid) and frequent (dashed)" in (tmp_path / "published" / "README.md").read_text()


def test_partial_lists_the_missing_points(tmp_path):
    cfg = make_cfg(tmp_path, seeds=[0], models=["tiny-xs"], aggregate={"figure_formats": ["png"]})
    write_tree(cfg)
    gone = A.run_files(cfg, cfg.points[1])
    os.remove(gone["per_token"])
    with pytest.raises(DataError, match="1 of 3 grid points"):
        A.aggregate(cfg)
    A.aggregate(cfg, partial=True)
    out = A.summary_dir(cfg["results_dir"], partial=True)
    assert out.endswith(os.path.join("summary", "partial"))
    missing = pd.read_csv(os.path.join(out, "missing.csv"))
    assert missing[["model", "weight_decay", "seed"]].values.tolist() == [["tiny-xs", 0.1, 0]]
    assert "per_token.parquet" in missing["reason"].iloc[0]
    assert len(pd.read_csv(os.path.join(out, "runs.csv"))) == 2
    assert "2 of 3 grid points" in open(os.path.join(out, "README.md")).read()
    for f in A.summary_outputs(cfg, partial=True)["figures"]:
        assert os.path.getsize(f) > 0


def test_parallel_workers_give_the_same_tables(study):
    cfg, _, res = study
    par = A.collect(cfg, cfg.points[:4], workers=2)
    pd.testing.assert_frame_equal(par["runs"], res["runs"].iloc[:4].reset_index(drop=True), check_dtype=False)


def test_figures_use_log_frequency_axes(study):
    from tokenfair import plots

    cfg, _, res = study
    colors = plots.decay_colors(cfg["weight_decays"])
    assert len(set(colors.values())) == 3
    keys = cfg.other_axes
    fig = plots.bin_loss(res["bins_by_seed"], "train", colors, keys)
    assert all(ax.get_xscale() == "log" for ax in fig.axes) and len(fig.axes) == 2
    fig = plots.learning_speed(res["bins_by_seed"], ["train", "validation"], colors, keys)
    assert all(ax.get_xscale() == "log" for ax in fig.axes)
    fig = plots.loss_vs_decay(res["runs_by_seed"], ["train", "validation"], colors, keys)
    assert fig.axes[0].get_xscale() == "symlog"
    # the line of decay 1.0 has the same colour in two figures
    fig = plots.bin_loss(res["bins_by_seed"], "validation", colors, keys)
    assert any(np.allclose(line.get_color(), colors[1.0]) for line in fig.axes[0].lines)


def test_bin_loss_shows_each_seed_and_no_band_for_one(study):
    from matplotlib.collections import PathCollection, PolyCollection

    from tokenfair import plots
    from tokenfair.metrics import seed_stats

    cfg, _, res = study
    colors, keys = plots.decay_colors(cfg["weight_decays"]), cfg.other_axes
    bins = res["bins"]
    fig = plots.bin_loss(res["bins_by_seed"], "validation", colors, keys, bins=bins)
    ax = fig.axes[0]  # the first model's panel
    model = sorted(set(bins["model"]))[0]
    dots = [c for c in ax.collections if isinstance(c, PathCollection)]
    own = bins[(bins["model"] == model) & (bins["split"] == "validation") & (bins["bin"] >= 0)]
    assert len(dots) == 1 and len(dots[0].get_offsets()) == len(own)  # a dot per seed x decay x bin
    assert sorted(dots[0].get_offsets()[:, 1].tolist()) == pytest.approx(sorted(own["loss_balanced"].tolist()))
    assert any(isinstance(c, PolyCollection) for c in ax.collections)  # two seeds: bands
    one = bins[bins["seed"] == bins["seed"].min()]
    stats = seed_stats(one, [*keys, "weight_decay", "split", "bin", "bin_lo", "bin_hi"], ["loss_balanced"])
    fig = plots.bin_loss(stats, "validation", colors, keys, bins=one)
    assert not any(isinstance(c, PolyCollection) for c in fig.axes[0].collections)  # one seed: no band
    assert "dots = seeds" in fig._suptitle.get_text()


def test_figures_draw_the_reference_losses_and_the_accuracy_per_bin(study):
    from tokenfair import plots
    from tokenfair.report import reference_losses, vocabularies

    cfg, counts, res = study
    colors, keys = plots.decay_colors(cfg["weight_decays"]), cfg.other_axes
    vocab = vocabularies({("c1", "t1"): cfg.frequency_file("c1", "t1")}, cfg["frequency"]["rare_percentile"])
    special = np.zeros(VOCAB, dtype=bool)
    special[:2] = True
    refs = reference_losses(vocab)
    assert refs == {("c1", "t1"): {"uniform": pytest.approx(math.log(VOCAB)),
                                   "unigram": pytest.approx(M.unigram_entropy(counts, special))}}

    def flat_lines(ax):  # the y of each horizontal line
        return sorted(float(line.get_ydata()[0]) for line in ax.lines if len(set(line.get_ydata())) == 1
                      and tuple(line.get_xdata()) == (0, 1))

    expect = sorted([math.log(VOCAB), M.unigram_entropy(counts, special)])
    for fig in (plots.bin_loss(res["bins_by_seed"], "train", colors, keys, refs=refs),
                plots.bin_curves(res["bin_curves_by_seed"], "train", colors, keys, refs=refs),
                plots.loss_vs_decay(res["runs_by_seed"], ["train"], colors, keys, refs=refs)):
        assert all(flat_lines(ax) == pytest.approx(expect) for ax in fig.axes)
    assert flat_lines(plots.bin_loss(res["bins_by_seed"], "train", colors, keys).axes[0]) == []
    fig = plots.bin_accuracy(res["bins_by_seed"], "validation", colors, keys)
    sub = res["bins_by_seed"]
    sub = sub[(sub["split"] == "validation") & (sub["bin"] >= 0) & (sub["weight_decay"] == 1.0)
              & (sub["model"] == "tiny-s")].sort_values("bin_lo")
    drawn = [line.get_ydata() for line in fig.axes[0].lines if np.allclose(line.get_color(), colors[1.0])]
    assert len(drawn) == 1 and np.allclose(drawn[0], sub["acc_balanced_mean"], equal_nan=True)


@pytest.mark.heavy
def test_workflow_rules_and_report(tmp_path):
    """The Snakemake rules on a synthetic tree: aggregate (worker processes) and aggregate_partial in one
    invocation, then --report (each snakemake call costs ~10 s of planning, so two calls only)."""
    import yaml
    from conftest import run_snakemake

    cfg_yaml = {"results_dir": "results",
                "corpora": {"c1": {"source": "embedded", "name": "sotu", "validation_fraction": 0.1}},
                "tokenizers": {"t1": {"type": "bpe", "vocab_size": VOCAB}},
                "models": ["tiny-xs"], "weight_decays": [0.0, 1.0], "seeds": [0], "train": {},
                "aggregate": {"figure_formats": ["png"]}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg_yaml))
    cfg = make_cfg(tmp_path / "results", models=["tiny-xs"], weight_decays=[0.0, 1.0], seeds=[0])
    write_tree(cfg)
    # the runs and frequency tables are given here: no other rule may remake them
    targets = ["aggregate", "aggregate_partial", "--allowed-rules", "aggregate", "aggregate_partial"]
    proc = run_snakemake(tmp_path, *targets, env={"TOKENFAIR_PARALLEL_MIN_MB": "0"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = tmp_path / "results" / "logs" / "aggregate"
    log = (logs / "aggregate.log").read_text()
    assert "2 processes" in log and log.count("runs aggregated") == 1  # spawned workers do not rerun the script
    assert (tmp_path / "results" / "summary" / "figures" / "bin_loss_train.png").stat().st_size > 0
    assert "2 of 2 grid points" in (tmp_path / "results" / "summary" / "partial" / "README.md").read_text()
    proc = run_snakemake(tmp_path, *targets, "--report", str(tmp_path / "report.html"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = (tmp_path / "report.html").read_text(errors="replace")
    assert "decay_effects" in html and "bin_loss_train" in html and "missing" in html
    # the summary tables are shown inline, as HTML tables in their descriptions (a CSV is only a download link
    # in Snakemake 9's report): the header of runs.csv and the cells of its rows
    assert re.search(r'<th class=\\?"head\\?">loss_ref</th>', html) and html.count("<td>tiny-xs</td>") >= 4
    assert ".. csv-table::" not in html and "System Message" not in html
