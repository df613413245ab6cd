"""Cross-fine-tuning (sequential A then B) and the joint multi-task model, on the tiny BERT
with two small synthetic tasks registered for the test session."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from finetune_tasks import Killed, stop_at
import bertdims as bd
from bertdims.modeling.testing import predictions_right_on
from bertdims.data import tasks as tasks_mod
from bertdims.train.multitask import (MultitaskModel, MultitaskConfig, TaskSampler, check_disjoint_dims,
                                finetune_multitask, load_multitask)
from result_checks import check_result

SENTIMENT = "synth_sentiment"
TOPIC = "synth_topic"


def _sentiment(n: int, seed: int):
    from datasets import Dataset
    rng = np.random.default_rng(seed)
    pos, neg = ["good", "great", "fine", "lovely"], ["bad", "awful", "poor", "terrible"]
    filler = ["the", "film", "was", "a", "story", "of", "it", "plot"]
    text, label = [], []
    for _ in range(n):
        y = int(rng.integers(2))
        words = list(rng.choice(filler, 4)) + [str(rng.choice(pos if y else neg))] * 2
        rng.shuffle(words)
        text.append(" ".join(words))
        label.append(y)
    return Dataset.from_dict({"text": text, "label": label})


def _topic(n: int, seed: int):
    from datasets import Dataset
    rng = np.random.default_rng(seed)
    vocab = [["football", "goal", "match"], ["bread", "cheese", "soup"], ["piano", "song", "guitar"]]
    text, label = [], []
    for _ in range(n):
        y = int(rng.integers(3))
        words = list(rng.choice(vocab[y], 3)) + list(rng.choice(["a", "the", "news", "today"], 3))
        rng.shuffle(words)
        text.append(" ".join(words))
        label.append(y)
    return Dataset.from_dict({"text": text, "label": label})


def _loader(make):
    def load(data_dir=None):
        from datasets import DatasetDict
        return DatasetDict(train=make(96, 0), validation=make(32, 1), test=make(48, 2))
    return load


@pytest.fixture(scope="module")
def synth_tasks():
    """Register two synthetic classification tasks (removed again after the module)."""
    try:
        tasks_mod.task_names()          # register the real tasks first, if their loaders exist
    except Exception:
        pass
    made = [tasks_mod.Task(SENTIMENT, "embedded", ("text",), "classification", ("neg", "pos"),
                           ("accuracy",), loader=_loader(_sentiment)),
            tasks_mod.Task(TOPIC, "embedded", ("text",), "classification", ("sport", "food", "music"),
                           ("accuracy", "macro_f1"), loader=_loader(_topic))]
    for t in made:
        tasks_mod.register(t)
    yield [t.name for t in made]
    for t in made:
        tasks_mod.unregister(t.name)


def _tiny_multitask(tiny_bert, dims=([0, 1, 2], [5, 9])):
    enc = bd.load_encoder(tiny_bert)
    torch.manual_seed(0)
    model = MultitaskModel(enc.model, enc.tokenizer, [SENTIMENT, TOPIC], dims, [2, 3]).eval()
    for t, d in zip(model.tasks, model.dims):        # input statistics away from the identity
        model.heads[t].fit_stats(0.5 + 3.0 * torch.randn(64, len(d)))
    return model


def _batch(model, texts=("a good film", "the soup was awful today", "piano")):
    from bertdims.train.multitask import tokenize
    return tokenize(model.tokenizer, list(texts), 32)


# ---------------------------------------------------------------------------- bad input
def test_task_listed_twice_is_rejected(synth_tasks):
    with pytest.raises(bd.ConfigError, match="listed more than once.*synth_topic"):
        MultitaskConfig(tasks=[TOPIC, SENTIMENT, TOPIC])


def test_overlapping_dims_are_rejected(synth_tasks):
    with pytest.raises(bd.ConfigError, match="disjoint; dimension 3 is read by both"):
        MultitaskConfig(tasks=[SENTIMENT, TOPIC], dims=[[1, 3], [3, 4]])


def test_dims_sets_must_match_tasks_and_be_in_range(synth_tasks, tiny_bert):
    with pytest.raises(bd.ConfigError, match="one list of dimensions per task"):
        MultitaskConfig(tasks=[SENTIMENT, TOPIC], dims=[[1, 2]])
    config = MultitaskConfig(model=tiny_bert, tasks=[SENTIMENT, TOPIC], dims=[[1, 2], [30, 32]])
    with pytest.raises(bd.ConfigError, match=r"in \[0, 31\].*hidden size is 32"):
        config.validate(num_layers=2, hidden_size=32)
    # the default blocks of dims_per_task must fit the model too
    config = MultitaskConfig(model=tiny_bert, tasks=[SENTIMENT, TOPIC], dims_per_task=20)
    with pytest.raises(bd.ConfigError, match="hidden size is 32"):
        config.validate(num_layers=2, hidden_size=32)


def test_bad_input_fails_before_training(synth_tasks, tiny_bert, store, monkeypatch):
    import bertdims.train.multitask as mt
    monkeypatch.setattr(mt, "_train", lambda *a, **k: pytest.fail("training started"))
    config = MultitaskConfig(model=tiny_bert, tasks=[SENTIMENT, TOPIC], dims=[[0], [40]], device="cpu")
    with pytest.raises(bd.ConfigError, match="'dims'.*hidden size is 32.*has 40"):
        finetune_multitask(config, store=store, progress=False)


def test_unknown_task_and_sampler(synth_tasks):
    with pytest.raises(bd.ConfigError, match="tasks"):
        MultitaskConfig(tasks=[SENTIMENT, "no_such_task"])
    with pytest.raises(bd.ConfigError, match="sampler"):
        MultitaskConfig(tasks=[SENTIMENT], sampler="random")


def test_check_disjoint_dims_accepts_disjoint_sets():
    assert check_disjoint_dims("dims", [[3, 1], [0]], ["a", "b"], 4) == [[3, 1], [0]]


# ---------------------------------------------------------------------------- the sampler
def test_sampler_gives_each_task_its_epochs_of_batches():
    for mode in ("proportional", "round_robin"):
        order = TaskSampler([100, 30, 64], batch_size=32, epochs=2.0, mode=mode, seed=1).order()
        assert np.bincount(order, minlength=3).tolist() == [7, 2, 4]
    rr = TaskSampler([100, 30, 64], batch_size=32, mode="round_robin").order()
    assert rr.tolist() == [0, 1, 2, 0, 2, 0, 0]
    a = TaskSampler([100, 30, 64], 32, mode="proportional", seed=1).order()
    b = TaskSampler([100, 30, 64], 32, mode="proportional", seed=2).order()
    assert sorted(a.tolist()) == sorted(b.tolist())


# ---------------------------------------------------------------------------- the joint model
def test_one_forward_pass_answers_every_task_like_its_own_head(synth_tasks, tiny_bert):
    model = _tiny_multitask(tiny_bert)
    batch = _batch(model)
    calls = []
    hook = model.encoder.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        out = model(**batch)
    hook.remove()
    assert len(calls) == 1 and set(out) == {SENTIMENT, TOPIC}
    assert out[SENTIMENT].shape == (3, 2) and out[TOPIC].shape == (3, 3)
    with torch.no_grad():
        hidden = model.encoder(**batch, output_hidden_states=True).hidden_states[-1][:, 0]   # (B, H)
        for task, dims in zip(model.tasks, model.dims):
            head = model.heads[task]
            z = (hidden[:, dims] - head.input_mean) / head.input_scale     # standardised input
            separate = z @ head.weight.T + head.bias
            torch.testing.assert_close(out[task], separate)
            torch.testing.assert_close(model.task_logits(task, **batch), separate)
            # the engine's classifier built from the shared encoder and this task's head
            torch.testing.assert_close(model.single_task(task).eval()(**batch), separate)


def test_heads_read_only_their_own_dims(synth_tasks, tiny_bert):
    model = _tiny_multitask(tiny_bert)
    rep = torch.randn(4, 32)
    base = model.heads_on(rep)
    bumped = rep.clone()
    bumped[:, [5, 9]] += 10.0                       # the topic task's dimensions only
    after = model.heads_on(bumped)
    torch.testing.assert_close(after[SENTIMENT], base[SENTIMENT])
    assert not torch.allclose(after[TOPIC], base[TOPIC])


def test_save_and_load_round_trip(synth_tasks, tiny_bert, tmp_path):
    model = _tiny_multitask(tiny_bert)
    model.save(tmp_path / "mt")
    again = load_multitask(tmp_path / "mt")
    batch = _batch(model)
    with torch.no_grad():
        a, b = model(**batch), again(**batch)
    assert again.dims == model.dims and again.tasks == model.tasks
    for t in model.tasks:
        torch.testing.assert_close(a[t], b[t])


def test_a_killed_joint_run_resumes_to_the_uninterrupted_result(synth_tasks, tiny_bert, tmp_path,
                                                                  monkeypatch):
    """Stopped after step 13 of 24 (its last checkpoint: step 12), the joint run started again
    resumes there, each task's batches continuing where they were, and ends as an
    uninterrupted run ends: the same loss at every step, the same metrics and weights."""
    from bertdims.train import multitask
    from bertdims.core.store import ResultStore
    config = MultitaskConfig(model=tiny_bert, tasks=[SENTIMENT, TOPIC], dims=[[0, 1, 2], [3, 4, 5]],
                             epochs=2.0, lr=3e-3, batch_size=16, max_seq_len=16, device="cpu", seed=0)
    whole = finetune_multitask(config, store=ResultStore(tmp_path / "whole"), progress=False)
    assert len(whole.history) == 24            # ceil(2 * 96 / 16) = 12 batches per task

    store = ResultStore(tmp_path / "killed")
    monkeypatch.setattr(multitask, "_after_step", stop_at(13))
    with pytest.raises(Killed):
        finetune_multitask(config, store=store, progress=False)
    assert store.runs("multitask").empty
    resumed = []
    monkeypatch.setattr(multitask, "_after_step", resumed.append)
    again = finetune_multitask(config, store=store, progress=False)
    assert resumed[0] == 13                    # steps 1-12 came from the checkpoint
    # the killed run left a checkpoint (steps 1-12); the finished run removed it
    checkpoints = store.root / "multitask" / ".checkpoints"
    assert checkpoints.is_dir() and list(checkpoints.iterdir()) == []
    pd.testing.assert_frame_equal(again.history, whole.history)
    pd.testing.assert_frame_equal(again.scores, whole.scores)
    a, b = again.load().state_dict(), whole.load().state_dict()
    for name, value in b.items():
        torch.testing.assert_close(a[name], value)


@pytest.mark.slow
def test_joint_training_learns_and_is_stored(synth_tasks, tiny_bert, store, monkeypatch):
    config = MultitaskConfig(model=tiny_bert, tasks=[SENTIMENT, TOPIC], dims=[[0, 1, 2], [3, 4, 5]],
                             epochs=6.0, lr=3e-3, batch_size=16, max_seq_len=16, device="cpu", seed=0)
    run = finetune_multitask(config, store=store, progress=False)
    check_result(run, config=config, runs=2, tables={"scores", "history"}, kept=False)
    assert set(run.paths) == {"model_dir", "path"} and all(p.exists() for p in run.paths.values())
    assert run.metrics[SENTIMENT]["test"] == {r.metric: r.value for r in run.scores.itertuples()
                                              if r.task == SENTIMENT and r.split == "test"}
    # every task evaluated on both splits with its metrics
    assert set(zip(run.scores.task, run.scores.split)) == {(t, s) for t in config.tasks
                                                            for s in ("validation", "test")}
    # each task saw ceil(6 * 96 / 16) = 36 batches and its loss went down
    h = run.history
    assert h.groupby("task").size().to_dict() == {SENTIMENT: 36, TOPIC: 36}
    for task, g in h.groupby("task"):
        assert g.loss.tail(6).mean() < g.loss.head(6).mean(), task
    assert run.score(SENTIMENT) > 0.8 and run.score(TOPIC) > 0.6
    # each head standardises its own dimensions with statistics of its task's training split
    model = run.load()
    for t, d in zip(model.tasks, model.dims):
        assert model.heads[t].input_mean.shape == (len(d),)
        assert not torch.allclose(model.heads[t].input_scale, torch.ones(len(d)))
    # one forward pass of the saved model gives the same predictions as the per-task heads
    model = run.load()
    data = tasks_mod.load_task(TOPIC)["test"]["text"][:8]
    joint = model.predict(data, max_seq_len=16)
    batch = _batch(model, data)
    with torch.no_grad():
        for t in model.tasks:
            np.testing.assert_array_equal(joint[t], model.task_logits(t, **batch).argmax(-1).numpy())
    # the same config is read back from the store, not retrained
    import bertdims.train.multitask as mt
    monkeypatch.setattr(mt, "_train", lambda *a, **k: pytest.fail("retrained"))
    again = finetune_multitask(config, store=store, progress=False)
    pd.testing.assert_frame_equal(again.scores, run.scores)


# ---------------------------------------------------------------------------- cross-fine-tuning
from bertdims.analysis.crossft import (CrossConfig, cross_finetune, disjoint_dims, multitask_table,  # noqa: E402
                              multitask_vs_single, pair_matrix, retention, retention_predictions,
                              shared_dims, summarize_shared, transplant_head)


def _engine():
    """The engine module (``bertdims.finetune`` the attribute is the function)."""
    import sys
    return sys.modules["bertdims.train.finetuning"]


@pytest.fixture(scope="module")
def cross_store(tmp_path_factory):
    """One store for the module, so later tests read the runs of earlier ones back."""
    return bd.ResultStore(tmp_path_factory.mktemp("cross_results"))


def _cross_config(tiny_bert, **kw):
    base = dict(model=tiny_bert, tasks=[SENTIMENT, TOPIC], seeds=[0], num_dims=2, epochs=2.0,
                lr=1e-3, batch_size=16, max_train_samples=None, max_eval_samples=None,
                max_seq_len=16, device="cpu")
    return CrossConfig(**{**base, **kw})


def test_cross_config_rejects_bad_input(synth_tasks, tiny_bert):
    with pytest.raises(bd.ConfigError, match="listed more than once"):
        _cross_config(tiny_bert, tasks=[SENTIMENT, TOPIC, SENTIMENT])
    with pytest.raises(bd.ConfigError, match="at least 2"):
        _cross_config(tiny_bert, tasks=[SENTIMENT])
    with pytest.raises(bd.ConfigError, match="modes"):
        _cross_config(tiny_bert, modes=["some"])
    with pytest.raises(bd.ConfigError, match="seeds"):
        _cross_config(tiny_bert, seeds=[1, 1])
    with pytest.raises(bd.ConfigError, match="lr"):          # checked by FinetuneConfig
        _cross_config(tiny_bert, lr=-1.0)


def test_more_dims_than_the_model_has_fails_before_training(synth_tasks, tiny_bert, store, monkeypatch):
    monkeypatch.setattr(_engine(), "_train", lambda *a, **k: pytest.fail("training started"))
    config = _cross_config(tiny_bert, num_dims=17)           # two disjoint sets of 17 > 32
    for experiment in (cross_finetune, shared_dims, multitask_vs_single):
        with pytest.raises(bd.ConfigError, match="num_dims.*hidden size is 32"):
            experiment(config, store=store)


def test_disjoint_dims_is_greedy_in_task_order():
    assert disjoint_dims([[5, 1, 2, 9], [1, 5, 7, 3], [2, 7, 1, 8]], 2) == [[1, 5], [3, 7], [2, 8]]
    with pytest.raises(bd.ConfigError, match="num_dims"):
        disjoint_dims([[0, 1], [1, 0]], 2)


@pytest.mark.slow
def test_sequential_a_then_b(synth_tasks, tiny_bert, cross_store):
    from bertdims.train.finetuning import finetune
    from bertdims.analysis.dims import chance_score
    from bertdims.core.stats import metric_scores
    config = _cross_config(tiny_bert)
    res = cross_finetune(config, store=cross_store)
    check_result(res, config=config, runs=2 * 2 * 2, tables={"pairs"})  # (mode, pair) x (B after A, control)
    pairs = res.pairs
    assert len(pairs) == 2 * 2                                 # 2 modes x 2 ordered pairs
    assert set(zip(pairs["first"], pairs["second"])) == {(SENTIMENT, TOPIC), (TOPIC, SENTIMENT)}
    all_rows, few = pairs[pairs["mode"] == "all"], pairs[pairs["mode"] == "few"]
    assert (all_rows.dims_first == "all").all() and (all_rows.dims_second == "all").all()
    for _, row in few.iterrows():                              # disjoint few dims per head
        a, b = set(row.dims_first.split()), set(row.dims_second.split())
        assert len(a) == len(b) == 2 and not a & b
    # B after A starts from A's encoder: a different model from B alone, and A's own score
    # is the stored single-task run
    row = all_rows[all_rows["first"] == SENTIMENT].iloc[0]
    alone = finetune(config.finetune_config(TOPIC, 0), store=cross_store, progress=False)
    assert row.second_alone == pytest.approx(alone.score("test"))
    first = finetune(config.finetune_config(SENTIMENT, 0), store=cross_store, progress=False)
    assert row.first_before == pytest.approx(first.score("test"))
    # chance is the majority class of A's training split, not 1 / number of classes
    chance = chance_score(SENTIMENT)
    assert row.chance == pytest.approx(chance)
    gain = row.first_before - chance
    assert row.retention == pytest.approx((row.first_after - chance) / gain if gain > 0
                                          else float("nan"), nan_ok=True)
    assert row.retention_control == pytest.approx((row.first_control - chance) / gain if gain > 0
                                                  else float("nan"), nan_ok=True)
    assert row.transfer == pytest.approx(row.second_after - row.second_alone)
    # the control trains A on A for as many steps as B got
    assert (pairs.control_steps == pairs.second_steps).all()
    # the stored predictions give the table's scores, one row per seed
    for _, r in pairs.iterrows():
        key = (r["mode"], r["first"], r["second"])
        for what, task in (("first_after", r["first"]), ("first_control", r["first"]),
                           ("first_before", r["first"]), ("second_after", r["second"])):
            p = res.predictions[key + (what,)]
            assert p.shape == (1, len(res.labels[task]))
            assert metric_scores(p, res.labels[task], "accuracy")[0] == pytest.approx(r[what])
    matrix = pair_matrix(pairs, "retention")
    assert len(matrix) == 4 and set(matrix.columns) == {"mode", "first", "second", "retention"}


@pytest.mark.slow
def test_sequential_is_read_back_from_the_store(synth_tasks, tiny_bert, cross_store, monkeypatch):
    config = _cross_config(tiny_bert)
    before = cross_finetune(config, store=cross_store)
    monkeypatch.setattr(_engine(), "_train", lambda *a, **k: pytest.fail("retrained"))
    again = cross_finetune(config, store=cross_store)
    pd.testing.assert_frame_equal(again.pairs, before.pairs)
    for key, p in before.predictions.items():
        np.testing.assert_array_equal(again.predictions[key], p)


@pytest.mark.slow
def test_head_survives_exactly_when_b_leaves_the_encoder_alone(synth_tasks, tiny_bert, cross_store):
    """Retention plumbing: if B trains only its head (encoder frozen), A's stored head on
    B's encoder must give A's own scores exactly; with B's encoder training it changes."""
    from bertdims.train.finetuning import finetune
    config = _cross_config(tiny_bert)
    first = finetune(config.finetune_config(SENTIMENT, 0, dims=[3, 7]), store=cross_store, progress=False)
    frozen = finetune(config.finetune_config(TOPIC, 0, init_from=first.model_dir, freeze=2),
                      store=cross_store, progress=False)
    kept = retention(first, frozen, store=cross_store, device="cpu")
    for split in ("validation", "test"):
        assert kept[split] == pytest.approx(first.metrics[split])
        preds, labels = retention_predictions(first, frozen, store=cross_store, split=split)
        np.testing.assert_array_equal(preds, first.predictions(split))     # same example order
        np.testing.assert_array_equal(labels, first.labels(split))
    moved = finetune(config.finetune_config(TOPIC, 0, init_from=first.model_dir), store=cross_store,
                     progress=False)
    hybrid = transplant_head(first.model_dir, moved.model_dir)
    assert hybrid.dims == [3, 7] and hybrid.task.name == SENTIMENT
    own = first.load()
    enc_a = dict(own.encoder.named_parameters())
    assert any(not torch.equal(p, enc_a[n]) for n, p in hybrid.encoder.named_parameters())
    torch.testing.assert_close(hybrid.head.weight, own.head.weight)


