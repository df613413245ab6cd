"""Findings in words for the chapters on *Few Dimensions are Enough* and the fine-tuning
baselines (chapters 2, 3 and 5): which of several effects decides a claim, and the sentences
the chapters glue into their Markdown (myst-nb ``glue``).

Nothing here computes a statistic: the effects come from :func:`bertdims.core.stats.paired_effect`
(estimate, 95% interval, verdict); this module only chooses among them and words them, so
that no rule that decides a verdict lives in a notebook cell.

* :func:`least_favourable`: when one claim is tested several times (on each task, on each
  token vector, on each upper layer), the effect recorded for the scorecard is the one least
  favourable to the claim.
* :func:`lower_layer`, :func:`upper_layers`, :func:`half_frozen`: which runs stand for
  "lower layers", "higher layers" and "the lower half frozen" (None or empty when the
  chapter's parameters leave them out: the claim then cannot be judged, and says so).
* :func:`claim_sentence`, :func:`verdict_sentence`, :func:`tally`, :func:`learning_sentence`:
  the verdict with its numbers, or why there is none.
* :func:`plateau_table`, :func:`budget_table`: whether each validation curve has flattened by
  the end of training, and whether a longer budget would have gained more than a tolerance
  (the calibration of the training budget, chapter 2).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..core._validate import bad
from ..core.stats import SEVERITY, VERDICTS, Effect, least_favourable, pick  # noqa: F401


# ------------------------------------------------------------------------------- wording
def _num(effect: Effect, x: float) -> str:
    return f"{100 * x:+.1f}%" if effect.scale == "ratio" else f"{x:+.3f}"


def _margin(effect: Effect) -> str:
    return f"{100 * effect.margin:.1f}%" if effect.scale == "ratio" else f"{effect.margin:.3f}"


def _scale(effect: Effect) -> str:
    seeds = f"{effect.n_seeds} seed{'s' if effect.n_seeds != 1 else ''}"
    return f"{seeds}, {effect.n_examples} test examples"


def effect_words(effect: Effect) -> str:
    """``"<label>: +0.012 (95% interval -0.004 to +0.028; accuracy, margin 0.020, 3 seeds,
    500 test examples)"``."""
    return (f"{effect.label}: {_num(effect, effect.estimate)} (95% interval "
            f"{_num(effect, effect.low)} to {_num(effect, effect.high)}; {effect.metric}, "
            f"margin {_margin(effect)}, {_scale(effect)})")


#: Why a chapter run may have no comparison for a claim (the parameters left it out).
MISSING = {
    "p2-finetune-beats-probe": "no task was run",
    "p1-tokens-equivalent": "only the [CLS] vector was run; add another token vector to `tokens`",
    "p1-lower-layers-weaker": "no layer below the top was run; add one to `layers`",
    "p1-higher-layers-alike": "no layer of the upper half below the top was run, so the top layer "
                              "has nothing to be alike to; add one to `layers`",
    "p3-freeze-lower-cheap": "no run froze exactly the lower half of the layers; add half the "
                             "number of layers to `freeze`",
    "p1-frozen-encoder-costs": "no run froze the whole encoder",
}


def claim_sentence(claim_id: str, effect: Effect | None) -> str:
    """:func:`verdict_sentence` for a registered claim: its words from
    :data:`bertdims.book.claims.CLAIMS` and, without an effect, the reason from :data:`MISSING`."""
    from .claims import claim_by_id
    words = claim_by_id(claim_id).words.rstrip(".")
    return verdict_sentence(effect, words, MISSING.get(claim_id, "the comparison was not run"))


def verdict_sentence(effect: Effect | None, claim: str, missing: str) -> str:
    """One sentence for the chapter's Markdown: the verdict on ``claim`` (the paper's words,
    short) with the effect behind it, or, with no effect, that the claim cannot be judged and
    why (``missing``)."""
    if effect is None:
        return f"“{claim}” cannot be judged with these parameters: {missing}."
    if effect.verdict not in VERDICTS:
        raise bad("effect.verdict", effect.verdict, "choose one of: " + ", ".join(VERDICTS))
    why = {"reproduced": "the whole interval lies where the claim holds",
           "not reproduced": "the whole interval lies where the claim fails",
           "inconclusive": "the interval reaches both sides of the claim's boundary"}[effect.verdict]
    note = (" With one seed the interval holds only the finite test set, not the spread "
            "between seeds." if effect.n_seeds == 1 else "")
    return (f"“{claim}”: {effect.verdict.upper()} ({why}). Measured: {effect_words(effect)}."
            f"{note}")


