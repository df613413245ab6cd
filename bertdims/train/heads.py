"""The classifier that reads chosen dimensions of one token vector of one layer.

Few Dimensions are Enough (sections on token vectors, layers and dimensions) fine-tunes BERT
with a new fully connected layer that reads only part of a layer's output: one token vector
(``[CLS]`` or another), of one layer, restricted to a few hidden dimensions.
:class:`SelectiveClassifier` is that model; with ``layer=-1``, ``token="cls"`` and all dimensions
it is the standard recipe of Devlin et al. used by Matton & de Oliveira (section 2):
dropout 0.1 after ``[CLS]`` and one linear layer.

The head (:class:`Head`) standardises what it reads with fixed statistics of the training split
before its dropout and linear layer, so that it learns on any layer and token; a head on layer l
runs only the encoder's first l blocks (:func:`truncated`).

The saved form (:func:`save_finetuned` / :func:`load_finetuned`) is an ordinary Hugging Face
model folder (``config.json``, weights, tokenizer) plus ``head.pt`` (the head's weights and
statistics) and ``finetune.json``, so
``bertdims.load_encoder(folder)`` also loads the fine-tuned encoder on its own.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from torch import nn

from ..config.finetune_config import HEADS, FinetuneConfig
from ..modeling.tokens import select_token

if TYPE_CHECKING:  # pragma: no cover
    from ..data.tasks import Task

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


#: Smallest standard deviation an input dimension is divided by, relative to the median
#: standard deviation of the selected dimensions (and never below :data:`ABS_STD_FLOOR`): a
#: dimension that does not vary on the training split is not blown up into noise.
REL_STD_FLOOR = 1e-3
ABS_STD_FLOOR = 1e-6


class Head(nn.Module):
    """The new classifier: fixed standardisation, dropout, then the linear or mlp layer(s).

    ``forward(x)`` with ``x`` (B, k) the selected raw features returns
    ``net(dropout((x - input_mean) / input_scale)) * target_scale + target_mean``: (B, C).
    The buffers ``input_mean``/``input_scale`` (k,) hold training-split statistics of the
    features read by the pretrained (or ``init_from``) encoder, set once before training by
    :meth:`fit_stats` and saved with the head; ``target_mean``/``target_scale`` (1,) do the
    same for regression targets (the head starts at the training mean). Defaults are the
    identity (mean 0, scale 1). Without them, a head on a feature whose values barely vary
    between inputs (the lower-layer ``[CLS]`` of all-MiniLM-L6-v2, total variance 0.0006 at
    layer 2) cannot move at any usual learning rate.
    """

    def __init__(self, kind: str, n_in: int, n_out: int, hidden: int = 256, dropout: float = 0.0):
        super().__init__()
        self.register_buffer("input_mean", torch.zeros(n_in))
        self.register_buffer("input_scale", torch.ones(n_in))
        self.register_buffer("target_mean", torch.zeros(1))
        self.register_buffer("target_scale", torch.ones(1))
        self.dropout = nn.Dropout(dropout)
        self.net = make_head(kind, n_in, n_out, hidden)
        self._register_load_state_dict_pre_hook(_legacy_head_keys)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.float() - self.input_mean) / self.input_scale                   # (B, k)
        return self.net(self.dropout(z)) * self.target_scale + self.target_mean  # (B, C)

    @torch.no_grad()
    def fit_stats(self, features: torch.Tensor, targets: torch.Tensor | None = None) -> "Head":
        """Set the fixed statistics from training features (N, k) and, for regression,
        targets (N,): per-dimension mean and standard deviation (floored, see
        :data:`REL_STD_FLOOR`). With targets, the output bias is set to 0, so that the
        untrained head predicts the training mean on average. Call it before training."""
        x = features.detach().double()
        mean, std = x.mean(0), x.std(0, unbiased=False)
        floor = max(ABS_STD_FLOOR, REL_STD_FLOOR * float(std.median()))
        self.input_mean.copy_(mean.float())
        self.input_scale.copy_(std.clamp_min(floor).float())
        if targets is not None:
            y = targets.detach().double()
            self.target_mean.fill_(float(y.mean()))
            self.target_scale.fill_(max(float(y.std(unbiased=False)), ABS_STD_FLOOR))
            self._layers()[-1].bias.zero_()      # starts at the training mean, on average
        return self

    def _layers(self) -> list[nn.Linear]:
        return [m for m in self.net.modules() if isinstance(m, nn.Linear)]

    @property
    def weight(self) -> torch.Tensor:
        """Weight of the first linear layer (the only one of a ``linear`` head)."""
        return self._layers()[0].weight

    @property
    def bias(self) -> torch.Tensor:
        return self._layers()[0].bias

    @property
    def in_features(self) -> int:
        return self._layers()[0].in_features

    @property
    def out_features(self) -> int:
        return self._layers()[-1].out_features


def _legacy_head_keys(state_dict, prefix, *args, **kwargs) -> None:
    """Read a head saved before :class:`Head` existed (a bare ``nn.Linear``/``Sequential``,
    which read raw features): its weights go to ``net``, the statistics stay the identity."""
    if any(k.startswith(prefix + "net.") for k in state_dict):
        return
    for key in [k for k in state_dict if k.startswith(prefix)]:
        rest = key[len(prefix):]
        if rest in ("input_mean", "input_scale", "target_mean", "target_scale"):
            continue
        state_dict[prefix + "net." + rest] = state_dict.pop(key)
    n_in = next((v.shape[1] for k, v in state_dict.items()
                 if k.startswith(prefix + "net.") and k.endswith("weight")), None)
    if n_in is not None:
        state_dict.setdefault(prefix + "input_mean", torch.zeros(n_in))
        state_dict.setdefault(prefix + "input_scale", torch.ones(n_in))
    state_dict.setdefault(prefix + "target_mean", torch.zeros(1))
    state_dict.setdefault(prefix + "target_scale", torch.ones(1))


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


def _blocks(encoder: nn.Module):
    """The ``ModuleList`` of transformer blocks of a BERT-like encoder, or None."""
    inner = getattr(encoder, "encoder", None)
    blocks = getattr(inner, "layer", None)
    return blocks if isinstance(blocks, nn.ModuleList) else None


@contextlib.contextmanager
def truncated(encoder: nn.Module, layer: int):
    """Within the block, ``encoder`` runs only its embeddings and blocks 1..``layer``: its
    ``last_hidden_state`` is the output of layer ``layer`` (0: the embeddings), the same values
    as ``hidden_states[layer]`` of the full model, at the cost of ``layer`` blocks. Yields True
    when it could cut (a BERT-like ``encoder.encoder.layer`` list with more than ``layer``
    blocks), else False and leaves the model whole. The saved model keeps every block."""
    blocks = _blocks(encoder)
    if blocks is None or layer >= len(blocks):
        yield False
        return
    inner = encoder.encoder
    inner.layer = nn.ModuleList(list(blocks)[:layer])
    try:
        yield True
    finally:
        inner.layer = blocks


def can_run_blocks(encoder: nn.Module) -> bool:
    """True when :func:`run_blocks` can run ``encoder``'s blocks from a cached hidden state:
    a BERT-like encoder (``encoder.encoder.layer``) that is not a decoder."""
    return _blocks(encoder) is not None and not getattr(encoder.config, "is_decoder", False)


def run_blocks(encoder: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor,
               start: int, stop: int) -> torch.Tensor:
    """Blocks ``start..stop`` (1-based, inclusive) of a BERT-like ``encoder`` applied to
    ``hidden`` (B, T, H), the output of layer ``start - 1`` (0: the embeddings), with the
    padding mask ``attention_mask`` (B, T). Returns the output of layer ``stop`` (B, T, H): the
    values the whole encoder computes for the real (unpadded) tokens, so a frozen bottom can be
    computed once and the blocks above it trained from the cache."""
    from transformers.masking_utils import create_bidirectional_mask

    blocks = _blocks(encoder)
    if blocks is None or not 1 <= start <= stop <= len(blocks):
        raise ValueError(f"cannot run blocks {start}..{stop} of this encoder")
    mask = create_bidirectional_mask(config=encoder.config, inputs_embeds=hidden,
                                     attention_mask=attention_mask)
    for block in list(blocks)[start - 1:stop]:
        hidden = block(hidden, mask)
    return hidden


class SelectiveClassifier(nn.Module):
    """Encoder + token selection + dimension selection + dropout + head.

    Parameters
    ----------
    encoder : a Hugging Face ``AutoModel`` (BERT-like encoder).
    tokenizer : its tokenizer.
    config : the :class:`~bertdims.train.finetuning.FinetuneConfig` (``layer``, ``token``, ``dims``,
        ``head``, ``head_hidden``, ``dropout`` are read here).
    task : the :class:`~bertdims.data.tasks.Task` (number of outputs; regression gives one).
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
        self.head = Head(config.head, n_in, task.num_labels, config.head_hidden, config.dropout)

    # ------------------------------------------------------------------ forward passes
    def representation(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       token_type_ids: torch.Tensor | None = None, **_) -> torch.Tensor:
        """The chosen token vector of the chosen layer, before dimension selection: (B, H).

        Blocks above the layer the head reads are left out of the forward pass (they cannot
        change its output; see :func:`truncated`)."""
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        with truncated(self.encoder, self.layer) as cut:
            if cut:
                hidden = self.encoder(**kwargs, return_dict=True).last_hidden_state       # (B, T, H)
            else:
                top = self.layer == self.num_layers
                out = self.encoder(**kwargs, output_hidden_states=not top, return_dict=True)
                hidden = out.last_hidden_state if top else out.hidden_states[self.layer]
        return select_token(hidden, attention_mask, self.config.token)              # (B, H)

    def from_hidden(self, hidden: torch.Tensor, attention_mask: torch.Tensor, start: int) -> torch.Tensor:
        """Logits (as :meth:`forward`) from ``hidden`` (B, T, H), the output of layer
        ``start - 1`` for the padded batch with mask ``attention_mask`` (B, T): runs blocks
        ``start..layer`` (:func:`run_blocks`), then token and dimension selection and the head."""
        if start <= self.layer:
            hidden = run_blocks(self.encoder, hidden, attention_mask, start, self.layer)
        rep = select_token(hidden, attention_mask, self.config.token)               # (B, H)
        feats = rep if self.dims is None else rep.index_select(1, self.dims_index)
        return self.head(feats)

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 token_type_ids: torch.Tensor | None = None, **_) -> torch.Tensor:
        """The selected dimensions of :meth:`representation`: (B, len(dims)) (all: (B, H))."""
        rep = self.representation(input_ids, attention_mask, token_type_ids)
        return rep if self.dims is None else rep.index_select(1, self.dims_index)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None, **_) -> torch.Tensor:
        """Logits (B, num_labels); regression: scores (B, 1). The head standardises the
        features with its fixed statistics, applies dropout and its layer(s) (:class:`Head`)."""
        return self.head(self.features(input_ids, attention_mask, token_type_ids))

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


