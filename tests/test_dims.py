"""Tests of bertdims.analysis.dims: ranking dimensions and scoring the top k.

Synthetic representations with planted informative dimensions check that both ranking
methods find them; the end-to-end test fine-tunes the tiny BERT through the engine.
"""
import sys
from pathlib import Path

import math

import numpy as np
import pandas as pd
import pytest

from bertdims import ConfigError
from bertdims.analysis.dims import (LinearHead, Representations, chance_score, check_ks, evaluate_k,
                           mask, rank_dimensions, single_dimension_scores, top_dims)
from bertdims.data.tasks import Task

sys.path.insert(0, str(Path(__file__).parent))
from chart_specs import channel, views  # noqa: E402
from result_checks import check_result

BINARY = Task(name="synthetic_binary", source="embedded", text_fields=("text",),
              label_type="classification", label_names=("neg", "pos"), metrics=("accuracy",))
THREE = Task(name="synthetic_three", source="embedded", text_fields=("text",),
             label_type="classification", label_names=("a", "b", "c"), metrics=("accuracy",))
REGRESSION = Task(name="synthetic_regression", source="embedded", text_fields=("text",),
                  label_type="regression", label_names=(), metrics=("pearson", "spearman"))

H = 40
PLANTED = [5, 17, 31]
SIZES = {"train": 800, "validation": 400, "test": 400}


def make_reps(task=BINARY, seed=0, planted=PLANTED, hidden=H):
    """Gaussian noise in every dimension; the label depends on the planted ones only."""
    rng = np.random.default_rng(seed)
    x, y = {}, {}
    weights = np.array([1.5, 1.2, 1.0])[:len(planted)]
    for split, n in SIZES.items():
        xs = rng.normal(size=(n, hidden)).astype(np.float32)
        signal = xs[:, planted] @ weights + 0.3 * rng.normal(size=n)
        if task.is_regression:
            ys = signal
        elif task.num_labels == 2:
            ys = (signal > 0).astype(int)
        else:
            ys = np.digitize(signal, np.quantile(signal, [1 / 3, 2 / 3]))
        x[split], y[split] = xs, ys
    return Representations(task, x, y)


@pytest.mark.parametrize("task", [BINARY, THREE, REGRESSION], ids=["binary", "three", "regression"])
def test_single_ranks_planted_dims_first(task):
    ranking = rank_dimensions(make_reps(task), "single")
    assert len(ranking) == H and list(ranking["rank"]) == list(range(1, H + 1))
    assert set(ranking["dim"][:3]) == set(PLANTED)
    # the strongest planted dimension comes first; noise dimensions score clearly lower
    assert ranking["dim"].iloc[0] == PLANTED[0]
    assert ranking["score"].iloc[2] > ranking["score"].iloc[3] + 0.02


@pytest.mark.parametrize("by", ["loss", "metric"])
@pytest.mark.parametrize("task", [BINARY, REGRESSION], ids=["binary", "regression"])
def test_ablation_ranks_planted_dims_first(task, by):
    ranking = rank_dimensions(make_reps(task), "ablation", candidates=8, by=by)
    assert len(ranking) == 8
    assert set(ranking["dim"][:3]) == set(PLANTED)
    assert (ranking["score"].iloc[:3] > 0.01).all()
    assert ranking["score"].iloc[3:].abs().max() < 0.02


def test_ablation_finds_a_pair_that_single_misses():
    """Two dimensions dominated by a shared nuisance: useless alone, decisive together."""
    rng = np.random.default_rng(1)
    x, y = {}, {}
    for split, n in SIZES.items():
        xs = rng.normal(size=(n, H)).astype(np.float32)
        nuisance, signal = 20 * rng.normal(size=n), rng.normal(size=n)
        xs[:, 3] = nuisance + signal
        xs[:, 8] = nuisance - signal
        xs[:, 12] += 0.4 * signal                      # a weak but lone-visible dimension
        x[split], y[split] = xs, (signal > 0).astype(int)
    reps = Representations(BINARY, x, y)
    single = rank_dimensions(reps, "single")
    assert single["dim"].iloc[0] == 12                  # alone, the pair looks like noise
    ablation = rank_dimensions(reps, "ablation", candidates=[12, 3, 8, 20, 30])
    assert set(ablation["dim"][:2]) == {3, 8}
    assert ablation["score"].iloc[1] > 0.2


