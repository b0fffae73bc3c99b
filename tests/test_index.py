"""index on damaged and missing shards: the file and byte named, --salvage, one line per mistake."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recordio_pack.index import combined_index, rebuild_index
from recordio_pack.recordio import DamagedShard, read_idx
from test_verify import cli, flip, write_shard


def test_a_bad_header_refusal_names_the_file_and_byte(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec, idx, offsets, _ = write_shard(tmp_path, "data", 12)
    flip(rec, offsets[4] + 5)
    idx.unlink()
    code, out, err = cli(capsys, "index", str(rec))
    assert code == 1 and out == "" and len(err.splitlines()) == 1
    assert err.startswith(f"recordio-pack index: error: cannot index {rec}: bytes {offsets[4]}..{offsets[5]} ")
    assert "--salvage" in err
    assert not idx.exists()


def test_salvage_indexes_the_intact_records_and_lists_the_skipped_bytes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec, idx, offsets, _ = write_shard(tmp_path, "data", 12)
    flip(rec, offsets[4])
    flip(rec, offsets[9] + 2)
    idx.unlink()
    code, out, _ = cli(capsys, "index", str(rec), "--salvage", "--json")
    assert code == 0
    (result,) = json.loads(out)["indexes"]
    assert result["records"] == 10
    assert [(item["start"], item["end"]) for item in result["skipped"]] == [(offsets[4], offsets[5]),
                                                                            (offsets[9], offsets[10])]
    kept = [offset for number, offset in enumerate(offsets) if number not in (4, 9)]
    assert read_idx(idx) == list(enumerate(kept))
    text = cli(capsys, "index", str(rec), "--salvage", "--overwrite")[1]
    assert f"{rec}: bytes {offsets[4]}..{offsets[5]} (" in text and "2 damaged range(s) skipped" in text


def test_rebuild_refuses_damage_with_the_ranges(tmp_path: Path) -> None:
    rec, _, offsets, _ = write_shard(tmp_path, "data", 6)
    flip(rec, offsets[2])
    with pytest.raises(DamagedShard) as caught:
        rebuild_index(rec, tmp_path / "out.idx")
    assert [(item.start, item.end) for item in caught.value.damage] == [(offsets[2], offsets[3])]
    assert str(rec) in str(caught.value) and not (tmp_path / "out.idx").exists()


def test_combined_salvage_keeps_keys_consecutive(tmp_path: Path) -> None:
    first = write_shard(tmp_path, "a", 5)
    second = write_shard(tmp_path, "b", 4)
    flip(first[0], first[2][1])
    result = combined_index([first[0], second[0]], tmp_path / "all.idx", salvage=True)
    size = first[0].stat().st_size
    expected = [first[2][0]] + first[2][2:] + [size + offset for offset in second[2]]
    assert read_idx(tmp_path / "all.idx") == list(enumerate(expected))
    assert result.records == 8 and len(result.skipped) == 1


def test_index_of_a_missing_rec_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nonexistent.rec"
    assert cli(capsys, "index", str(missing)) == (1, "", f"recordio-pack index: error: {missing}: no such file\n")
    assert cli(capsys, "index", str(missing), "--combined", str(tmp_path / "all.idx")) == (
        1, "", f"recordio-pack index: error: {missing}: no such file\n")


def test_id_keys_of_a_short_payload_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from recordio_pack.format import frame

    rec = tmp_path / "short.rec"
    rec.write_bytes(frame(b"tiny"))
    code, _, err = cli(capsys, "index", str(rec), "--key", "id")
    assert code == 1 and err == (f"recordio-pack index: error: {rec}: record at byte 0: payload of 4 bytes is "
                                 "shorter than the 24-byte IRHeader\n")


def test_duplicate_ids_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from recordio_pack.format import IRHeader, frame, pack_payload

    rec = tmp_path / "dup.rec"
    rec.write_bytes(frame(pack_payload(IRHeader((0.0,), id=3), b"x")) * 2)
    code, _, err = cli(capsys, "index", str(rec), "--key", "id")
    assert code == 1 and err == f"recordio-pack index: error: {rec}: record ids are not unique, so they cannot be index keys\n"
