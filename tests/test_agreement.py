"""Tests of bertdims.analysis.agreement (chapter 11_dimension_agreement): rankings of dimensions from
each source, their agreement against a null of random rankings, the outlier dimensions, the
weights fine-tuning moved, and the with/without-outlier retraining end to end on the tiny BERT."""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import kendalltau, spearmanr

from bertdims import ConfigError
from bertdims.book.study_charts import matrix_chart
from bertdims.analysis.agreement import (SOURCES, AgreementConfig, Rankings, agreement_effects,
                                agreement_table, cross_agreement, magnitude_scores,
                                matrix_frame, null_agreement, observed_vs_null, outlier_dims,
                                outlier_effects, pca_scores, setting_dims, top_order,
                                weight_change_scores)
from result_checks import check_result

sys.path.insert(0, str(Path(__file__).parent))


# ------------------------------------------------------------------------------ rankings
def test_top_order_puts_unranked_last_and_breaks_ties_as_told():
    s = np.array([0.5, np.nan, 0.9, 0.5, 0.1])
    assert top_order(s).tolist() == [2, 0, 3, 4, 1]
    assert top_order(s, tiebreak=np.array([4, 0, 1, 2, 3])).tolist() == [2, 3, 0, 4, 1]


def test_null_agreement_observed_values_match_scipy_and_sets():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(size=50)
    out = null_agreement(a, b, 5, n_null=200)
    top_a, top_b = set(np.argsort(-a)[:5]), set(np.argsort(-b)[:5])
    assert out["overlap"] == pytest.approx(len(top_a & top_b) / 5)
    assert out["spearman"] == pytest.approx(spearmanr(a, b).statistic)
    assert out["kendall"] == pytest.approx(kendalltau(a, b).statistic)


def test_identical_rankings_agree_far_above_the_null_and_the_null_is_k_over_h():
    rng = np.random.default_rng(1)
    a = rng.normal(size=200)
    out = null_agreement(a, a.copy(), 10, n_null=2000)
    assert out["overlap"] == 1.0 and out["spearman"] == pytest.approx(1.0)
    assert out["null_overlap"] == pytest.approx(10 / 200, abs=0.01)     # hypergeometric mean
    assert abs(out["null_spearman"]) < 0.01
    assert out["p_overlap"] == pytest.approx(1 / 2001) and out["p_spearman"] == pytest.approx(1 / 2001)
    assert out["null_overlap_q95"] < 0.3


def test_independent_rankings_are_not_called_agreeing_more_than_5_percent_of_the_time():
    rng = np.random.default_rng(2)
    p = [null_agreement(rng.normal(size=100), rng.normal(size=100), 5, n_null=200,
                        random_state=i)["p_spearman"] for i in range(200)]
    assert 0.02 <= np.mean(np.array(p) <= 0.05) <= 0.09
    assert 0.4 <= np.mean(p) <= 0.6                                       # p is about uniform


def test_partial_rankings_tie_the_unranked_dimensions_last():
    h = 30
    a = np.full(h, np.nan)
    a[[4, 7, 9]] = [3.0, 2.0, 1.0]                                        # 3 ranked dims
    b = -np.arange(h, dtype=float)                                        # 0 first
    b[[4, 7, 9]] = [10.0, 9.0, 8.0]
    out = null_agreement(a, b, 3, n_null=500)
    assert out["overlap"] == 1.0
    assert out["null_overlap"] == pytest.approx(3 / h, abs=0.02)
    with pytest.raises(ConfigError, match="'k'"):
        null_agreement(a, b, 4)                                           # a ranks only 3
    with pytest.raises(ConfigError, match="'scores_b'"):
        null_agreement(a, b[:10], 2)


# ------------------------------------------------------------------------------- sources
def _profile(h=20, layers=3, outlier=7, big=50.0):
    rng = np.random.default_rng(0)
    frames = []
    for layer in range(layers):
        m = rng.uniform(0.5, 1.5, size=h)
        m[outlier] = big
        frames.append(pd.DataFrame({"layer": layer, "dim": np.arange(h), "mean_abs": m,
                                    "mean": m, "z": (m - m.mean()) / m.std()}))
    return pd.concat(frames, ignore_index=True)


def test_outlier_dims_find_a_planted_outlier_and_nothing_else():
    prof = _profile()
    assert outlier_dims(prof, sigma=3.0) == [7]
    assert outlier_dims(prof, sigma=3.0, layer=0) == [7]
    assert outlier_dims(prof, sigma=100.0) == []
    assert magnitude_scores(prof).argmax() == 7 and len(magnitude_scores(prof)) == 20
    assert outlier_dims(_profile(big=1.0), sigma=3.0) == []
    with pytest.raises(ConfigError, match="'layer'"):
        outlier_dims(prof, layer=9)
    with pytest.raises(ConfigError, match="'sigma'"):
        outlier_dims(prof, sigma=0)