def tally(effects: Mapping[str, Effect], noun: str = "tasks") -> str:
    """How many of ``effects`` got each verdict, naming them: ``"reproduced on 4 of 5 tasks
    (a, b, c, d); inconclusive on 1 (e)"``; verdicts nobody got are left out."""
    if not effects:
        return f"no {noun} run"
    parts = []
    for verdict in ("reproduced", "inconclusive", "not reproduced"):
        keys = [k for k, e in effects.items() if e.verdict == verdict]
        if keys:
            count = f"{len(keys)} of {len(effects)} {noun}" if not parts else str(len(keys))
            parts.append(f"{verdict} on {count} ({', '.join(map(str, keys))})")
    return "; ".join(parts)


def below(effects: Mapping[str, Effect]) -> list[str]:
    """Keys of the effects whose verdict says A does *not* reach B (``not reproduced`` on a
    noninferior or better claim): e.g. the layers whose fine-tuned head stays below the
    frozen probe of the same layer."""
    out = []
    for k, e in effects.items():
        if e.claim not in ("noninferior", "better"):
            raise bad("effects", e.claim, "expected noninferior or better claims")
        if e.verdict == "not reproduced":
            out.append(k)
    return out


def named(what: str, keys: Sequence) -> str:
    """Numbered settings as ``"layer 4"`` or ``"layers 2 and 4"``; named ones as ``"the
    linear head"`` or ``"the linear and two-layer heads"``."""
    keys = list(keys)
    plural = "s" if len(keys) != 1 else ""
    if all(isinstance(k, (int, np.integer)) for k in keys):
        return f"{what}{plural} {listing(keys)}"
    return f"the {listing(keys)} {what}{plural}"


def recipe_facts(base, runs: Mapping) -> dict:
    """What chapter 2 says of the fine-tuning recipe that ran, next to the paper's
    (Matton and de Oliveira, section 2), as values to glue by name.

    Parameters
    ----------
    base : FinetuneConfig
        The reference recipe.
    runs : mapping of key to FinetuneRun
        Its runs; the first gives the training size and the checkpoint rule, the longest the
        number of steps.

    Returns
    -------
    dict
        ``lr``, ``head_lr``, ``batch_size``, ``epochs``, ``steps``, ``n_train``, ``warmup``,
        ``decay``, ``rule`` (in words), ``paper_lr``, ``paper_batch``, ``paper_epochs``,
        ``paper_steps`` (the paper's batch size over the same examples and epochs),
        ``model_name`` and ``num_layers``.
    """
    import math

    from ..config.finetune_config import PAPER_RECIPE
    from ..modeling.models import model_size
    from ..train.training import DEFAULT_HEAD_LR
    first = next(iter(runs.values()))
    n_train = int(first.info["n_train"])
    return {"lr": base.lr, "head_lr": base.head_lr or DEFAULT_HEAD_LR, "batch_size": base.batch_size,
            "epochs": base.epochs, "steps": max(int(r.info["total_steps"]) for r in runs.values()),
            "n_train": n_train, "warmup": base.warmup, "decay": base.layer_lr_decay,
            "rule": checkpoint_words(first.info["checkpoint_rule"], first.info["n_dev"]),
            "paper_lr": PAPER_RECIPE["lr"], "paper_batch": PAPER_RECIPE["batch_size"],
            "paper_epochs": PAPER_RECIPE["epochs"],
            "paper_steps": math.ceil(n_train / PAPER_RECIPE["batch_size"] * base.epochs),
            "model_name": base.model, "num_layers": model_size(base.model)[0]}


