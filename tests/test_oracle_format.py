"""The RecordIO byte layer against the real thing: mxnet 1.9.1 (dmlc-core's C++ RecordIO) in the oracle venv.

(a) mxnet reads what our RecordWriter wrote; (b) we read what mxnet wrote, and our framing, IRHeader packing
and `.idx` lines are byte-identical to mxnet's files.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import struct
from pathlib import Path

import pytest

from conftest import run_oracle
from recordio_pack.format import MAGIC_BYTES, IRHeader, frame, pack_payload, unpack_payload
from recordio_pack.recordio import RecordWriter, iter_records, mapped, read_idx

pytestmark = pytest.mark.oracle


def f32(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0]


def sprinkled(seed: int, size: int, magics: int) -> bytes:
    """Random bytes with ``magics`` magic words at aligned and unaligned offsets (and a run of three)."""
    rng = random.Random(seed)
    data = bytearray(rng.getrandbits(8) for _ in range(size))
    for _ in range(magics):
        position = rng.randrange(0, size - 4)
        data[position:position + 4] = MAGIC_BYTES
    data[16:28] = MAGIC_BYTES * 3
    return bytes(data)


# Images chosen so that the payload (24-byte IRHeader + labels + image, all multiples of 4 before the
# image) has magics at aligned offsets: at the image start, at its end, consecutive, the whole image, many.
IMAGES = [
    b"\xff\xd8\xff\xe0 plain jpeg-ish bytes \xff\xd9",
    MAGIC_BYTES + b"\xff\xd8 magic at image offset 0",
    b"ends with magic!" + MAGIC_BYTES,
    b"abcd" + MAGIC_BYTES + MAGIC_BYTES + b"efg",
    MAGIC_BYTES,
    MAGIC_BYTES * 4,
    b"x" + MAGIC_BYTES + b"yz",  # unaligned: not escaped
    b"",
    sprinkled(1, 4096, 40),
    sprinkled(2, 65537, 300),
]
HEADERS = [
    IRHeader((0.0,), id=0),
    IRHeader((1.0,), id=1),
    IRHeader((999.0,), id=2, id2=7),
    IRHeader((-3.25,), id=2**63 + 5),
    IRHeader((2.0, 5.0, 7.5), id=4, vector=True),
    IRHeader((0.5,), id=5, vector=True),
    IRHeader((f32(0.1), f32(1e-3), 42.0, 1e6, -1.0), id=6, vector=True),
    IRHeader((3.0,), id=7),
    IRHeader((17.0, 18.0), id=8, vector=True),
    IRHeader((f32(123.456),), id=9),
]
KEYS = [0, 1, 2, 3, 4, 5, 6, 7, 100, 1000001]  # the index maps keys, not positions

READ_SCRIPT = r"""
import hashlib, json, sys
import mxnet as mx
idx_path, rec_path = sys.argv[1:3]
indexed = []
record = mx.recordio.MXIndexedRecordIO(idx_path, rec_path, 'r')
for key in record.keys:
    header, image = mx.recordio.unpack(record.read_idx(key))
    label = header.label.tolist() if header.flag > 0 else float(header.label)
    indexed.append({"key": key, "flag": int(header.flag), "label": label, "id": int(header.id),
                    "id2": int(header.id2), "image": image.hex()})
record.close()
sequential = []
reader = mx.recordio.MXRecordIO(rec_path, 'r')
while True:
    payload = reader.read()
    if payload is None:
        break
    sequential.append(hashlib.sha256(payload).hexdigest())
