"""Findings in words (bertdims.book.findings): which effect decides a claim tested several times,
which runs stand for "lower" and "upper" layers and "the lower half frozen", whether curves
have flattened and a longer budget helps, and the sentences chapters 2, 3 and 5 glue."""
from __future__ import annotations

import pandas as pd
import pytest

from bertdims.core._validate import ConfigError
from bertdims.book.claims import claim_by_id
from bertdims.book.findings import (MISSING, below, budget_sentence, budget_table, checkpoint_words,
                               claim_sentence, half_frozen, learning_sentence, least_favourable,
                               listing, lower_layer, named, pick, plateau_table, tally,
                               upper_layers, verdict_sentence)
from bertdims.core.stats import Effect, verdict_of


def effect(low, high, claim="better", margin=0.0, estimate=None, seeds=3, label="A - B"):
    est = (low + high) / 2 if estimate is None else estimate
    return Effect(label=label, metric="accuracy", scale="difference", estimate=est, low=low,
                  high=high, confidence=0.95, claim=claim, margin=margin,
                  verdict=verdict_of(low, high, claim, margin), p_value=None, n_seeds=seeds,
                  n_examples=500)


# ------------------------------------------------------------------------ least favourable
def test_least_favourable_orders_by_verdict_first():
    effects = {"ok": effect(0.01, 0.05), "unsure": effect(-0.01, 0.08), "fails": effect(-0.04, -0.01)}
    assert [e.verdict for e in effects.values()] == ["reproduced", "inconclusive", "not reproduced"]
    assert least_favourable(effects) == "fails"
    del effects["fails"]
    assert least_favourable(effects) == "unsure"


@pytest.mark.parametrize("claim, estimates, worst", [
    ("better", (0.03, 0.02), 1),         # the smaller advantage
    ("noninferior", (0.01, 0.004), 1),   # the lower estimate
    ("worse", (-0.05, -0.03), 1),        # the smaller shortfall
    ("equivalent", (0.004, -0.008), 1),  # the larger gap, either sign
])
def test_least_favourable_breaks_ties_on_the_losing_side(claim, estimates, worst):
    margin = 0.02 if claim == "equivalent" else 0.0
    effects = {i: effect(e - 0.001, e + 0.001, claim, margin, estimate=e) for i, e in enumerate(estimates)}
    assert len({e.verdict for e in effects.values()}) == 1
    assert least_favourable(effects) == worst


def test_least_favourable_refuses_mixed_or_no_effects():
    with pytest.raises(ConfigError, match="one claim kind"):
        least_favourable({"a": effect(0.01, 0.02), "b": effect(-0.01, 0.01, "equivalent", 0.02)})
    with pytest.raises(ConfigError, match="at least one"):
        least_favourable({})
    assert pick({}) is None
    assert pick({"a": effect(0.01, 0.02)}).low == 0.01


# ------------------------------------------------------------------------ which runs
def test_lower_and_upper_layers():
    assert lower_layer([4, 2, 6], 6) == 2
    assert lower_layer([0, 6], 6) is None            # layer 0 does not count, top is the reference
    assert upper_layers([1, 2, 3, 4, 5, 6], 6) == [4, 5]
    assert upper_layers([2, 6], 6) == []              # a single upper layer: nothing to compare
    assert upper_layers([7, 11, 12], 12) == [7, 11]


def test_half_frozen():
    assert half_frozen([0, 3, 6], 6) == 3
    assert half_frozen([0, 2, 6], 6) is None
    assert half_frozen([0, 1], 1) is None              # half of one layer is no layer


# ------------------------------------------------------------------------ sentences
def test_verdict_sentence_states_verdict_and_numbers():
    text = verdict_sentence(effect(0.012, 0.034, seeds=3), "fine-tuning wins", "n/a")
    assert "REPRODUCED" in text and "+0.012" in text and "+0.034" in text and "3 seeds" in text
    assert "one seed" not in text.lower()
    text = verdict_sentence(effect(-0.01, 0.03, seeds=1), "fine-tuning wins", "n/a")
    assert "INCONCLUSIVE" in text and "one seed" in text.lower()


def test_claim_sentence_without_an_effect_says_why():
    text = claim_sentence("p1-higher-layers-alike", None)
    assert "cannot be judged" in text and MISSING["p1-higher-layers-alike"] in text
    assert claim_by_id("p1-higher-layers-alike").words.rstrip(".") in text
    assert "yes" not in text.lower().split()
    with pytest.raises(ConfigError):
        claim_sentence("no-such-claim", None)


def test_tally_and_listing():
    effects = {"a": effect(0.01, 0.02), "b": effect(-0.01, 0.02), "c": effect(0.02, 0.03)}
    assert tally(effects) == "reproduced on 2 of 3 tasks (a, c); inconclusive on 1 (b)"
    assert tally({}) == "no tasks run"
    assert listing([]) == "none" and listing([1]) == "1" and listing([1, 2, 3]) == "1, 2 and 3"
    assert named("layer", [4]) == "layer 4" and named("layer", [2, 4]) == "layers 2 and 4"
    assert named("head", ["linear", "two-layer"]) == "the linear and two-layer heads"


