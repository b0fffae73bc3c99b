"""The one progress protocol of the library, in the shape of s3transfer's subscribers.

Library functions that report progress take a ``progress: Progress`` (default ``NullProgress()``) and call
``on_queued`` when a piece of work starts, ``on_progress`` as it advances and ``on_done`` when it ends; notes
the user should read go to ``on_note``.  Only the CLI renders these events (``commands._common.ProgressBar``);
what is not progress (retries, fallbacks, skipped work) goes to ``logging``.

Events name their work (``task``) and state their unit, so one renderer draws them all.  Methods may be
called from worker threads: implementations that keep state must lock.  This module imports only the
standard library, so any module may use it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal

__all__ = ["Unit", "Queued", "Advanced", "Polled", "Retrying", "Done", "Progress", "NullProgress",
           "RecordingProgress", "Task", "start_task"]

Unit = Literal["images", "bytes", "records", "files", "classes", "percent", "polls"]


@dataclass(frozen=True)
class Queued:
    """Work named ``task`` starts: ``total`` units of ``unit`` to do (None: not known); ``done`` of them were
    done before this run (resumed: part of the count, not of the rate)."""

    task: str
    unit: Unit
    total: float | None = None
    done: float = 0
    status: str = ""  # short text shown beside the count, e.g. "3 already done"


@dataclass(frozen=True)
class Advanced:
    """``amount`` more units of ``task`` are done (negative when retried work rewinds). ``status``: short text
    for the renderer; ``bytes_in``/``bytes_out``: bytes read and written for these units (pack)."""

    task: str
    amount: float = 0
    status: str = ""
    bytes_in: int = 0
    bytes_out: int = 0


@dataclass(frozen=True)
class Polled(Advanced):
    """One poll of a wait on an AWS resource (``task`` is its id): ``state`` as AWS gives it, ``percent`` 0..100
    where AWS reports one (snapshots; else None), ``elapsed`` seconds since the wait began."""

    state: str = ""
    percent: float | None = None
    elapsed: float = 0.0
    region: str | None = None


@dataclass(frozen=True)
class Retrying(Advanced):
    """Attempt ``attempt`` at ``task`` failed with ``error``; the next starts in ``delay`` seconds."""

    attempt: int = 0
    delay: float = 0.0
    error: str = ""


@dataclass(frozen=True)
class Done:
    """Work named ``task`` ended (whole, or given up: the result says which)."""

    task: str


class Progress:
    """Receives progress events; every method does nothing unless overridden (s3transfer's BaseSubscriber)."""

    def on_queued(self, event: Queued) -> None:
        """Work starts."""

    def on_progress(self, event: Advanced) -> None:
        """Work advanced."""

    def on_done(self, event: Done) -> None:
        """Work ended."""

    def on_note(self, message: str) -> None:
        """Something the user should read while the work goes on (e.g. an unfinished upload aborted)."""


class NullProgress(Progress):
    """Progress that goes nowhere: the default of every library function."""


@dataclass(frozen=True)
class Task:
    """``progress`` bound to one task, for the code that does its work: ``advance(amount)`` and ``done()``."""

    progress: Progress
    name: str

    def advance(self, amount: float, status: str = "") -> None:
        self.progress.on_progress(Advanced(self.name, amount, status))

    def done(self) -> None:
        self.progress.on_done(Done(self.name))


def start_task(progress: Progress, name: str, unit: Unit, total: float | None = None, done: float = 0,
               status: str = "") -> Task:
    """Announce work ``name`` (``on_queued``) and return it bound, to report its advance."""
    progress.on_queued(Queued(name, unit, total, done, status))
    return Task(progress, name)


class RecordingProgress(Progress):
    """Keeps every event in ``events`` (and notes in ``notes``), in order: for tests and scripts."""

    def __init__(self) -> None:
        self.events: list[Queued | Advanced | Done] = []
        self.notes: list[str] = []
        self._lock = threading.Lock()

    def _keep(self, event: Queued | Advanced | Done) -> None:
        with self._lock:
            self.events.append(event)

    def on_queued(self, event: Queued) -> None:
        self._keep(event)

    def on_progress(self, event: Advanced) -> None:
        self._keep(event)

    def on_done(self, event: Done) -> None:
        self._keep(event)

    def on_note(self, message: str) -> None:
        with self._lock:
            self.notes.append(message)

    def of(self, kind: type) -> list:
        """The events that are instances of ``kind`` (e.g. ``Polled``), in order."""
        return [event for event in self.events if isinstance(event, kind)]

    def amount(self, task: str | None = None) -> float:
        """Sum of the ``Advanced`` amounts (of ``task`` only, when given)."""
        return sum(event.amount for event in self.of(Advanced) if task is None or event.task == task)
