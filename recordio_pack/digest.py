"""Content checksums for the manifest: SHA-256 (integrity) and CRC32 (what S3 stores as a full-object checksum).

``hash_file`` is the one loop that reads a file for its checksums: it feeds every chunk to any number of
hashers (hashlib objects, ``RunningDigests``; ``hashers("md5", "sha256")`` makes them from hashlib names),
reports bytes read to an optional callback and stops between chunks when asked. ``file_digests`` is that loop
for the manifest's size, SHA-256 and CRC32.
"""

from __future__ import annotations

import base64
import hashlib
import io
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

__all__ = ["Digests", "RunningDigests", "DigestingWriter", "Hasher", "hashers", "hash_file", "file_digests",
           "crc32_base64"]

CHUNK = 8 << 20


class Hasher(Protocol):
    """Anything fed bytes by ``update``: a hashlib object, ``RunningDigests``."""

    def update(self, data: bytes, /) -> Any: ...


@dataclass(frozen=True)
class Digests:
    size: int
    sha256: str  # hex
    crc32: str  # 8 hex digits, big-endian, as zlib computes it

    def as_dict(self) -> dict[str, object]:
        return {"bytes": self.size, "sha256": self.sha256, "crc32": self.crc32}


class RunningDigests:
    """Size, SHA-256 and CRC32 of bytes fed in pieces (``update``), for one pass over a file."""

    def __init__(self) -> None:
        self.size = 0
        self.sha = hashlib.sha256()
        self.crc = 0

    def update(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        self.sha.update(data)
        self.crc = zlib.crc32(data, self.crc)

    def digests(self) -> Digests:
        return Digests(self.size, self.sha.hexdigest(), f"{self.crc:08x}")


class DigestingWriter(io.RawIOBase):
    """A raw binary stream that checksums everything written through it to ``raw`` (wrap it in a buffer)."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self.raw = raw
        self._running = RunningDigests()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | memoryview) -> int:  # type: ignore[override]
        view = memoryview(data)
        self._running.update(view)
        written = 0
        while written < len(view):
            written += self.raw.write(view[written:]) or 0
        return written

    def digests(self) -> Digests:
        return self._running.digests()


def hashers(*algorithms: str) -> list[Any]:
    """Fresh hashlib objects for hashlib names (``"md5"``, ``"sha256"``, ...), in order; MD5 and the like are
    made ``usedforsecurity=False`` (they check downloads, they do not protect secrets)."""
    return [hashlib.new(name, usedforsecurity=False) for name in algorithms]


def hash_file(path: str | Path, *sinks: Hasher, on_bytes: Callable[[int], object] | None = None,
              stop: threading.Event | None = None) -> int:
    """Feed the bytes of ``path`` to every ``sink`` in one read (chunks of ``CHUNK`` bytes); return its size.
    ``on_bytes(n)`` after each chunk of ``n`` bytes; InterruptedError, instead of using a chunk read, once
    ``stop`` is set."""
    size = 0
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK):
            if stop is not None and stop.is_set():
                raise InterruptedError(f"stopped hashing {path}")
            for sink in sinks:
                sink.update(chunk)
            size += len(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
    return size


def file_digests(path: str | Path, *, on_bytes: Callable[[int], object] | None = None,
                 stop: threading.Event | None = None) -> Digests:
    """Size, SHA-256 and CRC32 of a file in one read (``on_bytes`` and ``stop`` as ``hash_file`` takes them)."""
    running = RunningDigests()
    hash_file(path, running, on_bytes=on_bytes, stop=stop)
    return running.digests()


def crc32_base64(crc32_hex: str) -> str:
    """The manifest's hex CRC32 in the base64 form S3 reports as ``ChecksumCRC32``."""
    return base64.b64encode(bytes.fromhex(crc32_hex)).decode("ascii")
