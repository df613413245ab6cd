"""The one training loop: every kind of training in bertdims steps through :func:`run_loop`.

Plain and partial fine-tuning (:mod:`bertdims.train.finetuning`), a head on a frozen encoder's cached
features, a learned sparse mask (:mod:`bertdims.train.sparse`) and joint multi-task training
(:mod:`bertdims.train.multitask`) differ in what a step computes (the examples, the forward pass, the
loss, which parameters have gradients) and in how they evaluate. That is what each passes in:

* ``train_step(step)`` runs the forward and backward passes of one optimizer step and returns
  the summed loss of its examples (a detached tensor) and their number;
* ``evaluate(state)``, called at the evaluation points, appends a history row and applies the
  checkpoint rule (:func:`record`);
* ``on_step``, for runs that keep a loss per step.

The loop owns the rest, the same for all: gradient clipping, the optimizer and schedule steps,
the training-loss bookkeeping (summed on the device, without a synchronisation per step), when
to evaluate and when to checkpoint, early stopping, the progress bar, and the ``after_step``
hook tests use to stop a run part-way as a kill would. Checkpoints (:func:`save_checkpoint`)
hold the trainable weights, optimizer, schedule, random states and loop state, so a run killed
part-way and started again ends where an uninterrupted run ends.

What comes from Hugging Face accelerate, and what does not and why:

* the :class:`~accelerate.Accelerator` (:func:`accelerator`): process groups, ``prepare``,
  ``backward``, ``no_sync`` (micro-batches synchronise gradients once per step),
  ``clip_grad_norm_``, ``wait_for_everyone``, ``reduce``;
* not ``accumulate``: it divides every micro-batch's loss by the number of micro-batches, which
  is the batch mean only when all micro-batches are the same size. A step here sums each
  process's loss and scales it by ``world / batch`` so that any process count and any
  micro-batch size take the same step (tested across process counts; ``tests/test_loop.py``
  shows ``accumulate`` missing the batch mean);
* not ``save_state`` / ``load_state``: they save every weight, frozen ones included (a head on a
  frozen BERT-base would write 440 MB per checkpoint instead of a few kB), and write their
  files in place, so a kill during a save leaves a checkpoint that cannot be told from a whole
  one. :func:`save_checkpoint` writes the trainable weights only, each file atomically, the
  main file last as the commit point, and keys it by the run's config (``tests/test_loop.py``
  compares the two on a frozen encoder: 17 kB against 4 MB);
* not ``skip_first_batches``: the order of every epoch is a function of the seed and the epoch
  (``finetuning._epoch_order``), so a resumed run starts at its step's examples directly,
  without reading the skipped batches.
"""
from __future__ import annotations

import dataclasses
import math
import os
import random
from dataclasses import dataclass, field
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch


@dataclass
class LoopState:
    """Where a run stands: steps done, history rows, the checkpoint rule's best state so far.

    ``loss_sum`` and ``loss_count`` are this process's training loss since the last evaluation.
    """
    step: int = 0
    history: list = field(default_factory=list)
    best_loss: float = math.inf
    best_step: int = -1
    bad_evals: int = 0
    stopped: bool = False
    best_state: dict | None = None
    loss_sum: float = 0.0
    loss_count: int = 0


def checkpoint_due(every: int | None, step: int, evaluated: bool) -> bool:
    """The checkpoint rule: every ``every`` steps, else at each evaluation."""
    if every is None:
        return evaluated
    return step % every == 0


def take_train_loss(state: LoopState, acc=None) -> float:
    """The mean training loss since the last evaluation (over all processes when ``acc`` runs
    several), and reset the running sums."""
    total, count = state.loss_sum, float(state.loss_count)
    if acc is not None and acc.num_processes > 1:
        sums = torch.tensor([total, count], dtype=torch.float64, device=acc.device)
        total, count = (float(v) for v in acc.reduce(sums, reduction="sum"))
    state.loss_sum, state.loss_count = 0.0, 0
    return total / count if count > 0 else float("nan")


