"""The scorecard: verdicts recorded by chapters, read back per preset; the claims registry."""
from __future__ import annotations

import json
import math
from pathlib import Path

import nbformat
import pytest

from bertdims.core._validate import ConfigError
from bertdims.book.claims import CLAIMS, Claim, claim_by_id, claims_table
from bertdims.book.scorecard import (NOT_RUN, chapter_params, forest_chart, preset_params,
                                record_verdict, scorecard_html, scorecard_table, verdict_counts)
from bertdims.core.stats import CLAIM_KINDS, SCALES, Effect, verdict_of
from bertdims.core.store import ResultStore

REPO = Path(__file__).resolve().parents[1]

ALPHA = 'model = "tiny"\nseeds = [0, 1, 2]\nmax_train_samples = 100\nepochs = 1.0\nmargin = 0.02\n'
BETA = 'model = "tiny"\nseeds = [0]\nlr = 1e-4\n'


def _notebook(path: Path, params: str) -> None:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# t"), cell, nbformat.v4.new_code_cell("x = 1")]
    nbformat.write(nb, str(path))


@pytest.fixture()
def book(tmp_path) -> Path:
    """A two-chapter book: 01_alpha (with smoke and paper overrides), 02_beta."""
    root = tmp_path / "book_root"
    (root / "book").mkdir(parents=True)
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n"
                                   "  - file: book/01_alpha\n  - file: book/02_beta\n")
    _notebook(root / "book" / "01_alpha.ipynb", ALPHA)
    _notebook(root / "book" / "02_beta.ipynb", BETA)
    (root / "book" / "presets.yml").write_text(
        "01_alpha:\n  smoke:\n    seeds: [0]\n    max_train_samples: 8\n"
        "  paper:\n    model: big\n    epochs: 3\n")
    return root


def _claim(cid: str, chapter: str, kind: str = "equivalent", margin: float = 0.02) -> Claim:
    return Claim(cid, "p1", "abstract", "some words", "a number", chapter, kind, "difference",
                 margin, "a reason", "A: x, B: y")


FAKE = (_claim("c-eq", "01_alpha"), _claim("c-better", "01_alpha", "better", 0.0),
        _claim("c-beta", "02_beta", "noninferior"), _claim("c-gone", "09_missing"))


def _effect(low: float, high: float, kind: str = "equivalent", margin: float = 0.02,
            seeds: int = 3) -> Effect:
    return Effect(label="A - B", metric="accuracy", scale="difference", estimate=(low + high) / 2,
                  low=low, high=high, confidence=0.95, claim=kind, margin=margin,
                  verdict=verdict_of(low, high, kind, margin), p_value=None, n_seeds=seeds,
                  n_examples=500)


def _namespace(book: Path, stem: str, preset: str) -> dict:
    """What a chapter's globals() hold after papermill injected ``preset``'s parameters."""
    ns = {"__name__": "__main__", "store": object(), "pd": object()}
    ns.update(preset_params(stem, preset, book))
    return ns


# ---------------------------------------------------------------------------- parameters
def test_chapter_params_reads_exactly_the_declared_names(book):
    ns = {"model": "tiny", "seeds": (0, 1), "max_train_samples": 100, "epochs": 2,
          "margin": 0.05, "other": 3, "store": object()}
    params = chapter_params(ns, "01_alpha", book)
    assert params == {"model": "tiny", "seeds": [0, 1], "max_train_samples": 100,
                      "epochs": 2.0, "margin": 0.05}
    assert isinstance(params["epochs"], float)          # typed as the parameters cell types it
    del ns["margin"]
    with pytest.raises(ConfigError, match="margin"):
        chapter_params(ns, "01_alpha", book)


def test_preset_params_apply_the_presets_overrides(book):
    assert preset_params("01_alpha", "default", book)["seeds"] == [0, 1, 2]
    smoke = preset_params("01_alpha", "smoke", book)
    assert (smoke["seeds"], smoke["max_train_samples"], smoke["model"]) == ([0], 8, "tiny")
    assert preset_params("01_alpha", "paper", book)["epochs"] == 3.0


# ------------------------------------------------------------------------------- records
def test_recorded_verdicts_are_read_back_for_their_preset_only(book, tmp_path):
    store = ResultStore(tmp_path / "results")
    default = chapter_params(_namespace(book, "01_alpha", "default"), "01_alpha", book)
    record_verdict(store, "01_alpha", "c-eq", _effect(-0.01, 0.015), default, claims=FAKE)
    smoke = chapter_params(_namespace(book, "01_alpha", "smoke"), "01_alpha", book)
    record_verdict(store, "01_alpha", "c-better", _effect(-0.01, 0.03, "better", 0.0, seeds=1),
                   smoke, {"model": "tiny (smoke)"}, claims=FAKE)

    table = scorecard_table(store, "default", root=book, claims=FAKE).set_index("claim")
    assert list(table.index) == ["c-eq", "c-better", "c-beta", "c-gone"]
    eq = table.loc["c-eq"]
    assert eq["verdict"] == "reproduced"
    assert (eq["low"], eq["high"], eq["margin"]) == (-0.01, 0.015, 0.02)
    assert eq["scale"] == "tiny, 100 train, 500 test, 3 seeds"
    assert eq["link"] == "01_alpha.html" and eq["sentence"].endswith("-> reproduced")
    for cid in ("c-better", "c-beta", "c-gone"):          # not run with the default preset
        assert table.loc[cid, "verdict"] == NOT_RUN
        assert math.isnan(table.loc[cid, "estimate"])

    smoke_table = scorecard_table(store, "smoke", root=book, claims=FAKE).set_index("claim")
    assert smoke_table.loc["c-eq", "verdict"] == NOT_RUN
    assert smoke_table.loc["c-better", "verdict"] == "inconclusive"
    assert smoke_table.loc["c-better", "scale"] == "tiny (smoke), 8 train, 500 test, 1 seed"
    assert verdict_counts(smoke_table) == {"reproduced": 0, "not reproduced": 0,
                                           "inconclusive": 1, NOT_RUN: 3}


