"""Tasks loaded from the Hugging Face hub: GLUE, IMDB, AG News and DBpedia-14.

Each loads with ``datasets.load_dataset`` when the hub can be reached or the data set is in the
local Hugging Face cache, or with ``datasets.load_from_disk(data_dir)`` from a copy saved with
``DatasetDict.save_to_disk`` in the hub's raw format (its column and split names). When none of
these is possible the loader raises :class:`bertdims.data.tasks.TaskUnavailableError` at once,
without waiting through ``datasets``' retries, naming the tasks that ship offline instead.

Columns are renamed to the library's standard: ``text`` for one-sentence tasks,
``sentence1``/``sentence2`` for pairs (MNLI's premise/hypothesis, QNLI's question/sentence,
QQP's two questions), and ``label``; other columns (``idx``, DBpedia's ``title``) are dropped.

Splits
------
GLUE's test labels are hidden, so the official **validation** split serves as ``test`` and a
``validation`` split is carved from the official train split: 10% of it, at most 5,000 rows,
stratified by class (random for STS-B), with ``numpy.random.default_rng(0)``. IMDB, AG News and
DBpedia keep their official test split as ``test``; ``validation`` is carved from train with the
fractions of the Emergent-Properties paper (IMDB 10%, AG News 5%, DBpedia 5%). The rows of every
split are shuffled with the same seeded generator, so the first ``n`` rows are a random sample.

==========  ===================  =======  ==========  ======  ==================  ==================
task        hub data set         train    validation  test    test comes from     metrics
==========  ===================  =======  ==========  ======  ==================  ==================
cola        nyu-mll/glue cola    7,696    855         1,043   validation          matthews, accuracy
sst2        nyu-mll/glue sst2    62,349   5,000       872     validation          accuracy
mrpc        nyu-mll/glue mrpc    3,301    367         408     validation          f1, accuracy
qqp         nyu-mll/glue qqp     358,846  5,000       40,430  validation          f1, accuracy
glue_stsb   nyu-mll/glue stsb    5,174    575         1,500   validation          pearson, spearman
mnli        nyu-mll/glue mnli    387,702  5,000       9,815   validation_matched  accuracy
qnli        nyu-mll/glue qnli    99,743   5,000       5,463   validation          accuracy
rte         nyu-mll/glue rte     2,241    249         277     validation          accuracy
imdb        stanfordnlp/imdb     22,500   2,500       25,000  test                accuracy
ag_news     fancyzhx/ag_news     114,000  6,000       7,600   test                accuracy
dbpedia_14  fancyzhx/dbpedia_14  532,000  28,000      70,000  test                accuracy
==========  ===================  =======  ==========  ======  ==================  ==================

(Sizes follow from the official split sizes and the rules above.) MNLI also has the extra
split ``test_mismatched`` (its official ``validation_mismatched``, 9,832 rows) for the
mismatched accuracy. GLUE STS-B is named ``glue_stsb`` to keep it apart from the embedded
``stsb``, which reads the same data (with gold test scores) from a PyPI package.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._embedded import EMBEDDED_TASKS, carve
from ..core import hub
from ..core._validate import ConfigError
from .task_spec import Task, TaskUnavailableError

SEED = 0
GLUE_VALIDATION_CAP = 5000
_TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class HubSource:
    """Where a hub task lives and how its raw columns and splits map onto ours."""

    repo: str                                # hub id
    config: str | None
    columns: dict                            # raw text column -> our text column
    train: str = "train"                     # raw split carved into train + validation
    test: str = "validation"                 # raw split used as our test
    extra: dict = field(default_factory=dict)  # our extra split -> raw split
    val_fraction: float = 0.1
    val_cap: int | None = GLUE_VALIDATION_CAP
    legacy: str | None = None                # old hub id, for caches made before the move

    @property
    def raw_splits(self) -> tuple[str, ...]:
        return (self.train, self.test, *self.extra.values())


SOURCES: dict[str, HubSource] = {}
_TASKS: dict[str, Task] = {}


def _add(name: str, source: HubSource, text_fields, label_type, label_names, metrics,
         description: str, eval_splits=("validation", "test")) -> None:
    SOURCES[name] = source

    def loader(data_dir=None, _name=name):
        return load_hub_task(_name, data_dir)

    loader.__doc__ = f"Load {name!r} ({description}); see bertdims.data._hub for the splits."
    _TASKS[name] = Task(name, "hub", tuple(text_fields), label_type, tuple(label_names),
                        tuple(metrics), loader, description=description,
                        eval_splits=tuple(eval_splits))


def _glue(config: str, columns: dict, **kw) -> HubSource:
    return HubSource("nyu-mll/glue", config, columns, legacy="glue", **kw)


ONE = ("text",)
PAIR = ("sentence1", "sentence2")
ENTAIL = ("entailment", "not_entailment")

_add("cola", _glue("cola", {"sentence": "text"}), ONE, "classification",
     ("unacceptable", "acceptable"), ("matthews", "accuracy"), "GLUE CoLA, grammatical acceptability")
_add("sst2", _glue("sst2", {"sentence": "text"}), ONE, "classification",
     ("negative", "positive"), ("accuracy",), "GLUE SST-2, binary sentiment")
_add("mrpc", _glue("mrpc", {"sentence1": "sentence1", "sentence2": "sentence2"}), PAIR,
     "classification", ("not_equivalent", "equivalent"), ("f1", "accuracy"), "GLUE MRPC, paraphrase")
_add("qqp", _glue("qqp", {"question1": "sentence1", "question2": "sentence2"}), PAIR,
     "classification", ("not_duplicate", "duplicate"), ("f1", "accuracy"),
     "GLUE QQP, duplicate questions")
_add("glue_stsb", _glue("stsb", {"sentence1": "sentence1", "sentence2": "sentence2"}), PAIR,
     "regression", (), ("pearson", "spearman"), "GLUE STS-B, similarity score 0-5")
_add("mnli", _glue("mnli", {"premise": "sentence1", "hypothesis": "sentence2"},
                   test="validation_matched", extra={"test_mismatched": "validation_mismatched"}),
     PAIR, "classification", ("entailment", "neutral", "contradiction"), ("accuracy",),
     "GLUE MNLI, natural language inference", eval_splits=("validation", "test", "test_mismatched"))
_add("qnli", _glue("qnli", {"question": "sentence1", "sentence": "sentence2"}), PAIR,
     "classification", ENTAIL, ("accuracy",), "GLUE QNLI, question answering as inference")
_add("rte", _glue("rte", {"sentence1": "sentence1", "sentence2": "sentence2"}), PAIR,
     "classification", ENTAIL, ("accuracy",), "GLUE RTE, textual entailment")
_add("imdb", HubSource("stanfordnlp/imdb", None, {"text": "text"}, test="test", val_fraction=0.1,
                       val_cap=None, legacy="imdb"),
     ONE, "classification", ("neg", "pos"), ("accuracy",), "IMDB movie reviews, binary sentiment")
_add("ag_news", HubSource("fancyzhx/ag_news", None, {"text": "text"}, test="test",
                          val_fraction=0.05, val_cap=None, legacy="ag_news"),
     ONE, "classification", ("World", "Sports", "Business", "Sci/Tech"), ("accuracy",),
     "AG News, 4 topics")
_add("dbpedia_14", HubSource("fancyzhx/dbpedia_14", None, {"content": "text"}, test="test",
                             val_fraction=0.05, val_cap=None, legacy="dbpedia_14"),
     ONE, "classification",
     ("Company", "EducationalInstitution", "Artist", "Athlete", "OfficeHolder",
      "MeanOfTransportation", "Building", "NaturalPlace", "Village", "Animal", "Plant", "Album",
      "Film", "WrittenWork"), ("accuracy",), "DBpedia ontology, 14 classes (text = article abstract)")

#: The hub tasks, in the order they are listed (:mod:`bertdims.data.tasks` registers them).
TASKS: tuple[Task, ...] = tuple(_TASKS.values())


# --------------------------------------------------------------------------- availability
def _offline_flag() -> bool:
    import datasets

    env = any(os.environ.get(v, "").strip().lower() in _TRUE
              for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    return env or bool(datasets.config.HF_HUB_OFFLINE)


_REACH: dict = {}


def hub_reachable(max_age_s: float = 60.0) -> bool:
    """Whether the hub answers (False at once in offline mode); remembered for ``max_age_s``."""
    if _offline_flag():
        return False
    now = time.monotonic()
    if "t" not in _REACH or now - _REACH["t"] > max_age_s:

        _REACH.update(t=now, ok=hub.reachable())
    return _REACH["ok"]


def _cached_ids(source: HubSource) -> list[str]:
    """Hub ids of ``source`` that have a copy in the local datasets cache."""
    import datasets

    root = Path(datasets.config.HF_DATASETS_CACHE)
    found = []
    for repo in (source.repo, source.legacy):
        if not repo:
            continue
        folder = root / "___".join(repo.split("/"))
        if folder.is_dir() and (source.config is None or (folder / source.config).is_dir()):
            found.append(repo)
    return found


def hub_status(name: str) -> str:
    """``"cached"`` (in the local HF cache), ``"reachable"`` (downloadable) or ``"unavailable"``."""
    source = _source(name)
    if _cached_ids(source):
        return "cached"
    return "reachable" if hub_reachable() else "unavailable"


def _source(name: str) -> HubSource:
    if name not in SOURCES:
        raise ConfigError(f"parameter 'task' = {name!r} is not a hub task; choose one of: "
                          + ", ".join(SOURCES))
    return SOURCES[name]


def _unavailable(name: str, why: str) -> TaskUnavailableError:
    import datasets

    s = SOURCES[name]
    where = s.repo + (f", config {s.config!r}" if s.config else "")
    return TaskUnavailableError(
        f"task {name!r} comes from the Hugging Face hub (data set {where}) and cannot be loaded here: {why}. "
        "To make it available: run once with network access to the hub (it is then cached), "
        f"point HF_DATASETS_CACHE at a cache that holds it (now {datasets.config.HF_DATASETS_CACHE}), "
        "or pass data_dir= a copy saved with DatasetDict.save_to_disk in the hub's raw format "
        f"(splits {', '.join(s.raw_splits)}). Tasks available offline: "
        + ", ".join(EMBEDDED_TASKS))


def data_version(name: str) -> dict:
    """What the task's rows come from: hub data set, config and revision (the revisions the
    local datasets cache holds for it, or ``"latest"`` when none is cached: downloaded now)."""
    import datasets

    source = _source(name)
    revisions = []
    for repo in _cached_ids(source):
        folder = Path(datasets.config.HF_DATASETS_CACHE) / "___".join(repo.split("/"))
        if source.config:
            folder = folder / source.config
        revisions += sorted(p.name for p in folder.glob("*/*") if p.is_dir())
    return {"source": "hub", "repo": source.repo, "config": source.config,
            "revision": ",".join(revisions) or "latest"}


# --------------------------------------------------------------------------- loading
def _load_raw(name: str, data_dir: str | None):
    import datasets

    source = _source(name)
    if data_dir is not None:
        if not Path(data_dir).is_dir():
            raise ConfigError(f"parameter 'data_dir' = {str(data_dir)!r} is not a folder; give a "
                              f"folder written by DatasetDict.save_to_disk holding task {name!r}")
        raw = datasets.load_from_disk(str(data_dir))
        if not isinstance(raw, datasets.DatasetDict):
            raise ConfigError(f"parameter 'data_dir' = {str(data_dir)!r} holds one Dataset; task "
                              f"{name!r} needs a DatasetDict with splits {', '.join(source.raw_splits)}")
        return raw
    args = (source.config,) if source.config else ()
    if hub_reachable():
        try:
            return datasets.load_dataset(source.repo, *args)
        except (ConnectionError, OSError) as e:    # network failures, a vanished data set
            raise _unavailable(name, f"downloading failed ({type(e).__name__}: {e})") from e
    cached = _cached_ids(source)
    if not cached:
        why = ("offline mode is on (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE)" if _offline_flag()
               else "the hub cannot be reached") + " and the local cache has no copy"
        raise _unavailable(name, why)
    saved = datasets.config.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = True          # read the cache without touching the network
    try:
        return datasets.load_dataset(cached[0], *args)
    except Exception as e:                          # noqa: BLE001 (any failure means unavailable)
        raise _unavailable(name, f"reading the cached copy failed ({type(e).__name__}: {e})") from e
    finally:
        datasets.config.HF_HUB_OFFLINE = saved


def _standardize(name: str, raw_split, task: Task):
    """Rename text columns, drop the others, give ``label`` the task's feature type."""
    import datasets

    source = SOURCES[name]
    missing = [c for c in (*source.columns, "label") if c not in raw_split.column_names]
    if missing:
        raise ConfigError(f"task {name!r}: the data has columns {raw_split.column_names} but lacks "
                          f"{missing}; expected the hub's raw format")
    ds = raw_split.select_columns([*source.columns, "label"])
    ds = ds.rename_columns({k: v for k, v in source.columns.items() if k != v})
    feature = ds.features["label"]
    if task.is_regression:
        if not (isinstance(feature, datasets.Value) and feature.dtype.startswith("float")):
            ds = ds.cast_column("label", datasets.Value("float32"))
    elif isinstance(feature, datasets.ClassLabel):
        if tuple(feature.names) != task.label_names:
            raise ConfigError(f"task {name!r}: the data's label names {feature.names} differ from "
                              f"the task's {list(task.label_names)}")
    else:
        ds = ds.cast_column("label", datasets.ClassLabel(names=list(task.label_names)))
    return ds


