"""Offline JavaScript for the book: Vega, Vega-Lite and Vega-Embed served from ``_static/``.

Altair's default renderer emits, for every chart, an HTML snippet whose script compares
``VEGA_DEBUG.vega_version`` / ``vegalite_version`` / ``vegaembed_version`` with the versions it
was built for; when they match it calls the global ``vegaEmbed`` right away, otherwise it adds
``<script>`` tags pointing at a CDN (or, when an AMD loader such as require.js is on the page,
asks that loader for the CDN files). Without network the chart stays empty.

:func:`write_static` writes one file, :data:`JS_FILE`, that the book loads in ``<head>`` (a
plain blocking script, so it runs before the notebook output scripts in ``<body>``). It holds
the bundle that ``vl_convert.javascript_bundle()`` builds, wrapped in a function so that the
bundle's top-level names do not leak into the page, and exposes only

- ``window.vega``, ``window.vegaLite``, ``window.vegaEmbed``;
- ``window.VEGA_DEBUG`` with the exact version strings Altair's template compares against
  (read from Altair, see :func:`altair_js_versions`);
- when an AMD loader is already present, the named modules ``vega``, ``vega-lite`` and
  ``vega-embed``, so that the template's ``require(["vega-embed"], ...)`` branch also resolves
  to the local copy.

The book's ``_config.yml`` lists :data:`JS_FILE` under ``sphinx: config: html_js_files`` and
loads this module as a Sphinx extension (``sphinx: extra_extensions``), see :func:`setup`.

Math (``$...$`` in Markdown) is typeset by MathJax 3 served from ``_static/`` too:
:func:`write_static` copies :data:`MATHJAX_SCRIPT` (TeX input, SVG output, every TeX package
built in, so no font files and nothing loaded on demand once the menu is off) out of the
``django-static-mathjax`` package; ``_config.yml`` points ``mathjax_path`` at it and sets
``mathjax3_config`` to ``{options: {enableMenu: false}}``.
"""
from __future__ import annotations

import functools
import http.server
import json
import re
import subprocess
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..core._validate import ConfigError, bad

JS_FILE = "bertdims-vega.js"
"""Name of the file written into the book's ``_static/`` folder (keep in sync with _config.yml)."""

MATHJAX_SCRIPT = "mathjax/tex-svg-full.js"
"""MathJax, relative to ``_static/`` (``sphinx: config: mathjax_path`` in _config.yml)."""
MATHJAX_PACKAGE = ("mathjax", "django-static-mathjax==3.2.2.1")   # import name, pip requirement
_MATHJAX_PARTS = ("tex-svg-full.js",)   # all TeX packages, SVG output: no fonts, nothing lazy

# Bundled by vl-convert (ES module imports named vega, vegaLite, vegaEmbed); assigns globals.
_SNIPPET = "window.vega = vega;\nwindow.vegaLite = vegaLite;\nwindow.vegaEmbed = vegaEmbed;\n"

_AMD_SHIM = """\
if (typeof define === "function" && define.amd) {
  define("vega", [], function () { return window.vega; });
  define("vega-lite", [], function () { return window.vegaLite; });
  define("vega-embed", [], function () { return window.vegaEmbed; });
}
"""


def altair_js_versions() -> dict[str, str]:
    """The version strings Altair's HTML template compares ``VEGA_DEBUG`` against.

    Returns
    -------
    dict
        ``{"vega_version": "6", "vegalite_version": "6.4.1", "vegaembed_version": "7"}``
        for altair 6.3 (the keys are the template's ``VEGA_DEBUG`` keys).
    """
    import altair as alt

    return {"vega_version": alt.VEGA_VERSION,
            "vegalite_version": alt.VEGALITE_VERSION,
            "vegaembed_version": alt.VEGAEMBED_VERSION}


def _bundle_vl_version(vegalite_version: str) -> str:
    """The vl-convert Vega-Lite version (``"6.4"``) matching Altair's (``"6.4.1"``)."""
    import vl_convert as vlc

    available = list(vlc.get_vegalite_versions())
    major_minor = ".".join(vegalite_version.split(".")[:2])
    if major_minor not in available:
        raise ConfigError(
            f"altair renders Vega-Lite {vegalite_version!r} but vl-convert-python "
            f"{vlc.__version__} bundles only {available}; install a vl-convert-python that "
            "ships this Vega-Lite version (see requirements/constraints.txt)")
    return major_minor


def _check_majors(versions: dict[str, str]) -> None:
    """Vega and Vega-Embed in the bundle must have the major versions Altair asks for."""
    import vl_convert as vlc

    for key, have in [("vega_version", vlc.get_vega_version()),
                      ("vegaembed_version", vlc.get_vega_embed_version())]:
        want = versions[key]
        if have.split(".")[: len(want.split("."))] != want.split("."):
            raise ConfigError(
                f"altair expects {key} {want!r} but vl-convert-python {vlc.__version__} "
                f"bundles {have!r}; pin matching versions of altair and vl-convert-python")


