"""Shared Altair chart builders with one look for the whole book.

Every builder takes a tidy DataFrame (one row per observation, one column per variable) and
column names. A name may carry an Altair type suffix (``"layer:O"``); without one the type is
taken from the column (numbers are quantitative, anything else nominal). Each builder returns
an ``alt.Chart`` (or layer/facet) that chapters display as the last line of a cell.

Charts render without network in the book because the book ships Vega itself
(:mod:`bertdims.book.webassets`); :func:`enable_offline` sets up a notebook session.
"""
from __future__ import annotations

from typing import Sequence

import math

import altair as alt
import pandas as pd

from ..core._validate import bad, check_range

WIDTH = 360
HEIGHT = 240
THEME = "bertdims"
_FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"


@alt.theme.register(THEME, enable=False)
def _theme() -> alt.theme.ThemeConfig:
    return {
        "config": {
            "font": _FONT,
            "view": {"continuousWidth": WIDTH, "continuousHeight": HEIGHT, "stroke": None},
            "axis": {"labelFontSize": 12, "titleFontSize": 13, "grid": True,
                     "gridColor": "#e6e6e6", "domainColor": "#888"},
            "legend": {"labelFontSize": 12, "titleFontSize": 13},
            "title": {"fontSize": 15, "anchor": "start"},
            "header": {"labelFontSize": 13, "titleFontSize": 13},
            "range": {"category": {"scheme": "tableau10"}},
        }
    }


def enable_offline() -> None:
    """Set up Altair for the book: default HTML renderer, no row limit, the bertdims theme.

    The default renderer's HTML finds the Vega libraries that the built book loads from
    ``_static/`` (see :mod:`bertdims.book.webassets`), so charts stay interactive with no network.
    """
    alt.renderers.enable("default")
    alt.data_transformers.disable_max_rows()
    alt.theme.enable(THEME)


def _field(df: pd.DataFrame, name: str, param: str) -> str:
    """``name`` with an Altair type suffix; ConfigError if the column is missing."""
    if not isinstance(name, str):
        raise bad(param, name, "expected a column name (str)")
    column, _, kind = name.partition(":")
    if column not in df.columns:
        raise bad(param, name, f"expected one of the DataFrame's columns {list(df.columns)}")
    if kind:
        return name
    return f"{column}:{'Q' if pd.api.types.is_numeric_dtype(df[column]) else 'N'}"


def _x(df: pd.DataFrame, name: str, **kwargs) -> alt.X:
    """x encoding; integer columns (layers, dimensions, seeds) get whole-number ticks."""
    field = _field(df, name, "x")
    if field.endswith(":Q") and pd.api.types.is_integer_dtype(df[_bare(field)]):
        kwargs.setdefault("axis", alt.Axis(tickMinStep=1, format="d"))
    return alt.X(field, **kwargs)


def _bare(name: str) -> str:
    return name.partition(":")[0]


def _titled(chart, title: str | None):
    return chart.properties(title=title) if title else chart


def scatter(df: pd.DataFrame, x: str, y: str, color: str | None = None, *,
            tooltip: Sequence[str] | None = None, facet: str | None = None,
            title: str | None = None, size: float = 40) -> alt.Chart:
    """Points of ``y`` against ``x``, optionally coloured and wrapped in facets (zoom/pan on)."""
    free = alt.Scale(zero=False)
    enc = {"x": _x(df, x, scale=free), "y": alt.Y(_field(df, y, "y"), scale=free)}
    if color is not None:
        enc["color"] = _field(df, color, "color")
    cols = list(tooltip) if tooltip is not None else [c for c in (x, y, color) if c]
    enc["tooltip"] = [_field(df, c, "tooltip") for c in cols]
    chart = alt.Chart(df).mark_circle(size=size, opacity=0.75).encode(**enc).interactive()
    if facet is not None:
        chart = chart.properties(width=WIDTH * 2 // 3, height=HEIGHT * 2 // 3).facet(
            facet=_field(df, facet, "facet"), columns=3)
    return _titled(chart, title)


def line_with_band(df: pd.DataFrame, x: str, y: str, group: str | None = None,
                   lo: str | None = None, hi: str | None = None, *,
                   title: str | None = None) -> alt.LayerChart:
    """Mean of ``y`` over repeated rows (e.g. seeds) per ``x`` as a line, with a spread band.

    Without ``lo``/``hi`` the rows are raw observations: the line is their mean and the band
    one standard deviation either side. With ``lo`` and ``hi`` the rows are already summarised
    (one per ``x`` and group) and the band spans ``lo`` to ``hi``.
    """
    if (lo is None) != (hi is None):
        raise bad("lo" if lo is None else "hi", None, "give both lo and hi, or neither")
    fx, free = _field(df, x, "x"), alt.Scale(zero=False)
    base = alt.Chart(df).encode(x=_x(df, x))
    color = {"color": _field(df, group, "group")} if group is not None else {}
    if lo is None:
        fy = _bare(_field(df, y, "y"))
        line = base.mark_line(point=True).encode(
            y=alt.Y(f"mean({fy})", title=fy, scale=free),
            tooltip=[fx, f"mean({fy})", f"stdev({fy})", f"count({fy})"], **color)
        band = base.mark_errorband(extent="stdev", opacity=0.2).encode(
            y=alt.Y(f"{fy}:Q", title=fy, scale=free), **color)
    else:
        fy, flo, fhi = (_field(df, c, p) for c, p in ((y, "y"), (lo, "lo"), (hi, "hi")))
        line = base.mark_line(point=True).encode(y=alt.Y(fy, scale=free),
                                                 tooltip=[fx, fy, flo, fhi], **color)
        band = base.mark_area(opacity=0.2).encode(y=alt.Y(flo, title=_bare(fy), scale=free),
                                                  y2=_bare(fhi), **color)
    return _titled(alt.layer(band, line), title)


