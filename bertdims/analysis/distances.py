"""How far fine-tuning moves BERT's weights, and which layers need fine-tuning.

Reproduces the parameter-space analysis of Radiya-Dixit & Wang, *How fine can fine-tuning
be? Learning efficient language models* (AISTATS 2020):

* :func:`weight_distances` compares two models tensor by tensor (L1, L2, angular distance);
  :func:`aggregate_distances` / :func:`layer_distances` sum them up per layer or per kind of
  matrix. For scale, :func:`random_init_like` builds a randomly initialised twin of a model.
* :func:`distance_study` fine-tunes a model with several seeds and stores the distances
  fine-tuned vs pretrained, pretrained vs random initialisation, and seed vs seed.
* :func:`layer_study` fine-tunes one encoder layer at a time, and the top ``n`` layers only,
  against full fine-tuning (the paper's "fine-tuning only some layers").
* Verdicts: :func:`closeness_effect` (fine-tuned vs random-init distance, t-interval over
  seeds), :func:`layer_variation_effect` (top vs bottom block's relative distance) and
  :func:`layer_effects` (partial vs full fine-tuning, paired by seed and test example). The
  distance runs use no layer-wise learning-rate decay (:class:`DistanceConfig`).

Distances (per tensor; ``a`` and ``b`` flattened, ``n`` entries):

* ``l1`` = ``sum |a - b| / n``: the mean absolute difference (L1 normalised by size);
* ``l2`` = ``||a - b||_2`` (Frobenius norm for matrices), not normalised;
* ``angular`` = ``angle(a, b) / pi`` in ``[0, 1]``: 0 for the same direction, 0.5 for
  orthogonal tensors, 1 for opposite ones; NaN when one tensor is all zeros and the other is
  not (no direction; e.g. the zero biases of a fresh random initialisation).

Chapter: ``book/09_weight_distances.ipynb``.
"""
from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
import torch

from ..core._validate import ConfigError, ConfigMixin, bad
from ..core.result import RunsResult
from ..config.params import IntList, Interval, check_fields, derive, own, param, study_param

KINDS = ("embeddings", "attention", "feed-forward", "layer-norm", "other")
METRICS = ("l1", "l2", "angular", "rel_l2")
COLUMNS = ("name", "layer", "kind", "matrix", "n_params", "l1", "l2", "angular",
           "dot", "norm_a", "norm_b")
_LAYER_RE = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")


# ------------------------------------------------------------------------------ naming
def parameter_layer(name: str) -> int | None:
    """Layer of a parameter: 0 for the embeddings, ``i + 1`` for encoder layer ``i``
    (HF counts from 0, we count layers 1..L like the hidden states), None otherwise."""
    m = _LAYER_RE.search(name)
    if m:
        return int(m.group(1)) + 1
    if "embeddings" in name.split(".") or name.startswith("embeddings"):
        return 0
    return None


def parameter_kind(name: str) -> str:
    """Kind of a parameter: ``embeddings``, ``attention``, ``feed-forward``, ``layer-norm``
    or ``other`` (e.g. a pooler). Works for BERT, RoBERTa and DistilBERT names."""
    low = name.lower()
    if "layernorm" in low or "layer_norm" in low or re.search(r"(^|\.)ln_?\w*\.", low):
        return "layer-norm"
    if "embeddings" in low:
        return "embeddings"
    if parameter_layer(name) is None:
        return "other"
    if "attention" in low or "attn" in low:
        return "attention"
    if any(k in low for k in ("intermediate", "output.dense", "ffn", "mlp")):
        return "feed-forward"
    return "other"


def _matrix_name(name: str) -> str:
    """Name within its layer, e.g. ``attention.self.query.weight``."""
    m = _LAYER_RE.search(name)
    return name[m.end():] if m else name


# ------------------------------------------------------------------------------ tensors
def _named_tensors(model: Any) -> dict[str, torch.Tensor]:
    """Trainable tensors of a model: an ``nn.Module`` (or an object holding one as
    ``.encoder``/``.model``, such as a fine-tuned classifier or an ``Encoder``) or a mapping
    name -> tensor. For a classifier only its encoder is compared: its head has no
    pretrained counterpart."""
    if isinstance(model, Mapping):
        return {k: v for k, v in model.items() if torch.is_tensor(v)}
    model = _unwrap(model)
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"expected a torch model or a dict of tensors, got {type(model).__name__}")
    return {n: p for n, p in model.named_parameters()}


def _unwrap(model: Any) -> Any:
    """The Hugging Face model inside a classifier (``.encoder``) or an ``Encoder`` (``.model``)."""
    from transformers import PreTrainedModel
    if isinstance(model, PreTrainedModel):
        return model
    for attr in ("encoder", "model"):
        inner = getattr(model, attr, None)
        if isinstance(inner, PreTrainedModel):
            return inner
    return model


