"""Reading and extracting tar archives without trusting them.

Every member is checked before anything is written, starting from the standard library's
``tarfile.data_filter`` (Python 3.11.4+) and stricter than it: absolute names (data_filter strips the slash),
``..`` components (even ones that stay inside), symbolic and hard links (even ones data_filter allows: links
inside the archive), device files, FIFOs and sparse files are refused with an error that names the archive
and the member. Files are written only below the target folder, through a fresh temporary
(``fsutil.atomic_output``: ``mkstemp``, which never opens an existing name) renamed into place, so neither a
hostile member nor a symlink already in the target can redirect a write elsewhere.
"""

from __future__ import annotations

import io
import os
import re
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, BinaryIO

from recordio_pack.errors import RecordioPackError
from recordio_pack.fsutil import atomic_output

__all__ = ["UnsafeArchiveError", "member_problem", "safe_name", "iter_files", "write_file", "ByteRange",
           "open_range"]

COPY_CHUNK = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")
# The destination data_filter checks names against: a folder that cannot exist (below a device file), so its
# containment check is lexical and never follows links on this machine; links already on disk are write_file's.
_LEXICAL_ROOT = os.path.join(os.devnull, "archive")


class UnsafeArchiveError(RecordioPackError):
    """A tar member that could write outside the target or is not a plain file; the message names it."""


def member_problem(member: tarfile.TarInfo) -> str | None:
    """Why ``member`` must not be extracted, or None when it is a plain file or folder with a safe name:
    ``tarfile.data_filter``'s verdict, then our stricter rules (what data_filter lets through: a leading
    slash, which it strips; any ``..``, where it refuses only those that leave; links that stay inside; sparse
    files). The reason given is the first of: bad name, absolute path, ``..``, link, device file, FIFO, sparse
    file, other member type."""
    name = member.name
    if not name or "\0" in name:  # before data_filter, whose path resolution fails on a NUL
        return "empty or NUL in the name"
    try:
        tarfile.data_filter(member, _LEXICAL_ROOT)
    except tarfile.FilterError as error:
        return _name_problem(name) or _link_problem(member) or _filter_problem(member, error)
    return _name_problem(name) or _link_problem(member) or _type_problem(member)


def _name_problem(name: str) -> str | None:
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return "absolute path"
    if ".." in name.replace("\\", "/").split("/"):
        return "'..' in the path"
    return None


def _link_problem(member: tarfile.TarInfo) -> str | None:
    if member.issym():
        return f"symbolic link (to {member.linkname!r})"
    if member.islnk():
        return f"hard link (to {member.linkname!r})"
    return None


def _filter_problem(member: tarfile.TarInfo, error: tarfile.FilterError) -> str:
    """data_filter's refusal of a member with a safe name that is not a link, in our words."""
    if member.ischr() or member.isblk():
        return "device file"
    if member.isfifo():
        return "FIFO"
    return f"unsupported member type {member.type!r}" if isinstance(error, tarfile.SpecialFileError) else str(error)


def _type_problem(member: tarfile.TarInfo) -> str | None:
    if member.issparse():
        return "sparse file"
    if not (member.isreg() or member.isdir()):
        return f"unsupported member type {member.type!r}"
    return None


def safe_name(member: tarfile.TarInfo, archive: str) -> str:
    """The member's normalised relative POSIX name ("" for the archive's root folder); raises
    UnsafeArchiveError naming ``archive`` and the member when it must not be extracted."""
    problem = member_problem(member)
    if problem:
        raise UnsafeArchiveError(f"{archive}: refusing member {member.name!r}: {problem}")
    return "/".join(part for part in member.name.split("/") if part not in ("", "."))


def iter_files(tar: tarfile.TarFile, archive: str) -> Iterator[tuple[tarfile.TarInfo, str]]:
    """``(member, safe name)`` for each regular file, in archive order; folders are checked and skipped, any
    unsafe member stops the iteration with UnsafeArchiveError."""
    for member in tar:
        name = safe_name(member, archive)
        if member.isreg() and name:
            yield member, name


def _make_parents(target: Path, name: str) -> None:
    """Create the folders of ``name`` below ``target``, refusing any existing component that is not a real folder
    (a symlink planted there would otherwise redirect the write)."""
    current = target
    for part in name.split("/")[:-1]:
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            os.mkdir(current)
            continue
        if not stat.S_ISDIR(mode):
            raise UnsafeArchiveError(f"{name!r}: {current} is not a plain folder (a symlink?); "
                                     "refusing to write through it")


class _ReadFailed(Exception):
    """An OSError reading the source, carried through atomic_output so it is not taken for a write error."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error)
        self.error = error


def _copy(stream: IO[bytes], out: BinaryIO) -> int:
    written = 0
    while True:
        try:
            chunk = stream.read(COPY_CHUNK)
        except OSError as error:
            raise _ReadFailed(error) from None
        if not chunk:
            return written
        out.write(chunk)
        written += len(chunk)


def write_file(stream: IO[bytes], target: Path, name: str) -> int:
    """Copy ``stream`` to ``target/name`` through a temporary and a rename (``fsutil.atomic_output``, no fsync);
    return the bytes written.

    Refuses (UnsafeArchiveError) when a folder on the way below ``target`` is a symlink or not a folder.
    """
    path = target / name
    _make_parents(target, name)
    try:
        with atomic_output(path, fsync=False, permissions=0o644) as out:
            return _copy(stream, out)
    except _ReadFailed as failed:
        raise failed.error from None


class ByteRange(io.RawIOBase):
    """A read-only, seekable view of ``size`` bytes at ``start`` of an open file descriptor.

    Reads use ``os.pread``, so many views of one descriptor work from several threads at once.
    """

    def __init__(self, fd: int, start: int, size: int) -> None:
        super().__init__()
        self._fd, self._start, self._size, self._pos = fd, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), max(0, self._size - self._pos))
        if want == 0:
            return 0
        data = os.pread(self._fd, want, self._start + self._pos)
        buffer[:len(data)] = data
        self._pos += len(data)
        return len(data)


def open_range(fd: int, start: int, size: int, buffer_size: int = COPY_CHUNK) -> io.BufferedReader:
    """A buffered, seekable reader over ``size`` bytes at ``start`` of ``fd`` (the caller keeps ``fd`` open)."""
    return io.BufferedReader(ByteRange(fd, start, size), buffer_size=buffer_size)
