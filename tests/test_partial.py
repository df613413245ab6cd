"""Partial training, one key per experiment and lean storage (bertdims.train.finetuning)."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from finetune_tasks import TEST_TASKS, Killed, registered_test_tasks, stop_at  # noqa: E402

from bertdims import ConfigError  # noqa: E402
from bertdims.train.finetuning import FinetuneConfig, finetune, stored_key  # noqa: E402

ft = importlib.import_module("bertdims.train.finetuning")
CLS_TASK, REG_TASK = TEST_TASKS


@pytest.fixture(autouse=True, scope="module")
def test_tasks_registered():
    """The two small tasks, registered for this module and removed from the registry after it."""
    with registered_test_tasks():
        yield


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def bert4(tmp_path_factory):
    """A tiny random BERT with 4 blocks, so that a frozen bottom has blocks to cache."""
    from bertdims.modeling.testing import make_tiny_bert
    return str(make_tiny_bert(tmp_path_factory.mktemp("bert4"), num_layers=4))


def config(model, **kw) -> FinetuneConfig:
    base = dict(model=model, task=CLS_TASK, max_seq_len=32, epochs=1.0, device="cpu",
                batch_size=16, micro_batch_size=8, max_train_samples=64)
    base.update(kw)
    return FinetuneConfig(**base)


# ------------------------------------------------------------------ one key per experiment
@pytest.mark.parametrize("a, b", [
    (dict(freeze=2), dict(train_layers=[3, 4])),
    (dict(freeze=2, freeze_embeddings=True), dict(train_layers=[4, 3])),
    (dict(layer=-1), dict(layer=4)),
    (dict(layer=2, train_layers=[1, 2]), dict(layer=2, freeze_embeddings=True)),
    (dict(freeze=4, epochs=1.0), dict(freeze=4, epochs=3.0)),          # frozen: epochs unused
])
def test_settings_that_mean_the_same_training_share_one_key(bert4, store, a, b):
    assert stored_key(config(bert4, **a), store) == stored_key(config(bert4, **b), store)


@pytest.mark.parametrize("a, b", [
    (dict(freeze=2), dict(freeze=3)),
    (dict(freeze=0), dict(freeze_embeddings=True)),
    (dict(train_layers=[4]), dict(train_layers=[3, 4])),
    (dict(freeze=1, epochs=1.0), dict(freeze=1, epochs=2.0)),
    (dict(freeze=4, frozen_epochs=5.0), dict(freeze=4, frozen_epochs=6.0)),
])
def test_settings_that_train_differently_get_different_keys(bert4, store, a, b):
    assert stored_key(config(bert4, **a), store) != stored_key(config(bert4, **b), store)


@pytest.mark.parametrize("first, second", [(dict(freeze=3), dict(train_layers=[4])),
                                           (dict(train_layers=[4]), dict(freeze=3))])
def test_freeze_and_train_layers_store_one_run_asked_either_way(bert4, store, first, second):
    one = finetune(config(bert4, **first), store=store, progress=False)
    two = finetune(config(bert4, **second), store=store, progress=False)
    assert not one.cached and two.cached
    assert len(store.runs("finetune")) == 1
    assert one.path == two.path and two.config.to_dict() == config(bert4, **second).to_dict()


# ------------------------------------------------------------------ partial training
def test_frozen_bottom_stays_in_eval_mode(bert4):
    from transformers import AutoTokenizer
    from bertdims.train.heads import SelectiveClassifier, load_backbone
    cfg = config(bert4, freeze=2)
    model = SelectiveClassifier(load_backbone(bert4), AutoTokenizer.from_pretrained(bert4), cfg,
                                ft.get_task(cfg.task))
    ft._set_train_mode(model, model, {3, 4})
    blocks = model.encoder.encoder.layer
    assert not model.encoder.embeddings.training
    assert [b.training for b in blocks] == [False, False, True, True]
    assert model.head.training
    ft._set_train_mode(model, model, {0, 1, 2, 3, 4})
    assert model.encoder.embeddings.training and all(b.training for b in blocks)


@pytest.mark.parametrize("kw", [dict(freeze=2), dict(train_layers=[4], token="mean"),
                                dict(freeze=1, layer=3, dims=[1, 5, 7])])
def test_training_from_the_cached_bottom_equals_running_it_every_step(bert4, kw, monkeypatch):
    cfg = config(bert4, **kw)
    cached = finetune(cfg, progress=False)
    monkeypatch.setitem(ft.SHORTCUTS, "bottom_cache", False)
    full = finetune(cfg, progress=False)
    assert cached.info["bottom_cached"] and not full.info["bottom_cached"]
    np.testing.assert_allclose(cached.history.to_numpy(float), full.history.to_numpy(float),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(cached.predictions("test"), full.predictions("test"))
    a, b = cached.model.state_dict(), full.model.state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5)


def test_bottom_is_not_cached_when_the_embeddings_train(bert4):
    run = finetune(config(bert4, freeze=0), progress=False)
    assert run.info["bottom_cached"] is False


def test_run_blocks_gives_the_upper_layers_of_the_full_encoder(bert4):
    from transformers import AutoTokenizer
    from bertdims.train.heads import load_backbone, run_blocks
    enc, tok = load_backbone(bert4).eval(), AutoTokenizer.from_pretrained(bert4)
    batch = tok(["a short one", "a much longer sentence with many more words in it"],
                padding=True, return_tensors="pt")
    with torch.no_grad():
        states = enc(**batch, output_hidden_states=True).hidden_states
        top = run_blocks(enc, states[1], batch["attention_mask"], 2, 4)
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(top[real], states[4][real], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        run_blocks(enc, states[1], batch["attention_mask"], 3, 5)


# ------------------------------------------------------------------ lean storage
def test_lean_run_keeps_metrics_and_head_and_is_retrained_when_weights_are_wanted(bert4, store):
    cfg = config(bert4, freeze=3)
    lean = finetune(cfg, store=store, progress=False, keep_model=False)
    folder = lean.path / "model"
    assert (folder / "head.pt").exists() and not (folder / "config.json").exists()
    assert lean.info["weights_kept"] is False
    back = finetune(cfg, store=store, progress=False, keep_model=False)
    assert back.cached and back.metrics == lean.metrics
    np.testing.assert_array_equal(back.predictions("test"), lean.predictions("test"))
    with pytest.raises(ConfigError, match="keep_model"):
        back.load()
    assert finetune(cfg, store=store, progress=False).cached    # None: any stored run will do
    full = finetune(cfg, store=store, progress=False, keep_model=True)   # the weights are wanted
    assert not full.cached and (full.path / "model" / "config.json").exists()
    assert full.metrics == lean.metrics                         # the same training, again
    assert len(store.runs("finetune")) == 1
    again = finetune(cfg, store=store, progress=False, keep_model=False)
    assert again.cached and again.load() is not None


def test_keep_models_variable_keeps_every_model(bert4, store, monkeypatch):
    monkeypatch.setenv(ft.KEEP_MODELS_ENV, "1")
    run = finetune(config(bert4, freeze=3), store=store, progress=False, keep_model=False)
    assert (run.path / "model" / "config.json").exists() and run.info["weights_kept"]


# ------------------------------------------------------------------ shared frozen features
def test_frozen_runs_share_one_stored_forward_pass(bert4, store):
    runs = [finetune(config(bert4, freeze=4, frozen_epochs=2.0, **kw), store=store, progress=False)
            for kw in (dict(seed=0), dict(seed=1), dict(head="mlp", head_hidden=8),
                       dict(dims=[3, 1, 30]))]
    assert len(store.runs(ft.FEATURES_KIND)) == 1
    assert len(store.runs("finetune")) == 4
    alone = finetune(config(bert4, freeze=4, frozen_epochs=2.0, dims=[3, 1, 30]), progress=False)
    np.testing.assert_array_equal(alone.predictions("test"), runs[-1].predictions("test"))
    np.testing.assert_allclose(alone.history.to_numpy(float), runs[-1].history.to_numpy(float),
                               rtol=1e-5, atol=1e-6)
    other_layer = finetune(config(bert4, freeze=4, frozen_epochs=2.0, layer=2), store=store,
                           progress=False)
    assert not other_layer.cached and len(store.runs(ft.FEATURES_KIND)) == 2


@pytest.mark.parametrize("command", [["book", "--keep-models"], ["run", "05", "--keep-models"]])
def test_keep_models_flag_reaches_the_kernels(command, monkeypatch):
    from bertdims.book.chapters import _keep_models
    from bertdims.cli import build_parser
    monkeypatch.setenv(ft.KEEP_MODELS_ENV, "")      # recorded, so the test's setting is undone
    monkeypatch.delenv(ft.KEEP_MODELS_ENV)
    _keep_models(build_parser().parse_args(command[:-1]))
    assert ft.KEEP_MODELS_ENV not in __import__("os").environ
    _keep_models(build_parser().parse_args(command))
    assert __import__("os").environ[ft.KEEP_MODELS_ENV] == "1"


def test_a_killed_top_layers_run_resumes_to_the_same_result(bert4, tmp_path, monkeypatch):
    cfg = config(bert4, freeze=2, epochs=2.0, checkpoint_every=2, eval_every=4, lr=1e-3)
    full = finetune(cfg, out_dir=tmp_path / "full", progress=False)
    with monkeypatch.context() as m:
        m.setattr(ft, "_after_step", stop_at(5))
        with pytest.raises(Killed):
            finetune(cfg, out_dir=tmp_path / "cut", progress=False)
    resumed = finetune(cfg, out_dir=tmp_path / "cut", progress=False)
    assert full.info["bottom_cached"] and resumed.info["bottom_cached"]
    assert resumed.info["steps_this_call"] == full.info["steps"] - 4
    assert resumed.metrics == full.metrics
    np.testing.assert_allclose(resumed.history.to_numpy(float), full.history.to_numpy(float), atol=1e-6)
