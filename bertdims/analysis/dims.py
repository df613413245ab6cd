"""Finding the few dimensions of a fine-tuned representation that carry a task, and
measuring how much of the full performance they keep.

Reproduces the dimension-selection experiments of *Few Dimensions are Enough: Fine-tuning
BERT with Selected Dimensions Revealed Its Redundant Nature* (2025): "most tasks require only
2-3 dimensions" of the final layer's [CLS] vector, reaching over 98% of full performance.

The pipeline, for one fine-tuned model (book chapter ``04_few_dimensions``):

1. :func:`representations_of` reads the token vector the classifier's head reads, for every
   split of the task: a :class:`Representations` with arrays ``(N, H)``.
2. :func:`rank_dimensions` orders the ``H`` dimensions by importance:

   * ``"single"``: a one-dimensional model per dimension (logistic regression on that
     dimension alone, or a one-dimensional linear fit for regression tasks), fitted on the
     ``train`` split and scored with the task's headline metric on ``validation``;
   * ``"ablation"``: take the top ``candidates`` dimensions of the ``"single"`` ranking, keep
     only them (every other dimension is replaced by its train mean) and drop one candidate at
     a time (set it to its train mean too); a dimension's score is the rise in the validation
     loss (cross-entropy, or squared error for regression) when it is dropped, the drop in the
     metric being kept beside it. The model that reads the masked vector is the fine-tuned
     head when one is given, else a linear model refitted on the candidates.

3. :func:`evaluate_k` keeps the top ``k`` dimensions for ``k`` in 1, 2, 3, 5, 10 and all, and
   scores them on the ``test`` split (never used for ranking), in up to three ways:

   * ``"masked"``: the fine-tuned head reads the vector with every other dimension replaced
     by its train mean (no training at all);
   * ``"refit"``: a linear head (logistic regression / least squares on standardised values)
     fitted on the train split, reading only the ``k`` dimensions;
   * ``"retrain"`` (:func:`retrain_k`): the whole model is fine-tuned afresh with a head that
     reads only the ``k`` dimensions (``FinetuneConfig(dims=...)``).

   Every row carries the share of full performance, ``value / full`` where ``full`` is the
   score of the same fine-tuned model (all dimensions, no masking, its own head) for every
   mode, so that no mode divides by a weaker reference of its own, and the share of the gain
   over chance,
   ``(value - chance) / (full - chance)``, where chance is the score of always predicting the
   most frequent training class (:func:`chance_score`).

:func:`rank_dims` runs the whole pipeline for one fine-tuning config through the results
store (kinds ``dims_rank`` and ``dims_k``), so that a chapter reruns from stored results.

4. :func:`retrain_study` is the paper's protocol and the chapter's primary measure: for every
   task, seed and k, fine-tune afresh with a head on the top k selected dimensions and on k
   random ones (:func:`random_dims`); :func:`retrain_effects` judges them against the full
   model and against each other with :func:`bertdims.core.stats.paired_effect`, and
   :func:`selection_stability` says how often the seeds select the same dimensions. The
   masked and refit modes above are diagnostics.

The module also holds the small experiment runners of the other chapters of that paper
(:func:`finetune_grid`, :func:`probe_baseline`), the references every chapter compares with
(:func:`chance_score`, the one definition of chance; :func:`constant_baseline`), and the readers
of per-example predictions the statistics layer pairs by seed and by example
(:func:`grid_predictions`, :func:`probe_predictions`, :func:`constant_predictions`).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from ..core._validate import ConfigError, bad, check_choice, check_range
from ..core import progress as _progress
from ..core.result import ResultFields, RunsResult
from ..modeling.models import model_size  # noqa: F401  (part of this module's API)
from ..data.tasks import Task, compute_metrics, get_task

METHODS = ("single", "ablation")
MODES = ("masked", "refit")
FILLS = ("mean", "zero")
DEFAULT_KS = (1, 2, 3, 5, 10, "all")

RESULTS_VERSION = 3   # part of every dims_rank / dims_k key: bump when their computation changes
#                       3: every share of full divides by the fine-tuned model's own score

HeadFn = Callable[[np.ndarray], np.ndarray]
"""Maps representations ``(N, H)`` to head outputs ``(N, C)`` (``C = 1`` for regression)."""


# ============================================================================ data
@dataclass
class Representations:
    """The token vectors one head reads, for the splits of a task.

    :func:`representations_of` builds one from a fine-tuned classifier; :func:`rank_dimensions`
    and :func:`evaluate_k` read it.

    Parameters
    ----------
    task : Task or str
        The task the vectors belong to; a name is looked up with :func:`bertdims.get_task`.
    x : dict of str to np.ndarray
        Per split name (e.g. ``"train"``, ``"validation"``, ``"test"``), the vectors as an
        array of shape (N, H), converted to float32. Every split has the same width H.
    y : dict of str to np.ndarray
        Per split name, the labels, shape (N,), one per row of ``x[split]``: class ids, or
        floats for regression.
    info : dict
        Where the vectors came from; :func:`representations_of` records ``layer`` and
        ``token``.

    Raises
    ------
    ConfigError
        ``x`` is empty, an array of ``x`` is not 2-D, a split of ``x`` has no labels or a
        different number of labels than rows, or the splits differ in width.
    """

    task: Task
    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.task, str):
            self.task = get_task(self.task)
        if not self.x:
            raise bad("x", self.x, "give at least one split")
        widths = set()
        for split, xs in self.x.items():
            xs = np.asarray(xs, dtype=np.float32)
            if xs.ndim != 2:
                raise bad(f"x[{split!r}]", xs.shape, "expected an array of shape (N, H)")
            if split not in self.y or len(self.y[split]) != len(xs):
                raise bad(f"y[{split!r}]", None if split not in self.y else len(self.y[split]),
                          f"expected {len(xs)} labels, one per row of x[{split!r}]")
            self.x[split] = xs
            self.y[split] = np.asarray(self.y[split])
            widths.add(xs.shape[1])
        if len(widths) != 1:
            raise bad("x", sorted(widths), "every split must have the same hidden size")

    @property
    def hidden_size(self) -> int:
        return next(iter(self.x.values())).shape[1]

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if name not in self.x:
            raise bad("split", name, "choose one of: " + ", ".join(self.x))
        return self.x[name], self.y[name]

    def fill_values(self, fill: str = "mean", split: str = "train") -> np.ndarray:
        """Per-dimension value that stands in for a masked dimension: (H,)."""
        check_choice("fill", fill, FILLS)
        if fill == "zero":
            return np.zeros(self.hidden_size, dtype=np.float32)
        return self.split(split)[0].mean(0)


# ============================================================================ checks
def check_ks(ks: Iterable[int | str], hidden_size: int, available: int | None = None) -> list:
    """Validate the numbers of dimensions to keep: distinct integers in [1, hidden_size]
    (and at most ``available`` ranked dimensions), or ``"all"``. Returns them in the given order."""
    if isinstance(ks, (str, int)):
        ks = [ks]
    ks = list(ks)
    if not ks:
        raise bad("ks", ks, "give at least one k (an integer >= 1 or 'all')")
    limit = hidden_size if available is None else min(hidden_size, available)
    for k in ks:
        if k == "all":
            continue
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= hidden_size:
            raise bad("ks", ks, f"every k must be 'all' or an integer in [1, {hidden_size}] "
                                f"(the hidden size); {k!r} is not")
        if k > limit:
            raise bad("ks", ks, f"k = {k} is more than the {available} ranked dimensions; "
                                "rank more candidates or choose a smaller k")
    if len(set(map(str, ks))) != len(ks):
        raise bad("ks", ks, "every k must appear once")
    return [k if k == "all" else int(k) for k in ks]


def check_order(order: Sequence[int], hidden_size: int, name: str = "dims") -> list[int]:
    """Validate a list of dimensions (distinct integers in [0, hidden_size))."""
    from ..core._validate import check_dims
    order = [int(d) if isinstance(d, np.integer) else d for d in order]
    check_dims(name, order, hidden_size)
    return list(order)


# ============================================================================ heads
def predictions(task: Task, scores: np.ndarray) -> np.ndarray:
    """Head outputs (N, C) -> predictions: argmax class ids, or the score for regression."""
    scores = np.asarray(scores)
    if task.is_regression:
        return scores.reshape(len(scores), -1)[:, 0].astype(float)
    return scores.argmax(-1)


def headline(task: Task, preds: np.ndarray, labels: np.ndarray) -> float:
    """The task's headline metric."""
    return compute_metrics(task, preds, labels)[task.metric]


