"""The RecordIO byte layout in one place: framing, magic escaping, IRHeader, `.idx` and `.lst` lines.

Pure functions on bytes and strings; nothing here touches a file system.

Framing (dmlc-core ``recordio.cc``): a record is ``u32 magic`` + ``u32 lrec`` + payload + zero padding to a
multiple of 4, little-endian, ``lrec = cflag << 29 | length``.  A 4-byte-aligned word of the payload equal to
the magic is cut out and ends a segment (cflag 1 for the first segment, 2 for middle ones, 3 for the last; 0
when the record is not split), so a reader that resynchronises on the magic never lands inside a payload.
"""

from __future__ import annotations

import math
import mmap
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "MAGIC", "MAGIC_BYTES", "MAX_PAYLOAD", "CFLAG_WHOLE", "CFLAG_FIRST", "CFLAG_MIDDLE", "CFLAG_LAST",
    "IRHEADER", "FramingError", "IRHeader", "LstEntry", "encode_lrec", "decode_lrec", "frame", "padded",
    "read_record", "Frame", "Damage", "read_frame", "find_record_start", "scan_frames", "unescaped_magics_in",
    "unescaped_magics", "looks_like_idx", "pack_payload", "unpack_payload", "format_idx_line", "parse_idx_line",
    "format_lst_line", "parse_lst_line", "lst_path_problem",
]

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)  # b"\x0a\x23\xd7\xce"
# What the readers take: bytes, a memoryview, or a whole file memory-mapped (recordio.mapped).
Buffer = bytes | memoryview | mmap.mmap

HEADER = struct.Struct("<II")  # magic, lrec
LENGTH_BITS = 29
LENGTH_MASK = (1 << LENGTH_BITS) - 1
MAX_PAYLOAD = LENGTH_MASK  # a payload must be shorter than 2**29 bytes
CFLAG_WHOLE, CFLAG_FIRST, CFLAG_MIDDLE, CFLAG_LAST = 0, 1, 2, 3
IRHEADER = struct.Struct("<IfQQ")  # flag (label count when > 0), label, id, id2
LABEL = struct.Struct("<f")


