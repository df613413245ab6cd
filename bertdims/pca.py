"""PCA of the [CLS] embedding (Matton & de Oliveira, "Emergent Properties of Finetuned
Language Representation Models", section 3.1).

* :class:`TorchPCA` fits PCA from a covariance accumulated in row chunks (so memory-mapped
  representations of any size fit), on the GPU when there is one.
* :func:`component_curve`: test accuracy of a linear classifier on the first n principal
  components of a PCA fitted on the general corpus ("general", 3.1.1), on the task's training
  set ("in-domain"), or on n random dimensions (the control), for n from 1 to all.
* :func:`variance_ratios`: explained-variance ratio of the fine-tuned over the pretrained model
  per component and the first index where it drops below 1 (3.1.3, Figure 4).
* :func:`sample_size_curve`: accuracy against the number of sentences the general PCA saw.
* :func:`run_pca` runs all of it for one task, one seed and both models, through the store.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from ._validate import ConfigMixin, bad, check_range
from .extract import analysis_encoder, general_array, iter_chunks, task_arrays

# The paper's numbers (BERT-base, IMDB / AG-news / DBpedia).
PAPER_FIRST_BELOW_ONE = {"IMDB": (2, 2), "AG-news": (5, 4), "DBpedia": (14, 14)}
"""task -> (first component whose variance ratio is < 1, number of classes), section 3.1.3."""
PAPER_GAP_5_COMPONENTS = {"IMDB": 0.004, "AG-news": 0.35, "DBpedia": 1.05}
"""Percentage points lost with 5 general principal components against all, fine-tuned, 3.1.2."""
PAPER_SAMPLE_SIZE = 32_000
"""Sentences the general PCA needed to match one fitted on 1M (section 3.1.1)."""


# ---------------------------------------------------------------------------- PCA
class TorchPCA:
    """PCA by eigen-decomposition of the covariance, accumulated over row chunks in float64.

    Attributes after ``fit``: ``mean_`` (D,), ``components_`` (k, D), ``explained_variance_``
    (k,), ``explained_variance_ratio_`` (k,) (of the total variance), ``n_samples_``.
    """

    def __init__(self, n_components: int | None = None, *, device: str = "auto", chunk_size: int = 8192):
        self.n_components, self.device, self.chunk_size = n_components, device, chunk_size

    def fit(self, X) -> "TorchPCA":
        from .device import pick_device
        from .neurons import check_embeddings
        if len(X) < 2:
            raise bad("X", f"{len(X)} rows", "PCA needs at least 2 rows")
        check_embeddings(np.asarray(X[:1]))
        dev = pick_device(self.device)
        D = X.shape[1]
        k = D if self.n_components is None else self.n_components
        check_range("n_components", k, 1, D, integer=True)
        total = torch.zeros(D, dtype=torch.float64, device=dev)
        gram = torch.zeros(D, D, dtype=torch.float64, device=dev)
        shift = torch.as_tensor(np.asarray(X[:1], dtype=np.float64)[0], device=dev)  # stability
        for block in iter_chunks(X, self.chunk_size):
            check_embeddings(block)
            b = torch.as_tensor(block, dtype=torch.float64, device=dev) - shift      # (c, D)
            total += b.sum(0)
            gram += b.T @ b
        n = len(X)
        mean = total / n
        cov = (gram - n * torch.outer(mean, mean)) / (n - 1)
        evals, evecs = torch.linalg.eigh(cov)                                        # ascending
        evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
        # sign convention: the largest entry of each component is positive
        signs = torch.sign(evecs[evecs.abs().argmax(0), torch.arange(D, device=dev)])
        evecs = evecs * torch.where(signs == 0, 1.0, signs)
        self.mean_ = (mean + shift).cpu().numpy()
        self.components_ = evecs[:, :k].T.cpu().numpy()
        self.explained_variance_ = evals[:k].cpu().numpy()
        self.explained_variance_ratio_ = (evals[:k] / evals.sum()).cpu().numpy()
        self.n_samples_ = n
        return self

    def transform(self, X) -> np.ndarray:
        """(n, D) -> (n, k) projections on the components."""
        return (np.asarray(X, dtype=np.float64) - self.mean_) @ self.components_.T


# ---------------------------------------------------------------------------- probes
def linear_accuracy(X_train, y_train, X_test, y_test) -> float:
    """Test accuracy of a softmax (logistic) regression on standardised features (C = 1)."""
    from sklearn.linear_model import LogisticRegression
    mean, std = X_train.mean(0), X_train.std(0)
    std = np.where(std > 0, std, 1.0)
    clf = LogisticRegression(max_iter=2000).fit((X_train - mean) / std, y_train)
    return float(clf.score((X_test - mean) / std, y_test))


def component_grid(num_dims: int, points: list[int] | None = None) -> list[int]:
    """Numbers of components from 1 to all: the given ones (capped) or a default log grid."""
    if points is None:
        points = [1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 25, 35, 50, 75, 100, 150, 200, 300, 400, 500, 768]
    return sorted({min(int(p), num_dims) for p in points if int(p) >= 1} | {num_dims})


def component_curve(X_train, y_train, X_test, y_test, *, general_pca: TorchPCA | None,
                    ns: list[int], seed: int = 0, device: str = "auto") -> pd.DataFrame:
    """Accuracy on the first n components for each n: rows (basis, n, accuracy) with basis in
    general (``general_pca``), in-domain (PCA fitted on ``X_train``) and random (n random
    dimensions, one seeded permutation)."""
    rows = []
    bases = {"in-domain": TorchPCA(device=device).fit(X_train)}
    if general_pca is not None:
        bases["general"] = general_pca
    for name, pca in bases.items():
        Ztr, Zte = pca.transform(X_train), pca.transform(X_test)
        for n in ns:
            n_eff = min(n, Ztr.shape[1])
            rows.append({"basis": name, "n": n_eff,
                         "accuracy": linear_accuracy(Ztr[:, :n_eff], y_train, Zte[:, :n_eff], y_test)})
    order = np.random.default_rng(seed).permutation(X_train.shape[1])
    for n in ns:
        dims = order[:n]
        rows.append({"basis": "random", "n": int(n),
                     "accuracy": linear_accuracy(X_train[:, dims], y_train, X_test[:, dims], y_test)})
    return pd.DataFrame(rows)


def variance_ratios(finetuned: np.ndarray, pretrained: np.ndarray, top: int = 20) -> pd.DataFrame:
    """Per component i (1-based): explained-variance ratio fine-tuned / pretrained (Figure 4)."""
    k = min(top, len(finetuned), len(pretrained))
    return pd.DataFrame({"component": np.arange(1, k + 1),
                         "ratio": np.asarray(finetuned[:k]) / np.asarray(pretrained[:k])})


def first_below_one(ratios) -> int | None:
    """1-based index of the first component whose variance ratio is below 1 (None if none)."""
    below = np.flatnonzero(np.asarray(ratios) < 1)
    return int(below[0]) + 1 if len(below) else None


def sample_size_curve(X_general, X_train, y_train, X_test, y_test, *, sizes: list[int],
                      n_components: int, seed: int = 0, device: str = "auto") -> pd.DataFrame:
    """Accuracy on ``n_components`` general components when the general PCA is fitted on m
    sentences (a seeded random subset), for each m in ``sizes``: rows (sentences, accuracy)."""
    rows = []
    order = np.random.default_rng(seed).permutation(len(X_general))
    for m in sizes:
        m = min(int(m), len(X_general))
        k = min(n_components, X_general.shape[1], m - 1) if m > 1 else 1
        pca = TorchPCA(k, device=device).fit(np.asarray(X_general)[np.sort(order[:m])])
        rows.append({"sentences": m, "components": k, "accuracy": linear_accuracy(
            pca.transform(X_train), y_train, pca.transform(X_test), y_test)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- experiment
@dataclass
class PCAConfig(ConfigMixin):
    """One task, one seed: the analyses of section 3.1 for the pretrained and fine-tuned model.

    ``general_samples`` sentences of the general corpus fit the general PCA; ``sizes`` are the
    sample sizes of :func:`sample_size_curve` (capped at ``general_samples``), evaluated with
    ``size_components`` components; ``components`` the n of :func:`component_curve` (None:
    a log grid from 1 to all)."""

    model: str = "embedded"
    task: str = "rotten_tomatoes"
    seed: int = 0
    max_train_samples: int | None = 1000
    max_eval_samples: int | None = 500
    max_seq_len: int = 64
    epochs: float = 1.0
    general_samples: int | None = 2000
    sizes: list[int] = field(default_factory=lambda: [50, 100, 200, 500, 1000, 2000])
    size_components: int = 10
    components: list[int] | None = None
    layer: int = -1
    token: str = "cls"
    device: str = "auto"

    def __post_init__(self):
        from .tasks import get_task
        task = get_task(self.task)
        if task.is_regression:
            raise bad("task", self.task, "PCA probes need a classification task")
        check_range("seed", self.seed, 0, integer=True)
        check_range("max_seq_len", self.max_seq_len, 2, integer=True)
        check_range("size_components", self.size_components, 1, integer=True)
        for name in ("max_train_samples", "max_eval_samples", "general_samples"):
            if getattr(self, name) is not None:
                check_range(name, getattr(self, name), 10, integer=True)
        self.sizes = [int(s) for s in self.sizes]
        if not self.sizes or min(self.sizes) < 2:
            raise bad("sizes", self.sizes, "give sample sizes of at least 2 sentences")


def _state_arrays(config: PCAConfig, finetuned: bool, store):
    enc = analysis_encoder(config.model, config.task, finetuned=finetuned, seed=config.seed,
                           max_train_samples=config.max_train_samples,
                           max_eval_samples=config.max_eval_samples, max_seq_len=config.max_seq_len,
                           epochs=config.epochs, store=store)
    kw = dict(max_seq_len=config.max_seq_len, layer=config.layer, token=config.token, store=store)
    Xtr, ytr, Xte, yte = task_arrays(enc, config.task, max_train_samples=config.max_train_samples,
                                     max_eval_samples=config.max_eval_samples, **kw)
    Xg = general_array(enc, max_samples=config.general_samples, **kw)
    return Xg, Xtr, ytr, Xte, yte


def run_pca(config: PCAConfig, *, store=None):
    """Section 3.1 for one task and seed, pretrained and fine-tuned (stored, read back).

    Tables: ``curves`` (model, basis, n, accuracy), ``variance`` (model, component,
    explained_variance_ratio), ``ratios`` (component, ratio), ``sizes`` (model, sentences,
    accuracy). JSON: ``all_dims`` per model, ``num_classes``, ``first_below_one``."""
    from .models import fingerprint_of
    from .store import ResultStore
    from .tasks import get_task
    store = store if store is not None else ResultStore()

    def compute():
        curves, variance, sizes, all_dims, evr = [], [], [], {}, {}
        for state in ("pretrained", "finetuned"):
            Xg, Xtr, ytr, Xte, yte = _state_arrays(config, state == "finetuned", store)
            general = TorchPCA(device=config.device).fit(Xg)
            evr[state] = general.explained_variance_ratio_
            ns = component_grid(Xtr.shape[1], config.components)
            curves.append(component_curve(Xtr, ytr, Xte, yte, general_pca=general, ns=ns,
                                          seed=config.seed, device=config.device).assign(model=state))
            variance.append(pd.DataFrame({"model": state, "component": np.arange(1, len(evr[state]) + 1),
                                          "explained_variance_ratio": evr[state]}))
            size_grid = sorted({min(s, len(Xg)) for s in config.sizes})
            sizes.append(sample_size_curve(Xg, Xtr, ytr, Xte, yte, sizes=size_grid,
                                           n_components=config.size_components, seed=config.seed,
                                           device=config.device).assign(model=state))
            all_dims[state] = linear_accuracy(Xtr, ytr, Xte, yte)
        rank = min(len(evr["finetuned"]), len(Xg) - 1)     # components with non-zero variance
        ratios = variance_ratios(evr["finetuned"], evr["pretrained"], top=rank)
        return {"curves": pd.concat(curves, ignore_index=True),
                "variance": pd.concat(variance, ignore_index=True), "ratios": ratios,
                "sizes": pd.concat(sizes, ignore_index=True), "all_dims": all_dims,
                "num_classes": get_task(config.task).num_labels,
                "first_below_one": first_below_one(ratios["ratio"]),
                "general_sentences": int(len(Xg))}

    return store.cached("pca", config.to_dict(), compute, fingerprint=fingerprint_of(config.model))


def pca_study(model: str = "embedded", tasks: list[str] = ("rotten_tomatoes",), seeds: list[int] = (0,), *,
              store=None, **kw) -> dict[str, pd.DataFrame]:
    """:func:`run_pca` over tasks and seeds; tidy tables with ``task`` and ``seed`` columns:
    ``curves``, ``ratios``, ``sizes``, ``summary`` (one row per task and seed: classes, first
    index below 1, accuracy with all dims and with 5 general components per model)."""
    configs = [PCAConfig(model=model, task=t, seed=s, **kw) for t in tasks for s in seeds]
    out = {"curves": [], "ratios": [], "sizes": [], "summary": []}
    for c in configs:
        run = run_pca(c, store=store)
        res = run.json()
        for name in ("curves", "ratios", "sizes"):
            out[name].append(run.table(name).assign(task=c.task, seed=c.seed))
        curves = run.table("curves")
        row = {"task": c.task, "seed": c.seed, "classes": res["num_classes"],
               "first_below_one": res["first_below_one"]}
        few = _few_n(curves)
        row["few_n"] = few
        for state in ("pretrained", "finetuned"):
            five = curves[(curves.model == state) & (curves.basis == "general") & (curves.n == few)]
            row[f"{state}_all"] = res["all_dims"][state]
            row[f"{state}_5_general"] = float(five.accuracy.iloc[0])
        out["summary"].append(row)
    return {k: pd.concat(v, ignore_index=True) if v and isinstance(v[0], pd.DataFrame)
            else pd.DataFrame(v) for k, v in out.items()}


def _few_n(curves: pd.DataFrame, target: int = 5) -> int:
    """The paper's "5 components", or the largest n of the grid below it."""
    ns = sorted(curves.n.unique())
    return int(max([n for n in ns if n <= target] or ns[:1]))


