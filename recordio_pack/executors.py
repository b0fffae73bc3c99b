"""Where tasks run: this machine's supervised process pool, or a Ray cluster.

An executor runs ``function(task, emit, should_stop)`` for every task and hands each result to ``on_done`` in
this process as it arrives; a task that raises fails the run with ``pool.TaskFailed`` (the task's own exception
in ``error`` when it could travel), a worker that dies for good with ``pool.WorkerDied``.  Nothing here knows
what a task is: pack hands shards (or chunks of them) to whichever executor it is given.

``LocalPool`` is ``pool.run_tasks`` (progress events stream from the workers).  ``RayExecutor`` submits one
Ray task per task (Ray retries a task whose worker process died, ``max_retries`` times) and streams results
back as tasks finish; its tasks emit no progress events (``streams_events`` is False), so callers count
progress from results.  Ray is an optional dependency (``pip install 'recordio-pack[ray]'``), imported only
when a RayExecutor runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from recordio_pack.errors import UsageError
from recordio_pack.pool import TaskFailed, WorkerDied, run_tasks

__all__ = ["Executor", "LocalPool", "RayExecutor", "RayUnavailable"]

RAY_POLL_S = 0.5


class Executor(Protocol):
    @property
    def streams_events(self) -> bool:
        """Whether tasks' progress events reach ``on_event`` while they run."""

    @property
    def chunk_workers(self) -> int:
        """How many workers may share one shard, prepared in chunks that this process writes (1: whole shards
        only, each written where its task runs)."""

    def run(self, function: Callable[..., Any], tasks: Sequence[Any], on_event: Callable[[Any], None],
            on_done: Callable[[Any], None], task_name: Callable[[Any], str] = str,
            preload: Iterable[str] = ()) -> None: ...


@dataclass(frozen=True)
class LocalPool:
    """``workers`` processes on this machine (1: in this process)."""

    workers: int
    streams_events: bool = True

    @property
    def chunk_workers(self) -> int:
        return self.workers

    def run(self, function: Callable[..., Any], tasks: Sequence[Any], on_event: Callable[[Any], None],
            on_done: Callable[[Any], None], task_name: Callable[[Any], str] = str,
            preload: Iterable[str] = ()) -> None:
        run_tasks(function, tasks, self.workers, on_event, on_done, task_name=task_name, preload=preload)


class RayUnavailable(UsageError):
    """``--engine ray`` without Ray installed, or no cluster at the address."""


def _run_on_ray(function: Callable[..., Any], task: Any) -> Any:
    return function(task, None, None)


@dataclass(frozen=True)
class RayExecutor:
    """One Ray task per task on the cluster at ``address``: "auto" (the running cluster), "local" (start one in
    this process, ``num_cpus`` CPUs, on 127.0.0.1), or HOST:PORT.  ``cpus_per_task`` is each task's resource
    request."""

    address: str = "auto"
    max_retries: int = 3
    cpus_per_task: float = 1.0
    num_cpus: int | None = None  # for address="local"
    streams_events: bool = False
    chunk_workers: int = 1  # each shard is one task, written on the node that runs it

    def _connect(self) -> tuple[Any, bool]:
        try:
            import ray
        except ImportError:
            raise RayUnavailable("--engine ray needs Ray: pip install 'recordio-pack[ray]'") from None
        if ray.is_initialized():
            return ray, False
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no report to Ray's servers from a pack job
        settings: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        try:
            if self.address == "local":
                ray.init(address="local", num_cpus=self.num_cpus, _node_ip_address="127.0.0.1", **settings)
            else:
                ray.init(address=self.address, **settings)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise RayUnavailable(f"no Ray cluster at {self.address!r}: {error}") from None
        return ray, True

    def run(self, function: Callable[..., Any], tasks: Sequence[Any], on_event: Callable[[Any], None],
            on_done: Callable[[Any], None], task_name: Callable[[Any], str] = str,
            preload: Iterable[str] = ()) -> None:
        if not tasks:
            return
        ray, started_here = self._connect()
        from ray import exceptions as ray_errors

        remote = ray.remote(max_retries=self.max_retries, num_cpus=self.cpus_per_task)(_run_on_ray)
        pending = {remote.remote(function, task): number for number, task in enumerate(tasks)}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=RAY_POLL_S)
                for reference in done:
                    number = pending.pop(reference)
                    try:
                        result = ray.get(reference)
                    except ray_errors.RayTaskError as failure:
                        cause = failure.cause if isinstance(failure.cause, BaseException) else None
                        text = str(cause) if cause is not None else str(failure)
                        raise TaskFailed(task_name(tasks[number]), text, cause) from None
                    except (ray_errors.WorkerCrashedError, ray_errors.NodeDiedError,
                            ray_errors.ObjectLostError) as death:
                        raise WorkerDied(f"{task_name(tasks[number])}: its Ray worker died {self.max_retries + 1} "
                                         f"time(s) ({type(death).__name__})") from None
                    except ray_errors.RayError as failure:  # out of memory or disk, unschedulable, cancelled, ...
                        first = (str(failure).strip().splitlines() or [""])[0]
                        raise WorkerDied(f"{task_name(tasks[number])}: Ray could not run it ({type(failure).__name__}"
                                         f"{': ' + first if first else ''})") from None
                    on_done(result)
        finally:
            for reference in pending:
                ray.cancel(reference, force=True)
            if started_here:
                ray.shutdown()
