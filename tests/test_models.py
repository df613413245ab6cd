import pytest
import torch

import bertdims as bd
from bertdims.modeling.models import embedded_model_path, model_fingerprint


def test_embedded_model_is_a_six_layer_bert():
    enc = bd.load_encoder("embedded")
    assert enc.model.config.model_type == "bert"
    assert (enc.num_layers, enc.hidden_size) == (6, 384)
    batch = enc.tokenizer(["a short sentence", "another one, a bit longer"], return_tensors="pt",
                          padding=True)
    with torch.no_grad():
        states = bd.modeling.models.hidden_states(enc, batch)
    assert len(states) == enc.num_layers + 1
    assert all(s.shape == (2, batch["input_ids"].shape[1], 384) for s in states)
    assert enc.tokenizer.convert_ids_to_tokens(batch["input_ids"][0, :1].tolist()) == ["[CLS]"]


def test_aliases_resolve_to_the_embedded_folder():
    for name in ("embedded", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        assert bd.modeling.models.resolve_model(name) == str(embedded_model_path())


def test_local_folder_loads(tiny_bert):
    enc = bd.load_encoder(tiny_bert)
    assert (enc.num_layers, enc.hidden_size) == (2, 32)


def test_unavailable_hub_model_fails_fast_and_names_the_embedded_one(monkeypatch, no_network):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(bd.modeling.models.ModelNotAvailableError) as err:
        bd.load_encoder("bert-base-uncased")
    assert no_network == []                  # fails fast: offline, it never tries the network
    assert "bert-base-uncased" in str(err.value) and bd.modeling.models.EMBEDDED_MODEL in str(err.value)


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(bd.modeling.models.ModelNotAvailableError, match="config.json"):
        bd.modeling.models.resolve_model(str(tmp_path))


def test_fingerprint_changes_with_weights(tiny_bert):
    a = bd.load_encoder(tiny_bert).model
    b = bd.load_encoder(tiny_bert).model
    assert model_fingerprint(a) == model_fingerprint(b)
    with torch.no_grad():
        next(b.parameters())[0, 0] += 1.0
    b._bertdims_fingerprint = None
    assert model_fingerprint(a) != model_fingerprint(b)


def test_token_modes_select_the_right_vectors():
    from bertdims.modeling.tokens import select_token
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float).reshape(2, 4, 3)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    assert torch.equal(select_token(hidden, mask, "cls"), hidden[:, 0])
    # mean over non-special tokens: positions 1..2 for row 0, position 1 for row 1
    assert torch.allclose(select_token(hidden, mask, "mean"),
                          torch.stack([hidden[0, 1:3].mean(0), hidden[1, 1]]))
    assert torch.equal(select_token(hidden, mask, "token:2"), hidden[:, 2])
    assert torch.equal(select_token(hidden, mask, "token:9"), torch.stack([hidden[0, 3], hidden[1, 2]]))
    # maxnorm picks the largest non-special token (later rows are larger here)
    assert torch.equal(select_token(hidden, mask, "maxnorm"), torch.stack([hidden[0, 2], hidden[1, 1]]))
    with pytest.raises(bd.ConfigError, match="token"):
        select_token(hidden, mask, "pooler")


def test_fingerprint_follows_the_files_not_the_name(tmp_path):
    """A folder rewritten in the same process gets the fingerprint of its new weights."""
    from bertdims.modeling.models import cached_encoder, files_state, fingerprint_of
    from bertdims.modeling.testing import make_tiny_bert
    folder = make_tiny_bert(tmp_path / "m", seed=0)
    first, state = fingerprint_of(str(folder)), files_state(str(folder))
    enc = cached_encoder(str(folder))
    make_tiny_bert(folder, seed=1)                      # other weights, same name
    assert files_state(str(folder)) != state
    assert fingerprint_of(str(folder)) != first
    assert cached_encoder(str(folder)) is not enc
    make_tiny_bert(folder, seed=0)                      # the first weights again
    assert fingerprint_of(str(folder)) == first
