"""Cross-fine-tuning (one task after another), shared dimensions, and one model for several tasks.

Fine-tuning applied to one task after another, whether the few dimensions selected for one
task serve another, and one model answering several tasks at once.

Reproduces the cross-fine-tuning part of *Few Dimensions are Enough: Fine-tuning BERT with
Selected Dimensions Revealed Its Redundant Nature* (2025): "hidden layers may change
significantly during fine-tuning", "the selected dimensions generalize across tasks", and
BERT's redundancy "enabl[es] it to handle multiple tasks simultaneously". Book chapter
``06_cross_finetuning``.

Three experiments, every run through the results store:

* :func:`cross_finetune` (the A-then-B matrix). For every ordered pair (A, B) of tasks: fine-tune
  on A, then continue from A's encoder on B with a new head
  (``FinetuneConfig(task=B, init_from=A.model_dir)``). Afterwards A's **stored head** reads the
  B-tuned encoder (:func:`transplant_head`): how much of A survives (``retention``); and B is
  compared with B fine-tuned from the pretrained model (``transfer``: did A first help or hurt).
  Mode ``"all"``: both heads read every dimension. Mode ``"few"``: A's head reads the
  ``num_dims`` dimensions selected for A, B's head B's own selected dimensions with A's left
  out, so that the two heads read disjoint dimensions of one encoder. The **control** takes
  the same path with A in B's place: A's encoder is fine-tuned further on A, with a new head
  on A's dimensions, for as many steps as B gets, and A's stored head reads the result
  (``first_control``); retention after B is judged against it (:func:`cross_effects`), so
  that what the extra training alone costs A is not counted against B.
* :func:`shared_dims`: fine-tune B with a head reading the dimensions selected for another
  task A, B's own selected dimensions, random dimensions, or all of them.
* :func:`multitask_vs_single`: one encoder, one head per task on its own disjoint dimensions,
  trained jointly (:mod:`bertdims.train.multitask`), against each task's single-task model on the
  same dimensions.

Dimensions are selected on the task's fine-tuned model (all dimensions, same seed) with
:func:`rank_run`, i.e. :func:`bertdims.analysis.dims.rank_dimensions` with method ``selection``
(``"single"``: a one-dimensional logistic regression per dimension fitted on the train
representations and scored on validation); the top ``num_dims`` are kept.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..core._validate import ConfigMixin, bad, check_choice, check_range
from ..core.result import RunsResult
from ..train.multitask import (EMBEDDED_CLASSIFICATION_TASKS, SAMPLERS, MultitaskModel, MultitaskConfig,
                        load_multitask, finetune_multitask)
from ..config.params import (VOCABULARY, Check, Interval, Options, check_fields, derive, own, param,
                     study_param)
from .dims import (RESULTS_VERSION, effect_or_note, chance_score, effects_frame, random_dims,
                   with_effect_fields)
from ..modeling.models import model_size
from ..data.tasks import get_task

MODES = ("all", "few")
SELECTIONS = VOCABULARY["selection"].constraint.values
PAIR_KIND = "crossft_pair"

__all__ = ["CrossConfig", "Sequential", "cross_finetune", "shared_dims", "multitask_vs_single",
           "transplant_head", "retention", "retention_predictions", "rank_run", "disjoint_dims",
           "random_dims", "matched_epochs", "pair_matrix", "summarize_shared", "multitask_table",
           "joint_demo", "cross_effects",
           "effects_frame", "MODES",
           # the joint model lives in bertdims.train.multitask; re-exported here
           "MultitaskModel", "MultitaskConfig", "load_multitask", "finetune_multitask"]


# ---------------------------------------------------------------------------- config
def _modes(value) -> list[str]:
    """A non-empty list of distinct :data:`MODES`."""
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise bad("modes", value, "expected a non-empty list drawn from " + ", ".join(MODES))
    value = list(value)
    for m in value:
        check_choice("modes", m, MODES)
    if len(set(value)) != len(value):
        raise bad("modes", value, "each mode may be listed once")
    return value


def _split_text(text: str) -> list[str]:
    """A flag's comma-separated text -> its non-empty items."""
    return [t.strip() for t in text.split(",") if t.strip()]


