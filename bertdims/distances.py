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

from ._validate import ConfigError, ConfigMixin, bad, check_range

KINDS = ("embeddings", "attention", "feed-forward", "layer-norm", "other")
METRICS = ("l1", "l2", "angular")
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

    ``l1`` is the size-weighted mean of the tensors' ``l1`` (mean |difference| over the group),
    ``l2`` the root of the summed squares, ``angular`` the angle of the concatenations (from
    the summed dot products and squared norms). Extra grouping columns in ``df`` such as
    ``comparison`` or ``seed`` can be named in ``by``. Rows whose group key is missing (for
    ``layer``: tensors outside the embeddings and encoder layers) are dropped.
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
    return out.reset_index()


def layer_distances(df: pd.DataFrame, by: str | list[str] = ()) -> pd.DataFrame:
    """Per-layer distances (layer 0 = embeddings): :func:`aggregate_distances` by ``layer``
    plus any extra columns in ``by`` (e.g. ``"comparison"``)."""
    extra = [by] if isinstance(by, str) else list(by)
    return aggregate_distances(df, by=extra + ["layer"])


def random_init_like(model: Any, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised model of the same architecture (``AutoModel.from_config`` with
    the model's config, under ``torch.manual_seed(seed)``): the reference "how far is far"."""
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
def distance_chart(layer_df: pd.DataFrame, metric: str = "l1", color: str = "comparison",
                   log: bool = True):
    """Line chart of one distance by layer (x: layer, 0 = embeddings), one line per
    ``color`` value, averaged over the other rows (e.g. seeds); log scale by default, as the
    comparisons differ by orders of magnitude. ``layer_df`` is the output of
    :func:`layer_distances`."""
    import altair as alt
    if metric not in METRICS:
        raise bad("metric", metric, "choose one of: " + ", ".join(METRICS))
    y = alt.Y(f"mean({metric}):Q", title=_METRIC_TITLES[metric],
              scale=alt.Scale(type="log" if log else "linear"))
    base = alt.Chart(layer_df).encode(x=alt.X("layer:O", title="layer (0 = embeddings)",
                                              axis=alt.Axis(labelAngle=0)),
                                      color=alt.Color(f"{color}:N"))
    return (base.mark_line(point=True).encode(y=y, tooltip=[color, "layer", f"mean({metric}):Q"])
            .properties(width=320, height=220, title=_METRIC_TITLES[metric] + " by layer"))


def kind_chart(kind_df: pd.DataFrame, metric: str = "l1", color: str = "comparison", log: bool = True):
    """Bar chart of one distance by kind of matrix (embeddings, attention, feed-forward,
    layer norm), grouped by ``color``. ``kind_df`` comes from ``aggregate_distances(df,
    [color, "kind"])`` (averaged over any further rows such as seeds)."""
    import altair as alt
    if metric not in METRICS:
        raise bad("metric", metric, "choose one of: " + ", ".join(METRICS))
    scale = alt.Scale(type="log" if log else "linear")
    return (alt.Chart(kind_df).mark_bar().encode(
        x=alt.X("kind:N", title=None, sort=list(KINDS), axis=alt.Axis(labelAngle=0)),
        xOffset=f"{color}:N",
        y=alt.Y(f"mean({metric}):Q", title=_METRIC_TITLES[metric], scale=scale),
        color=f"{color}:N", tooltip=[color, "kind", f"mean({metric}):Q"])
        .properties(width=320, height=220, title=_METRIC_TITLES[metric] + " by kind of matrix"))


_METRIC_TITLES = {"l1": "L1 (mean |difference|)", "l2": "L2 distance", "angular": "angular distance (/π)"}


def layer_study_chart(df: pd.DataFrame, metric: str):
    """Task metric of fine-tuning one layer only / the top n layers (x: layer or n), with
    full fine-tuning and the frozen-encoder probe as horizontal rules. ``df`` comes from
    :func:`layer_study` (columns ``setting, n, seed, <metric>``)."""
    import altair as alt
    parts = df[df["setting"].isin(["single layer", "top n layers"])]
    refs = df[df["setting"].isin(["full", "head only"])]
    points = alt.Chart(parts).mark_line(point=True).encode(
        x=alt.X("n:O", title="layer i (single layer) or n (top n layers)", axis=alt.Axis(labelAngle=0)),
        y=alt.Y(f"mean({metric}):Q", title=metric, scale=alt.Scale(zero=False)),
        color=alt.Color("setting:N"), tooltip=["setting", "n", f"mean({metric}):Q"])
    band = alt.Chart(parts).mark_errorbar(extent="stdev").encode(
        x="n:O", y=alt.Y(f"{metric}:Q", title=metric), color="setting:N")
    rules = alt.Chart(refs).mark_rule(strokeDash=[4, 3]).encode(
        y=f"mean({metric}):Q", color="setting:N", tooltip=["setting", f"mean({metric}):Q"])
    return (points + band + rules).properties(width=360, height=240,
                                              title="Fine-tuning some layers vs all")


# ------------------------------------------------------------------------------ studies
# Silences transformers' load reports and bars inside studies (shared with sparse.py).
from .models import quiet_transformers  # noqa: E402


from .training import finetune_module as _finetune_module  # noqa: E402


@dataclass
class DistanceConfig(ConfigMixin):
    """How far fine-tuning moves the weights (Radiya-Dixit & Wang: fine-tuned models are close
    to the pretrained one in parameter space).

    Fine-tunes ``model`` on ``task`` once per seed (the standard engine), then measures
    fine-tuned vs pretrained (per seed), pretrained vs a random initialisation (seed
    ``random_seed``), and fine-tuned vs fine-tuned for every pair of seeds.
    """

    model: str = "embedded"
    task: str = "rotten_tomatoes"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    max_train_samples: int | None = 1000
    max_eval_samples: int | None = 500
    max_seq_len: int = 64
    epochs: float = 1.0
    lr: float = 1e-4
    random_seed: int = 0

    def __post_init__(self):
        _check_seeds(self.seeds)
        check_range("epochs", self.epochs, 0, low_open=True)
        check_range("lr", self.lr, 0, low_open=True)
        check_range("max_seq_len", self.max_seq_len, 2, integer=True)
        check_range("random_seed", self.random_seed, 0, integer=True)
        from .tasks import get_task
        get_task(self.task)

    def finetune_config(self, seed: int, **changes):
        return _finetune_config(self, seed, **changes)


def _finetune_config(cfg, seed: int, **changes):
    """The engine's FinetuneConfig for a study config (shared fields) and one seed."""
    ft = _finetune_module()
    return ft.FinetuneConfig(model=cfg.model, task=cfg.task, epochs=cfg.epochs, lr=cfg.lr,
                             max_train_samples=cfg.max_train_samples,
                             max_eval_samples=cfg.max_eval_samples,
                             max_seq_len=cfg.max_seq_len, seed=seed, **changes)


def _check_seeds(seeds) -> None:
    if not isinstance(seeds, (list, tuple)) or not seeds or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise bad("seeds", seeds, "expected a non-empty list of integers >= 0")
    if len(set(seeds)) != len(seeds):
        raise bad("seeds", seeds, "seeds must be distinct")


def distance_study(config: DistanceConfig, store=None, *, force: bool = False):
    """Run (or read back) the distance study. Returns a ``StoredRun`` with

    * ``.table("distances")``: :func:`weight_distances` rows plus ``comparison``
      (``fine-tuned vs pretrained``, ``pretrained vs random init``, ``seed vs seed``),
      ``run`` (e.g. ``seed 0`` or ``seeds 0 vs 1``), ``seed_a`` and ``seed_b``;
    * ``.table("metrics")``: the fine-tuned runs' metrics (``seed, split, metric, value``).
    """
    from .models import fingerprint_of, load_encoder
    from .store import ResultStore
    store = store or ResultStore()
    ft = _finetune_module()

    def compute() -> dict:
        with quiet_transformers():
            pretrained = load_encoder(config.model).model
        tables, metrics, finetuned = [], [], {}
        for seed in config.seeds:
            with quiet_transformers():
                run = ft.finetune(config.finetune_config(seed), store=store, progress=False)
                finetuned[seed] = ft.load_finetuned(run.model_dir).encoder
            tables.append(_tag(weight_distances(pretrained, finetuned[seed]),
                               "fine-tuned vs pretrained", seed, None))
            metrics += [{"seed": seed, "split": split, "metric": m, "value": v}
                        for split, ms in run.metrics.items() for m, v in ms.items()]
        rand = random_init_like(pretrained, config.random_seed)
        tables.append(_tag(weight_distances(pretrained, rand), "pretrained vs random init",
                           config.random_seed, None))
        for sa, sb in itertools.combinations(config.seeds, 2):
            tables.append(_tag(weight_distances(finetuned[sa], finetuned[sb]), "seed vs seed", sa, sb))
        return {"distances": pd.concat(tables, ignore_index=True), "metrics": pd.DataFrame(metrics)}

    return store.cached("weight_distances", config.to_dict(), compute,
                        fingerprint=fingerprint_of(config.model), force=force)


def _tag(df: pd.DataFrame, comparison: str, seed_a, seed_b) -> pd.DataFrame:
    run = f"seeds {seed_a} vs {seed_b}" if seed_b is not None else f"seed {seed_a}"
    df.insert(0, "comparison", comparison)
    df.insert(1, "run", run)
    df.insert(2, "seed_a", seed_a)
    df.insert(3, "seed_b", seed_b)
    return df


def comparison_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Whole-encoder distances per comparison (each run aggregated over all its tensors,
    then the mean and standard deviation over runs): ``comparison, runs, l1, l1_sd, l2,
    l2_sd, angular, angular_sd``. ``df``: the ``distances`` table of :func:`distance_study`."""
    per_run = aggregate_distances(df, ["comparison", "run"])
    g = per_run.groupby("comparison", sort=False)
    out = g[list(METRICS)].mean()
    for m in METRICS:
        out[f"{m}_sd"] = g[m].std(ddof=1) if len(per_run) else np.nan
    out.insert(0, "runs", g.size())
    order = [c for c in ("fine-tuned vs pretrained", "seed vs seed", "pretrained vs random init") if c in out.index]
    return out.loc[order].reset_index()


def _fmt(x: float) -> str:
    return f"{x:.2e}" if abs(x) < 1e-2 else f"{x:.3f}"


def distance_findings(df: pd.DataFrame) -> str:
    """The paper's claims on distances beside ours, in Markdown, computed from the
    ``distances`` table of :func:`distance_study`."""
    summ = comparison_summary(df).set_index("comparison")
    ft, rnd = summ.loc["fine-tuned vs pretrained"], summ.loc["pretrained vs random init"]
    r1, ra = ft["l1"] / rnd["l1"], ft["angular"] / rnd["angular"]
    close = r1 < 0.1 and ra < 0.1
    layers = layer_distances(df[df["comparison"] == "fine-tuned vs pretrained"], by="run")
    by_layer = layers[layers["layer"] >= 1].groupby("layer")[["l1", "angular"]].mean()
    lo, hi = by_layer["l1"].idxmin(), by_layer["l1"].idxmax()
    spread = by_layer["l1"].max() / by_layer["l1"].min()
    emb = layers[layers["layer"] == 0]["l1"].mean()
    emb_text = (f"the embeddings move least per weight (L1 {_fmt(emb)}): most rows of the word-"
                "embedding table belong to tokens that never occur in the training sentences and "
                "get no gradient. " if emb < by_layer["l1"].min() else
                f"the embeddings move L1 = {_fmt(emb)} per weight. ")
    text = [
        "**Paper** (Radiya-Dixit & Wang): fine-tuned BERT stays close to the pretrained "
        "model in L1 and angular distance, and how close varies from layer to layer.",
        f"**Here**: over the whole encoder the fine-tuned model is at L1 = {_fmt(ft['l1'])} and angular "
        f"distance {_fmt(ft['angular'])}·π from the pretrained one, against {_fmt(rnd['l1'])} and "
        f"{_fmt(rnd['angular'])}·π from pretrained to a random initialisation: "
        f"{1 / r1:,.0f} times closer in L1 and {1 / ra:,.0f} times closer in angle. "
        + ("This **agrees** with the paper." if close else
           "That is less than a factor of 10, so here the claim **does not hold** as strongly as in the paper."),
        f"By layer, the L1 distance of the transformer blocks ranges from {_fmt(by_layer['l1'].min())} "
        f"(layer {lo}) to {_fmt(by_layer['l1'].max())} (layer {hi}), a factor of {spread:.1f}; "
        + emb_text + ("The closeness **varies by layer**, as the paper says." if spread >= 1.5 else
           "The layers move by **similar amounts** (less than a factor 1.5 apart), unlike the paper's finding."),
    ]
    if "seed vs seed" in summ.index:
        ss = summ.loc["seed vs seed"]
        text.append(f"Two fine-tunings with different seeds are L1 = {_fmt(ss['l1'])} apart "
                    f"({ss['l1'] / ft['l1']:.2f} times their distance to the pretrained model): "
                    "each run takes its own small step away from the same starting point.")
    return "\n\n".join(text)


@dataclass
class LayerStudyConfig(ConfigMixin):
    """Which layers need fine-tuning (Radiya-Dixit & Wang: only some layers need
    fine-tuning).

    For each seed: full fine-tuning; each encoder layer in ``single_layers`` fine-tuned alone
    (with the head); the top ``n`` layers for each ``n`` in ``top_n``; and the head alone on
    the frozen encoder (``head only``). Layers are numbered 1..L; None means all of them.
    """

    model: str = "embedded"
    task: str = "rotten_tomatoes"
    seeds: list[int] = field(default_factory=lambda: [0])
    single_layers: list[int] | None = None
    top_n: list[int] | None = None
    max_train_samples: int | None = 1000
    max_eval_samples: int | None = 500
    max_seq_len: int = 64
    epochs: float = 1.0
    lr: float = 1e-4

    def __post_init__(self):
        _check_seeds(self.seeds)
        for name in ("single_layers", "top_n"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (list, tuple)) or not all(
                    isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)):
                raise bad(name, value, "expected None (all layers) or a list of layer numbers >= 1")
        check_range("epochs", self.epochs, 0, low_open=True)
        check_range("lr", self.lr, 0, low_open=True)
        from .tasks import get_task
        get_task(self.task)

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


def layer_summary(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean and standard deviation (over seeds) of ``metric`` per setting and n."""
    g = df.groupby(["setting", "n", "train_layers"], sort=False)[metric]
    return g.agg(mean="mean", sd="std", seeds="size").reset_index()


def layer_findings(df: pd.DataFrame, metric: str, tolerance: float = 0.01) -> str:
    """The paper's claim on fine-tuning some layers beside ours, in Markdown, from the table
    of :func:`layer_study`; "matches" means within ``tolerance`` of full fine-tuning."""
    s = layer_summary(df, metric)
    full = s.loc[s["setting"] == "full", "mean"].iloc[0]
    head = s.loc[s["setting"] == "head only", "mean"].iloc[0]
    single = s[s["setting"] == "single layer"].set_index("n")["mean"]
    top = s[s["setting"] == "top n layers"].set_index("n")["mean"].sort_index()
    text = ["**Paper** (Radiya-Dixit & Wang): fine-tuning only some of the layers is "
            "enough to come close to full fine-tuning; the layers are not equally important.",
            f"**Here** ({metric}, test split, mean over {int(s['seeds'].max())} seed(s)): full "
            f"fine-tuning {full:.3f}; the head alone on the frozen encoder {head:.3f}."]
    if len(single):
        best = single.idxmax()
        text.append(f"Fine-tuning one layer alone gives {single.min():.3f} to {single.max():.3f}; "
                    f"the best single layer is layer {best} ({single.max():.3f}, "
                    f"{single.max() - full:+.3f} against full).")
    if len(top):
        ok = top[top >= full - tolerance]
        text.append(("The top {} layer(s) are enough to come within {} of full fine-tuning ({:.3f}), "
                     "which **agrees** with the paper.").format(ok.index[0], tolerance, ok.iloc[0])
                    if len(ok) else
                    f"None of the top-n settings tried (n = {', '.join(map(str, top.index))}) comes "
                    f"within {tolerance} of full fine-tuning (best {top.max():.3f}), so with this "
                    "budget the claim is **not reproduced**.")
    if head >= full - tolerance:
        text.append(f"Note that the frozen encoder with a trained head is itself within {tolerance} of "
                    "full fine-tuning here, so this task leaves little for fine-tuning to add.")
    return "\n\n".join(text)


def layer_study(config: LayerStudyConfig, store=None) -> pd.DataFrame:
    """Fine-tune some layers only; one row per run: ``setting, n, seed, train_layers`` and
    the validation and test metrics (columns ``<split>_<metric>`` and the headline metric
    of the test split under its own name). Each fine-tuning is cached in the store by the
    engine, so reruns and runs shared with other chapters are read back."""
    from .models import load_encoder
    from .store import ResultStore
    from .tasks import get_task
    store = store or ResultStore()
    ft = _finetune_module()
    with quiet_transformers():
        num_layers = load_encoder(config.model).num_layers
    config.validate(num_layers)
    metric = get_task(config.task).metric
    rows = []
    for seed in config.seeds:
        for setting, n, layers in config.runs(num_layers):
            if layers is None:
                ft_cfg = _finetune_config(config, seed)
            elif not layers:            # head only: embeddings and every block frozen
                ft_cfg = _finetune_config(config, seed, freeze=num_layers)
            else:
                ft_cfg = _finetune_config(config, seed, train_layers=layers)
            with quiet_transformers():
                run = ft.finetune(ft_cfg, store=store, progress=False)
            row = {"setting": setting, "n": n, "seed": seed,
                   "train_layers": "all" if layers is None else ",".join(map(str, layers))}
            for split, ms in run.metrics.items():
                row.update({f"{split}_{m}": v for m, v in ms.items()})
            row[metric] = row.get(f"test_{metric}", row.get(f"validation_{metric}"))
            rows.append(row)
    return pd.DataFrame(rows)
