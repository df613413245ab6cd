"""Fine-tuning an encoder with a head that reads a chosen layer, token and set of dimensions.

:func:`finetune` reproduces the recipe of Matton & de Oliveira (Emergent Properties of
Finetuned Language Representation Models, section 2): a new linear layer on the ``[CLS]``
vector with dropout 0.1, AdamW, a top-layer learning rate decayed by 0.95 per layer below,
slanted triangular learning rates with 10 % warm-up down to 0, an effective batch through
gradient accumulation (the paper: lr 2e-5, batch 32; our defaults: 1e-4 and 16, see
:class:`FinetuneConfig`). The paper stops early on a held-out 10 % of the training set; at
our scale (about 1,000 training examples) the default keeps the final state of a calibrated
budget instead, and the held-out rule is one setting away (``early_stopping_fraction``).
The head reads its features standardised with fixed statistics of the training split
(:class:`~bertdims.train.heads.Head`); a run whose encoder is wholly frozen trains the head on
features computed once (``frozen_epochs``).
The :class:`FinetuneConfig` fields ``layer``, ``token``, ``dims``, ``freeze`` and
``train_layers`` give the variants of Few Dimensions are Enough (which token vector, which
layer, which few dimensions the new layer reads, and which pre-trained layers are frozen);
``init_from`` starts from an already fine-tuned encoder (cross-fine-tuning).

Training steps through the library's one loop (:func:`bertdims.train.loop.run_loop`, which sparse
and multi-task training share) under Hugging Face ``accelerate``: one CPU or GPU, or several
processes started with ``accelerate launch`` (each takes its share of every effective batch;
gradients are averaged so the update is that of the whole batch). Runs are stored in a
:class:`~bertdims.core.store.ResultStore` and read back for the same config and base model, and a
run killed part-way resumes from its last checkpoint.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..core._validate import bad
from ..core.device import autocast, pick_device, pick_precision
from ..core import progress as _progress
from ..config.finetune_config import HEADS, PAPER_RECIPE, FinetuneConfig, _parse_layers  # noqa: F401
from ..modeling.models import model_size as _model_size
from .loop import (LoopState, accelerator, load_checkpoint, record, restore_best, run_device,
                   run_loop, save_checkpoint, take_train_loss)
from .heads import (SelectiveClassifier, can_run_blocks, has_weights, load_backbone,
                    load_finetuned, save_finetuned, truncated)
from ..core.store import ResultStore, write_payload
from ..core.result import ResultFields
from ..data.tasks import Task, compute_metrics, data_version, get_task, load_task
from .training import (DEFAULT_HEAD_LR, Collator, EncodedDataset, apply_freezing, build_optimizer,  # noqa: F401
                       encode_split, evaluate, layer_lrs, make_loader, predict_loader,
                       slanted_triangular, trained_layers)

__all__ = ["FinetuneConfig", "FinetuneRun", "finetune", "load_finetuned", "SelectiveClassifier",
           "make_loader", "evaluate", "build_optimizer", "slanted_triangular", "prepare_splits",
           "DEFAULT_HEAD_LR"]

KIND = "finetune"
SUBSET_SEED = 0   # fixed: which training/evaluation examples are used does not depend on `seed`
#: Part of every stored run's key: bump when what a run computes changes, so older runs are
#: recomputed rather than misread. 2: standardised head input and regression targets, the
#: checkpoint rule on development loss, frozen encoders in eval mode, stored predictions.
ENGINE_VERSION = 3
#: Smallest development split the checkpoint rule may choose on (examples).
MIN_DEV_SAMPLES = 300
#: environment variable: any value but "" or "0" keeps every fine-tuned model (``keep_model``)
KEEP_MODELS_ENV = "BERTDIMS_KEEP_MODELS"
#: The engine's shortcuts, each giving the plain path's result up to float rounding: a wholly
#: frozen encoder's head trains on features computed once (``frozen_features``); the frozen
#: bottom of a top-layers run runs once per example and is cached (``bottom_cache``). Tests and
#: benchmarks switch one off to compare the two paths.
SHORTCUTS = {"frozen_features": True, "bottom_cache": True}


def _after_step(step: int) -> None:
    """Called after every optimizer step, once any checkpoint due is written (tests replace it
    to stop a run part-way, as a kill would)."""


#: the largest cached output of a frozen bottom (bytes, float32) before it is recomputed per step
BOTTOM_CACHE_BYTES = int(os.environ.get("BERTDIMS_BOTTOM_CACHE_BYTES", 4 << 30))


@dataclass
class FinetuneRun(ResultFields):
    """A finished fine-tuning run, as :func:`finetune` returns it.

    It has the shape of every result (:mod:`bertdims.core.result`): ``config``, ``metrics``,
    ``tables`` (``{"history": ...}``) and ``paths`` (``{"model_dir": ..., "path": ...}``, the
    latter when the run was kept). Its methods read the results: :meth:`predictions` and
    :meth:`labels` (per example, for the paired comparisons of :mod:`bertdims.core.stats`),
    :meth:`score` (the headline metric) and :meth:`load` (the fine-tuned model).

    Attributes
    ----------
    config : FinetuneConfig
        The config of the run.
    metrics : dict of str to dict
        The task's metrics (:func:`bertdims.data.tasks.compute_metrics`) per evaluation split:
        ``{"validation": {...}, "test": {...}}``, plus any extra evaluation split of the task.
    history : pandas.DataFrame
        One row per evaluation; columns step, epoch, lr (top block), train_loss (mean since
        the last row), ``dev_loss`` and ``dev_<metric>`` on the monitored split
        (``info["monitor_split"]``: the development split when there is one, else validation,
        which is then only watched).
    model_dir : pathlib.Path
        Folder of the saved model (:func:`load_finetuned`).
    path : pathlib.Path or None
        The run folder (store run or ``out_dir``), or None.
    info : dict
        Steps trained, ``checkpoint_rule`` ("final" or "best_dev_loss") and ``best_step``
        (the step of the kept state), train/dev sizes, seconds, whether it stopped early,
        ``fast_frozen`` (the head was trained on features computed once).
    cached : bool
        True when read back from the store without training.
    model : SelectiveClassifier or None
        The trained :class:`SelectiveClassifier` when trained in this call, else None.
    _outputs : dict
        Internal: for a run trained in this call, ``{split: (predictions, labels)}`` with two
        arrays of shape (N,) per evaluation split; empty when read back, in which case
        :meth:`predictions` and :meth:`labels` read the ``.npy`` files of ``path``.
    """

    config: FinetuneConfig
    metrics: dict
    history: pd.DataFrame
    model_dir: Path
    path: Path | None = None
    info: dict = field(default_factory=dict)
    cached: bool = False
    model: SelectiveClassifier | None = field(default=None, repr=False)
    _outputs: dict = field(default_factory=dict, repr=False)

    def _array(self, kind: str, split: str) -> np.ndarray:
        if split in self._outputs:
            return self._outputs[split][0 if kind == "pred" else 1]
        path = None if self.path is None else Path(self.path) / f"{kind}_{split}.npy"
        if path is None or not path.exists():
            raise bad("split", split, "expected an evaluation split of this run: "
                      + ", ".join(sorted(self.metrics)))
        return np.load(path)

    def predictions(self, split: str = "test") -> np.ndarray:
        """Per-example predictions on ``split``: (N,) class ids, or scores for regression, in
        the fixed example order of :func:`prepare_splits` (the same for every run of the same
        task and ``max_eval_samples``)."""
        return self._array("pred", split)

    def labels(self, split: str = "test") -> np.ndarray:
        """The labels (N,) of ``split``, in the order of :meth:`predictions`."""
        return self._array("label", split)

    def load(self, device: str = "cpu") -> SelectiveClassifier:
        """The fine-tuned model (in memory if trained in this call, else from ``model_dir``)."""
        if self.model is not None:
            return self.model.to(device)
        return load_finetuned(self.model_dir, device=device)

    def score(self, split: str = "test") -> float:
        """The task's headline metric on ``split``."""
        return self.metrics[split][get_task(self.config.task).metric]