def pca_chart(curves: pd.DataFrame, task: str | None = None):
    """Accuracy against the number of components per basis, one panel per model (Figures 1-3)."""
    import altair as alt
    df = curves if task is None else curves[curves.task == task]
    return alt.Chart(df).mark_line(point=True).encode(
        x=alt.X("n:Q", scale=alt.Scale(type="log"), title="components (or random dimensions)"),
        y=alt.Y("mean(accuracy):Q", scale=alt.Scale(zero=False), title="test accuracy"),
        color=alt.Color("basis:N"), strokeDash="model:N",
        tooltip=["basis", "model", "n", "mean(accuracy)"]).properties(
        width=300, height=200).facet(column="task:N")


def ratio_chart(ratios: pd.DataFrame, top: int = 20):
    """Variance ratio fine-tuned / pretrained of the first ``top`` components, per task
    (Figure 4), with the line ratio = 1."""
    import altair as alt
    df = ratios[ratios.component <= top]
    line = alt.Chart(df).mark_line(point=True).encode(
        x=alt.X("component:Q"), y=alt.Y("mean(ratio):Q", title="variance ratio (fine-tuned / pretrained)"),
        color="task:N", tooltip=["task", "component", "mean(ratio)"])
    one = alt.Chart(pd.DataFrame({"y": [1.0]})).mark_rule(strokeDash=[4, 4], color="black").encode(y="y:Q")
    return alt.layer(line, one).properties(width=420, height=240)


