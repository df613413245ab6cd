"""Charts of the studies of chapters 6-11 (cross-fine-tuning, PCA, salient neurons, weight
distances, sparse fine-tuning, dimension agreement): Altair charts of the tidy tables the
studies return. Presentation only: no numerics module imports this one, so a change to a chart
touches no computation.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from ..core._validate import bad
from ..analysis.agreement import SOURCES
from ..analysis.crossft import pair_matrix
from ..analysis.distances import _METRIC_TITLES, KINDS, METRICS
from ..train.sparse import FROZEN, FULL, SETTINGS


# -------------------------------------------------------------------- crossft

def pair_chart(pairs: pd.DataFrame, value: str, *, title: str | None = None, fmt: str = ".2f",
               scheme: str = "viridis"):
    """One heat map per mode of ``value`` (mean over seeds): rows the first task A, columns
    the task B fine-tuned afterwards."""
    import altair as alt

    from . import charts
    matrix = pair_matrix(pairs, value).rename(columns={"first": "first task A", "second": "then task B"})
    panels = [charts.heatmap(matrix[matrix["mode"] == m], x="then task B", y="first task A", value=value,
                             fmt=fmt, scheme=scheme, title=f"heads on {m} dimensions")
              for m in dict.fromkeys(matrix["mode"])]
    chart = alt.hconcat(*panels).resolve_scale(color="shared")
    return chart.properties(title=title) if title else chart


def shared_chart(shared: pd.DataFrame, *, title: str | None = None):
    """Score of each target task B by the dimensions its head reads (mean and sd over seeds
    and source tasks)."""
    from . import charts
    return charts.bar_with_error(shared.rename(columns={"target": "task B"}), x="task B", y="value",
                                 color="kind", title=title)


def multitask_chart(rows: pd.DataFrame, *, title: str | None = None):
    """Each task's score in the joint model and alone (mean and sd over seeds)."""
    from . import charts
    return charts.bar_with_error(rows, x="task", y="value", color="setting", title=title)


# ------------------------------------------------------------------ distances

def distance_chart(layer_df: pd.DataFrame, metric: str = "l1", color: str = "comparison",
                   log: bool = True):
    """Line chart of one distance by layer, one line per value of ``color``.

    The x axis is the layer (0 = the embeddings), the y axis the mean of ``metric`` over the rows
    of each layer and ``color`` value (e.g. over seeds). The y axis is logarithmic by default, as
    the comparisons differ by orders of magnitude.

    Parameters
    ----------
    layer_df : pandas.DataFrame
        Output of :func:`layer_distances`: one row per layer and group, with the columns
        ``layer``, ``metric`` and ``color``.
    metric : str
        The distance to draw, one of :data:`METRICS` (``l1``, ``l2``, ``angular``, ``rel_l2``).
    color : str
        The column whose values get one line each (default ``"comparison"``).
    log : bool
        Logarithmic (True) or linear (False) y axis.

    Returns
    -------
    altair.Chart
        The line chart, 320 by 220 pixels, with a point per layer.

    Raises
    ------
    ConfigError
        When ``metric`` is not one of :data:`METRICS`.
    """
    import altair as alt
    if metric not in METRICS:
        raise bad("metric", metric, "choose one of: " + ", ".join(METRICS))
    y = alt.Y(f"mean({metric}):Q", title=_METRIC_TITLES[metric],
              scale=alt.Scale(type="log" if log else "linear"))
    base = alt.Chart(layer_df).encode(x=alt.X("layer:O", title="layer (0 = embeddings)",
                                              axis=alt.Axis(labelAngle=0)),
                                      color=alt.Color(f"{color}:N"))
    return (base.mark_line(point=True).encode(y=y, tooltip=[color, "layer", f"mean({metric}):Q"])
            .properties(width=320, height=220, title=_METRIC_TITLES[metric] + " by layer"))


def kind_chart(kind_df: pd.DataFrame, metric: str = "l1", color: str = "comparison", log: bool = True):
    """Bar chart of one distance by kind of matrix, one bar per value of ``color``.

    The x axis is the kind (embeddings, attention, feed-forward, layer norm, other), with the bars
    of the ``color`` values side by side; the y axis is the mean of ``metric`` over the rows of
    each kind and ``color`` value (e.g. over seeds, when ``kind_df`` has one row per run). The y
    axis is logarithmic by default.

    Parameters
    ----------
    kind_df : pandas.DataFrame
        Output of ``aggregate_distances(df, [color, "kind"])`` (:func:`aggregate_distances`), or
        with further grouping columns such as ``run``: one row per group, with the columns
        ``kind``, ``metric`` and ``color``.
    metric : str
        The distance to draw, one of :data:`METRICS`.
    color : str
        The column whose values get one bar each within a kind (default ``"comparison"``).
    log : bool
        Logarithmic (True) or linear (False) y axis.

    Returns
    -------
    altair.Chart
        The bar chart, 320 by 220 pixels.

    Raises
    ------
    ConfigError
        When ``metric`` is not one of :data:`METRICS`.
    """
    import altair as alt
    if metric not in METRICS:
        raise bad("metric", metric, "choose one of: " + ", ".join(METRICS))
    scale = alt.Scale(type="log" if log else "linear")
    return (alt.Chart(kind_df).mark_bar().encode(
        x=alt.X("kind:N", title=None, sort=list(KINDS), axis=alt.Axis(labelAngle=0)),
        xOffset=f"{color}:N",
        y=alt.Y(f"mean({metric}):Q", title=_METRIC_TITLES[metric], scale=scale),
        color=f"{color}:N", tooltip=[color, "kind", f"mean({metric}):Q"])
        .properties(width=320, height=220, title=_METRIC_TITLES[metric] + " by kind of matrix"))


