"""One encoder answering several tasks at once, each task reading its own few dimensions.

Few Dimensions are Enough (Discussion, "parallel multi-task processing"): if a task needs only
2-3 dimensions of the last layer, one fine-tuned BERT could serve several tasks in parallel,
each task's head reading its own small, disjoint set of dimensions. This module builds and
trains that model:

* :class:`MultitaskModel`: one Hugging Face encoder and one linear head per task; head ``t``
  reads ``representation[:, dims[t]]`` (the layer/token vector restricted to the task's
  dimensions), standardised with fixed statistics of the task's training split like the
  engine's heads (:class:`bertdims.train.heads.Head`). ``forward`` runs the encoder **once** and
  returns every task's logits.
* :class:`MultitaskConfig` and :func:`finetune_multitask`: joint fine-tuning with a task sampler
  (see :class:`TaskSampler`), every run kept in the results store under kind ``"multitask"``
  with the saved model (``load_multitask(run.model_dir)``).

The chapter ``book/06_cross_finetuning.ipynb`` compares each task of the joint model with its
single-task model fine-tuned on the same dimensions (:func:`bertdims.analysis.crossft.multitask_vs_single`).
"""
from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .loop import LoopState, accelerator, load_checkpoint, run_device, run_loop, save_checkpoint
from ..core._validate import ConfigMixin, bad, check_choice, check_range
from ..core import progress as _progress
from ..core.device import autocast, pick_device, pick_precision
from ..core.result import ResultFields
from ..config.params import Check, Interval, Options, check_fields, own, param
from ..modeling.tokens import check_token, select_token

SAMPLERS = ("proportional", "round_robin")
EMBEDDED_CLASSIFICATION_TASKS = ["rotten_tomatoes", "bbc_news", "reuters_r8", "20newsgroups"]
KIND = "multitask"
#: Part of every stored joint run's key: 2 heads read their dimensions standardised with fixed
#: training-split statistics, as the engine's heads do (:class:`bertdims.train.heads.Head`).
MULTITASK_VERSION = 2


# ---------------------------------------------------------------------------- validation
def check_task_list(name: str, tasks: Sequence[str], *, min_len: int = 1) -> list[str]:
    """A list of distinct task names (registered ones when the registry can be read)."""
    if isinstance(tasks, str) or not isinstance(tasks, Sequence):
        raise bad(name, tasks, "expected a list of task names, e.g. ['rotten_tomatoes', 'bbc_news']")
    tasks = list(tasks)
    if len(tasks) < min_len:
        raise bad(name, tasks, f"give at least {min_len} task name(s)")
    for t in tasks:
        if not isinstance(t, str):
            raise bad(name, tasks, f"every task must be a name (str); {t!r} is not")
    repeated = sorted({t for t in tasks if tasks.count(t) > 1})
    if repeated:
        raise bad(name, tasks, f"each task may be listed once; listed more than once: {repeated}")
    return tasks


def check_disjoint_dims(name: str, dim_sets: Sequence[Sequence[int]], tasks: Sequence[str],
                        hidden_size: int | None = None) -> list[list[int]]:
    """One non-empty set of distinct dimensions per task, the sets pairwise disjoint, and
    (when ``hidden_size`` is given) every dimension in ``[0, hidden_size)``."""
    if isinstance(dim_sets, (str, bytes)) or not isinstance(dim_sets, Sequence):
        raise bad(name, dim_sets, "expected one list of dimensions per task, e.g. [[3, 17], [5, 80]]")
    sets = [list(s) if isinstance(s, Sequence) and not isinstance(s, str) else s for s in dim_sets]
    if len(sets) != len(tasks):
        raise bad(name, dim_sets, f"give exactly one list of dimensions per task ({len(tasks)} tasks: "
                  f"{list(tasks)}), got {len(sets)}")
    owner: dict[int, str] = {}
    for task, dims in zip(tasks, sets):
        if not isinstance(dims, list) or len(dims) == 0:
            raise bad(name, dim_sets, f"the dimensions of task {task!r} must be a non-empty list of integers")
        for d in dims:
            if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0:
                raise bad(name, dim_sets, f"dimensions are integers >= 0; task {task!r} has {d!r}")
            if hidden_size is not None and d >= hidden_size:
                raise bad(name, dim_sets, f"every dimension must be in [0, {hidden_size - 1}] (the model's "
                          f"hidden size is {hidden_size}); task {task!r} has {d}")
        if len(set(dims)) != len(dims):
            raise bad(name, dim_sets, f"task {task!r} lists a dimension twice: {dims}")
        for d in dims:
            if int(d) in owner:
                raise bad(name, dim_sets, f"the dimension sets must be disjoint; dimension {d} is read by "
                          f"both {owner[int(d)]!r} and {task!r}")
            owner[int(d)] = task
    return [[int(d) for d in s] for s in sets]


