import numpy as np
import pytest
import torch

import bertdims as bd
from bertdims.analysis.extract import encode, resolve_layers

TEXTS = ["a short one", "a considerably longer sentence, with a clause and more words in it",
         "mid length text here", "x", "another sentence of moderate size for the batch"]


@pytest.fixture(scope="module")
def tiny(tiny_bert):
    return bd.load_encoder(tiny_bert)


def _reference(encoder, text, layer, max_seq_len=32):
    """One text alone, no padding at all: the plain forward pass."""
    batch = encoder.tokenizer([text], truncation=True, max_length=max_seq_len, return_tensors="pt")
    with torch.no_grad():
        states = encoder.model(**batch, output_hidden_states=True).hidden_states
    return states[layer][0].numpy()  # (T, H)


def test_encode_shape_order_and_values_match_unbatched_forward(tiny):
    out = encode(tiny, TEXTS, layers=(0, -1), token="cls", batch_size=2, max_seq_len=32,
                 device="cpu", progress=False)
    assert out.shape == (len(TEXTS), 2, tiny.hidden_size) and out.dtype == np.float32
    for i, text in enumerate(TEXTS):   # input order kept although batches are sorted by length
        np.testing.assert_allclose(out[i, 0], _reference(tiny, text, 0)[0], atol=1e-5)
        np.testing.assert_allclose(out[i, 1], _reference(tiny, text, tiny.num_layers)[0], atol=1e-5)


def test_encode_mean_excludes_special_tokens(tiny):
    out = encode(tiny, TEXTS, layers=-1, token="mean", batch_size=3, max_seq_len=32,
                 device="cpu", progress=False)
    ref = _reference(tiny, TEXTS[1], tiny.num_layers)[1:-1].mean(0)
    np.testing.assert_allclose(out[1, 0], ref, atol=1e-5)


def test_encode_pad_to_max_gives_same_result(tiny):
    a = encode(tiny, TEXTS, layers=(1,), token="mean", batch_size=2, max_seq_len=24,
               device="cpu", progress=False)
    b = encode(tiny, TEXTS, layers=(1,), token="mean", batch_size=2, max_seq_len=24,
               device="cpu", progress=False, pad_to_max=True)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_encode_sentence_pairs(tiny):
    out = encode(tiny, [("premise one", "hypothesis"), ("a", "b c d")], layers=-1,
                 device="cpu", progress=False)
    assert out.shape == (2, 1, tiny.hidden_size) and np.isfinite(out).all()


def test_resolve_layers():
    assert resolve_layers((-1, 0, 2), 6) == [6, 0, 2]
    assert resolve_layers(-7, 6) == [0]
    for bad_layers in ([7], [-8], [], [1, -6], ["1"]):
        with pytest.raises(bd.ConfigError, match="layers"):
            resolve_layers(bad_layers, 6)


@pytest.mark.parametrize("kw, name", [({"token": "first"}, "token"), ({"batch_size": 0}, "batch_size"),
                                      ({"max_seq_len": 100000}, "max_seq_len"),
                                      ({"layers": [5]}, "layers")])
def test_encode_bad_input(tiny, kw, name):
    with pytest.raises(bd.ConfigError, match=name):
        encode(tiny, TEXTS, progress=False, **kw)


def test_encode_bad_texts(tiny):
    with pytest.raises(bd.ConfigError, match="texts"):
        encode(tiny, "just one string", progress=False)
    with pytest.raises(bd.ConfigError, match="texts"):
        encode(tiny, ["a", ("b", "c")], progress=False)


# ---------------------------------------------------------------------------- streaming store
def _dataset(n=23):
    from datasets import Dataset
    words = "the a film was good bad very quite long short story plot acting".split()
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, size=int(rng.integers(1, 20)))) for _ in range(n)]
    return Dataset.from_dict({"text": texts, "label": [i % 3 for i in range(n)]})


