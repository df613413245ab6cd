"""Do the three papers point at the same dimensions? (book chapter ``11_dimension_agreement``)

Each paper singles out a few coordinates of BERT's hidden vectors, each in its own way, and
BERT-family models also have a few *outlier* dimensions, with very large values for every input
(in all-MiniLM-L6-v2, dimension 99 of every layer's ``[CLS]`` vector; in bert-base-uncased,
dimension 308). This module puts them side by side, for one fine-tuned model (a task and a
seed) at a time, on the token vector the classifier's head reads (the last layer's ``[CLS]``):

* ``selected``: the dimension ranking of *Few Dimensions are Enough* (chapter 4's
  :func:`bertdims.analysis.dims.rank_dims`, the same stored ranking);
* ``salient``: the salient neurons of Matton & de Oliveira, section 3.2 (greedy forward
  selection by cross-validated accuracy, :class:`bertdims.analysis.neurons.NeuronSelector`); only the
  first ``max(n_neurons, classes)`` are ranked;
* ``single``: each dimension alone, test accuracy of a logistic regression on it (their
  Figure 6, :func:`bertdims.analysis.neurons.single_neuron_accuracy`);
* ``pca``: the dimensions with the largest loadings on the top principal components of the
  fine-tuned vectors of the training examples (:func:`pca_scores`);
* ``moved``: the dimensions whose weights fine-tuning moved most (Radiya-Dixit & Wang's
  question of which weights fine-tuning changes): the change of every parameter that writes
  dimension ``d`` of the block the head reads, the row of its output projection, its bias and
  its LayerNorm scale and shift (:func:`weight_change_scores`);
* ``outlier``: the mean magnitude of each dimension of the *pretrained* model over the general
  corpus (:func:`outlier_profile`); the outlier dimensions are those more than
  ``outlier_sigma`` standard deviations above the mean over dimensions (:func:`outlier_dims`).

What is measured:

1. :func:`agreement_table`: for every pair of sources and every fine-tuned model, the share of
   the top ``k`` the two have in common, Spearman's and Kendall's rank correlations
   (:func:`scipy.stats.spearmanr`, :func:`scipy.stats.kendalltau`), and the same statistics
   under a null of random rankings (one ranking's scores put on randomly permuted dimensions,
   :func:`null_agreement`); :func:`agreement_effects` turns them into
   :class:`~bertdims.core.stats.Effect` objects, observed minus null, with a t-interval over the
   fine-tuned models (:func:`bertdims.core.stats.seed_effect`).
2. :func:`cross_agreement`: the same between fine-tuned models: across seeds (one task) and
   across tasks (one seed).
3. :func:`outlier_retrain`: fine-tuning afresh with a head on the top ``k`` selected
   dimensions, on the top ``k`` selected once the outlier dimensions are taken out, on the
   ``k`` largest-magnitude dimensions alone, and on ``k`` random ones (chapter 4's protocol,
   and its stored runs); :func:`outlier_effects` compares them with
   :func:`bertdims.core.stats.paired_effect`, paired by seed and test example.

Every run goes through the results store: the fine-tuning runs and rankings are chapter 2's
and 4's, the per-model sources are stored under kind ``agreement_sources``.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..core._validate import ConfigMixin, bad, check_choice, check_range
from ..core.result import ResultFields, RunsResult
from ..config.params import Interval, check_fields, derive, own, param, study_param

SOURCES = ("selected", "salient", "single", "pca", "moved", "outlier")
#: What each source is, in words (the chapter's legend).
SOURCE_WORDS = {
    "selected": "Few Dimensions: the selection ranking",
    "salient": "Matton & de Oliveira: salient neurons (greedy CV selection)",
    "single": "Matton & de Oliveira: single-neuron test accuracy",
    "pca": "largest loadings on the top principal components",
    "moved": "Radiya-Dixit & Wang: weights fine-tuning moved most",
    "outlier": "outlier dimensions: largest mean magnitude (pretrained, general corpus)",
}
SETTINGS = ("full", "selected", "without outliers", "outliers", "random")
STATISTICS = ("overlap", "spearman", "kendall")
SOURCES_VERSION = 1     # part of every agreement_sources key: bump when its computation changes


# ============================================================================ config
@dataclass
class AgreementConfig(ConfigMixin):
    """What chapter 11 runs; the fields are its parameters (margins aside).

    ``model``, ``tasks``, ``seeds`` and the fine-tuning recipe (``max_train_samples`` ...
    ``batch_size``) give the fine-tuned models, those of chapters 2 and 4 with the same values
    (:meth:`finetune_base`; the other fields of :class:`bertdims.train.finetuning.FinetuneConfig` keep
    their defaults).

    Parameters
    ----------
    model : str
        The base encoder: ``"embedded"``, a hub name or a local folder.
    tasks : list of str
        Distinct registered classification tasks (salient neurons and single-neuron accuracy
        need classes); one name is accepted as a list of one.
    seeds : list of int
        Distinct fine-tuning seeds; every task is fine-tuned once per seed.
    max_train_samples, max_eval_samples : int or None
        Fixed random subsets of the training / each evaluation split, as in
        :class:`~bertdims.train.finetuning.FinetuneConfig`.
    max_seq_len : int
        Tokens per input, for fine-tuning and for the general corpus.
    epochs : float
        Passes over the training set.
    lr : float
        Peak learning rate of the top block.
    batch_size : int
        Examples per update.
    selection : str
        Chapter 4's ranking method, ``"single"`` or ``"ablation"``
        (:func:`bertdims.analysis.dims.rank_dimensions`): the ``selected`` source.
    candidates : int
        The dimensions the ``"ablation"`` ranking ranks (it must cover ``top_k`` and
        ``retrain_k``).
    n_neurons : int
        Salient neurons to select (at least the number of classes are selected); ``top_k``
        may not exceed it.
    folds : int
        Cross-validation folds of the salient-neuron search (>= 2).
    pca_components : int
        The number of principal components whose loadings count (:func:`pca_scores`).
    general_samples : int or None
        Sentences of the general corpus the outlier dimensions are measured on; None takes
        them all.
    outlier_sigma : float
        The outlier rule: a dimension whose mean magnitude lies more than this many standard
        deviations above the mean over dimensions (:func:`outlier_dims`).
    top_k : int
        The k of the top-k overlap.
    retrain_k : int
        The number of dimensions retrained with and without the outliers
        (:func:`outlier_retrain`).
    n_null : int
        Random rankings per comparison (>= 10, :func:`null_agreement`).

    Raises
    ------
    ConfigError
        When a field has a wrong type or value: an unknown or regression task, repeated seeds,
        ``top_k`` above ``n_neurons``, ``candidates`` below ``top_k`` or ``retrain_k`` for the
        ablation ranking, or a value outside its field's constraint (for the recipe, the one
        :class:`~bertdims.train.finetuning.FinetuneConfig` applies: :data:`bertdims.config.params.VOCABULARY`).
    """

    model: str = param("model")
    tasks: list = param("tasks", ["rotten_tomatoes", "bbc_news"])
    seeds: list = param("seeds")
    max_train_samples: int | None = study_param("max_train_samples")
    max_eval_samples: int | None = study_param("max_eval_samples")
    max_seq_len: int = study_param("max_seq_len")
    epochs: float = param("epochs")
    lr: float = param("lr")
    batch_size: int = param("batch_size")
    selection: str = param("selection")
    candidates: int = own(20, Interval(int, 1, None), "the dimensions the ablation ranking ranks")
    n_neurons: int = param("n_neurons")
    folds: int = param("folds")
    pca_components: int = own(5, Interval(int, 1, None), "principal components whose loadings "
                              "count")
    general_samples: int | None = param("general_samples")
    outlier_sigma: float = own(6.0, Interval(float, 0, None, "right"), "standard deviations "
                               "above the mean magnitude that make a dimension an outlier")
    top_k: int = own(5, Interval(int, 1, None), "the k of the top-k overlap")
    retrain_k: int = own(3, Interval(int, 1, None), "dimensions retrained with and without "
                         "the outliers")
    n_null: int = own(1000, Interval(int, 10, None), "random rankings per comparison")

    def __post_init__(self):
        from ..data.tasks import get_task
        check_fields(self)      # every field against its constraint (unknown tasks fail here)
        for t in self.tasks:
            if get_task(t).is_regression:
                raise bad("tasks", self.tasks, f"{t!r} is a regression task; salient neurons "
                          "and single-neuron accuracy need classification tasks")
        if self.top_k > self.n_neurons:
            raise bad("top_k", self.top_k, f"at most n_neurons ({self.n_neurons}): only that "
                      "many salient neurons are ranked")
        if self.selection == "ablation" and max(self.top_k, self.retrain_k) > self.candidates:
            raise bad("candidates", self.candidates, "the ablation ranking must cover top_k and "
                      "retrain_k: use candidates >= both")

    def finetune_base(self):
        """The full fine-tuning config (``dims=None``) of chapters 2 and 4: every field it
        shares with this config, the others at their defaults."""
        from ..train.finetuning import FinetuneConfig
        return derive(FinetuneConfig, self)


# ============================================================================ the sources
def top_order(scores: np.ndarray, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """Dimensions from the highest score to the lowest: (H,). Unranked dimensions (NaN) come
    last; ties are broken by ``tiebreak`` (H,) (lower first; default the dimension index)."""
    s = np.asarray(scores, dtype=float)
    filled = np.where(np.isnan(s), -np.inf, s)
    tb = np.arange(len(s)) if tiebreak is None else np.asarray(tiebreak)
    return np.lexsort((tb, -filled))


def outlier_profile(model: str, *, store, general_samples: int | None = 3000,
                    max_seq_len: int = 64, token: str = "cls", progress: bool = False) -> pd.DataFrame:
    """The mean magnitude of every dimension of the *pretrained* model's token vector over a
    sample of the general-English corpus, at every layer (0: embeddings).

    Returns a tidy DataFrame, one row per (layer, dim): ``layer``, ``dim``, ``mean_abs``
    (mean of |x_d| over the sentences), ``mean`` (of x_d) and ``z`` (``mean_abs`` in standard
    deviations above the mean of ``mean_abs`` over the dimensions of that layer). The
    representations come from :func:`bertdims.analysis.extract.extract` (stored, read back).
    """
    from .extract import GENERAL, extract
    from ..modeling.models import cached_encoder
    enc = cached_encoder(model)
    layers = list(range(enc.num_layers + 1))
    rep = extract(enc, GENERAL, "train", layers=layers, token=token, max_samples=general_samples,
                  max_seq_len=max_seq_len, store=store, progress=progress)
    frames = []
    for layer in layers:
        x = np.asarray(rep.layer(layer), dtype=np.float64)                 # (N, H)
        m = np.abs(x).mean(0)
        sd = m.std()
        frames.append(pd.DataFrame({"layer": layer, "dim": np.arange(x.shape[1]), "mean_abs": m,
                                    "mean": x.mean(0),
                                    "z": (m - m.mean()) / (sd if sd > 0 else 1.0)}))
    return pd.concat(frames, ignore_index=True)


def _layer_rows(profile: pd.DataFrame, layer: int) -> pd.DataFrame:
    layers = sorted(profile["layer"].unique())
    resolved = layers[layer] if layer < 0 and -len(layers) <= layer else layer
    rows = profile[profile["layer"] == resolved]
    if rows.empty:
        raise bad("layer", layer, f"choose a layer of the profile: {layers[0]}..{layers[-1]} or -1")
    return rows.sort_values("dim")


def outlier_dims(profile: pd.DataFrame, sigma: float = 6.0, layer: int = -1) -> list[int]:
    """The outlier dimensions at ``layer``: mean magnitude more than ``sigma`` standard
    deviations above the mean over dimensions (the ``z`` of :func:`outlier_profile`), largest
    first. May be empty."""
    check_range("sigma", sigma, 0, None, low_open=True)
    rows = _layer_rows(profile, layer)
    rows = rows[rows["z"] > sigma].sort_values("mean_abs", ascending=False)
    return [int(d) for d in rows["dim"]]


def magnitude_scores(profile: pd.DataFrame, layer: int = -1) -> np.ndarray:
    """(H,) mean magnitudes at ``layer``: the ``outlier`` source's scores."""
    return _layer_rows(profile, layer)["mean_abs"].to_numpy(dtype=float)


