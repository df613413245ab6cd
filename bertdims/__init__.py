"""bertdims: how redundant are BERT's hidden representations?

One public namespace for the library; chapters do ``import bertdims as bd``.
"""
from ._version import __version__
from ._validate import ConfigError
from .device import pick_device, pick_precision
from .models import (EMBEDDED_MODEL, Encoder, ModelNotAvailableError, load_encoder,
                     model_fingerprint, resolve_model)
from .store import ResultStore
from .tasks import (Task, TaskUnavailableError, compute_metrics, get_split, get_task, load_task,
                    task_names, texts_of)

# Experiment families register their public names below (one import line each).
from .extract import encode
from .overview import project_task, project_tasks, projection_chart
from .chapters import build_book, run_chapter