def test_ablation_with_a_given_head():
    """The fine-tuned head is a fixed function of the full vector; masking to the mean
    removes exactly the dimensions it reads."""
    reps = make_reps(BINARY)

    def head(x):  # (N, H) -> (N, 2)
        s = x[:, PLANTED] @ np.array([1.5, 1.2, 1.0])
        return np.stack([-s, s], axis=1)

    ranking = rank_dimensions(reps, "ablation", head=head, candidates=10)
    assert set(ranking["dim"][:3]) == set(PLANTED)
    assert (ranking["score"].iloc[3:] == 0).all()       # the head ignores the others entirely


def test_evaluate_k_shapes_and_shares():
    reps = make_reps(BINARY)
    order = rank_dimensions(reps, "single")
    head_model = LinearHead(BINARY).fit(*reps.split("train"))
    ks = (1, 2, 3, 5, 10, "all")
    df = evaluate_k(reps, order, ks, head=head_model.decision)
    assert len(df) == 2 * len(ks)
    assert set(df["mode"]) == {"masked", "refit"}
    assert list(df.columns[:7]) == ["mode", "k", "n_dims", "dims", "metric", "value", "full"]
    for mode, part in df.groupby("mode"):
        assert list(part["k"]) == list(ks)
        assert list(part["n_dims"]) == [1, 2, 3, 5, 10, H]
        full = part.loc[part["k"] == "all", "value"].item()
        assert np.allclose(part["full"], full)
        assert np.allclose(part["share"], part["value"] / full)
        y_train, y_test = reps.y["train"], reps.y["test"]
        chance = np.mean(y_test == np.bincount(y_train).argmax())   # always the majority class
        assert np.allclose(part["chance"], chance)
        assert np.allclose(part["share_above_chance"], (part["value"] - chance) / (full - chance))
        assert part.loc[part["k"] == "all", "share"].item() == pytest.approx(1.0)
    refit = df[df["mode"] == "refit"].set_index("k")
    assert refit.loc[3, "dims"] == " ".join(map(str, order["dim"][:3]))
    assert refit.loc[3, "share"] > 0.97                 # the planted three carry the task
    assert refit.loc[1, "share"] < refit.loc[3, "share"] - 0.05
    # masked inference through the full head equals the head's own score at k = all
    x, y = reps.split("test")
    masked_all = df[(df["mode"] == "masked") & (df["k"] == "all")]["value"].item()
    assert masked_all == pytest.approx(head_model.score(x, y))


def test_evaluate_k_regression_and_without_head():
    reps = make_reps(REGRESSION)
    df = evaluate_k(reps, [31, 17, 5, 0], ks=[1, 3])
    assert list(df["mode"]) == ["refit", "refit"] and list(df["metric"]) == ["pearson"] * 2
    assert df["full"].iloc[0] > 0.9
    assert df["value"].iloc[1] > df["value"].iloc[0]


def test_chance_is_the_majority_training_class_not_one_over_classes():
    train, test = np.array([1, 1, 1, 0]), np.array([1, 1, 1, 0, 0])
    assert chance_score(BINARY, train, test) == pytest.approx(0.6)
    assert chance_score(BINARY, 1 - train, test) == pytest.approx(0.4)
    assert chance_score(REGRESSION, np.array([0.5, 2.0]), np.array([1.0, 3.0])) == 0.0
    # a training mean whose constant copies have a float std of 1e-16 is still a 0 correlation
    train = np.full(4, 2.7001310025006533)                        # stsb's training mean
    assert np.std(np.full(500, float(np.mean(train)))) > 0        # the trap
    assert chance_score(REGRESSION, train, np.linspace(0, 5, 500)) == 0.0
    assert chance_score(THREE, np.array([2, 2, 0]), np.array([0, 1, 2, 2])) == pytest.approx(0.5)


