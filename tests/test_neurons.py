import warnings

import numpy as np
import pytest
import torch

from sklearn.utils.estimator_checks import parametrize_with_checks
from threadpoolctl import threadpool_limits

import bertdims as bd
import bertdims.analysis.neurons as neurons
from bertdims.analysis.neurons import BatchedLogReg, NeuronSelector, single_neuron_accuracy, standardize


@pytest.fixture(autouse=True)
def _one_thread():
    """scikit-learn's solvers on one OpenMP/BLAS thread: on a shared machine, spinning
    threads make them ten times slower."""
    with threadpool_limits(1):
        yield


def _cls_embeddings(task, n, seed=0):
    """Real embeddings: CLS of the embedded model's last layer on a random subset of a task."""
    data = bd.load_task(task)["train"]
    idx = np.sort(np.random.default_rng(seed).choice(len(data), n, replace=False))
    sub = data.select(idx)
    X = bd.analysis.extract.encode(bd.load_encoder("embedded"), list(sub["text"]), max_seq_len=32, device="cpu",
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
    # greedy forward selection: each step keeps the candidate of highest mean CV accuracy (the
    # lowest dimension on a tie) and reports that accuracy, the mean of its fold accuracies
    for step, dim in enumerate(sel.selected_dims_):
        row = sel.candidate_scores_[step]
        assert sel.scores_[step] == np.nanmax(row) and dim == np.flatnonzero(row == np.nanmax(row))[0]
    np.testing.assert_allclose(sel.scores_, sel.fold_scores_.mean(1), rtol=1e-12)
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
    monkeypatch.setattr(neurons, "_screen", lambda *a, **k: pytest.fail("search started"))
    monkeypatch.setattr(neurons, "newton_solve", lambda *a, **k: pytest.fail("search started"))
    with pytest.raises(bd.ConfigError, match=name):
        NeuronSelector(**{"n_neurons": 2, **kw}).fit(X, y)


def _synthetic(seed, n=240, D=14, K=4, signal=0.8):
    """Classes from a softmax of three planted directions plus Gumbel noise."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, D)) * rng.uniform(0.5, 2, size=D) + rng.normal(size=D)
    y = (X[:, [1, D // 2, D - 2]] @ rng.normal(size=(3, K)) * signal + rng.gumbel(size=(n, K))).argmax(1)
    return X, y


@pytest.mark.parametrize("K, screen", [(2, 3), (4, 3), (6, 3), (4, None)])
def test_same_dims_as_sequential_feature_selector_synthetic(K, screen):
    """Same dimensions as SequentialFeatureSelector(LogisticRegression()) on 2, 4 and 6
    classes, with screening (3 of 10 candidates solved first) and without; for 4 classes also
    the same order (SFS fitted for 1 and 2 features)."""
    from sklearn.feature_selection import SequentialFeatureSelector
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    X, y = _synthetic(0, n=150, D=10, K=K)
    Xs = standardize(X)
    folds = list(StratifiedKFold(5).split(Xs, y))
    ours = NeuronSelector(3, cv=folds, screen=screen).fit(X, y)
    sfs = SequentialFeatureSelector(LogisticRegression(), n_features_to_select=3, cv=folds).fit(Xs, y)
    assert set(np.flatnonzero(sfs.get_support())) == set(ours.selected_dims_)
    for j in range(3):    # our scores are scikit-learn's CV scores of the chosen prefixes, to the bit
        assert ours.scores_[j] == _sklearn_cv(Xs, y, ours.selected_dims_[:j + 1], folds)
    if K == 4 and screen is not None:
        prefixes = [set(np.flatnonzero(SequentialFeatureSelector(
            LogisticRegression(), n_features_to_select=j, cv=folds).fit(Xs, y).get_support())) for j in (1, 2)]
        assert prefixes == [set(ours.selected_dims_[:1]), set(ours.selected_dims_[:2])]
    if screen is not None:
        assert ours.converged_[np.arange(3), ours.selected_dims_].all()
        assert (ours.n_solved_ >= 3).all()


def test_where_sklearn_differs_its_solver_tolerance_decides():
    """A near-tie: SFS with the default LogisticRegression (lbfgs stops at tol=1e-4) picks
    {2, 5}; the same SFS with the solver run to convergence picks {2, 3}, as we do. The two
    candidates' CV accuracies differ by at most one example under either solver."""
    from sklearn.feature_selection import SequentialFeatureSelector
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    rng = np.random.default_rng(41)
    X = rng.normal(size=(200, 8))
    y = (X[:, :3] @ rng.normal(size=(3, 4)) * 0.6 + rng.gumbel(size=(200, 4))).argmax(1)
    Xs = standardize(X)
    folds = list(StratifiedKFold(5).split(Xs, y))
    ours = NeuronSelector(2, cv=folds).fit(X, y)
    default = SequentialFeatureSelector(LogisticRegression(), n_features_to_select=2, cv=folds).fit(Xs, y)
    tight = LogisticRegression(tol=1e-10, max_iter=10_000)
    converged = SequentialFeatureSelector(tight, n_features_to_select=2, cv=folds).fit(Xs, y)
    assert set(np.flatnonzero(default.get_support())) == {2, 5}
    assert set(np.flatnonzero(converged.get_support())) == set(ours.selected_dims_) == {2, 3}
    from sklearn.model_selection import cross_val_score
    for est in (LogisticRegression(), tight):
        a, b = (cross_val_score(est, Xs[:, d], y, cv=folds).mean() for d in ([2, 3], [2, 5]))
        assert abs(a - b) <= 1 / len(y) + 1e-12


def test_screening_solves_few_candidates_on_many_dims():
    """With 60 candidates and a clear signal, the screen sends only a handful to the exact solver,
    and the answer equals the exhaustive search's."""
    X, y = _synthetic(3, n=300, D=60, K=5, signal=1.5)
    fast = NeuronSelector(3, cv=5, screen=6).fit(X, y)
    full = NeuronSelector(3, cv=5, screen=None).fit(X, y)
    assert fast.selected_dims_.tolist() == full.selected_dims_.tolist()
    np.testing.assert_allclose(fast.scores_, full.scores_)
    assert fast.n_solved_.max() < 20 and (full.n_solved_ == [60, 59, 58]).all()
    est = fast.candidate_scores_[~fast.converged_ & ~np.isnan(fast.candidate_scores_)]
    assert np.all((est >= 0) & (est <= 1)) and fast.n_iter_ >= 1


def test_cv_accepts_a_splitter_and_gives_the_same_folds():
    from sklearn.model_selection import StratifiedKFold
    X, y = _synthetic(3, D=8)
    a = NeuronSelector(2, cv=StratifiedKFold(4)).fit(X, y)
    b = NeuronSelector(2, cv=4).fit(X, y)
    assert a.selected_dims_.tolist() == b.selected_dims_.tolist()


@pytest.mark.parametrize("X, y, match", [
    ("sparse", None, "[Ss]parse"),
    ("complex", None, "[Cc]omplex"),
    (np.zeros((0, 4)), np.zeros(0), "0 sample"),
    ("continuous", None, "[Uu]nknown label type"),
])
def test_refused_input_says_why(X, y, match):
    rng = np.random.default_rng(0)
    Xd, yd = rng.normal(size=(40, 4)), np.arange(40) % 2
    if isinstance(X, str):
        if X == "sparse":
            import scipy.sparse
            X, y = scipy.sparse.csr_matrix(Xd), yd
        elif X == "complex":
            X, y = Xd + 1j, yd
        else:
            X, y = Xd, rng.normal(size=40)
    with pytest.raises((TypeError, ValueError), match=match):   # scikit-learn's types and words
        NeuronSelector(1, cv=2).fit(X, y)


@parametrize_with_checks([NeuronSelector(n_neurons=1, cv=2)])
def test_sklearn_estimator_checks(estimator, check):
    """scikit-learn's own estimator checks; what does not apply is declared in the tags."""
    check(estimator)


def test_class_smaller_than_folds_is_named():
    X = np.random.default_rng(0).normal(size=(30, 4))
    y = np.r_[np.zeros(27), np.ones(3)].astype(int)
    with pytest.raises(bd.ConfigError, match="fewer"):
        NeuronSelector(1, cv=5).fit(X, y)


def test_run_neurons_end_to_end_on_tiny_bert(tiny_bert, store):
    from bertdims.analysis.neurons import NeuronsConfig, run_neurons, table3
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
    assert 0 < t3.loc[0, "chance"] < 1 and "pretrained_1" in t3.columns
