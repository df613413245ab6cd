"""The results store: every run kept with its full config, model fingerprint and the schema
of its kind, under a key derived from them.

A run lives in ``<root>/<kind>/<key>/`` with ``config.json``, ``meta.json`` and its
payload (``result.json``, ``*.csv`` tables, ``*.npy`` arrays, or any files the run wrote,
such as a fine-tuned model). Running the same config again reads the stored result; a changed
config, model, data version or schema gives another key and recomputes.

**Schemas.** Every kind of result the library stores is listed in :data:`SCHEMAS` with a schema
number, and that number joins the key. Bump a kind's number when the meaning or layout of its
stored payload changes; its old entries are then recomputed, never misread (they stay on disk
under their old keys, unread). Other kinds keep their keys. A kind the table does not list is
refused (a :class:`~bertdims.ConfigError`, which is a ``ValueError``); code outside the
library registers its own kinds explicitly with :func:`register_kind`. The library version is
recorded in ``meta.json`` for information only: it is not part of the key. Schema 1 is the
layout every kind had when the table was introduced, and its keys are the ones written before
(they hashed the library version, which was 0.1.0 throughout), so entries stored then are
still read.

**One atomic-write path.** :meth:`ResultStore.commit` turns a filled folder into an entry:
it writes ``config.json`` (when missing) and ``meta.json`` (kind, key, schema, fingerprint,
data version, checksums of every file) and renames the folder into place in one step,
replacing an older copy of the key. :meth:`ResultStore.writing` fills a temporary folder and
commits it; resumable writers (the streamed extraction of :func:`bertdims.analysis.extract`) fill
their own folder over several attempts and commit it the same way. A run killed mid-write
therefore never leaves a result that is read as valid. :func:`write_json_atomic` writes one
JSON file the same way (temporary file, then rename).

**Leftovers say whose they are.** A folder being written is named
``.<key>.tmp-<host>-<pid>-<random>``, an older copy being replaced ``.<key>.old-<host>-<pid>``.
A killed writer leaves them behind; :meth:`ResultStore.clean` (``bertdims store clean``)
removes those whose writer is gone (same host and the process is not running; another host:
older than ``max_age_hours``), and removes a resumable folder (an extraction's
``.<key>.partial``, a fine-tuning's ``.checkpoints/<key>``) only when the complete entry of
its key exists and no process holds the key's lock. :meth:`ResultStore.writing` removes the
dead writers' leftovers of its own key before it starts.

Two more guarantees:

* **Damaged entries are not read.** ``meta.json`` records the size and SHA-256 of every other
  file of the entry when it is written; :meth:`ResultStore.get` checks them (sizes always,
  hashes once per process and file version) and reports a damaged entry with a
  :class:`DamagedEntryWarning`, then answers None so that the caller recomputes it. Files
  over :data:`HASH_ALWAYS_BYTES` (model weights) are hashed only when their modification
  time is not the one recorded.
* **One writer per key.** :meth:`ResultStore.lock` is an inter-process file lock on one key;
  :meth:`ResultStore.cached` computes under it, so of two processes asking for the same key
  one computes and the other waits and reads the stored result (``run.waited`` says so).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
import warnings
from dataclasses import dataclass, is_dataclass, asdict
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

from ._validate import bad
from .._version import __version__

RESULTS_ENV = "BERTDIMS_RESULTS"
log = logging.getLogger("bertdims.core.store")

#: Every kind of result the library stores, with the schema number of its stored payload.
#: Bump a kind's number when the meaning or layout of what it stores changes: its old entries
#: are then recomputed, never misread. Other kinds keep their keys. Library kinds are listed
#: here and nowhere else (tests/test_store.py checks that every kind the library passes to the
#: store is in this table); code outside the library adds its own with :func:`register_kind`.
SCHEMAS: dict[str, int] = {
    # fine-tuning (bertdims.train.finetuning): metrics, history, per-example predictions, model weights
    "finetune": 1,
    # frozen-encoder features (bertdims.train.finetuning): one (n, H) array per split, read by frozen runs
    "frozen_features": 1,
    # streamed token representations (bertdims.analysis.extract): layer_<i>.npy, labels, indices
    "representations": 1,
    # dimension ranking of a fine-tuned model (bertdims.analysis.dims, crossft): table "ranking"
    "dims_rank": 1,
    # scores of the top-k dimensions of a ranking (bertdims.analysis.dims): table "scores"
    "dims_k": 1,
    # linear probe of one layer and token (bertdims.analysis.dims): table "scores" and probe payload
    "probe": 1,
    # constant (majority / mean) baseline of a task (bertdims.analysis.dims): table "scores"
    "constant": 1,
    # one cross-fine-tuning pair, B after A (bertdims.analysis.crossft): metrics and predictions
    "crossft_pair": 1,
    # PCA of representations (bertdims.analysis.pca): explained variance and components
    "pca": 1,
    # null distribution of the PCA crossing point (bertdims.analysis.pca): table "null"
    "pca_null": 1,
    # PCA crossing points of fine-tuned vs pretrained (bertdims.analysis.pca): per seed, replicates, ratios
    "pca_crossing": 1,
    # salient neurons (bertdims.analysis.neurons): selections and scores
    "neurons": 1,
    # weight distances between pretrained and fine-tuned parameters (bertdims.analysis.distances)
    "weight_distances": 1,
    # sparse fine-tuning (bertdims.train.sparse): masks, head, metrics, predictions, sizes
    "sparse_finetune": 1,
    # a stored sparse task reloaded and evaluated again (bertdims.train.sparse): "reloaded" metrics
    "sparse_reload": 1,
    # per-dimension scores of the agreement sources (bertdims.analysis.agreement): table "sources"
    "agreement_sources": 1,
    # 2-D PCA projection of a task's examples (bertdims.book.overview): table "points", "explained"
    "projection": 1,
    # a claim's verdict with its effect and scale note (bertdims.book.scorecard)
    "verdict": 1,
    # timed training and forward steps of a model on this machine (bertdims.book.plan)
    "calibration": 1,
    # multi-task fine-tuning (bertdims.train.multitask): metrics.csv, history, model
    "multitask": 1,
}

#: What each kind added with :func:`register_kind` holds (the library's kinds are described by
#: the comments of :data:`SCHEMAS`).
REGISTERED_KINDS: dict[str, str] = {}

#: The library version every key hashed before per-kind schemas existed; schema 1 keys still
#: hash it, so that the entries stored then keep their keys.
_LEGACY_VERSION = "0.1.0"


def register_kind(name: str, schema: int = 1, doc: str = "") -> None:
    """Let the store keep results of a kind that :data:`SCHEMAS` does not list.

    For code outside the library (an experiment of one's own, a test); the library's own
    kinds are all in :data:`SCHEMAS`. Registering a kind again with the same schema does
    nothing.

    Parameters
    ----------
    name : str
        The kind: the folder name under the store root (letters, digits, ``_`` and ``-``).
    schema : int
        Schema number of what the kind stores (a positive integer); bump it when the meaning
        or layout of the stored payload changes, so that old entries are recomputed.
    doc : str
        What an entry of this kind holds.

    Raises
    ------
    ConfigError
        A name that is not a plain folder name, a schema that is not a positive integer, or
        a kind already known under another schema.
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
        raise bad("name", name, "expected a kind name of letters, digits, '_' and '-'")
    if isinstance(schema, bool) or not isinstance(schema, int) or schema < 1:
        raise bad("schema", schema, "expected a positive integer")
    if name in SCHEMAS and SCHEMAS[name] != schema:
        raise bad("schema", schema, f"kind {name!r} is already known with schema {SCHEMAS[name]}")
    SCHEMAS[name] = schema
    REGISTERED_KINDS[name] = doc


def schema_of(kind: str) -> int:
    """The schema number of a kind.

    Parameters
    ----------
    kind : str
        A kind listed in :data:`SCHEMAS` (or added with :func:`register_kind`).

    Returns
    -------
    int

    Raises
    ------
    ConfigError
        The kind is unknown; the message names the known kinds.
    """
    try:
        return SCHEMAS[kind]
    except (KeyError, TypeError):
        raise bad("kind", kind, "expected a result kind the store knows: " + ", ".join(sorted(SCHEMAS))
                  + " (add one with bertdims.core.store.register_kind)") from None


class DamagedEntryWarning(UserWarning):
    """A stored entry whose files no longer match the checksums recorded when it was written."""


_HASHES: dict = {}


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, remembered per process for the same (path, size, mtime)."""
    st = path.stat()
    tag = (str(path), st.st_size, st.st_mtime_ns)
    if tag not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _HASHES[tag] = h.hexdigest()
    return _HASHES[tag]


def _payload_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "meta.json")


#: Files up to this size are hashed on every first read in a process; larger ones (model
#: weights) only when their modification time differs from the one recorded at write time.
HASH_ALWAYS_BYTES = 32 << 20


def checksums(folder: Path) -> dict[str, dict]:
    """``{relative path: {"size", "mtime_ns", "sha256"}}`` of every file but ``meta.json``."""
    out = {}
    for p in _payload_files(folder):
        st = p.stat()
        out[p.relative_to(folder).as_posix()] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                                 "sha256": file_sha256(p)}
    return out


def damage(folder: Path, recorded: dict[str, dict]) -> list[str]:
    """What differs from the recorded checksums: missing files, other sizes, other contents."""
    found = []
    for rel, want in recorded.items():
        p = folder / rel
        if not p.is_file():
            found.append(f"{rel} is missing")
            continue
        st = p.stat()
        if st.st_size != want["size"]:
            found.append(f"{rel} has {st.st_size} bytes, {want['size']} were written")
        elif (st.st_size <= HASH_ALWAYS_BYTES or st.st_mtime_ns != want.get("mtime_ns")) \
                and file_sha256(p) != want["sha256"]:
            found.append(f"{rel} was changed after it was written")
    return found


def default_root() -> Path:
    """``$BERTDIMS_RESULTS`` if set, else ``./results``."""
    return Path(os.environ.get(RESULTS_ENV, "results")).resolve()


_TEMPORARY: list = []


def store_or_temporary(store: "ResultStore | None") -> "ResultStore":
    """``store``, or, for None, a temporary store that lives until the process ends.

    This is what ``store=None`` means for every function of the library that computes: nothing
    is kept (:func:`bertdims.finetune` with ``store=None`` stores nothing either). Runs a study
    needs more than once within the call are still computed once. Pass a
    :class:`ResultStore` (``ResultStore()``: ``$BERTDIMS_RESULTS`` or ``./results``) to keep
    the runs and read them back later.

    Parameters
    ----------
    store : ResultStore or None
        The caller's store.

    Returns
    -------
    ResultStore
        ``store`` itself, or the process's temporary store (one folder, removed at exit).
    """
    if store is not None:
        return store
    if not _TEMPORARY:
        import atexit
        folder = tempfile.mkdtemp(prefix="bertdims-temporary-store-")
        atexit.register(shutil.rmtree, folder, True)
        _TEMPORARY.append(ResultStore(folder))
    return _TEMPORARY[0]


def _plain(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return _plain(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def result_key(kind: str, config: Any, fingerprint: str | None = None,
               schema: int | None = None, data: Any = None) -> str:
    """The key of a run: a hash of its kind, config, model fingerprint, the kind's schema and,
    when given, the data version.

    Parameters
    ----------
    kind : str
        A kind of :data:`SCHEMAS`.
    config : Any
        The run's config (dicts, dataclasses, lists, numbers, strings); key order is ignored.
    fingerprint : str, optional
        The fingerprint of the model the run reads.
    schema : int, optional
        The kind's schema number; None (the default) takes the one in :data:`SCHEMAS`.
    data : Any, optional
        The data version (:func:`bertdims.data.tasks.data_version` of the task or tasks read).

    Returns
    -------
    str
        20 hexadecimal characters.

    Raises
    ------
    ConfigError
        The kind is unknown.
    """
    known = schema_of(kind)
    schema = known if schema is None else schema
    parts = {"kind": kind, "config": _plain(config), "fingerprint": fingerprint}
    if schema == 1:   # the keys written before schemas existed hashed this version instead
        parts["version"] = _LEGACY_VERSION
    else:
        parts["schema"] = int(schema)
    if data is not None:   # absent from older keys, so they stay valid
        parts["data"] = _plain(data)
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@dataclass
class StoredRun:
    """A completed run read back from the store, with the shape of every result
    (:mod:`bertdims.core.result`): ``config`` (the stored dict), ``metrics``, ``tables`` and
    ``paths``; :meth:`json`, :meth:`table` and :meth:`array` read one file of it."""

    path: Path
    config: dict
    meta: dict
    waited: bool = False   # True when this process waited for another one computing it

    def json(self, name: str = "result") -> Any:
        return json.loads((self.path / f"{name}.json").read_text())

    def table(self, name: str) -> pd.DataFrame:
        return pd.read_csv(self.path / f"{name}.csv")

    def array(self, name: str) -> np.ndarray:
        return np.load(self.path / f"{name}.npy")

    @property
    def result(self) -> Any:
        return self.json("result")

    # the shape of every result (bertdims.core.result)
    @property
    def metrics(self) -> dict:
        """The ``metrics`` entry of ``result.json`` when it is a dict (``{split: {metric:
        value}}`` for a fine-tuning run), else empty."""
        found = self.json() if (self.path / "result.json").exists() else None
        return found["metrics"] if isinstance(found, dict) and isinstance(found.get("metrics"), dict) else {}

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        """Every table of the run (its ``<name>.csv`` files), by name, read on each access."""
        return {p.stem: pd.read_csv(p) for p in sorted(self.path.glob("*.csv"))}

    @property
    def paths(self) -> dict[str, Path]:
        """``{"path": the run's folder}``."""
        return {"path": self.path}


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "host"


#: This host, as temporary names spell it (they say whose they are).
_HOST = _host_tag()


def write_json_atomic(path: str | os.PathLike, obj: Any, **dumps) -> None:
    """Write ``obj`` as JSON to ``path`` atomically: a temporary file next to it, then a rename,
    so that a reader (or a kill) never sees half a file.

    Parameters
    ----------
    path : path-like
        The file to write (replaced when it exists).
    obj : Any
        JSON-able value (dataclasses, numpy numbers and paths are converted; anything else
        unknown is written as its ``str``).
    **dumps
        Passed on to :func:`json.dumps` (e.g. ``indent=2``, ``sort_keys=True``).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{_HOST}-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(_plain(obj), default=str, **dumps))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


#: Leftovers in a kind's folder: a folder being written (``tmp``), an older copy being
#: replaced (``old``), a resumable extraction (``partial``), and the names before writers
#: said whose they were (``legacy_tmp``: tempfile's ``.<key>.<8 random>``, ``legacy_old``).
_LEFTOVER = re.compile(
    r"\.(?P<key>[0-9A-Za-z_-]+)\.(?:"
    r"tmp-(?P<tmp_host>.+)-(?P<tmp_pid>\d+)-[A-Za-z0-9_]+"
    r"|old-(?P<old_host>.+)-(?P<old_pid>\d+)"
    r"|(?P<partial>partial)"
    r"|old\.(?P<legacy_old>\d+)"
    r"|(?P<legacy_tmp>[a-z0-9_]{8}))")


def _alive(pid: int) -> bool:
    """Whether a process of this host with this id is running (True when it cannot be told)."""
    if os.name == "nt":    # pragma: no cover - os.kill(pid, 0) would end the process there
        return True
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:        # e.g. another user's process: it exists
        return True
    return True


def _age_hours(path: Path) -> float:
    try:
        return (time.time() - path.stat().st_mtime) / 3600.0
    except OSError:
        return 0.0


def _complete(entry: Path) -> bool:
    try:
        return bool(json.loads((entry / "meta.json").read_text()).get("complete"))
    except (OSError, ValueError):
        return False


class ResultStore:
    """Keyed, atomic storage of runs under one root folder.

    Each run is an entry ``<root>/<kind>/<key>/`` holding ``config.json``, ``meta.json`` and
    its payload; the key hashes the kind's schema, the config, the model fingerprint and the
    data version (:meth:`key`). :meth:`cached` reads an entry or computes, stores and returns
    it under an inter-process lock (:meth:`lock`); :meth:`put` and :meth:`writing` store one;
    :meth:`get` reads one, refusing damaged entries; :meth:`runs` lists them; :meth:`clean`
    removes what killed writers left behind. The module docstring of :mod:`bertdims.core.store`
    describes the guarantees in full.

    Parameters
    ----------
    root : str, os.PathLike or None
        The store's folder; None uses :func:`default_root` (``$BERTDIMS_RESULTS`` if set,
        else ``./results``).

    Attributes
    ----------
    root : pathlib.Path
        The store's folder, as an absolute path.
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).resolve() if root is not None else default_root()

    def path(self, kind: str, key: str) -> Path:
        """The folder of an entry (``<root>/<kind>/<key>``); the kind must be known."""
        schema_of(kind)
        return self.root / kind / key

    def key(self, kind: str, config: Any, fingerprint: str | None = None, data: Any = None) -> str:
        """The key of a run (:func:`result_key`); ``data`` (a data version) joins it when given."""
        return result_key(kind, config, fingerprint, data=data)

    def get(self, kind: str, key: str) -> StoredRun | None:
        """The stored run, or None when there is no complete, undamaged one.

        A damaged entry (its files differ from the checksums in ``meta.json``, or ``meta.json``
        itself does not parse) is reported with a :class:`DamagedEntryWarning` and answered
        with None, so that the caller computes it again (the new result replaces it)."""
        path = self.path(kind, key)
        meta_file = path / "meta.json"
        if not meta_file.exists():
            return None
        try:
            meta = json.loads(meta_file.read_text())
            config = json.loads((path / "config.json").read_text())
        except (OSError, ValueError) as err:
            self._report(kind, key, [f"meta.json or config.json does not parse ({err})"])
            return None
        if not meta.get("complete"):
            return None
        problems = damage(path, meta["files"]) if "files" in meta else []
        if problems:
            self._report(kind, key, problems)
            return None
        return StoredRun(path=path, config=config, meta=meta)

    def _report(self, kind: str, key: str, problems: list[str]) -> None:
        text = (f"results store entry {kind}/{key} is damaged and will be recomputed: "
                + "; ".join(problems[:5]) + (" ..." if len(problems) > 5 else ""))
        log.warning(text)
        warnings.warn(text, DamagedEntryWarning, stacklevel=3)

    def _file_lock(self, kind: str, key: str):
        from filelock import FileLock

        folder = self.root / ".locks" / kind
        folder.mkdir(parents=True, exist_ok=True)
        return FileLock(str(folder / f"{key}.lock"), is_singleton=True)

    @contextlib.contextmanager
    def lock(self, kind: str, key: str, *, poll: float = 0.2) -> Iterator[bool]:
        """Hold the inter-process lock of one key (``<root>/.locks/<kind>/<key>.lock``).

        Yields True when another process held it first (this one waited), else False. Take it
        around "read the entry, else compute and write it" so that one process computes and
        the others read its result: the lock is re-entrant within a process."""
        from filelock import Timeout

        schema_of(kind)
        lock = self._file_lock(kind, key)
        waited = False
        try:
            lock.acquire(timeout=0)
        except Timeout:
            waited = True
            log.info("waiting for another process computing %s/%s", kind, key)
            lock.acquire(poll_interval=poll)
        try:
            yield waited
        finally:
            lock.release()

    @contextlib.contextmanager
    def _unless_locked(self, kind: str, key: str) -> Iterator[bool]:
        """Take the key's lock if no other process holds it: yields whether it was taken."""
        from filelock import Timeout

        lock = self._file_lock(kind, key)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()

    def commit(self, kind: str, key: str, folder: str | os.PathLike, config: Any,
               fingerprint: str | None = None, data: Any = None,
               meta: dict | None = None) -> Path:
        """Make a filled folder the entry of ``kind``/``key``, atomically.

        Writes ``config.json`` (when the folder has none) and ``meta.json`` (kind, key, schema,
        library version, fingerprint, data version, creation time, ``complete``, the checksums
        of every file, and ``meta``'s fields), then renames the folder into place in one step.
        An older copy of the key is first renamed aside (``.<key>.old-<host>-<pid>``) and
        removed after. This is the store's only way to publish an entry: :meth:`writing` uses
        it, and so do writers that fill their folder over several attempts (extraction's
        ``.<key>.partial``).

        Parameters
        ----------
        kind : str
            A kind of :data:`SCHEMAS`.
        key : str
            The entry's key (:meth:`key`).
        folder : path-like
            The filled folder, in the kind's folder of this store (a rename cannot cross file
            systems); it becomes ``<root>/<kind>/<key>``.
        config : Any
            The run's config (written to ``config.json`` when missing).
        fingerprint : str, optional
            Model fingerprint, recorded in ``meta.json``.
        data : Any, optional
            Data version, recorded in ``meta.json``.
        meta : dict, optional
            Further ``meta.json`` fields (e.g. ``num_rows``); they may not replace the ones
            above.

        Returns
        -------
        Path
            The entry's folder.

        Raises
        ------
        ConfigError
            An unknown kind, a folder outside the kind's folder, or ``meta`` naming a field
            the store writes.
        """
        schema = schema_of(kind)
        folder = Path(folder)
        final = self.path(kind, key)
        if folder.resolve().parent != final.parent.resolve():
            raise bad("folder", str(folder), f"expected a folder inside {final.parent}")
        record = {"kind": kind, "key": key, "schema": schema, "version": __version__,
                  "fingerprint": fingerprint, "data": _plain(data),
                  "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "complete": True}
        clash = sorted(set(meta or {}) & (set(record) | {"files"}))
        if clash:
            raise bad("meta", clash, "extra meta fields may not replace the ones the store writes")
        if not (folder / "config.json").exists():
            write_json_atomic(folder / "config.json", config, indent=2, sort_keys=True)
        record.update(_plain(meta or {}))
        record["files"] = checksums(folder)
        write_json_atomic(folder / "meta.json", record, indent=2)
        if final.exists():  # an older copy of the same key (e.g. a forced rerun)
            trash = final.with_name(f".{key}.old-{_HOST}-{os.getpid()}")
            if trash.exists():
                shutil.rmtree(trash)
            os.replace(final, trash)
            os.replace(folder, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(folder, final)
        return final

    @contextlib.contextmanager
    def writing(self, kind: str, config: Any, fingerprint: str | None = None,
                key: str | None = None, data: Any = None) -> Iterator[Path]:
        """Yield a temporary folder to fill; on success it is committed (:meth:`commit`).

        The folder is ``<root>/<kind>/.<key>.tmp-<host>-<pid>-<random>``: should this process
        be killed, :meth:`clean` can tell that its writer is gone. Leftovers of dead writers
        of the same key on this host are removed first."""
        key = key or self.key(kind, config, fingerprint, data)
        final = self.path(kind, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        self._clean_dead_writers(final.parent, key)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-{_HOST}-{os.getpid()}-", dir=final.parent))
        try:
            write_json_atomic(tmp / "config.json", config, indent=2, sort_keys=True)
            yield tmp
            self.commit(kind, key, tmp, config, fingerprint, data)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def put(self, kind: str, config: Any, result: dict, fingerprint: str | None = None,
            data: Any = None) -> StoredRun:
        """Store a result: JSON-able values go to result.json, DataFrames to CSV, arrays to .npy."""
        with self.writing(kind, config, fingerprint, data=data) as tmp:
            write_payload(tmp, result)
        return self.get(kind, self.key(kind, config, fingerprint, data))  # type: ignore[return-value]

    def cached(self, kind: str, config: Any, compute: Callable[[], dict],
               fingerprint: str | None = None, force: bool = False, data: Any = None) -> StoredRun:
        """Read the stored run for this config, or compute, store and return it.

        The computation runs under :meth:`lock`: a second process asking for the same key
        meanwhile waits, then reads the first one's result (its ``waited`` is True).
        ``data``: the data version of the task(s) read, joins the key when given."""
        key = self.key(kind, config, fingerprint, data)
        if not force:
            hit = self.get(kind, key)
            if hit is not None:
                return hit
        with self.lock(kind, key) as waited:
            hit = None if force and not waited else self.get(kind, key)
            if hit is not None:
                hit.waited = waited
                return hit
            return self.put(kind, config, compute(), fingerprint, data)

    def runs(self, kind: str | None = None) -> pd.DataFrame:
        """A table of the complete runs in the store (kind, key, created, path); without
        ``kind``, of every known kind (folders of kinds not in :data:`SCHEMAS` are skipped)."""
        rows = []
        kinds = [kind] if kind else sorted(p.name for p in self.root.glob("*")
                                           if p.is_dir() and not p.name.startswith(".")
                                           and p.name in SCHEMAS)
        for k in kinds:
            schema_of(k)
            for p in sorted((self.root / k).glob("*")):
                run = self.get(k, p.name) if not p.name.startswith(".") else None
                if run:
                    rows.append({"kind": k, "key": p.name, "created": run.meta["created"], "path": str(p)})
        return pd.DataFrame(rows, columns=["kind", "key", "created", "path"])

    # ------------------------------------------------------------------ leftovers
    def _clean_dead_writers(self, kind_dir: Path, key: str) -> None:
        """Remove this host's leftovers of ``key`` whose writing process is gone (cheap: no
        locks, one directory listing)."""
        for p in kind_dir.glob(f".{key}.*"):
            m = _LEFTOVER.fullmatch(p.name)
            if m is None or m["key"] != key:
                continue
            host, pid = (m["tmp_host"], m["tmp_pid"]) if m["tmp_pid"] else (m["old_host"], m["old_pid"])
            if pid is not None and host == _HOST and not _alive(int(pid)):
                log.info("removing %s, left by a killed writer", p)
                shutil.rmtree(p, ignore_errors=True)

    def clean(self, dry_run: bool = False, max_age_hours: float = 24.0) -> list[Path]:
        """Remove what killed writers left in the store, under every kind.

        Removed:

        * a folder being written (``.<key>.tmp-<host>-<pid>-*``) or an older copy being
          replaced (``.<key>.old-<host>-<pid>``) whose writer is gone: on this host, the
          process ``pid`` is not running; written on another host (whose processes cannot be
          seen from here), when it is older than ``max_age_hours`` and nobody holds the key's
          lock. Such folders without a host in their name (written before writers named
          themselves) count as another host's;
        * a resumable folder (an extraction's ``.<key>.partial``, a fine-tuning's
          ``.checkpoints/<key>``) only when the complete entry of the same key exists and no
          process holds the key's lock: then it is a leftover. Without the complete entry it
          is resumable work and is kept.

        Parameters
        ----------
        dry_run : bool
            Only list what would be removed.
        max_age_hours : float
            Age (by modification time) after which another host's leftovers are removed.

        Returns
        -------
        list of Path
            The folders removed (with ``dry_run``, those that would be).
        """
        from ._validate import check_range
        check_range("max_age_hours", max_age_hours, 0)
        removed: list[Path] = []
        if not self.root.is_dir():
            return removed
        for kind_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            kind = kind_dir.name
            for p in sorted(kind_dir.iterdir()):
                if not p.name.startswith(".") or not p.is_dir():
                    continue
                if p.name == ".checkpoints":
                    for ckpt in sorted(c for c in p.iterdir() if c.is_dir()):
                        if self._remove_finished(kind, ckpt.name, ckpt, dry_run):
                            removed.append(ckpt)
                    continue
                m = _LEFTOVER.fullmatch(p.name)
                if m is None:
                    continue
                key = m["key"]
                if m["partial"]:
                    gone = self._remove_finished(kind, key, p, dry_run)
                else:
                    host = m["tmp_host"] or m["old_host"]
                    pid = m["tmp_pid"] or m["old_pid"]
                    if host == _HOST:
                        gone = not _alive(int(pid)) and self._remove(p, dry_run)
                    else:
                        gone = _age_hours(p) > max_age_hours and self._remove_unlocked(kind, key, p, dry_run)
                if gone:
                    removed.append(p)
        return removed

    def _remove(self, path: Path, dry_run: bool) -> bool:
        if not dry_run:
            log.info("removing %s", path)
            shutil.rmtree(path)
        return True

    def _remove_unlocked(self, kind: str, key: str, path: Path, dry_run: bool) -> bool:
        with self._unless_locked(kind, key) as free:
            return free and self._remove(path, dry_run)

    def _remove_finished(self, kind: str, key: str, path: Path, dry_run: bool) -> bool:
        if not _complete(self.root / kind / key):
            return False
        return self._remove_unlocked(kind, key, path, dry_run)


def write_payload(folder: Path, result: dict) -> None:
    """Write a result dict into ``folder``: DataFrames to ``<name>.csv``, arrays to
    ``<name>.npy``, everything else to ``result.json``."""
    plain = {}
    for name, value in result.items():
        if isinstance(value, pd.DataFrame):
            value.to_csv(folder / f"{name}.csv", index=False)
        elif isinstance(value, np.ndarray):
            np.save(folder / f"{name}.npy", value)
        else:
            plain[name] = _plain(value)
    (folder / "result.json").write_text(json.dumps(plain, indent=2, default=str))
