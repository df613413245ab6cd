"""Chapter "The model and the tasks": what the pretrained model's [CLS] space looks like
for each task before any fine-tuning."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..modeling.models import cached_encoder, fingerprint_of
from ..core.store import ResultStore, store_or_temporary
from ..data.tasks import get_split, get_task, texts_of


def projection_config(model: str, task: str, split: str, max_examples: int, max_seq_len: int,
                      layer: int = -1, token: str = "cls") -> dict:
    return {"model": model, "task": task, "split": split, "max_examples": max_examples,
            "max_seq_len": max_seq_len, "layer": layer, "token": token}


def project_task(model: str, task: str, *, split: str = "validation", max_examples: int = 400,
                 max_seq_len: int = 64, layer: int = -1, token: str = "cls",
                 store: ResultStore | None = None) -> pd.DataFrame:
    """2-D PCA projection of a task's token vectors (default: last-layer [CLS]).

    The pretrained model encodes the first ``max_examples`` examples of the split, and a PCA
    with two components is fitted on those vectors. The projection is stored (kind
    ``projection``) and read back on a rerun.

    Parameters
    ----------
    model : str
        The pretrained model's name or folder.
    task : str
        A registered task name (:func:`bertdims.data.tasks.task_names`).
    split : str
        The split to project, e.g. ``"validation"``.
    max_examples : int
        How many examples to project at most (the first ones of the split).
    max_seq_len : int
        The tokenizer's maximum sequence length.
    layer : int
        The layer to read (0: embedding output, -1: last block).
    token : str
        Which vector of the layer: ``"cls"``, ``"mean"``, ``"maxnorm"`` or ``"token:i"``
        (see :func:`bertdims.analysis.extract.encode`).
    store : ResultStore, optional
        Where the projection is stored; None keeps nothing
        (:func:`bertdims.core.store.store_or_temporary`).

    Returns
    -------
    pd.DataFrame
        One row per example (``min(max_examples, len(split))`` rows); columns ``task``, ``x``
        and ``y`` (the first and second principal components), ``label`` (the class id, or
        the score for regression) and ``label_name`` (the class name, or the score to one
        decimal). ``attrs["explained"]`` holds the share of variance each of the two
        components explains.

    Raises
    ------
    ConfigError
        An unknown task, or a split the task does not have.
    """
    store = store_or_temporary(store)
    config = projection_config(model, task, split, max_examples, max_seq_len, layer, token)
    t = get_task(task)
    data = get_split(task, split)                      # fails early on a bad task or split

    def compute() -> dict:
        from sklearn.decomposition import PCA
        from ..analysis.extract import encode
        ds = data.select(range(min(max_examples, len(data))))
        encoder = cached_encoder(model)
        X = encode(encoder, texts_of(t, ds), layers=(layer,), token=token,
                   max_seq_len=max_seq_len, progress=False)[:, 0]          # (N, H)
        pca = PCA(n_components=2, random_state=0).fit(X)
        xy = pca.transform(X)                                            # (N, 2)
        labels = np.asarray(ds["label"])
        names = ([t.label_names[int(i)] for i in labels] if not t.is_regression
                 else [f"{v:.1f}" for v in labels])
        frame = pd.DataFrame({"task": task, "x": xy[:, 0], "y": xy[:, 1], "label": labels,
                              "label_name": names})
        return {"points": frame, "explained": pca.explained_variance_ratio_.tolist()}

    run = store.cached("projection", config, compute, fingerprint=fingerprint_of(model))
    frame = run.table("points")
    frame.attrs["explained"] = run.result["explained"]
    return frame


def project_tasks(model: str, tasks: list[str], **kw) -> pd.DataFrame:
    """:func:`project_task` for several tasks, stacked into one tidy frame.

    Every task name is checked before any work starts.

    Parameters
    ----------
    model : str
        The pretrained model's name or folder.
    tasks : list of str
        Registered task names.
    **kw
        Passed on to :func:`project_task` (``split``, ``max_examples``, ``max_seq_len``,
        ``layer``, ``token``, ``store``).

    Returns
    -------
    pd.DataFrame
        The frames of :func:`project_task` stacked in task order: one row per example and
        task, columns ``task, x, y, label, label_name``. ``attrs["explained"]`` maps each
        task to the shares of variance of its two components.

    Raises
    ------
    ConfigError
        An unknown task (before any work), or a split a task does not have.
    """
    for name in tasks:
        get_task(name)                                  # validate every name before any work
    frames = [project_task(model, name, **kw) for name in tasks]
    out = pd.concat(frames, ignore_index=True)
    out.attrs["explained"] = {name: f.attrs["explained"] for name, f in zip(tasks, frames)}
    return out


def projection_chart(points: pd.DataFrame, width: int = 220, height: int = 200):
    """One scatter panel per task (from :func:`project_tasks`), coloured by label.

    Classification labels get a categorical colour, regression labels a colour scale; the
    panels have independent axes and colour legends, three panels to a row.

    Parameters
    ----------
    points : pd.DataFrame
        As :func:`project_tasks` returns it: one row per example and task, with the columns
        ``task, x, y, label, label_name``.
    width, height : int
        The size of each panel, in pixels.

    Returns
    -------
    altair.VConcatChart
        The rows of panels, one above the other.
    """
    import altair as alt

    panels = []
    for task, frame in points.groupby("task", sort=False):
        regression = get_task(task).is_regression
        colour = (alt.Color("label:Q", title="score", scale=alt.Scale(scheme="viridis")) if regression
                  else alt.Color("label_name:N", title="label"))
        panels.append(alt.Chart(frame, title=task).mark_circle(size=18, opacity=0.7).encode(
            x=alt.X("x:Q", title="PC 1"), y=alt.Y("y:Q", title="PC 2"), color=colour,
            tooltip=["label_name:N"]).properties(width=width, height=height))
    rows = [alt.hconcat(*panels[i:i + 3]).resolve_scale(color="independent")
            for i in range(0, len(panels), 3)]
    return alt.vconcat(*rows).resolve_scale(color="independent")
