"""The grids' runs on a Dask cluster (bertdims.train.executor): a real ``distributed.LocalCluster``
of 2 worker processes with 1 thread each, the tiny BERT and the embedded rotten_tomatoes."""
from __future__ import annotations

import importlib
import importlib.util
import os
import socket
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from result_checks import check_result
import torch

from bertdims.train import executor
from bertdims.analysis.dims import finetune_grid, grid_predictions
from bertdims.train.finetuning import FinetuneConfig, finetune, stored_key
from bertdims.core.store import DamagedEntryWarning, ResultStore

sys.path.insert(0, str(Path(__file__).parent))
from cli_checks import assert_one_line_refusal  # noqa: E402

ft = importlib.import_module("bertdims.train.finetuning")
GRID = {"seed": [0, 1], "freeze": [0, 1]}          # 4 runs


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """One torch thread here, as on every worker (Dask sets OMP_NUM_THREADS=1 there)."""
    monkeypatch.delenv(executor.SCHEDULER_ENV, raising=False)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def cluster():
    """The scheduler address of a local cluster: 2 worker processes, 1 thread each."""
    from distributed import LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as local:
        yield local.scheduler_address
    executor._EXECUTORS.clear()


def base(model) -> FinetuneConfig:
    return FinetuneConfig(model=model, task="rotten_tomatoes", max_train_samples=32,
                          max_eval_samples=24, max_seq_len=32, epochs=1.0, batch_size=16,
                          micro_batch_size=16, device="cpu")


def configs(model) -> list[FinetuneConfig]:
    return [base(model).replace(seed=s, freeze=f) for s in GRID["seed"] for f in GRID["freeze"]]


def no_training_here(*args, **kwargs):
    raise AssertionError("a run was trained in the notebook's process, not on the cluster")


def test_without_a_cluster_nothing_is_submitted(store):
    assert isinstance(executor.current(), executor.InProcess)
    assert executor.ensure_runs([object()], store) == []        # not even looked at


def test_a_grid_on_the_cluster_gives_the_in_process_results(tiny_bert, tmp_path, cluster, monkeypatch):
    here, there = ResultStore(tmp_path / "here"), ResultStore(tmp_path / "there")
    table = finetune_grid(base(tiny_bert), store=here, keep_model=False, **GRID)
    preds, labels = grid_predictions(base(tiny_bert), store=here, keep_model=False, **GRID)

    monkeypatch.setenv(executor.SCHEDULER_ENV, cluster)
    monkeypatch.setattr(ft, "_train", no_training_here)      # every run must come from a worker
    table_c = finetune_grid(base(tiny_bert), store=there, keep_model=False, **GRID)
    preds_c, labels_c = grid_predictions(base(tiny_bert), store=there, keep_model=False, **GRID)

    assert len(there.runs("finetune")) == len(configs(tiny_bert))
    pd.testing.assert_frame_equal(table_c, table, check_exact=True)
    assert np.array_equal(preds_c, preds) and np.array_equal(labels_c, labels)


def test_stored_runs_are_not_submitted_and_each_key_once(tiny_bert, store, cluster):
    cfgs = configs(tiny_bert)
    for cfg in cfgs[:2]:
        finetune(cfg, store=store, progress=False, keep_model=False)
    before = {p.name: p.stat().st_mtime_ns for p in (store.root / "finetune").iterdir()
              if not p.name.startswith(".")}
    dask = executor.DaskExecutor(cluster)
    sent = executor.ensure_runs(cfgs + cfgs[2:], store, keep_model=False, executor=dask)
    assert sent == [stored_key(c, store) for c in cfgs[2:]]           # the missing two, once each
    assert {k: (store.root / "finetune" / k).stat().st_mtime_ns for k in before} == before
    assert executor.ensure_runs(cfgs, store, keep_model=False, executor=dask) == []
    # a lean run asked for with its weights is trained again (finetune's keep_model=True)
    again = executor.ensure_runs(cfgs[:1], store, keep_model=True, executor=dask)
    assert again == [stored_key(cfgs[0], store)]