def heatmap(df: pd.DataFrame, x: str, y: str, value: str, fmt: str = ".2f", *,
            title: str | None = None, scheme: str = "viridis") -> alt.LayerChart:
    """Cells coloured by ``value`` on an ``x`` by ``y`` grid, each labelled with ``fmt``.

    Labels are white below the median value and black above it, which suits schemes that run
    from dark to light (viridis, magma, ...).
    """
    fx, fy, fv = _field(df, x, "x"), _field(df, y, "y"), _field(df, value, "value")
    ordinal = {"x": f"{_bare(fx)}:O", "y": f"{_bare(fy)}:O"}
    base = alt.Chart(df).encode(**ordinal)
    mid = float(pd.to_numeric(df[_bare(fv)]).median()) if len(df) else 0.0
    if not math.isfinite(mid):      # every cell missing (NaN): Vega cannot compare with "nan"
        mid = 0.0
    cells = base.mark_rect().encode(color=alt.Color(fv, scale=alt.Scale(scheme=scheme)),
                                    tooltip=[fx, fy, alt.Tooltip(fv, format=fmt)])
    text = base.mark_text(fontSize=11).encode(
        text=alt.Text(fv, format=fmt),
        color=alt.condition(f"datum['{_bare(fv)}'] < {mid!r}", alt.value("white"), alt.value("black")))
    cell_w = max(36, 7 * len(format(mid, fmt)) + 8)
    return _titled(alt.layer(cells, text).properties(width=alt.Step(cell_w), height=alt.Step(24)),
                   title)


def bar_with_error(df: pd.DataFrame, x: str, y: str, err: str | None = None,
                   color: str | None = None, *, title: str | None = None) -> alt.LayerChart:
    """Bars of ``y`` per category ``x`` with error bars; grouped side by side by ``color``.

    With ``err`` the rows are summarised (one per bar) and the error bars span ``y - err`` to
    ``y + err``; without it the rows are raw observations (e.g. one per seed): bars show their
    mean and error bars one standard deviation either side.
    """
    fx = _field(df, x, "x")
    fx = f"{_bare(fx)}:{'O' if fx.endswith(':Q') else fx.rpartition(':')[2]}"
    fy = _bare(_field(df, y, "y"))
    enc = {"x": fx}
    if color is not None:
        enc.update(color=_field(df, color, "color"), xOffset=_field(df, color, "color"))
    base = alt.Chart(df).encode(**enc)
    if err is None:
        bars = base.mark_bar().encode(y=alt.Y(f"mean({fy})", title=fy),
                                      tooltip=[fx, f"mean({fy})", f"stdev({fy})", f"count({fy})"])
        whiskers = base.mark_errorbar(extent="stdev").encode(y=alt.Y(f"{fy}:Q", title=fy))
    else:
        fe = _bare(_field(df, err, "err"))
        bars = base.mark_bar().encode(y=f"{fy}:Q", tooltip=[fx, f"{fy}:Q", f"{fe}:Q"])
        whiskers = base.transform_calculate(
            _lo=f"datum['{fy}'] - datum['{fe}']", _hi=f"datum['{fy}'] + datum['{fe}']",
        ).mark_rule().encode(y=alt.Y("_lo:Q", title=fy), y2="_hi:Q")
    whiskers = whiskers.encode(color=alt.value("black"))
    return _titled(alt.layer(bars, whiskers), title)


def histogram(df: pd.DataFrame, value: str, bins: int = 30, color: str | None = None, *,
              title: str | None = None) -> alt.Chart:
    """Counts of ``value`` in at most ``bins`` bins; overlaid (not stacked) per ``color``."""
    check_range("bins", bins, 1, integer=True)
    fv = _bare(_field(df, value, "value"))
    enc = {"x": alt.X(f"{fv}:Q", bin=alt.Bin(maxbins=bins), title=fv),
           "y": alt.Y("count()", stack=None, title="count"), "tooltip": ["count()"]}
    if color is not None:
        enc["color"] = _field(df, color, "color")
    chart = alt.Chart(df).mark_bar(opacity=0.6 if color else 0.9).encode(**enc)
    return _titled(chart, title)
