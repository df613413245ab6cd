import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from bertdims import ResultStore
from bertdims.store import result_key


def test_same_config_reads_back_without_recomputing(store):
    calls = []

    def compute():
        calls.append(1)
        return {"acc": 0.5, "table": pd.DataFrame({"a": [1, 2]}), "arr": np.arange(3)}

    first = store.cached("exp", {"x": 1}, compute, fingerprint="fp")
    second = store.cached("exp", {"x": 1}, compute, fingerprint="fp")
    assert len(calls) == 1
    assert first.path == second.path
    assert second.result["acc"] == 0.5
    assert second.table("table")["a"].tolist() == [1, 2]
    assert second.array("arr").tolist() == [0, 1, 2]
    assert json.loads((second.path / "config.json").read_text()) == {"x": 1}
    assert second.meta["fingerprint"] == "fp" and second.meta["version"]


def test_changed_config_fingerprint_or_version_recomputes(store, monkeypatch):
    calls = []
    compute = lambda: calls.append(1) or {"v": len(calls)}
    store.cached("exp", {"x": 1}, compute, fingerprint="a")
    store.cached("exp", {"x": 2}, compute, fingerprint="a")
    store.cached("exp", {"x": 1}, compute, fingerprint="b")
    assert len(calls) == 3
    assert result_key("exp", {"x": 1}, "a", version="0.1") != result_key("exp", {"x": 1}, "a", version="0.2")
    import bertdims.store as st
    monkeypatch.setattr(st, "__version__", "999")
    store.cached("exp", {"x": 1}, compute, fingerprint="a")
    assert len(calls) == 4


def test_key_ignores_dict_order():
    assert result_key("k", {"a": 1, "b": 2}) == result_key("k", {"b": 2, "a": 1})


def test_failed_compute_leaves_nothing(store):
    def boom():
        raise RuntimeError("killed")
    with pytest.raises(RuntimeError):
        store.cached("exp", {"x": 1}, boom)
    assert store.get("exp", store.key("exp", {"x": 1})) is None
    folder = store.root / "exp"
    assert not folder.exists() or list(folder.iterdir()) == []


def test_process_killed_mid_write_is_not_read_as_valid(tmp_path):
    """A process killed (SIGKILL) while filling a run leaves no complete result."""
    root = tmp_path / "r"
    script = textwrap.dedent(f"""
        import os, signal
        from bertdims import ResultStore
        s = ResultStore({str(root)!r})
        with s.writing("exp", {{"x": 1}}) as tmp:
            (tmp / "result.json").write_text('{{"half": ')
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script])
    assert proc.returncode != 0
    store = ResultStore(root)
    assert store.get("exp", store.key("exp", {"x": 1})) is None
    assert store.runs().empty
    # and the next run computes and stores normally
    run = store.cached("exp", {"x": 1}, lambda: {"ok": True})
    assert run.result == {"ok": True}


def test_runs_lists_complete_runs(store):
    store.put("a", {"i": 1}, {"v": 1})
    store.put("b", {"i": 2}, {"v": 2})
    table = store.runs()
    assert sorted(table["kind"]) == ["a", "b"]


def test_default_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("BERTDIMS_RESULTS", str(tmp_path / "x"))
    assert ResultStore().root == (tmp_path / "x").resolve()