def test_chance_reads_the_examples_fine_tuning_uses(tiny_tasks):
    import bertdims.data.tasks
    from bertdims.analysis.dims import constant_predictions
    cls, reg = tiny_tasks
    assert not hasattr(bertdims.data.tasks, "chance_level")          # one definition of chance
    preds, labels = constant_predictions(cls, max_eval_samples=30)
    assert preds.shape == (1, 30) and labels.shape == (30,)
    train = bertdims.load_task(cls)["train"]["label"]
    assert (preds == np.bincount(train).argmax()).all()
    assert chance_score(cls, max_eval_samples=30) == pytest.approx(np.mean(labels == preds[0]))
    assert chance_score(cls, split="validation") == pytest.approx(
        chance_score(BINARY.__class__(**{**BINARY.__dict__, "name": cls}), train,
                     bertdims.load_task(cls)["validation"]["label"]))
    assert chance_score(reg) == 0.0


def test_mask_keeps_only_chosen_dims():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = mask(x, [1, 3], np.array([-1, -2, -3, -4], dtype=np.float32))
    assert out.tolist() == [[-1, 1, -3, 3], [-1, 5, -3, 7], [-1, 9, -3, 11]]
    assert x[0, 0] == 0                                  # the input is not modified


def test_bad_input_errors():
    reps = make_reps(BINARY)
    with pytest.raises(ConfigError, match="'ks'.*integer in \\[1, 40\\]"):
        evaluate_k(reps, list(range(H)), ks=[1, H + 1])
    with pytest.raises(ConfigError, match="more than the 3 ranked"):
        evaluate_k(reps, [1, 2, 3], ks=[5])
    with pytest.raises(ConfigError, match="distinct; repeated: \\[2\\]"):
        evaluate_k(reps, [2, 4, 2], ks=[1])
    with pytest.raises(ConfigError, match="every k must appear once"):
        check_ks([1, 2, 2], H)
    with pytest.raises(ConfigError, match="'order'.*integer in \\[0, 39\\]"):
        evaluate_k(reps, [3, H], ks=[1])
    with pytest.raises(ConfigError, match="'masked' mode needs the fine-tuned head"):
        evaluate_k(reps, [1, 2], ks=[1], modes=("masked",))
    with pytest.raises(ConfigError, match="'method'"):
        rank_dimensions(reps, "gradient")
    with pytest.raises(ConfigError, match="'candidates'"):
        rank_dimensions(reps, "ablation", candidates=H + 1)
    with pytest.raises(ConfigError, match="'candidates'.*repeated"):
        rank_dimensions(reps, "ablation", candidates=[1, 1])
    with pytest.raises(ConfigError, match="'k'"):
        top_dims(rank_dimensions(reps, "ablation", candidates=4), 5)
    with pytest.raises(ConfigError, match="y\\['test'\\]"):
        Representations(BINARY, {"test": np.zeros((3, 4))}, {"test": np.zeros(2)})


def test_single_scores_use_fit_and_score_splits():
    reps = make_reps(BINARY)
    scores = single_dimension_scores(reps, max_fit_samples=50)
    assert isinstance(scores, pd.DataFrame) and len(scores) == H
    assert scores["score"].between(0, 1).all()


@pytest.mark.slow
def test_run_dims_end_to_end_on_tiny_bert(tiny_bert, store):
    """Fine-tune the tiny BERT, rank, score the top k and retrain on two dimensions; the
    masked run with every dimension is the fine-tuned model itself, and a rerun reads the
    store back without recomputing."""
    from bertdims.analysis.dims import rank_dims
    from bertdims.train.finetuning import FinetuneConfig
    cfg = FinetuneConfig(model=tiny_bert, task="rotten_tomatoes", max_train_samples=48,
                         max_eval_samples=40, max_seq_len=24, device="cpu", precision="fp32")
    res = rank_dims(cfg, store=store, candidates=6, ks=(1, 2, "all"), retrain_ks=[2])
    check_result(res, config=cfg, single=True, tables={"rankings", "scores"})
    assert res.metrics == res.finetune_metrics and set(res.paths) == {"full"}
    ranks = res.rankings
    assert sorted(ranks[ranks.method == "single"]["dim"]) == list(range(32))
    assert len(ranks[ranks.method == "ablation"]) == 6
    scores = res.scores
    assert len(scores) == 2 * 2 * 3 + 1                 # (methods x modes x ks) + one retrain
    masked_all = scores[(scores["mode"] == "masked") & (scores["k"] == "all")]["value"]
    assert np.allclose(masked_all, res.finetune_metrics["test"]["accuracy"])
    retrain = scores[scores["mode"] == "retrain"].iloc[0]
    top2 = ranks[ranks.method == "single"].sort_values("rank")["dim"][:2].tolist()
    assert retrain["dims"] == " ".join(map(str, top2))
    assert len(store.runs("finetune")) == 2 and len(store.runs("dims_k")) == 2
    again = rank_dims(cfg, store=store, candidates=6, ks=(1, 2, "all"), retrain_ks=[2])
    pd.testing.assert_frame_equal(again.scores, scores)


