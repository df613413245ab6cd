"""Salient-neuron search: bertdims.analysis.neurons.NeuronSelector against scikit-learn's
SequentialFeatureSelector(LogisticRegression(), cv=folds) on the same embeddings and folds.

Embeddings: pretrained [CLS] of the embedded model (all-MiniLM-L6-v2, 384 dims) on the first
1,500 training sentences of a binary task (rotten_tomatoes), a 5-class one (bbc_news) and a
20-class one (20newsgroups), extracted once into the results store. 5 fixed stratified folds,
k = 3 neurons. Both run on the CPU with one thread (torch and scikit-learn's OpenMP/BLAS pools
are limited to 1). The selector is warmed up once on a tiny problem, then timed ``--repeats``
times (median printed); scikit-learn is timed once. Prints, per task: both times, the ratio,
the dimensions each chose, and the machine's 1-minute load average when the row was timed
(on 2 cores, a load above 2 means other jobs shared them).

Where the chosen sets differ, the script prints the CV accuracy of both choices with
scikit-learn's default LogisticRegression (lbfgs stops at tol=1e-4) and with one run to
convergence (tol=1e-10): a difference of an example or so that flips with the solver's
tolerance is a tie, not a disagreement.

    python benchmarks/bench_neurons.py [--n 1500] [--k 3] [--tasks rotten_tomatoes bbc_news 20newsgroups]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", nargs="+", default=["rotten_tomatoes", "bbc_news", "20newsgroups"])
    ap.add_argument("--n", type=int, default=1500)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--max-seq-len", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5, help="timed runs of the selector (median)")
    ap.add_argument("--device", default="cpu", help="device of the selector (scikit-learn: CPU)")
    ap.add_argument("--exhaustive", action="store_true", help="also time screen=None")
    ap.add_argument("--skip-sklearn", action="store_true", help="time bertdims only")
    args = ap.parse_args()

    import bertdims as bd
    from bertdims.analysis.extract import extract
    from bertdims.analysis.neurons import NeuronSelector, standardize
    from sklearn.feature_selection import SequentialFeatureSelector
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)
    rng = np.random.default_rng(0)                      # warm-up: torch's first calls
    NeuronSelector(2, cv=3, device=args.device).fit(rng.normal(size=(90, 20)), np.arange(90) % 3)
    rows = []
    for task in args.tasks:
        rep = extract("embedded", task, "train", max_samples=args.n, max_seq_len=args.max_seq_len,
                      device="cpu", store=bd.ResultStore(), progress=False)
        X, y = np.asarray(rep[-1]), np.asarray(rep.labels)
        Xs = standardize(X)
        folds = list(StratifiedKFold(args.folds).split(Xs, y))
        K = len(np.unique(y))
        print(f"\n{task}: X {X.shape}, {K} classes, {args.folds} folds, k={args.k}, "
              f"torch threads={torch.get_num_threads()}, device={args.device}")
        times, cpu = [], []
        for _ in range(args.repeats):
            t, c = time.perf_counter(), time.process_time()
            ours = NeuronSelector(args.k, cv=folds, device=args.device).fit(X, y)
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        t_ours, c_ours = statistics.median(times), statistics.median(cpu)
        load_ours = _load()
        print(f"  bertdims NeuronSelector: {t_ours:7.3f} s (median of {args.repeats}; min {min(times):.3f}; "
              f"CPU {c_ours:.3f} s)"
              f"  dims={ours.selected_dims_.tolist()}  cv={np.round(ours.scores_, 4).tolist()}"
              f"  solved per step={ours.n_solved_.tolist()}  [{load_ours}]")
        if args.exhaustive:
            t = time.perf_counter()
            full = NeuronSelector(args.k, cv=folds, screen=None, device=args.device).fit(X, y)
            print(f"  NeuronSelector(screen=None): {time.perf_counter() - t:7.3f} s  "
                  f"dims={full.selected_dims_.tolist()}  [{_load()}]")
        row = {"task": task, "classes": K, "ours": t_ours, "ours_cpu": c_ours, "ours_dims": ours.selected_dims_.tolist(),
               "load_ours": load_ours}
        if not args.skip_sklearn:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t, c = time.perf_counter(), time.process_time()
                sfs = SequentialFeatureSelector(LogisticRegression(), n_features_to_select=args.k,
                                                cv=folds).fit(Xs, y)
                t_sk, c_sk = time.perf_counter() - t, time.process_time() - c
                load_sk = _load()
                sk_dims = np.flatnonzero(sfs.get_support()).tolist()
                same = set(sk_dims) == set(ours.selected_dims_.tolist())
                print(f"  sklearn SequentialFeatureSelector: {t_sk:7.2f} s (CPU {c_sk:.2f} s)  "
                      f"dims (sorted)={sk_dims}  [{load_sk}]")
                print(f"  speed-up {t_sk / t_ours:.0f}x wall-clock, {c_sk / c_ours:.0f}x CPU time; "
                      f"same dimensions: {same}")
                if not same:
                    tight = LogisticRegression(tol=1e-10, max_iter=10_000)
                    for name, est in (("default lbfgs (tol 1e-4)", LogisticRegression()),
                                      ("lbfgs run to convergence (tol 1e-10)", tight)):
                        a, b = (cross_val_score(est, Xs[:, d], y, cv=folds).mean()
                                for d in (sorted(ours.selected_dims_), sk_dims))
                        print(f"    CV accuracy with {name}: ours {a:.6f}, scikit-learn's {b:.6f} "
                              f"(difference {(a - b) * len(y):+.1f} examples of {len(y)})")
            row.update(sklearn=t_sk, sklearn_cpu=c_sk, sklearn_dims=sk_dims, load_sklearn=load_sk, same=same)
        rows.append(row)
    print("\nsummary")
    print("| task | classes | scikit-learn SFS s (CPU s) | NeuronSelector s (CPU s) | speed-up wall (CPU) "
          "| dims ours / scikit-learn | load when timed: ours / sklearn |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        sk, skc = r.get("sklearn", float("nan")), r.get("sklearn_cpu", float("nan"))
        print(f"| {r['task']} | {r['classes']} | {sk:.2f} ({skc:.2f}) | {r['ours']:.3f} ({r['ours_cpu']:.3f}) | "
              f"{sk / r['ours']:.0f}x ({skc / r['ours_cpu']:.0f}x) | {r['ours_dims']} / {r.get('sklearn_dims', '-')} | "
              f"{r['load_ours'][5:]} / {r.get('load_sklearn', '-')[5:]} |")


if __name__ == "__main__":
    main()
