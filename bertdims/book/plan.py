"""The run planner: which stored runs the book's chapters will ask for, how many are already
in the results store, and about how long the rest will take (``bertdims plan``).

Every chapter has a planner (:data:`PLANNERS`, keyed by chapter stem) that takes the chapter's
parameters (its parameters cell with the preset's overrides over it) and lists the runs the
chapter's library calls will ask the store for, in the order they ask: fine-tuning runs
(kind ``finetune``, keyed by :func:`bertdims.train.finetuning.stored_key`), sparse and multi-task
training runs, and the analyses with their own stored entries (projections, probes, dimension
rankings, PCA, salient neurons, weight distances). Work the analyses do inside those entries
(representations, retention scores, bootstrap replicates) is not listed.

Some runs depend on an earlier result: chapter 4 retrains on the dimensions a ranking selects,
chapter 6 starts runs from another run's model (``init_from``). Their exact config is unknown
before that result exists; they count as stored when a stored run agrees with them on every
field except the dependent ones (and, for selected dimensions, on how many).

Time estimates come from a measured per-step cost (:class:`StepCost`): seconds per training
step of stored fine-tuning runs with the same model, sequence length and batch size, or,
without any, a short calibration (a few real training steps of the model, stored in the
results store under kind ``calibration``, so it is measured once per machine and model).
A run's estimate scales that cost by the share of the model it runs and trains
(:func:`compute_share`). They are estimates: the printed plan says so, and where each came from.
"""
from __future__ import annotations

import functools
import json
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..core._validate import bad
from ..modeling.models import model_size

#: Evaluation batch of the engine (``max(2 * micro_batch_size, 32)``); used for forward costs.
EVAL_BATCH = 32
#: A forward pass costs about a third of a training step (forward + backward, twice the
#: forward's work); the calibration measures both, stored runs only the step.
FORWARD_SHARE = 1 / 3
#: Training steps timed by the calibration (after one warm-up step), and forward batches.
CALIBRATION_STEPS = 8
CALIBRATION_FORWARDS = 2
#: Part of every calibration key: bump when what the calibration measures changes.
CALIBRATION_VERSION = 2
FINETUNE = "finetune"
TRAINING_KINDS = ("finetune", "sparse_finetune", "multitask")


# ============================================================================ planned runs
@dataclass
class PlannedRun:
    """One run a chapter asks the store for.

    ``config``: a ``FinetuneConfig`` (kind ``finetune``), ``SparseConfig``, ``MultitaskConfig``
    or the config dict of an analysis. ``steps``: optimizer steps (None for analyses);
    ``examples``: examples passed through the encoder without training (evaluation, features,
    analyses). ``depends``: the fields unknown before an earlier result exists, each with what
    it comes from (e.g. ``{"dims": "top 3 of ranking(rotten_tomatoes, seed 0)"}``); such runs
    have no key. ``ident``: what identifies the run when two chapters ask for it (the key,
    or the config and ``depends`` for a dependent run).
    """

    chapter: str
    kind: str
    config: Any
    label: str
    steps: int | None = None
    examples: int = 0
    depends: dict = field(default_factory=dict)
    key: str | None = None
    stored: bool | None = None          # None: not checked
    seconds: float | None = None        # estimate for a run still to do
    source: str = ""

    @property
    def ident(self) -> str:
        if self.key is not None:
            return f"{self.kind}/{self.key}"
        return self.kind + json.dumps([_plain(self.config), self.depends], sort_keys=True, default=str)


def _plain(config: Any) -> Any:
    return config.to_dict() if hasattr(config, "to_dict") else config


@functools.lru_cache(maxsize=None)
@functools.lru_cache(maxsize=None)
def split_size(task: str, split: str, data_dir: str | None = None) -> int:
    from ..data.tasks import load_task
    data = load_task(task, data_dir=data_dir)
    return len(data[split]) if split in data else 0


def _subset(task: str, split: str, limit: int | None, data_dir: str | None = None) -> int:
    n = split_size(task, split, data_dir)
    return n if limit is None else min(n, limit)


def _finetune_sizes(cfg) -> tuple[int, int]:
    """(training examples, evaluation examples) of a fine-tuning config."""
    from ..train.finetuning import MIN_DEV_SAMPLES
    n = _subset(cfg.task, "train", cfg.max_train_samples, cfg.data_dir)
    dev = max(MIN_DEV_SAMPLES, round(cfg.early_stopping_fraction * n)) if cfg.early_stopping_fraction > 0 else 0
    evals = sum(_subset(cfg.task, s, cfg.max_eval_samples, cfg.data_dir) for s in ("validation", "test"))
    return max(n - dev, 1), evals + dev


def finetune_steps(cfg) -> int:
    """Optimizer steps of a fine-tuning run, as the engine counts them (``total_steps``)."""
    from ..train.training import trained_layers
    n_train, _ = _finetune_sizes(cfg)
    per_epoch = math.ceil(n_train / cfg.batch_size)
    trains = trained_layers(cfg, model_size(cfg.model)[0])    # init_from: the same architecture
    return max(1, math.ceil((cfg.epochs if trains else cfg.frozen_epochs) * per_epoch))


def compute_share(cfg, num_layers: int) -> float:
    """Share of a full training step (every block forward and backward) that ``cfg`` costs:
    the forward runs blocks 1..l (the layer the head reads), the backward from l down to the
    lowest trained block, at twice a forward's cost. 0 when no encoder layer trains (the
    engine then trains the head on features computed once)."""
    from ..train.training import trained_layers
    read = num_layers if cfg.layer == -1 else cfg.layer
    return _share(trained_layers(cfg, num_layers), read, num_layers)


def _share(trained, read: int, num_layers: int) -> float:
    if not trained:
        return 0.0
    span = read - max(1, min(trained)) + 1
    forward = span if min(trained) >= 2 else read       # a frozen bottom is cached
    return (forward + 2 * span) / (3 * num_layers)


