import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

import bertdims as bd
from bertdims.analysis.pca import (PCAConfig, TorchPCA, component_curve, component_grid, first_below_one,
                          linear_accuracy, sample_size_curve, variance_ratios)
from result_checks import check_result


def _data(n=300, d=12, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * np.linspace(3, 0.5, d)      # decreasing variances
    y = (X[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(int)   # label lives on the top direction
    return X.astype(np.float32), y


def test_torch_pca_matches_sklearn():
    from sklearn.decomposition import PCA
    X, _ = _data()
    ours = TorchPCA(device="cpu", chunk_size=37).fit(X)        # chunks that do not divide n
    ref = PCA().fit(X.astype(np.float64))
    np.testing.assert_allclose(ours.explained_variance_ratio_, ref.explained_variance_ratio_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(np.abs(ours.components_ @ ref.components_.T), np.eye(X.shape[1]), atol=1e-6)
    np.testing.assert_allclose(np.abs(ours.transform(X)), np.abs(ref.transform(X)), atol=1e-4)
    assert ours.explained_variance_ratio_.sum() <= 1 + 1e-9
    assert np.all(np.diff(ours.explained_variance_) <= 1e-9)


def test_torch_pca_on_memmap_and_bad_input(tmp_path):
    X, _ = _data()
    path = tmp_path / "x.npy"
    np.save(path, X)
    mm = np.load(path, mmap_mode="r")
    a = TorchPCA(3, device="cpu", chunk_size=50).fit(mm)
    b = TorchPCA(3, device="cpu").fit(np.asarray(X))
    np.testing.assert_allclose(a.explained_variance_, b.explained_variance_, rtol=1e-9)
    assert a.components_.shape == (3, X.shape[1])
    with pytest.raises(bd.ConfigError, match="n_components"):
        TorchPCA(13, device="cpu").fit(X)
    X[5, 2] = np.nan
    with pytest.raises(bd.ConfigError, match="finite"):
        TorchPCA(device="cpu").fit(X)


def test_component_curve_in_domain_beats_random_on_a_planted_signal():
    X, y = _data(n=600, d=12)
    rng = np.random.default_rng(1)
    X = X[:, rng.permutation(12)]                              # the signal is not dimension 0 any more
    general = TorchPCA(device="cpu").fit(_data(n=400, d=12, seed=3)[0][:, rng.permutation(12)])
    df = component_curve(X[:400], y[:400], X[400:], y[400:], general_pca=general, ns=[1, 12],
                         seed=0, device="cpu")
    assert set(df.basis) == {"in-domain", "general", "random"}
    one = df[df.n == 1].set_index("basis").accuracy
    assert one["in-domain"] > 0.8 > one["random"] + 0.1       # the top component carries the label
    full = df[df.n == 12].accuracy
    assert full.max() - full.min() < 1e-9                      # all components = all dims: same information
    assert abs(full.iloc[0] - linear_accuracy(X[:400], y[:400], X[400:], y[400:])) < 0.02


def test_variance_ratios_and_first_below_one():
    r = variance_ratios(np.array([0.5, 0.2, 0.1]), np.array([0.25, 0.25, 0.05]))
    np.testing.assert_allclose(r.ratio, [2.0, 0.8, 2.0])
    assert first_below_one(r.ratio) == 2
    assert first_below_one([1.2, 1.0, 1.5]) is None


def test_grid_and_sample_size_curve():
    assert component_grid(384, [1, 5, 1000]) == [1, 5, 384]
    assert component_grid(10)[0] == 1 and component_grid(10)[-1] == 10
    X, y = _data(n=500)
    df = sample_size_curve(X, X[:300], y[:300], X[300:], y[300:], sizes=[5, 50, 500], n_components=3,
                           device="cpu")
    assert df.sentences.tolist() == [5, 50, 500] and df.accuracy.between(0, 1).all()


def test_config_validation():
    with pytest.raises(bd.ConfigError, match="task"):
        PCAConfig(task="stsb")
    with pytest.raises(bd.ConfigError, match="sizes"):
        PCAConfig(sizes=[1])


def test_run_pca_end_to_end_on_tiny_bert(tiny_bert, store):
    from bertdims.analysis.pca import pca_study
    out = pca_study(tiny_bert, ["rotten_tomatoes"], [0], store=store, max_train_samples=40,
                    max_eval_samples=30, max_seq_len=16, general_samples=40, sizes=[10, 40],
                    components=[1, 4, 32])
    check_result(out, tables={"curves", "ratios", "sizes", "summary"})
    assert out.metrics == {} and set(out.paths) == {("rotten_tomatoes", 0)}
    assert out.config["model"] == tiny_bert and out.config["sizes"] == [10, 40]
    curves = out["curves"]
    assert set(curves.model) == {"pretrained", "finetuned"}
    assert set(curves.basis) == {"general", "in-domain", "random"} and curves.accuracy.between(0, 1).all()
    s = out["summary"].iloc[0]
    ratios = out["ratios"]
    # hidden size 32 and 40 general sentences: min(32, 40 - 1) components of non-zero variance
    assert list(ratios.component) == list(range(1, 33)) and (ratios.ratio > 0).all()
    below = np.flatnonzero(ratios.ratio.to_numpy() < 1)       # the first component below 1, 1-based
    assert s.classes == 2 and s.first_below_one == (below[0] + 1 if len(below) else None)
    assert sorted(out["sizes"].sentences.unique()) == [10, 40]
    assert store.runs("pca").shape[0] == 1 and store.runs("representations").shape[0] == 6


@parametrize_with_checks([TorchPCA(device="cpu")])
def test_sklearn_estimator_checks(estimator, check):
    """scikit-learn's own estimator checks; what does not apply is declared in the tags."""
    check(estimator)


def test_torch_pca_refuses_sparse_and_complex_and_names_features_out():
    import scipy.sparse
    X, _ = _data(n=40, d=5)
    with pytest.raises(TypeError, match="[Ss]parse"):
        TorchPCA(device="cpu").fit(scipy.sparse.csr_matrix(X))
    with pytest.raises(ValueError, match="[Cc]omplex"):
        TorchPCA(device="cpu").fit(X + 1j)
    pca = TorchPCA(2, device="cpu").fit(X)
    assert pca.get_feature_names_out().tolist() == ["torchpca0", "torchpca1"]
    assert pca.n_features_in_ == 5 and pca.fit_transform(X).shape == (40, 2)
    with pytest.raises(ValueError, match="5 features"):
        pca.transform(X[:, :4])
