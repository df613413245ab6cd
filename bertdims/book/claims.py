"""The claims the book tests: one registry, read by the chapters and by the scorecard.

Each :class:`Claim` quotes its paper (``words``: the paper's own words, or, where only the
paper page's summary states the result, that summary, said so in ``where``), names the chapter
that tests it, the comparison ``A`` against ``B`` that the chapter measures, the claim kind
(see :func:`bertdims.core.stats.verdict_of`) and a margin fixed before running, with its reason.

The papers (texts in ``shared/papers/``):

* ``p1``: *Few Dimensions are Enough: Fine-tuning BERT with Selected Dimensions Revealed Its
  Redundant Nature* (2025); only its abstract and the paper page's summary are at hand.
* ``p2``: Matton & de Oliveira, *Emergent Properties of Finetuned Language Representation
  Models* (full text).
* ``p3``: Radiya-Dixit & Wang, *How fine can fine-tuning be? Learning efficient language
  models* (abstract, cut short, and the paper page's summary).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

from ..core._validate import bad

PAPERS = {
    "p1": "Few Dimensions are Enough (2025)",
    "p2": "Matton & de Oliveira, Emergent Properties of Finetuned Language Representation Models",
    "p3": "Radiya-Dixit & Wang, How fine can fine-tuning be?",
    "book": "this book's own findings (chapter 11: do the papers point at the same dimensions?)",
}
SHORT = {"p1": "Few Dimensions", "p2": "Matton & de Oliveira", "p3": "Radiya-Dixit & Wang",
         "book": "this book"}


@dataclass(frozen=True)
class Claim:
    """One claim of one paper, as the book tests it.

    The effect a chapter measures for the claim is A against B on ``scale``; ``compares`` says
    what A and B are. A chapter may declare its own margin in its parameters cell; the
    recorded verdict keeps the one used.

    Attributes
    ----------
    id : str
        A short unique id, e.g. ``"p1-few-dims-enough"``.
    paper : str
        ``"p1"``, ``"p2"``, ``"p3"``, or ``"book"`` for this book's own findings; a key of
        :data:`PAPERS`.
    where : str
        Where the words are found: the section, table or figure of the paper, its abstract,
        or the paper page's summary.
    words : str
        The paper's own words (or the summary's, as ``where`` says).
    paper_number : str
        The paper's own number for the claim, as text, or a note that it gives none.
    chapter : str
        The stem of the chapter that tests the claim and records its verdict.
    claim : str
        The claim kind: ``"equivalent"``, ``"better"``, ``"worse"`` or ``"noninferior"``
        (see :func:`bertdims.core.stats.verdict_of`).
    scale : str
        The scale of the effect: ``"difference"`` (``A - B``) or ``"ratio"``
        (``A / B - 1``).
    default_margin : float
        The margin, on ``scale``, fixed before running.
    margin_reason : str
        Why that margin, in one line.
    compares : str
        What A and B are.
    """

    id: str
    paper: str              # "p1", "p2", "p3", or "book" for this book's own findings (PAPERS)
    where: str
    words: str
    paper_number: str
    chapter: str            # stem of the chapter that records the verdict
    claim: str
    scale: str
    default_margin: float
    margin_reason: str
    compares: str

    @property
    def paper_name(self) -> str:
        return SHORT[self.paper]


_SUMMARY = "paper page's summary"
_BOOK = "this book, chapter 11 (a question put before running; no paper claims it)"

CLAIMS: tuple[Claim, ...] = (
    Claim("p2-finetune-beats-probe", "p2", "section 2, Table 2",
          "Test-set performance of finetuned BERT over each experimental setup.",
          "fine-tuned 93.7 / 94.7 / 99.33% vs frozen [CLS] probe 88.0 / 90.4 / 99.02% "
          "(IMDB / AG-news / DBpedia)",
          "02_baselines", "better", "difference", 0.0,
          "the paper's smallest gap is 0.3 points (DBpedia): any real advantage counts",
          "A: full fine-tuning, B: linear probe on the frozen [CLS] vector, same test examples"),
    Claim("p1-tokens-equivalent", "p1", "abstract",
          "outputs other than the CLS vector in the final layer contain equivalent information",
          "equivalent (no number given)",
          "03_token_and_layer", "equivalent", "difference", 0.02,
          "two accuracy points: a smaller gap between token vectors would not change which to use",
          "A: head on another last-layer token vector (e.g. mean), B: head on [CLS]"),
    Claim("p1-lower-layers-weaker", "p1", "abstract",
          "the contribution of lower layers decreases",
          "decreases (no number given)",
          "03_token_and_layer", "worse", "difference", 0.01,
          "a shortfall under one accuracy point would not be called a decrease",
          "A: head on a lower layer's [CLS] (the lowest layer run), B: head on the last layer"),
    Claim("p1-higher-layers-alike", "p1", "abstract",
          "there is little difference among higher layers",
          "little difference (no number given)",
          "03_token_and_layer", "equivalent", "difference", 0.02,
          "two accuracy points, the same band as for token vectors",
          "A: head on an upper-half layer below the top, B: head on the last layer"),
    Claim("p1-few-dims-enough", "p1", f"abstract; the 98% is from the {_SUMMARY}",
          "most tasks require only 2-3 dimensions",
          "2-3 selected dims reach > 98% of full",
          "04_few_dimensions", "noninferior", "ratio", 0.02,
          "the paper's own bar: at least 98% of the full model's score",
          "A: fine-tuning afresh with a head on the top k selected dims (k fixed before "
          "running: the chapter's verdict_k, 3 by default), B: full fine-tuning, same seeds"),
    Claim("p1-selected-beat-random", "p1", _SUMMARY,
          "carefully selected hidden dimensions",
          "selected dims (implied: better than other dims)",
          "04_few_dimensions", "better", "difference", 0.0,
          "a control: any real advantage of the selection counts",
          "A: fine-tuning afresh on the top k selected dims, B: on k random dims, same seeds"),
    Claim("p3-freeze-lower-cheap", "p3", f"{_SUMMARY} (findings); the abstract is cut short",
          "Only a subset of layers need to be fine-tuned for effective performance.",
          "a subset of layers is enough (no number given)",
          "05_freezing", "noninferior", "difference", 0.02,
          "a cost under two accuracy points is small next to what fine-tuning adds",
          "A: lower half of the layers frozen, B: full fine-tuning"),
    Claim("p1-frozen-encoder-costs", "p1", "abstract",
          "hidden layers may change significantly during fine-tuning",
          "freezing pretrained layers costs performance (no number given)",
          "05_freezing", "worse", "difference", 0.01,
          "a shortfall under one accuracy point would not show that the layers must change",
          "A: whole encoder frozen (only the head trains), B: full fine-tuning"),
    Claim("p1-cross-retention", "p1", "abstract",
          "enabling it to handle multiple tasks simultaneously",
          "task A survives fine-tuning on B (no number given)",
          "06_cross_finetuning", "noninferior", "ratio", 0.05,
          "keeping 95% of task A's score counts as surviving",
          "A: A's stored head on the encoder fine-tuned on A then B, "
          "B: A's stored head after as many further fine-tuning steps on A (the control)"),
    Claim("p1-cross-few-dims", "p1", "abstract",
          "its number of dimensions may be excessive",
          "a few dims suffice after cross-fine-tuning (no number given)",
          "06_cross_finetuning", "noninferior", "ratio", 0.02,
          "the same 98% bar as for few dimensions on one task",
          "A: task B fine-tuned after A with a head on a few selected dims, B: with all dims"),
    Claim("p2-variance-ratio-classes", "p2", "section 3.1.3, Figure 4",
          "the point at which we encounter the first principal component that explains less "
          "variance in the finetuned model than the pretrained model roughly corresponds to the "
          "number of classes",
          "first ratio < 1 at component 2 / 5 / 14 for 2 / 4 / 14 classes",
          "07_pca", "equivalent", "difference", 2.0,
          "'roughly': the paper's own cases are off by 0 or 1 component",
          "A: first component with fine-tuned/pretrained variance ratio below 1, "
          "B: number of classes"),
    Claim("p2-salient-neurons", "p2", "section 3.2.2, Table 3",
          "using a linear classification on even a single neuron from the [CLS] token "
          "embedding provides equal performance to scores from models which utilize the full "
          "embedding",
          "5 neurons: 93.8 / 94.3 / 99.0% vs all 93.7 / 94.7 / 99.33% (IMDB / AG-news / DBpedia)",
          "08_salient_neurons", "noninferior", "difference", 0.01,
          "the paper's 5-neuron gaps are at most 0.4 points; one point keeps that meaning",
          "A: classifier on the few selected neurons of the fine-tuned [CLS], B: on all dims"),
    Claim("p3-close-to-pretrained", "p3", "abstract",
          "the fine-tuned models are close in parameter space to the pre-trained one",
          "close (no number in the abstract)",
          "09_weight_distances", "worse", "ratio", 0.5,
          "'close' read as: less than half the distance to a random initialisation",
          "A: distance fine-tuned to pretrained, "
          "B: distance of a random initialisation to pretrained"),
    Claim("p3-closeness-varies-by-layer", "p3", "abstract",
          "with the closeness varying from layer to layer",
          "varies by layer (no number in the abstract)",
          "09_weight_distances", "better", "ratio", 0.1,
          "a 10% difference in relative distance between layers counts as varying",
          "A: relative distance of the top layer, B: of the bottom layer, no layer-wise "
          "learning-rate decay"),
    Claim("p3-some-layers-enough", "p3", f"{_SUMMARY} (findings)",
          "Only a subset of layers need to be fine-tuned for effective performance.",
          "a subset of layers suffices (no number given)",
          "09_weight_distances", "noninferior", "difference", 0.02,
          "two accuracy points below full fine-tuning still counts as effective",
          "A: only the top n blocks (the chapter's verdict_top_n) and the head train, "
          "B: full fine-tuning, same seeds"),
    Claim("p3-sparse-matches-full", "p3", f"{_SUMMARY} (findings)",
          "Sparse models with many zeroed entries can achieve comparable results.",
          "comparable (no number given)",
          "10_sparse_finetuning", "equivalent", "difference", 0.02,
          "two accuracy points, the band used for other 'equivalent' claims",
          "A: sparse-mask fine-tuning at the chapter's sparsity, B: full fine-tuning, same recipe"),
    Claim("p3-learned-mask-beats-magnitude", "p3", "our control (implied by learning the masks)",
          "Sparse models with many zeroed entries can achieve comparable results.",
          "learned masks (the paper's method) against plain magnitude pruning: no number given",
          "10_sparse_finetuning", "better", "difference", 0.0,
          "any gain over a fixed magnitude mask shows the mask learning does work",
          "A: learned mask, B: fixed magnitude mask at the same sparsity, head trained alike"),
    Claim("p3-learned-mask-beats-random", "p3", "our control (implied by learning the masks)",
          "Sparse models with many zeroed entries can achieve comparable results.",
          "learned masks against a random mask of the same sparsity: no number given",
          "10_sparse_finetuning", "better", "difference", 0.0,
          "any gain over a random mask shows which weights are zeroed matters",
          "A: learned mask, B: fixed random mask at the same sparsity, head trained alike"),
    # --- this book's own findings (paper "book"): questions no paper asks, put before running
    Claim("book-selected-agree-salient", "book", _BOOK,
          "the dimensions Few Dimensions selects are the salient neurons Matton & de Oliveira "
          "find", "no paper number (our question)",
          "11_dimension_agreement", "better", "difference", 0.1,
          "a tenth of the top k in common beyond random rankings: one dimension of 5 or more",
          "A: share of the top k the selection ranking and the salient neurons have in common, "
          "B: the same under random rankings; one value per fine-tuned model (task, seed)"),
    Claim("book-selected-agree-moved", "book", _BOOK,
          "the dimensions Few Dimensions selects are those whose weights fine-tuning moved most",
          "no paper number (our question)",
          "11_dimension_agreement", "better", "difference", 0.1,
          "a tenth of the top k in common beyond random rankings",
          "A: top-k overlap of the selection ranking and the last block's output weights "
          "moved most by fine-tuning, B: under random rankings; one value per fine-tuned model"),
    Claim("book-selection-stable-seeds", "book", _BOOK,
          "fine-tuning with another seed selects the same dimensions",
          "no paper number (our question)",
          "11_dimension_agreement", "better", "difference", 0.1,
          "a tenth of the top k in common beyond random rankings",
          "A: top-k overlap of the selections of two seeds (same task), B: under random "
          "rankings; one value per pair of seeds and task"),
    Claim("book-selection-shared-tasks", "book", _BOOK,
          "different tasks select the same dimensions",
          "no paper number (our question)",
          "11_dimension_agreement", "better", "difference", 0.1,
          "a tenth of the top k in common beyond random rankings",
          "A: top-k overlap of the selections of two tasks (same seed), B: under random "
          "rankings; one value per pair of tasks and seed"),
    Claim("book-suffice-without-outliers", "book", _BOOK,
          "the selected dimensions that suffice are not the outlier dimensions: they suffice "
          "without them", "no paper number (our question)",
          "11_dimension_agreement", "noninferior", "difference", 0.02,
          "two accuracy points, the band used for the papers' 'comparable' claims",
          "A: fine-tuning afresh on the top k selected dims once the outlier dims are taken "
          "out, B: on the top k selected dims, same seeds (least favourable task)"),
    Claim("book-outliers-alone-fall-short", "book", _BOOK,
          "the outlier dimensions alone do not carry the task as the selected ones do",
          "no paper number (our question)",
          "11_dimension_agreement", "worse", "difference", 0.02,
          "a shortfall under two accuracy points would not set the outliers apart",
          "A: fine-tuning afresh on the k largest-magnitude dims (the outliers first), "
          "B: on the top k selected dims, same seeds (least favourable task)"),
)


def claim_by_id(claim_id: str) -> Claim:
    """The registered claim with the id ``claim_id``.

    Parameters
    ----------
    claim_id : str
        An id of :data:`CLAIMS`, e.g. ``"p1-few-dims-enough"``.

    Returns
    -------
    Claim
        The claim of :data:`CLAIMS` with that id.

    Raises
    ------
    ConfigError
        No registered claim has that id; the message names the known ids.
    """
    for c in CLAIMS:
        if c.id == claim_id:
            return c
    raise bad("claim_id", claim_id, "choose one of: " + ", ".join(c.id for c in CLAIMS))


def claims_table(claims: tuple[Claim, ...] = CLAIMS) -> pd.DataFrame:
    """The registry as a table, one row per claim.

    Parameters
    ----------
    claims : tuple of Claim
        The claims to list, by default the whole registry :data:`CLAIMS`.

    Returns
    -------
    pd.DataFrame
        One row per claim, in the order given; one column per field of :class:`Claim`:
        ``id, paper, where, words, paper_number, chapter, claim, scale, default_margin,
        margin_reason, compares``.
    """
    return pd.DataFrame([asdict(c) for c in claims])
