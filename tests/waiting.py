"""Waiting on an event in tests: poll a condition until it holds or a deadline passes, never a fixed sleep."""

from __future__ import annotations

import time
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
