"""Where the independent runs of a grid execute: in this process, or on a Dask cluster.

The grids (:func:`bertdims.analysis.dims.finetune_grid`, :func:`~bertdims.analysis.dims.grid_predictions`,
:func:`~bertdims.analysis.dims.run_dims_grid`, :func:`~bertdims.analysis.dims.retrain_study`,
:func:`bertdims.analysis.distances.layer_study`, :func:`bertdims.train.sparse.sparse_study` and
:func:`bertdims.analysis.crossft.cross_finetune`) call :func:`ensure_runs` with the runs they are about to
read, then read them in their own loop as before. That call is the one seam:

* with no cluster (``$BERTDIMS_SCHEDULER`` unset) it does nothing, and the loop computes the
  runs one after the other in this process;
* with ``$BERTDIMS_SCHEDULER`` set to a Dask scheduler's address (``tcp://host:8786``) it
  submits every run not yet stored to the cluster, one Dask task per run, and waits; the loop
  then reads every run back from the results store.

The results store is where the workers and the notebook meet: each worker writes its run
into the same results folder (:class:`bertdims.core.store.ResultStore`, a folder every worker must
see, e.g. on a shared file system) with the store's atomic protocol (a temporary folder renamed
into place). A run already stored is not submitted. The Dask task key is the store key, so
the scheduler never runs one key twice at once, and :meth:`ResultStore.lock` keeps two
processes off one key whatever submitted them. A task that raises is retried ``retries``
times (Dask's ``retries``); a worker that dies mid-run (killed, out of memory, preempted) has
its run rescheduled on another worker by the scheduler (up to Dask's
``distributed.scheduler.allowed-failures`` deaths), which resumes from the run's last
checkpoint; the dead worker's half-written temporary folder is never read.

``bertdims book --scheduler ADDRESS`` and ``--workers N`` (:func:`local_cluster`) set
``$BERTDIMS_SCHEDULER`` for the chapters' kernels.
"""
from __future__ import annotations

import contextlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ..core._validate import bad, check_range

__all__ = ["SCHEDULER_ENV", "RETRIES", "RunFailed", "InProcess", "DaskExecutor", "current",
           "ensure_runs", "check_scheduler", "local_cluster", "visible_gpus"]

#: environment variable: the address of the Dask scheduler the grids submit their runs to
SCHEDULER_ENV = "BERTDIMS_SCHEDULER"
#: how many times a run that raised is tried again on the cluster (Dask's ``retries``)
RETRIES = 2
#: seconds to wait for a scheduler to answer before saying it is unreachable
CONNECT_SECONDS = 10.0


class RunFailed(RuntimeError):
    """Runs that still failed on the cluster after their retries (named in the message)."""


@dataclass(frozen=True)
class Job:
    """One run to make sure of: its store kind and key, its config, and ``keep_model``."""

    kind: str
    key: str
    config: Any
    keep_model: bool | None

    def label(self) -> str:
        cfg = self.config
        return (f"{self.kind} of {getattr(cfg, 'task', '?')} seed {getattr(cfg, 'seed', '?')} "
                f"(model {getattr(cfg, 'init_from', None) or getattr(cfg, 'model', '?')}, "
                f"key {self.key})")


def compute(kind: str, config: Any, root: str, keep_model: bool | None, key: str) -> str:
    """Compute (or read back) one run into the store at ``root``, under the store's lock of
    its ``key``; what each Dask task runs on its worker. Returns the run's store key."""
    from ..core.store import ResultStore
    store = ResultStore(root)
    with store.lock(kind, key):     # re-entrant: finetune takes the same lock inside
        if kind == "finetune":
            from .finetuning import finetune
            return finetune(config, store=store, progress=False, keep_model=keep_model).path.name
        return config.compute_in(store, keep_model).path.name


def _job(config: Any, store, keep_model: bool | None) -> Job:
    """The :class:`Job` of a ``FinetuneConfig``, or of a config that says how it is stored
    and computed (``store_kind``, ``store_key(store)``, ``compute_in(store, keep_model)``, as
    :class:`bertdims.train.sparse.SparseConfig`); the key is computed here, without training (it
    reads the model's files for its fingerprint)."""
    from .finetuning import KEEP_MODELS_ENV, FinetuneConfig, stored_key
    if isinstance(config, FinetuneConfig):
        if os.environ.get(KEEP_MODELS_ENV, "") not in ("", "0"):
            keep_model = True       # what this process would keep, whatever the worker's environment
        return Job("finetune", stored_key(config, store), config, keep_model)
    if all(hasattr(config, a) for a in ("store_kind", "store_key", "compute_in")):
        return Job(config.store_kind, config.store_key(store), config, None)
    raise bad("configs", type(config).__name__, "expected FinetuneConfig or SparseConfig objects")


