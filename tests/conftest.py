import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """Folder of a tiny random BERT (2 layers, hidden 32), loadable with bd.load_encoder."""
    from bertdims.testing import make_tiny_bert
    return str(make_tiny_bert(tmp_path_factory.mktemp("tiny_bert")))


@pytest.fixture()
def store(tmp_path):
    from bertdims import ResultStore
    return ResultStore(tmp_path / "results")
