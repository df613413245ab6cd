"""The ``bertdims`` command. Experiment families add their own sub-commands through a
``register_cli(subparsers)`` function in their module (listed in ``FAMILY_MODULES``)."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

FAMILY_MODULES = ("finetune", "dims", "crossft", "extract", "pca", "neurons", "distances", "sparse")


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__
    parser = argparse.ArgumentParser(prog="bertdims", description="bertdims: how redundant are BERT's hidden representations?")
    parser.add_argument("--version", action="version", version=f"bertdims {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    tasks = sub.add_parser("tasks", help="list the task registry with split sizes")
    tasks.add_argument("--source", choices=("embedded", "hub"), default=None)
    tasks.set_defaults(func=_cmd_tasks)
    from . import chapters
    chapters.register_cli(sub)
    for name in FAMILY_MODULES:
        if importlib.util.find_spec(f"bertdims.{name}") is not None:
            module = importlib.import_module(f"bertdims.{name}")
            if hasattr(module, "register_cli"):
                module.register_cli(sub)
    return parser


def _cmd_tasks(args) -> int:
    import pandas as pd

    from .tasks import task_table
    table = task_table()
    if args.source:
        table = table[table["source"] == args.source]
    with pd.option_context("display.max_rows", None, "display.max_columns", None,
                           "display.width", 200, "display.max_colwidth", 40):
        print(table.to_string(index=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from ._validate import ConfigError
    from .models import ModelNotAvailableError
    from .tasks import TaskUnavailableError
    try:
        return int(args.func(args) or 0)
    except (ConfigError, ModelNotAvailableError, TaskUnavailableError) as err:
        print(f"bertdims {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
