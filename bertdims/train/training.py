"""Building blocks of the fine-tuning loop: data loaders, evaluation, freezing, the optimizer
with layer-wise learning rates, and the slanted triangular schedule.

They follow the recipe of Matton & de Oliveira (Emergent Properties of Finetuned Language
Representation Models, section 2, after Sun et al. 2019): AdamW (beta 0.9/0.999), a maximum
learning rate (1e-4 by default, the paper 2e-5) for the top layer decayed by 0.95 per layer below
(``LR_n = 0.95 * LR_{n+1}``), a slanted triangular schedule with 10 % warm-up and a minimum of 0,
batch size 32 through gradient accumulation, dropout 0.1 after the token vector.
:func:`bertdims.train.finetuning.finetune` puts them together; the cross-fine-tuning, sparse and PCA
code reuse them one by one.

Layer numbering everywhere: 0 is the embeddings, 1..L the transformer blocks, ``"head"`` the
new classifier.
"""
from __future__ import annotations

import math
import re
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..core.device import autocast, pick_precision
from ..data.tasks import Task, compute_metrics, texts_of

DEFAULT_HEAD_LR = 1e-3


# ---------------------------------------------------------------------------- data
class EncodedDataset(Dataset):
    """Tokenised examples (no padding): item ``i`` is a dict with ``input_ids``,
    ``token_type_ids`` (if the tokenizer makes them), ``label`` (if known) and ``index`` = i."""

    def __init__(self, features: dict[str, list], labels: Sequence | None = None):
        self.features = features
        self.labels = None if labels is None else list(labels)
        self.lengths = np.array([len(x) for x in features["input_ids"]], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> dict:
        item = {k: v[i] for k, v in self.features.items()}
        if self.labels is not None:
            item["label"] = self.labels[i]
        item["index"] = i
        return item

    def subset(self, indices: Sequence[int]) -> "EncodedDataset":
        idx = [int(i) for i in indices]
        feats = {k: [v[i] for i in idx] for k, v in self.features.items()}
        labels = None if self.labels is None else [self.labels[i] for i in idx]
        return EncodedDataset(feats, labels)


def encode_texts(texts: Sequence, tokenizer, max_seq_len: int, labels: Sequence | None = None
                 ) -> EncodedDataset:
    """Tokenise strings, or (a, b) pairs, truncated to ``max_seq_len`` tokens."""
    texts = list(texts)
    if texts and isinstance(texts[0], (tuple, list)):
        enc = tokenizer([a for a, _ in texts], [b for _, b in texts], truncation=True,
                        max_length=max_seq_len)
    else:
        enc = tokenizer(texts, truncation=True, max_length=max_seq_len)
    keep = ("input_ids", "token_type_ids")
    return EncodedDataset({k: list(enc[k]) for k in keep if k in enc}, labels)


def encode_split(task: Task, dataset, tokenizer, max_seq_len: int) -> EncodedDataset:
    """Tokenise a task split (a ``datasets.Dataset`` with the task's text and ``label`` columns)."""
    labels = dataset["label"] if "label" in dataset.column_names else None
    return encode_texts(texts_of(task, dataset), tokenizer, max_seq_len, labels)


class Collator:
    """Pad a list of items to the longest one: ``input_ids``, ``attention_mask``,
    ``token_type_ids`` (B, T), ``labels`` (B,) long or float, ``index`` (B,)."""

    def __init__(self, pad_id: int, regression: bool):
        self.pad_id = int(pad_id)
        self.regression = regression

    def __call__(self, items: list[dict]) -> dict:
        B, T = len(items), max(len(it["input_ids"]) for it in items)
        ids = torch.full((B, T), self.pad_id, dtype=torch.long)
        mask = torch.zeros((B, T), dtype=torch.long)
        has_tt = "token_type_ids" in items[0]
        tt = torch.zeros((B, T), dtype=torch.long)
        for b, it in enumerate(items):
            n = len(it["input_ids"])
            ids[b, :n] = torch.tensor(it["input_ids"])
            mask[b, :n] = 1
            if has_tt:
                tt[b, :n] = torch.tensor(it["token_type_ids"])
        batch = {"input_ids": ids, "attention_mask": mask,
                 "index": torch.tensor([it["index"] for it in items])}
        if has_tt:
            batch["token_type_ids"] = tt
        if "label" in items[0]:
            dtype = torch.float32 if self.regression else torch.long
            batch["labels"] = torch.tensor([it["label"] for it in items], dtype=dtype)
        return batch


def length_batches(lengths: np.ndarray, batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), for evaluation."""
    order = np.argsort(-lengths, kind="stable")
    return [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]


def make_loader(task: Task, dataset, tokenizer, *, batch_size: int, max_seq_len: int,
                shuffle: bool = False, seed: int = 0) -> DataLoader:
    """A ``DataLoader`` of padded batches (see :class:`Collator`).

    ``dataset`` is a task split (``datasets.Dataset``) or an :class:`EncodedDataset`.
    ``shuffle=True``: a random order fixed by ``seed``; ``shuffle=False``: batches of similar
    length (longest first) so that little padding is computed; each batch carries ``index``
    so predictions can be put back in dataset order.
    """
    if not isinstance(dataset, EncodedDataset):
        dataset = encode_split(task, dataset, tokenizer, max_seq_len)
    collate = Collator(tokenizer.pad_token_id or 0, task.is_regression)
    if shuffle:
        gen = torch.Generator().manual_seed(int(seed))
        return DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=gen,
                          collate_fn=collate)
    return DataLoader(dataset, batch_sampler=length_batches(dataset.lengths, batch_size),
                      collate_fn=collate)


def _model_inputs(batch: dict, device) -> dict:
    keys = ("input_ids", "attention_mask", "token_type_ids")
    return {k: batch[k].to(device, non_blocking=True) for k in keys if k in batch}


def outputs_to_predictions(logits: torch.Tensor, regression: bool) -> torch.Tensor:
    """(B, C) logits -> (B,) class ids; (B, 1) regression scores -> (B,) floats."""
    return logits[:, 0].float() if regression else logits.argmax(-1)


@torch.inference_mode()
def predict_loader(model: nn.Module, loader, device, precision: str = "auto"
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Run ``model`` over ``loader``: (index (N,), predictions (N,), labels (N,) or None),
    in loader order (use ``index`` to restore dataset order)."""
    device = torch.device(device)
    precision = pick_precision(precision, device)
    regression = getattr(getattr(model, "task", None), "is_regression", None)
    idx, preds, labels = [], [], []
    for batch in loader:
        with autocast(device, precision):
            logits = model(**_model_inputs(batch, device))
        if regression is None:
            regression = logits.shape[-1] == 1
        preds.append(outputs_to_predictions(logits, regression).cpu().numpy())
        idx.append(batch["index"].numpy())
        if "labels" in batch:
            labels.append(batch["labels"].numpy())
    cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0))
    return cat(idx), cat(preds), (cat(labels) if labels else None)


