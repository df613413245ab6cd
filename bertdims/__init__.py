"""bertdims: how redundant are BERT's hidden representations?

Chapters do ``import bertdims as bd``. The top level holds the names a chapter or a user starts
from (``bd.__all__``, about thirty); everything else lives in its module, and every module is an
attribute of the package (``bd.dims.summarize_runs``, ``bd.scorecard.record_verdict``).

The naming convention of the experiments:

* one run is a verb: :func:`finetune`, :func:`rank_dims`, :func:`cross_finetune`,
  :func:`finetune_multitask`, :func:`sparse_finetune`;
* a study over tasks and seeds (many runs, their tables and effects) is ``<topic>_study``:
  :func:`pca_study`, :func:`neurons_study`, :func:`distance_study`, :func:`layer_study`,
  :func:`sparse_study`, :func:`rankings_study`;
* each of them takes a ``*Config`` dataclass (or its fields) and a results store.

A name that used to be at the top level and is no longer (``bd.summarize_runs``, ``bd.run_dims``)
still resolves, with a ``FutureWarning`` that names where it lives now.
"""
import os as _os

# Before torch loads its OpenMP runtime: idle worker threads sleep instead of spinning. On a
# machine with more busy processes than cores, spinning threads made small eigen-decompositions
# 100x slower (measured: TorchPCA.fit on 1000 x 384 took 13 s with 2 spinning threads, 0.09 s
# with this setting). Set OMP_WAIT_POLICY yourself to override.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ._version import __version__  # noqa: E402

# The modules, each an attribute of the package (``bd.dims``, ``bd.study_charts``, ...).
from . import device, models, store, tasks, extract, overview, chapters, charts  # noqa: E402, F401
from . import dims, fewdims_charts, findings, distances, sparse, study_charts, study_findings  # noqa: E402, F401
from . import finetuning, multitask, crossft, claims, scorecard, stats, neurons, pca, report  # noqa: E402, F401
from . import agreement  # noqa: E402, F401
from . import finetune_config, heads, loop, parameters, params, probes, progress  # noqa: E402, F401
from . import task_spec, tokens, training  # noqa: E402, F401

# Data and models.
from .models import load_encoder  # noqa: E402
from .tasks import get_task, load_task, task_names  # noqa: E402
from .store import ResultStore  # noqa: E402
from ._validate import ConfigError  # noqa: E402
# Fine-tuning.
from .finetuning import FinetuneConfig, finetune, load_finetuned  # noqa: E402
# Few dimensions.
from .dims import finetune_grid, rank_dims  # noqa: E402
# Cross-fine-tuning and several tasks in one model.
from .crossft import CrossConfig, cross_finetune  # noqa: E402
from .multitask import MultitaskConfig, finetune_multitask  # noqa: E402
# PCA and salient neurons.
from .pca import pca_study  # noqa: E402
from .neurons import neurons_study  # noqa: E402
# Weight distances.
from .distances import DistanceConfig, LayerStudyConfig, distance_study, layer_study  # noqa: E402
# Sparse fine-tuning.
from .sparse import SparseConfig, sparse_finetune, sparse_study  # noqa: E402
# Agreement of the dimension rankings.
from .agreement import AgreementConfig, rankings_study  # noqa: E402
# Statistics.
from .stats import Effect, paired_effect, seed_effect, verdict_of  # noqa: E402
# The book.
from .chapters import build_book, run_chapter  # noqa: E402

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

#: The modules ``dir(bertdims)`` lists next to ``__all__``.
_SUBMODULES = (
    "agreement", "chapters", "charts", "claims", "crossft", "device", "dims", "distances", "extract",
    "fewdims_charts", "findings", "finetune_config", "finetuning", "heads", "loop", "models",
    "multitask", "neurons", "overview", "parameters", "params", "pca", "probes", "progress", "report",
    "scorecard", "sparse", "stats", "store", "study_charts", "study_findings", "task_spec", "tasks",
    "tokens", "training",
)

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
    """A former top-level name, from its module, with a FutureWarning naming that module."""
    import importlib
    import warnings

    if name in _RENAMED:
        module, new = _RENAMED[name]
        message = (f"bertdims.{name} is no longer part of the top-level namespace; use "
                   f"bertdims.{new} (renamed; also bertdims.{module}.{new})")
        attr = new
    elif name in _MOVED:
        module = _MOVED[name]
        message = (f"bertdims.{name} is no longer part of the top-level namespace; use "
                   f"bertdims.{module}.{name}")
        attr = name
    else:
        raise AttributeError(f"module 'bertdims' has no attribute {name!r}")
    warnings.warn(message, FutureWarning, stacklevel=2)
    return getattr(importlib.import_module(f"{__name__}.{module}"), attr)


def __dir__() -> list[str]:
    """The curated names, ``__version__`` and the modules."""
    return sorted({*__all__, "__version__", *_SUBMODULES})


from .report import plain_numbers_in_notebooks as _plain_numbers  # noqa: E402

_plain_numbers()
