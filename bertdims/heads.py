"""The classifier that reads chosen dimensions of one token vector of one layer.

Few Dimensions are Enough (sections on token vectors, layers and dimensions) fine-tunes BERT
with a new fully connected layer that reads only part of a layer's output: one token vector
(``[CLS]`` or another), of one layer, restricted to a few hidden dimensions.
:class:`SelectiveClassifier` is that model; with ``layer=-1``, ``token="cls"`` and all dimensions
it is the standard recipe of Devlin et al. used by Matton & de Oliveira (section 2):
dropout 0.1 after ``[CLS]`` and one linear layer.

The saved form (:func:`save_finetuned` / :func:`load_finetuned`) is an ordinary Hugging Face
model folder (``config.json``, weights, tokenizer) plus ``head.pt`` and ``finetune.json``, so
``bertdims.load_encoder(folder)`` also loads the fine-tuned encoder on its own.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from torch import nn

from .tokens import select_token

if TYPE_CHECKING:  # pragma: no cover
    from .finetune import FinetuneConfig
    from .tasks import Task

HEADS = ("linear", "mlp")
HEAD_FILE = "head.pt"
CONFIG_FILE = "finetune.json"


def make_head(kind: str, n_in: int, n_out: int, hidden: int = 256) -> nn.Module:
    """``linear``: one fully connected layer ``n_in -> n_out``; ``mlp``: two
    (``n_in -> hidden``, ReLU, ``hidden -> n_out``), for frozen encoders."""
    if kind == "linear":
        return nn.Linear(n_in, n_out)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out))
    raise ValueError(f"unknown head {kind!r}; choose one of {HEADS}")


def load_backbone(path: str, **kwargs):
    """``AutoModel`` without BERT's pooling layer (the head reads hidden states directly; the
    report that the checkpoint's pooler weights go unused is silenced)."""
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as hf_logging
    if AutoConfig.from_pretrained(path).model_type in ("bert", "roberta"):
        kwargs["add_pooling_layer"] = False
    old = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return AutoModel.from_pretrained(path, **kwargs)
    finally:
        hf_logging.set_verbosity(old)


class SelectiveClassifier(nn.Module):
    """Encoder + token selection + dimension selection + dropout + head.

    Parameters
    ----------
    encoder : a Hugging Face ``AutoModel`` (BERT-like encoder).
    tokenizer : its tokenizer.
    config : the :class:`~bertdims.finetune.FinetuneConfig` (``layer``, ``token``, ``dims``,
        ``head``, ``head_hidden``, ``dropout`` are read here).
    task : the :class:`~bertdims.tasks.Task` (number of outputs; regression gives one).
    """

    def __init__(self, encoder: nn.Module, tokenizer, config: "FinetuneConfig", task: "Task"):
        super().__init__()
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.config = config
        self.task = task
        self.num_layers = int(encoder.config.num_hidden_layers)
        self.hidden_size = int(encoder.config.hidden_size)
        self.layer = self.num_layers if config.layer == -1 else int(config.layer)
        dims = list(config.dims) if config.dims is not None else None
        self.dims = dims
        if dims is not None:
            self.register_buffer("dims_index", torch.tensor(dims, dtype=torch.long), persistent=False)
        n_in = len(dims) if dims is not None else self.hidden_size
        self.dropout = nn.Dropout(config.dropout)
        self.head = make_head(config.head, n_in, task.num_labels, config.head_hidden)

    # ------------------------------------------------------------------ forward passes
    def representation(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       token_type_ids: torch.Tensor | None = None, **_) -> torch.Tensor:
        """The chosen token vector of the chosen layer, before dimension selection: (B, H)."""
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        top = self.layer == self.num_layers
        out = self.encoder(**kwargs, output_hidden_states=not top, return_dict=True)
        hidden = out.last_hidden_state if top else out.hidden_states[self.layer]   # (B, T, H)
        return select_token(hidden, attention_mask, self.config.token)              # (B, H)

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 token_type_ids: torch.Tensor | None = None, **_) -> torch.Tensor:
        """The selected dimensions of :meth:`representation`: (B, len(dims)) (all: (B, H))."""
        rep = self.representation(input_ids, attention_mask, token_type_ids)
        return rep if self.dims is None else rep.index_select(1, self.dims_index)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None, **_) -> torch.Tensor:
        """Logits (B, num_labels); regression: scores (B, 1)."""
        feats = self.features(input_ids, attention_mask, token_type_ids)
        return self.head(self.dropout(feats))

    @torch.inference_mode()
    def predict(self, texts: Sequence, batch_size: int = 64) -> np.ndarray:
        """Class ids (N,) for classification, scores (N,) for regression.

        ``texts`` is a list of strings, or of (a, b) pairs for sentence-pair tasks.
        """
        from .training import encode_texts, make_loader, predict_loader
        if isinstance(texts, str):
            texts = [texts]
        encoded = encode_texts(list(texts), self.tokenizer, self.config.max_seq_len)
        loader = make_loader(self.task, encoded, self.tokenizer, batch_size=batch_size,
                             max_seq_len=self.config.max_seq_len, shuffle=False)
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        try:
            index, preds, _ = predict_loader(self, loader, device)
        finally:
            self.train(was_training)
        out = np.empty_like(preds)
        out[index] = preds
        return out


def save_finetuned(model: SelectiveClassifier, folder: str | Path) -> Path:
    """Write ``model`` to ``folder``: encoder and tokenizer (Hugging Face format),
    ``head.pt`` and ``finetune.json`` (the config). Returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.encoder.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    head_state = {k: v.detach().cpu() for k, v in model.head.state_dict().items()}
    torch.save(head_state, folder / HEAD_FILE)
    (folder / CONFIG_FILE).write_text(json.dumps(model.config.to_dict(), indent=2, sort_keys=True))
    return folder


def load_finetuned(model_dir: str | Path, device: str | torch.device = "cpu") -> SelectiveClassifier:
    """Load a model saved by :func:`bertdims.finetune` (its ``run.model_dir``), in eval mode."""
    from transformers import AutoTokenizer

    from ._validate import ConfigError
    from .finetune import FinetuneConfig
    from .tasks import get_task

    model_dir = Path(model_dir)
    if not (model_dir / CONFIG_FILE).exists():
        raise ConfigError(f"parameter 'model_dir' = {str(model_dir)!r} is not allowed; expected a "
                          f"folder written by bertdims.finetune (with {CONFIG_FILE} and {HEAD_FILE})")
    config = FinetuneConfig.from_dict(json.loads((model_dir / CONFIG_FILE).read_text()))
    task = get_task(config.task)
    encoder = load_backbone(str(model_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = SelectiveClassifier(encoder, tokenizer, config, task)
    model.head.load_state_dict(torch.load(model_dir / HEAD_FILE, map_location="cpu", weights_only=True))
    return model.to(device).eval()