def pca_scores(x: np.ndarray, n_components: int = 5, device: str = "cpu") -> np.ndarray:
    """(H,) how much of the top ``n_components`` principal components each dimension carries:
    ``sum_j evr_j * V_jd ** 2 / sum_j evr_j`` (``V`` the unit-length components, ``evr`` their
    explained-variance ratios), so the scores sum to 1. ``x`` is (N, H)."""
    from .pca import TorchPCA
    x = np.asarray(x, dtype=np.float64)
    k = min(int(n_components), x.shape[1], max(1, x.shape[0] - 1))
    pca = TorchPCA(k, device=device).fit(x)
    w = np.asarray(pca.explained_variance_ratio_, dtype=float)
    loadings = np.asarray(pca.components_, dtype=float) ** 2                    # (k, H)
    total = w.sum()
    return (w[:, None] * loadings).sum(0) / (total if total > 0 else 1.0)


def _output_parameters(named: dict, block: int) -> dict:
    """The parameters of encoder block ``block`` (0-based) that write its output vector:
    ``output.dense.weight`` (H, I), ``output.dense.bias``, ``output.LayerNorm.weight`` and
    ``.bias`` (H,), found by name (BERT-style models)."""
    prefix = f"encoder.layer.{block}.output."
    wanted = {n[len(prefix):]: t for n, t in named.items() if n.startswith(prefix)}
    need = ("dense.weight", "dense.bias", "LayerNorm.weight", "LayerNorm.bias")
    missing = [n for n in need if n not in wanted]
    if missing:
        raise bad("model", f"parameters of block {block}", f"expected BERT-style names "
                  f"{prefix}{{{', '.join(need)}}}; missing {missing}")
    return {n: wanted[n] for n in need}


