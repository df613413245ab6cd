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

Chapter: ``book/10_sparse_finetuning.ipynb``.
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ._validate import ConfigError, ConfigMixin, bad, check_choice, check_range

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
@dataclass
class SparseConfig(ConfigMixin):
    """Sparse fine-tuning of ``model`` on ``task`` (see the module docstring).

    ``layers``: encoder layers 1..L whose matrices are masked (None = all);
    ``weights``: which matrices of those layers (keys of :data:`MATRICES`; None = all six);
    ``sparsity``: fraction of each masked matrix set to zero, in [0, 1).
    ``layer``/``token``/``head``/``head_hidden``/``dropout`` describe the classifier as in
    :class:`bertdims.finetune.FinetuneConfig` (the head reads ``[CLS]`` of the top layer).
    """

    model: str = "embedded"
    task: str = "rotten_tomatoes"
    sparsity: float = 0.1
    layers: list[int] | None = None
    weights: list[str] | None = None
    estimator: str = "topk"
    score_lr: float = 1e-2
    head_lr: float = 1e-3
    epochs: float = 1.0
    batch_size: int = 32
    warmup: float = 0.1
    max_train_samples: int | None = 1000
    max_eval_samples: int | None = 500
    max_seq_len: int = 64
    seed: int = 0
    layer: int = -1
    token: str = "cls"
    head: str = "linear"
    head_hidden: int = 256
    dropout: float = 0.1
    device: str = "auto"

    dims = None  # the classifier reads all dimensions (SelectiveClassifier asks for it)

    def __post_init__(self):
        from .tokens import check_token
        check_range("sparsity", self.sparsity, 0.0, 1.0, high_open=True)
        check_choice("estimator", self.estimator, ESTIMATORS)
        if self.layers is not None:
            if not isinstance(self.layers, (list, tuple)) or not self.layers or not all(
                    isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in self.layers):
                raise bad("layers", self.layers, "expected None (all encoder layers) or a non-empty "
                          "list of layer numbers 1..L")
            self.layers = sorted(set(self.layers))
        if self.weights is not None:
            if isinstance(self.weights, str):
                self.weights = [self.weights]
            unknown = [w for w in self.weights if w not in MATRICES]
            if unknown or not self.weights:
                raise bad("weights", self.weights, "choose from: " + ", ".join(MATRICES)
                          + f" (unknown: {unknown})")
        for name in ("score_lr", "head_lr", "epochs"):
            check_range(name, getattr(self, name), 0, low_open=True)
        check_range("warmup", self.warmup, 0, 1, high_open=True)
        check_range("dropout", self.dropout, 0, 1, high_open=True)
        check_range("batch_size", self.batch_size, 1, integer=True)
        check_range("max_seq_len", self.max_seq_len, 2, integer=True)
        check_range("seed", self.seed, 0, integer=True)
        for name in ("max_train_samples", "max_eval_samples"):
            if getattr(self, name) is not None:
                check_range(name, getattr(self, name), 1, integer=True)
        check_choice("head", self.head, ("linear", "mlp"))
        check_range("layer", self.layer, -1, integer=True)
        if self.layer == 0:
            raise bad("layer", self.layer, "expected -1 (top) or a layer number >= 1")
        check_range("head_hidden", self.head_hidden, 1, integer=True)
        self.token = check_token(self.token)
        from .tasks import get_task
        get_task(self.task)

    def validate(self, num_layers: int) -> None:
        """Layer numbers must exist in a model with ``num_layers`` encoder layers."""
        if self.layers is not None and max(self.layers) > num_layers:
            raise bad("layers", self.layers, f"layers are numbered 1..{num_layers} for model "
                      f"{self.model!r} ({num_layers} encoder layers)")
        if self.layer != -1 and not 1 <= self.layer <= num_layers:
            raise bad("layer", self.layer, f"expected -1 (top) or 1..{num_layers}")


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
        """The current binary mask (out, in), 1 = kept, as float (differentiable in scores)."""
        return _TopKMask.apply(self.scores, self.n_keep)

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
    """A task stored as masks over a pretrained model: parameter name -> bool tensor
    (True = kept), plus the classifier head's state and the run's config."""

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
    """Write a task as bit-packed masks: ``mask.bin`` (``np.packbits`` of each flattened mask,
    byte-aligned per matrix), ``mask.json`` (names, shapes, byte offsets, pretrained
    fingerprint), ``head.pt`` and ``sparse.json``. Returns the byte sizes of the files."""
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
    """Read a task written by :func:`save_mask`."""
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

    Gives outputs identical (bit for bit) to the sparsified model the masks came from. Raises
    ConfigError when a mask names a parameter the model does not have, when shapes differ, or
    (``check_fingerprint``) when the masks were learned on another pretrained model.
    """
    from .models import model_fingerprint
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


def storage_sizes(model: nn.Module, saved: dict[str, int]) -> dict[str, float]:
    """Bytes of a task stored as masks against a full fp32 checkpoint of the classifier.

    ``saved`` is the output of :func:`save_mask`. Returns the byte counts and the ratios
    ``mask / masked weights in fp32`` (1/32 up to byte padding) and ``task / full checkpoint``.
    """
    mods = masked_modules(model)
    n_masked = sum(m.weight.numel() for m in mods.values())
    n_all = sum(p.numel() for p in model.parameters() if p is not None) - sum(
        m.scores.numel() for m in mods.values())
    task_bytes = saved["mask_bytes"] + saved["head_bytes"] + saved["index_bytes"]
    return {**saved, "masked_weights": n_masked, "masked_weights_fp32_bytes": 4 * n_masked,
            "full_checkpoint_fp32_bytes": 4 * n_all, "task_bytes": task_bytes,
            "mask_over_weights": saved["mask_bytes"] / (4 * n_masked) if n_masked else float("nan"),
            "task_over_checkpoint": task_bytes / (4 * n_all)}


# ------------------------------------------------------------------------------ training
def build_sparse_classifier(config: SparseConfig, device: str | torch.device = "cpu"):
    """The classifier (:class:`bertdims.heads.SelectiveClassifier`) over the pretrained encoder
    with the chosen matrices replaced by :class:`MaskedLinear`; only scores and head train."""
    from transformers import AutoTokenizer

    from .heads import SelectiveClassifier, load_backbone
    from .models import resolve_model
    from .tasks import get_task
    from .distances import quiet_transformers
    path = resolve_model(config.model)
    with quiet_transformers():
        encoder = load_backbone(path)
    config.validate(int(encoder.config.num_hidden_layers))
    torch.manual_seed(config.seed)
    clf = SelectiveClassifier(encoder, AutoTokenizer.from_pretrained(path), config, get_task(config.task))
    sparsify(clf.encoder, config.sparsity, config.layers, config.weights)
    return clf.to(device)


def train_sparse(config: SparseConfig, *, data=None):
    """Learn the masks and the head. Returns ``(classifier, metrics, history)``:
    ``metrics`` = {split: {metric: value}} for the task's evaluation splits, ``history`` a
    DataFrame (step, loss, lr, seconds).

    By default the data are those of the fine-tuning engine with the same sizes
    (:func:`bertdims.finetune.prepare_splits`: the same training examples less the 10 % it
    holds out for early stopping, the same evaluation examples); there is no early stopping
    here. ``data`` overrides them (a mapping split -> ``datasets.Dataset``)."""
    from .device import pick_device
    from .tasks import get_task
    from .training import evaluate, make_loader, slanted_triangular

    task = get_task(config.task)
    device = pick_device(config.device)
    clf = build_sparse_classifier(config, device)
    if data is None:  # the same examples as the engine's runs (without its early-stopping dev part)
        from .finetune import prepare_splits
        data = prepare_splits(task, max_train_samples=config.max_train_samples,
                              max_eval_samples=config.max_eval_samples)
    tok = clf.tokenizer
    loader = make_loader(task, data["train"], tok, batch_size=config.batch_size,
                         max_seq_len=config.max_seq_len, shuffle=True, seed=config.seed)
    scores = [m.scores for m in masked_modules(clf).values()]
    groups = [{"params": list(clf.head.parameters()), "lr": config.head_lr, "weight_decay": 0.01}]
    if config.sparsity > 0:
        groups.insert(0, {"params": scores, "lr": config.score_lr, "weight_decay": 0.0})
    else:  # nothing to choose: the mask keeps every weight
        for s in scores:
            s.requires_grad_(False)
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.999))
    total = max(1, math.ceil(config.epochs * len(loader)))
    schedule = slanted_triangular(optimizer, total, config.warmup)
    history, step, start = [], 0, time.time()
    clf.train()
    while step < total:
        for batch in loader:
            inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids")
                      if k in batch}
            logits = clf(**inputs)
            labels = batch["labels"].to(device)
            loss = F.mse_loss(logits[:, 0], labels) if task.is_regression else F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            history.append({"step": step, "loss": loss.item(), "lr": schedule.get_last_lr()[-1]})
            step += 1
            if step >= total:
                break
    clf.eval()
    metrics = {}
    for split in task.eval_splits:
        if split in data:
            ev = make_loader(task, data[split], tok, batch_size=64, max_seq_len=config.max_seq_len)
            metrics[split] = evaluate(clf, ev, task, device, precision="fp32")
    train_s = time.time() - start
    return clf, metrics, pd.DataFrame(history).assign(seconds=train_s)


def sparse_finetune(config: SparseConfig, store=None, *, force: bool = False):
    """Run (or read back) one sparse fine-tuning. Returns the ``StoredRun``: its folder holds
    the task as masks (:func:`load_mask` reads it), ``result.json`` has ``metrics``
    ({split: {metric: value}}), ``sizes`` (:func:`storage_sizes`) and ``sparsity`` (measured);
    ``.table("history")`` the training loss per step."""
    from .models import fingerprint_of
    from .store import ResultStore, write_payload
    store = store or ResultStore()
    kind, cfg = "sparse_finetune", config.to_dict()
    fp = fingerprint_of(config.model)
    key = store.key(kind, cfg, fp)
    hit = None if force else store.get(kind, key)
    if hit is not None:
        return hit
    with store.writing(kind, cfg, fp, key=key) as folder:
        clf, metrics, history = train_sparse(config)
        masks = extract_mask(clf)
        saved = save_mask(masks, folder, head_state=clf.head.state_dict(), config=cfg, fingerprint=fp)
        measured = StoredMask(masks).sparsity
        write_payload(folder, {"metrics": metrics, "sizes": storage_sizes(clf, saved),
                               "sparsity": measured, "history": history,
                               "masked_weights": list(masks)})
    return store.get(kind, key)


def load_sparse_task(folder: str | Path, pretrained: nn.Module | None = None, device="cpu"):
    """A plain classifier from a stored task: the pretrained encoder with the masks applied
    (:func:`apply_mask`) and the stored head. ``pretrained`` defaults to the model named in
    the stored config. Returns a :class:`bertdims.heads.SelectiveClassifier` in eval mode."""
    from transformers import AutoTokenizer

    from .heads import SelectiveClassifier, load_backbone
    from .models import resolve_model
    from .tasks import get_task
    stored = load_mask(folder)
    config = SparseConfig.from_dict(stored.config)
    path = resolve_model(config.model)
    from .distances import quiet_transformers
    if pretrained is None:
        with quiet_transformers():
            pretrained = load_backbone(path)
    clf = SelectiveClassifier(apply_mask(pretrained, stored), AutoTokenizer.from_pretrained(path),
                              config, get_task(config.task))
    clf.head.load_state_dict(stored.head_state)
    return clf.to(device).eval()


# ------------------------------------------------------------------------------ sweeps
def sparsity_sweep(base: SparseConfig, sparsities: Sequence[float], seeds: Sequence[int],
                   store=None) -> pd.DataFrame:
    """Sparse fine-tuning for every sparsity and seed (each run cached in the store).
    One row per run and split: ``setting="sparse"``, ``sparsity, seed, split``, the task's
    metrics, ``mask_bytes``, ``task_bytes``, ``full_checkpoint_fp32_bytes``."""
    if not isinstance(sparsities, (list, tuple)) or not sparsities:
        raise bad("sparsities", sparsities, "expected a non-empty list of numbers in [0, 1)")
    for s in sparsities:
        check_range("sparsities", s, 0.0, 1.0, high_open=True)
    rows = []
    for sparsity in sparsities:
        for seed in seeds:
            run = sparse_finetune(base.replace(sparsity=float(sparsity), seed=int(seed)), store)
            res = run.json()
            for split, ms in res["metrics"].items():
                rows.append({"setting": "sparse", "sparsity": float(sparsity), "seed": int(seed),
                             "split": split, **ms,
                             **{k: res["sizes"][k] for k in ("mask_bytes", "task_bytes",
                                                             "full_checkpoint_fp32_bytes")}})
    return pd.DataFrame(rows)


def full_finetuning(base: SparseConfig, seeds: Sequence[int], store=None,
                    lr: float | None = None) -> pd.DataFrame:
    """The reference: standard full fine-tuning (the engine, :func:`bertdims.finetune.finetune`)
    with the same model, task, data sizes and epochs, and the engine's learning rate unless
    ``lr`` is given (so the runs are the ones other chapters store). Same columns as
    :func:`sparsity_sweep` with ``setting="full fine-tuning"`` and ``sparsity=0``."""
    from .distances import _finetune_module
    ft = _finetune_module()
    rows = []
    for seed in seeds:
        extra = {} if lr is None else {"lr": lr}
        cfg = ft.FinetuneConfig(model=base.model, task=base.task, epochs=base.epochs, **extra,
                                max_train_samples=base.max_train_samples,
                                max_eval_samples=base.max_eval_samples,
                                max_seq_len=base.max_seq_len, seed=int(seed))
        from .distances import quiet_transformers
        with quiet_transformers():
            run = ft.finetune(cfg, store=store, progress=False)
        for split, ms in run.metrics.items():
            rows.append({"setting": "full fine-tuning", "sparsity": 0.0, "seed": int(seed),
                         "split": split, **ms})
    return pd.DataFrame(rows)


def sparse_vs_full(base: SparseConfig, sparsities: Sequence[float], seeds: Sequence[int],
                   store=None, lr: float | None = None) -> pd.DataFrame:
    """:func:`sparsity_sweep` and :func:`full_finetuning` in one table."""
    return pd.concat([sparsity_sweep(base, sparsities, seeds, store),
                      full_finetuning(base, seeds, store, lr=lr)], ignore_index=True)


def sparse_summary(df: pd.DataFrame, metric: str, split: str = "test") -> pd.DataFrame:
    """Mean and standard deviation over seeds of ``metric`` per setting and sparsity."""
    d = df[df["split"] == split]
    g = d.groupby(["setting", "sparsity"], sort=False)[metric]
    out = g.agg(mean="mean", sd="std", seeds="size").reset_index()
    return out.sort_values(["setting", "sparsity"], ascending=[False, True], ignore_index=True)


def sparse_findings(df: pd.DataFrame, metric: str, split: str = "test", tolerance: float = 0.01) -> str:
    """The paper's claim on sparsification beside ours, in Markdown; "matches" means a mean
    within ``tolerance`` of full fine-tuning's."""
    s = sparse_summary(df, metric, split)
    full = s[s["setting"] == "full fine-tuning"].iloc[0]
    sp = s[s["setting"] == "sparse"].set_index("sparsity")
    text = ["**Paper** (Radiya-Dixit & Wang): a task can be learned by only zeroing "
            "pretrained weights: masks that set a few per cent up to about 40 % of the weights of "
            "the chosen layers to zero perform comparably to full fine-tuning."]
    spread = "" if pd.isna(full["sd"]) else f" ± {full['sd']:.3f}"
    here = (f"**Here** ({metric}, {split} split, mean{' ± sd' if spread else ''} over "
            f"{int(full['seeds'])} seed(s)): full fine-tuning {full['mean']:.3f}{spread}")
    if 0.0 in sp.index:
        here += f"; the frozen pretrained encoder with a trained head (sparsity 0) {sp.loc[0.0, 'mean']:.3f}"
    text.append(here + ".")
    masked = sp[sp.index > 0]
    if len(masked):
        parts = ", ".join(f"{x:g}: {m:.3f}" for x, m in masked["mean"].items())
        ok = masked[masked["mean"] >= full["mean"] - tolerance]
        text.append(f"Learned masks by sparsity: {parts}. " + (
            f"At sparsity {', '.join(f'{x:g}' for x in ok.index)} the masked model reaches full "
            f"fine-tuning's score (within {tolerance}, or above it), which **agrees** with the paper."
            if len(ok) else
            f"No sparsity tried comes within {tolerance} of full fine-tuning (best "
            f"{masked['mean'].max():.3f} at {masked['mean'].idxmax():g}), so with this training budget "
            "the claim is **not reproduced**."))
        if 0.0 in sp.index:
            gain = masked["mean"].max() - sp.loc[0.0, "mean"]
            text.append(f"The best mask is {gain:+.3f} against the frozen encoder: "
                        + ("learning which weights to zero does add to what the head alone learns."
                           if gain > tolerance else
                           "the mask adds little beyond what the head learns on its own."))
    return "\n\n".join(text)


