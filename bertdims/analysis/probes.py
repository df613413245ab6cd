"""The frozen linear probe the chapters share, and the check of an embeddings array.

The probe of Matton and de Oliveira (2020), sections 3.1-3.2: the features are standardised
on the training rows, then a softmax (logistic) regression with C = 1 is fitted. PCA
(:mod:`bertdims.analysis.pca`) and salient neurons (:mod:`bertdims.analysis.neurons`) score dimensions with it.
"""
from __future__ import annotations

import numpy as np

from ..core._validate import bad


def check_embeddings(X, y=None, *, name: str = "X") -> tuple[np.ndarray, np.ndarray | None]:
    """X as a finite float array (n, D) and y as class ids; ConfigError otherwise."""
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise bad(name, f"array of shape {X.shape}", "expected a non-empty 2-d array (n_examples, n_dims)")
    if not np.issubdtype(X.dtype, np.number):
        raise bad(name, f"array of dtype {X.dtype}", "expected numbers")
    finite = np.isfinite(X)
    if not finite.all():
        rows, cols = np.nonzero(~finite)
        raise bad(name, f"{(~finite).sum()} non-finite values (first at row {rows[0]}, dim {cols[0]})",
                  "embeddings must be finite (no NaN or inf); check the extraction")
    if y is None:
        return X, None
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(X):
        raise bad("y", f"array of shape {y.shape}", f"expected one label per row of {name} ({len(X)})")
    return X, y


def linear_probe():
    """The probe of sections 3.1-3.2: standardise on the training rows, then a softmax
    (logistic) regression with C = 1 (a scikit-learn pipeline)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


def linear_predictions(X_train, y_train, X_test) -> np.ndarray:
    """Test predictions (m,) of :func:`linear_probe` fitted on (X_train (n, k), y_train)."""
    return linear_probe().fit(np.asarray(X_train, dtype=np.float64), y_train).predict(
        np.asarray(X_test, dtype=np.float64))


def linear_accuracy(X_train, y_train, X_test, y_test) -> float:
    """Test accuracy of :func:`linear_probe` fitted on the training rows."""
    return float(np.mean(linear_predictions(X_train, y_train, X_test) == np.asarray(y_test)))
