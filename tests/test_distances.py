import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bertdims import ConfigError, load_encoder
from bertdims.analysis.distances import (aggregate_distances, angular_distance,
                                layer_distances, parameter_kind, parameter_layer, random_init_like,
                                weight_distances, LayerStudyConfig, DistanceConfig)
from bertdims.book.study_charts import distance_chart, kind_chart
from bertdims.modeling.testing import make_tiny_bert

sys.path.insert(0, str(Path(__file__).parent))
from chart_specs import channel, views  # noqa: E402
from result_checks import check_result


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
    agg = aggregate_distances(df, ["comparison", "kind"])
    [bars] = views(kind_chart(agg).to_dict())               # bars of the mean l1 per kind
    assert bars["mark"] == "bar" and channel(bars, "x")[0] == "kind"
    assert channel(bars, "y") == ("l1", "mean", "quantitative")
    assert channel(bars, "xOffset")[0] == channel(bars, "color")[0] == "comparison"
    assert [(r["comparison"], r["kind"], r["l1"]) for r in bars["rows"]] == \
        list(zip(agg["comparison"], agg["kind"], agg["l1"]))


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


def _study_table(a, moved: dict, rand, seeds=(0, 1, 2)):
    """A distances table: per seed, model a moved by ``moved[seed]`` (name -> tensor)."""
    from bertdims.analysis.distances import _tag
    parts = [_tag(weight_distances(a, moved[s]), "fine-tuned vs pretrained", s, None) for s in seeds]
    parts.append(_tag(weight_distances(a, rand), "pretrained vs random init", 9, None))
    return pd.concat(parts, ignore_index=True)


def _moved(a, scale_of_layer, seed):
    """a's tensors scaled by 1 + s (s = scale_of_layer(layer), layer 0 = embeddings, varied a
    little by seed and layer): each layer's relative distance is exactly that s."""
    from bertdims.analysis.distances import parameter_layer
    out = {}
    for n, p in a.named_parameters():
        layer = parameter_layer(n)
        layer = 0 if layer is None else layer
        s = scale_of_layer(layer) * (1 + 0.02 * ((seed * 7 + layer) % 3))
        out[n] = p.detach() * (1 + s)
    return out


def test_layer_lr_decay_is_off_in_the_distance_runs():
    from bertdims.train.training import layer_lrs
    for cfg in (DistanceConfig(), LayerStudyConfig()):
        ft = cfg.finetune_config(0) if isinstance(cfg, DistanceConfig) else \
            __import__("bertdims.analysis.distances", fromlist=["_finetune_config"])._finetune_config(cfg, 0)
        assert ft.layer_lr_decay == 1.0
        lrs = [v for k, v in layer_lrs(ft, 6).items() if k != "head"]
        assert max(lrs) == min(lrs)                     # every block learns at the same rate
    assert DistanceConfig(layer_lr_decay=0.95).finetune_config(0).layer_lr_decay == 0.95
    with pytest.raises(ConfigError, match="'layer_lr_decay'"):
        DistanceConfig(layer_lr_decay=1.5)


def test_relative_distance_is_l2_over_the_pretrained_norm(pair):
    a, _ = pair
    moved = {n: 1.1 * p.detach() for n, p in a.named_parameters()}
    agg = layer_distances(weight_distances(a, moved))
    np.testing.assert_allclose(agg["rel_l2"], 0.1, rtol=1e-5)   # float32 weights


def test_closeness_verdict_follows_the_distances(pair):
    from bertdims.analysis.distances import closeness_effect
    a, rand = pair
    near = _study_table(a, {s: _moved(a, lambda n: 1e-3, s) for s in range(3)}, rand)
    eff = closeness_effect(near, margin=0.5)
    assert eff.verdict == "reproduced" and eff.high < -0.9 and eff.n_seeds == 3
    far = _study_table(a, {s: {n: p.detach() + (r.detach() - p.detach()) * (1 + 0.01 * s)
                               for (n, p), r in zip(a.named_parameters(), rand.parameters())}
                           for s in range(3)}, rand)
    assert closeness_effect(far, margin=0.5).verdict == "not reproduced"


def test_layer_variation_verdict_and_lr_normalisation(pair):
    from bertdims.analysis.distances import layer_profile, layer_variation_effect
    a, rand = pair                                    # tiny BERT: layers 1 and 2
    same = _study_table(a, {s: _moved(a, lambda n: 1e-3, s) for s in range(3)}, rand)
    assert layer_variation_effect(same, margin=0.1).verdict == "not reproduced"
    top = _study_table(a, {s: _moved(a, lambda n: 2e-3 if n == 2 else 1e-3, s) for s in range(3)}, rand)
    eff = layer_variation_effect(top, margin=0.1)
    assert eff.verdict == "reproduced" and 0.8 < eff.estimate < 1.2     # the top moves ~2x
    # the same twofold gap made by a learning rate twice as large on the top layer is no layer effect
    lrs = {0: 0.5, 1: 0.5, 2: 1.0, "head": 1.0}
    assert layer_variation_effect(top, margin=0.1, lrs=lrs).verdict == "not reproduced"
    prof = layer_profile(top, lrs=lrs)
    assert list(prof["layer"]) == [0, 1, 2] and (prof["low"] <= prof["mean"]).all()