def test_a_rerun_with_the_same_parameters_replaces_the_record(book, tmp_path):
    store = ResultStore(tmp_path / "results")
    params = preset_params("02_beta", "default", book)
    record_verdict(store, "02_beta", "c-beta", _effect(-0.05, -0.03, "noninferior"), params,
                   claims=FAKE)
    record_verdict(store, "02_beta", "c-beta", _effect(-0.01, 0.01, "noninferior"), params,
                   claims=FAKE)
    row = scorecard_table(store, root=book, claims=FAKE).set_index("claim").loc["c-beta"]
    assert (row["low"], row["verdict"]) == (-0.01, "reproduced")
    stored = store.runs("verdict")
    assert len(stored) == 1
    config = json.loads((Path(stored.path[0]) / "config.json").read_text())
    assert config == {"chapter": "02_beta", "claim": "c-beta", "params": params}


def test_record_verdict_checks_its_input(book, tmp_path):
    store = ResultStore(tmp_path / "results")
    params = preset_params("01_alpha", "default", book)
    with pytest.raises(ConfigError, match="'chapter'"):
        record_verdict(store, "02_beta", "c-eq", _effect(0, 0.01), params, claims=FAKE)
    with pytest.raises(ConfigError, match="'claim_id'"):
        record_verdict(store, "01_alpha", "c-nope", _effect(0, 0.01), params, claims=FAKE)
    with pytest.raises(ConfigError, match="'effect'"):
        record_verdict(store, "01_alpha", "c-eq", {"low": 0}, params, claims=FAKE)
    with pytest.raises(ConfigError, match="'preset'"):
        scorecard_table(store, "huge", root=book, claims=FAKE)


# ----------------------------------------------------------------------------- rendering
def test_forest_chart_and_html_build_with_run_and_not_run_rows(book, tmp_path):
    store = ResultStore(tmp_path / "results")
    record_verdict(store, "01_alpha", "c-eq", _effect(0.03, 0.05), preset_params("01_alpha",
                   "default", book), claims=FAKE)
    table = scorecard_table(store, root=book, claims=FAKE)
    spec = forest_chart(table, title="t").to_dict()
    assert spec["facet"]["row"]["field"] == "claim"
    assert len(spec["spec"]["layer"]) == 6
    text = scorecard_html(table)
    assert '<a href="01_alpha.html">01</a>' in text and "not reproduced" in text
    assert "+0.040 [+0.030, +0.050]" in text
    with pytest.raises(ConfigError, match="'table'"):
        forest_chart(table.drop(columns=["verdict"]))


# ------------------------------------------------------------------------- the registry
def test_registry_is_complete_and_consistent():
    ids = [c.id for c in CLAIMS]
    assert len(ids) == len(set(ids))
    # every experiment chapter (02-11) tests at least one claim
    assert {c.chapter[:2] for c in CLAIMS} == {f"{i:02d}" for i in range(2, 12)}
    for c in CLAIMS:
        assert c.claim in CLAIM_KINDS and c.scale in SCALES
        assert c.paper in ("p1", "p2", "p3", "book") and c.id.startswith(c.paper + "-")
        assert c.words and c.paper_number and c.margin_reason and c.compares
        verdict_of(-1e-9, 1e-9, c.claim, c.default_margin)      # a margin the rules accept
    assert claim_by_id("p1-tokens-equivalent").chapter == "03_token_and_layer"
    with pytest.raises(ConfigError, match="'claim_id'"):
        claim_by_id("p9-nothing")
    assert list(claims_table().id) == ids


def test_every_claim_names_a_chapter_of_the_book_and_the_real_table_lists_them(tmp_path):
    from bertdims.book.chapters import chapter_stems

    stems = set(chapter_stems(REPO))
    assert {c.chapter for c in CLAIMS} <= stems
    table = scorecard_table(ResultStore(tmp_path / "results"), "default", root=REPO)
    assert list(table.claim) == [c.id for c in CLAIMS]
    assert set(table.verdict) == {NOT_RUN}


def test_a_claim_tested_per_task_is_recorded_and_glued_at_its_least_favourable_task(tmp_path, monkeypatch):
    from bertdims.book import report
    from bertdims.book.scorecard import KIND
    glued = {}
    monkeypatch.setattr(report, "glue_values", lambda **values: glued.update(values))
    store = ResultStore(tmp_path / "results")
    effects = {"a": _effect(0.01, 0.05, "better", 0.0), "b": _effect(-0.02, 0.03, "better", 0.0),
               "c": _effect(0.02, 0.04, "better", 0.0)}
    worst = report.record_least_favourable(store, "02_baselines", "p2-finetune-beats-probe", effects,
                                           {"model": "tiny"}, {"model": "tiny"})
    assert worst == "b" and effects["b"].verdict == "inconclusive"      # the weakest of the three
    assert glued["recorded_task"] == "b" and glued["recorded_low"] == -0.02
    assert glued["tally"] == "reproduced on 2 of 3 tasks (a, c); inconclusive on 1 (b)"
    runs = store.runs(KIND)
    assert len(runs) == 1
    record = json.loads((Path(runs["path"].iloc[0]) / "result.json").read_text())
    assert record["claim"] == "p2-finetune-beats-probe" and record["effect"]["low"] == -0.02