def check_same_architecture(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> None:
    """Raise :class:`ConfigError` naming the first mismatches when the two sets of tensors
    do not have the same names and shapes."""
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    shapes = [f"{n}: {tuple(a[n].shape)} vs {tuple(b[n].shape)}"
              for n in sorted(set(a) & set(b)) if a[n].shape != b[n].shape]
    if only_a or only_b or shapes:
        parts = []
        if only_a:
            parts.append(f"only in model_a: {only_a[:5]}" + (" ..." if len(only_a) > 5 else ""))
        if only_b:
            parts.append(f"only in model_b: {only_b[:5]}" + (" ..." if len(only_b) > 5 else ""))
        if shapes:
            parts.append("shapes differ: " + "; ".join(shapes[:5]) + (" ..." if len(shapes) > 5 else ""))
        raise ConfigError("the two models have different architectures, so their weights cannot be "
                          "compared: " + " | ".join(parts))


def angular_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Angle between two tensors seen as vectors, divided by pi (in [0, 1]).

    Uses ``2 atan2(|u - v|, |u + v|)`` on the unit vectors ``u, v``, which is exact for
    equal directions (no ``arccos`` rounding near 1). 0 for equal tensors (even all-zero
    ones); NaN if only one of them is all zeros.
    """
    a, b = a.detach().double().flatten(), b.detach().double().flatten()
    if torch.equal(a, b):
        return 0.0
    na, nb = a.norm(), b.norm()
    if na == 0 or nb == 0:
        return float("nan")
    u, v = a / na, b / nb
    return float(2 * torch.atan2((u - v).norm(), (u + v).norm()) / math.pi)


def weight_distances(model_a: Any, model_b: Any, *, names: Iterable[str] | None = None) -> pd.DataFrame:
    """Distances between two models of the same architecture, one row per parameter tensor.

    Parameters
    ----------
    model_a, model_b : torch models (or classifiers holding ``.encoder``) or dicts of tensors.
    names : only these parameter names (all by default); unknown names raise ConfigError.

    Returns
    -------
    DataFrame with columns ``name, layer, kind, matrix, n_params, l1, l2, angular, dot,
    norm_a, norm_b`` (see the module docstring; ``dot``/``norm_*`` let
    :func:`aggregate_distances` compute the angle of concatenated tensors exactly).
    ``layer`` is 0 for embeddings, 1..L for encoder layers, missing (NaN) for others.
    """
    ta, tb = _named_tensors(model_a), _named_tensors(model_b)
    check_same_architecture(ta, tb)
    selected = list(ta)
    if names is not None:
        names = list(names)
        unknown = [n for n in names if n not in ta]
        if unknown:
            raise bad("names", unknown, "every name must be a parameter of the model; valid names "
                      "include: " + ", ".join(list(ta)[:8]) + f" ... ({len(ta)} in all)")
        selected = names
    rows = []
    with torch.no_grad():
        for name in selected:
            a, b = ta[name].detach().double().flatten(), tb[name].detach().double().flatten().to(ta[name].device)
            diff = a - b
            rows.append({"name": name, "layer": parameter_layer(name), "kind": parameter_kind(name),
                         "matrix": _matrix_name(name), "n_params": a.numel(),
                         "l1": float(diff.abs().mean()), "l2": float(diff.norm()),
                         "angular": angular_distance(a, b), "dot": float(a @ b),
                         "norm_a": float(a.norm()), "norm_b": float(b.norm())})
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    df["layer"] = df["layer"].astype("Int64")
    return df


def aggregate_distances(df: pd.DataFrame, by: str | list[str] = "layer") -> pd.DataFrame:
    """Distances of groups of tensors, as if each group were one concatenated vector.

    ``l1`` is the size-weighted mean of the tensors' ``l1`` (the mean absolute difference over the
    whole group), ``l2`` the square root of the summed squared ``l2``, ``angular`` the angle between
    the two concatenations (from the summed dot products and squared norms), and ``rel_l2`` the
    relative distance ``||a - b|| / ||a||``: the change measured in units of model A's weights, so
    that with A the pretrained model it says how far fine-tuning moved the group relative to its
    size. Rows whose group key is missing (for ``layer``: the tensors outside the embeddings and
    the encoder layers, such as a pooler) are dropped.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per parameter tensor, with the columns ``n_params, l1, l2, dot, norm_a, norm_b``
        of :func:`weight_distances` and the grouping columns: a table of
        :func:`weight_distances`, or the ``distances`` table of :func:`distance_study`, whose
        extra columns (``comparison``, ``run``, ``seed_a``, ``seed_b``) can be named in ``by``.
    by : str or list of str
        The column or columns to group by, e.g. ``"layer"``, ``"kind"`` or
        ``["comparison", "run"]``.

    Returns
    -------
    pandas.DataFrame
        One row per group, sorted by the group key; columns: the ``by`` columns (``layer`` as
        int), ``n_params`` (entries in the group), ``l1``, ``l2``, ``angular`` and ``rel_l2``.
        ``angular`` is NaN when only one of the two concatenations is all zeros, ``rel_l2`` when
        model A's is.

    Raises
    ------
    ConfigError
        When a column named in ``by`` is not in ``df``.

    Notes
    -----
    The angle comes from ``1 - cos = (||a - b||^2 - (||a|| - ||b||)^2) / (2 ||a|| ||b||)``, using
    the measured ``||a - b||``: this stays accurate for the small angles of fine-tuning, where
    ``arccos(cos)`` loses digits.
    """
    by = [by] if isinstance(by, str) else list(by)
    missing = [c for c in by if c not in df.columns]
    if missing:
        raise bad("by", by, f"group by columns of the table; it has: {', '.join(df.columns)}")
    d = df.dropna(subset=by).copy()
    if "layer" in by:
        d["layer"] = d["layer"].astype(int)
    d["_l1_sum"] = d["l1"] * d["n_params"]
    d["_l2_sq"] = d["l2"] ** 2
    d["_na_sq"], d["_nb_sq"] = d["norm_a"] ** 2, d["norm_b"] ** 2
    g = d.groupby(by, sort=True)[["n_params", "_l1_sum", "_l2_sq", "dot", "_na_sq", "_nb_sq"]].sum()
    out = pd.DataFrame(index=g.index)
    out["n_params"] = g["n_params"].astype(int)
    out["l1"] = g["_l1_sum"] / g["n_params"]
    out["l2"] = np.sqrt(g["_l2_sq"])
    na, nb = np.sqrt(g["_na_sq"]), np.sqrt(g["_nb_sq"])
    # 1 - cos from the measured |a - b|^2 = (|a| - |b|)^2 + 2|a||b|(1 - cos): accurate for
    # the small angles of fine-tuning, where arccos(cos) loses digits.
    one_minus_cos = np.clip((g["_l2_sq"] - (na - nb) ** 2) / (2 * na * nb).where(na * nb > 0), 0, 2)
    out["angular"] = 2 * np.arcsin(np.sqrt(one_minus_cos / 2)) / math.pi
    out.loc[out["l2"] == 0, "angular"] = 0.0
    out["rel_l2"] = (out["l2"] / na).where(na > 0)
    return out.reset_index()


def layer_distances(df: pd.DataFrame, by: str | list[str] = ()) -> pd.DataFrame:
    """Per-layer distances (layer 0 = the embeddings, 1..L the encoder layers).

    :func:`aggregate_distances` grouped by ``layer``, after any extra grouping columns in ``by``.
    Tensors outside the embeddings and the encoder layers (such as a pooler) are left out.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per parameter tensor, as for :func:`aggregate_distances`: a table of
        :func:`weight_distances` or the ``distances`` table of :func:`distance_study` (columns
        ``layer, n_params, l1, l2, dot, norm_a, norm_b`` and any columns named in ``by``).
    by : str or sequence of str
        Extra grouping columns, placed before ``layer``, e.g. ``"comparison"`` or ``"run"``
        (none by default).

    Returns
    -------
    pandas.DataFrame
        One row per group and layer; columns: the ``by`` columns, ``layer`` (int), ``n_params``,
        ``l1``, ``l2``, ``angular`` and ``rel_l2``.

    Raises
    ------
    ConfigError
        When a column named in ``by`` (or ``layer``) is not in ``df``.
    """
    extra = [by] if isinstance(by, str) else list(by)
    return aggregate_distances(df, by=extra + ["layer"])


def random_init_like(model: Any, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised twin of a model: the reference for "how far is far".

    Builds ``AutoModel.from_config`` with the model's config under ``torch.manual_seed(seed)``.
    For a BERT or RoBERTa model without pooler weights the twin is built without a pooler too, so
    the two have the same tensors.

    Parameters
    ----------
    model : torch.nn.Module or object
        A Hugging Face model, or an object holding one as ``.encoder`` (a fine-tuned classifier)
        or ``.model`` (an ``Encoder``).
    seed : int
        Seed of the random initialisation.

    Returns
    -------
    torch.nn.Module
        The random model, in eval mode, with the parameter names and shapes of ``model``.

    Raises
    ------
    ConfigError
        When ``model`` is not, and does not hold, a Hugging Face model with a ``.config`` (e.g. a
        dict of tensors), or when the twin's tensors differ from the model's.
    """
    from transformers import AutoModel
    tensors = _named_tensors(model)
    config = getattr(_unwrap(model), "config", None)
    if config is None:
        raise ConfigError("random_init_like needs a Hugging Face model (with a .config)")
    torch.manual_seed(seed)
    kwargs = {"add_pooling_layer": False} if not any(n.startswith("pooler.") for n in tensors) \
        and config.model_type in ("bert", "roberta") else {}
    rand = AutoModel.from_config(config, **kwargs)
    check_same_architecture(tensors, _named_tensors(rand))
    return rand.eval()


