"""The one training loop (``bertdims.train.loop``): when it evaluates and checkpoints, how it counts
the training loss, the checkpoint rule, and resuming from a checkpoint, on a toy regression."""
from __future__ import annotations

import math

import pytest
import torch

from bertdims.train.loop import (LoopState, checkpoint_due, load_checkpoint, record, restore_best, run_loop,
                           save_checkpoint, take_train_loss)

X = torch.linspace(-1, 1, 24).reshape(12, 2)
Y = X @ torch.tensor([2.0, -1.0]) + 0.5


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    return model, opt, sched


def _step(model):
    def train_step(step: int):
        idx = torch.tensor([(2 * step) % 12, (2 * step + 1) % 12])
        loss_sum = ((model(X[idx])[:, 0] - Y[idx]) ** 2).sum()
        (loss_sum / 2).backward()
        return loss_sum.detach(), 2
    return train_step


def test_it_evaluates_every_k_steps_and_at_the_last_and_checkpoints_at_each_evaluation():
    model, opt, sched = _setup()
    evaluated, saved, after = [], [], []
    state = run_loop(LoopState(), 10, train_step=_step(model), optimizer=opt, scheduler=sched,
                     evaluate=lambda s: evaluated.append((s.step, take_train_loss(s))),
                     eval_every=4, checkpoint=lambda s: saved.append(s.step), after_step=after.append)
    assert state.step == 10 and after == list(range(1, 11))
    assert [s for s, _ in evaluated] == [4, 8, 10]
    assert saved == [4, 8]                         # never after the last step


def test_the_training_loss_is_the_mean_over_the_examples_since_the_last_evaluation():
    model, opt, sched = _setup()
    losses, rows = [], []

    def on_step(step, loss_sum, count, lr):
        losses.append(float(loss_sum) / count)
    run_loop(LoopState(), 6, train_step=_step(model), optimizer=opt, scheduler=sched,
             evaluate=lambda s: rows.append(take_train_loss(s)), eval_every=3, on_step=on_step)
    assert rows == pytest.approx([sum(losses[:3]) / 3, sum(losses[3:]) / 3], rel=1e-12)


def test_checkpoint_every_overrides_the_evaluation_points():
    assert [s for s in range(1, 13) if checkpoint_due(5, s, s % 4 == 0)] == [5, 10]
    assert [s for s in range(1, 13) if checkpoint_due(None, s, s % 4 == 0)] == [4, 8, 12]
    model, opt, sched = _setup()
    saved = []
    run_loop(LoopState(), 12, train_step=_step(model), optimizer=opt, scheduler=sched,
             checkpoint=lambda s: saved.append(s.step), checkpoint_every=5)
    assert saved == [5, 10]


def test_the_rule_keeps_the_lowest_loss_stops_after_patience_and_restores_it():
    model = torch.nn.Linear(2, 1)
    state = LoopState()
    best = None
    for step, loss in enumerate([0.9, 0.5, 0.7, 0.5, 0.8, 0.9], start=1):
        state.step = step
        with torch.no_grad():
            model.weight.fill_(step)
        record(state, [step, loss], loss, model, patience=2)
        if loss == 0.5:
            best = model.weight.detach().clone()
        if state.stopped:
            break
    assert state.best_step == 4 and state.best_loss == 0.5     # a later tie wins
    assert state.stopped and state.step == 6                   # two evaluations without a lower loss
    assert len(state.history) == 6
    restore_best(state, model)
    assert torch.equal(model.weight, best)


def test_without_a_model_the_rule_only_records():
    state = LoopState(step=3)
    record(state, [3, math.nan], math.nan, None, patience=1)
    assert state.history == [[3, math.nan]] and state.best_state is None and not state.stopped


def test_stopping_the_loop_ends_it_before_total():
    model, opt, sched = _setup()

    def evaluate(state):
        take_train_loss(state)
        state.stopped = state.step >= 4
    state = run_loop(LoopState(), 20, train_step=_step(model), optimizer=opt, scheduler=sched,
                     evaluate=evaluate, eval_every=2)
    assert state.step == 4


