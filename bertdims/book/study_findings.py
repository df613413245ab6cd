"""The findings of the studies of chapters 7-10 in words (PCA, salient neurons, weight
distances, sparse fine-tuning): Markdown sentences built from a study's results and effects.
Presentation only: no numerics module imports this one, so a change to a sentence touches no
computation.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..analysis.neurons import PAPER_TABLE3
from ..analysis.pca import PAPER_FIRST_BELOW_ONE, PAPER_GAP_5_COMPONENTS, PAPER_SAMPLE_SIZE, _few_n
from .report import verdict_note


# ------------------------------------------------------------------ distances

def layer_findings(effects: Mapping[str, Any]) -> str:
    """The verdicts of :func:`layer_effects` in Markdown, one line per setting.

    Each line gives the effect's sentence (:meth:`bertdims.core.stats.Effect.sentence`) and, through
    :func:`bertdims.book.report.verdict_note`, why an inconclusive verdict is inconclusive.

    Parameters
    ----------
    effects : mapping of str to Effect
        Setting name -> :class:`bertdims.core.stats.Effect`, as :func:`layer_effects` returns.

    Returns
    -------
    str
        A Markdown list, one bullet per effect, in the order of ``effects``.
    """
    return "\n".join(f"* **{k}**: {e.sentence()}. {verdict_note(e)}" for k, e in effects.items())


def distance_findings(effects: Mapping[str, Any]) -> str:
    """The distance verdicts in Markdown, one line each.

    Each line gives the effect's sentence (:meth:`bertdims.core.stats.Effect.sentence`) and, through
    :func:`bertdims.book.report.verdict_note`, why an inconclusive verdict is inconclusive.

    Parameters
    ----------
    effects : mapping of str to Effect
        Name -> :class:`bertdims.core.stats.Effect`, from :func:`closeness_effect` and
        :func:`layer_variation_effect`.

    Returns
    -------
    str
        A Markdown list, one bullet per effect, in the order of ``effects``.
    """
    return "\n".join(f"* **{k}**: {e.sentence()}. {verdict_note(e)}" for k, e in effects.items())


# --------------------------------------------------------------------- sparse

def sparse_findings(effects: dict) -> str:
    """The verdicts of :func:`sparse_effects` in Markdown, one line per comparison.

    Each line gives the effect's sentence (:meth:`bertdims.core.stats.Effect.sentence`) and, through
    :func:`bertdims.book.report.verdict_note`, why an inconclusive verdict is inconclusive.

    Parameters
    ----------
    effects : dict of str to Effect
        Comparison name -> :class:`bertdims.core.stats.Effect`, as :func:`sparse_effects` returns.

    Returns
    -------
    str
        A Markdown list, one bullet per comparison, in the order of ``effects``.
    """
    from .report import verdict_note
    lines = []
    for key, eff in effects.items():
        lines.append(f"* **{key}**: {eff.sentence()}. {verdict_note(eff)}")
    return "\n".join(lines)


# ------------------------------------------------------------------------ pca

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
        lines.append(f"- **{task}** (pretrained, {n5} dims): in-domain {_pp(m[('pretrained', 'in-domain')])}, "
                     f"general {_pp(m[('pretrained', 'general')])}, random {_pp(m[('pretrained', 'random')])}. "
                     f"Fine-tuned: {n5} general components reach {_pp(s.finetuned_5_general.mean())} "
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


# -------------------------------------------------------------------- neurons

def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def table3_findings(study: dict) -> str:
    """Markdown comparing our Table 3 with the paper's claims (one neuron vs all, natural vs all)."""
    t = study["table3"]
    lines = []
    for _, r in t.iterrows():
        lines.append(
            f"- **{r.task}** ({int(r.classes)} classes, chance {_pct(r.chance)}): pretrained "
            f"1 neuron {_pct(r.pretrained_1)} vs all {_pct(r.pretrained_all)}; fine-tuned 1 neuron "
            f"{_pct(r.finetuned_1)}, k neurons {_pct(r.finetuned_k)}, natural {_pct(r.finetuned_natural)} "
            f"vs all {_pct(r.finetuned_all)} (natural - all: {100 * (r.finetuned_natural - r.finetuned_all):+.1f} points; "
            f"fine-tuning moved the best single neuron by {100 * (r.finetuned_1 - r.pretrained_1):+.1f} points)"
            + (f"; the fine-tuned classifier itself: {_pct(r.finetuned_model)}"
               if "finetuned_model" in r and r.finetuned_model == r.finetuned_model else ""))
    p = PAPER_TABLE3.set_index("task")
    return ("Paper: one fine-tuned neuron equals all dimensions on IMDB "
            f"({_pct(p.loc['IMDB', 'finetuned_1'])} vs {_pct(p.loc['IMDB', 'finetuned_all'])}); natural "
            f"is within {100 * (p.finetuned_all - p.finetuned_natural).abs().max():.1f} points of all on "
            "every task; pretrained single neurons are far below all.\n\nOurs (mean over seeds):\n\n"
            + "\n".join(lines))


def single_findings(study: dict, margin: float = 0.005) -> str:
    """Markdown: how many neurons come within ``margin`` of the best one (Figure 6's density)."""
    s = study["single"]
    lines = []
    for (task, model), df in s.groupby(["task", "model"]):
        per_seed = []
        for _, g in df.groupby("seed"):
            best = g.accuracy.max()
            per_seed.append((best, int((g.accuracy >= best - margin).sum()), len(g)))
        best = np.mean([b for b, _, _ in per_seed])
        near = np.mean([k for _, k, _ in per_seed])
        lines.append(f"- **{task}**, {model}: best single neuron {_pct(best)} (test); on average "
                     f"{near:.1f} of {per_seed[0][2]} neurons within {100 * margin:.1f} points of it")
    return ("Paper (IMDB, fine-tuned): about 7% of neurons reach 93% accuracy, but only one exceeds "
            "93.6%: dense, with few top neurons.\n\nOurs:\n\n" + "\n".join(lines))