def _is_stored(job: Job, store) -> bool:
    from .heads import has_weights
    hit = store.get(job.kind, job.key)
    return hit is not None and not (job.keep_model is True and not has_weights(hit.path / "model"))


def _keep_models(configs: Sequence, keep_model) -> list:
    if isinstance(keep_model, (list, tuple)):
        if len(keep_model) != len(configs):
            raise bad("keep_model", keep_model, f"give one value per config ({len(configs)})")
        return list(keep_model)
    return [keep_model] * len(configs)


class InProcess:
    """No cluster: the grids' own loops compute every run in this process, as they always did."""

    distributed = False
    address = None

    def ensure(self, configs: Sequence, store, keep_model=None) -> list[str]:
        return []

    def __repr__(self) -> str:
        return "InProcess()"


class DaskExecutor:
    """Submits runs to the Dask scheduler at ``address``, one task per run (task key: the
    store key), each retried ``retries`` times when it raises. ``_compute`` (a test hook)
    replaces :func:`compute` as what the workers run."""

    distributed = True

    def __init__(self, address: str, *, retries: int = RETRIES,
                 _compute: Callable[..., str] | None = None):
        if not isinstance(address, str) or not address.strip():
            raise bad("scheduler", address, "expected a Dask scheduler address such as tcp://host:8786")
        check_range("retries", retries, 0, None, integer=True)
        self.address, self.retries = address.strip(), retries
        self._compute = _compute or compute
        self._client = None
        self._checked: set[str] = set()

    def __repr__(self) -> str:
        return f"DaskExecutor({self.address!r}, retries={self.retries})"

    def client(self):
        """The ``distributed.Client`` of this scheduler (connected once, on first use)."""
        if self._client is None:
            self._client = _connect(self.address)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _check_shared(self, root: Path) -> None:
        """Every worker must see the results folder: a file written here must be there."""
        if str(root) in self._checked:
            return
        probe = root / ".executor" / f"probe-{uuid.uuid4().hex}"
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.touch()
        try:
            seen = self.client().run(os.path.exists, str(probe))
        finally:
            probe.unlink(missing_ok=True)
        blind = sorted(w for w, ok in seen.items() if not ok)
        if blind:
            raise bad("results store", str(root), f"every Dask worker must see the results folder "
                      f"(a shared folder, the same absolute path on every machine); "
                      f"{len(blind)} of {len(seen)} workers do not ({', '.join(blind[:3])})")
        if seen:                    # no worker yet (a cluster still scaling up): check next time
            self._checked.add(str(root))

    def ensure(self, configs: Sequence, store, keep_model=None) -> list[str]:
        """Submit every run of ``configs`` not already in ``store`` and wait for all of them.
        Returns the keys submitted (in ``configs`` order, each once). Raises
        :class:`RunFailed`, naming them, when runs failed for good (after every other run
        has ended, so that those are stored)."""
        jobs: dict[str, Job] = {}
        for cfg, keep in zip(configs, _keep_models(configs, keep_model)):
            job = _job(cfg, store, keep)
            if job.key not in jobs or keep is True:     # a run asked twice: the stricter wish
                jobs[job.key] = job
        todo = [job for job in jobs.values() if not _is_stored(job, store)]
        if not todo:
            return []
        root = Path(store.root)
        if not root.is_absolute():
            raise bad("results store", str(root), "expected an absolute path (the workers read it)")
        self._check_shared(root)
        client = self.client()
        futures = [client.submit(self._compute, job.kind, job.config, str(root), job.keep_model,
                                 job.key, key=f"bertdims-{job.kind}-{job.key}",
                                 retries=self.retries, pure=False) for job in todo]
        client.gather(futures, errors="skip")          # waits for every run, failed or not
        failed = [(job, _error(fut)) for job, fut in zip(todo, futures) if fut.status != "finished"]
        del futures
        if failed:
            raise RunFailed(f"{len(failed)} of {len(todo)} runs failed on the Dask cluster at "
                            f"{self.address} (after {self.retries} retries each): " + "; ".join(
                                f"{job.label()}: {type(err).__name__}: {err}" for job, err in failed))
        return [job.key for job in todo]


def _error(future) -> BaseException:
    try:
        return future.exception()
    except BaseException as err:        # a cancelled future has no exception of its own
        return err


_EXECUTORS: dict[str, DaskExecutor] = {}


