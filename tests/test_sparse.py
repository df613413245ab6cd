import numpy as np
import pandas as pd
import pytest
import torch
from datasets import Dataset, DatasetDict

from chart_specs import channel, views
from finetune_tasks import Killed, stop_at
from bertdims import ConfigError
from bertdims.book import study_charts, study_findings
from bertdims.train.heads import load_backbone
from bertdims.train.sparse import (MATRICES, RECIPE, MaskedLinear, SparseConfig, StoredMask, apply_mask,
                             extract_mask, fixed_masks, load_mask, load_sparse_task,
                             magnitude_mask, masked_modules, save_mask, sparse_finetune, sparsify,
                             storage_sizes, train_sparse)

TEXTS = ["a fine film", "dull and long", "great acting", "a bad plot", "lovely", "boring",
         "wonderful story", "awful", "moving and funny", "tedious mess", "brilliant", "weak"]


@pytest.fixture(scope="module")
def data():
    labels = [1, 0] * (len(TEXTS) // 2)
    split = Dataset.from_dict({"text": TEXTS, "label": labels})
    return DatasetDict({"train": split, "validation": split.select(range(6)), "test": split.select(range(6, 12))})


@pytest.fixture(scope="module")
def trained(tiny_bert, data):
    cfg = SparseConfig(model=tiny_bert, sparsity=0.3, epochs=2.0, batch_size=4, max_seq_len=16,
                       score_lr=0.05, device="cpu")
    res = train_sparse(cfg, data=data)
    return cfg, res.model, res.metrics, res.steps


def _batch(clf):
    enc = clf.tokenizer(TEXTS[:5], padding=True, return_tensors="pt")
    return {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}


@pytest.mark.parametrize("value", [1.0, -0.1, 1.5, "0.1", None])
def test_sparsity_outside_range_is_an_error(value):
    with pytest.raises(ConfigError, match="'sparsity'"):
        SparseConfig(sparsity=value)


def test_zero_sparsity_is_allowed():
    assert SparseConfig(sparsity=0.0).sparsity == 0.0


def test_unknown_names_are_errors(tiny_bert):
    with pytest.raises(ConfigError, match="choose from: query, key, value"):
        SparseConfig(weights=["querry"])
    with pytest.raises(ConfigError, match="'layers'"):
        SparseConfig(layers=[0])
    with pytest.raises(ConfigError, match=r"1\.\.2"):
        SparseConfig(layers=[3]).validate(2)
    encoder = load_backbone(tiny_bert)
    with pytest.raises(ConfigError, match=r"1\.\.2"):
        sparsify(encoder, 0.1, layers=[5])
    with pytest.raises(ConfigError, match="'task'"):
        SparseConfig(task="nope")


def test_masked_linear_has_exact_sparsity_and_straight_through_gradient():
    torch.manual_seed(0)
    lin = torch.nn.Linear(10, 7)
    m = MaskedLinear(lin, 0.4)
    mask = m.mask()
    assert int((mask == 0).sum()) == round(0.4 * 70)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    # the first mask is magnitude pruning: kept weights are the largest |W|
    assert lin.weight.abs()[mask == 1].min() >= lin.weight.abs()[mask == 0].max()
    x = torch.randn(3, 10)
    torch.testing.assert_close(m(x), torch.nn.functional.linear(x, lin.weight * mask, lin.bias))
    out = m(x)
    out.sum().backward()
    assert m.weight.grad is None and m.scores.grad is not None
    grad_w = torch.ones(3, 7).T @ x                     # d sum / d (W*M), shape (7, 10)
    torch.testing.assert_close(m.scores.grad, grad_w * lin.weight.detach())


def test_sparsify_replaces_chosen_matrices_only(tiny_bert):
    encoder = load_backbone(tiny_bert)
    mods = sparsify(encoder, 0.2, layers=[2], weights=["query", "intermediate"])
    assert sorted(mods) == ["encoder.layer.1.attention.self.query", "encoder.layer.1.intermediate.dense"]
    trainable = [n for n, p in encoder.named_parameters() if p.requires_grad]
    assert sorted(trainable) == sorted(f"{k}.scores" for k in mods)
    assert len(masked_modules(encoder)) == 2


def test_training_changes_the_mask_not_the_weights(tiny_bert, trained):
    cfg, clf, metrics, history = trained
    pretrained = load_backbone(tiny_bert)
    params = dict(pretrained.named_parameters())
    for name, p in clf.encoder.named_parameters():
        if not name.endswith("scores"):
            assert torch.equal(p, params[name]), name
    masks = extract_mask(clf)
    assert len(masks) == 2 * len(MATRICES)
    flipped = 0
    for name, mask in masks.items():
        w = params[name].detach().abs()
        magnitude_mask = w >= w.flatten().kthvalue(round(0.3 * w.numel())).values
        flipped += int((mask != magnitude_mask).sum())
        assert int((~mask).sum()) == round(0.3 * mask.numel())
    assert flipped > 0                       # the scores learned something
    assert set(metrics) == {"validation", "test"} and "accuracy" in metrics["test"]
    assert len(history) == 6                 # 2 epochs x 3 batches of 4


def test_mask_round_trip_reproduces_outputs_exactly(tiny_bert, trained, tmp_path):
    cfg, clf, _, _ = trained
    from bertdims.modeling.models import model_fingerprint
    pretrained = load_backbone(tiny_bert)
    masks = extract_mask(clf)
    save_mask(masks, tmp_path / "task", head_state=clf.head.state_dict(), config=cfg.to_dict(),
              fingerprint=model_fingerprint(pretrained))
    stored = load_mask(tmp_path / "task")
    assert stored.masks.keys() == masks.keys()
    assert all(torch.equal(stored.masks[k], masks[k]) for k in masks)
    assert stored.sparsity == pytest.approx(0.3, abs=1e-3)

    batch = _batch(clf)
    plain = apply_mask(pretrained, stored).eval()
    clf.eval()
    with torch.no_grad():
        expected = clf.encoder(**batch).last_hidden_state
        got = plain(**batch).last_hidden_state
        assert torch.equal(expected, got)
        reloaded = load_sparse_task(tmp_path / "task", pretrained=pretrained)
        assert torch.equal(clf(**batch), reloaded(**batch))
        assert not torch.equal(pretrained(**batch).last_hidden_state, got)
    assert not any(isinstance(m, MaskedLinear) for m in plain.modules())


def test_apply_mask_rejects_wrong_masks(tiny_bert, tmp_path):
    from bertdims.modeling.testing import make_tiny_bert
    pretrained = load_backbone(tiny_bert)
    with pytest.raises(ConfigError, match="'mask'"):
        apply_mask(pretrained, {"encoder.layer.7.output.dense.weight": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(ConfigError, match="do not fit"):
        apply_mask(pretrained, {"encoder.layer.0.output.dense.weight": torch.ones(2, 2, dtype=torch.bool)})
    other = load_backbone(str(make_tiny_bert(tmp_path / "other", seed=5)))
    name = "encoder.layer.0.output.dense.weight"
    stored = StoredMask({name: torch.ones(32, 64, dtype=torch.bool)}, fingerprint="0123456789abcdef")
    with pytest.raises(ConfigError, match="fingerprint"):
        apply_mask(other, stored)
    assert torch.equal(dict(apply_mask(other, stored, check_fingerprint=False).named_parameters())[name],
                       dict(other.named_parameters())[name])


def test_packed_mask_is_a_32nd_of_fp32(trained, tmp_path):
    _, clf, _, _ = trained
    saved = save_mask(extract_mask(clf), tmp_path / "t", head_state=clf.head.state_dict())
    sizes = storage_sizes(clf, saved)
    n = sizes["masked_weights"]
    assert n == 2 * (4 * 32 * 32 + 2 * 32 * 64)
    assert saved["mask_bytes"] == sum(int(np.ceil(m.weight.numel() / 8)) for m in masked_modules(clf).values())
    assert sizes["mask_over_weights"] == pytest.approx(1 / 32, rel=0.01)
    assert sizes["task_over_checkpoint"] < 0.05


def test_sparse_finetune_is_stored_and_read_back(tiny_bert, store):
    cfg = SparseConfig(model=tiny_bert, sparsity=0.5, layers=[2], weights=["value"], epochs=1.0,
                       batch_size=8, max_train_samples=16, max_eval_samples=8, max_seq_len=16,
                       device="cpu")
    run = sparse_finetune(cfg, store)
    again = sparse_finetune(cfg, store)
    assert again.path == run.path
    res = run.json()
    assert res["sparsity"] == pytest.approx(0.5)
    assert set(res["metrics"]) == {"validation", "test"}
    stored = load_mask(run.path)
    assert list(stored.masks) == ["encoder.layer.1.attention.self.value.weight"]
    clf = load_sparse_task(run.path)
    assert clf.predict(["a good film", "bad"]).shape == (2,)


def test_cli_rejects_bad_sparsity(capsys):
    from bertdims.cli import main
    assert main(["sparse", "--sparsity", "1.0"]) == 2
    assert "'sparsity' = 1.0" in capsys.readouterr().err


# ------------------------------------------------------------------------------ the recipe
def test_recipe_defaults_are_the_engines():
    from bertdims.train.finetuning import FinetuneConfig
    sparse, full = SparseConfig(), FinetuneConfig()
    differ = {f: (getattr(sparse, f), getattr(full, f)) for f in RECIPE
              if getattr(sparse, f) != getattr(full, f)}
    assert not differ                         # e.g. batch 32 against the reference's 16


def test_reference_carries_the_recipe_both_ways():
    cfg = SparseConfig(sparsity=0.2, batch_size=8, epochs=2.0, head_lr=5e-4, warmup=0.2,
                       early_stopping_fraction=0.1, max_train_samples=900, max_seq_len=32, seed=3)
    ref = cfg.reference()
    assert all(getattr(ref, f) == getattr(cfg, f) for f in RECIPE)
    assert ref.freeze == 0 and ref.train_layers is None and ref.dims is None
    back = SparseConfig.from_reference(ref, sparsity=0.2)
    assert back == cfg
    with pytest.raises(ConfigError, match="'batch_size'"):
        SparseConfig(batch_size=0)           # the recipe is checked by the engine's config
    with pytest.raises(ConfigError, match="'mask'"):
        SparseConfig(mask="lottery")


def test_learned_masks_train_with_the_references_steps_and_checkpoint_rule(tiny_bert, store):
    from bertdims.train.finetuning import finetune
    cfg = SparseConfig(model=tiny_bert, sparsity=0.3, batch_size=4, epochs=2.0, max_train_samples=18,
                       max_eval_samples=8, max_seq_len=16, device="cpu")
    sparse = sparse_finetune(cfg, store)
    full = finetune(cfg.reference(), store=store, progress=False)
    info = sparse.json()["info"]
    for key in ("total_steps", "steps_per_epoch", "checkpoint_rule", "n_train", "steps"):
        assert info[key] == full.info[key], key
    assert info["total_steps"] == 10                      # ceil(18 / 4) = 5 batches, 2 epochs
    assert list(sparse.table("history")["step"]) == list(full.history["step"])
    assert len(sparse.table("steps")) == info["total_steps"]
    for split in ("validation", "test"):                  # the same examples, in the same order
        np.testing.assert_array_equal(sparse.array(f"label_{split}"), full.labels(split))
        assert sparse.array(f"pred_{split}").shape == full.predictions(split).shape


def test_a_killed_learned_mask_resumes_to_the_uninterrupted_result(tiny_bert, tmp_path, monkeypatch):
    """Stopped after step 7 of 10 (its last checkpoint: the evaluation of step 6), the run
    started again resumes there and ends where an uninterrupted run ends: the same mask, head,
    metrics, history and per-step losses."""
    from bertdims.train import sparse
    from bertdims.core.store import ResultStore
    cfg = SparseConfig(model=tiny_bert, sparsity=0.3, batch_size=4, epochs=2.0, max_train_samples=18,
                       max_eval_samples=8, max_seq_len=16, device="cpu", eval_every=3)
    whole = sparse_finetune(cfg, ResultStore(tmp_path / "whole"))

    store = ResultStore(tmp_path / "killed")
    monkeypatch.setattr(sparse, "_after_step", stop_at(7))
    with pytest.raises(Killed):
        sparse_finetune(cfg, store)
    key = whole.path.name
    ckpt = store.root / "sparse_finetune" / ".checkpoints" / key
    assert store.get("sparse_finetune", key) is None
    assert torch.load(ckpt / "trainer.pt", weights_only=False)["state"]["step"] == 6
    resumed_from = []
    monkeypatch.setattr(sparse, "_after_step", resumed_from.append)
    again = sparse_finetune(cfg, store)
    assert resumed_from[0] == 7                 # steps 1-6 came from the checkpoint of step 6
    assert not ckpt.exists()                    # the finished run leaves no checkpoint behind
    assert again.json()["metrics"] == whole.json()["metrics"]
    for table in ("history", "steps"):
        a, b = again.table(table).drop(columns=["seconds"], errors="ignore"), whole.table(table)
        pd.testing.assert_frame_equal(a, b.drop(columns=["seconds"], errors="ignore"))
    mask_a, mask_b = load_mask(again.path), load_mask(whole.path)
    for name, m in mask_b.masks.items():
        torch.testing.assert_close(mask_a.masks[name], m)
    for name, v in mask_b.head_state.items():
        torch.testing.assert_close(mask_a.head_state[name], v)
    np.testing.assert_array_equal(again.array("pred_test"), whole.array("pred_test"))


# ------------------------------------------------------------------------------ the controls
def test_sparsity_zero_is_the_frozen_encoder_with_a_trained_head(tiny_bert, store):
    from bertdims.train.finetuning import finetune
    cfg = SparseConfig(model=tiny_bert, sparsity=0.0, max_train_samples=16, max_eval_samples=8,
                       max_seq_len=16, frozen_epochs=5.0, device="cpu")
    sparse = sparse_finetune(cfg, store)
    frozen = finetune(cfg.reference(freeze=2), store=store, progress=False)
    assert frozen.info["fast_frozen"]
    for split in ("validation", "test"):
        np.testing.assert_array_equal(sparse.array(f"pred_{split}"), frozen.predictions(split))
    assert sparse.json()["metrics"] == frozen.metrics
    assert sparse.json()["info"]["total_steps"] == frozen.info["total_steps"]
    assert sparse.json()["sparsity"] == 0.0
    clf = load_sparse_task(sparse.path)
    pretrained = dict(load_backbone(tiny_bert).named_parameters())
    assert all(torch.equal(p, pretrained[n]) for n, p in clf.encoder.named_parameters())


@pytest.mark.parametrize("mask", ["magnitude", "random"])
def test_fixed_masks_keep_exactly_one_minus_sparsity_and_do_not_train(tiny_bert, data, mask):
    cfg = SparseConfig(model=tiny_bert, sparsity=0.3, mask=mask, batch_size=4, frozen_epochs=3.0,
                       max_seq_len=16, device="cpu", seed=1)
    pretrained = load_backbone(tiny_bert)
    masks = fixed_masks(pretrained, cfg)
    assert len(masks) == 2 * len(MATRICES)
    for m in masks.values():
        assert int((~m).sum()) == round(0.3 * m.numel())
    res = train_sparse(cfg, data=data)
    assert not any(p.requires_grad for p in res.model.encoder.parameters())
    expected = dict(apply_mask(pretrained, masks).named_parameters())
    for name, p in res.model.encoder.named_parameters():  # the masked weights after training
        assert torch.equal(p.cpu(), expected[name]), name
    assert res.info["total_steps"] == 9 and not res.info["trains_mask"]   # 3 batches, 3 passes


def test_random_and_magnitude_masks_differ_and_are_seeded(tiny_bert):
    enc = load_backbone(tiny_bert)
    state = torch.get_rng_state()
    rand0 = fixed_masks(enc, SparseConfig(model=tiny_bert, sparsity=0.5, mask="random", seed=0))
    assert torch.equal(torch.get_rng_state(), state)     # dropout and the head are left alone
    rand0b = fixed_masks(enc, SparseConfig(model=tiny_bert, sparsity=0.5, mask="random", seed=0))
    rand1 = fixed_masks(enc, SparseConfig(model=tiny_bert, sparsity=0.5, mask="random", seed=1))
    mag = fixed_masks(enc, SparseConfig(model=tiny_bert, sparsity=0.5, mask="magnitude", seed=1))
    name = next(iter(mag))
    assert all(torch.equal(rand0[k], rand0b[k]) for k in rand0)
    assert not torch.equal(rand0[name], rand1[name]) and not torch.equal(rand0[name], mag[name])
    w = dict(enc.named_parameters())[name].detach().abs()
    assert w[mag[name]].min() >= w[~mag[name]].max()     # magnitude: the largest |W| are kept
    torch.testing.assert_close(magnitude_mask(w, 0.5), mag[name])


def test_study_effects_and_charts(monkeypatch):
    import pandas as pd
    from bertdims.train import sparse as sp
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)

    def preds(acc):
        return np.stack([np.where(rng.random(400) < acc, y, 1 - y) for _ in range(3)])

    p = {(sp.FULL, 0.0): preds(0.85), (sp.FROZEN, 0.0): preds(0.70),
         ("learned mask", 0.1): preds(0.85), ("learned mask", 0.4): preds(0.80),
         ("magnitude mask", 0.1): preds(0.70), ("random mask", 0.1): preds(0.55)}
    scores = pd.DataFrame([{"setting": k[0], "sparsity": k[1], "seed": s, "split": "test",
                            "accuracy": float((v[s] == y).mean()), "seconds": 1.0}
                           for k, v in p.items() for s in range(3)])
    hist = pd.DataFrame([{"setting": k[0], "sparsity": k[1], "seed": s, "step": 1, "epoch": 0.5,
                          "train_loss": 0.6, "dev_loss": 0.5} for k in p for s in range(3)])
    study = sp.SparseStudy(scores=scores, histories=hist, predictions=p, labels=y,
                           metric="accuracy", seeds=[0, 1, 2])
    eff = sp.sparse_effects(study, sparsity=0.1, margin=0.05, n_boot=500)
    assert list(eff) == ["match", "vs magnitude", "vs random", "vs pretrained", "sparsity 0.4"]
    assert eff["vs random"].verdict == "reproduced" and eff["vs random"].claim == "better"
    assert eff["match"].claim == "equivalent" and eff["match"].n_seeds == 3
    assert eff["match"].verdict != "not reproduced"
    with pytest.raises(ConfigError, match="'sparsity'"):
        sp.sparse_effects(study, sparsity=0.2, margin=0.05)
    assert "vs random" in study_findings.sparse_findings(eff)
    drawn = views(study_charts.sparsity_chart(scores, "accuracy").to_dict())
    assert [v["mark"] for v in drawn] == ["line", "errorbar", "point", "rule"]
    line, bars, points, rule = drawn
    assert channel(line, "x")[0] == "sparsity" and channel(line, "y") == ("accuracy", "mean", "quantitative")

    def shown(view):
        return sorted({(r["setting"], r["sparsity"]) for r in view["rows"]})
    # the learned masks' line starts at the frozen encoder (sparsity 0); the fixed masks and the
    # frozen encoder are points; error bars for all but full fine-tuning, a rule at its mean
    assert shown(line) == [("learned mask", 0.0), ("learned mask", 0.1), ("learned mask", 0.4)]
    assert shown(points) == sorted([(sp.FROZEN, 0.0), ("magnitude mask", 0.1), ("random mask", 0.1)])
    assert shown(bars) == sorted(k for k in p if k[0] != sp.FULL)
    assert shown(rule) == [(sp.FULL, 0.0)] and "x" not in rule["encoding"]
    assert channel(rule, "y") == ("accuracy", "mean", "quantitative")
    assert sorted(r["accuracy"] for r in rule["rows"]) == sorted(scores.accuracy[scores.setting == sp.FULL])
    spec = study_charts.history_chart(hist).to_dict()
    assert spec["facet"]["field"] == "setting"
    [lines] = views(spec)
    assert lines["mark"] == "line" and channel(lines, "detail")[0] == "run"
    assert channel(lines, "x")[0] == "epoch" and channel(lines, "color")[0] == "loss"
    points = sorted((r["setting"], r["run"], r["epoch"], r["loss"], r["value"]) for r in lines["rows"])
    assert points == sorted((h.setting, f"seed {h.seed}, sparsity {h.sparsity:g}", h.epoch, loss, value)
                            for h in hist.itertuples()
                            for loss, value in (("training", h.train_loss), ("validation", h.dev_loss)))


def test_evaluation_mask_follows_the_scores():
    torch.manual_seed(0)
    m = MaskedLinear(torch.nn.Linear(8, 6), 0.5)
    with torch.no_grad():
        first = m.mask()
        assert m.mask() is first                       # reused while the scores stay the same
        m.scores.mul_(-1)                              # an in-place update (as optimizer.step)
        flipped = m.mask()
    assert not torch.equal(first, flipped) and int(flipped.sum()) == 24
    torch.testing.assert_close(flipped, m.mask().detach())   # the training path agrees
