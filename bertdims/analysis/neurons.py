"""Salient neurons: single dimensions of the [CLS] embedding that carry the task
(Matton & de Oliveira, "Emergent Properties of Finetuned Language Representation Models",
section 3.2).

:class:`NeuronSelector` is greedy forward selection with the scikit-learn contract: at each step
it adds the dimension that maximises the k-fold cross-validated accuracy of an L2-regularised
logistic regression on the dimensions chosen so far plus that one. It makes the same choices as
``SequentialFeatureSelector(LogisticRegression(), cv=folds)`` on the same (standardised)
features and folds, where scikit-learn's own solver tolerance does not decide between two
candidates of (nearly) equal score, at a fraction of the cost (``benchmarks/bench_neurons.py``).

How a step runs:

1. Screen every candidate dimension d with one Newton step from the previous step's optimum
   (weight 0 on d): the previous model's probabilities are shared by all candidates, so the
   step is a few matrix products over all of them (:func:`_screen`), and its accuracy on
   the test folds estimates the candidate's CV accuracy.
2. Solve the best ``screen`` candidates to convergence, all folds at once, by batched Newton
   iterations in torch (:func:`newton_solve`), starting from the screening step; then also
   every candidate whose estimate comes within the margin of the best converged score.
3. Pick the best converged candidate (ties: the lowest dimension, as scikit-learn).

The logistic regression is scikit-learn's: objective
``mean(log-loss over the training fold) + ||W||^2 / (2 C n_train)`` with an unpenalised
intercept, a single weight vector for two classes and one per class (softmax) otherwise.
Features are standardised once on all rows given to ``fit`` (``standardize=True``), which is
what the agreement test feeds scikit-learn as well. Everything runs on ``device`` (CPU or GPU,
same code).
"""
from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral, Real
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from ..core._validate import ConfigError, ConfigMixin, bad, check_range
from ..core.result import StudyTables
from ..config.params import Flag, check_fields, own, param, study_param
from .probes import check_embeddings, linear_predictions  # noqa: F401  (part of this module's API)

from sklearn.base import BaseEstimator, _fit_context
from sklearn.feature_selection import SelectorMixin
from sklearn.utils._param_validation import Interval
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data


# ---------------------------------------------------------------------------- validation
def _validate_xy(est, X, y) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's own checks of X and y (dense, finite, real numbers, at least 2 rows,
    one label per row, class labels), raised as :class:`ConfigError` with scikit-learn's text."""
    try:
        X, y = validate_data(est, X, y, accept_sparse=False, dtype=[np.float64, np.float32],
                             ensure_min_samples=2)
        check_classification_targets(y)
    except ValueError as e:
        raise ConfigError(f"X, y: {e}") from e
    return X, y


