"""Token representations of chosen layers, computed once and kept on disk.

Two entry points:

* :func:`encode` returns an in-memory array ``(N, len(layers), H)`` for a list of texts;
* :func:`extract` streams the representations of a task split to memory-mapped arrays in the
  results store (one ``(N, H)`` float32 file per layer), keyed by model fingerprint, task,
  split, layers, token, ``max_seq_len`` and ``max_samples``, so that analyses (PCA, salient
  neurons; Matton & de Oliveira, sections 3.1 and 3.2) never rerun the model.

Both run without gradients (``torch.inference_mode``), in bf16 autocast on a GPU, and batch
sequences of similar length together (sorted by token count inside each chunk), so that a batch
is padded to its own longest sequence rather than to ``max_seq_len``. Results come back in
input order.

Layer numbering follows ``hidden_states``: 0 is the embedding output, ``i`` the output of
transformer block ``i``, and negative numbers count from the end (-1 is the last block).
"""
from __future__ import annotations

import json
import os
import shutil
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from ..core._validate import ConfigError, ConfigMixin, bad, check_range
from ..config.params import Check, Interval, Text, check_fields, own, param
from ..core.device import autocast, pick_device, pick_precision
from ..modeling.models import Encoder, load_encoder
from ..core.store import write_json_atomic
from ..modeling.tokens import check_token, select_token

Texts = Sequence[str] | Sequence[tuple[str, str]]


# ---------------------------------------------------------------------------- inputs
def as_encoder(model, name: str | None = None) -> Encoder:
    """An :class:`Encoder` from an Encoder, a fine-tuned classifier (anything with
    ``.encoder`` and ``.tokenizer``, e.g. ``bertdims.train.finetuning.load_finetuned(...)``), or a
    model name / folder (loaded with :func:`bertdims.load_encoder`)."""
    if isinstance(model, Encoder):
        return model
    if isinstance(model, (str, os.PathLike)):
        return load_encoder(str(model))
    enc, tok = getattr(model, "encoder", None), getattr(model, "tokenizer", None)
    if enc is not None and tok is not None:
        label = name or getattr(model, "name", None) or getattr(enc.config, "_name_or_path", "") \
            or type(enc).__name__
        return Encoder(model=enc, tokenizer=tok, name=f"finetuned:{label}")
    raise bad("encoder", type(model).__name__,
              "expected a bertdims Encoder, a fine-tuned classifier with .encoder and .tokenizer, "
              "or a model name / folder")


def resolve_layers(layers: int | Sequence[int], num_layers: int) -> list[int]:
    """Layer numbers as non-negative indices into ``hidden_states`` (0..num_layers)."""
    if isinstance(layers, (int, np.integer)) and not isinstance(layers, bool):
        layers = [int(layers)]
    allowed = (f"integers in [-{num_layers + 1}, {num_layers}] (0 = embedding output, "
               f"-1 = last of the model's {num_layers} layers)")
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) or len(layers) == 0:
        raise bad("layers", layers, "give a non-empty list of " + allowed)
    out = []
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) \
                or not -(num_layers + 1) <= layer <= num_layers:
            raise bad("layers", list(layers), "every layer must be one of the " + allowed)
        out.append(int(layer) % (num_layers + 1))
    if len(set(out)) != len(out):
        raise bad("layers", list(layers), "layers must be distinct (after counting negatives from the end)")
    return out


def _check_texts(texts) -> list:
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
        raise bad("texts", type(texts).__name__, "expected a list of strings or of (a, b) string pairs")
    texts = list(texts)
    pairs = [isinstance(t, (tuple, list)) for t in texts]
    if any(pairs) and not all(pairs):
        raise bad("texts", "mixed", "give either all single texts or all (a, b) pairs")
    for t in texts:
        parts = t if isinstance(t, (tuple, list)) else (t,)
        if len(parts) not in (1, 2) or not all(isinstance(p, str) for p in parts):
            raise bad("texts", t, "every item must be a string or a pair of strings")
    return texts