def size_chart(sizes: pd.DataFrame):
    """Accuracy against the number of sentences the general PCA was fitted on."""
    import altair as alt
    return alt.Chart(sizes).mark_line(point=True).encode(
        x=alt.X("sentences:Q", scale=alt.Scale(type="log")),
        y=alt.Y("mean(accuracy):Q", scale=alt.Scale(zero=False), title="test accuracy"),
        color="task:N", strokeDash="model:N",
        tooltip=["task", "model", "sentences", "mean(accuracy)"]).properties(width=420, height=240)


# ---------------------------------------------------------------------------- prose from numbers
def _pp(x: float) -> str:
    return f"{100 * x:.1f}%"


def components_findings(study: dict) -> str:
    """Markdown: general vs in-domain vs random at 5 components, and the fine-tuned gap between
    5 general components and all dimensions, beside the paper's (3.1.1-3.1.2)."""
    c = study["curves"]
    lines = []
    for task, df in c.groupby("task"):
        n5 = _few_n(df)
        m = df[df.n == n5].groupby(["model", "basis"]).accuracy.mean()
        s = study["summary"][study["summary"].task == task]
        gap = 100 * (s.finetuned_all - s.finetuned_5_general).mean()
        order = "general above random" if m[("pretrained", "general")] > m[("pretrained", "random")] \
            else "general NOT above random"
        lines.append(f"- **{task}** (pretrained, {n5} dims): in-domain {_pp(m[('pretrained', 'in-domain')])}, "
                     f"general {_pp(m[('pretrained', 'general')])}, random {_pp(m[('pretrained', 'random')])} "
                     f"({order}). Fine-tuned: {n5} general components reach {_pp(s.finetuned_5_general.mean())} "
                     f"against {_pp(s.finetuned_all.mean())} with all dimensions, a gap of {gap:.2f} points.")
    paper = ", ".join(f"{k} {v} points" for k, v in PAPER_GAP_5_COMPONENTS.items())
    return ("Paper (BERT-base): in-domain PCA > general PCA > random dimensions for few components, and "
            f"after fine-tuning 5 general components lose only {paper}.\n\nOurs (mean over seeds):\n\n"
            + "\n".join(lines))


