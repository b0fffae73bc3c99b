"""Errors the CLI turns into one line on stderr and a meaningful exit status."""

from __future__ import annotations

__all__ = ["EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_REFUSED", "EXIT_INTERRUPTED",
           "RecordioPackError", "UsageError", "RefusedError"]

EXIT_OK = 0
EXIT_FAILED = 1  # the operation failed, or a check found a problem
EXIT_USAGE = 2  # bad arguments (argparse uses 2 as well)
EXIT_REFUSED = 3  # would overwrite the user's data or mix options; rerun with --overwrite if that is meant
EXIT_INTERRUPTED = 130


class RecordioPackError(Exception):
    """An expected failure with a message fit for a user; ``exit_code`` is what the CLI returns."""

    exit_code = EXIT_FAILED


class UsageError(RecordioPackError):
    exit_code = EXIT_USAGE


class RefusedError(RecordioPackError):
    exit_code = EXIT_REFUSED