def checkpoint_words(rule: str, n_dev: int = 0) -> str:
    """The checkpoint rule a run used (``info["checkpoint_rule"]`` of a fine-tuning run), in
    words for the chapter's account of its recipe."""
    if rule == "final":
        return ("keeps the state after its last step (nothing is held out: a development split "
                "large enough to choose a checkpoint by more than noise, 300 examples, would take "
                "a large share of the training data)")
    if rule == "best_dev_loss":
        return (f"keeps the state of lowest loss on a development split of {n_dev} training "
                "examples held out from training (a later evaluation wins a tie)")
    raise bad("rule", rule, "expected 'final' or 'best_dev_loss'")


def listing(keys: Sequence, empty: str = "none") -> str:
    """``"a, b and c"``, or ``empty``."""
    keys = [str(k) for k in keys]
    if not keys:
        return empty
    return keys[0] if len(keys) == 1 else ", ".join(keys[:-1]) + " and " + keys[-1]


# ---------------------------------------------------------------- which runs test a claim
def lower_layer(layers: Sequence[int], num_layers: int) -> int | None:
    """The layer that stands for "lower layers" (*Few Dimensions*: "the contribution of lower
    layers decreases"): the lowest of ``layers`` below the top ``num_layers``; None if there is
    none. Layer 0 (the embeddings) does not count: its [CLS] vector is one fixed vector."""
    below_top = sorted(int(l) for l in layers if 1 <= int(l) < num_layers)
    return below_top[0] if below_top else None


def upper_layers(layers: Sequence[int], num_layers: int) -> list[int]:
    """The layers that "higher layers are alike" compares with the top one: those of
    ``layers`` in the upper half (above ``num_layers / 2``) and below the top. Empty when only
    the top layer is there: a single layer cannot show that layers are alike."""
    return sorted({int(l) for l in layers if num_layers / 2 < int(l) < num_layers})


def half_frozen(freeze: Sequence[int], num_layers: int) -> int | None:
    """The run that freezes the lower half (Radiya-Dixit & Wang: only a subset of layers need
    fine-tuning): ``num_layers // 2`` when ``freeze`` has it (and it is neither 0 nor all the
    layers), else None."""
    half = num_layers // 2
    return half if 0 < half < num_layers and half in set(freeze) else None


# ------------------------------------------------------------------------------- curves
def plateau_table(histories: pd.DataFrame, *, value: str = "dev_score", by: Sequence[str] = ("task",),
                  tolerance: float = 0.02, tail: float = 0.5) -> pd.DataFrame:
    """Has each validation curve flattened by the end of training?

    ``histories`` holds the evaluation rows of the runs (:attr:`FinetuneRun.history` with the
    columns ``by``, ``seed``, ``step`` and ``value``). For each run, the *late gain* is the
    change of ``value`` from the evaluation nearest to the fraction ``1 - tail`` of the run's
    steps to its last evaluation. Per group of ``by``: ``final`` (mean last value over seeds),
    ``late_gain`` (mean over seeds), ``evaluations`` (per run), ``steps`` and ``flattened``:
    True when the mean late gain is at most ``tolerance`` (the curve no longer rises by more
    than the tolerance over the last ``tail`` of training); a run with a single evaluation
    cannot show it (False).
    """
    if not 0 < tail <= 1:
        raise bad("tail", tail, "expected a fraction in (0, 1]")
    if tolerance < 0:
        raise bad("tolerance", tolerance, "expected a number >= 0")
    by = list(by)
    needed = set(by) | {"seed", "step", value}
    missing = needed - set(histories.columns)
    if missing:
        raise bad("histories", sorted(histories.columns), f"missing columns {sorted(missing)}")
    rows = []
    for keys, g in histories.groupby(by + ["seed"], sort=False):
        g = g.dropna(subset=[value]).sort_values("step")
        if g.empty:
            continue
        steps = g["step"].to_numpy(float)
        vals = g[value].to_numpy(float)
        start = int(np.argmin(np.abs(steps - (1 - tail) * steps[-1])))
        gain = float(vals[-1] - vals[start]) if start < len(vals) - 1 else np.nan
        rows.append({**dict(zip(by + ["seed"], keys if isinstance(keys, tuple) else (keys,))),
                     "final": float(vals[-1]), "late_gain": gain, "evaluations": len(vals),
                     "steps": int(steps[-1])})
    runs = pd.DataFrame(rows)
    if runs.empty:
        return pd.DataFrame(columns=by + ["final", "late_gain", "evaluations", "steps", "flattened"])
    out = runs.groupby(by, sort=False).agg(final=("final", "mean"), late_gain=("late_gain", "mean"),
                                           evaluations=("evaluations", "min"),
                                           steps=("steps", "max")).reset_index()
    out["flattened"] = [bool(np.isfinite(g) and g <= tolerance) for g in out["late_gain"]]
    return out


