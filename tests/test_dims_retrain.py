"""Tests of the retraining study of chapter 04_few_dimensions (bertdims.analysis.dims): random and
selected dimension sets, the stability of a selection across seeds, every share of full
dividing by the fine-tuned model's own score, and the study end to end on the tiny BERT."""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bertdims import ConfigError
from bertdims.modeling.testing import predictions_right_on
from bertdims.analysis.dims import (LinearHead, Representations, evaluate_k, pick_effect, random_dims,
                           retrain_effects, selected_dims, selection_stability)
from bertdims.data.tasks import Task
from result_checks import check_result

sys.path.insert(0, str(Path(__file__).parent))

BINARY = Task(name="synthetic_binary", source="embedded", text_fields=("text",),
              label_type="classification", label_names=("neg", "pos"), metrics=("accuracy",))


def _ranking(order, **cols) -> pd.DataFrame:
    return pd.DataFrame({"dim": order, "rank": np.arange(1, len(order) + 1), **cols})


def test_random_dims_are_nested_fixed_and_depend_on_seed_and_task():
    sets = [random_dims(384, k, seed=0, task="rotten_tomatoes") for k in (1, 2, 3, 10)]
    for small, big in zip(sets, sets[1:]):
        assert set(small) < set(big)                        # the random 2 hold the random 1
    for s, k in zip(sets, (1, 2, 3, 10)):
        assert len(s) == len(set(s)) == k and s == sorted(s) and all(0 <= d < 384 for d in s)
    assert random_dims(384, 3, 0, "rotten_tomatoes") == sets[2]                  # fixed
    assert random_dims(384, 10, 1, "rotten_tomatoes") != sets[3]                 # seed
    assert random_dims(384, 10, 0, "bbc_news") != sets[3]                        # task
    with pytest.raises(ConfigError, match="k"):
        random_dims(4, 5, 0, "rotten_tomatoes")


def test_selected_dims_are_the_top_k_sorted():
    ranking = _ranking([9, 2, 7, 1]).sample(frac=1.0, random_state=0)   # rows in any order
    assert selected_dims(ranking, 1) == [9]
    assert selected_dims(ranking, 3) == [2, 7, 9]


def test_selection_stability_counts_shared_dims_against_random():
    rankings = pd.concat([
        _ranking([1, 2, 3, 4], task="t", method="single", seed=0),
        _ranking([1, 2, 4, 3], task="t", method="single", seed=1),
        _ranking([1, 3, 2, 4], task="t", method="single", seed=2)])
    table = selection_stability(rankings, ks=[1, 2], hidden_size=40).set_index("k")
    assert table.loc[1, "overlap"] == 1.0 and table.loc[1, "identical"] == 1.0
    # top 2: {1,2}, {1,2}, {1,3}: pairs share 2, 1, 1 of 2 dims
    assert table.loc[2, "overlap"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert table.loc[2, "identical"] == pytest.approx(1 / 3)
    assert table.loc[2, "random"] == pytest.approx(2 / 40)
    assert table.loc[2, "most_common"] == 1 and table.loc[2, "in_seeds"] == 3
    assert (table["seeds"] == 3).all()


def _reps(seed=0, hidden=12):
    rng = np.random.default_rng(seed)
    x, y = {}, {}
    for split, n in (("train", 600), ("validation", 300), ("test", 300)):
        xs = rng.normal(size=(n, hidden)).astype(np.float32)
        x[split], y[split] = xs, (xs[:, 0] + 0.8 * xs[:, 1] + 0.3 * rng.normal(size=n) > 0).astype(int)
    return Representations(BINARY, x, y)


def test_every_share_divides_by_the_fine_tuned_models_score():
    """A refit head on every dimension is not the fine-tuned model: refit shares divide by
    the fine-tuned head's score (``full``), never by the refit's own (``mode_full``)."""
    reps = _reps()
    weak = LinearHead(BINARY, [1, 2, 3]).fit(*reps.split("train"))   # a weaker "fine-tuned" head
    head = lambda x: weak.decision(x)  # noqa: E731
    df = evaluate_k(reps, [0, 1, 2, 3], [1, 2, "all"], head=head)
    x, y = reps.split("test")
    own = weak.score(x, y)
    refit_all = LinearHead(BINARY).fit(*reps.split("train")).score(x, y)
    assert refit_all > own + 0.05                           # the two references differ
    assert np.allclose(df["full"], own)                     # every mode: the fine-tuned model
    refit = df[df["mode"] == "refit"].set_index("k")
    assert refit.loc["all", "mode_full"] == pytest.approx(refit_all)
    assert np.allclose(refit["share"], refit["value"] / own)
    assert refit.loc["all", "share"] > 1.0                  # an honest share above 1


def _fake_study(selected_right, random_right, seeds=3, n=2000):
    from bertdims.analysis.dims import RetrainStudy
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)

    def right(share):
        return predictions_right_on(y, share, seeds, rng)

    full = right(0.9)
    preds = {("rotten_tomatoes", "full", "all"): full}
    for k, (sel, rnd) in enumerate(zip(selected_right, random_right), start=1):
        preds[("rotten_tomatoes", "selected", k)] = full.copy() if sel == 0.9 else right(sel)
        preds[("rotten_tomatoes", "random", k)] = right(rnd)
    return RetrainStudy(scores=pd.DataFrame(), predictions=preds, labels={"rotten_tomatoes": y},
                        runs={}, seeds=list(range(seeds)))


