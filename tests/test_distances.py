import math

import numpy as np
import pandas as pd
import pytest
import torch

from bertdims import ConfigError, load_encoder
from bertdims.distances import (aggregate_distances, angular_distance, distance_chart, kind_chart,
                                layer_distances, parameter_kind, parameter_layer, random_init_like,
                                weight_distances, LayerStudyConfig, DistanceConfig)
from bertdims.testing import make_tiny_bert


@pytest.fixture(scope="module")
def pair(tiny_bert):
    a = load_encoder(tiny_bert).model
    b = random_init_like(a, seed=1)
    return a, b


def test_distance_to_itself_is_zero(pair):
    a, _ = pair
    df = weight_distances(a, a)
    assert len(df) == len(list(a.parameters()))
    assert (df["l1"] == 0).all() and (df["l2"] == 0).all()
    assert (df["angular"] == 0).all()
    agg = layer_distances(df)
    assert (agg[["l1", "l2", "angular"]] == 0).all().all()


def test_distances_are_symmetric(pair):
    a, b = pair
    ab, ba = weight_distances(a, b), weight_distances(b, a)
    for col in ("l1", "l2", "angular", "dot"):
        np.testing.assert_allclose(ab[col], ba[col], rtol=1e-12, atol=0, equal_nan=True)
    assert (ab["l1"] > 0).any()
    np.testing.assert_allclose(layer_distances(ab)[["l1", "l2", "angular"]],
                               layer_distances(ba)[["l1", "l2", "angular"]], rtol=1e-12)


def test_values_match_definitions():
    a = {"encoder.layer.0.attention.self.query.weight": torch.tensor([[1.0, 0.0], [0.0, 0.0]])}
    b = {"encoder.layer.0.attention.self.query.weight": torch.tensor([[0.0, 1.0], [0.0, 0.0]])}
    row = weight_distances(a, b).iloc[0]
    assert row["l1"] == pytest.approx(0.5)             # (1 + 1) / 4
    assert row["l2"] == pytest.approx(math.sqrt(2))
    assert row["angular"] == pytest.approx(0.5)         # orthogonal
    assert angular_distance(torch.tensor([1.0, 2.0]), torch.tensor([-1.0, -2.0])) == pytest.approx(1.0)
    assert row["layer"] == 1 and row["kind"] == "attention"


def test_scaled_weights_have_zero_angle(pair):
    a, _ = pair
    doubled = {n: 2 * p.detach() for n, p in a.named_parameters()}
    df = weight_distances(a, doubled)
    nonzero = df["norm_a"] > 0
    assert (df.loc[nonzero, "angular"] == 0).all()
    assert (df.loc[nonzero, "l1"] > 0).all()
    assert layer_distances(df)["angular"].max() < 1e-7     # from sums: rounding only


def test_zero_tensor_has_no_angle():
    assert math.isnan(angular_distance(torch.zeros(3), torch.ones(3)))


def test_aggregation_equals_concatenation(pair):
    a, b = pair
    df = weight_distances(a, b)
    agg = layer_distances(df).set_index("layer")
    names = [n for n in df["name"] if parameter_layer(n) == 1]
    va = torch.cat([dict(a.named_parameters())[n].detach().flatten() for n in names])
    vb = torch.cat([dict(b.named_parameters())[n].detach().flatten() for n in names])
    assert agg.loc[1, "l1"] == pytest.approx(float((va - vb).abs().mean()), rel=1e-6)
    assert agg.loc[1, "l2"] == pytest.approx(float((va - vb).norm()), rel=1e-6)
    assert agg.loc[1, "angular"] == pytest.approx(angular_distance(va, vb), rel=1e-6)
    assert agg.loc[1, "n_params"] == va.numel()
    by_kind = aggregate_distances(df, "kind")
    assert set(by_kind["kind"]) == {"embeddings", "attention", "feed-forward", "layer-norm"}
    assert by_kind["n_params"].sum() == df["n_params"].sum()


def test_layers_and_kinds():
    assert parameter_layer("embeddings.word_embeddings.weight") == 0
    assert parameter_layer("encoder.layer.11.output.dense.weight") == 12
    assert parameter_layer("pooler.dense.weight") is None
    assert parameter_kind("encoder.layer.0.attention.output.LayerNorm.weight") == "layer-norm"
    assert parameter_kind("encoder.layer.0.attention.self.key.bias") == "attention"
    assert parameter_kind("encoder.layer.0.intermediate.dense.weight") == "feed-forward"
    assert parameter_kind("encoder.layer.0.output.dense.weight") == "feed-forward"
    assert parameter_kind("embeddings.position_embeddings.weight") == "embeddings"
    assert parameter_kind("pooler.dense.weight") == "other"
    assert parameter_kind("transformer.layer.0.ffn.lin1.weight") == "feed-forward"
    assert parameter_kind("transformer.layer.0.sa_layer_norm.weight") == "layer-norm"


def test_random_init_is_far_and_seeded(pair):
    a, b = pair
    again = random_init_like(a, seed=1)
    assert all(torch.equal(p, q) for p, q in zip(b.parameters(), again.parameters()))
    other = random_init_like(a, seed=2)
    assert not torch.equal(next(b.parameters()), next(other.parameters()))


