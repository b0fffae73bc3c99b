"""A supervised process pool: each worker runs whole tasks; the parent watches every child.

A task that raises fails the run with the worker's formatted traceback; a worker that dies (OOM kill,
segfault, SIGKILL) fails the run naming the task it held; nothing waits forever; every child is joined
before ``run_tasks`` returns.  Workers exit on their own when the parent disappears.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

__all__ = ["TaskFailed", "WorkerDied", "run_tasks"]

POLL_S = 0.5


class TaskFailed(Exception):
    def __init__(self, task_name: str, detail: str) -> None:
        super().__init__(f"{task_name} failed:\n{detail}")
        self.task_name = task_name
        self.detail = detail


class WorkerDied(Exception):
    pass


@dataclass(frozen=True)
class _Message:
    kind: str  # "start", "event", "done", "error"
    worker: int
    task: int
    payload: Any = None


def _parent_alive() -> bool:
    parent = multiprocessing.parent_process()
    return parent is None or parent.is_alive()


def _worker_main(function: Callable[..., Any], tasks: Any, messages: Any, worker: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what an interrupt means
    checks = 0

    def should_stop() -> bool:
        nonlocal checks
        checks += 1
        return checks % 16 == 0 and not _parent_alive()

    while True:
        item = tasks.get()
        if item is None:
            return
        number, task = item
        messages.put(_Message("start", worker, number))
        try:
            result = function(task, lambda event: messages.put(_Message("event", worker, number, event)),
                              should_stop)
        except BaseException as error:  # reported to the parent, which fails the run
            detail = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            messages.put(_Message("error", worker, number, (type(error).__name__, str(error), detail)))
            return
        messages.put(_Message("done", worker, number, result))


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
    context.set_forkserver_preload(list(preload))
    task_queue, messages = context.Queue(), context.Queue()
    for number, task in enumerate(tasks):
        task_queue.put((number, task))
    for _ in range(workers):
        task_queue.put(None)
    processes = [context.Process(target=_worker_main, args=(function, task_queue, messages, worker),
                                 name=f"recordio-pack-worker-{worker}", daemon=True)
                 for worker in range(workers)]
    for process in processes:
        process.start()
    holding: dict[int, int] = {}  # worker -> task number
    remaining = len(tasks)
    try:
        while remaining:
            try:
                message: _Message = messages.get(timeout=POLL_S)
            except queue.Empty:
                for worker, process in enumerate(processes):
                    if not process.is_alive() and (worker in holding or process.exitcode not in (0, None)):
                        held = holding.get(worker)
                        what = f"while packing {task_name(tasks[held])}" if held is not None else ""
                        raise WorkerDied(f"worker {process.pid} {_describe_exit(process.exitcode)} {what}".strip())
                if all(not process.is_alive() for process in processes):
                    raise WorkerDied("all workers exited with tasks still unfinished")
                continue
            if message.kind == "start":
                holding[message.worker] = message.task
            elif message.kind == "event":
                on_event(message.payload)
            elif message.kind == "done":
                holding.pop(message.worker, None)
                remaining -= 1
                on_done(message.payload)
            elif message.kind == "error":
                name, text, detail = message.payload
                raise TaskFailed(task_name(tasks[message.task]), detail if name not in ("ImageFailed",) else text)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(10)
            if process.is_alive():
                os.kill(process.pid, signal.SIGKILL)
                process.join()
        task_queue.close()
        messages.close()
        task_queue.cancel_join_thread()
        messages.cancel_join_thread()
