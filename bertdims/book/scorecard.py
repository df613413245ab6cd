"""The scorecard: every claim of :data:`bertdims.book.claims.CLAIMS` with the verdict its chapter
recorded, for one preset.

A chapter records each verdict it reaches with :func:`record_verdict`, passing the values of
its parameters cell (:func:`chapter_params`). The record is stored in the results store (kind
``"verdict"``) under the chapter, the claim and those parameters, so a rerun with other
parameters is another record. :func:`scorecard_table` resolves each chapter's parameters for a
preset exactly as ``bertdims run --preset`` does and reads the matching record; a claim whose
chapter has not been run with those parameters is listed as ``"not run"``.
``book/scorecard.ipynb`` shows the table and :func:`forest_chart`.
"""
from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any, Sequence

import altair as alt
import pandas as pd

from ..core._validate import ConfigError, bad
from .claims import CLAIMS, SHORT, Claim, claim_by_id
from ..core.stats import VERDICTS, Effect
from ..core.store import ResultStore

KIND = "verdict"
NOT_RUN = "not run"
COLUMNS = ["claim", "paper", "words", "paper number", "estimate", "low", "high", "margin",
           "claim kind", "verdict", "scale", "chapter", "link", "p_value", "effect scale",
           "compares", "sentence"]
VERDICT_COLORS = {"reproduced": "#59a14f", "not reproduced": "#e15759",
                  "inconclusive": "#f28e2b", NOT_RUN: "#bab0ac"}


# -------------------------------------------------------------------------------- params
def _canonical(values: dict[str, Any], declared: dict[str, Any]) -> dict[str, Any]:
    """Values as the parameters cell types them (an int given for a float becomes a float),
    so that a chapter's record and the scorecard's lookup build the same key."""
    out = {}
    for name, default in declared.items():
        v = values[name]
        if isinstance(default, float) and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if isinstance(v, tuple):
            v = list(v)
        out[name] = v
    return out


def chapter_params(namespace: dict, stem: str, root: Path | None = None) -> dict[str, Any]:
    """The values of the names that chapter ``stem``'s parameters cell declares.

    A chapter calls it with its own ``globals()`` to get the parameters it ran with, typed as
    the parameters cell types them (an int given for a float parameter becomes a float, a
    tuple becomes a list), so that its records and the lookup of :func:`scorecard_table`
    build the same key.

    Parameters
    ----------
    namespace : dict
        Where to read the values, e.g. the chapter's ``globals()``.
    stem : str
        The chapter: its stem, its number prefix such as ``"01"``, or a notebook path.
    root : Path, optional
        The project root (the folder with ``_toc.yml`` and ``book/``); None: found from
        ``$BERTDIMS_ROOT`` or upwards from the working directory.

    Returns
    -------
    dict
        Parameter name -> value, for every name the parameters cell declares, in its order.

    Raises
    ------
    ConfigError
        ``stem`` is not a chapter, or a declared parameter is missing from ``namespace``.
    """
    from .parameters import chapter_path, declared_parameters

    declared = declared_parameters(chapter_path(stem, root))
    missing = [n for n in declared if n not in namespace]
    if missing:
        raise bad("namespace", f"names of chapter {stem}", f"these declared parameters are "
                  f"missing: {', '.join(missing)}")
    return _canonical({n: namespace[n] for n in declared}, declared)


def preset_params(stem: str, preset: str = "default", root: Path | None = None) -> dict[str, Any]:
    """Every parameter of chapter ``stem`` as ``bertdims run --preset`` would set it.

    Parameters
    ----------
    stem : str
        The chapter: its stem, its number prefix such as ``"01"``, or a notebook path.
    preset : str
        One of :data:`bertdims.book.parameters.PRESETS` (``"smoke"``, ``"default"``,
        ``"paper"``); ``"default"`` is the parameters cell as it is.
    root : Path, optional
        The project root (the folder with ``_toc.yml`` and ``book/``); None: found from
        ``$BERTDIMS_ROOT`` or upwards from the working directory.

    Returns
    -------
    dict
        Parameter name -> value: the parameters cell's defaults with the preset's values over
        them, typed as :func:`chapter_params` types them.

    Raises
    ------
    ConfigError
        ``stem`` is not a chapter, the preset is unknown, or the preset sets a parameter the
        chapter does not declare or gives it a value of the wrong type.
    """
    from .parameters import chapter_path, declared_parameters, resolve_parameters

    path = chapter_path(stem, root)
    declared = declared_parameters(path)
    return _canonical({**declared, **resolve_parameters(path, preset, root=root)}, declared)


