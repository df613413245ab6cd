"""How a chapter shows its verdicts: effects as a table, a chart, glued numbers and sentences,
and the records the scorecard reads.

The numbers come from :mod:`bertdims.core.stats` (:class:`~bertdims.core.stats.Effect`); this module only
presents and records them, so a change to a chart or a sentence touches no statistics.
"""
from __future__ import annotations

from typing import Any, Mapping

import pandas as pd


def verdict_note(effect) -> str:
    """Why a verdict came out as it did, in one sentence.

    For a reproduced or not reproduced verdict, the sentence says on which side of the claim
    the whole interval lies and at which scale (seeds, test examples). For an inconclusive one
    it says that the interval straddles the claim's boundary, how wide it is, the likely cause
    (one seed, few seeds, or seeds that disagree) and what more data would settle it.

    Parameters
    ----------
    effect : Effect
        A :class:`~bertdims.core.stats.Effect`, e.g. from :func:`bertdims.core.stats.paired_effect`.

    Returns
    -------
    str
        The sentence.
    """
    scale = f"{effect.n_seeds} seed{'s' if effect.n_seeds != 1 else ''}" + (
        f" and {effect.n_examples} test examples" if effect.n_examples else "")
    if effect.verdict != "inconclusive":
        where = "holds" if effect.verdict == "reproduced" else "fails"
        return f"The whole 95% interval lies where the claim {where} ({scale})."
    width = effect.high - effect.low
    fmt = (lambda x: f"{100 * x:.1f}%") if effect.scale == "ratio" else (lambda x: f"{x:.3f}")
    why = ("one seed: the interval holds only the finite test set, not seed-to-seed variation"
           if effect.n_seeds == 1 else
           "few seeds" if effect.n_seeds < 5 else "the seeds disagree")
    more = "More seeds or test examples" if effect.n_examples else "More seeds"
    return (f"Inconclusive: the interval (width {fmt(width)}) holds values on both sides of the "
            f"claim's boundary, with {scale}; {why}. {more} would narrow it.")


def glue_effects(effects: Mapping[str, Any], prefix: str = "") -> dict:
    """Glue each effect's numbers and words for the chapter's Markdown.

    The values are glued with myst-nb's ``glue`` (not displayed) under the names
    ``<prefix><key>_<field>``, for the fields ``estimate, low, high, margin, score_a,
    score_b, verdict, seeds, examples, sentence`` (:meth:`~bertdims.core.stats.Effect.sentence`)
    and ``note`` (:func:`verdict_note`), and, on the ratio scale, also ``ratio, ratio_low,
    ratio_high`` (``A / B`` itself, i.e. 1 plus the estimate and its interval). Without
    myst-nb (as in the tests) nothing is glued, but the values are still returned.

    Parameters
    ----------
    effects : Mapping[str, Effect]
        The effects to glue, by key; spaces in a key become ``_`` in the glued names.
    prefix : str
        Put in front of every glued name.

    Returns
    -------
    dict
        The glued values, by glued name.
    """
    values = {}
    for key, eff in effects.items():
        name = prefix + key.replace(" ", "_")
        for f in ("estimate", "low", "high", "margin", "score_a", "score_b", "verdict"):
            values[f"{name}_{f}"] = getattr(eff, f)
        if eff.scale == "ratio":                        # A / B itself, e.g. 0.01 of the reference
            for f in ("estimate", "low", "high"):
                values[f"{name}_ratio" + ("" if f == "estimate" else f"_{f}")] = 1.0 + getattr(eff, f)
        values[f"{name}_seeds"], values[f"{name}_examples"] = eff.n_seeds, eff.n_examples
        values[f"{name}_sentence"], values[f"{name}_note"] = eff.sentence(), verdict_note(eff)
    glue_values(**values)
    return values


