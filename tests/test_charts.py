"""Chart builders: valid Vega-Lite that vl-convert renders, the encodings they promise, and
ConfigError on bad column names."""
import altair as alt
import numpy as np
import pandas as pd
import pytest
import vl_convert as vlc

from bertdims import ConfigError
from bertdims.book import charts


@pytest.fixture(scope="module")
def raw():
    rng = np.random.default_rng(0)
    rows = [{"layer": layer, "seed": seed, "task": task, "acc": 0.5 + 0.04 * layer + rng.normal(0, 0.02)}
            for layer in range(4) for seed in range(3) for task in ("sst", "sts")]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def summary(raw):
    out = raw.groupby(["layer", "task"]).acc.agg(["mean", "std"]).reset_index()
    return out.assign(lo=out["mean"] - out["std"], hi=out["mean"] + out["std"])


def _builders(raw, summary):
    return {
        "scatter": charts.scatter(raw, "layer", "acc", "task", title="t"),
        "scatter_facet": charts.scatter(raw, "layer", "acc", "task", facet="task"),
        "band_raw": charts.line_with_band(raw, "layer", "acc", "task"),
        "band_summary": charts.line_with_band(summary, "layer", "mean", "task", lo="lo", hi="hi"),
        "heatmap": charts.heatmap(summary, "layer", "task", "mean", ".3f"),
        "bar_raw": charts.bar_with_error(raw, "layer", "acc", color="task"),
        "bar_err": charts.bar_with_error(summary, "layer", "mean", err="std", color="task"),
        "histogram": charts.histogram(raw, "acc", 8, color="task"),
    }


def test_every_builder_renders(raw, summary):
    for name, chart in _builders(raw, summary).items():
        svg = vlc.vegalite_to_svg(chart.to_dict())
        assert svg.startswith("<svg") and 'class="marks"' in svg, name


def test_band_from_raw_rows_is_mean_and_stdev(raw):
    spec = charts.line_with_band(raw, "layer", "acc").to_dict()
    band, line = spec["layer"]
    assert band["mark"]["type"] == "errorband" and band["mark"]["extent"] == "stdev"
    assert line["encoding"]["y"]["aggregate"] == "mean"
    scene = vlc.vegalite_to_scenegraph(charts.line_with_band(raw, "layer", "acc").to_dict())
    drawn = _marks(scene["scenegraph"], {})          # rendered by Vega: one point per layer
    stats = raw.groupby("layer")["acc"].agg(["mean", "std"])      # std: the sample one (ddof=1)
    assert len(drawn["line"]) == len(drawn["area"]) == len(stats) == 4
    # the y scale is linear: fitted on the line's points, it maps the band's edges back to
    # mean - sd and mean + sd of each layer's raw rows
    line_y = np.array([item["y"] for item in drawn["line"]])
    slope, offset = np.polyfit(stats["mean"], line_y, 1)
    np.testing.assert_allclose(offset + slope * stats["mean"], line_y, atol=1e-6)
    low = (np.array([item["y"] for item in drawn["area"]]) - offset) / slope
    high = (np.array([item["y2"] for item in drawn["area"]]) - offset) / slope
    np.testing.assert_allclose(low, stats["mean"] - stats["std"], atol=1e-9)
    np.testing.assert_allclose(high, stats["mean"] + stats["std"], atol=1e-9)


def _marks(node, out: dict) -> dict:
    """The items of every mark of a Vega scenegraph, by mark type."""
    if isinstance(node, dict):
        if node.get("role") == "mark":
            out[node["marktype"]] = node["items"]
        for value in node.values():
            if isinstance(value, (dict, list)):
                _marks(value, out)
    elif isinstance(node, list):
        for value in node:
            _marks(value, out)
    return out


def test_types_inferred_and_overridable(raw):
    enc = charts.scatter(raw, "layer", "task").to_dict()["encoding"]
    assert enc["x"]["type"] == "quantitative" and enc["y"]["type"] == "nominal"
    assert enc["x"]["axis"]["tickMinStep"] == 1  # integer column: whole-number ticks
    enc = charts.scatter(raw, "layer:O", "acc").to_dict()["encoding"]
    assert enc["x"]["type"] == "ordinal"


def test_heatmap_labels_use_format(summary):
    spec = charts.heatmap(summary, "layer", "task", "mean", ".1%").to_dict()
    assert spec["layer"][1]["encoding"]["text"]["format"] == ".1%"