def bottom_share(cfg, num_layers: int) -> float:
    """Share of a forward pass of the whole model that the cached frozen bottom costs, once
    per example (0 when the engine caches none)."""
    from ..train.training import trained_layers
    trained = trained_layers(cfg, num_layers)
    return (min(trained) - 1) / num_layers if trained and min(trained) >= 2 else 0.0


@functools.lru_cache(maxsize=None)
def length_factors(model: str, task: str, max_seq_len: int, batch_size: int,
                   max_train_samples: int | None, max_eval_samples: int | None,
                   data_dir: str | None = None) -> tuple[float, float]:
    """How long the engine's batches of ``task`` really are, as a share of ``max_seq_len``:
    (training batches, drawn in random order and padded to their longest example; evaluation
    batches, sorted by length). Costs are measured at ``max_seq_len`` (a calibration) or on
    another task (stored runs), and a batch costs about in proportion to its padded length."""
    import numpy as np
    from transformers import AutoTokenizer

    from ..train.finetuning import prepare_splits
    from ..modeling.models import resolve_model
    from ..data.tasks import get_task
    from ..train.training import encode_split
    t = get_task(task)
    splits = prepare_splits(t, max_train_samples=max_train_samples,
                            max_eval_samples=max_eval_samples, data_dir=data_dir)
    tok = AutoTokenizer.from_pretrained(resolve_model(model))
    lengths = np.asarray(encode_split(t, splits["train"], tok, max_seq_len).lengths)
    if not len(lengths):
        return 1.0, 1.0
    order = np.random.default_rng(0).permutation(len(lengths))
    padded = sum(int(lengths[order[i:i + batch_size]].max()) * len(order[i:i + batch_size])
                 for i in range(0, len(order), batch_size))
    evals = [np.asarray(encode_split(t, splits[name], tok, max_seq_len).lengths)
             for name in ("validation", "test") if name in splits]
    eval_len = np.concatenate(evals) if evals else lengths
    return padded / (len(lengths) * max_seq_len), float(eval_len.mean() / max_seq_len)


def _factors(cfg) -> tuple[float, float]:
    try:
        return length_factors(cfg.model, cfg.task, cfg.max_seq_len, cfg.batch_size,
                              cfg.max_train_samples, cfg.max_eval_samples, cfg.data_dir)
    except Exception:               # data that cannot be read here: assume full length
        return 1.0, 1.0


def _read_share(cfg, num_layers: int) -> float:
    return (num_layers if cfg.layer == -1 else max(cfg.layer, 1)) / num_layers


def _label(kind: str, cfg, **extra) -> str:
    """Short words for a run: its task and the fields that differ from the defaults."""
    from ..train.finetuning import FinetuneConfig
    if kind == FINETUNE:
        default = FinetuneConfig()
        words = [kind, cfg.task]
        for name in ("layer", "token", "freeze", "head", "train_layers"):
            if getattr(cfg, name) != getattr(default, name):
                words.append(f"{name} {getattr(cfg, name)}")
        if "dims" in extra:
            words.append(f"dims {extra.pop('dims')}")
        elif cfg.dims is not None:
            words.append(f"dims {cfg.dims}")
        words += [f"{k.replace('_', ' ')} {v}" for k, v in extra.items()]
        words.append(f"seed {cfg.seed}")
        return " ".join(words)
    return " ".join([kind] + [f"{k} {v}" for k, v in extra.items()])


def _ft(chapter: str, cfg, depends: dict | None = None, **extra) -> PlannedRun:
    n_train, n_eval = _finetune_sizes(cfg)
    steps = finetune_steps(cfg)
    evals = steps // cfg.eval_every if cfg.eval_every else max(2, round(2 * cfg.epochs))
    examples = n_train + n_eval + evals * _subset(cfg.task, "validation", cfg.max_eval_samples)
    if depends and "dims" in depends and "dims" not in extra:
        extra["dims"] = depends["dims"]
    return PlannedRun(chapter, FINETUNE, cfg, _label(FINETUNE, cfg, **extra), steps=steps,
                      examples=examples, depends=dict(depends or {}))


def _analysis(chapter: str, kind: str, config: dict, examples: int, key_of: Callable | None,
              **words) -> PlannedRun:
    run = PlannedRun(chapter, kind, config, _label(kind, config, **words), examples=examples)
    run.key_of = key_of                                    # type: ignore[attr-defined]
    return run


def _ft_base(p: dict, **fields):
    from ..train.finetuning import FinetuneConfig
    return FinetuneConfig(model=p["model"], max_train_samples=p["max_train_samples"],
                          max_eval_samples=p["max_eval_samples"], max_seq_len=p["max_seq_len"],
                          epochs=p["epochs"], **fields)


def _probe(chapter: str, p: dict, task: str, layer: int, token: str = "cls") -> PlannedRun:
    from ..analysis.dims import PROBE_VERSION
    from ..analysis.extract import resolve_layers
    resolved = resolve_layers([layer], model_size(p["model"])[0])[0]
    cfg = {"model": p["model"], "task": task, "layer": resolved, "token": token,
           "max_train_samples": p["max_train_samples"], "max_eval_samples": p["max_eval_samples"],
           "max_seq_len": p["max_seq_len"], "data_dir": None, "probe_version": PROBE_VERSION}
    n = _subset(task, "train", p["max_train_samples"]) + sum(
        _subset(task, s, p["max_eval_samples"]) for s in ("validation", "test"))
    return _analysis(chapter, "probe", cfg, n, _model_key(p["model"]), task=task, layer=resolved,
                     token=token)


def _model_key(model: str) -> Callable:
    def key(store, kind, config):
        from ..modeling.models import fingerprint_of
        return store.key(kind, config, fingerprint_of(model))
    return key