reader.close()
print(json.dumps({"indexed": indexed, "sequential": sequential}))
"""


def test_mxnet_reads_what_we_write(mxnet_python: str, tmp_path: Path) -> None:
    rec, idx = tmp_path / "ours.rec", tmp_path / "ours.idx"
    payloads = [pack_payload(header, image) for header, image in zip(HEADERS, IMAGES)]
    with open(rec, "wb") as rec_stream, open(idx, "wb") as idx_stream:
        writer = RecordWriter(rec_stream, idx_stream)
        for key, payload in zip(KEYS, payloads):
            writer.write(key, payload)
    escaped = sum(frame(payload).count(MAGIC_BYTES) - 1 for payload in payloads)
    assert escaped >= 20  # the test really exercises escaping

    result = json.loads(run_oracle(mxnet_python, READ_SCRIPT, str(idx), str(rec)))

    assert [entry["key"] for entry in result["indexed"]] == KEYS
    for entry, header, image in zip(result["indexed"], HEADERS, IMAGES):
        assert entry["image"] == image.hex(), f"image bytes of key {entry['key']}"
        assert entry["id"] == header.id and entry["id2"] == header.id2
        if header.vector:
            assert entry["flag"] == len(header.labels)
            assert entry["label"] == list(header.labels)
        else:
            assert entry["flag"] == 0
            assert entry["label"] == header.labels[0]
    assert result["sequential"] == [hashlib.sha256(payload).hexdigest() for payload in payloads]


WRITE_SCRIPT = r"""
import json, sys
import numpy as np
import mxnet as mx
spec_path, idx_path, rec_path = sys.argv[1:4]
spec = json.load(open(spec_path))
record = mx.recordio.MXIndexedRecordIO(idx_path, rec_path, 'w')
for item in spec:
    if item["kind"] == "raw":
        payload = bytes.fromhex(item["payload"])
    else:
        label = item["label"] if item["kind"] == "scalar" else np.array(item["label"], dtype=np.float32)
        header = mx.recordio.IRHeader(0, label, item["id"], item["id2"])
        payload = mx.recordio.pack(header, bytes.fromhex(item["image"]))
    record.write_idx(item["key"], payload)
record.close()
"""

RAW_PAYLOADS = [
    b"",
    b"abcde",
    MAGIC_BYTES,
    MAGIC_BYTES * 3,
    MAGIC_BYTES + b"wxyz",
    b"abcd" + MAGIC_BYTES,
    b"abcd" + MAGIC_BYTES + b"xy",
    b"abcd" + MAGIC_BYTES + MAGIC_BYTES + b"efgh",
    b"ab" + MAGIC_BYTES + b"cd",
    b"abcd" + MAGIC_BYTES[:3],
    sprinkled(3, 10001, 200),
]


def test_we_read_what_mxnet_writes_and_frame_identically(mxnet_python: str, tmp_path: Path) -> None:
    spec: list[dict] = []
    expected: list[tuple[int, bytes, IRHeader | None, bytes | None]] = []  # key, payload, header, image
    for payload in RAW_PAYLOADS:
        key = 10 * len(spec)
        spec.append({"kind": "raw", "key": key, "payload": payload.hex()})
        expected.append((key, payload, None, None))
    for header, image in zip(HEADERS, IMAGES):
        key = 10 * len(spec) + 1
        spec.append({"kind": "vector" if header.vector else "scalar", "key": key, "image": image.hex(),
                     "label": list(header.labels) if header.vector else header.labels[0],
                     "id": header.id, "id2": header.id2})
        expected.append((key, pack_payload(header, image), header, image))
    spec_path, rec, idx = tmp_path / "spec.json", tmp_path / "mx.rec", tmp_path / "mx.idx"
    spec_path.write_text(json.dumps(spec))

    run_oracle(mxnet_python, WRITE_SCRIPT, str(spec_path), str(idx), str(rec))

    # our reader: sequentially, and through the .idx
    with mapped(rec) as data:
        records = list(iter_records(data))
        assert [payload for _, payload in records] == [payload for _, payload, _, _ in expected]
        pairs = read_idx(idx)
        assert [key for key, _ in pairs] == [key for key, _, _, _ in expected]
        assert [offset for _, offset in pairs] == [offset for offset, _ in records]
    for (_, payload), (key, _, header, image) in zip(records, expected):
        if header is not None:
            got_header, got_image = unpack_payload(payload)
            assert got_header == header, f"IRHeader of key {key}"
            assert bytes(got_image) == image

    # our writer: the same bytes as dmlc-core's RecordIOWriter and mxnet's index lines
    ours_rec, ours_idx = io.BytesIO(), io.BytesIO()
    writer = RecordWriter(ours_rec, ours_idx)
    for key, payload, _, _ in expected:
        writer.write(key, payload)
    mx_bytes = rec.read_bytes()
    for (offset, _), (_, payload, _, _) in zip(records, expected):
        framed = frame(payload)
        assert mx_bytes[offset:offset + len(framed)] == framed, f"framing of record at byte {offset}"
    assert ours_rec.getvalue() == mx_bytes
    assert ours_idx.getvalue() == idx.read_bytes()


ITER_SCRIPT = r"""
import json, sys
import mxnet as mx
rec_path, idx_path = sys.argv[1:3]
runs = {}
for name, num_parts, use_idx in (("2 parts, no idx", 2, False), ("3 parts, no idx", 3, False),
                                 ("2 parts, idx", 2, True)):
    parts = []
    for part_index in range(num_parts):
        kwargs = dict(path_imgidx=idx_path) if use_idx else {}
        it = mx.io.ImageRecordIter(path_imgrec=rec_path, data_shape=(3, 16, 16), batch_size=1, shuffle=False,
                                   num_parts=num_parts, part_index=part_index, preprocess_threads=1,
                                   round_batch=False, **kwargs)
        seen = []
        for batch in it:
            if batch.pad:
                continue
            pixels = batch.data[0].asnumpy()[0]
            seen.append([float(batch.label[0].asnumpy()[0])] + [float(c.mean()) for c in pixels])
        parts.append(seen)
    runs[name] = parts
