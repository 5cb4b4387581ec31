"""Run the engine's tasks on a Dask cluster (optional extra: ``pip install 'iqaguard[dask]'``).

``dask_executor(workers=N)`` starts a ``distributed.LocalCluster`` of N processes (one thread and
one torch thread each) and closes it when the run ends; ``dask_executor(scheduler="tcp://…")``
joins a running cluster and never closes it. Either returns an executor with the signature of
``runner.local_executor``: tasks go out, ``(task, TaskResult)`` pairs come back in completion order,
and the driver stays the store's only writer.

What travels: the worker's inputs (plan, dataset items — loaders, not pixels —, output folder,
run id, device) go to every worker once, through a worker plugin that the scheduler also hands to
workers that join or restart later; each worker process builds one
:class:`~iqaguard.evaluation.worker.Worker` from them, so models load once per process. A task
carries only its ids and keys; the worker loads its images itself.

A worker that dies loses only its tasks in flight: the scheduler reruns them elsewhere, or, after
repeated deaths, the driver records them as lost and a rerun computes exactly those cells.
"""
from __future__ import annotations

import hashlib
import logging
import os
import pickle
import re
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

from ..errors import InputError
from .tasks import Task, TaskResult

try:  # the plugin must subclass distributed's; without the extra, dask_executor() explains
    from distributed.diagnostics.plugin import WorkerPlugin as _PluginBase
except ImportError:  # pragma: no cover - exercised only without the extra
    _PluginBase = object

INSTALL_HINT = "pip install 'iqaguard[dask]'"
# The local cluster's workers keep glibc's adaptive malloc: Dask's default MALLOC_TRIM_THRESHOLD_
# (setting it turns off glibc's dynamic mmap threshold) cost 24% more worker CPU on the test grid
# (11.0 s vs 8.9 s, measured), and no dashboard reads the worker profiler (11.2 s vs 10.6 s, one run).
LOCAL_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                "distributed.worker.profile.enabled": False}
_ADDRESS = re.compile(r"^([a-z][a-z0-9+.-]*://)?(\[[0-9a-fA-F:.]+\]|[^\s/:\[\]]+)(:\d{1,5})?$")   # [IPv6] too


def dask_executor(workers: int | None = None, scheduler: str | None = None) -> "DaskExecutor":
    """An executor on ``workers`` local processes or on the cluster of ``scheduler`` (one of them)."""
    if workers is not None and scheduler is not None:
        raise InputError("give either workers (a local Dask cluster) or scheduler (an existing one), not both")
    if workers is None and scheduler is None:
        raise InputError("the Dask executor needs workers=N or scheduler='tcp://host:port'")
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
        raise InputError(f"workers must be a positive integer, got {workers!r}")
    if scheduler is not None and (not isinstance(scheduler, str) or not _ADDRESS.match(scheduler.strip())):
        raise InputError(f"scheduler must be a Dask scheduler address such as tcp://10.0.0.5:8786, got {scheduler!r}")
    _require_distributed()
    return DaskExecutor(workers, scheduler.strip() if scheduler else None)


def _require_distributed() -> None:
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise InputError(f"the Dask executor needs dask.distributed: {INSTALL_HINT}") from None