def has_weights(folder: str | Path) -> bool:
    """True when ``folder`` (written by :func:`save_finetuned`) holds the encoder's weights,
    False for a lean save (the head and config only)."""
    return (Path(folder) / "config.json").exists()


def save_finetuned(model: SelectiveClassifier, folder: str | Path, *, weights: bool = True) -> Path:
    """Write ``model`` to ``folder``: encoder and tokenizer (Hugging Face format),
    ``head.pt`` and ``finetune.json`` (the config). ``weights=False`` writes a lean save, the
    head and config only (:func:`has_weights` tells them apart). Returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if weights:
        model.encoder.save_pretrained(folder)
        model.tokenizer.save_pretrained(folder)
    head_state = {k: v.detach().cpu() for k, v in model.head.state_dict().items()}   # with statistics
    torch.save(head_state, folder / HEAD_FILE)
    (folder / CONFIG_FILE).write_text(json.dumps(model.config.to_dict(), indent=2, sort_keys=True))
    return folder


def load_finetuned(model_dir: str | Path, device: str | torch.device = "cpu") -> SelectiveClassifier:
    """Load a model saved by :func:`bertdims.finetune` (its ``run.model_dir``), in eval mode.

    Parameters
    ----------
    model_dir : str or pathlib.Path
        The folder :func:`save_finetuned` wrote: the encoder and tokenizer in Hugging Face
        format, ``head.pt`` and ``finetune.json`` (the run's config).
    device : str or torch.device
        Where to put the model.

    Returns
    -------
    SelectiveClassifier
        The fine-tuned encoder with its head, built from the saved config and task.

    Raises
    ------
    ConfigError
        If ``model_dir`` is not a folder written by :func:`bertdims.finetune`, or it is a lean
        save without the encoder's weights (``finetune(..., keep_model=False)``).
    """
    from transformers import AutoTokenizer

    from ..core._validate import ConfigError
    from ..data.tasks import get_task

    model_dir = Path(model_dir)
    if not (model_dir / CONFIG_FILE).exists():
        raise ConfigError(f"parameter 'model_dir' = {str(model_dir)!r} is not allowed; expected a "
                          f"folder written by bertdims.finetune (with {CONFIG_FILE} and {HEAD_FILE})")
    if not has_weights(model_dir):
        raise ConfigError(f"parameter 'model_dir' = {str(model_dir)!r} is not allowed; this run was "
                          "stored without its encoder weights (finetune(..., keep_model=False)): "
                          "ask for it again with keep_model=True, which trains and keeps them")
    config = FinetuneConfig.from_dict(json.loads((model_dir / CONFIG_FILE).read_text()))
    task = get_task(config.task)
    encoder = load_backbone(str(model_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = SelectiveClassifier(encoder, tokenizer, config, task)
    model.head.load_state_dict(torch.load(model_dir / HEAD_FILE, map_location="cpu", weights_only=True))
    return model.to(device).eval()