def effects_table(effects: Mapping[str, Any]) -> pd.DataFrame:
    """The effects as a table, one row per effect.

    Parameters
    ----------
    effects : Mapping[str, Effect]
        The effects, by key (the key becomes the ``comparison`` column).

    Returns
    -------
    pd.DataFrame
        One row per effect, in the mapping's order; columns ``comparison, label, metric,
        scale, estimate, low, high, claim, margin, verdict, seeds, examples, p_value``
        (``seeds`` and ``examples`` are :attr:`~bertdims.core.stats.Effect.n_seeds` and
        :attr:`~bertdims.core.stats.Effect.n_examples`).
    """
    return pd.DataFrame([{"comparison": k, "label": e.label, "metric": e.metric, "scale": e.scale,
                          "estimate": e.estimate, "low": e.low, "high": e.high, "claim": e.claim,
                          "margin": e.margin, "verdict": e.verdict, "seeds": e.n_seeds,
                          "examples": e.n_examples, "p_value": e.p_value}
                         for k, e in effects.items()])


def effect_chart(table: pd.DataFrame, title: str = "Effects with 95% intervals"):
    """Each effect of :func:`effects_table` as a point with its interval, coloured by verdict.

    One row per comparison, with 0 as a dashed line and the claim's margin as grey ticks on
    both sides (at ``-margin`` and ``+margin``).

    Parameters
    ----------
    table : pd.DataFrame
        As :func:`effects_table` returns it: one row per effect, with at least the columns
        ``comparison, label, claim, estimate, low, high, margin, verdict, seeds, examples``.
    title : str
        The chart's title.

    Returns
    -------
    altair.LayerChart
        The chart.
    """
    import altair as alt
    colors = {"reproduced": "#59a14f", "not reproduced": "#e15759", "inconclusive": "#f28e2b"}
    d = table.assign(lo_m=-table["margin"], hi_m=table["margin"])
    y = alt.Y("comparison:N", title=None, sort=list(d["comparison"]))
    color = alt.Color("verdict:N", scale=alt.Scale(domain=list(colors), range=list(colors.values())))
    bars = alt.Chart(d).mark_rule(strokeWidth=2).encode(
        x=alt.X("low:Q", title="effect (A - B, or A / B - 1 for ratios)"), x2="high:Q", y=y, color=color)
    pts = alt.Chart(d).mark_point(filled=True, size=70).encode(
        x="estimate:Q", y=y, color=color,
        tooltip=["label", "claim", alt.Tooltip("estimate:Q", format="+.3f"),
                 alt.Tooltip("low:Q", format="+.3f"), alt.Tooltip("high:Q", format="+.3f"),
                 "margin", "verdict", "seeds", "examples"])
    margins = alt.Chart(d).mark_tick(color="grey", thickness=2).encode(x="lo_m:Q", y=y) + \
        alt.Chart(d).mark_tick(color="grey", thickness=2).encode(x="hi_m:Q", y=y)
    zero = alt.Chart(pd.DataFrame({"x": [0.0]})).mark_rule(strokeDash=[4, 3]).encode(x="x:Q")
    return (zero + margins + bars + pts).properties(width=380, title=title)