def _dim_lists(value):
    """One list (or tuple) of dimensions per task; what the lists hold, how many there are and
    whether they overlap is checked against the tasks (:func:`check_disjoint_dims`)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not all(
            isinstance(s, Sequence) and not isinstance(s, (str, bytes)) for s in value):
        raise bad("dims", value, "expected one list of dimensions per task, e.g. [[3, 17], [5, 80]]")
    return value


def resolve_layer(layer: int, num_layers: int) -> int:
    """``hidden_states`` index of ``layer`` (0 = embeddings, -1 = last block)."""
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) \
            or not -(num_layers + 1) <= layer <= num_layers:
        raise bad("layer", layer, f"expected an integer in [-{num_layers + 1}, {num_layers}] "
                  f"(0 = embedding output, -1 = the last of the model's {num_layers} layers)")
    return int(layer) % (num_layers + 1)


# ---------------------------------------------------------------------------- the model
class MultitaskModel(nn.Module):
    """One encoder, one linear head per task; head ``t`` reads the dimensions ``dims[t]``.

    Parameters
    ----------
    encoder : a Hugging Face ``AutoModel`` (returns ``hidden_states``)
    tokenizer : its tokenizer
    tasks : task names, in order
    dims : one list of hidden dimensions per task (disjoint)
    num_labels : outputs of each task's head (1 for regression)
    layer, token : which layer output and which token vector the heads read
    dropout : dropout on the selected dimensions during training
    base_model : name of the pretrained encoder it started from (kept in the saved layout)
    max_seq_len : truncation length used by :meth:`predict` and :meth:`single_task`
    """

    def __init__(self, encoder: nn.Module, tokenizer, tasks: Sequence[str], dims: Sequence[Sequence[int]],
                 num_labels: Sequence[int], *, layer: int = -1, token: str = "cls", dropout: float = 0.1,
                 base_model: str = "embedded", max_seq_len: int = 128):
        super().__init__()
        hidden = int(encoder.config.hidden_size)
        self.num_layers = int(encoder.config.num_hidden_layers)   # read by build_optimizer
        self.base_model, self.max_seq_len = str(base_model), int(max_seq_len)
        self.tasks = check_task_list("tasks", tasks)
        self.dims = check_disjoint_dims("dims", dims, self.tasks, hidden)
        if len(num_labels) != len(self.tasks):
            raise bad("num_labels", list(num_labels), f"give one number per task ({len(self.tasks)})")
        self.encoder, self.tokenizer = encoder, tokenizer
        self.layer = resolve_layer(layer, int(encoder.config.num_hidden_layers))
        self.token = check_token(token)
        self.num_labels = [int(n) for n in num_labels]
        from .heads import Head
        self.dropout = nn.Dropout(dropout)          # its rate; each Head applies it after scaling
        self.heads = nn.ModuleDict({t: Head("linear", len(d), n, dropout=dropout) for t, d, n in
                                    zip(self.tasks, self.dims, self.num_labels)})
        for t, d in zip(self.tasks, self.dims):
            self.register_buffer(f"dims_{self.tasks.index(t)}", torch.tensor(d, dtype=torch.long),
                                 persistent=False)

    def _dims(self, i: int) -> torch.Tensor:
        return getattr(self, f"dims_{i}")

    def representation(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        """The chosen layer's token vector, all dimensions: (B, H)."""
        kw = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              output_hidden_states=True, **kw).hidden_states
        return select_token(states[self.layer], attention_mask, self.token)      # (B, H)

    def heads_on(self, rep: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every task's logits from a representation (B, H): task -> (B, num_labels)."""
        return {t: self.heads[t](rep[:, self._dims(i)]) for i, t in enumerate(self.tasks)}

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> dict[str, torch.Tensor]:
        """One encoder pass, every task's logits: ``{task: (B, num_labels)}``."""
        return self.heads_on(self.representation(input_ids, attention_mask, token_type_ids))

    def task_logits(self, task: str, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        """One task's logits (B, num_labels): its head on its own dimensions."""
        i = self.tasks.index(task)
        rep = self.representation(input_ids, attention_mask, token_type_ids)
        return self.heads[task](rep[:, self._dims(i)])

    def single_task(self, task: str):
        """Task ``task`` alone as the engine's :class:`~bertdims.train.heads.SelectiveClassifier`:
        it shares this model's encoder and the task's head (no copy), reads the same layer,
        token and dimensions, and works with ``bertdims.train.finetuning.evaluate`` and
        ``save_finetuned``."""
        from .finetuning import FinetuneConfig
        from .heads import SelectiveClassifier
        from ..data.tasks import get_task
        if task not in self.tasks:
            raise bad("task", task, "choose one of the model's tasks: " + ", ".join(self.tasks))
        i = self.tasks.index(task)
        # explicit, not params.derive: the values come from this model (its resolved layer,
        # one task's dimensions, the Dropout's rate), not from a config's fields
        config = FinetuneConfig(model=self.base_model, task=task, dims=list(self.dims[i]), head="linear",
                                layer=-1 if self.layer == self.num_layers else self.layer,
                                token=self.token, dropout=float(self.dropout.p), max_seq_len=self.max_seq_len)
        clf = SelectiveClassifier(self.encoder, self.tokenizer, config, get_task(task))
        clf.head = self.heads[task]
        return clf.to(next(self.parameters()).device).train(self.training)

    @torch.no_grad()
    def predict(self, texts: Sequence, *, batch_size: int = 32, max_seq_len: int | None = None
                ) -> dict[str, np.ndarray]:
        """Predictions of every task for the same texts (one encoder pass per batch):
        ``{task: (N,) class ids, or scores for regression heads}``."""
        max_seq_len = max_seq_len or self.max_seq_len
        self.eval()
        device = next(self.parameters()).device
        out: dict[str, list] = {t: [] for t in self.tasks}
        texts = list(texts)
        for start in range(0, len(texts), batch_size):
            batch = tokenize(self.tokenizer, texts[start:start + batch_size], max_seq_len)
            logits = self(**{k: v.to(device) for k, v in batch.items()})
            for t, n in zip(self.tasks, self.num_labels):
                y = logits[t].float()
                out[t].append((y[:, 0] if n == 1 else y.argmax(-1)).cpu().numpy())
        return {t: np.concatenate(v) if v else np.empty(0) for t, v in out.items()}

    # ---------------------------------------------------------------- saving
    def save(self, folder: str | Path, extra: dict | None = None) -> Path:
        """Save encoder, tokenizer, heads and the layout (``multitask.json``) to ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(folder / "encoder")
        self.tokenizer.save_pretrained(folder / "encoder")
        torch.save({k: v.detach().cpu() for k, v in self.heads.state_dict().items()}, folder / "heads.pt")
        layout = {"tasks": self.tasks, "dims": self.dims, "num_labels": self.num_labels,
                  "layer": self.layer, "token": self.token, "dropout": float(self.dropout.p),
                  "base_model": self.base_model, "max_seq_len": self.max_seq_len}
        (folder / "multitask.json").write_text(json.dumps({**layout, **(extra or {})}, indent=2))
        return folder


def load_multitask(folder: str | Path, device: str = "cpu") -> MultitaskModel:
    """Load a model saved by :meth:`MultitaskModel.save` (or a ``multitask`` store run).

    Parameters
    ----------
    folder : str or pathlib.Path
        The saved folder (``multitask.json``, ``heads.pt`` and ``encoder/``), or a run folder
        that holds it as ``model/`` (``MultitaskRun.model_dir`` or a store run's path).
    device : str
        Where to put the model.

    Returns
    -------
    MultitaskModel
        The encoder with every task's head, in eval mode on ``device``.

    Raises
    ------
    ConfigError
        If ``folder`` holds no ``multitask.json`` (directly or under ``model/``).
    """
    from transformers import AutoTokenizer

    from .heads import load_backbone
    folder = Path(folder)
    if (folder / "model" / "multitask.json").exists():
        folder = folder / "model"
    if not (folder / "multitask.json").exists():
        raise bad("model_dir", str(folder), "expected a folder written by MultitaskModel.save "
                  "(it holds multitask.json, heads.pt and encoder/)")
    layout = json.loads((folder / "multitask.json").read_text())
    encoder = load_backbone(str(folder / "encoder"))
    tokenizer = AutoTokenizer.from_pretrained(folder / "encoder")
    model = MultitaskModel(encoder, tokenizer, layout["tasks"], layout["dims"], layout["num_labels"],
                           layer=layout["layer"], token=layout["token"], dropout=layout["dropout"],
                           base_model=layout["base_model"], max_seq_len=layout["max_seq_len"])
    model.heads.load_state_dict(torch.load(folder / "heads.pt", map_location="cpu", weights_only=True))
    return model.to(device).eval()


# ---------------------------------------------------------------------------- data
def tokenize(tokenizer, texts: list, max_seq_len: int) -> dict[str, torch.Tensor]:
    """Pad a batch of texts (or (a, b) pairs) to its longest sequence: tensors (B, T)."""
    if texts and isinstance(texts[0], (tuple, list)):
        a, b = [t[0] for t in texts], [t[1] for t in texts]
        return dict(tokenizer(a, b, truncation=True, max_length=max_seq_len, padding=True, return_tensors="pt"))
    return dict(tokenizer(list(texts), truncation=True, max_length=max_seq_len, padding=True,
                          return_tensors="pt"))


class TaskSampler:
    """The order in which a joint training run visits the tasks, one batch per step.

    Every task contributes ``ceil(epochs * n_t / batch_size)`` batches, so each task sees its
    training data ``epochs`` times, as in its single-task run, and the run takes as many steps
    as all single-task runs together.

    * ``"proportional"``: those batches in a random order (seeded), so at every point of
      training a task is drawn with probability proportional to its size.
    * ``"round_robin"``: tasks in turn (t0, t1, t2, t0, ...); a task whose batches are used
      up drops out of the rotation.
    """

    def __init__(self, sizes: Sequence[int], batch_size: int, epochs: float = 1.0,
                 mode: str = "proportional", seed: int = 0):
        check_choice("sampler", mode, SAMPLERS)
        self.sizes, self.batch_size, self.epochs, self.mode, self.seed = list(sizes), batch_size, epochs, mode, seed

    def counts(self) -> list[int]:
        return [max(1, math.ceil(self.epochs * n / self.batch_size)) if n > 0 else 0 for n in self.sizes]

    def order(self) -> np.ndarray:
        """Task index of every step: (total_steps,) int."""
        counts = self.counts()
        if self.mode == "proportional":
            seq = np.repeat(np.arange(len(counts)), counts)
            return np.random.default_rng(self.seed).permutation(seq)
        left, seq = list(counts), []
        while any(left):
            for i in range(len(left)):
                if left[i]:
                    seq.append(i)
                    left[i] -= 1
        return np.array(seq, dtype=int)


# ---------------------------------------------------------------------------- config
@dataclass
class MultitaskConfig(ConfigMixin):
    """Joint fine-tuning of one encoder with one linear head per task.

    The fields shared with :class:`bertdims.train.finetuning.FinetuneConfig` mean what they mean
    there, with the same defaults, and the optimisation is the engine's (``build_optimizer``:
    AdamW, ``lr`` for the top block decayed by ``layer_lr_decay`` per layer below, ``head_lr``
    or 1e-3 for the heads; ``slanted_triangular`` schedule over all steps). A joint run has no
    early stopping and keeps its last state.

    Parameters
    ----------
    model : str
        The base encoder: ``"embedded"``, a hub name or a local folder.
    tasks : list of str
        Distinct registered task names; one head each (one name is read as a list of one).
        Default: the four embedded classification tasks (rotten_tomatoes, bbc_news, reuters_r8,
        20newsgroups).
    dims : list of list of int or None
        One list of hidden dimensions per task, in the order of ``tasks``, pairwise disjoint
        (the paper's 2-3 per task), stored as lists of ints; ``None`` gives task ``i`` the
        block ``[i*k, (i+1)*k)`` with ``k = dims_per_task``. Unlike
        :class:`~bertdims.train.finetuning.FinetuneConfig`'s ``dims`` (one head), one list per head.
    dims_per_task : int
        Dimensions per task when ``dims`` is None.
    layer : int
        The layer every head reads: 0 the embeddings, 1..L the blocks, negative values count
        from the end (-1 the last block).
    token : str
        The token vector the heads read: ``cls``, ``mean``, ``maxnorm`` or ``token:i``.
    sampler : str
        The order of the tasks' batches, ``"proportional"`` or ``"round_robin"``
        (:class:`TaskSampler`).
    epochs : float
        Passes over each task's training set.
    lr : float
        Peak learning rate of the top block.
    head_lr : float or None
        Peak learning rate of the heads; None uses 1e-3.
    layer_lr_decay : float
        Factor of the learning rate from one layer to the one below it.
    warmup : float
        Fraction of all steps with rising learning rate.
    batch_size : int
        Examples per step (each step is one task's batch).
    dropout : float
        Dropout on each task's selected dimensions, before its head.
    weight_decay : float
        AdamW weight decay.
    max_grad_norm : float or None
        Gradient clipping norm (None: off).
    max_train_samples, max_eval_samples : int or None
        Fixed random subsets of each task's training split / evaluation splits, the same as a
        single-task run with these limits takes.
    train_holdout : float
        Leave out the part of each task's training subset that a single-task run with
        ``early_stopping_fraction = train_holdout`` holds out, so that the joint and
        single-task models train on the same examples.
    max_seq_len : int
        Tokens per input; longer inputs are truncated.
    seed : int
        Seeds the heads' initialisation, the task order and the batch order.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:<index>"``.
    precision : str
        ``"auto"``, ``"fp32"`` or ``"bf16"``.

    Raises
    ------
    ConfigError
        When a field has a wrong type or value: unknown or repeated tasks, dimension sets that
        overlap or do not match the tasks, out-of-range numbers.
    """

    model: str = param("model")
    tasks: list = param("tasks", list(EMBEDDED_CLASSIFICATION_TASKS))
    # not the vocabulary's "dims" (one list for one head): one list per task, checked with tasks
    dims: list | None = own(None, Check(_dim_lists), "one list of hidden dimensions per task, "
                            "pairwise disjoint; None: blocks of dims_per_task", none=True)
    dims_per_task: int = own(3, Interval(int, 1, None), "dimensions per task when dims is None")
    # wider than the vocabulary's layer (-1..L): any negative value counts from the end, checked
    # against the model's size in validate (resolve_layer)
    layer: int = own(-1, Interval(int, None, None), "the layer every head reads: 0 the "
                     "embeddings, 1..L the blocks, negative values count from the end")
    token: str = param("token")
    sampler: str = own("proportional", Options(SAMPLERS), "the order of the tasks' batches: "
                       "proportional or round_robin")
    epochs: float = param("epochs")
    lr: float = param("lr")
    head_lr: float | None = param("head_lr")
    layer_lr_decay: float = param("layer_lr_decay")
    warmup: float = param("warmup")
    batch_size: int = param("batch_size")
    dropout: float = param("dropout")
    weight_decay: float = param("weight_decay")
    max_grad_norm: float | None = param("max_grad_norm")
    max_train_samples: int | None = param("max_train_samples")
    max_eval_samples: int | None = param("max_eval_samples")
    train_holdout: float = own(0.0, Interval(float, 0, 1, "left"), "the share of each task's "
                               "training subset left out, as a single-task run with "
                               "early_stopping_fraction equal to it holds out")
    max_seq_len: int = param("max_seq_len")
    seed: int = param("seed")
    device: str = param("device")
    precision: str = param("precision")

    def __post_init__(self):
        check_fields(self)      # every field against its constraint (unknown tasks fail here)
        if self.dims is not None:
            self.dims = check_disjoint_dims("dims", self.dims, self.tasks)

    def dim_sets(self) -> list[list[int]]:
        if self.dims is not None:
            return [list(d) for d in self.dims]
        k = self.dims_per_task
        return [list(range(i * k, (i + 1) * k)) for i in range(len(self.tasks))]

    def validate(self, num_layers: int, hidden_size: int, max_positions: int | None = None) -> None:
        """Checks that need the model's size: dims in range, layer in range, seq length."""
        check_disjoint_dims("dims", self.dim_sets(), self.tasks, hidden_size)
        resolve_layer(self.layer, num_layers)
        if max_positions is not None:
            check_range("max_seq_len", self.max_seq_len, 2, max_positions, integer=True)


# ---------------------------------------------------------------------------- training
@dataclass
class MultitaskRun(ResultFields):
    """A finished joint run, with the shape of every result (:mod:`bertdims.core.result`).

    Attributes
    ----------
    config : MultitaskConfig
        The config of the run.
    scores : pandas.DataFrame
        The tidy metrics table: one row per (task, split, metric), columns ``task``,
        ``split``, ``metric``, ``value``.
    history : pandas.DataFrame
        The loss history: one row per (step, task), columns ``step``, ``task``, ``loss``.
    model_dir : pathlib.Path
        The folder of the saved model (:meth:`load`).
    path : pathlib.Path or None
        The run's folder in the store, or None when trained into ``out_dir``.
    metrics : dict
        ``{task: {split: {metric: value}}}``, read from ``scores``.
    """

    config: MultitaskConfig
    scores: pd.DataFrame
    history: pd.DataFrame
    model_dir: Path
    path: Path | None = None

    @property
    def metrics(self) -> dict:
        """``{task: {split: {metric: value}}}``: every task's metrics on every split."""
        found: dict = {}
        for row in self.scores.to_dict("records"):
            found.setdefault(row["task"], {}).setdefault(row["split"], {})[row["metric"]] = float(row["value"])
        return found

    def load(self, device: str = "cpu") -> MultitaskModel:
        return load_multitask(self.model_dir, device=device)

    def score(self, task: str, split: str = "test", metric: str | None = None) -> float:
        """``task``'s metric (its headline metric by default) on ``split``."""
        from ..data.tasks import get_task
        return self.metrics[task][split][metric or get_task(task).metric]


def evaluate_multitask(model: MultitaskModel, splits: dict[str, object], *, batch_size: int = 64,
                       max_seq_len: int = 128, device="cpu", precision: str = "fp32") -> pd.DataFrame:
    """Metrics of every task on its own examples: ``splits = {task: datasets.Dataset}``, each
    task scored through :meth:`MultitaskModel.single_task` with the engine's ``evaluate``.
    Returns a tidy table (task, metric, value)."""
    from ..data.tasks import get_task
    from .training import evaluate, make_loader
    rows = []
    for name in model.tasks:
        task = get_task(name)
        loader = make_loader(task, splits[name], model.tokenizer, batch_size=batch_size,
                             max_seq_len=max_seq_len, shuffle=False)
        for metric, value in evaluate(model.single_task(name), loader, task, device, precision).items():
            rows.append({"task": name, "metric": metric, "value": float(value)})
    return pd.DataFrame(rows, columns=["task", "metric", "value"])


def task_splits(task: str, config: MultitaskConfig) -> dict:
    """The examples of one task in a joint run: exactly those of a single-task run with the
    same sample limits and ``early_stopping_fraction = config.train_holdout``
    (:func:`bertdims.train.finetuning.prepare_splits`; its ``dev`` part is not used here)."""
    from .finetuning import prepare_splits
    return prepare_splits(task, max_train_samples=config.max_train_samples,
                          max_eval_samples=config.max_eval_samples,
                          early_stopping_fraction=config.train_holdout)


#: Resumable checkpoints of a joint run: this many in all, evenly spaced over its steps.
CHECKPOINTS = 10


def _after_step(step: int) -> None:
    """Called after every optimizer step of a joint run (tests replace it to stop a run)."""


def _train(config: MultitaskConfig, out_dir: Path, progress: bool, ckpt_dir: Path | None = None
           ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and evaluate; with ``ckpt_dir``, resumable checkpoints (the fine-tuning engine's:
    trainable weights, optimizer, schedule, random states, the loss history), so that a run
    killed part-way and started again ends where an uninterrupted run ends."""
    from tqdm.auto import tqdm

    from .heads import load_backbone
    from ..modeling.models import resolve_model
    from ..data.tasks import get_task
    from .training import _model_inputs, build_optimizer, encode_split, make_loader, slanted_triangular
    from transformers import AutoTokenizer

    path = resolve_model(config.model)
    encoder = load_backbone(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    device = pick_device(config.device)
    precision = pick_precision(config.precision, device)
    acc = accelerator(device)
    device = run_device(acc, device)
    tasks = [get_task(t) for t in config.tasks]
    splits = [task_splits(t, config) for t in config.tasks]
    torch.manual_seed(config.seed)
    model = MultitaskModel(encoder, tokenizer, config.tasks, config.dim_sets(),
                           [t.num_labels for t in tasks], layer=config.layer, token=config.token,
                           dropout=config.dropout, base_model=config.model,
                           max_seq_len=config.max_seq_len).to(device)
    train = [encode_split(t, s["train"], tokenizer, config.max_seq_len) for t, s in zip(tasks, splits)]
    _fit_head_stats(model, tasks, train, tokenizer, config, device, precision)
    order = TaskSampler([len(d) for d in train], config.batch_size, config.epochs,
                        config.sampler, config.seed).order()
    optimizer = build_optimizer(model, config)
    schedule = slanted_triangular(optimizer, len(order), config.warmup)
    prepared = acc.prepare(model)
    optimizer = acc.prepare(optimizer)
    passes, streams = [0] * len(tasks), [None] * len(tasks)
    state = LoopState()
    cfg = {**config.to_dict(), "multitask_version": MULTITASK_VERSION}
    if ckpt_dir is not None:
        state = load_checkpoint(ckpt_dir, cfg, model, optimizer, schedule) or state

    def next_batch(i: int) -> dict:
        while True:
            if streams[i] is None:   # a new shuffled pass over task i's training examples
                streams[i] = iter(make_loader(tasks[i], train[i], tokenizer, batch_size=config.batch_size,
                                              max_seq_len=config.max_seq_len, shuffle=True,
                                              seed=config.seed * 1000 + passes[i]))
                passes[i] += 1
            batch = next(streams[i], None)
            if batch is not None:
                return batch
            streams[i] = None

    def skip(i: int, n: int) -> None:         # the batches task i used before the checkpoint
        per_pass = math.ceil(len(train[i]) / config.batch_size)   # batches of a shuffled pass
        passes[i] = n // per_pass
        if n % per_pass:
            streams[i] = iter(make_loader(tasks[i], train[i], tokenizer, batch_size=config.batch_size,
                                          max_seq_len=config.max_seq_len, shuffle=True,
                                          seed=config.seed * 1000 + passes[i]))
            passes[i] += 1
            for _ in range(n % per_pass):
                next(streams[i])

    start = state.step
    for i, n in enumerate(np.bincount(order[:start].astype(int), minlength=len(tasks))):
        if n:
            skip(i, int(n))
    model.train()

    def train_step(step: int) -> tuple[torch.Tensor, int]:
        i = int(order[step])
        batch = next_batch(i)
        with autocast(device, precision):
            logits = prepared.task_logits(config.tasks[i], **_model_inputs(batch, device)).float()
        y = batch["labels"].to(device)
        loss = nn.functional.mse_loss(logits[:, 0], y) if tasks[i].is_regression \
            else nn.functional.cross_entropy(logits, y)
        acc.backward(loss)
        return loss.detach().double() * len(y), len(y)       # mean loss x examples: exact

    def on_step(step: int, loss_sum: torch.Tensor, count: int, lr: float) -> None:
        state.history.append({"step": step - 1, "task": config.tasks[int(order[step - 1])],
                              "loss": float(loss_sum) / count})

    def clip() -> None:
        acc.clip_grad_norm_(model.parameters(), config.max_grad_norm)

    def checkpoint(state: LoopState) -> None:
        save_checkpoint(ckpt_dir, cfg, state, model, optimizer, schedule, acc)

    bar = tqdm(total=len(order), initial=start, disable=not progress, desc="multitask", leave=False)
    run_loop(state, len(order), train_step=train_step, optimizer=optimizer, scheduler=schedule,
             clip=clip if config.max_grad_norm is not None else None,
             checkpoint=None if ckpt_dir is None else checkpoint,
             checkpoint_every=max(1, len(order) // CHECKPOINTS), on_step=on_step,
             after_step=lambda step: _after_step(step), bar=bar, device=device)
    bar.close()
    model.eval()
    rows = []
    for split in ("validation", "test"):
        m = evaluate_multitask(model, {t: s[split] for t, s in zip(config.tasks, splits)},
                               max_seq_len=config.max_seq_len, device=device, precision=precision)
        rows.append(m.assign(split=split))
    model.to("cpu").save(out_dir / "model", extra={"config": config.to_dict()})
    metrics = pd.concat(rows, ignore_index=True)[["task", "split", "metric", "value"]]
    return metrics, pd.DataFrame(state.history, columns=["step", "task", "loss"])


@torch.no_grad()
def _fit_head_stats(model: MultitaskModel, tasks, train, tokenizer, config, device, precision) -> None:
    """Each head's fixed input statistics from its task's training features, read by the
    pretrained encoder in training mode (with its dropout, as the engine does when the encoder
    trains), before the first step."""
    from .training import _model_inputs, make_loader
    model.train()
    for i, (task, data) in enumerate(zip(tasks, train)):
        feats, labels = [], []
        loader = make_loader(task, data, tokenizer, batch_size=64, max_seq_len=config.max_seq_len,
                             shuffle=False)
        for batch in loader:
            with autocast(device, precision):
                rep = model.representation(**_model_inputs(batch, device))
            feats.append(rep[:, model._dims(i)].float().cpu())
            labels.append(batch["labels"].float())
        y = torch.cat(labels) if task.is_regression else None
        model.heads[task.name].fit_stats(torch.cat(feats), y)


def check_model(config: MultitaskConfig) -> None:
    """:meth:`MultitaskConfig.validate` against the model's size, read from its config only."""
    from transformers import AutoConfig

    from ..modeling.models import resolve_model
    cfg = AutoConfig.from_pretrained(resolve_model(config.model))
    config.validate(int(cfg.num_hidden_layers), int(cfg.hidden_size),
                    int(getattr(cfg, "max_position_embeddings", 512) or 512))


def finetune_multitask(config: MultitaskConfig, *, store=None, out_dir: str | Path | None = None,
                      progress: bool = True) -> MultitaskRun:
    """Fine-tune one encoder jointly on several tasks and evaluate every task.

    One linear head per task reads its own dimensions; each task is evaluated on its
    validation and test splits, and the model is saved. A run killed part-way in a store
    resumes from its last checkpoint.

    Parameters
    ----------
    config : MultitaskConfig
        The joint run: model, tasks, dimensions, sampler and schedule.
    store : ResultStore, optional
        Keep the run under kind ``"multitask"`` (the model in ``<run>/model``); the same
        config is then read back instead of retrained.
    out_dir : str or pathlib.Path, optional
        Without a ``store``, the folder the model is saved in (as ``<out_dir>/model``);
        required then, and not used with a ``store``.
    progress : bool
        Show a progress bar.

    Returns
    -------
    MultitaskRun
        The config; ``metrics``, a table with one row per task, split and metric, columns
        task, split, metric, value; ``history``, one row per training step, columns step,
        task, loss; and ``model_dir`` (:func:`load_multitask`).

    Raises
    ------
    ConfigError
        If neither ``store`` nor ``out_dir`` is given, or the config does not fit the model
        (dimensions beyond its hidden size, a layer it lacks, ``max_seq_len`` above its
        positions).
    """
    check_model(config)
    if store is None:
        if out_dir is None:
            raise bad("out_dir", None, "give a results store (store=...) or a folder for the model (out_dir=...)")
        out_dir = Path(out_dir)
        metrics, history = _train(config, out_dir, progress)
        return MultitaskRun(config, metrics, history, out_dir / "model")
    from ..modeling.models import fingerprint_of
    fingerprint = fingerprint_of(config.model)
    key_cfg = {**config.to_dict(), "multitask_version": MULTITASK_VERSION}
    key = store.key(KIND, key_cfg, fingerprint)
    run = store.get(KIND, key)
    if run is None:
        with store.lock(KIND, key):           # one process trains a key; the others read it
            run = store.get(KIND, key)
            if run is None:
                ckpt_dir = store.root / KIND / ".checkpoints" / key
                started = time.perf_counter(); _progress.run_started(KIND, key, key_cfg)  # noqa: E702
                with store.writing(KIND, key_cfg, fingerprint, key=key) as tmp:
                    metrics, history = _train(config, Path(tmp), progress, ckpt_dir)
                    metrics.to_csv(Path(tmp) / "metrics.csv", index=False)
                    history.to_csv(Path(tmp) / "history.csv", index=False)
                    (Path(tmp) / "result.json").write_text(
                        json.dumps({"finished": time.strftime("%Y-%m-%dT%H:%M:%S")}))
                shutil.rmtree(ckpt_dir, ignore_errors=True)
                _progress.run_finished(KIND, key, time.perf_counter() - started, cached=False)
                run = store.get(KIND, key)
    return MultitaskRun(config, run.table("metrics"), run.table("history"), run.path / "model", run.path)
