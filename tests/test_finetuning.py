"""Tests of the fine-tuning engine (bertdims.train.finetuning, bertdims.train.training, bertdims.train.heads)."""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from finetune_tasks import TEST_TASKS, Killed, registered_test_tasks, stop_at  # noqa: E402

ft = importlib.import_module("bertdims.train.finetuning")  # the module (bertdims.finetune is also a function)
from bertdims import ConfigError  # noqa: E402
from bertdims.train.finetuning import FinetuneConfig, finetune, load_finetuned  # noqa: E402
from bertdims.train.heads import SelectiveClassifier, load_backbone  # noqa: E402
from bertdims.train.training import (Collator, apply_freezing, build_optimizer, encode_texts,  # noqa: E402
                               layer_of, slanted_triangular)

CLS_TASK, REG_TASK = TEST_TASKS


@pytest.fixture(autouse=True, scope="module")
def test_tasks_registered():
    """The two small tasks, registered for this module and removed from the registry after it."""
    with registered_test_tasks():
        yield


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny model gains nothing from threads, and on a busy machine every parallel op
    waits for a second core: one intra-op thread keeps these tests fast."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def config(tiny_bert, **kw) -> FinetuneConfig:
    base = dict(model=tiny_bert, task=CLS_TASK, max_seq_len=32, epochs=1.0, device="cpu",
                batch_size=16, micro_batch_size=8)
    base.update(kw)
    return FinetuneConfig(**base)


def build(tiny_bert, **kw) -> SelectiveClassifier:
    from transformers import AutoTokenizer
    cfg = config(tiny_bert, **kw)
    torch.manual_seed(0)
    model = SelectiveClassifier(load_backbone(tiny_bert), AutoTokenizer.from_pretrained(tiny_bert),
                                cfg, ft.get_task(cfg.task))
    apply_freezing(model, cfg)
    return model


def batch_of(model, texts=("the movie was good", "a dull boring plot and it was bad indeed")):
    enc = encode_texts(list(texts), model.tokenizer, 32)
    batch = Collator(model.tokenizer.pad_token_id, False)([enc[i] for i in range(len(enc))])
    return {k: v for k, v in batch.items() if k != "index"}


def encoder_state(backbone) -> dict:
    return {k: v.detach().clone() for k, v in backbone.state_dict().items()}


# ---------------------------------------------------------------------------- validation
@pytest.mark.parametrize("kw, name, allowed", [
    ({"layer": -2}, "layer", "[-1, inf]"),
    ({"token": "first"}, "token", "cls, mean, maxnorm, token:i"),
    ({"head": "cnn"}, "head", "linear, mlp"),
    ({"freeze": -1}, "freeze", "[0, inf]"),
    ({"lr": 0.0}, "lr", "(0, inf]"),
    ({"head_lr": -1e-3}, "head_lr", "(0, inf]"),
    ({"epochs": 0}, "epochs", "(0, inf]"),
    ({"batch_size": 0}, "batch_size", "[1, inf]"),
    ({"micro_batch_size": 2.5}, "micro_batch_size", "integer"),
    ({"warmup": 1.0}, "warmup", "[0, 1)"),
    ({"dropout": 1.0}, "dropout", "[0, 1)"),
    ({"layer_lr_decay": 0.0}, "layer_lr_decay", "(0, 1]"),
    ({"patience": 0}, "patience", "[1, inf]"),
    ({"early_stopping_fraction": 1.0}, "early_stopping_fraction", "[0, 1)"),
    ({"frozen_epochs": 0}, "frozen_epochs", "(0, inf]"),
    ({"train_layers": []}, "train_layers", "at least one layer"),
    ({"train_layers": [1], "freeze": 1}, "train_layers", "either train_layers or freeze"),
    ({"task": "no_such_task"}, "task", "choose one of"),
    ({"precision": "fp16"}, "precision", "auto, fp32, bf16"),
    ({"device": "tpu"}, "device", "auto, cpu, cuda"),
    ({"max_train_samples": 0}, "max_train_samples", "[1, inf]"),
    ({"dims": "3,x"}, "dims", "comma-separated integers"),
])
def test_config_rejects_bad_values(tiny_bert, kw, name, allowed):
    with pytest.raises(ConfigError) as err:
        config(tiny_bert, **kw)
    msg = str(err.value)
    assert f"'{name}'" in msg and allowed in msg


