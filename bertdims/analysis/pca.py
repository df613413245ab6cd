"""PCA of the [CLS] embedding (Matton & de Oliveira, "Emergent Properties of Finetuned
Language Representation Models", section 3.1).

* :class:`TorchPCA` fits PCA from a covariance accumulated in row chunks (so memory-mapped
  representations of any size fit), on the GPU when there is one.
* :func:`component_curve`: test accuracy of a linear classifier on the first n principal
  components of a PCA fitted on the general corpus ("general", 3.1.1), on the task's training
  set ("in-domain"), or on n random dimensions (the control), for n from 1 to all.
* :func:`variance_ratios`: explained-variance ratio of the fine-tuned over the pretrained model
  per component and the first index where it drops below 1 (3.1.3, Figure 4).
* :func:`sample_size_curve`: accuracy against the number of sentences the general PCA saw.
* :func:`run_pca` runs all of it for one task, one seed and both models, through the store.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from numbers import Integral

from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted, validate_data

from ..core._validate import ConfigError, ConfigMixin, bad, check_range
from ..core.result import StudyTables
from ..config.params import IntList, check_fields, own, param, study_param
from ..config.params import Interval as _Interval
from .probes import check_embeddings, linear_accuracy, linear_predictions, linear_probe  # noqa: F401
from .extract import analysis_encoder, general_array, iter_chunks, task_arrays

# The paper's numbers (BERT-base, IMDB / AG-news / DBpedia).
PAPER_FIRST_BELOW_ONE = {"IMDB": (2, 2), "AG-news": (5, 4), "DBpedia": (14, 14)}
"""task -> (first component whose variance ratio is < 1, number of classes), section 3.1.3."""
PAPER_GAP_5_COMPONENTS = {"IMDB": 0.004, "AG-news": 0.35, "DBpedia": 1.05}
"""Percentage points lost with 5 general principal components against all, fine-tuned, 3.1.2."""
PAPER_SAMPLE_SIZE = 32_000
"""Sentences the general PCA needed to match one fitted on 1M (section 3.1.1)."""


# ---------------------------------------------------------------------------- PCA
class TorchPCA(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """PCA by eigen-decomposition of the covariance, accumulated over row chunks in float64.

    It follows the scikit-learn contract (``fit`` returns self, ``transform``,
    ``fit_transform``, ``get_feature_names_out``, ``clone``; dense real input only).
    ``fit(X)`` takes X of shape (n, D) with n >= 2; ``transform(X)`` maps (n, D) to the
    projections (n, k) of the centred rows on the components.

    Parameters
    ----------
    n_components : int, optional
        The number of components k kept, in [1, D]; None keeps all D.
    device : str
        Where the covariance is accumulated and decomposed: ``"auto"``, ``"cpu"`` or
        ``"cuda"``.
    chunk_size : int
        Rows per chunk; a memory-mapped X is read chunk by chunk, never whole.

    Attributes
    ----------
    mean_ : np.ndarray, shape (D,)
        The mean of the training rows.
    components_ : np.ndarray, shape (k, D)
        The principal axes, one per row, by decreasing explained variance; the largest entry
        of each is positive.
    explained_variance_ : np.ndarray, shape (k,)
        The variance along each component (covariance with ``n - 1`` in the denominator).
    explained_variance_ratio_ : np.ndarray, shape (k,)
        Each component's share of the total variance of all D dimensions.
    n_samples_ : int
        The number of training rows n.
    n_features_in_ : int
        The number of dimensions D seen by ``fit``.

    Raises
    ------
    ConfigError
        From ``fit`` and ``transform``: input that is complex, not finite, of too few rows or
        of the wrong width, or ``n_components`` above D.
    TypeError
        Sparse input (scikit-learn's message, naming it).
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "device": [str],
        "chunk_size": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, n_components: int | None = None, *, device: str = "auto", chunk_size: int = 8192):
        self.n_components, self.device, self.chunk_size = n_components, device, chunk_size

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False            # refused with a message naming sparse input
        tags.input_tags.allow_nan = False
        return tags

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None) -> "TorchPCA":
        """Fit on X (n, D), n >= 2; ``y`` is ignored."""
        from ..core.device import pick_device
        # the shape, dtype, sparse and complex checks of scikit-learn; finiteness is checked
        # chunk by chunk below, so a memory-mapped X is never loaded whole
        try:
            X = validate_data(self, X, accept_sparse=False, dtype=[np.float64, np.float32],
                              ensure_min_samples=2, ensure_all_finite=False, copy=False)
        except ValueError as e:
            raise ConfigError(f"X: {e}") from e
        dev = pick_device(self.device)
        D = X.shape[1]
        k = D if self.n_components is None else self.n_components
        check_range("n_components", k, 1, D, integer=True)
        total = torch.zeros(D, dtype=torch.float64, device=dev)
        gram = torch.zeros(D, D, dtype=torch.float64, device=dev)
        check_embeddings(np.asarray(X[:1]))
        shift = torch.tensor(np.array(X[:1], dtype=np.float64)[0], device=dev)     # stability
        for block in iter_chunks(X, self.chunk_size):
            check_embeddings(block)
            b = torch.as_tensor(block, dtype=torch.float64, device=dev) - shift      # (c, D)
            total += b.sum(0)
            gram += b.T @ b
        n = len(X)
        mean = total / n
        cov = (gram - n * torch.outer(mean, mean)) / (n - 1)
        evals, evecs = torch.linalg.eigh(cov)                                        # ascending
        evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
        # sign convention: the largest entry of each component is positive
        signs = torch.sign(evecs[evecs.abs().argmax(0), torch.arange(D, device=dev)])
        evecs = evecs * torch.where(signs == 0, 1.0, signs)
        total_var = evals.sum()
        self.mean_ = (mean + shift).cpu().numpy()
        self.components_ = evecs[:, :k].T.cpu().numpy()
        self.explained_variance_ = evals[:k].cpu().numpy()
        self.explained_variance_ratio_ = (evals[:k] / torch.where(total_var > 0, total_var, 1.0)).cpu().numpy()
        self.n_samples_ = n
        self._n_features_out = k
        return self

    def transform(self, X) -> np.ndarray:
        """(n, D) -> (n, k) projections on the components."""
        check_is_fitted(self, "components_")
        try:
            X = validate_data(self, X, accept_sparse=False, dtype=[np.float64, np.float32], reset=False)
        except ValueError as e:
            raise ConfigError(f"X: {e}") from e
        return (np.asarray(X, dtype=np.float64) - self.mean_) @ self.components_.T


