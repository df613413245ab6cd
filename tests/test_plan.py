"""The run planner (bertdims.book.plan), progress reporting (bertdims.core.progress) and the one-page
HTML of a rerun chapter: the plan of a chapter is what the chapter really stores."""
import json
import os
import time
from pathlib import Path

import pytest

from bertdims.core import progress
from bertdims.book.chapters import run_chapter
from bertdims.cli import main
from bertdims.book.plan import Plan, bottom_share, compute_share, length_factors, make_plan
from bertdims.core.store import ResultStore

ROOT = Path(__file__).resolve().parents[1]
#: Chapters executed at the smoke preset: fine-tuning grids (05) and sparse runs (10).
EXECUTED = ["05_freezing", "10_sparse_finetuning"]


def _stored_keys(store: ResultStore, kind: str) -> set[str]:
    return set(store.runs(kind)["key"]) if (store.root / kind).exists() else set()


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """A results store filled by executing EXECUTED at the smoke preset, with the plan made
    before (on the empty store) and the progress lines the kernels wrote."""
    tmp = tmp_path_factory.mktemp("planned")
    saved = {k: os.environ.get(k) for k in ("BERTDIMS_RESULTS", progress.PROGRESS_ENV)}
    cwd = os.getcwd()
    os.chdir(tmp)
    # relative, as a user types it: it means tmp/results, not a folder beside the chapters,
    # where the kernels run
    os.environ["BERTDIMS_RESULTS"] = "results"
    events = tmp / "progress.jsonl"
    os.environ[progress.PROGRESS_ENV] = str(events)      # the user's file: followed, not replaced
    store = ResultStore(tmp / "results")
    try:
        before = make_plan("smoke", EXECUTED, store=store, root=ROOT)
        for stem in EXECUTED:
            run_chapter(stem, preset="smoke", out_dir=tmp / "out", root=ROOT, progress=True,
                        plan=next(c for c in before.chapters if c.stem == stem))
        after = make_plan("smoke", EXECUTED, store=store, root=ROOT)
    finally:
        os.chdir(cwd)
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    return {"store": store, "before": before, "after": after, "events": events, "out": tmp / "out"}


def _planned(plan: Plan, kind: str) -> list:
    return [r for r in plan.runs if r.kind == kind]


@pytest.mark.slow
def test_planned_finetune_keys_are_the_stored_ones(executed):
    store, before = executed["store"], executed["before"]
    planned = {r.key for r in _planned(before, "finetune")}
    assert None not in planned                  # no dependent runs in these chapters
    assert planned == _stored_keys(store, "finetune")
    assert all(r.stored is False for r in before.runs)     # the store was empty


@pytest.mark.slow
def test_planned_counts_of_other_kinds_are_the_stored_ones(executed):
    store, before = executed["store"], executed["before"]
    for kind in ("sparse_finetune", "probe"):
        planned = {r.key for r in _planned(before, kind)}
        assert planned == _stored_keys(store, kind), kind
    assert len(_planned(before, "sparse_finetune")) == 4   # frozen, learned, magnitude, random


@pytest.mark.slow
def test_after_running_everything_planned_is_stored(executed):
    after = executed["after"]
    assert after.runs and all(r.stored for r in after.runs)
    assert after.seconds == 0
    table = after.table()
    assert table["to do"].sum() == 0 and table["stored"].sum() == len(after.runs)


@pytest.mark.slow
def test_the_progress_file_gets_a_line_per_computed_run(executed, capsys):
    lines = [json.loads(x) for x in executed["events"].read_text().splitlines()]
    started = [e for e in lines if e["event"] == "started"]
    finished = [e for e in lines if e["event"] == "finished" and not e["cached"]]
    by_kind = lambda es, kind: sorted(e["key"] for e in es if e["kind"] == kind)   # noqa: E731
    stored = executed["store"]
    assert by_kind(started, "sparse_finetune") == sorted(_stored_keys(stored, "sparse_finetune"))
    assert by_kind(finished, "sparse_finetune") == by_kind(started, "sparse_finetune")
    assert all(e["seconds"] > 0 for e in finished)


def test_run_hooks_do_nothing_without_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(progress.PROGRESS_ENV, raising=False)
    progress.run_started("finetune", "abc", {"task": "t"})        # no file, no error
    monkeypatch.setenv(progress.PROGRESS_ENV, str(tmp_path / "missing" / "p.jsonl"))
    progress.run_finished("finetune", "abc", 1.0, cached=False)   # unwritable: still no error
    monkeypatch.setenv(progress.PROGRESS_ENV, str(tmp_path / "p.jsonl"))
    progress.run_started("finetune", "abc", {"task": "rotten_tomatoes", "seed": 1})
    events, offset = progress.read_events(tmp_path / "p.jsonl")
    assert [e["event"] for e in events] == ["started"] and offset > 0
    assert progress.describe(events[0]) == "finetune rotten_tomatoes seed 1"