def test_a_worker_killed_mid_run_leaves_the_grid_complete_and_the_store_valid(tiny_bert, store, cluster):
    def die_once(kind, config, root, keep_model, key):
        """The first attempt of any run dies while writing its entry (holding its lock), as
        a killed or out-of-memory worker would; every later attempt computes normally."""
        import os as _os
        from pathlib import Path as _Path
        from bertdims.train.executor import compute
        from bertdims.core.store import ResultStore as _Store
        try:
            died = _os.open(_Path(root) / "died", _os.O_CREAT | _os.O_EXCL | _os.O_WRONLY)
        except FileExistsError:
            return compute(kind, config, root, keep_model, key)
        run_store = _Store(root)
        with run_store.lock(kind, key), run_store.writing(kind, {"half": True}, key=key) as tmp:
            (tmp / "result.json").write_text('{"metrics": ')
            _os.write(died, str(tmp).encode())      # where it died
            _os.close(died)
            _os._exit(1)

    cfgs = configs(tiny_bert)
    dask = executor.DaskExecutor(cluster, _compute=die_once)
    sent = executor.ensure_runs(cfgs, store, keep_model=False, executor=dask)
    assert (store.root / "died").exists() and len(sent) == len(cfgs)
    half = Path((store.root / "died").read_text())
    assert half.parent == store.root / "finetune" and ".tmp-" in half.name, \
        "the killed attempt was not writing an entry: it did not die mid-write"
    assert not half.exists()      # the retry of its key removed the dead writer's folder
    with warnings.catch_warnings():
        warnings.simplefilter("error", DamagedEntryWarning)
        for cfg in cfgs:
            hit = store.get("finetune", stored_key(cfg, store))
            assert hit is not None
            preds, labels = hit.array("pred_test"), hit.array("label_test")     # a complete entry
            assert len(labels) == 24
            assert hit.result["metrics"]["test"]["accuracy"] == pytest.approx(np.mean(preds == labels))
            assert finetune(cfg, store=store, progress=False, keep_model=False).cached


def test_the_other_grids_send_every_run_to_the_cluster(tiny_bert, store, cluster, monkeypatch):
    """The layer study, the sparsity study and the cross-fine-tuning matrix (first stages,
    then B after A and its control) train nothing in the notebook's process."""
    from bertdims.train import sparse
    from bertdims.analysis.crossft import CrossConfig, cross_finetune
    from bertdims.analysis.distances import LayerStudyConfig, layer_study
    small = dict(max_train_samples=32, max_eval_samples=24, max_seq_len=32)
    monkeypatch.setenv(executor.SCHEDULER_ENV, cluster)
    monkeypatch.setattr(ft, "_train", no_training_here)
    monkeypatch.setattr(sparse, "train_sparse", no_training_here)

    layers = layer_study(LayerStudyConfig(model=tiny_bert, seeds=[0], single_layers=[2], top_n=[1],
                                          **small), store)
    assert list(layers.table["setting"]) == ["full", "head only", "single layer", "top n layers"]
    masks = sparse.sparse_study(sparse.SparseConfig(model=tiny_bert, epochs=1.0, device="cpu", **small),
                                [0.5], [0], store=store)
    assert len(masks.scores[masks.scores["split"] == "test"]) == 3     # full, pretrained, learned
    check_result(masks, runs=3, tables={"scores", "histories"})
    cross = cross_finetune(CrossConfig(model=tiny_bert, tasks=["rotten_tomatoes", "bbc_news"], seeds=[0],
                                       modes=["all"], num_dims=2, device="cpu", **small), store=store)
    assert len(cross.pairs) == 2 and cross.pairs["second_after"].between(0, 1).all()