# ------------------------------------------------------------------------------ records
def _config(chapter: str, claim_id: str, params: dict) -> dict:
    return {"chapter": chapter, "claim": claim_id, "params": params}


def record_verdict(store: ResultStore, chapter: str, claim_id: str, effect: Effect,
                   params: dict, scale_note: dict | None = None,
                   claims: Sequence[Claim] = CLAIMS) -> None:
    """Store one verdict (kind ``"verdict"``) with the chapter's parameters.

    The record is stored under the chapter, the claim and ``params``, so a rerun with other
    parameters makes another record rather than replacing this one.

    Parameters
    ----------
    store : ResultStore
        The results store to write to.
    chapter : str
        The chapter's stem; must be the chapter the claim names.
    claim_id : str
        An id of :data:`bertdims.book.claims.CLAIMS`.
    effect : Effect
        From :func:`bertdims.core.stats.paired_effect` (or built with :func:`bertdims.core.stats.verdict_of`).
    params : dict
        The chapter's parameters, as :func:`chapter_params` returns them.
    scale_note : dict, optional
        The scale the verdict was reached at: ``model``, ``n_train`` (training examples),
        ``seeds``; missing entries are read from ``params`` (``model``, ``max_train_samples``,
        ``seeds``).
    claims : sequence of Claim
        The registered claims to look ``claim_id`` up in; by default
        :data:`bertdims.book.claims.CLAIMS`.

    Raises
    ------
    ConfigError
        An unknown claim id, a chapter that is not the claim's, an ``effect`` that is not an
        :class:`~bertdims.core.stats.Effect`, or ``params`` that is not a dict.
    """
    claim = _find(claim_id, claims)
    if chapter != claim.chapter:
        raise bad("chapter", chapter, f"claim {claim_id!r} is tested by chapter {claim.chapter}")
    if not isinstance(effect, Effect):
        raise bad("effect", type(effect).__name__, "expected a bertdims.core.stats.Effect")
    if not isinstance(params, dict):
        raise bad("params", type(params).__name__, "expected the dict of chapter_params(...)")
    note = {"model": params.get("model"), "n_train": params.get("max_train_samples"),
            "seeds": params.get("seeds")}
    note.update(scale_note or {})
    store.put(KIND, _config(chapter, claim_id, params),
              {"effect": effect.to_dict(), "scale": note, "chapter": chapter, "claim": claim_id})


def _find(claim_id: str, claims: Sequence[Claim]) -> Claim:
    if claims is CLAIMS:
        return claim_by_id(claim_id)
    for c in claims:
        if c.id == claim_id:
            return c
    raise bad("claim_id", claim_id, "choose one of: " + ", ".join(c.id for c in claims))


def _scale_text(note: dict, effect: Effect) -> str:
    seeds = note.get("seeds")
    n_seeds = len(seeds) if isinstance(seeds, (list, tuple)) else effect.n_seeds
    train = note.get("n_train")
    parts = [str(note.get("model") or "?"),
             f"{train} train" if train is not None else "all train",
             f"{effect.n_examples} test" if effect.n_examples else "",
             f"{n_seeds} seed{'s' if n_seeds != 1 else ''}"]
    return ", ".join(p for p in parts if p)


