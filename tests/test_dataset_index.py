"""NAME.all.idx: one index over every shard of a packed dataset, cumulative offsets, checked by verify."""

from __future__ import annotations

from pathlib import Path

import pytest

from recordio_pack.digest import file_digests
from recordio_pack.format import read_record
from recordio_pack.index import combined_index, write_dataset_index
from recordio_pack.manifest import FileRecord, Manifest
from recordio_pack.recordio import InputError, read_idx
from recordio_pack.verify import verify_paths
from training_data import Packed, image_tree, pack_tree


@pytest.fixture()
def packed(tmp_path: Path) -> Packed:
    return pack_tree(image_tree(tmp_path / "images"), tmp_path / "out")


def shard_files(packed: Packed) -> list[tuple[str, str]]:
    return [(shard.rec.name, shard.idx.name) for shard in packed.manifest.shards]


def list_in_manifest(packed: Packed, path: Path) -> None:
    """The file among the manifest's files, with its checksums as they are now (as pack's _finish lists it)."""
    manifest = Manifest.load(packed.manifest_path)
    manifest.files = [record for record in manifest.files if record.name != path.name]
    manifest.files.append(FileRecord.of(path.name, file_digests(path)))
    manifest.save(packed.manifest_path)


def test_the_dataset_index_addresses_every_record_across_the_shards(packed: Packed) -> None:
    path = write_dataset_index(packed.out, packed.name, shard_files(packed))
    assert path == packed.out / "data.all.idx"
    pairs = read_idx(path)
    assert [key for key, _ in pairs] == list(range(len(packed.payloads)))
    whole = b"".join(rec.read_bytes() for rec in packed.recs)  # the shards concatenated, as DALI counts offsets
    assert [read_record(whole, offset)[0] for _, offset in pairs] == packed.payloads
    assert packed.escaped(), "the fixture must hold records that needed escaping"
    # the same as `index --combined` rebuilds by scanning the shards, without reading them
    combined_index(packed.recs, packed.out / "scanned.idx")
    assert (packed.out / "scanned.idx").read_bytes() == path.read_bytes()


def test_one_shard_gets_one_too(tmp_path: Path) -> None:
    packed = pack_tree(image_tree(tmp_path / "images", classes=2, per_class=3), tmp_path / "out", num_shards=1)
    path = write_dataset_index(packed.out, packed.name, shard_files(packed))
    assert read_idx(path) == read_idx(packed.out / "data.idx")


def test_a_missing_or_wrong_shard_index_is_refused_by_name(packed: Packed) -> None:
    files = shard_files(packed)
    written_by_pack = (packed.out / "data.all.idx").read_bytes()
    (packed.out / files[1][1]).unlink()
    with pytest.raises(InputError, match=f"{files[1][1]}: no such file"):
        write_dataset_index(packed.out, packed.name, files)
    (packed.out / files[1][1]).write_text(f"0\t{packed.recs[1].stat().st_size + 8}\n")
    with pytest.raises(InputError, match="lies past the end of"):
        write_dataset_index(packed.out, packed.name, files)
    assert (packed.out / "data.all.idx").read_bytes() == written_by_pack  # a refusal leaves the old one as it was


def test_verify_checks_the_listed_dataset_index_against_the_shards(packed: Packed) -> None:
    path = write_dataset_index(packed.out, packed.name, shard_files(packed))
    list_in_manifest(packed, path)
    assert verify_paths([packed.out]).problems == []
    assert verify_paths([path]).problems == []
    # a line that points inside a record, not at its start (DALI would read a record from the wrong bytes):
    # verify names it, even when the manifest's checksum was made of the wrong file
    pairs = read_idx(path)
    line = packed.manifest.shards[0].records + 1  # the second record of the second shard
    key, offset = pairs[line]
    pairs[line] = (key, offset + 1)
    path.write_text("".join(f"{key}\t{offset}\n" for key, offset in pairs))
    manifest = Manifest.load(packed.manifest_path)
    manifest.files = [record for record in manifest.files if record.name != path.name]
    manifest.save(packed.manifest_path)
    list_in_manifest(packed, path)
    problems = verify_paths([packed.out]).problems
    assert problems == [f"data.all.idx:{line + 1}: offset {offset + 1} of key {key} is not the start of a record",
                        f"data.all.idx: 1 record(s) not in the index, first at byte {offset}"]


def test_verify_reports_a_listed_dataset_index_that_is_gone(packed: Packed) -> None:
    path = write_dataset_index(packed.out, packed.name, shard_files(packed))
    list_in_manifest(packed, path)
    path.unlink()
    assert verify_paths([packed.out]).problems == ["data.all.idx: missing (listed in data.manifest.json)"]


def test_pack_writes_the_dataset_index(packed: Packed) -> None:
    path = packed.out / "data.all.idx"
    assert path.name in [record.name for record in packed.manifest.files]
    assert [offset for _, offset in read_idx(path)] == [
        offset for _, offset in read_idx(write_dataset_index(packed.out, "again", shard_files(packed)))]
    assert verify_paths([packed.out]).problems == []