def _check_common(encoder: Encoder, batch_size: int, max_seq_len: int) -> None:
    check_range("batch_size", batch_size, 1, integer=True)
    limit = int(getattr(encoder.model.config, "max_position_embeddings", 512) or 512)
    check_range("max_seq_len", max_seq_len, 2, limit, integer=True)


# ---------------------------------------------------------------------------- core
def _tokenize(tokenizer, texts: list, max_seq_len: int) -> dict:
    """Tokenise without padding: lists of ids per text (and special-token masks)."""
    if texts and isinstance(texts[0], (tuple, list)):
        a, b = [t[0] for t in texts], [t[1] for t in texts]
        return tokenizer(a, b, truncation=True, max_length=max_seq_len,
                         return_special_tokens_mask=True)
    return tokenizer(list(texts), truncation=True, max_length=max_seq_len,
                     return_special_tokens_mask=True)


def _pad(enc, keys: list[str], idx: np.ndarray, width: int, pad_id: int) -> dict:
    """Right-pad the rows ``idx`` of a tokenisation to ``width``: dict of (B, width) tensors."""
    fill = {"input_ids": pad_id, "attention_mask": 0, "token_type_ids": 0, "special_tokens_mask": 1}
    out = {k: np.full((len(idx), width), fill[k], dtype=np.int64) for k in keys}
    for row, i in enumerate(idx):
        for k in keys:
            seq = enc[k][i]
            out[k][row, :len(seq)] = seq
    return {k: torch.from_numpy(v) for k, v in out.items()}