def _encode_labels(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    classes, codes = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise bad("y", f"{len(classes)} class", "need at least two classes")
    return classes, codes


def make_folds(y: np.ndarray, cv: int | Iterable, X: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Fixed (train, test) index pairs: ``StratifiedKFold(cv)`` (no shuffling, as scikit-learn
    does for an int ``cv`` with a classifier), the splits of a splitter (``cv.split(X, y)``)
    or the given splits."""
    y = np.asarray(y)
    if hasattr(cv, "split"):
        cv = list(cv.split(np.zeros((len(y), 1)) if X is None else X, y))
    if isinstance(cv, (int, np.integer)) and not isinstance(cv, bool):
        check_range("cv", int(cv), 2, integer=True)
        counts = np.unique(y, return_counts=True)
        if counts[1].min() < cv:
            small = {str(c): int(k) for c, k in zip(*counts) if k < cv}
            raise bad("cv", int(cv), f"every class needs at least cv={cv} examples for stratified "
                      f"folds; these classes have fewer: {small}")
        from sklearn.model_selection import StratifiedKFold
        return [(tr, te) for tr, te in StratifiedKFold(int(cv)).split(np.zeros(len(y)), y)]
    try:
        folds = [(np.asarray(tr, dtype=np.int64), np.asarray(te, dtype=np.int64)) for tr, te in cv]
    except (TypeError, ValueError):
        raise bad("cv", type(cv).__name__, "expected an int >= 2 or a list of (train, test) index arrays") from None
    if len(folds) == 0:
        raise bad("cv", cv, "give at least one (train, test) split")
    for tr, te in folds:
        if len(tr) == 0 or len(te) == 0 or tr.max() >= len(y) or te.max() >= len(y) or min(tr.min(), te.min()) < 0:
            raise bad("cv", "a split", f"train and test indices must be non-empty and in [0, {len(y) - 1}]")
        missing = set(np.unique(y)) - set(np.unique(y[tr]))
        if missing:
            raise bad("cv", "a split", f"every class must appear in each training fold; missing {sorted(missing)}")
    return folds


# ---------------------------------------------------------------------------- fold data
class _FoldData:
    """Everything the solves of one selection share, on one torch device.

    ``X`` (n, D) float64 and a float32 copy for screening; per fold f its training rows
    gathered and padded to m rows: ``Xtr`` (F, m, D), ``Ytr`` (F, m, Kc) (one-hot, or the 0/1
    label for two classes, Kc = 1), ``wtr`` (F, m) = 1 / n_train on real rows and 0 on padding;
    ``lam`` (F,) = 1 / (C n_train), scikit-learn's penalty on a mean loss; and the test rows.
    ``y_hit`` (n,) are the labels predictions are scored against (-1: never right)."""

    def __init__(self, X: np.ndarray, codes: np.ndarray, folds: list, K: int, C: float,
                 device: torch.device, y_hit: np.ndarray | None = None):
        dt = torch.float64
        self.X = torch.as_tensor(X, dtype=dt, device=device)
        self.X32 = self.X.to(torch.float32)
        self.XT32 = self.X32.T.contiguous()                                   # (D, n)
        self.n, self.D = self.X.shape
        self.y = torch.as_tensor(codes, device=device)
        self.y_hit = self.y if y_hit is None else torch.as_tensor(y_hit, device=device)
        self.K, self.Kc, self.binary = K, (1 if K == 2 else K), K == 2
        self.Y = (self.y.to(dt)[:, None] if self.binary else
                  torch.nn.functional.one_hot(self.y, K).to(dt))               # (n, Kc)
        self.F, self.device = len(folds), device
        m = max(len(tr) for tr, _ in folds)
        self.tr_idx = torch.zeros(self.F, m, dtype=torch.long, device=device)
        self.wtr = torch.zeros(self.F, m, dtype=dt, device=device)
        self.w = torch.zeros(self.n, self.F, dtype=dt, device=device)        # (n, F) for screening
        for f, (tr, _) in enumerate(folds):
            tr = torch.as_tensor(np.asarray(tr), device=device)
            self.tr_idx[f, :len(tr)] = tr
            self.wtr[f, :len(tr)] = 1.0 / len(tr)
            self.w[tr, f] = 1.0 / len(tr)
        ntr = torch.as_tensor([float(len(tr)) for tr, _ in folds], dtype=dt, device=device)
        self.lam = 1.0 / (C * ntr)                                            # (F,)
        self.Xtr, self.Ytr = self.X[self.tr_idx], self.Y[self.tr_idx]          # (F,m,D), (F,m,Kc)
        self.test = [torch.as_tensor(np.asarray(te), device=device) for _, te in folds]
        self.n_test = np.array([len(te) for _, te in folds], dtype=np.float64)

    def start(self) -> torch.Tensor:
        """The intercept-only optimum of every fold, (F, 1, Kc): log class frequencies."""
        freq = torch.einsum("fm,fmk->fk", self.wtr, self.Ytr)
        if self.binary:
            return torch.log(freq / (1 - freq))[:, None, :]
        b = torch.log(freq)
        return (b - b.mean(-1, keepdim=True))[:, None, :]

    def designs(self, selected: list[int], cands: np.ndarray) -> torch.Tensor:
        """Training designs [X_S, x_d, 1] of every candidate d: (c, F, m, s+2)."""
        s, (F, m) = len(selected), self.tr_idx.shape
        A = torch.empty(len(cands), F, m, s + 2, dtype=self.X.dtype, device=self.device)
        A[..., :s] = self.Xtr[:, :, selected]
        A[..., s] = self.Xtr[:, :, torch.as_tensor(cands, device=self.device)].permute(2, 0, 1)
        A[..., s + 1] = 1
        return A

    def accuracy(self, selected: list[int], cands: np.ndarray, W: torch.Tensor) -> np.ndarray:
        """Fold accuracies (c, F) of the weights W (c, F, s+2, Kc) on the test rows."""
        s, idx, hits = len(selected), torch.as_tensor(cands, device=self.device), []
        for f, te in enumerate(self.test):
            Xt = self.X[te]
            z = (Xt[:, selected] @ W[:, f, :s] + W[:, f, s + 1, None, :]
                 + Xt[:, idx].T[:, :, None] * W[:, f, s, None, :])               # (c, n_te, Kc)
            pred = (z[..., 0] > 0).long() if self.binary else z.argmax(-1)
            hits.append((pred == self.y_hit[te]).sum(1))
        return torch.stack(hits, 1).cpu().numpy().astype(np.float64) / self.n_test


# ---------------------------------------------------------------------------- batched solver
def newton_solve(data: _FoldData, A: torch.Tensor, W: torch.Tensor, *, tol: float = 1e-6,
                 max_iter: int = 50) -> tuple[torch.Tensor, int]:
    """Solve every (candidate, fold) logistic regression of ``A`` (c, F, m, p) (last column the
    intercept) from ``W`` (c, F, p, Kc) by Newton's method; returns the weights and the number
    of iterations of the slowest problem.

    Objective per problem: mean log-loss over the fold's training rows + ``lam ||W||^2 / 2``
    (intercept unpenalised): scikit-learn's ``LogisticRegression`` (softmax for K > 2, one
    weight vector for K = 2). Scores are laid out classes-first, (c, F, Kc, m), so that softmax
    and the gradient run along contiguous rows. The Hessian (float32 products, float64 solve)
    is kept while each step shrinks the gradient at least fourfold and refreshed otherwise;
    the gradient is float64, so the fixed point (every gradient entry below ``tol``) is exact.
    Softmax intercepts are defined up to a common shift: a rank-one term along that shift
    (where the gradient is always zero) keeps the system invertible without moving the solution.
    Problems leave the batch as they converge."""
    c, F, m, p = A.shape
    Kc, binary, dt, dev = data.Kc, data.binary, A.dtype, A.device
    pen = torch.ones(p, dtype=dt, device=dev)
    pen[-1] = 0                                                     # intercept not penalised
    lam1, wtr = data.lam.to(dt), data.wtr.to(dt)
    lam, wk, sq = lam1[:, None, None], wtr[:, None, :], wtr.sqrt()[:, None, :]
    Yk = data.Ytr.transpose(1, 2).to(dt)                            # (F, Kc, m)
    yk = Yk.argmax(1, keepdim=True)[None]                           # (1, F, 1, m) class ids
    extra = torch.diag_embed((lam1[:, None, None] * pen[None, :, None]).expand(F, p, Kc).reshape(F, p * Kc))
    if not binary:
        extra[:, (p - 1) * Kc:, (p - 1) * Kc:] += 1.0 / Kc ** 2
    W = W.clone()
    alive = torch.arange(c, device=dev)
    AT = A.transpose(-1, -2).contiguous()                           # (c, F, p, m)
    slack = 1e-12 if dt == torch.float64 else 1e-6                  # rounding allowed in the loss

    def objective(AT_, W_):
        z = torch.matmul(W_.transpose(-1, -2), AT_)                  # (c, F, Kc, m)
        if binary:
            prob = torch.sigmoid(z)
            ll = (torch.nn.functional.softplus(z) - z * Yk)[:, :, 0]
        else:
            prob = torch.softmax(z, -2)
            ll = -torch.log(prob.gather(-2, yk.expand(len(z), -1, -1, -1))[:, :, 0])
        return prob, (ll * wtr).sum(-1) + 0.5 * lam1 * (W_[:, :, :-1] ** 2).flatten(2).sum(-1)

    prob, loss = objective(AT, W)
    L = gprev = None
    iters = 0
    for it in range(max_iter + 1):
        Wa = W[alive]
        g = torch.matmul((prob - Yk) * wk, A).transpose(-1, -2) + lam * Wa * pen[:, None]   # (c,F,p,Kc)
        gmax = g.abs().flatten(2).amax(-1)                           # (c, F)
        active = gmax > tol
        keep = active.any(1)
        if not bool(keep.any()) or it == max_iter:
            break
        iters = it + 1
        if not bool(keep.all()):
            alive, A, AT, prob, loss, g, active, Wa, gmax = (alive[keep], A[keep], AT[keep], prob[keep],
                                                             loss[keep], g[keep], active[keep], Wa[keep], gmax[keep])
            L = None if L is None else L[keep]
            gprev = None if gprev is None else gprev[keep]
        ca = A.shape[0]
        # Hessians of the candidates whose gradient did not shrink fourfold (all, at first)
        redo = (torch.ones(ca, dtype=torch.bool, device=dev) if L is None else
                (gmax > 0.25 * gprev).any(1))
        if bool(redo.any()):
            Hr = _hessian(A[redo], AT[redo], prob[redo], wk, sq, binary) + extra
            Lr, info = torch.linalg.cholesky_ex(Hr)
            if bool((info > 0).any()):                                           # not expected
                Lr = torch.linalg.cholesky(Hr + 1e-8 * torch.eye(p * Kc, dtype=dt, device=dev))
            if L is None:
                L = Lr
            else:
                L[redo] = Lr
        gprev = gmax
        step = torch.cholesky_solve(g.reshape(ca, F, p * Kc, 1), L).view_as(Wa) * active[..., None, None]
        t = torch.ones(ca, F, dtype=dt, device=dev)
        for _ls in range(40):                                        # backtracking, rarely used
            W_new = Wa - t[..., None, None] * step
            prob_new, loss_new = objective(AT, W_new)
            ok = loss_new <= loss + slack * loss.abs() + slack * 1e-3
            if bool(ok.all()):
                break
            t = torch.where(ok, t, t / 2)
        W[alive] = W_new
        prob, loss = prob_new, loss_new
    return W, iters


def _f32(t: torch.Tensor, tiny: float) -> torch.Tensor:
    """float32 copy with entries below ``tiny`` in magnitude set to 0: products of such
    entries would be subnormal floats, which x86 CPUs compute tens of times slower."""
    t = t.to(torch.float32)
    return t.masked_fill_(t.abs() < tiny, 0.0)


def _hessian(A: torch.Tensor, AT: torch.Tensor, prob: torch.Tensor, wk: torch.Tensor,
             sq: torch.Tensor, binary: bool) -> torch.Tensor:
    """Hessians of the mean log-loss, (c, F, pKc, pKc): A (c, F, m, p), AT its transpose,
    prob (c, F, Kc, m), wk / sq the row weights and their square roots (F, 1, m).
    Softmax: sum_i w_i [diag(p_i) - p_i p_i^T] (x) a_i a_i^T in (feature, class) order, the
    outer part as U U^T with U = a (x) sqrt(w) p (float32 products, float64 result)."""
    c, F, m, p = A.shape
    if binary:
        return torch.matmul(AT * (prob * (1 - prob) * wk), A)                  # (c, F, p, p)
    K, f32 = prob.shape[2], torch.float32
    AT32 = _f32(AT, 1e-8)           # drops terms far below the Hessian's rounding (no subnormals)
    U = (AT32[:, :, :, None, :] * _f32(prob * sq, 1e-10)[:, :, None, :, :]).reshape(c, F, p * K, m)
    H = -torch.matmul(U, U.transpose(-1, -2)).to(A.dtype).view(c, F, p, K, p, K)
    diag = torch.matmul(U * sq.to(f32), AT32.transpose(-1, -2)).to(A.dtype)       # (c,F,pK,p)
    kk = torch.arange(K, device=A.device)
    H[:, :, :, kk, :, kk] += diag.view(c, F, p, K, p).permute(3, 0, 1, 2, 4)
    return H.reshape(c, F, p * K, p * K)


class BatchedLogReg:
    """Many small L2 logistic regressions on shared rows, solved together by Newton's method
    (:func:`newton_solve`).

    Problem (c, f) uses the design ``A[c]`` (n, p) (last column the intercept) restricted to
    the training rows of fold f. ``A``: (C, n, p); ``y``: (n,) class ids in [0, K);
    ``train``: (F, n) 0/1 masks. ``fit`` returns weights (C, F, p) for K = 2 or (C, F, p, K).
    """

    def __init__(self, C: float = 1.0, tol: float = 1e-6, max_iter: int = 50):
        self.C, self.tol, self.max_iter = C, tol, max_iter

    def fit(self, A: torch.Tensor, y: torch.Tensor, train: torch.Tensor, num_classes: int,
            W0: torch.Tensor | None = None) -> torch.Tensor:
        Cn, n, p = A.shape
        mask = train.bool().cpu().numpy()
        folds = [(np.flatnonzero(r), np.flatnonzero(~r)) for r in mask]
        data = _FoldData(np.zeros((n, 1)), y.cpu().numpy(), folds, num_classes, self.C, A.device)
        At = A.to(torch.float64)[:, data.tr_idx]                                  # (C, F, m, p)
        Kc = data.Kc
        W = (torch.zeros(Cn, len(folds), p, Kc, dtype=torch.float64, device=A.device) if W0 is None
             else W0.to(torch.float64).reshape(Cn, len(folds), p, Kc))
        W, self.n_iter_ = newton_solve(data, At, W, tol=self.tol, max_iter=self.max_iter)
        return W[..., 0] if data.binary else W


def _screen(data: _FoldData, selected: list[int], cands: np.ndarray,
            Wb: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
    """Estimated fold accuracies (c, F) of every candidate after one Newton step from the
    previous step's optimum ``Wb`` (F, s+1, Kc) on B = [X_S, 1], and the stepped weights
    (c, F, s+2, Kc) in [X_S, x_d, 1] order (the exact solves start there).

    The step uses each class's own curvature w p (1 - p) and leaves out the coupling between
    classes (exact for two classes), so the blocks of [B, x_d] are per class and fold: the B-B
    block is shared by all candidates, the x_d rows are matrix products over all candidates at
    once, and the Schur complement gives the step in closed form. In float32: it only ranks."""
    n, F, Kc, dt, dev = data.n, data.F, data.Kc, data.X.dtype, data.device
    s, f32 = len(selected), torch.float32
    q = s + 1
    B = torch.cat([data.X[:, selected], torch.ones(n, 1, dtype=dt, device=dev)], 1)   # (n, q)
    cidx = torch.as_tensor(cands, device=dev)
    Xc, XT = data.X32[:, cidx], data.XT32[cidx]                                      # (n,c), (c,n)
    c = len(cands)
    z0 = torch.einsum("nj,fjk->nfk", B, Wb)                                           # (n, F, Kc)
    prob = torch.sigmoid(z0) if data.binary else torch.softmax(z0, -1)
    wr = data.w[:, :, None]
    r = ((prob - data.Y[:, None, :]) * wr).reshape(n, F * Kc)                        # (n, FK)
    h = (prob * (1 - prob) * wr).reshape(n, F * Kc)
    pen = torch.ones(q, dtype=dt, device=dev)
    pen[-1] = 0
    lamk = data.lam[:, None].expand(F, Kc).reshape(F * Kc)                           # (FK,)
    gb = (B.T @ r).T + lamk[:, None] * Wb.permute(0, 2, 1).reshape(F * Kc, q) * pen   # (FK, q)
    Hbb = torch.einsum("nj,nl,nm->mjl", B, B, h) + torch.diag_embed(lamk[:, None] * pen)
    Hinv = torch.linalg.inv(Hbb).to(f32)                                              # (FK, q, q)
    tb = torch.einsum("mjl,ml->mj", Hinv, gb.to(f32))                                 # (FK, q)
    r32, h32, B32 = _f32(r, 1e-20), _f32(h, 1e-20), B.to(f32)
    gd = Xc.T @ r32                                                                   # (c, FK)
    Hdd = (Xc * Xc).T @ h32 + lamk.to(f32)
    Hbd = (Xc.T @ (h32[:, :, None] * B32[:, None, :]).reshape(n, -1)).view(c, F * Kc, q)
    u = torch.einsum("mjl,cml->cmj", Hinv, Hbd)
    dd = (gd - (Hbd * tb[None]).sum(-1)) / (Hdd - (Hbd * u).sum(-1))                  # (c, FK)
    wd = -dd.view(c, F, Kc)
    Wn = Wb.to(f32).permute(0, 2, 1)[None] - (tb[None] - u * dd[..., None]).view(c, F, Kc, q)
    hits = []
    for f, te in enumerate(data.test):
        nt, Bt, yt = len(te), B32[te], data.y_hit[te]
        if data.binary:
            z = Wn[:, f, 0] @ Bt.T + wd[:, f, 0, None] * XT[:, te]                  # (c, nt)
            hit = ((z > 0) == (yt == 1)) & (yt >= 0)
        else:                                                # classes-major: (K, c, nt)
            z = (Wn[:, f].permute(1, 0, 2).reshape(Kc * c, q) @ Bt.T).view(Kc, c, nt)
            z.addcmul_(wd[:, f].T[:, :, None], XT[None, :, te])
            zt = z[yt.clamp_min(0), :, torch.arange(nt, device=dev)].T               # (c, nt)
            hit = (zt >= z.amax(0)) & (yt >= 0)
        hits.append(hit.sum(1))
    acc = torch.stack(hits, 1).cpu().numpy().astype(np.float64) / data.n_test
    Wn = Wn.transpose(2, 3).to(dt)                                                    # (c, F, q, Kc)
    return acc, torch.cat([Wn[:, :, :s], wd[:, :, None, :].to(dt), Wn[:, :, s:]], 2)


def _solve_candidates(data: _FoldData, selected: list[int], cands: np.ndarray, W0: torch.Tensor,
                      tol: float, max_iter: int, budget: float = 2e7) -> tuple[np.ndarray, torch.Tensor, int]:
    """Exact fold accuracies (c, F), weights (c, F, s+2, Kc) and Newton iterations, in
    chunks of candidates that keep the largest temporary near ``budget`` elements."""
    F, m = data.tr_idx.shape
    p = len(selected) + 2
    chunk = max(1, int(budget // (F * m * p * data.Kc * 2)))
    accs, Ws, iters = [], [], 0
    for a in range(0, len(cands), chunk):
        W, it = newton_solve(data, data.designs(selected, cands[a:a + chunk]), W0[a:a + chunk],
                             tol=tol, max_iter=max_iter)
        accs.append(data.accuracy(selected, cands[a:a + chunk], W))
        Ws.append(W)
        iters = max(iters, it)
    return np.concatenate(accs), torch.cat(Ws), iters


# ---------------------------------------------------------------------------- selector
def standardize(X: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """(X - mean) / std per dimension, with mean and std of ``reference`` (default X);
    constant dimensions are only centred. The preprocessing of :class:`NeuronSelector`."""
    ref = np.asarray(X if reference is None else reference, dtype=np.float64)
    mean, std = ref.mean(0), ref.std(0)
    return (np.asarray(X, dtype=np.float64) - mean) / np.where(std > 0, std, 1.0)


class NeuronSelector(SelectorMixin, BaseEstimator):
    """Greedy forward selection of salient neurons (section 3.2.1), scikit-learn style.

    Parameters
    ----------
    n_neurons : number of dimensions to select (the paper's 1, 5 and "natural" = #classes)
    cv : int (stratified k folds, unshuffled, as scikit-learn), a splitter with ``split``, or
        a list of (train, test) index pairs
    C : inverse L2 strength of the logistic regression (scikit-learn's default 1.0)
    standardize : standardise every dimension on the rows given to ``fit`` first
    tol : Newton stops once every gradient entry is below ``tol`` (the objective is a mean)
    max_iter : most Newton iterations of one solve
    screen : when set, every candidate is first scored after one Newton step from the previous
        step's model (:func:`_screen`), the ``screen`` best are solved to convergence, and so is
        every other candidate whose screened score comes within ``screen_margin`` of the best
        converged one (or within three times the screening error seen on the solved ones plus
        one example, if that is smaller). The winner is always chosen among converged
        candidates. None solves every candidate to convergence.
    screen_margin : see ``screen`` (mean accuracy, 0.01 = one point)
    device : "cpu", "cuda", "auto" or a torch device string
    num_threads : torch CPU threads during ``fit`` (None keeps torch's setting)
    progress : show a progress bar over the steps

    Attributes
    ----------
    selected_dims_ : (n_neurons,) dimensions in the order chosen
    scores_ : (n_neurons,) mean cross-validated accuracy after each step
    fold_scores_ : (n_neurons, n_folds) the per-fold accuracies behind ``scores_``
    candidate_scores_ : (n_neurons, n_dims) mean CV accuracy of every candidate at each step
        (NaN for dimensions already selected); row 0 is the single-neuron accuracy of every dim
    converged_ : (n_neurons, n_dims) bool, which entries of ``candidate_scores_`` come from
        converged solves (the others are screening estimates)
    n_solved_ : (n_neurons,) candidates solved to convergence at each step
    n_iter_ : Newton iterations of the slowest solve
    classes_, n_features_in_, folds_
    """

    _parameter_constraints: dict = {
        "n_neurons": [Interval(Integral, 1, None, closed="left")],
        "cv": ["cv_object"],
        "C": [Interval(Real, 0, None, closed="neither")],
        "standardize": ["boolean"],
        "tol": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "screen": [Interval(Integral, 1, None, closed="left"), None],
        "screen_margin": [Interval(Real, 0, None, closed="left")],
        "device": [str],
        "num_threads": [Interval(Integral, 1, None, closed="left"), None],
        "progress": ["boolean"],
    }

    def __init__(self, n_neurons: int = 5, *, cv: int | Sequence = 5, C: float = 1.0,
                 standardize: bool = True, tol: float = 1e-6, max_iter: int = 50,
                 screen: int | None = 6, screen_margin: float = 0.01, device: str = "cpu",
                 num_threads: int | None = None, progress: bool = False):
        self.n_neurons, self.cv, self.C, self.standardize = n_neurons, cv, C, standardize
        self.tol, self.max_iter, self.screen, self.screen_margin = tol, max_iter, screen, screen_margin
        self.device, self.num_threads, self.progress = device, num_threads, progress

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False            # refused with a message naming sparse input
        tags.input_tags.allow_nan = False
        tags.target_tags.required = True          # supervised: y gives the classes
        return tags

    # -- validation before any solve ---------------------------------------------------
    def _validate(self, X, y):
        X, y = _validate_xy(self, X, y)
        if self.n_neurons > X.shape[1]:
            raise bad("n_neurons", self.n_neurons, f"at most the number of dimensions ({X.shape[1]})")
        classes, codes = _encode_labels(y)
        folds = make_folds(codes, self.cv, X)
        return X, codes, classes, folds

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y) -> "NeuronSelector":
        """Select ``n_neurons`` dimensions of X (n, D) for labels y (n,). Returns self."""
        X, codes, classes, folds = self._validate(X, y)
        from ..core.device import pick_device
        dev = pick_device(self.device)
        threads = torch.get_num_threads()
        if self.num_threads is not None:
            torch.set_num_threads(self.num_threads)
        try:
            self._search(X, codes, folds, len(classes), dev)
        finally:
            torch.set_num_threads(threads)
        self.classes_, self.folds_ = classes, folds
        return self

    def _search(self, X: np.ndarray, codes: np.ndarray, folds: list, K: int, dev: torch.device) -> None:
        data = _FoldData(standardize(X) if self.standardize else X, codes, folds, K, self.C, dev)
        D, k = X.shape[1], self.n_neurons
        selected: list[int] = []
        W_prev = data.start()
        cand_scores = np.full((k, D), np.nan)
        converged = np.zeros((k, D), dtype=bool)
        fold_scores = np.zeros((k, len(folds)))
        n_solved, n_iter = np.zeros(k, dtype=int), 1
        from tqdm.auto import tqdm
        for step in tqdm(range(k), disable=not self.progress, desc="neurons"):
            cands = np.setdiff1d(np.arange(D), selected)
            est, W0 = _screen(data, selected, cands, W_prev)
            est = est.mean(1)
            if self.screen is None or len(cands) <= self.screen:
                todo = np.arange(len(cands))
            else:
                todo = np.sort(np.argsort(-est, kind="stable")[:self.screen])
            exact = np.full(len(cands), np.nan)
            folds_acc = np.zeros((len(cands), len(folds)))
            weights = {}
            while len(todo):
                acc, W, it = _solve_candidates(data, selected, cands[todo], W0[torch.as_tensor(todo, device=dev)],
                                               self.tol, self.max_iter)
                exact[todo], folds_acc[todo] = acc.mean(1), acc
                weights.update({int(i): W[j] for j, i in enumerate(todo)})
                n_iter = max(n_iter, it)
                done = ~np.isnan(exact)
                err = 3 * np.sqrt(np.mean((est[done] - exact[done]) ** 2)) + 1.0 / data.n_test.sum()
                margin = min(self.screen_margin, err)
                todo = np.flatnonzero(~done & (est >= np.nanmax(exact) - margin))
            done = ~np.isnan(exact)
            best = int(np.flatnonzero(exact == np.nanmax(exact))[0])   # ties: lowest dim, as sklearn
            cand_scores[step, cands] = np.where(done, exact, est)
            converged[step, cands] = done
            fold_scores[step] = folds_acc[best]
            n_solved[step] = done.sum()
            selected.append(int(cands[best]))
            W_prev = weights[best]
        self.selected_dims_ = np.array(selected)
        self.scores_ = cand_scores[np.arange(k), self.selected_dims_]
        self.fold_scores_ = fold_scores
        self.candidate_scores_ = cand_scores
        self.converged_ = converged
        self.n_solved_ = n_solved
        self.n_iter_ = n_iter

    def _get_support_mask(self) -> np.ndarray:
        check_is_fitted(self, "selected_dims_")
        mask = np.zeros(self.n_features_in_, dtype=bool)
        mask[self.selected_dims_] = True
        return mask


def single_neuron_accuracy(X_train, y_train, X_test, y_test, *, C: float = 1.0,
                           standardize_: bool = True, device: str = "cpu") -> np.ndarray:
    """Test accuracy of a logistic regression on each single dimension (section 3.2.2, Figure 6).

    All D one-dimensional problems are solved together, by Newton's method. A test label
    that does not occur in the training labels counts as a wrong prediction.

    Parameters
    ----------
    X_train : np.ndarray, shape (n, D)
        Training embeddings, finite.
    y_train : np.ndarray, shape (n,)
        Training labels (at least two classes).
    X_test : np.ndarray, shape (m, D)
        Test embeddings, with the same D as ``X_train``.
    y_test : np.ndarray, shape (m,)
        Test labels.
    C : float
        Inverse L2 regularisation strength of each logistic regression, as in scikit-learn.
    standardize_ : bool
        Standardise every dimension with the mean and standard deviation of the training
        rows first (:func:`standardize`).
    device : str
        Where the solver runs: ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Returns
    -------
    np.ndarray, shape (D,)
        The test accuracy of the model on each dimension alone.

    Raises
    ------
    ConfigError
        Embeddings that are not a non-empty finite 2-D array, labels that do not match their
        rows, fewer than two training classes, or ``X_test`` of another width than
        ``X_train``.
    """
    X_train, y_train = check_embeddings(X_train, y_train, name="X_train")
    X_test, y_test = check_embeddings(X_test, y_test, name="X_test")
    if X_test.shape[1] != X_train.shape[1]:
        raise bad("X_test", f"{X_test.shape[1]} dims", f"expected {X_train.shape[1]} like X_train")
    classes, codes = _encode_labels(y_train)
    lookup = {c: i for i, c in enumerate(classes)}
    test_codes = np.array([lookup.get(v, -1) for v in y_test])
    if standardize_:
        X_train, X_test = standardize(X_train), standardize(X_test, reference=X_train)
    n_tr = len(X_train)
    X = np.r_[X_train, X_test]
    folds = [(np.arange(n_tr), np.arange(n_tr, len(X)))]
    from ..core.device import pick_device
    data = _FoldData(X, np.r_[codes, np.maximum(test_codes, 0)], folds, len(classes), C,
                     pick_device(device), y_hit=np.r_[codes, test_codes])
    cands = np.arange(X.shape[1])
    _, W0 = _screen(data, [], cands, data.start())
    acc, _, _ = _solve_candidates(data, [], cands, W0, 1e-6, 50)
    return acc[:, 0]


# ---------------------------------------------------------------------------- experiment
PAPER_TABLE3 = pd.DataFrame([
    # task, classes, random, pretrained all / 1 / 5, fine-tuned all / 1 / 5 / natural (section 3.2)
    ("IMDB", 2, 0.50, 0.880, 0.670, 0.774, 0.937, 0.937, 0.938, 0.937),
    ("AG-news", 4, 0.25, 0.904, 0.435, 0.703, 0.947, 0.836, 0.943, 0.943),
    ("DBpedia", 14, 0.0714, 0.9902, 0.1767, 0.5367, 0.9933, 0.609, 0.990, 0.992),
], columns=["task", "classes", "random", "pretrained_all", "pretrained_1", "pretrained_5",
            "finetuned_all", "finetuned_1", "finetuned_5", "finetuned_natural"])
"""Table 3 of Matton & de Oliveira (BERT-base [CLS], test accuracy)."""


@dataclass
class NeuronsConfig(ConfigMixin):
    """Salient neurons of one model state on one task (section 3.2): greedy selection of
    ``max(n_neurons, classes)`` dimensions by ``folds``-fold CV on the training subset, test
    accuracy with 1, ``n_neurons``, "natural" (= number of classes) and all dimensions, every
    single dimension's test accuracy, and the best neuron's activations.

    Attributes
    ----------
    model : str
        The base encoder: ``"embedded"`` (all-MiniLM-L6-v2), a hub name or a local folder.
    task : str
        A registered classification task.
    finetuned : bool
        True: the encoder of the standard fine-tuning (:func:`bertdims.analysis.extract.standard_finetune`);
        False: the pretrained encoder.
    seed : int
        Seed of the fine-tuning, >= 0 (set to 0 for the pretrained model, which has none).
    max_train_samples, max_eval_samples : int or None
        Fixed random subsets of the training and test splits (None: all).
    max_seq_len : int
        Tokens per input (>= 2).
    epochs : float
        Passes over the training set of the standard fine-tuning (> 0).
    n_neurons : int
        Salient neurons whose probe is scored, besides 1, the number of classes and all (>= 1);
        ``max(n_neurons, classes)`` are selected.
    folds : int
        Cross-validation folds of the selection (>= 2).
    layer : int
        The layer read: 0 the embeddings, 1..L the blocks, -1 the last.
    token : str
        The token vector read: ``cls``, ``mean``, ``maxnorm`` or ``token:i``.

    Raises
    ------
    ConfigError
        When a field is out of range or ``task`` is unknown or a regression task.
    """

    model: str = param("model")
    task: str = param("task")
    finetuned: bool = own(True, Flag(), "the fine-tuned encoder (True) or the pretrained one")
    seed: int = param("seed")           # fine-tuning seed (0 for the pretrained model)
    max_train_samples: int | None = study_param("max_train_samples")
    max_eval_samples: int | None = study_param("max_eval_samples")
    max_seq_len: int = study_param("max_seq_len")
    epochs: float = param("epochs", 1.0)
    n_neurons: int = param("n_neurons")
    folds: int = param("folds")
    layer: int = param("layer")
    token: str = param("token")

    def __post_init__(self):
        check_fields(self)                  # every field against its constraint
        from ..data.tasks import get_task
        if get_task(self.task).is_regression:
            raise bad("task", self.task, "salient neurons need a classification task")
        if not self.finetuned:
            self.seed = 0


def run_neurons(config: NeuronsConfig, *, store=None):
    """Run (or read back) :class:`NeuronsConfig`. Tables: ``accuracy`` (dims, accuracy),
    ``selection`` (step, dim, cv_accuracy), ``single`` (dim, accuracy), ``activation``
    (label, value) of the best single neuron on the test set. Arrays: ``pred_<dims>`` (N,),
    the test predictions of the probe on all / 1 / ``n_neurons`` / natural dimensions (the
    probe of :func:`bertdims.analysis.pca.linear_probe`), and ``labels`` (N,)."""
    from .extract import analysis_encoder, task_arrays
    from ..modeling.models import fingerprint_of
    from .dims import chance_score
    from ..core.store import store_or_temporary
    from ..data.tasks import get_task
    store = store_or_temporary(store)

    def compute():
        enc = analysis_encoder(config.model, config.task, finetuned=config.finetuned, seed=config.seed,
                               max_train_samples=config.max_train_samples,
                               max_eval_samples=config.max_eval_samples,
                               max_seq_len=config.max_seq_len, epochs=config.epochs, store=store)
        Xtr, ytr, Xte, yte = task_arrays(enc, config.task, max_train_samples=config.max_train_samples,
                                         max_eval_samples=config.max_eval_samples,
                                         max_seq_len=config.max_seq_len, layer=config.layer,
                                         token=config.token, store=store)
        classes = get_task(config.task).num_labels
        k = min(max(config.n_neurons, classes), Xtr.shape[1])
        sel = NeuronSelector(k, cv=config.folds).fit(Xtr, ytr)
        preds = {"all": linear_predictions(Xtr, ytr, Xte)}
        rows = [{"dims": "all", "n": Xtr.shape[1], "accuracy": float(np.mean(preds["all"] == yte))}]
        for label, n in (("1", 1), (str(config.n_neurons), config.n_neurons), ("natural", classes)):
            d = sel.selected_dims_[:min(n, k)]
            preds[label] = linear_predictions(Xtr[:, d], ytr, Xte[:, d])
            rows.append({"dims": label, "n": len(d), "accuracy": float(np.mean(preds[label] == yte))})
        if config.finetuned:   # the fine-tuned classifier itself (the paper's fine-tuned "All")
            from .extract import standard_finetune
            run = standard_finetune(config.model, config.task, seed=config.seed,
                                    max_train_samples=config.max_train_samples,
                                    max_eval_samples=config.max_eval_samples,
                                    max_seq_len=config.max_seq_len, epochs=config.epochs, store=store)
            rows.append({"dims": "model", "n": Xtr.shape[1], "accuracy": float(run.metrics["test"]["accuracy"])})
        single = single_neuron_accuracy(Xtr, ytr, Xte, yte)
        best = int(sel.selected_dims_[0])
        return {"accuracy": pd.DataFrame(rows),
                "selection": pd.DataFrame({"step": np.arange(1, k + 1), "dim": sel.selected_dims_,
                                           "cv_accuracy": sel.scores_}),
                "single": pd.DataFrame({"dim": np.arange(len(single)), "accuracy": single}),
                "activation": pd.DataFrame({"label": [get_task(config.task).label_names[int(v)] for v in yte],
                                            "value": Xte[:, best]}),
                "best_dim": best, "classes": classes, "chance": chance_score(config.task, ytr, yte),
                "labels": np.asarray(yte), **{f"pred_{d}": p for d, p in preds.items()}}

    key = {**config.to_dict(), "outputs": 2}          # 2: with the probes' test predictions
    return store.cached("neurons", key, compute, fingerprint=fingerprint_of(config.model))


def neurons_study(model: str = "embedded", tasks: list[str] = ("rotten_tomatoes",),
                  seeds: list[int] = (0,), *, store=None, **kw) -> StudyTables:
    """:func:`run_neurons` for the pretrained model and each fine-tuning seed, per task
    (section 3.2), each run stored and read back.

    Parameters
    ----------
    model : str
        The encoder, as for :func:`bertdims.load_encoder`.
    tasks : list of str
        The classification tasks.
    seeds : list of int
        The fine-tuning seeds (the pretrained model is run once per task, as seed 0).
    store : ResultStore, optional
        Where the runs are cached; None keeps nothing
        (:func:`bertdims.core.store.store_or_temporary`).
    **kw
        Further :class:`NeuronsConfig` fields, the same for every run.

    Returns
    -------
    StudyTables
        A dict with the shape of every result (:mod:`bertdims.core.result`: ``config`` the
        arguments, ``paths`` the stored runs by ``(task, model, seed)``, ``metrics`` empty: it
        scores probes on embeddings, not runs). Tidy tables (pandas.DataFrame, one row per run
        and entry) with columns ``task``, ``model`` (pretrained / finetuned) and ``seed``
        besides those of :func:`run_neurons`:
        ``accuracy``, ``selection``, ``single``, ``activation``; ``table3``: the paper's Table 3
        layout (one row per task, mean over seeds); and ``predictions``: ``{task: {"labels":
        (N,), "pretrained": {dims: (1, N)}, "finetuned": {dims: (S, N)}}}``, the probes' test
        predictions (rows in ``seeds`` order; ``dims`` is ``"all"``, ``"1"``,
        ``str(n_neurons)`` or ``"natural"``).
    """
    out = {"accuracy": [], "selection": [], "single": [], "activation": []}
    preds, chance, paths = {}, {}, {}
    for task in tasks:
        runs = [(False, 0)] + [(True, s) for s in seeds]
        preds[task] = {"pretrained": {}, "finetuned": {}}
        for finetuned, seed in runs:
            run = run_neurons(NeuronsConfig(model=model, task=task, finetuned=finetuned, seed=seed, **kw),
                              store=store)
            state = "finetuned" if finetuned else "pretrained"
            paths[(task, state, seed)] = run.path
            tags = dict(task=task, model=state, seed=seed)
            for name in out:
                out[name].append(run.table(name).assign(**tags))
            for dims in run.table("accuracy").dims.astype(str):
                if dims != "model":
                    preds[task][state].setdefault(dims, []).append(run.array(f"pred_{dims}"))
            preds[task]["labels"], chance[task] = run.array("labels"), run.json()["chance"]
        for state in ("pretrained", "finetuned"):
            preds[task][state] = {d: np.stack(v) for d, v in preds[task][state].items()}
    tables = {k: pd.concat(v, ignore_index=True) for k, v in out.items()}
    tables["table3"] = table3(tables["accuracy"], chance)
    tables["predictions"] = preds
    return StudyTables(tables, config={"model": model, "tasks": list(tasks), "seeds": list(seeds), **kw},
                       paths=paths)


def salient_effects(study: dict, *, margin: float, dims: str, state: str = "finetuned",
                    claim: str = "noninferior") -> dict:
    """task -> :func:`bertdims.core.stats.paired_effect` of the probe on the ``dims`` selected
    neurons (``"1"``, ``str(n_neurons)`` or ``"natural"``) against the probe on all dimensions
    of the same model (``state``), paired by seed and by test example, on test accuracy (the
    paper's Table 3 metric). The claim of section 3.2.2 is ``"noninferior"``: the few neurons
    lose at most ``margin`` against all dimensions."""
    from ..core.stats import paired_effect
    out = {}
    for task, p in study["predictions"].items():
        runs = p[state]
        if dims not in runs:
            raise bad("dims", dims, "choose one of: " + ", ".join(d for d in runs if d != "all"))
        n = "1 neuron" if dims == "1" else ("as many neurons as classes" if dims == "natural"
                                            else f"{dims} neurons")
        out[task] = paired_effect(runs[dims], runs["all"], p["labels"], metric="accuracy",
                                  claim=claim, margin=margin,
                                  label=f"{task} ({state}): {n} - all dims")
    return out


def table3(accuracy: pd.DataFrame, chance: dict | None = None) -> pd.DataFrame:
    """Our results in the layout of the paper's Table 3: one row per task, mean test accuracy
    over seeds for each (model, dims) cell, and chance (``chance``: task -> score of the
    majority training class, :func:`bertdims.analysis.dims.chance_score`; computed when not given).
    ``finetuned_model`` is the fine-tuned classifier's own test accuracy; the other cells are
    logistic regressions on the (frozen) embeddings."""
    from .dims import chance_score
    from ..data.tasks import get_task
    acc = accuracy.copy()
    acc["col"] = acc["model"] + "_" + acc["dims"].where(acc["dims"].isin(["all", "1", "natural", "model"]), "k")
    wide = acc.groupby(["task", "col"])["accuracy"].mean().unstack("col")
    chance = chance or {}
    wide.insert(0, "chance", [chance[t] if t in chance else chance_score(t) for t in wide.index])
    wide.insert(0, "classes", [get_task(t).num_labels for t in wide.index])
    order = ["classes", "chance", "pretrained_all", "pretrained_1", "pretrained_k",
             "finetuned_model", "finetuned_all", "finetuned_1", "finetuned_k", "finetuned_natural"]
    return wide[[c for c in order if c in wide.columns]].reset_index()