# ============================================================================ chapter planners
def plan_01_model_and_tasks(p: dict) -> list[PlannedRun]:
    from .overview import projection_config
    return [_analysis("01_model_and_tasks", "projection",
                      projection_config(p["model"], t, p["split"], p["max_examples"], p["max_seq_len"]),
                      _subset(t, p["split"], p["max_examples"]), _model_key(p["model"]), task=t)
            for t in p["tasks"]]


def plan_02_baselines(p: dict) -> list[PlannedRun]:
    ch = "02_baselines"
    base = _ft_base(p, lr=p["lr"], batch_size=p["batch_size"])
    runs = [_ft(ch, base.replace(task=t, seed=s)) for t in p["tasks"] for s in p["seeds"]]
    runs += [_ft(ch, base.replace(task=t, seed=s, epochs=p["longer_epochs"]),
                 epochs=p["longer_epochs"]) for t in p["calibration_tasks"] for s in p["seeds"][:1]]
    return runs + [_probe(ch, p, t, -1) for t in p["tasks"]]


def plan_03_token_and_layer(p: dict) -> list[PlannedRun]:
    ch = "03_token_and_layer"
    L = model_size(p["model"])[0]
    base = _ft_base(p, task=p["task"], lr=p["lr"], batch_size=p["batch_size"])
    compared = list(dict.fromkeys(["cls", *p["tokens"]]))
    runs = [_ft(ch, base.replace(token=t, seed=s)) for t in compared for s in p["seeds"]]
    runs += [_probe(ch, p, p["task"], -1, t) for t in compared]
    runs += [_ft(ch, base.replace(layer=l, seed=s)) for l in p["layers"] if l != L for s in p["seeds"]]
    return runs + [_probe(ch, p, p["task"], l) for l in range(L + 1)]


def _ranking_words(task: str, seed: int, k: int, exclude: str = "") -> str:
    return f"top {k} of ranking({task}, seed {seed})" + (f" excluding {exclude}" if exclude else "")


def plan_04_few_dimensions(p: dict) -> list[PlannedRun]:
    from ..analysis import dims
    from ..train.finetuning import stored_key
    ch = "04_few_dimensions"
    base = _ft_base(p, lr=p["lr"], batch_size=p["batch_size"])
    methods, ks = dims._check_run_args(p["methods"], p["diagnostic_ks"], p["candidates"], dims.MODES)
    H = model_size(p["model"])[1]
    runs = []
    for t in p["tasks"]:
        for s in p["seeds"]:
            cfg = base.replace(task=t, seed=s)
            runs.append(_ft(ch, cfg))
            n = _subset(t, "train", p["max_train_samples"]) + 2 * _subset(t, "test", p["max_eval_samples"])
            head = {"finetune": cfg.to_dict(), "fill": "mean", "max_rank_samples": 4000,
                    "results_version": dims.RESULTS_VERSION}
            for m in methods:
                abl = m == "ablation"
                rank_cfg = {**head, "method": m, "candidates": p["candidates"] if abl else None,
                            "by": "loss" if abl else None}
                k_cfg = {**rank_cfg, "ks": [str(k) for k in ks], "modes": list(dims.MODES)}
                key_of = _run_key(cfg, stored_key)
                runs.append(_analysis(ch, "dims_rank", rank_cfg, n, key_of, task=t, method=m, seed=s))
                runs.append(_analysis(ch, "dims_k", k_cfg, 0, key_of, task=t, method=m, seed=s))
    ks = [int(k) for k in p["ks"] if k != "all"]
    for t in p["tasks"]:
        runs += [_ft(ch, base.replace(task=t, seed=s)) for s in p["seeds"]]
        for k in ks:
            runs += [_ft(ch, base.replace(task=t, seed=s),
                         depends={"dims": _ranking_words(t, s, k)}, k=k) for s in p["seeds"]]
            runs += [_ft(ch, base.replace(task=t, seed=s, dims=dims.random_dims(H, k, s, t)))
                     for s in p["seeds"]]
    return runs


def _run_key(cfg, stored_key) -> Callable:
    """Key of an analysis fingerprinted by a fine-tuning run's key (rankings of its model)."""
    def key(store, kind, config):
        return store.key(kind, config, stored_key(cfg, store))
    return key


def plan_05_freezing(p: dict) -> list[PlannedRun]:
    ch = "05_freezing"
    L = model_size(p["model"])[0]
    base = _ft_base(p, task=p["task"], lr=p["lr"], batch_size=p["batch_size"])
    runs = [_ft(ch, base.replace(freeze=n, seed=s)) for n in p["freeze"] for s in p["seeds"]]
    runs.append(_probe(ch, p, p["task"], -1))
    frozen = [base.replace(freeze=L), base.replace(freeze=L, head="mlp", head_hidden=p["head_hidden"])]
    return runs + [_ft(ch, cfg.replace(seed=s)) for cfg in frozen for s in p["seeds"]]