def weight_change_scores(pretrained, finetuned, layer: int = -1) -> np.ndarray:
    """(H,) how far fine-tuning moved the weights that write each dimension of layer
    ``layer``'s output (1..L, or -1 for the last): the L2 norm of the change of row ``d`` of
    the block's output projection, its bias ``d`` and its LayerNorm scale and shift ``d``.

    ``pretrained`` and ``finetuned`` are models (an ``nn.Module``, an ``Encoder`` or a
    fine-tuned classifier) or dicts name -> tensor with BERT parameter names."""
    import torch

    from .distances import _named_tensors
    a, b = _named_tensors(pretrained), _named_tensors(finetuned)
    blocks = sorted({int(n.split(".")[2]) for n in a if n.startswith("encoder.layer.")})
    if not blocks:
        raise bad("pretrained", type(pretrained).__name__, "expected a BERT-style encoder "
                  "with parameters named encoder.layer.<i>....")
    num_layers = blocks[-1] + 1
    check_range("layer", layer if layer > 0 else num_layers + 1 + layer, 1, num_layers,
                integer=True)
    block = (layer if layer > 0 else num_layers + 1 + layer) - 1
    pa, pb = _output_parameters(a, block), _output_parameters(b, block)
    total = None
    with torch.no_grad():
        for name in pa:
            d = (pb[name].detach().double().cpu() - pa[name].detach().double().cpu()) ** 2
            d = d.sum(1) if d.ndim == 2 else d                                # (H,)
            total = d if total is None else total + d
    return total.sqrt().numpy()


@dataclass
class Rankings(ResultFields):
    """What :func:`rankings_study` returns, with the shape of every result
    (:mod:`bertdims.core.result`): ``config`` (the :class:`AgreementConfig`), ``metrics``,
    ``tables`` (``scores``, ``rankings``, ``profile``) and ``paths`` (the full models' run
    folders, keyed ``(task, seed)`` like ``metrics`` and ``runs``).

    ``scores``: tidy, one row per (task, seed, source, dim): ``score`` (higher = more
    important; NaN for a dimension the source does not rank) and ``rank`` (1 = first; ties
    broken at random, fixed by the task, seed and source). ``rankings``: chapter 4's ranking
    tables (:func:`bertdims.analysis.dims.run_dims_grid`). ``profile``: :func:`outlier_profile`.
    ``outliers``: :func:`outlier_dims` at the head's layer. ``hidden_size``: H.
    ``metrics[(task, seed)]``: the full model's metrics.
    """

    scores: pd.DataFrame
    rankings: pd.DataFrame
    profile: pd.DataFrame
    outliers: list
    hidden_size: int
    metrics: dict
    config: Any = None
    runs: dict = field(default_factory=dict, repr=False)


def _tiebreak(task: str, seed: int, source: str, hidden: int) -> np.ndarray:
    salt = [int(seed), SOURCES.index(source)] + list(str(task).encode()[:8])
    return np.random.default_rng(salt).permutation(hidden)


