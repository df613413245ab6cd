"""How chapters show their verdicts (bertdims.book.report)."""
import numpy as np


def test_numpy_scalars_are_shown_as_plain_numbers_in_a_kernel():
    """myst-nb's glue stores the text/plain repr; numpy 2's ``np.float64(0.25)`` cannot be
    formatted with ``{glue:text}`x:.3f``` and fails the book build (-W)."""
    from IPython.core.interactiveshell import InteractiveShell

    from bertdims.book.report import plain_numbers_in_notebooks
    shell = InteractiveShell.instance()
    try:
        plain = shell.display_formatter.formatters["text/plain"]
        assert plain(np.float64(0.25)) == repr(np.float64(0.25))      # IPython's default: the repr
        assert plain_numbers_in_notebooks() is True
        assert plain(np.float64(0.25)) == "0.25"
        assert plain(np.float32(0.5)) == "0.5"
        assert plain(np.int64(3)) == "3"
        assert plain(np.bool_(True)) == "True"
        assert format(float(plain(np.float64(1.0294117647058822))), ".3f") == "1.029"
    finally:
        InteractiveShell.clear_instance()


def test_outside_a_kernel_nothing_is_registered():
    from bertdims.book.report import plain_numbers_in_notebooks
    assert plain_numbers_in_notebooks() is False