# ------------------------------------------------------------------------------ charts


_METRIC_TITLES = {"l1": "L1 (mean |difference|)", "l2": "L2 distance", "angular": "angular distance (/π)",
                  "rel_l2": "relative distance ||Δ|| / ||W||"}


# ------------------------------------------------------------------------------ studies
# Silences transformers' load reports and bars inside studies (shared with sparse.py).
from ..modeling.models import quiet_transformers  # noqa: E402


from ..train import finetuning as _ft  # noqa: E402


@dataclass
class DistanceConfig(ConfigMixin):
    """How far fine-tuning moves the weights (Radiya-Dixit & Wang, AISTATS 2020).

    The paper finds fine-tuned models close to the pretrained one in parameter space, with the
    closeness varying from layer to layer. :func:`distance_study` fine-tunes ``model`` on ``task``
    once per seed (the engine), then measures fine-tuned vs pretrained (per seed), pretrained vs a
    random initialisation (seeded by ``random_seed``), and fine-tuned vs fine-tuned for every pair
    of seeds.

    Parameters
    ----------
    model : str
        Base encoder: ``"embedded"`` (all-MiniLM-L6-v2), a hub name or a local folder.
    task : str
        A registered task name (:func:`bertdims.task_names`).
    seeds : list of int
        Seeds of the fine-tunings: distinct integers >= 0, at least one (at least two for the
        t-intervals of :func:`closeness_effect` and :func:`layer_variation_effect`).
    max_train_samples, max_eval_samples : int or None
        Use a fixed random subset of this many examples of the training split and of each
        evaluation split (None: all), as in :class:`bertdims.train.finetuning.FinetuneConfig`.
    max_seq_len : int
        Maximum tokens per example (>= 2).
    epochs : float
        Passes over the training set (> 0).
    lr : float
        Peak learning rate of the top block (> 0).
    layer_lr_decay : float
        Layer-wise learning-rate decay, in (0, 1]: block n learns at
        ``lr * layer_lr_decay ** (L - n)``. 1.0 by default; see the notes.
    random_seed : int
        Seed of the random initialisation (:func:`random_init_like`), >= 0.

    Raises
    ------
    ConfigError
        When a field is out of range (``seeds`` empty, repeated or negative; a subset size < 1;
        ``epochs`` or ``lr`` not positive; ``layer_lr_decay`` outside (0, 1]; ``max_seq_len``
        < 2; ``random_seed`` < 0) or ``task`` is unknown.

    Notes
    -----
    ``layer_lr_decay`` defaults to 1.0, unlike the engine's 0.95: with decay every block learns at
    its own rate, so the top block of six moves about 1.3 times as far as the bottom one from the
    schedule alone, and a "varies by layer" finding would measure the recipe.
    :func:`layer_profile` divides each layer's distance by its learning rate when the decay is
    not 1.
    """

    model: str = param("model")
    task: str = param("task")
    seeds: list[int] = param("seeds")
    max_train_samples: int | None = study_param("max_train_samples")
    max_eval_samples: int | None = study_param("max_eval_samples")
    max_seq_len: int = study_param("max_seq_len")
    epochs: float = param("epochs", 1.0)
    lr: float = param("lr")
    layer_lr_decay: float = param("layer_lr_decay", 1.0)
    random_seed: int = own(0, Interval(int, 0, None), "seed of the random initialisation "
                           "compared with the pretrained weights")

    def __post_init__(self):
        check_fields(self)                  # every field against its constraint

    def finetune_config(self, seed: int, **changes):
        """The engine's ``FinetuneConfig`` of one seed's fine-tuning."""
        return _finetune_config(self, seed, **changes)


