"""Packing against the real thing: mxnet 1.9.1 and its tools/im2rec.py, run in the oracle virtualenv.

(a) mxnet's readers (MXIndexedRecordIO, ImageRecordIter with and without the .idx and split in parts,
    mx.image.ImageIter) read every record of shards made by `recordio-pack pack`, escaped ones included;
(b) our reader and `verify` read what im2rec.py wrote, and see the payloads mxnet sees;
(c) `recordio-pack pack LST --reencode never --key lst-index` is byte-identical to `im2rec.py --pass-through`,
    and `recordio-pack list` writes the lists `im2rec.py --list --recursive` writes (exact relationship
    documented for trees where they differ on purpose).
"""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import run_oracle
from imagegen import cmyk_jpeg, jpeg, photo, png
from recordio_pack.format import MAGIC_BYTES, Frame, scan_frames, unescaped_magics, unpack_payload
from recordio_pack.listing import read_class_map, read_lst
from recordio_pack.recordio import iter_records, mapped, read_idx
from recordio_pack.verify import verify_paths

pytestmark = pytest.mark.oracle

CLI = [sys.executable, "-m", "recordio_pack"]
SIDE = 64  # --resize, and the iterators' crop
MAGIC_WORDS = {"n03/magic_a.jpg": 40, "n00/magic_b.jpg": 300}



def _segment_count(data: bytes) -> int:
    """Segment headers in a whole, undamaged .rec (one per record, plus one per escaped magic)."""
    frames = list(scan_frames(data))
    assert all(isinstance(item, Frame) for item in frames)
    return sum(len(item.headers) for item in frames)  # type: ignore[union-attr]

def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)


def sha(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def with_magic_comment(image: bytes, words: int) -> bytes:
    """``image`` (a JPEG) with a COM segment right after SOI holding ``words`` pairs (magic, lrec 0): the magics
    land at 4-byte-aligned payload offsets behind a 24-byte IRHeader, so the writer must escape every one."""
    comment = b"\0\0" + (MAGIC_BYTES + b"\0\0\0\0") * words  # first magic at image offset 8, payload offset 32
    return image[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + image[2:]


def build_tree(root: Path) -> dict[str, str]:
    """A flat class tree (no sub-folders, so im2rec's per-folder labels agree with ours); returns
    {relative path: "kept" (valid JPEG with short side <= SIDE), "converted" or "magic"}."""
    kinds: dict[str, str] = {}

    def put(relative: str, data: bytes, kind: str) -> None:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)
        kinds[relative] = kind

    sizes = [(64, 64), (96, 64), (64, 90), (120, 80), (200, 150), (80, 100)]
    for number, name in enumerate(["n03", "n00", "n02", "n01"]):  # created out of sorted order
        for position, (width, height) in enumerate(sizes):
            kind = "kept" if min(width, height) <= SIDE else "converted"
            put(f"{name}/img_{position}.JPEG", jpeg(width, height, seed=10 * number + position), kind)
    put("n00/cmyk.JPEG", cmyk_jpeg(96, 72, (200, 30, 40)), "converted")
    put("n01/png_named.JPEG", png(photo(80, 64, seed=90)), "converted")
    put("n01/gray.JPEG", jpeg(64, 90, seed=91, gray=True), "kept")
    put("n02/alpha.png", png(np.dstack([photo(80, 72, seed=92), np.full((72, 80), 200, np.uint8)])), "converted")
    put("n02/big.JPEG", jpeg(640, 480, seed=93), "converted")
    put("n03/with space.jpg", jpeg(64, 70, seed=94), "kept")
    put("n03/magic_a.jpg", with_magic_comment(jpeg(64, 64, seed=95), MAGIC_WORDS["n03/magic_a.jpg"]), "magic")
    put("n00/magic_b.jpg", with_magic_comment(jpeg(80, 64, seed=96), MAGIC_WORDS["n00/magic_b.jpg"]), "magic")
    return kinds


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("oracle-tree") / "images"
    return root, build_tree(root)


def records_of(rec: Path) -> list[tuple[int, bytes]]:
    with mapped(rec) as data:
        return list(iter_records(data))


def center_means(image: bytes) -> list[float]:
    """Per-channel RGB means of the central SIDE x SIDE crop: what mxnet's iterators hand to a network."""
    decoded = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR)
    height, width = decoded.shape[:2]
    top, left = (height - SIDE) // 2, (width - SIDE) // 2
    return decoded[top:top + SIDE, left:left + SIDE].mean(axis=(0, 1))[::-1].tolist()


