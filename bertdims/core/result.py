"""One shape for every result: ``config``, ``metrics``, ``tables`` and ``paths``.

Whatever an experiment returns (one fine-tuning run, a joint multi-task run, a study over tasks
and seeds, a run read back from the store), it answers the same four questions the same way:

``config``
    What it was computed from: the ``*Config`` dataclass (for the embedding studies, which take
    plain arguments, a dict of them; for a :class:`~bertdims.core.store.StoredRun`, the stored
    config dict).
``metrics``
    The evaluation metrics its runs reached, as plain numbers: ``{split: {metric: value}}``
    for one run, ``{run: {split: {metric: value}}}`` for several, ``run`` being the key the
    result gives its runs (``(setting, sparsity, seed)``, ``(task, seed)``, ...). Empty for the
    PCA and salient-neuron studies: what they score are linear probes on embeddings (in their
    tables), not the fine-tuning runs that produced the embeddings.
``tables``
    Every tidy table it holds, by name: ``{name: DataFrame}``.
``paths``
    The folders on disk it reads, by the same names and run keys: ``{"run": ..., "model": ...}``
    for one run, ``{run: folder}`` for the stored runs of a study. Empty when nothing was kept
    (``store=None``).

:class:`Result` is the protocol (``isinstance(x, Result)`` checks the four attributes);
:class:`ResultFields` gives a dataclass ``tables`` and ``paths`` from its fields and its
``runs``, :class:`RunsResult` also ``metrics`` from its ``runs``; :class:`StudyTables` is the dict of tables the embedding studies return, with the
same four attributes.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pandas as pd


@runtime_checkable
class Result(Protocol):
    """What every result of bertdims has (see the module docstring for what each holds)."""

    config: Any
    metrics: dict
    tables: dict
    paths: dict


def runs_metrics(runs: dict) -> dict:
    """``{key: run.metrics}`` for a dict of runs (each a :class:`Result` of one run).

    Parameters
    ----------
    runs : dict
        Run key (a tuple such as ``(setting, seed)``) to a run with ``metrics``.

    Returns
    -------
    dict
        ``{key: {split: {metric: value}}}``, in the order of ``runs``.
    """
    return {key: run.metrics for key, run in runs.items()}


def runs_paths(runs: dict) -> dict:
    """``{key: folder}`` for the runs of a dict that were kept on disk.

    Parameters
    ----------
    runs : dict
        Run key to a run with a ``path`` (None when it was not kept).

    Returns
    -------
    dict
        ``{key: pathlib.Path}``, runs without a folder left out.
    """
    return {key: Path(run.path) for key, run in runs.items() if getattr(run, "path", None) is not None}


class ResultFields:
    """For a result dataclass: ``tables`` are its DataFrame fields, ``paths`` its
    :class:`~pathlib.Path` fields (by field name) and the folders of its ``runs`` (by run key).
    The class itself provides ``config`` and ``metrics``."""

    def _values(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        """Every table of the result, by field name."""
        return {name: v for name, v in self._values().items() if isinstance(v, pd.DataFrame)}

    @property
    def paths(self) -> dict:
        """The result's folders (by field name) and its stored runs' folders (by run key)."""
        found: dict = {name: v for name, v in self._values().items() if isinstance(v, Path)}
        found.update(runs_paths(getattr(self, "runs", None) or {}))
        return found


class RunsResult(ResultFields):
    """For a result dataclass holding its runs in a ``runs`` field (``{run key: run}``):
    ``metrics`` are theirs, ``{run key: {split: {metric: value}}}``; ``tables`` and ``paths``
    as :class:`ResultFields`."""

    @property
    def metrics(self) -> dict:
        """``{run key: {split: {metric: value}}}`` of every run in ``runs``."""
        return runs_metrics(self.runs)


class StudyTables(dict):
    """The tables a study returns, by name (a dict, as before: ``study["sizes"]``), with the
    four attributes of every result.

    Parameters
    ----------
    tables : dict of str to pandas.DataFrame
        The study's tables (other values, such as a list of settings, are kept in the dict but
        not listed in ``tables``).
    config : dict or dataclass
        What the study was computed from.
    metrics : dict, optional
        Its runs' metrics, ``{run: {split: {metric: value}}}``; empty when it scores no run.
    paths : dict, optional
        Its stored runs' folders.
    """

    def __init__(self, tables: dict, *, config: Any, metrics: dict | None = None,
                 paths: dict | None = None):
        super().__init__(tables)
        self.config = config
        self.metrics = dict(metrics or {})
        self.paths = dict(paths or {})

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        """The DataFrames of the study, by name."""
        return {k: v for k, v in self.items() if isinstance(v, pd.DataFrame)}
