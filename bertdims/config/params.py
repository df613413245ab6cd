"""The one vocabulary of config fields.

Every field a config shares with another (``model``, ``task``, ``layer``, ``token``,
``max_seq_len``, ``lr``, ...) is declared once in :data:`VOCABULARY`, with its default, the
values it allows and a one-line meaning. A config declares such a field with :func:`param`
(``lr: float = param("lr")``); a field of its own with :func:`own` (its constraint next to
it). :func:`check_fields` is the one validator, in the spirit of scikit-learn's
``_parameter_constraints``: it checks every declared field of a config and names the
parameter, the value and what is allowed. ``flags.add_flags`` turns a config class into
command-line flags (:func:`bertdims.cli.flags.add_flags`), so the ``bertdims`` sub-commands take
the same names, defaults and checks.

A config may give a shared field another default (``param("epochs", 1.0)``; the studies take
the book's scale from :data:`STUDY_SCALE` with :func:`study_param`); the constraint and the
meaning stay the vocabulary's.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core._validate import bad, check_choice, check_range


# ---------------------------------------------------------------------------- constraints
@dataclass(frozen=True)
class Interval:
    """A number (``kind`` int or float) in ``[low, high]``; ``closed`` says which ends belong:
    ``"both"``, ``"left"``, ``"right"`` or ``"neither"``; None is an open end at infinity."""
    kind: type
    low: float | None = None
    high: float | None = None
    closed: str = "both"

    def check(self, name: str, value: Any) -> Any:
        check_range(name, value, self.low, self.high, integer=self.kind is int,
                    low_open=self.closed in ("right", "neither"),
                    high_open=self.closed in ("left", "neither"))
        return value

    def cli_type(self) -> Callable[[str], Any]:
        return self.kind


@dataclass(frozen=True)
class Options:
    """One of ``values``."""
    values: tuple

    def check(self, name: str, value: Any) -> Any:
        check_choice(name, value, self.values)
        return value

    def cli_type(self) -> Callable[[str], Any]:
        return str


@dataclass(frozen=True)
class Text:
    """A non-empty string."""
    what: str = "a non-empty string"

    def check(self, name: str, value: Any) -> Any:
        if not isinstance(value, str) or not value:
            raise bad(name, value, f"expected {self.what}")
        return value

    def cli_type(self) -> Callable[[str], Any]:
        return str


@dataclass(frozen=True)
class Flag:
    """True or False."""

    def check(self, name: str, value: Any) -> Any:
        if not isinstance(value, bool):
            raise bad(name, value, "expected True or False")
        return value

    def cli_type(self) -> Callable[[str], Any]:
        return str


@dataclass(frozen=True)
class IntList:
    """A list of integers (each an ``item``), each at least ``low``; ``"3,17"`` is read as
    ``[3, 17]`` and numpy integers become ints. ``distinct``: no repeats; ``min_len``: the
    fewest items."""
    low: int | None = None
    distinct: bool = False
    min_len: int = 1
    example: str = "[3, 17]"
    item: str = "item"

    def check(self, name: str, value: Any) -> Any:
        import numpy as np
        if isinstance(value, str):
            try:
                value = [int(t) for t in value.split(",")]
            except ValueError:
                raise bad(name, value, f"expected comma-separated integers such as "
                          f"'{self.example.strip('[]').replace(' ', '')}'") from None
        if not isinstance(value, (list, tuple, np.ndarray)):
            raise bad(name, value, f"expected a list of {self.item}s such as {self.example}")
        value = [int(v) if isinstance(v, np.integer) else v for v in value]
        if len(value) < self.min_len:
            count = "one" if self.min_len == 1 else str(self.min_len)
            raise bad(name, value, f"give at least {count} {self.item}" + ("s" if self.min_len > 1 else ""))
        for v in value:
            if isinstance(v, bool) or not isinstance(v, int) or (self.low is not None and v < self.low):
                floor = "" if self.low is None else f" >= {self.low}"
                raise bad(name, value, f"every {self.item} must be an integer{floor}; {v!r} is not")
        repeated = sorted({v for v in value if value.count(v) > 1})
        if self.distinct and repeated:
            raise bad(name, value, f"{self.item}s must be distinct; repeated: {repeated}")
        return value

    def cli_type(self) -> Callable[[str], Any]:
        return str


@dataclass(frozen=True)
class Check:
    """A value a function checks: ``fn(value)`` returns it (perhaps normalised) or raises the
    standard error; ``cli`` converts a flag's text."""
    fn: Callable[[Any], Any]
    cli: Callable[[str], Any] = str

    def check(self, name: str, value: Any) -> Any:
        return self.fn(value)

    def cli_type(self) -> Callable[[str], Any]:
        return self.cli


def _task(value: Any) -> str:
    from ..data.tasks import get_task
    if not isinstance(value, str):
        raise bad("task", value, "expected a task name")
    get_task(value)
    return value