# ---------------------------------------------------------------------------- data
def _fixed_subset(n: int, k: int | None, seed: int = SUBSET_SEED) -> np.ndarray:
    order = np.random.default_rng(seed).permutation(n)
    return order if k is None else order[:k]


def prepare_splits(task: Task | str, *, max_train_samples: int | None = None,
                   max_eval_samples: int | None = None, early_stopping_fraction: float = 0.0,
                   data_dir: str | None = None) -> dict:
    """The splits a fine-tuning run uses, as ``datasets.Dataset`` objects.

    ``train`` and ``dev`` come from a fixed random subset of ``max_train_samples`` training
    examples (``dev`` is its first ``max(MIN_DEV_SAMPLES, early_stopping_fraction * n)``
    examples, the checkpoint rule's development split; absent when the fraction is 0);
    ``validation``,
    ``test`` and any extra evaluation splits are fixed random subsets of ``max_eval_samples``.
    Subsets do not depend on the run's seed. Classification splits without labels (-1) are left out.
    """
    task = get_task(task) if isinstance(task, str) else task
    data = load_task(task.name, data_dir=data_dir)
    train = data["train"]
    idx = _fixed_subset(len(train), max_train_samples)
    n_dev = 0
    if early_stopping_fraction > 0:
        n_dev = max(MIN_DEV_SAMPLES, int(round(early_stopping_fraction * len(idx))))
        if len(idx) - n_dev < MIN_DEV_SAMPLES // 3:
            raise bad("early_stopping_fraction", early_stopping_fraction,
                      f"a development split of {n_dev} examples (at least {MIN_DEV_SAMPLES}) "
                      f"leaves {len(idx) - n_dev} of the {len(idx)} training examples to train on; "
                      "use 0 (keep the final state) or more training examples")
    out = {"train": train.select(np.sort(idx[n_dev:]).tolist())}
    if n_dev:
        out["dev"] = train.select(np.sort(idx[:n_dev]).tolist())
    for split in dict.fromkeys(("validation", "test") + tuple(task.eval_splits)):
        if split not in data or split == "train":
            continue
        ds = data[split]
        ds = ds.select(np.sort(_fixed_subset(len(ds), max_eval_samples)).tolist())
        if not task.is_regression and len(ds) and min(ds["label"]) < 0:
            continue
        out[split] = ds
    return out