class FramingError(ValueError):
    """A `.rec` byte stream that does not follow the RecordIO framing; ``offset`` says where."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} at byte {offset}")
        self.offset = offset


def encode_lrec(cflag: int, length: int) -> int:
    if not 0 <= cflag <= 3:
        raise ValueError(f"cflag must be 0..3, got {cflag}")
    if not 0 <= length <= LENGTH_MASK:
        raise ValueError(f"segment length {length} does not fit in 29 bits")
    return (cflag << LENGTH_BITS) | length


def decode_lrec(lrec: int) -> tuple[int, int]:
    """Split ``lrec`` into ``(cflag, length)``."""
    return lrec >> LENGTH_BITS, lrec & LENGTH_MASK


def padded(length: int) -> int:
    """``length`` rounded up to a multiple of 4."""
    return (length + 3) & ~3


def _searchable(data: Buffer) -> bytes | mmap.mmap:
    return bytes(data) if isinstance(data, memoryview) else data  # mmap and bytes have find()


VECTOR_SCAN_MIN = 16 << 10  # bytes from which a payload is scanned as uint32 words (numpy), not with find()
_VECTOR_WINDOW = 4 << 20  # words compared at a time: a bounded temporary whatever the payload size


def _aligned_magics(data: bytes | mmap.mmap, start: int = 0, stop: int | None = None) -> Iterator[int]:
    """Offsets of magic words at multiples of 4 lying wholly inside ``start..stop``."""
    limit = len(data) if stop is None else min(stop, len(data))
    if limit - padded(start) >= VECTOR_SCAN_MIN:
        # find() runs at about 1 GB/s for a 4-byte needle (CPython's search for short needles), a tenth of what
        # comparing aligned words does
        yield from _aligned_magics_as_words(data, padded(start), limit)
        return
    position = data.find(MAGIC_BYTES, padded(start), limit)
    while position != -1:
        if position % 4 == 0:
            yield position
            position = data.find(MAGIC_BYTES, position + 4, limit)
        else:
            position = data.find(MAGIC_BYTES, position + 1, limit)


def _aligned_magics_as_words(data: bytes | mmap.mmap, first: int, limit: int) -> Iterator[int]:
    """``_aligned_magics`` for ``first`` a multiple of 4: the offsets of little-endian words equal to MAGIC.
    The view of ``data`` is released before anything is yielded, so an mmap can be closed between two."""
    import numpy as np

    for window in range(first, limit - 3, _VECTOR_WINDOW):
        words = np.frombuffer(data, dtype="<u4", count=(min(window + _VECTOR_WINDOW, limit) - window) // 4,
                              offset=window)
        hits = np.flatnonzero(words == MAGIC).tolist()
        del words
        yield from (window + 4 * hit for hit in hits)


def _aligned_magic_positions(payload: Buffer) -> Iterator[int]:
    data = _searchable(payload)
    return _aligned_magics(data, 0, len(data) & ~3)  # only whole aligned words are scanned, as dmlc does


def frame(payload: bytes) -> bytes:
    """Frame one record: header(s), escaped segments and the zero padding, ready to append to a `.rec`."""
    length = len(payload)
    if length > MAX_PAYLOAD:
        raise ValueError(f"record payload of {length} bytes exceeds the RecordIO limit of {MAX_PAYLOAD} bytes")
    parts: list[bytes] = []
    start = 0
    for position in _aligned_magic_positions(payload):
        cflag = CFLAG_FIRST if start == 0 else CFLAG_MIDDLE
        parts.append(HEADER.pack(MAGIC, encode_lrec(cflag, position - start)))
        parts.append(payload[start:position])
        start = position + 4
    cflag = CFLAG_LAST if start else CFLAG_WHOLE
    parts.append(HEADER.pack(MAGIC, encode_lrec(cflag, length - start)))
    parts.append(payload[start:] if start else payload)
    parts.append(b"\0" * (padded(length) - length))
    return b"".join(parts)


@dataclass(frozen=True)
class Frame:
    """One readable record: ``start`` (offset of its first magic), ``end`` (just past its padding), the offset of
    every segment header, and the payload with its segments rejoined."""

    start: int
    end: int
    headers: tuple[int, ...]
    payload: bytes


@dataclass(frozen=True)
class Damage:
    """Bytes ``start..end`` (end exclusive) that hold no readable record; ``error`` is the framing error found
    there (its ``offset`` is the exact byte)."""

    start: int
    end: int
    error: FramingError

    def describe(self) -> str:
        """"bytes A..B (N bytes) hold no readable record (...)", with the exact error and, when it lies further
        on, the offset of the record it was read from."""
        error = self.error
        reason = str(error) if error.offset == self.start else f"reading the record at byte {self.start}: {error}"
        return f"bytes {self.start}..{self.end} ({self.end - self.start} bytes) hold no readable record ({reason})"


def read_record(data: Buffer, offset: int) -> tuple[bytes, int]:
    """Read the record that starts at ``offset`` of ``data``; return ``(payload, offset of the next record)``.

    Raises FramingError on a wrong magic, a bad continuation flag, a truncated segment or non-zero padding.
    """
    if not isinstance(data, memoryview) and 0 <= offset <= len(data) - 8:
        # the common case, a record of one segment, read with one header unpack and one slice (the general
        # path below builds a view, a list and a Frame per record: about half of a sequential read's time)
        magic, lrec = HEADER.unpack_from(data, offset)
        if magic == MAGIC and lrec >> LENGTH_BITS == CFLAG_WHOLE:
            body = offset + 8
            length = lrec & LENGTH_MASK
            end = body + padded(length)
            if end <= len(data) and data[body + length:end] == _ZERO_PADDING[:end - body - length]:
                return bytes(data[body:body + length]), end
    record = read_frame(data, offset)
    return record.payload, record.end


_ZERO_PADDING = bytes(3)


def read_frame(data: Buffer, offset: int) -> Frame:
    """Like `read_record`, with the record's extent and segment headers."""
    # The view is released even when FramingError propagates: a traceback holding an export of an mmap
    # would make closing the mmap fail with BufferError and hide the framing error.
    with memoryview(data) as view:
        return _read_frame(view, offset)