@pytest.mark.slow
def test_shared_dims_rows(synth_tasks, tiny_bert, cross_store):
    config = _cross_config(tiny_bert)
    shared = shared_dims(config, store=cross_store)
    assert len(shared) == 2 * 4                                 # 2 targets x (all, own, other, random)
    for target in config.tasks:
        rows = shared[shared.target == target].set_index("kind")
        other = [t for t in config.tasks if t != target][0]
        own_of_other = shared[(shared.target == other) & (shared.kind == "own")].dims.iloc[0]
        assert rows.loc["other task", "dims"] == own_of_other    # A's dims, trained for B
        assert rows.loc["all", "dims"] == "all"
        assert len(rows.loc["random", "dims"].split()) == 2
    summary = summarize_shared(shared)
    assert (summary[summary.kind == "all"].share_of_all == 1.0).all()


@pytest.mark.slow
def test_multitask_against_single(synth_tasks, tiny_bert, cross_store):
    config = _cross_config(tiny_bert, seeds=[0, 1])
    rows = multitask_vs_single(config, store=cross_store)
    assert len(rows) == 2 * 2 * 2                               # seeds x tasks x settings
    dims = rows[rows.seed == 0].groupby("task").dims.first()
    assert not set(dims[SENTIMENT].split()) & set(dims[TOPIC].split())
    table = multitask_table(rows)
    assert table.seeds.tolist() == [2, 2] and list(table.task) == [SENTIMENT, TOPIC]
    # the stored joint model answers both tasks in one forward pass, as its per-task heads do
    model = load_multitask(rows[rows.setting == "joint"].model_dir.iloc[0])
    assert model.tasks == [SENTIMENT, TOPIC]
    batch = _batch(model)
    with torch.no_grad():
        out = model(**batch)
        for t in model.tasks:
            torch.testing.assert_close(out[t], model.single_task(t).eval()(**batch))