def test_run_dims_rejects_bad_arguments_before_training(store):
    from bertdims.analysis.dims import rank_dims
    from bertdims.train.finetuning import FinetuneConfig
    cfg = FinetuneConfig(task="rotten_tomatoes", max_train_samples=8)
    with pytest.raises(ConfigError, match="'candidates'.*largest k"):
        rank_dims(cfg, store=store, candidates=3, ks=(1, 5))
    with pytest.raises(ConfigError, match="'dims'"):
        rank_dims(cfg.replace(dims=[1, 2]), store=store)
    with pytest.raises(ConfigError, match="'methods'"):
        rank_dims(cfg, store=store, methods=["random"])
    assert len(store.runs()) == 0


def test_summaries_and_charts_from_tidy_runs():
    from bertdims.analysis.dims import chosen_dims, summarize_runs
    from bertdims.book.fewdims_charts import compare_runs_chart, share_chart, trend_chart
    runs = pd.DataFrame({"task": ["a"] * 4 + ["b"] * 4, "setting": ["x", "x", "y", "y"] * 2,
                         "seed": [0, 1] * 4, "value": [0.8, 0.9, 0.5, 0.5, 0.1, 0.3, 0.2, 0.2]})
    summary = summarize_runs(runs, ["task", "setting"])
    row = summary[(summary.task == "a") & (summary.setting == "x")].iloc[0]
    assert row["mean"] == pytest.approx(0.85) and row["sd"] == pytest.approx(np.std([0.8, 0.9], ddof=1))
    assert row["n"] == 2 and row["mean ± sd"] == "0.850 ± 0.071"
    records = runs.to_dict("records")
    # one panel per task; in each, the runs as points, their sd as bars and their mean as a tick
    spec = compare_runs_chart(runs, "setting").to_dict()
    assert spec["facet"]["column"]["field"] == "task"
    drawn = views(spec)
    assert [v["mark"] for v in drawn] == ["circle", "errorbar", "tick"]
    assert [channel(v, "y") for v in drawn] == [("value", None, "quantitative")] * 2 + [
        ("value", "mean", "quantitative")]
    assert all(channel(v, "x")[0] == "setting" and v["rows"] == records for v in drawn)
    # no panels (column=None): mean line, sd bars, single runs and the rule at 0.5
    trended = runs.assign(layer=[1, 2] * 4)
    spec = trend_chart(trended, "layer", column=None, rule=0.5).to_dict()
    assert "facet" not in spec
    drawn = views(spec)
    assert [v["mark"] for v in drawn] == ["line", "errorbar", "circle", "rule"]
    assert [channel(v, "y") for v in drawn] == [("value", "mean", "quantitative"),
                                                ("value", None, "quantitative"),
                                                ("value", None, "quantitative"), ("datum", 0.5, None)]
    assert all(channel(v, "x") == ("layer", None, "ordinal") for v in drawn[:3])
    assert all(v["rows"] == trended.to_dict("records") for v in drawn)
    scores = evaluate_k(make_reps(BINARY), list(range(10)), ks=[1, 2, "all"]).assign(method="single", seed=0)
    spec = share_chart(scores.assign(k=scores.k.astype(str))).to_dict()
    drawn = views(spec)
    assert [v["mark"] for v in drawn] == ["line", "errorbar", "circle", "rule"]
    assert channel(drawn[0], "y") == ("share", "mean", "quantitative")
    assert channel(drawn[0], "color")[0] == "how"
    assert channel(drawn[-1], "y") == ("datum", 0.98, None)          # the paper's 98% threshold
    assert [(r["k"], r["how"], r["share"]) for r in drawn[0]["rows"]] == [
        (str(k), f"{m} / single", pytest.approx(v))
        for k, m, v in zip(scores.k, scores["mode"], scores.share)]
    ranks = pd.concat([rank_dimensions(make_reps(BINARY, seed=s), "single").assign(task="t", seed=s)
                       for s in (0, 1)])
    chosen = chosen_dims(ranks, k=3)
    assert len(chosen) == 2 and chosen["most frequent (seeds)"].iloc[0] == "5 (2/2)"