@pytest.mark.parametrize("kw, name, allowed", [
    ({"layer": 3}, "layer", "[-1, 2]"),
    ({"dims": [0, 32]}, "dims", "[0, 31]"),
    ({"dims": [3, 5, 3]}, "dims", "repeated: [3]"),
    ({"freeze": 3}, "freeze", "[0, 2]"),
    ({"train_layers": [0]}, "train_layers", "[1, 2]"),
    ({"train_layers": [1, 1]}, "train_layers", "distinct"),
    ({"layer": 1, "train_layers": [2]}, "train_layers", "[1, 1]"),
])
def test_validation_against_model_size_happens_before_training(tiny_bert, monkeypatch, kw, name, allowed):
    monkeypatch.setattr(ft, "_train", lambda *a, **k: pytest.fail("trained despite a bad config"))
    with pytest.raises(ConfigError) as err:
        finetune(config(tiny_bert, **kw), progress=False)
    msg = str(err.value)
    assert f"'{name}'" in msg and allowed in msg


def test_dims_from_numpy_become_plain_ints(tiny_bert):
    cfg = config(tiny_bert, dims=np.array([4, 1]), train_layers=(2,))
    assert cfg.dims == [4, 1] and type(cfg.dims[0]) is int and cfg.train_layers == [2]
    assert json.loads(cfg.to_json())["dims"] == [4, 1]


def test_init_from_must_be_a_model_folder(tiny_bert, tmp_path):
    with pytest.raises(ConfigError, match="'init_from'"):
        finetune(config(tiny_bert, init_from=str(tmp_path)), progress=False)


# ---------------------------------------------------------------------------- model pieces
def test_layer_of_names_blocks_embeddings_and_head(tiny_bert):
    model = build(tiny_bert)
    layers = {layer_of(n, 2) for n, _ in model.named_parameters()}
    assert layers == {0, 1, 2, "head"}
    assert layer_of("encoder.encoder.layer.1.attention.self.query.weight", 2) == 2
    assert layer_of("encoder.embeddings.word_embeddings.weight", 2) == 0


@pytest.mark.parametrize("token", ["cls", "mean", "maxnorm", "token:2"])
def test_token_and_dims_reach_the_head_with_the_right_shape(tiny_bert, token):
    model = build(tiny_bert, token=token, dims=[3, 17], layer=1).eval()
    batch = batch_of(model)
    with torch.no_grad():
        rep = model.representation(**batch)
        feats = model.features(**batch)
        logits = model(**batch)
        hidden = model.encoder(**batch, output_hidden_states=True).hidden_states[1]
    assert rep.shape == (2, 32) and feats.shape == (2, 2) and logits.shape == (2, 2)
    assert model.head.in_features == 2
    torch.testing.assert_close(feats, rep[:, [3, 17]])
    if token == "cls":
        torch.testing.assert_close(rep, hidden[:, 0])
    if token == "mean":  # mean over the real tokens between [CLS] and [SEP]
        n = batch["attention_mask"].sum(1)
        expected = torch.stack([hidden[b, 1:n[b] - 1].mean(0) for b in range(2)])
        torch.testing.assert_close(rep, expected)


def test_mlp_head_and_regression_output_shape(tiny_bert):
    model = build(tiny_bert, task=REG_TASK, head="mlp", head_hidden=8).eval()
    assert model(**batch_of(model)).shape == (2, 1)
    assert model.head.net[0].in_features == 32 and model.head.net[0].out_features == 8


def test_frozen_layers_get_no_gradient(tiny_bert):
    model = build(tiny_bert, freeze=1)
    model(**batch_of(model)).sum().backward()
    for name, p in model.named_parameters():
        where = layer_of(name, 2)
        if where in (0, 1):
            assert not p.requires_grad and p.grad is None, name
        else:
            assert p.requires_grad and p.grad is not None, name
    trained = {id(p) for g in build_optimizer(model, model.config).param_groups for p in g["params"]}
    assert trained == {id(p) for p in model.parameters() if p.requires_grad}


