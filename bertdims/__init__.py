"""bertdims: how redundant are BERT's hidden representations?

One public namespace for the library; chapters do ``import bertdims as bd``.
"""
import os as _os

# Before torch loads its OpenMP runtime: idle worker threads sleep instead of spinning. On a
# machine with more busy processes than cores, spinning threads made small eigen-decompositions
# 100x slower (measured: TorchPCA.fit on 1000 x 384 took 13 s with 2 spinning threads, 0.09 s
# with this setting). Set OMP_WAIT_POLICY yourself to override.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ._version import __version__  # noqa: E402
from ._validate import ConfigError
from .device import pick_device, pick_precision
from .models import (EMBEDDED_MODEL, Encoder, ModelNotAvailableError, cached_encoder, load_encoder,
                     model_fingerprint, resolve_model)
from .store import ResultStore
from .tasks import (Task, TaskUnavailableError, compute_metrics, get_split, get_task, load_task,
                    task_table,
                    task_names, texts_of)

# Experiment families register their public names below (one import line each).
from .extract import encode
from .overview import project_task, project_tasks, projection_chart
from .chapters import build_book, run_chapter
from . import charts
from .dims import (chance_score, constant_predictions, grid_predictions, probe_predictions,  # noqa: E501
                   LinearHead, Representations, chosen_dims, constant_baseline, evaluate_k, finetune_grid, model_size, probe_baseline, rank_dimensions, retrain_k, run_dims, run_dims_grid, summarize_runs)  # noqa: E501
from .fewdims_charts import (compare_runs_chart, curve_chart, history_frame, scores_frame, share_chart,
                             trend_chart)
from . import findings
from .distances import (DistanceConfig, LayerStudyConfig, aggregate_distances, comparison_summary, distance_study, layer_distances, layer_study, layer_summary, random_init_like, weight_distances)  # noqa: E501
from .sparse import (SparseConfig, StoredMask, apply_mask, load_mask, load_sparse_task, save_mask, sparse_finetune, sparse_summary, sparse_vs_full, sparsity_sweep, storage_table, verify_stored_task)  # noqa: E501
from . import study_charts, study_findings
from .study_charts import distance_chart, kind_chart, layer_study_chart, sparsity_chart
from .study_findings import distance_findings, layer_findings, sparse_findings
from ._embedded import general_corpus
from .finetuning import FinetuneConfig, FinetuneRun, finetune, load_finetuned
from .crossft import (CrossConfig, MultitaskModel, MultitaskConfig, load_multitask, multitask_vs_single, sequential, shared_dims, train_multitask, transplant_head)  # noqa: E501
from . import claims, scorecard, stats
from .stats import Effect, metric_scores, paired_effect, seed_effect, verdict_of
from .claims import CLAIMS, Claim, claim_by_id, claims_table
from .scorecard import (chapter_params, forest_chart, preset_params, record_verdict, scorecard_html,
                        scorecard_table, verdict_counts)
from .neurons import NeuronSelector, single_neuron_accuracy
from .pca import TorchPCA
from .report import effect_chart, effects_table, glue_effects, record_known_verdicts, verdict_note
from .dims import (RetrainStudy, effects_frame, pick_effect, random_dims, retrain_effects,  # noqa: E402
                   retrain_study, selected_dims, selection_stability)
from .crossft import Sequential, cross_effects, matched_epochs  # noqa: E402
from .sparse import sparse_effects, sparse_study  # noqa: E402
from .distances import closeness_effect, layer_variation_effect  # noqa: E402
from . import agreement  # noqa: E402
from .agreement import AgreementConfig, outlier_retrain, rankings_study  # noqa: E402
from .report import plain_numbers_in_notebooks as _plain_numbers  # noqa: E402

_plain_numbers()
