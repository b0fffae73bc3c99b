"""recordio_pack.reader and recordio_pack.mxnet_compat on shards we packed and files written by hand: every way of
opening a dataset, random access, damage named by file and byte, fork and pickle safety, InsightFace headers."""

from __future__ import annotations

import multiprocessing
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

import recordio_pack.mxnet_compat as recordio
from recordio_pack.format import IRHeader as RecordHeader
from recordio_pack.format import frame, pack_payload, unpack_payload
from recordio_pack.reader import DamagedRecord, IndexedRecordIO, MissingKey, iter_payloads
from recordio_pack.recordio import InputError, NoSuchFile, read_idx
from training_data import Packed, image_tree, pack_tree


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Packed:
    root = tmp_path_factory.mktemp("reader")
    return pack_tree(image_tree(root / "images"), root / "out")


def without_dataset_index(packed: Packed, tmp_path: Path) -> Path:
    """A copy of the dataset as packed before NAME.all.idx existed: not listed, not there."""
    from recordio_pack.manifest import Manifest

    out = tmp_path / "older"
    shutil.copytree(packed.out, out)
    manifest = Manifest.load(out / "data.manifest.json")
    manifest.files = [record for record in manifest.files if record.name != "data.all.idx"]
    manifest.save(out / "data.manifest.json")
    (out / "data.all.idx").unlink()
    return out


def test_every_way_of_opening_a_dataset_reads_every_record_in_shard_order(packed: Packed, tmp_path: Path) -> None:
    older = without_dataset_index(packed, tmp_path)  # then the shards' own indexes are combined
    for path in (packed.out, packed.manifest_path, packed.out / "data.all.idx", older, older / "data.manifest.json"):
        reader = IndexedRecordIO(path)
        assert len(reader) == len(packed.payloads)
        assert reader.keys() == list(range(len(packed.payloads)))
        assert list(reader) == packed.payloads, path
    assert packed.escaped(), "the fixture must hold records that needed escaping"


def test_one_shard_by_its_rec_or_idx_keeps_the_idx_keys(packed: Packed) -> None:
    rec, idx = packed.recs[1], packed.recs[1].with_suffix(".idx")
    first = packed.manifest.shards[0].records
    mine = packed.payloads[first:first + packed.manifest.shards[1].records]
    for reader in (IndexedRecordIO(rec), IndexedRecordIO(idx), IndexedRecordIO(rec, index=idx)):
        assert reader.keys() == list(range(len(mine)))
        assert [reader.read(key) for key in reversed(reader.keys())] == mine[::-1]


def test_random_access_by_key_header_and_location(packed: Packed) -> None:
    reader = IndexedRecordIO(packed.out)
    order = np.random.default_rng(0).permutation(len(reader)).tolist()
    assert [reader.read(key) for key in order] == [packed.payloads[key] for key in order]
    for key in order[:5]:
        header, image = unpack_payload(packed.payloads[key])
        assert reader.header(key) == header
        assert reader.unpack(key) == (header, bytes(image))
    last = len(reader) - 1
    path, offset = reader.locate(last)
    assert path == packed.recs[-1] and offset == read_idx(path.with_suffix(".idx"))[-1][1]
    assert last in reader and len(reader) not in reader
    with pytest.raises(MissingKey):
        reader.read(len(reader))


def test_a_damaged_record_names_the_file_and_byte(packed: Packed, tmp_path: Path) -> None:
    out = tmp_path / "damaged"
    shutil.copytree(packed.out, out)
    rec = out / packed.recs[2].name
    offsets = [offset for _, offset in read_idx(rec.with_suffix(".idx"))]
    data = bytearray(rec.read_bytes())
    data[offsets[1]] ^= 0xFF  # the magic of the shard's second record
    rec.write_bytes(bytes(data))
    reader = IndexedRecordIO(out)
    key = packed.manifest.shards[0].records + packed.manifest.shards[1].records + 1
    assert reader.read(key - 1) == packed.payloads[key - 1]
    with pytest.raises(DamagedRecord) as caught:
        reader.read(key)
    assert str(caught.value).startswith(f"{rec}: record with key {key} at byte {offsets[1]}: bad magic 0x")
    assert (caught.value.path, caught.value.offset) == (str(rec), offsets[1])
    with pytest.raises(DamagedRecord, match=f"{rec}: record at byte {offsets[1]}: bad magic"):
        list(iter_payloads(rec))