def test_follower_counts_runs_and_the_time_left(tmp_path, monkeypatch):
    path = tmp_path / "p.jsonl"
    monkeypatch.setenv(progress.PROGRESS_ENV, str(path))
    printed = []
    planned = [("finetune", "k1", "finetune a seed 0", 120.0), ("finetune", None, "finetune b", 60.0),
               ("finetune", "k3", "finetune c seed 0", 60.0)]
    with progress.Follower(path, "[ch 1/2]", planned, later_seconds=300.0, out=printed.append):
        progress.run_started("finetune", "k3", {})
        progress.run_started("finetune", "unplanned", {"task": "b"})
        time.sleep(2 * progress.POLL_SECONDS)
        progress.run_started("finetune", "k1", {})
    assert printed == [
        "[ch 1/2] run 1 of 3 (finetune c seed 0); about 8 min left (estimate)",
        "[ch 1/2] run 2 of 3 (finetune b); about 7 min left (estimate)",
        "[ch 1/2] run 3 of 3 (finetune a seed 0); about 5 min left (estimate)"]


def test_compute_share_follows_the_layers_that_run_and_train():
    from bertdims import FinetuneConfig
    full = FinetuneConfig()
    assert compute_share(full, 6) == pytest.approx(1.0)
    assert compute_share(full.replace(freeze=6), 6) == 0.0              # head on features
    # blocks 4-6 train; the frozen bottom (embeddings, blocks 1-3) is cached by the engine,
    # so a step runs 3 blocks forward and 3 backward, and the bottom runs once per example
    assert compute_share(full.replace(freeze=3), 6) == pytest.approx((3 + 2 * 3) / 18)
    assert bottom_share(full.replace(freeze=3), 6) == pytest.approx(3 / 6)
    assert bottom_share(full, 6) == bottom_share(full.replace(freeze_embeddings=True), 6) == 0.0
    # only the embeddings frozen: nothing to cache, every block runs forward
    assert compute_share(full.replace(train_layers=[1, 2, 3, 4, 5, 6]), 6) == pytest.approx(1.0)
    assert compute_share(full.replace(layer=2), 6) == pytest.approx(1 / 3)
    assert compute_share(full.replace(train_layers=[6]), 6) < compute_share(full.replace(freeze=3), 6)


def test_length_factors_follow_the_lengths_of_the_task_texts():
    # short movie-review sentences against news articles cut at 64 tokens
    short = length_factors("embedded", "rotten_tomatoes", 64, 16, 200, 100)
    long = length_factors("embedded", "bbc_news", 64, 16, 200, 100)
    assert 0 < short[0] < 0.8 < long[0] <= 1.0
    assert short[1] <= short[0]          # sorted evaluation batches pad less than random ones
    assert length_factors("embedded", "rotten_tomatoes", 64, 1, 200, 100)[0] == pytest.approx(short[1], rel=0.2)


def test_plan_cli_prints_a_table_with_totals_without_running(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    results = tmp_path / "results"
    for preset in ("smoke", "default"):
        assert main(["plan", "--preset", preset, "--results", str(results)]) == 0
        out = capsys.readouterr().out
        assert f"Plan for preset '{preset}'" in out
        total = [line.split() for line in out.splitlines() if line.split()[:1] == ["total"]]
        assert total and int(total[0][1]) > 0                      # runs
        assert "estimate" in out
        for stem in ("02_baselines", "06_cross_finetuning", "10_sparse_finetuning"):
            assert stem in out
    assert not (results / "finetune").exists()          # planned, nothing trained
    assert (results / "calibration").exists()           # the per-step cost was measured once


def test_default_plan_asks_for_more_than_smoke(tmp_path):
    store = ResultStore(tmp_path / "results")
    smoke = make_plan("smoke", store=store, root=ROOT, calibrate=False)
    default = make_plan("default", store=store, root=ROOT, calibrate=False)
    assert len(default.runs) > len(smoke.runs)
    ch4 = next(c for c in default.chapters if c.stem == "04_few_dimensions")
    dependent = [r for r in ch4.runs if r.depends]
    assert dependent and all(set(r.depends) == {"dims"} for r in dependent)
    assert default.seconds is None                     # no cost measured, none made up
    assert "?" in default.render()


def test_plan_cli_rejects_bad_input_in_one_line(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert main(["plan", "--preset", "huge"]) == 2
    err = capsys.readouterr().err
    assert "'preset' = 'huge'" in err and len(err.strip().splitlines()) == 1
    assert main(["plan", "--chapters", "99_nothing"]) == 2
    assert "is not a chapter" in capsys.readouterr().err


@pytest.mark.slow
def test_run_html_renders_the_rerun_chapter_as_a_page(executed):
    from bertdims.book.chapters import render_page
    notebook = executed["out"] / "10_sparse_finetuning.ipynb"
    page = render_page(notebook, root=ROOT, out_dir=executed["out"] / "page")
    text = page.read_text()
    assert page.suffix == ".html" and "<html" in text and "sparse" in text.lower()
    assert "mathjax/tex-svg-full.js" in text                 # the book's offline MathJax


def test_a_progress_line_is_a_whole_line_beside_a_progress_bar(capsys):
    import sys

    from tqdm.auto import tqdm

    from bertdims.core.progress import _write_line
    with tqdm(total=2, file=sys.stderr) as bar:     # papermill's cell bar, on stderr
        bar.update(1)
        _write_line("[ch 1/2] run 1 of 3 (finetune a); about 5 min left (estimate)")
        bar.update(1)
    out = capsys.readouterr().out
    assert out == "[ch 1/2] run 1 of 3 (finetune a); about 5 min left (estimate)\n"