def test_a_run_resumed_from_its_checkpoint_ends_where_the_uninterrupted_run_ends(tmp_path):
    def run(stop_at=None, resume=False):
        model, opt, sched = _setup()
        state = LoopState()
        if resume:
            state = load_checkpoint(tmp_path, {"c": 1}, model, opt, sched)
            assert state is not None and state.step == 6
        rows = []

        class Stop(Exception):
            pass

        def after(step):
            if step == stop_at:
                raise Stop

        def evaluate(s):
            record(s, [s.step, take_train_loss(s)], 0.0, None, None)
        try:
            run_loop(state, 12, train_step=_step(model), optimizer=opt, scheduler=sched,
                     evaluate=evaluate, eval_every=3,
                     checkpoint=lambda s: save_checkpoint(tmp_path, {"c": 1}, s, model, opt, sched),
                     after_step=after, on_step=lambda *a: rows.append(a[0]))
        except Stop:
            return None
        return model, state
    whole_model, whole = run()
    assert run(stop_at=7) is None                  # killed after step 7; the checkpoint is step 6
    model, state = run(resume=True)
    assert state.history == whole.history
    assert torch.equal(model.weight, whole_model.weight) and torch.equal(model.bias, whole_model.bias)
    assert load_checkpoint(tmp_path, {"c": 2}, *_setup()) is None   # another config: start afresh


def test_one_process_trains_where_it_is_asked_and_a_launched_one_on_its_own_gpu():
    from types import SimpleNamespace

    from bertdims.train.loop import run_device
    one = SimpleNamespace(num_processes=1, device=torch.device("cuda", 0))
    assert run_device(one, "cpu") == torch.device("cpu")
    assert run_device(one, "cuda:1") == torch.device("cuda", 1)
    launched = SimpleNamespace(num_processes=2, device=torch.device("cuda", 1))
    assert run_device(launched, "cuda") == torch.device("cuda", 1)
    assert run_device(SimpleNamespace(num_processes=2, device=torch.device("cpu")), "cpu") == torch.device("cpu")


# ------------------------------------------- why two pieces of accelerate are not used here
def test_accelerate_accumulate_is_not_the_batch_mean_with_unequal_micro_batches():
    """What the loop's docstring says of ``accumulate``: with micro-batches of 2, 2 and 1
    examples it averages the three micro-batch means (each loss divided by 3), which is not the
    mean over the 5 examples; the engine's scaling (sum, times 1 / batch) is."""
    from accelerate import Accelerator

    x, y = X[:5], Y[:5]

    def grads(step_fn):
        torch.manual_seed(0)
        model = torch.nn.Linear(2, 1)
        step_fn(model)
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    def whole(model):
        ((model(x)[:, 0] - y) ** 2).mean().backward()

    def engine(model):                       # finetuning._train_step with world = 1
        for mb in ([0, 1], [2, 3], [4]):
            (((model(x[mb])[:, 0] - y[mb]) ** 2).sum() * (1 / 5)).backward()

    def accumulated(model):
        acc = Accelerator(device_placement=False, gradient_accumulation_steps=3)
        prepared = acc.prepare(model)
        for mb in ([0, 1], [2, 3], [4]):
            with acc.accumulate(prepared):
                acc.backward(((prepared(x[mb])[:, 0] - y[mb]) ** 2).mean())

    reference = grads(whole)
    assert torch.allclose(grads(engine), reference, atol=1e-6)
    assert not torch.allclose(grads(accumulated), reference, atol=1e-3)


def test_the_loops_checkpoint_keeps_only_the_trainable_weights_save_state_keeps_all(tmp_path, tiny_bert):
    """What the loop's docstring says of ``save_state``: for a head on a frozen encoder it
    writes every weight; :func:`save_checkpoint` writes the trainable ones only."""
    from accelerate import Accelerator
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(tiny_bert)
    model = torch.nn.Sequential()
    model.add_module("encoder", encoder)
    model.add_module("head", torch.nn.Linear(encoder.config.hidden_size, 2))
    for p in encoder.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    save_checkpoint(tmp_path / "ours", {"run": 1}, LoopState(step=1), model, opt, sched)
    acc = Accelerator(device_placement=False)
    prepared_model, prepared_opt = acc.prepare(model, opt)
    acc.save_state(str(tmp_path / "accelerate"))

    def size(folder):
        return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())

    all_bytes = sum(p.numel() * 4 for p in model.parameters())          # about 4 MB
    assert size(tmp_path / "accelerate") > all_bytes                   # every weight
    assert size(tmp_path / "ours") < all_bytes / 100                   # the head, optimizer, state: 17 kB