def budget_table(reference: pd.DataFrame, longer: pd.DataFrame, *, value: str = "dev_score",
                 by: Sequence[str] = ("task",), tolerance: float = 0.02) -> pd.DataFrame:
    """Would a longer training budget have done better? The calibration check of the budget.

    ``reference`` and ``longer`` hold evaluation rows (:func:`plateau_table`'s columns) of runs
    that differ only in their number of epochs, with the same seeds. Per group of ``by``:
    ``reference`` and ``longer`` (mean final ``value`` over the seeds both have), ``gain``
    (longer minus reference), ``reference_steps``, ``longer_steps`` and ``enough``: True when
    the longer budget gains at most ``tolerance`` on the validation split (the budget is
    enough; only validation is used, never test).
    """
    if tolerance < 0:
        raise bad("tolerance", tolerance, "expected a number >= 0")
    by = list(by)

    def finals(h: pd.DataFrame, name: str) -> pd.DataFrame:
        missing = set(by) | {"seed", "step", value}
        missing -= set(h.columns)
        if missing:
            raise bad(name, sorted(h.columns), f"missing columns {sorted(missing)}")
        last = h.dropna(subset=[value]).sort_values("step").groupby(by + ["seed"], sort=False).tail(1)
        return last[by + ["seed", "step", value]]

    both = finals(reference, "reference").merge(finals(longer, "longer"), on=by + ["seed"],
                                                suffixes=("_ref", "_long"))
    out = both.groupby(by, sort=False).agg(
        reference=(f"{value}_ref", "mean"), longer=(f"{value}_long", "mean"),
        reference_steps=("step_ref", "max"), longer_steps=("step_long", "max"),
        seeds=("seed", "nunique")).reset_index()
    out["gain"] = out["longer"] - out["reference"]
    out["enough"] = out["gain"] <= tolerance
    return out[by + ["reference", "longer", "gain", "reference_steps", "longer_steps", "seeds",
                     "enough"]]


def budget_sentence(budget: pd.DataFrame, epochs: float, longer_epochs: float,
                    tolerance: float) -> str:
    """The calibration check of :func:`budget_table` in words, task by task."""
    if budget.empty:
        return ("No longer-budget run with these parameters (no calibration task): whether the "
                "budget is long enough rests on the validation curves above alone.")
    parts = []
    for _, r in budget.iterrows():
        seeds = f"{int(r['seeds'])} seed{'s' if int(r['seeds']) != 1 else ''}"
        parts.append(f"on {r['task']}, {longer_epochs:g} epochs ({int(r['longer_steps'])} steps) "
                     f"instead of {epochs:g} ({int(r['reference_steps'])} steps) changed the final "
                     f"validation score by {r['gain']:+.3f} ({seeds})")
    enough = budget[budget["enough"]]["task"].tolist()
    short = budget[~budget["enough"]]["task"].tolist()
    verdict = []
    if enough:
        verdict.append(f"at most the tolerance of {tolerance:g} on {listing(enough)}: there the "
                       f"budget of {epochs:g} epoch(s) is long enough")
    if short:
        verdict.append(f"more than the tolerance on {listing(short)}: there the budget of "
                       f"{epochs:g} epoch(s) stops before learning does, and the reference is "
                       "weaker than it could be")
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + ". That is " + "; and ".join(verdict) + "."