@dataclass
class CrossConfig(ConfigMixin):
    """Settings shared by the three experiments (the chapter's parameters map onto them).

    Attributes
    ----------
    model : base encoder (``"embedded"``, a hub name or a folder).
    tasks : at least two distinct task names; every ordered pair is run.
    seeds : fine-tuning seeds (every run is repeated per seed).
    num_dims : how many selected dimensions a head reads in mode ``"few"`` (the paper: 2-3).
    selection : ranking method of :func:`bertdims.analysis.dims.rank_dimensions` (``single`` | ``ablation``).
    modes : ``"all"`` (heads read every dimension) and/or ``"few"`` (selected dimensions).
    layer, token : which layer output and token vector the heads read.
    epochs, lr, batch_size, max_train_samples, max_eval_samples, max_seq_len, device,
    precision : as in :class:`bertdims.train.finetuning.FinetuneConfig` (the same values give the same
        single-task runs as other chapters, read back from the store); ``lr`` and
        ``batch_size`` None take the engine's defaults.
    split : the split the tables report (``validation`` or ``test``).
    """

    model: str = param("model")
    tasks: list = param("tasks", list(EMBEDDED_CLASSIFICATION_TASKS))
    seeds: list = param("seeds", [0])
    num_dims: int = own(3, Interval(int, 1, None), "selected dimensions a head reads in mode few")
    selection: str = param("selection")
    modes: list = own(list(MODES), Check(_modes, cli=_split_text), "all (heads read every "
                      "dimension) and/or few (selected dimensions), comma-separated")
    layer: int = param("layer")
    token: str = param("token")
    epochs: float = param("epochs", 1.0)
    lr: float | None = param("lr", None, none="the engine's (FinetuneConfig's default)")
    batch_size: int | None = param("batch_size", None, none="the engine's (FinetuneConfig's default)")
    max_train_samples: int | None = study_param("max_train_samples")
    max_eval_samples: int | None = study_param("max_eval_samples")
    max_seq_len: int = study_param("max_seq_len")
    split: str = own("test", Options(("validation", "test")), "the split the tables report")
    device: str = param("device")
    precision: str = param("precision")

    def __post_init__(self):
        check_fields(self)      # every field against its constraint (unknown tasks fail here)
        if len(self.tasks) < 2:
            raise bad("tasks", self.tasks, "give at least 2 task names: every ordered pair is run")

    def finetune_config(self, task: str, seed: int, dims: list[int] | None = None,
                        init_from: str | Path | None = None, **changes):
        """The engine's config of one run of this experiment: every field it shares with this
        config (``lr`` and ``batch_size`` None: the engine's), then the run's own."""
        from ..train.finetuning import FinetuneConfig
        return derive(FinetuneConfig, self, **{
            "task": task, "seed": int(seed), "dims": None if dims is None else [int(d) for d in dims],
            "init_from": None if init_from is None else str(init_from), **changes})

    def validate(self, num_layers: int, hidden_size: int) -> None:
        """Checks that need the model's size, run before the first fine-tuning."""
        if 2 * self.num_dims > hidden_size:
            raise bad("num_dims", self.num_dims, f"two tasks must get disjoint sets of num_dims "
                      f"dimensions, so at most {hidden_size // 2} (the model's hidden size is {hidden_size})")
        if self.selection == "ablation" and 2 * self.num_dims > _candidates(self):
            raise bad("num_dims", self.num_dims, "too many for the ablation ranking's candidates")
        check_range("layer", self.layer, -1, num_layers, integer=True)

    def check_model(self) -> None:
        """Read the model's size (its config only) and :meth:`validate`."""
        self.validate(*model_size(self.model))


def _candidates(config: CrossConfig) -> int:
    """Candidates of the ablation ranking: the dims chapter's 20, or more for large num_dims."""
    return max(20, 2 * config.num_dims)


# ---------------------------------------------------------------------------- runs
class _Runs:
    """Fine-tuning runs, rankings and selected dimensions of one experiment, fetched through
    the store once per call (the store itself makes them reusable across calls)."""

    def __init__(self, config: CrossConfig, store, progress: bool):
        config.check_model()
        self.config, self.store, self.progress = config, store, progress
        self._runs: dict = {}
        self._rank: dict = {}

    def run(self, task: str, seed: int, dims: list[int] | None = None, init_from=None, **changes):
        from ..train.finetuning import finetune
        cfg = self.config.finetune_config(task, seed, dims, init_from, **changes)
        key = cfg.to_json()
        if key not in self._runs:
            self._runs[key] = finetune(cfg, store=self.store, progress=self.progress,
                                       keep_model=True)   # loaded: init_from, heads, rankings
        return self._runs[key]

    def ranking(self, task: str, seed: int) -> list[int]:
        """Dimensions of ``task``'s fine-tuned model (all dimensions, ``seed``), best first."""
        if (task, seed) not in self._rank:
            run = self.run(task, seed)
            table = rank_run(run, self.config.selection, store=self.store,
                             candidates=_candidates(self.config), device=self.config.device,
                             precision=self.config.precision)
            self._rank[(task, seed)] = table.sort_values("rank")["dim"].astype(int).tolist()
        return self._rank[(task, seed)]

    def selected(self, task: str, seed: int, exclude: Sequence[int] = ()) -> list[int]:
        """The ``num_dims`` best dimensions of ``task`` not in ``exclude`` (sorted)."""
        left = [d for d in self.ranking(task, seed) if d not in set(exclude)]
        k = self.config.num_dims
        if len(left) < k:
            raise bad("num_dims", k, f"only {len(left)} ranked dimensions of {task!r} remain "
                      f"after leaving out {sorted(exclude)}")
        return sorted(left[:k])

    def score(self, run, split: str | None = None) -> float:
        return float(run.metrics[split or self.config.split][get_task(run.config.task).metric])


