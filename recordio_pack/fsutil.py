"""Filesystem utilities: the one atomic-write helper and directory fsync.

``atomic_output(path)`` writes ``path`` through a temporary file in the same folder, named
``NAME.XXXXXXXX.tmp`` (``XXXXXXXX``: 8 characters from ``tempfile.mkstemp``, ``[a-z0-9_]``), so two writers of
one target never share a temporary, and a cleanup that globs ``NAME.*.tmp`` (or ``*.tmp``) finds what a kill
left. On success the file is (optionally) fsynced, renamed over ``path`` and its folder fsynced; on any
failure the temporary is removed and ``path`` keeps its previous content. ``temporaries_of(path)`` lists the
leftovers of this helper for ``path``.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal, TextIO, overload

__all__ = ["TEMP_SUFFIX", "atomic_output", "fsync_dir", "temporaries_of", "is_temporary_of"]

TEMP_SUFFIX = ".tmp"
_RANDOM_PART = re.compile(r"\.[a-z0-9_]{8}" + re.escape(TEMP_SUFFIX))  # what mkstemp puts between prefix and suffix


def fsync_dir(directory: str | Path) -> None:
    """fsync a folder, so that a rename or a new file in it survives a crash."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@functools.cache
def _umask() -> int:
    """The process umask, read without changing it where Linux says it (``/proc/self/status``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def is_temporary_of(name: str, candidate: str) -> bool:
    """Whether ``candidate`` is a temporary name ``atomic_output`` uses for the file ``name``."""
    return candidate.startswith(name) and _RANDOM_PART.fullmatch(candidate[len(name):]) is not None


def temporaries_of(path: str | Path) -> list[Path]:
    """The files ``atomic_output`` may have left beside ``path`` when it was killed, sorted."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    return sorted(other for other in path.parent.glob(f"{glob.escape(path.name)}.*{TEMP_SUFFIX}")
                  if is_temporary_of(path.name, other.name) and other.is_file())


@overload
def atomic_output(path: str | Path, mode: Literal["wb"] = "wb", *, fsync: bool = True, permissions: int = 0o666,
                  encoding: None = None, newline: None = None) -> AbstractContextManager[BinaryIO]: ...


@overload
def atomic_output(path: str | Path, mode: Literal["w"], *, fsync: bool = True, permissions: int = 0o666,
                  encoding: str | None = None, newline: str | None = None) -> AbstractContextManager[TextIO]: ...


def atomic_output(path: str | Path, mode: str = "wb", *, fsync: bool = True, permissions: int = 0o666,
                  encoding: str | None = None, newline: str | None = None) -> AbstractContextManager[IO[Any]]:
    """A context manager that writes ``path`` atomically through ``NAME.XXXXXXXX.tmp`` (see the module docstring).

    ``mode``: ``"wb"`` (default) or ``"w"`` (text, with ``encoding``/``newline`` as ``open`` takes them).
    ``fsync``: fsync the file before the rename and the folder after it (default True; off for files that are
    cheap to make again). ``permissions``: the new file's mode bits before the umask, as ``open`` gives them
    (default 0o666). An OSError that names no file (a failed buffered write) is raised again naming ``path``.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_output writes with mode 'wb' or 'w', not {mode!r}")
    return _atomic(Path(path), mode, fsync, permissions, encoding, newline)


@contextmanager
def _atomic(path: Path, mode: str, fsync: bool, permissions: int, encoding: str | None,
            newline: str | None) -> Iterator[IO[Any]]:
    fd, temp_name = tempfile.mkstemp(prefix=f"{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    temp = Path(temp_name)
    try:
        os.fchmod(fd, permissions & ~_umask())
        stream = os.fdopen(fd, mode, encoding=encoding, newline=newline)
    except BaseException:
        os.close(fd)
        temp.unlink(missing_ok=True)
        raise
    try:
        yield stream
        stream.flush()
        if fsync:
            os.fsync(stream.fileno())
        stream.close()
        os.replace(temp, path)
        if fsync:
            fsync_dir(path.parent)
    except BaseException as error:
        _discard(stream, temp)
        if isinstance(error, OSError) and error.filename is None and error.errno:  # a failed write names no file
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise


def _discard(stream: IO[Any], temp: Path) -> None:
    try:
        stream.close()  # flushes what is buffered: fails again on a full disk
    except OSError:
        pass
    finally:
        temp.unlink(missing_ok=True)
