"""One sparse or joint multi-task run in a store, as its own process, for the SIGKILL tests of
``test_kill_resume.py``: ``python resume_runs.py sparse|multitask MODEL RESULTS``.

The first optimizer step this process takes is written to ``RESULTS/first_step-<pid>``, so a
test can tell a resumed run (it starts after its checkpoint) from one that started over."""
from __future__ import annotations

import sys
from pathlib import Path


def sparse_config(model: str):
    from bertdims.train.sparse import SparseConfig
    return SparseConfig(model=model, task="rotten_tomatoes", sparsity=0.3, batch_size=8, epochs=2.0,
                        max_train_samples=320, max_eval_samples=64, max_seq_len=32, device="cpu",
                        precision="fp32", eval_every=4)


def multitask_config(model: str):
    from bertdims.train.multitask import MultitaskConfig
    return MultitaskConfig(model=model, tasks=["rotten_tomatoes", "bbc_news"], dims=[[0, 1], [2, 3, 4]],
                           epochs=2.0, lr=1e-3, batch_size=8, max_train_samples=160,
                           max_eval_samples=64, max_seq_len=32, device="cpu", precision="fp32", seed=0)


def main(kind: str, model: str, results: str) -> None:
    import os

    from bertdims.train import multitask, sparse
    from bertdims.core.store import ResultStore
    mark = Path(results) / f"first_step-{os.getpid()}"

    def first(step: int) -> None:
        if not mark.exists():
            mark.parent.mkdir(parents=True, exist_ok=True)
            mark.write_text(str(step))
    store = ResultStore(results)
    if kind == "sparse":
        sparse._after_step = first
        sparse.sparse_finetune(sparse_config(model), store)
    else:
        multitask._after_step = first
        multitask.finetune_multitask(multitask_config(model), store=store, progress=False)


if __name__ == "__main__":
    main(*sys.argv[1:])