def _fake_sequential(after_right: float, few_right: float, seeds: int = 3, n: int = 400):
    """A Sequential of one ordered pair (a, b) whose predictions are right on the given share
    of the examples (the control and the all-dimension B always the same predictions, right
    on 0.9)."""
    from bertdims.analysis.crossft import Sequential
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)

    def right(share):
        return predictions_right_on(y, share, seeds, rng)

    base = right(0.9)                       # a share of 0.9 reuses these very predictions

    def pred(share):
        return base.copy() if share == 0.9 else right(share)

    preds = {}
    for mode in ("all", "few"):
        preds[(mode, "a", "b", "first_after")] = pred(after_right)
        preds[(mode, "a", "b", "first_control")] = base.copy()
        preds[(mode, "a", "b", "second_after")] = pred(few_right if mode == "few" else 0.9)
    return Sequential(pairs=pd.DataFrame(), predictions=preds, labels={"a": y, "b": y},
                      runs={})


def test_cross_effects_compare_with_the_control_and_all_dims(synth_tasks, monkeypatch):
    from bertdims.analysis import crossft
    monkeypatch.setattr(crossft, "get_task", lambda name: bd.get_task(SENTIMENT))
    same = crossft.cross_effects(_fake_sequential(0.9, 0.9), retention_margin=0.05,
                                 few_margin=0.02, n_boot=300)
    assert list(same.claim_id) == ["p1-cross-retention"] * 2 + ["p1-cross-few-dims"]
    assert list(same["mode"]) == ["all", "few", "few vs all"]
    assert (same.scale == "ratio").all() and (same.claim == "noninferior").all()
    assert (same.estimate == 0).all() and (same.verdict == "reproduced").all()
    assert same.margin.tolist() == [0.05, 0.05, 0.02]
    lost = crossft.cross_effects(_fake_sequential(0.6, 0.7), retention_margin=0.05,
                                 few_margin=0.02, n_boot=300)
    assert (lost.verdict == "not reproduced").all()            # 0.6 / 0.9 and 0.7 / 0.9
    assert lost.estimate.iloc[0] == pytest.approx(0.6 / 0.9 - 1, abs=0.01)


