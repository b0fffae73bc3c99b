"""Reading and writing `.rec` / `.idx` files: the I/O shell around `recordio_pack.format`."""

from __future__ import annotations

import mmap
import os
import zlib
from array import array
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from recordio_pack.errors import RecordioPackError
from recordio_pack.format import Damage, format_idx_line, frame, parse_idx_line, read_record
from recordio_pack.fsutil import atomic_output

__all__ = ["RecordWriter", "InputError", "NoSuchFile", "DamagedShard", "require_file", "mapped", "iter_records",
           "read_idx", "write_idx_atomic"]


class InputError(RecordioPackError):
    """A file given to read is missing, unreadable or damaged; the message names it (and the byte or line)."""


class NoSuchFile(InputError):
    def __init__(self, path: str | Path) -> None:
        super().__init__(f"{path}: no such file")
        self.path = str(path)


class DamagedShard(InputError):
    """A `.rec` with bytes that hold no readable record; ``damage`` lists every such range, in file order."""

    def __init__(self, path: str | Path, damage: list[Damage]) -> None:
        more = f"; and {len(damage) - 1} more damaged range(s)" if len(damage) > 1 else ""
        super().__init__(f"{path}: {damage[0].describe()}{more}")
        self.path = str(path)
        self.damage = damage


def require_file(path: str | Path) -> Path:
    """``path`` as a Path; NoSuchFile when nothing is there."""
    path = Path(path)
    if not path.exists():
        raise NoSuchFile(path)
    return path


class RecordWriter:
    """Appends framed records to a data stream and one index line per record to an index stream: ``key<TAB>offset``
    (RecordIO's `.idx`) unless ``index_line(key, offset, framed size)`` makes another format's line.

    ``record_crc32s`` holds, in write order, the zlib CRC32 of each record's framed bytes (magic through
    padding, every segment): what the manifest keeps so that verify can name a damaged record.
    """

    def __init__(self, rec: BinaryIO, idx: BinaryIO, start_offset: int = 0,
                 index_line: Callable[[int, int, int], bytes] | None = None) -> None:
        self._rec = rec
        self._idx = idx
        self._index_line = index_line or _idx_line
        self.offset = start_offset
        self.count = 0
        self.record_crc32s = array("I")

    def write(self, key: int, payload: bytes) -> int:
        """Write one record; return the offset of its first magic."""
        framed = frame(payload)
        return self.write_framed(key, framed, zlib.crc32(framed))

    def write_framed(self, key: int, framed: bytes, crc32: int) -> int:
        """Write a record framed (and checksummed: ``crc32`` is zlib's of ``framed``) elsewhere, in a worker
        that had the bytes in memory; return its offset."""
        offset = self.offset
        self._rec.write(framed)
        self._idx.write(self._index_line(key, offset, len(framed)))
        self.record_crc32s.append(crc32)
        self.offset += len(framed)
        self.count += 1
        return offset


def _idx_line(key: int, offset: int, size: int) -> bytes:
    return format_idx_line(key, offset).encode("ascii")


@contextmanager
def mapped(path: str | Path) -> Iterator[bytes | mmap.mmap]:
    """The whole file, memory-mapped read-only (an empty file gives b"")."""
    with open(path, "rb") as stream:
        if os.fstat(stream.fileno()).st_size == 0:
            yield b""
            return
        view = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            yield view
        finally:
            view.close()


def iter_records(data: bytes | mmap.mmap, start: int = 0) -> Iterator[tuple[int, bytes]]:
    """Yield ``(offset, payload)`` for every record from ``start`` to the end; FramingError on damage."""
    offset = start
    size = len(data)
    while offset < size:
        payload, next_offset = read_record(data, offset)
        yield offset, payload
        offset = next_offset


def read_idx(path: str | Path) -> list[tuple[int, int]]:
    """``(key, offset)`` pairs of an `.idx`, in file order; ValueError names the bad line."""
    pairs = []
    with open(path, encoding="ascii", newline="") as stream:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                pairs.append(parse_idx_line(line))
            except ValueError as error:
                raise ValueError(f"{path}:{number}: {error}") from None
    return pairs


def write_idx_atomic(path: str | Path, pairs: list[tuple[int, int]]) -> None:
    with atomic_output(path) as stream:
        stream.write("".join(format_idx_line(key, offset) for key, offset in pairs).encode("ascii"))
