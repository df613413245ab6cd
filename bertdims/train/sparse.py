"""Fine-tuning by sparsification: learn a binary mask over fixed pretrained weights.

Reproduces the sparsification experiments of Radiya-Dixit & Wang, *How fine can
fine-tuning be? Learning efficient language models* (AISTATS 2020): instead of changing
BERT's weights, a task is learned by zeroing some of them. The pretrained weights
stay fixed; only a binary mask over chosen weight matrices (and the new classifier head) is
learned, and a task can be stored as its mask: one bit per masked weight.

Our estimator (the choice the issue leaves open):

* every masked matrix ``W`` (out, in) gets real-valued **scores** ``S`` of the same shape,
  initialised to ``|W| / mean|W|`` (so the first mask is magnitude pruning);
* the forward pass uses ``W * M`` where ``M`` keeps the ``(1 - sparsity)`` fraction of
  entries with the largest scores **in each matrix** (top-k, so the sparsity is exactly the
  target; ``sparsity`` is the fraction of weights set to zero);
* the backward pass treats the top-k as the identity (straight-through estimator), so
  ``dL/dS = dL/d(W*M) * W``, as in movement pruning / supermasks;
* scores are trained with AdamW at ``score_lr`` on a slanted triangular schedule, the head
  at ``head_lr``; biases, layer norms and embeddings stay pretrained.

The sparsity is enforced by the top-k rather than an L0 penalty, so there is no penalty
weight to tune and every run of a sweep has exactly the sparsity asked for.

Every run uses the recipe of the full fine-tuning it is compared with
(:meth:`SparseConfig.reference`, :data:`RECIPE`): the same examples, batches, steps, schedule,
head and checkpoint rule. :func:`sparse_study` adds three controls in which only the head
trains: sparsity 0 (the pretrained encoder untouched), and a fixed magnitude mask and a fixed
random mask of the same sparsity (:func:`fixed_masks`); :func:`sparse_effects` compares them
through :func:`bertdims.core.stats.paired_effect` on the stored per-example test predictions.

Chapter: ``book/10_sparse_finetuning.ipynb``.
"""
from __future__ import annotations

import copy
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..core._validate import ConfigError, ConfigMixin, bad, check_range
from ..core.result import RunsResult
from ..config.params import Check, IntList, Interval, Options, check_fields, declared, derive, own, param
from ..core import progress as _progress
from .loop import (LoopState, accelerator, load_checkpoint, restore_best, run_device, run_loop,
                   save_checkpoint)
from ..core.store import write_json_atomic, write_payload
from . import finetuning as _ft
from .finetuning import FinetuneConfig as _EngineConfig

#: Short names of the weight matrices of a BERT layer -> module path inside the layer.
MATRICES = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attention_output": "attention.output.dense",
    "intermediate": "intermediate.dense",
    "output": "output.dense",
}
MASK_FILE, INDEX_FILE, HEAD_FILE, CONFIG_FILE = "mask.bin", "mask.json", "head.pt", "sparse.json"
ESTIMATORS = ("topk",)


# ------------------------------------------------------------------------------ config
#: How a run chooses its masks: ``learned`` (scores trained with the head), or fixed before
#: training and never changed (the controls): ``magnitude`` keeps the largest ``|W|`` of each
#: matrix, ``random`` a uniformly random subset of each matrix (seeded by ``seed``).
MASKS = ("learned", "magnitude", "random")
#: the per-step training losses of a checkpointed learned mask, next to the engine's checkpoint
STEPS_FILE = "steps.json"

def _layer_numbers(value) -> list[int]:
    """Encoder layers numbered 1..L, sorted, each once (``"3,1"`` is read as ``[1, 3]``)."""
    try:
        value = IntList(low=1, example="[1, 6]").check("layers", value)
    except ConfigError:
        raise bad("layers", value, "expected None (all encoder layers) or a non-empty list of "
                  "layer numbers 1..L") from None
    return sorted(set(value))


def _names(text: str) -> list[str]:
    """``"query, key"`` -> ``["query", "key"]`` (a flag's text)."""
    return [t.strip() for t in text.split(",")]