READ_OURS_SCRIPT = r"""
import hashlib, json, sys
import mxnet as mx
shards, side, out = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
result = []

def collect(iterator):
    seen = []
    for batch in iterator:
        data = batch.data[0].asnumpy()
        labels = batch.label[0].asnumpy()
        for row in range(data.shape[0] - batch.pad):
            seen.append([float(labels[row])] + data[row].mean(axis=(1, 2)).tolist())
    return seen

for rec, idx in shards:
    record = mx.recordio.MXIndexedRecordIO(idx, rec, 'r')
    indexed = []
    for key in record.keys:
        header, image = mx.recordio.unpack(record.read_idx(key))
        indexed.append({"key": key, "flag": int(header.flag), "label": float(header.label), "id": int(header.id),
                        "id2": int(header.id2), "sha": hashlib.sha256(image).hexdigest()})
    record.close()
    runs = {}
    for name, use_idx, num_parts in (("idx", True, 1), ("no idx", False, 1), ("idx, 2 parts", True, 2),
                                     ("no idx, 2 parts", False, 2)):
        parts = []
        for part_index in range(num_parts):
            kwargs = dict(path_imgidx=idx) if use_idx else {}
            parts.append(collect(mx.io.ImageRecordIter(
                path_imgrec=rec, data_shape=(3, side, side), batch_size=4, shuffle=False, rand_crop=False,
                rand_mirror=False, num_parts=num_parts, part_index=part_index, preprocess_threads=1, **kwargs)))
        runs["ImageRecordIter " + name] = parts
    for num_parts in (1, 2):
        runs[f"ImageIter {num_parts} part(s)"] = [collect(mx.image.ImageIter(
            batch_size=4, data_shape=(3, side, side), path_imgrec=rec, path_imgidx=idx, shuffle=False,
            num_parts=num_parts, part_index=part_index)) for part_index in range(num_parts)]
    result.append({"indexed": indexed, "runs": runs})
json.dump(result, open(out, "w"))
"""