def test_sequential_reading_needs_no_index(packed: Packed, tmp_path: Path) -> None:
    rec = tmp_path / "alone.rec"
    shutil.copy(packed.recs[0], rec)
    count = packed.manifest.shards[0].records
    assert list(iter_payloads(rec)) == packed.payloads[:count]
    offsets = [offset for _, offset in read_idx(packed.recs[0].with_suffix(".idx"))]
    assert list(iter_payloads(rec, offsets[2], 3)) == packed.payloads[2:5]
    with pytest.raises(InputError, match=r"alone\.idx: missing; rebuild it with `recordio-pack index"):
        IndexedRecordIO(rec)


def test_missing_paths_and_several_datasets_are_refused_by_name(packed: Packed, tmp_path: Path) -> None:
    with pytest.raises(NoSuchFile, match="nothing.rec: no such file"):
        IndexedRecordIO(tmp_path / "nothing.rec")
    both = tmp_path / "both"
    shutil.copytree(packed.out, both)
    pack_tree(image_tree(tmp_path / "more", classes=2, per_class=2), both, name="other", num_shards=1)
    with pytest.raises(InputError, match="holds 2 datasets; open one of their manifests"):
        IndexedRecordIO(both)
    assert len(IndexedRecordIO(both / "other.manifest.json")) == 4


def _read_in_child(reader: IndexedRecordIO, keys: list[int], queue: multiprocessing.Queue) -> None:
    queue.put([reader.read(key) for key in keys])


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_reader_used_before_fork_or_pickled_reads_in_child_processes(packed: Packed, method: str) -> None:
    reader = IndexedRecordIO(packed.out)
    keys = list(range(0, len(reader), 3))
    assert [reader.read(key) for key in keys] == [packed.payloads[key] for key in keys]  # maps every shard
    context = multiprocessing.get_context(method)
    queue = context.Queue()
    process = context.Process(target=_read_in_child, args=(reader, keys, queue))
    process.start()
    got = queue.get(timeout=60)
    process.join(60)
    assert process.exitcode == 0 and got == [packed.payloads[key] for key in keys]
    assert pickle.loads(pickle.dumps(reader)).read(keys[-1]) == packed.payloads[keys[-1]]
    assert reader.read(keys[0]) == packed.payloads[keys[0]]  # the parent's maps are still good


# ---------------------------------------------------------------- mxnet_compat

def test_compat_reads_our_shards_as_mxnet_does(packed: Packed) -> None:
    shard = packed.manifest.shards[0]
    rec = recordio.MXIndexedRecordIO(str(packed.out / shard.idx.name), str(packed.out / shard.rec.name), "r")
    assert rec.keys == list(range(shard.records))
    header, image = recordio.unpack(rec.read_idx(2))
    expected, view = unpack_payload(packed.payloads[2])
    assert (header.flag, header.label, header.id, header.id2) == (0, expected.label, expected.id, 0)
    assert image == bytes(view)
    assert rec.read() == packed.payloads[3]  # read() goes on from where read_idx left off
    header, array = recordio.unpack_img(rec.read_idx(0))
    assert array.ndim == 3 and array.dtype == np.uint8
    plain = recordio.MXRecordIO(str(packed.out / shard.rec.name), "r")
    assert [plain.read() for _ in range(shard.records + 1)] == packed.payloads[:shard.records] + [None]
    plain.reset()
    assert plain.read() == packed.payloads[0]


def test_compat_writes_what_format_frames_and_pickles_a_reader(tmp_path: Path) -> None:
    idx, rec = tmp_path / "w.idx", tmp_path / "w.rec"
    writer = recordio.MXIndexedRecordIO(idx, rec, "w")
    payloads = [recordio.pack(recordio.IRHeader(0, float(n), n, 0), bytes([n]) * n) for n in range(5)]
    for key, payload in enumerate(payloads):
        writer.write_idx(key + 10, payload)
    writer.close()
    assert rec.read_bytes() == b"".join(frame(payload) for payload in payloads)
    offsets = np.cumsum([0] + [len(frame(payload)) for payload in payloads[:-1]]).tolist()
    assert idx.read_text() == "".join(f"{key + 10}\t{offset}\n" for key, offset in enumerate(offsets))
    reader = recordio.MXIndexedRecordIO(idx, rec, "r")
    reader.read_idx(12)
    clone = pickle.loads(pickle.dumps(reader))
    assert clone.read() == payloads[3] and clone.read_idx(10) == payloads[0]
    with pytest.raises(recordio.RecordIOUsageError, match="opened for reading"):
        reader.write(b"x")
    with pytest.raises(recordio.RecordIOUsageError, match="Invalid flag 'a'"):
        recordio.MXRecordIO(rec, "a")