def _length_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Indices grouped into batches of similar length (longest first, stable)."""
    order = np.argsort(-lengths, kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def _encode_chunk(encoder: Encoder, texts: list, layers: list[int], token: str, batch_size: int,
                  max_seq_len: int, device: torch.device, precision: str,
                  pad_to_max: bool = False, bar=None) -> np.ndarray:
    """Representations of one chunk of texts: (n, len(layers), H) float32, input order."""
    n, hidden = len(texts), encoder.hidden_size
    out = np.empty((n, len(layers), hidden), dtype=np.float32)
    if n == 0:
        return out
    enc = _tokenize(encoder.tokenizer, texts, max_seq_len)
    keys = [k for k in ("input_ids", "token_type_ids", "attention_mask", "special_tokens_mask") if k in enc]
    lengths = np.array([len(ids) for ids in enc["input_ids"]])
    batches = _length_batches(lengths, batch_size) if not pad_to_max else \
        [np.arange(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    pad_id = encoder.tokenizer.pad_token_id or 0
    for idx in batches:
        width = max_seq_len if pad_to_max else int(lengths[idx].max())
        batch = _pad(enc, keys, idx, width, pad_id)
        special = batch.pop("special_tokens_mask")
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(device, precision):
            states = encoder.model(**batch, output_hidden_states=True).hidden_states
        for j, layer in enumerate(layers):
            vec = select_token(states[layer], batch["attention_mask"], token,
                               special_mask=special.to(device))           # (B, H)
            out[idx, j] = vec.float().cpu().numpy()
        if bar is not None:
            bar.update(len(idx))
    return out


def _prepare(encoder, device: str, precision: str) -> tuple[Encoder, torch.device, str]:
    encoder = as_encoder(encoder)
    dev = pick_device(device)
    prec = pick_precision(precision, dev)
    encoder.model.to(dev).eval()
    return encoder, dev, prec


def _bar(total: int, progress: bool, desc: str):
    from tqdm.auto import tqdm
    return tqdm(total=total, disable=not progress, desc=desc, unit="text", leave=False)


def encode(encoder, texts: Texts, *, layers: int | Sequence[int] = (-1,), token: str = "cls",
           batch_size: int = 32, max_seq_len: int = 128, device: str = "auto",
           precision: str = "auto", progress: bool = True, pad_to_max: bool = False) -> np.ndarray:
    """Token representations of ``texts`` at ``layers``, in memory.

    The model runs without gradients, in bf16 autocast on a GPU by default. Texts are
    batched by similar token count, so that each batch is padded only to its own longest
    sequence; the rows come back in input order.

    Parameters
    ----------
    encoder : Encoder, fine-tuned classifier or str
        A :class:`~bertdims.modeling.models.Encoder`, a fine-tuned classifier (anything with ``.encoder`` and
        ``.tokenizer``) or a model name / folder (loaded with :func:`bertdims.load_encoder`).
    texts : list of str or list of (str, str)
        The texts, or (a, b) pairs for sentence-pair tasks (all of one kind).
    layers : int or sequence of int
        Layer numbers, distinct: 0 = embedding output, ``i`` = block ``i``, -1 = last block.
    token : str
        ``"cls"``, ``"mean"``, ``"maxnorm"`` or ``"token:i"`` (see :mod:`bertdims.modeling.tokens`).
    batch_size : int
        Texts per forward pass.
    max_seq_len : int
        Texts are truncated to this many tokens (at least 2, at most the model's number of
        positions).
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"`` (see :func:`bertdims.core.device.pick_device`).
    precision : str
        ``"auto"``, ``"fp32"`` or ``"bf16"`` (see :func:`bertdims.core.device.pick_precision`).
    progress : bool
        Show a progress bar.
    pad_to_max : bool
        Pad every batch to ``max_seq_len`` in input order (the slow baseline of
        ``benchmarks/bench_extract.py``; results are the same up to float rounding).

    Returns
    -------
    np.ndarray, shape (N, len(layers), H)
        float32, one row per text in input order, the layers in the order given.

    Raises
    ------
    ConfigError
        An encoder of an unknown kind, malformed ``texts``, or an invalid ``layers``,
        ``token``, ``batch_size``, ``max_seq_len``, ``device`` or ``precision``.
    """
    encoder = as_encoder(encoder)
    token = check_token(token)
    texts = _check_texts(texts)
    layer_ids = resolve_layers(layers, encoder.num_layers)
    _check_common(encoder, batch_size, max_seq_len)
    encoder, dev, prec = _prepare(encoder, device, precision)
    with torch.inference_mode(), _bar(len(texts), progress, "encode") as bar:
        return _encode_chunk(encoder, texts, layer_ids, token, batch_size, max_seq_len, dev, prec,
                             pad_to_max=pad_to_max, bar=bar)


# ---------------------------------------------------------------------------- streaming store
KIND = "representations"
GENERAL = "general"          # pseudo-task: the general-English corpus (no labels)


def _layer_numbers(layers) -> list[int]:
    """A layer number or a non-empty list of them, as a list of ints (checked against the
    model's size by :func:`resolve_layers`)."""
    given = layers
    if isinstance(layers, (int, np.integer)) and not isinstance(layers, bool):
        layers = [layers]
    if (isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) or not layers
            or not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in layers)):
        raise bad("layers", given, "expected a layer number or a non-empty list of them "
                  "(0 embeddings, 1..L blocks, -1 the last)")
    return [int(x) for x in layers]