class DaskExecutor:
    """Callable like ``local_executor(tasks, worker)``; see the module docstring."""

    connect_timeout = "20s"              # to reach an existing scheduler

    def __init__(self, workers: int | None, scheduler: str | None):
        self.workers, self.scheduler = workers, scheduler
        self.lost: list[Task] = []       # tasks of the last call that no worker could finish

    def __repr__(self) -> str:
        where = f"workers={self.workers}" if self.workers else f"scheduler={self.scheduler!r}"
        return f"DaskExecutor({where})"

    def __call__(self, tasks: list[Task], worker) -> Iterator[tuple[Task, TaskResult]]:
        from distributed import as_completed
        from distributed.scheduler import KilledWorker

        self.lost = []
        recipe = pickle.dumps((worker.plan, worker.items, str(Path(worker.out_dir).resolve()),
                               worker.run_id, str(worker.device)))
        key = hashlib.sha256(recipe).hexdigest()[:16]
        name = f"iqaguard-{key}"
        with self._client() as client:
            client.register_plugin(_Setup(key, recipe), name=name)
            pending: dict[Any, Task] = {}
            try:
                for i, task in enumerate(tasks):
                    fut = client.submit(_run_task, key, task, key=f"iqaguard-{key}-{i}", pure=False)
                    pending[fut] = task
                for fut in as_completed(list(pending)):
                    task = pending.pop(fut)
                    if fut.status == "finished":
                        res = fut.result()
                        fut.release()
                        yield task, res
                    elif fut.status == "cancelled" or isinstance(fut.exception(), KilledWorker):
                        self.lost.append(task)   # its cells stay pending: a rerun computes them
                    else:
                        raise fut.exception()    # a failing task stops the run, as in-process
            finally:
                if pending:
                    client.cancel(list(pending))
                try:
                    client.unregister_worker_plugin(name)
                except Exception:  # a worker gone by now has nothing left to free
                    pass
        if self.lost:
            cells = sum(len(t.pending) for t in self.lost)
            warnings.warn(f"{len(self.lost)} tasks ({cells} cells) were lost with workers that died; "
                          f"rerun the same command to compute them")

    @contextmanager
    def _client(self):
        from distributed import Client

        if self.workers is not None:
            with local_cluster(self.workers) as cluster, Client(cluster) as client:
                yield client
            return
        try:
            client = Client(self.scheduler, timeout=self.connect_timeout)
        except (OSError, TimeoutError) as exc:
            raise InputError(f"cannot reach the Dask scheduler at {self.scheduler!r}: {exc}") from None
        try:
            yield client
        finally:
            client.close()


@contextmanager
def local_cluster(n: int):
    """The ``LocalCluster`` of ``workers=n``: n processes (torch and the Worker's caches are per
    process) × 1 thread, on 127.0.0.1, no dashboard, ``LOCAL_CONFIG``; closed on exit. Dask's
    nannies set their workers' variables (OMP_NUM_THREADS=1, …) in this process's environment
    too; they are restored on exit."""
    import dask
    from distributed import LocalCluster

    saved = dict(os.environ)
    try:
        with dask.config.set(LOCAL_CONFIG), \
                LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                             dashboard_address=None, silence_logs=logging.ERROR) as cluster:
            yield cluster
    finally:
        os.environ.clear()
        os.environ.update(saved)


# -- on the worker ----------------------------------------------------------------------------

_RECIPES: dict[str, bytes] = {}          # plugin key -> pickled Worker inputs
_WORKERS: dict[str, Any] = {}            # plugin key -> Worker (at most one per process)
_THREADS: list[int] = [1]                # torch threads for this process's tasks
_LOCK = threading.Lock()                 # one task at a time per process: torch's seed is global


class _Setup(_PluginBase):
    """Hands a run's Worker inputs to every worker, including those that join or restart later."""

    def __init__(self, key: str, recipe: bytes):
        self.key, self.recipe = key, recipe

    def setup(self, worker) -> None:
        _RECIPES[self.key] = self.recipe
        _THREADS[0] = max(1, int(getattr(worker.state, "nthreads", 1) or 1))

    def teardown(self, worker) -> None:
        _RECIPES.pop(self.key, None)
        _WORKERS.pop(self.key, None)


def _run_task(key: str, task: Task) -> TaskResult:
    """Execute one task with this process's Worker for the run ``key`` (built on first use)."""
    with _LOCK:
        if torch.get_num_threads() != _THREADS[0]:
            torch.set_num_threads(_THREADS[0])
        w = _WORKERS.get(key)
        if w is None:
            w = _build_worker(key)
        return w.run(task)


def _build_worker(key: str):
    from .worker import Worker

    if key not in _RECIPES:
        raise RuntimeError(f"iqaguard run {key} is not set up on this worker (plugin missing)")
    plan, items, out_dir, run_id, device = pickle.loads(_RECIPES[key])
    if not Path(out_dir).is_dir():
        raise InputError(f"output folder {out_dir!r} is not visible on Dask worker; "
                         f"--out must be on a file system the driver and every worker share")
    _WORKERS.clear()                      # a new run: free the previous run's models
    _WORKERS[key] = Worker(plan, items, out_dir, run_id, device)
    return _WORKERS[key]
