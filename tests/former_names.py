"""The names ``import bertdims as bd`` exported before its namespace was curated, and where
each lives now: shared by tests/test_api.py (each still resolves, with a FutureWarning) and
tests/test_docstrings.py (each still has a complete docstring). A frozen record: do not
derive it from ``bertdims.__init__``."""

#: Module (under ``bertdims``) -> the former top-level names that live there now.
FORMER_BY_MODULE = {
    "_validate": ("ConfigError",),
    "agreement": ("AgreementConfig", "outlier_retrain", "rankings_study"),
    "chapters": ("build_book", "run_chapter"),
    "claims": ("Claim", "claim_by_id", "CLAIMS", "claims_table"),
    "crossft": ("cross_effects", "CrossConfig", "load_multitask", "matched_epochs",
                "multitask_vs_single", "MultitaskModel", "Sequential", "shared_dims",
                "transplant_head"),
    "device": ("pick_device", "pick_precision"),
    "dims": ("chance_score", "chosen_dims", "constant_baseline", "constant_predictions",
             "effects_frame", "evaluate_k", "finetune_grid", "grid_predictions", "LinearHead",
             "model_size", "pick_effect", "probe_baseline", "probe_predictions", "random_dims",
             "rank_dimensions", "Representations", "retrain_effects", "retrain_k",
             "retrain_study", "RetrainStudy", "run_dims_grid", "selected_dims",
             "selection_stability", "summarize_runs"),
    "distances": ("aggregate_distances", "closeness_effect", "comparison_summary",
                  "distance_study", "DistanceConfig", "layer_distances", "layer_study",
                  "layer_summary", "layer_variation_effect", "LayerStudyConfig",
                  "random_init_like", "weight_distances"),
    "extract": ("encode",),
    "fewdims_charts": ("compare_runs_chart", "curve_chart", "history_frame", "scores_frame",
                       "share_chart", "trend_chart"),
    "finetuning": ("finetune", "FinetuneConfig", "FinetuneRun", "load_finetuned"),
    "models": ("cached_encoder", "EMBEDDED_MODEL", "Encoder", "load_encoder",
               "model_fingerprint", "ModelNotAvailableError", "resolve_model"),
    "multitask": ("MultitaskConfig",),
    "neurons": ("NeuronSelector", "single_neuron_accuracy"),
    "overview": ("project_task", "project_tasks", "projection_chart"),
    "pca": ("TorchPCA",),
    "report": ("effect_chart", "effects_table", "glue_effects", "record_known_verdicts",
               "verdict_note"),
    "scorecard": ("chapter_params", "forest_chart", "preset_params", "record_verdict",
                  "scorecard_html", "scorecard_table", "verdict_counts"),
    "sparse": ("apply_mask", "load_mask", "load_sparse_task", "save_mask", "sparse_effects",
               "sparse_finetune", "sparse_study", "sparse_summary", "sparse_vs_full",
               "SparseConfig", "sparsity_sweep", "storage_table", "StoredMask",
               "verify_stored_task"),
    "stats": ("Effect", "metric_scores", "paired_effect", "seed_effect", "verdict_of"),
    "store": ("ResultStore",),
    "study_charts": ("distance_chart", "kind_chart", "layer_study_chart", "sparsity_chart"),
    "study_findings": ("distance_findings", "layer_findings", "sparse_findings"),
    "tasks": ("compute_metrics", "general_corpus", "get_split", "get_task", "load_task", "Task",
              "task_names", "task_table", "TaskUnavailableError", "texts_of"),
}
#: Former name -> its module now.
FORMER = {name: module for module, names in FORMER_BY_MODULE.items() for name in names}

#: The renamed experiment verbs: old top-level name -> (the module it lived in, its new name).
RENAMED = {
    "run_dims": ("dims", "rank_dims"),
    "sequential": ("crossft", "cross_finetune"),
    "train_multitask": ("multitask", "finetune_multitask"),
}

#: Module paths from before the package was cut into layers (``bertdims.dims``) -> where each
#: module lives now. Each still imports, and is a package attribute, with a FutureWarning.
FORMER_MODULES = {"_embedded": "data._embedded", "_hub": "data._hub",
    "_validate": "core._validate", "agreement": "analysis.agreement",
    "chapters": "book.chapters", "charts": "book.charts", "claims": "book.claims",
    "commands": "cli.commands", "crossft": "analysis.crossft", "device": "core.device",
    "dims": "analysis.dims", "distances": "analysis.distances", "executor": "train.executor",
    "extract": "analysis.extract", "fewdims_charts": "book.fewdims_charts",
    "findings": "book.findings", "finetune_config": "config.finetune_config",
    "finetuning": "train.finetuning", "flags": "cli.flags", "heads": "train.heads",
    "loop": "train.loop", "models": "modeling.models", "multitask": "train.multitask",
    "neurons": "analysis.neurons", "overview": "book.overview", "parameters": "book.parameters",
    "params": "config.params", "pca": "analysis.pca", "plan": "book.plan",
    "probes": "analysis.probes", "progress": "core.progress", "report": "book.report",
    "scorecard": "book.scorecard", "sparse": "train.sparse", "stats": "core.stats",
    "store": "core.store", "study_charts": "book.study_charts",
    "study_findings": "book.study_findings", "task_spec": "data.task_spec",
    "tasks": "data.tasks", "testing": "modeling.testing", "tokens": "modeling.tokens",
    "training": "train.training", "webassets": "book.webassets"}
