"""The packing job: bad inputs, conversions, determinism, resume after SIGKILL, refusals, labels."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from imagegen import awkward_tree, jpeg
from recordio_pack.errors import RecordioPackError, RefusedError
from recordio_pack.format import unpack_payload
from recordio_pack.listing import ordered_entries, scan_tree
from recordio_pack.manifest import Manifest
from recordio_pack.options import PackOptions
from recordio_pack.pack import pack_entries, plan_shards
from recordio_pack.recordio import iter_records, mapped, read_idx
from recordio_pack.sources import Entry, FolderSource
from waiting import journal_shards

CLI = [sys.executable, "-m", "recordio_pack"]


def records_of(rec: Path) -> list[tuple[int, bytes]]:
    with mapped(rec) as data:
        return list(iter_records(data))


def pack_tree(root: Path, out: Path, **options: object):
    listing = scan_tree(root)
    return pack_entries(ordered_entries(listing.entries), FolderSource(str(root)), out, "data",
                        PackOptions(**options), classes=listing.classes, label_convention="sorted")


def small_tree(root: Path, classes: int = 3, per_class: int = 10) -> None:
    for label in range(classes):
        folder = root / f"n{label:08d}"
        folder.mkdir(parents=True)
        for number in range(per_class):
            (folder / f"img_{number}.JPEG").write_bytes(jpeg(200 + 8 * number, 160, seed=label * 100 + number))


def test_plan_shards_by_count_and_by_size() -> None:
    assert plan_shards(10, num_shards=3) == [range(0, 3), range(3, 6), range(6, 10)]
    assert plan_shards(2, num_shards=5) == [range(0, 1), range(1, 2)]
    assert plan_shards(5, [40, 40, 40, 40, 40], shard_size=100) == [range(0, 2), range(2, 4), range(4, 5)]
    assert plan_shards(0, [], shard_size=100) == [range(0, 0)]


def test_awkward_inputs_are_converted_or_rejected_with_reasons(tmp_path: Path) -> None:
    expected = awkward_tree(tmp_path / "tree")
    result = pack_tree(tmp_path / "tree", tmp_path / "out", resize=256, workers=2, num_shards=2)
    rejected = dict(line.split("\t", 1) for line in (tmp_path / "out" / "data.rejects.tsv").read_text().splitlines()[1:])
    for path, outcome in expected.items():
        if outcome.startswith("reject:"):
            assert path in rejected, f"{path} should be rejected"
            assert outcome.split(":", 1)[1] in rejected[path], (path, rejected[path])
        else:
            assert path not in rejected, (path, rejected.get(path))
    packed = [path for path, outcome in expected.items() if outcome == "packed"]
    assert result.records == len(packed) and result.rejects == len(rejected)
    assert result.records + result.rejects == len(expected)  # nothing lost

    manifest = Manifest.load(result.manifest)
    images = []
    for shard in manifest.shards:
        for _, payload in records_of(tmp_path / "out" / shard.rec.name):
            header, image = unpack_payload(payload)
            assert bytes(image[:3]) == b"\xff\xd8\xff"  # everything came out as JPEG
            decoded = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_UNCHANGED)
            assert decoded is not None and decoded.dtype == np.uint8
            images.append(decoded)
    channels = sorted(image.shape[2] if image.ndim == 3 else 1 for image in images)
    assert channels == [1] + [3] * (len(images) - 1)  # 8-bit BGR but for gray.JPEG, kept as it is
    assert any(image.shape[:2] == (256, 384) for image in images)  # big.JPEG 1200x800 shrunk
    assert not any(max(image.shape[:2]) > 400 for image in images)  # nothing else grew or stayed big


def test_cmyk_comes_out_with_the_right_colour(tmp_path: Path) -> None:
    from imagegen import cmyk_jpeg

    (tmp_path / "tree" / "red").mkdir(parents=True)
    (tmp_path / "tree" / "red" / "cmyk.JPEG").write_bytes(cmyk_jpeg(64, 48, (200, 30, 40)))
    result = pack_tree(tmp_path / "tree", tmp_path / "out")
    [(_, payload)] = records_of(tmp_path / "out" / "data.rec")
    decoded = cv2.imdecode(np.frombuffer(unpack_payload(payload)[1], np.uint8), cv2.IMREAD_COLOR)
    blue, green, red = decoded[24, 32].astype(int)
    assert abs(red - 200) < 12 and abs(green - 30) < 12 and abs(blue - 40) < 12
    assert result.reencoded == 1


def test_auto_keeps_small_jpegs_byte_for_byte(tmp_path: Path) -> None:
    small_tree(tmp_path / "tree", classes=2, per_class=3)
    pack_tree(tmp_path / "tree", tmp_path / "out", resize=480)
    originals = {path.read_bytes() for path in (tmp_path / "tree").rglob("*.JPEG")}
    stored = {bytes(unpack_payload(payload)[1]) for _, payload in records_of(tmp_path / "out" / "data.rec")}
    assert stored == originals


def test_same_bytes_for_any_worker_count(tmp_path: Path) -> None:
    small_tree(tmp_path / "tree")
    pack_tree(tmp_path / "tree", tmp_path / "one", resize=128, num_shards=4, workers=1)
    pack_tree(tmp_path / "tree", tmp_path / "two", resize=128, num_shards=4, workers=2)
    names = sorted(path.name for path in (tmp_path / "one").iterdir())
    assert names == sorted(path.name for path in (tmp_path / "two").iterdir())
    assert "data-00003-of-00004.rec" in names
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def test_keys_labels_and_ids(tmp_path: Path) -> None:
    small_tree(tmp_path / "tree", classes=3, per_class=4)
    listing = scan_tree(tmp_path / "tree")
    by_index = {entry.index: entry for entry in listing.entries}
    result = pack_tree(tmp_path / "tree", tmp_path / "out", num_shards=2)
    for shard in Manifest.load(result.manifest).shards:
        pairs = read_idx(tmp_path / "out" / shard.idx.name)
        assert [key for key, _ in pairs] == list(range(shard.records))
        for (_, offset), (record_offset, payload) in zip(pairs, records_of(tmp_path / "out" / shard.rec.name)):
            assert offset == record_offset
            header, _ = unpack_payload(payload)
            entry = by_index[header.id]
            assert header.labels == entry.labels and not header.vector
            assert entry.path.startswith(listing.classes[int(header.label)] + "/")


def test_multi_label_lst_with_pack_label(tmp_path: Path) -> None:
    image = tmp_path / "img.jpg"
    image.write_bytes(jpeg(64, 64))
    entries = [Entry(7, (1.0, 2.5, 3.0), "img.jpg"), Entry(8, (4.0,), "img.jpg")]
    pack_entries(entries, FolderSource(str(tmp_path)), tmp_path / "out", "ml", PackOptions(pack_label=True, key="lst-index"))
    (_, first), (_, second) = records_of(tmp_path / "out" / "ml.rec")
    assert unpack_payload(first)[0].labels == (1.0, 2.5, 3.0) and unpack_payload(first)[0].vector
    assert unpack_payload(second)[0].labels == (4.0,) and not unpack_payload(second)[0].vector
    assert [key for key, _ in read_idx(tmp_path / "out" / "ml.idx")] == [7, 8]
    pack_entries(entries, FolderSource(str(tmp_path)), tmp_path / "plain", "ml", PackOptions())
    assert unpack_payload(records_of(tmp_path / "plain" / "ml.rec")[0][1])[0].labels == (1.0,)


def test_on_error_fail_stops_naming_the_image(tmp_path: Path) -> None:
    small_tree(tmp_path / "tree", classes=1, per_class=2)
    (tmp_path / "tree" / "n00000000" / "broken.JPEG").write_bytes(b"\xff\xd8\xff\xe0garbage")
    with pytest.raises(RecordioPackError, match="broken.JPEG"):
        pack_tree(tmp_path / "tree", tmp_path / "out", on_error="fail")
    assert not (tmp_path / "out" / "data.manifest.json").exists()
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_refuses_to_replace_other_outputs_unless_asked(tmp_path: Path) -> None:
    small_tree(tmp_path / "tree", classes=1, per_class=3)
    first = pack_tree(tmp_path / "tree", tmp_path / "out", resize=128)
    again = pack_tree(tmp_path / "tree", tmp_path / "out", resize=128)  # same job: nothing to do
    assert again.shards_resumed == first.shards
    with pytest.raises(RefusedError, match="--overwrite"):
        pack_tree(tmp_path / "tree", tmp_path / "out", resize=64)
    pack_entries(ordered_entries(scan_tree(tmp_path / "tree").entries), FolderSource(str(tmp_path / "tree")),
                 tmp_path / "out", "data", PackOptions(resize=64), overwrite=True)
    assert Manifest.load(tmp_path / "out" / "data.manifest.json").options["resize"] == 64

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.rec").write_bytes(b"somebody's data")
    with pytest.raises(RefusedError):
        pack_tree(tmp_path / "tree", foreign)
    assert (foreign / "data.rec").read_bytes() == b"somebody's data"


def _cli(*args: str, **kwargs: object) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300, **kwargs)  # type: ignore[call-overload]


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_gives_identical_bytes(tmp_path: Path) -> None:
    small_tree(tmp_path / "tree", classes=4, per_class=40)
    arguments = ["--resize", "96", "--reencode", "always", "--num-shards", "16", "--workers", "2", "-q"]
    reference = _cli("pack", str(tmp_path / "tree"), str(tmp_path / "ref"), *arguments)
    assert reference.returncode == 0, reference.stderr

    out = tmp_path / "out"
    process = subprocess.Popen([*CLI, "pack", str(tmp_path / "tree"), str(out), *arguments],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    journal = out / "tree.pack-state.json"
    deadline = time.monotonic() + 120
    while not journal_shards(journal) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)  # the parent only: workers must notice and stop on their own
    process.wait()
    assert not (out / "tree.manifest.json").exists(), "the run finished before it could be killed"
    assert journal.exists()
    time.sleep(1.0)  # orphaned workers poll their parent between images

    resumed = _cli("pack", str(tmp_path / "tree"), str(out), *arguments, "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["shards_resumed"] >= 1
    names = sorted(path.name for path in (tmp_path / "ref").iterdir())
    assert names == sorted(path.name for path in out.iterdir())
    for name in names:
        assert (out / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name


def test_cli_pack_verify_index_inspect_end_to_end(tmp_path: Path) -> None:
    expected = awkward_tree(tmp_path / "tree")
    packed = _cli("pack", str(tmp_path / "tree"), str(tmp_path / "out"), "--resize", "128", "--json", "--num-shards", "2")
    assert packed.returncode == 0, packed.stderr
    summary = json.loads(packed.stdout)
    assert summary["records"] == sum(1 for outcome in expected.values() if outcome == "packed")
    assert summary["rejects"] == sum(1 for outcome in expected.values() if outcome.startswith("reject"))

    verified = _cli("verify", str(tmp_path / "out"), "--decode", "--json")
    assert verified.returncode == 0, verified.stdout
    assert json.loads(verified.stdout)["records"] == summary["records"]

    shard = tmp_path / "out" / "tree-00000-of-00002.rec"
    original_idx = (tmp_path / "out" / "tree-00000-of-00002.idx").read_bytes()
    (tmp_path / "out" / "tree-00000-of-00002.idx").unlink()
    assert _cli("index", str(shard)).returncode == 0
    assert (tmp_path / "out" / "tree-00000-of-00002.idx").read_bytes() == original_idx
    assert _cli("index", str(shard)).returncode == 3  # exists: refused without --overwrite

    combined = tmp_path / "all.idx"
    recs = sorted(str(path) for path in (tmp_path / "out").glob("*.rec"))
    assert _cli("index", *recs, "--combined", str(combined)).returncode == 0
    pairs = read_idx(combined)
    assert [key for key, _ in pairs] == list(range(summary["records"]))
    first_size = Path(recs[0]).stat().st_size
    second_offsets = [offset for offset in pairs if offset[1] >= first_size]
    assert second_offsets and second_offsets[0][1] == first_size

    sheet = tmp_path / "sheet.png"
    inspected = _cli("inspect", str(tmp_path / "out"), "--json", "--contact-sheet", str(sheet), "--limit", "5")
    assert inspected.returncode == 0, inspected.stderr
    rows = json.loads(inspected.stdout)["records"]
    assert len(rows) == 5 and all(row["class_name"] in ("a_class", "b_class") for row in rows)
    assert cv2.imread(str(sheet)) is not None


def _packed(tmp_path: Path) -> Path:
    small_tree(tmp_path / "tree", classes=2, per_class=5)
    pack_tree(tmp_path / "tree", tmp_path / "out", num_shards=1)
    assert _cli("verify", str(tmp_path / "out")).returncode == 0
    return tmp_path / "out"


def test_verify_catches_a_flipped_byte(tmp_path: Path) -> None:
    out = _packed(tmp_path)
    data = bytearray((out / "data.rec").read_bytes())
    data[len(data) // 2] ^= 0x01
    (out / "data.rec").write_bytes(bytes(data))
    result = _cli("verify", str(out))
    assert result.returncode == 1 and "SHA-256 differs" in result.stdout


def test_verify_catches_a_truncated_rec(tmp_path: Path) -> None:
    out = _packed(tmp_path)
    data = (out / "data.rec").read_bytes()
    (out / "data.rec").write_bytes(data[: len(data) - 100])
    result = _cli("verify", str(out / "data.rec"))  # no manifest: framing alone must catch it
    assert result.returncode == 1 and "truncated" in result.stdout


def test_verify_catches_a_wrong_idx(tmp_path: Path) -> None:
    out = _packed(tmp_path)
    lines = (out / "data.idx").read_text().splitlines()
    key, offset = lines[3].split("\t")
    lines[3] = f"{key}\t{int(offset) + 4}"
    (out / "data.idx").write_text("\n".join(lines) + "\n")
    result = _cli("verify", str(out / "data.rec"))
    assert result.returncode == 1
    assert "is not the start of a record" in result.stdout and "not in the index" in result.stdout


def test_lst_index_slices_read_the_same_entries_as_the_whole_list(tmp_path: Path) -> None:
    from recordio_pack.listing import LstIndex, read_lst

    lst = tmp_path / "x.lst"
    lst.write_text("0\t1.000000\ta/0.jpg\n\n5\t2.000000\t3.000000\tb/5.jpg\r\n7\t0.000000\tc/7.jpg")
    index = LstIndex(lst)
    whole = read_lst(lst)
    assert len(index) == 3 and list(index) == whole
    assert list(index[1:3]) == whole[1:3] and list(index[0:1]) == whole[:1] and list(index[3:3]) == []
    assert len(index[1:3]) == 2

    lst.write_text("0\t1\ta.jpg\n1\tnot-a-number\tb.jpg\n")
    with pytest.raises(ValueError, match=r"x\.lst:2:"):
        LstIndex(lst)


def test_packing_a_lst_equals_packing_its_entries(tmp_path: Path) -> None:
    from recordio_pack.listing import LstIndex, read_lst, write_lst

    small_tree(tmp_path / "tree", classes=2, per_class=5)
    write_lst(tmp_path / "t.lst", ordered_entries(scan_tree(tmp_path / "tree").entries))
    source = FolderSource(str(tmp_path / "tree"))
    options = PackOptions(resize=64, num_shards=3, workers=2)
    pack_entries(LstIndex(tmp_path / "t.lst"), source, tmp_path / "a", "t", options)
    pack_entries(read_lst(tmp_path / "t.lst"), source, tmp_path / "b", "t", options)
    for path in sorted((tmp_path / "a").iterdir()):
        assert path.read_bytes() == (tmp_path / "b" / path.name).read_bytes(), path.name


def test_the_codec_version_in_the_fingerprint_is_found_without_loading_opencv() -> None:
    script = ("import sys; from recordio_pack.options import opencv_version; "
              "print(opencv_version(), 'cv2' in sys.modules)")
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert completed.stdout.split() == [cv2.__version__, "False"]