def test_different_architectures_error(pair, tmp_path):
    a, _ = pair
    wider = load_encoder(str(make_tiny_bert(tmp_path / "wide", hidden_size=64))).model
    with pytest.raises(ConfigError, match="shapes differ"):
        weight_distances(a, wider)
    deeper = load_encoder(str(make_tiny_bert(tmp_path / "deep", num_layers=3))).model
    with pytest.raises(ConfigError, match=r"only in model_b: \['encoder.layer.2"):
        weight_distances(a, deeper)


def test_unknown_names_and_columns(pair):
    a, b = pair
    with pytest.raises(ConfigError, match="'names'"):
        weight_distances(a, b, names=["encoder.layer.9.nothing.weight"])
    df = weight_distances(a, b, names=["embeddings.word_embeddings.weight"])
    assert len(df) == 1
    with pytest.raises(ConfigError, match="'by'"):
        aggregate_distances(df, "nope")
    with pytest.raises(ConfigError, match="'metric'"):
        distance_chart(layer_distances(df), metric="l3")


def test_charts_build(pair):
    a, b = pair
    df = pd.concat([weight_distances(a, b).assign(comparison="x"),
                    weight_distances(b, a).assign(comparison="y")])
    assert distance_chart(layer_distances(df, by="comparison")).to_dict()["mark"]["type"] == "line"
    assert kind_chart(aggregate_distances(df, ["comparison", "kind"])).to_dict()


def test_study_configs_validate():
    with pytest.raises(ConfigError, match="'seeds'"):
        DistanceConfig(seeds=[])
    with pytest.raises(ConfigError, match="'task'"):
        DistanceConfig(task="no-such-task")
    with pytest.raises(ConfigError, match="'single_layers'"):
        LayerStudyConfig(single_layers=[0])
    cfg = LayerStudyConfig(top_n=[1, 7])
    with pytest.raises(ConfigError, match="1..6"):
        cfg.validate(6)
    runs = LayerStudyConfig(single_layers=[2], top_n=[2]).runs(6)
    assert ("single layer", 2, [2]) in runs and ("top n layers", 2, [5, 6]) in runs


def test_findings_follow_the_numbers(pair):
    a, b = pair
    from bertdims.distances import _tag, distance_findings
    near = {n: p.detach() + 1e-4 * torch.randn_like(p) for n, p in a.named_parameters()}
    near2 = {n: p.detach() + 1e-4 * torch.randn_like(p) for n, p in a.named_parameters()}
    other = random_init_like(a, seed=3)
    df = pd.concat([_tag(weight_distances(a, near), "fine-tuned vs pretrained", 0, None),
                    _tag(weight_distances(a, other), "pretrained vs random init", 3, None),
                    _tag(weight_distances(near, near2), "seed vs seed", 0, 1)])
    text = distance_findings(df)
    assert "**agrees**" in text and "Two fine-tunings" in text
    far = pd.concat([_tag(weight_distances(a, other), "fine-tuned vs pretrained", 0, None),
                     _tag(weight_distances(a, other), "pretrained vs random init", 3, None)])
    assert "**does not hold**" in distance_findings(far)


def test_layer_findings():
    from bertdims.distances import layer_findings
    rows = [("full", 6, "all", 0.80), ("head only", 0, "", 0.70), ("single layer", 1, "1", 0.72),
            ("single layer", 6, "6", 0.78), ("top n layers", 1, "6", 0.75), ("top n layers", 3, "4,5,6", 0.795)]
    df = pd.DataFrame([{"setting": s, "n": n, "train_layers": t, "seed": 0, "accuracy": v}
                       for s, n, t, v in rows])
    text = layer_findings(df, "accuracy")
    assert "The top 3 layer(s)" in text and "layer 6 (0.780" in text
    assert "not reproduced" in layer_findings(df[df["n"] != 3], "accuracy")


@pytest.mark.slow
def test_distance_and_layer_studies_end_to_end(tiny_bert, store):
    cfg = DistanceConfig(model=tiny_bert, seeds=[0, 1], max_train_samples=16, max_eval_samples=8,
                         max_seq_len=16, random_seed=1)
    from bertdims.distances import distance_study, layer_study, comparison_summary
    run = distance_study(cfg, store)
    assert distance_study(cfg, store).path == run.path          # read back
    summary = comparison_summary(run.table("distances")).set_index("comparison")
    assert list(summary["runs"]) == [2, 1, 1]
    ft, rnd = summary.loc["fine-tuned vs pretrained"], summary.loc["pretrained vs random init"]
    assert 0 < ft["l1"] < rnd["l1"] and 0 < ft["angular"] < rnd["angular"]
    assert set(run.table("metrics")["split"]) == {"validation", "test"}
    table = layer_study(LayerStudyConfig(model=tiny_bert, single_layers=[2], top_n=[1],
                                         max_train_samples=16, max_eval_samples=8, max_seq_len=16),
                        store)
    assert list(table["setting"]) == ["full", "head only", "single layer", "top n layers"]
    assert list(table["train_layers"]) == ["all", "", "2", "2"]
    assert table["accuracy"].between(0, 1).all()