@dataclass
class ExtractConfig(ConfigMixin):
    """What identifies a stored extraction (with the model fingerprint).

    Attributes
    ----------
    task : str
        A registered task, ``"general"`` (the general-English corpus), or the name given to
        rows read from a ``datasets.Dataset``.
    split : str
        The split extracted.
    layers : list of int
        The layers extracted: 0 the embeddings, i block i, negative numbers count from the end
        (-1 the last); one number is read as a list of one.
    token : str
        The token vector kept: ``cls``, ``mean``, ``maxnorm`` or ``token:i``.
    max_seq_len : int
        Tokens per input (>= 2); longer inputs are cut.
    max_samples : int or None
        A seeded random subset of this many rows (>= 1); None: all.
    sample_seed : int
        Seed of that subset (>= 0).
    data_fingerprint : str or None
        The fingerprint of the ``datasets.Dataset`` the rows come from; None: the task's split.
    """

    task: str = own(dataclasses.MISSING, Text("a task name, or 'general'"),
                    "the task (or 'general', or the name of given rows)")
    split: str = own("train", Text("a split name"), "the split extracted")
    layers: list[int] = own([-1], Check(_layer_numbers), "the layers extracted: 0 the "
                            "embeddings, i block i, negative numbers from the end")
    token: str = param("token")
    max_seq_len: int = param("max_seq_len")
    max_samples: int | None = own(None, Interval(int, 1, None), "a seeded random subset of "
                                  "this many rows; None: all", none=True)
    sample_seed: int = own(0, Interval(int, 0, None), "seed of the max_samples subset")
    data_fingerprint: str | None = own(None, Text("a dataset fingerprint"), "set when rows "
                                       "come from a given Dataset, not the task", none=True)

    def __post_init__(self):
        check_fields(self)                  # every field against its constraint


