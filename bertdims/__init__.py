"""bertdims: how redundant are BERT's hidden representations?

Chapters do ``import bertdims as bd``. The top level holds the names a chapter or a user starts
from (``bd.__all__``, about thirty); everything else lives in its module, and every module sits
in one of eight layers, each a folder that imports only the ones before it:

========  ===============================================================================
core      checks, device, the hub check, progress lines, statistics, the results store
data      the task registry and its two catalogues (embedded, hub)
modeling  encoders, token choice, a tiny BERT for tests
config    the vocabulary of config fields, the fine-tuning config and the papers' recipe
train     the one training loop, fine-tuning, heads, several tasks, sparse masks, grids
analysis  the papers' methods: dimensions, cross-fine-tuning, PCA, neurons, distances, ...
book      chapters, claims, scorecard, charts, findings in words (presentation only)
cli       the ``bertdims`` command
========  ===============================================================================

A module is reached through its layer: ``bd.analysis.dims.summarize_runs``,
``bd.book.scorecard.record_verdict``, ``from bertdims.train import sparse``.

The naming convention of the experiments:

* one run is a verb: :func:`finetune`, :func:`rank_dims`, :func:`cross_finetune`,
  :func:`finetune_multitask`, :func:`sparse_finetune`;
* a study over tasks and seeds (many runs, their tables and effects) is ``<topic>_study``:
  :func:`pca_study`, :func:`neurons_study`, :func:`distance_study`, :func:`layer_study`,
  :func:`sparse_study`, :func:`rankings_study`;
* each of them takes a ``*Config`` dataclass (or its fields) and a results store.

A name that used to be at the top level and is no longer (``bd.summarize_runs``, ``bd.run_dims``)
still resolves, with a ``FutureWarning`` that names where it lives now; so does a module path
from before the layers (``bd.dims``, ``import bertdims.dims``).
"""
import os as _os

# Before torch loads its OpenMP runtime: idle worker threads sleep instead of spinning. On a
# machine with more busy processes than cores, spinning threads made small eigen-decompositions
# 100x slower (measured: TorchPCA.fit on 1000 x 384 took 13 s with 2 spinning threads, 0.09 s
# with this setting). Set OMP_WAIT_POLICY yourself to override.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ._version import __version__  # noqa: E402

# The layers, lowest first; each imports only the ones before it (tests/test_layers.py), and
# each module is an attribute of its layer (``bd.analysis.dims``, ``bd.book.report``).
from . import core, data, modeling, config, train, analysis, book, cli  # noqa: E402, F401

# Data and models.
from .modeling.models import load_encoder  # noqa: E402
from .data.tasks import get_task, load_task, task_names  # noqa: E402
from .core.store import ResultStore  # noqa: E402
from .core._validate import ConfigError  # noqa: E402
# Fine-tuning.
from .train.finetuning import FinetuneConfig, finetune, load_finetuned  # noqa: E402
# Few dimensions.
from .analysis.dims import finetune_grid, rank_dims  # noqa: E402
# Cross-fine-tuning and several tasks in one model.
from .analysis.crossft import CrossConfig, cross_finetune  # noqa: E402
from .train.multitask import MultitaskConfig, finetune_multitask  # noqa: E402
# PCA and salient neurons.
from .analysis.pca import pca_study  # noqa: E402
from .analysis.neurons import neurons_study  # noqa: E402
# Weight distances.
from .analysis.distances import DistanceConfig, LayerStudyConfig, distance_study, layer_study  # noqa: E402
# Sparse fine-tuning.
from .train.sparse import SparseConfig, sparse_finetune, sparse_study  # noqa: E402
# Agreement of the dimension rankings.
from .analysis.agreement import AgreementConfig, rankings_study  # noqa: E402
# Statistics.
from .core.stats import Effect, paired_effect, seed_effect, verdict_of  # noqa: E402
# The book.
from .book.chapters import build_book, run_chapter  # noqa: E402

__all__ = [
    # data and models
    "load_encoder", "load_task", "get_task", "task_names", "ResultStore", "ConfigError",
    # fine-tuning
    "FinetuneConfig", "finetune", "load_finetuned",
    # few dimensions
    "rank_dims", "finetune_grid",
    # cross-fine-tuning and several tasks
    "CrossConfig", "cross_finetune", "MultitaskConfig", "finetune_multitask",
    # PCA and neurons
    "pca_study", "neurons_study",
    # distances
    "DistanceConfig", "distance_study", "LayerStudyConfig", "layer_study",
    # sparse
    "SparseConfig", "sparse_finetune", "sparse_study",
    # agreement
    "AgreementConfig", "rankings_study",
    # statistics
    "Effect", "paired_effect", "seed_effect", "verdict_of",
    # the book
    "run_chapter", "build_book",
]

#: The layers, lowest first, and their modules: ``bd.<layer>.<module>``.
_LAYERS = {
    "core": ("_validate", "device", "hub", "progress", "result", "stats", "store"),
    "data": ("task_spec", "_embedded", "_hub", "tasks"),
    "modeling": ("models", "tokens", "testing"),
    "config": ("params", "finetune_config"),
    "train": ("training", "heads", "loop", "finetuning", "multitask", "sparse", "executor"),
    "analysis": ("extract", "probes", "dims", "pca", "neurons", "distances", "crossft", "agreement"),
    "book": ("chapters", "parameters", "plan", "claims", "scorecard", "report", "findings",
             "study_findings", "charts", "fewdims_charts", "study_charts", "overview", "webassets"),
    "cli": ("app", "commands", "flags"),
}
#: Where each module lives: ``{module: "layer.module"}``.
_MODULES = {m: f"{layer}.{m}" for layer, modules in _LAYERS.items() for m in modules}
#: Module paths from before the layers (``bertdims.dims``): each still imports, with a
#: FutureWarning naming where the module lives now (``cli`` is its layer's name now).
_FORMER_MODULES = {m: path for m, path in _MODULES.items() if m not in ("hub", "result", "app")}

