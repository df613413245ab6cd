"""The check every result of bertdims passes (:mod:`bertdims.core.result`): the tests that make
a result call :func:`check_result` on it, so each kind is checked where it is computed anyway."""
from __future__ import annotations

import numbers
from pathlib import Path

import pandas as pd

from bertdims.core.result import Result


def _split_metrics(value, where: str) -> None:
    """``{split: {metric: number}}``."""
    assert isinstance(value, dict) and value, where
    for split, ms in value.items():
        assert isinstance(split, str) and isinstance(ms, dict) and ms, (where, split)
        for name, v in ms.items():
            assert isinstance(name, str), (where, split, name)
            assert isinstance(v, numbers.Number) or v is None, (where, split, name, v)


def check_result(result, *, config=None, runs: int | None = None, single: bool = False,
                 tables: set[str] | None = None, kept: bool = True) -> None:
    """``result`` has the four attributes with the shapes every result has.

    config : the config it must hold (compared with ``==``), if given.
    runs : how many runs ``metrics`` (and, when ``kept``, ``paths``) must list.
    single : ``metrics`` is one run's ``{split: {metric: value}}``.
    tables : the names ``tables`` must have, if given.
    kept : its runs were kept in a store, so their folders exist.
    """
    assert isinstance(result, Result), type(result).__name__
    if config is not None:
        assert result.config == config
    assert isinstance(result.tables, dict)
    for name, table in result.tables.items():
        assert isinstance(name, str) and isinstance(table, pd.DataFrame), name
    if tables is not None:
        assert set(result.tables) == tables, sorted(result.tables)
    metrics = result.metrics
    assert isinstance(metrics, dict)
    if single:
        _split_metrics(metrics, "metrics")
    else:
        for key, value in metrics.items():
            _split_metrics(value, f"metrics[{key!r}]")
    if runs is not None and not single:
        assert len(metrics) == runs, (len(metrics), runs)
    assert isinstance(result.paths, dict)
    for key, path in result.paths.items():
        assert isinstance(path, Path), key
        if kept:
            assert path.exists(), (key, path)
    if kept and runs is not None and not single:
        run_paths = [k for k in result.paths if k in metrics]
        assert len(run_paths) == runs, (len(run_paths), runs)