def unit_sources(config: AgreementConfig, task: str, seed: int, *, store,
                 progress: bool = False) -> pd.DataFrame:
    """The per-model sources of one fine-tuned model (task, seed): a DataFrame with ``dim``
    and one column per source ``salient``, ``single``, ``pca``, ``moved`` (scores, NaN where
    a dimension is not ranked). Stored under kind ``agreement_sources``, keyed by the
    fine-tuning config and the fine-tuned model's store key (computed once, read back)."""
    from .extract import as_encoder, task_arrays
    from ..train.finetuning import finetune
    from ..modeling.models import cached_encoder
    from .neurons import NeuronSelector, single_neuron_accuracy
    from ..data.tasks import get_task
    cfg = config.finetune_base().replace(task=task, seed=int(seed))
    run = finetune(cfg, store=store, progress=progress, keep_model=True)
    key = {"finetune": cfg.to_dict(), "n_neurons": config.n_neurons, "folds": config.folds,
           "pca_components": config.pca_components, "layer": cfg.layer, "token": cfg.token,
           "version": SOURCES_VERSION}

    def compute():
        clf = run.load()
        enc = as_encoder(clf, name=f"{config.model}+{task}(seed {seed})")
        xtr, ytr, xte, yte = task_arrays(enc, task, max_train_samples=config.max_train_samples,
                                         max_eval_samples=config.max_eval_samples,
                                         max_seq_len=config.max_seq_len, layer=cfg.layer,
                                         token=cfg.token, store=store)
        hidden = xtr.shape[1]
        m = min(max(config.n_neurons, get_task(task).num_labels), hidden)
        sel = NeuronSelector(m, cv=config.folds).fit(xtr, ytr)
        salient = np.full(hidden, np.nan)
        salient[sel.selected_dims_] = np.arange(m, 0, -1, dtype=float)       # first = m
        layer = cfg.layer if cfg.layer > 0 else enc.num_layers + 1 + cfg.layer
        moved = weight_change_scores(cached_encoder(config.model).model, clf.encoder, layer)
        return {"sources": pd.DataFrame({
            "dim": np.arange(hidden), "salient": salient,
            "single": single_neuron_accuracy(xtr, ytr, xte, yte),
            "pca": pca_scores(xtr, config.pca_components), "moved": moved})}

    return store.cached("agreement_sources", key, compute,
                        fingerprint=run.path.name if run.path is not None else None).table("sources")


def rankings_study(config: AgreementConfig, *, store, progress: bool = False) -> Rankings:
    """Every source's scores for every task and seed of ``config`` (see the module docstring).

    The ``selected`` source is chapter 4's stored ranking (:func:`bertdims.analysis.dims.run_dims_grid`
    with chapter 4's default k grid, so its stored entries are read back); its score is minus
    the rank (NaN beyond the ranked candidates). The ``outlier`` source is the same for every
    model (the pretrained model's :func:`outlier_profile` at the head's layer). The other
    sources are computed per fine-tuned model and stored (:func:`unit_sources`).

    Parameters
    ----------
    config : AgreementConfig
        The models, the fine-tuning recipe and the settings of every source.
    store : ResultStore
        Where the fine-tuning runs, rankings, representations and sources are kept and read
        back.
    progress : bool
        Show progress bars.

    Returns
    -------
    Rankings
        ``scores``, a table with one row per (task, seed, source, dim) and columns ``task``,
        ``seed``, ``source``, ``dim``, ``score`` (higher = more important; NaN for a dimension
        the source does not rank) and ``rank`` (1 = first; ties broken at random, fixed by the
        task, seed and source); chapter 4's ranking tables (``rankings``); the
        :func:`outlier_profile` (``profile``); the outlier dimensions at the head's layer
        (``outliers``); the hidden size H; and the full models' metrics per (task, seed).

    Raises
    ------
    ConfigError
        If ``top_k`` or ``retrain_k`` exceeds the model's hidden size.
    """
    from .dims import DEFAULT_KS, model_size, run_dims_grid
    base = config.finetune_base()
    hidden = model_size(config.model)[1]
    if max(config.top_k, config.retrain_k) > hidden:
        raise bad("top_k", max(config.top_k, config.retrain_k),
                  f"at most the hidden size ({hidden})")
    ks = [k for k in DEFAULT_KS if config.selection == "single" or k == "all"
          or k <= config.candidates]
    res = run_dims_grid(base, tasks=config.tasks, seeds=config.seeds, store=store,
                        methods=[config.selection], candidates=config.candidates, ks=ks,
                        progress=progress)
    profile = outlier_profile(config.model, store=store, general_samples=config.general_samples,
                              max_seq_len=config.max_seq_len, progress=progress)
    magnitude = magnitude_scores(profile, base.layer)
    frames = []
    for t in config.tasks:
        for s in config.seeds:
            r = res.rankings[(res.rankings["task"] == t) & (res.rankings["seed"] == s)]
            selected = np.full(hidden, np.nan)
            selected[r["dim"].astype(int).to_numpy()] = -r["rank"].to_numpy(dtype=float)
            per = unit_sources(config, t, s, store=store, progress=progress)
            values = {"selected": selected, "outlier": magnitude,
                      **{c: per[c].to_numpy(dtype=float) for c in ("salient", "single", "pca", "moved")}}
            for source in SOURCES:
                order = top_order(values[source], _tiebreak(t, s, source, hidden))
                rank = np.empty(hidden, dtype=int)
                rank[order] = np.arange(1, hidden + 1)
                frames.append(pd.DataFrame({"task": t, "seed": int(s), "source": source,
                                            "dim": np.arange(hidden), "score": values[source],
                                            "rank": rank}))
    return Rankings(scores=pd.concat(frames, ignore_index=True), rankings=res.rankings,
                    profile=profile, outliers=outlier_dims(profile, config.outlier_sigma, base.layer),
                    hidden_size=hidden, metrics=res.finetune_metrics, config=config, runs=res.runs)


