"""Progress of the runs a chapter computes, for the terminal that builds the book.

The library calls :func:`run_started` and :func:`run_finished` where it computes a stored run
(never when it reads one back). When the environment variable :data:`PROGRESS_ENV` names a
file, each call appends one JSON line to it; otherwise they do nothing. ``bertdims book`` and
``bertdims run`` set the variable for the chapter's kernel and follow the file from a thread
(:class:`Follower`), printing which run of how many is executing and an estimate of the time
left. Reporting progress never fails a run: any error writing the line is ignored.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

PROGRESS_ENV = "BERTDIMS_PROGRESS"
#: Seconds between two looks at the progress file while a chapter runs.
POLL_SECONDS = 0.5
#: Kinds whose computing the library reports (the runs a progress line counts).
REPORTED_KINDS = ("finetune", "sparse_finetune", "multitask", "dims_rank", "dims_k")


def _append(event: dict) -> None:
    path = os.environ.get(PROGRESS_ENV)
    if not path:
        return
    try:
        line = json.dumps({**event, "time": time.time(), "pid": os.getpid()}, default=str)
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    except Exception:       # progress reporting must never fail the run
        pass


def run_started(kind: str, key: str, config: Any) -> None:
    """A stored run of ``kind`` under ``key`` starts computing (``config``: its config dict)."""
    try:
        config = config.to_dict() if hasattr(config, "to_dict") else config
    except Exception:
        config = None
    _append({"event": "started", "kind": kind, "key": key, "config": config})


def run_finished(kind: str, key: str, seconds: float, cached: bool) -> None:
    """A run ended after ``seconds``; ``cached``: it was read back rather than computed."""
    _append({"event": "finished", "kind": kind, "key": key, "seconds": seconds, "cached": cached})


def read_events(path: str | os.PathLike, offset: int = 0) -> tuple[list[dict], int]:
    """The complete JSON lines of ``path`` after byte ``offset``, and the new offset."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return [], offset
    end = data.rfind(b"\n") + 1
    events = []
    for line in data[:end].splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events, offset + end


def describe(event: dict) -> str:
    """Short words for a run from its event: kind, task and seed when the config has them."""
    cfg = event.get("config") or {}
    words = [event.get("kind", "run")]
    for name in ("task", "dims", "freeze", "sparsity", "mask", "method", "seed"):
        if isinstance(cfg, dict) and cfg.get(name) not in (None, 0) or name == "seed" and \
                isinstance(cfg, dict) and name in cfg:
            words.append(str(cfg[name]) if name == "task" else f"{name} {cfg[name]}")
    return " ".join(words)


class Follower:
    """Follow a progress file from a thread while a chapter runs and print a line per run
    started: ``[<chapter> i/n] run j of m (<what>); about k min left (estimate)``.

    ``planned``: the chapter's runs still to do, as (kind, key or None, words, estimated seconds
    or None), of the :data:`REPORTED_KINDS`; ``later_seconds``: the estimate of the chapters after this one. A run whose key is
    not planned (a dependent run, or one the planner does not list) is counted in order.
    """

    def __init__(self, path: str | os.PathLike, prefix: str, planned: list[tuple],
                 later_seconds: float | None = 0.0, out: Callable[[str], None] | None = None):
        self.path, self.prefix = Path(path), prefix
        self.planned = list(planned)
        self.later = later_seconds
        self.out = out or _write_line
        self.started = 0
        self.done: set[int] = set()
        self._offset = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "Follower":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()

    def _loop(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self.poll()

    def poll(self) -> None:
        events, self._offset = read_events(self.path, self._offset)
        for event in events:
            try:
                self.handle(event)
            except Exception:     # a line the follower cannot read says nothing about the run
                continue

    def _index(self, kind: str | None, key: str | None) -> int | None:
        for i, (_, k, _, _) in enumerate(self.planned):
            if k is not None and k == key and i not in self.done:
                return i
        for i, (c, k, _, _) in enumerate(self.planned):
            if c == kind and k is None and i not in self.done:
                return i
        return None

    def handle(self, event: dict) -> None:
        if event.get("event") == "started":
            self.started += 1
            i = self._index(event.get("kind"), event.get("key"))
            what = self.planned[i][2] if i is not None and self.planned[i][1] == event.get("key") \
                else describe(event)
            if i is not None:
                self.done.add(i)       # from now on, its time is being spent
            total = max(len(self.planned), self.started)
            self.out(f"{self.prefix} run {self.started} of {total} ({what}); {self.left()}")

    def left(self) -> str:
        rest = [s for i, (_, _, _, s) in enumerate(self.planned) if i not in self.done]
        if self.later is None or any(s is None for s in rest):
            return "time left unknown (no cost measured)"
        minutes = (sum(rest) + self.later) / 60
        return f"about {minutes:.0f} min left (estimate)" if minutes >= 1 \
            else "under a minute left (estimate)"


def _write_line(text: str) -> None:
    """Print one line above papermill's cell progress bar (tqdm's lock clears and redraws it),
    rather than after it on the same terminal line."""
    from tqdm.auto import tqdm
    tqdm.write(text)