def rank_run(run, method: str = "single", *, store, candidates: int = 20, fill: str = "mean",
             max_rank_samples: int | None = 4000, device: str = "auto", precision: str = "auto"
             ) -> pd.DataFrame:
    """Rank the dimensions of a fine-tuned run (head on all dimensions) with
    :func:`bertdims.analysis.dims.rank_dimensions`: representations of the run's own training examples
    (without its early-stopping part; at most ``max_rank_samples``) and validation examples.

    Stored under kind ``dims_rank`` with the same key layout as :func:`bertdims.analysis.dims.rank_dims`,
    so the few-dimensions chapter and this one share rankings. Returns the ranking table
    (``dim``, ``score``, ``rank``, ...).
    """
    from .dims import head_function, rank_dimensions, representations_of
    from ..train.finetuning import prepare_splits
    check_choice("method", method, SELECTIONS)
    c = run.config
    if c.dims is not None:
        raise bad("run", _dims_text(c.dims), "rank the dimensions of a run whose head reads all of them")
    ablation = method == "ablation"
    key_cfg = {"finetune": c.to_dict(), "fill": fill, "max_rank_samples": max_rank_samples,
               "results_version": RESULTS_VERSION, "method": method,
               "candidates": candidates if ablation else None, "by": "loss" if ablation else None}

    def compute() -> dict:
        clf = run.load()
        data = prepare_splits(c.task, max_train_samples=c.max_train_samples,
                              max_eval_samples=c.max_eval_samples,
                              early_stopping_fraction=c.early_stopping_fraction, data_dir=c.data_dir)
        reps = representations_of(clf, c.task, data, splits=("train", "validation"),
                                  max_samples={"train": max_rank_samples}, device=device,
                                  precision=precision)
        return {"ranking": rank_dimensions(reps, method, head=head_function(clf),
                                           candidates=candidates, fill=fill)}

    fingerprint = run.path.name if run.path is not None else None
    return store.cached("dims_rank", key_cfg, compute, fingerprint=fingerprint).table("ranking")


def _dims_text(dims) -> str:
    return "all" if dims is None else " ".join(str(int(d)) for d in dims)


# ---------------------------------------------------------------------------- cross_finetune
def transplant_head(head_model_dir: str | Path, encoder_model_dir: str | Path, device: str = "cpu"):
    """A's head on B's encoder.

    The classifier saved in ``head_model_dir`` (its head, layer, token and dimensions) reads
    the encoder saved in ``encoder_model_dir``; :func:`retention` scores it on A's examples.

    Parameters
    ----------
    head_model_dir : str or pathlib.Path
        The ``model_dir`` of A's fine-tuning run, whose head (and config: layer, token,
        dimensions, task) is kept.
    encoder_model_dir : str or pathlib.Path
        The ``model_dir`` of the run whose encoder (and tokenizer) the head reads, e.g. B
        fine-tuned after A.
    device : str
        Where to put the model.

    Returns
    -------
    bertdims.train.heads.SelectiveClassifier
        A's head on B's encoder, in eval mode on ``device``.

    Raises
    ------
    ConfigError
        If either folder is not a saved fine-tuned model with its weights, or the two
        encoders' hidden sizes differ.
    """
    from ..train.heads import SelectiveClassifier, load_finetuned
    first = load_finetuned(head_model_dir)
    second = load_finetuned(encoder_model_dir)
    if second.hidden_size != first.hidden_size:
        raise bad("encoder_model_dir", str(encoder_model_dir),
                  f"its hidden size {second.hidden_size} differs from the head's model ({first.hidden_size})")
    hybrid = SelectiveClassifier(second.encoder, second.tokenizer, first.config, first.task)
    hybrid.head = first.head
    return hybrid.to(device).eval()


PAIR_VERSION = 2   # part of every crossft_pair key: 2 stores per-example predictions


