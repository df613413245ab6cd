"""``python -m bertdims.cli``: the ``bertdims`` command."""
import sys

from .app import main

sys.exit(main())