# ---------------------------------------------------------------------------- main entry
def finetune(config: FinetuneConfig, *, store: ResultStore | None = None,
             out_dir: str | Path | None = None, progress: bool = True, resume: bool = True,
             keep_model: bool | None = None) -> FinetuneRun:
    """Fine-tune ``config.model`` on ``config.task`` and evaluate on validation and test.

    With ``store``, the run is kept under kind ``"finetune"`` keyed by the config, the base
    model's fingerprint (the ``init_from`` model's when set) and the task's data version; the
    model is saved in ``run.path / "model"``, and calling again with the same config reads it
    back without training. Checkpoints (in the store, or ``out_dir/checkpoint``) let a killed
    run resume where it stopped and end with the same result.

    Parameters
    ----------
    config : FinetuneConfig
        What to train: model, task, head, layers, schedule and seed.
    store : ResultStore, optional
        Where the run is kept and looked up; None trains every time.
    out_dir : str or pathlib.Path, optional
        Also write ``config.json``, ``metrics.json``, ``info.json``, ``history.csv``, the
        per-example predictions (``pred_<split>.npy``, ``label_<split>.npy``) and ``model/``
        there.
    progress : bool
        Show a progress bar and transformers' load reports.
    resume : bool
        Continue from the last checkpoint of a run killed part-way, if there is one.
    keep_model : bool or None
        None (default) keeps the weights of a run trained now and accepts any stored run;
        ``False`` stores a lean run (metrics, history, predictions and the head in
        ``model/head.pt``, not the encoder's weights, about 90 MB for the embedded model);
        ``True`` needs the weights: a run stored lean is trained again and replaced by a full
        one. Steps that load a model (rankings, PCA, distances, cross-fine-tuning) ask with
        True. The environment variable ``BERTDIMS_KEEP_MODELS=1`` keeps every model.

    Returns
    -------
    FinetuneRun
        The metrics, history, predictions and saved model of the run. Without ``store`` and
        ``out_dir`` the model is saved in a new temporary folder (``run.model_dir``).

    Raises
    ------
    ConfigError
        If ``config`` is not a :class:`FinetuneConfig`, ``init_from`` is not a saved model
        folder, or the config does not fit the model (``layer``, ``dims``, ``freeze``,
        ``train_layers`` against its size).

    Notes
    -----
    Training only the top blocks (``freeze``/``train_layers`` with the embeddings and the
    blocks below the lowest trained one frozen) runs that frozen bottom in eval mode, once per
    training example, and trains the blocks above from its cached output (the same result as
    running it every step, up to float rounding); a wholly frozen encoder's head trains on
    features computed once. :data:`SHORTCUTS` switches either off (tests and benchmarks compare
    the two paths).
    """
    from ..modeling.models import fingerprint_of, resolve_model

    if not isinstance(config, FinetuneConfig):
        raise bad("config", type(config).__name__, "expected a FinetuneConfig")
    task = get_task(config.task)
    base = config.init_from or config.model
    if config.init_from is not None:
        if not (Path(config.init_from) / "config.json").exists():
            raise bad("init_from", config.init_from,
                      "expected a model folder saved by finetune (run.model_dir)")
    model_path = resolve_model(base)
    num_layers, hidden_size = _model_size(model_path)
    config.validate(num_layers, hidden_size)
    out_dir = Path(out_dir) if out_dir is not None else None
    keep_all = os.environ.get(KEEP_MODELS_ENV, "") not in ("", "0")
    want = keep_model is True or keep_all              # the weights must be there
    keep = keep_model is not False or keep_all         # a run trained now keeps them

    cfg = _key_config(config, num_layers)
    ckpt_dir = None
    with contextlib.ExitStack() as hold:
        if store is not None:
            fingerprint = fingerprint_of(base)
            data = data_version(config.task)
            key = store.key(KIND, cfg, fingerprint, data=data)
            if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
                # one process trains a key; another asking for it waits, then reads it (the
                # lock also keeps two processes off one checkpoint folder). Not under a
                # multi-process launcher, whose ranks all train the same run together.
                hold.enter_context(store.lock(KIND, key))
            hit = store.get(KIND, key)
            if hit is not None and want and not has_weights(hit.path / "model"):
                hit = None      # stored lean, and the weights are wanted now: train it again
            if hit is not None:
                _progress.run_finished(KIND, key, 0.0, cached=True)
                run = _read_run(hit.path, config)
                if out_dir is not None:
                    _export(run, out_dir)
                return run
            ckpt_dir = store.root / KIND / ".checkpoints" / key
        elif out_dir is not None:
            ckpt_dir = out_dir / "checkpoint"

        if store is not None:
            _progress.run_started(KIND, key, cfg)
        started = time.perf_counter()
        with _quiet_transformers(not progress):
            model, metrics, history, info, acc, preds = _train(config, task, model_path, ckpt_dir,
                                                               progress, resume, store)
        info["weights_kept"] = keep
        main = acc.is_main_process
        run_path, model_dir = None, None
        if store is not None:
            if main:
                with store.writing(KIND, cfg, fingerprint, key=key) as tmp, _quiet_transformers(not progress):
                    save_finetuned(model, tmp / "model", weights=keep)
                    write_payload(tmp, {"metrics": metrics, "info": info, "history": history,
                                        **_prediction_arrays(preds)})
            acc.wait_for_everyone()
            run_path = store.path(KIND, key)
            model_dir = run_path / "model"
            _progress.run_finished(KIND, key, time.perf_counter() - started, cached=False)
        if out_dir is not None:
            if main:
                with _quiet_transformers(not progress):
                    _write_out_dir(out_dir, config.to_dict(), metrics, history, info, model=model,
                                   preds=preds)
            acc.wait_for_everyone()
            if model_dir is None:
                run_path, model_dir = out_dir, out_dir / "model"
        if model_dir is None:  # neither store nor out_dir: keep the model in a temporary folder
            model_dir = Path(tempfile.mkdtemp(prefix="bertdims-finetune-")) / "model"
            with _quiet_transformers(not progress):
                save_finetuned(model, model_dir)
        if main and ckpt_dir is not None:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
        return FinetuneRun(config=config, metrics=metrics, history=history, model_dir=model_dir,
                           path=run_path, info=info, cached=False, model=model.eval(),
                           _outputs={s: (np.asarray(p), np.asarray(y)) for s, (p, y) in preds.items()})


def stored_key(config: FinetuneConfig, store: ResultStore) -> str:
    """The key under which :func:`finetune` stores (or finds) the run of ``config`` in
    ``store``, without training or loading the model: the planner (``bertdims plan``) asks the
    store with it whether a run is already there."""
    from ..modeling.models import fingerprint_of

    if not isinstance(config, FinetuneConfig):
        raise bad("config", type(config).__name__, "expected a FinetuneConfig")
    return store.key(KIND, key_config(config), fingerprint_of(config.init_from or config.model),
                     data=data_version(config.task))