def _retention_record(first_run, second_run, *, store, device: str = "auto",
                      precision: str = "auto"):
    """The stored evaluation of ``first_run``'s head on ``second_run``'s encoder (kind
    ``crossft_pair``): metrics, and predictions and labels per split in dataset order."""
    from ..core.device import pick_device
    from ..train.finetuning import prepare_splits
    from ..data.tasks import compute_metrics
    from ..train.training import make_loader, predict_loader

    a, b = first_run.config, second_run.config
    key_cfg = {"first": a.to_dict(), "second": b.to_dict(), "version": PAIR_VERSION}

    def compute() -> dict:
        dev = pick_device(device)
        model = transplant_head(first_run.model_dir, second_run.model_dir, device=str(dev))
        task = get_task(a.task)
        splits = prepare_splits(task, max_train_samples=a.max_train_samples,
                                max_eval_samples=a.max_eval_samples,
                                early_stopping_fraction=a.early_stopping_fraction, data_dir=a.data_dir)
        out, arrays = {}, {}
        for split in ("validation", "test"):
            loader = make_loader(task, splits[split], model.tokenizer, batch_size=64,
                                 max_seq_len=a.max_seq_len, shuffle=False)
            idx, preds, _ = predict_loader(model, loader, dev, precision)
            order = np.empty_like(preds)
            order[idx] = preds                                   # back to dataset order
            labels = np.asarray(splits[split]["label"])
            out[split] = compute_metrics(task, order, labels)
            arrays[f"pred_{split}"], arrays[f"label_{split}"] = order, labels
        return {"metrics": out, **arrays}

    fingerprint = second_run.path.name if second_run.path is not None else None
    return store.cached(PAIR_KIND, key_cfg, compute, fingerprint=fingerprint)


def retention(first_run, second_run, *, store, device: str = "auto", precision: str = "auto") -> dict:
    """Metrics of the first task after fine-tuning on the second: ``first_run``'s stored head
    on ``second_run``'s encoder, on the first task's validation and test examples (the same
    examples as ``first_run.metrics``). Stored under kind ``crossft_pair``.

    Returns ``{"validation": {metric: value}, "test": {...}}``.
    """
    return _retention_record(first_run, second_run, store=store, device=device,
                             precision=precision).json()["metrics"]


