"""Where image bytes come from: a folder tree, or byte ranges of an uncompressed archive.

An ``Entry`` is one image to pack: its `.lst` index, labels and path.  ``offset``/``size`` are set when the bytes
live inside a container file (e.g. a member of ILSVRC2012_img_train.tar's per-class tars): the source then reads
``size`` bytes at ``offset`` of ``source.container`` instead of opening ``root/path``.  Sources are small and
picklable: they travel to worker processes with each shard's entries.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

__all__ = ["Entry", "ImageSource", "FolderSource", "RangeSource"]


@dataclass(frozen=True, slots=True)  # slots: a parent holds one per image (1.28M for ImageNet train)
class Entry:
    index: int
    labels: tuple[float, ...]
    path: str  # relative path as written in the .lst (inside an archive: "n01440764/n01440764_10026.JPEG")
    offset: int = -1  # byte offset of the image inside the source's container, -1 when it is a file
    size: int = -1


class ImageSource(Protocol):
    def read(self, entry: Entry) -> bytes: ...

    def size(self, entry: Entry) -> int: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class FolderSource:
    """Images as files under ``root``."""

    root: str

    def read(self, entry: Entry) -> bytes:
        with open(os.path.join(self.root, entry.path), "rb") as stream:
            return stream.read()

    def size(self, entry: Entry) -> int:
        return os.stat(os.path.join(self.root, entry.path)).st_size

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

    def describe(self) -> str:
        return str(Path(self.container))