def layer_study_chart(df: pd.DataFrame, metric: str):
    """Task metric of fine-tuning one layer only or the top n layers, against full fine-tuning.

    The x axis is the layer i (setting ``single layer``) or the number n of top layers (setting
    ``top n layers``); the y axis the mean of ``metric`` over seeds, with error bars of one
    standard deviation. Full fine-tuning and the head alone on the frozen encoder (``head only``)
    are drawn as dashed horizontal rules at their means.

    Parameters
    ----------
    df : pandas.DataFrame
        :attr:`LayerStudy.table` of :func:`layer_study`: one row per run, with the columns
        ``setting``, ``n``, ``seed`` and ``metric``.
    metric : str
        The column to draw, e.g. :attr:`LayerStudy.metric` (the headline metric) or
        ``validation_accuracy``.

    Returns
    -------
    altair.LayerChart
        The lines, error bars and rules, 360 by 240 pixels.
    """
    import altair as alt
    parts = df[df["setting"].isin(["single layer", "top n layers"])]
    refs = df[df["setting"].isin(["full", "head only"])]
    points = alt.Chart(parts).mark_line(point=True).encode(
        x=alt.X("n:O", title="layer i (single layer) or n (top n layers)", axis=alt.Axis(labelAngle=0)),
        y=alt.Y(f"mean({metric}):Q", title=metric, scale=alt.Scale(zero=False)),
        color=alt.Color("setting:N"), tooltip=["setting", "n", f"mean({metric}):Q"])
    band = alt.Chart(parts).mark_errorbar(extent="stdev").encode(
        x="n:O", y=alt.Y(f"{metric}:Q", title=metric), color="setting:N")
    rules = alt.Chart(refs).mark_rule(strokeDash=[4, 3]).encode(
        y=f"mean({metric}):Q", color="setting:N", tooltip=["setting", f"mean({metric}):Q"])
    return (points + band + rules).properties(width=360, height=240,
                                              title="Fine-tuning some layers vs all")


def layer_profile_chart(profile: pd.DataFrame, metric: str = "rel_l2"):
    """The per-layer distance of :func:`layer_profile`: mean over seeds and its 95% interval
    (bars), layer 0 = the embeddings."""
    import altair as alt
    base = alt.Chart(profile.drop(columns=["per_seed"])).encode(
        x=alt.X("layer:O", title="layer (0 = embeddings)", axis=alt.Axis(labelAngle=0)))
    title = _METRIC_TITLES.get(metric, metric)
    points = base.mark_point(filled=True, size=60).encode(
        y=alt.Y("mean:Q", title=title, scale=alt.Scale(zero=False)),
        tooltip=["layer", alt.Tooltip("mean:Q", format=".3g"), alt.Tooltip("low:Q", format=".3g"),
                 alt.Tooltip("high:Q", format=".3g"), "seeds"])
    bars = base.mark_errorbar().encode(y=alt.Y("low:Q", title=title), y2="high:Q")
    return (bars + points).properties(width=320, height=220,
                                      title=f"{title} by layer, 95% interval over seeds")


# --------------------------------------------------------------------- sparse

