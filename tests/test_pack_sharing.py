"""Several workers share a shard: chunks prepared anywhere, written in list order, the same bytes whatever the
worker count; failures in a shared shard behave as in a whole one."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from imagegen import awkward_tree, class_tree, jpeg
from recordio_pack import cli
from recordio_pack.errors import RecordioPackError
from recordio_pack.inputs import open_input
from recordio_pack.listing import LstIndex, ordered_entries, scan_tree, write_lst
from recordio_pack.options import PackOptions
from recordio_pack.pack import pack_entries, pack_input
from recordio_pack.shard import (
    ChunkTask,
    ShardAssembly,
    ShardTask,
    pack_shard,
    prepare_chunk,
    split_shards,
)
from recordio_pack.sources import Entry, FolderSource


def photo_tree(root: Path, classes: int = 2, per_class: int = 20) -> Path:
    return class_tree(root, classes, per_class, 96, 80)


def files_of(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


def tasks_for(root: Path, out: Path, shards: int, options: PackOptions) -> list[ShardTask]:
    listing = scan_tree(root)
    entries = ordered_entries(listing.entries)
    bounds = [len(entries) * part // shards for part in range(shards + 1)]
    return [ShardTask(index, shards, "data", str(out), entries[bounds[index]:bounds[index + 1]], FolderSource(str(root)),
                      options) for index in range(shards)]


@pytest.mark.parametrize("shards", [1, 2, 5])
def test_any_worker_count_gives_the_same_files_rejects_included(tmp_path: Path, shards: int) -> None:
    root = tmp_path / "tree"
    awkward_tree(root)
    photo_tree(root)
    results = {}
    for workers in (1, 2, 3):
        out = tmp_path / f"w{workers}"
        results[workers] = pack_input(open_input(root), out, PackOptions(resize=64, num_shards=shards, workers=workers))
    assert results[1].rejects > 0 and results[1].records > 40
    one = files_of(tmp_path / "w1")
    for workers in (2, 3):
        assert files_of(tmp_path / f"w{workers}") == one, workers


def test_a_lst_input_with_lst_index_keys_packs_the_same_shared_or_not(tmp_path: Path) -> None:
    root = photo_tree(tmp_path / "tree", per_class=15)
    listing = scan_tree(root)
    entries = [Entry(1000 - entry.index, entry.labels, entry.path) for entry in ordered_entries(listing.entries)]
    write_lst(tmp_path / "data.lst", entries)
    for workers in (1, 2):
        pack_entries(LstIndex(tmp_path / "data.lst"), FolderSource(str(root)), tmp_path / f"w{workers}", "data",
                     PackOptions(resize=48, key="lst-index", workers=workers))
    assert files_of(tmp_path / "w2") == files_of(tmp_path / "w1")
    keys = [int(line.split("\t")[0]) for line in (tmp_path / "w1" / "data.idx").read_text().splitlines()]
    assert keys == [entry.index for entry in entries]


def test_the_work_is_whole_shards_then_chunks_of_the_last_covering_each_image_once(tmp_path: Path) -> None:
    root = photo_tree(tmp_path / "tree", per_class=25)
    tasks = tasks_for(root, tmp_path, 5, PackOptions(resize=48))
    items, assemblies = split_shards(tasks, workers=2)
    whole = [item for item in items if isinstance(item, ShardTask)]
    chunks = [item for item in items if isinstance(item, ChunkTask)]
    assert [task.index for task in whole] == [0, 1, 2] and items[:3] == whole
    assert sorted(assemblies) == [3, 4]
    for index in (3, 4):
        mine = [chunk for chunk in chunks if chunk.shard == index]
        assert len(mine) >= 4  # two per worker at least, so the last of them balance
        assert [chunk.number for chunk in mine] == list(range(len(mine)))
        assert [entry for chunk in mine for entry in chunk.entries] == list(tasks[index].entries)
        assert all(chunk.first == sum(len(c.entries) for c in mine[:chunk.number]) for chunk in mine)
    assert split_shards(tasks, workers=1) == (tasks, {})


def test_chunks_arriving_in_any_order_are_written_in_list_order(tmp_path: Path) -> None:
    root = photo_tree(tmp_path / "tree")
    (root / "n00000000" / "broken.JPEG").write_bytes(b"\xff\xd8\xff\xe0not a jpeg")
    (tmp_path / "whole").mkdir()
    (tmp_path / "chunked").mkdir()
    [whole_task] = tasks_for(root, tmp_path / "whole", 1, PackOptions(resize=48))
    [chunked_task] = tasks_for(root, tmp_path / "chunked", 1, PackOptions(resize=48))
    expected = pack_shard(whole_task)
    items, assemblies = split_shards([chunked_task], workers=3)
    results = [prepare_chunk(item) for item in items if isinstance(item, ChunkTask)]
    assert len(results) >= 6
    finished = [assemblies[0].add(result) for result in reversed(results)]
    assert finished[:-1] == [None] * (len(results) - 1)
    assert finished[-1] == expected and expected.rejects and expected.rejects[0][0].endswith("broken.JPEG")
    assert files_of(tmp_path / "chunked") == files_of(tmp_path / "whole")


@dataclass(frozen=True)
class PidLoggingSource(FolderSource):
    """A folder source that notes which process read each image."""

    log: str = ""

    def read(self, entry: Entry) -> bytes:
        with open(self.log, "a") as stream:
            stream.write(f"{os.getpid()}\t{entry.path}\n")
        return super().read(entry)


def test_a_one_shard_dataset_is_prepared_by_every_worker(tmp_path: Path) -> None:
    root = photo_tree(tmp_path / "tree", per_class=30)
    listing = scan_tree(root)
    log = tmp_path / "reads.tsv"
    result = pack_entries(ordered_entries(listing.entries), PidLoggingSource(str(root), str(log)), tmp_path / "out",
                          "data", PackOptions(resize=48, workers=2))
    assert result.shards == 1 and result.records == 60
    readers = {line.split("\t")[0] for line in log.read_text().splitlines()}
    assert len(readers) == 2 and str(os.getpid()) not in readers


def test_a_bad_image_in_a_shared_shard_stops_the_run_naming_it_and_leaves_no_temporaries(tmp_path: Path) -> None:
    root = photo_tree(tmp_path / "tree")
    (root / "n00000001" / "broken.JPEG").write_bytes(b"\xff\xd8\xff\xe0garbage")
    with pytest.raises(RecordioPackError, match=r"broken\.JPEG"):
        pack_input(open_input(root), tmp_path / "out", PackOptions(resize=48, workers=2, on_error="fail"))
    assert not list((tmp_path / "out").glob("*.tmp")) and not list((tmp_path / "out").glob("*.rec"))


def test_a_full_disk_in_a_shard_this_process_writes_is_one_line_and_resumable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    root = photo_tree(tmp_path / "tree")
    arguments = ["pack", str(root), str(tmp_path / "out"), "--resize", "48", "--workers", "2", "-q"]
    from recordio_pack import digest

    real_write = digest.DigestingWriter.write
    budget = [20_000]

    def write(writer, data):  # type: ignore[no-untyped-def]
        budget[0] -= len(data)
        if budget[0] < 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(writer, data)

    with monkeypatch.context() as patch:  # only this process: the one shard is written here, from the chunks
        patch.setattr(digest.DigestingWriter, "write", write)
        assert cli.main(arguments) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "no space left on device" in error and "tree.rec" in error, error
    assert not list((tmp_path / "out").glob("*.tmp")) and not list((tmp_path / "out").glob("*.rec"))
    assert cli.main(arguments) == 0
    assert cli.main(["pack", str(root), str(tmp_path / "ref"), "--resize", "48", "--workers", "1", "-q"]) == 0
    assert files_of(tmp_path / "out") == files_of(tmp_path / "ref")


@dataclass(frozen=True)
class ReadAheadSource(FolderSource):
    """Reads ahead (``read_all``), noting in ``log`` that it did; ``gone`` reads as a missing file."""

    log: str = ""
    gone: str = ""

    def read(self, entry: Entry) -> bytes:
        raise AssertionError("a source that reads ahead is not read one entry at a time")

    def read_all(self, entries):  # type: ignore[no-untyped-def]
        with open(self.log, "a") as stream:
            stream.write("read_all\n")
        for entry in entries:
            if entry.path == self.gone:
                yield entry, FileNotFoundError(f"{entry.path}: no such object")
            else:
                yield entry, FolderSource.read(self, entry)


@pytest.mark.parametrize("workers", [1, 2])
def test_bytes_read_ahead_by_the_source_are_packed_and_its_read_errors_rejected(tmp_path: Path, workers: int) -> None:
    root = photo_tree(tmp_path / "tree")
    entries = ordered_entries(scan_tree(root).entries)
    gone = entries[3].path
    log = tmp_path / "reads.log"
    result = pack_entries(entries, ReadAheadSource(str(root), str(log), gone), tmp_path / "ahead", "data",
                          PackOptions(resize=48, num_shards=2, workers=workers))
    assert result.records == len(entries) - 1 and log.read_text().count("read_all") >= 2
    rejects = (tmp_path / "ahead" / "data.rejects.tsv").read_text().splitlines()[1:]
    assert rejects == [f"{gone}\tunreadable: {gone}: no such object"]
    plain = [entry for entry in entries if entry.path != gone]
    pack_entries(plain, FolderSource(str(root)), tmp_path / "plain", "data", PackOptions(resize=48, num_shards=2))
    ahead = b"".join((tmp_path / "ahead" / f"data-0000{n}-of-00002.rec").read_bytes() for n in (0, 1))
    direct = b"".join((tmp_path / "plain" / f"data-0000{n}-of-00002.rec").read_bytes() for n in (0, 1))
    assert ahead == direct  # shard boundaries differ by one image, the records do not


def test_a_list_with_nothing_to_pack_gives_the_same_empty_dataset_for_any_worker_count(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "n00000000").mkdir(parents=True)
    (root / "n00000000" / "anim.gif").write_bytes(b"GIF89a")
    (root / "stray.JPEG").write_bytes(jpeg(40, 40, seed=1))
    for workers in (1, 2):
        result = pack_input(open_input(root), tmp_path / f"w{workers}", PackOptions(workers=workers))
        assert result.shards == 1 and result.records == 0 and result.files_accounted == 2
    assert files_of(tmp_path / "w2") == files_of(tmp_path / "w1")
    assert "tree.rec" in files_of(tmp_path / "w2")
