"""The chapter runner: discovery, presets and parameter checks (execution itself is covered by
nbval on the prepared notebooks and by tests/test_book.py)."""
import json
from pathlib import Path

import nbformat
import pytest

from bertdims import ConfigError
from bertdims.book.chapters import (PRESETS, chapter_path, chapter_stems, declared_parameters,
                               load_presets, project_root, resolve_parameters, run_chapter)
from bertdims.cli import main

ROOT = Path(__file__).resolve().parents[1]
STEMS = chapter_stems(ROOT)


def test_chapters_are_listed_in_toc_order():
    numbered = [s for s in STEMS if s[:2].isdigit()]
    assert numbered[0] == "01_model_and_tasks"
    assert numbered == sorted(numbered)


def test_the_scorecard_is_shown_first_and_executed_last():
    """The scorecard reads what the chapters stored: `bertdims book` runs it after them, and
    nbval (which runs the prepared notebooks in file-name order) does too."""
    from bertdims.book.chapters import execution_order
    assert STEMS[0] == "scorecard"
    order = execution_order(STEMS)
    assert order[-1] == "scorecard" and order[:-1] == STEMS[1:]
    assert sorted(f"{s}.ipynb" for s in STEMS)[-1] == "scorecard.ipynb"


@pytest.mark.parametrize("stem", STEMS)
def test_chapter_is_clean_and_parameterised(stem):
    nb = nbformat.read(str(ROOT / "book" / f"{stem}.ipynb"), as_version=4)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert "parameters" in nb.cells[1].metadata.get("tags", [])
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    assert declared_parameters(ROOT / "book" / f"{stem}.ipynb")


@pytest.mark.parametrize("stem", STEMS)
@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_fits_the_chapter(stem, preset):
    """Presets name only declared parameters with the declared types."""
    params = resolve_parameters(ROOT / "book" / f"{stem}.ipynb", preset, root=ROOT)
    if preset == "default":
        assert params == {}
    if preset == "smoke":
        assert params, f"{stem} has no smoke preset in book/presets.yml"


def test_presets_only_name_chapters_that_exist():
    assert set(load_presets(ROOT)) <= set(STEMS)


def test_bad_parameters_are_rejected_before_running():
    path = chapter_path("01", ROOT)
    with pytest.raises(ConfigError, match="'nonsense' is not declared"):
        resolve_parameters(path, "default", {"nonsense": 1}, ROOT)
    with pytest.raises(ConfigError, match="'max_examples' = 'many'.*expects int"):
        resolve_parameters(path, "default", {"max_examples": "many"}, ROOT)
    with pytest.raises(ConfigError, match="expects list"):
        resolve_parameters(path, "default", {"tasks": "bbc_news"}, ROOT)
    with pytest.raises(ConfigError, match="'preset' = 'huge'"):
        resolve_parameters(path, "huge", None, ROOT)
    with pytest.raises(ConfigError, match="is not a chapter; choose one of: .*01_model_and_tasks"):
        chapter_path("no_such_chapter", ROOT)


def test_cli_reports_bad_parameters_and_exits_2(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["run", "01", "-p", "max_examples", "many"]) == 2
    assert "max_examples" in capsys.readouterr().err


def test_prepare_only_injects_parameters(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = run_chapter("01", preset="smoke", params={"max_examples": 7}, out_dir=tmp_path,
                      prepare_only=True, progress=False)
    nb = nbformat.read(str(out), as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "max_examples = 7" in injected[0].source
    assert "max_seq_len = 32" in injected[0].source  # from the smoke preset
    meta = json.loads((tmp_path / "01_model_and_tasks.parameters.json").read_text())
    assert meta["parameters"]["max_examples"] == 7


def test_project_root_is_found_from_a_subfolder(monkeypatch):
    monkeypatch.chdir(ROOT / "book")
    assert project_root() == ROOT
