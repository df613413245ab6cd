"""Salient-neuron search: bertdims.NeuronSelector against scikit-learn's
SequentialFeatureSelector(LogisticRegression(), cv=folds) on the same embeddings and folds.

Embeddings: [CLS] of the embedded model (all-MiniLM-L6-v2, 384 dims) on 5,000 training
sentences of rotten_tomatoes (extracted once into the results store). 5 stratified folds,
k = 5 neurons. Both run on the CPU with one thread (scikit-learn's lbfgs is single-threaded).
Prints both times, the ratio, the dimensions each chose and the per-step CV scores.

    python benchmarks/bench_neurons.py [--n 5000] [--k 5] [--task rotten_tomatoes]
"""
from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="rotten_tomatoes")
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--max-seq-len", type=int, default=64)
    ap.add_argument("--skip-sklearn", action="store_true", help="time bertdims only")
    args = ap.parse_args()

    import bertdims as bd
    from bertdims.extract import extract
    from bertdims.neurons import NeuronSelector, standardize
    from sklearn.feature_selection import SequentialFeatureSelector
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    torch.set_num_threads(1)
    rep = extract("embedded", args.task, "train", max_samples=args.n, max_seq_len=args.max_seq_len,
                  device="cpu", store=bd.ResultStore(), progress=False)
    X, y = np.asarray(rep[-1]), rep.labels
    Xs = standardize(X)
    folds = list(StratifiedKFold(args.folds).split(Xs, y))
    print(f"embeddings: {X.shape} from {args.task}/train, {len(np.unique(y))} classes, "
          f"{args.folds} folds, k={args.k}, torch threads={torch.get_num_threads()}")

    t = time.perf_counter()
    ours = NeuronSelector(args.k, cv=folds).fit(X, y)
    t_ours = time.perf_counter() - t
    print(f"bertdims NeuronSelector (screen=32): {t_ours:8.2f} s  dims={ours.selected_dims_.tolist()}"
          f"  cv={np.round(ours.scores_, 4).tolist()}")
    t = time.perf_counter()
    exact = NeuronSelector(args.k, cv=folds, screen=None).fit(X, y)
    t_exact = time.perf_counter() - t
    print(f"bertdims NeuronSelector (screen=None): {t_exact:6.2f} s  dims={exact.selected_dims_.tolist()}"
          f"  cv={np.round(exact.scores_, 4).tolist()}")
    if args.skip_sklearn:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        sfs = SequentialFeatureSelector(LogisticRegression(), n_features_to_select=args.k, cv=folds).fit(Xs, y)
        t_sk = time.perf_counter() - t
        sk_dims = np.flatnonzero(sfs.get_support())
        check = [cross_val_score(LogisticRegression(), Xs[:, ours.selected_dims_[:j + 1]], y, cv=folds).mean()
                 for j in range(args.k)]
    print(f"sklearn SequentialFeatureSelector: {t_sk:8.2f} s  dims (sorted)={sk_dims.tolist()}")
    same = set(sk_dims) == set(ours.selected_dims_)
    gap = float(np.max(np.abs(np.array(check) - ours.scores_)))
    print(f"same dimensions: {same}; max |our CV score - sklearn cross_val_score on our prefixes| = {gap:.4f}")
    print(f"speed-up: {t_sk / t_ours:.1f}x (screen=32), {t_sk / t_exact:.1f}x (screen=None)")


if __name__ == "__main__":
    main()