def test_a_run_that_keeps_failing_is_named(tiny_bert, store, cluster):
    def fails_for_seed_1(kind, config, root, keep_model, key):
        if config.seed == 1:
            raise ValueError("no memory left")
        from bertdims.train.executor import compute
        return compute(kind, config, root, keep_model, key)

    cfgs = [base(tiny_bert).replace(seed=s) for s in (0, 1)]
    dask = executor.DaskExecutor(cluster, retries=1, _compute=fails_for_seed_1)
    with pytest.raises(executor.RunFailed, match="1 of 2 runs") as err:
        executor.ensure_runs(cfgs, store, keep_model=False, executor=dask)
    assert stored_key(cfgs[1], store) in str(err.value) and "no memory left" in str(err.value)
    assert store.get("finetune", stored_key(cfgs[0], store)) is not None   # the others are kept


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("argv, needle", [
    (["book", "--workers", "0"], "'workers' = 0"),
    (["run", "01", "--workers", "-2"], "'workers' = -2"),
    (["run", "01", "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "not both"),
    (["book", "--scheduler", "tcp://127.0.0.1:{port}"], "'scheduler' = 'tcp://127.0.0.1:"),
    (["run", "01", "--scheduler", "tcp://127.0.0.1:{port}"], "none answered within 1 s"),
    (["run", "01", "--workers", "two"], "--workers: invalid int value"),
])
def test_bad_cluster_options_are_one_line_before_any_chapter(argv, needle, capsys, monkeypatch):
    from bertdims.book import chapters
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    monkeypatch.setattr(executor, "CONNECT_SECONDS", 1.0)
    monkeypatch.setattr(chapters, "run_chapter", no_training_here)
    monkeypatch.setattr(chapters, "build_book", no_training_here)
    monkeypatch.setattr(executor, "local_cluster", no_training_here)
    assert_one_line_refusal([a.format(port=free_port()) for a in argv], needle, capsys)


def test_more_workers_than_gpus_is_refused_before_starting(monkeypatch):
    from bertdims import ConfigError
    with pytest.raises(ConfigError, match="'workers' = 3 .*one GPU per worker"):
        with executor.local_cluster(3, gpus=2):
            pass


def test_local_gpu_workers_each_see_one_device():
    """Without dask-cuda, each worker of a GPU machine gets its own CUDA_VISIBLE_DEVICES."""
    if importlib.util.find_spec("dask_cuda") is not None:
        pytest.skip("dask-cuda is installed: LocalCUDACluster needs real GPUs")
    from distributed import Client
    env = os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    try:
        with executor.local_cluster(2, gpus=2) as address, Client(address, set_as_default=False) as c:
            def shown():                       # runs on each worker
                import os as _os
                return _os.environ.get("CUDA_VISIBLE_DEVICES")
            seen = c.run(shown)
    finally:
        if env is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = env
    assert sorted(seen.values()) == ["0", "1"]


def test_cli_cluster_is_given_to_the_kernels_and_closed(cluster, monkeypatch):
    """``--workers N`` starts a cluster whose address the kernels inherit, closed afterwards;
    ``--scheduler`` passes a reachable address on."""
    from argparse import Namespace
    from bertdims.book.chapters import _cluster
    monkeypatch.setattr(executor, "visible_gpus", lambda: 0)
    with _cluster(Namespace(scheduler=None, workers=1)):
        address = os.environ[executor.SCHEDULER_ENV]
        assert executor.check_scheduler(address) == address
    assert executor.SCHEDULER_ENV not in os.environ
    monkeypatch.setattr(executor, "CONNECT_SECONDS", 2.0)
    from bertdims import ConfigError
    with pytest.raises(ConfigError, match="'scheduler'"):
        executor.check_scheduler(address)                   # closed with the command
    with _cluster(Namespace(scheduler=cluster, workers=None)):
        assert os.environ[executor.SCHEDULER_ENV] == cluster
    assert executor.SCHEDULER_ENV not in os.environ


def test_a_local_cluster_larger_than_the_machine_is_refused_before_it_starts(monkeypatch):
    import os
    from bertdims import ConfigError
    monkeypatch.setattr(executor, "_cpu_cluster", no_training_here)   # never reached
    with pytest.raises(ConfigError, match=f"at most {os.cpu_count()}"):
        with executor.local_cluster((os.cpu_count() or 1) + 1, gpus=0):
            pass
    with pytest.raises(ConfigError, match="at most 2: one GPU per worker"):
        with executor.local_cluster(3, gpus=2):
            pass
