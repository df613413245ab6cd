"""Altair charts for the chapters that reproduce *Few Dimensions are Enough* (baselines,
token and layer, few dimensions, freezing). Every builder takes a tidy DataFrame, one row
per run (seed), and draws the runs as points with their mean and a ±1 sd bar, so the spread
over seeds is always visible. :func:`curve_chart` draws the training curves behind them
(:func:`history_frame` makes its input from the runs)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import altair as alt
import pandas as pd

from ..core._validate import bad

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

    Parameters
    ----------
    df : pd.DataFrame
        One row per run (seed), with the columns ``x`` and ``y`` and, when used, ``color`` and
        ``column``; a ``metric`` column gives the default y title and a ``seed`` column shows
        in the tooltips (e.g. as :func:`scores_frame` returns it).
    x : str
        The column of the categories (settings) on the x axis.
    y : str
        The column of the values.
    color : str, optional
        The column to colour the points by (with a legend); None: by ``x``, without a legend.
    column : str, optional
        The column whose values get one panel each, with independent y scales; no panels when
        it is None, missing from ``df`` or has a single value.
    y_title : str, optional
        The y axis title; None: the value of the ``metric`` column when ``df`` has one with a
        single value, else ``y``.
    sort : sequence, optional
        The order of the categories on the x axis; None: the order of the data.

    Returns
    -------
    altair.Chart
        A layer chart, or a facet chart of layer charts when faceted by ``column``.
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
    """A quantity against an ordered setting (layer, number of frozen layers, k).

    The mean over runs is drawn as a line, ±1 sd as bars and single runs as faint points, with
    an optional horizontal rule (a reference such as a probe's score or a threshold).

    Parameters
    ----------
    df : pd.DataFrame
        One row per run (seed) and setting, with the columns ``x`` and ``y`` and, when used,
        ``color`` and ``column``; a ``metric`` column gives the default y title, and ``seed``
        and ``dims`` columns show in the tooltips.
    x : str
        The column of the ordered setting on the x axis.
    y : str
        The column of the values.
    color : str, optional
        The column whose values get one line each, in their own colour; None: one line.
    column : str, optional
        The column whose values get one panel each, with independent y scales; no panels when
        it is None, missing from ``df`` or has a single value.
    x_title : str, optional
        The x axis title; None: ``x``.
    y_title : str, optional
        The y axis title; None: the value of the ``metric`` column when ``df`` has one with a
        single value, else ``y``.
    x_type : str
        The Vega-Lite type of ``x``: ``"O"`` (ordinal: numbers, or number-like labels, in
        numeric order, words such as ``"all"`` last), or e.g. ``"Q"`` (quantitative).
    rule : float, optional
        Where to draw a dashed horizontal rule, in units of ``y``; None: no rule.

    Returns
    -------
    altair.Chart
        A layer chart, or a facet chart of layer charts when faceted by ``column``.
    """
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
    """The distinct values, numbers (or number-like labels such as ``"10"``) in numeric order
    and words (``all``) last. Values keep their type, so that a Vega-Lite sort list matches
    the data (a list of strings does not sort integer values: they fall back to the order
    of appearance)."""
    uniq = list(dict.fromkeys(values.tolist()))

    def key(v):
        try:
            return (0, float(v), "")
        except (TypeError, ValueError):
            return (1, 0.0, str(v))
    return sorted(uniq, key=key)


def share_chart(scores: pd.DataFrame, threshold: float = 0.98) -> alt.Chart:
    """Share of full performance against k, one line per (mode, method).

    *Few Dimensions are Enough* reports that 2-3 dimensions reach over 98% of the full model's
    score; the threshold is drawn as a dashed rule. Drawn by :func:`trend_chart`.

    Parameters
    ----------
    scores : pd.DataFrame
        The ``scores`` table of :func:`bertdims.analysis.dims.rank_dims`: one row per (mode, method, k)
        and run, with at least the columns ``k``, ``mode``, ``method`` and ``share``; a
        ``task`` column with several values gives one panel per task, and a ``seed`` column
        shows in the tooltips.
    threshold : float
        Where to draw the rule, as a share of full performance.

    Returns
    -------
    altair.Chart
        A layer chart, or a facet chart of layer charts with one panel per task.
    """
    df = scores.assign(k=scores["k"].astype(str),
                       how=scores["mode"] + " / " + scores["method"])
    return trend_chart(df, "k", y="share", color="how", y_title="share of full performance",
                      x_title="k (dimensions kept)", rule=threshold)


def scores_frame(preds: Mapping[Any, Any], labels, metric: str, name: str,
                 seeds: Sequence[int] | None = None) -> pd.DataFrame:
    """Per-run test scores from stored predictions, as a tidy DataFrame for the charts.

    Parameters
    ----------
    preds : Mapping
        Maps a setting (a layer, a token, a number of frozen layers) to its predictions, an
        array (S, N) with one row per seed, or (1, N) for a setting without seeds (a probe).
    labels : array (N,)
        The test labels.
    metric : str
        A headline metric of :func:`bertdims.core.stats.metric_scores`.
    name : str
        The name of the column that holds the setting.
    seeds : sequence of int, optional
        The seed of each row of the predictions; None, or a setting with a single row: the
        row index is used instead.

    Returns
    -------
    pd.DataFrame
        One row per setting and seed (row of predictions); columns ``name`` (the setting),
        ``seed`` (``seeds[i]`` for row i, or the row index), ``metric`` and ``value``.

    Raises
    ------
    ConfigError
        From :func:`bertdims.core.stats.metric_scores`: an unknown metric or predictions and
        labels of the wrong shape.
    """
    from ..core.stats import metric_scores
    frames = []
    for key, p in preds.items():
        values = metric_scores(p, labels, metric)
        ids = list(seeds)[:len(values)] if seeds is not None and len(values) > 1 else \
            list(range(len(values)))
        frames.append(pd.DataFrame({name: key, "seed": ids, "metric": metric, "value": values}))
    if not frames:
        return pd.DataFrame(columns=[name, "seed", "metric", "value"])
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------------------- curves
CURVE_COLUMNS = ("step", "epoch", "train_loss", "dev_loss", "dev_score")


def history_frame(runs: Mapping[Any, Any], names: Sequence[str]) -> pd.DataFrame:
    """The training curves of fine-tuning runs as one tidy DataFrame.

    Parameters
    ----------
    runs : Mapping
        Maps a key (a tuple of values, or one value) to a
        :class:`~bertdims.train.finetuning.FinetuneRun`.
    names : sequence of str
        The names of the key's parts, e.g. ``("task", "seed")``; as many as the key has parts.

    Returns
    -------
    pd.DataFrame
        One row per evaluation of each run; columns: the key columns (``names``), ``step``,
        ``epoch``, ``train_loss``, ``dev_loss``, ``dev_score`` (the task's headline metric on
        the monitored split, ``dev_<metric>`` of the history; curve columns a history lacks
        are left out), ``metric`` (the headline metric's name) and ``total_steps`` (the
        run's total number of steps).

    Raises
    ------
    ConfigError
        A key with another number of parts than ``names``.
    """
    from ..data.tasks import get_task
    names = list(names)
    frames = []
    for key, run in runs.items():
        values = key if isinstance(key, tuple) else (key,)
        if len(values) != len(names):
            raise bad("names", names, f"expected {len(values)} names for the key {key!r}")
        metric = get_task(run.config.task).metric
        h = run.history.rename(columns={f"dev_{metric}": "dev_score"})
        h = h[[c for c in CURVE_COLUMNS if c in h.columns]].copy()
        for name, value in zip(names, values):
            h[name] = value
        h["metric"] = metric
        h["total_steps"] = int(run.info.get("total_steps", h["step"].max() if len(h) else 0))
        frames.append(h)
    if not frames:
        return pd.DataFrame(columns=names + list(CURVE_COLUMNS) + ["metric", "total_steps"])
    return pd.concat(frames, ignore_index=True)[names + [c for c in CURVE_COLUMNS if c in
                                                          frames[0].columns] + ["metric", "total_steps"]]


def curve_chart(history: pd.DataFrame, *, column: str | None = "task", line: str = "seed",
                title: str | None = None) -> alt.VConcatChart:
    """Validation score (top) and training and validation loss (bottom) against the step.

    One panel per ``column`` value (independent scales), one line per ``line`` value. A curve
    still rising at its last step is a run that has not finished learning.

    Parameters
    ----------
    history : pd.DataFrame
        As :func:`history_frame` returns it: one row per evaluation of each run, with the
        columns ``step``, ``dev_score``, ``dev_loss``, ``train_loss``, ``line`` and, when
        given, ``column``; a ``metric`` column with one value names the score's axis.
    column : str, optional
        The column whose values get one panel each; None, or a single value: one panel.
    line : str
        The column whose values get one line each (e.g. the seed).
    title : str, optional
        The chart's title; None: no title.

    Returns
    -------
    altair.VConcatChart
        The score chart above the loss chart.

    Raises
    ------
    ConfigError
        ``history`` lacks one of the needed columns.
    """
    needed = {"step", "dev_score", "dev_loss", "train_loss", line} | ({column} if column else set())
    missing = needed - set(history.columns)
    if missing:
        raise bad("history", sorted(history.columns), f"missing columns {sorted(missing)}")
    d = history.copy()
    d[line] = d[line].astype(str)
    facet_on = column is not None and d[column].nunique() > 1
    tip = [c for c in (column, line, "step") if c] + [alt.Tooltip("value:Q", format=".3f")]

    def panel(frame: pd.DataFrame, y_title: str, color: str, dash: str | None = None):
        enc = {"x": alt.X("step:Q", title="optimizer step"),
               "y": alt.Y("value:Q", title=y_title, scale=alt.Scale(zero=False)),
               "color": alt.Color(f"{color}:N", title=color),
               "detail": f"{line}:N", "tooltip": tip}
        if dash:
            enc["strokeDash"] = alt.StrokeDash(f"{dash}:N", title=dash)
        chart = alt.Chart(frame).mark_line(point=True).encode(**enc).properties(
            width=WIDTH, height=HEIGHT - 40)
        if facet_on:
            chart = chart.facet(facet=alt.Facet(f"{column}:N", title=None,
                                                sort=_natural_order(frame[column])),
                                columns=3).resolve_scale(y="independent", x="independent")
        return chart

    score = d.dropna(subset=["dev_score"]).assign(value=lambda t: t["dev_score"])
    metric = d["metric"].iloc[0] if "metric" in d and d["metric"].nunique() == 1 else "score"
    losses = d.melt(id_vars=[c for c in (column, line, "step") if c], value_vars=["train_loss", "dev_loss"],
                    var_name="loss", value_name="value").dropna(subset=["value"])
    losses["loss"] = losses["loss"].map({"train_loss": "training", "dev_loss": "validation"})
    chart = alt.vconcat(panel(score, f"validation {metric}", line),
                        panel(losses, "loss", line, dash="loss"))
    return chart.properties(title=title) if title else chart
