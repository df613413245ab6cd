"""Encoders: loading a model by name or folder and reading its hidden states (``models``),
which token vector is read (``tokens``), and a tiny random BERT for tests (``testing``).
Imports only the layers below (core, data)."""
from . import models, tokens, testing  # noqa: F401