def head_loss(task: Task, scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean loss of head outputs (N, C): cross-entropy of the softmax for classification,
    squared error of the first output for regression. A smooth companion of the metric, used
    to break ties and to score ablations whose metric does not move."""
    scores = np.asarray(scores, dtype=np.float64)
    if task.is_regression:
        return float(np.mean((scores.reshape(len(scores), -1)[:, 0] - np.asarray(labels, float)) ** 2))
    z = np.clip(scores, -1e4, None)
    z = z - z.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return float(-np.mean(logp[np.arange(len(z)), np.asarray(labels, dtype=int)]))


class LinearHead:
    """A linear head fitted on chosen dimensions of standardised representations.

    It follows the scikit-learn contract (``fit(x, y)`` returns the head; ``predict`` and
    ``score`` read ``x`` of shape (N, H)): logistic regression for classification, ordinary
    least squares for regression. Each dimension read is standardised with the mean and
    standard deviation of the rows given to ``fit``. ``decision(x)`` gives the head outputs
    (N, C): log-probabilities over all ``num_labels`` classes (``-inf`` for a class absent
    from the training rows), or (N, 1) values for regression.

    Parameters
    ----------
    task : Task or str
        The task: it decides between classification and regression and gives the number of
        classes and the headline metric of ``score``.
    dims : sequence of int, optional
        The dimensions the head reads, distinct integers in [0, H), checked by ``fit``; None
        reads every dimension.
    C : float
        Inverse L2 regularisation strength of the logistic regression (unused for regression).
    max_iter : int
        Most iterations of the logistic regression solver.

    Attributes
    ----------
    dims_ : list of int or None
        The dimensions read, set by ``fit`` (None: all of them).
    mean_, scale_ : np.ndarray, shape (k,)
        Per dimension read, the mean and the standard deviation (1 where it is about 0) of the
        training rows; k is ``len(dims)``, or H when ``dims`` is None.
    model_ : LogisticRegression or LinearRegression
        The fitted scikit-learn estimator, on the standardised values.
    """

    def __init__(self, task: Task | str, dims: Sequence[int] | None = None, C: float = 1.0,
                 max_iter: int = 500):
        self.task = get_task(task) if isinstance(task, str) else task
        self.dims = dims
        self.C = C
        self.max_iter = max_iter

    def _select(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return x if self.dims_ is None else x[:, self.dims_]

    def fit(self, x: np.ndarray, y: np.ndarray) -> "LinearHead":
        from sklearn.linear_model import LinearRegression, LogisticRegression
        self.dims_ = None if self.dims is None else check_order(self.dims, x.shape[1])
        xs = self._select(x)
        self.mean_ = xs.mean(0)
        self.scale_ = np.where(xs.std(0) > 1e-12, xs.std(0), 1.0)
        z = (xs - self.mean_) / self.scale_
        if self.task.is_regression:
            self.model_ = LinearRegression().fit(z, np.asarray(y, dtype=float))
        else:
            self.model_ = LogisticRegression(C=self.C, max_iter=self.max_iter)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.model_.fit(z, np.asarray(y))
        return self

    def decision(self, x: np.ndarray) -> np.ndarray:
        """Head outputs (N, C): class scores, or (N, 1) values for regression."""
        z = (self._select(x) - self.mean_) / self.scale_
        if self.task.is_regression:
            return self.model_.predict(z)[:, None]
        proba = self.model_.predict_proba(z)                          # (N, seen classes)
        full = np.full((len(z), self.task.num_labels), -np.inf)
        full[:, self.model_.classes_.astype(int)] = np.log(np.clip(proba, 1e-12, None))
        return full

    def predict(self, x: np.ndarray) -> np.ndarray:
        return predictions(self.task, self.decision(x))

    def score(self, x: np.ndarray, y: np.ndarray) -> float:
        """The task's headline metric on (x, y)."""
        return headline(self.task, self.predict(x), y)


def mask(x: np.ndarray, keep: Sequence[int], fill_values: np.ndarray) -> np.ndarray:
    """A copy of ``x`` (N, H) where every dimension outside ``keep`` holds its fill value."""
    out = np.broadcast_to(np.asarray(fill_values, dtype=x.dtype), x.shape).copy()
    keep = list(keep)
    out[:, keep] = x[:, keep]
    return out


# ============================================================================ ranking
def single_dimension_scores(reps: Representations, *, fit_split: str = "train",
                            score_split: str = "validation",
                            max_fit_samples: int | None = None) -> pd.DataFrame:
    """Score every dimension alone: a one-dimensional linear head fitted on ``fit_split`` and
    scored with the task's headline metric on ``score_split``.

    Returns a DataFrame with columns ``dim``, ``score`` (the metric) and ``loss`` (the
    validation loss of that one-dimensional head, see :func:`head_loss`): H rows.
    """
    x_fit, y_fit = reps.split(fit_split)
    x_val, y_val = reps.split(score_split)
    if max_fit_samples is not None and len(x_fit) > max_fit_samples:
        x_fit, y_fit = x_fit[:max_fit_samples], y_fit[:max_fit_samples]
    scores, losses = [], []
    for d in range(reps.hidden_size):
        out = LinearHead(reps.task, [d]).fit(x_fit, y_fit).decision(x_val)
        scores.append(headline(reps.task, predictions(reps.task, out), y_val))
        losses.append(head_loss(reps.task, out, y_val))
    return pd.DataFrame({"dim": np.arange(reps.hidden_size), "score": scores, "loss": losses})


def ablation_scores(reps: Representations, candidates: Sequence[int], *, head: HeadFn | None = None,
                    fill: str = "mean", by: str = "loss", fit_split: str = "train",
                    score_split: str = "validation") -> pd.DataFrame:
    """Drop-one ablation inside a candidate set.

    Every dimension outside ``candidates`` is replaced by its fill value; then each candidate
    in turn is replaced too, and the head is scored on ``score_split`` without it. ``head``
    maps (N, H) to outputs (the fine-tuned head); without one, a :class:`LinearHead` is fitted
    on the candidates (train split) and reads the masked vectors.

    ``by="loss"`` (default): a dimension's score is the rise in the head's loss
    (:func:`head_loss`) when it is dropped, smooth even where the metric
    does not move; ``by="metric"``: the drop in the task's headline metric (coarse: on a few
    hundred examples many drops are exactly 0).

    Returns a DataFrame with columns ``dim``, ``score``, ``metric_drop``, ``loss_rise``,
    ``kept`` (metric with the candidate set alone) and ``without`` (metric without that dimension).
    """
    check_choice("by", by, ("loss", "metric"))
    candidates = check_order(candidates, reps.hidden_size, "candidates")
    fills = reps.fill_values(fill, fit_split)
    x_val, y_val = reps.split(score_split)
    task = reps.task
    if head is None:
        linear = LinearHead(task, candidates).fit(*reps.split(fit_split))
        head = lambda x: linear.decision(x)  # noqa: E731

    def measure(x):
        out = head(x)
        return headline(task, predictions(task, out), y_val), head_loss(task, out, y_val)

    kept, kept_loss = measure(mask(x_val, candidates, fills))
    rows = []
    for d in candidates:
        rest = [c for c in candidates if c != d]
        x_m = mask(x_val, rest, fills) if rest else np.broadcast_to(fills, x_val.shape).copy()
        without, loss = measure(x_m)
        rows.append({"dim": d, "metric_drop": kept - without, "loss_rise": loss - kept_loss,
                     "kept": kept, "without": without})
    table = pd.DataFrame(rows)
    table.insert(1, "score", table["loss_rise"] if by == "loss" else table["metric_drop"])
    return table


def rank_dimensions(reps: Representations, method: str = "single", *, head: HeadFn | None = None,
                    candidates: int | Sequence[int] = 20, fill: str = "mean", by: str = "loss",
                    fit_split: str = "train", score_split: str = "validation",
                    max_fit_samples: int | None = None,
                    single: pd.DataFrame | None = None) -> pd.DataFrame:
    """Order the dimensions of ``reps`` by importance.

    This is the dimension selection of *Few Dimensions are Enough*. ``"single"`` ranks all H
    dimensions by the validation metric of a one-dimensional head on each alone (ties broken
    by the lower one-dimensional loss); ``"ablation"`` ranks only the candidates, by what
    dropping each from the candidate set costs (ties broken by the single score).

    Parameters
    ----------
    reps : Representations
        The vectors and labels of the task's splits.
    method : str
        ``"single"`` (every dimension alone, :func:`single_dimension_scores`) or
        ``"ablation"`` (drop-one inside the candidates, :func:`ablation_scores`).
    head : callable, optional
        The fine-tuned head, mapping an array (N, H) to outputs (N, C), used by
        ``"ablation"``; None fits a :class:`LinearHead` on the candidates instead.
    candidates : int or sequence of int
        For ``"ablation"``: the number of best dimensions of the single ranking to ablate
        among, in [1, H], or an explicit list of dimensions.
    fill : str
        What stands in for a masked dimension in an ablation: ``"mean"`` (its mean on
        ``fit_split``) or ``"zero"``.
    by : str
        What an ablation measures: ``"loss"`` (the rise in the head's loss, default) or
        ``"metric"`` (the drop in the headline metric); see :func:`ablation_scores`.
    fit_split, score_split : str
        The split heads are fitted on and the split they are scored on.
    max_fit_samples : int, optional
        Keep only the first n rows of ``fit_split`` to fit the one-dimensional heads; None
        keeps all.
    single : pd.DataFrame, optional
        A precomputed :func:`single_dimension_scores` table to reuse (columns ``dim``,
        ``score``, ``loss``; one row per dimension); None computes it.

    Returns
    -------
    pd.DataFrame
        One row per ranked dimension (all H for ``"single"``, the candidates for
        ``"ablation"``), sorted by rank. Columns ``dim``, ``score`` (higher = more important),
        ``rank`` (1 = best), ``single_score``, ``method``, then the method's own columns:
        ``loss`` for ``"single"``; ``metric_drop``, ``loss_rise``, ``kept``, ``without`` and
        ``single_loss`` for ``"ablation"``.

    Raises
    ------
    ConfigError
        An unknown ``method``, ``fill``, ``by`` or split, or ``candidates`` out of range.
    """
    check_choice("method", method, METHODS)
    check_choice("fill", fill, FILLS)
    check_choice("by", by, ("loss", "metric"))
    if isinstance(candidates, (int, np.integer)) and not isinstance(candidates, bool):
        check_range("candidates", int(candidates), 1, reps.hidden_size, integer=True)
    else:
        candidates = check_order(list(candidates), reps.hidden_size, "candidates")
    if single is None:
        single = single_dimension_scores(reps, fit_split=fit_split, score_split=score_split,
                                         max_fit_samples=max_fit_samples)
    single = single.sort_values(["score", "loss", "dim"], ascending=[False, True, True])
    if method == "single":
        table = single.assign(single_score=single["score"])
    else:
        cands = list(single["dim"][:int(candidates)]) if isinstance(candidates, (int, np.integer)) \
            else list(candidates)
        table = ablation_scores(reps, cands, head=head, fill=fill, by=by, fit_split=fit_split,
                                score_split=score_split)
        single = single.rename(columns={"score": "single_score", "loss": "single_loss"})
        table = table.merge(single, on="dim")
        table = table.sort_values(["score", "single_score", "single_loss", "dim"],
                                  ascending=[False, False, True, True])
    table = table.reset_index(drop=True)
    table["rank"] = np.arange(1, len(table) + 1)
    table["method"] = method
    cols = ["dim", "score", "rank", "single_score", "method"]
    return table[cols + [c for c in table.columns if c not in cols]]


def top_dims(ranking: pd.DataFrame, k: int | str) -> list[int]:
    """The ``k`` best dimensions of a ranking (``"all"``: every ranked dimension)."""
    ordered = ranking.sort_values("rank")["dim"].astype(int).tolist()
    if k == "all":
        return ordered
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= len(ordered):
        raise bad("k", k, f"expected 'all' or an integer in [1, {len(ordered)}] "
                          "(the number of ranked dimensions)")
    return ordered[:int(k)]


# ============================================================================ evaluation
def chance_score(task: Task | str, train_labels: np.ndarray | None = None,
                 eval_labels: np.ndarray | None = None, *, split: str = "test",
                 max_train_samples: int | None = None, max_eval_samples: int | None = None,
                 data_dir: str | None = None) -> float:
    """The score of chance: always guessing the most frequent training class, or the mean.

    This is the one definition of chance used everywhere: the headline metric of always
    predicting the most frequent class of the training split (on an unbalanced split this
    beats 1 / num_labels), or the training mean for regression (a correlation of 0).

    Give the labels, or let them be read from the examples fine-tuning uses
    (:func:`bertdims.train.finetuning.prepare_splits` with the sample limits: the whole training
    subset, and ``split``).

    Parameters
    ----------
    task : Task or str
        The task (a name is looked up with :func:`bertdims.get_task`).
    train_labels : np.ndarray, shape (n_train,), optional
        The training labels the guess is taken from; None reads them.
    eval_labels : np.ndarray, shape (N,), optional
        The labels the guess is scored on; None reads those of ``split``.
    split : str
        The evaluation split read when ``eval_labels`` is None.
    max_train_samples, max_eval_samples : int, optional
        The sizes of the fixed training and evaluation subsets, as in
        :class:`~bertdims.train.finetuning.FinetuneConfig`; used only when labels are read.
    data_dir : str, optional
        Where the task's data is read from, as in :func:`bertdims.load_task`.

    Returns
    -------
    float
        The task's headline metric of the constant guess on the evaluation labels.
    """
    task = get_task(task) if isinstance(task, str) else task
    if train_labels is None or eval_labels is None:
        data = _ft.prepare_splits(task, max_train_samples=max_train_samples,
                                        max_eval_samples=max_eval_samples,
                                        early_stopping_fraction=0.0, data_dir=data_dir)
        train_labels = data["train"]["label"] if train_labels is None else train_labels
        eval_labels = data[split]["label"] if eval_labels is None else eval_labels
    train_labels, eval_labels = np.asarray(train_labels), np.asarray(eval_labels)
    return headline(task, _constant_guess(task, train_labels, len(eval_labels)), eval_labels)


def _constant_guess(task: Task, train_labels: np.ndarray, n: int) -> np.ndarray:
    """(n,) copies of the majority training class, or of the training mean (regression)."""
    if task.is_regression:
        return np.full(n, float(np.mean(train_labels)))
    values, counts = np.unique(train_labels, return_counts=True)
    return np.full(n, values[np.argmax(counts)])


def _shares(df: pd.DataFrame, chance: float) -> pd.DataFrame:
    def share(v, full):
        return v / full if full > 0 else np.nan

    def above(v, full):
        return (v - chance) / (full - chance) if full - chance > 0 else np.nan

    df["chance"] = chance
    df["share"] = [share(v, f) for v, f in zip(df["value"], df["full"])]
    df["share_above_chance"] = [above(v, f) for v, f in zip(df["value"], df["full"])]
    return df


def evaluate_k(reps: Representations, order: Sequence[int] | pd.DataFrame,
               ks: Iterable[int | str] = DEFAULT_KS, *, head: HeadFn | None = None,
               modes: Sequence[str] | None = None, fill: str = "mean", fit_split: str = "train",
               split: str = "test") -> pd.DataFrame:
    """Keep the top ``k`` dimensions of ``order`` and score them on ``split``.

    Every row's shares compare with the same reference, the fine-tuned model itself, so that
    no mode divides by a weaker reference of its own.

    Parameters
    ----------
    reps : Representations
        The vectors and labels of the task's splits.
    order : sequence of int or pd.DataFrame
        The dimensions, best first, or a :func:`rank_dimensions` table (columns ``dim`` and
        ``rank``, one row per ranked dimension).
    ks : iterable of int or str
        The numbers of dimensions to keep, each at most the number of dimensions in
        ``order``; ``"all"`` keeps every one of the H dimensions.
    head : callable, optional
        The fine-tuned head, mapping an array (N, H) to outputs (N, C); needed for the
        ``"masked"`` mode.
    modes : sequence of str, optional
        ``"masked"`` (the head reads the vector with the other dimensions at their fill
        value) and/or ``"refit"`` (a :class:`LinearHead` fitted on ``fit_split`` reads the k
        dimensions); default both when a head is given, else ``"refit"``.
    fill : str
        What stands in for a masked dimension: ``"mean"`` (its mean on ``fit_split``) or
        ``"zero"``.
    fit_split : str
        The split the refit heads, the fill values and chance are taken from.
    split : str
        The split scored (``"test"``: never used for ranking).

    Returns
    -------
    pd.DataFrame
        Tidy, one row per (mode, k); columns ``mode``, ``k`` (``"all"`` stays a string),
        ``n_dims``, ``dims`` (space-separated), ``metric``, ``value``, ``full`` (the
        fine-tuned head on every dimension, i.e. the fine-tuned model itself, for every mode;
        without a ``head``, the refit head on every dimension), ``mode_full`` (the same mode
        with every dimension: for refit, a linear head on all H dimensions), ``chance``
        (:func:`chance_score`: always the most frequent training class), ``share`` = value /
        full and ``share_above_chance`` = (value - chance) / (full - chance). Shares are NaN
        when the denominator is not positive.

    Raises
    ------
    ConfigError
        Invalid ``order``, ``ks``, ``modes``, ``fill`` or split, or the ``"masked"`` mode
        without a ``head``.
    """
    if isinstance(order, pd.DataFrame):
        order = order.sort_values("rank")["dim"].astype(int).tolist()
    order = check_order(list(order), reps.hidden_size, "order")
    ks = check_ks(ks, reps.hidden_size, available=len(order))
    if modes is None:
        modes = ("masked", "refit") if head is not None else ("refit",)
    for m in modes:
        check_choice("modes", m, MODES)
    if "masked" in modes and head is None:
        raise bad("head", None, "the 'masked' mode needs the fine-tuned head; give head= or "
                                "use modes=('refit',)")
    check_choice("fill", fill, FILLS)
    x, y = reps.split(split)
    x_fit, y_fit = reps.split(fit_split)
    fills = reps.fill_values(fill, fit_split)
    task, rows = reps.task, []
    reference = None if head is None else headline(task, predictions(task, head(x)), y)
    for mode in modes:
        values = {}
        for k in list(ks) + ([] if "all" in ks else ["all"]):
            dims = list(range(reps.hidden_size)) if k == "all" else order[:k]
            if mode == "masked":
                value = headline(task, predictions(task, head(mask(x, dims, fills))), y)
            else:
                value = LinearHead(task, dims).fit(x_fit, y_fit).score(x, y)
            values[k] = (dims, value)
        for k in ks:
            dims, value = values[k]
            rows.append({"mode": mode, "k": k, "n_dims": len(dims),
                         "dims": "all" if k == "all" else " ".join(map(str, dims)),
                         "metric": task.metric, "value": value,
                         "full": values["all"][1] if reference is None else reference,
                         "mode_full": values["all"][1]})
    df = pd.DataFrame(rows)
    return _shares(df, chance_score(task, y_fit, y))


# ============================================================================ fine-tuned models
from ..train import finetuning as _ft  # noqa: E402


def head_function(clf) -> HeadFn:
    """The fine-tuned head of a ``SelectiveClassifier`` as a function of the full token
    vector: (N, H) numpy -> (N, C) numpy. The head reads ``clf.config.dims`` (all when None)."""
    import torch
    dims = getattr(clf.config, "dims", None)
    head = clf.head
    param = next(head.parameters())

    def apply(x: np.ndarray) -> np.ndarray:
        xs = x if dims is None else x[:, list(dims)]
        was_training = head.training
        head.eval()
        with torch.inference_mode():
            out = head(torch.as_tensor(np.ascontiguousarray(xs), dtype=param.dtype,
                                       device=param.device))
        head.train(was_training)
        return out.float().cpu().numpy().reshape(len(x), -1)

    return apply


def representations_of(clf, task: str | Task, data, *, splits: Sequence[str] = ("train", "validation", "test"),
                       max_samples: dict[str, int | None] | None = None, batch_size: int = 64,
                       device: str = "auto", precision: str = "auto") -> Representations:
    """The token vectors the classifier's head reads (its layer and token, before dimension
    selection), for ``splits`` of ``data`` (a ``DatasetDict``): a :class:`Representations`
    with (N, H) float32 arrays in dataset order. ``max_samples[split]`` keeps the first n rows.
    """
    import torch

    from ..core.device import autocast, pick_device, pick_precision
    from ..train.training import make_loader
    task = get_task(task) if isinstance(task, str) else task
    dev = pick_device(device)
    prec = pick_precision(precision, dev)
    clf.to(dev).eval()
    x, y = {}, {}
    for split in splits:
        ds = data[split]
        n = (max_samples or {}).get(split)
        if n is not None and n < len(ds):
            ds = ds.select(range(n))
        loader = make_loader(task, ds, clf.tokenizer, batch_size=batch_size,
                             max_seq_len=clf.config.max_seq_len, shuffle=False)
        out = np.empty((len(ds), clf.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for batch in loader:
                inputs = {k: v.to(dev) for k, v in batch.items()
                          if k in ("input_ids", "attention_mask", "token_type_ids")}
                with autocast(dev, prec):
                    rep = clf.representation(**inputs)                        # (B, H)
                out[batch["index"].numpy()] = rep.float().cpu().numpy()
        x[split], y[split] = out, np.asarray(ds["label"])
    return Representations(task, x, y, info={"layer": clf.config.layer, "token": clf.config.token})


# ============================================================================ the pipeline
@dataclass
class DimsResult(ResultFields):
    """What :func:`rank_dims` (one fine-tuning config) and :func:`run_dims_grid` (a grid of
    tasks and seeds) return, with the shape of every result (:mod:`bertdims.core.result`).

    Attributes
    ----------
    rankings : pandas.DataFrame
        The rankings, one table with a ``method`` column (and ``task``, ``seed`` for a grid).
    scores : pandas.DataFrame
        The scores of k dimensions (``mode`` in masked / refit / retrain).
    finetune_metrics : dict
        The full fine-tuning run's metrics, ``{split: {metric: value}}``; for a grid,
        ``{(task, seed): {split: {metric: value}}}``. Also ``metrics``.
    config : FinetuneConfig
        The fine-tuning config (for a grid, its base config).
    runs : dict
        The full fine-tuning run (``{"full": run}``; for a grid ``{(task, seed): run}``),
        whose folders are ``paths``.
    """

    rankings: pd.DataFrame
    scores: pd.DataFrame
    finetune_metrics: dict
    config: Any = None
    runs: dict = field(default_factory=dict, repr=False)

    @property
    def metrics(self) -> dict:
        """The full fine-tuning run's metrics (see ``finetune_metrics``)."""
        return self.finetune_metrics


def _check_run_args(methods, ks, candidates, modes, hidden_size: int | None = None):
    methods = [methods] if isinstance(methods, str) else list(methods)
    if not methods:
        raise bad("methods", methods, "choose at least one of: " + ", ".join(METHODS))
    for m in methods:
        check_choice("methods", m, METHODS)
    for m in modes:
        check_choice("modes", m, MODES)
    check_range("candidates", candidates, 1, hidden_size, integer=True)
    ks = check_ks(ks, hidden_size or 10 ** 9)
    biggest = max([k for k in ks if k != "all"], default=0)
    if "ablation" in methods and biggest > candidates:
        raise bad("candidates", candidates, f"the ablation ranking must cover the largest k "
                                            f"({biggest}); use candidates >= {biggest}")
    return methods, ks


def rank_dims(config, *, store, methods: Sequence[str] = METHODS, candidates: int = 20,
            ks: Iterable[int | str] = DEFAULT_KS, modes: Sequence[str] = MODES, fill: str = "mean",
            ablation_by: str = "loss", max_rank_samples: int | None = 4000, retrain_ks: Iterable[int] = (),
            retrain_methods: Sequence[str] = ("single",), progress: bool = False) -> DimsResult:
    """Run the dimension pipeline for one fine-tuning config, through the results store.

    Fine-tune (or read back) ``config``, rank its dimensions by each method
    (:func:`rank_dimensions`, on the train and validation splits), score the top k by each
    mode on the test split (:func:`evaluate_k`), and optionally fine-tune afresh on the top k
    (:func:`retrain_k`). Rankings are stored under kind ``dims_rank``, the k scores under
    ``dims_k`` and fine-tuning runs by the engine; all are keyed by the full fine-tuning
    config, so a rerun reads everything back.

    Parameters
    ----------
    config : FinetuneConfig
        The fine-tuning run, with ``dims=None`` (its head reads every dimension).
    store : ResultStore
        Where runs, rankings and scores are kept and read back.
    methods : sequence of str
        The ranking methods, among ``"single"`` and ``"ablation"``.
    candidates : int
        The number of best single dimensions the ablation ranks; at least the largest k
        when ``"ablation"`` is among ``methods``.
    ks : iterable of int or str
        The numbers of dimensions to keep (``"all"``: every dimension).
    modes : sequence of str
        ``"masked"`` and/or ``"refit"``, see :func:`evaluate_k`.
    fill : str
        What stands in for a masked dimension: ``"mean"`` (its train mean) or ``"zero"``.
    ablation_by : str
        What an ablation measures: ``"loss"`` or ``"metric"`` (the ``by`` of
        :func:`rank_dimensions`).
    max_rank_samples : int, optional
        Read only the first n rows of the train split (for ranking, the refit heads and the
        fill values); None reads all.
    retrain_ks : iterable of int
        The numbers of dimensions to fine-tune afresh on (empty: no retraining).
    retrain_methods : sequence of str
        The rankings whose top k are retrained (only those also in ``methods``).
    progress : bool
        Show the progress of the fine-tuning runs.

    Returns
    -------
    DimsResult
        ``rankings``: the :func:`rank_dimensions` tables of every method, stacked (column
        ``method``); ``scores``: the :func:`evaluate_k` rows of every method and mode and the
        :func:`retrain_k` rows, with a ``method`` column and ``k`` as text;
        ``finetune_metrics``: the metrics of the full run per split.

    Raises
    ------
    ConfigError
        ``config.dims`` is set, or an invalid method, mode, ``candidates``, k or
        ``ablation_by``.
    """
    ft = _ft
    if getattr(config, "dims", None) is not None:
        raise bad("dims", config.dims, "rank_dims starts from a model whose head reads every "
                                       "dimension: use dims=None")
    methods, ks = _check_run_args(methods, ks, candidates, modes)
    check_choice("ablation_by", ablation_by, ("loss", "metric"))
    retrain_ks = check_ks(list(retrain_ks), 10 ** 9) if list(retrain_ks) else []
    for m in retrain_methods:
        check_choice("retrain_methods", m, METHODS)
    run = ft.finetune(config, store=store, progress=progress, keep_model=True)   # it is loaded
    run_key = run.path.name if run.path is not None else None   # the fine-tuned model's store key
    base = {"finetune": config.to_dict(), "fill": fill, "max_rank_samples": max_rank_samples,
            "results_version": RESULTS_VERSION}
    state: dict[str, Any] = {}

    def setup():
        if "reps" not in state:
            clf = ft.load_finetuned(run.model_dir)
            # the very examples the engine used: train (without its early-stopping part),
            # validation and test subsets fixed independently of the seed
            data = ft.prepare_splits(config.task, max_train_samples=config.max_train_samples,
                                     max_eval_samples=config.max_eval_samples,
                                     early_stopping_fraction=config.early_stopping_fraction,
                                     data_dir=config.data_dir)
            state["reps"] = representations_of(clf, config.task, data,
                                               max_samples={"train": max_rank_samples},
                                               device=config.device, precision=config.precision)
            check_range("candidates", candidates, 1, state["reps"].hidden_size, integer=True)
            state["head"] = head_function(clf)
        return state["reps"], state["head"]

    rankings, scores = [], []
    for method in methods:
        ablation = method == "ablation"
        rank_cfg = {**base, "method": method, "candidates": candidates if ablation else None,
                    "by": ablation_by if ablation else None}

        def compute_rank(method=method):
            _progress.run_started("dims_rank", store.key("dims_rank", rank_cfg, run_key), rank_cfg)
            reps, head = setup()
            if "single" not in state:
                state["single"] = single_dimension_scores(reps)
            return {"ranking": rank_dimensions(reps, method, head=head, candidates=candidates,
                                               fill=fill, by=ablation_by, single=state["single"])}

        ranking = store.cached("dims_rank", rank_cfg, compute_rank, fingerprint=run_key).table("ranking")
        rankings.append(ranking)

        def compute_k(ranking=ranking):
            _progress.run_started("dims_k", store.key("dims_k", k_cfg, run_key), k_cfg)
            reps, head = setup()
            return {"scores": evaluate_k(reps, ranking, ks, head=head, modes=modes, fill=fill)}

        k_cfg = {**rank_cfg, "ks": [str(k) for k in ks], "modes": list(modes)}
        table = store.cached("dims_k", k_cfg, compute_k, fingerprint=run_key).table("scores")
        scores.append(table.assign(method=method))
    rankings = pd.concat(rankings, ignore_index=True)
    for method in [m for m in retrain_methods if m in methods] if retrain_ks else []:
        ranking = rankings[rankings["method"] == method]
        scores.append(retrain_k(config, ranking, retrain_ks, store=store,
                                full_metrics=run.metrics, progress=progress).assign(method=method))
    scores = pd.concat(scores, ignore_index=True)
    scores["k"] = scores["k"].astype(str)
    return DimsResult(rankings=rankings, scores=scores, finetune_metrics=run.metrics, config=config,
                      runs={"full": run})


def retrain_k(config, ranking: pd.DataFrame | Sequence[int], ks: Iterable[int], *, store,
              full_metrics: dict | None = None, split: str = "test",
              progress: bool = False) -> pd.DataFrame:
    """Fine-tune afresh with a head that reads only the top ``k`` dimensions, for each k.

    This is the "lightweight fine-tuning with selected dimensions" of *Few Dimensions are
    Enough*. Every run goes through the store.

    Parameters
    ----------
    config : FinetuneConfig
        The full fine-tuning run; each retrained run is ``config`` with ``dims`` set.
    ranking : pd.DataFrame or sequence of int
        A :func:`rank_dimensions` table (columns ``dim`` and ``rank``, one row per ranked
        dimension), or the dimensions, best first.
    ks : iterable of int
        The numbers of dimensions to keep; ``"all"`` takes the full run itself.
    store : ResultStore
        Where the runs are kept and read back.
    full_metrics : dict, optional
        The metrics of the full run (split -> metric -> value); None fine-tunes (or reads
        back) ``config`` with ``dims=None``.
    split : str
        The evaluation split scored.
    progress : bool
        Show the progress of the fine-tuning runs.

    Returns
    -------
    pd.DataFrame
        One row per k, like :func:`evaluate_k` without ``mode_full``: columns ``mode``
        (``"retrain"``), ``k``, ``n_dims``, ``dims``, ``metric``, ``value``, ``full`` (the
        metric of ``config`` itself: all dimensions, same seed), ``chance``, ``share`` and
        ``share_above_chance``.

    Raises
    ------
    ConfigError
        Invalid ``ks`` (e.g. a k above the number of ranked dimensions).
    """
    ft = _ft
    order = ranking.sort_values("rank")["dim"].astype(int).tolist() \
        if isinstance(ranking, pd.DataFrame) else list(ranking)
    ks = check_ks(ks, 10 ** 9, available=len(order))
    task = get_task(config.task)
    if full_metrics is None:
        full_metrics = ft.finetune(config.replace(dims=None), store=store, progress=progress).metrics
    full = full_metrics[split][task.metric]
    rows = []
    for k in ks:
        dims = None if k == "all" else order[:k]
        metrics = full_metrics if dims is None else \
            ft.finetune(config.replace(dims=dims), store=store, progress=progress,
                        keep_model=False).metrics
        rows.append({"mode": "retrain", "k": k, "n_dims": model_size(config.model)[1] if k == "all" else k,
                     "dims": "all" if k == "all" else " ".join(map(str, dims)),
                     "metric": task.metric, "value": metrics[split][task.metric], "full": full})
    data = ft.prepare_splits(task, max_train_samples=config.max_train_samples,
                             max_eval_samples=config.max_eval_samples,
                             early_stopping_fraction=config.early_stopping_fraction,
                             data_dir=config.data_dir)
    chance = chance_score(task, data["train"]["label"], data[split]["label"])
    return _shares(pd.DataFrame(rows), chance)


# ============================================================================ retraining study
def random_dims(hidden_size: int, k: int, seed: int, task: str) -> list[int]:
    """``k`` distinct random dimensions of ``[0, hidden_size)``, sorted.

    They are the first ``k`` of a random ordering fixed by ``seed`` and the task's name, so the
    random sets are nested (the random 2 hold the random 1) like the top-k sets of a ranking.

    Parameters
    ----------
    hidden_size : int
        The number of dimensions H to draw from.
    k : int
        How many to draw, in [1, hidden_size].
    seed : int
        Seed of the ordering (the fine-tuning seed in :func:`retrain_study`).
    task : str
        The task's name, which also fixes the ordering; only its first 8 bytes count.

    Returns
    -------
    list of int
        The ``k`` dimensions, in increasing order.

    Raises
    ------
    ConfigError
        ``hidden_size`` below 1, or ``k`` outside [1, hidden_size].
    """
    check_range("hidden_size", hidden_size, 1, None, integer=True)
    check_range("k", k, 1, hidden_size, integer=True)
    salt = int.from_bytes(str(task).encode()[:8].ljust(8, b"\0"), "little") % (2 ** 31)
    order = np.random.default_rng([int(seed), salt]).permutation(hidden_size)
    return sorted(int(d) for d in order[:k])


def selected_dims(ranking: pd.DataFrame, k: int) -> list[int]:
    """The top ``k`` dimensions of a ranking, sorted.

    Sorted is the order a head reads them in, so that the same set gives the same
    fine-tuning config in every chapter.

    Parameters
    ----------
    ranking : pd.DataFrame
        One ranking (one task, seed and method), with columns ``dim`` and ``rank``: one row
        per ranked dimension, as :func:`rank_dimensions` gives.
    k : int
        How many dimensions to take, at most the number of ranked ones.

    Returns
    -------
    list of int
        The ``k`` best-ranked dimensions, in increasing order.

    Raises
    ------
    ConfigError
        ``k`` is not an integer in [1, number of ranked dimensions].
    """
    return sorted(top_dims(ranking, k))


@dataclass
class RetrainStudy(RunsResult):
    """What :func:`retrain_study` returns: the scores, predictions and runs of the study.

    Attributes
    ----------
    scores : pd.DataFrame
        One row per (task, dims, k, seed), ``dims`` being ``"full"`` (every dimension),
        ``"selected"`` (top k of the ranking of the same seed's full model) or ``"random"``
        (:func:`random_dims`). Columns ``task``, ``seed``, ``dims``, ``k`` (text, ``"all"``
        for ``full``), ``chosen`` (space-separated dimensions), ``metric``, ``value`` (test),
        ``full`` (the same seed's full model), ``chance`` (:func:`chance_score`), ``share`` =
        value / full and ``share_above_chance``.
    predictions : dict of tuple to np.ndarray
        ``predictions[(task, dims, k)]``: the test predictions, shape (S, N), one row per
        seed in ``seeds`` order (``k`` an int, or ``"all"`` for ``full``).
    labels : dict of str to np.ndarray
        ``labels[task]``: the test labels, shape (N,), in the order of the predictions.
    runs : dict of tuple to FinetuneRun
        ``runs[(task, setting, seed)]``: the :class:`~bertdims.train.finetuning.FinetuneRun`
        objects, ``setting`` being ``"full"``, ``"selected k"`` or ``"random k"`` (e.g.
        ``"selected 3"``), for their training curves
        (:func:`bertdims.book.fewdims_charts.history_frame`).
    seeds : list of int
        The seeds, in the order of the rows of every predictions array.
    config : FinetuneConfig
        The base config every run derives from.

    With the shape of every result (:mod:`bertdims.core.result`): ``metrics`` and ``paths``
    are those of ``runs``, by the same keys.
    """

    scores: pd.DataFrame
    predictions: dict
    labels: dict
    runs: dict
    seeds: list
    config: Any = None


def retrain_study(base, rankings: pd.DataFrame, *, ks: Sequence[int], store,
                  method: str = "single", tasks: Sequence[str] | None = None,
                  seeds: Sequence[int] | None = None, progress: bool = False) -> RetrainStudy:
    """Fine-tune on the top ``k`` selected dimensions and on ``k`` random ones, per task and seed.

    For every task, seed and k, the model is fine-tuned afresh with a head on the top ``k``
    selected dimensions and with one on ``k`` random ones (*Few Dimensions are Enough*:
    "fine-tuning BERT with selected dimensions"; chapter ``04_few_dimensions``, the primary
    measure). Every run goes through the store: the full runs are those of the baselines
    chapter.

    Parameters
    ----------
    base : FinetuneConfig
        The full fine-tuning config (``dims=None``); each run sets its task, seed and dims.
    rankings : pd.DataFrame
        The rankings table of :func:`run_dims_grid` (columns ``task``, ``seed``, ``method``,
        ``dim``, ``rank``; one row per ranked dimension), made on the train and validation
        splits only.
    ks : sequence of int
        The numbers of dimensions; ``"all"`` is left out (the full runs are always made).
    store : ResultStore
        Where the runs are kept and read back.
    method : str
        Which ranking selects the dimensions: ``"single"`` or ``"ablation"``.
    tasks, seeds : sequence, optional
        The tasks and seeds to run; None takes every one found in the ``method`` rankings.
    progress : bool
        Show the progress of the fine-tuning runs.

    Returns
    -------
    RetrainStudy
        The scores, the test predictions (S, N) and labels (N,) per task, and the runs.

    Raises
    ------
    ConfigError
        ``base.dims`` is set, an unknown ``method``, ``rankings`` without the needed columns
        or without a ranking for some task and seed, no integer k, or runs of one task scored
        on different test examples.
    """
    ft = _ft
    if getattr(base, "dims", None) is not None:
        raise bad("dims", base.dims, "the study starts from a full model: use dims=None")
    check_choice("method", method, METHODS)
    need = {"task", "seed", "method", "dim", "rank"}
    if not need <= set(rankings.columns):
        raise bad("rankings", sorted(rankings.columns), f"expected the columns {sorted(need)} "
                  "(the rankings of run_dims_grid)")
    part = rankings[rankings["method"] == method]
    tasks = list(dict.fromkeys(part["task"])) if tasks is None else list(tasks)
    seeds = list(dict.fromkeys(part["seed"])) if seeds is None else list(seeds)
    ks = [int(k) for k in check_ks([k for k in ks], 10 ** 9) if k != "all"]
    if not ks:
        raise bad("ks", ks, "give at least one number of dimensions")
    for t in tasks:
        for s in seeds:
            if part[(part["task"] == t) & (part["seed"] == s)].empty:
                raise bad("rankings", f"{t}, seed {s}", f"no {method!r} ranking for this task "
                          "and seed: rank it first (run_dims_grid)")
    hidden = model_size(base.model)[1]

    def dims_of(t, s, k, how):
        if how is None:
            return None
        if how == "selected":
            return selected_dims(part[(part["task"] == t) & (part["seed"] == s)], k)
        return random_dims(hidden, k, s, t)

    from ..train.executor import ensure_runs
    plan = [("full", "all", None)] + [p for k in ks for p in (("selected", k, "selected"),
                                                              ("random", k, "random"))]
    asked = [(t, s, dims_of(t, s, k, how)) for t in tasks for _, k, how in plan for s in seeds]
    ensure_runs([base.replace(task=t, seed=int(s), dims=d) for t, s, d in asked], store,
                keep_model=[None if d is None else False for _, _, d in asked])   # on a cluster
    rows, preds, labels, done = [], {}, {}, {}
    for t in tasks:
        task = get_task(t)
        for kind, k, how in plan:
            runs = []
            for s in seeds:
                dims = dims_of(t, s, k, how)
                # runs on a few dimensions are only scored: stored without encoder weights
                run = ft.finetune(base.replace(task=t, seed=int(s), dims=dims), store=store,
                                  progress=progress, keep_model=None if dims is None else False)
                runs.append(run)
                done[(t, "full" if how is None else f"{kind} {k}", int(s))] = run
                rows.append({"task": t, "seed": s, "dims": kind, "k": str(k),
                             "chosen": "all" if dims is None else " ".join(map(str, dims)),
                             "metric": task.metric, "value": run.score("test")})
            y = runs[0].labels("test")
            for run in runs[1:]:
                if not np.array_equal(run.labels("test"), y):
                    raise bad("base", base, "runs of one task must be scored on the same test "
                              "examples (same max_eval_samples)")
            labels[t] = y
            preds[(t, kind, k)] = np.stack([run.predictions("test") for run in runs])
    scores = pd.DataFrame(rows)
    full = scores[scores["dims"] == "full"].set_index(["task", "seed"])["value"]
    scores["full"] = [full[(t, s)] for t, s in zip(scores["task"], scores["seed"])]
    frames = []
    for t, part_t in scores.groupby("task", sort=False):
        chance = chance_score(get_task(t), max_train_samples=base.max_train_samples,
                              max_eval_samples=base.max_eval_samples, data_dir=base.data_dir)
        frames.append(_shares(part_t.copy(), chance))
    return RetrainStudy(scores=pd.concat(frames, ignore_index=True), predictions=preds,
                        labels=labels, runs=done, seeds=[int(s) for s in seeds], config=base)


def retrain_effects(study: RetrainStudy, *, margin: float, random_margin: float = 0.0,
                    n_boot: int = 2000) -> pd.DataFrame:
    """The two effects of chapter ``04_few_dimensions`` for every task and k.

    Both go through :func:`bertdims.core.stats.paired_effect` on the test predictions of the
    study, paired by seed and example:

    * ``p1-few-dims-enough``: selected k against the full model, ``noninferior`` on the ratio
      scale (selected / full - 1) with ``margin`` (0.02: at least 98% of full);
    * ``p1-selected-beat-random``: selected k against k random dimensions, ``better`` on the
      difference scale with ``random_margin``.

    Parameters
    ----------
    study : RetrainStudy
        The output of :func:`retrain_study`.
    margin : float
        The non-inferiority margin of ``p1-few-dims-enough``, on the ratio scale.
    random_margin : float
        The margin of ``p1-selected-beat-random``, on the difference scale.
    n_boot : int
        Bootstrap replicates of each interval.

    Returns
    -------
    pd.DataFrame
        One row per (task, k, claim): columns ``task``, ``k`` (int), ``claim_id``, ``effect``
        (the :class:`~bertdims.core.stats.Effect`), ``note``, and the fields of the effect as in
        :func:`effects_frame` without ``label``. An effect that cannot be computed (a ratio
        to a full model scoring 0 or less) is None, its verdict ``"not computed"``, and
        ``note`` says why.
    """
    rows = []
    for (t, kind, k), a in study.predictions.items():
        if kind != "selected":
            continue
        y, metric = study.labels[t], get_task(t).metric
        full = study.predictions[(t, "full", "all")]
        rand = study.predictions[(t, "random", k)]
        rows.append({"task": t, "k": int(k), "claim_id": "p1-few-dims-enough",
                     **effect_or_note(a, full, y, metric=metric, claim="noninferior",
                                       margin=margin, scale="ratio", n_boot=n_boot,
                                       label=f"{t}: top {k} selected / full - 1")})
        rows.append({"task": t, "k": int(k), "claim_id": "p1-selected-beat-random",
                     **effect_or_note(a, rand, y, metric=metric, claim="better",
                                       margin=random_margin, scale="difference", n_boot=n_boot,
                                       label=f"{t}: top {k} selected - {k} random")})
    return with_effect_fields(pd.DataFrame(rows))


def effect_or_note(a, b, labels, **kwargs) -> dict:
    """``{"effect": paired_effect(...), "note": ""}``, or the effect None and the reason when
    the statistics layer refuses the data (e.g. a ratio to a score of 0 or less)."""
    from ..core.stats import paired_effect
    try:
        return {"effect": paired_effect(a, b, labels, **kwargs), "note": ""}
    except ConfigError as err:
        return {"effect": None, "note": str(err)}


def with_effect_fields(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` (with an ``effect`` column of Effects or None) and the fields of each effect
    (:func:`effects_frame`, without ``label``) as columns beside it."""
    fields = effects_frame(table["effect"]).drop(columns="label")
    return pd.concat([table.reset_index(drop=True), fields], axis=1)


def effects_frame(effects) -> pd.DataFrame:
    """A small table of :class:`~bertdims.core.stats.Effect` objects, one row each.

    Parameters
    ----------
    effects : iterable of Effect or None
        The effects; None stands for an effect that could not be computed.

    Returns
    -------
    pd.DataFrame
        One row per effect, in the given order; columns ``label``, ``metric``, ``scale``,
        ``estimate``, ``low``, ``high``, ``claim``, ``margin``, ``verdict``, ``p_value``,
        ``n_seeds``, ``n_examples``, ``score_a``, ``score_b``. The row of a None has verdict
        ``"not computed"`` and every other field missing.
    """
    cols = ["label", "metric", "scale", "estimate", "low", "high", "claim", "margin", "verdict",
            "p_value", "n_seeds", "n_examples", "score_a", "score_b"]
    rows = [{c: getattr(e, c) for c in cols} if e is not None else {"verdict": "not computed"}
            for e in effects]
    return pd.DataFrame(rows, columns=cols)


def pick_effect(effects: pd.DataFrame, claim_id: str, **where) -> Any:
    """The one :class:`~bertdims.core.stats.Effect` of a table for a claim and a setting.

    Parameters
    ----------
    effects : pd.DataFrame
        A :func:`retrain_effects`-like table: one row per effect, with columns ``claim_id``,
        ``effect``, usually ``note``, and the columns named in ``where``.
    claim_id : str
        The claim whose effect is wanted, e.g. ``"p1-few-dims-enough"``.
    **where
        The pre-registered setting, column by column (e.g. ``task=..., k=3``).

    Returns
    -------
    Effect
        The effect of the single matching row.

    Raises
    ------
    ConfigError
        Not exactly one row matches, or the matching effect could not be computed (the
        message gives its note).
    """
    rows = effects[effects["claim_id"] == claim_id]
    for col, value in where.items():
        rows = rows[rows[col] == value]
    if len(rows) != 1:
        raise bad("where", where, f"expected exactly one {claim_id!r} effect, found {len(rows)}: "
                  "is the pre-registered setting among those run?")
    if rows["effect"].iloc[0] is None:
        raise bad("where", where, f"the {claim_id!r} effect could not be computed: "
                  + str(rows["note"].iloc[0] if "note" in rows else ""))
    return rows["effect"].iloc[0]


def selection_stability(rankings: pd.DataFrame, ks: Sequence[int], hidden_size: int,
                        method: str | None = None) -> pd.DataFrame:
    """How often the seeds choose the same top ``k`` dimensions, against random choice.

    Parameters
    ----------
    rankings : pd.DataFrame
        Rankings of several seeds, e.g. those of :func:`run_dims_grid`: one row per ranked
        dimension, with columns ``task``, ``method``, ``seed``, ``dim`` and ``rank``.
    ks : sequence of int
        The numbers of top dimensions compared, each at most the number of ranked ones.
    hidden_size : int
        The number of dimensions H the rankings choose from.
    method : str, optional
        Keep only the rankings of this method; None keeps all.

    Returns
    -------
    pd.DataFrame
        One row per (task, method, k); columns ``task``, ``method``, ``k``, ``seeds`` (how
        many), ``overlap`` (the mean, over pairs of seeds, of the share of the k dimensions
        their two top-k sets have in common), ``random`` (what two independent random k-sets
        of H dimensions share on average, k / H), ``identical`` (the share of seed pairs that
        chose exactly the same set), ``most_common`` (the dimension found in the most seeds'
        top k) and ``in_seeds`` (in how many). ``overlap`` and ``identical`` are NaN with
        fewer than two seeds.

    Raises
    ------
    ConfigError
        ``hidden_size`` below 1, or a k above the number of ranked dimensions.
    """
    import itertools
    check_range("hidden_size", hidden_size, 1, None, integer=True)
    part = rankings if method is None else rankings[rankings["method"] == method]
    rows = []
    for (t, m), r in part.groupby(["task", "method"], sort=False):
        seeds = list(dict.fromkeys(r["seed"]))
        for k in ks:
            sets = {s: set(top_dims(r[r["seed"] == s], k)) for s in seeds}
            pairs = list(itertools.combinations(seeds, 2))
            overlap = [len(sets[a] & sets[b]) / k for a, b in pairs]
            counts = pd.Series([d for s in seeds for d in sorted(sets[s])]).value_counts()
            rows.append({"task": t, "method": m, "k": int(k), "seeds": len(seeds),
                         "overlap": float(np.mean(overlap)) if pairs else np.nan,
                         "random": k / hidden_size,
                         "identical": float(np.mean([sets[a] == sets[b] for a, b in pairs]))
                         if pairs else np.nan,
                         "most_common": int(counts.index[0]), "in_seeds": int(counts.iloc[0])})
    return pd.DataFrame(rows)


# ============================================================================ chapter runners
def _grid_configs(base, grid: dict) -> list:
    """(combination, config) for every combination of the ``grid`` values, in grid order;
    every config is validated (also against the model's size) before any run starts."""
    import itertools
    if not grid:
        grid = {"seed": [base.seed]}
    names = list(grid)
    for name, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not len(values):
            raise bad(name, values, "give a non-empty list of values to try")
    configs = [(dict(zip(names, combo)), base.replace(**dict(zip(names, combo))))
               for combo in itertools.product(*(grid[n] for n in names))]
    sizes: dict[str, tuple[int, int]] = {}
    for _, cfg in configs:               # checks that need the model's size, before any run
        source = cfg.init_from or cfg.model
        sizes[source] = sizes.get(source) or model_size(source)
        cfg.validate(*sizes[source])
    return configs


def finetune_grid(base, *, store, progress: bool = False, keep_model: bool | None = None,
                  **grid: Sequence) -> pd.DataFrame:
    """Fine-tune ``base`` for every combination of the ``grid`` values, through the store.

    Every config is validated (also against the model's size) before the first run starts.

    Parameters
    ----------
    base : FinetuneConfig
        The config every combination starts from.
    store : ResultStore
        Where the runs are kept and read back.
    progress : bool
        Show the progress of each fine-tuning run.
    keep_model : bool, optional
        As in :func:`bertdims.train.finetuning.finetune`: ``False`` stores the runs lean (no encoder
        weights), for runs that only their scores are read from; None keeps the weights of
        runs trained now and accepts any stored run.
    **grid
        Config fields and the list of values to try for each, e.g.
        ``task=[...], seed=[0, 1, 2], freeze=[0, 3, 6]``; combinations run in grid order.
        Without any, the grid is ``seed=[base.seed]``.

    Returns
    -------
    pd.DataFrame
        Tidy, one row per (run, split, metric); columns the grid fields, ``split``,
        ``metric``, ``value`` and ``headline`` (True for the task's headline metric).

    Raises
    ------
    ConfigError
        A grid value that is not a non-empty list, or an invalid config.
    """
    from ..train.executor import ensure_runs
    ft = _ft
    rows, configs = [], _grid_configs(base, grid)
    ensure_runs([cfg for _, cfg in configs], store, keep_model=keep_model)   # on a cluster, if any
    for combo, cfg in configs:
        run = ft.finetune(cfg, store=store, progress=progress, keep_model=keep_model)
        task = get_task(cfg.task)
        for split, metrics in run.metrics.items():
            if not isinstance(metrics, dict):
                continue
            for metric, value in metrics.items():
                rows.append({**combo, "split": split, "metric": metric,
                             "value": float(value), "headline": metric == task.metric})
    return pd.DataFrame(rows)


def grid_predictions(base, *, store, split: str = "test", progress: bool = False,
                     keep_model: bool | None = None, **grid: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """The per-example predictions of every combination of a grid, for the statistics layer.

    Like :func:`finetune_grid`, it runs or reads every combination through the store. Every
    combination must evaluate the same examples (same task and ``max_eval_samples``).

    Parameters
    ----------
    base : FinetuneConfig
        The config every combination starts from.
    store : ResultStore
        Where the runs are kept and read back.
    split : str
        The evaluation split whose predictions are returned.
    progress : bool
        Show the progress of each fine-tuning run.
    keep_model : bool, optional
        As in :func:`finetune_grid`.
    **grid
        Config fields and the list of values to try for each, as in :func:`finetune_grid`.

    Returns
    -------
    P : np.ndarray, shape (G, N)
        The predictions, one row per combination in grid order (e.g. ``seed=[0, 1, 2]``
        gives one row per seed): class ids, or scores for regression.
    labels : np.ndarray, shape (N,)
        The labels of ``split``, in the order of the columns of ``P``.

    Raises
    ------
    ConfigError
        An invalid grid or config, or combinations evaluated on different examples.
    """
    from ..train.executor import ensure_runs
    ft = _ft
    rows, labels, configs = [], None, _grid_configs(base, grid)
    ensure_runs([cfg for _, cfg in configs], store, keep_model=keep_model)   # on a cluster, if any
    for combo, cfg in configs:
        run = ft.finetune(cfg, store=store, progress=progress, keep_model=keep_model)
        y = run.labels(split)
        if labels is not None and (len(y) != len(labels) or not np.array_equal(y, labels)):
            raise bad("grid", combo, "every combination must be evaluated on the same examples "
                                     "(same task and max_eval_samples)")
        labels = y
        rows.append(run.predictions(split))
    return np.stack(rows), labels


PROBE_VERSION = 2   # part of every probe key: 2 stores per-example predictions, one layer per run


def _probe_runs(model: str, task: Task, layers: Sequence[int], *, store, token: str,
                max_train_samples, max_eval_samples, max_seq_len, device, data_dir) -> list:
    """One stored probe run (kind ``probe``) per layer, computing the missing ones from a
    single pass of the encoder."""
    from .extract import encode, resolve_layers
    from ..modeling.models import fingerprint_of, load_encoder
    from ..data.tasks import texts_of
    num_layers = model_size(model)[0]
    resolved = resolve_layers(list(layers), num_layers)
    fingerprint = fingerprint_of(model)
    cfgs = [{"model": model, "task": task.name, "layer": layer, "token": token,
             "max_train_samples": max_train_samples, "max_eval_samples": max_eval_samples,
             "max_seq_len": max_seq_len, "data_dir": data_dir, "probe_version": PROBE_VERSION}
            for layer in resolved]
    hits = [store.get("probe", store.key("probe", c, fingerprint)) for c in cfgs]
    missing = [j for j, h in enumerate(hits) if h is None]
    if missing:
        encoder = load_encoder(model)
        # the examples fine-tuning uses (fixed subsets; train includes any development part)
        data = _ft.prepare_splits(task, max_train_samples=max_train_samples,
                                        max_eval_samples=max_eval_samples,
                                        early_stopping_fraction=0.0, data_dir=data_dir)
        todo = [resolved[j] for j in missing]
        arrays, labels = {}, {}
        for split in ("train", "validation", "test"):
            arrays[split] = encode(encoder, texts_of(task, data[split]), layers=todo, token=token,
                                   max_seq_len=max_seq_len, device=device, progress=False)
            labels[split] = np.asarray(data[split]["label"])
        for i, j in enumerate(missing):
            head = LinearHead(task).fit(arrays["train"][:, i], labels["train"])
            rows, payload = [], {}
            for split in ("validation", "test"):
                preds = head.predict(arrays[split][:, i])
                payload[f"pred_{split}"], payload[f"label_{split}"] = preds, labels[split]
                for metric, value in compute_metrics(task, preds, labels[split]).items():
                    rows.append({"task": task.name, "token": token, "split": split,
                                 "metric": metric, "value": value, "headline": metric == task.metric})
            hits[j] = store.put("probe", cfgs[j], {"scores": pd.DataFrame(rows), **payload},
                                fingerprint=fingerprint)
    return hits


def probe_baseline(model: str, tasks: Sequence[str], *, store, layers: Sequence[int] = (-1,),
                   token: str = "cls", max_train_samples: int | None = None,
                   max_eval_samples: int | None = None, max_seq_len: int = 128,
                   device: str = "auto", data_dir: str | None = None) -> pd.DataFrame:
    """Linear probes on the frozen pretrained encoder, per task and layer.

    This is the baseline of Matton & de Oliveira, section 2: "a linear classifier is trained
    on top of the pretrained embedding from the [CLS] token, but the BERT model itself is
    frozen". For each task, the token vector of each of ``layers`` is read once for the
    examples fine-tuning uses (the engine's fixed subsets of ``max_train_samples`` train and
    ``max_eval_samples`` validation/test rows, :func:`bertdims.train.finetuning.prepare_splits`), and a
    :class:`LinearHead` (logistic regression / least squares on standardised values, fitted
    to convergence; no randomness) is fitted on train. Stored under kind ``probe``, one run per
    (task, layer), with its per-example predictions (:func:`probe_predictions`).

    Parameters
    ----------
    model : str
        The pretrained model's name or folder.
    tasks : str or sequence of str
        The tasks to probe.
    store : ResultStore
        Where the probe runs are kept and read back.
    layers : int or sequence of int
        The layers read (0 = embedding output, -1 = last block).
    token : str
        Which token vector is read: ``"cls"``, ``"mean"``, ``"maxnorm"`` or ``"token:i"``
        (see :mod:`bertdims.modeling.tokens`).
    max_train_samples, max_eval_samples : int, optional
        The sizes of the fixed training and evaluation subsets; None uses whole splits.
    max_seq_len : int
        Texts are truncated to this many tokens.
    device : str
        Where the encoder runs: ``"auto"``, ``"cpu"`` or ``"cuda"``.
    data_dir : str, optional
        Where the task's data is read from, as in :func:`bertdims.load_task`.

    Returns
    -------
    pd.DataFrame
        Tidy, one row per (task, layer, split, metric) with split ``"validation"`` or
        ``"test"``; columns ``task``, ``layer`` (as given), ``token``, ``split``, ``metric``,
        ``value`` and ``headline`` (True for the task's headline metric).

    Raises
    ------
    ConfigError
        An unknown ``token``, or invalid ``layers``.
    """
    from ..modeling.tokens import check_token
    token = check_token(token)
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    task_objs = [get_task(t) for t in tasks]
    layers = [layers] if isinstance(layers, (int, np.integer)) else list(layers)
    frames = []
    for task in task_objs:
        runs = _probe_runs(model, task, layers, store=store, token=token,
                           max_train_samples=max_train_samples, max_eval_samples=max_eval_samples,
                           max_seq_len=max_seq_len, device=device, data_dir=data_dir)
        for layer, run in zip(layers, runs):
            table = run.table("scores")
            table.insert(1, "layer", layer)
            frames.append(table)
    return pd.concat(frames, ignore_index=True)


def probe_predictions(model: str, task: str, *, store, layer: int = -1, token: str = "cls",
                      split: str = "test", max_train_samples: int | None = None,
                      max_eval_samples: int | None = None, max_seq_len: int = 128,
                      device: str = "auto", data_dir: str | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The frozen probe's per-example predictions on ``split``, for the statistics layer.

    It runs or reads the probe of :func:`probe_baseline` for one task and layer.

    Parameters
    ----------
    model : str
        The pretrained model's name or folder.
    task : str
        The task.
    store : ResultStore
        Where the probe run is kept and read back.
    layer : int
        The layer read (0 = embedding output, -1 = last block).
    token : str
        Which token vector is read, as in :func:`probe_baseline`.
    split : str
        ``"validation"`` or ``"test"``.
    max_train_samples, max_eval_samples, max_seq_len, device, data_dir :
        As in :func:`probe_baseline`.

    Returns
    -------
    P : np.ndarray, shape (1, N)
        The predictions, one row (a probe has no seed): class ids, or scores for regression.
    labels : np.ndarray, shape (N,)
        The labels of ``split``, in the order of
        :meth:`bertdims.train.finetuning.FinetuneRun.predictions`.

    Raises
    ------
    ConfigError
        An unknown ``split`` or ``token``, or an invalid ``layer``.
    """
    from ..modeling.tokens import check_token
    check_choice("split", split, ("validation", "test"))
    run = _probe_runs(model, get_task(task), [layer], store=store, token=check_token(token),
                      max_train_samples=max_train_samples, max_eval_samples=max_eval_samples,
                      max_seq_len=max_seq_len, device=device, data_dir=data_dir)[0]
    return run.array(f"pred_{split}")[None, :], run.array(f"label_{split}")


def constant_predictions(task: str, *, store=None, split: str = "test",
                         max_train_samples: int | None = None, max_eval_samples: int | None = None,
                         data_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The constant guess of :func:`chance_score` for every example of ``split``.

    The guess is the majority training class, or the training mean for regression. It is
    cheap, so nothing is stored.

    Parameters
    ----------
    task : str
        The task.
    store : ResultStore, optional
        Unused; accepted for symmetry with the other prediction readers.
    split : str
        The evaluation split.
    max_train_samples, max_eval_samples : int, optional
        The sizes of the fixed training and evaluation subsets fine-tuning uses.
    data_dir : str, optional
        Where the task's data is read from, as in :func:`bertdims.load_task`.

    Returns
    -------
    P : np.ndarray, shape (1, N)
        The guess, repeated for every example, in one row.
    labels : np.ndarray, shape (N,)
        The labels of ``split``, in the order of
        :meth:`bertdims.train.finetuning.FinetuneRun.predictions`.

    Raises
    ------
    ConfigError
        ``split`` is not a split of the task.
    """
    task = get_task(task) if isinstance(task, str) else task
    data = _ft.prepare_splits(task, max_train_samples=max_train_samples,
                                    max_eval_samples=max_eval_samples,
                                    early_stopping_fraction=0.0, data_dir=data_dir)
    if split not in data:
        raise bad("split", split, "choose one of: " + ", ".join(s for s in data if s != "train"))
    labels = np.asarray(data[split]["label"])
    return _constant_guess(task, np.asarray(data["train"]["label"]), len(labels))[None, :], labels


def baseline_effects(base, *, tasks: Sequence[str], seeds: Sequence[int], store,
                     probe_margin: float = 0.0) -> tuple[dict, dict]:
    """Chapter 2's paired effects per task: full fine-tuning against the frozen linear probe,
    and against the constant guess (Matton and de Oliveira, section 2 and Table 2).

    Both go through :func:`bertdims.core.stats.paired_effect` (paired by seed and test example)
    with the claim "better": against the probe with ``probe_margin``, against the constant guess
    with margin 0 (whether the reference learned at all).

    Parameters
    ----------
    base : FinetuneConfig
        The reference recipe; its ``model``, ``max_seq_len`` and sample sizes also fix the probe
        and the constant guess.
    tasks : sequence of str
        The tasks.
    seeds : sequence of int
        The fine-tuning seeds (the probe and the guess have no randomness: one row each).
    store : ResultStore
        Where the runs and the probe are stored and read back.
    probe_margin : float
        The smallest advantage over the probe that counts.

    Returns
    -------
    tuple of dict
        ``(against_probe, against_guess)``, each ``{task: Effect}`` in ``tasks`` order.

    Raises
    ------
    ConfigError
        When the probe and the fine-tuned runs were not scored on the same test examples.
    """
    from ..core.stats import paired_effect
    sizes = dict(max_train_samples=base.max_train_samples, max_eval_samples=base.max_eval_samples)
    against_probe, against_guess = {}, {}
    for t in tasks:
        ft, labels = grid_predictions(base.replace(task=t), store=store, seed=list(seeds))
        probe, probe_labels = probe_predictions(base.model, t, store=store, max_seq_len=base.max_seq_len,
                                                data_dir=base.data_dir, **sizes)
        if not np.array_equal(labels, probe_labels):
            raise bad("tasks", t, "the probe and the fine-tuned runs must score the same test examples")
        kw = dict(labels=labels, metric=get_task(t).metric, claim="better")
        against_probe[t] = paired_effect(ft, probe, margin=probe_margin, label=f"{t}: fine-tuned - probe", **kw)
        guess = constant_predictions(t, data_dir=base.data_dir, **sizes)[0]
        against_guess[t] = paired_effect(ft, guess, margin=0.0, label=f"{t}: fine-tuned - constant guess", **kw)
    return against_probe, against_guess


def constant_baseline(tasks: Sequence[str], *, store, max_train_samples: int | None = None,
                      max_eval_samples: int | None = None, data_dir: str | None = None) -> pd.DataFrame:
    """The score of a constant guess per task: the floor any trained model must clear.

    The guess is that of :func:`chance_score` (the most frequent training class, or the
    training mean for regression), scored on the examples fine-tuning uses. Stored under kind
    ``constant``.

    Parameters
    ----------
    tasks : str or sequence of str
        The tasks.
    store : ResultStore
        Where the scores are kept and read back.
    max_train_samples, max_eval_samples : int, optional
        The sizes of the fixed training and evaluation subsets fine-tuning uses.
    data_dir : str, optional
        Where the task's data is read from, as in :func:`bertdims.load_task`.

    Returns
    -------
    pd.DataFrame
        Tidy, one row per (task, split, metric) with split ``"validation"`` or ``"test"``;
        columns ``task``, ``split``, ``metric``, ``value`` and ``headline`` (True for the
        task's headline metric).
    """
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    task_objs = [get_task(t) for t in tasks]
    frames = []
    for task in task_objs:
        cfg = {"task": task.name, "max_train_samples": max_train_samples,
               "max_eval_samples": max_eval_samples, "data_dir": data_dir}

        def compute(task=task):
            data = _ft.prepare_splits(task, max_train_samples=max_train_samples,
                                            max_eval_samples=max_eval_samples,
                                            early_stopping_fraction=0.0, data_dir=data_dir)
            y_train = np.asarray(data["train"]["label"])
            if task.is_regression:
                guess_value = float(y_train.mean())
            else:
                values, counts = np.unique(y_train, return_counts=True)
                guess_value = values[np.argmax(counts)]
            rows = []
            for split in ("validation", "test"):
                y = np.asarray(data[split]["label"])
                metrics = compute_metrics(task, np.full(len(y), guess_value), y)
                rows += [{"task": task.name, "split": split, "metric": m, "value": v,
                          "headline": m == task.metric} for m, v in metrics.items()]
            return {"scores": pd.DataFrame(rows)}

        frames.append(store.cached("constant", cfg, compute).table("scores"))
    return pd.concat(frames, ignore_index=True)


def summarize_runs(df: pd.DataFrame, by: Sequence[str], value: str = "value") -> pd.DataFrame:
    """Mean, standard deviation, min, max and count of a column per group of runs.

    Parameters
    ----------
    df : pd.DataFrame
        One row per run (e.g. a filtered :func:`finetune_grid` table), with the ``by``
        columns and the ``value`` column.
    by : str or sequence of str
        The columns that define a group.
    value : str
        The column summarised.

    Returns
    -------
    pd.DataFrame
        One row per group, in order of first appearance; columns the ``by`` columns,
        ``mean``, ``sd`` (ddof 1; 0 for one run), ``min``, ``max``, ``n`` and ``mean ± sd``
        (text, three decimals).
    """
    by = [by] if isinstance(by, str) else list(by)
    g = df.groupby(by, sort=False)[value]
    out = g.agg(mean="mean", sd="std", min="min", max="max", n="count").reset_index()
    out["sd"] = out["sd"].fillna(0.0)
    out["mean ± sd"] = [f"{m:.3f} ± {s:.3f}" for m, s in zip(out["mean"], out["sd"])]
    return out


def run_dims_grid(base, *, tasks: Sequence[str], seeds: Sequence[int], store,
                  progress: bool = False, **kwargs) -> DimsResult:
    """:func:`rank_dims` for every (task, seed).

    Every config and argument is checked before the first run starts.

    Parameters
    ----------
    base : FinetuneConfig
        The config every run starts from (``dims=None``); each run sets its task and seed.
    tasks : str or sequence of str
        The tasks.
    seeds : sequence of int
        The fine-tuning seeds.
    store : ResultStore
        Where runs, rankings and scores are kept and read back.
    progress : bool
        Show the progress of the fine-tuning runs.
    **kwargs
        Passed to :func:`rank_dims` (``methods``, ``candidates``, ``ks``, ``modes``, ...).

    Returns
    -------
    DimsResult
        The results of :func:`rank_dims` for every run, the ``rankings`` and ``scores`` tables
        stacked with ``task`` and ``seed`` columns added, and ``finetune_metrics`` keyed by
        ``(task, seed)``.

    Raises
    ------
    ConfigError
        No task or no seed, or an invalid argument for :func:`rank_dims`.
    """
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    configs = [(t, s, base.replace(task=t, seed=s)) for t in tasks for s in seeds]
    if not configs:
        raise bad("seeds", list(seeds), "give at least one task and one seed")
    _check_run_args(kwargs.get("methods", METHODS), kwargs.get("ks", DEFAULT_KS),
                    kwargs.get("candidates", 20), kwargs.get("modes", MODES))
    from ..train.executor import ensure_runs
    ensure_runs([cfg for _, _, cfg in configs], store, keep_model=True)   # on a cluster, if any
    rankings, scores, metrics, runs = [], [], {}, {}
    for t, s, cfg in configs:
        res = rank_dims(cfg, store=store, progress=progress, **kwargs)
        rankings.append(res.rankings.assign(task=t, seed=s))
        scores.append(res.scores.assign(task=t, seed=s))
        metrics[(t, s)] = res.finetune_metrics
        runs[(t, s)] = res.runs["full"]
    return DimsResult(pd.concat(rankings, ignore_index=True), pd.concat(scores, ignore_index=True),
                      metrics, config=base, runs=runs)


def chosen_dims(rankings: pd.DataFrame, k: int = 5) -> pd.DataFrame:
    """Which dimensions each ranking put first, and how far the seeds agree on them.

    Parameters
    ----------
    rankings : pd.DataFrame
        Rankings, e.g. those of :func:`run_dims_grid`: one row per ranked dimension, with
        columns ``dim``, ``rank`` and any of ``task``, ``method`` and ``seed``, which tell
        the rankings apart.
    k : int
        How many of the best dimensions to show.

    Returns
    -------
    pd.DataFrame
        One row per ranking (per combination of the ``task``, ``method`` and ``seed``
        columns present); columns those, ``top dims`` (the top ``k`` dimensions in rank
        order, space-separated) and, when there are seeds and a ``task`` or ``method``
        column, ``most frequent (seeds)``: the dimension found in the most top-k sets of the
        seeds of that task and method, with in how many of them, as ``"d (count/seeds)"``.
    """
    keys = [c for c in ("task", "method", "seed") if c in rankings.columns]
    rows = []
    for group, part in rankings.sort_values("rank").groupby(keys, sort=False):
        group = group if isinstance(group, tuple) else (group,)
        rows.append({**dict(zip(keys, group)), "top": part["dim"].astype(int).tolist()[:k]})
    out = pd.DataFrame(rows)
    out["top dims"] = [" ".join(map(str, t)) for t in out["top"]]
    by = [c for c in ("task", "method") if c in out.columns]
    if "seed" in out.columns and by:
        def common(tops):
            counts = pd.Series([d for t in tops for d in t]).value_counts()
            return f"{counts.index[0]} ({counts.iloc[0]}/{len(tops)})" if len(counts) else ""
        shared = out.groupby(by)["top"].agg(common).rename("most frequent (seeds)")
        out = out.merge(shared.reset_index(), on=by)
    return out.drop(columns="top")


# ============================================================================ command line