def storage_table(run) -> pd.DataFrame:
    """What a task stored as a mask costs, from a stored :func:`sparse_finetune` run:
    one row per item with ``bytes`` and ``vs full checkpoint`` (fraction of a full fp32
    checkpoint of encoder and head)."""
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
    """Rebuild the classifier from a stored task (pretrained model + :func:`apply_mask` +
    head) and evaluate it on the same evaluation examples; cached in the store. Returns
    ``{"stored": metrics of the run, "reloaded": metrics recomputed, "identical": bool}``."""
    from .finetune import prepare_splits
    from .store import ResultStore
    from .tasks import get_task
    from .training import evaluate, make_loader
    store = store or ResultStore()
    config = SparseConfig.from_dict(json.loads((Path(run.path) / CONFIG_FILE).read_text()))

    def compute() -> dict:
        from .device import pick_device
        task, device = get_task(config.task), pick_device(config.device)
        clf = load_sparse_task(run.path, device=device)
        data = prepare_splits(task, max_train_samples=config.max_train_samples,
                              max_eval_samples=config.max_eval_samples)
        reloaded = {split: evaluate(clf, make_loader(task, data[split], clf.tokenizer, batch_size=64,
                                                     max_seq_len=config.max_seq_len),
                                    task, device, precision="fp32")
                    for split in run.json()["metrics"]}
        return {"reloaded": reloaded}

    res = store.cached("sparse_reload", {"run": run.meta["key"], "config": config.to_dict()}, compute,
                       fingerprint=run.meta.get("fingerprint")).json()
    stored = run.json()["metrics"]
    return {"stored": stored, "reloaded": res["reloaded"], "identical": stored == res["reloaded"]}