class StoredRepresentations:
    """Stored representations of one split: per layer a read-only memory-mapped ``(N, H)``
    float32 array, and the ``(N,)`` labels (``-1`` for unlabelled text).

    ``rep[layer]`` or ``rep.layer(layer)`` returns the array of a layer (numbers as given to
    :func:`extract`, e.g. -1); ``rep.indices`` are the rows of the split that were kept.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        meta = json.loads((self.path / "meta.json").read_text())
        if not meta.get("complete"):
            raise ValueError(f"{self.path} holds an incomplete extraction")
        if meta.get("files"):
            from ..core.store import damage
            found = damage(self.path, meta["files"])
            if found:
                import warnings
                from ..core.store import DamagedEntryWarning
                warnings.warn(f"damaged extraction {self.path}: {'; '.join(found)}; it is "
                              "recomputed", DamagedEntryWarning, stacklevel=2)
                raise ValueError(f"{self.path} is damaged: {'; '.join(found)}")
        self.meta = meta
        self.config = json.loads((self.path / "config.json").read_text())
        self.layers: list[int] = list(self.config["layers"])
        self.resolved_layers: list[int] = list(meta["resolved_layers"])

    def layer(self, layer: int) -> np.ndarray:
        if layer in self.layers:
            j = self.layers.index(layer)
        elif layer in self.resolved_layers:
            j = self.resolved_layers.index(layer)
        else:
            raise bad("layer", layer, f"this extraction holds layers {self.layers}")
        return np.load(self.path / f"layer_{self.resolved_layers[j]}.npy", mmap_mode="r")

    __getitem__ = layer

    @property
    def labels(self) -> np.ndarray:
        return np.load(self.path / "labels.npy")

    @property
    def indices(self) -> np.ndarray:
        return np.load(self.path / "indices.npy", mmap_mode="r")

    @property
    def fingerprint(self) -> str:
        return self.meta["fingerprint"]

    def __len__(self) -> int:
        return int(self.meta["num_rows"])

    def __repr__(self) -> str:
        c = self.config
        return (f"StoredRepresentations({c['task']}/{c['split']}, layers={self.layers}, token={c['token']!r}, "
                f"n={len(self)}, model={self.meta['fingerprint']})")


def sample_indices(num_rows: int, max_samples: int | None, seed: int = 0) -> np.ndarray:
    """Rows kept by ``max_samples``: all rows, or a seeded random subset in increasing order
    (random, since some splits are sorted by label). With the default seed these are the rows
    :func:`bertdims.train.finetuning.prepare_splits` uses for ``max_train_samples``/``max_eval_samples``
    (training rows: its train and early-stopping parts together)."""
    if max_samples is None or max_samples >= num_rows:
        return np.arange(num_rows)
    return np.sort(np.random.default_rng(seed).permutation(num_rows)[:max_samples])


def _dataset_source(ds, text_fields: Sequence[str]):
    fields = list(text_fields)
    missing = [f for f in fields + ["label"] if f not in ds.column_names]
    if missing:
        raise bad("data", ds.column_names, f"the dataset needs the columns {fields + ['label']}; missing {missing}")

    def texts(rows):
        sub = ds.select(rows)
        return list(sub[fields[0]]) if len(fields) == 1 else list(zip(sub[fields[0]], sub[fields[1]]))

    label_dtype = np.float32 if np.issubdtype(np.asarray(ds[:1]["label"]).dtype, np.floating) else np.int64
    return len(ds), texts, lambda rows: np.asarray(ds.select(rows)["label"], dtype=label_dtype)


def _source(task: str, split: str, data=None):
    """(number of rows, text getter, label getter) for a task split, a given ``datasets.Dataset``
    (columns of the task's text fields, or ``text``, and ``label``) or the general corpus."""
    if data is not None:
        try:
            from ..data.tasks import get_task
            fields = get_task(task).text_fields
        except ConfigError:
            fields = ("text",)
        return _dataset_source(data, fields)
    if task == GENERAL:
        from ..data._embedded import general_corpus
        corpus = general_corpus()
        texts = list(corpus["text"]) if hasattr(corpus, "column_names") else list(corpus)
        return (len(texts), lambda rows: [texts[i] for i in rows],
                lambda rows: np.full(len(rows), -1, dtype=np.int64))
    from ..data.tasks import get_split, get_task, texts_of
    spec = get_task(task)
    ds = get_split(task, split)
    dtype = np.float32 if spec.is_regression else np.int64
    return (len(ds), lambda rows: texts_of(spec, ds.select(rows)),
            lambda rows: np.asarray(ds.select(rows)["label"], dtype=dtype))


def _data_fingerprint(data) -> str:
    fp = getattr(data, "_fingerprint", None)
    if fp is None:
        raise bad("data", type(data).__name__, "expected a datasets.Dataset")
    return str(fp)


class _RowWriter:
    """Append rows to a pre-sized ``.npy`` file with plain writes (no memory map, so the
    written pages never count towards this process's resident memory)."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype, create: bool):
        if create:
            np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape).flush()
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
        self.offset = path.stat().st_size - shape[0] * self.row_bytes
        self.dtype = np.dtype(dtype)
        self.file = open(path, "r+b")

    def write(self, start: int, rows: np.ndarray) -> None:
        self.file.seek(self.offset + start * self.row_bytes)
        self.file.write(np.ascontiguousarray(rows, dtype=self.dtype).tobytes())

    def close(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()


def extract(model, task: str, split: str = "train", *, layers: int | Sequence[int] = (-1,),
            token: str = "cls", max_seq_len: int = 128, max_samples: int | None = None,
            sample_seed: int = 0, batch_size: int = 32, chunk_size: int = 2048,
            device: str = "auto", precision: str = "auto", store=None, force: bool = False,
            progress: bool = True, data=None) -> StoredRepresentations:
    """Extract (or read back) the representations of a task split, streamed to disk.

    ``model``: an :class:`Encoder`, a fine-tuned classifier (``.encoder``/``.tokenizer``) or a
    model name / folder. ``task``: a registered task, or ``"general"`` for the general-English
    corpus (section 3.1.1's Wikipedia sample). ``data``: optionally a ``datasets.Dataset`` to
    read instead of the task's split (its fingerprint joins the key). Rows are processed ``chunk_size`` at a time
    (tokenised, sorted by length into batches, run, written), so peak memory depends on
    ``chunk_size`` and not on the size of the split. The run is stored under
    ``<store root>/representations/<key>`` where the key hashes the model fingerprint and the
    :class:`ExtractConfig`; it is filled in ``.<key>.partial`` (resumed chunk by chunk after an
    interruption) and committed by the store (:meth:`bertdims.core.store.ResultStore.commit`: ``meta.json``
    marked complete, one rename into place). One process extracts a key at a time (the store's
    lock of the key); another asking for it waits, then reads it.

    Returns :class:`StoredRepresentations` (memory-mapped ``(N, H)`` per layer).
    """
    from ..core.store import store_or_temporary
    store = store_or_temporary(store)
    if task != GENERAL and data is None:      # a bad task name fails before the model loads
        from ..data.tasks import get_task
        get_task(task)
    layer_list = [layers] if isinstance(layers, (int, np.integer)) else list(layers)
    config = ExtractConfig(task=task, split=split, layers=layer_list, token=token,
                           max_seq_len=max_seq_len, max_samples=max_samples, sample_seed=sample_seed,
                           data_fingerprint=None if data is None else _data_fingerprint(data))
    encoder = as_encoder(model)
    resolved = resolve_layers(config.layers, encoder.num_layers)
    _check_common(encoder, batch_size, config.max_seq_len)
    check_range("chunk_size", chunk_size, 1, integer=True)
    fingerprint = encoder.fingerprint()
    key = store.key(KIND, config.to_dict(), fingerprint)
    final = store.path(KIND, key)
    hit = None if force else _stored(final)
    if hit is not None:
        return hit
    with store.lock(KIND, key) as waited:      # one process extracts a key, the others wait
        hit = _stored(final) if waited else None
        if hit is not None:
            return hit
        num_rows, get_texts, get_labels = _source(config.task, config.split, data)
        rows = sample_indices(num_rows, config.max_samples, config.sample_seed)
        partial = final.with_name(f".{key}.partial")
        _write_chunks(encoder, partial, config, resolved, rows, get_texts, get_labels, fingerprint,
                      batch_size=batch_size, chunk_size=chunk_size, device=device,
                      precision=precision, progress=progress)
        store.commit(KIND, key, partial, config.to_dict(), fingerprint,
                     meta={"model_name": encoder.name, "resolved_layers": resolved,
                           "num_rows": int(len(rows)), "hidden_size": encoder.hidden_size})
    return StoredRepresentations(final)


def _stored(final: Path) -> StoredRepresentations | None:
    """The complete, undamaged extraction in ``final``, else None (a damaged one is reported
    with a DamagedEntryWarning and recomputed)."""
    if not (final / "meta.json").exists():
        return None
    try:
        return StoredRepresentations(final)
    except ValueError:
        return None


def _write_chunks(encoder: Encoder, folder: Path, config: ExtractConfig, resolved: list[int],
                  rows: np.ndarray, get_texts, get_labels, fingerprint: str, *, batch_size: int,
                  chunk_size: int, device: str, precision: str, progress: bool) -> None:
    """Fill ``folder`` chunk by chunk; ``progress.json`` records the chunks already written."""
    n, hidden = len(rows), encoder.hidden_size
    state_file = folder / "progress.json"
    state = {"config": config.to_dict(), "fingerprint": fingerprint, "chunk_size": chunk_size,
             "num_rows": int(n), "rows_done": 0}
    create = True
    if state_file.exists():
        old = json.loads(state_file.read_text())
        if {k: v for k, v in old.items() if k != "rows_done"} == \
                {k: v for k, v in state.items() if k != "rows_done"}:
            state["rows_done"], create = int(old["rows_done"]), False
    if create:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        write_json_atomic(folder / "config.json", config.to_dict(), indent=2, sort_keys=True)
        np.save(folder / "indices.npy", rows)
        write_json_atomic(state_file, state)
    label_dtype = get_labels(rows[:1]).dtype if n else np.int64
    writers = [_RowWriter(folder / f"layer_{layer}.npy", (n, hidden), np.float32, create)
               for layer in resolved]
    labels = _RowWriter(folder / "labels.npy", (n,), label_dtype, create)
    encoder, dev, prec = _prepare(encoder, device, precision)
    try:
        with torch.inference_mode(), _bar(n, progress, f"extract {config.task}/{config.split}") as bar:
            bar.update(state["rows_done"])
            for start in range(state["rows_done"], n, chunk_size):
                chunk = rows[start:start + chunk_size]
                reps = _encode_chunk(encoder, get_texts(chunk), resolved, config.token, batch_size,
                                     config.max_seq_len, dev, prec, bar=bar)   # (c, L, H)
                for j, writer in enumerate(writers):
                    writer.write(start, reps[:, j])
                labels.write(start, get_labels(chunk))
                for writer in writers + [labels]:
                    writer.file.flush()
                state["rows_done"] = int(start + len(chunk))
                write_json_atomic(state_file, state)
    finally:
        for writer in writers + [labels]:
            writer.close()


def iter_chunks(array: np.ndarray, chunk_size: int = 8192) -> Iterator[np.ndarray]:
    """Float32 copies of consecutive row blocks of a (memory-mapped) array."""
    for start in range(0, len(array), chunk_size):
        yield np.array(array[start:start + chunk_size], dtype=np.float32)


# ---------------------------------------------------------------------------- analysis inputs
def analysis_encoder(model: str = "embedded", task: str | None = None, *, finetuned: bool = False,
                     seed: int = 0, max_train_samples: int | None = 1000,
                     max_eval_samples: int | None = 500, max_seq_len: int = 64, epochs: float = 1.0,
                     store=None, progress: bool = False) -> Encoder:
    """The pretrained encoder, or the encoder of ``model`` fine-tuned on ``task`` with the
    standard recipe (:func:`bertdims.finetune`, run through the store: trained once, then read
    back)."""
    from ..modeling.models import cached_encoder
    if not finetuned:
        return cached_encoder(model)
    run = standard_finetune(model, task, seed=seed, max_train_samples=max_train_samples,
                            max_eval_samples=max_eval_samples, max_seq_len=max_seq_len, epochs=epochs,
                            store=store, progress=progress)
    return as_encoder(run.load(), name=f"{model}+{task}(seed {seed})")


def standard_finetune(model: str, task: str, *, seed: int = 0, max_train_samples: int | None = 1000,
                      max_eval_samples: int | None = 500, max_seq_len: int = 64, epochs: float = 1.0,
                      store=None, progress: bool = False):
    """The standard fine-tuning run (:class:`bertdims.FinetuneConfig` defaults otherwise) used by
    the analyses: trained once through the store, then read back. Returns the ``FinetuneRun``."""
    from ..train.finetuning import FinetuneConfig, finetune
    config = FinetuneConfig(model=model, task=task, seed=seed, max_train_samples=max_train_samples,
                            max_eval_samples=max_eval_samples, max_seq_len=max_seq_len, epochs=epochs)
    return finetune(config, store=store, progress=progress, keep_model=True)   # it is loaded


def task_arrays(encoder, task: str, *, max_train_samples: int | None, max_eval_samples: int | None,
                max_seq_len: int, layer: int = -1, token: str = "cls", eval_split: str = "test",
                store=None, progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X_train (n, H), y_train, X_test (m, H), y_test) from stored extractions; the rows are the
    fixed subsets fine-tuning uses (:func:`sample_indices`)."""
    kw = dict(layers=[layer], token=token, max_seq_len=max_seq_len, store=store, progress=progress)
    tr = extract(encoder, task, "train", max_samples=max_train_samples, **kw)
    te = extract(encoder, task, eval_split, max_samples=max_eval_samples, **kw)
    return np.asarray(tr[layer]), tr.labels, np.asarray(te[layer]), te.labels


def general_array(encoder, *, max_samples: int | None, max_seq_len: int, layer: int = -1,
                  token: str = "cls", store=None, progress: bool = False) -> np.ndarray:
    """Representations (n, H) of a seeded random sample of the general-English corpus."""
    rep = extract(encoder, GENERAL, "train", layers=[layer], token=token, max_samples=max_samples,
                  max_seq_len=max_seq_len, store=store, progress=progress)
    return np.asarray(rep[layer])
