"""Content checksums for the manifest: SHA-256 (integrity) and CRC32 (what S3 stores as a full-object checksum)."""

from __future__ import annotations

import base64
import hashlib
import io
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

__all__ = ["Digests", "RunningDigests", "DigestingWriter", "file_digests", "crc32_base64"]

CHUNK = 8 << 20


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


def file_digests(path: str | Path) -> Digests:
    running = RunningDigests()
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK):
            running.update(chunk)
    return running.digests()


def crc32_base64(crc32_hex: str) -> str:
    """The manifest's hex CRC32 in the base64 form S3 reports as ``ChecksumCRC32``."""
    return base64.b64encode(bytes.fromhex(crc32_hex)).decode("ascii")
