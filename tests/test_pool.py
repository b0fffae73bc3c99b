"""Supervised workers: a task that raises or a worker that dies fails the run loudly, naming the shard."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest

from imagegen import jpeg
from recordio_pack.errors import RecordioPackError
from recordio_pack.options import PackOptions
from recordio_pack.pack import pack_entries
from recordio_pack.pool import TaskFailed, WorkerDied, run_tasks
from recordio_pack.sources import Entry, FolderSource


@dataclass(frozen=True)
class DyingSource(FolderSource):
    """Kills its own process (as the OOM killer would) when asked for ``fatal``."""

    fatal: str = ""

    def read(self, entry: Entry) -> bytes:
        if entry.path == self.fatal:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().read(entry)


def _square(task: int, emit, should_stop) -> int:
    if task == 3:
        raise ArithmeticError("task three is broken")
    emit(task)
    return task * task


def test_results_and_events_arrive_and_a_raising_task_fails_the_run() -> None:
    done, events = [], []
    run_tasks(_square, [0, 1, 2], 2, events.append, done.append)
    assert sorted(done) == [0, 1, 4] and sorted(events) == [0, 1, 2]
    with pytest.raises(TaskFailed) as failure:
        run_tasks(_square, [0, 1, 2, 3, 4], 2, lambda event: None, lambda result: None,
                  task_name=lambda task: f"task {task}")
    assert failure.value.task_name == "task 3"
    assert "ArithmeticError: task three is broken" in failure.value.detail  # the worker's traceback


def test_a_killed_worker_fails_the_pack_naming_its_shard(tmp_path: Path) -> None:
    for number in range(8):
        (tmp_path / f"{number}.jpg").write_bytes(jpeg(32, 32, seed=number))
    entries = [Entry(number, (0.0,), f"{number}.jpg") for number in range(8)]
    source = DyingSource(str(tmp_path), fatal="5.jpg")
    with pytest.raises(RecordioPackError, match=r"killed by SIGKILL while packing shard out-00002-of-00004\.rec"):
        pack_entries(entries, source, tmp_path / "out", "out", PackOptions(num_shards=4, workers=2))
    assert not (tmp_path / "out" / "out.manifest.json").exists()
    assert not list((tmp_path / "out").glob("out-00002*"))  # no half shard under a final name


def test_worker_died_is_raised_by_the_pool_directly() -> None:
    with pytest.raises(WorkerDied, match="killed by SIGKILL"):
        run_tasks(_suicide, [1, 2], 2, lambda event: None, lambda result: None)


def _suicide(task: int, emit, should_stop) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _nap(task: float, emit, should_stop) -> float:
    import time

    time.sleep(task)
    return task


def test_the_parent_sleeps_while_the_last_task_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that has finished (pipe at EOF, process gone) must not wake the parent's wait again and again."""
    from recordio_pack import pool

    calls = []
    real_wait = pool.wait

    def counting_wait(objects, timeout=None):
        calls.append(len(objects))
        return real_wait(objects, timeout)

    monkeypatch.setattr(pool, "wait", counting_wait)
    done: list[float] = []
    run_tasks(_nap, [0.0, 1.5], 2, lambda event: None, done.append)
    assert sorted(done) == [0.0, 1.5]
    assert len(calls) < 20, f"the parent woke {len(calls)} times in 1.5 s"  # spinning made it thousands
