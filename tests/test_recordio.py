"""`.rec` / `.idx` files on disk: RecordWriter, iter_records, read_idx, mapped, write_idx_atomic."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest

from recordio_pack.format import MAGIC_BYTES, FramingError, IRHeader, frame, pack_payload, unpack_payload
from recordio_pack.recordio import (
    RecordWriter, iter_records, mapped, read_idx, write_idx_atomic,
)

PAYLOADS = [
    b"",
    b"abcde",
    MAGIC_BYTES,
    MAGIC_BYTES + b"head",
    b"tail" + MAGIC_BYTES,
    b"xy" + MAGIC_BYTES + b"unaligned",
    MAGIC_BYTES * 5 + b"z",
    bytes(range(256)) * 3,
]


def write_files(directory: Path, payloads: list[bytes],
                keys: list[int] | None = None) -> tuple[Path, Path, list[int]]:
    rec, idx = directory / "data.rec", directory / "data.idx"
    keys = list(range(len(payloads))) if keys is None else keys
    with open(rec, "wb") as rec_stream, open(idx, "wb") as idx_stream:
        writer = RecordWriter(rec_stream, idx_stream)
        offsets = [writer.write(key, payload) for key, payload in zip(keys, payloads)]
        assert writer.count == len(payloads)
        assert writer.offset == rec_stream.tell()
    return rec, idx, offsets


def test_round_trip_through_files(tmp_path: Path) -> None:
    rec, idx, offsets = write_files(tmp_path, PAYLOADS)
    with mapped(rec) as data:
        records = list(iter_records(data))
    assert [payload for _, payload in records] == PAYLOADS
    assert [offset for offset, _ in records] == offsets
    assert read_idx(idx) == list(enumerate(offsets))
    assert rec.stat().st_size == sum(len(frame(p)) for p in PAYLOADS)


def test_idx_offsets_point_at_each_record(tmp_path: Path) -> None:
    keys = [1000 + 7 * i for i in range(len(PAYLOADS))]  # non-positional keys, as im2rec's convention
    rec, idx, _ = write_files(tmp_path, PAYLOADS, keys)
    data = rec.read_bytes()
    by_key = dict(read_idx(idx))
    assert list(by_key) == keys
    expected_offset = 0
    for key, payload in zip(keys, PAYLOADS):
        offset = by_key[key]
        assert offset == expected_offset
        assert data[offset:offset + 4] == MAGIC_BYTES
        assert next(iter_records(data, offset)) == (offset, payload)
        expected_offset += len(frame(payload))
    assert idx.read_bytes().endswith(b"\n") and b"\r" not in idx.read_bytes()
    assert idx.read_text().splitlines()[0] == f"{keys[0]}\t0"


def test_writer_keeps_the_crc32_of_each_framed_record(tmp_path: Path) -> None:
    """What the manifest stores per record: zlib CRC32 of magic through padding, every segment, in write order."""
    rec, idx = tmp_path / "c.rec", tmp_path / "c.idx"
    with open(rec, "wb") as rec_stream, open(idx, "wb") as idx_stream:
        writer = RecordWriter(rec_stream, idx_stream)
        assert writer.record_crc32s.typecode == "I" and len(writer.record_crc32s) == 0
        for key, payload in enumerate(PAYLOADS):
            writer.write(key, payload)
    assert list(writer.record_crc32s) == [zlib.crc32(frame(payload)) for payload in PAYLOADS]
    data, offsets = rec.read_bytes(), [offset for _, offset in read_idx(idx)]
    assert [zlib.crc32(data[a:b]) for a, b in zip(offsets, offsets[1:] + [len(data)])] == list(writer.record_crc32s)


def test_start_offset_gives_global_offsets(tmp_path: Path) -> None:
    rec, idx = tmp_path / "b.rec", tmp_path / "b.idx"
    with open(rec, "wb") as rec_stream, open(idx, "wb") as idx_stream:
        writer = RecordWriter(rec_stream, idx_stream, start_offset=4096)
        assert writer.write(0, b"abc") == 4096
        assert writer.write(1, b"defgh") == 4096 + 12
    assert read_idx(idx) == [(0, 4096), (1, 4108)]


def test_image_records_round_trip(tmp_path: Path) -> None:
    headers = [IRHeader((float(i),), id=i) for i in range(3)] + [IRHeader((1.0, 2.0, 3.0), id=9, vector=True)]
    images = [MAGIC_BYTES * i + b"jpeg" for i in range(4)]
    rec, idx, _ = write_files(tmp_path, [pack_payload(h, im) for h, im in zip(headers, images)])
    with mapped(rec) as data:
        records = list(iter_records(data))
        assert len(records) == len(headers)
        for (_, payload), header, image in zip(records, headers, images):
            got_header, got_image = unpack_payload(payload)
            assert got_header == header and bytes(got_image) == image


def test_empty_files(tmp_path: Path) -> None:
    rec, idx, offsets = write_files(tmp_path, [])
    assert offsets == [] and rec.stat().st_size == 0
    with mapped(rec) as data:
        assert data == b""
        assert list(iter_records(data)) == []
    assert read_idx(idx) == []


def test_iter_records_reports_truncation_with_offset(tmp_path: Path) -> None:
    rec, _, offsets = write_files(tmp_path, PAYLOADS)
    truncated = rec.read_bytes()[:-3]
    with pytest.raises(FramingError) as caught:
        list(iter_records(truncated))
    assert caught.value.offset == offsets[-1]


def test_framing_error_escapes_a_mapped_file(tmp_path: Path) -> None:
    """The FramingError, not a BufferError from closing an mmap with a live export, reaches the caller."""
    rec, _, offsets = write_files(tmp_path, PAYLOADS)
    rec.write_bytes(rec.read_bytes()[:-3])
    with pytest.raises(FramingError) as caught:
        with mapped(rec) as data:
            list(iter_records(data))
    assert caught.value.offset == offsets[-1]


def test_iter_records_reports_garbage_between_records(tmp_path: Path) -> None:
    rec, _, offsets = write_files(tmp_path, PAYLOADS[:3])
    data = bytearray(rec.read_bytes())
    data[offsets[2]] ^= 0xFF
    records = iter_records(bytes(data))
    assert next(records)[1] == PAYLOADS[0]
    assert next(records)[1] == PAYLOADS[1]
    with pytest.raises(FramingError, match="bad magic") as caught:
        next(records)
    assert caught.value.offset == offsets[2]


def test_read_idx_names_the_bad_line(tmp_path: Path) -> None:
    idx = tmp_path / "bad.idx"
    idx.write_bytes(b"0\t0\n\n1\t16\n2 32\n")
    with pytest.raises(ValueError, match=r"bad\.idx:4: "):
        read_idx(idx)


def test_write_idx_atomic(tmp_path: Path) -> None:
    idx = tmp_path / "w.idx"
    write_idx_atomic(idx, [(0, 0), (5, 1024)])
    assert idx.read_bytes() == b"0\t0\n5\t1024\n"
    assert read_idx(idx) == [(0, 0), (5, 1024)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.idx"]  # no temporary left
