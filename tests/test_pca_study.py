"""The crossing index of section 3.1.3 with its bootstrap interval and its no-fine-tuning null
(bertdims.analysis.pca), on simulated representations whose crossing point is known."""
import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import PCA

from bertdims.core._validate import ConfigError
from bertdims.analysis.pca import (components_effects, crossing_bootstrap, crossing_effect, crossing_index,
                          crossing_null, crossing_table, explained_variance_ratios)

D = 12
SPREAD = np.linspace(3.0, 1.0, D)           # pretrained: distinct, slowly decaying spectrum


def _pretrained(n=600, seed=0):
    return np.random.default_rng(seed).normal(size=(n, D)) * SPREAD


def _finetuned(P, boosted: int, factor: float = 3.0):
    """The same sentences with the first ``boosted`` directions stretched: their share of the
    variance grows, every later one shrinks, so the crossing index is ``boosted + 1``."""
    F = P.copy()
    F[:, :boosted] *= factor
    return F


def test_explained_variance_ratios_match_sklearn_and_weights_mean_repeated_rows():
    X = _pretrained(200)
    evr = explained_variance_ratios(X)
    assert evr.shape == (D,) and np.isclose(evr.sum(), 1.0)
    assert np.allclose(evr, PCA().fit(X).explained_variance_ratio_, atol=1e-10)
    w = np.random.default_rng(1).integers(0, 3, size=len(X))
    assert np.allclose(explained_variance_ratios(X, w),
                       PCA().fit(np.repeat(X, w, axis=0)).explained_variance_ratio_, atol=1e-10)
    with pytest.raises(ConfigError):
        explained_variance_ratios(X, -np.ones(len(X)))


def test_crossing_index_counts_from_one_and_skips_components_without_variance():
    assert crossing_index([0.5, 0.3, 0.1, 0.1], [0.4, 0.3, 0.2, 0.1]) == 3   # equal is not below
    assert crossing_index([0.3, 0.7], [0.6, 0.4]) == 1
    assert crossing_index([0.6, 0.4, 0.0], [0.5, 0.5, 0.0]) == 2
    # nothing below 1 among the compared components: one past them; B's empty tail is ignored
    assert crossing_index([0.5, 0.5, 0.0], [0.5, 0.5, 0.0]) == 3


def test_bootstrap_finds_a_planted_crossing_and_the_verdict_follows_the_classes():
    P = _pretrained()
    res = crossing_bootstrap([_finetuned(P, 4), _finetuned(P, 4, 3.5)], P, n_boot=60)
    assert res["per_seed"].tolist() == [5, 5] and res["estimate"] == 5.0
    assert np.all(res["replicates"] == 5)
    eff = crossing_effect(res["per_seed"], res["replicates"], 5, margin=2.0)
    assert (eff.estimate, eff.low, eff.high, eff.verdict) == (0.0, 0.0, 0.0, "reproduced")
    far = crossing_effect(res["per_seed"], res["replicates"], 12, margin=2.0)
    assert far.estimate == -7.0 and far.verdict == "not reproduced"
    assert far.n_seeds == 2 and far.claim == "equivalent"


def test_bootstrap_resamples_seeds_so_disagreeing_seeds_widen_the_interval():
    P = _pretrained()
    res = crossing_bootstrap([_finetuned(P, 2), _finetuned(P, 5)], P, n_boot=200, random_state=3)
    assert res["per_seed"].tolist() == [3, 6] and res["estimate"] == 4.5
    # the mean over two resampled seeds: both 3, one of each, or both 6
    assert set(np.unique(res["replicates"])) == {3.0, 4.5, 6.0}
    eff = crossing_effect(res["per_seed"], res["replicates"], 4, margin=1.0)
    assert (eff.low, eff.high) == (-1.0, 2.0) and eff.verdict == "inconclusive"


def test_bootstrap_resamples_sentences_near_a_tie():
    P = _pretrained(300)
    F = _finetuned(P, 3)
    v = SPREAD ** 2
    rest = 9 * v[:3].sum() + v[4:].sum()
    F[:, 3] *= np.sqrt(rest / (v.sum() - v[3]))   # the 4th direction's share equals its pretrained one
    res = crossing_bootstrap([F], P, n_boot=200, random_state=0)
    assert res["replicates"].min() < res["replicates"].max()      # sentences resampled
    assert set(np.unique(res["replicates"])) <= set(range(1, D + 2))


def test_null_compares_two_different_halves_of_the_pretrained_sentences():
    P = _pretrained(800)
    null = crossing_null(P, n_null=100, random_state=0)
    assert null.shape == (100,) and null.min() >= 1
    # comparing a half with itself would give no ratio below 1 (index D + 1)
    assert null.max() <= D
    # sampling noise alone puts the crossing early: a coin flip per component
    assert null.mean() < 3
    assert np.array_equal(null, crossing_null(P, n_null=100, random_state=0))


def test_crossing_table_places_the_estimate_against_the_null():
    study = {"per_seed": pd.DataFrame({"task": ["a", "a", "b", "b"], "classes": [2, 2, 5, 5],
                                       "seed": [0, 1, 0, 1], "crossing": [2, 3, 5, 6]}),
             "replicates": pd.DataFrame({"task": ["a"] * 4 + ["b"] * 4,
                                         "crossing": [2, 2.5, 3, 2.5, 5, 5.5, 6, 5.5]}),
             "null": pd.DataFrame({"draw": range(4), "crossing": [1, 2, 3, 1]})}
    t = crossing_table(study).set_index("task")
    assert t.loc["a", "crossing"] == 2.5 and t.loc["b", "per_seed"] == "5, 6"
    assert t.loc["a", "null_share"] == 0.25 and t.loc["b", "null_share"] == 0.0
    assert t.loc["a", "low"] >= 2 and t.loc["a", "high"] <= 3


def test_inputs_that_do_not_pair_sentences_are_refused():
    P = _pretrained(50)
    with pytest.raises(ConfigError):
        crossing_bootstrap([P[:40]], P, n_boot=5)
    with pytest.raises(ConfigError):
        crossing_bootstrap([], P, n_boot=5)
    with pytest.raises(ConfigError):
        crossing_effect([3], [], 2, margin=1.0)


def test_components_effects_give_seed_intervals_on_the_fine_tuned_model():
    rows = []
    for seed in range(3):
        for basis, acc in (("general", 0.80), ("random", 0.60), ("in-domain", 0.85)):
            for n in (1, 5, 10):
                rows.append({"task": "t", "model": "finetuned", "seed": seed, "basis": basis,
                             "n": n, "accuracy": acc + 0.01 * seed + (0.005 if n == 5 else 0)})
    summary = pd.DataFrame({"task": "t", "seed": range(3),
                            "finetuned_all": [0.806, 0.816, 0.826]})
    eff = components_effects({"curves": pd.DataFrame(rows), "summary": summary}, margin=0.01)
    assert eff["t: general - random, 5 dims"].verdict == "reproduced"
    assert eff["t: in-domain - general, 5 dims"].verdict == "reproduced"
    five = eff["t: 5 general - all dims"]
    assert five.estimate == pytest.approx(-0.001) and five.verdict == "reproduced"
    one_seed = {"curves": pd.DataFrame(rows).query("seed == 0"), "summary": summary.head(1)}
    assert components_effects(one_seed) == {}