def test_retrain_effects_judge_selected_against_full_and_random():
    study = _fake_study(selected_right=[0.6, 0.9], random_right=[0.6, 0.6])
    eff = retrain_effects(study, margin=0.02, n_boot=300)
    assert len(eff) == 4 and set(eff.claim_id) == {"p1-few-dims-enough", "p1-selected-beat-random"}
    enough = eff[eff.claim_id == "p1-few-dims-enough"].set_index("k")
    assert (enough.scale == "ratio").all() and (enough.claim == "noninferior").all()
    assert enough.loc[1, "verdict"] == "not reproduced"          # 0.6 / 0.9: far below 98%
    assert enough.loc[1, "estimate"] == pytest.approx(0.6 / 0.9 - 1, abs=0.01)
    assert enough.loc[2, "verdict"] == "reproduced" and enough.loc[2, "estimate"] == 0
    beat = eff[eff.claim_id == "p1-selected-beat-random"].set_index("k")
    assert (beat.scale == "difference").all() and (beat.claim == "better").all()
    assert beat.loc[2, "verdict"] == "reproduced"                 # 0.9 against 0.6
    assert beat.loc[1, "verdict"] != "reproduced"                 # 0.6 against 0.6
    picked = pick_effect(eff, "p1-few-dims-enough", task="rotten_tomatoes", k=2)
    assert picked.verdict == "reproduced" and picked.n_seeds == 3
    with pytest.raises(ConfigError, match="exactly one"):
        pick_effect(eff, "p1-few-dims-enough", k=3)               # not run: no silent fallback


def test_an_effect_the_stats_layer_refuses_is_not_computed_and_cannot_be_picked():
    study = _fake_study(selected_right=[0.6], random_right=[0.6], n=200)
    wrong = np.tile(1 - study.labels["rotten_tomatoes"], (3, 1))   # every prediction wrong: 0
    study.predictions[("rotten_tomatoes", "full", "all")] = wrong
    eff = retrain_effects(study, margin=0.02, n_boot=300).set_index("claim_id")
    assert eff.loc["p1-few-dims-enough", "effect"] is None      # a ratio to a score of 0
    assert eff.loc["p1-few-dims-enough", "verdict"] == "not computed"
    assert "ratio" in eff.loc["p1-few-dims-enough", "note"]
    assert eff.loc["p1-selected-beat-random", "verdict"] in ("reproduced", "not reproduced",
                                                             "inconclusive")
    with pytest.raises(ConfigError, match="could not be computed"):
        pick_effect(eff.reset_index(), "p1-few-dims-enough", k=1)


@pytest.mark.slow
def test_retrain_study_on_tiny_bert(tiny_bert, store, monkeypatch, tiny_tasks):
    """Selected and random runs per seed and k, through the store; the full runs are the
    plain fine-tuning runs; predictions line up with the scores; a rerun trains nothing."""
    from bertdims.analysis.dims import retrain_study, run_dims_grid
    from bertdims.train.finetuning import FinetuneConfig, finetune
    from bertdims.core.stats import metric_scores
    cls, _ = tiny_tasks
    base = FinetuneConfig(model=tiny_bert, task=cls, max_train_samples=48, max_eval_samples=30,
                          max_seq_len=16, device="cpu", precision="fp32")
    res = run_dims_grid(base, tasks=[cls], seeds=[0, 1], store=store, methods=["single"],
                        ks=[1, 2, "all"], modes=["refit"])
    check_result(res, config=base, runs=2, tables={"rankings", "scores"})    # the grid: (task, seed)
    study = retrain_study(base, res.rankings, ks=[1, 2], store=store)
    check_result(study, config=base, runs=2 * (1 + 2 * 2), tables={"scores"})
    s = study.scores
    assert len(s) == 2 * (1 + 2 * 2)                          # seeds x (full + 2 kinds x 2 ks)
    for seed in (0, 1):
        rank = res.rankings[res.rankings.seed == seed]
        row = s[(s.seed == seed) & (s.dims == "selected") & (s.k == "2")].iloc[0]
        assert row.chosen == " ".join(map(str, selected_dims(rank, 2)))
        row = s[(s.seed == seed) & (s.dims == "random") & (s.k == "2")].iloc[0]
        assert row.chosen == " ".join(map(str, random_dims(32, 2, seed, cls)))
        full = finetune(base.replace(seed=seed), store=store, progress=False)
        assert (s[s.seed == seed].full == full.score("test")).all()
    assert np.allclose(s["share"], s["value"] / s["full"])
    for (task, kind, k), p in study.predictions.items():
        assert p.shape == (2, 30)
        values = s[(s.dims == kind) & (s.k == str(k))].sort_values("seed")["value"]
        assert metric_scores(p, study.labels[task], "accuracy") == pytest.approx(list(values))
    assert set(study.runs) == {(cls, setting, seed) for seed in (0, 1) for setting in
                               ("full", "selected 1", "selected 2", "random 1", "random 2")}
    assert study.runs[(cls, "random 1", 1)].config.dims == random_dims(32, 1, 1, cls)
    import importlib
    ft = importlib.import_module("bertdims.train.finetuning")      # the module, not the function
    monkeypatch.setattr(ft, "_train", lambda *a, **k: pytest.fail("retrained"))
    again = retrain_study(base, res.rankings, ks=[1, 2], store=store)
    pd.testing.assert_frame_equal(again.scores, s)
    with pytest.raises(ConfigError, match="ranking"):
        retrain_study(base, res.rankings, ks=[1], store=store, seeds=[5])