def component_grid(num_dims: int, points: list[int] | None = None) -> list[int]:
    """Numbers of components from 1 to all: the given ones (capped) or a default log grid."""
    if points is None:
        points = [1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 25, 35, 50, 75, 100, 150, 200, 300, 400, 500, 768]
    return sorted({min(int(p), num_dims) for p in points if int(p) >= 1} | {num_dims})


def component_curve(X_train, y_train, X_test, y_test, *, general_pca: TorchPCA | None,
                    ns: list[int], seed: int = 0, device: str = "auto") -> pd.DataFrame:
    """Accuracy on the first n components for each n: rows (basis, n, accuracy) with basis in
    general (``general_pca``), in-domain (PCA fitted on ``X_train``) and random (n random
    dimensions, one seeded permutation)."""
    rows = []
    bases = {"in-domain": TorchPCA(device=device).fit(X_train)}
    if general_pca is not None:
        bases["general"] = general_pca
    for name, pca in bases.items():
        Ztr, Zte = pca.transform(X_train), pca.transform(X_test)
        for n in ns:
            n_eff = min(n, Ztr.shape[1])
            rows.append({"basis": name, "n": n_eff,
                         "accuracy": linear_accuracy(Ztr[:, :n_eff], y_train, Zte[:, :n_eff], y_test)})
    order = np.random.default_rng(seed).permutation(X_train.shape[1])
    for n in ns:
        dims = order[:n]
        rows.append({"basis": "random", "n": int(n),
                     "accuracy": linear_accuracy(X_train[:, dims], y_train, X_test[:, dims], y_test)})
    return pd.DataFrame(rows)


def variance_ratios(finetuned: np.ndarray, pretrained: np.ndarray, top: int = 20) -> pd.DataFrame:
    """Per component i (1-based): explained-variance ratio fine-tuned / pretrained (Figure 4)."""
    k = min(top, len(finetuned), len(pretrained))
    return pd.DataFrame({"component": np.arange(1, k + 1),
                         "ratio": np.asarray(finetuned[:k]) / np.asarray(pretrained[:k])})


def first_below_one(ratios) -> int | None:
    """1-based index of the first component whose variance ratio is below 1 (None if none)."""
    below = np.flatnonzero(np.asarray(ratios) < 1)
    return int(below[0]) + 1 if len(below) else None