print(json.dumps(runs))
"""


def jpeg_with_magic_comment(color: tuple[int, int, int], words: int) -> bytes:
    """A solid 16x16 JPEG whose COM segment holds ``words`` pairs (magic, lrec 0): placed right after SOI, so
    the magics sit at 4-byte-aligned payload offsets behind the 24-byte IRHeader, and each looks to a
    resyncing reader like the start of a whole record unless it was escaped."""
    import cv2
    import numpy as np

    image = np.zeros((16, 16, 3), np.uint8)
    image[:, :] = color  # BGR
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    body = encoded.tobytes()
    comment = b"\0\0" + (MAGIC_BYTES + b"\0\0\0\0") * words  # 2 bytes: image offset 8 = payload offset 32
    segment = b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment
    return body[:2] + segment + body[2:]


def test_mxnet_image_iterator_resyncs_on_our_escaped_records(mxnet_python: str, tmp_path: Path) -> None:
    """dmlc's RecordIOSplitter (num_parts without an .idx) starts each part at the first aligned magic after
    a byte offset: any unescaped magic in a payload would cut records in two."""
    rec, idx = tmp_path / "escaped.rec", tmp_path / "escaped.idx"
    colors = [((37 * i) % 256, (91 * i + 40) % 256, (53 * i + 200) % 256) for i in range(24)]
    with open(rec, "wb") as rec_stream, open(idx, "wb") as idx_stream:
        writer = RecordWriter(rec_stream, idx_stream)
        for i, color in enumerate(colors):
            image = jpeg_with_magic_comment(color, words=40 + 7 * i)
            writer.write(i, pack_payload(IRHeader((float(i),), id=i), image))

    runs = json.loads(run_oracle(mxnet_python, ITER_SCRIPT, str(rec), str(idx)))

    assert len(runs) == 3
    for name, parts in runs.items():
        assert all(parts), f"{name}: an empty part"
        seen = [item for part in parts for item in part]
        assert sorted(item[0] for item in seen) == [float(i) for i in range(len(colors))], name
        for label, red, green, blue in seen:
            b, g, r = colors[int(label)]
            assert (red, green, blue) == pytest.approx((r, g, b), abs=4), f"{name}: colours of label {label}"
