"""A shared check for the command line's bad-input contract (used by several test files)."""
from __future__ import annotations


def assert_one_line_refusal(argv: list[str], needle: str, capsys) -> None:
    """``bertdims argv`` stops with exit status 2 and one stderr line starting with
    ``bertdims`` that contains ``needle`` (argparse's own refusals included)."""
    from bertdims.cli import main
    try:
        code = main(argv)
    except SystemExit as exit_:   # argparse's own errors
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("bertdims"), err
    assert needle in err, err
