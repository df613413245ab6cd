"""The salient-neuron verdict of section 3.2.2 (bertdims.analysis.neurons.salient_effects) and the probe
the chapters share (bertdims.analysis.pca.linear_probe), on simulated predictions of known truth."""
import numpy as np
import pandas as pd
import pytest

from bertdims.core._validate import ConfigError
from bertdims.analysis.neurons import salient_effects, table3
from bertdims.analysis.pca import linear_accuracy, linear_predictions

N, S = 400, 3


def _study(wrong_few: int, wrong_all: int = 40, seed: int = 0) -> dict:
    """Labels and probe predictions: "all" misses ``wrong_all`` examples per seed, the 5-neuron
    probe ``wrong_few`` (different examples per seed)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, N)

    def preds(wrong):
        rows = np.tile(y, (S, 1))
        for s in range(S):
            miss = rng.choice(N, wrong, replace=False)
            rows[s, miss] = 1 - rows[s, miss]
        return rows

    return {"predictions": {"t": {"labels": y, "finetuned": {"all": preds(wrong_all),
                                                              "5": preds(wrong_few)},
                                  "pretrained": {"all": preds(wrong_all)[:1],
                                                 "5": preds(120)[:1]}}}}


def test_few_neurons_as_good_as_all_is_reproduced_and_far_worse_is_not():
    same = salient_effects(_study(wrong_few=40), margin=0.05, dims="5")["t"]
    assert same.claim == "noninferior" and same.n_seeds == S and same.n_examples == N
    assert same.estimate == pytest.approx(0.0) and same.verdict == "reproduced"
    worse = salient_effects(_study(wrong_few=160), margin=0.05, dims="5")["t"]
    assert worse.estimate == pytest.approx(-0.3) and worse.verdict == "not reproduced"
    assert worse.high < -0.05 < same.low


def test_a_small_test_set_leaves_the_verdict_open():
    eff = salient_effects(_study(wrong_few=56), margin=0.03, dims="5")["t"]   # 3.5 points worse
    assert eff.low < -0.03 < eff.high and eff.verdict == "inconclusive"


def test_pretrained_effect_uses_its_single_run_and_unknown_dims_are_refused():
    eff = salient_effects(_study(wrong_few=40), margin=0.01, dims="5", state="pretrained")["t"]
    assert eff.n_seeds == 1 and eff.estimate == pytest.approx(-0.2)
    with pytest.raises(ConfigError):
        salient_effects(_study(wrong_few=40), margin=0.01, dims="natural")


def test_linear_probe_standardises_and_predicts_like_its_accuracy():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4)) * [1e-3, 1.0, 1e3, 5.0]      # wildly different scales
    y = (X[:, 0] / 1e-3 + X[:, 2] / 1e3 > 0).astype(int)
    p = linear_predictions(X[:200], y[:200], X[200:])
    assert p.shape == (100,)
    assert linear_accuracy(X[:200], y[:200], X[200:], y[200:]) == pytest.approx(np.mean(p == y[200:]))
    assert np.mean(p == y[200:]) > 0.9                          # the tiny-scale feature counts


def test_table3_reports_the_given_chance_not_one_over_classes():
    acc = pd.DataFrame({"task": "rotten_tomatoes", "model": ["pretrained", "finetuned"],
                        "dims": ["all", "all"], "accuracy": [0.7, 0.8], "seed": [0, 0]})
    t = table3(acc, {"rotten_tomatoes": 0.53})
    assert t.loc[0, "chance"] == 0.53 and t.loc[0, "classes"] == 2