def plan_06_cross_finetuning(p: dict, store=None) -> list[PlannedRun]:
    from ..analysis.crossft import CrossConfig, matched_epochs, random_dims
    ch = "06_cross_finetuning"
    cc = CrossConfig(model=p["model"], tasks=p["tasks"], seeds=p["seeds"], num_dims=p["num_dims"],
                     selection=p["selection"], modes=["all", "few"],
                     max_train_samples=p["max_train_samples"], max_eval_samples=p["max_eval_samples"],
                     max_seq_len=p["max_seq_len"], epochs=p["epochs"], lr=p["lr"],
                     batch_size=p["batch_size"])
    k = cc.num_dims
    sel = lambda t, s, exclude="": {"dims": _ranking_words(t, s, k, exclude)}   # noqa: E731

    def run(task, seed, dims=None, after=None, **changes) -> PlannedRun:
        """``dims``: a list, or a dict of dependent fields; ``after``: the run it starts from."""
        depends = dict(dims) if isinstance(dims, dict) else {}
        known = None if isinstance(dims, dict) else dims
        cfg = cc.finetune_config(task, seed, known, **changes)
        if after is not None:
            start = _model_dir(after, store)
            if start is None:
                depends["init_from"] = f"the model of {after.label}"
            else:
                cfg = cfg.replace(init_from=start)
        words = {"after": after.label.split(" ", 1)[1]} if after is not None else {}
        if "epochs" in changes:
            words["epochs"] = round(changes["epochs"], 3)
        return _ft(ch, cfg, depends=depends, **words)

    sizes = {t: _subset(t, "train", cc.max_train_samples) for t in cc.tasks}
    runs = []
    for seed in cc.seeds:
        for mode in cc.modes:
            for a in cc.tasks:
                if mode == "few":
                    runs.append(run(a, seed))                       # the ranked model
                dims_a = None if mode == "all" else sel(a, seed)
                first = run(a, seed, dims_a)
                runs.append(first)
                for b in cc.tasks:
                    if b == a:
                        continue
                    dims_b = None if mode == "all" else sel(b, seed, _ranking_words(a, seed, k))
                    runs += [run(b, seed, dims_b), run(b, seed, dims_b, after=first),
                             run(a, seed, dims_a, after=first,
                                 epochs=matched_epochs(cc.epochs, sizes[a], sizes[b]))]
    H = model_size(cc.model)[1]
    side = cc.replace(seeds=p["side_seeds"])
    for seed in side.seeds:
        for b in side.tasks:
            runs += [run(b, seed), run(b, seed, sel(b, seed))]
            runs += [run(b, seed, sel(a, seed)) for a in side.tasks if a != b]
            runs.append(run(b, seed, random_dims(H, k, seed, b)))
    runs += _plan_multitask(ch, side, p["sampler"], sel)
    return runs


def _model_dir(first: PlannedRun, store) -> str | None:
    """The model folder a later run starts from, when ``first`` is known and stored."""
    if store is None or first.depends:
        return None
    from ..train.finetuning import stored_key
    key = stored_key(first.config, store)
    folder = store.path(FINETUNE, key) / "model"
    return str(folder) if store.get(FINETUNE, key) is not None else None


def _plan_multitask(ch: str, cc, sampler: str, sel) -> list[PlannedRun]:
    from ..train.multitask import MultitaskConfig
    dims_seed, k = cc.seeds[0], cc.num_dims
    words, taken = [], []
    for t in cc.tasks:
        words.append(_ranking_words(t, dims_seed, k, " and ".join(taken)))
        taken.append(_ranking_words(t, dims_seed, k))
    runs = []
    for seed in cc.seeds:
        recipe = cc.finetune_config(cc.tasks[0], seed)
        mt = MultitaskConfig(model=cc.model, tasks=list(cc.tasks), dims=None, layer=cc.layer,
                             token=cc.token, sampler=sampler, epochs=cc.epochs, lr=recipe.lr,
                             batch_size=recipe.batch_size, max_train_samples=cc.max_train_samples,
                             max_eval_samples=cc.max_eval_samples, max_seq_len=cc.max_seq_len,
                             train_holdout=recipe.early_stopping_fraction, seed=int(seed),
                             device=cc.device, precision=cc.precision)
        n = sum(_finetune_sizes(cc.finetune_config(t, seed))[0] for t in cc.tasks)
        ev = sum(_finetune_sizes(cc.finetune_config(t, seed))[1] for t in cc.tasks)
        runs.append(PlannedRun(ch, "multitask", mt, f"multitask {'+'.join(cc.tasks)} seed {seed}",
                               steps=math.ceil(cc.epochs * n / recipe.batch_size),
                               examples=n + ev, depends={"dims": "; ".join(words)}))
        for t, w in zip(cc.tasks, words):
            runs.append(_ft(ch, cc.finetune_config(t, seed), depends={"dims": w}))
    return runs


def _standard(ch: str, p: dict, task: str, seed: int) -> PlannedRun:
    """The fine-tuning the analyses use (:func:`bertdims.analysis.extract.standard_finetune`)."""
    from ..train.finetuning import FinetuneConfig
    return _ft(ch, FinetuneConfig(model=p["model"], task=task, seed=seed,
                                  max_train_samples=p["max_train_samples"],
                                  max_eval_samples=p["max_eval_samples"],
                                  max_seq_len=p["max_seq_len"], epochs=p["epochs"]))


def plan_07_pca(p: dict) -> list[PlannedRun]:
    from ..analysis.pca import PCAConfig
    ch, runs = "07_pca", []
    for t in p["tasks"]:
        for s in p["seeds"]:
            cfg = PCAConfig(model=p["model"], task=t, seed=s, max_train_samples=p["max_train_samples"],
                            max_eval_samples=p["max_eval_samples"], max_seq_len=p["max_seq_len"],
                            epochs=p["epochs"], general_samples=p["general_samples"],
                            sizes=p["sizes"], size_components=p["size_components"],
                            components=p["components"])
            n = 2 * (_subset(t, "train", p["max_train_samples"]) + _subset(t, "test", p["max_eval_samples"])
                     + (p["general_samples"] or 0))
            runs += [_standard(ch, p, t, s),
                     _analysis(ch, "pca", cfg.to_dict(), n, _model_key(p["model"]), task=t, seed=s)]
    return runs