def offline_js() -> str:
    """The text of :data:`JS_FILE`: the wrapped bundle, ``VEGA_DEBUG`` and the AMD shim.

    Building the bundle takes a few seconds (vl-convert runs a bundler).
    """
    import vl_convert as vlc

    versions = altair_js_versions()
    _check_majors(versions)
    bundle = vlc.javascript_bundle(_SNIPPET, vl_version=_bundle_vl_version(versions["vegalite_version"]))
    header = (f"/* bertdims: Vega {vlc.get_vega_version()}, Vega-Lite "
              f"{versions['vegalite_version']}, Vega-Embed {vlc.get_vega_embed_version()} "
              f"bundled by vl-convert-python {vlc.__version__} for offline Altair charts. */\n")
    debug = (f"window.VEGA_DEBUG = Object.assign(window.VEGA_DEBUG || {{}}, "
             f"{json.dumps(versions, sort_keys=True)});\n")
    return header + '(function () {\n"use strict";\n' + bundle + "\n})();\n" + debug + _AMD_SHIM


def write_static(static_dir: Path) -> list[str]:
    """Write the offline Vega bundle into ``static_dir`` (created if missing).

    Parameters
    ----------
    static_dir : Path
        The book's ``_static`` folder (next to ``_config.yml``).

    Returns
    -------
    list of str
        File names relative to ``static_dir``, as listed in ``html_js_files``.
    """
    static_dir = Path(static_dir)
    static_dir.mkdir(parents=True, exist_ok=True)
    (static_dir / JS_FILE).write_text(offline_js(), encoding="utf-8")
    write_mathjax(static_dir)
    return [JS_FILE]


def mathjax_source() -> Path:
    """The ``es5`` folder of MathJax 3 inside the installed ``django-static-mathjax``."""
    import importlib.util

    module, requirement = MATHJAX_PACKAGE
    spec = importlib.util.find_spec(module)
    folder = (Path(list(spec.submodule_search_locations)[0]) / "static" / "mathjax" / "es5"
              if spec and spec.submodule_search_locations else None)
    if folder is None or not (folder / Path(MATHJAX_SCRIPT).name).is_file():
        raise ConfigError(f"MathJax for the offline book comes from the package {requirement!r}; "
                          f"install it with: pip install --no-deps {requirement}")
    return folder


def write_mathjax(static_dir: Path) -> Path:
    """Copy MathJax into ``static_dir/mathjax/`` (skipped when already there); returns the script."""
    import shutil

    source, target = mathjax_source(), Path(static_dir) / Path(MATHJAX_SCRIPT).parent
    for part in _MATHJAX_PARTS:
        src, dst = source / part, target / part
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        elif not dst.is_file() or dst.stat().st_size != src.stat().st_size:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    return Path(static_dir) / MATHJAX_SCRIPT


# --------------------------------------------------------------------------------------------
# Real-browser check of a built page (headless Debian chromium, no network)

CHROMIUM = "/usr/bin/chromium"
"""Default browser binary; ``.ci/install-browser.sh`` installs it."""

_CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--enable-logging=stderr", "--v=0",
    # Every host name fails to resolve: the page must work with what the book ships.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
_CONSOLE_ERROR = re.compile(r"Uncaught|Failed to load resource|Error loading script|net::ERR_"
                            r"|Javascript Error|SyntaxError|TypeError|ReferenceError")


@dataclass
class PageReport:
    """What headless Chromium saw on one page.

    Attributes
    ----------
    charts : list of str
        ids of the Altair output divs (``altair-viz-...``) on the page.
    rendered : list of str
        the ids among them whose div holds a Vega scenegraph (``class="marks"`` svg or canvas).
    errors : list of str
        console messages that report a script error or a failed load.
    console : list of str
        every console message.
    dom : str
        the DOM after scripts ran (``--dump-dom``).
    raw_tex : list of str
        TeX left untypeset in the page's visible text (``$...$``, ``\\(``, ``\\[``, ``$$``),
        outside code blocks and typeset math (:func:`raw_tex`).
    """

    charts: list[str]
    rendered: list[str]
    errors: list[str]
    console: list[str]
    dom: str = field(repr=False)
    raw_tex: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """At least one chart, every chart rendered, no script error."""
        return bool(self.charts) and self.rendered == self.charts and not self.errors


@contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """Serve ``folder`` on ``127.0.0.1`` (a free port) in a thread; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        pass


def _chromium(url: str, extra: list[str], chromium: str, budget_ms: int,
              timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="bertdims-chromium-") as profile:
        cmd = [chromium, *_CHROMIUM_FLAGS, f"--user-data-dir={profile}",
               f"--virtual-time-budget={budget_ms}", *extra, url]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def check_page(html_root: Path, page: str, *, chromium: str = CHROMIUM, budget_ms: int = 8000,
               screenshot: Path | None = None, window: tuple[int, int] = (1200, 1600),
               timeout: float = 120) -> PageReport:
    """Open a page of a built book in headless Chromium and report what rendered.

    The folder is served over HTTP on 127.0.0.1 and every other host is unresolvable, so a
    chart renders only if the book ships its JavaScript.

    Parameters
    ----------
    html_root : Path
        The built HTML folder (``_build/html``).
    page : str
        Path of the page inside it, e.g. ``"book/01_model_and_tasks.html"``.
    screenshot : Path, optional
        Also write a PNG of the page (``window`` = width, height in pixels).
    """
    html_root = Path(html_root)
    if not (html_root / page).is_file():
        raise bad("page", page, f"expected an HTML file inside {html_root}")
    if not Path(chromium).exists():
        raise FileNotFoundError(f"{chromium} not found; run .ci/install-browser.sh")
    with serve_folder(html_root) as base:
        url = f"{base}/{page}"
        run = _chromium(url, ["--dump-dom"], chromium, budget_ms, timeout)
        if screenshot is not None:
            shot = _chromium(url, [f"--screenshot={Path(screenshot).resolve()}",
                                   f"--window-size={window[0]},{window[1]}"],
                             chromium, budget_ms, timeout)
            if not Path(screenshot).is_file():
                raise RuntimeError(f"chromium wrote no screenshot: {shot.stderr[-2000:]}")
    console = [line.split("] ", 1)[-1] for line in run.stderr.splitlines() if ":CONSOLE" in line]
    charts, rendered = [], []
    for chart_id, inner in _chart_divs(run.stdout):
        charts.append(chart_id)
        if re.search(r'<(svg|canvas)[^>]*class="marks"', inner):
            rendered.append(chart_id)
    errors = [c for c in console if _CONSOLE_ERROR.search(c)]
    return PageReport(charts, rendered, errors, console, run.stdout, raw_tex(run.stdout))


_HIDDEN = re.compile(r"<(script|style|pre|code|mjx-container|mjx-assistive-mml|svg|textarea|head)"
                     r"\b[^>]*>.*?</\1>", re.S | re.I)
_TEX = re.compile(r"\$\$|\$[^$\s][^$\n]{0,200}?\$|\\\(|\\\[|\\begin\{")


def raw_tex(dom: str) -> list[str]:
    """TeX a reader would see as source: math delimiters in the visible text of a dumped DOM
    (scripts, styles, code blocks and MathJax's typeset output are left out)."""
    import html

    text = _HIDDEN.sub(" ", dom)
    text = html.unescape(re.sub(r"<[^>]+>", " ", text))
    return [m.group(0)[:60] for m in _TEX.finditer(text)]


def _chart_divs(dom: str) -> Iterator[tuple[str, str]]:
    """(id, inner HTML) of each Altair output div in a dumped DOM."""
    starts = [(m.start(), m.group(1)) for m in re.finditer(r'<div id="(altair-viz-[0-9a-f]+)"', dom)]
    for i, (start, chart_id) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(dom)
        yield chart_id, dom[start:end]


# --------------------------------------------------------------------------------------------
# Sphinx extension (``sphinx: extra_extensions: [bertdims.book.webassets]`` in _config.yml)


def _check_bundle_present(app) -> None:
    """Warn (an error under ``-W``) when :data:`JS_FILE` is in no ``html_static_path`` folder."""
    if app.builder.format != "html":
        return
    folders = [Path(app.confdir) / p for p in app.config.html_static_path]
    from sphinx.util import logging
    if not any((folder / JS_FILE).is_file() for folder in folders):
        logging.getLogger(__name__).warning(
            "%s is missing from html_static_path %s: Altair charts would load Vega from a CDN. "
            "Call bertdims.book.webassets.write_static(<book>/_static) before building.",
            JS_FILE, list(app.config.html_static_path))
    mathjax = getattr(app.config, "mathjax_path", "") or ""
    if "://" in mathjax or not any((folder / mathjax).is_file() for folder in folders):
        logging.getLogger(__name__).warning(
            "mathjax_path %r is not a file in html_static_path %s: math would load MathJax from "
            "a CDN. Set mathjax_path: %s and call bertdims.book.webassets.write_static(<book>/_static).",
            mathjax, list(app.config.html_static_path), MATHJAX_SCRIPT)


def _dedupe_scripts(app, pagename, templatename, context, doctree) -> None:
    """Drop repeated inline scripts from a page.

    Sphinx 7.4 registers an inline script added with ``app.add_js_file(None, body=...)``
    twice (once with filename ``None``, once with ``''``), so jupyter-book 1.0.4 pages repeat
    ``const THEBE_JS_URL = ...`` and the second copy throws a SyntaxError in the browser. A
    local ``mathjax_path`` is likewise added twice, and a second MathJax throws.
    """
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    seen, kept = set(), []
    for js in scripts:
        attrs = tuple(sorted(getattr(js, "attributes", {}).items()))
        filename = getattr(js, "filename", str(js)) or ""
        # a file loads once, whatever its attributes (MathJax is added both by sphinx.ext.mathjax
        # with defer and again by myst-nb when mathjax_path is local); inline scripts by body
        key = filename.split("?")[0] if filename else ("", attrs)
        if key not in seen:
            seen.add(key)
            kept.append(js)
    scripts[:] = kept


def setup(app) -> dict:
    """Sphinx entry point: check the offline bundle is staged; de-duplicate inline scripts."""
    app.connect("builder-inited", _check_bundle_present)
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
