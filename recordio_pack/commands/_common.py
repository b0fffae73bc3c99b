"""Shared CLI pieces: --json output, AWS connection flags, human sizes, progress bars."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable
from typing import Any

from recordio_pack.errors import UsageError
from recordio_pack.progress import Advanced, Done, Progress, Queued, Unit

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]i?[bB]?|[bB])?\s*$")
_UNITS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4,
          "ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4}


def parse_size(text: str) -> int:
    """``"64MiB"`` -> 67108864; ``"1G"``/``"1GB"`` are powers of 1000, ``"1GiB"`` of 1024; plain numbers are bytes."""
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 512MiB, 2GB or 1048576)")
    unit = (match.group(2) or "").lower().rstrip("b")
    value = int(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number: {text!r}")
    return value


def ranged(cast: Callable[[str], Any], low: float | None = None, high: float | None = None) -> Callable[[str], Any]:
    """An argparse type: ``cast(text)``, refused outside [low, high]."""
    def parse(text: str) -> Any:
        value = cast(text)
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"between {low} and {high}" if low is not None and high is not None else (
                f"{low} or more" if low is not None else f"{high} or less")
            raise argparse.ArgumentTypeError(f"must be {bounds}: {text!r}")
        return value
    return parse


def key_value(text: str) -> tuple[str, str]:
    """An argparse type for tags: ``KEY=VALUE`` -> (KEY, VALUE)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"want KEY=VALUE, not {text!r}")
    return key, value


def add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout (for scripts)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def add_aws_options(parser: argparse.ArgumentParser) -> None:
    """The AWS CLI's connection flags; the usual AWS_* environment variables apply as well."""
    group = parser.add_argument_group("AWS connection")
    group.add_argument("--profile", help="named profile from ~/.aws/config")
    group.add_argument("--region", help="AWS region (default: profile or AWS_REGION / AWS_DEFAULT_REGION)")
    group.add_argument("--endpoint-url", help="send requests here instead of AWS (e.g. a local S3 or moto server)")


def emit(args: argparse.Namespace, result: dict[str, Any], text: str) -> None:
    """Print ``result`` as JSON with --json, else the human ``text``."""
    if getattr(args, "json", False):
        json.dump(result, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    elif text:
        print(text)


def require(condition: bool, message: str) -> None:
    if not condition:
        raise UsageError(message)


_TQDM_UNITS: dict[Unit, str] = {"images": "img", "bytes": "B", "records": "rec", "files": "file", "classes": "class",
                                 "percent": "%", "polls": "poll"}


class _Bar:
    """One tqdm bar on stderr, with the bytes read and written reported since it opened (for the rates)."""

    def __init__(self, event: Queued) -> None:
        from tqdm import tqdm

        scale = event.unit == "bytes"
        self.tqdm = tqdm(total=event.total, unit=_TQDM_UNITS[event.unit], desc=event.task, unit_scale=scale,
                         unit_divisor=1024 if scale else 1000, dynamic_ncols=True, file=sys.stderr, smoothing=0.1,
                         initial=event.done)
        self.started, self.bytes_in, self.bytes_out = time.monotonic(), 0, 0
        if event.status:
            self.tqdm.set_postfix_str(event.status, refresh=False)

    def rates(self, bytes_in: int, bytes_out: int) -> str:
        """"in X MiB/s, out Y MiB/s": averages since the bar opened (resumed work, counted before, is not in them)."""
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out
        elapsed = max(time.monotonic() - self.started, 1e-6)
        return f"in {self.bytes_in / 2**20 / elapsed:.1f} MiB/s, out {self.bytes_out / 2**20 / elapsed:.1f} MiB/s"


class ProgressBar(Progress):
    """The one renderer of library progress (``recordio_pack.progress.Progress``): tqdm bars on stderr, notes
    above them; silent with --quiet or --json. By default one bar at a time (a new task replaces it, every
    event feeds it); ``per_task``: one bar per task (snapshots and their copies); ``label``: one bar under that
    name for every task, each event's status prefixed by its task (replicate's "waiting"); ``skip_empty``: no
    bar for a task with nothing to do. Events may come from worker threads. tqdm is imported on the first
    bar only, so start-up stays light."""

    def __init__(self, args: argparse.Namespace, *, per_task: bool = False, label: str | None = None,
                 skip_empty: bool = False) -> None:
        import threading

        self._silent = bool(getattr(args, "quiet", False) or getattr(args, "json", False))
        self._per_task, self._label, self._skip_empty = per_task, label, skip_empty
        self._bars: dict[str, _Bar] = {}
        self._lock = threading.Lock()

    def on_queued(self, event: Queued) -> None:
        with self._lock:
            if self._silent or (self._label is not None and self._bars):
                return
            if not self._per_task:
                self._close_all()
            if self._skip_empty and event.total == 0:
                return
            if self._label is not None:
                from dataclasses import replace

                event = replace(event, task=self._label, status="")
            self._bars[event.task] = _Bar(event)

    def on_progress(self, event: Advanced) -> None:
        with self._lock:
            bar = self._bar_for(event.task)
            if bar is None:
                return
            status = event.status
            if event.bytes_in or event.bytes_out:
                status = bar.rates(event.bytes_in, event.bytes_out)
            elif self._label is not None:
                status = f"{event.task} {status}".strip()
            bar.tqdm.update(event.amount)
            if status:
                bar.tqdm.set_postfix_str(status, refresh=False)

    def on_done(self, event: Done) -> None:
        with self._lock:
            if self._per_task and event.task in self._bars:
                self._bars.pop(event.task).tqdm.close()

    def on_note(self, message: str) -> None:
        if self._silent:
            return
        from tqdm import tqdm

        with self._lock:
            tqdm.write(message, file=sys.stderr)  # above the bars, which are redrawn below

    def _bar_for(self, task: str) -> _Bar | None:
        if self._per_task:
            return self._bars.get(task)
        return next(iter(self._bars.values()), None)

    def _close_all(self) -> None:
        for bar in self._bars.values():
            bar.tqdm.close()
        self._bars.clear()

    def close(self) -> None:
        with self._lock:
            self._close_all()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