@pytest.mark.parametrize("call, param", [
    (lambda d: charts.scatter(d, "nope", "acc"), "x"),
    (lambda d: charts.line_with_band(d, "layer", "acc", group="missing"), "group"),
    (lambda d: charts.line_with_band(d, "layer", "acc", lo="acc"), "hi"),
    (lambda d: charts.heatmap(d, "layer", "task", "value"), "value"),
    (lambda d: charts.bar_with_error(d, "task", "acc", err="sd"), "err"),
    (lambda d: charts.histogram(d, "acc", bins=0), "bins"),
])
def test_bad_input_names_parameter(raw, call, param):
    with pytest.raises(ConfigError, match=f"'{param}'"):
        call(raw)


def test_enable_offline_sets_default_renderer_and_theme(raw):
    charts.enable_offline()
    assert alt.renderers.active == "default"
    assert alt.theme.active == charts.THEME
    big = pd.DataFrame({"x": np.arange(6000), "y": np.arange(6000)})
    bundle = charts.scatter(big, "x", "y")._repr_mimebundle_()
    html = (bundle[0] if isinstance(bundle, tuple) else bundle)["text/html"]
    assert "MaxRowsError" not in html and "vegaEmbed" in html


def test_heatmap_of_missing_values_has_a_valid_label_rule():
    """A matrix whose cells are all NaN (e.g. retention undefined) must still give a valid
    Vega expression: 'nan' in an expression breaks the chart in the browser."""
    import json

    import numpy as np
    import pandas as pd

    from bertdims.book import charts
    df = pd.DataFrame({"a": ["x", "y"], "b": ["u", "v"], "v": [np.nan, np.nan]})
    spec = json.dumps(charts.heatmap(df, "a", "b", "v").to_dict())
    assert "< nan" not in spec.lower()


# ------------------------------------------------------------ charts of chapters 2, 3 and 5
def _fake_runs():
    from types import SimpleNamespace
    runs = {}
    for task, metric in (("rotten_tomatoes", "accuracy"), ("stsb", "pearson")):
        for seed in (0, 1):
            hist = pd.DataFrame({"step": [2, 4], "epoch": [0.5, 1.0], "lr": [1e-4, 0.0],
                                 "train_loss": [0.7, 0.6], "dev_loss": [0.69, 0.65],
                                 f"dev_{metric}": [0.55 + seed / 100, 0.6]})
            runs[task, seed] = SimpleNamespace(config=SimpleNamespace(task=task), history=hist,
                                               info={"total_steps": 4})
    return runs


def test_trend_chart_orders_integer_layers_numerically():
    """The layer axis came out 2, 4, 6, 0, 1, 3, 5: a sort list of strings does not sort
    integer values. The sort list keeps the values' own type."""
    from bertdims.book.fewdims_charts import _natural_order, trend_chart
    df = pd.DataFrame({"layer": [2, 4, 6, 0, 1, 3, 5], "value": np.linspace(0.5, 0.8, 7)})
    spec = trend_chart(df, "layer", column=None).to_dict()
    sort = spec["layer"][0]["encoding"]["x"]["sort"]
    assert sort == [0, 1, 2, 3, 4, 5, 6] and all(isinstance(v, int) for v in sort)
    assert _natural_order(pd.Series(["10", "2", "all", "1"])) == ["1", "2", "10", "all"]
    spec = trend_chart(df, "layer", column=None, x_type="Q").to_dict()
    assert spec["layer"][0]["encoding"]["x"]["type"] == "quantitative"


def test_history_frame_and_curve_chart():
    from bertdims.book.fewdims_charts import curve_chart, history_frame
    hist = history_frame(_fake_runs(), ["task", "seed"])
    assert list(hist.columns[:2]) == ["task", "seed"] and len(hist) == 8
    assert hist["dev_score"].notna().all() and set(hist["metric"]) == {"accuracy", "pearson"}
    assert (hist["total_steps"] == 4).all()
    spec = curve_chart(hist).to_dict()
    assert len(spec["vconcat"]) == 2 and spec["vconcat"][0]["facet"]["field"] == "task"
    svg = vlc.vegalite_to_svg(spec)
    assert svg.startswith("<svg") and 'class="marks"' in svg
    with pytest.raises(ConfigError, match="'names'"):
        history_frame(_fake_runs(), ["task"])
    with pytest.raises(ConfigError, match="'history'"):
        curve_chart(hist.drop(columns="dev_loss"))


def test_scores_frame_scores_each_row():
    from bertdims.book.fewdims_charts import scores_frame
    labels = np.array([0, 1, 1, 0])
    preds = {3: np.array([[0, 1, 1, 0], [1, 1, 1, 1]]), "probe": np.array([[0, 1, 0, 0]])}
    df = scores_frame(preds, labels, "accuracy", "layer", seeds=[7, 9])
    assert df[df.layer == 3]["seed"].tolist() == [7, 9]
    assert df[df.layer == 3]["value"].tolist() == [1.0, 0.5]
    assert df[df.layer == "probe"][["seed", "value"]].values.tolist() == [[0, 0.75]]
