import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict

from bertdims import ConfigError
from bertdims.heads import load_backbone
from bertdims.sparse import (MATRICES, MaskedLinear, SparseConfig, StoredMask, apply_mask,
                             extract_mask, load_mask, load_sparse_task, masked_modules, save_mask,
                             sparse_finetune, sparsify, storage_sizes, train_sparse)

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
    clf, metrics, history = train_sparse(cfg, data=data)
    return cfg, clf, metrics, history


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
    from bertdims.models import model_fingerprint
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
    from bertdims.testing import make_tiny_bert
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


def test_sparse_findings_and_summary():
    import pandas as pd
    from bertdims.sparse import sparse_findings, sparse_summary
    rows = [("sparse", 0.0, s, 0.70 + 0.01 * s) for s in range(3)]
    rows += [("sparse", 0.2, s, 0.795 + 0.01 * s) for s in range(3)]
    rows += [("full fine-tuning", 0.0, s, 0.80 + 0.01 * s) for s in range(3)]
    df = pd.DataFrame([{"setting": a, "sparsity": b, "seed": c, "split": "test", "accuracy": v}
                       for a, b, c, v in rows])
    summary = sparse_summary(df, "accuracy")
    assert list(summary["setting"]) == ["sparse", "sparse", "full fine-tuning"]
    assert summary["mean"].iloc[1] == pytest.approx(0.805)
    assert "**agrees**" in sparse_findings(df, "accuracy")
    worse = df.assign(accuracy=df["accuracy"] - 0.1 * (df["sparsity"] > 0))
    assert "not reproduced" in sparse_findings(worse, "accuracy")


def test_cli_rejects_bad_sparsity(capsys):
    from bertdims.cli import main
    assert main(["sparse", "--sparsity", "1.0"]) == 2
    assert "'sparsity' = 1.0" in capsys.readouterr().err