def test_compat_pack_matches_the_format_and_label_vectors_round_trip() -> None:
    assert recordio.pack((7, 3.0, 5, 6), b"img") == pack_payload(RecordHeader((3.0,), 5, 6), b"img")  # flag ignored
    packed = recordio.pack(recordio.IRHeader(0, [1.5, 2.0, 3.0], 9, 0), b"img")
    assert packed == pack_payload(RecordHeader((1.5, 2.0, 3.0), 9, 0, vector=True), b"img")
    header, image = recordio.unpack(packed)
    assert header.flag == 3 and header.label.dtype == np.float32 and header.label.tolist() == [1.5, 2.0, 3.0]
    assert image == b"img"


def test_insightface_style_files_read_with_their_header_record(tmp_path: Path) -> None:
    """Record 0: flag 2, label [first identity record, end]; identity records: label [first image, end]."""
    idx, rec = tmp_path / "train.idx", tmp_path / "train.rec"
    writer = recordio.MXIndexedRecordIO(str(idx), str(rec), "w")
    images = {1: (0, b"\xff\xd8a"), 2: (0, b"\xff\xd8b"), 3: (1, b"\xff\xd8c")}
    for key, (identity, data) in images.items():
        writer.write_idx(key, recordio.pack(recordio.IRHeader(0, float(identity), key, 0), data))
    writer.write_idx(4, recordio.pack(recordio.IRHeader(2, [1.0, 3.0], 0, 0), b""))
    writer.write_idx(5, recordio.pack(recordio.IRHeader(2, [3.0, 4.0], 0, 0), b""))
    writer.write_idx(0, recordio.pack(recordio.IRHeader(2, [4.0, 6.0], 0, 0), b""))
    writer.close()
    # what insightface's MXFaceDataset does
    imgrec = recordio.MXIndexedRecordIO(str(idx), str(rec), "r")
    header, _ = recordio.unpack(imgrec.read_idx(0))
    assert header.flag > 0
    imgidx = np.array(range(1, int(header.label[0])))
    assert imgidx.tolist() == [1, 2, 3]
    identities = [recordio.unpack(imgrec.read_idx(key))[0].label.tolist() for key in range(4, 6)]
    assert identities == [[1.0, 3.0], [3.0, 4.0]]
    got = [recordio.unpack(imgrec.read_idx(int(key))) for key in imgidx]
    assert [(h.label, s) for h, s in got] == [(float(i), data) for i, data in images.values()]
    ours = IndexedRecordIO(rec, index=idx)
    assert ours.header(0).labels == (4.0, 6.0) and ours.header(0).vector


def test_labels_above_2_to_the_24_warn_that_float32_rounds_them() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        recordio.pack((0, 2.0 ** 24, 0, 0), b"")  # exact: no warning
        recordio.pack((0, 0.1, 0, 0), b"")  # not a whole number: float32 rounding is expected
    with pytest.warns(recordio.LabelPrecisionWarning, match="label 16777217 is stored in float32 as 16777216"):
        packed = recordio.pack((2, [16777217.0, 3.0], 0, 0), b"")
    assert recordio.unpack(packed)[0].label.tolist() == [16777216.0, 3.0]


def test_decode_rgb_gives_hwc_uint8_rgb_also_for_gray_images() -> None:
    import cv2

    from recordio_pack.reader import decode_rgb

    red = np.zeros((16, 24, 3), np.uint8)
    red[:, :, 2] = 255  # OpenCV holds BGR
    image = decode_rgb(cv2.imencode(".png", red)[1].tobytes())
    assert image.shape == (16, 24, 3) and image.dtype == np.uint8 and image[0, 0].tolist() == [255, 0, 0]
    gray = decode_rgb(cv2.imencode(".png", np.full((5, 7), 90, np.uint8))[1].tobytes())
    assert gray.shape == (5, 7, 3) and gray[0, 0].tolist() == [90, 90, 90]
    with pytest.raises(ValueError, match="could not be decoded"):
        decode_rgb(b"not an image")