def _finetune_config(cfg, seed: int, **changes):
    """The engine's FinetuneConfig for a study config (the fields they share) and one seed."""
    return derive(_ft.FinetuneConfig, cfg, seed=seed, **changes)


def distance_study(config: DistanceConfig, store=None, *, force: bool = False):
    """Run (or read back) the distance study of a :class:`DistanceConfig`.

    Fine-tunes the model once per seed (each fine-tuning cached by the engine), then compares
    weights tensor by tensor with :func:`weight_distances`: each fine-tuned encoder against the
    pretrained one, the pretrained encoder against a random initialisation
    (:func:`random_init_like`), and the fine-tuned encoders of every pair of seeds. The tables
    are cached in the store.

    Parameters
    ----------
    config : DistanceConfig
        What to run.
    store : ResultStore, optional
        Where the runs are cached; None keeps nothing
        (:func:`bertdims.core.store.store_or_temporary`).
    force : bool
        Recompute the distances even when they are stored (the fine-tunings are still read back
        from the engine's cache).

    Returns
    -------
    StoredRun
        The stored result (``config``, ``metrics``, ``tables``, ``paths`` as every result,
        :mod:`bertdims.core.result`), with three tables:

        * ``.table("distances")``: one row per parameter tensor and compared pair; columns
          ``comparison`` (``fine-tuned vs pretrained``, ``pretrained vs random init`` or
          ``seed vs seed``), ``run`` (e.g. ``seed 0`` or ``seeds 0 vs 1``), ``seed_a`` (the seed,
          or the random initialisation's seed), ``seed_b`` (empty except for seed vs seed), then
          the columns of :func:`weight_distances`;
        * ``.table("metrics")``: the fine-tuned runs' metrics, one row per seed, split and metric;
          columns ``seed, split, metric, value``;
        * ``.table("history")``: the fine-tuned runs' training curves: the engine's rows, with a
          ``seed`` column.
    """
    from ..modeling.models import fingerprint_of, load_encoder
    from ..core.store import store_or_temporary
    store = store_or_temporary(store)
    ft = _ft

    def compute() -> dict:
        with quiet_transformers():
            pretrained = load_encoder(config.model).model
        tables, metrics, histories, finetuned = [], [], [], {}
        from ..train.executor import ensure_runs
        ensure_runs([config.finetune_config(seed) for seed in config.seeds], store,
                    keep_model=True)                                  # on a cluster, if any
        for seed in config.seeds:
            with quiet_transformers():
                run = ft.finetune(config.finetune_config(seed), store=store, progress=False,
                                  keep_model=True)
                finetuned[seed] = ft.load_finetuned(run.model_dir).encoder
            tables.append(_tag(weight_distances(pretrained, finetuned[seed]),
                               "fine-tuned vs pretrained", seed, None))
            metrics += [{"seed": seed, "split": split, "metric": m, "value": v}
                        for split, ms in run.metrics.items() for m, v in ms.items()]
            histories.append(run.history.assign(seed=seed))
        rand = random_init_like(pretrained, config.random_seed)
        tables.append(_tag(weight_distances(pretrained, rand), "pretrained vs random init",
                           config.random_seed, None))
        for sa, sb in itertools.combinations(config.seeds, 2):
            tables.append(_tag(weight_distances(finetuned[sa], finetuned[sb]), "seed vs seed", sa, sb))
        return {"distances": pd.concat(tables, ignore_index=True), "metrics": pd.DataFrame(metrics),
                "history": pd.concat(histories, ignore_index=True)}

    return store.cached("weight_distances", {**config.to_dict(), "version": 2}, compute,
                        fingerprint=fingerprint_of(config.model), force=force)


