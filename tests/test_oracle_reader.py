"""recordio_pack.reader and recordio_pack.mxnet_compat against mxnet 1.9.1 itself (the oracle virtualenv): what
mxnet's MXIndexedRecordIO and im2rec.py write, InsightFace-style header records included, reads back with the
same headers and bytes; our compat writer's files are byte-identical to mxnet's for the same calls."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import recordio_pack.mxnet_compat as recordio
from conftest import run_oracle
from imagegen import jpeg
from recordio_pack.format import MAGIC_BYTES
from recordio_pack.reader import IndexedRecordIO
from training_data import find_train_python, run_train, with_magic

pytestmark = pytest.mark.oracle

# The calls both sides make: (key, IRHeader fields, payload hex) per write_idx, in order.  Record 0 is an
# InsightFace header (flag 2, label [first identity key, end]), identities follow the images.
def calls() -> list[list]:
    images = [jpeg(24, 16, seed=n) for n in range(4)] + [with_magic(jpeg(20, 20, seed=9)),
                                                          b"\0" * 3 + MAGIC_BYTES * 3 + b"x"]
    made: list[list] = [[0, [2, [7.0, 9.0], 0, 0], ""]]
    made += [[key, [0, float(key % 2), key, 0], data.hex()] for key, data in enumerate(images, 1)]
    made += [[7, [2, [1.0, 4.0], 0, 0], ""], [8, [2, [4.0, 7.0], 0, 0], ""],
             [9, [3, [0.5, 1.5, 2.5], 9, 3], b"vector".hex()], [10, [0, 2 ** 24, 2 ** 40, 5], b"big".hex()]]
    return made


WRITE_SCRIPT = r"""
import json, sys
import mxnet as mx
import numpy as np
spec, out = json.load(open(sys.argv[1])), sys.argv[2]
writer = mx.recordio.MXIndexedRecordIO(out + "/mx.idx", out + "/mx.rec", "w")
for key, header, data in spec["calls"]:
    writer.write_idx(key, mx.recordio.pack(mx.recordio.IRHeader(*header), bytes.fromhex(data)))
writer.close()
plain = mx.recordio.MXRecordIO(out + "/plain.rec", "w")
for key, header, data in spec["calls"]:
    plain.write(mx.recordio.pack(mx.recordio.IRHeader(*header), bytes.fromhex(data)))
plain.close()
image = (np.arange(30 * 40 * 3).reshape(30, 40, 3) * 7 % 256).astype(np.uint8)
images = mx.recordio.MXIndexedRecordIO(out + "/img.idx", out + "/img.rec", "w")
images.write_idx(0, mx.recordio.pack_img(mx.recordio.IRHeader(0, 3.0, 1, 0), image, quality=90))
images.write_idx(1, mx.recordio.pack_img(mx.recordio.IRHeader(0, [1.0, 2.0], 2, 0), image, img_fmt=".png", quality=3))
images.close()
# what mxnet reads back, per file: key, header and the image bytes' SHA-256
import hashlib
read = {}
for name in ("mx", "img"):
    reader = mx.recordio.MXIndexedRecordIO(out + "/" + name + ".idx", out + "/" + name + ".rec", "r")
    rows = []
    for key in reader.keys:
        header, data = mx.recordio.unpack(reader.read_idx(key))
        label = header.label.tolist() if header.flag > 0 else [float(header.label)]
        rows.append([key, int(header.flag), label, int(header.id), int(header.id2), hashlib.sha256(data).hexdigest()])
    read[name] = rows
print(json.dumps(read))
"""

IM2REC_SCRIPT = r"""
import os, runpy, sys
import mxnet as mx
im2rec = os.path.join(os.path.dirname(mx.__file__), "tools", "im2rec.py")
prefix, root = sys.argv[1], sys.argv[2]
for args in (["--list", "--recursive", prefix, root], ["--quality", "90", "--resize", "20", prefix, root]):
    sys.argv = [im2rec] + args
    namespace = runpy.run_path(im2rec, run_name="__main__")
    if "record" in namespace:
        namespace["record"].close()
reader = mx.recordio.MXIndexedRecordIO(prefix + ".idx", prefix + ".rec", "r")
import hashlib, json
rows = []
for key in reader.keys:
    header, data = mx.recordio.unpack(reader.read_idx(key))
    rows.append([key, int(header.flag), [float(header.label)], int(header.id), int(header.id2),
                 hashlib.sha256(data).hexdigest()])