def learning_sentence(effects: Mapping[int, Effect], plateau: pd.DataFrame | None = None,
                      what: str = "layer") -> str:
    """Did each fine-tuned head learn at least what a frozen probe fits on the same vectors?

    ``effects``: per setting (e.g. per layer), head minus probe, a noninferior claim (the head
    is at most the margin below the probe). ``plateau``: :func:`plateau_table` of the heads'
    curves with a ``by`` column named ``what``; it says, for a head below its probe, whether
    its validation curve had flattened (it learned less than the probe) or was still rising
    (it stopped before it finished learning)."""
    groups = {"reproduced": [], "inconclusive": [], "not reproduced": []}
    for key, e in effects.items():
        if e.claim != "noninferior":
            raise bad("effects", e.claim, "expected noninferior claims (head against probe)")
        groups[e.verdict].append(key)
    if not effects:
        return "No fine-tuned head was run."
    first = next(iter(effects.values()))
    margin = _margin(first)
    parts = []
    if groups["reproduced"]:
        parts.append(f"the fine-tuned head reaches the frozen probe of the same {what} (at most "
                     f"{margin} below it, 95% interval) for {named(what, groups['reproduced'])}")
    if groups["inconclusive"]:
        parts.append(f"the data cannot tell for {named(what, groups['inconclusive'])}")
    if groups["not reproduced"]:
        low = groups["not reproduced"]
        why = ""
        if plateau is not None and what in plateau.columns:
            flat = plateau.set_index(what)["flattened"]
            still = [k for k in low if k in flat.index and not flat[k]]
            done = [k for k in low if k in flat.index and flat[k]]
            if still:
                why += (f"; for {named(what, still)} the validation curve was still rising at "
                        "the last step: the head stopped before it finished learning, and these "
                        "runs are no evidence about the layer")
            if done:
                why += (f"; for {named(what, done)} the curve had flattened: fine-tuning "
                        "there ended below what a probe fits on the untouched vectors")
        parts.append(f"the head stays below the probe for {named(what, low)}{why}")
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


def share_words(value: float, missing: str, fmt: str = ".0%") -> str:
    """``value`` formatted (a share, by default as a whole percentage), or ``missing`` when it
    could not be measured (NaN, None): glued prose never shows "nan"."""
    if value is None or not np.isfinite(float(value)):
        return missing
    return format(float(value), fmt)


def outlier_note(share: float) -> str:
    """What chapter 11's "without outliers" arm tests, given the share of the selected
    dimensions that are outlier dimensions (:func:`bertdims.analysis.agreement.outlier_share`).

    Parameters
    ----------
    share : float
        The share, over every task and seed, of the top-k selected dimensions that are outlier
        dimensions (NaN or None: not measured).

    Returns
    -------
    str
        One or two sentences: when no selected dimension is an outlier, the arm without outliers
        reads the same dimensions as the selected one (the same runs), so its finding holds
        trivially and says nothing about the outliers at this scale.
    """
    if share is None or not np.isfinite(float(share)):
        return "Whether the selections read outlier dimensions was not measured."
    if float(share) == 0:
        return ("None of them is, so the \u201cwithout outliers\u201d setting reads exactly the dimensions "
                "of \u201cselected\u201d: they are the same runs, the finding that the selected dimensions "
                "suffice without the outliers holds trivially (an effect of exactly 0), and it "
                "says nothing about what the outlier dimensions contribute at this scale.")
    return ("Taking them out changes what the head reads, so the \u201cwithout outliers\u201d setting tests "
            "whether the remaining selected dimensions suffice.")


def projection_sentence(explained: Mapping[str, Sequence[float]], hidden_size: int) -> str:
    """What the 2-D projections of chapter 1 keep of each task's ``[CLS]`` variance, in words.

    Parameters
    ----------
    explained : mapping of str to sequence of float
        Per task, the explained-variance ratios of its first two principal components
        (``attrs["explained"]`` of :func:`bertdims.book.overview.project_tasks`).
    hidden_size : int
        The encoder's number of dimensions H.

    Returns
    -------
    str
        One Markdown paragraph: each task's share of variance in two components, and why
        class structure visible in them is structure the pretrained model already had.
    """
    shares = "; ".join(f"**{t}** {100 * sum(v):.1f}%" for t, v in explained.items())
    return (f"Share of variance the first two components explain: {shares}. The encoder has "
            f"{hidden_size} dimensions, so two components keep only a small part of its variance: "
            "class structure visible here is structure the pretrained model already had.")