def _changed(before: dict, after: dict, prefix: str) -> bool:
    keys = [k for k in before if k.startswith(prefix)]
    assert keys, prefix
    return any(not torch.equal(before[k], after[k]) for k in keys)


@pytest.mark.parametrize("kw, frozen, trained", [
    ({"freeze": 1}, ["embeddings.", "encoder.layer.0."], ["encoder.layer.1."]),
    ({"train_layers": [1]}, ["embeddings.", "encoder.layer.1."], ["encoder.layer.0."]),
    ({"layer": 1}, ["encoder.layer.1."], ["embeddings.", "encoder.layer.0."]),
    ({"freeze": 2, "freeze_embeddings": True, "head": "mlp"},
     ["embeddings.", "encoder.layer.0.", "encoder.layer.1."], []),
])
def test_frozen_layers_do_not_change_in_training(tiny_bert, kw, frozen, trained):
    before = encoder_state(load_backbone(tiny_bert))
    run = finetune(config(tiny_bert, lr=1e-3, max_train_samples=32, early_stopping_fraction=0,
                          **kw), progress=False)
    after = encoder_state(run.model.encoder)
    for prefix in frozen:
        assert not _changed(before, after, prefix), prefix
    for prefix in trained:
        assert _changed(before, after, prefix), prefix


def test_layerwise_learning_rates_and_weight_decay(tiny_bert):
    model = build(tiny_bert, lr=2e-5, layer_lr_decay=0.95, weight_decay=0.01)
    groups = build_optimizer(model, model.config).param_groups
    lr = {g["layer"]: g["lr"] for g in groups}
    assert lr[2] == pytest.approx(2e-5)
    assert lr[1] / lr[2] == pytest.approx(0.95) and lr[0] / lr[1] == pytest.approx(0.95)
    assert lr["head"] == pytest.approx(ft.DEFAULT_HEAD_LR)
    names = {id(p): n for n, p in model.named_parameters()}
    for g in groups:
        for p in g["params"]:
            no_decay = names[id(p)].endswith("bias") or "LayerNorm" in names[id(p)]
            assert g["weight_decay"] == (0.0 if no_decay else 0.01), names[id(p)]
    assert {g["lr"] for g in build_optimizer(build(tiny_bert, head_lr=0.5),
                                             config(tiny_bert, head_lr=0.5)).param_groups
            if g["layer"] == "head"} == {0.5}


def test_slanted_triangular_schedule_shape():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = slanted_triangular(opt, total_steps=20, warmup=0.1)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:3] == pytest.approx([0.5, 1.0, 1.0])            # warm-up: 2 steps up to the peak
    assert all(a > b for a, b in zip(lrs[2:], lrs[3:]))         # then a linear fall ...
    assert np.diff(lrs[2:]) == pytest.approx(np.full(17, -1 / 18))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0)      # ... to 0 at the end
    assert max(lrs) == 1.0


# ---------------------------------------------------------------------------- runs
def test_regression_task_trains_with_mse_and_reports_correlations(tiny_bert):
    run = finetune(config(tiny_bert, task=REG_TASK, max_train_samples=48), progress=False)
    assert set(run.metrics) == {"validation", "test"}
    assert set(run.metrics["test"]) == {"pearson", "spearman"}
    scores = run.model.predict(["the movie was good", "bad bad film"])
    assert scores.shape == (2,) and scores.dtype.kind == "f"
    assert np.isfinite(run.history["train_loss"]).all()


def test_store_caches_the_run_and_the_model(tiny_bert, store, monkeypatch):
    cfg = config(tiny_bert, max_train_samples=32, dims=[1, 2, 3])
    first = finetune(cfg, store=store, progress=False)
    assert not first.cached and first.model_dir == first.path / "model"
    assert first.path.parent == store.root / "finetune"
    assert list(first.history.columns) == ["step", "epoch", "lr", "train_loss", "dev_loss", "dev_accuracy"]
    monkeypatch.setattr(ft, "_train", lambda *a, **k: pytest.fail("retrained a stored run"))
    second = finetune(cfg, store=store, progress=False)
    assert second.cached and second.path == first.path and second.metrics == first.metrics
    texts = ["good great film", "dull and boring", "the plot was nice"]
    loaded = load_finetuned(second.model_dir)
    np.testing.assert_array_equal(loaded.predict(texts), first.model.predict(texts))
    assert loaded.config == cfg
    # a checkpoint was written at the evaluation of step 1 (of 2); the finished run removed it
    checkpoints = store.root / "finetune" / ".checkpoints"
    assert checkpoints.is_dir() and list(checkpoints.iterdir()) == []


