"""The TFRecord byte layout in one place: framing, masked CRC32C, and DALI's ``tfrecord2idx`` index lines.

Pure functions on bytes; nothing here touches a file system.

A record is ``u64 length`` + ``u32 masked_crc32c(length bytes)`` + data + ``u32 masked_crc32c(data)``, all
little-endian, no padding, no file header (TensorFlow's ``core/lib/io/record_writer.cc``).  The mask is
``((crc >> 15) | (crc << 17)) + 0xa282ead8`` modulo 2**32.  CRC32C comes from ``google-crc32c``.

DALI's index (what ``tfrecord2idx`` writes, what ``fn.readers.tfrecord(index_path=...)`` reads): one text line per
record, ``offset<SPACE>size\\n``, size = the framed record's bytes (12 + length + 4).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator

import google_crc32c

from recordio_pack.format import Buffer, Damage, Frame, FramingError

__all__ = ["MASK_DELTA", "HEADER_BYTES", "FOOTER_BYTES", "MAX_LENGTH", "masked_crc32c", "frame", "read_frame",
           "starts_record", "find_record_start", "scan_frames", "format_index_line", "parse_index_line",
           "looks_like_index"]

MASK_DELTA = 0xA282EAD8
LENGTH = struct.Struct("<Q")
CRC = struct.Struct("<I")
HEADER_BYTES = 12  # length + its masked CRC
FOOTER_BYTES = 4  # the data's masked CRC
MAX_LENGTH = (1 << 31) - 1  # TensorFlow's readers hold a record in one string; we write none larger than 2 GiB


def masked_crc32c(data: bytes | memoryview) -> int:
    """TensorFlow's masked CRC32C of ``data``."""
    crc = google_crc32c.value(bytes(data) if isinstance(data, memoryview) else data)
    return (((crc >> 15) | (crc << 17)) + MASK_DELTA) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One TFRecord: header, data, footer."""
    header = LENGTH.pack(len(data))
    return b"".join((header, CRC.pack(masked_crc32c(header)), data, CRC.pack(masked_crc32c(data))))


def starts_record(head: Buffer, offset: int = 0) -> bool:
    """Whether a record header (a length and its matching masked CRC32C) starts at ``offset``."""
    with memoryview(head) as view:
        if offset + HEADER_BYTES > len(view):
            return False
        header = bytes(view[offset:offset + 8])
        return CRC.unpack_from(view, offset + 8)[0] == masked_crc32c(header)


def read_frame(data: Buffer, offset: int) -> Frame:
    """The record at ``offset`` (``headers``: its offset; ``payload``: its data); FramingError with the byte."""
    with memoryview(data) as view:
        size = len(view)
        if offset + HEADER_BYTES > size:
            raise FramingError("truncated record header", offset)
        header = bytes(view[offset:offset + 8])
        (length,) = LENGTH.unpack(header)
        if CRC.unpack_from(view, offset + 8)[0] != masked_crc32c(header):
            raise FramingError("length CRC32C mismatch", offset)
        body = offset + HEADER_BYTES
        end = body + length + FOOTER_BYTES
        if end > size:
            raise FramingError(f"truncated record: {length} bytes of data run past the end", offset)
        payload = bytes(view[body:body + length])
        if CRC.unpack_from(view, body + length)[0] != masked_crc32c(payload):
            raise FramingError("data CRC32C mismatch", body + length)
        return Frame(offset, end, (offset,), payload)


def find_record_start(data: Buffer, start: int, stop: int | None = None) -> int | None:
    """The first offset in ``start..stop`` where a whole record (both CRCs right) can be read, or None.
    TFRecords are not aligned, so every byte is a candidate; a header whose CRC matches by chance is rare
    (1 in 2**32) and is then refused by the data CRC."""
    with memoryview(data) as view:
        size = len(view)
    stop = size if stop is None else min(stop, size)
    for position in range(start, stop):
        if not starts_record(data, position):
            continue
        try:
            read_frame(data, position)
        except FramingError:
            continue
        return position
    return None


def scan_frames(data: Buffer) -> Iterator[Frame | Damage]:
    """Every record of ``data`` and every damaged byte range between them, in file order, covering it exactly;
    after damage the scan resynchronises on the next offset where a whole record reads."""
    with memoryview(data) as view:
        size = len(view)
    position = 0
    while position < size:
        try:
            record = read_frame(data, position)
        except FramingError as error:
            resume = find_record_start(data, position + 1)
            end = size if resume is None else resume
            yield Damage(position, end, error)
            position = end
            continue
        yield record
        position = record.end


def format_index_line(offset: int, size: int) -> str:
    return f"{offset} {size}\n"


def parse_index_line(line: str) -> tuple[int, int]:
    """``(offset, size)`` of a DALI index line."""
    fields = line.split()
    if len(fields) != 2:
        raise ValueError(f"a TFRecord index line has two space-separated numbers, got {line!r}")
    return int(fields[0]), int(fields[1])


_INDEX_LINE = re.compile(rb"[0-9]+ [0-9]+\r?\n")


def looks_like_index(head: bytes) -> bool:
    """Whether a file's first bytes read as DALI index lines (``offset size``); a last line cut short is ignored."""
    if not head or starts_record(head):
        return False
    lines = head.split(b"\n")
    whole = lines[:-1] if len(lines) > 1 else lines
    return all(_INDEX_LINE.fullmatch(line + b"\n") or not line.strip() for line in whole) and any(
        line.strip() for line in whole)
