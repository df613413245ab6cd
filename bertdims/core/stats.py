"""One statistics layer: every verdict of the book goes through :func:`paired_effect`.

A claim compares two settings A and B (say, the head on layer 4 against the head on layer 6)
run with the same seeds and scored on the same test examples. :func:`paired_effect` measures
the effect of A against B on the task's headline metric, either as a difference ``A - B`` or as
a ratio ``A / B - 1``, with a 95% interval from a two-level paired bootstrap:

* the seeds are resampled with replacement (seed ``s`` of A stays paired with seed ``s`` of B;
  a setting without seeds, such as a frozen probe, is one row used for every seed), and
* the test examples are resampled with replacement (the same indices for A, B and the labels),

so the interval holds both the seed-to-seed spread and the finite test set. Each replicate's
statistic is computed from the seed-averaged scores, ``mean_s metric(A_s) - mean_s metric(B_s)``
(or ``mean_s metric(A_s) / mean_s metric(B_s) - 1``), and the interval is the percentile
interval of the replicates. With one seed only the examples are resampled, by
:func:`scipy.stats.bootstrap` (``paired=True``, percentile method).

:func:`verdict_of` turns the interval and a margin fixed before running into one of three
verdicts, **reproduced**, **not reproduced** or **inconclusive**. Principle: a verdict is
*reproduced* when the whole interval lies where the claim holds, *not reproduced* when the
whole interval lies where it fails, and *inconclusive* when the interval straddles the two.
The exact rules per claim kind are in :func:`verdict_of`.

With three or more seeds, a seed-level test of the same hypothesis is reported beside the
interval: :func:`statsmodels.stats.weightstats.ttost_paired` (equivalence, non-inferiority) or
:func:`scipy.stats.ttest_rel` (better, worse) on the per-seed scores. The verdict itself comes
from the interval only.

How well the interval does is checked on simulated data of known truth
(``tests/test_stats.py``): with 3 seeds and 300 test examples, a seed-to-seed spread of about
0.02 accuracy, the 95% interval covered the true difference in 95-99% of simulated experiments
(six batches of 200). Two limits: three seeds give the bootstrap only three values to resample,
so when the seed-to-seed spread dominates, the interval is somewhat too narrow (about 90%
coverage at twice that spread); with one seed there is no seed-to-seed variation to see at all,
and the interval covers only the finite test set.

For a quantity measured once per seed (a weight distance, the index of a principal component)
:func:`seed_effect` gives the same :class:`Effect` from a t-interval over the seeds.

See ``book/scorecard.ipynb`` for how the chapters' verdicts are collected.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from ._validate import bad, check_range

CLAIM_KINDS = ("equivalent", "better", "worse", "noninferior")
SCALES = ("difference", "ratio")
VERDICTS = ("reproduced", "not reproduced", "inconclusive")
METRICS = ("accuracy", "f1", "macro_f1", "matthews", "pearson", "spearman")
_REGRESSION = ("pearson", "spearman")
_METHOD = "paired bootstrap over seeds and test examples, percentile interval"
_MEMORY = 2_000_000          # index entries per bootstrap block (about 16 MB)


# ------------------------------------------------------------------------------- verdicts
def verdict_of(low: float, high: float, claim: str, margin: float) -> str:
    """The verdict on a claim from the interval ``[low, high]`` of the effect A vs B.

    A verdict is *reproduced* when the whole interval lies where the claim holds, *not
    reproduced* when the whole interval lies where it fails, and *inconclusive* when the
    interval straddles the two; the exact rules per claim kind are in the Notes.

    Parameters
    ----------
    low, high : float
        The ends of the interval of the effect, finite, ``low <= high``, on the effect's scale
        (``A - B``, or ``A / B - 1``).
    claim : str
        The claim about A against B, one of :data:`CLAIM_KINDS`: ``"equivalent"``,
        ``"better"``, ``"worse"`` or ``"noninferior"``.
    margin : float
        The margin, on the same scale as the interval, fixed before running; finite and
        ``>= 0``, and ``> 0`` for an equivalence claim.

    Returns
    -------
    str
        One of :data:`VERDICTS`: ``"reproduced"``, ``"not reproduced"`` or
        ``"inconclusive"``.

    Raises
    ------
    ConfigError
        ``low`` or ``high`` is not a finite number, ``low > high``, the claim is unknown, the
        margin is negative or not finite, or an equivalence claim has a margin of 0.

    Notes
    -----
    The rules, per claim kind:

    * ``"equivalent"`` (A matches B within the margin; needs ``margin > 0``):
      reproduced if ``-margin < low`` and ``high < margin`` (the interval lies inside the band);
      not reproduced if ``low >= margin`` or ``high <= -margin`` (no value of the interval lies
      inside the band); else inconclusive.
    * ``"better"`` (A beats B; the margin is the smallest advantage that counts, 0 allowed):
      not reproduced if ``high <= margin`` (any advantage the interval allows is at most the
      margin: none when the margin is 0); else reproduced if ``low > 0`` (the advantage is
      real, and an advantage above the margin is not ruled out); else inconclusive.
      So a small but certain advantage, wholly below the margin, is *not reproduced*.
    * ``"worse"`` (A falls below B): the mirror image: not reproduced if ``low >= -margin``;
      else reproduced if ``high < 0``; else inconclusive.
    * ``"noninferior"`` (A is at least B minus the margin; 0 allowed):
      reproduced if ``low > -margin``; not reproduced if ``high <= -margin``; else inconclusive.
    """
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
                or not np.isfinite(value):
            raise bad(name, value, "expected a finite number")
    if low > high:
        raise bad("low", low, f"expected low <= high (high = {high!r})")
    _check_claim(claim, margin)
    m = float(margin)
    if claim == "equivalent":
        if -m < low and high < m:
            return "reproduced"
        return "not reproduced" if (low >= m or high <= -m) else "inconclusive"
    if claim == "noninferior":
        if low > -m:
            return "reproduced"
        return "not reproduced" if high <= -m else "inconclusive"
    if claim == "better":
        if high <= m:
            return "not reproduced"
        return "reproduced" if low > 0 else "inconclusive"
    # worse
    if low >= -m:
        return "not reproduced"
    return "reproduced" if high < 0 else "inconclusive"


def _check_claim(claim: str, margin: float) -> None:
    if claim not in CLAIM_KINDS:
        raise bad("claim", claim, "choose one of: " + ", ".join(CLAIM_KINDS))
    check_range("margin", margin, 0, None)
    if not np.isfinite(margin):
        raise bad("margin", margin, "expected a finite number >= 0")
    if claim == "equivalent" and margin == 0:
        raise bad("margin", margin, "an equivalence claim needs a margin > 0 "
                  "(with 0 no interval can lie inside the band)")


# --------------------------------------------------------------------------------- effect
@dataclass(frozen=True)
class Effect:
    """The effect of setting A against setting B, with its interval and verdict.

    Made by :func:`paired_effect` (scores on a test set) or :func:`seed_effect` (a quantity
    measured once per seed). ``estimate``, ``low``, ``high`` and ``margin`` are on the
    ``scale`` (``"difference"``: ``A - B``; ``"ratio"``: ``A / B - 1``), computed from the
    seed-averaged scores on the full test set. :meth:`to_dict` and :meth:`from_dict` give a
    JSON-able round trip.

    Attributes
    ----------
    label : str
        The name of the comparison, e.g. ``"layer 4 - layer 6"``.
    metric : str
        The metric's name (one of :data:`METRICS`, the ``__name__`` of a callable metric, or
        the quantity's name given to :func:`seed_effect`).
    scale : str
        ``"difference"`` or ``"ratio"``.
    estimate : float
        The effect on the ``scale``, from the seed-averaged scores.
    low, high : float
        The ends of the interval of the effect, on the ``scale``.
    confidence : float
        The level of the interval, e.g. 0.95.
    claim : str
        The claim tested, one of :data:`CLAIM_KINDS`.
    margin : float
        The margin of the claim, on the ``scale``, fixed before running.
    verdict : str
        One of :data:`VERDICTS`, from :func:`verdict_of` on ``low``, ``high``, ``claim`` and
        ``margin``.
    p_value : float or None
        The p-value of the seed-level test named in ``p_test``; None with fewer than 3 seeds
        (or when the test cannot run or gives no finite value).
    n_seeds : int
        The number of seeds of setting A.
    n_examples : int
        The number of test examples (for :func:`seed_effect`, as given; 0 when not given).
    score_a, score_b : float
        The seed-averaged scores (or values) of A and of B; NaN when not given.
    p_test : str or None
        The name of the seed-level test behind ``p_value``, e.g. ``"ttest_rel (greater)"``.
    method : str
        How the interval was made, in words.
    """

    label: str
    metric: str
    scale: str
    estimate: float
    low: float
    high: float
    confidence: float
    claim: str
    margin: float
    verdict: str
    p_value: float | None
    n_seeds: int
    n_examples: int
    score_a: float = float("nan")
    score_b: float = float("nan")
    p_test: str | None = None
    method: str = _METHOD

    def to_dict(self) -> dict:
        """Plain values, JSON-able; :meth:`from_dict` reads it back."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Effect":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def _fmt(self, x: float) -> str:
        return f"{100 * x:+.1f}%" if self.scale == "ratio" else f"{x:+.3f}"

    def claim_words(self) -> str:
        """The claim with its margin, e.g. ``"equivalent within ±0.020"``."""
        m = f"{100 * self.margin:.1f}%" if self.scale == "ratio" else f"{self.margin:.3f}"
        if self.claim == "equivalent":
            return f"equivalent within ±{m}"
        if self.claim == "noninferior":
            return f"noninferior (at most {m} below)"
        return self.claim + (f" (margin {m})" if self.margin > 0 else "")

    def sentence(self) -> str:
        """One line: comparison, estimate [interval] (metric), claim and verdict."""
        what = self.metric + (", A / B - 1" if self.scale == "ratio" else "")
        return (f"{self.label}: {self._fmt(self.estimate)} [{self._fmt(self.low)}, "
                f"{self._fmt(self.high)}] ({what}); claim: {self.claim_words()} -> {self.verdict}")