def test_finetune_grid_checks_every_config_before_training(store):
    from bertdims.analysis.dims import finetune_grid
    from bertdims.train.finetuning import FinetuneConfig
    base = FinetuneConfig(task="rotten_tomatoes", max_train_samples=8)
    with pytest.raises(ConfigError, match="'freeze'"):
        finetune_grid(base, freeze=[0, 99], store=store)
    with pytest.raises(ConfigError, match="'seed'"):
        finetune_grid(base, seed=3, store=store)
    assert len(store.runs()) == 0


def test_grid_probe_and_constant_predictions_line_up(tiny_bert, store, tiny_tasks):
    """Per-example predictions of fine-tuning runs (one row per seed), of the frozen probe and
    of the constant guess, all on the same examples in the same order."""
    import bertdims
    from bertdims.analysis.dims import constant_predictions, grid_predictions, probe_baseline, probe_predictions
    from bertdims.train.finetuning import FinetuneConfig
    cls, _ = tiny_tasks
    base = FinetuneConfig(model=tiny_bert, task=cls, max_train_samples=32, max_eval_samples=30,
                          max_seq_len=24, device="cpu", precision="fp32")
    preds, labels = grid_predictions(base, store=store, seed=[0, 1])
    assert preds.shape == (2, 30) and labels.shape == (30,)
    runs = bertdims.finetune_grid(base, store=store, seed=[0, 1])
    test = runs[(runs.split == "test") & runs.headline]
    assert list(test["value"]) == pytest.approx([np.mean(p == labels) for p in preds])
    table = probe_baseline(tiny_bert, [cls], store=store, layers=[1, -1], max_train_samples=32,
                           max_eval_samples=30, max_seq_len=24, device="cpu")
    assert sorted(set(table["layer"])) == [-1, 1]
    probe, probe_labels = probe_predictions(tiny_bert, cls, store=store, layer=2,
                                            max_train_samples=32, max_eval_samples=30, max_seq_len=24)
    assert len(store.runs("probe")) == 2             # layer 2 is layer -1: read back, not refitted
    np.testing.assert_array_equal(probe_labels, labels)
    row = table[(table.layer == -1) & (table.split == "test") & table.headline]
    assert probe.shape == (1, 30) and row["value"].iloc[0] == pytest.approx(np.mean(probe[0] == labels))
    const, const_labels = constant_predictions(cls, max_train_samples=32, max_eval_samples=30)
    np.testing.assert_array_equal(const_labels, labels)


    # chapter 2's effects: the same predictions, paired by seed and example
    from bertdims.analysis.dims import baseline_effects
    from bertdims.core.stats import paired_effect
    against_probe, against_guess = baseline_effects(base, tasks=[cls], seeds=[0, 1], store=store,
                                                    probe_margin=0.01)
    expect = paired_effect(preds, probe, labels, metric="accuracy", claim="better", margin=0.01,
                           label=f"{cls}: fine-tuned - probe")
    assert against_probe[cls].to_dict() == expect.to_dict()
    assert against_guess[cls].margin == 0.0
    assert against_guess[cls].score_b == pytest.approx(np.mean(const[0] == labels))
    assert len(store.runs("probe")) == 2 and len(store.runs("finetune")) == 2     # all read back
    from bertdims.book.findings import recipe_facts
    from bertdims.train.finetuning import finetune
    facts = recipe_facts(base, {s: finetune(base.replace(seed=s), store=store, progress=False) for s in (0, 1)})
    assert facts["n_train"] == 32 and facts["model_name"] == tiny_bert and facts["num_layers"] == 2
    assert facts["paper_steps"] == math.ceil(32 / facts["paper_batch"] * base.epochs)