def run_loop(state: LoopState, total: int, *, train_step: Callable[[int], tuple],
             optimizer, scheduler, clip: Callable[[], object] | None = None,
             evaluate: Callable[[LoopState], None] | None = None, eval_every: int | None = None,
             checkpoint: Callable[[LoopState], None] | None = None,
             checkpoint_every: int | None = None,
             on_step: Callable[[int, torch.Tensor, int, float], None] | None = None,
             after_step: Callable[[int], None] | None = None, bar=None,
             device: torch.device | str = "cpu") -> LoopState:
    """Step from ``state.step`` to ``total`` (or until the checkpoint rule stops the run).

    Parameters
    ----------
    state : LoopState
        Where to start (a fresh state, or one :func:`load_checkpoint` read); updated in place.
    total : int
        Optimizer steps of the whole run.
    train_step : callable
        ``train_step(step) -> (loss_sum, count)``: forward and backward of step ``step`` (0-based);
        ``loss_sum`` is the detached summed loss of its ``count`` examples (0-d tensor).
    optimizer, scheduler
        Stepped once per step, after ``clip``; gradients are then cleared.
    clip : callable, optional
        Clips the gradients (None: no clipping).
    evaluate : callable, optional
        ``evaluate(state)`` at every ``eval_every``-th step and at the last: reads the training
        loss with :func:`take_train_loss`, appends a history row, may set ``state.stopped``.
    eval_every : int, optional
        Steps between evaluations (None: no evaluation).
    checkpoint : callable, optional
        ``checkpoint(state)`` where :func:`checkpoint_due` says so, except after the last step or
        once the run has stopped.
    checkpoint_every : int, optional
        The checkpoint rule's step interval (None: at each evaluation).
    on_step : callable, optional
        ``on_step(step, loss_sum, count, lr)`` after each step (``step`` counts from 1; ``lr`` is
        the first parameter group's rate during the step).
    after_step : callable, optional
        ``after_step(step)`` once any checkpoint due is written.
    bar : tqdm, optional
        Advanced by one per step.
    device : torch.device or str
        Where the running loss sum lives.

    Returns
    -------
    LoopState
        ``state``, at its last step.
    """
    running = torch.zeros((), dtype=torch.float64, device=device)   # no synchronisation per step
    while state.step < total and not state.stopped:
        loss_sum, count = train_step(state.step)
        running += loss_sum
        state.loss_count += int(count)
        if clip is not None:
            clip()
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        if on_step is not None:
            on_step(state.step, loss_sum, count, lr)
        if bar is not None:
            bar.update(1)
        evaluated = eval_every is not None and (state.step % eval_every == 0 or state.step == total)
        due = checkpoint_due(checkpoint_every, state.step, evaluated)
        if evaluated or due:
            state.loss_sum += float(running)
            running.zero_()
        if evaluated:
            evaluate(state)
        if checkpoint is not None and due and state.step < total and not state.stopped:
            checkpoint(state)
        if after_step is not None:
            after_step(state.step)
    return state


def record(state: LoopState, row: list, loss: float, model: torch.nn.Module | None,
           patience: int | None) -> None:
    """Append a history row; with ``model``, apply the checkpoint rule to its development loss:
    keep the trainable parameters of the lowest loss (a later evaluation wins a tie) and stop
    after ``patience`` evaluations without a lower one."""
    if model is not None:
        if loss <= state.best_loss:
            state.best_loss, state.best_step, state.bad_evals = loss, state.step, 0
            state.best_state = {n: p.detach().to("cpu", copy=True)
                                for n, p in model.named_parameters() if p.requires_grad}
        else:
            state.bad_evals += 1
            state.stopped = patience is not None and state.bad_evals >= patience
    state.history.append(row)