def record_known_verdicts(store, chapter: str, effects: Mapping[str, Any], claim_ids: Mapping[str, str],
                          params: dict, scale_note: dict | None = None) -> list[str]:
    """Record the verdicts of a chapter's effects that are claims registered for it.

    Each effect whose key ``claim_ids`` maps to a claim id registered for ``chapter`` in
    :data:`bertdims.book.claims.CLAIMS` is stored with :func:`bertdims.book.scorecard.record_verdict`.
    An effect whose claim id is not registered for the chapter is shown in the chapter but
    not on the scorecard.

    Parameters
    ----------
    store : ResultStore
        The results store to record in.
    chapter : str
        The chapter's stem.
    effects : Mapping[str, Effect]
        The chapter's effects, by key.
    claim_ids : Mapping[str, str]
        Effect key -> claim id; keys that are not in ``effects`` are skipped.
    params : dict
        The chapter's parameters, as :func:`bertdims.book.scorecard.chapter_params` returns them.
    scale_note : dict, optional
        Passed on to :func:`bertdims.book.scorecard.record_verdict`.

    Returns
    -------
    list of str
        The claim ids (of effects present) that are not registered for the chapter.

    Raises
    ------
    ConfigError
        From :func:`bertdims.book.scorecard.record_verdict`: an effect to record that is not an
        :class:`~bertdims.core.stats.Effect`, or ``params`` that is not a dict.
    """
    from .claims import CLAIMS
    from .scorecard import record_verdict
    known = {c.id for c in CLAIMS if c.chapter == chapter}
    missing = []
    for key, claim_id in claim_ids.items():
        if key not in effects:
            continue
        if claim_id in known:
            record_verdict(store, chapter, claim_id, effects[key], params=params, scale_note=scale_note)
        else:
            missing.append(claim_id)
    return missing


def glue_values(**values) -> None:
    """Glue each value under its name (myst-nb's ``glue``, not displayed) for the chapter's
    Markdown; without myst-nb (as in the tests) nothing is glued. Returns None, so a chapter
    cell that ends with it shows nothing."""
    try:
        from myst_nb import glue
    except ImportError:
        return
    for k, v in values.items():
        glue(k, v, display=False)


def record_least_favourable(store, chapter: str, claim_id: str, effects: Mapping[str, Any],
                            params: dict, scale_note: dict | None = None) -> str:
    """Record a claim tested on several tasks at its least favourable one, and glue it.

    A claim tested per task holds only as far as its weakest task
    (:func:`bertdims.core.stats.least_favourable`): that effect is recorded on the scorecard
    (:func:`bertdims.book.scorecard.record_verdict`) and glued as ``recorded_<field>``
    (:func:`glue_effects`), with ``recorded_task`` (its key) and ``tally`` (every task's
    verdict in words, :func:`bertdims.book.findings.tally`).

    Parameters
    ----------
    store : ResultStore
        The results store to record in.
    chapter : str
        The chapter's stem.
    claim_id : str
        The claim, registered for ``chapter`` in :data:`bertdims.book.claims.CLAIMS`.
    effects : Mapping[str, Effect]
        The claim's effect on each task, by task.
    params : dict
        The chapter's parameters (:func:`bertdims.book.scorecard.chapter_params`).
    scale_note : dict, optional
        Passed on to :func:`bertdims.book.scorecard.record_verdict`.

    Returns
    -------
    str
        The key of the recorded (least favourable) effect.
    """
    from ..core.stats import least_favourable
    from .findings import tally
    from .scorecard import record_verdict
    worst = least_favourable(effects)
    record_verdict(store, chapter, claim_id, effects[worst], params=params, scale_note=scale_note)
    glue_effects({"recorded": effects[worst]})
    glue_values(recorded_task=worst, tally=tally(effects))
    return worst


def plain_numbers_in_notebooks() -> bool:
    """In an IPython kernel, show numpy scalars as plain Python numbers (``0.75``, not
    ``np.float64(0.75)``, numpy 2's repr), so that myst-nb's ``glue`` can format every number a
    chapter glues (``{glue:text}`x:.3f``` fails on the numpy repr). Called when bertdims is
    imported; returns False outside a kernel, where it does nothing."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None:
        return False
    import numpy as np
    plain = shell.display_formatter.formatters["text/plain"]
    # concrete types: IPython uses a class's own __repr__ before a printer of its base class
    for t in (np.float16, np.float32, np.float64, np.longdouble):
        plain.for_type(t, lambda x, p, cycle: p.text(repr(float(x))))
    for t in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64):
        plain.for_type(t, lambda x, p, cycle: p.text(repr(int(x))))
    plain.for_type(np.bool_, lambda x, p, cycle: p.text(repr(bool(x))))
    return True