def sparsity_chart(df: pd.DataFrame, metric: str, split: str = "test"):
    """Task metric against sparsity for sparse fine-tuning (mean and seed spread), with full
    fine-tuning as a dashed rule. ``df``: rows of :func:`sparsity_sweep` and
    :func:`full_finetuning` concatenated."""
    import altair as alt
    if metric not in df.columns:
        raise bad("metric", metric, "choose a metric column of the table")
    d = df[df["split"] == split]
    sparse, full = d[d["setting"] == "sparse"], d[d["setting"] != "sparse"]
    x = alt.X("sparsity:Q", title="sparsity (fraction of masked weights set to 0)")
    line = alt.Chart(sparse).mark_line(point=True).encode(
        x=x, y=alt.Y(f"mean({metric}):Q", title=f"{metric} ({split})", scale=alt.Scale(zero=False)),
        color=alt.Color("setting:N"), tooltip=["sparsity", f"mean({metric}):Q"])
    err = alt.Chart(sparse).mark_errorbar(extent="stdev").encode(
        x=x, y=alt.Y(f"{metric}:Q", title=f"{metric} ({split})"))
    rule = alt.Chart(full).mark_rule(strokeDash=[4, 3]).encode(
        y=f"mean({metric}):Q", color=alt.Color("setting:N"), tooltip=[f"mean({metric}):Q"])
    return (line + err + rule).properties(width=380, height=240,
                                          title="Fine-tuning by sparsification vs full fine-tuning")


