"""The RecordIO byte layer: framing and magic escaping, the 2**29 limit, IRHeader, `.idx` and `.lst` lines.

Expected bytes are written out literally (hex), never produced by the code under test.  Hex words below are
little-endian as they sit in the file: the magic 0xced7230a is ``0a23d7ce``; lrec ``LLLLLLFx`` where the top
three bits of the last byte hold the cflag: ``..00`` whole (0), ``..20`` first (1), ``..40`` middle (2),
``..60`` last (3).
"""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recordio_pack.format import (
    IRHEADER, MAGIC, MAGIC_BYTES, MAX_PAYLOAD, Damage, FramingError, Frame, IRHeader, LstEntry, decode_lrec,
    encode_lrec, find_record_start, format_idx_line, format_lst_line, frame, looks_like_idx, lst_path_problem,
    pack_payload, padded, parse_idx_line, parse_lst_line, read_frame, read_record, scan_frames,
    unescaped_magics, unpack_payload,
)

M = "0a23d7ce"  # the magic as file bytes
MAGIC_LITERAL = bytes.fromhex(M)


def hexbytes(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


# (name, payload, the exact file bytes of its record)
FIXTURES = [
    ("plain record with 3 padding bytes",
     b"abcde",
     hexbytes(f"{M} 05000000 6162636465 000000")),
    ("aligned payload, no padding",
     b"abcdefgh",
     hexbytes(f"{M} 08000000 6162636465666768")),
    ("empty payload",
     b"",
     hexbytes(f"{M} 00000000")),
    ("magic at payload offset 0",
     MAGIC_LITERAL + b"wxyz",
     hexbytes(f"{M} 00000020 {M} 04000060 7778797a")),
    ("magic as the last aligned word",
     b"abcd" + MAGIC_LITERAL,
     hexbytes(f"{M} 04000020 61626364 {M} 00000060")),
    ("magic as the last aligned word, then a 2-byte tail and 2 padding bytes",
     b"abcd" + MAGIC_LITERAL + b"xy",
     hexbytes(f"{M} 04000020 61626364 {M} 02000060 7879 0000")),
    ("magic twice in a row: zero-length middle segment",
     b"abcd" + MAGIC_LITERAL + MAGIC_LITERAL + b"efgh",
     hexbytes(f"{M} 04000020 61626364 {M} 00000040 {M} 04000060 65666768")),
    ("payload that is exactly the magic: two zero-length segments",
     MAGIC_LITERAL,
     hexbytes(f"{M} 00000020 {M} 00000060")),
    ("payload of three magics: first, two middle... all zero-length",
     MAGIC_LITERAL * 3,
     hexbytes(f"{M} 00000020 {M} 00000040 {M} 00000040 {M} 00000060")),
    ("magic at unaligned offset 2 is not escaped",
     b"ab" + MAGIC_LITERAL + b"cd",
     hexbytes(f"{M} 08000000 6162 {M} 6364")),
    ("magic at unaligned offsets 1 and 3 is not escaped",
     b"a" + MAGIC_LITERAL + b"bc" + MAGIC_LITERAL + b"d",
     hexbytes(f"{M} 0c000000 61 {M} 6263 {M} 64")),
    ("unaligned length with a magic-like prefix in the tail",
     b"abcd" + MAGIC_LITERAL[:3],
     hexbytes(f"{M} 07000000 61626364 0a23d7 00")),
    ("magic at an aligned offset in the middle of an unaligned payload",
     b"abcdefgh" + MAGIC_LITERAL + b"ijklm",
     hexbytes(f"{M} 08000020 6162636465666768 {M} 05000060 696a6b6c6d 000000")),
]


def test_magic_constant_is_little_endian_0xced7230a() -> None:
    assert MAGIC == 0xCED7230A
    assert MAGIC_BYTES == MAGIC_LITERAL


@pytest.mark.parametrize("name, payload, expected", FIXTURES, ids=[f[0] for f in FIXTURES])
def test_frame_writes_the_exact_bytes(name: str, payload: bytes, expected: bytes) -> None:
    assert frame(payload) == expected


@pytest.mark.parametrize("name, payload, expected", FIXTURES, ids=[f[0] for f in FIXTURES])
def test_read_record_returns_the_payload(name: str, payload: bytes, expected: bytes) -> None:
    assert read_record(expected, 0) == (payload, len(expected))
    # the same record behind another one, read through a memoryview
    leading = hexbytes(f"{M} 01000000 7a000000")
    stream = memoryview(leading + expected + leading)
    assert read_record(stream, len(leading)) == (payload, len(leading) + len(expected))


def test_all_fixtures_back_to_back_read_in_order() -> None:
    stream = b"".join(expected for _, _, expected in FIXTURES)
    offset = 0
    for _, payload, _ in FIXTURES:
        got, offset = read_record(stream, offset)
        assert got == payload
    assert offset == len(stream)


def test_frame_accepts_bytearray_and_memoryview() -> None:
    payload = b"abcd" + MAGIC_LITERAL + b"xy"
    assert frame(bytearray(payload)) == frame(payload) == frame(memoryview(payload))


# --- lrec and the 2**29 limit ---------------------------------------------------------------------------

def test_encode_decode_lrec() -> None:
    assert encode_lrec(0, 5) == 0x00000005
    assert encode_lrec(1, 4) == 0x20000004
    assert encode_lrec(2, 0) == 0x40000000
    assert encode_lrec(3, 2) == 0x60000002
    assert decode_lrec(0x60000002) == (3, 2)
    assert decode_lrec(0x1FFFFFFF) == (0, 2**29 - 1)


def test_max_payload_is_one_below_2_pow_29() -> None:
    assert MAX_PAYLOAD == 2**29 - 1
    assert encode_lrec(0, MAX_PAYLOAD) == 0x1FFFFFFF
    assert encode_lrec(3, MAX_PAYLOAD) == 0x7FFFFFFF
    with pytest.raises(ValueError, match="29 bits"):
        encode_lrec(0, 2**29)
    with pytest.raises(ValueError, match="cflag"):
        encode_lrec(4, 0)
    with pytest.raises(ValueError):
        encode_lrec(0, -1)


def test_frame_rejects_a_payload_of_2_pow_29_bytes() -> None:
    # bytes(n) is calloc-backed: the 512 MiB are never touched, and frame() checks the length first.
    payload = bytes(2**29)
    with pytest.raises(ValueError, match=r"536870912 bytes exceeds the RecordIO limit"):
        frame(payload)
    with pytest.raises(ValueError, match="exceeds"):
        frame(memoryview(payload))
    del payload


def test_a_header_announcing_max_payload_is_decoded_but_reported_truncated() -> None:
    data = hexbytes(f"{M} ffffff1f") + b"\0" * 16
    with pytest.raises(FramingError, match=f"segment of {MAX_PAYLOAD} bytes runs past the end") as caught:
        read_record(data, 0)
    assert caught.value.offset == 0


def test_padded() -> None:
    assert [padded(n) for n in range(9)] == [0, 4, 4, 4, 4, 8, 8, 8, 8]


# --- FramingError and its offset --------------------------------------------------------------------------

GOOD = hexbytes(f"{M} 05000000 6162636465 000000")  # 16 bytes


@pytest.mark.parametrize("data, start, offset, message", [
    (hexbytes("0b23d7ce 05000000 6162636465 000000"), 0, 0, "bad magic 0xced7230b"),
    (GOOD + hexbytes("00000000 05000000 6162636465 000000"), 16, 16, "bad magic 0x00000000"),
    (hexbytes(f"{M} 0500"), 0, 0, "truncated record header"),
    (GOOD + hexbytes(f"{M}"), 16, 16, "truncated record header"),
    (hexbytes(f"{M} 08000000 61626364"), 0, 0, "runs past the end"),
    (hexbytes(f"{M} 05000000 6162636465 0000"), 0, 0, "runs past the end"),  # padding missing
    (hexbytes(f"{M} 05000000 6162636465 000100"), 0, 13, "non-zero padding"),
    (GOOD + hexbytes(f"{M} 01000000 7a0000ff"), 16, 25, "non-zero padding"),
    (hexbytes(f"{M} 04000040 61626364 {M} 00000060"), 0, 0, "segment flag 2 at the start"),
    (hexbytes(f"{M} 04000060 61626364"), 0, 0, "segment flag 3 at the start"),
    (hexbytes(f"{M} 04000020 61626364 {M} 04000000 65666768"), 0, 12, "segment flag 0 where a continuation"),
    (hexbytes(f"{M} 04000020 61626364 {M} 04000020 65666768"), 0, 12, "segment flag 1 where a continuation"),
    (hexbytes(f"{M} 04000020 61626364"), 0, 12, "truncated record header"),  # split record cut after seg 1
    (hexbytes(f"{M} 04000020 61626364 0b23d7ce 00000060"), 0, 12, "bad magic"),
    (hexbytes(f"{M} 02000020 6162 0000 {M} 00000060"), 0, 0, "split segment of unaligned length 2"),
])
def test_framing_errors_name_the_offset(data: bytes, start: int, offset: int, message: str) -> None:
    with pytest.raises(FramingError, match=message) as caught:
        read_record(data, start)
    assert caught.value.offset == offset
    assert str(caught.value).endswith(f"at byte {offset}")
    assert isinstance(caught.value, ValueError)


# --- IRHeader payloads ---------------------------------------------------------------------------------------

def test_single_label_payload_bytes() -> None:
    payload = pack_payload(IRHeader((5.0,), id=7, id2=0), b"JPEG")
    assert payload == hexbytes("00000000 0000a040 0700000000000000 0000000000000000") + b"JPEG"
    header, image = unpack_payload(payload)
    assert header == IRHeader((5.0,), 7, 0)
    assert header.label == 5.0 and not header.vector
    assert bytes(image) == b"JPEG"


def test_label_vector_payload_bytes() -> None:
    header = IRHeader((1.5, 2.0, 3.0), id=0x0102030405060708, id2=9, vector=True)
    payload = pack_payload(header, b"img")
    assert payload == hexbytes(
        "03000000"  # flag = label count
        " 00000000"  # label field unused (0.0), as mxnet.recordio.pack writes it
        " 0807060504030201 0900000000000000"
        " 0000c03f 00000040 00004040"  # 1.5, 2.0, 3.0 as float32
    ) + b"img"
    assert IRHEADER.size == 24
    got, image = unpack_payload(payload)
    assert got == header
    assert got.label == 1.5
    assert bytes(image) == b"img"


def test_one_label_as_a_vector_has_flag_1() -> None:
    payload = pack_payload(IRHeader((4.0,), id=1, vector=True), b"x")
    assert payload[:4] == hexbytes("01000000")
    assert payload[24:28] == hexbytes("00008040")
    header, image = unpack_payload(payload)
    assert header.vector and header.labels == (4.0,)
    assert bytes(image) == b"x"


def test_labels_are_float32() -> None:
    header, _ = unpack_payload(pack_payload(IRHeader((0.1, 1e10), vector=True), b""))
    assert header.labels == (struct.unpack("<f", struct.pack("<f", 0.1))[0], 1e10)
    header, _ = unpack_payload(pack_payload(IRHeader((0.1,)), b""))
    assert header.labels[0] != 0.1 and math.isclose(header.labels[0], 0.1, rel_tol=1e-7)


def test_unpack_payload_rejects_short_payloads() -> None:
    with pytest.raises(ValueError, match="shorter than the 24-byte IRHeader"):
        unpack_payload(b"\0" * 23)
    truncated_vector = hexbytes("03000000 00000000") + bytes(16) + hexbytes("0000c03f")
    with pytest.raises(ValueError, match="flag 3 announces more labels"):
        unpack_payload(truncated_vector)


def test_image_with_magic_survives_header_and_framing() -> None:
    # The IRHeader is 24 bytes, so image offset 0 is payload offset 24: aligned, and escaped.
    image = MAGIC_LITERAL + b"abcd" + MAGIC_LITERAL
    payload = pack_payload(IRHeader((2.0,), id=3), image)
    framed = frame(payload)
    assert framed.count(MAGIC_LITERAL) == 3  # the three headers; the image's magics were cut out
    got, end = read_record(framed, 0)
    assert end == len(framed)
    header, body = unpack_payload(got)
    assert header.labels == (2.0,) and bytes(body) == image


# --- .idx lines -------------------------------------------------------------------------------------------------

def test_idx_lines() -> None:
    assert format_idx_line(0, 0) == "0\t0\n"
    assert format_idx_line(12, 123456789012) == "12\t123456789012\n"
    assert parse_idx_line("12\t123456789012\n") == (12, 123456789012)
    assert parse_idx_line("3\t96\r\n") == (3, 96)
    assert parse_idx_line("3\t96") == (3, 96)
    for bad in ("3 96\n", "3\t96\t1\n", "x\t96\n", "\n"):
        with pytest.raises(ValueError):
            parse_idx_line(bad)


# --- .lst lines -------------------------------------------------------------------------------------------------

def test_lst_line_formats_labels_like_im2rec() -> None:
    assert format_lst_line(LstEntry(5, (1.0,), "n01440764/a.JPEG")) == "5\t1.000000\tn01440764/a.JPEG\n"
    line = format_lst_line(LstEntry(0, (1.0, 2.5, -3.0), "x y/z.jpg"))
    assert line == "0\t1.000000\t2.500000\t-3.000000\tx y/z.jpg\n"


def test_lst_line_parses_im2rec_output() -> None:
    assert parse_lst_line("5\t1.000000\tn01440764/a.JPEG\n") == LstEntry(5, (1.0,), "n01440764/a.JPEG")
    assert parse_lst_line("7\t1.000000\t2.500000\tdir/b.png\n") == LstEntry(7, (1.0, 2.5), "dir/b.png")
    # im2rec strips the line and every field
    assert parse_lst_line("  8 \t 3.000000 \t 4 \t dir/c d.jpg \r\n") == LstEntry(8, (3.0, 4.0), "dir/c d.jpg")


def test_lst_line_round_trip() -> None:
    entry = LstEntry(42, (0.0, 17.0, 999.5), "n02/ILSVRC2012_val_00000001.JPEG")
    assert parse_lst_line(format_lst_line(entry)) == entry


@pytest.mark.parametrize("bad", ["5\tpath.jpg\n", "\n", "x\t1.0\tp.jpg", "1\tabc\tp.jpg", "1\tnan\tp.jpg",
                                 "1\tinf\tp.jpg"])
def test_lst_line_rejects_malformed(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_lst_line(bad)


@pytest.mark.parametrize("path, word", [("a\tb.jpg", "tab"), ("a\nb.jpg", "line break"),
                                        ("a\rb.jpg", "line break")])
def test_lst_rejects_paths_it_cannot_hold(path: str, word: str) -> None:
    problem = lst_path_problem(path)
    assert problem is not None and word in problem
    with pytest.raises(ValueError, match=word) as caught:
        format_lst_line(LstEntry(1, (0.0,), path))
    assert repr(path) in str(caught.value)  # the message names the offending path
    assert lst_path_problem("ok dir/ü.jpg") is None


# --- property-based round trips ------------------------------------------------------------------------------

def reference_frame(payload: bytes) -> bytes:
    """An independent, word-by-word reading of dmlc-core's RecordIOWriter::WriteRecord."""
    out = bytearray()
    start = 0
    for i in range(0, len(payload) - len(payload) % 4, 4):
        if payload[i:i + 4] == MAGIC_LITERAL:
            out += MAGIC_LITERAL + struct.pack("<I", ((1 if start == 0 else 2) << 29) | (i - start))
            out += payload[start:i]
            start = i + 4
    out += MAGIC_LITERAL + struct.pack("<I", ((3 if start else 0) << 29) | (len(payload) - start))
    out += payload[start:]
    out += b"\0" * (-len(payload) % 4)
    return bytes(out)


def test_reference_frame_agrees_with_the_fixtures() -> None:
    for _, payload, expected in FIXTURES:
        assert reference_frame(payload) == expected


CHUNK = st.one_of(
    st.just(MAGIC_LITERAL),
    st.just(MAGIC_LITERAL[:3]),
    st.just(MAGIC_LITERAL[1:]),
    st.binary(min_size=0, max_size=12),
    st.binary(min_size=4, max_size=4).map(lambda word: word[:2] + MAGIC_LITERAL + word[2:]),
)


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    """Random chunks with magics sprinkled in; half the time, also at forced aligned positions."""
    data = bytearray(b"".join(draw(st.lists(CHUNK, max_size=12))))
    if data and draw(st.booleans()):
        for word in draw(st.lists(st.integers(0, len(data) // 4), max_size=4)):
            data[4 * word:4 * word + 4] = MAGIC_LITERAL
    return bytes(data)


def aligned_magic_offsets(data: bytes) -> list[int]:
    return [i for i in range(0, len(data) - 3, 4) if data[i:i + 4] == MAGIC_LITERAL]


@settings(max_examples=200, deadline=None)
@given(payloads())
def test_frame_matches_the_reference_and_round_trips(payload: bytes) -> None:
    framed = frame(payload)
    assert framed == reference_frame(payload)
    assert len(framed) % 4 == 0
    assert read_record(framed, 0) == (payload, len(framed))


@settings(max_examples=200, deadline=None)
@given(st.lists(payloads(), max_size=6))
def test_a_stream_resyncs_only_on_record_headers(records: list[bytes]) -> None:
    """Every aligned magic word in a stream is a segment header: a reader scanning for the magic at
    aligned offsets never lands inside a payload."""
    stream = b"".join(frame(payload) for payload in records)
    headers = []
    offset = 0
    for payload in records:
        got, end = read_record(stream, offset)
        assert got == payload
        position = offset
        while position < end:  # walk the segment headers of this record
            headers.append(position)
            _, length = decode_lrec(struct.unpack_from("<I", stream, position + 4)[0])
            position += 8 + padded(length)
        offset = end
    assert offset == len(stream)
    assert aligned_magic_offsets(stream) == headers


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=1, max_size=8),
       st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.booleans(), payloads())
def test_payload_round_trip(labels: list[float], record_id: int, record_id2: int, vector: bool,
                            image: bytes) -> None:
    labels = labels if vector else labels[:1]
    header = IRHeader(tuple(labels), record_id, record_id2, vector=vector)
    got, body = unpack_payload(read_record(frame(pack_payload(header, image)), 0)[0])
    assert got == header
    assert bytes(body) == image


# --- damage and resynchronisation ----------------------------------------------------------------------------

ABCD = hexbytes(f"{M} 08000000 6162636465666768")  # 16 bytes, whole
BROKEN = hexbytes("0b23d7ce 08000000 6162636465666768")  # the same with a damaged magic
SPLIT = hexbytes(f"{M} 04000020 61626364 {M} 04000060 65666768")  # 24 bytes: first + last segment


def kinds(data: bytes) -> list[tuple[str, int, int]]:
    return [(type(item).__name__, item.start, item.end) for item in scan_frames(data)]


def test_scan_of_a_clean_stream_is_its_records() -> None:
    stream = ABCD + SPLIT + ABCD
    assert kinds(stream) == [("Frame", 0, 16), ("Frame", 16, 40), ("Frame", 40, 56)]
    assert [item.payload for item in scan_frames(stream)] == [b"abcdefgh", b"abcd" + MAGIC_LITERAL + b"efgh",
                                                             b"abcdefgh"]
    assert read_frame(stream, 16) == Frame(16, 40, (16, 28), b"abcd" + MAGIC_LITERAL + b"efgh")


def test_scan_resynchronises_after_a_damaged_header() -> None:
    items = list(scan_frames(ABCD + BROKEN + ABCD))
    assert kinds(ABCD + BROKEN + ABCD) == [("Frame", 0, 16), ("Damage", 16, 32), ("Frame", 32, 48)]
    assert isinstance(items[1], Damage) and items[1].error.offset == 16
    assert items[1].describe() == "bytes 16..32 (16 bytes) hold no readable record (bad magic 0xced7230b at byte 16)"


def test_scan_skips_the_rest_of_a_split_record_whose_middle_header_is_damaged() -> None:
    damaged = SPLIT[:12] + b"\x0b" + SPLIT[13:]
    assert kinds(damaged + ABCD) == [("Damage", 0, 24), ("Frame", 24, 40)]
    assert find_record_start(SPLIT + ABCD, 4) == 24  # the last segment's header is no record start
    assert list(scan_frames(damaged + ABCD))[0].describe().endswith(
        "(reading the record at byte 0: bad magic 0xced7230b at byte 12)")


def test_scan_finds_a_length_that_runs_over_the_next_record() -> None:
    overrun = hexbytes(f"{M} 1c000000") + ABCD[8:]  # length 28: over the next record and into the one after
    items = list(scan_frames(overrun + ABCD + ABCD))
    assert kinds(overrun + ABCD + ABCD) == [("Damage", 0, 16), ("Frame", 16, 32), ("Frame", 32, 48)]
    assert "record length runs over the record that starts at byte 16" in str(items[0].error)


def test_scan_of_a_truncated_stream_ends_in_damage() -> None:
    assert kinds(ABCD + ABCD[:11]) == [("Frame", 0, 16), ("Damage", 16, 27)]
    assert kinds(b"garbage, no record at all") == [("Damage", 0, 25)]
    assert kinds(b"") == []


def test_unescaped_magics_ignore_damaged_ranges() -> None:
    assert unescaped_magics(ABCD + BROKEN + ABCD + SPLIT) == []
    raw = hexbytes(f"{M} 08000000 {M} 61626364")  # a writer that skipped escaping
    assert unescaped_magics(ABCD + raw) == [24]


@settings(max_examples=300, deadline=None)
@given(st.lists(payloads(), min_size=2, max_size=6), st.data())
def test_one_damaged_header_costs_at_most_its_own_record(records: list[bytes], data: st.DataObject) -> None:
    """Any byte of one record's first header flipped: every other record is still read, or (a length that lands
    exactly on a later record) shows as an unescaped magic inside the damaged one."""
    starts, stream = [], b""
    for payload in records:
        starts.append(len(stream))
        stream += frame(payload)
    victim = data.draw(st.integers(0, len(records) - 1))
    damaged = bytearray(stream)
    damaged[starts[victim] + data.draw(st.integers(0, 7))] ^= data.draw(st.integers(1, 255))
    found = {item.start: item for item in scan_frames(bytes(damaged))}
    inner = set(unescaped_magics(bytes(damaged)))
    for number, (start, payload) in enumerate(zip(starts, records)):
        if number != victim:
            item = found.get(start)
            assert (isinstance(item, Frame) and item.payload == payload) or start in inner, number


@pytest.mark.parametrize("head, expected", [
    (b"0\t0\n1\t2048\n", True),
    (b"0\t0\r\n1\t20", True),  # a last line cut short by the sniff
    (b"17\t4096", True),
    (MAGIC_LITERAL + b"0\t0\n", False),
    (b"0 0\n", False),
    (b"key\toffset\n", False),
    (b"", False),
    (b"\n\n", False),
])
def test_looks_like_idx(head: bytes, expected: bool) -> None:
    assert looks_like_idx(head) is expected


def test_long_payloads_scanned_as_words_find_the_same_magics_as_find() -> None:
    """Payloads from VECTOR_SCAN_MIN bytes are scanned as aligned uint32 words: the same offsets as a byte-wise
    scan, at every start and stop, aligned or not, and for magics at unaligned offsets (not escaped)."""
    import random

    from recordio_pack import format as fmt

    rng = random.Random(7)
    for trial in range(200):
        size = rng.choice([fmt.VECTOR_SCAN_MIN, fmt.VECTOR_SCAN_MIN + 3, (4 << 20) + 9]) if trial % 20 == 0 \
            else rng.randrange(fmt.VECTOR_SCAN_MIN, 120_000)
        data = bytearray(rng.randbytes(size))
        for _ in range(rng.randrange(0, 12)):
            position = rng.randrange(0, size - 4)
            data[position:position + 4] = fmt.MAGIC_BYTES
        payload = bytes(data)
        start, stop = rng.randrange(0, 40), rng.choice([None, size - rng.randrange(0, 9)])
        limit = size if stop is None else stop
        expected = [offset for offset in range(fmt.padded(start), limit - 3, 4)
                    if payload[offset:offset + 4] == fmt.MAGIC_BYTES]
        assert list(fmt._aligned_magics(payload, start, stop)) == expected, trial
        if trial % 25 == 0:  # an mmap of the same bytes: the same offsets, and it closes mid-scan
            import mmap
            import tempfile

            with tempfile.TemporaryFile() as file:
                file.write(payload)
                file.flush()
                mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
                scan = fmt._aligned_magics(mapped, start, stop)
                assert list(scan) == expected, trial
                first = next(fmt._aligned_magics(mapped, start, stop), None)
                assert first == (expected[0] if expected else None)
                mapped.close()  # no numpy view of it is alive between two offsets
        if stop is None and start == 0:
            framed = fmt.frame(payload)
            assert fmt.read_record(framed, 0) == (payload, len(framed))
