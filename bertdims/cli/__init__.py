"""The ``bertdims`` command: the root parser (``app``), the experiment families' sub-commands
(``commands``) and the flags generated from a config's declared fields (``flags``). The top
layer: nothing imports it. ``python -m bertdims.cli`` runs it."""
from . import app, commands, flags  # noqa: F401
from .app import build_parser, main  # noqa: F401