def variance_findings(study: dict) -> str:
    """Markdown: first component whose variance ratio drops below 1, against the number of
    classes, beside the paper's (3.1.3)."""
    s = study["summary"]
    lines = []
    for task, df in s.groupby("task"):
        firsts = [int(v) if v == v and v is not None else None for v in df.first_below_one]
        lines.append(f"- **{task}** ({int(df.classes.iloc[0])} classes): first ratio below 1 at "
                     f"component(s) {firsts} over seeds {df.seed.tolist()}")
    paper = "; ".join(f"{k}: component {a} ({b} classes)" for k, (a, b) in PAPER_FIRST_BELOW_ONE.items())
    return (f"Paper: the first variance ratio below 1 comes at about the number of classes ({paper})."
            "\n\nOurs:\n\n" + "\n".join(lines))


def size_findings(study: dict) -> str:
    """Markdown: how many general sentences the PCA needs to reach its best accuracy."""
    z = study["sizes"].groupby(["task", "model", "sentences"]).accuracy.mean().reset_index()
    lines = []
    for (task, model), df in z.groupby(["task", "model"]):
        best = df.accuracy.max()
        enough = int(df[df.accuracy >= best - 0.01].sentences.min())
        lines.append(f"- **{task}**, {model}: within 1 point of its best ({_pp(best)}) from "
                     f"{enough} sentences (largest tried: {int(df.sentences.max())})")
    return (f"Paper: about {PAPER_SAMPLE_SIZE:,} sentences are enough (as good as 1M).\n\nOurs:\n\n"
            + "\n".join(lines))
