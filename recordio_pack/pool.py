"""A supervised process pool: each worker runs whole tasks; the parent watches every child.

A task that raises fails the run with the worker's formatted traceback; a worker that dies (OOM kill,
segfault, SIGKILL) fails the run naming the task it held; nothing waits forever; every child is joined
before ``run_tasks`` returns.  Workers exit on their own when the parent disappears.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import traceback
from collections.abc import Callable, Iterable, Sequence
from multiprocessing.connection import wait
from typing import Any

__all__ = ["TaskFailed", "WorkerDied", "run_tasks"]

POLL_S = 0.5


class TaskFailed(Exception):
    """A task raised: ``error`` is the exception itself when it could travel between processes."""

    def __init__(self, task_name: str, detail: str, error: BaseException | None = None) -> None:
        super().__init__(f"{task_name} failed:\n{detail}")
        self.task_name = task_name
        self.detail = detail
        self.error = error


class WorkerDied(Exception):
    pass


def _parent_alive() -> bool:
    parent = multiprocessing.parent_process()
    return parent is None or parent.is_alive()


class _Stopped(Exception):
    """The worker was told to stop (SIGTERM) or its parent is gone: it exits quietly, having cleaned up."""


def _worker_main(function: Callable[..., Any], connection: Any) -> None:
    """Receive task numbers and tasks, send ("event", x) / ("done", result) / ("error", details) back.

    Sends are synchronous (no feeder thread), so nothing the parent needs is lost if this process is killed.
    SIGTERM (the parent stopping the pool) and a vanished parent end the task at the next ``should_stop`` poll,
    so the task removes its temporaries; the worker then exits without a word, since nobody is left to read it.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what an interrupt means
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked by worker_signals until now: discarded
    terminated = False
    busy = False

    def on_term(signum: int, frame: Any) -> None:
        nonlocal terminated
        terminated = True
        if not busy:  # waiting for work: nothing to clean up, and recv() would resume waiting
            os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    checks = 0

    def should_stop() -> bool:
        nonlocal checks
        checks += 1
        return terminated or (checks % 16 == 0 and not _parent_alive())

    def send(message: tuple[str, Any]) -> None:
        try:
            connection.send(message)
        except (BrokenPipeError, ConnectionResetError, EOFError):
            raise _Stopped() from None

    while not terminated:
        try:
            task = connection.recv()
        except (EOFError, ConnectionResetError, InterruptedError):  # the parent is gone
            return
        if task is None:
            return
        busy = True
        try:
            result = function(task, lambda event: send(("event", event)), should_stop)
        except BaseException as error:  # reported to the parent, which fails the run
            if isinstance(error, _Stopped) or should_stop() or not _parent_alive():
                return
            detail = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            try:
                send(("error", (type(error).__name__, str(error), detail, _picklable(error))))
            except _Stopped:
                pass
            return
        try:
            send(("done", result))
        except _Stopped:
            return
        busy = False


def _picklable(error: BaseException) -> BaseException | None:
    """``error`` itself when it survives pickling (typed library errors do), so the parent can word it."""
    import pickle

    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return None
    return error


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "is gone"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def run_tasks(function: Callable[..., Any], tasks: Sequence[Any], workers: int,
              on_event: Callable[[Any], None], on_done: Callable[[Any], None],
              task_name: Callable[[Any], str] = str, preload: Iterable[str] = ()) -> None:
    """Run ``function(task, emit, should_stop)`` for every task on ``workers`` processes.

    ``on_event`` gets what tasks emit, ``on_done`` each result, both in the parent as they arrive.  Raises
    TaskFailed or WorkerDied (after stopping and joining every worker) on the first failure.
    """
    if not tasks:
        return
    workers = max(1, min(workers, len(tasks)))
    if workers == 1:
        for task in tasks:
            on_done(function(task, on_event, None))
        return
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["recordio_pack.worker_signals", *preload])
    pending = list(enumerate(tasks))[::-1]  # popped from the end: task order
    connections, processes = [], []
    for worker in range(workers):
        parent_end, child_end = context.Pipe()
        process = context.Process(target=_worker_main, args=(function, child_end),
                                  name=f"recordio-pack-worker-{worker}", daemon=True)
        process.start()
        child_end.close()
        connections.append(parent_end)
        processes.append(process)
    holding: dict[int, int] = {}  # worker -> task number it is running

    def hand_out(worker: int) -> None:
        if pending:
            number, task = pending.pop()
            holding[worker] = number
            connections[worker].send(task)
        else:
            holding.pop(worker, None)
            connections[worker].send(None)

    remaining = len(tasks)

    def drain(worker: int) -> None:
        """Handle every message waiting from ``worker``."""
        nonlocal remaining
        connection = connections[worker]
        while connection.poll():
            try:
                kind, payload = connection.recv()
            except EOFError:
                return
            if kind == "event":
                on_event(payload)
            elif kind == "done":
                remaining -= 1
                on_done(payload)
                hand_out(worker)
            else:
                name, text, detail, error = payload
                raise TaskFailed(task_name(tasks[holding[worker]]), text if name == "ImageFailed" else detail, error)

    try:
        for worker in range(workers):
            hand_out(worker)
        while remaining:
            # Only busy workers: a finished one's pipe (EOF) and sentinel stay ready, and waiting on them would
            # spin this loop on a core while the last shards are packed.
            busy = sorted(holding)
            wait([connections[worker] for worker in busy] + [processes[worker].sentinel for worker in busy],
                 timeout=POLL_S)
            for worker in busy:
                drain(worker)
            for worker, process in enumerate(processes):
                if worker in holding and not process.is_alive():
                    drain(worker)
                    if worker in holding:
                        what = task_name(tasks[holding[worker]])
                        raise WorkerDied(f"worker {process.pid} {_describe_exit(process.exitcode)} while packing {what}")
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(10)
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGKILL)
                process.join()
        for connection in connections:
            connection.close()
