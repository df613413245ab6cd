"""The ``bertdims`` command: ``tasks``, ``store``, the chapters' commands (:mod:`bertdims.book.chapters`,
:mod:`bertdims.book.plan`) and the experiment families' (:mod:`bertdims.cli.commands`).

Bad input never ends in a traceback: the library's errors for it (:data:`USER_ERRORS`) and
argparse's own are printed as one line on stderr, with exit status 2.
"""
from __future__ import annotations

import argparse
import sys


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``bertdims <cmd>: error: ...``), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception types that mean bad input (reported in one line, exit status 2)."""
    from ..core._validate import ConfigError
    from ..modeling.models import ModelNotAvailableError
    from ..data.tasks import TaskUnavailableError
    errors: list = [ConfigError, ModelNotAvailableError, TaskUnavailableError]
    try:
        from sklearn.utils._param_validation import InvalidParameterError
        errors.append(InvalidParameterError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


def build_parser() -> argparse.ArgumentParser:
    from .._version import __version__
    parser = OneLineParser(prog="bertdims", description="bertdims: how redundant are BERT's hidden representations?")
    parser.add_argument("--version", action="version", version=f"bertdims {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    tasks = sub.add_parser("tasks", help="list the task registry with split sizes")
    tasks.add_argument("--source", choices=("embedded", "hub"), default=None)
    tasks.set_defaults(func=_cmd_tasks)
    store = sub.add_parser("store", help="maintain the results store")
    store_sub = store.add_subparsers(dest="store_command", metavar="{clean}", required=True,
                                     parser_class=OneLineParser)
    clean = store_sub.add_parser("clean", help="remove what killed writers left in the results store")
    clean.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    clean.add_argument("--results", default=None,
                       help="results store (default $BERTDIMS_RESULTS or ./results)")
    clean.add_argument("--max-age-hours", type=float, default=24.0,
                       help="remove another host's leftovers older than this (default 24)")
    clean.set_defaults(func=_cmd_store_clean)
    from ..book import chapters
    chapters.register_cli(sub)
    from .commands import REGISTER
    for register in REGISTER:
        register(sub)
    return parser


def _cmd_tasks(args) -> int:
    import pandas as pd

    from ..data.tasks import task_table
    table = task_table()
    if args.source:
        table = table[table["source"] == args.source]
    with pd.option_context("display.max_rows", None, "display.max_columns", None,
                           "display.width", 200, "display.max_colwidth", 40):
        print(table.to_string(index=False))
    return 0


def _cmd_store_clean(args) -> int:
    from ..core.store import ResultStore
    store = ResultStore(args.results)
    removed = store.clean(dry_run=args.dry_run, max_age_hours=args.max_age_hours)
    for path in removed:
        print(("would remove " if args.dry_run else "removed ") + str(path))
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {len(removed)} leftover folder{'s' if len(removed) != 1 else ''} "
          f"from {store.root}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except user_errors() as err:
        print(f"bertdims {args.command}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