def plan_08_salient_neurons(p: dict) -> list[PlannedRun]:
    from ..analysis.neurons import NeuronsConfig
    ch, runs = "08_salient_neurons", []
    fields = {k: p[k] for k in ("max_train_samples", "max_eval_samples", "max_seq_len", "epochs",
                                "n_neurons", "folds")}
    for t in p["tasks"]:
        n = _subset(t, "train", p["max_train_samples"]) + _subset(t, "test", p["max_eval_samples"])
        for finetuned, seed in [(False, 0)] + [(True, s) for s in p["seeds"]]:
            cfg = NeuronsConfig(model=p["model"], task=t, finetuned=finetuned, seed=seed, **fields)
            if finetuned:
                runs.append(_standard(ch, p, t, seed))
            runs.append(_analysis(ch, "neurons", {**cfg.to_dict(), "outputs": 2}, n,
                                  _model_key(p["model"]), task=t,
                                  model="finetuned" if finetuned else "pretrained", seed=seed))
    return runs


def plan_09_weight_distances(p: dict) -> list[PlannedRun]:
    from ..analysis.distances import DistanceConfig, LayerStudyConfig, _finetune_config
    ch = "09_weight_distances"
    sizes = {k: p[k] for k in ("max_train_samples", "max_eval_samples", "max_seq_len", "epochs",
                               "lr", "layer_lr_decay")}
    dc = DistanceConfig(model=p["model"], task=p["task"], seeds=p["seeds"], **sizes)
    runs = [_ft(ch, dc.finetune_config(s)) for s in dc.seeds]
    runs.append(_analysis(ch, "weight_distances", {**dc.to_dict(), "version": 2}, 0,
                          _model_key(p["model"]), task=p["task"]))
    lc = LayerStudyConfig(model=p["model"], task=p["task"], seeds=p["layer_seeds"],
                          single_layers=p["single_layers"], top_n=p["top_n"], **sizes)
    L = model_size(p["model"])[0]
    for seed in lc.seeds:
        for _, _, layers in lc.runs(L):
            change = {} if layers is None else ({"freeze": L} if not layers else {"train_layers": layers})
            runs.append(_ft(ch, _finetune_config(lc, seed, **change)))
    return runs


def plan_10_sparse_finetuning(p: dict) -> list[PlannedRun]:
    from ..train import sparse
    ch = "10_sparse_finetuning"
    base = sparse.SparseConfig(model=p["model"], task=p["task"], layers=p["layers"],
                               weights=p["weights"], score_lr=p["score_lr"],
                               max_train_samples=p["max_train_samples"],
                               max_eval_samples=p["max_eval_samples"], max_seq_len=p["max_seq_len"],
                               epochs=p["epochs"])
    sparsities = sorted(set(p["sparsities"]) | {p["verdict_sparsity"]})
    runs = []
    for setting, sparsity, seed, cfg in sparse._study_runs(base, sparsities, p["seeds"],
                                                           p["verdict_sparsity"]):
        if cfg is None:
            runs.append(_ft(ch, base.replace(seed=int(seed)).reference()))
            continue
        L = model_size(cfg.model)[0]
        ref = cfg.reference() if cfg.trains_mask else cfg.reference(freeze=L)
        like = _ft(ch, ref)
        run = PlannedRun(ch, "sparse_finetune", cfg,
                         f"sparse {cfg.task} {setting} sparsity {sparsity} seed {seed}",
                         steps=like.steps, examples=like.examples)
        run.cost_config = ref                                    # type: ignore[attr-defined]
        run.key_of = lambda store, kind, c: c.store_key(store)  # type: ignore[attr-defined]
        runs.append(run)
    return runs


def plan_11_dimension_agreement(p: dict) -> list[PlannedRun]:
    """The runs chapter ``11_dimension_agreement`` asks the store for (``bertdims plan``, see
    :mod:`bertdims.book.plan`): per task and seed, the full fine-tuning run, its ranking and k
    scores (chapter 4's), its ``agreement_sources``; then the retraining runs of
    :func:`bertdims.analysis.agreement.outlier_retrain` (selected and random are chapter 4's)."""
    from ..analysis import dims
    from ..analysis.agreement import SOURCES_VERSION, AgreementConfig
    from ..train.finetuning import stored_key
    ch = "11_dimension_agreement"
    cfg = AgreementConfig(**{k: p[k] for k in AgreementConfig.__dataclass_fields__ if k in p})
    base, H = cfg.finetune_base(), dims.model_size(cfg.model)[1]
    ks = [k for k in dims.DEFAULT_KS if cfg.selection == "single" or k == "all"
          or k <= cfg.candidates]
    runs = []
    for t in cfg.tasks:
        for s in cfg.seeds:
            ft = base.replace(task=t, seed=s)
            key_of = _run_key(ft, stored_key)
            n = _subset(t, "train", cfg.max_train_samples) + 2 * _subset(t, "test", cfg.max_eval_samples)
            abl = cfg.selection == "ablation"
            rank_cfg = {"finetune": ft.to_dict(), "fill": "mean", "max_rank_samples": 4000,
                        "results_version": dims.RESULTS_VERSION, "method": cfg.selection,
                        "candidates": cfg.candidates if abl else None, "by": "loss" if abl else None}
            k_cfg = {**rank_cfg, "ks": [str(k) for k in ks], "modes": list(dims.MODES)}
            src_cfg = {"finetune": ft.to_dict(), "n_neurons": cfg.n_neurons, "folds": cfg.folds,
                       "pca_components": cfg.pca_components, "layer": ft.layer, "token": ft.token,
                       "version": SOURCES_VERSION}
            runs += [_ft(ch, ft),
                     _analysis(ch, "dims_rank", rank_cfg, n, key_of, task=t, seed=s),
                     _analysis(ch, "dims_k", k_cfg, 0, key_of, task=t, seed=s),
                     _analysis(ch, "agreement_sources", src_cfg, n, key_of, task=t, seed=s)]
    k = cfg.retrain_k
    for t in cfg.tasks:
        for s in cfg.seeds:
            ft = base.replace(task=t, seed=s)
            runs += [_ft(ch, ft, depends={"dims": _ranking_words(t, s, k)}, k=k),
                     _ft(ch, ft, depends={"dims": _ranking_words(t, s, k, "the outliers")}, k=k),
                     _ft(ch, ft, depends={"dims": f"the {k} largest-magnitude dims"}, k=k),
                     _ft(ch, ft.replace(dims=dims.random_dims(H, k, s, t)))]
    return runs


