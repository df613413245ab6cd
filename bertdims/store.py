"""The results store: every run kept with its full config, library version and model
fingerprint, under a key derived from them.

A run lives in ``<root>/<kind>/<key>/`` with ``config.json``, ``meta.json`` and its
payload (``result.json``, ``*.csv`` tables, ``*.npy`` arrays, or any files the run wrote,
such as a fine-tuned model). The folder is filled under a temporary name and renamed into
place in one step, so a run killed mid-write never leaves a result that is read as valid.
Running the same config again reads the stored result; a changed config, model or library
version gives another key and recomputes.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, is_dataclass, asdict
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

from ._version import __version__

RESULTS_ENV = "BERTDIMS_RESULTS"


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
               version: str | None = None) -> str:
    """Hash of (kind, config, model fingerprint, library version)."""
    blob = json.dumps({"kind": kind, "config": _plain(config), "fingerprint": fingerprint,
                       "version": version or __version__}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@dataclass
class StoredRun:
    """A completed run read back from the store."""

    path: Path
    config: dict
    meta: dict

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

    def key(self, kind: str, config: Any, fingerprint: str | None = None) -> str:
        return result_key(kind, config, fingerprint)

    def get(self, kind: str, key: str) -> StoredRun | None:
        """The stored run, or None when there is no complete one."""
        path = self.path(kind, key)
        meta_file = path / "meta.json"
        if not meta_file.exists():
            return None
        meta = json.loads(meta_file.read_text())
        if not meta.get("complete"):
            return None
        return StoredRun(path=path, config=json.loads((path / "config.json").read_text()), meta=meta)

    @contextlib.contextmanager
    def writing(self, kind: str, config: Any, fingerprint: str | None = None,
                key: str | None = None) -> Iterator[Path]:
        """Yield a temporary folder to fill; on success it is renamed into place atomically."""
        key = key or self.key(kind, config, fingerprint)
        final = self.path(kind, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=final.parent))
        try:
            (tmp / "config.json").write_text(json.dumps(_plain(config), indent=2, sort_keys=True, default=str))
            yield tmp
            meta = {"kind": kind, "key": key, "version": __version__, "fingerprint": fingerprint,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "complete": True}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
            if final.exists():  # an older copy of the same key (e.g. a forced rerun)
                trash = final.with_name(f".{key}.old.{os.getpid()}")
                os.replace(final, trash)
                shutil.rmtree(trash, ignore_errors=True)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def put(self, kind: str, config: Any, result: dict, fingerprint: str | None = None) -> StoredRun:
        """Store a result: JSON-able values go to result.json, DataFrames to CSV, arrays to .npy."""
        with self.writing(kind, config, fingerprint) as tmp:
            write_payload(tmp, result)
        return self.get(kind, self.key(kind, config, fingerprint))  # type: ignore[return-value]

    def cached(self, kind: str, config: Any, compute: Callable[[], dict],
               fingerprint: str | None = None, force: bool = False) -> StoredRun:
        """Read the stored run for this config, or compute, store and return it."""
        key = self.key(kind, config, fingerprint)
        if not force:
            hit = self.get(kind, key)
            if hit is not None:
                return hit
        return self.put(kind, config, compute(), fingerprint)

    def runs(self, kind: str | None = None) -> pd.DataFrame:
        """A table of the complete runs in the store (kind, key, created, path)."""
        rows = []
        kinds = [kind] if kind else sorted(p.name for p in self.root.glob("*") if p.is_dir())
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
