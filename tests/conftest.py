import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """Folder of a tiny random BERT (2 layers, hidden 32), loadable with bd.load_encoder."""
    from bertdims.modeling.testing import make_tiny_bert
    return str(make_tiny_bert(tmp_path_factory.mktemp("tiny_bert")))


@pytest.fixture()
def store(tmp_path):
    from bertdims import ResultStore
    return ResultStore(tmp_path / "results")


@pytest.fixture()
def tiny_tasks():
    """The names of the two small tasks of finetune_tasks.py (classification, regression),
    registered for the test and removed from the registry after it."""
    from finetune_tasks import registered_test_tasks
    with registered_test_tasks() as names:
        yield names


@pytest.fixture()
def no_network(monkeypatch):
    """Every attempt to open a network connection (DNS look-up or connect) is refused with an
    OSError, as an unreachable network would refuse it, and recorded: the test asserts that
    the returned list is empty. (Recorded rather than only raised, because code under test may
    catch the error and carry on as if offline.)"""
    import socket
    attempts: list = []

    def refuse(what):
        def call(*args, **kwargs):
            attempts.append((what, args[1:] if what.startswith("socket.") else args))
            raise OSError(f"no network in this test ({what})")
        return call

    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    return attempts
