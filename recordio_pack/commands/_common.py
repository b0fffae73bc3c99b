"""Shared CLI pieces: --json output, AWS connection flags, human sizes, progress bars."""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any, Callable

from recordio_pack.errors import UsageError

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


class ProgressBar:
    """Renders library progress events with tqdm on stderr (silent with --quiet or --json)."""

    def __init__(self, args: argparse.Namespace, total: float | None, unit: str, desc: str,
                 scale: bool = False, initial: float = 0) -> None:
        """``initial``: work done before this run (resumed), shown in the count but not in the rate."""
        self._bar = None
        if not (getattr(args, "quiet", False) or getattr(args, "json", False)):
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit=unit, desc=desc, unit_scale=scale, unit_divisor=1024 if scale else 1000,
                             dynamic_ncols=True, file=sys.stderr, smoothing=0.1, initial=initial)

    def update(self, amount: float, postfix: str | None = None) -> None:
        if self._bar is not None:
            self._bar.update(amount)
            if postfix:
                self._bar.set_postfix_str(postfix, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