def load_hub_task(name: str, data_dir: str | None = None):
    """A hub task's ``DatasetDict`` with our split scheme (see the module docstring)."""
    import datasets

    task, source = _TASKS[name], _source(name)
    raw = _load_raw(name, data_dir)
    absent = [s for s in source.raw_splits if s not in raw]
    if absent:
        raise ConfigError(f"task {name!r}: the data has splits {list(raw)} but lacks {absent}")
    rng = np.random.default_rng(SEED)

    def labelled(ds):        # rows with a gold label (hidden test labels are -1)
        y = ds.with_format("arrow")["label"].to_numpy()   # fast; np.asarray(ds[col]) is not
        return np.flatnonzero(y >= 0) if not task.is_regression else np.flatnonzero(~np.isnan(y)), y

    train = _standardize(name, raw[source.train], task)
    keep, y = labelled(train)
    n_val = int(round(source.val_fraction * len(keep)))
    if source.val_cap is not None:
        n_val = min(n_val, source.val_cap)
    kept, carved = carve(y[keep], n_val, rng, stratify=not task.is_regression)
    out = {"train": train.select(keep[kept][rng.permutation(len(kept))]),
           "validation": train.select(keep[carved][rng.permutation(len(carved))])}
    for ours, theirs in (("test", source.test), *source.extra.items()):
        ds = _standardize(name, raw[theirs], task)
        rows, _ = labelled(ds)
        out[ours] = ds.select(rows[rng.permutation(len(rows))])
    return datasets.DatasetDict(out)