def _tasks(value: Any) -> list[str]:
    """Distinct registered task names (one name is read as a list of one)."""
    from ..data.tasks import task_names
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise bad("tasks", value, "expected a list of task names, e.g. ['rotten_tomatoes', 'bbc_news']")
    value = list(value)
    if not value:
        raise bad("tasks", value, "give at least one task name")
    known = task_names()
    for t in value:
        if not isinstance(t, str):
            raise bad("tasks", value, f"every task must be a name (str); {t!r} is not")
        if t not in known:
            raise bad("tasks", value, f"{t!r} is not a known task; choose from: " + ", ".join(known))
    repeated = sorted({t for t in value if value.count(t) > 1})
    if repeated:
        raise bad("tasks", value, f"each task may be listed once; listed more than once: {repeated}")
    return value


def _token(value: Any) -> str:
    from ..modeling.tokens import check_token
    return check_token(value)


def _device(value: Any) -> str:
    from ..core.device import DEVICES
    if not isinstance(value, str):
        raise bad("device", value, "choose one of: " + ", ".join(DEVICES))
    check_choice("device", value.split(":")[0], DEVICES)
    return value


def _precisions() -> tuple:
    from ..core.device import PRECISIONS
    return PRECISIONS


# ---------------------------------------------------------------------------- the vocabulary
@dataclass(frozen=True)
class Param:
    """One field: its default, its constraint (applied unless the value is None and ``none``
    allows it), and what it means."""
    default: Any
    constraint: Any
    doc: str
    none: bool = False

    def check(self, name: str, value: Any) -> Any:
        if self.none and isinstance(value, str) and isinstance(self.constraint, IntList) \
                and value.strip().lower() in ("", "all", "none"):
            value = None                       # "all" dimensions, as on the command line
        if value is None:
            if self.none:
                return None
            raise bad(name, value, "None is not allowed here")
        return self.constraint.check(name, value)


_POSITIVE = Interval(float, 0, None, "right")
_COUNT = Interval(int, 1, None)

VOCABULARY: dict[str, Param] = {
    # data
    "model": Param("embedded", Text("a model name or folder"),
                   "the base encoder: 'embedded' (all-MiniLM-L6-v2), a hub name or a local folder"),
    "task": Param("rotten_tomatoes", Check(_task), "a registered task name"),
    "tasks": Param(["rotten_tomatoes", "bbc_news", "reuters_r8", "20newsgroups"],
                   Check(_tasks, cli=lambda text: [t.strip() for t in text.split(",") if t.strip()]),
                   "distinct registered task names, comma-separated on the command line"),
    "general_samples": Param(3000, _COUNT, "sentences of the general-English corpus; None: all",
                             none=True),
    "max_train_samples": Param(None, _COUNT, "a fixed random subset of this many training "
                               "examples (the same for every seed); None: all", none=True),
    "max_eval_samples": Param(None, _COUNT, "a fixed random subset of this many examples of "
                              "each evaluation split; None: all", none=True),
    "max_seq_len": Param(128, Interval(int, 2, None), "tokens per input; longer inputs are cut"),
    "data_dir": Param(None, Text("a folder"), "a hub task's data saved with "
                      "DatasetDict.save_to_disk; None: load it as usual", none=True),
    # what the head reads
    "layer": Param(-1, Interval(int, -1, None), "the layer read: 0 the embeddings, 1..L the "
                   "blocks, -1 the last"),
    "token": Param("cls", Check(_token), "the token vector read: cls, mean, maxnorm or token:i"),
    "dims": Param(None, IntList(low=0, distinct=True, item="dimension"), "the hidden dimensions the head reads, "
                  "comma-separated on the command line; None or 'all': all", none=True),
    "head": Param("linear", Options(("linear", "mlp")), "linear (one layer) or mlp (two)"),
    "head_hidden": Param(256, _COUNT, "hidden units of an mlp head"),
    "dropout": Param(0.1, Interval(float, 0, 1, "left"), "dropout on the selected features"),
    # what trains
    "freeze": Param(0, Interval(int, 0, None), "0 trains every layer; n freezes the "
                    "embeddings and blocks 1..n"),
    "freeze_embeddings": Param(False, Flag(), "also freeze the embeddings when freeze is 0"),
    "train_layers": Param(None, IntList(distinct=True, example="[5, 6]", item="layer"),
                          "only these blocks (1..L) and the head train; None: freeze decides",
                          none=True),
    "init_from": Param(None, Text("a model folder"), "a folder saved by finetune to start the "
                       "encoder from (cross-fine-tuning)", none=True),
    # optimisation
    "epochs": Param(3.0, _POSITIVE, "passes over the training set (fractions allowed)"),
    "frozen_epochs": Param(40.0, _POSITIVE, "passes when only the head trains"),
    "lr": Param(1e-4, _POSITIVE, "peak learning rate of the top block"),
    "head_lr": Param(None, _POSITIVE, "peak learning rate of the head; None: 1e-3 "
                     "(training.DEFAULT_HEAD_LR)", none=True),
    "layer_lr_decay": Param(0.95, Interval(float, 0, 1, "right"), "learning-rate factor from "
                            "one layer to the one below"),
    "warmup": Param(0.1, Interval(float, 0, 1, "left"), "fraction of steps with rising "
                    "learning rate (slanted triangular)"),
    "batch_size": Param(16, _COUNT, "examples per update"),
    "micro_batch_size": Param(16, _COUNT, "examples per forward pass (gradient accumulation)"),
    "weight_decay": Param(0.01, Interval(float, 0, None), "AdamW weight decay (none on biases "
                          "and LayerNorm)"),
    "max_grad_norm": Param(1.0, _POSITIVE, "gradient clipping norm; None: off", none=True),
    "early_stopping_fraction": Param(0.0, Interval(float, 0, 1, "left"), "0: keep the final "
                                     "state; above 0: hold out max(300, fraction x n) training "
                                     "examples and keep the state of lowest development loss"),
    "patience": Param(2, _COUNT, "evaluations without a lower development loss before stopping"),
    "eval_every": Param(None, _COUNT, "steps between evaluations; None: twice per epoch",
                        none=True),
    "checkpoint_every": Param(None, _COUNT, "steps between resumable checkpoints; None: at "
                              "each evaluation", none=True),
    # analysis
    "selection": Param("single", Options(("single", "ablation")), "how dimensions are ranked: "
                       "single (each alone) or ablation (each removed)"),
    "n_neurons": Param(5, _COUNT, "salient neurons chosen by forward selection"),
    "folds": Param(5, Interval(int, 2, None), "cross-validation folds"),
    # runtime
    "seed": Param(0, Interval(int, 0, None), "seeds initialisation, dropout and example order"),
    "seeds": Param([0, 1, 2], IntList(low=0, distinct=True, example="[0, 1, 2]", item="seed"),
                   "one run per seed"),
    "device": Param("auto", Check(_device), "auto (a GPU when there is one), cpu, cuda or "
                    "cuda:<index>"),
    "precision": Param("auto", Options(("auto", "fp32", "bf16")), "auto (bf16 on a GPU that "
                       "supports it, else fp32), fp32 or bf16"),
}