def test_pca_scores_point_at_the_high_variance_dimension_and_sum_to_one():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 12))
    x[:, 5] *= 20.0
    s = pca_scores(x, n_components=3)
    assert s.argmax() == 5 and s.sum() == pytest.approx(1.0)
    assert (s >= 0).all()


def test_weight_change_is_zero_for_the_same_model_and_finds_a_moved_row(tiny_bert):
    import torch

    from bertdims import load_encoder
    a = load_encoder(tiny_bert).model
    b = load_encoder(tiny_bert).model
    assert np.allclose(weight_change_scores(a, b), 0.0)
    with torch.no_grad():
        b.encoder.layer[1].output.dense.weight[11] += 0.5
        b.encoder.layer[0].output.LayerNorm.weight[3] += 2.0              # another layer
    s = weight_change_scores(a, b, layer=-1)
    assert s.shape == (32,) and s.argmax() == 11
    assert s[11] == pytest.approx(0.5 * np.sqrt(64))                     # row of length 2H
    assert weight_change_scores(a, b, layer=1).argmax() == 3
    with pytest.raises(ConfigError, match="'layer'"):
        weight_change_scores(a, b, layer=3)


# -------------------------------------------------------------------------------- config
def test_config_refuses_bad_values_naming_the_parameter():
    with pytest.raises(ConfigError, match="'tasks'.*regression"):
        AgreementConfig(tasks=["stsb"])
    with pytest.raises(ConfigError, match="'top_k'"):
        AgreementConfig(top_k=6, n_neurons=5)
    with pytest.raises(ConfigError, match="'selection'"):
        AgreementConfig(selection="best")
    with pytest.raises(ConfigError, match="'candidates'"):
        AgreementConfig(selection="ablation", candidates=2, top_k=3)
    with pytest.raises(ConfigError, match="'seeds'"):
        AgreementConfig(seeds=[0, 0])
    base = AgreementConfig(lr=2e-5, batch_size=32).finetune_base()
    assert (base.lr, base.batch_size, base.dims, base.max_seq_len) == (2e-5, 32, None, 64)


# ---------------------------------------------------------------------- synthetic rankings
def _rankings(h=40, outliers=(3,)) -> Rankings:
    """Two tasks x two seeds; 'selected' and 'salient' share their top 3 (dims 3, 5, 8 in
    that order), every other source is random."""
    rng = np.random.default_rng(4)
    frames = []
    for t in ("a", "b"):
        for s in (0, 1):
            for src in SOURCES:
                score = rng.normal(size=h)
                if src in ("selected", "salient"):
                    score[[3, 5, 8]] = [30.0, 20.0, 10.0]
                if src == "salient":
                    score[np.setdiff1d(np.arange(h), [3, 5, 8, 1, 2])] = np.nan
                order = top_order(score)
                rank = np.empty(h, dtype=int)
                rank[order] = np.arange(1, h + 1)
                frames.append(pd.DataFrame({"task": t, "seed": s, "source": src,
                                            "dim": np.arange(h), "score": score, "rank": rank}))
    return Rankings(scores=pd.concat(frames, ignore_index=True), rankings=pd.DataFrame(),
                    profile=pd.DataFrame(), outliers=list(outliers), hidden_size=h, metrics={})


def test_agreement_table_and_effects_see_a_planted_agreement_and_no_other():
    r = _rankings()
    table = agreement_table(r, 3, n_null=300)
    assert len(table) == 4 * 15                                          # models x pairs
    eff = agreement_effects(table, margin=0.1).set_index(["source_a", "source_b"])
    planted = eff.loc[("selected", "salient")]
    assert planted["observed"] == 1.0 and planted["verdict"] == "reproduced"
    assert planted["estimate"] == pytest.approx(1.0 - planted["null"])
    assert planted["n"] == 4 and planted["n_seeds"] == 4
    others = eff.drop(index=("selected", "salient"))
    assert (others["verdict"] != "reproduced").mean() >= 0.9
    frame = matrix_frame(eff.reset_index())
    assert len(frame) == 2 * 15
    cell = frame[(frame.row == "salient") & (frame.column == "selected")].iloc[0]
    assert cell["label"] == "1.00*"
    spec = matrix_chart(frame, title="t", value_title="overlap").to_dict()
    assert len(spec["layer"]) == 2


def test_cross_agreement_pairs_seeds_within_a_task_and_tasks_within_a_seed():
    r = _rankings()
    seeds = cross_agreement(r, 3, across="seed", n_null=100)
    assert set(zip(seeds.task_a, seeds.task_b)) == {("a", "a"), ("b", "b")}
    assert (seeds.seed_a != seeds.seed_b).all() and (seeds.overlap == 1.0).all()
    tasks = cross_agreement(r, 3, across="task", sources=["selected", "pca"], n_null=100)
    assert len(tasks) == 2 * 2 and (tasks.seed_a == tasks.seed_b).all()
    eff = agreement_effects(tasks, margin=0.1, by=["source"]).set_index("source")
    assert eff.loc["selected", "verdict"] == "reproduced"
    one = _rankings()
    one.scores = one.scores[one.scores.seed == 0]
    assert cross_agreement(one, 3, across="seed").empty