# -------------------------------------------------------------------------------- metrics
def _accuracy(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (p == y).mean(axis=-1)


def _pearson(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    pc = p - p.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    den = np.sqrt((pc * pc).sum(-1) * (yc * yc).sum(-1))
    const = (p.max(-1) == p.min(-1)) | (y.max(-1) == y.min(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (pc * yc).sum(-1) / den
    return np.where(const, 0.0, r)      # a constant prediction correlates 0, as in compute_metrics


def _spearman(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata
    return _pearson(rankdata(p, axis=-1), rankdata(y, axis=-1))


def _confusion(p: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """(R, k, k) confusion counts, rows true class, columns predicted; inputs (R, N) codes."""
    r = p.shape[0]
    flat = (np.arange(r)[:, None] * k * k + y * k + p).ravel()
    return np.bincount(flat, minlength=r * k * k).reshape(r, k, k).astype(float)


def _matthews(p: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    c = _confusion(p, y, k)
    t, q = c.sum(2), c.sum(1)                       # true and predicted counts per class
    s, correct = c.sum((1, 2)), np.trace(c, axis1=1, axis2=2)
    num = correct * s - (t * q).sum(1)
    den = np.sqrt((s * s - (q * q).sum(1)) * (s * s - (t * t).sum(1)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, 0.0)


def _f1_per_class(p: np.ndarray, y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    c = _confusion(p, y, k)
    tp = np.diagonal(c, axis1=1, axis2=2)
    support = c.sum(2) + c.sum(1)                   # true + predicted counts per class
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, 2 * tp / support, 0.0), support > 0


def _batch_metric(metric: str | Callable,
                  classes: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``fn(preds (R, N), labels (R, N)) -> (R,)`` scores; class ids coded 0..classes-1."""
    if callable(metric):
        return lambda p, y: np.array([float(metric(pi, yi)) for pi, yi in zip(p, y)])
    if metric == "accuracy":
        return _accuracy
    if metric == "pearson":
        return _pearson
    if metric == "spearman":
        return _spearman
    if metric == "matthews":
        return lambda p, y: _matthews(p, y, classes)
    if metric == "macro_f1":
        def macro(p, y):
            f1, present = _f1_per_class(p, y, classes)
            return (f1 * present).sum(1) / np.maximum(present.sum(1), 1)
        return macro
    # binary f1 of the positive class (class id 1, as sklearn's default pos_label)
    return lambda p, y: _f1_per_class(p, y, classes)[0][:, 1]


def metric_scores(preds, labels, metric: str | Callable) -> np.ndarray:
    """The metric of each row of ``preds`` against ``labels``: one score per seed.

    Built-in metrics follow :func:`bertdims.data.tasks.compute_metrics` (binary ``f1`` is the F1
    of class 1; a constant prediction has correlation 0).

    Parameters
    ----------
    preds : array (S, N)
        Predictions, one row per seed, on the N test examples (class ids, or scores for
        regression). A 1-D array of shape (N,) is one seed.
    labels : array (N,)
        The test labels, N >= 2.
    metric : str or callable
        One of :data:`METRICS`, or ``callable(preds (N,), labels (N,)) -> float``.

    Returns
    -------
    np.ndarray, shape (S,)
        The metric of each row of ``preds``.

    Raises
    ------
    ConfigError
        An unknown metric, arrays of the wrong shape or with non-finite values, or binary
        ``f1`` on class ids other than 0 and 1.
    """
    a, b, y, fn = _prepare(preds, np.asarray(preds)[:1], labels, metric)
    return fn(a, np.broadcast_to(y, a.shape))


# ----------------------------------------------------------------------------- validation
def _as_rows(name: str, x) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise bad(name, f"array of shape {arr.shape}", "expected shape (seeds, examples)")
    if arr.shape[0] < 1:
        raise bad(name, f"array of shape {arr.shape}", "expected at least 1 seed (row)")
    return arr


def _finite(name: str, arr: np.ndarray) -> None:
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise bad(name, f"array of dtype {arr.dtype}", "expected numbers (class ids or scores)")
    if not np.all(np.isfinite(arr)):
        bad_count = int((~np.isfinite(arr)).sum())
        raise bad(name, f"array with {bad_count} NaN/inf value(s)", "expected finite values")


def _prepare(a, b, labels, metric):
    if not callable(metric) and metric not in METRICS:
        raise bad("metric", metric, "choose one of: " + ", ".join(METRICS) +
                  ", or pass a callable(preds, labels) -> float")
    a, b = _as_rows("a", a), _as_rows("b", b)
    y = np.asarray(labels)
    if y.ndim != 1:
        raise bad("labels", f"array of shape {y.shape}", "expected shape (examples,)")
    n = y.shape[0]
    if n < 2:
        raise bad("labels", f"array of shape {y.shape}", "expected at least 2 test examples")
    for name, arr in (("a", a), ("b", b), ("labels", y)):
        _finite(name, arr)
    if a.shape[1] != n:
        raise bad("a", f"array of shape {a.shape}", f"expected {n} columns, one per label")
    if b.shape[1] != n:
        raise bad("b", f"array of shape {b.shape}", f"expected {n} columns, one per label")
    if b.shape[0] not in (1, a.shape[0]):
        raise bad("b", f"array of shape {b.shape}", f"expected {a.shape[0]} rows (paired "
                  f"with a's seeds) or 1 row (a setting without seeds)")
    classes = 0
    if metric in _REGRESSION:
        a, b, y = a.astype(float), b.astype(float), y.astype(float)
    elif metric == "f1":                             # binary: class 1 is the positive class
        values = np.unique(np.concatenate([y, a.ravel(), b.ravel()]))
        if not set(values.tolist()) <= {0, 1}:
            raise bad("metric", metric, "binary f1 needs class ids 0 and 1 only; use "
                      "'macro_f1' for more classes")
        a, b, y, classes = a.astype(np.int64), b.astype(np.int64), y.astype(np.int64), 2
    elif not callable(metric):                       # class ids -> codes 0..K-1
        values, codes = np.unique(np.concatenate([y, a.ravel(), b.ravel()]), return_inverse=True)
        classes = len(values)
        y, a, b = (codes[:n], codes[n:n + a.size].reshape(a.shape),
                   codes[n + a.size:].reshape(b.shape))
    return a, b, y, _batch_metric(metric, classes)


# ------------------------------------------------------------------------------ bootstrap
def _combine(scale: str, ma, mb):
    if scale == "difference":
        return ma - mb
    with np.errstate(invalid="ignore", divide="ignore"):
        return ma / mb - 1.0


def _two_level(a, b, y, fn, scale, n_boot, rng) -> np.ndarray:
    """Replicates of the statistic, resampling seeds (paired) and examples (paired)."""
    s, n = a.shape
    out = np.empty(n_boot)
    step = max(1, _MEMORY // (n * s))
    for start in range(0, n_boot, step):
        r = min(step, n_boot - start)
        ex = rng.integers(0, n, size=(r, n))                       # (r, N) example indices
        yy = y[ex]
        sa = np.stack([fn(a[i][ex], yy) for i in range(s)], axis=1)          # (r, S)
        sb = np.stack([fn(b[i][ex], yy) for i in range(b.shape[0])], axis=1)  # (r, S) or (r, 1)
        pick = rng.integers(0, s, size=(r, s))                     # resampled seeds
        ma = np.take_along_axis(sa, pick, axis=1).mean(1)
        mb = np.take_along_axis(sb, pick, axis=1).mean(1) if sb.shape[1] == s else sb[:, 0]
        out[start:start + r] = _combine(scale, ma, mb)
    return out


def _one_seed(a, b, y, fn, scale, n_boot, confidence, rng) -> tuple[float, float]:
    """Percentile interval with :func:`scipy.stats.bootstrap`, examples resampled (paired)."""
    from scipy.stats import bootstrap

    n = y.shape[0]

    def statistic(pa, pb, yy, axis=-1):
        shape = pa.shape[:-1]
        pa, pb, yy = (np.reshape(np.broadcast_to(v, pa.shape), (-1, n)) for v in (pa, pb, yy))
        return _combine(scale, fn(pa, yy), fn(pb, yy)).reshape(shape)

    res = bootstrap((a[0], b[0], y), statistic, n_resamples=n_boot, batch=max(1, _MEMORY // n),
                    vectorized=True, paired=True, confidence_level=confidence,
                    method="percentile", rng=rng)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


# -------------------------------------------------------------------------------- p-value
def _seed_test(sa: np.ndarray, sb: np.ndarray, claim: str, margin: float,
               scale: str) -> tuple[float | None, str | None]:
    """Seed-level test of the claim on per-seed scores (S,), S >= 3; else (None, None).

    equivalent: TOST (``ttost_paired``, H0: |effect| >= margin); noninferior: its lower
    one-sided test (H0: effect <= -margin); better / worse: ``ttest_rel`` one-sided
    (H0: no advantage / no shortfall). On the ratio scale the tests run on log scores.
    """
    from scipy.stats import ttest_rel

    if len(sa) < 3:
        return None, None
    if scale == "ratio":
        if np.any(sa <= 0) or np.any(sb <= 0) or margin >= 1:
            return None, None
        tx, lo, hi = np.log, 1.0 - margin, 1.0 + margin
    else:
        tx, lo, hi = None, -margin, margin
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)   # identical seeds: no spread, p NaN
        if claim in ("equivalent", "noninferior"):
            from statsmodels.stats.weightstats import ttost_paired
            p_both, lower, _ = ttost_paired(sa, sb, lo, hi, transform=tx)
            p = p_both if claim == "equivalent" else lower[1]
            name = "ttost_paired" + (" (lower test)" if claim == "noninferior" else "")
        else:
            xa, xb = (np.log(sa), np.log(sb)) if tx is not None else (sa, sb)
            p = ttest_rel(xa, xb, alternative="greater" if claim == "better" else "less").pvalue
            name = "ttest_rel (" + ("greater" if claim == "better" else "less") + ")"
    p = float(p)
    return (p if np.isfinite(p) else None), name


# ------------------------------------------------------------------------------ the entry
def paired_effect(a, b, labels, *, metric: str | Callable, claim: str, margin: float,
                  scale: str = "difference", label: str = "A - B", confidence: float = 0.95,
                  n_boot: int = 2000, random_state: int = 0) -> Effect:
    """The effect of setting A against setting B with a paired two-level bootstrap interval.

    Parameters
    ----------
    a : array (S, N)
        Predictions of setting A, one row per seed, on the N test examples (class ids, or
        scores for regression), in the order of ``labels``. A 1-D array is one seed.
    b : array (S, N) or (1, N)
        Predictions of setting B, row ``s`` paired with row ``s`` of ``a`` (same seed), or one
        row for a setting without seeds (frozen probe, constant guess), used for every seed.
    labels : array (N,)
        The test labels.
    metric : str or callable
        One of :data:`METRICS` (the headline metrics of :func:`bertdims.data.tasks.compute_metrics`)
        or ``callable(preds (N,), labels (N,)) -> float`` (slower: called per replicate).
    claim : str
        ``"equivalent"``, ``"better"``, ``"worse"`` or ``"noninferior"`` (A against B).
    margin : float
        On the ``scale``, fixed before running; see :func:`verdict_of`.
    scale : str
        ``"difference"`` (``mean_s metric(A_s) - mean_s metric(B_s)``) or ``"ratio"``
        (``mean_s metric(A_s) / mean_s metric(B_s) - 1``, e.g. a share of the full model).
    label : str
        The name of the comparison, kept in :attr:`Effect.label`.
    confidence, n_boot, random_state :
        Interval level, bootstrap replicates, seed of the resampling.

    Returns
    -------
    Effect
        Estimate, interval, verdict (:func:`verdict_of`) and a seed-level p-value (3+ seeds).

    Raises
    ------
    ConfigError
        An unknown scale, claim or metric, a margin not allowed for the claim, a
        ``confidence`` outside (0, 1), ``n_boot`` below 100 or not an integer, a negative
        ``random_state``, arrays of the wrong shape or with non-finite values, or a ratio where
        B's score is 0 or below (or where the bootstrap gives no finite interval).
    """
    if scale not in SCALES:
        raise bad("scale", scale, "choose one of: " + ", ".join(SCALES))
    _check_claim(claim, margin)
    check_range("confidence", confidence, 0, 1, low_open=True, high_open=True)
    check_range("n_boot", n_boot, 100, None, integer=True)
    check_range("random_state", random_state, 0, None, integer=True)
    if not isinstance(label, str):
        raise bad("label", label, "expected a string")
    a, b, y, fn = _prepare(a, b, labels, metric)
    s, n = a.shape
    sa = fn(a, np.broadcast_to(y, a.shape))                          # (S,) per-seed scores
    sb = fn(b, np.broadcast_to(y, b.shape))                          # (S,) or (1,)
    ma, mb = float(sa.mean()), float(sb.mean())
    if scale == "ratio" and mb <= 0:
        raise bad("scale", scale, f"a ratio needs B's score > 0; B scores {mb:.4g}: "
                  "use scale='difference'")
    estimate = float(_combine(scale, ma, mb))
    rng = np.random.default_rng(random_state)
    method = _METHOD
    if s == 1:
        low, high = _one_seed(a, b, y, fn, scale, n_boot, confidence, rng)
        method = "paired bootstrap over test examples only (one seed), percentile interval"
    else:
        reps = _two_level(a, b, y, fn, scale, n_boot, rng)
        tail = (1 - confidence) / 2
        low, high = (float(v) for v in np.nanquantile(reps, [tail, 1 - tail]))
    if not (np.isfinite(low) and np.isfinite(high)):
        raise bad("b", "scores", "the bootstrap gave no finite interval (B's score is 0 in "
                  "some replicates?); use scale='difference'")
    p, test = _seed_test(sa, np.broadcast_to(sb, sa.shape), claim, float(margin), scale)
    metric_name = metric if isinstance(metric, str) else getattr(metric, "__name__", "custom")
    return Effect(label=label, metric=metric_name, scale=scale, estimate=estimate, low=low,
                  high=high, confidence=float(confidence), claim=claim, margin=float(margin),
                  verdict=verdict_of(low, high, claim, margin), p_value=p, n_seeds=int(s),
                  n_examples=int(n), score_a=ma, score_b=mb, p_test=test, method=method)


def seed_effect(a, b, *, claim: str, margin: float, scale: str = "difference",
                label: str = "A - B", metric: str = "value", confidence: float = 0.95,
                n_examples: int = 0) -> Effect:
    """The effect of A against B for a quantity measured once per seed, with a t-interval.

    For a quantity such as a weight distance or the index of a principal component there are no
    test examples to resample; the interval is a t-interval over the seeds instead. It gives
    the same :class:`Effect` as :func:`paired_effect`.

    Parameters
    ----------
    a : array (S,)
        The quantity for setting A, one value per seed, S >= 2.
    b : array (S,), (1,) or float
        The same for B, paired seed by seed, or one fixed reference value (such as a number
        of classes).
    scale : str
        ``"difference"``: the mean of ``A_s - B_s`` with the interval of
        :func:`scipy.stats.ttest_rel` (against a fixed B, a one-sample t-interval);
        ``"ratio"``: the geometric mean of ``A_s / B_s``, minus 1, with the interval of the
        same test on the logarithms (values must be > 0).
    claim, margin, confidence :
        As for :func:`paired_effect`; the verdict is :func:`verdict_of` on this interval.
    label : str
        The name of the comparison, kept in :attr:`Effect.label`.
    metric : str
        The name of the quantity, kept in :attr:`Effect.metric`.
    n_examples : int
        The number of examples each value was computed on, for the record (0: not given).

    Returns
    -------
    Effect
        Estimate, interval, verdict (:func:`verdict_of`), the means of A and B as
        ``score_a`` and ``score_b``, and a seed-level p-value (3+ seeds).

    Raises
    ------
    ConfigError
        An unknown scale or claim, a margin not allowed for the claim, a ``confidence``
        outside (0, 1), fewer than 2 seeds, ``b`` of the wrong length, non-finite values, or
        values <= 0 on the ratio scale.
    """
    from scipy.stats import ttest_rel

    if scale not in SCALES:
        raise bad("scale", scale, "choose one of: " + ", ".join(SCALES))
    _check_claim(claim, margin)
    check_range("confidence", confidence, 0, 1, low_open=True, high_open=True)
    check_range("n_examples", n_examples, 0, None, integer=True)
    av = np.asarray(a, dtype=float)
    bv = np.atleast_1d(np.asarray(b, dtype=float))
    if av.ndim != 1 or av.shape[0] < 2:
        raise bad("a", f"array of shape {av.shape}", "expected one value per seed, at least "
                  "2 seeds (with one seed there is no seed-to-seed interval)")
    if bv.ndim != 1 or bv.shape[0] not in (1, av.shape[0]):
        raise bad("b", f"array of shape {bv.shape}", f"expected {av.shape[0]} values (paired "
                  "with a) or one reference value")
    _finite("a", av)
    _finite("b", bv)
    if scale == "ratio":
        if np.any(av <= 0) or np.any(bv <= 0):
            raise bad("scale", scale, "a ratio needs values > 0; use scale='difference'")
        xa, xb = np.log(av), np.log(bv)
    else:
        xa, xb = av, bv
    diff = xa - xb
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        if np.ptp(diff) == 0:                       # every seed agrees: a zero-width interval
            lo = hi = float(diff[0])
        else:
            ci = ttest_rel(xa, np.broadcast_to(xb, xa.shape)).confidence_interval(confidence)
            lo, hi = float(ci.low), float(ci.high)
    est = float(diff.mean())
    if scale == "ratio":
        est, lo, hi = (float(np.expm1(v)) for v in (est, lo, hi))
    p, test = _seed_test(av, np.broadcast_to(bv, av.shape), claim, float(margin), scale)
    return Effect(label=label, metric=metric, scale=scale, estimate=est, low=lo, high=hi,
                  confidence=float(confidence), claim=claim, margin=float(margin),
                  verdict=verdict_of(lo, hi, claim, margin), p_value=p, n_seeds=int(av.shape[0]),
                  n_examples=int(n_examples), score_a=float(av.mean()), score_b=float(bv.mean()),
                  p_test=test,
                  method="t-interval over seeds" + (" (log scale)" if scale == "ratio" else ""))


#: Verdicts from least to most favourable to a claim.
SEVERITY = {"not reproduced": 0, "inconclusive": 1, "reproduced": 2}


# ------------------------------------------------------------------------------ choosing
def _against(effect: Effect) -> float:
    """How strongly the point estimate speaks against the claim (larger: more against)."""
    if effect.claim in ("better", "noninferior"):
        return -effect.estimate
    if effect.claim == "worse":
        return effect.estimate
    return abs(effect.estimate)                    # equivalent: the largest gap


def least_favourable(effects: Mapping[str, Effect]) -> str:
    """The key of the effect least favourable to the claim all ``effects`` test.

    A claim tested several times (on every task, every other token vector, every upper layer)
    holds only as far as its weakest case: the verdict order is *not reproduced* (weakest),
    *inconclusive*, *reproduced*; among equal verdicts, the estimate furthest on the claim's
    losing side (lowest for better / noninferior, highest for worse, largest in size for
    equivalent). Every effect must test the same kind of claim.
    """
    if not effects:
        raise bad("effects", "{}", "expected at least one effect")
    kinds = {e.claim for e in effects.values()}
    if len(kinds) != 1:
        raise bad("effects", sorted(kinds), "expected effects of one claim kind")
    return min(effects, key=lambda k: (SEVERITY[effects[k].verdict], -_against(effects[k])))


def pick(effects: Mapping[str, Effect]) -> Effect | None:
    """The least favourable effect (:func:`least_favourable`), or None when there is none."""
    return effects[least_favourable(effects)] if effects else None