print(json.dumps(rows))
"""


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def our_rows(idx: Path, rec: Path) -> list[list]:
    """What our reader returns for each record, in the shape the scripts print."""
    reader = IndexedRecordIO(rec, index=idx)
    rows = []
    for key in reader.keys():
        header, image = reader.unpack(key)
        flag = len(header.labels) if header.vector else 0
        rows.append([key, flag, list(header.labels), header.id, header.id2, sha(image)])
    return rows


def compat_rows(idx: Path, rec: Path) -> list[list]:
    """The same through mxnet_compat, used as InsightFace uses mx.recordio."""
    reader = recordio.MXIndexedRecordIO(str(idx), str(rec), "r")
    rows = []
    for key in reader.keys:
        header, image = recordio.unpack(reader.read_idx(key))
        label = header.label.tolist() if header.flag > 0 else [float(header.label)]
        rows.append([key, int(header.flag), label, int(header.id), int(header.id2), sha(image)])
    return rows


@pytest.fixture(scope="module")
def mxnet_files(mxnet_python: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("mxnet-written")
    (out / "spec.json").write_text(json.dumps({"calls": calls()}))
    read = json.loads(run_oracle(mxnet_python, WRITE_SCRIPT, str(out / "spec.json"), str(out)))
    return out, read


def test_our_reader_returns_the_headers_and_bytes_mxnet_reads(mxnet_files: tuple[Path, dict]) -> None:
    out, read = mxnet_files
    for name in ("mx", "img"):
        assert our_rows(out / f"{name}.idx", out / f"{name}.rec") == read[name]
        assert compat_rows(out / f"{name}.idx", out / f"{name}.rec") == read[name]
    header = read["mx"][0]
    assert header[:3] == [0, 2, [7.0, 9.0]]  # the InsightFace header record, as mxnet itself sees it


def test_compat_writer_is_byte_identical_to_mxnet(mxnet_files: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = mxnet_files
    writer = recordio.MXIndexedRecordIO(str(tmp_path / "mx.idx"), str(tmp_path / "mx.rec"), "w")
    plain = recordio.MXRecordIO(str(tmp_path / "plain.rec"), "w")
    for key, header, data in calls():
        payload = recordio.pack(recordio.IRHeader(*header), bytes.fromhex(data))
        writer.write_idx(key, payload)
        plain.write(payload)
    writer.close()
    plain.close()
    for name in ("mx.rec", "mx.idx", "plain.rec"):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name
    assert (out / "mx.rec").read_bytes().count(MAGIC_BYTES) > len(calls())  # escaping was exercised


PACK_IMG_SCRIPT = r"""
import sys
import numpy as np
import recordio_pack.mxnet_compat as recordio
out = sys.argv[1]
image = (np.arange(30 * 40 * 3).reshape(30, 40, 3) * 7 % 256).astype(np.uint8)
images = recordio.MXIndexedRecordIO(out + "/img.idx", out + "/img.rec", "w")
images.write_idx(0, recordio.pack_img(recordio.IRHeader(0, 3.0, 1, 0), image, quality=90))
images.write_idx(1, recordio.pack_img(recordio.IRHeader(0, [1.0, 2.0], 2, 0), image, img_fmt=".png", quality=3))
images.close()
"""


def test_compat_pack_img_is_byte_identical_to_mxnet_with_the_same_opencv(
        mxnet_files: tuple[Path, dict], tmp_path: Path) -> None:
    """pack_img's bytes are OpenCV's encoder's: compared in the training env, whose OpenCV is the oracle's."""
    out, _ = mxnet_files
    run_train(find_train_python(), PACK_IMG_SCRIPT, str(tmp_path))
    for name in ("img.rec", "img.idx"):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name
    header, image = recordio.unpack_img(IndexedRecordIO(out / "img.rec").read(0))
    assert header.label == 3.0 and image.shape == (30, 40, 3)


def test_our_reader_reads_what_im2rec_wrote(mxnet_python: str, tmp_path: Path) -> None:
    for label in range(2):
        folder = tmp_path / "tree" / f"class{label}"
        folder.mkdir(parents=True)
        for number in range(3):
            (folder / f"{number}.jpg").write_bytes(jpeg(40, 30, seed=label * 10 + number))
    prefix = tmp_path / "im2rec"
    printed = run_oracle(mxnet_python, IM2REC_SCRIPT, str(prefix), str(tmp_path / "tree"))
    read = json.loads(printed.splitlines()[-1])  # after what im2rec itself prints
    assert len(read) == 6
    rec, idx = prefix.with_suffix(".rec"), prefix.with_suffix(".idx")
    assert our_rows(idx, rec) == read
    assert compat_rows(idx, rec) == read
    assert sorted(row[2][0] for row in read) == [0.0] * 3 + [1.0] * 3
    assert np.array_equal(recordio.unpack_img(IndexedRecordIO(rec, index=idx).read(read[0][0]))[1].shape[:1], [20])
