"""Waiting on an event in tests: poll a condition until it holds or a deadline passes, never a fixed sleep."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, interval: float = 0.02,
               message: str | Callable[[], str] = "") -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns something true, and return that; fail the
    test with ``message`` (a string, or a function giving one at the deadline) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"not within {timeout:g} s: {text}" if text else f"not within {timeout:g} s")
        time.sleep(interval)


def journal_shards(journal: Path) -> int:
    """Finished shards a pack journal (NAME.pack-state.json) records: 0 while it is absent or being replaced."""
    try:
        return len(json.loads(journal.read_text())["shards"])
    except (OSError, ValueError, KeyError):
        return 0