def test_matched_epochs_gives_the_control_as_many_examples_as_b():
    from bertdims.analysis.crossft import matched_epochs
    assert matched_epochs(1.0, 1000, 1000) == 1.0
    assert matched_epochs(2.0, 500, 750) == pytest.approx(3.0)     # 2 x 750 = 3 x 500 examples
    with pytest.raises(bd.ConfigError, match="n_first"):
        matched_epochs(1.0, 0, 10)


def test_cli_rejects_a_task_listed_twice(synth_tasks, capsys):
    from bertdims.cli import main
    assert main(["crossft", "--tasks", f"{SENTIMENT},{TOPIC},{SENTIMENT}"]) == 2
    assert "listed more than once" in capsys.readouterr().err


@pytest.mark.slow
def test_rankings_are_shared_with_the_few_dimensions_chapter(synth_tasks, tiny_bert, store,
                                                            monkeypatch):
    """rank_run reads the ranking rank_dims stored for the same fine-tuned model (one key
    layout), so the two chapters select the same dimensions without ranking twice."""
    from bertdims.analysis import dims as dims_mod
    from bertdims.analysis.crossft import rank_run
    from bertdims.train.finetuning import finetune
    config = _cross_config(tiny_bert)
    cfg = config.finetune_config(SENTIMENT, 0)
    stored = dims_mod.rank_dims(cfg, store=store, methods=["single"], ks=[1, 2], modes=["refit"])
    run = finetune(cfg, store=store, progress=False)
    monkeypatch.setattr(dims_mod, "rank_dimensions", lambda *a, **k: pytest.fail("ranked again"))
    table = rank_run(run, "single", store=store)
    assert table["dim"].tolist() == stored.rankings["dim"].tolist()