def key_config(config: FinetuneConfig) -> dict:
    """The config as its store key sees it (:func:`_key_config`; reads the model's
    ``config.json`` for its number of layers): what the stored run's ``config.json`` holds."""
    from ..modeling.models import resolve_model
    return _key_config(config, _model_size(resolve_model(config.init_from or config.model))[0])


def _key_config(config: FinetuneConfig, num_layers: int) -> dict:
    """What a stored run is keyed by: the config, in a form where settings that mean the same
    training are written the same way, and the engine version.

    ``freeze``, ``freeze_embeddings`` and ``train_layers`` become the one list of encoder layers
    that train (:func:`bertdims.train.training.trained_layers`: ``freeze=3`` and ``train_layers=[4, 5,
    6]`` of a 6-layer model are one run), ``layer=-1`` becomes the last layer's number, and the
    fields a run does not use are left out (``epochs``, ``lr`` and ``layer_lr_decay`` when no
    encoder layer trains; ``frozen_epochs`` when one does)."""
    cfg = {**config.to_dict(), "engine": ENGINE_VERSION}
    for name in ("freeze", "freeze_embeddings", "train_layers"):
        cfg.pop(name)
    trained = sorted(trained_layers(config, num_layers))
    cfg["trained_layers"] = trained
    cfg["layer"] = config.resolved_layer(num_layers)
    unused = ("epochs", "lr", "layer_lr_decay") if not trained else ("frozen_epochs",)
    for name in unused:
        cfg.pop(name)
    return cfg


def _prediction_arrays(preds: dict) -> dict:
    out = {}
    for split, (p, y) in preds.items():
        out[f"pred_{split}"], out[f"label_{split}"] = np.asarray(p), np.asarray(y)
    return out


def _quiet_transformers(quiet: bool):
    """Hide transformers' load reports and weight bars when asked (a no-op otherwise)."""
    from ..modeling.models import quiet_transformers
    return quiet_transformers() if quiet else contextlib.nullcontext()


def _read_run(path: Path, config: FinetuneConfig) -> FinetuneRun:
    result = json.loads((path / "result.json").read_text())
    return FinetuneRun(config=config, metrics=result["metrics"], history=pd.read_csv(path / "history.csv"),
                       model_dir=path / "model", path=path, info=result.get("info", {}), cached=True)


