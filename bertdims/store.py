"""The results store: every run kept with its full config, library version and model
fingerprint, under a key derived from them.

A run lives in ``<root>/<kind>/<key>/`` with ``config.json``, ``meta.json`` and its
payload (``result.json``, ``*.csv`` tables, ``*.npy`` arrays, or any files the run wrote,
such as a fine-tuned model). The folder is filled under a temporary name and renamed into
place in one step, so a run killed mid-write never leaves a result that is read as valid.
Running the same config again reads the stored result; a changed config, model or library
version gives another key and recomputes.

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
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, is_dataclass, asdict
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

from ._version import __version__

RESULTS_ENV = "BERTDIMS_RESULTS"
log = logging.getLogger("bertdims.store")


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
               version: str | None = None, data: Any = None) -> str:
    """Hash of (kind, config, model fingerprint, library version) and, when given, the data
    version (:func:`bertdims.tasks.data_version` of the task or tasks the run reads)."""
    parts = {"kind": kind, "config": _plain(config), "fingerprint": fingerprint,
             "version": version or __version__}
    if data is not None:   # absent from older keys, so they stay valid
        parts["data"] = _plain(data)
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@dataclass
class StoredRun:
    """A completed run read back from the store."""

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


class ResultStore:
    """Keyed, atomic storage of runs. See the module docstring."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).resolve() if root is not None else default_root()

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def key(self, kind: str, config: Any, fingerprint: str | None = None, data: Any = None) -> str:
        """The key of a run; ``data`` (a data version) joins it when given."""
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

    @contextlib.contextmanager
    def lock(self, kind: str, key: str, *, poll: float = 0.2) -> Iterator[bool]:
        """Hold the inter-process lock of one key (``<root>/.locks/<kind>/<key>.lock``).

        Yields True when another process held it first (this one waited), else False. Take it
        around "read the entry, else compute and write it" so that one process computes and
        the others read its result: the lock is re-entrant within a process."""
        from filelock import FileLock, Timeout

        folder = self.root / ".locks" / kind
        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(folder / f"{key}.lock"), is_singleton=True)
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
    def writing(self, kind: str, config: Any, fingerprint: str | None = None,
                key: str | None = None, data: Any = None) -> Iterator[Path]:
        """Yield a temporary folder to fill; on success it is renamed into place atomically."""
        key = key or self.key(kind, config, fingerprint, data)
        final = self.path(kind, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=final.parent))
        try:
            (tmp / "config.json").write_text(json.dumps(_plain(config), indent=2, sort_keys=True, default=str))
            yield tmp
            meta = {"kind": kind, "key": key, "version": __version__, "fingerprint": fingerprint,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "complete": True,
                    "data": _plain(data), "files": checksums(tmp)}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
            if final.exists():  # an older copy of the same key (e.g. a forced rerun)
                trash = final.with_name(f".{key}.old.{os.getpid()}")
                os.replace(final, trash)
                shutil.rmtree(trash, ignore_errors=True)
            os.replace(tmp, final)
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
        """A table of the complete runs in the store (kind, key, created, path)."""
        rows = []
        kinds = [kind] if kind else sorted(p.name for p in self.root.glob("*")
                                           if p.is_dir() and not p.name.startswith("."))
        for k in kinds:
            for p in sorted((self.root / k).glob("*")):
                run = self.get(k, p.name) if not p.name.startswith(".") else None
                if run:
                    rows.append({"kind": k, "key": p.name, "created": run.meta["created"], "path": str(p)})
        return pd.DataFrame(rows, columns=["kind", "key", "created", "path"])


def write_payload(folder: Path, result: dict) -> None:
    plain = {}
    for name, value in result.items():
        if isinstance(value, pd.DataFrame):
            value.to_csv(folder / f"{name}.csv", index=False)
        elif isinstance(value, np.ndarray):
            np.save(folder / f"{name}.npy", value)
        else:
            plain[name] = _plain(value)
    (folder / "result.json").write_text(json.dumps(plain, indent=2, default=str))