def test_extract_streams_chunks_and_matches_encode(tiny, store):
    from bertdims.analysis.extract import StoredRepresentations, extract
    ds = _dataset()
    rep = extract(tiny, "toy", "train", layers=[-1, 0], token="mean", max_seq_len=32, batch_size=4,
                  chunk_size=5, device="cpu", store=store, progress=False, data=ds)
    assert isinstance(rep, StoredRepresentations) and len(rep) == 23
    ref = encode(tiny, ds["text"], layers=[-1, 0], token="mean", max_seq_len=32, device="cpu",
                 progress=False)
    assert isinstance(rep[-1], np.memmap) and rep[-1].shape == (23, tiny.hidden_size)
    np.testing.assert_allclose(rep[-1], ref[:, 0], atol=1e-5)
    np.testing.assert_allclose(rep.layer(0), ref[:, 1], atol=1e-5)
    np.testing.assert_array_equal(rep.labels, np.arange(23) % 3)
    # the same config reads back without running the model
    again = extract(tiny, "toy", "train", layers=[-1, 0], token="mean", max_seq_len=32,
                    chunk_size=5, store=store, progress=False, data=ds)
    assert again.path == rep.path
    # another token gives another key
    cls = extract(tiny, "toy", "train", layers=[-1, 0], token="cls", max_seq_len=32, chunk_size=5,
                  device="cpu", store=store, progress=False, data=ds)
    assert cls.path != rep.path
    with pytest.raises(bd.ConfigError, match="layer"):
        rep.layer(1)


def test_extract_max_samples_is_a_seeded_subset(tiny, store):
    from bertdims.analysis.extract import extract
    ds = _dataset()
    rep = extract(tiny, "toy", "train", max_samples=7, max_seq_len=16, chunk_size=3, device="cpu",
                  store=store, progress=False, data=ds)
    idx = np.asarray(rep.indices)
    assert len(rep) == 7 and len(set(idx)) == 7 and (np.diff(idx) > 0).all()
    np.testing.assert_array_equal(rep.labels, idx % 3)
    ref = encode(tiny, [ds["text"][i] for i in idx], max_seq_len=16, device="cpu", progress=False)
    np.testing.assert_allclose(rep[-1], ref[:, 0], atol=1e-5)


def test_interrupted_extraction_is_not_read_and_resumes(tiny, store, monkeypatch):
    from bertdims.analysis import extract as ex
    ds = _dataset()
    calls = []
    real = ex._encode_chunk

    def flaky(*args, **kw):
        calls.append(len(args[1]))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(ex, "_encode_chunk", flaky)
    kw = dict(max_seq_len=16, chunk_size=5, device="cpu", store=store, progress=False, data=ds)
    with pytest.raises(KeyboardInterrupt):
        ex.extract(tiny, "toy", "train", **kw)
    assert not list((store.root / ex.KIND).glob("[!.]*"))   # nothing complete was published
    assert store.runs(ex.KIND).empty
    calls.clear()
    monkeypatch.setattr(ex, "_encode_chunk", lambda *a, **k: (calls.append(len(a[1])), real(*a, **k))[1])
    rep = ex.extract(tiny, "toy", "train", **kw)
    assert calls == [5, 5, 3]          # resumed after the two chunks already written
    ref = encode(tiny, ds["text"], max_seq_len=16, device="cpu", progress=False)
    np.testing.assert_allclose(rep[-1], ref[:, 0], atol=1e-5)
    assert len(store.runs(ex.KIND)) == 1


def test_extract_bad_input_before_work(tiny, store):
    from bertdims.analysis.extract import extract
    with pytest.raises(bd.ConfigError, match="chunk_size"):
        extract(tiny, "toy", "train", chunk_size=0, store=store, data=_dataset())
    with pytest.raises(bd.ConfigError, match="max_samples"):
        extract(tiny, "toy", "train", max_samples=0, store=store, data=_dataset())
    from datasets import Dataset
    with pytest.raises(bd.ConfigError, match="label"):
        extract(tiny, "toy", "train", store=store, data=Dataset.from_dict({"text": ["a"]}))


def test_damaged_extraction_is_reported_and_recomputed(tiny, store):
    """A stored extraction whose array was truncated after writing is never read as valid."""
    from bertdims.analysis.extract import extract
    from bertdims.core.store import DamagedEntryWarning
    ds = _dataset()
    kw = dict(layers=[-1], max_seq_len=16, chunk_size=8, device="cpu", store=store,
              progress=False, data=ds)
    rep = extract(tiny, "toy", "train", **kw)
    good = np.array(rep[-1])
    assert rep.meta["files"] and "layer_-1.npy" not in rep.meta["files"]   # resolved layer name
    layer_file = next(rep.path.glob("layer_*.npy"))
    with open(layer_file, "r+b") as fh:
        fh.truncate(layer_file.stat().st_size - 16)
    with pytest.warns(DamagedEntryWarning, match="layer_"):
        again = extract(tiny, "toy", "train", **kw)
    np.testing.assert_allclose(np.array(again[-1]), good, atol=1e-6)