def _write_out_dir(out_dir: Path, cfg: dict, metrics: dict, history: pd.DataFrame, info: dict,
                   model: SelectiveClassifier | None = None, model_src: Path | None = None,
                   preds: dict | None = None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, array in _prediction_arrays(preds or {}).items():
        np.save(out_dir / f"{name}.npy", array)
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    (out_dir / "info.json").write_text(json.dumps(info, indent=2, sort_keys=True))
    history.to_csv(out_dir / "history.csv", index=False)
    if model is not None:
        save_finetuned(model, out_dir / "model")
    elif model_src is not None and model_src.resolve() != (out_dir / "model").resolve():
        shutil.copytree(model_src, out_dir / "model", dirs_exist_ok=True)


def _export(run: FinetuneRun, out_dir: Path) -> None:
    preds = {s: (run.predictions(s), run.labels(s)) for s in run.metrics}
    _write_out_dir(out_dir, run.config.to_dict(), run.metrics, run.history, run.info,
                   model_src=run.model_dir, preds=preds)


# ---------------------------------------------------------------------------- the loop
def _eval_every(config: FinetuneConfig, steps_per_epoch: int, total: int) -> int:
    """Steps between evaluations: ``eval_every``, else twice per epoch (at least twice a run)."""
    if config.eval_every is not None:
        return config.eval_every
    return max(1, min(math.ceil(steps_per_epoch / 2), math.ceil(total / 2)))


def _epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The training order of one epoch: a function of (seed, epoch) only, so a resumed run
    and every process see the same order."""
    return np.random.default_rng([seed, epoch, 1729]).permutation(n)


def _loss_fn(task: Task):
    return (torch.nn.MSELoss(reduction="sum") if task.is_regression
            else torch.nn.CrossEntropyLoss(reduction="sum"))


def _loss_sum(loss_fn, task: Task, out: torch.Tensor, labels: torch.Tensor, head) -> torch.Tensor:
    """Summed loss of a batch; a regression loss is measured in units of the training targets'
    standard deviation (the head's ``target_scale``), so its size does not depend on the scale
    of the scores."""
    if task.is_regression:
        scale = getattr(head, "target_scale", None)
        out = out[:, 0].float()
        if scale is not None:
            return loss_fn(out / scale, labels / scale)
        return loss_fn(out, labels)
    return loss_fn(out.float(), labels)


def _mean_loss(task: Task, outputs: np.ndarray, labels: np.ndarray, head) -> float:
    """Mean loss (:func:`_loss_sum`) of outputs (N, C) against labels (N,)."""
    with torch.no_grad():
        y = torch.as_tensor(labels, dtype=torch.float32 if task.is_regression else torch.long)
        total = _loss_sum(_loss_fn(task), task, torch.as_tensor(outputs, dtype=torch.float32), y,
                          head)
    return float(total) / max(len(labels), 1)


def _predictions(task: Task, outputs: np.ndarray) -> np.ndarray:
    return outputs[:, 0].astype(np.float64) if task.is_regression else outputs.argmax(-1)


def _frozen_bottom(core: SelectiveClassifier, layers) -> list:
    """The modules below the lowest trained layer (the embeddings and blocks 1..low-1), which
    form a fixed feature extractor; the whole encoder when nothing in it trains."""
    if not layers:
        return [core.encoder]
    low = min(layers)
    embeddings = getattr(core.encoder, "embeddings", None)
    blocks = getattr(getattr(core.encoder, "encoder", None), "layer", None)
    if low == 0 or embeddings is None or blocks is None:
        return []
    return [embeddings, *list(blocks)[:low - 1]]


def _set_train_mode(model, core, layers) -> None:
    """Training mode for the model, except the frozen bottom (:func:`_frozen_bottom`), which
    stays in eval mode: no dropout in features that do not train, so a frozen bottom gives the
    pretrained model's features (and can be computed once, :class:`_BottomCache`)."""
    model.train()
    for module in _frozen_bottom(core, layers):
        module.eval()


class _BottomCache:
    """The output of the frozen bottom (layer ``upto``: 0 the embeddings, else block ``upto``)
    for every example of a dataset, computed once in eval mode and kept on the CPU without
    padding; :meth:`batch` pads the rows of a batch again (on the right, like the collator)."""

    def __init__(self, core: SelectiveClassifier, dataset: EncodedDataset, collate, batch_size: int,
                 device, precision: str, upto: int):
        self.upto = upto
        self.lengths = dataset.lengths
        self.labels = dataset.labels
        self.states: list = [None] * len(dataset)
        was_training = core.training
        core.eval()
        with torch.no_grad(), truncated(core.encoder, upto) as cut:
            if not cut:
                raise ValueError(f"cannot cut this encoder at layer {upto}")
            for batch in _batches(dataset, collate, batch_size):
                inputs = {k: v.to(device) for k, v in batch.items()
                          if k in ("input_ids", "attention_mask", "token_type_ids")}
                with autocast(device, precision):
                    hidden = core.encoder(**inputs, return_dict=True).last_hidden_state.float().cpu()
                mask = batch["attention_mask"].bool()
                for j, i in enumerate(batch["index"].tolist()):
                    self.states[i] = hidden[j][mask[j]].clone()                 # (len_i, H)
        core.train(was_training)

    @staticmethod
    def nbytes(dataset: EncodedDataset, hidden_size: int) -> int:
        return int(sum(dataset.lengths)) * hidden_size * 4

    @torch.no_grad()
    def outputs(self, core: SelectiveClassifier, batch_size: int, device, precision: str
                ) -> tuple[np.ndarray, np.ndarray]:
        """Head outputs (N, C) in eval mode and labels (N,), in dataset order (the batches of
        :func:`_outputs_sharded`, from the cache)."""
        from .training import length_batches
        was_training = core.training
        core.eval()
        out = np.zeros((len(self.states), core.head.out_features), np.float32)
        for idx in length_batches(self.lengths, batch_size):
            hidden, mask = self.batch(idx, device)
            with autocast(device, precision):
                out[np.asarray(idx)] = core.from_hidden(hidden, mask, self.upto + 1).float().cpu().numpy()
        core.train(was_training)
        return out, np.asarray(self.labels)

    def batch(self, idx, device) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [self.states[int(i)] for i in idx]
        T = max(len(r) for r in rows)
        hidden = torch.zeros((len(rows), T, rows[0].shape[1]), dtype=torch.float32)
        mask = torch.zeros((len(rows), T), dtype=torch.long)
        for j, r in enumerate(rows):
            hidden[j, :len(r)] = r
            mask[j, :len(r)] = 1
        return hidden.to(device), mask.to(device)


@torch.no_grad()
def _features_of(core: SelectiveClassifier, dataset: EncodedDataset, collate, batch_size: int,
                 device, precision: str, train_layers=None) -> torch.Tensor:
    """The selected features the head reads, (N, k) float32 on the CPU, in dataset order,
    computed in eval mode (no dropout), or in the training mode of a run that trains
    ``train_layers`` (dropout on above the frozen bottom, :func:`_set_train_mode`)."""
    was_training = core.training
    if train_layers:
        _set_train_mode(core, core, train_layers)
    else:
        core.eval()
    out = None
    for batch in _batches(dataset, collate, batch_size):
        inputs = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask",
                                                                     "token_type_ids")}
        with autocast(device, precision):
            feats = core.features(**inputs).float().cpu()                          # (B, k)
        if out is None:
            out = torch.empty((len(dataset), feats.shape[1]), dtype=torch.float32)
        out[batch["index"]] = feats
    core.train(was_training)
    return out if out is not None else torch.zeros((0, core.head.in_features))


def _batches(dataset: EncodedDataset, collate, batch_size: int):
    """Padded batches of similar length, without a ``DataLoader`` (whose iterator draws from
    the global random generator: evaluations would change the dropout masks that follow)."""
    from .training import length_batches
    for idx in length_batches(dataset.lengths, batch_size):
        yield collate([dataset[i] for i in idx])


def _labels_tensor(task: Task, dataset: EncodedDataset) -> torch.Tensor:
    return torch.tensor(dataset.labels, dtype=torch.float32 if task.is_regression else torch.long)