# ------------------------------------------------------------------- former top-level names
# Names that were at the top level before the namespace was curated: each still resolves, from
# its module, with a FutureWarning saying where it lives now.
_MOVED_FROM = {
    "agreement": ("outlier_retrain",),
    "claims": ("Claim", "claim_by_id", "CLAIMS", "claims_table"),
    "crossft": ("cross_effects", "load_multitask", "matched_epochs", "multitask_vs_single",
                "MultitaskModel", "Sequential", "shared_dims", "transplant_head"),
    "device": ("pick_device", "pick_precision"),
    "dims": ("chance_score", "chosen_dims", "constant_baseline", "constant_predictions",
             "effects_frame", "evaluate_k", "grid_predictions", "LinearHead", "model_size",
             "pick_effect", "probe_baseline", "probe_predictions", "random_dims",
             "rank_dimensions", "Representations", "retrain_effects", "retrain_k",
             "retrain_study", "RetrainStudy", "run_dims_grid", "selected_dims",
             "selection_stability", "summarize_runs"),
    "distances": ("aggregate_distances", "closeness_effect", "comparison_summary",
                  "layer_distances", "layer_summary", "layer_variation_effect",
                  "random_init_like", "weight_distances"),
    "extract": ("encode",),
    "fewdims_charts": ("compare_runs_chart", "curve_chart", "history_frame", "scores_frame",
                       "share_chart", "trend_chart"),
    "finetuning": ("FinetuneRun",),
    "models": ("cached_encoder", "EMBEDDED_MODEL", "Encoder", "model_fingerprint",
               "ModelNotAvailableError", "resolve_model"),
    "neurons": ("NeuronSelector", "single_neuron_accuracy"),
    "overview": ("project_task", "project_tasks", "projection_chart"),
    "pca": ("TorchPCA",),
    "report": ("effect_chart", "effects_table", "glue_effects", "record_known_verdicts",
               "verdict_note"),
    "scorecard": ("chapter_params", "forest_chart", "preset_params", "record_verdict",
                  "scorecard_html", "scorecard_table", "verdict_counts"),
    "sparse": ("apply_mask", "load_mask", "load_sparse_task", "save_mask", "sparse_effects",
               "sparse_summary", "sparse_vs_full", "sparsity_sweep", "storage_table",
               "StoredMask", "verify_stored_task"),
    "stats": ("metric_scores",),
    "study_charts": ("distance_chart", "kind_chart", "layer_study_chart", "sparsity_chart"),
    "study_findings": ("distance_findings", "layer_findings", "sparse_findings"),
    "tasks": ("compute_metrics", "general_corpus", "get_split", "Task", "task_table",
              "TaskUnavailableError", "texts_of"),
}
_MOVED = {name: module for module, names in _MOVED_FROM.items() for name in names}
#: Renamed experiment verbs: old top-level name -> (module, new name), the new name curated.
_RENAMED = {
    "run_dims": ("dims", "rank_dims"),
    "sequential": ("crossft", "cross_finetune"),
    "train_multitask": ("multitask", "finetune_multitask"),
}


def __getattr__(name: str):
    """A former top-level name or module, from where it lives now, with a FutureWarning that
    says where."""
    import importlib
    import warnings

    if name in _RENAMED:
        module, new = _RENAMED[name]
        message = (f"bertdims.{name} is no longer part of the top-level namespace; use "
                   f"bertdims.{new} (renamed; also bertdims.{_MODULES[module]}.{new})")
        attr = new
    elif name in _MOVED:
        module = _MOVED[name]
        message = (f"bertdims.{name} is no longer part of the top-level namespace; use "
                   f"bertdims.{_MODULES[module]}.{name}")
        attr = name
    elif name in _FORMER_MODULES:
        warnings.warn(_module_moved(name), FutureWarning, stacklevel=2)
        return importlib.import_module(f"{__name__}.{_FORMER_MODULES[name]}")
    else:
        raise AttributeError(f"module 'bertdims' has no attribute {name!r}")
    warnings.warn(message, FutureWarning, stacklevel=2)
    return getattr(importlib.import_module(f"{__name__}.{_MODULES[module]}"), attr)


def _module_moved(name: str) -> str:
    return (f"the module bertdims.{name} is now bertdims.{_FORMER_MODULES[name]} "
            f"(the package is in layers: {', '.join(_LAYERS)})")


class _FormerModules:
    """``import bertdims.dims`` (a module path from before the layers) imports the module from
    its layer, with a FutureWarning; the module object is the same one, not a copy."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        import importlib.util

        head, _, name = fullname.partition(".")
        if head != __name__ or name not in _FORMER_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, _FormerModules)

    @staticmethod
    def create_module(spec):
        import importlib
        import warnings

        name = spec.name.partition(".")[2]
        warnings.warn(_module_moved(name), FutureWarning, stacklevel=2)
        return importlib.import_module(f"{__name__}.{_FORMER_MODULES[name]}")

    @staticmethod
    def exec_module(module):
        """The module was executed where it lives."""


def __dir__() -> list[str]:
    """The curated names, ``__version__`` and the layers."""
    return sorted({*__all__, "__version__", *_LAYERS})


import sys as _sys  # noqa: E402

if not any(f is _FormerModules for f in _sys.meta_path):
    _sys.meta_path.append(_FormerModules)

from .book.report import plain_numbers_in_notebooks as _plain_numbers  # noqa: E402

_plain_numbers()
