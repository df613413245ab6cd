"""A grid of fine-tuning runs in process against the same grid on a local Dask cluster.

Runs one grid of ``--runs`` fine-tuning runs (seeds 0..runs-1 of one config) twice through
:func:`bertdims.analysis.dims.finetune_grid`, each time into an empty results store:

1. **in process**: no cluster (``$BERTDIMS_SCHEDULER`` unset), the runs one after the other in
   this process with ``--threads`` torch threads (default: as many as the cluster has workers,
   so that both sides use the same cores);
2. **local cluster**: a ``distributed.LocalCluster`` of ``--workers`` worker processes with 1
   thread each (``$BERTDIMS_SCHEDULER`` set to its address: the grid submits its runs there and
   reads them back from the store).

Prints the seconds of each side and the ratio (in process / cluster), with and without the
cluster's start-up (starting the workers and importing torch and bertdims in each), and
whether both sides gave the same test predictions. On a 2-core machine the honest
expectation is a ratio near 1: two processes of one thread do about what one process of two
threads does; the cluster pays when there are more cores, GPUs or machines than one process
uses well.

    HF_HUB_OFFLINE=1 python benchmarks/bench_executor.py --runs 8 --n 128 --max-seq-len 64
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def grid(args, store):
    from bertdims.analysis.dims import grid_predictions
    from bertdims.train.finetuning import FinetuneConfig
    base = FinetuneConfig(model=args.model, task=args.task, max_train_samples=args.n,
                          max_eval_samples=args.n_eval, max_seq_len=args.max_seq_len,
                          epochs=args.epochs, device="cpu")
    return grid_predictions(base, store=store, keep_model=False, seed=list(range(args.runs)))


def training_seconds(store) -> tuple[float, float]:
    """Mean wall-clock and CPU seconds of the training loop per stored run (the runs' own
    ``train_seconds_this_call`` and ``train_cpu_seconds_this_call``)."""
    import json
    infos = [json.loads((Path(path) / "result.json").read_text())["info"]
             for path in store.runs("finetune")["path"]]
    return (sum(i["train_seconds_this_call"] for i in infos) / len(infos),
            sum(i["train_cpu_seconds_this_call"] for i in infos) / len(infos))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="embedded")
    p.add_argument("--task", default="rotten_tomatoes")
    p.add_argument("--runs", type=int, default=8)
    p.add_argument("--n", type=int, default=128, help="training examples per run")
    p.add_argument("--n-eval", type=int, default=100)
    p.add_argument("--max-seq-len", type=int, default=64)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch threads in process "
                   "(default: --workers)")
    args = p.parse_args()
    os.environ.pop("BERTDIMS_SCHEDULER", None)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import numpy as np
    import torch
    from distributed import Client, LocalCluster

    from bertdims.train.executor import SCHEDULER_ENV
    from bertdims.modeling.models import fingerprint_of
    from bertdims.core.store import ResultStore

    threads = args.threads or args.workers
    torch.set_num_threads(threads)
    fingerprint_of(args.model)                          # model loaded once, outside the timing
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        here, _ = grid(args, ResultStore(os.path.join(tmp, "here")))
        in_process = time.perf_counter() - t0
        train_here = training_seconds(ResultStore(os.path.join(tmp, "here")))

        t0 = time.perf_counter()
        with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, \
                Client(cluster, set_as_default=False) as client:
            client.run(lambda: __import__("bertdims.train.finetuning") and None)    # the workers' imports
            start = time.perf_counter() - t0
            os.environ[SCHEDULER_ENV] = cluster.scheduler_address
            t1 = time.perf_counter()
            there, _ = grid(args, ResultStore(os.path.join(tmp, "there")))
            on_cluster = time.perf_counter() - t1
            os.environ.pop(SCHEDULER_ENV)
        train_there = training_seconds(ResultStore(os.path.join(tmp, "there")))

    print(f"{args.runs}-run grid: {args.model} on {args.task}, {args.n} training / {args.n_eval} "
          f"evaluation examples, length {args.max_seq_len}, {args.epochs:g} epoch(s), CPU; "
          f"load average {os.getloadavg()[0]:.2f}")
    print("| side | seconds | seconds per run | training loop per run, wall / CPU s |")
    print("| --- | --- | --- | --- |")
    print(f"| in process, 1 process x {threads} threads | {in_process:.1f} | "
          f"{in_process / args.runs:.1f} | {train_here[0]:.1f} / {train_here[1]:.1f} |")
    print(f"| local cluster, {args.workers} workers x 1 thread: the grid | {on_cluster:.1f} | "
          f"{on_cluster / args.runs:.1f} | {train_there[0]:.1f} / {train_there[1]:.1f} |")
    print(f"| local cluster: start-up and workers' imports | {start:.1f} | | |")
    print(f"ratio in process / cluster: {in_process / on_cluster:.2f}x (grid only), "
          f"{in_process / (on_cluster + start):.2f}x (with start-up)")
    print(f"same test predictions on both sides: {'yes' if np.array_equal(here, there) else 'no'}")


if __name__ == "__main__":
    main()
