"""Where image bytes come from: a folder tree, or byte ranges of an uncompressed archive.

An ``Entry`` is one image to pack: its `.lst` index, labels and path.  ``offset``/``size`` are set when the bytes
live inside a container file (e.g. a member of ILSVRC2012_img_train.tar's per-class tars): the source then reads
``size`` bytes at ``offset`` of ``source.container`` instead of opening ``root/path``.  Sources are small and
picklable: they travel to worker processes with each shard's entries.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

__all__ = ["Entry", "Entries", "Read", "read_ahead", "EntryList", "ImageSource", "FolderSource", "RangeSource", "NotRegularFile", "file_kind",
           "InputStat"]


class NotRegularFile(ValueError):
    """The path is a FIFO, socket or device: reading it could block forever or have side effects."""


_KINDS = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
          (stat.S_ISBLK, "block device"), (stat.S_ISDIR, "directory"))


def file_kind(mode: int) -> str | None:
    """None for a regular file, else what it is ("FIFO", "socket", ...)."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "special file")


def _not_regular(path: str, mode: int) -> NotRegularFile | None:
    kind = file_kind(mode)
    return NotRegularFile(f"not a regular file ({kind})") if kind else None


@dataclass(frozen=True, slots=True)
class InputStat:
    """What says an input changed without reading it: its size and modification time."""

    size: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)  # slots: a parent holds one per image (1.28M for ImageNet train)
class Entry:
    index: int
    labels: tuple[float, ...]
    path: str  # relative path as written in the .lst (inside an archive: "n01440764/n01440764_10026.JPEG")
    offset: int = -1  # byte offset of the image inside the source's container, -1 when it is a file
    size: int = -1
    mtime_ns: int = -1  # when a listing already told it (S3's LastModified), so no request asks again


class Entries(Protocol):
    """Entries in list order that can be counted and walked: a list, or a listing.LstSlice read on demand."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Entry]: ...


class EntryList(Entries, Protocol):
    """Entries that can also be cut into contiguous slices: a list, or a listing.LstIndex over a `.lst`."""

    def __getitem__(self, span: slice) -> Entries: ...


Read = bytes | OSError | ValueError | None  # an input's bytes read ahead, the error reading gave, or None: not read


def read_ahead(source: ImageSource, entries: Iterable[Entry]) -> Iterator[tuple[Entry, Read]]:
    """Each entry in order with its bytes when ``source`` reads ahead (a ``read_all`` method, as remote sources
    have, keeping several requests in flight), else with None (read it when its turn comes)."""
    read_all = getattr(source, "read_all", None)
    if read_all is not None:
        yield from read_all(entries)
        return
    for entry in entries:
        yield entry, None


class ImageSource(Protocol):
    def read(self, entry: Entry) -> bytes: ...

    def size(self, entry: Entry) -> int: ...

    def stat(self, entry: Entry) -> InputStat: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class FolderSource:
    """Images as files under ``root``."""

    root: str

    def read(self, entry: Entry) -> bytes:
        """The file's bytes. FIFOs, sockets and devices are refused (NotRegularFile) without being read:
        checked before opening, and again on the opened descriptor (opened non-blocking, so a FIFO cannot hang)."""
        path = os.path.join(self.root, entry.path)
        refusal = _not_regular(path, os.stat(path).st_mode)
        if refusal:
            raise refusal
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            info = os.fstat(fd)
            refusal = _not_regular(path, info.st_mode)
            if refusal:
                raise refusal
            with open(fd, "rb", closefd=False) as stream:
                return stream.read()
        finally:
            os.close(fd)

    def size(self, entry: Entry) -> int:
        return os.stat(os.path.join(self.root, entry.path)).st_size

    def stat(self, entry: Entry) -> InputStat:
        info = os.stat(os.path.join(self.root, entry.path))
        return InputStat(info.st_size, info.st_mtime_ns)

    def describe(self) -> str:
        return str(Path(self.root))


@dataclass(frozen=True)
class RangeSource:
    """Images as byte ranges (``entry.offset``, ``entry.size``) of one uncompressed container file."""

    container: str

    def read(self, entry: Entry) -> bytes:
        if entry.offset < 0:
            raise ValueError(f"{entry.path}: no byte range in {self.container}")
        fd = os.open(self.container, os.O_RDONLY)
        try:
            data = os.pread(fd, entry.size, entry.offset)
        finally:
            os.close(fd)
        if len(data) != entry.size:
            raise OSError(f"{self.container}: short read for {entry.path} ({len(data)} of {entry.size} bytes)")
        return data

    def size(self, entry: Entry) -> int:
        return entry.size

    def stat(self, entry: Entry) -> InputStat:
        """The member's size, with the container's modification time (a rewritten archive changes every member)."""
        return InputStat(entry.size, os.stat(self.container).st_mtime_ns)

    def describe(self) -> str:
        return str(Path(self.container))