def evaluate(model: nn.Module, loader, task: Task, device, precision: str = "auto") -> dict[str, float]:
    """The task's metrics (:func:`bertdims.data.tasks.compute_metrics`) of ``model`` on ``loader``.

    The model is put in eval mode for the pass and restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        _, preds, labels = predict_loader(model, loader, device, precision)
    finally:
        model.train(was_training)
    if labels is None:
        raise ValueError("the loader's batches carry no labels")
    return compute_metrics(task, preds, labels)


# ---------------------------------------------------------------------------- layers
_BLOCK = re.compile(r"\.(?:layer|layers|block|blocks|h)\.(\d+)\.")


def layer_of(name: str, num_layers: int) -> int | str:
    """Which layer a parameter of a :class:`SelectiveClassifier` belongs to:
    0 embeddings, 1..L transformer blocks, ``"head"`` the classifier. Encoder parameters
    outside the blocks and embeddings (e.g. a final norm) count as layer L."""
    if not name.startswith("encoder."):
        return "head"
    m = _BLOCK.search(name)
    if m:
        return int(m.group(1)) + 1
    if "embeddings" in name or "embed_" in name:
        return 0
    return num_layers


def trained_layers(config, num_layers: int) -> set[int]:
    """Encoder layers (0 = embeddings, 1..L) that ``config`` trains.

    ``freeze=n`` freezes the embeddings and blocks 1..n; ``freeze_embeddings`` the embeddings;
    ``train_layers`` trains only the listed blocks; blocks above the layer the head reads
    cannot change the output and are frozen too.
    """
    read = num_layers if config.layer == -1 else config.layer
    if config.train_layers is not None:
        layers = set(config.train_layers)
    else:
        layers = set(range(config.freeze + 1, num_layers + 1))
        if config.freeze == 0 and not config.freeze_embeddings:
            layers.add(0)
    return {n for n in layers if n <= read}


def apply_freezing(model: nn.Module, config) -> set[int]:
    """Set ``requires_grad`` on the encoder following ``config`` (see :func:`trained_layers`);
    the head always trains. Returns the set of trained encoder layers."""
    L = model.num_layers
    layers = trained_layers(config, L)
    for name, p in model.named_parameters():
        where = layer_of(name, L)
        p.requires_grad_(where == "head" or where in layers)
    return layers


# ---------------------------------------------------------------------------- optimisation
def layer_lrs(config, num_layers: int) -> dict:
    """Peak learning rate per layer: ``lr * layer_lr_decay ** (L - n)`` for n in 0..L, and
    ``head_lr`` (default :data:`DEFAULT_HEAD_LR`) for the head."""
    lrs = {n: config.lr * config.layer_lr_decay ** (num_layers - n) for n in range(num_layers + 1)}
    lrs["head"] = config.head_lr if config.head_lr is not None else DEFAULT_HEAD_LR
    return lrs


def build_optimizer(model: nn.Module, config, fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW (beta 0.9/0.999) over the trainable parameters, one parameter group per layer and
    weight-decay kind. Each group has ``layer`` (0..L or ``"head"``) and ``lr`` from
    :func:`layer_lrs`; biases and LayerNorm parameters get no weight decay.

    ``fused`` (default: when every trainable parameter is a float32 tensor on the CPU or a GPU)
    uses PyTorch's fused AdamW kernel, as Hugging Face ``Trainer`` does by default.
    Build it after moving the model to its device."""
    L = model.num_layers
    lrs = layer_lrs(config, L)
    no_decay = {id(p) for m in model.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()}
    groups: dict = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        layer = layer_of(name, L)
        decay = not (name.endswith("bias") or id(p) in no_decay)
        key = (str(layer), decay)
        if key not in groups:
            groups[key] = {"params": [], "lr": lrs[layer], "layer": layer,
                           "weight_decay": config.weight_decay if decay else 0.0}
        groups[key]["params"].append(p)
    order = sorted(groups, key=lambda k: (k[0] == "head", k[0].zfill(4), not k[1]))
    params = [p for g in groups.values() for p in g["params"]]
    if fused is None:
        fused = all(p.dtype == torch.float32 and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW([groups[k] for k in order], betas=(0.9, 0.999), eps=1e-8,
                             fused=bool(fused))


def slanted_triangular(optimizer: torch.optim.Optimizer, total_steps: int, warmup: float = 0.1
                       ) -> torch.optim.lr_scheduler.LambdaLR:
    """Slanted triangular learning rates (Howard & Ruder 2018) with minimum 0.

    Multiplier of step s (0-based, the update made after s scheduler steps): rises linearly
    over the first ``ceil(warmup * total_steps)`` steps to 1, then falls linearly to 0 at
    ``total_steps``. Step once per optimizer update.
    """
    total = max(int(total_steps), 1)
    warm = min(int(math.ceil(warmup * total)), total - 1) if warmup > 0 else 0

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total - step) / max(total - warm, 1))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