def _train(config: FinetuneConfig, task: Task, model_path: str, ckpt_dir: Path | None,
           progress: bool, resume: bool, store: ResultStore | None = None):
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer

    device = pick_device(config.device)
    precision = pick_precision(config.precision, device)
    acc = accelerator(device)
    device = run_device(acc, device)
    world, rank = acc.num_processes, acc.process_index

    set_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = SelectiveClassifier(load_backbone(model_path), tokenizer, config, task)
    layers = apply_freezing(model, config)
    splits = prepare_splits(task, max_train_samples=config.max_train_samples,
                            max_eval_samples=config.max_eval_samples,
                            early_stopping_fraction=config.early_stopping_fraction,
                            data_dir=config.data_dir)
    enc = {name: encode_split(task, ds, tokenizer, config.max_seq_len) for name, ds in splits.items()}
    train = enc["train"]
    collate = Collator(tokenizer.pad_token_id or 0, task.is_regression)
    eval_bs = max(2 * config.micro_batch_size, 32)
    monitor = "dev" if "dev" in enc else "validation"

    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    epochs = config.epochs if layers else config.frozen_epochs
    total = max(1, math.ceil(epochs * steps_per_epoch))
    eval_every = _eval_every(config, steps_per_epoch, total)
    model = acc.prepare(model.to(device))
    core: SelectiveClassifier = acc.unwrap_model(model)
    info = {"n_train": len(train), "n_dev": len(enc["dev"]) if "dev" in enc else 0,
            "checkpoint_rule": "best_dev_loss" if "dev" in enc else "final",
            "monitor_split": monitor if monitor in enc else None, "engine": ENGINE_VERSION,
            "trained_layers": sorted(layers), "num_processes": world, "precision": precision,
            "total_steps": total, "steps_per_epoch": steps_per_epoch, "epochs_run": epochs}
    if not layers and world == 1 and SHORTCUTS["frozen_features"]:
        core, metrics, history, info, preds = _train_frozen(
            config, task, core, enc, collate, eval_bs, device, precision, total, steps_per_epoch,
            eval_every, monitor, info, progress, store)
        return core, metrics, history, info, acc, preds

    # fixed statistics of the head's input, from the pretrained (or init_from) encoder, in the
    # mode it trains in: the encoder's dropout moves a lower-layer [CLS] of all-MiniLM-L6-v2
    # 2-6 times more than the inputs do (std 0.007 against 0.0012 per dimension at layer 2), and
    # statistics without it would blow that noise up
    train_feats = _features_of(core, train, collate, eval_bs, device, precision,
                               train_layers=layers)
    core.head.fit_stats(train_feats, _labels_tensor(task, train) if task.is_regression else None)
    del train_feats

    # a frozen bottom (the embeddings and blocks below the lowest trained block) is computed
    # once per training example; the blocks above train from its output
    low = min(layers) if layers else 0
    bottom, train_labels = None, None
    if (SHORTCUTS["bottom_cache"] and world == 1 and low >= 2 and can_run_blocks(core.encoder)
            and _BottomCache.nbytes(train, core.hidden_size) <= BOTTOM_CACHE_BYTES):
        bottom = _BottomCache(core, train, collate, eval_bs, device, precision, low - 1)
        train_labels = _labels_tensor(task, train)
        evals = {name: _BottomCache(core, d, collate, eval_bs, device, precision, low - 1)
                 for name, d in enc.items() if name != "train" and d.labels is not None}
    info["bottom_cached"] = bottom is not None

    optimizer = build_optimizer(core, config)       # after the move: fused AdamW on the device
    scheduler = slanted_triangular(optimizer, total, config.warmup)
    optimizer = acc.prepare(optimizer)
    top_group = _top_group(optimizer, core.num_layers)
    if world > 1:
        torch.manual_seed(config.seed * 7919 + rank)   # different dropout masks per process

    cfg = _key_config(config, core.num_layers)
    state = LoopState()
    if ckpt_dir is not None and resume:
        state = load_checkpoint(ckpt_dir, cfg, core, optimizer, scheduler, rank, world) or state

    bottom_args = (bottom, train_labels, low) if bottom is not None else None
    train_step = _train_step(acc, model, core, train, collate, config, task, steps_per_epoch,
                             device, precision, bottom_args)

    def evaluate(state: LoopState) -> None:
        _evaluate_step(state, acc, core, enc.get(monitor), monitor == "dev", task, collate,
                       eval_bs, precision, config, steps_per_epoch, top_group, optimizer,
                       evals.get(monitor) if bottom is not None else None)
        _set_train_mode(model, core, layers)

    def clip() -> None:
        acc.clip_grad_norm_(model.parameters(), config.max_grad_norm)

    bar = tqdm(total=total, initial=state.step, disable=not (progress and acc.is_main_process),
               desc=f"finetune {task.name}", leave=False)
    t0, cpu0, first = time.perf_counter(), time.process_time(), state.step
    _set_train_mode(model, core, layers)
    run_loop(state, total, train_step=train_step, optimizer=optimizer, scheduler=scheduler,
             clip=clip if config.max_grad_norm is not None else None, evaluate=evaluate,
             eval_every=eval_every,
             checkpoint=None if ckpt_dir is None else (
                 lambda st: save_checkpoint(ckpt_dir, cfg, st, core, optimizer, scheduler, acc)),
             checkpoint_every=config.checkpoint_every, after_step=lambda step: _after_step(step),
             bar=bar, device=device)
    bar.close()
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
    steps_here = state.step - first
    restore_best(state, core)
    model.eval()
    outputs = {split: evals[split].outputs(core, eval_bs, device, precision)
               if bottom is not None and split in evals
               else _outputs_sharded(acc, core, enc[split], collate, eval_bs, precision)
               for split in enc if split not in ("train", "dev")}
    metrics, preds = _score_outputs(task, outputs, enc)
    if hasattr(core.encoder, "_bertdims_fingerprint"):
        del core.encoder._bertdims_fingerprint       # the weights changed
    history = pd.DataFrame(state.history, columns=_history_columns(task))
    info.update({"steps": state.step, "best_step": state.best_step if "dev" in enc else state.step,
                 "stopped_early": bool(state.stopped and state.step < total),
                 "fast_frozen": False, "train_seconds_this_call": seconds,
                 "train_cpu_seconds_this_call": cpu_seconds, "steps_this_call": steps_here})
    return core, metrics, history, info, acc, preds


