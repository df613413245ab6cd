"""Small in-memory tasks for the fine-tuning tests (a classification and a regression one),
registered in the task registry under names starting with ``_test_``.

Tests register them through :func:`registered_test_tasks` (or the ``tiny_tasks`` fixture of
conftest.py), which removes them again afterwards, so that no test leaves them in the registry."""
from __future__ import annotations

import contextlib

import numpy as np

#: The names of the two tasks (classification, regression).
TEST_TASKS = ("_test_cls", "_test_reg")

POS = "good great fine superb lovely nice".split()
NEG = "bad awful poor boring dull ugly".split()
FILL = "the a movie film story plot was is and it this".split()
SIZES = (("train", 96, 0), ("validation", 40, 1), ("test", 40, 2))


def _sentences(n: int, seed: int):
    """Sentences of 8 words; ``label`` 1 when they hold positive words, ``score`` the share of
    positive words among the sentiment words (0..1)."""
    rng = np.random.default_rng(seed)
    texts, labels, scores = [], [], []
    for _ in range(n):
        n_pos = int(rng.integers(0, 4))
        words = list(rng.choice(FILL, 5)) + list(rng.choice(POS, n_pos)) + list(rng.choice(NEG, 3 - n_pos))
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(int(n_pos >= 2))
        scores.append(n_pos / 3)
    return texts, labels, scores


def _loader(regression: bool):
    def load(data_dir=None):
        import datasets
        out = {}
        for split, n, seed in SIZES:
            texts, labels, scores = _sentences(n, seed)
            out[split] = datasets.Dataset.from_dict(
                {"text": texts, "label": [float(s) for s in scores] if regression else labels})
        return datasets.DatasetDict(out)
    return load


def register_test_tasks() -> tuple[str, str]:
    """Register ``_test_cls`` (2 classes, accuracy) and ``_test_reg`` (scores, pearson/spearman)
    where missing. In a test, use :func:`registered_test_tasks` (or the ``tiny_tasks`` fixture),
    which also removes them again; this bare form is for a separate process (a script)."""
    from bertdims.data.tasks import Task, register, task_names
    known = task_names()
    if "_test_cls" not in known:
        register(Task(name="_test_cls", source="embedded", text_fields=("text",),
                      label_type="classification", label_names=("neg", "pos"),
                      metrics=("accuracy",), loader=_loader(False)))
    if "_test_reg" not in known:
        register(Task(name="_test_reg", source="embedded", text_fields=("text",),
                      label_type="regression", label_names=(), metrics=("pearson", "spearman"),
                      loader=_loader(True)))
    return TEST_TASKS


@contextlib.contextmanager
def registered_test_tasks():
    """The two tasks registered for the ``with`` block and unregistered after it; a task that
    was registered before the block (by an enclosing scope) is left registered."""
    from bertdims.data.tasks import task_names, unregister
    added = [name for name in TEST_TASKS if name not in task_names()]
    register_test_tasks()
    try:
        yield TEST_TASKS
    finally:
        for name in added:
            unregister(name)


class Killed(RuntimeError):
    """Raised by :func:`stop_at`'s hook: the run stops part-way, as a killed one would."""


def stop_at(stop: int):
    """A ``_after_step`` hook (of bertdims.train.finetuning, sparse or multitask) that raises
    :class:`Killed` once step ``stop`` is done (after any checkpoint due at that step)."""
    def hook(step: int) -> None:
        if step == stop:
            raise Killed(f"stopped after step {step}")
    return hook
