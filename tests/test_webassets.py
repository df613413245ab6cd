"""The offline Vega file matches what Altair's HTML output looks for, and _config.yml uses it.
The browser side is checked in tests/test_browser.py."""
import re
from pathlib import Path

import altair as alt
import pandas as pd
import pytest
import yaml

from bertdims.book import webassets

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    folder = tmp_path_factory.mktemp("static")
    names = webassets.write_static(folder / "_static")
    return folder / "_static", names


def _chart_html() -> str:
    alt.renderers.enable("default")
    bundle = alt.Chart(pd.DataFrame({"a": [1, 2]})).mark_point().encode(x="a")._repr_mimebundle_()
    return (bundle[0] if isinstance(bundle, tuple) else bundle)["text/html"]


def test_versions_are_the_ones_altair_html_compares():
    html = _chart_html()
    # The template turns "vega-lite" into the key "vegalite_version" before comparing.
    assert 'var key = `${lib.replace("-", "")}_version`;' in html
    found = dict(re.findall(r'maybeLoadScript\("([a-z-]+)", "([^"]+)"\)', html))
    versions = webassets.altair_js_versions()
    assert {f"{lib.replace('-', '')}_version": v for lib, v in found.items()} == versions


def test_write_static_returns_names_and_writes_wrapped_bundle(written):
    folder, names = written
    assert names == [webassets.JS_FILE]
    text = (folder / webassets.JS_FILE).read_text()
    assert len(text) > 500_000  # vega + vega-lite + vega-embed
    body = text.split("*/\n", 1)[1]
    assert body.startswith('(function () {\n"use strict";')  # bundle names stay private
    for name in ("vega", "vegaLite", "vegaEmbed"):
        assert re.search(rf"window\.{name}=[$\w]+;", text), name
    debug = re.search(r"window\.VEGA_DEBUG = Object\.assign\(window\.VEGA_DEBUG \|\| \{\}, (\{.*\})\);",
                      text)
    assert debug and yaml.safe_load(debug.group(1)) == webassets.altair_js_versions()
    assert 'define("vega-embed"' in text


def test_config_loads_the_file_in_head_without_network():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "off"
    assert config["only_build_toc_files"] is True
    sphinx = config["sphinx"]
    assert webassets.JS_FILE in sphinx["config"]["html_js_files"]
    assert "_static" in sphinx["config"]["html_static_path"]
    assert "bertdims.book.webassets" in sphinx["extra_extensions"]
    assert not config["launch_buttons"]["thebe"]
    assert not any(config["html"].get(b) for b in
                   ("use_repository_button", "use_edit_page_button", "use_issues_button"))


def test_check_page_rejects_missing_page(tmp_path):
    with pytest.raises(webassets.ConfigError, match="'page'"):
        webassets.check_page(tmp_path, "nope.html")


def test_mathjax_is_served_locally(written):
    static, _ = written
    assert (static / webassets.MATHJAX_SCRIPT).stat().st_size > 1_000_000
    sphinx = yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]["config"]
    assert sphinx["mathjax_path"] == webassets.MATHJAX_SCRIPT
    assert "://" not in sphinx["mathjax_path"]


def test_raw_tex_finds_untypeset_math_only():
    dom = ("<p>share $x^2$ here</p><pre>$not math$</pre><mjx-container>$ok$</mjx-container>"
           "<span>\\(y\\)</span><p>5 dollars</p>")
    assert webassets.raw_tex(dom) == ["$x^2$", "\\("]
    assert webassets.raw_tex("<p>plain text, no math</p>") == []