def test_checkpoint_words_follow_the_run():
    assert "after its last step" in checkpoint_words("final")
    assert "development split of 300" in checkpoint_words("best_dev_loss", 300)
    with pytest.raises(ConfigError):
        checkpoint_words("earliest")


def test_below_lists_the_settings_that_fall_short():
    effects = {2: effect(-0.09, -0.05, "noninferior", 0.02), 4: effect(-0.01, 0.02, "noninferior", 0.02)}
    assert below(effects) == [2]
    with pytest.raises(ConfigError):
        below({1: effect(-0.01, 0.01, "equivalent", 0.02)})


# ------------------------------------------------------------------------ curves
def _history(curves: dict) -> pd.DataFrame:
    rows = []
    for (task, seed), values in curves.items():
        for i, v in enumerate(values):
            rows.append({"task": task, "seed": seed, "step": 10 * (i + 1), "dev_score": v})
    return pd.DataFrame(rows)


def test_plateau_table_tells_rising_from_flat_curves():
    h = _history({("flat", 0): [0.5, 0.79, 0.80, 0.805], ("flat", 1): [0.5, 0.79, 0.79, 0.80],
                  ("rising", 0): [0.5, 0.6, 0.7, 0.8], ("once", 0): [0.6]})
    t = plateau_table(h, tolerance=0.02).set_index("task")
    assert t.loc["flat", "flattened"] and not t.loc["rising", "flattened"]
    assert t.loc["rising", "late_gain"] == pytest.approx(0.2)    # from step 20 (half of 40) to 40
    assert t.loc["flat", "final"] == pytest.approx(0.8025)
    assert not t.loc["once", "flattened"]                         # one evaluation shows nothing
    with pytest.raises(ConfigError, match="missing columns"):
        plateau_table(h.drop(columns="step"))


def test_budget_table_and_sentence():
    ref = _history({("a", 0): [0.6, 0.70], ("b", 0): [0.5, 0.60]})
    longer = _history({("a", 0): [0.6, 0.7, 0.71, 0.71], ("b", 0): [0.5, 0.6, 0.7, 0.75],
                       ("b", 1): [0.1, 0.1]})           # seed 1 has no reference: left out
    t = budget_table(ref, longer, tolerance=0.02).set_index("task")
    assert t.loc["a", "enough"] and not t.loc["b", "enough"]
    assert t.loc["b", "gain"] == pytest.approx(0.15) and t.loc["b", "seeds"] == 1
    text = budget_sentence(t.reset_index(), 1.0, 2.0, 0.02)
    assert "long enough" in text and "stops before learning does" in text and "+0.150" in text
    assert "No longer-budget run" in budget_sentence(t.iloc[:0].reset_index(), 1.0, 2.0, 0.02)


def test_learning_sentence_explains_heads_below_the_probe():
    effects = {2: effect(-0.09, -0.05, "noninferior", 0.02), 4: effect(-0.08, -0.04, "noninferior", 0.02),
               6: effect(-0.01, 0.03, "noninferior", 0.02)}
    plateau = pd.DataFrame({"layer": [2, 4, 6], "flattened": [False, True, True]})
    text = learning_sentence(effects, plateau)
    assert "for layer 6" in text and "below the probe for layers 2 and 4" in text
    assert "for layer 2 the validation curve was still rising" in text
    assert "for layer 4 the curve had flattened" in text
    with pytest.raises(ConfigError):
        learning_sentence({1: effect(0.01, 0.02)})


def test_share_words_never_shows_nan():
    from bertdims.book.findings import share_words
    assert share_words(0.25, "not measured") == "25%"
    assert share_words(0.0125, "x", ".1%") == "1.2%"
    assert share_words(float("nan"), "not measurable with one seed") == "not measurable with one seed"
    assert share_words(None, "n/a") == "n/a"


def test_outlier_note_says_when_the_without_outliers_arm_is_the_selected_one():
    from bertdims.book.findings import outlier_note
    none = outlier_note(0.0)
    assert "same runs" in none and "trivially" in none
    some = outlier_note(1 / 6)
    assert "same runs" not in some and "changes what the head reads" in some
    assert outlier_note(float("nan")) == outlier_note(None) and "not measured" in outlier_note(None)


def test_projection_sentence_gives_each_tasks_share_in_percent():
    from bertdims.book.findings import projection_sentence
    text = projection_sentence({"rotten_tomatoes": [0.12, 0.05], "stsb": [0.2, 0.1]}, 384)
    assert "**rotten_tomatoes** 17.0%" in text and "**stsb** 30.0%" in text
    assert "384 dimensions" in text and text.endswith(".")
