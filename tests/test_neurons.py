import warnings

import numpy as np
import pytest
import torch

import bertdims as bd
from bertdims.neurons import BatchedLogReg, NeuronSelector, single_neuron_accuracy, standardize


def _cls_embeddings(task, n, seed=0):
    """Real embeddings: CLS of the embedded model's last layer on a random subset of a task."""
    data = bd.load_task(task)["train"]
    idx = np.sort(np.random.default_rng(seed).choice(len(data), n, replace=False))
    sub = data.select(idx)
    X = bd.encode(bd.load_encoder("embedded"), list(sub["text"]), max_seq_len=32, device="cpu",
                  progress=False)[:, 0]
    return X, np.asarray(sub["label"])


@pytest.fixture(scope="module")
def movie():
    return _cls_embeddings("rotten_tomatoes", 240)


def _sklearn_cv(X, y, dims, folds):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    return cross_val_score(LogisticRegression(), X[:, dims], y, cv=folds).mean()


def _check_agreement(X, y, k, screen):
    """The agreement rule: same dims as SequentialFeatureSelector, or CV scores within 0.005."""
    from sklearn.feature_selection import SequentialFeatureSelector
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    Xs = standardize(X)
    folds = list(StratifiedKFold(5).split(Xs, y))
    ours = NeuronSelector(k, cv=folds, screen=screen).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sfs = SequentialFeatureSelector(LogisticRegression(), n_features_to_select=k, cv=folds).fit(Xs, y)
        # our reported scores are scikit-learn's CV scores of the chosen prefixes
        for j in range(k):
            assert abs(ours.scores_[j] - _sklearn_cv(Xs, y, ours.selected_dims_[:j + 1], folds)) <= 0.005
        if set(ours.selected_dims_) != set(np.flatnonzero(sfs.get_support())):
            for j in range(1, k + 1):   # the prefixes sklearn chose, step by step
                ref = SequentialFeatureSelector(LogisticRegression(), n_features_to_select=j, cv=folds)
                ref_dims = np.flatnonzero(ref.fit(Xs, y).get_support())
                assert abs(ours.scores_[j - 1] - _sklearn_cv(Xs, y, ref_dims, folds)) <= 0.005
    return ours, sfs


def test_agrees_with_sequential_feature_selector_binary(movie):
    X, y = movie
    ours, sfs = _check_agreement(X[:, :32], y, k=3, screen=8)
    assert ours.scores_[-1] > 0.5


def test_agrees_with_sequential_feature_selector_multiclass():
    X, y = _cls_embeddings("bbc_news", 150)
    _check_agreement(X[:, :20], y, k=2, screen=None)


def test_sklearn_contract(movie):
    from sklearn.base import clone
    X, y = movie
    sel = NeuronSelector(2, cv=4, screen=None)
    assert sel.fit(X[:, :16], y) is sel
    assert sel.selected_dims_.shape == (2,) and sel.scores_.shape == (2,)
    assert sel.get_support().sum() == 2 and sel.get_support(indices=True).tolist() == sorted(sel.selected_dims_)
    assert sel.transform(X[:, :16]).shape == (len(X), 2)
    assert np.all(np.diff(sel.scores_) >= -1e-12) or sel.scores_[1] >= sel.scores_[0] - 0.02
    assert np.isnan(sel.candidate_scores_[1, sel.selected_dims_[0]])
    assert clone(sel).get_params()["n_neurons"] == 2


def test_solver_matches_logistic_regression():
    from sklearn.linear_model import LogisticRegression
    rng = np.random.default_rng(0)
    for K in (2, 4):
        X = rng.normal(size=(200, 3))
        y = (X @ rng.normal(size=(3, K)) + rng.normal(size=(200, K))).argmax(1)
        train = np.ones(200)
        train[:50] = 0
        A = torch.tensor(np.c_[X, np.ones(200)])[None]
        W = BatchedLogReg(tol=1e-10).fit(A, torch.tensor(y), torch.tensor(train)[None], K)[0, 0].numpy()
        ref = LogisticRegression(tol=1e-10, max_iter=1000).fit(X[50:], y[50:])
        if K == 2:
            np.testing.assert_allclose(W[:-1], ref.coef_[0], atol=1e-6)
            np.testing.assert_allclose(W[-1], ref.intercept_[0], atol=1e-6)
        else:   # softmax intercepts are defined up to a common shift
            np.testing.assert_allclose(W[:-1], ref.coef_.T, atol=1e-6)
            np.testing.assert_allclose(W[-1] - W[-1].mean(), ref.intercept_ - ref.intercept_.mean(), atol=1e-6)


def test_single_neuron_accuracy_matches_sklearn(movie):
    from sklearn.linear_model import LogisticRegression
    X, y = movie
    Xtr, Xte, ytr, yte = X[:160, :6], X[160:, :6], y[:160], y[160:]
    acc = single_neuron_accuracy(Xtr, ytr, Xte, yte)
    mean, std = Xtr.mean(0), Xtr.std(0)
    for d in range(6):
        m = LogisticRegression().fit(((Xtr - mean) / std)[:, [d]], ytr)
        assert abs(acc[d] - m.score(((Xte - mean) / std)[:, [d]], yte)) <= 1 / len(yte) + 1e-9


@pytest.mark.parametrize("kw, X_change, name", [
    ({"n_neurons": 9}, None, "n_neurons"),
    ({"cv": 50}, None, "cv"),
    ({}, "nan", "X"),
    ({}, "inf", "X"),
])
def test_bad_input_raises_before_search(kw, X_change, name, monkeypatch):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 8)), np.arange(60) % 2
    if X_change == "nan":
        X[3, 2] = np.nan
    if X_change == "inf":
        X[5, 1] = np.inf
    monkeypatch.setattr(BatchedLogReg, "fit", lambda *a, **k: pytest.fail("search started"))
    with pytest.raises(bd.ConfigError, match=name):
        NeuronSelector(**{"n_neurons": 2, **kw}).fit(X, y)


def test_class_smaller_than_folds_is_named():
    X = np.random.default_rng(0).normal(size=(30, 4))
    y = np.r_[np.zeros(27), np.ones(3)].astype(int)
    with pytest.raises(bd.ConfigError, match="fewer"):
        NeuronSelector(1, cv=5).fit(X, y)


def test_run_neurons_end_to_end_on_tiny_bert(tiny_bert, store):
    from bertdims.neurons import NeuronsConfig, run_neurons, table3
    cfg = NeuronsConfig(model=tiny_bert, task="rotten_tomatoes", finetuned=False, max_train_samples=60,
                        max_eval_samples=40, max_seq_len=16, n_neurons=3, folds=3)
    run = run_neurons(cfg, store=store)
    acc = run.table("accuracy")
    assert acc.dims.tolist() == ["all", "1", "3", "natural"] and acc.accuracy.between(0, 1).all()
    sel = run.table("selection")
    assert len(sel) == 3 and sel.dim.nunique() == 3
    assert len(run.table("single")) == 32 and len(run.table("activation")) == 40
    again = run_neurons(cfg, store=store)
    assert again.path == run.path                      # read back, not recomputed
    t3 = table3(acc.assign(task="rotten_tomatoes", model="pretrained", seed=0))
    assert t3.loc[0, "random"] == 0.5 and "pretrained_1" in t3.columns