def _matrix_names(value):
    """Keys of :data:`MATRICES`; one name is read as a list of one."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise bad("weights", value, "choose a list from: " + ", ".join(MATRICES))
    unknown = [w for w in value if not isinstance(w, str) or w not in MATRICES]
    if unknown or not value:
        raise bad("weights", value, "choose from: " + ", ".join(MATRICES) + f" (unknown: {unknown})")
    return value


#: Part of every stored sparse run's key: bump when what a run computes changes. 2: the
#: reference's recipe (batches, steps, head statistics, checkpoint rule), fixed-mask controls,
#: stored per-example predictions.
SPARSE_VERSION = 2


@dataclass
class SparseConfig(ConfigMixin):
    """Sparse fine-tuning of ``model`` on ``task`` (see the module docstring).

    Only the mask fields (``sparsity``, ``mask``, ``layers``, ``weights``, ``estimator``,
    ``score_lr``) belong to sparse fine-tuning. The other fields are the training recipe
    (:data:`RECIPE`): they have the names, meanings and defaults of
    :class:`bertdims.train.finetuning.FinetuneConfig`'s fields. :meth:`reference` is the full fine-tuning
    with the same recipe, and :meth:`from_reference` a sparse run with a given reference's recipe.
    A run that trains mask scores trains for ``epochs``, like its reference; a run in which nothing
    of the encoder trains (sparsity 0, or a fixed mask) trains its head on features computed once,
    for ``frozen_epochs``, exactly as the engine trains the head of a frozen encoder.

    Parameters
    ----------
    model : str
        Base encoder: ``"embedded"``, a hub name or a local folder; a BERT-style encoder with
        ``encoder.layer.<i>`` blocks.
    task : str
        A registered task name (:func:`bertdims.task_names`).
    sparsity : float
        Fraction of each masked matrix set to zero, in [0, 1); 0 keeps every weight (the frozen
        pretrained encoder with a trained head).
    mask : str
        How the masks are chosen (:data:`MASKS`): ``"learned"`` (scores trained with the head),
        or fixed before training and never changed, the controls: ``"magnitude"`` (the largest
        ``|W|`` of each matrix) or ``"random"`` (a random subset of each matrix, seeded by
        ``seed``).
    layers : list of int or None
        Encoder layers (1..L) whose matrices are masked, stored sorted and each once (a string
        such as ``"3,1"`` is read as ``[1, 3]``); None: all.
    weights : list of str or None
        Which matrices of those layers are masked, keys of :data:`MATRICES`; None: all six. A
        single string stands for a list of one.
    estimator : str
        How a mask is learned (:data:`ESTIMATORS`): ``"topk"``, the top-k of the scores in each
        matrix with a straight-through gradient.
    score_lr : float
        Peak learning rate of the mask scores. They start at ``|W| / mean|W|``, a scale of about
        1, so they need a larger rate than the weights' ``lr``.
    layer, token, head, head_hidden, dropout :
        The classifier head: the layer and token it reads, its kind, its hidden units and the
        dropout before it, as in :class:`bertdims.train.finetuning.FinetuneConfig`.
    epochs, head_lr, warmup, batch_size, micro_batch_size, weight_decay, max_grad_norm :
        The optimisation, as in :class:`bertdims.train.finetuning.FinetuneConfig` (``head_lr`` is the
        head's peak learning rate; the scores use ``score_lr``).
    max_train_samples, max_eval_samples, max_seq_len :
        The data: subset sizes of the training and evaluation splits, and tokens per example.
    early_stopping_fraction, patience, eval_every :
        The checkpoint rule and the evaluation points, as in
        :class:`bertdims.train.finetuning.FinetuneConfig`.
    frozen_epochs : float
        Passes over the training set of a run in which only the head trains.
    seed, device, precision :
        The run's seed (data order, head initialisation, the random mask), the device and the
        numeric precision, as in :class:`bertdims.train.finetuning.FinetuneConfig`.

    Raises
    ------
    ConfigError
        When ``sparsity`` is outside [0, 1), ``mask`` or ``estimator`` is unknown, ``layers`` is
        not None or a non-empty list of layer numbers >= 1, ``weights`` names no matrix or an
        unknown one, ``score_lr`` is not positive, or a recipe field is outside its constraint in
        :data:`bertdims.config.params.VOCABULARY` (the one :class:`bertdims.train.finetuning.FinetuneConfig`
        checks).
    """

    model: str = param("model")
    task: str = param("task")
    sparsity: float = own(0.1, Interval(float, 0, 1, "left"), "fraction of each masked matrix "
                          "set to zero; 0 keeps every weight")
    mask: str = own("learned", Options(MASKS), "learned (scores trained with the head), or a "
                    "fixed control: magnitude, random")
    layers: list[int] | None = own(None, Check(_layer_numbers, cli=str), "encoder layers 1..L "
                                   "whose matrices are masked, comma-separated; None: all",
                                   none=True)
    weights: list[str] | None = own(None, Check(_matrix_names, cli=_names), "the matrices "
                                    "masked, comma-separated: " + ",".join(MATRICES) + "; None: "
                                    "all", none=True)
    estimator: str = own("topk", Options(ESTIMATORS), "how a mask is learned: topk (top-k of "
                         "the scores, straight-through gradient)")
    score_lr: float = own(1e-2, Interval(float, 0, None, "right"), "peak learning rate of the "
                          "mask scores")
    layer: int = param("layer")
    token: str = param("token")
    head: str = param("head")
    head_hidden: int = param("head_hidden")
    dropout: float = param("dropout")
    epochs: float = param("epochs")
    head_lr: float | None = param("head_lr")
    warmup: float = param("warmup")
    batch_size: int = param("batch_size")
    micro_batch_size: int = param("micro_batch_size")
    weight_decay: float = param("weight_decay")
    max_grad_norm: float | None = param("max_grad_norm")
    max_train_samples: int | None = param("max_train_samples")
    max_eval_samples: int | None = param("max_eval_samples")
    max_seq_len: int = param("max_seq_len")
    early_stopping_fraction: float = param("early_stopping_fraction")
    patience: int = param("patience")
    eval_every: int | None = param("eval_every")
    frozen_epochs: float = param("frozen_epochs")
    seed: int = param("seed")
    device: str = param("device")
    precision: str = param("precision")

    dims = None  # the classifier reads all dimensions (SelectiveClassifier asks for it)

    def __post_init__(self):
        check_fields(self)     # every field against its constraint (the recipe: the vocabulary's)

    def reference(self, **changes):
        """The full fine-tuning with this run's recipe: a
        :class:`bertdims.train.finetuning.FinetuneConfig` built from the :data:`RECIPE` fields (and
        ``changes``, e.g. ``freeze=L`` for the head alone on the frozen encoder)."""
        return derive(_EngineConfig, self, **changes)

    @classmethod
    def from_reference(cls, reference, **sparse) -> "SparseConfig":
        """A sparse run with the recipe of ``reference`` (a ``FinetuneConfig``) and the mask
        fields in ``sparse`` (``sparsity``, ``mask``, ``layers``, ``weights``, ``score_lr``)."""
        return derive(cls, reference, **sparse)

    @property
    def trains_mask(self) -> bool:
        """Whether mask scores train: a learned mask that zeroes something."""
        return self.mask == "learned" and self.sparsity > 0

    # the executor's job protocol (bertdims.train.executor): the store kind, the key, the computation
    store_kind = "sparse_finetune"

    def store_key(self, store) -> str:
        """The key under which :func:`sparse_finetune` stores this run in ``store``."""
        from ..modeling.models import fingerprint_of
        return store.key(self.store_kind, _key_config(self), fingerprint_of(self.model))

    def compute_in(self, store, keep_model=None):
        """Compute (or read back) this run into ``store`` (``keep_model`` does not apply)."""
        return sparse_finetune(self, store)

    def validate(self, num_layers: int) -> None:
        """Layer numbers must exist in a model with ``num_layers`` encoder layers."""
        if self.layers is not None and max(self.layers) > num_layers:
            raise bad("layers", self.layers, f"layers are numbered 1..{num_layers} for model "
                      f"{self.model!r} ({num_layers} encoder layers)")
        if self.layer != -1 and not 1 <= self.layer <= num_layers:
            raise bad("layer", self.layer, f"expected -1 (top) or 1..{num_layers}")


#: The fields of :class:`SparseConfig` that define the training recipe: those it shares with
#: :class:`bertdims.train.finetuning.FinetuneConfig` (the vocabulary's names, meanings, defaults and
#: checks). :meth:`SparseConfig.reference` passes them to the full-fine-tuning reference
#: unchanged, so a sparse run and its reference see the same examples in the same batches for
#: the same number of steps, on the same schedule, and keep their state by the same checkpoint
#: rule.
RECIPE = tuple(f for f in declared(SparseConfig) if f in declared(_EngineConfig))


# ------------------------------------------------------------------------------ masking
class _TopKMask(torch.autograd.Function):
    """Binary mask keeping the ``n_keep`` largest scores; straight-through gradient."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, n_keep: int) -> torch.Tensor:
        if n_keep >= scores.numel():
            return torch.ones_like(scores)
        mask = torch.zeros_like(scores)
        idx = torch.topk(scores.detach().flatten(), n_keep, sorted=False).indices
        mask.view(-1)[idx] = 1.0
        return mask

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


class MaskedLinear(nn.Module):
    """A linear layer computing ``x @ (W * M).T + b`` with fixed pretrained ``W`` and ``b``
    and a learned binary mask ``M`` (top-k of ``scores``, straight-through gradient).

    ``weight`` (out, in) and ``bias`` (out,) keep the names of the ``nn.Linear`` they replace
    and do not train; ``scores`` (out, in) does.
    """

    def __init__(self, linear: nn.Linear, sparsity: float):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = nn.Parameter(linear.weight.detach().clone(), requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(),
                                                                  requires_grad=False)
        magnitude = self.weight.detach().abs()
        self.scores = nn.Parameter(magnitude / magnitude.mean().clamp_min(1e-12))
        self.sparsity = float(sparsity)
        self.n_keep = self.weight.numel() - int(round(self.sparsity * self.weight.numel()))

    def mask(self) -> torch.Tensor:
        """The current binary mask (out, in), 1 = kept, as float (differentiable in scores).

        Without gradients (evaluation) the mask is computed once per state of the scores and
        reused: the top-k of a large matrix costs more than the matrix product it masks."""
        if torch.is_grad_enabled() and self.scores.requires_grad:
            return _TopKMask.apply(self.scores, self.n_keep)
        key = (self.scores._version, self.scores.data_ptr(), self.scores.device)
        cached = getattr(self, "_mask_cache", None)
        if cached is None or cached[0] != key:
            cached = (key, _TopKMask.apply(self.scores.detach(), self.n_keep))
            self._mask_cache = cached
        return cached[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask(), self.bias)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, sparsity={self.sparsity}"


def maskable_weights(encoder: nn.Module, layers: Sequence[int] | None = None,
                     weights: Sequence[str] | None = None) -> dict[str, str]:
    """Module paths of the matrices to mask -> their parameter names (``<path>.weight``).

    ``layers`` numbered 1..L (None = all), ``weights`` keys of :data:`MATRICES` (None = all).
    Raises ConfigError naming the valid choices when a layer or matrix does not exist.
    """
    blocks = _encoder_blocks(encoder)
    L = len(blocks)
    layers = list(range(1, L + 1)) if layers is None else list(layers)
    bad_layers = [i for i in layers if not 1 <= i <= L]
    if bad_layers:
        raise bad("layers", list(layers), f"layers are numbered 1..{L} for this model")
    weights = list(MATRICES) if weights is None else list(weights)
    unknown = [w for w in weights if w not in MATRICES]
    if unknown:
        raise bad("weights", weights, "choose from: " + ", ".join(MATRICES))
    out = {}
    for i in layers:
        prefix, block = blocks[i - 1]
        for w in weights:
            try:
                module = block.get_submodule(MATRICES[w])
            except AttributeError:
                module = None
            if not isinstance(module, nn.Linear):
                raise ConfigError(f"weight {w!r} ({MATRICES[w]}) is not a linear layer of layer {i} "
                                  f"in this model; sparse fine-tuning supports BERT-style layers")
            path = f"{prefix}.{MATRICES[w]}"
            out[path] = f"{path}.weight"
    return out


def _encoder_blocks(encoder: nn.Module) -> list[tuple[str, nn.Module]]:
    """(module path, block) of the transformer blocks of a BERT-like encoder, bottom first."""
    for path in ("encoder.layer", "layer"):
        try:
            blocks = encoder.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(blocks, nn.ModuleList):
            return [(f"{path}.{i}", b) for i, b in enumerate(blocks)]
    raise ConfigError("sparse fine-tuning needs a BERT-like encoder with encoder.layer.<i> blocks")


def sparsify(encoder: nn.Module, sparsity: float, layers: Sequence[int] | None = None,
             weights: Sequence[str] | None = None) -> dict[str, MaskedLinear]:
    """Replace the chosen ``nn.Linear`` modules of ``encoder`` in place by :class:`MaskedLinear`
    and freeze every other encoder parameter. Returns module path -> MaskedLinear."""
    check_range("sparsity", sparsity, 0.0, 1.0, high_open=True)
    targets = maskable_weights(encoder, layers, weights)
    for p in encoder.parameters():
        p.requires_grad_(False)
    out = {}
    for path in targets:
        parent_path, _, child = path.rpartition(".")
        parent = encoder.get_submodule(parent_path)
        masked = MaskedLinear(getattr(parent, child), sparsity)
        setattr(parent, child, masked)
        out[path] = masked
    return out


def masked_modules(model: nn.Module) -> dict[str, MaskedLinear]:
    """Module path -> MaskedLinear, relative to the Hugging Face encoder (for a classifier,
    its ``.encoder``), so ``<path>.weight`` is the pretrained parameter's name."""
    enc = model.encoder if hasattr(model, "head") and hasattr(model, "encoder") else model
    return {n: m for n, m in enc.named_modules() if isinstance(m, MaskedLinear)}


# ------------------------------------------------------------------------------ storage
@dataclass
class StoredMask:
    """A task stored as masks over a pretrained model, with its classifier head and config.

    What :func:`load_mask` reads back from a folder written by :func:`save_mask`. The property
    ``sparsity`` is the measured fraction of the masked weights that are set to zero.

    Parameters
    ----------
    masks : dict of str to torch.Tensor
        Parameter name (``<module path>.weight``) -> bool mask of that weight's shape (out, in),
        True = kept.
    head_state : dict of str to torch.Tensor
        The classifier head's ``state_dict``, each tensor in the shape of its head parameter or
        buffer; empty when none was stored.
    config : dict
        The run's :class:`SparseConfig` as a dict (:meth:`SparseConfig.to_dict`); empty when
        unknown.
    fingerprint : str or None
        Fingerprint of the pretrained model the masks were learned on, which :func:`apply_mask`
        checks; None when not recorded.
    """

    masks: dict[str, torch.Tensor]
    head_state: dict[str, torch.Tensor] = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    fingerprint: str | None = None

    @property
    def sparsity(self) -> float:
        n = sum(m.numel() for m in self.masks.values())
        return 1.0 - sum(int(m.sum()) for m in self.masks.values()) / max(n, 1)


def extract_mask(model: nn.Module) -> dict[str, torch.Tensor]:
    """Current masks of a sparsified model: parameter name (``<path>.weight``) -> bool (out, in)."""
    with torch.no_grad():
        return {f"{path}.weight": m.mask().detach().cpu().bool() for path, m in masked_modules(model).items()}


def save_mask(masks: dict[str, torch.Tensor], folder: str | Path, *, head_state=None,
              config: dict | None = None, fingerprint: str | None = None) -> dict[str, int]:
    """Write a task as bit-packed masks, with its classifier head and config.

    Writes four files into ``folder`` (created if needed): ``mask.bin`` (``np.packbits`` of each
    flattened mask, byte-aligned per matrix), ``mask.json`` (names, shapes, byte offsets and the
    pretrained fingerprint), ``head.pt`` (the head's tensors, on the CPU) and ``sparse.json`` (the
    config). :func:`load_mask` reads them back.

    Parameters
    ----------
    masks : dict of str to torch.Tensor
        Parameter name -> mask of that weight's shape (out, in); a nonzero entry is kept.
    folder : str or Path
        The folder to write into.
    head_state : dict of str to torch.Tensor, optional
        The classifier head's ``state_dict``, tensors of any shape; None: an empty one.
    config : dict, optional
        The run's config, written as JSON (values JSON cannot hold are written as strings);
        None: an empty one.
    fingerprint : str, optional
        Fingerprint of the pretrained model the masks apply to.

    Returns
    -------
    dict of str to int
        The byte sizes of the files: ``mask_bytes``, ``index_bytes`` and ``head_bytes``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    index, chunks, offset = [], [], 0
    for name, mask in masks.items():
        packed = np.packbits(mask.detach().cpu().numpy().astype(bool).ravel())
        index.append({"name": name, "shape": list(mask.shape), "offset": offset, "nbytes": int(packed.size)})
        chunks.append(packed)
        offset += packed.size
    (folder / MASK_FILE).write_bytes(np.concatenate(chunks).tobytes() if chunks else b"")
    (folder / INDEX_FILE).write_text(json.dumps({"format": 1, "fingerprint": fingerprint,
                                                  "masks": index}, indent=1))
    torch.save({k: v.detach().cpu() for k, v in (head_state or {}).items()}, folder / HEAD_FILE)
    (folder / CONFIG_FILE).write_text(json.dumps(config or {}, indent=2, sort_keys=True, default=str))
    return {"mask_bytes": (folder / MASK_FILE).stat().st_size,
            "index_bytes": (folder / INDEX_FILE).stat().st_size,
            "head_bytes": (folder / HEAD_FILE).stat().st_size}


def load_mask(folder: str | Path) -> StoredMask:
    """Read a task written by :func:`save_mask`.

    Parameters
    ----------
    folder : str or Path
        A folder written by :func:`save_mask`, e.g. the ``path`` of a stored
        :func:`sparse_finetune` run.

    Returns
    -------
    StoredMask
        The bool masks in their stored shapes, the head's state (empty without ``head.pt``), the
        config (empty without ``sparse.json``) and the pretrained model's fingerprint.

    Raises
    ------
    ConfigError
        When ``folder`` has no ``mask.json``.
    """
    folder = Path(folder)
    if not (folder / INDEX_FILE).exists():
        raise ConfigError(f"parameter 'folder' = {str(folder)!r} is not allowed; expected a folder "
                          f"written by save_mask (with {MASK_FILE} and {INDEX_FILE})")
    index = json.loads((folder / INDEX_FILE).read_text())
    raw = np.frombuffer((folder / MASK_FILE).read_bytes(), dtype=np.uint8)
    masks = {}
    for item in index["masks"]:
        n = int(np.prod(item["shape"]))
        bits = np.unpackbits(raw[item["offset"]:item["offset"] + item["nbytes"]], count=n)
        masks[item["name"]] = torch.from_numpy(bits.astype(bool)).reshape(item["shape"])
    head = torch.load(folder / HEAD_FILE, map_location="cpu", weights_only=True) \
        if (folder / HEAD_FILE).exists() else {}
    config = json.loads((folder / CONFIG_FILE).read_text()) if (folder / CONFIG_FILE).exists() else {}
    return StoredMask(masks=masks, head_state=head, config=config, fingerprint=index.get("fingerprint"))


def apply_mask(pretrained: nn.Module, stored: StoredMask | dict[str, torch.Tensor], *,
               check_fingerprint: bool = True) -> nn.Module:
    """A copy of ``pretrained`` (a Hugging Face encoder) whose masked weights are ``W * M``.

    Gives outputs identical (bit for bit) to those of the sparsified model the masks came from.
    ``pretrained`` itself is not changed; a stored head is not applied (see
    :func:`load_sparse_task`).

    Parameters
    ----------
    pretrained : torch.nn.Module
        The pretrained Hugging Face encoder, whose parameter names the masks use.
    stored : StoredMask or dict of str to torch.Tensor
        The masks: a :class:`StoredMask` (from :func:`load_mask`), or parameter name -> mask of
        that weight's shape (out, in), 1 = kept.
    check_fingerprint : bool
        Refuse masks learned on another pretrained model (when ``stored`` records a fingerprint;
        a plain dict records none).

    Returns
    -------
    torch.nn.Module
        The masked copy of ``pretrained``.

    Raises
    ------
    ConfigError
        When a mask names a parameter the model does not have, a mask's shape differs from its
        weight's, or (``check_fingerprint``) the masks were learned on another pretrained model.
    """
    from ..modeling.models import model_fingerprint
    masks = stored.masks if isinstance(stored, StoredMask) else stored
    params = dict(pretrained.named_parameters())
    missing = [n for n in masks if n not in params]
    if missing:
        raise bad("mask", missing[:5], "every masked weight must be a parameter of the pretrained "
                  "model; e.g. " + ", ".join(list(params)[:4]) + " ...")
    shapes = [f"{n}: mask {tuple(m.shape)} vs weight {tuple(params[n].shape)}"
              for n, m in masks.items() if tuple(m.shape) != tuple(params[n].shape)]
    if shapes:
        raise ConfigError("the masks do not fit this model's weights: " + "; ".join(shapes[:5]))
    fp = getattr(stored, "fingerprint", None)
    if check_fingerprint and fp and model_fingerprint(pretrained) != fp:
        raise ConfigError(f"the masks were learned on a pretrained model with fingerprint {fp}, "
                          f"not this one ({model_fingerprint(pretrained)}); pass the same pretrained "
                          "model, or check_fingerprint=False")
    model = copy.deepcopy(pretrained)
    if hasattr(model, "_bertdims_fingerprint"):
        del model._bertdims_fingerprint
    new = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            new[name].mul_(mask.to(new[name].device, new[name].dtype))
    return model


def storage_sizes(model: nn.Module, saved: dict[str, int],
                  masks: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
    """Bytes of a task stored as masks against a full fp32 checkpoint of the classifier.

    ``saved`` is the output of :func:`save_mask`; ``masks`` the saved masks (by default those
    of the model's :class:`MaskedLinear` modules). Returns the byte counts and the ratios
    ``mask / masked weights in fp32`` (1/32 up to byte padding) and ``task / full checkpoint``.
    """
    mods = masked_modules(model)
    if masks is None:
        n_masked = sum(m.weight.numel() for m in mods.values())
    else:
        n_masked = sum(m.numel() for m in masks.values())
    n_all = sum(p.numel() for p in model.parameters() if p is not None) - sum(
        m.scores.numel() for m in mods.values())
    task_bytes = saved["mask_bytes"] + saved["head_bytes"] + saved["index_bytes"]
    return {**saved, "masked_weights": n_masked, "masked_weights_fp32_bytes": 4 * n_masked,
            "full_checkpoint_fp32_bytes": 4 * n_all, "task_bytes": task_bytes,
            "mask_over_weights": saved["mask_bytes"] / (4 * n_masked) if n_masked else float("nan"),
            "task_over_checkpoint": task_bytes / (4 * n_all)}


# ------------------------------------------------------------------------------ fixed masks
def _n_keep(numel: int, sparsity: float) -> int:
    """Entries a mask keeps: the same rounding as :class:`MaskedLinear`."""
    return numel - int(round(sparsity * numel))


def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Bool mask (same shape as ``weight``) keeping the ``1 - sparsity`` fraction of entries
    with the largest ``|W|``: magnitude pruning, the mask the learned scores start from."""
    n_keep = _n_keep(weight.numel(), sparsity)
    mask = torch.zeros(weight.numel(), dtype=torch.bool)
    mask[torch.topk(weight.detach().abs().flatten().cpu(), n_keep, sorted=False).indices] = True
    return mask.reshape(weight.shape)


def random_mask(weight: torch.Tensor, sparsity: float, generator: torch.Generator) -> torch.Tensor:
    """Bool mask keeping a uniformly random ``1 - sparsity`` fraction of the entries."""
    n_keep = _n_keep(weight.numel(), sparsity)
    mask = torch.zeros(weight.numel(), dtype=torch.bool)
    mask[torch.randperm(weight.numel(), generator=generator)[:n_keep]] = True
    return mask.reshape(weight.shape)


def fixed_masks(encoder: nn.Module, config: SparseConfig) -> dict[str, torch.Tensor]:
    """The masks of a run that does not learn them: parameter name -> bool (out, in), for the
    matrices ``config`` masks. ``magnitude`` (and ``learned`` at sparsity 0: all kept) does not
    depend on the seed; ``random`` draws from its own generator seeded by ``config.seed``, so
    it leaves the global random state (dropout, the head's initialisation) untouched."""
    params = dict(encoder.named_parameters())
    gen = torch.Generator().manual_seed(int(config.seed))
    out = {}
    for name in maskable_weights(encoder, config.layers, config.weights).values():
        w = params[name]
        out[name] = (random_mask(w, config.sparsity, gen) if config.mask == "random"
                     else magnitude_mask(w, config.sparsity))
    return out


# ------------------------------------------------------------------------------ training
@dataclass
class SparseTraining:
    """What :func:`train_sparse` returns: the classifier, ``metrics`` ({split: {metric:
    value}}), ``history`` (the engine's columns: one row per evaluation), ``steps`` (training
    loss per step; empty for head-only runs), ``info`` (steps, checkpoint rule, sizes,
    seconds) and ``predictions`` ({split: (predictions (N,), labels (N,))})."""

    model: nn.Module
    metrics: dict
    history: pd.DataFrame
    steps: pd.DataFrame
    info: dict
    predictions: dict


def build_sparse_classifier(config: SparseConfig, device: str | torch.device = "cpu"):
    """The classifier (:class:`bertdims.train.heads.SelectiveClassifier`) over the pretrained
    encoder: with :class:`MaskedLinear` matrices whose scores train (a learned mask), or with
    the fixed mask applied to the weights (magnitude, random, sparsity 0) and every encoder
    parameter frozen. The random state is consumed as the engine does (seed, then the
    backbone, then the head), so the head starts where the reference's head starts."""
    from accelerate.utils import set_seed
    from transformers import AutoTokenizer

    from .heads import SelectiveClassifier, load_backbone
    from ..modeling.models import quiet_transformers, resolve_model
    from ..data.tasks import get_task
    path = resolve_model(config.model)
    set_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(path)
    with quiet_transformers():
        encoder = load_backbone(path)
    config.validate(int(encoder.config.num_hidden_layers))
    if not config.trains_mask:
        encoder = apply_mask(encoder, fixed_masks(encoder, config), check_fingerprint=False)
    clf = SelectiveClassifier(encoder, tokenizer, config.reference(), get_task(config.task))
    if config.trains_mask:
        sparsify(clf.encoder, config.sparsity, config.layers, config.weights)
    else:
        for p in clf.encoder.parameters():
            p.requires_grad_(False)
    return clf.to(device)


def _splits(config: SparseConfig, task, tokenizer, data):
    """Encoded splits: the engine's (:func:`bertdims.train.finetuning.prepare_splits` with the
    reference's sizes and checkpoint rule), or ``data`` (split -> ``datasets.Dataset``)."""
    from .training import encode_split
    if data is None:
        data = _ft.prepare_splits(task, max_train_samples=config.max_train_samples,
                                        max_eval_samples=config.max_eval_samples,
                                        early_stopping_fraction=config.early_stopping_fraction)
    return {name: encode_split(task, ds, tokenizer, config.max_seq_len) for name, ds in data.items()}


def train_sparse(config: SparseConfig, *, data=None, checkpoints: str | Path | None = None
                 ) -> SparseTraining:
    """Train one sparse run with the reference's recipe (:meth:`SparseConfig.reference`).

    * Learned mask: the engine's loop, with the mask scores in place of the weights: the
      same examples in the same batches (``batch_size``, the engine's epoch order), the same
      number of steps (``epochs``), slanted triangular schedule (``warmup``), head learning
      rate and weight decay, gradient clipping, head input statistics, evaluation points and
      checkpoint rule (final state, or lowest development loss when
      ``early_stopping_fraction`` > 0). Scores peak at ``score_lr``, without weight decay.
    * Fixed mask (magnitude, random, or sparsity 0): no encoder parameter trains, so the head
      is trained by the engine's own head-only loop on features computed once
      (``frozen_epochs``), as for any frozen encoder.

    ``data`` overrides the engine's splits (a mapping split -> ``datasets.Dataset``).
    ``checkpoints``: a folder for resumable checkpoints of a learned mask (the engine's rule:
    at each evaluation, or every ``checkpoint_every`` steps); a run killed part-way and started
    again with the same folder resumes from its last checkpoint to the same result.
    """
    from ..core.device import pick_device, pick_precision
    from ..data.tasks import get_task
    from .training import Collator
    ft = _ft
    task = get_task(config.task)
    device = pick_device(config.device)
    precision = pick_precision(config.precision, device)
    acc = accelerator(device)
    device = run_device(acc, device)
    clf = build_sparse_classifier(config, device)
    enc = _splits(config, task, clf.tokenizer, data)
    train = enc["train"]
    collate = Collator(clf.tokenizer.pad_token_id or 0, task.is_regression)
    ref = config.reference() if config.trains_mask else config.reference(freeze=clf.num_layers)
    eval_bs = max(2 * ref.micro_batch_size, 32)
    monitor = "dev" if "dev" in enc else "validation"
    steps_per_epoch = math.ceil(len(train) / ref.batch_size)
    epochs = ref.epochs if config.trains_mask else ref.frozen_epochs
    total = max(1, math.ceil(epochs * steps_per_epoch))
    eval_every = ft._eval_every(ref, steps_per_epoch, total)
    info = {"n_train": len(train), "n_dev": len(enc["dev"]) if "dev" in enc else 0,
            "checkpoint_rule": "best_dev_loss" if "dev" in enc else "final",
            "monitor_split": monitor if monitor in enc else None, "sparse_version": SPARSE_VERSION,
            "precision": precision, "total_steps": total, "steps_per_epoch": steps_per_epoch,
            "epochs_run": epochs, "batch_size": ref.batch_size, "mask": config.mask,
            "trains_mask": config.trains_mask}
    if not config.trains_mask:
        core, metrics, history, info, preds = ft._train_frozen(
            ref, task, clf, enc, collate, eval_bs, device, precision, total, steps_per_epoch,
            eval_every, monitor, info, False)
        return SparseTraining(core.eval(), metrics, history, pd.DataFrame(columns=["step", "loss", "lr"]),
                              info, preds)
    return _train_learned(config, ref, task, clf, enc, collate, eval_bs, acc, precision, total,
                          steps_per_epoch, eval_every, monitor, info,
                          None if checkpoints is None else Path(checkpoints))


def _sparse_optimizer(clf, config: SparseConfig, ref) -> torch.optim.AdamW:
    """AdamW over the mask scores (``score_lr``, no weight decay) and the head (the engine's
    head learning rate; weight decay on its weights, not its biases, as the engine does)."""
    from .training import layer_lrs
    head_lr = layer_lrs(ref, clf.num_layers)["head"]
    scores = [m.scores for m in masked_modules(clf).values()]
    decay = [p for n, p in clf.head.named_parameters() if not n.endswith("bias")]
    no_decay = [p for n, p in clf.head.named_parameters() if n.endswith("bias")]
    groups = [{"params": scores, "lr": config.score_lr, "weight_decay": 0.0, "layer": "scores"},
              {"params": decay, "lr": head_lr, "weight_decay": ref.weight_decay, "layer": "head"},
              {"params": no_decay, "lr": head_lr, "weight_decay": 0.0, "layer": "head"}]
    return torch.optim.AdamW(groups, betas=(0.9, 0.999), eps=1e-8)


def _after_step(step: int) -> None:
    """Called after every optimizer step of a learned mask (tests replace it to stop a run)."""


def _train_learned(config, ref, task, clf, enc, collate, eval_bs, acc, precision, total,
                   steps_per_epoch, eval_every, monitor, info, ckpt_dir: Path | None = None
                   ) -> SparseTraining:
    """The engine's loop and step (:func:`bertdims.train.loop.run_loop`) with the mask scores and the
    head training; with ``ckpt_dir``, the engine's resumable checkpoints (the per-step losses
    ride along)."""
    from .training import slanted_triangular
    ft = _ft
    device, train = ft._device_of(clf), enc["train"]
    feats = ft._features_of(clf, train, collate, eval_bs, device, precision,
                           train_layers=set(range(clf.num_layers + 1)))   # all in training mode
    clf.head.fit_stats(feats, ft._labels_tensor(task, train) if task.is_regression else None)
    del feats
    optimizer = _sparse_optimizer(clf, config, ref)
    scheduler = slanted_triangular(optimizer, total, ref.warmup)
    model = acc.prepare(clf)
    optimizer = acc.prepare(optimizer)
    head_group = 1
    state, steps = LoopState(), []
    cfg = _key_config(config)
    if ckpt_dir is not None:
        state = load_checkpoint(ckpt_dir, cfg, clf, optimizer, scheduler) or state
        if state.step and (ckpt_dir / STEPS_FILE).exists():
            steps = [row for row in json.loads((ckpt_dir / STEPS_FILE).read_text())
                     if row["step"] <= state.step]
    train_step = ft._train_step(acc, model, clf, train, collate, ref, task, steps_per_epoch,
                                device, precision)

    def evaluate(state: LoopState) -> None:
        ft._evaluate_step(state, acc, clf, enc.get(monitor), monitor == "dev", task, collate,
                          eval_bs, precision, ref, steps_per_epoch, head_group, optimizer)
        clf.train()

    def clip() -> None:
        acc.clip_grad_norm_(model.parameters(), ref.max_grad_norm)

    def on_step(step: int, loss_sum, count: int, lr: float) -> None:
        steps.append({"step": step, "loss": float(loss_sum) / count, "lr": lr})

    def checkpoint(state: LoopState) -> None:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(ckpt_dir / STEPS_FILE, steps)     # before the commit point
        save_checkpoint(ckpt_dir, cfg, state, clf, optimizer, scheduler, acc)

    t0 = time.perf_counter()
    clf.train()
    run_loop(state, total, train_step=train_step, optimizer=optimizer, scheduler=scheduler,
             clip=clip if ref.max_grad_norm is not None else None, evaluate=evaluate,
             eval_every=eval_every, checkpoint=None if ckpt_dir is None else checkpoint,
             checkpoint_every=ref.checkpoint_every, on_step=on_step,
             after_step=lambda step: _after_step(step), device=device)
    seconds = time.perf_counter() - t0
    restore_best(state, clf)
    clf.eval()
    outputs = {s: ft._outputs_sharded(acc, clf, enc[s], collate, eval_bs, precision)
               for s in enc if s not in ("train", "dev")}
    metrics, preds = ft._score_outputs(task, outputs, enc)
    history = pd.DataFrame(state.history, columns=ft._history_columns(task))
    info.update({"steps": state.step, "best_step": state.best_step if "dev" in enc else state.step,
                 "stopped_early": bool(state.stopped and state.step < total),
                 "train_seconds": seconds})
    return SparseTraining(clf, metrics, history, pd.DataFrame(steps), info, preds)


def _key_config(config: SparseConfig) -> dict:
    return {**config.to_dict(), "sparse_version": SPARSE_VERSION}


def sparse_finetune(config: SparseConfig, store=None, *, force: bool = False):
    """Run (or read back) one sparse fine-tuning.

    Trains with :func:`train_sparse` and stores the task as masks. The run is cached in the store
    under its config, so a second call reads it back; while one process trains a key, the others
    wait and then read it. A learned mask is checkpointed along the way, so a run killed part-way
    resumes from its last checkpoint.

    Parameters
    ----------
    config : SparseConfig
        What to run.
    store : ResultStore, optional
        Where the run is cached; None keeps nothing
        (:func:`bertdims.core.store.store_or_temporary`).
    force : bool
        Train again even when the run is stored.

    Returns
    -------
    StoredRun
        Its folder holds the task as masks (:func:`load_mask` reads it) and ``pred_<split>.npy``
        / ``label_<split>.npy`` for each evaluation split (per-example predictions and labels,
        shape (N,), in the engine's example order). ``result.json`` has ``metrics`` ({split:
        {metric: value}}), ``info``, ``sizes`` (:func:`storage_sizes`), ``sparsity`` (measured)
        and ``masked_weights`` (parameter names); ``.table("history")`` has the engine's
        evaluation rows and ``.table("steps")`` the training loss per step (no rows when only the
        head trains).

    Raises
    ------
    ConfigError
        When ``config.layers`` or ``config.layer`` names a layer the model does not have.
    """
    from ..modeling.models import fingerprint_of
    from ..core.store import store_or_temporary
    store = store_or_temporary(store)
    kind, cfg = "sparse_finetune", _key_config(config)
    fp = fingerprint_of(config.model)
    key = store.key(kind, cfg, fp)
    hit = None if force else store.get(kind, key)
    if hit is not None:
        return hit
    with store.lock(kind, key) as waited:      # one process trains a key; the others read it
        hit = store.get(kind, key) if waited or not force else None
        if hit is not None:
            return hit
        return _train_and_store(config, store, kind, cfg, fp, key)


def _train_and_store(config: SparseConfig, store, kind: str, cfg: dict, fp: str, key: str):
    ckpt_dir = store.root / kind / ".checkpoints" / key
    t0 = time.perf_counter()
    _progress.run_started(kind, key, cfg)
    with store.writing(kind, cfg, fp, key=key) as folder:
        res = train_sparse(config, checkpoints=ckpt_dir)
        clf = res.model
        masks = extract_mask(clf) if config.trains_mask else fixed_masks(clf.encoder, config)
        saved = save_mask(masks, folder, head_state=clf.head.state_dict(), config=config.to_dict(),
                          fingerprint=fp)
        measured = StoredMask(masks).sparsity
        arrays = {}
        for split, (p, y) in res.predictions.items():
            arrays[f"pred_{split}"], arrays[f"label_{split}"] = np.asarray(p), np.asarray(y)
        write_payload(folder, {"metrics": res.metrics, "info": {**res.info,
                                                                "seconds": time.perf_counter() - t0},
                               "sizes": storage_sizes(clf, saved, masks),
                               "sparsity": measured, "history": res.history, "steps": res.steps,
                               "masked_weights": list(masks), **arrays})
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    _progress.run_finished(kind, key, time.perf_counter() - t0, cached=False)
    return store.get(kind, key)


def load_sparse_task(folder: str | Path, pretrained: nn.Module | None = None, device="cpu"):
    """A plain classifier from a stored task: the masked pretrained encoder and the stored head.

    The masks are applied with :func:`apply_mask`; the classifier is built with the stored
    config's recipe (:meth:`SparseConfig.reference`) and task.

    Parameters
    ----------
    folder : str or Path
        A folder written by :func:`save_mask` with a stored :class:`SparseConfig`, e.g. the
        ``path`` of a :func:`sparse_finetune` run.
    pretrained : torch.nn.Module, optional
        The pretrained encoder to mask; None loads the model named in the stored config.
    device : str or torch.device
        Where the classifier is placed (default ``"cpu"``).

    Returns
    -------
    bertdims.train.heads.SelectiveClassifier
        The classifier, in eval mode.

    Raises
    ------
    ConfigError
        When ``folder`` holds no stored mask, or the masks do not fit ``pretrained`` (names,
        shapes, or the fingerprint of another pretrained model).
    """
    from transformers import AutoTokenizer

    from .heads import SelectiveClassifier, load_backbone
    from ..modeling.models import quiet_transformers, resolve_model
    from ..data.tasks import get_task
    stored = load_mask(folder)
    config = SparseConfig.from_dict(stored.config)
    path = resolve_model(config.model)
    if pretrained is None:
        with quiet_transformers():
            pretrained = load_backbone(path)
    clf = SelectiveClassifier(apply_mask(pretrained, stored), AutoTokenizer.from_pretrained(path),
                              config.reference(), get_task(config.task))
    clf.head.load_state_dict(stored.head_state)
    return clf.to(device).eval()


# ------------------------------------------------------------------------------ the study
FULL, FROZEN = "full fine-tuning", "pretrained (sparsity 0)"
#: The setting name of each kind of mask, as the study's tables and charts call it.
SETTINGS = {"learned": "learned mask", "magnitude": "magnitude mask", "random": "random mask"}


@dataclass
class SparseStudy(RunsResult):
    """Everything :func:`sparse_study` ran, read back from the store, with the shape of every
    result (:mod:`bertdims.core.result`): ``config`` (the base :class:`SparseConfig`),
    ``metrics`` and ``paths`` of ``runs`` (keyed ``(setting, sparsity, seed)``), ``tables``
    (``scores``, ``histories``).

    ``scores``: one row per run and evaluation split (``setting, sparsity, seed, split``, the
    task's metrics, ``steps``, ``seconds``); ``histories``: the engine's evaluation rows of
    every run (``setting, sparsity, seed, step, epoch, train_loss, dev_loss, dev_<metric>``);
    ``predictions``: (setting, sparsity) -> test predictions (S, N), one row per seed in the
    order of ``seeds``; ``labels``: the test labels (N,); ``metric``: the task's headline metric.
    """

    scores: pd.DataFrame
    histories: pd.DataFrame
    predictions: dict
    labels: np.ndarray
    metric: str
    seeds: list
    runs: dict = field(default_factory=dict, repr=False)
    config: Any = None


def _check_sparsities(sparsities) -> list[float]:
    if not isinstance(sparsities, (list, tuple)) or not sparsities:
        raise bad("sparsities", sparsities, "expected a non-empty list of numbers in [0, 1)")
    for s in sparsities:
        check_range("sparsities", s, 0.0, 1.0, high_open=True)
    return [float(s) for s in sparsities]


def _study_runs(base: SparseConfig, sparsities, seeds, control_sparsity) -> list[tuple]:
    """(setting, sparsity, seed, config or None for full fine-tuning) of every run."""
    runs = []
    for seed in seeds:
        runs.append((FULL, 0.0, seed, None))
        runs.append((FROZEN, 0.0, seed, base.replace(sparsity=0.0, mask="learned", seed=seed)))
        for s in sparsities:
            if s > 0:
                runs.append((SETTINGS["learned"], s, seed,
                             base.replace(sparsity=s, mask="learned", seed=seed)))
        if control_sparsity is not None:
            for mask in ("magnitude", "random"):
                runs.append((SETTINGS[mask], control_sparsity, seed,
                             base.replace(sparsity=control_sparsity, mask=mask, seed=seed)))
    return runs


def sparse_study(base: SparseConfig, sparsities: Sequence[float], seeds: Sequence[int], *,
                 control_sparsity: float | None = None, store=None, split: str = "test") -> SparseStudy:
    """Run (or read back) the sparse fine-tuning study, every run with ``base``'s recipe.

    Per seed: full fine-tuning (the engine, :meth:`SparseConfig.reference`); the pretrained
    encoder with a trained head (sparsity 0); a learned mask at each sparsity > 0 of
    ``sparsities``; and, at ``control_sparsity``, the two fixed-mask controls (magnitude and
    random: the head trains, the mask does not). Each run is cached in the store.

    Parameters
    ----------
    base : SparseConfig
        The recipe, masked layers and matrices, and ``score_lr`` of every run; its ``sparsity``,
        ``mask`` and ``seed`` are set per run.
    sparsities : sequence of float
        Sparsities of the learned masks, in [0, 1); a 0 adds nothing, as the sparsity-0 run is
        part of every study.
    seeds : sequence of int
        The seeds; each gets every setting.
    control_sparsity : float, optional
        Sparsity, in (0, 1), of the magnitude and random masks; None: no controls.
    store : ResultStore, optional
        Where the runs are cached; None keeps nothing
        (:func:`bertdims.core.store.store_or_temporary`).
    split : str
        The evaluation split whose predictions and labels are collected (default ``"test"``);
        ``scores`` has every split.

    Returns
    -------
    SparseStudy
        ``scores``: one row per run and evaluation split, with columns ``setting`` (``full
        fine-tuning``, ``pretrained (sparsity 0)``, ``learned mask``, ``magnitude mask``,
        ``random mask``), ``sparsity``, ``seed``, ``split``, the task's metrics, ``steps`` and
        ``seconds``; ``histories``: every run's evaluation rows with ``setting, sparsity, seed``;
        ``predictions``: (setting, sparsity) -> predictions on ``split``, array (S, N), one row
        per seed in the order of ``seeds``; ``labels``: the labels (N,); ``metric``: the task's
        headline metric; ``seeds``; ``runs``: (setting, sparsity, seed) -> the stored run.

    Raises
    ------
    ConfigError
        When ``sparsities`` is empty or has a value outside [0, 1), ``seeds`` is not a non-empty
        list, ``control_sparsity`` is outside (0, 1), or two runs were scored on different
        examples of ``split``.
    """
    from ..modeling.models import quiet_transformers
    from ..data.tasks import get_task
    sparsities = _check_sparsities(sparsities)
    if not isinstance(seeds, (list, tuple)) or not seeds:
        raise bad("seeds", seeds, "expected a non-empty list of integers >= 0")
    if control_sparsity is not None:
        check_range("control_sparsity", control_sparsity, 0.0, 1.0, low_open=True, high_open=True)
    ft = _ft
    metric = get_task(base.task).metric
    rows, hists, preds, labels, runs = [], [], {}, None, {}
    from .executor import ensure_runs
    asked = _study_runs(base, sparsities, seeds, control_sparsity)
    ensure_runs([base.replace(seed=int(seed)).reference() if cfg is None else cfg    # on a cluster
                 for _, _, seed, cfg in asked], store, keep_model=False)
    for setting, sparsity, seed, cfg in asked:
        if cfg is None:
            with quiet_transformers():
                run = ft.finetune(base.replace(seed=int(seed)).reference(), store=store, progress=False,
                                  keep_model=False)          # only its scores are read
            metrics, history, info = run.metrics, run.history, run.info
            pred, lab = run.predictions(split), run.labels(split)
        else:
            run = sparse_finetune(cfg, store)
            res = run.json()
            metrics, history, info = res["metrics"], run.table("history"), res["info"]
            pred, lab = run.array(f"pred_{split}"), run.array(f"label_{split}")
        if labels is None:
            labels = np.asarray(lab)
        elif not np.array_equal(labels, lab):
            raise ConfigError(f"the {setting} run (seed {seed}) was scored on other {split} examples "
                              "than the first run; every run must use the same max_eval_samples")
        runs[(setting, sparsity, seed)] = run
        preds.setdefault((setting, sparsity), []).append(np.asarray(pred))
        for sp, ms in metrics.items():
            rows.append({"setting": setting, "sparsity": sparsity, "seed": int(seed), "split": sp,
                         **ms, "steps": info.get("steps"),
                         "seconds": info.get("seconds", info.get("train_seconds_this_call"))})
        hists.append(history.assign(setting=setting, sparsity=sparsity, seed=int(seed)))
    return SparseStudy(scores=pd.DataFrame(rows), histories=pd.concat(hists, ignore_index=True),
                       predictions={k: np.stack(v) for k, v in preds.items()}, labels=labels,
                       metric=metric, seeds=[int(s) for s in seeds], runs=runs, config=base)


def sparse_effects(study: SparseStudy, *, sparsity: float, margin: float,
                   control_margin: float = 0.0, match_claim: str = "equivalent",
                   n_boot: int = 2000) -> dict:
    """The chapter's comparisons, each an effect on the test predictions paired by seed and example.

    Each comparison is a :class:`bertdims.core.stats.Effect` from :func:`bertdims.core.stats.paired_effect`
    (difference scale) on the study's predictions:

    * ``"match"``: the learned mask at ``sparsity`` against full fine-tuning (``match_claim``,
      ``margin``): the paper's "sparse models achieve comparable results";
    * ``"vs magnitude"``, ``"vs random"``: the learned mask against the fixed magnitude and random
      masks at the same sparsity (``better``, ``control_margin``): does learning the mask matter,
      or would any mask of that sparsity do;
    * ``"vs pretrained"``: the learned mask against the pretrained encoder with a trained head
      (``better``, ``control_margin``): does the mask add to what the head learns alone;
    * ``"sparsity <s>"`` for every other learned sparsity: against full fine-tuning
      (``match_claim``, ``margin``), for the curve; not a verdict on its own.

    Comparisons whose runs are not in the study are left out.

    Parameters
    ----------
    study : SparseStudy
        The output of :func:`sparse_study`.
    sparsity : float
        The learned sparsity of the verdicts; one of the study's learned sparsities.
    margin : float
        Margin of the comparisons with full fine-tuning, on the metric's difference scale.
    control_margin : float
        Margin of the comparisons with the controls (default 0).
    match_claim : str
        Claim of the comparisons with full fine-tuning (default ``"equivalent"``).
    n_boot : int
        Bootstrap replicates of each interval.

    Returns
    -------
    dict of str to Effect
        Comparison name (as listed above) -> :class:`bertdims.core.stats.Effect`.

    Raises
    ------
    ConfigError
        When ``sparsity`` is not one of the learned sparsities run, or a claim or margin is not
        valid for :func:`bertdims.core.stats.paired_effect`.
    """
    from ..core.stats import paired_effect
    p, y, m = study.predictions, study.labels, study.metric
    learned = (SETTINGS["learned"], float(sparsity))
    if learned not in p:
        raise bad("sparsity", sparsity, "the verdict sparsity must be one of the learned "
                  "sparsities run: " + ", ".join(f"{s:g}" for (k, s) in p if k == SETTINGS["learned"]))
    out = {}

    def effect(a, b, claim, marg, label):
        return paired_effect(p[a], p[b], y, metric=m, claim=claim, margin=marg, label=label,
                             n_boot=n_boot)

    out["match"] = effect(learned, (FULL, 0.0), match_claim, margin,
                          f"learned mask ({sparsity:g}) - full fine-tuning")
    for mask in ("magnitude", "random"):
        key = (SETTINGS[mask], float(sparsity))
        if key in p:
            out[f"vs {mask}"] = effect(learned, key, "better", control_margin,
                                       f"learned mask - {mask} mask ({sparsity:g})")
    out["vs pretrained"] = effect(learned, (FROZEN, 0.0), "better", control_margin,
                                  "learned mask - pretrained encoder, head only")
    for setting, s in sorted(p):
        if setting == SETTINGS["learned"] and s != float(sparsity):
            out[f"sparsity {s:g}"] = effect((setting, s), (FULL, 0.0), match_claim, margin,
                                            f"learned mask ({s:g}) - full fine-tuning")
    return out


def sparse_summary(scores: pd.DataFrame, metric: str, split: str = "test") -> pd.DataFrame:
    """Mean and standard deviation over seeds of ``metric``, per setting and sparsity.

    Parameters
    ----------
    scores : pandas.DataFrame
        :attr:`SparseStudy.scores`: one row per run and split, with the columns ``setting``,
        ``sparsity``, ``split`` and ``metric``.
    metric : str
        The metric column to summarise, e.g. :attr:`SparseStudy.metric`.
    split : str
        The evaluation split (default ``"test"``).

    Returns
    -------
    pandas.DataFrame
        One row per setting and sparsity, in the order they first appear; columns ``setting,
        sparsity, mean, sd, seeds`` (``sd`` is NaN for a single seed).
    """
    d = scores[scores["split"] == split]
    g = d.groupby(["setting", "sparsity"], sort=False)[metric]
    return g.agg(mean="mean", sd="std", seeds="size").reset_index()


def study_seconds(scores: pd.DataFrame) -> pd.DataFrame:
    """Seconds per run (as measured when it was computed), mean per setting: for estimating
    what a larger preset costs. ``scores``: :attr:`SparseStudy.scores`."""
    d = scores.drop_duplicates(["setting", "sparsity", "seed"])
    return d.groupby(["setting", "sparsity"], sort=False)["seconds"].agg(["mean", "size"]).reset_index()


def storage_table(run) -> pd.DataFrame:
    """What a task stored as a mask costs, from a stored :func:`sparse_finetune` run.

    Parameters
    ----------
    run : StoredRun
        A run of :func:`sparse_finetune` (its ``sizes``, from :func:`storage_sizes`, are read).

    Returns
    -------
    pandas.DataFrame
        Six rows: the bit-packed mask, its index, the classifier head, the task in all (mask,
        index and head), the masked weights in fp32, and a full fp32 checkpoint of encoder and
        head; columns ``item``, ``bytes`` and ``vs full checkpoint`` (the fraction of the full fp32
        checkpoint).
    """
    z = run.json()["sizes"]
    full = z["full_checkpoint_fp32_bytes"]
    rows = [("mask, bit-packed (1 bit per masked weight)", z["mask_bytes"]),
            ("mask index (names, shapes; JSON)", z["index_bytes"]),
            ("classifier head", z["head_bytes"]),
            ("task in all (mask + index + head)", z["task_bytes"]),
            ("the masked weights in fp32", z["masked_weights_fp32_bytes"]),
            ("full fp32 checkpoint (encoder + head)", full)]
    return pd.DataFrame([{"item": k, "bytes": int(v), "vs full checkpoint": v / full} for k, v in rows])


def verify_stored_task(run, store=None) -> dict:
    """Check that a stored task, rebuilt from its mask, scores what the run scored.

    Rebuilds the classifier from the stored task (pretrained model + :func:`apply_mask` + head,
    :func:`load_sparse_task`) and evaluates it in fp32 on the same evaluation examples, for every
    split the run has metrics for. The evaluation is cached in the store.

    Parameters
    ----------
    run : StoredRun
        A run of :func:`sparse_finetune`.
    store : ResultStore, optional
        Where the evaluation is cached; None keeps nothing
        (:func:`bertdims.core.store.store_or_temporary`).

    Returns
    -------
    dict
        ``{"stored": the run's metrics, "reloaded": the metrics recomputed, "identical": bool}``,
        metrics as {split: {metric: value}}.
    """
    from .finetuning import prepare_splits
    from ..core.store import store_or_temporary
    from ..data.tasks import get_task
    from .training import evaluate, make_loader
    store = store_or_temporary(store)
    config = SparseConfig.from_dict(json.loads((Path(run.path) / CONFIG_FILE).read_text()))

    def compute() -> dict:
        from ..core.device import pick_device
        task, device = get_task(config.task), pick_device(config.device)
        clf = load_sparse_task(run.path, device=device)
        data = prepare_splits(task, max_train_samples=config.max_train_samples,
                              max_eval_samples=config.max_eval_samples,
                              early_stopping_fraction=config.early_stopping_fraction)
        reloaded = {split: evaluate(clf, make_loader(task, data[split], clf.tokenizer, batch_size=64,
                                                     max_seq_len=config.max_seq_len),
                                    task, device, precision="fp32")
                    for split in run.json()["metrics"]}
        return {"reloaded": reloaded}

    res = store.cached("sparse_reload", {"run": run.meta["key"], "config": config.to_dict()}, compute,
                       fingerprint=run.meta.get("fingerprint")).json()
    stored = run.json()["metrics"]
    return {"stored": stored, "reloaded": res["reloaded"], "identical": stored == res["reloaded"]}


# ------------------------------------------------------------------------------ older names
def sparsity_sweep(base: SparseConfig, sparsities: Sequence[float], seeds: Sequence[int],
                   store=None) -> pd.DataFrame:
    """The learned-mask rows of :func:`sparse_study` (kept for the older namespace).

    Runs (or reads back) :func:`sparse_study` without controls, which includes the full
    fine-tuning and sparsity-0 runs, and keeps the learned masks' rows.

    Parameters
    ----------
    base, sparsities, seeds, store :
        As for :func:`sparse_study`.

    Returns
    -------
    pandas.DataFrame
        The rows of :attr:`SparseStudy.scores` with setting ``learned mask``: one row per learned
        sparsity > 0, seed and split, with the columns of :attr:`SparseStudy.scores`.
    """
    scores = sparse_study(base, sparsities, seeds, store=store).scores
    return scores[scores["setting"] == SETTINGS["learned"]].reset_index(drop=True)


def sparse_vs_full(base: SparseConfig, sparsities: Sequence[float], seeds: Sequence[int],
                   store=None) -> pd.DataFrame:
    """:attr:`SparseStudy.scores` of :func:`sparse_study` without controls (older name).

    Parameters
    ----------
    base, sparsities, seeds, store :
        As for :func:`sparse_study`.

    Returns
    -------
    pandas.DataFrame
        One row per run and evaluation split (settings ``full fine-tuning``, ``pretrained
        (sparsity 0)`` and ``learned mask``); columns ``setting, sparsity, seed, split``, the
        task's metrics, ``steps`` and ``seconds``.
    """
    return sparse_study(base, sparsities, seeds, store=store).scores