def restore_best(state: LoopState, model: torch.nn.Module) -> None:
    """Load the checkpoint rule's best parameters, if it kept any, back into ``model``."""
    if state.best_state is None:
        return
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name, value in state.best_state.items():
            params[name].copy_(value.to(params[name].device))


def accelerator(device: torch.device | str):
    """An ``Accelerator`` for a run on ``device``. Mixed precision is applied by the library's own
    autocast and the caller places the model (``device_placement=False``; see
    :func:`run_device`), so one Python session can run CPU and GPU, fp32 and bf16 runs one after
    another on accelerate's process-wide state without resetting it. Only a launched CPU run of
    several processes asks accelerate for the CPU (each process is fresh then)."""
    from accelerate import Accelerator
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return Accelerator(cpu=several and torch.device(device).type == "cpu", mixed_precision="no",
                       device_placement=False)


def run_device(acc, wanted: torch.device) -> torch.device:
    """The device this process trains on: in a launched run of several processes, the
    launcher's (one GPU per process) when ``wanted`` is of the same type; otherwise ``wanted``
    itself (``cuda:1``, or the CPU on a machine with a GPU)."""
    wanted = torch.device(wanted)
    if acc.num_processes > 1 and acc.device.type == wanted.type:
        return acc.device
    return wanted


# ---------------------------------------------------------------------------- checkpoints
def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class _OneProcess:
    """What the checkpoint functions need of an ``Accelerator``, for a run in this process only."""
    num_processes, process_index, is_main_process = 1, 0, True

    @staticmethod
    def wait_for_everyone() -> None:
        return None


def save_checkpoint(ckpt_dir: Path, cfg: dict, state: LoopState, model: torch.nn.Module,
                    optimizer, scheduler, acc=None) -> None:
    """Write a resumable checkpoint of ``state`` in ``ckpt_dir``: per-process random states
    first, then the main file (the commit point) naming their step, with ``cfg`` (a checkpoint
    is only resumed by the same config), the trainable parameters, optimizer and schedule."""
    acc = acc or _OneProcess()
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    step = state.step
    _atomic_save({"step": step, "rng": _rng_state(), "loss_sum": state.loss_sum,
                  "loss_count": state.loss_count}, ckpt_dir / f"rng-{acc.process_index}-{step}.pt")
    acc.wait_for_everyone()
    if acc.is_main_process:
        trainable = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
        keep = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)
                if f.name not in ("loss_sum", "loss_count")}
        _atomic_save({"config": cfg, "world": acc.num_processes, "state": keep, "model": trainable,
                      "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                     ckpt_dir / "trainer.pt")
        for old in ckpt_dir.glob("rng-*.pt"):
            if not old.name.endswith(f"-{step}.pt"):
                old.unlink(missing_ok=True)
    acc.wait_for_everyone()


def load_checkpoint(ckpt_dir: Path, cfg: dict, model: torch.nn.Module, optimizer, scheduler,
                    rank: int = 0, world: int = 1) -> LoopState | None:
    """The state :func:`save_checkpoint` left in ``ckpt_dir`` for the same ``cfg``, with the
    parameters, optimizer, schedule and (same process count) random states restored; None when
    there is none."""
    main_file = ckpt_dir / "trainer.pt"
    if not main_file.exists():
        return None
    saved = torch.load(main_file, map_location="cpu", weights_only=False)
    if saved["config"] != cfg:
        return None       # a checkpoint of another config in the same folder: start afresh
    state = LoopState(**saved["state"])
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name, value in saved["model"].items():
            params[name].copy_(value.to(params[name].device))
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    rng_file = ckpt_dir / f"rng-{rank}-{state.step}.pt"
    if saved["world"] == world and rng_file.exists():
        rng = torch.load(rng_file, map_location="cpu", weights_only=False)
        _set_rng_state(rng["rng"])
        state.loss_sum, state.loss_count = rng["loss_sum"], rng["loss_count"]
    return state
