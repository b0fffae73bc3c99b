"""Errors the CLI turns into one line on stderr and a meaningful exit status."""

from __future__ import annotations

__all__ = ["EXIT_FAILED", "EXIT_USAGE", "EXIT_REFUSED", "EXIT_INTERRUPTED", "EXIT_TERMINATED",
           "RecordioPackError", "UsageError", "RefusedError", "Terminated", "describe_os_error"]

EXIT_FAILED = 1  # the operation failed, or a check found a problem
EXIT_USAGE = 2  # bad arguments (argparse uses 2 as well)
EXIT_REFUSED = 3  # would overwrite the user's data or mix options; rerun with --overwrite if that is meant
EXIT_INTERRUPTED = 130  # SIGINT (Ctrl-C): 128 + 2, as shells report it
EXIT_TERMINATED = 143  # SIGTERM: 128 + 15


class RecordioPackError(Exception):
    """An expected failure with a message fit for a user; ``exit_code`` is what the CLI returns."""

    exit_code = EXIT_FAILED


class UsageError(RecordioPackError):
    exit_code = EXIT_USAGE


class RefusedError(RecordioPackError):
    exit_code = EXIT_REFUSED


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so it unwinds exactly like Ctrl-C (workers stopped, temporaries removed)."""


def describe_os_error(error: OSError) -> str:
    """One line for an I/O error: the file, what went wrong, and for a full disk what to do."""
    import errno

    where = f"{error.filename}: " if error.filename else ""
    text = error.strerror or str(error)
    if error.errno == errno.ENOSPC:
        text += " (free some space, then rerun the same command to resume)"
    elif error.errno in (errno.EACCES, errno.EPERM):
        text += " (check the file's permissions)"
    return f"{where}{text}"