def _read_frame(view: memoryview, offset: int) -> Frame:
    size = len(view)
    parts: list[bytes] = []
    headers: list[int] = []
    position = offset
    expect_continuation = False
    while True:
        if position + 8 > size:
            raise FramingError("truncated record header", position)
        magic, lrec = HEADER.unpack_from(view, position)
        if magic != MAGIC:
            raise FramingError(f"bad magic 0x{magic:08x}", position)
        cflag, length = decode_lrec(lrec)
        if expect_continuation and cflag not in (CFLAG_MIDDLE, CFLAG_LAST):
            raise FramingError(f"segment flag {cflag} where a continuation (2 or 3) was expected", position)
        if not expect_continuation and cflag not in (CFLAG_WHOLE, CFLAG_FIRST):
            raise FramingError(f"segment flag {cflag} at the start of a record", position)
        body = position + 8
        end = body + padded(length)
        if end > size:
            raise FramingError(f"truncated record: segment of {length} bytes runs past the end", position)
        if any(view[body + length:end]):
            raise FramingError("non-zero padding", body + length)
        if cflag in (CFLAG_FIRST, CFLAG_MIDDLE) and length % 4:
            raise FramingError(f"split segment of unaligned length {length}", position)
        headers.append(position)
        parts.append(bytes(view[body:body + length]))
        position = end
        if cflag in (CFLAG_WHOLE, CFLAG_LAST):
            payload = parts[0] if len(parts) == 1 else MAGIC_BYTES.join(parts)
            return Frame(offset, position, tuple(headers), payload)
        expect_continuation = True


def find_record_start(data: Buffer, start: int, stop: int | None = None) -> int | None:
    """The first 4-byte-aligned offset in ``start..stop`` (default: to the end) where a whole record can be
    read: its magic, a length that fits, zero padding and a valid segment-flag sequence (a middle or last
    segment's header does not count).  None when there is none.  This is where a reader resynchronises after
    damage: records start on multiples of 4, and escaping keeps the magic out of every aligned payload word."""
    searchable = _searchable(data)
    stop = len(searchable) if stop is None else min(stop, len(searchable))
    for position in _aligned_magics(searchable, start, stop + 3):
        try:
            read_frame(searchable, position)
        except FramingError:
            continue
        return position
    return None


def scan_frames(data: Buffer) -> Iterator[Frame | Damage]:
    """Every record of ``data`` and every damaged byte range between them, in file order; together they
    cover ``data`` exactly.  After damage the scan resynchronises on the next readable record
    (`find_record_start`), so one bad header costs one record, not the rest of the file.  A record whose
    length runs over the records after it (a corrupted length that happens to land on zero padding) is
    found when the framing breaks: it is reported as damage up to the first record start inside it."""
    data = _searchable(data)
    size = len(data)
    position = 0
    pending: Frame | None = None  # held back one step: the next framing error may show it overran
    while position < size:
        try:
            current = read_frame(data, position)
        except FramingError as error:
            if pending is not None:
                inner = find_record_start(data, pending.start + 4, position)
                if inner is not None:
                    yield Damage(pending.start, inner, FramingError(
                        f"record length runs over the record that starts at byte {inner}", pending.start))
                    pending, position = None, inner
                    continue
                yield pending
                pending = None
            resume = find_record_start(data, position + 4)
            end = size if resume is None else resume
            yield Damage(position, end, error)
            position = end
            continue
        if pending is not None:
            yield pending
        pending, position = current, current.end
    if pending is not None:
        yield pending


@dataclass(frozen=True)
class IRHeader:
    """MXNet's image record header. ``labels`` has one value for a plain label, more for a label vector."""

    labels: tuple[float, ...]
    id: int = 0
    id2: int = 0
    vector: bool = False  # True: written as flag=len(labels) + float32 vector, even for one label

    @property
    def label(self) -> float:
        return self.labels[0] if self.labels else 0.0


def pack_payload(header: IRHeader, image: bytes) -> bytes:
    """IRHeader (+ float32 label vector when ``header.vector``) followed by the encoded image."""
    if header.vector:
        count = len(header.labels)
        head = IRHEADER.pack(count, 0.0, header.id, header.id2)
        return head + struct.pack(f"<{count}f", *header.labels) + image
    return IRHEADER.pack(0, header.label, header.id, header.id2) + image


