"""Command-line flags generated from a config's declared fields (:mod:`bertdims.config.params`): one
``--flag`` per field, with the vocabulary's meaning as its help and the config's default. The
command line only: the modules that compute never import this one."""
from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any

from ..config.params import Flag


def add_flags(parser, config_cls, *, skip: tuple = (), defaults: dict | None = None) -> list[str]:
    """Add one ``--flag`` per declared field of ``config_cls`` to an argparse ``parser``
    (``--max-seq-len`` for ``max_seq_len``); booleans get ``--x/--no-x``. Values stay text or
    numbers; the config checks them when it is built. Returns the field names added.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        Where the flags go.
    config_cls : type
        A config dataclass whose fields were declared with :func:`param` or :func:`own`.
    skip : tuple of str
        Fields to leave out (the command sets them itself).
    defaults : dict, optional
        Flag defaults that differ from the config's.
    """
    added = []
    for f in dataclasses.fields(config_cls):
        spec = f.metadata.get("param")
        if spec is None or f.name in skip:
            continue
        default = (defaults or {}).get(f.name, f.default if f.default is not dataclasses.MISSING
                                       else f.default_factory())
        flag = "--" + f.name.replace("_", "-")
        helptext = f"{spec.doc} (default: {default})"
        if isinstance(spec.constraint, Flag):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                                help=helptext)
        else:
            kind = spec.constraint.cli_type()
            parser.add_argument(flag, type=_or_none(kind) if spec.none else kind, default=default,
                                metavar=f.name.upper(), help=helptext)
        added.append(f.name)
    return added


def _or_none(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        return None if text.strip().lower() in ("none", "all", "") else kind(text)
    convert.__name__ = getattr(kind, "__name__", "value")
    return convert