def current() -> InProcess | DaskExecutor:
    """The executor the grids use: a :class:`DaskExecutor` of ``$BERTDIMS_SCHEDULER`` when it
    is set (one per address and process), else :class:`InProcess`."""
    address = os.environ.get(SCHEDULER_ENV, "").strip()
    if not address:
        return InProcess()
    if address not in _EXECUTORS:
        _EXECUTORS[address] = DaskExecutor(address)
    return _EXECUTORS[address]


def ensure_runs(configs: Sequence, store, *, keep_model: bool | None | Sequence = None,
                executor: InProcess | DaskExecutor | None = None) -> list[str]:
    """Make sure every run of ``configs`` (``FinetuneConfig`` or ``SparseConfig`` objects) is
    in ``store``, computing the missing ones on the cluster; in process (no cluster, or no
    store) do nothing, so that the caller's loop computes them as before. ``keep_model``: as
    in :func:`bertdims.train.finetuning.finetune`, one value or one per config. Returns the keys
    submitted to the cluster."""
    executor = current() if executor is None else executor
    if store is None or not executor.distributed:
        return []
    return executor.ensure(list(configs), store, keep_model=keep_model)


def _connect(address: str, timeout: float | None = None):
    from distributed import Client
    timeout = CONNECT_SECONDS if timeout is None else timeout
    try:
        return Client(address, timeout=timeout, set_as_default=False)
    except (OSError, ValueError, TypeError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise bad("scheduler", address, f"expected the address of a running Dask scheduler such as "
                  f"tcp://host:8786; none answered within {timeout:g} s ({reason})") from None


def check_scheduler(address: str, timeout: float | None = None) -> str:
    """Connect to the scheduler at ``address`` once (at most ``timeout`` seconds, default
    :data:`CONNECT_SECONDS`) and return the address; a clear :class:`ConfigError` when no
    scheduler answers there."""
    if not isinstance(address, str) or not address.strip():
        raise bad("scheduler", address, "expected a Dask scheduler address such as tcp://host:8786")
    _connect(address.strip(), timeout).close()
    return address.strip()


def visible_gpus() -> int:
    """The number of CUDA devices this process sees (0 without CUDA)."""
    import torch
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@contextlib.contextmanager
def local_cluster(n_workers: int, *, gpus: int | None = None) -> Iterator[str]:
    """Start a Dask cluster of ``n_workers`` worker processes on this machine (one run at a
    time each), yield its scheduler address and close it afterwards.

    With GPUs visible (``gpus``, default :func:`visible_gpus`), one GPU per worker:
    ``dask_cuda.LocalCUDACluster`` when dask-cuda is installed, else workers started with
    their own ``CUDA_VISIBLE_DEVICES``; ``n_workers`` may not exceed the GPUs. Without GPUs,
    a ``distributed.LocalCluster`` whose workers share the cores (``OMP_NUM_THREADS`` each)."""
    check_range("workers", n_workers, 1, None, integer=True)
    gpus = visible_gpus() if gpus is None else gpus
    if gpus and n_workers > gpus:
        raise bad("workers", n_workers, f"expected at most {gpus}: one GPU per worker, and this "
                  f"machine shows {gpus}")
    cpus = os.cpu_count() or 1
    if not gpus and n_workers > cpus:
        raise bad("workers", n_workers, f"expected at most {cpus}: one worker per CPU core, and "
                  f"this machine has {cpus} (use --scheduler for a cluster of several machines)")
    cluster = _gpu_cluster(n_workers) if gpus else _cpu_cluster(n_workers)
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


def _cpu_cluster(n_workers: int):
    from distributed import LocalCluster
    threads = max(1, (os.cpu_count() or 1) // n_workers)
    return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                        dashboard_address=":0", env={"OMP_NUM_THREADS": str(threads)})


def _gpu_cluster(n_workers: int):
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        pass
    else:
        return LocalCUDACluster(n_workers=n_workers, threads_per_worker=1, dashboard_address=":0")
    import logging
    from distributed import Nanny, Scheduler, SpecCluster
    shown = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    devices = [d for d in shown.split(",") if d.strip()] if shown else [str(i) for i in range(n_workers)]
    quiet = logging.WARNING                 # as LocalCluster: the workers' INFO lines stay off the terminal
    workers = {i: {"cls": Nanny, "options": {"nthreads": 1, "silence_logs": quiet,
                                             "env": {"CUDA_VISIBLE_DEVICES": devices[i]}}}
               for i in range(n_workers)}
    return SpecCluster(scheduler={"cls": Scheduler, "options": {"dashboard": False,
                                                                "dashboard_address": ":0"}},
                       workers=workers, silence_logs=quiet)
