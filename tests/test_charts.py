"""Chart builders: valid Vega-Lite that vl-convert renders, the encodings they promise, and
ConfigError on bad column names."""
import altair as alt
import numpy as np
import pandas as pd
import pytest
import vl_convert as vlc

from bertdims import ConfigError, charts


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
    assert scene  # compiles with vega


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

    from bertdims import charts
    df = pd.DataFrame({"a": ["x", "y"], "b": ["u", "v"], "v": [np.nan, np.nan]})
    spec = json.dumps(charts.heatmap(df, "a", "b", "v").to_dict())
    assert "< nan" not in spec.lower()
