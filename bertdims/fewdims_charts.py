"""Altair charts for the chapters that reproduce *Few Dimensions are Enough* (baselines,
token and layer, few dimensions, freezing). Every builder takes a tidy DataFrame, one row
per run (seed), and draws the runs as points with their mean and a ±1 sd bar, so the spread
over seeds is always visible."""
from __future__ import annotations

from typing import Sequence

import altair as alt
import pandas as pd

WIDTH = 220
HEIGHT = 180


def _base(df: pd.DataFrame) -> alt.Chart:
    return alt.Chart(df)


def _facet(chart: alt.Chart, df: pd.DataFrame, column: str | None, columns: int = 3):
    if column is None or column not in df.columns or df[column].nunique() <= 1:
        return chart
    return chart.facet(column=alt.Column(f"{column}:N", title=None), columns=columns) \
        .resolve_scale(y="independent")


def compare_runs_chart(df: pd.DataFrame, x: str, *, y: str = "value", color: str | None = None,
                  column: str | None = "task", y_title: str | None = None,
                  sort: Sequence | None = None) -> alt.Chart:
    """Categorical comparison: one point per run, the mean as a tick and ±1 sd as a bar.

    ``df`` holds one row per run with the columns ``x``, ``y`` and optionally ``color`` and
    ``column`` (facets, independent y scales).
    """
    color = color or x
    x_enc = alt.X(f"{x}:N", title=x, sort=list(sort) if sort is not None else None,
                  axis=alt.Axis(labelAngle=0))
    y_title = y_title or (df["metric"].iloc[0] if "metric" in df and df["metric"].nunique() == 1 else y)
    base = _base(df).encode(x=x_enc)
    points = base.mark_circle(size=35, opacity=0.55).encode(
        y=alt.Y(f"{y}:Q", title=y_title, scale=alt.Scale(zero=False)),
        color=alt.Color(f"{color}:N", legend=None if color == x else alt.Legend()),
        tooltip=[c for c in df.columns if c in (x, y, color, "seed", column)])
    mean = base.mark_tick(thickness=2, size=18, color="black").encode(y=f"mean({y}):Q")
    bars = base.mark_errorbar(extent="stdev").encode(y=alt.Y(f"{y}:Q", title=y_title))
    chart = alt.layer(points, bars, mean).properties(width=WIDTH, height=HEIGHT)
    return _facet(chart, df, column)


def trend_chart(df: pd.DataFrame, x: str, *, y: str = "value", color: str | None = None,
               column: str | None = "task", x_title: str | None = None, y_title: str | None = None,
               x_type: str = "O", rule: float | None = None) -> alt.Chart:
    """A quantity against an ordered setting (layer, number of frozen layers, k): the mean
    over runs as a line, ±1 sd as bars, single runs as faint points; optional horizontal rule."""
    y_title = y_title or (df["metric"].iloc[0] if "metric" in df and df["metric"].nunique() == 1 else y)
    x_enc = alt.X(f"{x}:{x_type}", title=x_title or x,
                  sort=None if x_type != "O" else _natural_order(df[x]), axis=alt.Axis(labelAngle=0))
    enc = {"x": x_enc}
    if color:
        enc["color"] = alt.Color(f"{color}:N", title=color)
    base = _base(df).encode(**enc)
    line = base.mark_line(point=True).encode(y=alt.Y(f"mean({y}):Q", title=y_title,
                                                     scale=alt.Scale(zero=False)))
    bars = base.mark_errorbar(extent="stdev").encode(y=alt.Y(f"{y}:Q", title=y_title))
    dots = base.mark_circle(size=18, opacity=0.35).encode(
        y=f"{y}:Q", tooltip=[c for c in df.columns if c in (x, y, color, "seed", "dims")])
    layers = [line, bars, dots]
    if rule is not None:
        layers.append(_base(df).mark_rule(strokeDash=[4, 4], color="gray").encode(
            y=alt.datum(rule)))
    chart = alt.layer(*layers).properties(width=WIDTH, height=HEIGHT)
    return _facet(chart, df, column)


def _natural_order(values: pd.Series) -> list:
    """Sort mixed labels so that numbers come in numeric order and words (``all``) last."""
    uniq = list(dict.fromkeys(values.astype(str)))

    def key(v):
        try:
            return (0, float(v), "")
        except ValueError:
            return (1, 0.0, v)
    return sorted(uniq, key=key)


def share_chart(scores: pd.DataFrame, threshold: float = 0.98) -> alt.Chart:
    """Share of full performance against k (Few Dimensions are Enough: 2-3 dimensions reach
    over 98 %). ``scores`` is :func:`bertdims.dims.run_dims` scores with a ``task`` and a
    ``seed`` column; one line per (mode, method)."""
    df = scores.assign(k=scores["k"].astype(str),
                       how=scores["mode"] + " / " + scores["method"])
    return trend_chart(df, "k", y="share", color="how", y_title="share of full performance",
                      x_title="k (dimensions kept)", rule=threshold)