def test_mxnet_reads_every_record_of_our_shards(mxnet_python: str, tree: tuple[Path, dict[str, str]],
                                                tmp_path: Path) -> None:
    root, kinds = tree
    out = tmp_path / "out"
    packed = cli("pack", str(root), str(out), "--resize", str(SIDE), "--num-shards", "3", "--name", "data",
                 "--workers", "1", "--json")
    assert packed.returncode == 0, packed.stderr
    summary = json.loads(packed.stdout)
    assert (summary["records"], summary["rejects"], summary["shards"]) == (len(kinds), 0, 3)
    assert summary["reencoded"] == sum(kind == "converted" for kind in kinds.values())

    lst = {entry.index: entry for entry in read_lst(out / "data.lst")}
    classes = read_class_map(out / "data.synsets.txt")
    assert classes == ["n00", "n01", "n02", "n03"]
    shards = [(out / f"data-{index:05d}-of-00003.rec", out / f"data-{index:05d}-of-00003.idx") for index in range(3)]
    ours = []  # per shard: [(key, header, image bytes)] from our reader, in file order
    for rec, idx in shards:
        records = records_of(rec)
        pairs = read_idx(idx)
        assert [offset for _, offset in pairs] == [offset for offset, _ in records]
        ours.append([(key, *unpack_payload(payload)) for (key, _), (_, payload) in zip(pairs, records)])
    escaped_magics = 0
    for rec, _ in shards:
        data = rec.read_bytes()
        assert unescaped_magics(data) == []
        escaped_magics += _segment_count(data) - len(records_of(rec))
    assert escaped_magics == sum(MAGIC_WORDS.values())  # every aligned magic in the two COM segments

    result_file = tmp_path / "mxnet.json"
    run_oracle(mxnet_python, READ_OURS_SCRIPT, json.dumps([[str(rec), str(idx)] for rec, idx in shards]),
               str(SIDE), str(result_file))
    result = json.loads(result_file.read_text())

    seen_ids: list[int] = []
    for shard, mine, (rec, _) in zip(result, ours, shards):
        # MXIndexedRecordIO + recordio.unpack: keys, headers and image bytes as written
        assert [item["key"] for item in shard["indexed"]] == [key for key, _, _ in mine] == list(range(len(mine)))
        for item, (key, header, image) in zip(shard["indexed"], mine):
            entry = lst[header.id]
            assert (item["id"], item["id2"], item["flag"]) == (entry.index, 0, 0), rec.name
            assert item["label"] == header.label == entry.labels[0]
            assert entry.path.startswith(classes[int(item["label"])] + "/")
            assert item["sha"] == sha(image), f"{rec.name} key {key}"
            original = (root / entry.path).read_bytes()
            if kinds[entry.path] in ("kept", "magic"):
                assert bytes(image) == original, f"{entry.path} should be stored byte for byte"
            else:
                assert bytes(image) != original
            seen_ids.append(item["id"])
        # the image iterators: every record once, in file order, the right label and pixels
        expected = [[header.label, *center_means(bytes(image))] for _, header, image in mine]
        for name, parts in shard["runs"].items():
            got = [item for part in parts for item in part]
            assert all(parts), f"{rec.name}, {name}: an empty part"
            if name == "ImageIter 2 part(s)":
                # mx.image.ImageIter gives each part len // num_parts records: an odd last one is never read
                want = expected[:len(expected) // 2 * 2]
            else:
                want = expected
            assert [item[0] for item in got] == [item[0] for item in want], f"{rec.name}, {name}: labels"
            for got_item, want_item in zip(got, want):
                assert got_item[1:] == pytest.approx(want_item[1:], abs=1.0), f"{rec.name}, {name}: pixels"
    assert sorted(seen_ids) == sorted(lst), "every listed image is in exactly one shard"


# ---------------------------------------------------------------------------------------------------------
# im2rec.py itself, run in-process by runpy (one interpreter start for all its runs), steps from a JSON job.

IM2REC_SCRIPT = r"""
import contextlib, hashlib, io, json, os, runpy, shutil, sys
import mxnet as mx
IM2REC = os.path.join(os.path.dirname(mx.__file__), "tools", "im2rec.py")
job = json.load(open(sys.argv[1]))
result = {"printed": {}, "records": {}}
for step in job["steps"]:
    if step[0] == "copy":
        os.makedirs(os.path.dirname(step[2]), exist_ok=True)
        shutil.copyfile(step[1], step[2])
    elif step[0] == "im2rec":
        captured, saved = io.StringIO(), sys.argv
        sys.argv = [IM2REC] + step[2]
        try:
            with contextlib.redirect_stdout(captured):
                namespace = runpy.run_path(IM2REC, run_name="__main__")
        finally:
            sys.argv = saved
        if "record" in namespace:  # im2rec leaves its writer to interpreter exit; flush it as exit would
            namespace["record"].close()
        result["printed"][step[1]] = captured.getvalue()
    elif step[0] == "read":
        record = mx.recordio.MXIndexedRecordIO(step[2], step[3], 'r')
        items = []
        for key in record.keys:
            header, image = mx.recordio.unpack(record.read_idx(key))
            items.append({"key": key, "flag": int(header.flag), "label": float(header.label),
                          "id": int(header.id), "id2": int(header.id2), "sha": hashlib.sha256(image).hexdigest()})
        record.close()
        result["records"][step[1]] = items
json.dump(result, open(job["out"], "w"))
"""

SPLIT = ["--chunks", "3", "--train-ratio", "0.6", "--test-ratio", "0.2"]


@dataclass
class Im2recRuns:
    root: Path
    kinds: dict[str, str]
    nested: Path
    work: Path
    printed: dict[str, str]
    records: dict[str, list[dict]]


def build_nested_tree(root: Path) -> None:
    """Where im2rec's --list and ours differ on purpose: sub-folders, an empty class, an image in the root."""
    for relative in ("a/x1.jpg", "a/sub/y1.jpg", "a/z1.jpg", "c/w1.jpg", "top.jpg"):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(jpeg(32, 32, seed=len(relative)))
    (root / "b").mkdir()


@pytest.fixture(scope="module")
def im2rec(mxnet_python: str, tree: tuple[Path, dict[str, str]],
           tmp_path_factory: pytest.TempPathFactory) -> Im2recRuns:
    """One oracle run: our lists first (CLI), then im2rec --list on the same trees, im2rec --pass-through on
    our .lst and on its own, im2rec --resize, and mxnet's view of each .rec it wrote."""
    root, kinds = tree
    work = tmp_path_factory.mktemp("im2rec")
    nested = work / "nested"
    build_nested_tree(nested)
    for prefix, extra in (("ours/ours", []), ("ours_ns/ours", ["--no-shuffle"]), ("ours_split/ours", SPLIT),
                          ("ours_nested/ours", ["--no-shuffle"])):
        listed = cli("list", str(nested if "nested" in prefix else root), str(work / prefix), *extra)
        assert listed.returncode == 0, listed.stderr
    steps: list[list] = [
        ["im2rec", "list", [str(work / "mx/im"), str(root), "--list", "--recursive"]],
        ["im2rec", "list_ns", [str(work / "mx_ns/im"), str(root), "--list", "--recursive", "--no-shuffle"]],
        ["im2rec", "list_split", [str(work / "mx_split/im"), str(root), "--list", "--recursive", *SPLIT]],
        ["im2rec", "list_nested", [str(work / "mx_nested/im"), str(nested), "--list", "--recursive", "--no-shuffle"]],
        ["copy", str(work / "ours/ours.lst"), str(work / "pt_ours/data.lst")],
        ["copy", str(work / "mx/im.lst"), str(work / "pt_mx/data.lst")],
        ["copy", str(work / "mx/im.lst"), str(work / "resize/data.lst")],
    ]
    for name in ("pt_ours", "pt_mx"):
        steps.append(["im2rec", name, [str(work / name / "data"), str(root), "--pass-through", "--num-thread", "1"]])
    steps.append(["im2rec", "resize", [str(work / "resize/data"), str(root), "--resize", str(SIDE),
                                       "--num-thread", "1"]])
    for name in ("pt_ours", "pt_mx", "resize"):
        steps.append(["read", name, str(work / name / "data.idx"), str(work / name / "data.rec")])
    for directory in ("mx", "mx_ns", "mx_split", "mx_nested"):
        (work / directory).mkdir()
    job = work / "job.json"
    job.write_text(json.dumps({"steps": steps, "out": str(work / "result.json")}))
    run_oracle(mxnet_python, IM2REC_SCRIPT, str(job))
    result = json.loads((work / "result.json").read_text())
    return Im2recRuns(root, kinds, nested, work, result["printed"], result["records"])


def test_list_writes_the_lists_im2rec_writes(im2rec: Im2recRuns) -> None:
    work = im2rec.work
    # shuffled with seed 100 (im2rec's), and sorted: byte for byte the same lines
    assert (work / "ours/ours.lst").read_bytes() == (work / "mx/im.lst").read_bytes()
    assert (work / "ours_ns/ours.lst").read_bytes() == (work / "mx_ns/im.lst").read_bytes()
    assert [entry.index for entry in read_lst(work / "ours_ns/ours.lst")] == list(range(len(im2rec.kinds)))
    # --chunks / --train-ratio / --test-ratio: the same file names and contents
    ours = {path.name.removeprefix("ours"): path.read_bytes() for path in (work / "ours_split").glob("*.lst")}
    theirs = {path.name.removeprefix("im"): path.read_bytes() for path in (work / "mx_split").glob("*.lst")}
    assert sorted(ours) == sorted(theirs) == sorted(f"_{chunk}_{part}.lst" for chunk in range(3)
                                                    for part in ("train", "val", "test"))
    assert ours == theirs
    # im2rec prints its class map ("folder label"); ours is synsets.txt ("label<TAB>folder")
    printed = [line.split(" ") for line in im2rec.printed["list"].splitlines()]
    assert [(int(label), folder) for folder, label in printed] == list(enumerate(read_class_map(work / "ours/synsets.txt")))


def test_list_differs_from_im2rec_on_nested_trees_as_documented(im2rec: Im2recRuns) -> None:
    """Ours: one label per top-level class folder (sorted, empty ones included so labels stay stable between
    train and val trees), images found recursively in sorted path order, root-level images reported.
    im2rec --recursive: one label per folder that holds images, in os.walk order (a folder's files before its
    sub-folders), root-level images listed under the root's own label."""
    ours = [(entry.index, entry.labels, entry.path) for entry in read_lst(im2rec.work / "ours_nested/ours.lst")]
    theirs = [(entry.index, entry.labels, entry.path) for entry in read_lst(im2rec.work / "mx_nested/im.lst")]
    assert ours == [(0, (0.0,), "a/sub/y1.jpg"), (1, (0.0,), "a/x1.jpg"), (2, (0.0,), "a/z1.jpg"),
                    (3, (2.0,), "c/w1.jpg")]
    assert read_class_map(im2rec.work / "ours_nested/synsets.txt") == ["a", "b", "c"]
    assert theirs == [(0, (0.0,), "top.jpg"), (1, (1.0,), "a/x1.jpg"), (2, (1.0,), "a/z1.jpg"),
                      (3, (2.0,), "a/sub/y1.jpg"), (4, (3.0,), "c/w1.jpg")]
    assert im2rec.printed["list_nested"].split() == [".", "0", "a", "1", "a/sub", "2", "c", "3"]
    listed = cli("list", str(im2rec.nested), str(im2rec.work / "again/ours"), "--json")
    assert [problem["path"] for problem in json.loads(listed.stdout)["problems"]] == ["top.jpg"]


def test_pass_through_is_byte_identical_to_im2rec(im2rec: Im2recRuns, tmp_path: Path) -> None:
    for name in ("pt_ours", "pt_mx"):  # the .lst written by `recordio-pack list`, and by im2rec --list
        lst = im2rec.work / name / "data.lst"
        packed = cli("pack", str(lst), str(tmp_path / name), "--root", str(im2rec.root), "--reencode", "never",
                     "--key", "lst-index", "--num-shards", "1", "--name", "X", "--workers", "1", "-q")
        assert packed.returncode == 0, packed.stderr
        theirs_rec = (im2rec.work / name / "data.rec").read_bytes()
        assert len(im2rec.records[name]) == len(im2rec.kinds)
        assert _segment_count(theirs_rec) > len(im2rec.kinds)  # im2rec escaped the magic comments too
        assert (tmp_path / name / "X.rec").read_bytes() == theirs_rec, name
        assert (tmp_path / name / "X.idx").read_bytes() == (im2rec.work / name / "data.idx").read_bytes(), name


def test_our_reader_and_verify_read_what_im2rec_wrote(im2rec: Im2recRuns) -> None:
    lst = {entry.index: entry for entry in read_lst(im2rec.work / "mx/im.lst")}
    for name in ("pt_ours", "pt_mx", "resize"):
        rec, idx = im2rec.work / name / "data.rec", im2rec.work / name / "data.idx"
        records = records_of(rec)
        pairs = read_idx(idx)
        mxnet_view = im2rec.records[name]
        assert [key for key, _ in pairs] == [item["key"] for item in mxnet_view]
        assert [offset for _, offset in pairs] == [offset for offset, _ in records]
        for item, (_, payload) in zip(mxnet_view, records):
            header, image = unpack_payload(payload)
            assert (header.id, header.id2, header.label, header.vector) == (item["id"], item["id2"], item["label"], False)
            assert header.id == item["key"] and header.labels == lst[header.id].labels
            assert sha(image) == item["sha"], f"{name}: key {item['key']}"
            source = (im2rec.root / lst[header.id].path).read_bytes()
            if name == "resize":
                decoded = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR)
                assert min(decoded.shape[:2]) == SIDE
            else:
                assert bytes(image) == source
        report = verify_paths([rec], decode=True, classes=["n00", "n01", "n02", "n03"])
        assert report.ok and report.records == len(im2rec.kinds), report.problems
    verified = cli("verify", *(str(im2rec.work / name / "data.rec") for name in ("pt_ours", "pt_mx", "resize")),
                   "--decode", "--json")
    assert verified.returncode == 0, verified.stdout
    assert json.loads(verified.stdout)["records"] == 3 * len(im2rec.kinds)