#: The book's study scale: the defaults the studies' configs (cross-fine-tuning, distances,
#: PCA, salient neurons, agreement) give these fields, where a single fine-tuning run
#: (:class:`~bertdims.config.finetune_config.FinetuneConfig`) uses all the data and 128 tokens.
STUDY_SCALE = {"max_train_samples": 1000, "max_eval_samples": 500, "max_seq_len": 64}


def study_param(name: str) -> Any:
    """:func:`param` with the study scale's default (:data:`STUDY_SCALE`)."""
    return param(name, STUDY_SCALE[name])


def param(name: str, default: Any = dataclasses.MISSING, *, none: str | None = None) -> Any:
    """A dataclass field for the vocabulary's ``name``: its default (or ``default``), checked by
    :func:`check_fields` with the vocabulary's constraint. ``none`` lets this config take None
    as well, meaning what ``none`` says (``param("lr", None, none="the engine's default")``)."""
    spec = VOCABULARY[name]
    value = spec.default if default is dataclasses.MISSING else default
    if none is not None:
        spec = dataclasses.replace(spec, doc=f"{spec.doc}; None: {none}", none=True)
    return _field(value, spec)


def own(default: Any, constraint: Any, doc: str, *, none: bool = False) -> Any:
    """A dataclass field of one config only, with its constraint and meaning beside it."""
    return _field(default, Param(default, constraint, doc, none))


def _field(value: Any, spec: Param) -> Any:
    if isinstance(value, (list, dict, set)):
        return dataclasses.field(default_factory=lambda v=value: type(v)(v), metadata={"param": spec})
    return dataclasses.field(default=value, metadata={"param": spec})


def declared(config_cls) -> dict[str, Param]:
    """The declared fields of a config class (or instance): name -> :class:`Param`."""
    return {f.name: f.metadata["param"] for f in dataclasses.fields(config_cls)
            if "param" in f.metadata}


def derive(target_cls, source, **changes):
    """A ``target_cls`` config (for example the :class:`~bertdims.config.finetune_config.FinetuneConfig`
    of a study's runs) holding every field it shares with ``source``, then ``changes``.

    A shared field whose value is None in ``source`` is left at the target's default when the
    target does not allow None there (``lr=None`` in a study means "the engine's default").

    Parameters
    ----------
    target_cls : type
        The config class to build.
    source : dataclass
        The config the shared fields are read from.
    **changes
        Fields set on top (they win over ``source``).

    Returns
    -------
    target_cls
        Built, so checked by its own validator.
    """
    target = declared(target_cls)
    values = {}
    for f in dataclasses.fields(source):
        if f.name in target and f.name not in changes:
            value = getattr(source, f.name)
            if value is None and not target[f.name].none:
                continue
            values[f.name] = value
    return target_cls(**{**values, **changes})


def check_fields(config) -> None:
    """Check every declared field of ``config`` against its constraint, in declaration order,
    storing normalised values back (``"3,17"`` -> ``[3, 17]``, numpy integers -> ints).

    Raises
    ------
    ConfigError
        Naming the first field whose value is not allowed, the value and what is allowed.
    """
    for name, spec in declared(config).items():
        value = spec.check(name, getattr(config, name))
        object.__setattr__(config, name, value)