def test_effect_helpers_and_records(store):
    from bertdims.book.report import (effect_chart, effects_table, glue_effects, record_known_verdicts,
                                 verdict_note)
    from bertdims.book.scorecard import KIND
    from bertdims.core.stats import seed_effect
    eff = seed_effect([0.01, 0.012, 0.011], [1.0], claim="worse", margin=0.5, scale="ratio")
    unsure = seed_effect([0.9, 1.3], [1.0], claim="worse", margin=0.5, scale="ratio")
    assert eff.verdict == "reproduced" and unsure.verdict == "inconclusive"
    assert "Inconclusive" in verdict_note(unsure) and "2 seeds" in verdict_note(unsure)
    values = glue_effects({"close": eff})
    assert values["close_verdict"] == "reproduced" and values["close_seeds"] == 3
    table = effects_table({"close": eff, "unsure": unsure})
    assert list(table["verdict"]) == ["reproduced", "inconclusive"]
    drawn = views(effect_chart(table).to_dict())
    # the 0 line, the margins as ticks at -margin and +margin, the intervals and the estimates
    assert [v["mark"] for v in drawn] == ["rule", "tick", "tick", "rule", "point"]
    zero, low_margin, high_margin, intervals, estimates = drawn
    assert zero["rows"] == [{"x": 0.0}] and channel(zero, "x")[0] == "x"
    assert [channel(v, "x")[0] for v in drawn[1:]] == ["lo_m", "hi_m", "low", "estimate"]
    assert channel(intervals, "x2")[0] == "high" and channel(estimates, "color")[0] == "verdict"
    assert [(r["comparison"], r["estimate"], r["low"], r["high"], r["lo_m"], r["hi_m"], r["verdict"])
            for r in estimates["rows"]] == [
        (c, e, lo, hi, -m, m, v) for c, e, lo, hi, m, v in
        zip(table["comparison"], table["estimate"], table["low"], table["high"], table["margin"],
            table["verdict"])]
    params = {"model": "embedded", "seeds": [0, 1, 2]}
    missing = record_known_verdicts(store, "09_weight_distances", {"close": eff, "other": eff},
                                    {"close": "p3-close-to-pretrained", "other": "p3-not-registered"},
                                    params)
    assert missing == ["p3-not-registered"]
    assert len(store.runs(KIND)) == 1


def test_layer_effects_pair_by_seed_and_example():
    from bertdims.analysis.distances import LayerStudy, layer_effects
    from bertdims.book.study_findings import layer_findings
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)

    def preds(acc):
        return np.stack([np.where(rng.random(300) < acc, y, 1 - y) for _ in range(3)])

    study = LayerStudy(table=pd.DataFrame(), labels=y, histories=pd.DataFrame(), metric="accuracy",
                       predictions={("full", 6): preds(0.85), ("head only", 0): preds(0.6),
                                    ("top n layers", 3): preds(0.85), ("single layer", 1): preds(0.7)})
    eff = layer_effects(study, margin=0.02, n_boot=500)
    assert list(eff) == ["top 3", "head only", "layer 1"]
    assert eff["head only"].verdict == "not reproduced" and eff["top 3"].claim == "noninferior"
    assert "top 3" in layer_findings(eff)


@pytest.mark.slow
def test_distance_and_layer_studies_end_to_end(tiny_bert, store):
    cfg = DistanceConfig(model=tiny_bert, seeds=[0, 1], max_train_samples=16, max_eval_samples=8,
                         max_seq_len=16, random_seed=1)
    from bertdims.analysis.distances import closeness_effect, comparison_summary, distance_study, layer_study
    run = distance_study(cfg, store)
    check_result(run, tables={"distances", "metrics", "history"})
    assert run.config["seeds"] == [0, 1] and run.paths == {"path": run.path}
    assert distance_study(cfg, store).path == run.path          # read back
    dist = run.table("distances")
    summary = comparison_summary(dist).set_index("comparison")
    assert list(summary["runs"]) == [2, 1, 1]
    ft, rnd = summary.loc["fine-tuned vs pretrained"], summary.loc["pretrained vs random init"]
    assert 0 < ft["l1"] < rnd["l1"] and 0 < ft["angular"] < rnd["angular"]
    assert set(run.table("metrics")["split"]) == {"validation", "test"}
    assert closeness_effect(dist, margin=0.5).n_seeds == 2
    study = layer_study(LayerStudyConfig(model=tiny_bert, seeds=[0], single_layers=[2], top_n=[1],
                                         max_train_samples=16, max_eval_samples=8, max_seq_len=16),
                        store)
    check_result(study, runs=4, tables={"table", "histories"})
    table = study.table
    assert list(table["setting"]) == ["full", "head only", "single layer", "top n layers"]
    assert list(table["train_layers"]) == ["all", "", "2", "2"]
    assert table["accuracy"].between(0, 1).all()
    assert study.predictions[("full", 2)].shape == (1, 8) and study.labels.shape == (8,)
    assert set(study.histories["comparison"]) == {"full", "head only", "layer 2", "top 1"}