def _tag(df: pd.DataFrame, comparison: str, seed_a, seed_b) -> pd.DataFrame:
    run = f"seeds {seed_a} vs {seed_b}" if seed_b is not None else f"seed {seed_a}"
    df.insert(0, "comparison", comparison)
    df.insert(1, "run", run)
    df.insert(2, "seed_a", seed_a)
    df.insert(3, "seed_b", seed_b)
    return df


def comparison_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Whole-encoder distances per comparison: mean and standard deviation over runs.

    Each run (one seed, or one pair of seeds) is first aggregated over all its tensors with
    :func:`aggregate_distances`; the runs of each comparison are then averaged.

    Parameters
    ----------
    df : pandas.DataFrame
        The ``distances`` table of :func:`distance_study`: one row per tensor and compared pair,
        with the columns ``comparison``, ``run`` and those of :func:`weight_distances`.

    Returns
    -------
    pandas.DataFrame
        One row per comparison, in the order fine-tuned vs pretrained, seed vs seed, pretrained vs
        random init (those present); columns ``comparison, runs, l1, l2, angular, rel_l2, l1_sd,
        l2_sd, angular_sd, rel_l2_sd``, where ``<distance>_sd`` is the standard deviation over the
        runs (NaN for a single run).
    """
    per_run = aggregate_distances(df, ["comparison", "run"])
    g = per_run.groupby("comparison", sort=False)
    out = g[list(METRICS)].mean()
    for m in METRICS:
        out[f"{m}_sd"] = g[m].std(ddof=1) if len(per_run) else np.nan
    out.insert(0, "runs", g.size())
    order = [c for c in ("fine-tuned vs pretrained", "seed vs seed", "pretrained vs random init") if c in out.index]
    return out.loc[order].reset_index()


# ------------------------------------------------------------------------------ verdicts
FT, RANDOM = "fine-tuned vs pretrained", "pretrained vs random init"


def closeness_effect(df: pd.DataFrame, *, margin: float, metric: str = "l1", claim: str = "worse"):
    """How close the fine-tuned encoders are to the pretrained one, on the scale of a random init.

    Per seed, the whole-encoder distance fine-tuned vs pretrained (A) is set against the distance
    pretrained vs random initialisation (B, one value), as ``A / B - 1`` with a t-interval over
    the seeds (:func:`bertdims.core.stats.seed_effect` on the ratio scale; at least 2 seeds). "Close"
    (the registered claim ``p3-close-to-pretrained``) is ``worse`` than the random initialisation
    by more than ``margin``: with 0.5, less than half its distance.

    Parameters
    ----------
    df : pandas.DataFrame
        The ``distances`` table of :func:`distance_study`: one row per tensor and compared pair,
        with the columns ``comparison``, ``run`` and those of :func:`weight_distances`.
    margin : float
        Margin on the ratio scale, fixed before running (see :func:`bertdims.core.stats.verdict_of`).
    metric : str
        The distance, one of :data:`METRICS` (default ``l1``).
    claim : str
        The claim about A against B: ``"worse"`` (the default), ``"better"``, ``"equivalent"`` or
        ``"noninferior"``.

    Returns
    -------
    bertdims.core.stats.Effect
        Estimate, interval over the seeds and verdict.

    Raises
    ------
    ConfigError
        When ``metric`` is not one of :data:`METRICS`, ``claim`` or ``margin`` is not valid, or
        ``df`` has fewer than two fine-tuned seeds.
    """
    from ..core.stats import seed_effect
    if metric not in METRICS:
        raise bad("metric", metric, "choose one of: " + ", ".join(METRICS))
    per_run = aggregate_distances(df, ["comparison", "run"]).set_index("comparison")
    a = per_run.loc[[FT], metric].to_numpy()
    b = per_run.loc[[RANDOM], metric].to_numpy()
    return seed_effect(a, b, claim=claim, margin=margin, scale="ratio", metric=metric,
                       label=f"{metric}: fine-tuned vs pretrained / random init vs pretrained")


def run_lrs(config) -> dict | None:
    """Peak learning rate per layer of a study's runs (:func:`bertdims.train.training.layer_lrs`),
    for :func:`layer_profile`; None when every block learns at the same rate
    (``layer_lr_decay`` 1), where no normalisation is needed."""
    if config.layer_lr_decay == 1.0:
        return None
    from ..modeling.models import load_encoder
    from ..train.training import layer_lrs
    with quiet_transformers():
        num_layers = load_encoder(config.model).num_layers
    return layer_lrs(_finetune_config(config, 0), num_layers)


def layer_profile(df: pd.DataFrame, metric: str = "rel_l2", lrs: Mapping[int, float] | None = None,
                  confidence: float = 0.95) -> pd.DataFrame:
    """Per-layer distance fine-tuned vs pretrained, one row per layer (0 = embeddings) with
    the mean over seeds and a t-interval (``mean, low, high, seeds``), and the per-seed values
    in ``per_seed`` (a list). With ``lrs`` (layer -> peak learning rate, see
    :func:`bertdims.train.training.layer_lrs`) each layer's distance is divided by its rate relative
    to the top layer's, so layer-wise learning-rate decay does not show up as a layer effect."""
    from scipy import stats as st
    layers = layer_distances(df[df["comparison"] == FT], by="run")
    if lrs is not None:
        top = lrs[max(k for k in lrs if isinstance(k, int))]
        layers[metric] = layers[metric] / layers["layer"].map(lambda n: lrs[int(n)] / top)
    rows = []
    for layer, g in layers.groupby("layer"):
        v = g[metric].to_numpy(float)
        mean = float(v.mean())
        if len(v) > 1 and np.ptp(v) > 0:
            half = float(st.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
        else:
            half = float("nan") if len(v) == 1 else 0.0
        rows.append({"layer": int(layer), "mean": mean, "low": mean - half, "high": mean + half,
                     "seeds": len(v), "per_seed": v.tolist()})
    return pd.DataFrame(rows)


def layer_variation_effect(df: pd.DataFrame, *, margin: float, metric: str = "rel_l2",
                           lrs: Mapping[int, float] | None = None, claim: str = "better"):
    """Whether the closeness varies by layer: the top block's distance against the bottom block's.

    Per seed, the distance fine-tuned vs pretrained of the top transformer block (A) is set
    against that of the bottom block (B), as ``A / B - 1`` with a t-interval over the seeds
    (:func:`bertdims.core.stats.seed_effect` on the ratio scale), from the per-seed values of
    :func:`layer_profile`.

    Parameters
    ----------
    df : pandas.DataFrame
        The ``distances`` table of :func:`distance_study` (its ``fine-tuned vs pretrained`` rows
        are used): one row per tensor and compared pair, with the columns ``comparison``, ``run``
        and those of :func:`weight_distances`; at least two seeds.
    margin : float
        Margin on the ratio scale, fixed before running (see :func:`bertdims.core.stats.verdict_of`).
    metric : str
        The distance (default ``rel_l2``, the relative distance ``||a - b|| / ||a||``).
    lrs : mapping of int to float, optional
        Layer -> peak learning rate (:func:`run_lrs`), as in :func:`layer_profile`: each layer's
        distance is divided by its rate relative to the top layer's. Needed when the runs used
        layer-wise learning-rate decay; None: no normalisation.
    claim : str
        The claim about A against B: ``"better"`` (the default: the top block moves further),
        ``"worse"``, ``"equivalent"`` or ``"noninferior"``.

    Returns
    -------
    bertdims.core.stats.Effect
        Estimate, interval over the seeds and verdict; its label names the two layers.

    Raises
    ------
    ConfigError
        When ``claim`` or ``margin`` is not valid, or ``df`` has fewer than two seeds.
    """
    from ..core.stats import seed_effect
    prof = layer_profile(df, metric, lrs)
    blocks = prof[prof["layer"] >= 1]
    top, bottom = blocks.iloc[-1], blocks.iloc[0]
    return seed_effect(np.asarray(top["per_seed"]), np.asarray(bottom["per_seed"]), claim=claim,
                       margin=margin, scale="ratio", metric=metric,
                       label=f"{metric}: layer {int(top['layer'])} / layer {int(bottom['layer'])}")


# ------------------------------------------------------------------------------ layers
#: Layer numbers 1..L (repeats allowed; an empty list means every layer, like None).
_LAYER_NUMBERS = IntList(low=1, min_len=0, example="[2, 5]")


@dataclass
class LayerStudyConfig(ConfigMixin):
    """Which layers need fine-tuning (Radiya-Dixit & Wang: only some layers need fine-tuning).

    For each seed, :func:`layer_study` runs full fine-tuning; each encoder layer in
    ``single_layers`` fine-tuned alone (with the head); the top ``n`` layers for each ``n`` in
    ``top_n``; and the head alone on the frozen encoder (``head only``). Layers are numbered 1..L.

    Parameters
    ----------
    model : str
        Base encoder, as in :class:`DistanceConfig`.
    task : str
        A registered task name.
    seeds : list of int
        Seeds of the runs: distinct integers >= 0, at least one.
    single_layers : list of int or None
        Encoder layers (1..L) to fine-tune one at a time; None: every layer.
    top_n : list of int or None
        Numbers n (1..L) of top layers to fine-tune together; None: every n from 1 to L.
    max_train_samples, max_eval_samples : int or None
        Training and evaluation subset sizes (None: all), as in :class:`DistanceConfig`.
    max_seq_len : int
        Maximum tokens per example.
    epochs, lr : float
        Passes over the training set and peak learning rate, as in :class:`DistanceConfig`.
    layer_lr_decay : float
        As in :class:`DistanceConfig` (1.0), so the full fine-tunings are the distance study's
        runs.

    Raises
    ------
    ConfigError
        When ``seeds`` is empty, repeated or negative, ``single_layers`` or ``top_n`` is not None
        or a list of layer numbers >= 1, a subset size is < 1, ``max_seq_len`` < 2, ``epochs``
        or ``lr`` is not positive, ``layer_lr_decay`` is outside (0, 1], or ``task`` is unknown.
    """

    model: str = param("model")
    task: str = param("task")
    seeds: list[int] = param("seeds")
    single_layers: list[int] | None = own(None, _LAYER_NUMBERS, "encoder layers (1..L) "
                                          "fine-tuned one at a time; None or 'all': every layer",
                                          none=True)
    top_n: list[int] | None = own(None, _LAYER_NUMBERS, "numbers n (1..L) of top layers "
                                  "fine-tuned together; None or 'all': every n", none=True)
    max_train_samples: int | None = study_param("max_train_samples")
    max_eval_samples: int | None = study_param("max_eval_samples")
    max_seq_len: int = study_param("max_seq_len")
    epochs: float = param("epochs", 1.0)
    lr: float = param("lr")
    layer_lr_decay: float = param("layer_lr_decay", 1.0)

    def __post_init__(self):
        check_fields(self)                  # every field against its constraint

    def validate(self, num_layers: int) -> None:
        """Layer numbers must exist in a model with ``num_layers`` encoder layers."""
        for name in ("single_layers", "top_n"):
            value = getattr(self, name)
            if value is not None and any(v > num_layers for v in value):
                raise bad(name, value, f"layers are numbered 1..{num_layers} for this model "
                          f"({self.model!r} has {num_layers} encoder layers)")

    def runs(self, num_layers: int) -> list[tuple[str, int, list[int] | None]]:
        """(setting, n, train_layers) for every fine-tuning of one seed."""
        single = self.single_layers or list(range(1, num_layers + 1))
        top = self.top_n or list(range(1, num_layers + 1))
        out = [("full", num_layers, None), ("head only", 0, [])]   # [] = every layer frozen
        out += [("single layer", i, [i]) for i in single]
        out += [("top n layers", n, list(range(num_layers - n + 1, num_layers + 1))) for n in top]
        return out


@dataclass
class LayerStudy(RunsResult):
    """What :func:`layer_study` ran, with the shape of every result (:mod:`bertdims.core.result`:
    ``config`` the :class:`LayerStudyConfig`; ``metrics`` and ``paths`` of ``runs``, keyed
    ``(setting, n, seed)``): ``table`` (one row per run: ``setting, n, seed,
    train_layers``, ``<split>_<metric>`` and the test headline metric under its own name),
    ``predictions`` ((setting, n) -> test predictions (S, N), rows in seed order),
    ``labels`` (N,), ``histories`` (the engine's training curves with ``setting, n, seed``)
    and ``metric``."""

    table: pd.DataFrame
    predictions: dict
    labels: np.ndarray
    histories: pd.DataFrame
    metric: str
    config: Any = None
    runs: dict = field(default_factory=dict, repr=False)


def layer_study(config: LayerStudyConfig, store=None) -> LayerStudy:
    """Fine-tune some layers only, for every seed of a :class:`LayerStudyConfig`.

    Runs the settings of :meth:`LayerStudyConfig.runs` for each seed: full fine-tuning, the head
    alone on the frozen encoder, each layer of ``single_layers`` alone, and the top n layers for
    each n of ``top_n``. Each fine-tuning is cached by the engine, so reruns, and runs shared with
    other chapters, are read back.

    Parameters
    ----------
    config : LayerStudyConfig
        What to run.
    store : ResultStore, optional
        Where the runs are cached; None keeps nothing
        (:func:`bertdims.core.store.store_or_temporary`).

    Returns
    -------
    LayerStudy
        ``table``: one row per run, with columns ``setting, n, seed, train_layers``,
        ``<split>_<metric>`` for every split and metric, and the headline metric (test, else
        validation) under its own name; ``predictions``: (setting, n) -> test predictions, array
        (S, N), one row per seed in the order of ``config.seeds``; ``labels``: the test labels
        (N,); ``histories``: the engine's training curves with ``setting, n, seed, comparison``;
        ``metric``: the task's headline metric.

    Raises
    ------
    ConfigError
        When ``single_layers`` or ``top_n`` names a layer the model does not have, or the runs
        were scored on different test examples.
    """
    from ..modeling.models import load_encoder
    from ..core.store import store_or_temporary
    from ..data.tasks import get_task
    store = store_or_temporary(store)
    ft = _ft
    with quiet_transformers():
        num_layers = load_encoder(config.model).num_layers
    config.validate(num_layers)
    metric = get_task(config.task).metric

    def ft_config(seed, layers):
        if layers is None:
            return _finetune_config(config, seed)
        if not layers:            # head only: embeddings and every block frozen
            return _finetune_config(config, seed, freeze=num_layers)
        return _finetune_config(config, seed, train_layers=layers)

    from ..train.executor import ensure_runs
    asked = [(seed, layers) for seed in config.seeds for _, _, layers in config.runs(num_layers)]
    ensure_runs([ft_config(seed, layers) for seed, layers in asked], store,   # on a cluster, if any
                keep_model=[None if layers is None else False for _, layers in asked])
    rows, preds, hists, labels, runs = [], {}, [], None, {}
    for seed in config.seeds:
        for setting, n, layers in config.runs(num_layers):
            ft_cfg = ft_config(seed, layers)
            with quiet_transformers():     # only the full run's weights are read later
                run = ft.finetune(ft_cfg, store=store, progress=False, keep_model=None if layers is None else False)
            runs[(setting, n, seed)] = run
            row = {"setting": setting, "n": n, "seed": seed,
                   "train_layers": "all" if layers is None else ",".join(map(str, layers))}
            for split, ms in run.metrics.items():
                row.update({f"{split}_{m}": v for m, v in ms.items()})
            row[metric] = row.get(f"test_{metric}", row.get(f"validation_{metric}"))
            rows.append(row)
            lab = run.labels("test")
            if labels is None:
                labels = np.asarray(lab)
            elif not np.array_equal(labels, lab):
                raise ConfigError("runs of the layer study were scored on different test examples")
            preds.setdefault((setting, n), []).append(np.asarray(run.predictions("test")))
            key = {"full": "full", "head only": "head only", "single layer": f"layer {n}",
                   "top n layers": f"top {n}"}[setting]
            hists.append(run.history.assign(setting=setting, n=n, seed=seed, comparison=key))
    return LayerStudy(table=pd.DataFrame(rows), predictions={k: np.stack(v) for k, v in preds.items()},
                      labels=labels, histories=pd.concat(hists, ignore_index=True), metric=metric,
                      config=config, runs=runs)


def layer_effects(study: LayerStudy, *, margin: float, n_boot: int = 2000) -> dict:
    """Each partial fine-tuning against full fine-tuning (:func:`bertdims.core.stats.paired_effect`
    on the test predictions, paired by seed and example; ``noninferior`` with ``margin``):
    keys ``"top <n>"``, ``"layer <i>"`` and ``"head only"``."""
    from ..core.stats import paired_effect
    full = study.predictions[("full", max(n for s, n in study.predictions if s == "full"))]
    out = {}
    names = {"top n layers": "top {}", "single layer": "layer {}", "head only": "head only"}
    order = sorted(study.predictions.items(), key=lambda kv: (kv[0][0] != "top n layers", kv[0]))
    for (setting, n), p in order:
        if setting == "full":
            continue
        key = names[setting].format(n)
        out[key] = paired_effect(p, full, study.labels, metric=study.metric, claim="noninferior",
                                 margin=margin, label=f"{key} - full fine-tuning", n_boot=n_boot)
    return out


def layer_summary(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean and standard deviation over seeds of ``metric``, per setting and n.

    Parameters
    ----------
    df : pandas.DataFrame
        :attr:`LayerStudy.table` of :func:`layer_study`: one row per run, with the columns
        ``setting``, ``n``, ``train_layers`` and ``metric``.
    metric : str
        The column to summarise, e.g. :attr:`LayerStudy.metric`.

    Returns
    -------
    pandas.DataFrame
        One row per setting and n, in the order they first appear; columns ``setting, n,
        train_layers, mean, sd, seeds`` (``sd`` is NaN for a single seed).
    """
    g = df.groupby(["setting", "n", "train_layers"], sort=False)[metric]
    return g.agg(mean="mean", sd="std", seeds="size").reset_index()