def sparsity_chart(scores: pd.DataFrame, metric: str, split: str = "test"):
    """Task metric against sparsity, for learned masks, fixed masks and full fine-tuning.

    The learned masks are a line (mean over seeds, with the pretrained encoder and trained head
    at sparsity 0); the fixed magnitude and random masks and the pretrained encoder are points;
    every setting but full fine-tuning has error bars of one standard deviation over seeds; full
    fine-tuning is a dashed horizontal rule.

    Parameters
    ----------
    scores : pandas.DataFrame
        :attr:`SparseStudy.scores`: one row per run and split, with the columns ``setting``,
        ``sparsity``, ``split`` and ``metric``.
    metric : str
        The metric column to draw, e.g. :attr:`SparseStudy.metric`.
    split : str
        The evaluation split (default ``"test"``).

    Returns
    -------
    altair.LayerChart
        The chart, 380 by 240 pixels.

    Raises
    ------
    ConfigError
        When ``metric`` is not a column of ``scores``.
    """
    import altair as alt
    if metric not in scores.columns:
        raise bad("metric", metric, "choose a metric column of the table")
    d = scores[scores["split"] == split]
    full = d[d["setting"] == FULL]
    learned = d[d["setting"].isin([SETTINGS["learned"], FROZEN])].assign(setting=SETTINGS["learned"])
    controls = d[d["setting"].isin([SETTINGS["magnitude"], SETTINGS["random"], FROZEN])]
    x = alt.X("sparsity:Q", title="sparsity (fraction of masked weights set to 0)")
    y = alt.Y(f"mean({metric}):Q", title=f"{metric} ({split})", scale=alt.Scale(zero=False))
    color = alt.Color("setting:N", title=None)
    line = alt.Chart(learned).mark_line(point=True).encode(
        x=x, y=y, color=color, tooltip=["setting", "sparsity", f"mean({metric}):Q"])
    err = alt.Chart(d[d["setting"] != FULL]).mark_errorbar(extent="stdev").encode(
        x=x, y=alt.Y(f"{metric}:Q", title=f"{metric} ({split})"), color=color)
    points = alt.Chart(controls).mark_point(size=80, filled=True, shape="diamond").encode(
        x=x, y=y, color=color, tooltip=["setting", "sparsity", f"mean({metric}):Q"])
    rule = alt.Chart(full).mark_rule(strokeDash=[4, 3]).encode(
        y=f"mean({metric}):Q", color=color, tooltip=["setting", f"mean({metric}):Q"])
    return (line + err + points + rule).properties(
        width=380, height=240, title="Learned masks, fixed masks and full fine-tuning")


def history_chart(histories: pd.DataFrame, facet: str = "setting", title: str | None = None):
    """Training curves behind the verdicts: training loss (mean since the previous
    evaluation) and validation loss against the epoch, one panel per ``facet`` value, one line
    per run (seed, and sparsity where there are several). Head-only runs (sparsity 0, fixed
    masks, a frozen encoder) run ``frozen_epochs`` passes on features computed once, hence
    their longer x axis. ``histories``: :attr:`SparseStudy.histories` or
    :attr:`bertdims.analysis.distances.LayerStudy.histories` (columns ``<facet>, seed, epoch,
    train_loss, dev_loss``)."""
    import altair as alt
    d = histories.copy()
    run = "seed " + d["seed"].astype(int).astype(str)
    if "sparsity" in d and d["sparsity"].nunique() > 1:
        run = run + ", sparsity " + d["sparsity"].map(lambda s: f"{s:g}")
    d["run"] = run
    long = d.melt(id_vars=[facet, "run", "epoch"], value_vars=["train_loss", "dev_loss"],
                  var_name="loss", value_name="value").dropna(subset=["value"])
    long["loss"] = long["loss"].map({"train_loss": "training", "dev_loss": "validation"})
    return alt.Chart(long).mark_line(point=True).encode(
        x=alt.X("epoch:Q", title="epoch"), y=alt.Y("value:Q", title="loss", scale=alt.Scale(zero=False)),
        color=alt.Color("loss:N", title=None), detail="run:N",
        tooltip=[facet, "run", "epoch", "loss", alt.Tooltip("value:Q", format=".3f")],
    ).properties(width=200, height=150).facet(facet=alt.Facet(f"{facet}:N", title=None), columns=3
    ).resolve_scale(x="independent").properties(
        title=title or "Training curves of the runs behind the verdicts")


# ------------------------------------------------------------------------ pca

def pca_chart(curves: pd.DataFrame, task: str | None = None):
    """Accuracy against the number of components per basis, one panel per model (Figures 1-3)."""
    import altair as alt
    df = curves if task is None else curves[curves.task == task]
    return alt.Chart(df).mark_line(point=True).encode(
        x=alt.X("n:Q", scale=alt.Scale(type="log"), title="components (or random dimensions)"),
        y=alt.Y("mean(accuracy):Q", scale=alt.Scale(zero=False), title="test accuracy"),
        color=alt.Color("basis:N"), strokeDash="model:N",
        tooltip=["basis", "model", "n", "mean(accuracy)"]).properties(
        width=300, height=200).facet(column="task:N")


def ratio_chart(ratios: pd.DataFrame, top: int = 20):
    """Variance ratio fine-tuned / pretrained of the first ``top`` components, per task
    (Figure 4), with the line ratio = 1."""
    import altair as alt
    df = ratios[ratios.component <= top]
    line = alt.Chart(df).mark_line(point=True).encode(
        x=alt.X("component:Q"), y=alt.Y("mean(ratio):Q", title="variance ratio (fine-tuned / pretrained)"),
        color="task:N", tooltip=["task", "component", "mean(ratio)"])
    one = alt.Chart(pd.DataFrame({"y": [1.0]})).mark_rule(strokeDash=[4, 4], color="black").encode(y="y:Q")
    return alt.layer(line, one).properties(width=420, height=240)


