"""verify tells the truth about damage: resynchronisation, damaged ranges naming their records, capped repeats,
the manifest beside a `.rec`, `.idx` inputs, per-record CRC32s, and one line for every user mistake."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from imagegen import jpeg
from recordio_pack.cli import main
from recordio_pack.digest import file_digests
from recordio_pack.format import IRHeader, pack_payload
from recordio_pack.index import combined_index
from recordio_pack.manifest import (
    FileRecord, Manifest, ShardRecord, decode_record_crc32s, encode_record_crc32s, manifest_path,
)
from recordio_pack.recordio import RecordWriter
from recordio_pack.verify import LINES_PER_KIND, check_shard, resolve_path, verify_paths

IMAGE = jpeg(32, 24, seed=3)
CLASSES = ["n0", "n1", "n2"]


def write_shard(folder: Path, stem: str, count: int, labels: list[float] | None = None,
                image: bytes = IMAGE) -> tuple[Path, Path, list[int], list[int]]:
    """``count`` image records (label ``i % 3`` unless given); returns rec, idx, offsets, record CRC32s."""
    folder.mkdir(parents=True, exist_ok=True)
    rec, idx = folder / f"{stem}.rec", folder / f"{stem}.idx"
    labels = [float(i % 3) for i in range(count)] if labels is None else labels
    with open(rec, "wb") as rec_stream, open(idx, "wb") as idx_stream:
        writer = RecordWriter(rec_stream, idx_stream)
        offsets = [writer.write(i, pack_payload(IRHeader((labels[i],), id=i), image)) for i in range(count)]
    return rec, idx, offsets, list(writer.record_crc32s)


def write_manifest(folder: Path, name: str, shards: list[tuple[Path, Path, list[int], list[int]]],
                   with_crcs: bool = True) -> Path:
    records = [ShardRecord(number, len(offsets), 0, FileRecord.of(rec.name, file_digests(rec)),
                           FileRecord.of(idx.name, file_digests(idx)),
                           encode_record_crc32s(crcs) if with_crcs else "")
               for number, (rec, idx, offsets, crcs) in enumerate(shards)]
    manifest = Manifest(name=name, fingerprint="test", options={}, key_convention="position", classes=CLASSES,
                        label_convention="sorted", shards=records)
    path = manifest_path(folder, name)
    manifest.save(path)
    return path


def flip(path: Path, offset: int, mask: int = 0xFF) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


def image_byte(offset: int) -> int:
    """A byte inside the JPEG scan data of the record at ``offset`` (past the 8-byte header, IRHeader, markers)."""
    return offset + 8 + 24 + len(IMAGE) // 2


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------- resynchronisation and damaged ranges

def test_one_damaged_header_is_one_line_naming_the_record(tmp_path: Path) -> None:
    rec, idx, offsets, _ = write_shard(tmp_path, "data", 120)
    flip(rec, offsets[10] + 5)  # the lrec: a length far past the record
    report = verify_paths([rec])
    assert len(report.problems) == 1, report.problems
    problem = report.problems[0]
    assert f"bytes {offsets[10]}..{offsets[11]}" in problem
    assert "record #10 (key 10" in problem and "resynchronised" in problem
    assert report.records == 119  # the intact records after it are not lost
    assert report.shards[0].damage[0].start == offsets[10]


def test_a_damaged_magic_without_idx_says_so(tmp_path: Path) -> None:
    rec, idx, offsets, _ = write_shard(tmp_path, "data", 30)
    idx.unlink()
    flip(rec, offsets[4])
    report = verify_paths([rec])
    assert len(report.problems) == 1 and "bad magic" in report.problems[0]
    assert "no .idx to name the records" in report.problems[0]
    assert report.records == 29


def test_truncation_is_one_range_up_to_the_end(tmp_path: Path) -> None:
    rec, idx, offsets, _ = write_shard(tmp_path, "data", 20)
    rec.write_bytes(rec.read_bytes()[:-100])
    report = verify_paths([rec])
    assert len(report.problems) == 1
    assert "truncated" in report.problems[0] and "up to the end of the file" in report.problems[0]
    assert "record #19 (key 19" in report.problems[0] and report.records == 19


def test_repeated_problems_are_capped_with_a_count(tmp_path: Path) -> None:
    rec, _, _, _ = write_shard(tmp_path, "data", 25, labels=[7.0] * 25)
    check = check_shard(rec, None, classes=CLASSES)
    assert len(check.problems) == LINES_PER_KIND + 1 and check.problem_count == 25
    assert check.problems[-1] == f"data.rec: ... and {25 - LINES_PER_KIND} more labels outside the class map"


def test_the_summary_counts_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec, _, _, _ = write_shard(tmp_path, "data", 25, labels=[7.0] * 25)
    (tmp_path / "data.synsets.txt").write_text("0\tn0\n")
    code, out, _ = cli(capsys, "verify", "-q", str(rec))
    lines = out.splitlines()
    assert code == 1 and lines[0] == "FAILED: 25 problem(s) in 1 file(s):" and len(lines) == 1 + LINES_PER_KIND + 1


def test_unescaped_magics_are_capped_with_a_count(tmp_path: Path) -> None:
    rec = tmp_path / "raw.rec"
    payload = pack_payload(IRHeader((0.0,)), b"\xff\xd8\xff" + b"\0" * 5 + struct.pack("<I", 0xCED7230A) * 12)
    rec.write_bytes(struct.pack("<II", 0xCED7230A, len(payload)) + payload)  # not escaped
    problems = check_shard(rec, None).problems
    assert len(problems) == LINES_PER_KIND + 1 and problems[-1] == "raw.rec: ... and 2 more unescaped magics"


def test_idx_lines_into_a_damaged_range_are_not_repeated(tmp_path: Path) -> None:
    rec, idx, offsets, _ = write_shard(tmp_path, "data", 40)
    flip(rec, offsets[3] + 1)
    flip(rec, offsets[20] + 1)
    problems = verify_paths([rec]).problems
    assert len(problems) == 2 and all("hold no readable record" in problem for problem in problems)
    assert "record #3 (key 3" in problems[0] and "record #20 (key 20" in problems[1]


# ---------------------------------------------------------------- what a path stands for

def test_a_rec_is_checked_against_the_manifest_beside_it(tmp_path: Path) -> None:
    shard = write_shard(tmp_path, "data", 12)
    write_manifest(tmp_path, "data", [shard], with_crcs=False)
    assert verify_paths([shard[0]]).ok
    flip(shard[0], image_byte(shard[2][5]), 0x01)
    problems = verify_paths([shard[0]], decode=True).problems
    assert problems == ["data.rec: SHA-256 differs from the manifest (the file changed; this manifest has no "
                        "per-record checksums to say which record)"]


def test_a_folder_without_manifest_uses_its_synsets(tmp_path: Path) -> None:
    write_shard(tmp_path, "ds-00000-of-00002", 6, labels=[0, 1, 2, 3, 4, 0])
    write_shard(tmp_path, "ds-00001-of-00002", 3)
    (tmp_path / "ds.synsets.txt").write_text("0\tn0\n1\tn1\n2\tn2\n")
    problems = verify_paths([tmp_path]).problems
    assert len(problems) == 2 and all("outside the class map (0..2)" in problem for problem in problems)


def test_a_shard_idx_given_to_verify_checks_its_rec(tmp_path: Path) -> None:
    rec, idx, _, _ = write_shard(tmp_path, "data", 30)
    report = verify_paths([idx])
    assert report.ok and report.records == 30 and report.shards[0].rec == str(rec)


def test_a_combined_idx_is_checked_against_the_shards(tmp_path: Path) -> None:
    shards = [write_shard(tmp_path, f"ds-0000{i}-of-00002", 10 + i) for i in range(2)]
    write_manifest(tmp_path, "ds", shards)
    combined = tmp_path / "ds.all.idx"
    combined_index([shards[0][0], shards[1][0]], combined)
    report = verify_paths([combined])
    assert report.ok, report.problems
    assert report.records == 21
    lines = combined.read_text().splitlines()
    key, offset = lines[15].split("\t")
    lines[15] = f"{key}\t{int(offset) + 4}"
    renamed = tmp_path / "ds.all"  # told by its content, not its name
    renamed.write_text("\n".join(lines) + "\n")
    problems = verify_paths([renamed]).problems
    assert problems == [f"ds.all:16: offset {int(offset) + 4} of key 15 is not the start of a record",
                        f"ds.all: 1 record(s) not in the index, first at byte {offset}"]


def test_an_idx_with_nothing_to_check_it_against_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "lonely.idx").write_text("0\t0\n1\t64\n")
    problems = verify_paths([tmp_path / "lonely.idx"]).problems
    assert len(problems) == 1 and "an index" in problems[0] and "no shards beside it" in problems[0]


def test_a_bad_manifest_does_not_hide_the_others(tmp_path: Path) -> None:
    shard = write_shard(tmp_path, "good", 4)
    write_manifest(tmp_path, "good", [shard])
    (tmp_path / "bad.manifest.json").write_text("{")
    report = verify_paths([tmp_path])
    assert report.records == 4 and len(report.problems) == 1
    assert report.problems[0].startswith(f"{tmp_path / 'bad.manifest.json'}: unreadable manifest")
    flip(shard[0], image_byte(shard[2][2]), 0x01)
    beside = verify_paths([shard[0]]).problems  # the .rec is still checked against its own manifest
    assert len(beside) == 3 and beside[0].startswith(f"{tmp_path / 'bad.manifest.json'}: unreadable manifest")
    assert "record #2 (key 2" in beside[1] and "SHA-256 differs" in beside[2]


def test_inspect_and_verify_resolve_a_folder_alike(tmp_path: Path) -> None:
    shard = write_shard(tmp_path, "data", 4)
    write_manifest(tmp_path, "data", [shard])
    (target,) = resolve_path(tmp_path)
    assert target.kind == "manifest" and target.rec_paths() == [shard[0]] and target.classes == CLASSES


# ---------------------------------------------------------------- per-record CRC32

def test_a_flipped_byte_names_the_record(tmp_path: Path) -> None:
    shard = write_shard(tmp_path, "data", 20)
    write_manifest(tmp_path, "data", [shard])
    assert verify_paths([tmp_path]).ok
    flip(shard[0], image_byte(shard[2][7]), 0x01)
    problems = verify_paths([tmp_path]).problems
    assert problems == [f"data.rec: record #7 (key 7, byte {shard[2][7]}): CRC32 differs from the manifest "
                        "(the record's bytes changed)",
                        "data.rec: SHA-256 differs from the manifest (the file changed)"]


def test_crcs_realign_after_damage_without_an_idx(tmp_path: Path) -> None:
    rec, idx, offsets, crcs = write_shard(tmp_path, "data", 20)
    write_manifest(tmp_path, "data", [(rec, idx, offsets, crcs)])
    flip(rec, offsets[3])  # framing damage: record 3 unreadable
    flip(rec, image_byte(offsets[8]), 0x01)  # and a payload byte of record 8
    idx.unlink()
    problems = verify_paths([rec]).problems
    assert any(f"record #8 (byte {offsets[8]}): CRC32 differs" in problem for problem in problems), problems
    assert not any("record #4" in problem or "record #9" in problem for problem in problems)
    assert any("19 readable records, the manifest says 20 (1 lost in damaged bytes)" in p for p in problems)


def test_record_crc32s_round_trip_and_old_manifests_load(tmp_path: Path) -> None:
    values = [0, 1, 0xDEADBEEF, 0xFFFFFFFF]
    text = encode_record_crc32s(values)
    assert list(decode_record_crc32s(text)) == values
    assert decode_record_crc32s(text[:0]).tolist() == []
    import base64
    assert base64.b64decode(text)[8:12] == struct.pack("<I", 0xDEADBEEF)  # little-endian words
    with pytest.raises(ValueError):
        decode_record_crc32s(base64.b64encode(b"abc").decode())
    record = FileRecord("x", 1, "0" * 64, "00000000")
    old = {"index": 0, "records": 4, "rejects": 0, "rec": record.__dict__, "idx": record.__dict__}
    assert ShardRecord.from_dict(old).record_crc32 == "" and ShardRecord.from_dict(old).record_crc32s() is None
    assert list(ShardRecord.from_dict(dict(old, record_crc32=text)).record_crc32s()) == values
    with pytest.raises(ValueError, match="3 record checksums for 4 records"):
        ShardRecord.from_dict(dict(old, record_crc32=encode_record_crc32s(values[:3]))).record_crc32s()


def test_a_missing_idx_is_reported_once(tmp_path: Path) -> None:
    shard = write_shard(tmp_path, "data", 5)
    write_manifest(tmp_path, "data", [shard])
    shard[1].unlink()
    problems = verify_paths([tmp_path]).problems
    assert len(problems) == 1 and problems[0].startswith("data.idx: missing")


def test_json_puts_a_sha_problem_in_the_files_entry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shard = write_shard(tmp_path, "data", 5)
    write_manifest(tmp_path, "data", [shard], with_crcs=False)
    flip(shard[0], image_byte(shard[2][1]), 0x01)
    code, out, _ = cli(capsys, "verify", str(tmp_path), "--json")
    result = json.loads(out)
    assert code == 1
    (entry,) = result["files"]
    assert any("SHA-256 differs" in problem for problem in entry["problems"])
    assert any("SHA-256 differs" in problem for problem in result["problems"])


def test_json_lists_damaged_ranges(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec, _, offsets, _ = write_shard(tmp_path, "data", 5)
    flip(rec, offsets[2])
    code, out, _ = cli(capsys, "verify", str(rec), "--json")
    (entry,) = json.loads(out)["files"]
    assert code == 1 and entry["damaged"][0]["start"] == offsets[2] and entry["damaged"][0]["end"] == offsets[3]
    assert entry["damaged"][0]["records"] == [f"record #2 (key 2, byte {offsets[2]})"]


# ---------------------------------------------------------------- one line for every user mistake

def test_verify_with_a_missing_class_map_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec, _, _, _ = write_shard(tmp_path, "data", 2)
    missing = tmp_path / "nonexistent.txt"
    assert cli(capsys, "verify", "--classes", str(missing), str(rec)) == (
        1, "", f"recordio-pack verify: error: {missing}: no such file\n")


def test_verify_with_a_non_integer_label_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec, _, _, _ = write_shard(tmp_path, "data", 2)
    classes = tmp_path / "classes.txt"
    classes.write_text("0\tn0\nx\tn1\n")
    code, out, err = cli(capsys, "verify", "--classes", str(classes), str(rec))
    assert code == 1 and out == ""
    assert err == f"recordio-pack verify: error: {classes}:2: label 'x' is not a whole number (want label<TAB>name)\n"


def test_verify_a_missing_path_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "verify", "-q", str(tmp_path / "nope.rec"))
    assert code == 1 and f"{tmp_path / 'nope.rec'}: no such file" in out


def test_inspect_with_a_bad_manifest_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_shard(tmp_path, "data", 2)
    (tmp_path / "data.manifest.json").write_text("{")
    code, out, err = cli(capsys, "inspect", str(tmp_path))
    assert code == 1 and out == "" and len(err.splitlines()) == 1
    assert err.startswith(f"recordio-pack inspect: error: {tmp_path / 'data.manifest.json'}: unreadable manifest")


def test_inspect_a_missing_path_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "inspect", str(tmp_path / "nope.rec")) == (
        1, "", f"recordio-pack inspect: error: {tmp_path / 'nope.rec'}: no such file\n")


def test_inspect_a_damaged_shard_names_the_file_and_byte(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    rec, _, offsets, _ = write_shard(tmp_path, "data", 3)
    flip(rec, offsets[1])
    code, out, err = cli(capsys, "inspect", str(rec))
    assert code == 1 and len(err.splitlines()) == 1
    assert f"{rec}: bytes {offsets[1]}..{offsets[2]}" in err and "bad magic" in err


def test_inspect_reads_a_shard_idx_as_its_rec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec, idx, _, _ = write_shard(tmp_path, "data", 3)
    code, out, _ = cli(capsys, "inspect", str(idx), "--json")
    assert code == 0 and [row["key"] for row in json.loads(out)["records"]] == [0, 1, 2]



def test_verify_decode_reports_a_record_the_decoder_finds_damaged(tmp_path: Path) -> None:
    """The end-of-image marker is intact, so only the decoder's own warning shows the damage."""
    from imagegen import jpeg as make_jpeg
    from recordio_pack.format import IRHeader, pack_payload
    from recordio_pack.recordio import RecordWriter

    intact = make_jpeg(640, 480, seed=3)
    damaged = bytearray(intact)
    middle = len(damaged) // 2
    damaged[middle:middle + 2000] = bytes((index * 37 + 11) % 251 for index in range(2000))
    with open(tmp_path / "d.rec", "wb") as rec, open(tmp_path / "d.idx", "wb") as idx:
        writer = RecordWriter(rec, idx)
        writer.write(0, pack_payload(IRHeader((0.0,), id=0), intact))
        writer.write(1, pack_payload(IRHeader((0.0,), id=1), bytes(damaged)))
    result = subprocess.run([sys.executable, "-m", "recordio_pack", "verify", str(tmp_path / "d.rec"), "--decode"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "record #1" in result.stdout and "Corrupt JPEG data" in result.stdout, result.stdout
    assert "Corrupt JPEG data" not in result.stderr


def test_bmp_records_are_images_to_verify(tmp_path: Path) -> None:
    """BMP needs 26 bytes to be told from text starting with "BM": verify must look that far."""
    import cv2
    import numpy as np

    ok, bmp = cv2.imencode(".bmp", np.full((8, 8, 3), 99, np.uint8))
    assert ok
    with open(tmp_path / "b.rec", "wb") as rec, open(tmp_path / "b.idx", "wb") as idx:
        RecordWriter(rec, idx).write(0, pack_payload(IRHeader((0.0,), id=0), bmp.tobytes()))
    report = verify_paths([tmp_path / "b.rec"], decode=True)
    assert report.ok, report.problems
