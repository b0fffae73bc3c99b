"""Reading and extracting tar archives without trusting them.

Every member is checked before anything is written: absolute names, ``..`` components, symbolic and hard
links, device files, FIFOs and sparse files are refused with an error that names the archive and the member.
Files are written only below the target folder, through a temporary name (``O_NOFOLLOW``) renamed into place,
so neither a hostile member nor a symlink already in the target can redirect a write elsewhere.
"""

from __future__ import annotations

import io
import os
import re
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from recordio_pack.errors import RecordioPackError

__all__ = ["UnsafeArchiveError", "member_problem", "safe_name", "iter_files", "write_file", "extract_all",
           "ExtractResult", "ByteRange", "open_range"]

COPY_CHUNK = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")


class UnsafeArchiveError(RecordioPackError):
    """A tar member that could write outside the target or is not a plain file; the message names it."""


def member_problem(member: tarfile.TarInfo) -> str | None:
    """Why ``member`` must not be extracted, or None when it is a plain file or folder with a safe name."""
    name = member.name
    if not name or "\0" in name:
        return "empty or NUL in the name"
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return "absolute path"
    if ".." in name.replace("\\", "/").split("/"):
        return "'..' in the path"
    if member.issym():
        return f"symbolic link (to {member.linkname!r})"
    if member.islnk():
        return f"hard link (to {member.linkname!r})"
    if member.ischr() or member.isblk():
        return "device file"
    if member.isfifo():
        return "FIFO"
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


def write_file(stream: BinaryIO, target: Path, name: str) -> int:
    """Copy ``stream`` to ``target/name`` through ``name.tmp`` and a rename; return the bytes written.

    Refuses (UnsafeArchiveError) when a folder on the way below ``target`` is a symlink or not a folder.
    """
    path = target / name
    _make_parents(target, name)
    temp = path.with_name(path.name + ".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    written = 0
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(COPY_CHUNK):
                out.write(chunk)
                written += len(chunk)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return written


@dataclass(frozen=True)
class ExtractResult:
    files: int
    bytes: int


def extract_all(archive: str | Path, target: str | Path) -> ExtractResult:
    """Extract every regular file of ``archive`` (tar, optionally compressed) below ``target``.

    All members are checked first, so an archive with any unsafe member writes nothing at all.
    """
    archive, target = Path(archive), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, mode="r:*") as tar:
        files = list(iter_files(tar, str(archive)))
        total = 0
        for member, name in files:
            source = tar.extractfile(member)
            assert source is not None  # regular files always have data
            with source:
                total += write_file(source, target, name)
    return ExtractResult(len(files), total)


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