def plan_scorecard(p: dict) -> list[PlannedRun]:
    return []


#: Chapter stem -> planner(parameters) -> the runs it asks for, in order.
PLANNERS: dict[str, Callable[..., list[PlannedRun]]] = {
    "01_model_and_tasks": plan_01_model_and_tasks,
    "02_baselines": plan_02_baselines,
    "03_token_and_layer": plan_03_token_and_layer,
    "04_few_dimensions": plan_04_few_dimensions,
    "05_freezing": plan_05_freezing,
    "06_cross_finetuning": plan_06_cross_finetuning,
    "07_pca": plan_07_pca,
    "08_salient_neurons": plan_08_salient_neurons,
    "09_weight_distances": plan_09_weight_distances,
    "10_sparse_finetuning": plan_10_sparse_finetuning,
    "11_dimension_agreement": plan_11_dimension_agreement,
    "scorecard": plan_scorecard,
}


def chapter_runs(stem: str, params: dict, store=None) -> list[PlannedRun]:
    """The runs chapter ``stem`` asks for with ``params`` (all of its parameters)."""
    if stem not in PLANNERS:
        raise bad("chapter", stem, "a chapter with a planner: " + ", ".join(PLANNERS))
    planner = PLANNERS[stem]
    return planner(params, store=store) if stem == "06_cross_finetuning" else planner(params)


# ============================================================================ per-step cost
@dataclass
class StepCost:
    """Seconds of one full training step (every block forward and backward, optimizer step)
    and of a forward pass per example, for one (model, max_seq_len, batch_size); ``source``
    says where they come from (stored runs or a calibration)."""

    step_seconds: float
    forward_seconds: float          # per example, no gradient
    source: str
    includes_eval: bool = False     # stored runs' seconds hold their in-loop evaluations


def stored_step_costs(store) -> dict[tuple, list[float]]:
    """(model, max_seq_len, batch_size) -> seconds of a full step, from every stored
    fine-tuning run that trained an encoder (``info.json``: ``train_seconds_this_call`` over
    ``steps_this_call``, divided by the run's :func:`compute_share`)."""
    out: dict[tuple, list[float]] = {}
    for folder in sorted((store.root / FINETUNE).glob("*")):
        if folder.name.startswith(".") or not (folder / "meta.json").exists():
            continue
        try:
            cfg_dict = json.loads((folder / "config.json").read_text())
            info = json.loads((folder / "result.json").read_text()).get("info", {})
            steps, seconds = info.get("steps_this_call") or 0, info.get("train_seconds_this_call")
            if info.get("fast_frozen") or not steps or not seconds:
                continue
            # the stored config is the key's (bertdims.train.finetuning.key_config): trained layers
            # and the layer read, in numbers
            model, seq, batch = cfg_dict["model"], cfg_dict["max_seq_len"], cfg_dict["batch_size"]
            share = _share(cfg_dict["trained_layers"], cfg_dict["layer"], model_size(model)[0])
            factor = length_factors(model, cfg_dict["task"], seq, batch, cfg_dict["max_train_samples"],
                                    cfg_dict["max_eval_samples"], cfg_dict.get("data_dir"))[0]
        except Exception:          # an entry this version cannot read: no evidence of cost
            continue
        if share > 0:           # the cost of a full-length step (see length_factors)
            out.setdefault((model, seq, batch), []).append(seconds / steps / share / factor)
    return out


def calibrate(model: str, max_seq_len: int, batch_size: int, *, store, device: str = "auto") -> StepCost:
    """Time :data:`CALIBRATION_STEPS` real training steps of ``model`` (every block, AdamW) on
    batches of ``batch_size`` random token sequences of ``max_seq_len``, and forward passes of
    :data:`EVAL_BATCH` sequences; stored under kind ``calibration`` (keyed by the model, sizes,
    device and machine), so it runs once per machine and model."""
    from ..core.device import pick_device
    from ..modeling.models import fingerprint_of
    dev = str(pick_device(device))
    cfg = {"model": model, "max_seq_len": max_seq_len, "batch_size": batch_size, "device": dev,
           "machine": platform.node(), "calibration_version": CALIBRATION_VERSION}
    run = store.cached("calibration", cfg, lambda: _time_steps(model, max_seq_len, batch_size, dev),
                       fingerprint=fingerprint_of(model))
    res = run.result
    return StepCost(res["step_seconds"], res["forward_seconds"],
                    f"calibration {run.meta['created'][:10]}")


