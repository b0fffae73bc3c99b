"""TFRecord output without TensorFlow: framing and masked CRC32C, the tf.Example codec, the tpu/aip/tfds layouts,
DALI's index, and verify/inspect/index on TFRecord shards.  (TensorFlow itself reads them in
tests/test_oracle_tensorflow.py.)"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imagegen import jpeg
from recordio_pack import tfrecord
from recordio_pack.example import ExampleError, decode_example, encode_example
from recordio_pack.format import Damage, Frame
from recordio_pack.formats import detect, make_format
from recordio_pack.index import rebuild_index
from recordio_pack.inputs import open_input
from recordio_pack.manifest import Manifest
from recordio_pack.options import PackOptions
from recordio_pack.pack import pack_input
from recordio_pack.peek import iter_rows
from recordio_pack.verify import verify_paths

# CRC-32C (Castagnoli) check value of b"123456789" (RFC 3720 B.4 and every CRC catalogue)
CHECK_VALUE = 0xE3069283


def tree(root: Path, classes: int = 3, per_class: int = 4, gray: int = -1) -> Path:
    for label in range(classes):
        folder = root / f"n{label + 1:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        for number in range(per_class):
            data = jpeg(60 + number, 48, seed=label * 10 + number, gray=(label * per_class + number == gray))
            (folder / f"n{label + 1:08d}_{number}.JPEG").write_bytes(data)
    return root


def records(path: Path) -> list[dict]:
    data = path.read_bytes()
    items = list(tfrecord.scan_frames(data))
    assert all(isinstance(item, Frame) for item in items)
    return [decode_example(item.payload) for item in items if isinstance(item, Frame)]


# ---------------------------------------------------------------- bytes

def test_masked_crc32c_is_tensorflows() -> None:
    import google_crc32c

    assert google_crc32c.value(b"123456789") == CHECK_VALUE
    crc = CHECK_VALUE
    assert tfrecord.masked_crc32c(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def test_frame_layout_and_round_trip() -> None:
    framed = tfrecord.frame(b"hello")
    assert framed[:8] == struct.pack("<Q", 5) and framed[12:17] == b"hello" and len(framed) == 21
    assert struct.unpack("<I", framed[8:12])[0] == tfrecord.masked_crc32c(framed[:8])
    assert struct.unpack("<I", framed[17:])[0] == tfrecord.masked_crc32c(b"hello")
    record = tfrecord.read_frame(framed, 0)
    assert (record.start, record.end, record.payload) == (0, 21, b"hello")


def test_scan_reports_each_damage_and_resynchronises() -> None:
    data = bytearray(b"".join(tfrecord.frame(bytes([n]) * (10 + n)) for n in range(4)))
    second = len(tfrecord.frame(bytes(10)))
    data[second + 14] ^= 0xFF  # inside the second record's data: its data CRC no longer matches
    items = list(tfrecord.scan_frames(bytes(data)))
    kinds = [type(item).__name__ for item in items]
    assert kinds == ["Frame", "Damage", "Frame", "Frame"]
    damage = items[1]
    assert isinstance(damage, Damage) and damage.start == second and "data CRC32C" in str(damage.error)
    assert sum(item.end - item.start for item in items) == len(data)


@given(st.dictionaries(st.text(min_size=1, max_size=8), st.one_of(
    st.lists(st.binary(max_size=20), min_size=1, max_size=3),
    st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=3),
    st.lists(st.floats(width=32, allow_nan=False), min_size=1, max_size=3)), max_size=5))
def test_example_round_trip(features: dict) -> None:
    decoded = decode_example(encode_example(features))
    assert {key: values for key, (_, values) in decoded.items()} == features


def test_example_keys_sorted_and_same_bytes_for_any_order() -> None:
    one = encode_example({"b": [1], "a": [b"x"]})
    assert one == encode_example({"a": [b"x"], "b": [1]})
    assert one.index(b"\x0a\x01a") < one.index(b"\x0a\x01b")


def test_example_decoder_reads_unpacked_int64_and_refuses_garbage() -> None:
    # Int64List with two unpacked values (field 1, wire type 0), as older writers emit
    int64_list = b"\x08\x05\x08\x07"
    feature = b"\x1a" + bytes([len(int64_list)]) + int64_list
    entry = b"\x0a\x01k" + b"\x12" + bytes([len(feature)]) + feature
    features = b"\x0a" + bytes([len(entry)]) + entry
    assert decode_example(b"\x0a" + bytes([len(features)]) + features) == {"k": ("int64", [5, 7])}
    with pytest.raises(ExampleError):
        decode_example(b"\x0a\x10abc")


def test_detect_tells_the_formats_apart() -> None:
    assert detect(tfrecord.frame(b"x")).name == "tfrecord"  # type: ignore[union-attr]
    assert detect(b"\x0a\x23\xd7\xce" + bytes(8)).name == "recordio"  # type: ignore[union-attr]
    assert detect(b"0\t0\n") is None


# ---------------------------------------------------------------- layouts

def test_tpu_layout_names_keys_and_1_based_labels(tmp_path: Path) -> None:
    root = tree(tmp_path / "train", gray=5)
    options = PackOptions(format="tfrecord", num_shards=4, resize=32)
    result = pack_input(open_input(root), tmp_path / "out", options, name="train")
    out = tmp_path / "out"
    names = sorted(path.name for path in out.glob("train-*"))
    assert names == [f"train-{index:05d}-of-00004" for index in range(4)]
    assert sorted(path.name for path in (out / "dali_idx").iterdir()) == [f"{name}.idx" for name in names]
    synsets = [f"n{label + 1:08d}" for label in range(3)]
    seen = []
    for name in names:
        for example in records(out / name):
            assert set(example) == {"image/encoded", "image/format", "image/class/label", "image/class/synset",
                                    "image/height", "image/width", "image/colorspace", "image/channels",
                                    "image/filename"}
            label = example["image/class/label"][1][0]
            assert 1 <= label <= 3 and example["image/class/synset"][1] == [synsets[label - 1].encode()]
            filename = example["image/filename"][1][0].decode()
            assert filename.startswith(synsets[label - 1]) and "/" not in filename
            assert example["image/format"][1] == [b"JPEG"] and example["image/colorspace"][1] == [b"RGB"]
            assert example["image/channels"][1] == [3] and min(example["image/height"][1][0],
                                                               example["image/width"][1][0]) == 32
            seen.append(filename)
    assert len(seen) == result.records == 12 and len(set(seen)) == 12  # shard counts add up exactly
    manifest = Manifest.load(out / "train.manifest.json")
    assert manifest.options["format"] == "tfrecord" and manifest.options["preset"] == "tpu"
    assert manifest.options["label_base"] == 1 and sum(shard.records for shard in manifest.shards) == 12
    assert [shard.idx.name for shard in manifest.shards] == [f"dali_idx/{name}.idx" for name in names]


def test_tpu_layout_converts_a_kept_grayscale_jpeg_to_rgb(tmp_path: Path) -> None:
    from recordio_pack.imaging import probe

    root = tree(tmp_path / "train", classes=1, per_class=2, gray=0)
    pack_input(open_input(root), tmp_path / "out", PackOptions(format="tfrecord", num_shards=1), name="train")
    for example in records(tmp_path / "out" / "train-00000-of-00001"):
        assert probe(example["image/encoded"][1][0]).channels == 3


def order(out: Path) -> list[str]:
    return [example["image/filename"][1][0].decode() for path in sorted(out.glob("train-*"))
            for example in records(path)]


def test_tpu_shuffle_is_real_and_seeded(tmp_path: Path) -> None:
    root = tree(tmp_path / "train", classes=3, per_class=6)
    sorted_names = sorted(path.name for path in root.rglob("*.JPEG"))
    runs = {}
    for seed in (100, 100, 7):
        out = tmp_path / f"out-{seed}-{len(runs)}"
        pack_input(open_input(root, seed=seed), out, PackOptions(format="tfrecord", num_shards=2, resize=24),
                   name="train")
        runs[len(runs)] = order(out)
    assert runs[0] == runs[1]  # the same seed: the same order
    assert runs[0] != sorted_names and sorted(runs[0]) == sorted_names  # shuffled, every image once
    assert runs[2] != runs[0]  # another seed: another order
    classes_of_first_half = {name.split("_")[0] for name in runs[0][:9]}
    assert len(classes_of_first_half) > 1  # written in shuffled order, not class by class


def test_aip_layout_and_label_map(tmp_path: Path) -> None:
    root = tree(tmp_path / "flowers", classes=2, per_class=3)
    pack_input(open_input(root), tmp_path / "out", PackOptions(format="tfrecord", preset="aip", num_shards=2,
                                                                 resize=24))
    out = tmp_path / "out"
    labels = []
    for path in sorted(out.glob("flowers-*")):
        for example in records(path):
            assert set(example) == {"image/encoded", "image/class/label"}
            labels.append(example["image/class/label"][1][0])
    assert sorted(set(labels)) == [1, 2]
    assert (out / "flowers.label_map.txt").read_text() == "1\tn00000001\n2\tn00000002\n"
    manifest = Manifest.load(out / "flowers.manifest.json")
    assert "flowers.label_map.txt" in [record.name for record in manifest.files]


def test_label_base_0_and_refusals(tmp_path: Path) -> None:
    root = tree(tmp_path / "train", classes=2, per_class=2)
    pack_input(open_input(root), tmp_path / "out", PackOptions(format="tfrecord", label_base=0, num_shards=1),
               name="train")
    assert sorted(example["image/class/label"][1][0] for example in records(tmp_path / "out" / "train-00000-of-00001")) \
        == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="label-base|0-based"):
        PackOptions(format="tfrecord", preset="tfds", label_base=1)
    with pytest.raises(ValueError, match="tfrecord"):
        PackOptions(preset="tpu")
    from recordio_pack.errors import UsageError

    with pytest.raises(UsageError, match="--name train or --name validation"):
        pack_input(open_input(root), tmp_path / "other", PackOptions(format="tfrecord", num_shards=1), name="x")
    with pytest.raises(UsageError, match="1000 classes"):
        pack_input(open_input(root), tmp_path / "tfds", PackOptions(format="tfrecord", preset="tfds"), name="train")


def test_recordio_options_keep_their_manifest_options_and_fingerprint() -> None:
    plain = PackOptions(resize=256)
    assert "format" not in plain.output_affecting() and "preset" not in plain.output_affecting()
    assert PackOptions(resize=256, format="tfrecord").fingerprint() != plain.fingerprint()


def test_same_bytes_for_any_worker_count(tmp_path: Path) -> None:
    root = tree(tmp_path / "train", classes=3, per_class=5)
    outputs = []
    for workers in (1, 3):
        out = tmp_path / f"w{workers}"
        pack_input(open_input(root), out, PackOptions(format="tfrecord", num_shards=2, resize=24, workers=workers),
                   name="train")
        outputs.append({path.relative_to(out).as_posix(): path.read_bytes() for path in out.rglob("*")
                        if path.is_file() and "manifest" not in path.name})
    assert outputs[0] == outputs[1]


# ---------------------------------------------------------------- DALI index, verify, inspect, index

def test_dali_index_is_offset_and_size_of_every_record(tmp_path: Path) -> None:
    root = tree(tmp_path / "train", classes=2, per_class=3)
    pack_input(open_input(root), tmp_path / "out", PackOptions(format="tfrecord", num_shards=1), name="train")
    shard = tmp_path / "out" / "train-00000-of-00001"
    lines = (tmp_path / "out" / "dali_idx" / "train-00000-of-00001.idx").read_text().splitlines()
    expected = [f"{item.start} {item.end - item.start}" for item in tfrecord.scan_frames(shard.read_bytes())]
    assert lines == expected and len(lines) == 6
    rebuilt = rebuild_index(shard, tmp_path / "again.idx")
    assert rebuilt.records == 6 and (tmp_path / "again.idx").read_text().splitlines() == expected


def packed(tmp_path: Path) -> Path:
    root = tree(tmp_path / "train", classes=2, per_class=3)
    pack_input(open_input(root), tmp_path / "out", PackOptions(format="tfrecord", num_shards=2, resize=24),
               name="train")
    return tmp_path / "out"


def test_verify_a_clean_tfrecord_dataset(tmp_path: Path) -> None:
    out = packed(tmp_path)
    report = verify_paths([out], decode=True)
    assert report.ok and report.records == 6, report.problems
    assert verify_paths([out / "train-00001-of-00002"]).ok  # a shard alone, checked against the manifest
    assert verify_paths([out / "dali_idx" / "train-00001-of-00002.idx"]).ok  # its index stands for it


def test_verify_names_a_flipped_byte_and_a_wrong_index(tmp_path: Path) -> None:
    out = packed(tmp_path)
    shard = out / "train-00000-of-00002"
    data = bytearray(shard.read_bytes())
    data[40] ^= 0x01
    shard.write_bytes(bytes(data))
    index = out / "dali_idx" / "train-00001-of-00002.idx"
    first, *rest = index.read_text().splitlines()
    offset, size = first.split()
    index.write_text("\n".join([f"{offset} {int(size) + 1}", *rest]) + "\n")
    problems = "\n".join(verify_paths([out]).problems)
    assert "train-00000-of-00002: bytes 0.." in problems and "CRC32C mismatch" in problems
    assert f"size {int(size) + 1} at offset {offset}" in problems


def test_verify_checks_labels_and_required_keys(tmp_path: Path) -> None:
    fmt = make_format("tfrecord", "tpu", classes=["a", "b"])
    shard = tmp_path / "train-00000-of-00001"
    good = encode_example({"image/encoded": [jpeg(20, 20)], "image/class/label": [3]})
    shard.write_bytes(fmt.frame(good))
    (tmp_path / "synsets.txt").write_text("0\ta\n1\tb\n")
    problems = "\n".join(verify_paths([shard]).problems)
    assert "label 3 is outside the class map (1..2)" in problems
    tpu_problems = [problem for problem in fmt.required_problems(fmt.decode(good))]
    assert "feature image/class/synset is missing" in tpu_problems


def test_inspect_rows_of_a_tfrecord_shard(tmp_path: Path) -> None:
    out = packed(tmp_path)
    rows = [row for row, _ in iter_rows(out / "train-00000-of-00002", ["n00000001", "n00000002"])]
    assert [row.key for row in rows] == list(range(len(rows)))
    assert all(row.class_name == f"n{int(row.label):08d}" and row.format == "jpeg" and row.id is None
               for row in rows)


def test_cli_pack_tfrecord_tpu_defaults_and_verify(tmp_path: Path, cli_main) -> None:
    root = tree(tmp_path / "val", classes=2, per_class=2)
    result = cli_main("pack", str(root), str(tmp_path / "out"), "--format", "tfrecord", "--json", "-q")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["name"] == "validation" and summary["shards"] == 4  # 128 asked, one per image at most
    assert cli_main("verify", str(tmp_path / "out"), "-q").returncode == 0
    bad = cli_main("pack", str(root), str(tmp_path / "o2"), "--preset", "aip", "-q")
    assert bad.returncode == 2 and "--format tfrecord" in bad.stderr
    shown = cli_main("inspect", str(tmp_path / "out"), "--limit", "2")
    assert shown.returncode == 0 and "validation-00000-of-00004" in shown.stdout


def test_manifests_and_journals_of_older_versions_still_load() -> None:
    from recordio_pack.manifest import ShardRecord
    from recordio_pack.shard import ShardResult

    rec = {"name": "d.rec", "bytes": 8, "sha256": "a" * 64, "crc32": "00000000"}
    idx = {"name": "d.idx", "bytes": 4, "sha256": "b" * 64, "crc32": "00000001"}
    old = {"index": 0, "records": 1, "rejects": 0, "rec": rec, "idx": idx, "record_crc32": ""}
    shard = ShardRecord.from_dict(old)
    assert (shard.rec.name, shard.idx.name) == ("d.rec", "d.idx") and [f.name for f in shard.files] == ["d.rec", "d.idx"]
    assert ShardRecord.from_dict(shard.to_dict()) == shard and "files" in shard.to_dict()
    result = ShardResult.from_dict({**old, "rejects": []})
    assert result.record() == shard and ShardResult.from_dict(result.to_dict()) == result


def test_fake_tfrecord_writes_the_tpu_layout(tmp_path: Path, cli_main) -> None:
    result = cli_main("fake", str(tmp_path / "fake"), "--format", "tfrecord", "--classes", "3",
                      "--images-per-class", "4", "--val-per-class", "2", "--json", "-q")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["train"]["records"] == 12 and summary["validation"]["records"] == 6
    out = tmp_path / "fake"
    assert sorted(path.name for path in out.glob("train-*")) == [f"train-{i:05d}-of-00012" for i in range(12)]
    assert len(list(out.glob("validation-*-of-00006"))) == 6 and not (out / ".fake-images").exists()
    labels = {example["image/class/label"][1][0] for path in out.glob("validation-*") for example in records(path)}
    assert labels == {1, 2, 3}
    assert verify_paths([out], decode=True).ok


def test_backup_and_restore_a_tfrecord_dataset(tmp_path: Path, cli_main, moto_server: str) -> None:
    import uuid

    import boto3

    bucket = f"rp-tfr-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    out = packed(tmp_path)
    common = ["--endpoint-url", moto_server, "-q"]
    assert cli_main("backup", str(out), f"s3://{bucket}/ds", *common).returncode == 0
    restored = cli_main("restore", f"s3://{bucket}/ds", str(tmp_path / "copy"), *common)
    assert restored.returncode == 0, restored.stderr
    for name in ("train-00000-of-00002", "dali_idx/train-00001-of-00002.idx", "train.manifest.json"):
        assert (tmp_path / "copy" / name).read_bytes() == (out / name).read_bytes()
    assert verify_paths([tmp_path / "copy"]).ok


def test_a_damaged_tfrecord_shard_is_packed_again_to_the_same_bytes(tmp_path: Path) -> None:
    root = tree(tmp_path / "train", classes=2, per_class=4)
    options = PackOptions(format="tfrecord", num_shards=3, resize=24)
    pack_input(open_input(root), tmp_path / "out", options, name="train")
    shard = tmp_path / "out" / "train-00001-of-00003"
    before = shard.read_bytes()
    shard.write_bytes(before[:-1] + bytes([before[-1] ^ 1]))
    again = pack_input(open_input(root), tmp_path / "out", options, name="train")
    assert again.shards_repacked_damaged == 1 and again.shards_resumed == 2
    assert shard.read_bytes() == before and verify_paths([tmp_path / "out"]).ok
    other = PackOptions(format="tfrecord", preset="aip", num_shards=3, resize=24)
    from recordio_pack.errors import RefusedError

    with pytest.raises(RefusedError, match="preset 'tpu' -> 'aip'"):
        pack_input(open_input(root), tmp_path / "out", other, name="train")


def test_iter_examples_reads_in_order_and_names_damage(tmp_path: Path) -> None:
    from recordio_pack.formats.tfrecord import iter_examples
    from recordio_pack.recordio import DamagedShard

    path = tmp_path / "f"
    path.write_bytes(b"".join(tfrecord.frame(encode_example({"n": [number]})) for number in range(3)))
    assert [example["n"] for example in iter_examples(path)] == [[0], [1], [2]]
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(DamagedShard, match="truncated record"):
        list(iter_examples(path))