def test_observed_vs_null_needs_two_comparisons():
    got = observed_vs_null([0.4], [0.1], statistic="overlap", margin=0.1, label="x")
    assert got["effect"] is None and "two" in got["note"]
    got = observed_vs_null([0.4, 0.6, 0.5], [0.1, 0.1, 0.1], statistic="overlap", margin=0.1,
                           label="x")
    assert got["effect"].estimate == pytest.approx(0.4) and got["effect"].claim == "better"


def test_setting_dims_take_the_outliers_out_and_in():
    r = _rankings(outliers=(3,))
    d = setting_dims(r, "a", 0, 2)
    assert d["selected"] == [3, 5] and d["without outliers"] == [5, 8]
    assert d["full"] is None and len(d["random"]) == 2
    top_magnitude = r.scores[(r.scores.task == "a") & (r.scores.seed == 0)
                             & (r.scores.source == "outlier")].sort_values("rank").dim.tolist()[:2]
    assert d["outliers"] == sorted(top_magnitude)
    with pytest.raises(ConfigError, match="'k'"):
        setting_dims(r, "a", 0, 41)


def test_outlier_effects_compare_the_settings_paired_by_seed():
    from bertdims.analysis.agreement import OutlierStudy
    from bertdims.modeling.testing import predictions_right_on
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, size=400)
    preds = {("rotten_tomatoes", "selected"): predictions_right_on(y, 0.80, 3, rng),
             ("rotten_tomatoes", "without outliers"): predictions_right_on(y, 0.80, 3, rng),
             ("rotten_tomatoes", "outliers"): predictions_right_on(y, 0.55, 3, rng),
             ("rotten_tomatoes", "random"): predictions_right_on(y, 0.55, 3, rng)}
    study = OutlierStudy(scores=pd.DataFrame(), predictions=preds, labels={"rotten_tomatoes": y},
                         seeds=[0, 1, 2], k=3)
    eff = outlier_effects(study, margin=0.1, n_boot=500).set_index("comparison")
    assert eff.loc["without outliers - selected", "verdict"] == "reproduced"
    assert eff.loc["outliers - selected", "verdict"] == "reproduced"      # worse, well below
    assert eff.loc["outliers - selected", "estimate"] == pytest.approx(-0.25)
    assert eff.loc["outliers - random", "claim_id"] == ""


# ------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_rankings_and_outlier_retraining_on_tiny_bert(tiny_bert, store, monkeypatch, tiny_tasks):
    """Every source for every model, the retraining grid through the store, and a rerun
    that trains nothing."""
    from bertdims.analysis.agreement import outlier_retrain, rankings_study, top_table
    cls, _ = tiny_tasks
    config = AgreementConfig(model=tiny_bert, tasks=[cls], seeds=[0, 1], max_train_samples=48,
                             max_eval_samples=30, max_seq_len=16, epochs=1.0, n_neurons=3,
                             folds=3, top_k=2, retrain_k=2, general_samples=20, n_null=50,
                             outlier_sigma=3.0)
    r = rankings_study(config, store=store)
    check_result(r, config=config, runs=2, tables={"scores", "rankings", "profile"})
    assert r.hidden_size == 32
    assert set(r.scores.source) == set(SOURCES) and len(r.scores) == 2 * len(SOURCES) * 32
    for _, part in r.scores.groupby(["task", "seed", "source"]):
        assert sorted(part["rank"]) == list(range(1, 33))
    sal = r.scores[r.scores.source == "salient"]
    assert sal.groupby("seed")["score"].count().tolist() == [3, 3]         # n_neurons ranked
    assert (r.scores[r.scores.source == "moved"]["score"] > 0).all()      # fine-tuning moved them
    assert len(top_table(r, 2)) == 2 * len(SOURCES)
    study = outlier_retrain(config, r, store=store)
    check_result(study, config=config, runs=2 * 5, tables={"scores"})
    s = study.scores
    assert len(s) == 2 * 5 and set(s.setting) == {"full", "selected", "without outliers",
                                                     "outliers", "random"}
    assert (s[s.setting == "without outliers"].n_outliers == 0).all()
    assert study.predictions[(cls, "outliers")].shape == (2, 30)
    import importlib
    ft = importlib.import_module("bertdims.train.finetuning")
    monkeypatch.setattr(ft, "_train", lambda *a, **k: pytest.fail("retrained"))
    again = outlier_retrain(config, rankings_study(config, store=store), store=store)
    pd.testing.assert_frame_equal(again.scores, s)
