"""The whole book with the smoke preset: every chapter executes, `jupyter-book build -W`
succeeds, and the first chapter's chart renders in a real browser."""
import os
from pathlib import Path

import pytest

from bertdims.book import webassets
from bertdims.book.chapters import build_book, chapter_stems

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.browser
def test_smoke_book_builds_and_first_chapter_chart_renders(tmp_path):
    index = build_book("smoke", root=ROOT, progress=False)
    assert index == ROOT / "_build" / "html" / "index.html" and index.exists()
    html = ROOT / "_build" / "html"
    for stem in chapter_stems(ROOT):
        assert (html / "book" / f"{stem}.html").exists(), stem
    if not Path(webassets.CHROMIUM).exists() and not (os.environ.get("CI")
                                                    or os.environ.get("BERTDIMS_REQUIRE_BROWSER")):
        pytest.skip("no chromium here: run .ci/install-browser.sh")
    report = webassets.check_page(html, "book/01_model_and_tasks.html",
                                  screenshot=tmp_path / "chapter1.png")
    assert len(report.charts) >= 1, "the first chapter has no chart"
    assert sorted(report.rendered) == sorted(report.charts), report
    assert not report.errors, report.errors
    assert report.ok
    # every other page (the scorecard included): its charts render, no script fails, no raw TeX
    broken = {}
    for stem in chapter_stems(ROOT):
        if stem == "01_model_and_tasks":
            continue
        page = webassets.check_page(html, f"book/{stem}.html")
        if page.errors or sorted(page.rendered) != sorted(page.charts) or page.raw_tex:
            broken[stem] = (len(page.charts), len(page.rendered), page.errors, page.raw_tex)
    assert not broken, broken
    scorecard = (html / "book" / "scorecard.html").read_text()
    assert "bertdims-scorecard" in scorecard          # the claims table rendered
