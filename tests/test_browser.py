"""Real-browser check: Altair charts in the built book render with no network.

Builds a two-page book in a temporary folder (an executed notebook with two Altair charts,
the project's ``_config.yml``, ``bertdims.book.webassets.write_static``), opens the chart page in
headless Debian Chromium (``.ci/install-browser.sh``) with every host name unresolvable, and
reads the DOM after scripts ran. Two negative controls show the check can fail: without the
bundle, and with a ``VEGA_DEBUG`` whose versions do not match Altair's, no chart renders.
A third page holds ``$...$`` math: MathJax from ``_static/`` typesets it (no page shows raw
TeX), and without the local MathJax the TeX stays visible (the check can fail).
"""
from __future__ import annotations

import shutil
import subprocess
import os
import sys
from pathlib import Path

import pytest
from PIL import Image

from bertdims.book import webassets

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
PAGE = "book/chart.html"
MATH_PAGE = "book/math.html"
MATH = ("# Math\n\nThe share of variance $\\lambda_k / \\sum_j \\lambda_j$ of component $k$, and "
        "a display:\n\n$$\n\\hat{y} = \\operatorname{softmax}(W h_{[CLS]} + b)\n$$\n")

CELLS = [
    "import altair as alt\nimport pandas as pd\nfrom bertdims.book import charts\ncharts.enable_offline()",
    "df = pd.DataFrame({'layer': [l for l in range(6) for s in range(3)],\n"
    "                   'seed': [s for l in range(6) for s in range(3)]})\n"
    "df['accuracy'] = 0.5 + 0.05 * df['layer'] + 0.01 * df['seed']",
    "charts.line_with_band(df, 'layer', 'accuracy', title='band')",
    "alt.Chart(df).mark_point().encode(x='layer', y='accuracy', tooltip=['seed'])",
]


def _require_chromium() -> None:
    if not Path(webassets.CHROMIUM).exists():
        if os.environ.get("CI") or os.environ.get("BERTDIMS_REQUIRE_BROWSER"):
            pytest.fail(f"{webassets.CHROMIUM} missing although a browser is required here: "
                        "run .ci/install-browser.sh")
        pytest.skip(f"{webassets.CHROMIUM} missing: run .ci/install-browser.sh")


def _jupyter_book() -> str:
    exe = Path(sys.executable).with_name("jupyter-book")
    return str(exe) if exe.exists() else "jupyter-book"


@pytest.fixture(scope="module")
def html_root(tmp_path_factory) -> Path:
    """Build the test book the way the project's runner does; returns ``_build/html``."""
    _require_chromium()
    import nbformat
    from nbclient import NotebookClient

    work = tmp_path_factory.mktemp("book")
    src = work / "src"
    (src / "book").mkdir(parents=True)
    shutil.copyfile(ROOT / "_config.yml", src / "_config.yml")
    (src / "_toc.yml").write_text("format: jb-book\nroot: book/intro\n"
                                  "chapters:\n  - file: book/chart\n  - file: book/math\n")
    (src / "book" / "intro.md").write_text("# Browser check\n\nA page without charts.\n")
    (src / "book" / "math.md").write_text(MATH)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Chart")]
    nb.cells += [nbformat.v4.new_code_cell(code) for code in CELLS]
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    nbformat.write(nb, src / "book" / "chart.ipynb")
    assert webassets.write_static(src / "_static") == [webassets.JS_FILE]
    proc = subprocess.run([_jupyter_book(), "build", str(src), "--path-output", str(work), "-W"],
                          cwd=work, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    html = work / "_build" / "html"
    assert (html / PAGE).is_file(), sorted(p.name for p in html.iterdir())
    return html


def _variant(html_root: Path, tmp_path: Path, bundle_text: str) -> Path:
    """A copy of the built book whose offline bundle file holds ``bundle_text``."""
    copy = tmp_path / "html"
    shutil.copytree(html_root, copy)
    (copy / "_static" / webassets.JS_FILE).write_text(bundle_text)
    return copy


def test_page_loads_bundle_before_chart_scripts(html_root):
    page = (html_root / PAGE).read_text()
    tag = page.index(f'src="../_static/{webassets.JS_FILE}')
    assert tag < page.index('<div id="altair-viz-'), "bundle must load before the chart scripts"
    script = page[page.rindex("<script", 0, tag):tag]
    assert "defer" not in script and "async" not in script, script
    assert "require.js" not in page and "requirejs" not in page.split("<body")[0]
    # jupyter-book 1.0.4 repeats this inline script; bertdims.book.webassets removes the copy.
    assert page.count("const THEBE_JS_URL") <= 1


def test_charts_render_offline(html_root, tmp_path):
    shot = tmp_path / "chart.png"
    report = webassets.check_page(html_root, PAGE, screenshot=shot)
    assert len(report.charts) == 2, report.dom[:2000]
    assert report.rendered == report.charts, report.console
    assert report.errors == [], report.errors
    assert report.ok
    assert shot.stat().st_size > 10_000
    image = Image.open(shot).convert("RGB")
    # Vega's first category colour (#4c78a8) draws the lines and points of both charts.
    blue = sum(n for n, (r, g, b) in image.getcolors(maxcolors=1 << 24)
               if abs(r - 76) + abs(g - 120) + abs(b - 168) < 40)
    assert blue > 500, f"only {blue} chart-coloured pixels in the screenshot"


def test_check_fails_without_bundle(html_root, tmp_path):
    report = webassets.check_page(_variant(html_root, tmp_path, ""), PAGE)
    assert not report.ok
    assert len(report.charts) == 2 and report.rendered == []
    assert any("Error loading script" in e for e in report.errors), report.console


def test_check_fails_when_versions_differ(html_root, tmp_path):
    text = (html_root / "_static" / webassets.JS_FILE).read_text()
    versions = webassets.altair_js_versions()
    wrong = text.replace(f'"vegalite_version": "{versions["vegalite_version"]}"',
                         '"vegalite_version": "0.0.0"')
    assert wrong != text
    report = webassets.check_page(_variant(html_root, tmp_path, wrong), PAGE)
    assert report.rendered == [] and not report.ok
    assert any("vega-lite" in e for e in report.errors), report.console


def test_math_renders_offline(html_root):
    page = (html_root / MATH_PAGE).read_text()
    assert f"_static/{webassets.MATHJAX_SCRIPT}" in page and "cdn" not in page.lower(), page[:3000]
    report = webassets.check_page(html_root, MATH_PAGE)
    assert report.raw_tex == [], report.raw_tex
    assert report.dom.count("<mjx-container") == 3, report.dom[:3000]
    assert report.errors == [], report.errors


def test_no_page_shows_raw_tex(html_root):
    pages = sorted(p.relative_to(html_root).as_posix() for p in html_root.rglob("*.html")
                   if "_static" not in p.parts and p.name not in ("search.html", "genindex.html"))
    assert MATH_PAGE in pages and PAGE in pages, pages
    for page in pages:
        assert webassets.check_page(html_root, page).raw_tex == [], page


def test_raw_tex_is_seen_without_local_mathjax(html_root, tmp_path):
    copy = tmp_path / "html"
    shutil.copytree(html_root, copy)
    shutil.rmtree(copy / "_static" / "mathjax")
    report = webassets.check_page(copy, MATH_PAGE)
    assert report.raw_tex, "without MathJax the TeX must be visible"
    # Sphinx writes the two inline formulas as \(...\) and the display one as \[...\]
    assert report.raw_tex == ["\\(", "\\(", "\\["], report.raw_tex