def _train_step(acc, model, core: SelectiveClassifier, train: EncodedDataset, collate,
                config: FinetuneConfig, task: Task, steps_per_epoch: int, device, precision: str,
                bottom: tuple | None = None):
    """The engine's forward and backward pass of one optimizer step, for :func:`run_loop`: the
    step's ``batch_size`` examples in the engine's epoch order, this process's share of them
    (every ``world``-th), in micro-batches of ``micro_batch_size`` with gradients synchronised
    once, the loss summed and scaled so that any process count takes the same step. ``bottom``
    (cache, training labels, lowest trained block) runs the blocks above a cached frozen bottom."""
    world, rank = acc.num_processes, acc.process_index
    loss_fn = _loss_fn(task)
    if bottom is not None:
        cache, train_labels, low = bottom

    def train_step(step: int) -> tuple[torch.Tensor, int]:
        epoch, pos = divmod(step, steps_per_epoch)
        order = _epoch_order(config.seed, epoch, len(train))
        batch_idx = order[pos * config.batch_size:(pos + 1) * config.batch_size]
        g = len(batch_idx)
        mine = batch_idx[rank::world]
        scale = 1.0
        if len(mine) == 0:             # fewer examples than processes: join the sync with 0 loss
            mine, scale = batch_idx[:1], 0.0
        micro = [mine[i:i + config.micro_batch_size] for i in range(0, len(mine), config.micro_batch_size)]
        total_loss = torch.zeros((), dtype=torch.float64, device=device)
        for j, mb in enumerate(micro):
            if bottom is not None:
                hidden, mask = cache.batch(mb, device)
                labels = train_labels[torch.as_tensor(mb, dtype=torch.long)].to(device)
            else:
                batch = collate([train[int(i)] for i in mb])
                labels = batch.pop("labels").to(device)
                inputs = {k: v.to(device) for k, v in batch.items() if k != "index"}
            sync = contextlib.nullcontext() if j == len(micro) - 1 else acc.no_sync(model)
            with sync:
                with autocast(device, precision):
                    logits = (core.from_hidden(hidden, mask, low) if bottom is not None
                              else model(**inputs))
                loss_sum = _loss_sum(loss_fn, task, logits, labels, core.head)
                acc.backward(loss_sum * (scale * world / g))
            total_loss += loss_sum.detach() * scale
        return total_loss, int(len(mine) * scale)
    return train_step


def _history_columns(task: Task) -> list[str]:
    return ["step", "epoch", "lr", "train_loss", "dev_loss", f"dev_{task.metric}"]


def _score_outputs(task: Task, outputs: dict, enc: dict) -> tuple[dict, dict]:
    """Metrics per split and the stored per-example predictions and labels (dataset order)."""
    metrics, preds = {}, {}
    for split, (out, labels) in outputs.items():
        p = _predictions(task, out)
        metrics[split] = compute_metrics(task, p, labels)
        preds[split] = (p, np.asarray(labels))
    return metrics, preds


FEATURES_KIND = "frozen_features"


def _frozen_features(config, core, enc, collate, eval_bs, device, precision,
                     store: ResultStore | None) -> dict:
    """The selected features of every split for a wholly frozen encoder. With a store, the
    chosen token vector of the chosen layer (all dimensions) is computed once per model, task,
    example subset, length, layer, token and precision, kept under kind ``frozen_features`` and
    read back by every later frozen run (other seeds, heads, dimensions)."""
    if store is None:
        return {s: _features_of(core, d, collate, eval_bs, device, precision) for s, d in enc.items()}
    from ..modeling.models import fingerprint_of
    key_cfg = {"task": config.task, "max_train_samples": config.max_train_samples,
               "max_eval_samples": config.max_eval_samples,
               "early_stopping_fraction": config.early_stopping_fraction,
               "max_seq_len": config.max_seq_len, "layer": core.layer, "token": config.token,
               "precision": precision, "device": torch.device(device).type,
               "data_dir": config.data_dir, "splits": sorted(enc), "engine": ENGINE_VERSION}
    dims, core.dims = core.dims, None             # the whole vector, for any later dims

    def compute() -> dict:
        return {s: _features_of(core, d, collate, eval_bs, device, precision).numpy()
                for s, d in enc.items()}
    try:
        stored = store.cached(FEATURES_KIND, key_cfg, compute,
                              fingerprint=fingerprint_of(config.init_from or config.model),
                              data=data_version(config.task))
    finally:
        core.dims = dims
    feats = {s: torch.from_numpy(np.load(stored.path / f"{s}.npy")) for s in enc}
    return feats if dims is None else {s: f[:, dims] for s, f in feats.items()}


