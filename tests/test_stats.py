"""The statistics layer on simulated data whose truth is known.

The simulator: binary labels; example ``i`` has a difficulty ``z_i`` shared by every model;
seed ``s`` of setting X shifts its logit by ``u_s ~ N(0, sd_seed)``; prediction ``(s, i)`` is
correct with probability ``sigmoid(mu_X + z_i + u_s)``. The true accuracy of X is that
probability averaged over the populations of examples and seeds (by quadrature).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import expit
from scipy.stats import pearsonr, spearmanr, ttest_rel
from sklearn import metrics as skm

from bertdims.core._validate import ConfigError
from bertdims.core.stats import (CLAIM_KINDS, VERDICTS, Effect, metric_scores, paired_effect,
                            seed_effect, verdict_of)

SD_EXAMPLE = 1.5


def true_accuracy(mu: float, sd_seed: float) -> float:
    x, w = np.polynomial.hermite_e.hermegauss(80)
    return float((w * expit(mu + np.hypot(SD_EXAMPLE, sd_seed) * x)).sum() / w.sum())


def simulate(rng, mu_a: float, mu_b: float, seeds: int = 3, n: int = 300,
             sd_seed: float = 0.15):
    """(a (S, N), b (S, N), labels (N,)) class ids of two settings on the same examples."""
    z = rng.normal(0, SD_EXAMPLE, n)
    y = rng.integers(0, 2, n)

    def preds(mu):
        u = rng.normal(0, sd_seed, (seeds, 1))
        correct = rng.random((seeds, n)) < expit(mu + z + u)
        return np.where(correct, y, 1 - y)

    return preds(mu_a), preds(mu_b), y


# ------------------------------------------------------------------------------- coverage
@pytest.mark.parametrize("seeds, sd_seed, runs", [(3, 0.15, 200), (1, 0.0, 100)])
def test_interval_covers_the_true_difference_about_95_percent(seeds, sd_seed, runs):
    # 3 seeds: the two-level bootstrap; 1 seed (no seed effect): scipy.stats.bootstrap.
    # A seed effect of 0.15 on the logit is a seed-to-seed sd of accuracy of about 0.018.
    mu_a, mu_b = 1.6, 1.5
    truth = true_accuracy(mu_a, sd_seed) - true_accuracy(mu_b, sd_seed)
    rng = np.random.default_rng(0)
    hits = 0
    for i in range(runs):
        a, b, y = simulate(rng, mu_a, mu_b, seeds=seeds, sd_seed=sd_seed)
        e = paired_effect(a, b, y, metric="accuracy", claim="equivalent", margin=0.05,
                          n_boot=400, random_state=i)
        hits += e.low <= truth <= e.high
    assert 0.90 <= hits / runs <= 0.99


def test_equivalence_is_inconclusive_with_few_examples_and_reproduced_with_many():
    rng = np.random.default_rng(1)
    a, b, y = simulate(rng, 1.5, 1.5, n=30)
    assert paired_effect(a, b, y, metric="accuracy", claim="equivalent",
                         margin=0.02).verdict == "inconclusive"
    a, b, y = simulate(rng, 1.5, 1.5, n=20000, sd_seed=0.05)
    e = paired_effect(a, b, y, metric="accuracy", claim="equivalent", margin=0.02)
    assert e.verdict == "reproduced", e.sentence()
    assert e.p_test == "ttost_paired" and 0 < e.p_value < 1   # TOST on 3 seeds: 2 df, weak


# -------------------------------------------------------------------------------- verdicts
@pytest.mark.parametrize("low, high, claim, margin, expected", [
    # equivalent: inside (-m, m) / wholly outside / straddling; the band is open
    (-0.009, 0.009, "equivalent", 0.01, "reproduced"),
    (-0.01, 0.005, "equivalent", 0.01, "inconclusive"),
    (0.01, 0.03, "equivalent", 0.01, "not reproduced"),
    (-0.05, -0.01, "equivalent", 0.01, "not reproduced"),
    (0.005, 0.02, "equivalent", 0.01, "inconclusive"),
    (-0.02, 0.02, "equivalent", 0.01, "inconclusive"),
    # better, margin 0: low > 0 / high <= 0 / straddling 0
    (0.001, 0.02, "better", 0.0, "reproduced"),
    (0.0, 0.02, "better", 0.0, "inconclusive"),
    (-0.02, 0.0, "better", 0.0, "not reproduced"),
    (0.0, 0.0, "better", 0.0, "not reproduced"),
    # better, margin 0.01: an advantage wholly at most the margin does not count
    (0.002, 0.008, "better", 0.01, "not reproduced"),
    (0.002, 0.01, "better", 0.01, "not reproduced"),
    (0.002, 0.011, "better", 0.01, "reproduced"),
    (-0.002, 0.03, "better", 0.01, "inconclusive"),
    # worse: the mirror image
    (-0.02, -0.001, "worse", 0.0, "reproduced"),
    (-0.02, 0.0, "worse", 0.0, "inconclusive"),
    (0.0, 0.02, "worse", 0.0, "not reproduced"),
    (-0.008, -0.002, "worse", 0.01, "not reproduced"),
    (-0.011, -0.002, "worse", 0.01, "reproduced"),
    (-0.03, 0.002, "worse", 0.01, "inconclusive"),
    # noninferior: low > -m / high <= -m / straddling -m
    (-0.009, 0.05, "noninferior", 0.01, "reproduced"),
    (-0.01, 0.05, "noninferior", 0.01, "inconclusive"),
    (-0.05, -0.01, "noninferior", 0.01, "not reproduced"),
    (0.001, 0.01, "noninferior", 0.0, "reproduced"),
    (-0.001, 0.01, "noninferior", 0.0, "inconclusive"),
])
def test_verdict_rules_at_their_boundaries(low, high, claim, margin, expected):
    assert verdict_of(low, high, claim, margin) == expected


def test_verdict_of_checks_its_input():
    with pytest.raises(ConfigError, match="'claim'"):
        verdict_of(0.0, 0.1, "similar", 0.01)
    with pytest.raises(ConfigError, match="'margin'"):
        verdict_of(0.0, 0.1, "better", -0.01)
    with pytest.raises(ConfigError, match="'margin'"):
        verdict_of(0.0, 0.1, "equivalent", 0.0)
    with pytest.raises(ConfigError, match="'low'"):
        verdict_of(0.2, 0.1, "better", 0.0)
    with pytest.raises(ConfigError, match="'high'"):
        verdict_of(0.0, float("nan"), "better", 0.0)


# (mu_a, mu_b, examples, margin) per claim kind and expected verdict; 3 seeds each.
_BIG, _SAME, _FEW = 20000, 20000, 60
END_TO_END = [
    ("better", 2.5, 1.0, _BIG, 0.0, "reproduced"),
    ("better", 1.5, 1.5, _SAME, 0.02, "not reproduced"),
    ("better", 1.6, 1.5, _FEW, 0.0, "inconclusive"),
    ("worse", 1.0, 2.5, _BIG, 0.0, "reproduced"),
    ("worse", 1.5, 1.5, _SAME, 0.02, "not reproduced"),
    ("worse", 1.5, 1.6, _FEW, 0.0, "inconclusive"),
    ("equivalent", 1.5, 1.5, _SAME, 0.02, "reproduced"),
    ("equivalent", 2.5, 1.0, _BIG, 0.02, "not reproduced"),
    ("equivalent", 1.5, 1.5, _FEW, 0.02, "inconclusive"),
    ("noninferior", 1.5, 1.5, _SAME, 0.02, "reproduced"),
    ("noninferior", 1.0, 2.5, _BIG, 0.02, "not reproduced"),
    ("noninferior", 1.5, 1.5, _FEW, 0.02, "inconclusive"),
]


@pytest.mark.parametrize("claim, mu_a, mu_b, n, margin, expected", END_TO_END)
def test_each_verdict_comes_out_where_it_should(claim, mu_a, mu_b, n, margin, expected):
    a, b, y = simulate(np.random.default_rng(2), mu_a, mu_b, n=n, sd_seed=0.05)
    e = paired_effect(a, b, y, metric="accuracy", claim=claim, margin=margin, n_boot=1000)
    assert e.verdict == expected, e.sentence()


def test_all_verdicts_and_claims_are_covered():
    assert {row[-1] for row in END_TO_END} == set(VERDICTS)
    assert {row[0] for row in END_TO_END} == set(CLAIM_KINDS)


# ------------------------------------------------------------------------------ the effect
def test_estimate_is_the_difference_of_seed_averaged_scores():
    a, b, y = simulate(np.random.default_rng(3), 1.8, 1.2)
    e = paired_effect(a, b, y, metric="accuracy", claim="better", margin=0.0)
    acc_a = np.mean([skm.accuracy_score(y, r) for r in a])
    acc_b = np.mean([skm.accuracy_score(y, r) for r in b])
    assert e.estimate == pytest.approx(acc_a - acc_b)
    assert (e.score_a, e.score_b) == pytest.approx((acc_a, acc_b))
    assert e.low < e.estimate < e.high
    assert (e.n_seeds, e.n_examples, e.confidence) == (3, 300, 0.95)
    r = paired_effect(a, b, y, metric="accuracy", claim="noninferior", margin=0.02, scale="ratio")
    assert r.estimate == pytest.approx(acc_a / acc_b - 1)


def test_same_random_state_same_interval_and_a_row_without_seeds_is_broadcast():
    a, b, y = simulate(np.random.default_rng(4), 1.8, 1.2)
    one = paired_effect(a, b[:1], y, metric="accuracy", claim="better", margin=0.0)
    again = paired_effect(a, np.repeat(b[:1], 3, axis=0), y, metric="accuracy",
                          claim="better", margin=0.0)
    assert one.estimate == pytest.approx(again.estimate)
    assert one == paired_effect(a, b[:1], y, metric="accuracy", claim="better", margin=0.0)


def test_seed_level_p_values_come_from_scipy_and_statsmodels():
    from statsmodels.stats.weightstats import ttost_paired

    a, b, y = simulate(np.random.default_rng(5), 1.7, 1.5, seeds=4)
    sa, sb = metric_scores(a, y, "accuracy"), metric_scores(b, y, "accuracy")
    better = paired_effect(a, b, y, metric="accuracy", claim="better", margin=0.0)
    assert better.p_value == pytest.approx(ttest_rel(sa, sb, alternative="greater").pvalue)
    eq = paired_effect(a, b, y, metric="accuracy", claim="equivalent", margin=0.03)
    assert eq.p_value == pytest.approx(ttost_paired(sa, sb, -0.03, 0.03)[0])
    assert eq.p_test == "ttost_paired"
    two = paired_effect(a[:2], b[:2], y, metric="accuracy", claim="better", margin=0.0)
    assert two.p_value is None


def test_effect_round_trips_through_json_and_reads_as_a_sentence():
    a, b, y = simulate(np.random.default_rng(6), 1.5, 1.6)
    e = paired_effect(a, b, y, metric="accuracy", claim="worse", margin=0.01,
                      label="layer 4 head - layer 6 head")
    back = Effect.from_dict(json.loads(json.dumps(e.to_dict())))
    assert back == e
    text = e.sentence()
    assert text.startswith("layer 4 head - layer 6 head: ")
    assert f"[{e.low:+.3f}, {e.high:+.3f}]" in text and text.endswith(f"-> {e.verdict}")
    assert "worse (margin 0.010)" in text


# ------------------------------------------------------------------------------ metrics
def test_vectorised_metrics_equal_sklearn_and_scipy():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 4, 200)
    p = np.where(rng.random((2, 200)) < 0.6, y, rng.integers(0, 5, (2, 200)))
    assert metric_scores(p, y, "matthews") == pytest.approx(
        [skm.matthews_corrcoef(y, r) for r in p])
    assert metric_scores(p, y, "macro_f1") == pytest.approx(
        [skm.f1_score(y, r, average="macro") for r in p])
    yb, pb = y % 2, p % 2
    assert metric_scores(pb, yb, "f1") == pytest.approx([skm.f1_score(yb, r) for r in pb])
    s = rng.normal(size=200)
    q = s + rng.normal(size=(2, 200))
    assert metric_scores(q, s, "pearson") == pytest.approx([pearsonr(r, s)[0] for r in q])
    assert metric_scores(q, s, "spearman") == pytest.approx([spearmanr(r, s)[0] for r in q])
    assert metric_scores(np.ones((1, 200)), s, "pearson") == pytest.approx([0.0])


def test_regression_with_pearson():
    rng = np.random.default_rng(8)
    y = rng.uniform(0, 5, 400)
    good = y + rng.normal(0, 0.8, (3, 400))
    poor = y + rng.normal(0, 3.0, (3, 400))
    e = paired_effect(good, poor, y, metric="pearson", claim="better", margin=0.05)
    expect = np.mean([pearsonr(r, y)[0] for r in good]) - np.mean([pearsonr(r, y)[0] for r in poor])
    assert e.estimate == pytest.approx(expect)
    assert e.verdict == "reproduced" and e.metric == "pearson"
    same = paired_effect(good, good[::-1], y, metric="pearson", claim="equivalent", margin=0.05,
                         scale="ratio")
    assert same.verdict == "reproduced", same.sentence()


def test_a_callable_metric():
    a, b, y = simulate(np.random.default_rng(9), 1.8, 1.2, n=100)

    def balanced(p, t):
        return skm.balanced_accuracy_score(t, p)

    e = paired_effect(a, b, y, metric=balanced, claim="better", margin=0.0, n_boot=200)
    assert e.metric == "balanced"
    assert e.estimate == pytest.approx(np.mean([balanced(r, y) for r in a])
                                       - np.mean([balanced(r, y) for r in b]))


# ----------------------------------------------------------------------------- bad input
def _good():
    a, b, y = simulate(np.random.default_rng(10), 1.5, 1.5, n=50)
    return dict(a=a, b=b, labels=y, metric="accuracy", claim="better", margin=0.0)


def _nan(x):
    x = x.astype(float)
    x[0, 0] = np.nan
    return x


@pytest.mark.parametrize("change, name", [
    (lambda k: {"a": k["a"][:, :40]}, "a"),
    (lambda k: {"b": k["b"][:, :40]}, "b"),
    (lambda k: {"b": k["b"][:2]}, "b"),
    (lambda k: {"a": k["a"][:0]}, "a"),
    (lambda k: {"a": k["a"][None]}, "a"),
    (lambda k: {"labels": k["labels"][:, None]}, "labels"),
    (lambda k: {"a": _nan(k["a"])}, "a"),
    (lambda k: {"b": _nan(k["b"])}, "b"),
    (lambda k: {"labels": np.where(np.arange(50) == 3, np.nan, k["labels"])}, "labels"),
    (lambda k: {"claim": "similar"}, "claim"),
    (lambda k: {"scale": "log"}, "scale"),
    (lambda k: {"metric": "auc"}, "metric"),
    (lambda k: {"margin": -0.01}, "margin"),
    (lambda k: {"margin": float("nan")}, "margin"),
    (lambda k: {"claim": "equivalent", "margin": 0.0}, "margin"),
    (lambda k: {"confidence": 1.5}, "confidence"),
    (lambda k: {"n_boot": 10}, "n_boot"),
    (lambda k: {"metric": "f1", "labels": k["labels"] + 1}, "metric"),
    (lambda k: {"scale": "ratio", "b": np.zeros_like(k["b"]), "labels": np.ones(50)}, "scale"),
])
def test_bad_input_raises_config_error_naming_the_parameter(change, name):
    kwargs = _good()
    kwargs.update(change(kwargs))
    a, b, y = kwargs.pop("a"), kwargs.pop("b"), kwargs.pop("labels")
    with pytest.raises(ConfigError, match=f"parameter '{name}'"):
        paired_effect(a, b, y, **kwargs)


# --------------------------------------------------------------- one value per seed
def test_seed_effect_is_the_paired_t_interval_over_seeds():
    a, b = np.array([0.52, 0.55, 0.50, 0.54]), np.array([0.40, 0.47, 0.41, 0.43])
    e = seed_effect(a, b, claim="better", margin=0.05, metric="distance")
    ci = ttest_rel(a, b).confidence_interval(0.95)
    assert (e.estimate, e.low, e.high) == pytest.approx(((a - b).mean(), ci.low, ci.high))
    assert e.verdict == verdict_of(ci.low, ci.high, "better", 0.05)
    assert e.p_value == pytest.approx(ttest_rel(a, b, alternative="greater").pvalue)
    fixed = seed_effect([2.0, 3.0, 2.0], 4, claim="equivalent", margin=2.0, metric="component")
    assert fixed.estimate == pytest.approx(-5 / 3) and fixed.high < 0
    assert fixed.verdict == "inconclusive"
    same = seed_effect([2, 2, 2], [2], claim="equivalent", margin=1.0)
    assert (same.low, same.high, same.verdict) == (0.0, 0.0, "reproduced")


def test_seed_effect_on_the_ratio_scale_is_a_geometric_mean():
    a, b = np.array([0.010, 0.012, 0.011]), np.array([0.50, 0.52, 0.49])
    e = seed_effect(a, b, claim="worse", margin=0.5, scale="ratio")
    assert e.estimate == pytest.approx(np.exp(np.log(a / b).mean()) - 1)
    assert e.low < e.estimate < e.high < -0.5 and e.verdict == "reproduced"


@pytest.mark.parametrize("kwargs, name", [
    ({"a": [0.5]}, "a"),
    ({"b": [0.1, 0.2]}, "b"),
    ({"a": [0.5, np.nan, 0.4]}, "a"),
    ({"scale": "ratio", "b": [0.0, 0.1, 0.1]}, "scale"),
    ({"claim": "different"}, "claim"),
])
def test_seed_effect_bad_input(kwargs, name):
    args = {"a": [0.5, 0.6, 0.4], "b": [0.3, 0.2, 0.25], "claim": "better", "margin": 0.0}
    args.update(kwargs)
    with pytest.raises(ConfigError, match=f"parameter '{name}'"):
        seed_effect(args.pop("a"), args.pop("b"), **args)