def _time_steps(model: str, max_seq_len: int, batch_size: int, device: str) -> dict:
    import torch
    from transformers import AutoModel

    from ..modeling.models import resolve_model
    net = AutoModel.from_pretrained(resolve_model(model)).to(device)
    vocab = net.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    ids = lambda n: torch.randint(1, vocab, (n, max_seq_len), generator=gen).to(device)  # noqa: E731
    opt = torch.optim.AdamW(net.parameters(), lr=1e-5)
    net.train()

    def step():
        out = net(input_ids=ids(batch_size)).last_hidden_state
        out[:, 0].pow(2).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()                                   # warm-up: allocation, kernel choice
    times = []
    for _ in range(CALIBRATION_STEPS):       # the median step: robust to a busy moment
        _sync(device)
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    step_s = sorted(times)[len(times) // 2]
    net.eval()
    with torch.no_grad():
        net(input_ids=ids(EVAL_BATCH))
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(CALIBRATION_FORWARDS):
            net(input_ids=ids(EVAL_BATCH))
        _sync(device)
    fwd = (time.perf_counter() - t0) / (CALIBRATION_FORWARDS * EVAL_BATCH)
    return {"step_seconds": step_s, "forward_seconds": fwd, "steps": CALIBRATION_STEPS}


def _sync(device: str) -> None:
    import torch
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class CostBook:
    """Step costs per (model, max_seq_len, batch_size): from stored runs where there are any,
    else from a calibration (when ``calibrate``), else unknown (None)."""

    def __init__(self, store, calibrate: bool = True):
        self.store, self.calibrate = store, calibrate
        self.stored = stored_step_costs(store) if store is not None else {}
        self._cache: dict[tuple, StepCost | None] = {}

    def cost(self, model: str, max_seq_len: int, batch_size: int) -> StepCost | None:
        group = (model, max_seq_len, batch_size)
        if group not in self._cache:
            self._cache[group] = self._find(*group)
        return self._cache[group]

    def _find(self, model, max_seq_len, batch_size) -> StepCost | None:
        found = self.stored.get((model, max_seq_len, batch_size))
        if found:
            step = sorted(found)[len(found) // 2]
            return StepCost(step, step * FORWARD_SHARE / batch_size,
                            f"{len(found)} stored run{'s' if len(found) > 1 else ''}",
                            includes_eval=True)
        if not self.calibrate or self.store is None:
            return None
        return calibrate(model, max_seq_len, batch_size, store=self.store)


def estimate_seconds(run: PlannedRun, costs: CostBook) -> tuple[float | None, str]:
    """(seconds, where the cost came from) of one run still to do."""
    cfg = getattr(run, "cost_config", None) or run.config
    if run.kind in (FINETUNE, "sparse_finetune", "multitask"):
        model, seq, batch = cfg.model, cfg.max_seq_len, cfg.batch_size
    else:
        inner = cfg.get("finetune") or {}
        model = cfg.get("model") or inner.get("model")
        seq, batch = cfg.get("max_seq_len") or inner.get("max_seq_len", 128), 16
        if model is None:
            return 0.0, ""
    cost = costs.cost(model, seq, batch)
    if cost is None:
        return None, "no cost measured"
    seconds = run.examples * cost.forward_seconds
    if run.kind in (FINETUNE, "sparse_finetune"):
        L = model_size(model)[0]
        share = compute_share(cfg, L)
        train_f, eval_f = _factors(cfg)
        seconds = run.examples * cost.forward_seconds * _read_share(cfg, L) * eval_f
        if share > 0:
            seconds += run.steps * cost.step_seconds * share * train_f
            seconds += sum(_finetune_sizes(cfg)) * cost.forward_seconds * bottom_share(cfg, L) * eval_f
            if cost.includes_eval:     # the stored step time holds the in-loop evaluations
                seconds -= ((run.examples - sum(_finetune_sizes(cfg))) * cost.forward_seconds
                            * _read_share(cfg, L) * eval_f)
    elif run.kind == "multitask":
        seconds += run.steps * cost.step_seconds
    return max(seconds, 0.0), cost.source


# ============================================================================ the plan
@dataclass
class ChapterPlan:
    """The runs of one chapter; ``runs`` excludes runs an earlier chapter asks for first."""

    stem: str
    runs: list[PlannedRun]
    repeated: int = 0                 # runs this chapter asks for that an earlier one runs
    planned: bool = True              # False: no planner for this chapter (runs unknown)

    def count(self, stored: bool | None) -> int:
        return sum(r.stored is stored for r in self.runs)

    @property
    def todo(self) -> list[PlannedRun]:
        return [r for r in self.runs if r.stored is False]

    @property
    def seconds(self) -> float | None:
        known = [r.seconds for r in self.todo]
        return None if any(s is None for s in known) else float(sum(known))

    @property
    def sources(self) -> list[str]:
        return list(dict.fromkeys(r.source for r in self.todo if r.source))


@dataclass
class Plan:
    """The runs a preset's chapters ask for, per chapter (a run two chapters ask for counts
    once, at the first), with what is stored and an estimate of the time of the rest."""

    preset: str
    store_root: Path
    chapters: list[ChapterPlan]

    @property
    def runs(self) -> list[PlannedRun]:
        return [r for c in self.chapters for r in c.runs]

    @property
    def seconds(self) -> float | None:
        each = [c.seconds for c in self.chapters]
        return None if any(s is None for s in each) else float(sum(each))

    def table(self):
        """One row per chapter and kind: runs, stored, to do, unknown, estimated minutes."""
        import pandas as pd
        rows = []
        for c in self.chapters:
            kinds = list(dict.fromkeys(r.kind for r in c.runs)) or (
                ["-"] if c.planned else ["(no planner: runs unknown)"])
            for kind in kinds:
                part = ChapterPlan(c.stem, [r for r in c.runs if r.kind == kind])
                rows.append({"chapter": c.stem, "kind": kind, "runs": len(part.runs),
                             "stored": part.count(True), "to do": part.count(False),
                             "unknown": part.count(None),
                             "est. min": None if part.seconds is None else part.seconds / 60,
                             "estimate from": "; ".join(part.sources)})
        return pd.DataFrame(rows)

    def render(self) -> str:
        """The plan as text: a table per chapter and kind, the total, and the sources."""
        table = self.table()
        fmt = lambda m: "?" if m is None or m != m else f"{m:.1f}"   # noqa: E731
        shown = table.assign(**{"est. min": table["est. min"].map(fmt)})
        total = {"chapter": "total", "kind": "", "runs": int(table["runs"].sum()),
                 "stored": int(table["stored"].sum()), "to do": int(table["to do"].sum()),
                 "unknown": int(table["unknown"].sum()),
                 "est. min": fmt(None if self.seconds is None else self.seconds / 60),
                 "estimate from": ""}
        import pandas as pd
        shown = pd.concat([shown, pd.DataFrame([total])], ignore_index=True)
        repeated = sum(c.repeated for c in self.chapters)
        lines = [f"Plan for preset '{self.preset}' (results store {self.store_root})",
                 shown.to_string(index=False), "",
                 f"{repeated} more runs are asked for again (by the same or a later chapter) and "
                 "counted once, where first asked for.",
                 "Estimated minutes are estimates (per-step cost from stored runs or a short "
                 "calibration, scaled by the layers each run trains); 'unknown': stored state not "
                 "checked."]
        return "\n".join(lines)


def make_plan(preset: str = "default", chapters: list[str] | None = None, *, store=None,
              root: Path | None = None, overrides: dict | None = None,
              calibrate: bool = True, check_store: bool = True) -> Plan:
    """The :class:`Plan` of ``preset`` for ``chapters`` (default: every chapter, in execution
    order); ``overrides`` maps a stem to parameter overrides (``bertdims run -p``)."""
    from .parameters import project_root
    from ..modeling.models import quiet_transformers
    from ..core.store import ResultStore
    root = root or project_root()
    store = store if store is not None else ResultStore()
    with quiet_transformers():
        return _make_plan(preset, chapters, store, root, overrides, calibrate, check_store)


def _make_plan(preset, chapters, store, root, overrides, calibrate, check_store) -> Plan:
    from .parameters import (chapter_path, chapter_stems, check_parameters, execution_order,
                           resolve_parameters)
    stems = chapter_stems(root) if chapters is None else [chapter_path(c, root).stem for c in chapters]
    seen: set[str] = set()
    plans = []
    for stem in execution_order(stems):
        path = root / "book" / f"{stem}.ipynb"
        if stem not in PLANNERS:            # a chapter newer than its planner
            plans.append(ChapterPlan(stem, [], planned=False))
            continue
        params = check_parameters(path, resolve_parameters(path, preset, (overrides or {}).get(stem),
                                                           root), root)
        runs, repeated = [], 0
        for run in chapter_runs(stem, params, store if check_store else None):
            if check_store:
                _set_key(run, store)
            if run.ident in seen:
                repeated += 1
                continue
            seen.add(run.ident)
            runs.append(run)
        plans.append(ChapterPlan(stem, runs, repeated))
    plan = Plan(preset, store.root, plans)
    if check_store:
        mark_stored(plan, store)
    costs = CostBook(store if check_store else None, calibrate=calibrate and check_store)
    for run in plan.runs:
        if run.stored is not False:
            continue
        run.seconds, run.source = estimate_seconds(run, costs)
    return plan


def _set_key(run: PlannedRun, store) -> None:
    from ..train.finetuning import stored_key
    if run.depends:
        return
    if run.kind == FINETUNE:
        run.key = stored_key(run.config, store)
    elif hasattr(run, "key_of"):
        run.key = run.key_of(store, run.kind, run.config)


def mark_stored(plan: Plan, store) -> None:
    """Set ``stored`` of every run: by key; a dependent run when a stored run of its kind
    agrees with it on every other field (each stored run matched once). Kinds the plan cannot
    match (a dependent analysis) stay None (unknown)."""
    known = {r.key for r in plan.runs if r.key}
    index = _stored_configs(store, known) if any(r.depends for r in plan.runs) else {}
    for run in plan.runs:
        if run.key is not None:
            run.stored = store.get(run.kind, run.key) is not None
        elif run.kind == FINETUNE:
            run.stored = _match(run, index.get(FINETUNE, []))
        elif run.kind == "multitask":
            run.stored = _match(run, index.get("multitask", []))


def _stored_configs(store, exclude: set[str]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for kind in (FINETUNE, "multitask"):
        for folder in sorted((store.root / kind).glob("*")):
            if folder.name.startswith(".") or folder.name in exclude:
                continue
            if (folder / "meta.json").exists():
                try:
                    out.setdefault(kind, []).append(json.loads((folder / "config.json").read_text()))
                except ValueError:
                    continue
    return out


def _match(run: PlannedRun, candidates: list[dict]) -> bool:
    from ..train.finetuning import key_config
    want = key_config(run.config) if run.kind == FINETUNE else _plain(run.config)
    free = set(run.depends)
    k = _dims_count(run.depends.get("dims", ""))
    for i, cand in enumerate(candidates):
        if all(cand.get(f) == v for f, v in want.items() if f not in free):
            if "dims" in run.depends and run.kind == FINETUNE and k and len(cand.get("dims") or []) != k:
                continue
            candidates.pop(i)
            return True
    return False


def _dims_count(words: str) -> int | None:
    parts = words.split()
    return int(parts[1]) if len(parts) > 1 and parts[0] == "top" and parts[1].isdigit() else None


# ============================================================================ command line
def register_cli(sub) -> None:
    p = sub.add_parser("plan", help="list the runs a preset's chapters ask for, what is stored, "
                       "and estimate the time of the rest (runs nothing but a short calibration)")
    p.add_argument("--preset", default="default", help="smoke | default | paper")
    p.add_argument("--chapters", default=None, help="comma-separated subset of chapters")
    p.add_argument("--results", default=None, help="results store (default $BERTDIMS_RESULTS or results/)")
    p.add_argument("--no-calibrate", action="store_true",
                   help="do not time training steps where no stored run gives the cost")
    p.set_defaults(func=_cmd_plan)


def _cmd_plan(args) -> int:
    from ..core.store import ResultStore
    chapters = args.chapters.split(",") if args.chapters else None
    store = ResultStore(args.results) if args.results else ResultStore(_default_results())
    print(make_plan(args.preset, chapters, store=store, calibrate=not args.no_calibrate).render())
    return 0


def _default_results() -> Path:
    import os

    from .parameters import project_root, results_root
    return Path(os.environ["BERTDIMS_RESULTS"]) if os.environ.get("BERTDIMS_RESULTS") \
        else results_root(project_root())