def top_table(rankings: Rankings, k: int) -> pd.DataFrame:
    """The top ``k`` dimensions of every source for every model: one row per (task, seed,
    source) with ``top`` (space-separated, best first) and ``outliers`` (how many of them are
    outlier dimensions)."""
    rows = []
    for (t, s, src), part in rankings.scores.groupby(["task", "seed", "source"], sort=False):
        top = part.sort_values("rank")["dim"].astype(int).tolist()[:k]
        rows.append({"task": t, "seed": s, "source": src, "top": " ".join(map(str, top)),
                     "outliers": sum(d in rankings.outliers for d in top)})
    return pd.DataFrame(rows)


# ============================================================================ agreement
def _ranked(scores: np.ndarray) -> np.ndarray:
    """Scores with unranked dimensions (NaN) tied below every ranked one."""
    s = np.asarray(scores, dtype=float)
    if np.isnan(s).all():
        raise bad("scores", "all NaN", "a ranking must rank at least one dimension")
    low = np.nanmin(s) - 1.0
    return np.where(np.isnan(s), low, s)


def null_agreement(scores_a, scores_b, k: int, *, n_null: int = 1000, random_state: int = 0,
                   tiebreak_a=None, tiebreak_b=None) -> dict:
    """Agreement of two rankings of the same H dimensions, against random rankings.

    ``scores_a``, ``scores_b``: (H,) scores (higher = more important; NaN: not ranked, tied
    last). Observed: ``overlap`` (the share of the top ``k`` the two have in common), Spearman's
    rho and Kendall's tau (:mod:`scipy.stats`, ties averaged). Null: B's scores put on the
    dimensions in a random order, ``n_null`` times (so B keeps its ties and its unranked
    tail): ``null_<stat>`` (mean), ``null_<stat>_q95`` (95th percentile) and ``p_<stat>``
    (one-sided, ``(1 + #null >= observed) / (1 + n_null)``) for overlap and Spearman.
    Returns a dict of floats."""
    from scipy.stats import kendalltau, rankdata, spearmanr
    a, b = _ranked(scores_a), _ranked(scores_b)
    if a.shape != b.shape or a.ndim != 1:
        raise bad("scores_b", f"shape {b.shape}", f"expected the shape of scores_a {a.shape}")
    h = len(a)
    check_range("k", k, 1, h, integer=True)
    check_range("n_null", n_null, 1, None, integer=True)
    for name, s in (("scores_a", scores_a), ("scores_b", scores_b)):
        if int(np.sum(~np.isnan(np.asarray(s, dtype=float)))) < k:
            raise bad("k", k, f"{name} ranks fewer than k dimensions")
    top_a = top_order(scores_a, tiebreak_a)[:k]
    top_b = top_order(scores_b, tiebreak_b)[:k]
    overlap = len(set(top_a.tolist()) & set(top_b.tolist())) / k
    rho = spearmanr(a, b).statistic
    tau = kendalltau(a, b).statistic
    rng = np.random.default_rng(random_state)
    perm = rng.permuted(np.tile(np.arange(h), (n_null, 1)), axis=1)            # (n_null, H)
    # B's score of dimension i is b[perm[i]]: B's top k lands on {i : perm[i] in top_b}
    null_overlap = np.isin(perm[:, top_a], top_b).sum(1) / k
    ra, rb = rankdata(a), rankdata(b)
    rb_perm = rb[perm]
    ca, cb = ra - ra.mean(), rb_perm - rb_perm.mean(1, keepdims=True)
    den = np.sqrt((ca ** 2).sum() * (cb ** 2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        null_rho = np.where(den > 0, (cb @ ca) / den, 0.0)
    out = {"overlap": float(overlap), "spearman": float(np.nan_to_num(rho)),
           "kendall": float(np.nan_to_num(tau))}
    for stat, obs, null in (("overlap", overlap, null_overlap), ("spearman", out["spearman"], null_rho)):
        out[f"null_{stat}"] = float(null.mean())
        out[f"null_{stat}_q95"] = float(np.quantile(null, 0.95))
        out[f"p_{stat}"] = float((1 + np.sum(null >= obs - 1e-12)) / (1 + n_null))
    return out


def _unit_scores(rankings: Rankings, task, seed, source) -> tuple[np.ndarray, np.ndarray]:
    part = rankings.scores[(rankings.scores["task"] == task) & (rankings.scores["seed"] == seed)
                           & (rankings.scores["source"] == source)].sort_values("dim")
    tiebreak = np.empty(len(part), dtype=int)
    tiebreak[part.sort_values("rank")["dim"].to_numpy()] = np.arange(len(part))
    return part["score"].to_numpy(dtype=float), tiebreak


def agreement_table(rankings: Rankings, k: int, *, sources: Sequence[str] = SOURCES,
                    n_null: int = 1000, random_state: int = 0) -> pd.DataFrame:
    """:func:`null_agreement` for every unordered pair of ``sources`` and every model (task,
    seed): one row per (task, seed, source_a, source_b) with the observed statistics and
    their null. Ties within a source are broken as in its ``rank`` column."""
    for s in sources:
        check_choice("sources", s, SOURCES)
    rows = []
    units = rankings.scores[["task", "seed"]].drop_duplicates().itertuples(index=False)
    for i, (t, s) in enumerate(units):
        got = {src: _unit_scores(rankings, t, s, src) for src in sources}
        for j, (sa, sb) in enumerate(itertools.combinations(sources, 2)):
            (a, ta), (b, tb) = got[sa], got[sb]
            rows.append({"task": t, "seed": s, "source_a": sa, "source_b": sb,
                         **null_agreement(a, b, k, n_null=n_null, tiebreak_a=ta, tiebreak_b=tb,
                                          random_state=random_state + 1000 * i + j)})
    return pd.DataFrame(rows)


def cross_agreement(rankings: Rankings, k: int, *, across: str = "seed",
                    sources: Sequence[str] = ("selected",), n_null: int = 1000,
                    random_state: int = 0) -> pd.DataFrame:
    """Agreement of one source with itself on two fine-tuned models: ``across="seed"``, every
    pair of seeds of one task; ``across="task"``, every pair of tasks fine-tuned with the same
    seed. One row per (source, pair): ``source``, ``task_a``, ``seed_a``, ``task_b``,
    ``seed_b`` and the statistics of :func:`null_agreement`. Empty when there is no pair."""
    check_choice("across", across, ("seed", "task"))
    tasks = list(dict.fromkeys(rankings.scores["task"]))
    seeds = list(dict.fromkeys(rankings.scores["seed"]))
    if across == "seed":
        pairs = [((t, a), (t, b)) for t in tasks for a, b in itertools.combinations(seeds, 2)]
    else:
        pairs = [((a, s), (b, s)) for s in seeds for a, b in itertools.combinations(tasks, 2)]
    rows = []
    for source in sources:
        check_choice("sources", source, SOURCES)
        for i, ((ta, sa), (tb, sb)) in enumerate(pairs):
            (a, tba), (b, tbb) = _unit_scores(rankings, ta, sa, source), _unit_scores(rankings, tb, sb, source)
            rows.append({"source": source, "task_a": ta, "seed_a": sa, "task_b": tb, "seed_b": sb,
                         **null_agreement(a, b, k, n_null=n_null, tiebreak_a=tba, tiebreak_b=tbb,
                                          random_state=random_state + i)})
    cols = ["source", "task_a", "seed_a", "task_b", "seed_b"]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=cols)


def observed_vs_null(values, nulls, *, statistic: str, margin: float, label: str) -> dict:
    """``{"effect": Effect, "note": ""}``: the observed statistic against its null mean,
    paired by comparison (one value per fine-tuned model or pair of models), claim *better*
    with ``margin``, by :func:`bertdims.core.stats.seed_effect` (a t-interval over the
    comparisons). With fewer than two comparisons the effect is None and ``note`` says why."""
    from ..core._validate import ConfigError
    from ..core.stats import seed_effect
    values, nulls = np.asarray(values, dtype=float), np.asarray(nulls, dtype=float)
    if len(values) < 2:
        return {"effect": None, "note": f"{len(values)} comparison(s): an interval needs at "
                "least two (more seeds or tasks)"}
    try:
        eff = seed_effect(values, nulls, claim="better", margin=margin, metric=statistic,
                          label=label)
    except ConfigError as err:
        return {"effect": None, "note": str(err)}
    return {"effect": eff, "note": ""}


def agreement_effects(table: pd.DataFrame, *, margin: float, statistic: str = "overlap",
                      by: Sequence[str] = ("source_a", "source_b")) -> pd.DataFrame:
    """For every group of ``table`` (an :func:`agreement_table` or :func:`cross_agreement`
    result) grouped by ``by``: the observed ``statistic`` (``overlap`` or ``spearman``)
    against its null mean, one value per row of the group (:func:`observed_vs_null`).
    Returns one row per group: the ``by`` columns, ``n`` (comparisons), ``observed`` and
    ``null`` (means), ``effect`` (Effect or None), ``note`` and the effect's fields."""
    from .dims import with_effect_fields
    check_choice("statistic", statistic, ("overlap", "spearman"))
    by = list(by)
    if table.empty:
        return pd.DataFrame(columns=by + ["n", "observed", "null", "effect", "note", "verdict"])
    rows = []
    for keys, part in table.groupby(by, sort=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        label = " vs ".join(map(str, keys)) + f": {statistic} - null"
        rows.append({**dict(zip(by, keys)), "n": len(part),
                     "observed": float(part[statistic].mean()),
                     "null": float(part[f"null_{statistic}"].mean()),
                     **observed_vs_null(part[statistic], part[f"null_{statistic}"],
                                        statistic=statistic, margin=margin, label=label)})
    return with_effect_fields(pd.DataFrame(rows))


def matrix_frame(effects: pd.DataFrame, sources: Sequence[str] = SOURCES) -> pd.DataFrame:
    """The pairwise :func:`agreement_effects` as a full square: one row per ordered pair
    (``row``, ``column``) with ``observed``, ``null``, ``low``, ``high``, ``verdict`` and
    ``label`` (the observed value, with ``*`` when the whole interval lies above the null);
    the diagonal is left out."""
    rows = []
    for _, r in effects.iterrows():
        above = r["verdict"] in ("reproduced",) or (pd.notna(r.get("low")) and r["low"] > 0)
        cell = {"observed": r["observed"], "null": r["null"], "low": r.get("low"),
                "high": r.get("high"), "verdict": r["verdict"],
                "label": f"{r['observed']:.2f}" + ("*" if above else "")}
        rows.append({"row": r["source_a"], "column": r["source_b"], **cell})
        rows.append({"row": r["source_b"], "column": r["source_a"], **cell})
    out = pd.DataFrame(rows)
    order = {s: i for i, s in enumerate(sources)}
    return out.sort_values(["row", "column"], key=lambda c: c.map(order)).reset_index(drop=True)


# ============================================================================ retraining
def setting_dims(rankings: Rankings, task: str, seed: int, k: int) -> dict:
    """The dimensions each retraining setting reads for one model: ``selected`` (top ``k`` of
    the ``selected`` source, sorted as chapter 4 does), ``without outliers`` (the top ``k``
    once the outlier dimensions are taken out of the ranking), ``outliers`` (the ``k``
    largest-magnitude dimensions: the outlier dimensions first), ``random``
    (:func:`bertdims.analysis.dims.random_dims`, chapter 4's random sets) and ``full`` (None)."""
    from .dims import random_dims
    check_range("k", k, 1, rankings.hidden_size, integer=True)
    part = rankings.scores[(rankings.scores["task"] == task) & (rankings.scores["seed"] == seed)]
    if part.empty:
        raise bad("task", f"{task}, seed {seed}", "no ranking for this model")

    def order(source):
        p = part[part["source"] == source].sort_values("rank")
        p = p[p["score"].notna()]
        return p["dim"].astype(int).tolist()

    selected = order("selected")
    kept = [d for d in selected if d not in set(rankings.outliers)]
    if len(selected) < k or len(kept) < k:
        raise bad("k", k, f"the selection ranks {len(selected)} dimensions "
                  f"({len(kept)} without the outliers): choose a smaller k or more candidates")
    return {"full": None, "selected": sorted(selected[:k]), "without outliers": sorted(kept[:k]),
            "outliers": sorted(order("outlier")[:k]),
            "random": random_dims(rankings.hidden_size, k, seed, task)}


@dataclass
class OutlierStudy(RunsResult):
    """What :func:`outlier_retrain` returns, with the shape of every result
    (:mod:`bertdims.core.result`; ``metrics`` and ``paths`` of ``runs``, keyed ``(task, setting,
    seed)``, ``config`` the :class:`AgreementConfig`): ``scores`` one row per (task, seed, setting):
    ``chosen`` (space-separated dims), ``n_outliers`` (how many are outlier dimensions),
    ``metric``, ``value`` (test), ``full`` (the same seed's full model), ``share`` (value /
    full); ``predictions[(task, setting)]`` (S, N) test predictions, rows in ``seeds`` order;
    ``labels[task]`` (N,); ``k``."""

    scores: pd.DataFrame
    predictions: dict
    labels: dict
    seeds: list
    k: int
    config: Any = None
    runs: dict = field(default_factory=dict, repr=False)


def outlier_retrain(config: AgreementConfig, rankings: Rankings, *, store,
                    progress: bool = False) -> OutlierStudy:
    """Fine-tune afresh with a head on the dimensions of each setting, with and without outliers.

    For every task and seed, one run per setting of :func:`setting_dims` (``full``,
    ``selected``, ``without outliers``, ``outliers``, ``random``; ``k = config.retrain_k``),
    with the recipe of ``config.finetune_base()``: the full and the selected and random runs
    are chapter 4's (same config, read back from the store); only ``without outliers`` (when
    the top k holds an outlier) and ``outliers`` are new. Runs on a few dimensions are stored
    without encoder weights.

    Parameters
    ----------
    config : AgreementConfig
        The tasks, seeds, recipe and ``retrain_k``.
    rankings : Rankings
        What :func:`rankings_study` returned for ``config``: the ``selected`` and ``outlier``
        sources and the outlier dimensions.
    store : ResultStore
        Where the runs are kept and read back.
    progress : bool
        Show the fine-tuning progress bars.

    Returns
    -------
    OutlierStudy
        ``scores``, a table with one row per (task, seed, setting) and columns ``task``,
        ``seed``, ``setting``, ``k``, ``chosen`` (space-separated dimensions, or ``"all"``),
        ``n_outliers`` (how many are outlier dimensions), ``metric``, ``value`` (test),
        ``full`` (the same seed's full model) and ``share`` (value / full); ``predictions``,
        ``predictions[(task, setting)]`` an array (S, N) of test predictions, rows in
        ``seeds`` order; ``labels[task]``, an array (N,); ``seeds``; and ``k``.

    Raises
    ------
    ConfigError
        If a model has no ranking in ``rankings``, the ranking holds fewer than ``k``
        dimensions (with or without the outliers), or the runs of a task were scored on
        different test examples.
    """
    from ..train.finetuning import finetune
    from ..data.tasks import get_task
    base, k = config.finetune_base(), config.retrain_k
    rows, preds, labels, every = [], {}, {}, {}
    outliers = set(rankings.outliers)
    for t in config.tasks:
        task = get_task(t)
        runs = {name: [] for name in SETTINGS}
        for s in config.seeds:
            dims = setting_dims(rankings, t, s, k)
            for name in SETTINGS:
                d = dims[name]
                run = finetune(base.replace(task=t, seed=int(s), dims=d), store=store,
                               progress=progress, keep_model=None if d is None else False)
                runs[name].append(run)
                every[(t, name, int(s))] = run
                rows.append({"task": t, "seed": int(s), "setting": name, "k": k,
                             "chosen": "all" if d is None else " ".join(map(str, d)),
                             "n_outliers": len(outliers) if d is None else sum(x in outliers for x in d),
                             "metric": task.metric, "value": run.score("test")})
        y = runs["full"][0].labels("test")
        for name, rs in runs.items():
            for r in rs:
                if not np.array_equal(r.labels("test"), y):
                    raise bad("config", t, "every run of a task must be scored on the same "
                              "test examples (same max_eval_samples)")
            preds[(t, name)] = np.stack([r.predictions("test") for r in rs])
        labels[t] = y
    scores = pd.DataFrame(rows)
    full = scores[scores["setting"] == "full"].set_index(["task", "seed"])["value"]
    scores["full"] = [full[(t, s)] for t, s in zip(scores["task"], scores["seed"])]
    scores["share"] = [v / f if f > 0 else np.nan for v, f in zip(scores["value"], scores["full"])]
    return OutlierStudy(scores=scores, predictions=preds, labels=labels,
                        seeds=[int(s) for s in config.seeds], k=k, config=config, runs=every)


#: (claim id, or "" for a diagnostic, A, B, claim kind) of :func:`outlier_effects`
OUTLIER_COMPARISONS = (
    ("book-suffice-without-outliers", "without outliers", "selected", "noninferior"),
    ("book-outliers-alone-fall-short", "outliers", "selected", "worse"),
    ("", "outliers", "random", "better"),
)


def outlier_effects(study: OutlierStudy, *, margin: float, n_boot: int = 2000) -> pd.DataFrame:
    """Per task, through :func:`bertdims.core.stats.paired_effect` on the test predictions (paired
    by seed and example, difference of the task's headline metric):

    * ``book-suffice-without-outliers``: top k selected without the outliers against the top
      k selected, *noninferior* with ``margin``;
    * ``book-outliers-alone-fall-short``: the k largest-magnitude dimensions against the top k
      selected, *worse* with ``margin``;
    * a diagnostic (``claim_id`` ""): the k largest-magnitude dimensions against k random
      ones, *better* with margin 0.

    Returns one row per (task, comparison): ``task``, ``claim_id``, ``comparison``,
    ``effect`` (or None, with ``note``) and the effect's fields."""
    from .dims import effect_or_note, with_effect_fields
    from ..data.tasks import get_task
    rows = []
    for t, y in study.labels.items():
        metric = get_task(t).metric
        for claim_id, a, b, kind in OUTLIER_COMPARISONS:
            m = margin if claim_id else 0.0
            rows.append({"task": t, "claim_id": claim_id, "comparison": f"{a} - {b}",
                         **effect_or_note(study.predictions[(t, a)], study.predictions[(t, b)], y,
                                          metric=metric, claim=kind, margin=m, n_boot=n_boot,
                                          label=f"{t}: {a} - {b} (k = {study.k})")})
    return with_effect_fields(pd.DataFrame(rows))


def recorded_effect(effects: pd.DataFrame, claim_id: str):
    """The effect recorded for ``claim_id`` among per-task effects: the one least favourable to
    the claim (:func:`bertdims.core.stats.least_favourable`); None when none was computed."""
    from ..core.stats import least_favourable
    part = effects[(effects["claim_id"] == claim_id) & effects["effect"].notna()]
    if part.empty:
        return None
    got = dict(zip(part["task"], part["effect"]))
    return got[least_favourable(got)]


# ============================================================================ the findings
#: The pairs of sources whose top-k overlap is recorded as a finding of this book.
PAIR_FINDINGS = {("selected", "salient"): "book-selected-agree-salient",
                 ("selected", "moved"): "book-selected-agree-moved"}


def largest_magnitude(profile: pd.DataFrame, n: int, layer: int = -1) -> list[int]:
    """The ``n`` dimensions of largest mean magnitude at ``layer`` (largest first)."""
    rows = _layer_rows(profile, layer).sort_values("mean_abs", ascending=False)
    check_range("n", n, 1, len(rows), integer=True)
    return [int(d) for d in rows["dim"][:n]]


def _effect_of(table: pd.DataFrame, **where):
    rows = table
    for col, value in where.items():
        rows = rows[rows[col] == value]
    if len(rows) != 1:
        return None
    return rows["effect"].iloc[0]


def findings_effects(pairs: pd.DataFrame, seeds: pd.DataFrame, tasks: pd.DataFrame,
                     retrained: pd.DataFrame) -> dict:
    """claim id -> the Effect recorded for each finding of this book, or None when it could
    not be computed (too few seeds or tasks):

    * ``book-selected-agree-salient``, ``book-selected-agree-moved``: the top-k overlap
      effects of :func:`agreement_effects` on :func:`agreement_table` (pairs of sources);
    * ``book-selection-stable-seeds``, ``book-selection-shared-tasks``: the ``selected``
      row of :func:`agreement_effects` (``by=["source"]``) on :func:`cross_agreement` across
      seeds and across tasks;
    * ``book-suffice-without-outliers``, ``book-outliers-alone-fall-short``: the least
      favourable task of :func:`outlier_effects` (:func:`recorded_effect`)."""
    out = {}
    for (a, b), cid in PAIR_FINDINGS.items():
        out[cid] = _effect_of(pairs, source_a=a, source_b=b)
    out["book-selection-stable-seeds"] = _effect_of(seeds, source="selected") if len(seeds) else None
    out["book-selection-shared-tasks"] = _effect_of(tasks, source="selected") if len(tasks) else None
    for cid in ("book-suffice-without-outliers", "book-outliers-alone-fall-short"):
        out[cid] = recorded_effect(retrained, cid)
    return out


def outlier_share(study: OutlierStudy, setting: str = "selected") -> float:
    """The share of the dimensions ``setting`` read, over every task and seed, that are
    outlier dimensions (0 when none is)."""
    rows = study.scores[study.scores["setting"] == setting]
    return float(rows["n_outliers"].sum() / (len(rows) * study.k)) if len(rows) else 0.0


# ============================================================================ tables
def sources_table() -> pd.DataFrame:
    """The sources and what each ranks (the chapter's legend)."""
    return pd.DataFrame({"source": list(SOURCE_WORDS), "what it ranks": list(SOURCE_WORDS.values())})


def stability_table(seed_effects: pd.DataFrame, task_effects: pd.DataFrame) -> pd.DataFrame:
    """:func:`agreement_effects` across seeds and across tasks in one table (``across``)."""
    cols = ["across", "source", "n", "observed", "null", "estimate", "low", "high", "verdict", "note"]
    out = pd.concat([seed_effects.assign(across="seeds"), task_effects.assign(across="tasks")],
                    ignore_index=True)
    return out[[c for c in cols if c in out.columns]]


def effects_by_label(effects: pd.DataFrame) -> dict:
    """``"<task>: <comparison>" -> Effect`` for the computed rows of :func:`outlier_effects`
    (for :func:`bertdims.book.report.effects_table`)."""
    return {f"{r.task}: {r.comparison}": r.effect for r in effects.itertuples()
            if r.effect is not None}