def size_chart(sizes: pd.DataFrame):
    """Accuracy against the number of sentences the general PCA was fitted on."""
    import altair as alt
    return alt.Chart(sizes).mark_line(point=True).encode(
        x=alt.X("sentences:Q", scale=alt.Scale(type="log")),
        y=alt.Y("mean(accuracy):Q", scale=alt.Scale(zero=False), title="test accuracy"),
        color="task:N", strokeDash="model:N",
        tooltip=["task", "model", "sentences", "mean(accuracy)"]).properties(width=420, height=240)


def crossing_chart(study: dict):
    """Crossing index per task with its bootstrap interval (points and bars), the number of
    classes (black ticks), and the null's central 95% range (grey band)."""
    import altair as alt
    t = study["summary"]
    base = alt.Chart(t).encode(y=alt.Y("task:N", sort=list(t.task), title=None))
    band = base.mark_bar(color="lightgrey", opacity=0.6, size=14).encode(
        x=alt.X("null_low:Q", title="component index"), x2="null_high:Q")
    bars = base.mark_rule(strokeWidth=2).encode(x="low:Q", x2="high:Q")
    pts = base.mark_point(filled=True, size=70).encode(
        x="crossing:Q", tooltip=["task", "classes", "crossing", "low", "high", "per_seed",
                                 "null_low", "null_high"])
    ticks = base.mark_tick(color="black", thickness=2, size=18).encode(x="classes:Q")
    return (band + bars + pts + ticks).properties(
        width=380, title="First variance ratio below 1 (point, 95% interval) against classes (tick); "
                         "grey: no fine-tuning")


# -------------------------------------------------------------------- neurons

def activation_chart(activation: pd.DataFrame):
    """Values of the best neuron on the test set, one row of ticks per class (Figure 5)."""
    import altair as alt
    return alt.Chart(activation).mark_tick(opacity=0.4).encode(
        x=alt.X("value:Q", title="activation of the best neuron"), y=alt.Y("label:N", title=None),
        color=alt.Color("label:N", legend=None)).properties(width=380)


# ------------------------------------------------------------------ agreement

def matrix_chart(frame: pd.DataFrame, *, title: str, value_title: str,
                 sources: Sequence[str] = SOURCES):
    """A heat map of :func:`matrix_frame`: each cell the mean observed agreement of two
    sources, labelled (``*``: above the null of random rankings, the whole 95% interval),
    with the null and the interval in the tooltip."""
    import altair as alt
    order = [s for s in sources if s in set(frame["row"])]
    base = alt.Chart(frame).encode(x=alt.X("column:N", sort=order, title=None,
                                           axis=alt.Axis(labelAngle=-30)),
                                   y=alt.Y("row:N", sort=order, title=None))
    cells = base.mark_rect().encode(
        color=alt.Color("observed:Q", title=value_title, scale=alt.Scale(scheme="blues")),
        tooltip=["row:N", "column:N", alt.Tooltip("observed:Q", format=".3f"),
                 alt.Tooltip("null:Q", format=".3f"), alt.Tooltip("low:Q", format="+.3f"),
                 alt.Tooltip("high:Q", format="+.3f"), "verdict:N"])
    text = base.mark_text(fontSize=11).encode(text="label:N")
    return alt.layer(cells, text).properties(width=alt.Step(70), height=alt.Step(30),
                                             title=title)


def profile_chart(profile: pd.DataFrame, dims: Sequence[int]):
    """Mean magnitude of ``dims`` (and, as a band, the median over all dimensions) at every
    layer of the pretrained model: the outlier dimensions stand out at every layer."""
    import altair as alt
    dims = [int(d) for d in dims]
    sel = profile[profile["dim"].isin(dims)].assign(dimension=lambda d: d["dim"].astype(str))
    med = profile.groupby("layer", as_index=False)["mean_abs"].median().assign(dimension="median")
    df = pd.concat([sel[["layer", "dimension", "mean_abs"]], med], ignore_index=True)
    return alt.Chart(df).mark_line(point=True).encode(
        x=alt.X("layer:O", title="layer (0: embeddings)"),
        y=alt.Y("mean_abs:Q", title="mean |x_d| over the general corpus",
                scale=alt.Scale(type="symlog")),
        color=alt.Color("dimension:N", sort=[str(d) for d in dims] + ["median"]),
        tooltip=["layer", "dimension", alt.Tooltip("mean_abs:Q", format=".3f")]).properties(
        width=420, height=240)