def register_cli(sub) -> None:
    """``bertdims sparse --task T --sparsity S ...``: one sparse fine-tuning, stored."""
    p = sub.add_parser("sparse", help="fine-tune by learning a binary mask over pretrained weights")
    p.add_argument("--model", default="embedded")
    p.add_argument("--task", default="rotten_tomatoes")
    p.add_argument("--sparsity", type=float, default=0.1)
    p.add_argument("--layers", type=lambda s: [int(x) for x in s.split(",")], default=None,
                   help="comma-separated encoder layers 1..L (default: all)")
    p.add_argument("--weights", type=lambda s: s.split(","), default=None,
                   help="comma-separated matrices: " + ",".join(MATRICES))
    p.add_argument("--max-train-samples", type=int, default=1000)
    p.add_argument("--max-eval-samples", type=int, default=500)
    p.add_argument("--max-seq-len", type=int, default=64)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)

    def run(args) -> int:
        cfg = SparseConfig(model=args.model, task=args.task, sparsity=args.sparsity, layers=args.layers,
                           weights=args.weights, max_train_samples=args.max_train_samples,
                           max_eval_samples=args.max_eval_samples, max_seq_len=args.max_seq_len,
                           epochs=args.epochs, seed=args.seed)
        res = sparse_finetune(cfg).json()
        print(json.dumps({"metrics": res["metrics"], "sparsity": res["sparsity"],
                          "sizes": res["sizes"]}, indent=2))
        return 0

    p.set_defaults(func=run)