def test_saved_model_gives_the_reported_metrics(tiny_bert, tmp_path):
    import bertdims as bd
    from bertdims.train.training import evaluate, make_loader
    run = finetune(config(tiny_bert, token="mean", dims=[0, 5], max_train_samples=40), out_dir=tmp_path,
                   progress=False)
    assert json.loads((tmp_path / "metrics.json").read_text()) == run.metrics
    model = load_finetuned(tmp_path / "model")
    task = bd.get_task(CLS_TASK)
    test = bd.load_task(CLS_TASK)["test"]
    loader = make_loader(task, test, model.tokenizer, batch_size=7, max_seq_len=32)
    assert evaluate(model, loader, task, "cpu") == run.metrics["test"]


def test_cli_writes_config_and_metrics(tiny_bert, tmp_path, capsys):
    from bertdims.cli import main
    out = tmp_path / "run"
    code = main(["finetune", "--model", tiny_bert, "--task", CLS_TASK, "--layer", "-1",
                 "--token", "cls", "--dims", "3,17", "--freeze", "0", "--epochs", "1",
                 "--max-train-samples", "24", "--max-eval-samples", "16", "--max-seq-len", "32",
                 "--seed", "0", "--device", "cpu", "--quiet", "--out", str(out)])
    assert code == 0
    cfg = json.loads((out / "config.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert cfg["dims"] == [3, 17] and cfg["max_train_samples"] == 24 and cfg["task"] == CLS_TASK
    assert set(metrics) == {"validation", "test"}
    for split in ("validation", "test"):                 # the stored predictions give the metrics
        preds, labels = np.load(out / f"pred_{split}.npy"), np.load(out / f"label_{split}.npy")
        assert len(labels) == 16 and metrics[split] == pytest.approx({"accuracy": np.mean(preds == labels)})
    assert (out / "model" / "head.pt").exists()


def test_cli_reports_bad_values_cleanly(tiny_bert, tmp_path, capsys):
    from bertdims.cli import main
    code = main(["finetune", "--model", tiny_bert, "--task", CLS_TASK, "--layer", "7",
                 "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "'layer'" in err and "[-1, 2]" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_init_from_starts_from_the_finetuned_encoder(tiny_bert, store):
    first = finetune(config(tiny_bert, lr=1e-3, max_train_samples=32, early_stopping_fraction=0),
                     store=store, progress=False)
    second = finetune(config(tiny_bert, task=REG_TASK, init_from=str(first.model_dir), freeze=2,
                             max_train_samples=32, early_stopping_fraction=0), store=store, progress=False)
    base, a, b = (encoder_state(m) for m in (load_backbone(tiny_bert), first.model.encoder,
                                              second.model.encoder))
    assert all(torch.equal(a[k], b[k]) for k in a)              # frozen, started from the first run
    assert any(not torch.equal(a[k], base[k]) for k in a)
    assert second.model.head.out_features == 1 and second.path != first.path


def test_runs_of_different_precision_follow_each_other_in_one_process(tiny_bert):
    # accelerate keeps process-wide state; a bf16 run after an fp32 one must still work
    runs = [finetune(config(tiny_bert, precision=p, max_train_samples=16, early_stopping_fraction=0),
                     progress=False) for p in ("fp32", "bf16", "fp32")]
    assert [r.info["precision"] for r in runs] == ["fp32", "bf16", "fp32"]
    assert runs[0].metrics == runs[2].metrics


def test_killed_run_resumes_to_the_same_result(tiny_bert, tmp_path, monkeypatch):
    # 86 training examples, batch 16 -> 6 steps per epoch, 12 steps; checkpoints every 2 steps.
    cfg = config(tiny_bert, epochs=2.0, checkpoint_every=2, eval_every=6, lr=1e-3)
    full = finetune(cfg, out_dir=tmp_path / "full", progress=False)
    with monkeypatch.context() as m:
        m.setattr(ft, "_after_step", stop_at(5))          # stopped after step 5, as a kill would
        with pytest.raises(Killed):
            finetune(cfg, out_dir=tmp_path / "cut", progress=False)
    saved = torch.load(tmp_path / "cut" / "checkpoint" / "trainer.pt", weights_only=False)
    assert saved["state"]["step"] == 4 and len(saved["state"]["history"]) == 0
    resumed = finetune(cfg, out_dir=tmp_path / "cut", progress=False)
    assert resumed.info["steps_this_call"] == 12 - 4
    assert resumed.metrics == full.metrics
    np.testing.assert_allclose(resumed.history.to_numpy(float), full.history.to_numpy(float), atol=1e-6)
    a, b = encoder_state(resumed.model.encoder), encoder_state(full.model.encoder)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert not (tmp_path / "cut" / "checkpoint").exists()


# ---------------------------------------------------------------------------- checkpoint rule
def _dev_scores(model, task_name, dataset) -> tuple[float, float]:
    """Mean loss (the engine's definition) and accuracy of ``model`` on a task split."""
    from bertdims.train.training import make_loader
    task = ft.get_task(task_name)
    loader = make_loader(task, dataset, model.tokenizer, batch_size=32, max_seq_len=32)
    outs, labels = [], []
    model.eval()
    with torch.no_grad():
        for batch in loader:
            labels.append(batch.pop("labels"))
            outs.append(model(**{k: v for k, v in batch.items() if k != "index"}))
    out, y = torch.cat(outs).numpy(), torch.cat(labels).numpy()
    return ft._mean_loss(task, out, y, model.head), float(np.mean(out.argmax(1) == y))


def _dev_loss(model, task_name, dataset) -> float:
    return _dev_scores(model, task_name, dataset)[0]


@pytest.mark.parametrize("loop, kw", [
    # the whole encoder trains: a learning rate far too high makes the dev loss rise after step 4
    ("full", dict(epochs=8.0, lr=0.1, head_lr=1.0, warmup=0.99)),
    # a frozen encoder: the head alone, on features computed once (bertdims.train.finetuning._train_frozen)
    ("frozen", dict(freeze=2, frozen_epochs=8.0, head_lr=3.0, warmup=0.5)),
])
def test_checkpoint_rule_keeps_the_lowest_dev_loss_state(tiny_bert, monkeypatch, loop, kw):
    """Early stopping on a development split: training stops ``patience`` evaluations after the
    lowest dev loss, and the model returned is the state of that evaluation (its weights are
    copied back), not the last one: its dev loss and accuracy are those of the history row of
    ``best_step``, which differ from those of the last row."""
    monkeypatch.setattr(ft, "MIN_DEV_SAMPLES", 30)
    patience, eval_every = 3, 2
    run = finetune(config(tiny_bert, eval_every=eval_every, patience=patience,
                          early_stopping_fraction=0.1, **kw), progress=False)
    hist = run.history.set_index("step")
    assert run.info["checkpoint_rule"] == "best_dev_loss" and run.info["n_dev"] == 30
    assert run.info["monitor_split"] == "dev" and run.info["fast_frozen"] == (loop == "frozen")
    losses = hist["dev_loss"].to_numpy()
    assert np.isfinite(losses).all()
    best_step = run.info["best_step"]
    assert best_step == int(hist.index[losses == losses.min()][-1])        # later wins a tie
    # stopped early: the best evaluation was followed by `patience` worse ones, then nothing
    assert run.info["stopped_early"] and run.info["steps"] < run.info["total_steps"]
    assert run.info["steps"] == best_step + patience * eval_every == hist.index[-1]
    best, last = hist.loc[best_step], hist.iloc[-1]
    assert last["dev_loss"] > best["dev_loss"] * 1.1                        # the last state differs
    dev = ft.prepare_splits(CLS_TASK, early_stopping_fraction=0.1)["dev"]
    loss, accuracy = _dev_scores(run.model, CLS_TASK, dev)
    assert loss == pytest.approx(best["dev_loss"], rel=1e-4)
    assert accuracy == pytest.approx(best["dev_accuracy"], abs=1e-9)
    assert loss != pytest.approx(last["dev_loss"], rel=0.05)


def test_final_state_rule_watches_validation_and_keeps_the_last_state(tiny_bert):
    run = finetune(config(tiny_bert, epochs=2.0, lr=1e-3, max_train_samples=48), progress=False)
    assert run.config.early_stopping_fraction == 0.0
    assert run.info["checkpoint_rule"] == "final" and run.info["n_dev"] == 0
    assert run.info["monitor_split"] == "validation" and run.info["best_step"] == run.info["steps"]
    assert list(run.history["step"]) == [2, 4, 6]      # 3 steps per epoch: every ceil(3 / 2) steps
    val = ft.prepare_splits(CLS_TASK, max_train_samples=48)["validation"]
    assert _dev_loss(run.model, CLS_TASK, val) == pytest.approx(run.history["dev_loss"].iloc[-1],
                                                                rel=1e-4)
    assert run.history["dev_accuracy"].iloc[-1] == pytest.approx(run.score("validation"))


def test_a_development_split_is_at_least_min_dev_samples(monkeypatch):
    assert ft.MIN_DEV_SAMPLES == 300
    monkeypatch.setattr(ft, "MIN_DEV_SAMPLES", 30)
    splits = ft.prepare_splits(CLS_TASK, early_stopping_fraction=0.01)
    assert len(splits["dev"]) == 30 and len(splits["train"]) == 96 - 30
    assert len(ft.prepare_splits(CLS_TASK, early_stopping_fraction=0.5)["dev"]) == 48
    assert "dev" not in ft.prepare_splits(CLS_TASK)
    with pytest.raises(ConfigError, match="'early_stopping_fraction'"):   # too few left to train
        ft.prepare_splits(CLS_TASK, max_train_samples=38, early_stopping_fraction=0.1)


# ---------------------------------------------------------------------------- head input
def test_head_statistics_come_from_the_pretrained_features_and_stay_fixed(tiny_bert, tmp_path):
    # a frozen encoder: eval-mode features of the pretrained model
    cfg = config(tiny_bert, layer=1, token="mean", dims=[0, 5, 9], freeze=2, max_train_samples=48)
    run = finetune(cfg, out_dir=tmp_path, progress=False)
    pre = build(tiny_bert, layer=1, token="mean", dims=[0, 5, 9])
    train = ft.prepare_splits(CLS_TASK, max_train_samples=48)["train"]
    enc = ft.encode_split(ft.get_task(CLS_TASK), train, pre.tokenizer, 32)
    feats = ft._features_of(pre, enc, Collator(pre.tokenizer.pad_token_id, False), 32, "cpu", "fp32")
    head = run.model.head
    torch.testing.assert_close(head.input_mean, feats.mean(0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(head.input_scale, feats.std(0, unbiased=False), rtol=1e-4, atol=1e-6)
    assert not any(n.startswith("head.input") for n, _ in run.model.named_parameters())
    loaded = load_finetuned(tmp_path / "model").head
    for name in ("input_mean", "input_scale", "target_mean", "target_scale"):
        torch.testing.assert_close(getattr(loaded, name), getattr(head, name))
    # fine-tuning: computed once before training (the same whatever the learning rate), and
    # kept fixed while the encoder moves
    tuned = [finetune(cfg.replace(freeze=0, lr=lr), progress=False).model for lr in (1e-4, 1e-3)]
    torch.testing.assert_close(tuned[0].head.input_mean, tuned[1].head.input_mean)
    torch.testing.assert_close(tuned[0].head.input_scale, tuned[1].head.input_scale)
    after = ft._features_of(tuned[1], enc, Collator(pre.tokenizer.pad_token_id, False), 32, "cpu", "fp32")
    assert not torch.allclose(after.mean(0), tuned[1].head.input_mean, atol=1e-4)


def test_standardised_head_learns_a_feature_that_barely_varies():
    # the label sits in a feature of standard deviation 1e-3 around 9 (like dimension 99 of the
    # embedded model's lower-layer [CLS]); with fixed statistics the head learns it in 200 steps
    # of AdamW at lr 1e-2, without them it cannot
    from bertdims.train.heads import Head
    gen = torch.Generator().manual_seed(0)
    signal = torch.randn(512, 4, generator=gen)
    x = 9.0 + 1e-3 * signal
    y = (signal[:, 0] + 0.5 * signal[:, 1] > 0).long()

    def trained_accuracy(standardise: bool) -> float:
        torch.manual_seed(0)
        head = Head("linear", 4, 2, dropout=0.0)
        if standardise:
            head.fit_stats(x)
        opt = torch.optim.AdamW(head.parameters(), lr=1e-2)
        for step in range(200):
            idx = torch.arange(step * 16, step * 16 + 16) % 512
            loss = torch.nn.functional.cross_entropy(head(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        return float((head(x).argmax(1) == y).float().mean())

    assert trained_accuracy(True) > 0.9
    assert trained_accuracy(False) < 0.75


def test_regression_head_starts_at_the_training_mean_and_reports_in_label_units(tiny_bert):
    run = finetune(config(tiny_bert, task=REG_TASK, freeze=2, frozen_epochs=20.0, token="mean",
                          max_train_samples=96), progress=False)
    train = np.asarray(ft.prepare_splits(REG_TASK, max_train_samples=96)["train"]["label"])
    head = run.model.head
    assert float(head.target_mean) == pytest.approx(train.mean(), rel=1e-5)
    assert float(head.target_scale) == pytest.approx(train.std(), rel=1e-5)
    fresh = ft.SelectiveClassifier(run.model.encoder, run.model.tokenizer, run.config,
                                   ft.get_task(REG_TASK))
    x = torch.randn(8, 32)
    fresh.head.fit_stats(x, torch.as_tensor(train))
    out = fresh.head.eval()(x)                      # untrained: the training mean on average
    assert float(out.detach().mean()) == pytest.approx(train.mean(), abs=1e-5)
    preds = run.predictions("test")
    assert abs(preds.mean() - train.mean()) < 0.3                              # label units
    assert run.metrics["test"]["pearson"] > 0.3


def test_an_old_head_file_without_statistics_still_loads(tiny_bert, tmp_path):
    run = finetune(config(tiny_bert, max_train_samples=24), out_dir=tmp_path, progress=False)
    head_file = tmp_path / "model" / "head.pt"
    state = torch.load(head_file, weights_only=True)
    torch.save({k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}, head_file)
    head = load_finetuned(tmp_path / "model").head
    torch.testing.assert_close(head.weight, run.model.head.weight)
    assert torch.equal(head.input_mean, torch.zeros(32)) and torch.equal(head.input_scale, torch.ones(32))


# ---------------------------------------------------------------------------- fast paths
def test_truncated_encoder_gives_the_layer_output_of_the_full_one(tiny_bert):
    from bertdims.train.heads import truncated
    model = build(tiny_bert).eval()
    batch = batch_of(model)
    with torch.no_grad():
        full = model.encoder(**batch, output_hidden_states=True).hidden_states
        for layer in (0, 1):
            with truncated(model.encoder, layer) as cut:
                assert cut and len(model.encoder.encoder.layer) == layer
                out = model.encoder(**batch).last_hidden_state
            torch.testing.assert_close(out, full[layer], rtol=0, atol=0)
        with truncated(model.encoder, 2) as cut:
            assert not cut
    assert len(model.encoder.encoder.layer) == 2


def test_frozen_fast_path_matches_the_full_loop(tiny_bert, monkeypatch):
    cfg = config(tiny_bert, freeze=2, frozen_epochs=3.0, token="mean", max_train_samples=64)
    fast = finetune(cfg, progress=False)
    monkeypatch.setitem(ft.SHORTCUTS, "frozen_features", False)
    slow = finetune(cfg, progress=False)
    assert fast.info["fast_frozen"] and not slow.info["fast_frozen"]
    assert fast.info["steps"] == slow.info["steps"] == 12      # frozen_epochs, not epochs
    np.testing.assert_allclose(fast.history.to_numpy(float), slow.history.to_numpy(float),
                               rtol=1e-3, atol=1e-4)
    np.testing.assert_array_equal(fast.predictions("test"), slow.predictions("test"))
    assert fast.metrics == slow.metrics
    enc_fast, enc_pre = encoder_state(fast.model.encoder), encoder_state(load_backbone(tiny_bert))
    assert all(torch.equal(enc_fast[k], enc_pre[k]) for k in enc_pre)


def test_head_on_rescaled_features_learns_the_same(tiny_bert, tmp_path):
    # the last layer's output squeezed to 9 + 1e-3 * (its values): standardised, the head sees
    # the same inputs and learns the same predictions
    squeezed = load_backbone(tiny_bert)
    norm = squeezed.encoder.layer[-1].output.LayerNorm
    with torch.no_grad():
        norm.bias.mul_(1e-3).add_(9.0)
        norm.weight.mul_(1e-3)
    squeezed.save_pretrained(tmp_path)
    from transformers import AutoTokenizer
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(tmp_path)
    runs = [finetune(config(m, freeze=2, frozen_epochs=20.0, token="mean"), progress=False)
            for m in (tiny_bert, str(tmp_path))]
    agree = np.mean(runs[0].predictions("test") == runs[1].predictions("test"))
    assert agree >= 0.95 and abs(runs[0].score() - runs[1].score()) <= 0.05


# ---------------------------------------------------------------------------- predictions
def test_predictions_are_stored_and_read_back(tiny_bert, store):
    cfg = config(tiny_bert, max_train_samples=32, max_eval_samples=30)
    first = finetune(cfg, store=store, progress=False)
    assert (first.path / "pred_test.npy").exists() and (first.path / "label_validation.npy").exists()
    second = finetune(cfg, store=store, progress=False)
    assert second.cached
    for split in ("validation", "test"):
        p, y = second.predictions(split), second.labels(split)
        assert p.shape == y.shape == (30,)
        np.testing.assert_array_equal(p, first.predictions(split))
        expected = ft.prepare_splits(CLS_TASK, max_eval_samples=30)[split]["label"]
        np.testing.assert_array_equal(y, expected)
        assert ft.compute_metrics(ft.get_task(CLS_TASK), p, y) == second.metrics[split]
    texts = ft.prepare_splits(CLS_TASK, max_eval_samples=30)["test"]["text"]
    np.testing.assert_array_equal(first.model.predict(texts), first.predictions("test"))
    with pytest.raises(ConfigError, match="'split'"):
        second.predictions("train")


def test_engine_version_is_part_of_the_store_key(tiny_bert, store, monkeypatch):
    cfg = config(tiny_bert, max_train_samples=16)
    first = finetune(cfg, store=store, progress=False)
    monkeypatch.setattr(ft, "ENGINE_VERSION", ft.ENGINE_VERSION + 1)
    assert finetune(cfg, store=store, progress=False).path != first.path


# ---------------------------------------------------------------------------- real model
@pytest.mark.slow
def test_end_to_end_on_the_embedded_model_beats_chance():
    # 320 training sentences, 3 epochs (60 updates), the final state kept. Measured with engine 2:
    # 0.62 validation / 0.64 test accuracy; the majority-class guess scores 0.555 on these test
    # examples and the standard error of an accuracy on 200 examples is about 0.035, so
    # "chance + 0.05" fails for a model that learned nothing.
    from bertdims.analysis.dims import chance_score
    run = finetune(FinetuneConfig(task="rotten_tomatoes", max_train_samples=320, max_eval_samples=200,
                                  max_seq_len=48, epochs=3.0, lr=1e-4, device="cpu", seed=0),
                   progress=False)
    chance = chance_score("rotten_tomatoes", max_train_samples=320, max_eval_samples=200)
    assert run.metrics["test"]["accuracy"] > chance + 0.05
    assert run.metrics["validation"]["accuracy"] > chance
    assert run.history["train_loss"].iloc[-1] < run.history["train_loss"].iloc[0]
