"""The bottom layer, which every other one uses: checks that name the parameter
(``_validate``), device and precision (``device``), whether the hub answers (``hub``), per-run
progress lines (``progress``), the one shape of every result (``result``), the statistics every verdict goes through (``stats``) and the
results store (``store``). It imports nothing else from bertdims."""
from . import _validate, device, hub, progress, result, stats, store  # noqa: F401