def scorecard_table(store: ResultStore, preset: str = "default", *, root: Path | None = None,
                    claims: Sequence[Claim] = CLAIMS) -> pd.DataFrame:
    """One row per claim with the verdict its chapter recorded under ``preset``'s parameters.

    Each chapter's parameters are resolved for the preset as ``bertdims run --preset`` does
    (:func:`preset_params`), and the record made with exactly those parameters is read. A
    claim with no such record, or whose chapter is not in the book, is ``"not run"``.

    Parameters
    ----------
    store : ResultStore
        The results store the chapters recorded their verdicts in.
    preset : str
        One of :data:`bertdims.book.parameters.PRESETS`.
    root : Path, optional
        The project root (the folder with ``_toc.yml`` and ``book/``); None: found from
        ``$BERTDIMS_ROOT`` or upwards from the working directory.
    claims : sequence of Claim
        The claims to list, by default :data:`bertdims.book.claims.CLAIMS`.

    Returns
    -------
    pd.DataFrame
        One row per claim, in the order of ``claims``; columns (:data:`COLUMNS`): ``claim``
        (id), ``paper``, ``words``, ``paper number``, ``estimate``, ``low``, ``high``,
        ``margin``, ``claim kind``, ``verdict`` (``"not run"`` when there is no record),
        ``scale`` (model, training examples, test examples, seeds), ``chapter`` (stem),
        ``link`` (``<stem>.html``, relative to the book's pages), ``p_value``, ``effect
        scale`` (difference or ratio), ``compares`` and ``sentence``. A claim not run has a NaN
        estimate and interval, no p-value, its registered margin and kind, and an empty
        ``scale`` and ``sentence``.

    Raises
    ------
    ConfigError
        The preset is unknown.
    """
    from .parameters import PRESETS

    if preset not in PRESETS:
        raise bad("preset", preset, "choose one of: " + ", ".join(PRESETS))
    rows, params_of = [], {}
    for c in claims:
        if c.chapter not in params_of:
            try:
                params_of[c.chapter] = preset_params(c.chapter, preset, root)
            except ConfigError:          # chapter not in this book's table of contents
                params_of[c.chapter] = None
        params = params_of[c.chapter]
        hit = None
        if params is not None:
            hit = store.get(KIND, store.key(KIND, _config(c.chapter, c.id, params)))
        row = {"claim": c.id, "paper": SHORT.get(c.paper, c.paper), "words": c.words,
               "paper number": c.paper_number, "estimate": math.nan, "low": math.nan,
               "high": math.nan, "margin": c.default_margin, "claim kind": c.claim,
               "verdict": NOT_RUN, "scale": "", "chapter": c.chapter, "link": f"{c.chapter}.html",
               "p_value": None, "effect scale": c.scale, "compares": c.compares, "sentence": ""}
        if hit is not None:
            rec = hit.result
            e = Effect.from_dict(rec["effect"])
            row.update({"estimate": e.estimate, "low": e.low, "high": e.high, "margin": e.margin,
                        "claim kind": e.claim, "verdict": e.verdict, "p_value": e.p_value,
                        "scale": _scale_text(rec.get("scale", {}), e), "effect scale": e.scale,
                        "sentence": e.sentence()})
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def verdict_counts(table: pd.DataFrame) -> dict[str, int]:
    """How many claims got each verdict (``not run`` included), in a fixed order.

    Parameters
    ----------
    table : pd.DataFrame
        One row per claim with a ``verdict`` column, as :func:`scorecard_table` returns it.

    Returns
    -------
    dict of str to int
        Verdict -> number of claims, for ``"reproduced"``, ``"not reproduced"``,
        ``"inconclusive"`` and ``"not run"``, in that order (0 for a verdict no claim got).
    """
    counts = table["verdict"].value_counts()
    return {v: int(counts.get(v, 0)) for v in (*VERDICTS, NOT_RUN)}