def sample_size_curve(X_general, X_train, y_train, X_test, y_test, *, sizes: list[int],
                      n_components: int, seed: int = 0, device: str = "auto") -> pd.DataFrame:
    """Accuracy on ``n_components`` general components when the general PCA is fitted on m
    sentences (a seeded random subset), for each m in ``sizes``: rows (sentences, accuracy)."""
    rows = []
    order = np.random.default_rng(seed).permutation(len(X_general))
    for m in sizes:
        m = min(int(m), len(X_general))
        k = min(n_components, X_general.shape[1], m - 1) if m > 1 else 1
        pca = TorchPCA(k, device=device).fit(np.asarray(X_general)[np.sort(order[:m])])
        rows.append({"sentences": m, "components": k, "accuracy": linear_accuracy(
            pca.transform(X_train), y_train, pca.transform(X_test), y_test)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- experiment
@dataclass
class PCAConfig(ConfigMixin):
    """One task, one seed: the analyses of section 3.1 for the pretrained and fine-tuned model.

    ``general_samples`` sentences of the general corpus fit the general PCA; ``sizes`` are the
    sample sizes of :func:`sample_size_curve` (capped at ``general_samples``), evaluated with
    ``size_components`` components; ``components`` the n of :func:`component_curve` (None:
    a log grid from 1 to all).

    Attributes
    ----------
    model : str
        The base encoder: ``"embedded"`` (all-MiniLM-L6-v2), a hub name or a local folder.
    task : str
        A registered classification task.
    seed : int
        Seed of the standard fine-tuning (:func:`bertdims.analysis.extract.standard_finetune`) and of the
        random draws of the curves, >= 0.
    max_train_samples, max_eval_samples : int or None
        Fixed random subsets of the training and test splits, at least 10 examples (None: all).
    max_seq_len : int
        Tokens per input (>= 2).
    epochs : float
        Passes over the training set of the standard fine-tuning (> 0).
    general_samples : int or None
        Sentences of the general-English corpus that fit the general PCA, at least 10 (None: all).
    sizes : list of int
        Sample sizes (>= 2 sentences) of :func:`sample_size_curve`.
    size_components : int
        Components of the general PCA evaluated in :func:`sample_size_curve` (>= 1).
    components : list of int or None
        The numbers of components of :func:`component_curve` (>= 1); None: a log grid.
    layer : int
        The layer read: 0 the embeddings, 1..L the blocks, -1 the last.
    token : str
        The token vector read: ``cls``, ``mean``, ``maxnorm`` or ``token:i``.
    device : str
        Where the PCAs run: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:<index>"``.

    Raises
    ------
    ConfigError
        When a field is out of range or ``task`` is unknown or a regression task.
    """

    model: str = param("model")
    task: str = param("task")
    seed: int = param("seed")
    max_train_samples: int | None = study_param("max_train_samples")
    max_eval_samples: int | None = study_param("max_eval_samples")
    max_seq_len: int = study_param("max_seq_len")
    epochs: float = param("epochs", 1.0)
    general_samples: int | None = param("general_samples")
    sizes: list[int] = own([50, 100, 200, 500, 1000, 3000],
                           IntList(low=2, example="[50, 100, 200]"),
                           "sentences the general PCA is fitted on, one curve point each")
    size_components: int = own(10, _Interval(int, 1, None),
                               "general components evaluated in the sample-size curve")
    components: list[int] | None = own(None, IntList(low=1, example="[1, 5, 10]"),
                                       "numbers of components of the component curve; None "
                                       "or 'all': a log grid from 1 to all", none=True)
    layer: int = param("layer")
    token: str = param("token")
    device: str = param("device")

    def __post_init__(self):
        check_fields(self)                  # every field against its constraint
        from ..data.tasks import get_task
        if get_task(self.task).is_regression:
            raise bad("task", self.task, "PCA probes need a classification task")
        for name in ("max_train_samples", "max_eval_samples", "general_samples"):
            if getattr(self, name) is not None:   # a PCA and a probe need more than the vocabulary's 1
                check_range(name, getattr(self, name), 10, integer=True)


def _state_arrays(config: PCAConfig, finetuned: bool, store):
    enc = analysis_encoder(config.model, config.task, finetuned=finetuned, seed=config.seed,
                           max_train_samples=config.max_train_samples,
                           max_eval_samples=config.max_eval_samples, max_seq_len=config.max_seq_len,
                           epochs=config.epochs, store=store)
    kw = dict(max_seq_len=config.max_seq_len, layer=config.layer, token=config.token, store=store)
    Xtr, ytr, Xte, yte = task_arrays(enc, config.task, max_train_samples=config.max_train_samples,
                                     max_eval_samples=config.max_eval_samples, **kw)
    Xg = general_array(enc, max_samples=config.general_samples, **kw)
    return Xg, Xtr, ytr, Xte, yte


def run_pca(config: PCAConfig, *, store=None):
    """Section 3.1 for one task and seed, pretrained and fine-tuned (stored, read back).

    Tables: ``curves`` (model, basis, n, accuracy), ``variance`` (model, component,
    explained_variance_ratio), ``ratios`` (component, ratio), ``sizes`` (model, sentences,
    accuracy). JSON: ``all_dims`` per model, ``num_classes``, ``first_below_one``."""
    from ..modeling.models import fingerprint_of
    from ..core.store import store_or_temporary
    from ..data.tasks import get_task
    store = store_or_temporary(store)

    def compute():
        curves, variance, sizes, all_dims, evr = [], [], [], {}, {}
        for state in ("pretrained", "finetuned"):
            Xg, Xtr, ytr, Xte, yte = _state_arrays(config, state == "finetuned", store)
            general = TorchPCA(device=config.device).fit(Xg)
            evr[state] = general.explained_variance_ratio_
            ns = component_grid(Xtr.shape[1], config.components)
            curves.append(component_curve(Xtr, ytr, Xte, yte, general_pca=general, ns=ns,
                                          seed=config.seed, device=config.device).assign(model=state))
            variance.append(pd.DataFrame({"model": state, "component": np.arange(1, len(evr[state]) + 1),
                                          "explained_variance_ratio": evr[state]}))
            size_grid = sorted({min(s, len(Xg)) for s in config.sizes})
            sizes.append(sample_size_curve(Xg, Xtr, ytr, Xte, yte, sizes=size_grid,
                                           n_components=config.size_components, seed=config.seed,
                                           device=config.device).assign(model=state))
            all_dims[state] = linear_accuracy(Xtr, ytr, Xte, yte)
        rank = min(len(evr["finetuned"]), len(Xg) - 1)     # components with non-zero variance
        ratios = variance_ratios(evr["finetuned"], evr["pretrained"], top=rank)
        return {"curves": pd.concat(curves, ignore_index=True),
                "variance": pd.concat(variance, ignore_index=True), "ratios": ratios,
                "sizes": pd.concat(sizes, ignore_index=True), "all_dims": all_dims,
                "num_classes": get_task(config.task).num_labels,
                "first_below_one": first_below_one(ratios["ratio"]),
                "general_sentences": int(len(Xg))}

    return store.cached("pca", config.to_dict(), compute, fingerprint=fingerprint_of(config.model))


def pca_study(model: str = "embedded", tasks: list[str] = ("rotten_tomatoes",), seeds: list[int] = (0,), *,
              store=None, **kw) -> StudyTables:
    """:func:`run_pca` over tasks and seeds (section 3.1), each run stored and read back.

    Parameters
    ----------
    model : str
        The encoder, as for :func:`bertdims.load_encoder`.
    tasks : list of str
        The classification tasks, one :class:`PCAConfig` each.
    seeds : list of int
        The fine-tuning seeds, one run per task and seed.
    store : ResultStore, optional
        Where the runs are cached; None keeps nothing
        (:func:`bertdims.core.store.store_or_temporary`).
    **kw
        Further :class:`PCAConfig` fields, the same for every run.

    Returns
    -------
    StudyTables
        A dict of tidy tables, with the shape of every result (:mod:`bertdims.core.result`:
        ``config`` the arguments, ``paths`` the stored runs by ``(task, seed)``, ``metrics``
        empty: it scores probes on embeddings, not runs). The tables have ``task`` and
        ``seed`` columns besides those of :func:`run_pca`: ``curves`` (rows: model, basis, n,
        accuracy), ``ratios`` (rows: component, ratio),
        ``sizes`` (rows: model, sentences, accuracy) and ``summary`` (one row per task and seed;
        columns classes, first_below_one, few_n, and per model the accuracy with all dims and
        with ``few_n`` general components).
    """
    configs = [PCAConfig(model=model, task=t, seed=s, **kw) for t in tasks for s in seeds]
    out = {"curves": [], "ratios": [], "sizes": [], "summary": []}
    paths = {}
    for c in configs:
        run = run_pca(c, store=store)
        paths[(c.task, c.seed)] = run.path
        res = run.json()
        for name in ("curves", "ratios", "sizes"):
            out[name].append(run.table(name).assign(task=c.task, seed=c.seed))
        curves = run.table("curves")
        row = {"task": c.task, "seed": c.seed, "classes": res["num_classes"],
               "first_below_one": res["first_below_one"]}
        few = _few_n(curves)
        row["few_n"] = few
        for state in ("pretrained", "finetuned"):
            five = curves[(curves.model == state) & (curves.basis == "general") & (curves.n == few)]
            row[f"{state}_all"] = res["all_dims"][state]
            row[f"{state}_5_general"] = float(five.accuracy.iloc[0])
        out["summary"].append(row)
    tables = {k: pd.concat(v, ignore_index=True) if v and isinstance(v[0], pd.DataFrame)
              else pd.DataFrame(v) for k, v in out.items()}
    return StudyTables(tables, config={"model": model, "tasks": list(tasks), "seeds": list(seeds), **kw},
                       paths=paths)


def _few_n(curves: pd.DataFrame, target: int = 5) -> int:
    """The paper's "5 components", or the largest n of the grid below it."""
    ns = sorted(curves.n.unique())
    return int(max([n for n in ns if n <= target] or ns[:1]))


# ---------------------------------------------------------------------------- the crossing index (3.1.3)
def _tensor(X, dev: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.array(X, dtype=np.float64), device=dev)   # a copy: X may be a memmap


def _evr(X: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
    """(D,) explained-variance ratios of X (n, D) float64, largest first, rows counted w (n,)
    times (None: once each); all zeros when X has no variance."""
    if w is None:
        w = torch.ones(X.shape[0], dtype=X.dtype, device=X.device)
    mean = (w @ X) / w.sum()
    Xc = X - mean
    cov = (Xc * w[:, None]).T @ Xc                                  # (D, D); the scale cancels
    if cov.device.type == "cpu":    # LAPACK through numpy: torch's CPU eigvalsh was up to 100x
        ev = torch.from_numpy(np.linalg.eigvalsh(cov.numpy()).copy())  # slower on a busy machine
    else:
        ev = torch.linalg.eigvalsh(cov)
    ev = ev.flip(0).clamp_min(0)
    total = ev.sum()
    return ev / total if total > 0 else ev


def explained_variance_ratios(X, weights=None, *, device: str = "cpu") -> np.ndarray:
    """Explained-variance ratio of every principal component of ``X`` (n, D), largest first:
    (D,), summing to 1 (all zeros when X has no variance).

    ``weights`` (n,) counts how many times each row enters (a bootstrap resample given as
    multiplicities, so no rows are copied); None counts each row once. The same numbers as
    :class:`TorchPCA`'s ``explained_variance_ratio_`` fitted on the rows repeated that often.
    """
    from ..core.device import pick_device
    dev = pick_device(device)
    X = _tensor(X, dev)
    if X.ndim != 2 or X.shape[0] < 2:
        raise bad("X", f"array of shape {tuple(X.shape)}", "expected (n, D) with n >= 2")
    w = None
    if weights is not None:
        w = _tensor(weights, dev)
        if w.shape != (X.shape[0],) or bool((w < 0).any()) or float(w.sum()) <= 0:
            raise bad("weights", f"array of shape {tuple(w.shape)}",
                      f"expected {X.shape[0]} non-negative counts, not all 0")
    return _evr(X, w).cpu().numpy()


def crossing_index(evr_a, evr_b, *, tiny: float = 1e-12) -> int:
    """Section 3.1.3's crossing point: the 1-based index of the first principal component that
    explains a smaller share of the variance for A than for B (``evr_a[i] / evr_b[i] < 1``;
    A the fine-tuned model, B the pretrained one, each with its own PCA, components sorted).

    Only components to which B gives variance (``> tiny``) are compared; if none of them drops
    below 1, the result is one past the last compared component."""
    a, b = np.asarray(evr_a, dtype=float), np.asarray(evr_b, dtype=float)
    if a.ndim != 1 or b.ndim != 1:
        raise bad("evr_a", f"arrays of shapes {a.shape}, {b.shape}", "expected two 1-D arrays")
    k = min(len(a), len(b))
    m = int((b[:k] > tiny).sum())               # ratios are sorted descending: a prefix
    below = np.flatnonzero(a[:m] < b[:m])
    return int(below[0]) + 1 if len(below) else m + 1


def _check_sentences(finetuned, pretrained) -> None:
    P = np.asarray(pretrained) if not torch.is_tensor(pretrained) else pretrained
    if P.ndim != 2 or P.shape[0] < 4:
        raise bad("pretrained", f"array of shape {tuple(P.shape)}", "expected (n, D) with n >= 4")
    if len(finetuned) < 1:
        raise bad("finetuned", "[]", "expected one array per seed, at least one")
    for s, F in enumerate(finetuned):
        if tuple(F.shape) != tuple(P.shape):
            raise bad("finetuned", f"array {s} of shape {tuple(F.shape)}",
                      f"expected the pretrained shape {tuple(P.shape)}: the same sentences")


def crossing_bootstrap(finetuned, pretrained, *, n_boot: int = 200, random_state: int = 0,
                       device: str = "cpu") -> dict:
    """The crossing index (:func:`crossing_index`, fine-tuned against pretrained) per seed, and
    its bootstrap replicates.

    Parameters
    ----------
    finetuned : sequence of S arrays (n, D)
        The same n sentences through each seed's fine-tuned encoder (row i is sentence i in
        every array and in ``pretrained``).
    pretrained : array (n, D)
        The sentences through the pretrained encoder.
    n_boot : int
        Replicates. Each resamples the n sentences with replacement (one resample shared by the
        pretrained and every fine-tuned model; each PCA is refitted on it) and the S seeds with
        replacement, and records the mean crossing index over the resampled seeds.

    Returns
    -------
    dict
        ``per_seed`` (S,) crossing index of each seed on all sentences, ``estimate`` (their
        mean), ``replicates`` (n_boot,).
    """
    from ..core.device import pick_device
    check_range("n_boot", n_boot, 1, integer=True)
    check_range("random_state", random_state, 0, integer=True)
    _check_sentences(finetuned, pretrained)
    dev = pick_device(device)
    P = _tensor(pretrained, dev)
    F = [_tensor(x, dev) for x in finetuned]
    n, S = P.shape[0], len(F)
    pt = _evr(P).cpu().numpy()
    per_seed = np.array([crossing_index(_evr(f).cpu().numpy(), pt) for f in F])
    rng = np.random.default_rng(random_state)
    reps = np.empty(n_boot)
    for r in range(n_boot):
        w = torch.as_tensor(rng.multinomial(n, np.full(n, 1.0 / n)), dtype=torch.float64, device=dev)
        pick = rng.integers(0, S, size=S)
        ptw, found = _evr(P, w).cpu().numpy(), {}
        for s in set(pick.tolist()):
            found[s] = crossing_index(_evr(F[s], w).cpu().numpy(), ptw)
        reps[r] = np.mean([found[s] for s in pick.tolist()])
    return {"per_seed": per_seed, "estimate": float(per_seed.mean()), "replicates": reps}


def crossing_null(pretrained, *, n_null: int = 200, random_state: int = 0,
                  device: str = "cpu") -> np.ndarray:
    """The crossing index with no fine-tuning at all: the sentences are split at random into
    two disjoint halves, and :func:`crossing_index` compares the PCA of one half of the
    *pretrained* representations with that of the other; ``n_null`` splits: (n_null,).

    This is what the statistic gives from sampling noise alone. Each half holds n // 2
    sentences, so the null is somewhat wider than one at the full n would be."""
    from ..core.device import pick_device
    check_range("n_null", n_null, 1, integer=True)
    check_range("random_state", random_state, 0, integer=True)
    _check_sentences([pretrained], pretrained)
    dev = pick_device(device)
    P = _tensor(pretrained, dev)
    n, rng = P.shape[0], np.random.default_rng(random_state)
    out = np.empty(n_null, dtype=int)
    for r in range(n_null):
        order = torch.as_tensor(rng.permutation(n), device=dev)
        a, b = order[:n // 2], order[n // 2:2 * (n // 2)]
        out[r] = crossing_index(_evr(P[a]).cpu().numpy(), _evr(P[b]).cpu().numpy())
    return out


def crossing_effect(per_seed, replicates, classes: int, *, margin: float,
                    label: str = "first ratio < 1 - classes", n_examples: int = 0,
                    confidence: float = 0.95):
    """The claim "the first component whose fine-tuned/pretrained variance ratio is below 1
    comes at about the number of classes" (section 3.1.3) as a
    :class:`bertdims.core.stats.Effect`: the crossing index (mean over seeds) minus ``classes``,
    with the percentile interval of the replicates of :func:`crossing_bootstrap` (shifted by
    ``classes``), an equivalence claim within ``margin`` components and
    :func:`bertdims.core.stats.verdict_of`'s verdict."""
    from ..core.stats import Effect, verdict_of
    check_range("classes", classes, 1, integer=True)
    check_range("confidence", confidence, 0, 1, low_open=True, high_open=True)
    seeds = np.asarray(per_seed, dtype=float)
    reps = np.asarray(replicates, dtype=float)
    if seeds.ndim != 1 or len(seeds) < 1 or reps.ndim != 1 or len(reps) < 1:
        raise bad("replicates", f"arrays of shapes {seeds.shape}, {reps.shape}",
                  "expected per-seed values and bootstrap replicates, 1-D and non-empty")
    tail = (1 - confidence) / 2
    low, high = (float(v) for v in np.quantile(reps - classes, [tail, 1 - tail]))
    return Effect(label=label, metric="component index", scale="difference",
                  estimate=float(seeds.mean()) - classes, low=low, high=high,
                  confidence=float(confidence), claim="equivalent", margin=float(margin),
                  verdict=verdict_of(low, high, "equivalent", margin), p_value=None,
                  n_seeds=len(seeds), n_examples=int(n_examples), score_a=float(seeds.mean()),
                  score_b=float(classes), p_test=None,
                  method="bootstrap over sentences (PCAs refitted) and seeds, percentile interval")


def _crossing_config(model: str, kw: dict) -> dict:
    return {"model": model, "version": 1, **kw}


def crossing_study(model: str = "embedded", tasks: list[str] = ("rotten_tomatoes",),
                   seeds: list[int] = (0,), *, store=None, max_train_samples: int | None = 1000,
                   max_eval_samples: int | None = 500, max_seq_len: int = 64, epochs: float = 1.0,
                   general_samples: int | None = 3000, layer: int = -1, token: str = "cls",
                   n_boot: int = 200, n_null: int = 200, top: int = 30, random_state: int = 0,
                   device: str = "auto") -> dict[str, pd.DataFrame]:
    """Section 3.1.3 with uncertainty, through the store: for each task, the crossing index of
    every seed's fine-tuned model against the pretrained one on the general sentences, with
    :func:`crossing_bootstrap` replicates; and the pretrained-against-pretrained null
    (:func:`crossing_null`), which depends on no task.

    Returns tidy tables: ``per_seed`` (task, classes, seed, crossing), ``replicates`` (task,
    replicate, crossing), ``ratios`` (task, seed, component, ratio) for the first ``top``
    components, ``null`` (draw, crossing) and ``summary`` (:func:`crossing_table`)."""
    from ..modeling.models import fingerprint_of
    from ..core.store import store_or_temporary
    from ..data.tasks import get_task
    store = store_or_temporary(store)
    check_range("top", top, 1, integer=True)
    sizes = dict(max_train_samples=max_train_samples, max_eval_samples=max_eval_samples,
                 max_seq_len=max_seq_len, epochs=epochs)
    rep = dict(max_samples=general_samples, max_seq_len=max_seq_len, layer=layer, token=token,
               store=store)
    fp = fingerprint_of(model)
    general = dict(general_samples=general_samples, max_seq_len=max_seq_len, layer=layer,
                   token=token, random_state=random_state)

    def pretrained():
        return general_array(analysis_encoder(model, store=store), **rep)

    def null():
        P = pretrained()
        draws = crossing_null(P, n_null=n_null, random_state=random_state, device=device)
        return {"null": pd.DataFrame({"draw": np.arange(n_null), "crossing": draws}),
                "sentences": int(len(P))}

    null_run = store.cached("pca_null", _crossing_config(model, {**general, "n_null": n_null}),
                            null, fingerprint=fp)
    out = {"per_seed": [], "replicates": [], "ratios": []}
    for task in tasks:
        classes = get_task(task).num_labels

        def compute(task=task):
            P = pretrained()
            F = [general_array(analysis_encoder(model, task, finetuned=True, seed=s, store=store,
                                                **sizes), **rep) for s in seeds]
            res = crossing_bootstrap(F, P, n_boot=n_boot, random_state=random_state, device=device)
            pt = explained_variance_ratios(P, device=device)
            k = min(top, len(pt))
            ratios = [pd.DataFrame({"seed": s, "component": np.arange(1, k + 1),
                                    "ratio": explained_variance_ratios(f, device=device)[:k]
                                    / np.where(pt[:k] > 0, pt[:k], np.nan)})
                      for s, f in zip(seeds, F)]
            return {"per_seed": pd.DataFrame({"seed": list(seeds), "crossing": res["per_seed"]}),
                    "replicates": pd.DataFrame({"replicate": np.arange(n_boot),
                                                "crossing": res["replicates"]}),
                    "ratios": pd.concat(ratios, ignore_index=True), "sentences": int(len(P))}

        cfg = _crossing_config(model, {**general, **sizes, "task": task, "seeds": list(seeds),
                                       "n_boot": n_boot, "top": top})
        run = store.cached("pca_crossing", cfg, compute, fingerprint=fp)
        for name in out:
            out[name].append(run.table(name).assign(task=task, classes=classes))
    tables = {k: pd.concat(v, ignore_index=True) for k, v in out.items()}
    tables["null"] = null_run.table("null")
    tables["sentences"] = int(null_run.json()["sentences"])
    tables["summary"] = crossing_table(tables)
    return tables


def crossing_effects(study: dict, *, margin: float, confidence: float = 0.95) -> dict:
    """task -> :func:`crossing_effect` from :func:`crossing_study`'s tables."""
    out = {}
    for task, df in study["per_seed"].groupby("task", sort=False):
        reps = study["replicates"][study["replicates"].task == task].crossing.to_numpy()
        out[task] = crossing_effect(df.crossing.to_numpy(), reps, int(df.classes.iloc[0]),
                                    margin=margin, confidence=confidence,
                                    label=f"{task}: first ratio < 1 - classes",
                                    n_examples=int(study.get("sentences", 0)))
    return out


def crossing_table(study: dict, confidence: float = 0.95) -> pd.DataFrame:
    """One row per task: classes, the crossing index (mean over seeds) with its bootstrap
    interval, the per-seed values, and the no-fine-tuning null: its mean, its central
    ``confidence`` range and ``null_share``, the share of null draws at or above our mean."""
    tail = (1 - confidence) / 2
    null = study["null"].crossing.to_numpy(dtype=float)
    n_lo, n_hi = np.quantile(null, [tail, 1 - tail])
    rows = []
    for task, df in study["per_seed"].groupby("task", sort=False):
        reps = study["replicates"][study["replicates"].task == task].crossing.to_numpy()
        lo, hi = np.quantile(reps, [tail, 1 - tail])
        mean = float(df.crossing.mean())
        rows.append({"task": task, "classes": int(df.classes.iloc[0]), "crossing": mean,
                     "low": float(lo), "high": float(hi),
                     "per_seed": ", ".join(str(int(v)) for v in df.crossing),
                     "null_mean": float(null.mean()), "null_low": float(n_lo),
                     "null_high": float(n_hi), "null_share": float((null >= mean).mean())})
    return pd.DataFrame(rows)


def components_effects(study: dict, *, margin: float = 0.01) -> dict:
    """Diagnostics of sections 3.1.1-3.1.2 from :func:`pca_study`, intervals over the seeds
    (:func:`bertdims.core.stats.seed_effect`; needs 2+ seeds, else empty) on the fine-tuned model
    at the paper's 5 components (or the nearest grid point below): general PCA against random
    dimensions ("better"), in-domain against general PCA ("better"), and 5 general components
    against all dimensions ("noninferior" within ``margin``). Keys ``"<task>: <comparison>"``."""
    from ..core.stats import seed_effect
    c, s = study["curves"], study["summary"]
    out = {}
    for task, df in c[c.model == "finetuned"].groupby("task", sort=False):
        few = _few_n(df)
        at = df[df.n == few].pivot_table(index="seed", columns="basis", values="accuracy")
        if len(at) < 2:
            continue
        allv = s[s.task == task].set_index("seed").finetuned_all.reindex(at.index)
        for name, a, b, claim, m in (
                (f"general - random, {few} dims", at["general"], at["random"], "better", 0.0),
                (f"in-domain - general, {few} dims", at["in-domain"], at["general"], "better", 0.0),
                (f"{few} general - all dims", at["general"], allv, "noninferior", margin)):
            out[f"{task}: {name}"] = seed_effect(a.to_numpy(), b.to_numpy(), claim=claim, margin=m,
                                                 label=f"{task} (fine-tuned): {name}",
                                                 metric="accuracy")
    return out


# ---------------------------------------------------------------------------- prose from numbers