def _train_frozen(config, task, core, enc, collate, eval_bs, device, precision, total,
                  steps_per_epoch, eval_every, monitor, info, progress, store=None):
    """The head alone on features computed once (no encoder parameter trains): the same
    batches, dropout and schedule as the full loop, ``frozen_epochs`` passes, at the cost of one
    forward pass of the (truncated) encoder per example. Returns the model, metrics, history,
    info and per-split predictions."""
    from tqdm.auto import tqdm
    t0, cpu0 = time.perf_counter(), time.process_time()
    feats = _frozen_features(config, core, enc, collate, eval_bs, device, precision, store)
    labels = {s: _labels_tensor(task, d) for s, d in enc.items() if d.labels is not None}
    head = core.head
    head.fit_stats(feats["train"], labels["train"] if task.is_regression else None)
    head_cpu = head.to("cpu")                    # small: the CPU is fastest for it
    optimizer = build_optimizer(core, config, fused=False)
    scheduler = slanted_triangular(optimizer, total, config.warmup)
    top_group = _top_group(optimizer, core.num_layers)
    loss_fn = _loss_fn(task)
    x, y = feats["train"], labels["train"]

    def train_step(step: int) -> tuple[torch.Tensor, int]:
        epoch, pos = divmod(step, steps_per_epoch)
        order = _epoch_order(config.seed, epoch, len(x))
        batch_idx = order[pos * config.batch_size:(pos + 1) * config.batch_size]
        g = len(batch_idx)
        total_loss = torch.zeros((), dtype=torch.float64)
        for i in range(0, g, config.micro_batch_size):
            mb = torch.as_tensor(batch_idx[i:i + config.micro_batch_size])
            loss_sum = _loss_sum(loss_fn, task, head_cpu(x[mb]), y[mb], head_cpu)
            (loss_sum / g).backward()
            total_loss += loss_sum.detach()
        return total_loss, g

    def evaluate(state: LoopState) -> None:
        train_loss = take_train_loss(state)
        head_cpu.eval()
        with torch.no_grad():
            out = head_cpu(feats[monitor]).numpy() if monitor in feats else None
        head_cpu.train()
        _record(state, task, out, labels.get(monitor), monitor == "dev", head_cpu, core, config,
                train_loss, optimizer.param_groups[top_group]["lr"], steps_per_epoch)

    def clip() -> None:
        torch.nn.utils.clip_grad_norm_(head_cpu.parameters(), config.max_grad_norm)

    bar = tqdm(total=total, disable=not progress, desc=f"head {task.name}", leave=False)
    head_cpu.train()
    state = run_loop(LoopState(), total, train_step=train_step, optimizer=optimizer,
                     scheduler=scheduler, clip=clip if config.max_grad_norm is not None else None,
                     evaluate=evaluate, eval_every=eval_every, bar=bar)
    bar.close()
    restore_best(state, core)
    head_cpu.eval()
    with torch.no_grad():
        outputs = {s: (head_cpu(feats[s]).numpy(), labels[s].numpy()) for s in enc
                   if s not in ("train", "dev")}
    core.to(device)
    metrics, preds = _score_outputs(task, outputs, enc)
    history = pd.DataFrame(state.history, columns=_history_columns(task))
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
    info.update({"steps": state.step, "best_step": state.best_step if "dev" in enc else state.step,
                 "stopped_early": bool(state.stopped and state.step < total), "fast_frozen": True,
                 "train_seconds_this_call": seconds, "train_cpu_seconds_this_call": cpu_seconds,
                 "steps_this_call": state.step})
    return core, metrics, history, info, preds


def _record(state: LoopState, task, outputs, labels, select: bool, head, core, config,
            train_loss: float, lr: float, steps_per_epoch: int) -> None:
    """One history row; with a development split (``select``), the checkpoint rule
    (:func:`bertdims.train.loop.record`) on the development loss."""
    loss, score = float("nan"), float("nan")
    scored = outputs is not None and labels is not None
    if scored:
        labels = np.asarray(labels)
        loss = _mean_loss(task, outputs, labels, head)
        score = compute_metrics(task, _predictions(task, outputs), labels)[task.metric]
    record(state, [state.step, state.step / steps_per_epoch, lr, train_loss, loss, score], loss,
           core if select and scored else None, config.patience)


def _top_group(optimizer, num_layers: int) -> int:
    groups = optimizer.param_groups
    enc = [i for i, g in enumerate(groups) if g["layer"] != "head"]
    if not enc:
        return 0
    return max(enc, key=lambda i: groups[i]["layer"])


def _evaluate_step(state: LoopState, acc, core, dev, select: bool, task, collate, eval_bs,
                   precision, config, steps_per_epoch, top_group, optimizer,
                   cache: _BottomCache | None = None) -> None:
    train_loss = take_train_loss(state, acc)
    if dev is None:
        outputs, labels = None, None
    elif cache is not None:
        outputs, labels = cache.outputs(core, eval_bs, _device_of(core), precision)
    else:
        outputs, labels = _outputs_sharded(acc, core, dev, collate, eval_bs, precision)
    _record(state, task, outputs, labels, select, core.head, core, config, train_loss,
            optimizer.param_groups[top_group]["lr"], steps_per_epoch)


def _device_of(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def _outputs_sharded(acc, core, dataset: EncodedDataset, collate, batch_size, precision
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Head outputs (N, C) and labels (N,) in dataset order. Each process predicts its share
    (every ``world``-th example); the shares are gathered."""
    world, rank = acc.num_processes, acc.process_index
    mine = np.arange(rank, len(dataset), world)
    part = dataset.subset(mine)
    was_training = core.training
    core.eval()
    device = _device_of(core)
    idx, outs, labels = [], [], []
    with torch.no_grad():
        for batch in _batches(part, collate, batch_size):
            inputs = {k: v.to(device) for k, v in batch.items()
                      if k in ("input_ids", "attention_mask", "token_type_ids")}
            with autocast(device, precision):
                outs.append(core(**inputs).float().cpu().numpy())
            idx.append(batch["index"].numpy())
            labels.append(batch["labels"].numpy())
    core.train(was_training)
    width = core.head.out_features
    idx = mine[np.concatenate(idx).astype(np.int64)] if idx else np.zeros(0, np.int64)
    outs = np.concatenate(outs) if outs else np.zeros((0, width), np.float32)
    labels = np.concatenate(labels) if labels else np.zeros(0)
    if world > 1:
        gathered = [None] * world
        torch.distributed.all_gather_object(gathered, (idx, outs, labels))
        idx = np.concatenate([g[0] for g in gathered])
        outs = np.concatenate([g[1] for g in gathered])
        labels = np.concatenate([g[2] for g in gathered])
    order = np.argsort(idx, kind="stable")
    return outs[order], labels[order]