def retention_predictions(first_run, second_run, *, store, split: str = "test",
                          device: str = "auto", precision: str = "auto"
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Per-example predictions (N,) and labels (N,) of ``first_run``'s head on
    ``second_run``'s encoder, in the order of ``first_run.predictions(split)``."""
    check_choice("split", split, ("validation", "test"))
    rec = _retention_record(first_run, second_run, store=store, device=device, precision=precision)
    return rec.array(f"pred_{split}"), rec.array(f"label_{split}")


def matched_epochs(epochs: float, n_first: int, n_second: int) -> float:
    """Epochs over A's training set that see as many examples as ``epochs`` over B's.

    As many examples means as many steps of the same batch size. The control of
    :func:`cross_finetune` trains A this long.

    Parameters
    ----------
    epochs : float
        Epochs over B's training set (> 0).
    n_first : int
        Training examples of the first task A (>= 1).
    n_second : int
        Training examples of the second task B (>= 1).

    Returns
    -------
    float
        ``epochs * n_second / n_first``.

    Raises
    ------
    ConfigError
        If a value is out of range.
    """
    check_range("epochs", epochs, 0, None, low_open=True)
    check_range("n_first", n_first, 1, None, integer=True)
    check_range("n_second", n_second, 1, None, integer=True)
    return float(epochs) * n_second / n_first


def _train_size(config: CrossConfig, task: str) -> int:
    from ..train.finetuning import prepare_splits
    return len(prepare_splits(task, max_train_samples=config.max_train_samples,
                              max_eval_samples=config.max_eval_samples)["train"])


@dataclass
class Sequential(RunsResult):
    """What :func:`cross_finetune` returns, with the shape of every result
    (:mod:`bertdims.core.result`): ``metrics`` and ``paths`` are those of ``runs``, by the
    same keys; ``tables`` is ``{"pairs": ...}``.

    Parameters
    ----------
    pairs : pandas.DataFrame
        One row per (mode, seed, first task A, second task B); columns as listed in
        :func:`cross_finetune` (mode, seed, first, second, dims_first, dims_second, first_metric,
        first_before, first_after, first_control, chance, retention, retention_control,
        second_metric, second_alone, second_after, transfer, second_steps, control_steps).
    predictions : dict of tuple to np.ndarray
        ``predictions[(mode, A, B, what)]``: an array of shape (S, N) of predictions on the
        ``config.split`` examples, one row per seed (config order), ``what`` in
        ``first_before``, ``first_after``, ``first_control`` (on A's examples, N of A's),
        ``second_alone``, ``second_after`` (on B's).
    labels : dict of str to np.ndarray
        ``labels[task]``: the labels, shape (N,), of the task's examples, in the order of the
        columns of its predictions.
    runs : dict of tuple to FinetuneRun
        ``runs[(mode, A, B, stage, seed)]``: the second-stage
        :class:`~bertdims.train.finetuning.FinetuneRun` objects, ``stage`` ``"B after A"`` or
        ``"control"`` (for their training curves, :func:`bertdims.book.fewdims_charts.history_frame`).
    config : CrossConfig
        The config it was computed from.
    """

    pairs: pd.DataFrame
    predictions: dict
    labels: dict
    runs: dict
    config: Any = None


def _ensure_stages(config: CrossConfig, store, sizes: dict) -> None:
    """On a cluster (:mod:`bertdims.train.executor`): every first-stage run (each task alone), then
    the second stages of mode ``"all"`` (B after A and its control), which start from the
    first stages' stored models; mode ``"few"`` needs rankings first and runs in the loop."""
    from ..train.executor import current, ensure_runs
    from ..train.finetuning import stored_key
    first = {(t, s): config.finetune_config(t, s) for s in config.seeds for t in config.tasks}
    ensure_runs(list(first.values()), store, keep_model=True)
    if "all" not in config.modes or store is None or not current().distributed:
        return
    model = {ts: str(store.path("finetune", stored_key(cfg, store)) / "model") for ts, cfg in first.items()}
    ensure_runs([cfg for (a, s) in first for b in config.tasks if b != a for cfg in (
        config.finetune_config(b, s, None, model[a, s]),
        config.finetune_config(a, s, None, model[a, s],
                               epochs=matched_epochs(config.epochs, sizes[a], sizes[b])))],
                store, keep_model=True)


def cross_finetune(config: CrossConfig, *, store, progress: bool = False) -> Sequential:
    """The A-then-B matrix, with its control (see the module docstring).

    For every seed, mode and ordered pair (A, B) of ``config.tasks``: A fine-tuned alone, B
    fine-tuned alone and after A, and A fine-tuned further on A for as many steps (the
    control); A's stored head is then scored on the encoder after B and after the control.

    Parameters
    ----------
    config : CrossConfig
        Model, tasks, seeds, modes, number of dimensions and the fine-tuning recipe.
    store : ResultStore
        Where every run, ranking and transplanted-head evaluation is kept and read back.
    progress : bool
        Show the fine-tuning progress bars.

    Returns
    -------
    Sequential
        ``pairs``, a table with one row per (mode, seed, A, B) and the columns ``mode``,
        ``seed``, ``first``, ``second``, ``dims_first``, ``dims_second`` (``"all"`` or the
        dimensions each head reads), ``first_metric``, ``first_before`` (A fine-tuned alone),
        ``first_after`` (A's head on the encoder after B), ``first_control`` (A's head on the
        encoder after as many further steps on A), ``chance``
        (:func:`bertdims.analysis.dims.chance_score` of A), ``retention`` and ``retention_control``
        (share of A's gain over chance that survives B, or the control:
        ``(score - chance) / (before - chance)``, NaN when A was not above chance),
        ``second_metric``, ``second_alone`` (B from the pretrained model), ``second_after`` (B
        after A), ``transfer`` (``second_after - second_alone``), ``second_steps`` and
        ``control_steps`` (optimizer steps of the two second-stage runs). Scores are on
        ``config.split``. Also the per-seed predictions, labels and second-stage runs
        (:class:`Sequential`).

    Raises
    ------
    ConfigError
        If the config does not fit the model (:meth:`CrossConfig.validate`), too few ranked
        dimensions remain for mode ``"few"``, or two runs of a task were scored on different
        examples.
    """
    runs = _Runs(config, store, progress)
    sizes = {t: _train_size(config, t) for t in config.tasks}
    _ensure_stages(config, store, sizes)            # on a cluster, if any
    rows, preds, labels, stages = [], {}, {}, {}
    for seed in config.seeds:
        for mode in config.modes:
            for a in config.tasks:
                dims_a = None if mode == "all" else runs.selected(a, seed)
                first = runs.run(a, seed, dims_a)
                ta = get_task(a)
                chance = chance_score(ta, split=config.split,
                                      max_train_samples=config.max_train_samples,
                                      max_eval_samples=config.max_eval_samples)
                for b in config.tasks:
                    if b == a:
                        continue
                    tb = get_task(b)
                    dims_b = None if mode == "all" else runs.selected(b, seed, exclude=dims_a)
                    alone = runs.run(b, seed, dims_b)
                    after = runs.run(b, seed, dims_b, init_from=first.model_dir)
                    control = runs.run(a, seed, dims_a, init_from=first.model_dir,
                                       epochs=matched_epochs(config.epochs, sizes[a], sizes[b]))
                    kept = retention(first, after, store=store, device=config.device,
                                     precision=config.precision)
                    ctrl = retention(first, control, store=store, device=config.device,
                                     precision=config.precision)
                    before_a = runs.score(first)
                    after_a = float(kept[config.split][ta.metric])
                    ctrl_a = float(ctrl[config.split][ta.metric])
                    gain = before_a - chance
                    rows.append({
                        "mode": mode, "seed": seed, "first": a, "second": b,
                        "dims_first": _dims_text(dims_a), "dims_second": _dims_text(dims_b),
                        "first_metric": ta.metric, "first_before": before_a, "first_after": after_a,
                        "first_control": ctrl_a, "chance": chance,
                        "retention": (after_a - chance) / gain if gain > 0 else np.nan,
                        "retention_control": (ctrl_a - chance) / gain if gain > 0 else np.nan,
                        "second_metric": tb.metric, "second_alone": runs.score(alone),
                        "second_after": runs.score(after),
                        "transfer": runs.score(after) - runs.score(alone),
                        "second_steps": after.info.get("steps"),
                        "control_steps": control.info.get("steps")})
                    split = config.split
                    got = {"first_before": (first.predictions(split), first.labels(split)),
                           "first_after": retention_predictions(first, after, store=store,
                                                                split=split, device=config.device,
                                                                precision=config.precision),
                           "first_control": retention_predictions(first, control, store=store,
                                                                  split=split, device=config.device,
                                                                  precision=config.precision),
                           "second_alone": (alone.predictions(split), alone.labels(split)),
                           "second_after": (after.predictions(split), after.labels(split))}
                    for what, (p, y) in got.items():
                        task = a if what.startswith("first") else b
                        if task in labels and not np.array_equal(labels[task], y):
                            raise bad("config", config, f"the runs of {task!r} were scored on "
                                      "different test examples")
                        labels[task] = y
                        preds.setdefault((mode, a, b, what), []).append(np.asarray(p))
                    stages[(mode, a, b, "B after A", seed)] = after
                    stages[(mode, a, b, "control", seed)] = control
    preds = {k: np.stack(v) for k, v in preds.items()}
    return Sequential(pairs=pd.DataFrame(rows), predictions=preds, labels=labels,
                      runs=stages, config=config)


def cross_effects(result: Sequential, *, retention_margin: float, few_margin: float,
                  n_boot: int = 2000) -> pd.DataFrame:
    """The effects of chapter ``06_cross_finetuning`` for every ordered pair.

    Each is a :func:`bertdims.core.stats.paired_effect` on the predictions of
    :class:`Sequential`, paired by seed and example:

    * ``p1-cross-retention`` (per mode): A's stored head on the encoder after B against the
      same head after as many further steps on A (the control), ``noninferior`` on the ratio
      scale with ``retention_margin``;
    * ``p1-cross-few-dims`` (needs both modes): B fine-tuned after A with a head on a few
      selected dimensions against B after A with a head on every dimension, ``noninferior``
      on the ratio scale with ``few_margin``.

    Parameters
    ----------
    result : Sequential
        What :func:`cross_finetune` returned.
    retention_margin : float
        Non-inferiority margin of ``p1-cross-retention``, on the ratio scale.
    few_margin : float
        Non-inferiority margin of ``p1-cross-few-dims``, on the ratio scale.
    n_boot : int
        Bootstrap replicates of each interval.

    Returns
    -------
    pandas.DataFrame
        One row per effect; columns ``claim_id``, ``mode`` (``"few"``, ``"all"``, or
        ``"few vs all"``), ``first``, ``second``, ``effect`` (the
        :class:`~bertdims.core.stats.Effect`, or None when the statistics refuse the data),
        ``note`` (why not), and the effect's fields (:func:`effects_frame`, without
        ``label``): metric, scale, estimate, low, high, claim, margin, verdict, p_value,
        n_seeds, n_examples, score_a, score_b.
    """
    p, rows = result.predictions, []
    keys = list(dict.fromkeys((m, a, b) for m, a, b, _ in p))
    for mode, a, b in keys:
        metric = get_task(a).metric
        rows.append({"claim_id": "p1-cross-retention", "mode": mode, "first": a, "second": b,
                     **effect_or_note(
                         p[(mode, a, b, "first_after")], p[(mode, a, b, "first_control")],
                         result.labels[a], metric=metric, claim="noninferior",
                         margin=retention_margin, scale="ratio", n_boot=n_boot,
                         label=f"{a} after {b} / {a} after more {a} - 1 ({mode} dims)")})
    for a, b in dict.fromkeys((a, b) for _, a, b in keys):
        if ("few", a, b, "second_after") not in p or ("all", a, b, "second_after") not in p:
            continue
        rows.append({"claim_id": "p1-cross-few-dims", "mode": "few vs all", "first": a,
                     "second": b, **effect_or_note(
                         p[("few", a, b, "second_after")], p[("all", a, b, "second_after")],
                         result.labels[b], metric=get_task(b).metric, claim="noninferior",
                         margin=few_margin, scale="ratio", n_boot=n_boot,
                         label=f"{b} after {a}: few dims / all dims - 1")})
    return with_effect_fields(pd.DataFrame(rows))


def pair_matrix(pairs: pd.DataFrame, value: str) -> pd.DataFrame:
    """Mean of ``value`` over seeds per (mode, first, second): a tidy table for a heat map."""
    return pairs.groupby(["mode", "first", "second"], as_index=False, sort=False)[value].mean()


# ---------------------------------------------------------------------------- shared dimensions
def shared_dims(config: CrossConfig, *, store, progress: bool = False) -> pd.DataFrame:
    """Do the dimensions selected for A serve B?

    Fine-tune B (the whole encoder, from the pretrained model) with a head reading: A's
    selected dimensions (``source`` = A, ``kind`` ``"other task"``), B's own (``"own"``),
    ``num_dims`` random ones (``"random"``) or all (``"all"``).

    Parameters
    ----------
    config : CrossConfig
        Model, tasks, seeds, number of dimensions and the fine-tuning recipe (``modes`` is not
        used).
    store : ResultStore
        Where every run and ranking is kept and read back.
    progress : bool
        Show the fine-tuning progress bars.

    Returns
    -------
    pandas.DataFrame
        One row per (seed, target B, source); columns ``seed``, ``target``, ``source`` (a
        task name, ``"own"``, ``"random"`` or ``"all"``), ``kind``, ``dims`` (the dimensions
        read, or ``"all"``), ``metric`` (B's headline metric) and ``value`` (its score on
        ``config.split``). :func:`summarize_shared` summarises it.
    """
    runs = _Runs(config, store, progress)
    hidden = model_size(config.model)[1]
    rows = []
    for seed in config.seeds:
        for b in config.tasks:
            sources = [("all", "all", None), ("own", "own", runs.selected(b, seed))]
            sources += [(a, "other task", runs.selected(a, seed)) for a in config.tasks if a != b]
            sources.append(("random", "random", random_dims(hidden, config.num_dims, seed, b)))
            for source, kind, dims in sources:
                run = runs.run(b, seed, dims)
                rows.append({"seed": seed, "target": b, "source": source, "kind": kind,
                             "dims": _dims_text(dims), "metric": get_task(b).metric,
                             "value": runs.score(run)})
    return pd.DataFrame(rows)


def summarize_shared(shared: pd.DataFrame) -> pd.DataFrame:
    """Mean and spread per (target, kind) of :func:`shared_dims` rows, with the share of the
    all-dimension score (``share_of_all``)."""
    g = shared.groupby(["target", "kind"], sort=False)["value"]
    out = g.agg(mean="mean", sd="std", n="count").reset_index()
    out["sd"] = out["sd"].fillna(0.0)
    full = out[out.kind == "all"].set_index("target")["mean"]
    out["share_of_all"] = out["mean"] / out["target"].map(full)
    return out


# ---------------------------------------------------------------------------- multi-task
def disjoint_dims(rankings: Sequence[Sequence[int]], k: int) -> list[list[int]]:
    """Greedy disjoint selection: task ``i`` takes its ``k`` best dimensions not already
    taken by tasks ``0..i-1`` (rankings best first). Returns sorted lists."""
    check_range("k", k, 1, integer=True)
    taken: set[int] = set()
    out = []
    for i, ranking in enumerate(rankings):
        mine = [int(d) for d in ranking if int(d) not in taken][:k]
        if len(mine) < k:
            raise bad("num_dims", k, f"task {i} has only {len(mine)} ranked dimensions left "
                      "after the earlier tasks took theirs")
        taken.update(mine)
        out.append(sorted(mine))
    return out


def multitask_vs_single(config: CrossConfig, *, store, sampler: str = "proportional",
                        dims_seed: int | None = None, progress: bool = False) -> pd.DataFrame:
    """Each task in one jointly trained model against its single-task model.

    The dimensions are selected once, on the fine-tuned models of seed ``dims_seed``, and made
    disjoint with :func:`disjoint_dims` in task order. For every seed, one
    :class:`~bertdims.train.multitask.MultitaskModel` is trained on all tasks
    (:func:`~bertdims.train.multitask.finetune_multitask`, stored under kind ``multitask``), and every
    task is fine-tuned alone with a head on the same dimensions. Both train on the same
    examples: the joint run leaves out what the engine's checkpoint rule holds out
    (``early_stopping_fraction``, 0 by default: nothing) and keeps its last state.

    Parameters
    ----------
    config : CrossConfig
        Model, tasks, seeds, number of dimensions per task and the fine-tuning recipe (the
        joint run takes the same epochs, learning rate and batch size).
    store : ResultStore
        Where every run and ranking is kept and read back.
    sampler : str
        The joint run's task order, ``"proportional"`` or ``"round_robin"``
        (:class:`~bertdims.train.multitask.TaskSampler`).
    dims_seed : int or None
        The seed whose fine-tuned models select the dimensions; None takes the first of
        ``config.seeds``.
    progress : bool
        Show the training progress bars.

    Returns
    -------
    pandas.DataFrame
        One row per (seed, task, setting); columns ``seed``, ``task``, ``setting``
        (``"joint"`` or ``"single"``), ``dims``, ``metric``, ``value`` (on ``config.split``)
        and ``model_dir`` (the single-task model's folder, or the joint model's, which
        answers every task in one forward pass). :func:`multitask_table` summarises it.

    Raises
    ------
    ConfigError
        If ``sampler`` or ``dims_seed`` is not valid, or the tasks' disjoint dimensions
        (``len(tasks) * num_dims``) exceed the model's hidden size.
    """
    from ..train.multitask import check_disjoint_dims
    check_choice("sampler", sampler, SAMPLERS)
    runs = _Runs(config, store, progress)
    dims_seed = config.seeds[0] if dims_seed is None else dims_seed
    check_range("dims_seed", dims_seed, 0, integer=True)
    hidden = model_size(config.model)[1]
    if len(config.tasks) * config.num_dims > hidden:
        raise bad("num_dims", config.num_dims, f"{len(config.tasks)} tasks x {config.num_dims} disjoint "
                  f"dimensions exceed the model's hidden size {hidden}")
    dims = disjoint_dims([runs.ranking(t, dims_seed) for t in config.tasks], config.num_dims)
    check_disjoint_dims("dims", dims, config.tasks, hidden)
    rows = []
    for seed in config.seeds:
        joint = finetune_multitask(_joint_config(config, dims, sampler, seed), store=store,
                                  progress=progress)
        for task, d in zip(config.tasks, dims):
            metric = get_task(task).metric
            single = runs.run(task, seed, d)
            rows.append({"seed": seed, "task": task, "setting": "single", "dims": _dims_text(d),
                         "metric": metric, "value": runs.score(single), "model_dir": str(single.model_dir)})
            rows.append({"seed": seed, "task": task, "setting": "joint", "dims": _dims_text(d),
                         "metric": metric, "value": joint.score(task, config.split),
                         "model_dir": str(joint.model_dir)})
    return pd.DataFrame(rows)


def _joint_config(config: CrossConfig, dims: list[list[int]] | None, sampler: str, seed: int
                  ) -> MultitaskConfig:
    """The joint run of :func:`multitask_vs_single` for ``seed``: every field it shares with
    ``config``, on the recipe of the single-task runs it is compared with (``lr`` and
    ``batch_size`` None: the engine's; their hold-out left out)."""
    recipe = config.finetune_config(config.tasks[0], seed)
    return derive(MultitaskConfig, config, dims=dims, sampler=sampler, lr=recipe.lr,
                  batch_size=recipe.batch_size, train_holdout=recipe.early_stopping_fraction,
                  seed=int(seed))


def multitask_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per task: single-task and joint mean ± sd over seeds, and joint minus single."""
    g = rows.groupby(["task", "setting"], sort=False)["value"].agg(["mean", "std", "count"]).reset_index()
    g["std"] = g["std"].fillna(0.0)
    wide = g.pivot(index="task", columns="setting", values=["mean", "std"])
    order = list(dict.fromkeys(rows["task"]))
    out = pd.DataFrame({"task": order})
    out["dims"] = [rows[rows.task == t]["dims"].iloc[0] for t in order]
    out["metric"] = [rows[rows.task == t]["metric"].iloc[0] for t in order]
    for s in ("single", "joint"):
        out[s] = [f"{wide.loc[t, ('mean', s)]:.3f} ± {wide.loc[t, ('std', s)]:.3f}" for t in order]
    out["joint - single"] = [wide.loc[t, ("mean", "joint")] - wide.loc[t, ("mean", "single")] for t in order]
    out["seeds"] = [int(rows[(rows.task == t) & (rows.setting == "joint")].shape[0]) for t in order]
    return out


# ---------------------------------------------------------------------------- charts and claims


def joint_demo(rows: pd.DataFrame, *, per_task: int = 2, split: str = "test") -> pd.DataFrame:
    """One forward pass of the stored joint model (first seed) over a few examples of every
    task: each text gets an answer from every task's head. ``same_as_heads`` checks that
    the joint pass gives what each task's head gives on its own (``single_task``)."""
    import torch

    from ..train.multitask import tokenize
    from ..data.tasks import load_task, texts_of
    model = load_multitask(rows[rows.setting == "joint"]["model_dir"].iloc[0])
    texts, sources, truths = [], [], []
    for t in model.tasks:
        task = get_task(t)
        ds = load_task(t)[split].select(range(per_task))
        texts += texts_of(task, ds)
        sources += [t] * per_task
        truths += [task.label_names[int(y)] if task.label_names else float(y) for y in ds["label"]]
    batch = tokenize(model.tokenizer, texts, model.max_seq_len)
    with torch.no_grad():
        joint = model(**batch)                                   # one encoder pass, every task
        alone = {t: model.single_task(t).eval()(**batch) for t in model.tasks}
    same = all(torch.allclose(joint[t], alone[t], atol=1e-5) for t in model.tasks)
    out = pd.DataFrame({"from task": sources, "text": [str(x)[:60] for x in texts], "label": truths})
    for t, n in zip(model.tasks, model.num_labels):
        names = get_task(t).label_names
        pred = joint[t].argmax(-1).tolist() if n > 1 else joint[t][:, 0].tolist()
        out[f"{t} head says"] = [names[p] if n > 1 else round(p, 2) for p in pred]
    out["same_as_heads"] = same
    return out
