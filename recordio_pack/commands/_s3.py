"""CLI pieces shared by ``backup`` and ``restore``: transfer flags, locations and flag hints for AWS errors.

Imported by the command modules at load time, so it imports only argparse and ``_common`` at its top.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from recordio_pack.commands import _common
from recordio_pack.errors import UsageError


def parse_bandwidth(text: str) -> int:
    """``"100MB/s"`` -> 100000000 bytes per second (the ``/s`` is optional)."""
    try:
        return _common.parse_size(text[:-2] if text.lower().endswith("/s") else text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r} (try 100MB/s, 1GiB/s or 50000000 bytes per "
                                         "second; it must be positive)") from None


def files_text(data_files: int, manifests: int) -> str:
    """``"5 data files + 1 manifest"``: the one way backup and restore count what they moved."""
    return (f"{data_files} data file{'s' if data_files != 1 else ''} + "
            f"{manifests} manifest{'s' if manifests != 1 else ''}")


def add_transfer_options(parser: argparse.ArgumentParser, *, upload: bool = False) -> None:
    """The transfer flags; ``upload`` adds ``--multipart-threshold`` (backup only)."""
    group = parser.add_argument_group("transfer")
    group.add_argument("--concurrency", type=_common.positive_int, default=10,
                       help="parallel S3 requests (default 10)")
    group.add_argument("--max-bandwidth", type=parse_bandwidth, metavar="RATE",
                       help="cap on bytes per second over all requests, e.g. 100MB/s or 1GiB/s (default: none)")
    group.add_argument("--part-size", type=_common.parse_size, default="16MiB", metavar="SIZE",
                       help="smallest multipart part and ranged GET (default 16MiB, at least 5MiB); grown "
                            "automatically so the largest file needs at most 10,000 parts")
    if upload:
        group.add_argument("--multipart-threshold", type=_common.parse_size, default="64MiB", metavar="SIZE",
                           help="files up to this size go up in one request, bigger ones in parts "
                                "(default 64MiB, 5MiB-5GiB)")


def transfer_options(args: argparse.Namespace) -> Any:
    from recordio_pack.aws.s3 import DEFAULT_MULTIPART_THRESHOLD, TransferOptions

    try:
        return TransferOptions(part_size=args.part_size, concurrency=args.concurrency,
                               max_bandwidth=args.max_bandwidth,
                               multipart_threshold=getattr(args, "multipart_threshold", DEFAULT_MULTIPART_THRESHOLD))
    except ValueError as error:
        raise UsageError(str(error)) from None


def location(text: str) -> Any:
    from recordio_pack.aws.s3 import parse_s3_uri

    try:
        return parse_s3_uri(text)
    except ValueError as error:
        raise UsageError(str(error)) from None


# the flag that sets each connection setting an AwsError may name as its likely fix
_SETTING_FLAGS = {"region": "--region", "endpoint": "--endpoint-url or --region", "concurrency": "--concurrency"}


@contextmanager
def flag_hints() -> Iterator[None]:
    """Re-raise an AwsError whose fix is a connection setting with the flag that sets it."""
    from recordio_pack.aws.session import AwsError

    try:
        yield
    except AwsError as error:
        flag = _SETTING_FLAGS.get(error.setting or "")
        if flag is None:
            raise
        raise AwsError(f"{error}; see {flag}", error.setting) from error


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count} B"