# ---------------------------------------------------------------------------- rendering
def _fmt(value: float, scale: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{100 * value:+.1f}%" if scale == "ratio" else f"{value:+.3f}"


def scorecard_html(table: pd.DataFrame) -> str:
    """The scorecard as an HTML table for the book.

    Numbers are formatted on each claim's scale (ratios in percent), the chapter is a relative
    link labelled with its number, and the verdict is coloured.

    Parameters
    ----------
    table : pd.DataFrame
        One row per claim, with the columns of :func:`scorecard_table`.

    Returns
    -------
    str
        The HTML of a ``<table class="bertdims-scorecard">``, one row per claim.
    """
    head = ["claim", "paper", "their words", "their number", "ours [95% interval]", "margin",
            "kind", "verdict", "scale", "chapter"]
    out = ['<table class="bertdims-scorecard">', "<thead><tr>" +
           "".join(f"<th>{h}</th>" for h in head) + "</tr></thead>", "<tbody>"]
    esc = html.escape
    for _, r in table.iterrows():
        sc = r["effect scale"]
        ours = (f"{_fmt(r['estimate'], sc)} [{_fmt(r['low'], sc)}, {_fmt(r['high'], sc)}]"
                if r["verdict"] != NOT_RUN else "")
        margin = f"{100 * r['margin']:.1f}%" if sc == "ratio" else f"{r['margin']:g}"
        color = VERDICT_COLORS.get(r["verdict"], "#888")
        cells = [f'<code title="{esc(r["compares"])}">{esc(r["claim"])}</code>',
                 esc(r["paper"]), f"“{esc(r['words'])}”",
                 esc(r["paper number"]), ours, margin, esc(r["claim kind"]),
                 f'<b style="color:{color}">{esc(r["verdict"])}</b>', esc(r["scale"]),
                 f'<a href="{esc(r["link"])}">{esc(r["chapter"][:2])}</a>']
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out += ["</tbody>", "</table>"]
    return "\n".join(out)


def _margin_lines(kind: str, margin: float) -> tuple[float, float]:
    """Where the chart draws the margin: both sides for equivalence, one side otherwise."""
    if kind == "equivalent":
        return -margin, margin
    if kind == "better":
        return margin, math.nan
    return -margin, math.nan          # worse, noninferior


def forest_chart(table: pd.DataFrame, *, title: str | None = None) -> alt.FacetChart:
    """The scorecard as a forest plot: one row per claim, estimate and interval.

    Each row shows the estimate (point) and its 95% interval (rule), coloured by verdict,
    against a dashed zero and the claim's margin (solid grey lines: on both sides for an
    equivalence claim, on one side otherwise). Each row has its own x axis, since claims are
    on different scales (accuracy points, ratios, components); claims not run show their
    margins and the words "not run".

    Parameters
    ----------
    table : pd.DataFrame
        One row per claim, as :func:`scorecard_table` returns it; at least the columns
        ``claim, estimate, low, high, margin, claim kind, verdict``.
    title : str, optional
        The chart's title; None: no title.

    Returns
    -------
    altair.FacetChart
        The chart, faceted by claim in the table's order.

    Raises
    ------
    ConfigError
        The table lacks one of the needed columns.
    """
    needed = {"claim", "estimate", "low", "high", "margin", "claim kind", "verdict"}
    missing = needed - set(table.columns)
    if missing:
        raise bad("table", f"columns {sorted(table.columns)}", f"expected the columns of "
                  f"scorecard_table; missing {sorted(missing)}")
    df = table[sorted(needed)].copy()
    lines = [_margin_lines(k, m) for k, m in zip(df["claim kind"], df["margin"])]
    df["margin_1"] = [a for a, _ in lines]
    df["margin_2"] = [b for _, b in lines]
    df["zero"] = 0.0
    df["label"] = df["verdict"].where(df["verdict"] == NOT_RUN, "")
    drawn = [[0.0, *(v for v in pair if not math.isnan(v))] for pair in lines]
    df["label_x"] = [(min(v) + max(v)) / 2 for v in drawn]     # middle of the drawn lines
    order = list(df["claim"])
    color = alt.Color("verdict:N", title="verdict",
                      scale=alt.Scale(domain=list(VERDICT_COLORS),
                                      range=list(VERDICT_COLORS.values())))
    x = alt.X("low:Q", title=None, scale=alt.Scale(zero=True, nice=True))
    base = alt.Chart()
    zero = base.mark_rule(strokeDash=[4, 3], color="#888").encode(x=alt.X("zero:Q", title=None))
    m1 = base.mark_rule(color="#999", strokeWidth=1.5).encode(x="margin_1:Q")
    m2 = base.mark_rule(color="#999", strokeWidth=1.5).encode(x="margin_2:Q")
    interval = base.mark_rule(strokeWidth=3).encode(
        x=x, x2="high:Q", color=color,
        tooltip=["claim:N", alt.Tooltip("estimate:Q", format="+.3f"),
                 alt.Tooltip("low:Q", format="+.3f"), alt.Tooltip("high:Q", format="+.3f"),
                 alt.Tooltip("margin:Q", format=".3f"), "claim kind:N", "verdict:N"])
    point = base.mark_point(filled=True, size=70).encode(x="estimate:Q", color=color)
    text = base.mark_text(color="#888", align="left", dx=6).encode(x="label_x:Q", text="label:N")
    chart = alt.layer(zero, m1, m2, interval, point, text, data=df).properties(
        width=420, height=22).facet(
        row=alt.Row("claim:N", sort=order, title=None,
                    header=alt.Header(labelAngle=0, labelAlign="left", labelFontSize=12)),
        spacing=6).resolve_scale(x="independent")
    return chart.properties(title=title) if title else chart