def unpack_payload(payload: bytes) -> tuple[IRHeader, memoryview]:
    """Split a payload into its header and the image bytes (a view into ``payload``)."""
    if len(payload) < IRHEADER.size:
        raise ValueError(f"payload of {len(payload)} bytes is shorter than the {IRHEADER.size}-byte IRHeader")
    flag, label, record_id, record_id2 = IRHEADER.unpack_from(payload)
    view = memoryview(payload)
    if flag == 0:
        return IRHeader((label,), record_id, record_id2), view[IRHEADER.size:]
    end = IRHEADER.size + 4 * flag
    if end > len(payload):
        raise ValueError(f"IRHeader flag {flag} announces more labels than the payload holds")
    labels = struct.unpack_from(f"<{flag}f", payload, IRHEADER.size)
    return IRHeader(tuple(labels), record_id, record_id2, vector=True), view[end:]


def format_idx_line(key: int, offset: int) -> str:
    return f"{key}\t{offset}\n"


def parse_idx_line(line: str) -> tuple[int, int]:
    fields = line.rstrip("\r\n").split("\t")
    if len(fields) != 2:
        raise ValueError(f"an .idx line has two tab-separated fields, got {line!r}")
    return int(fields[0]), int(fields[1])


_IDX_LINE = re.compile(rb"[0-9]+\t[0-9]+\r?\n")


def looks_like_idx(head: bytes) -> bool:
    """Whether the first bytes of a file read as `.idx` lines (``key<TAB>offset``) rather than RecordIO: a
    `.rec` starts with the magic, an index with digits.  ``head``: at least a few hundred bytes when the file
    has them; a last line cut short is ignored."""
    if not head or head.startswith(MAGIC_BYTES):
        return False
    lines = head.split(b"\n")
    whole = lines[:-1] if len(lines) > 1 else lines
    return all(_IDX_LINE.fullmatch(line + b"\n") or not line.strip() for line in whole) and any(
        line.strip() for line in whole)


@dataclass(frozen=True)
class LstEntry:
    """One `.lst` line: im2rec's ``index<TAB>label[<TAB>label...]<TAB>path``."""

    index: int
    labels: tuple[float, ...]
    path: str


def lst_path_problem(path: str) -> str | None:
    """Why ``path`` cannot be written to a `.lst` line, or None."""
    if "\t" in path:
        return "path contains a tab, which a .lst line cannot hold"
    if "\n" in path or "\r" in path:
        return "path contains a line break, which a .lst line cannot hold"
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "name is not valid UTF-8, which a .lst (UTF-8 text) cannot hold"
    return None


def format_lst_line(entry: LstEntry) -> str:
    problem = lst_path_problem(entry.path)
    if problem:
        raise ValueError(f"{entry.path!r}: {problem}")
    labels = "\t".join(f"{label:f}" for label in entry.labels)
    return f"{entry.index}\t{labels}\t{entry.path}\n"


def parse_lst_line(line: str) -> LstEntry:
    """Parse a `.lst` line the way im2rec reads it (fields stripped, last field is the path)."""
    fields = [field.strip() for field in line.strip().split("\t")]
    if len(fields) < 3:
        raise ValueError(f"a .lst line needs index, label and path, got {line!r}")
    labels = tuple(float(field) for field in fields[1:-1])
    if not all(math.isfinite(label) for label in labels):
        raise ValueError(f"non-finite label in {line!r}")
    return LstEntry(int(fields[0]), labels, fields[-1])



def unescaped_magics_in(data: Buffer, record: Frame) -> list[int]:
    """Aligned magic words inside ``record`` that are not its segment headers: escaping was skipped, and a
    reader that resynchronises on the magic (DALI, dmlc's byte-range splits) would cut the record there."""
    headers = set(record.headers)
    return [position for position in _aligned_magics(_searchable(data), record.start, record.end)
            if position not in headers]


def unescaped_magics(data: Buffer) -> list[int]:
    """`unescaped_magics_in` over every readable record of ``data`` (damaged ranges are not searched)."""
    return [position for item in scan_frames(data) if isinstance(item, Frame)
            for position in unescaped_magics_in(data, item)]
