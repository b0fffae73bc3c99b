"""`recordio-pack list` and recordio_pack.listing: labels, recursion, extensions, shuffle, splits, the class map,
symlink loops, paths a .lst cannot hold, refusals, reading im2rec lists, and packing from a list."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable

import pytest

from imagegen import jpeg
from recordio_pack.errors import RefusedError
from recordio_pack.listing import (make_lists, ordered_entries, read_class_map, read_lst, scan_tree,
                                   split_entries, write_lst)
from recordio_pack.sources import Entry

CLI = [sys.executable, "-m", "recordio_pack"]
TINY = jpeg(24, 16)


Run = Callable[..., subprocess.CompletedProcess]


def subprocess_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture()
def cli(cli_main: Run) -> Run:
    """``cli(*args)``: ``recordio-pack ARGS`` in this process (cli.main), answered like ``subprocess.run``."""
    return cli_main


def touch(root: Path, *relatives: str, data: bytes = TINY) -> None:
    for relative in relatives:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)


def flat_tree(root: Path, classes: int = 3, per_class: int = 8) -> None:
    for label in range(classes):
        touch(root, *(f"class{label}/img{number:02d}.jpg" for number in range(per_class)))


def entries_of(listing_entries: list[Entry]) -> list[tuple[int, tuple[float, ...], str]]:
    return [(entry.index, entry.labels, entry.path) for entry in listing_entries]


def test_labels_follow_sorted_class_folders_and_images_are_found_recursively(tmp_path: Path) -> None:
    for name in ("zebra", "9", "Apple", "mango", "10"):  # created out of order
        touch(tmp_path, f"{name}/{name}.jpg")
    touch(tmp_path, "mango/deep/deeper/m2.jpg", "mango/a_sub/m0.jpg", "Apple/notes.txt")
    listing = scan_tree(tmp_path)
    assert listing.classes == ["10", "9", "Apple", "mango", "zebra"]  # Python string order, as im2rec sorts
    assert entries_of(listing.entries) == [
        (0, (0.0,), "10/10.jpg"), (1, (1.0,), "9/9.jpg"), (2, (2.0,), "Apple/Apple.jpg"),
        (3, (3.0,), "mango/a_sub/m0.jpg"), (4, (3.0,), "mango/deep/deeper/m2.jpg"), (5, (3.0,), "mango/mango.jpg"),
        (6, (4.0,), "zebra/zebra.jpg")]
    assert listing.skipped_other_ext == 1 and listing.problems == []


def test_extensions_match_in_any_case(cli: Run, tmp_path: Path) -> None:
    touch(tmp_path, "c/a.JPEG", "c/b.Jpg", "c/c.jpg", "c/d.PNG", "c/e.gif", "c/f.jpeg.txt", "c/noext")
    assert [entry.path for entry in scan_tree(tmp_path).entries] == ["c/a.JPEG", "c/b.Jpg", "c/c.jpg", "c/d.PNG"]
    assert scan_tree(tmp_path).skipped_other_ext == 3
    assert [entry.path for entry in scan_tree(tmp_path, ["JPG", ".Png"]).entries] == ["c/b.Jpg", "c/c.jpg", "c/d.PNG"]
    listed = cli("list", str(tmp_path), str(tmp_path / "out" / "x"), "--exts", "JPEG,.GIF", "--no-shuffle", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [entry.path for entry in read_lst(tmp_path / "out" / "x.lst")] == ["c/a.JPEG", "c/e.gif"]
    assert json.loads(listed.stdout)["skipped_other_ext"] == 5


def test_shuffle_is_seeded_and_no_shuffle_is_sorted(cli: Run, tmp_path: Path) -> None:
    flat_tree(tmp_path / "tree", classes=4, per_class=10)
    sorted_entries = scan_tree(tmp_path / "tree").entries
    assert ordered_entries(sorted_entries, shuffle=False) == sorted_entries
    shuffled = ordered_entries(sorted_entries)
    assert shuffled == ordered_entries(sorted_entries, seed=100)
    expected = list(sorted_entries)
    random.seed(100)  # exactly im2rec's make_list
    random.shuffle(expected)
    assert shuffled == expected and shuffled != sorted_entries
    assert ordered_entries(sorted_entries, seed=7) not in (shuffled, sorted_entries)

    for run in ("one", "two"):
        assert cli("list", str(tmp_path / "tree"), str(tmp_path / run / "l")).returncode == 0
    assert (tmp_path / "one" / "l.lst").read_bytes() == (tmp_path / "two" / "l.lst").read_bytes()
    assert entries_of(read_lst(tmp_path / "one" / "l.lst")) == entries_of(shuffled)
    assert cli("list", str(tmp_path / "tree"), str(tmp_path / "sorted" / "l"), "--no-shuffle").returncode == 0
    assert entries_of(read_lst(tmp_path / "sorted" / "l.lst")) == entries_of(sorted_entries)
    assert [entry.path for entry in sorted_entries] == sorted(entry.path for entry in sorted_entries)


def test_ratios_and_chunks_name_and_size_files_as_im2rec(cli: Run, tmp_path: Path) -> None:
    touch(tmp_path / "tree", *(f"c{number % 3}/i{number:02d}.jpg" for number in range(23)))
    result = make_lists(tmp_path / "tree", tmp_path / "out" / "ds", chunks=3, train_ratio=0.6, test_ratio=0.2)
    # im2rec: chunk_size = ceil(23 / 3) = 8 (chunks of 8, 8, 7); test = int(8 * 0.2) = 1 and train =
    # int(8 * 0.6) = 4 entries of every chunk, val the rest of the chunk
    sizes = {Path(path).name: count for path, count in result.lists.items()}
    assert sizes == {"ds_0_test.lst": 1, "ds_0_train.lst": 4, "ds_0_val.lst": 3,
                     "ds_1_test.lst": 1, "ds_1_train.lst": 4, "ds_1_val.lst": 3,
                     "ds_2_test.lst": 1, "ds_2_train.lst": 4, "ds_2_val.lst": 2}
    written = {path.name: read_lst(path) for path in (tmp_path / "out").glob("*.lst")}
    assert {name: len(entries) for name, entries in written.items()} == sizes
    shuffled = ordered_entries(scan_tree(tmp_path / "tree").entries)
    assert written["ds_1_test.lst"] == shuffled[8:9] and written["ds_1_train.lst"] == shuffled[9:13]
    assert written["ds_1_val.lst"] == shuffled[13:16]
    every = [entry.path for entries in written.values() for entry in entries]
    assert sorted(every) == sorted(entry.path for entry in shuffled)  # nothing lost, nothing twice

    def sizes_of(**options: float) -> dict[str, int]:
        return {key: len(part) for key, part in split_entries(shuffled, **options).items()}  # type: ignore[arg-type]

    assert sizes_of(train_ratio=0.8) == {"_val": 5, "_train": 18}  # no test list without a test ratio
    assert sizes_of(chunks=2) == {"_0": 12, "_1": 11}
    assert sizes_of() == {"": 23}
    for bad in ({"train_ratio": 0}, {"train_ratio": 0.7, "test_ratio": 0.5}, {"chunks": 0}):
        with pytest.raises(ValueError):
            split_entries(shuffled, **bad)  # type: ignore[arg-type]
    assert cli("list", str(tmp_path / "tree"), str(tmp_path / "bad" / "x"), "--train-ratio", "1.5").returncode == 2


def test_class_map_is_written_beside_the_lists(cli: Run, tmp_path: Path) -> None:
    for name in ("n02", "n00", "n01"):
        touch(tmp_path / "tree", f"{name}/a.jpg")
    listed = cli("list", str(tmp_path / "tree"), str(tmp_path / "lists" / "train"), "--json")
    assert listed.returncode == 0, listed.stderr
    assert (tmp_path / "lists" / "synsets.txt").read_text() == "0\tn00\n1\tn01\n2\tn02\n"
    assert read_class_map(tmp_path / "lists" / "synsets.txt") == ["n00", "n01", "n02"]
    summary = json.loads(listed.stdout)
    assert summary["class_map"] == str(tmp_path / "lists" / "synsets.txt") and summary["classes"] == 3
    # a second list of the same classes (a val tree) shares the class map: no refusal
    for name in ("n02", "n00", "n01"):
        touch(tmp_path / "val", f"{name}/v.jpg")
    assert cli("list", str(tmp_path / "val"), str(tmp_path / "lists" / "val")).returncode == 0


def run_with_deadline(function, seconds: float = 30.0):  # type: ignore[no-untyped-def]
    outcome: list = []
    thread = threading.Thread(target=lambda: outcome.append(function()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"did not finish within {seconds} s (a symlink loop?)"
    return outcome[0]


def test_symlink_loops_neither_hang_nor_duplicate(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    touch(root, "a/a0.jpg", "a/sub/a1.jpg", "b/b0.jpg", "c/c0.jpg")
    os.symlink(".", root / "a" / "self")  # the class folder itself
    os.symlink("..", root / "a" / "up")  # the root
    os.symlink("../..", root / "a" / "sub" / "root")  # the root again, from deeper
    os.symlink("..", root / "a" / "sub" / "parent")  # the class folder, from below
    os.symlink("../c", root / "b" / "to_c")  # another class folder
    os.symlink(str(root), root / "b" / "absolute_root")
    external = tmp_path / "elsewhere"
    touch(external, "e0.jpg")
    os.symlink(str(external), root / "c" / "linked")  # a real directory outside the tree: followed once
    os.symlink(str(external), root / "c" / "linked_again")

    listing = run_with_deadline(lambda: scan_tree(root))
    assert listing.classes == ["a", "b", "c"]
    assert entries_of(listing.entries) == [
        (0, (0.0,), "a/a0.jpg"), (1, (0.0,), "a/sub/a1.jpg"), (2, (1.0,), "b/b0.jpg"),
        (3, (2.0,), "c/c0.jpg"), (4, (2.0,), "c/linked/e0.jpg")]
    # a real process: a hang stays in it, and the deadline's thread never runs cli.main outside the main thread
    listed = run_with_deadline(lambda: subprocess_cli("list", str(root), str(tmp_path / "l"), "--json"))
    assert listed.returncode == 0 and json.loads(listed.stdout)["images"] == 5


def test_paths_a_lst_cannot_hold_are_reported_not_dropped(cli: Run, tmp_path: Path) -> None:
    root = tmp_path / "tree"
    touch(root, "a/good.jpg", "a/tab\there.jpg", "b/line\nbreak.jpg", "b/fine name.jpg")
    listing = scan_tree(root)
    assert [entry.path for entry in listing.entries] == ["a/good.jpg", "b/fine name.jpg"]
    assert sorted(path for path, _ in listing.problems) == ["a/tab\there.jpg", "b/line\nbreak.jpg"]
    assert all(("tab" in why) if "\t" in path else ("line break" in why) for path, why in listing.problems)

    listed = cli("list", str(root), str(tmp_path / "out" / "x"))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count("not listed: ") == 2 and "tab" in listed.stdout and "line break" in listed.stdout
    as_json = json.loads(cli("list", str(root), str(tmp_path / "json" / "x"), "--json").stdout)
    assert sorted(problem["path"] for problem in as_json["problems"]) == ["a/tab\there.jpg", "b/line\nbreak.jpg"]
    assert as_json["images"] == 2
    assert [entry.path for entry in read_lst(tmp_path / "out" / "x.lst")] != []  # the rest still listed
    with pytest.raises(ValueError, match="tab"):
        write_lst(tmp_path / "direct.lst", [Entry(0, (0.0,), "a/tab\there.jpg")])
    assert not (tmp_path / "direct.lst").exists() and not list(tmp_path.glob("direct.lst*"))


def test_existing_lists_are_not_overwritten_without_asking(cli: Run, tmp_path: Path) -> None:
    flat_tree(tmp_path / "tree", classes=2, per_class=3)
    prefix = tmp_path / "lists" / "ds"
    assert cli("list", str(tmp_path / "tree"), str(prefix)).returncode == 0
    (prefix.with_suffix(".lst")).write_text("0\t0.000000\tmine.jpg\n")
    refused = cli("list", str(tmp_path / "tree"), str(prefix), "--seed", "5")
    assert refused.returncode == 3 and "--overwrite" in refused.stderr
    assert prefix.with_suffix(".lst").read_text() == "0\t0.000000\tmine.jpg\n"
    with pytest.raises(RefusedError):
        make_lists(tmp_path / "tree", prefix)

    touch(tmp_path / "other", "x/1.jpg", "y/2.jpg", "z/3.jpg")  # another class map for the same folder
    with pytest.raises(RefusedError, match="class map"):
        make_lists(tmp_path / "other", tmp_path / "lists" / "other")
    assert read_class_map(tmp_path / "lists" / "synsets.txt") == ["class0", "class1"]

    assert cli("list", str(tmp_path / "tree"), str(prefix), "--overwrite").returncode == 0
    assert len(read_lst(prefix.with_suffix(".lst"))) == 6


def test_reads_an_existing_im2rec_list_as_it_is(tmp_path: Path) -> None:
    lst = tmp_path / "hand.lst"
    lst.write_bytes(b"0\t1.000000\t2.500000\tclass a/img 0.jpg\n"
                    b"1\t3\tclass b/two  spaces.png\n"
                    b"  2 \t 4.000000 \t spaced/name.jpg \n"
                    b"\n"
                    b"17\t-1.5\t0\t7.25\tx.jpg\r\n"
                    b"5\t1e2\tn01440764/n01440764_10026.JPEG")
    assert entries_of(read_lst(lst)) == [
        (0, (1.0, 2.5), "class a/img 0.jpg"), (1, (3.0,), "class b/two  spaces.png"), (2, (4.0,), "spaced/name.jpg"),
        (17, (-1.5, 0.0, 7.25), "x.jpg"), (5, (100.0,), "n01440764/n01440764_10026.JPEG")]
    write_lst(tmp_path / "again.lst", read_lst(lst))  # written back in im2rec's %f format
    assert (tmp_path / "again.lst").read_text().splitlines()[:2] == [
        "0\t1.000000\t2.500000\tclass a/img 0.jpg", "1\t3.000000\tclass b/two  spaces.png"]
    assert read_lst(tmp_path / "again.lst") == read_lst(lst)
    (tmp_path / "bad.lst").write_text("0\t1.0\ta.jpg\nnot-a-number\t1.0\tb.jpg\n")
    with pytest.raises(ValueError, match=r"bad\.lst:2"):
        read_lst(tmp_path / "bad.lst")


def test_pack_from_the_lst_equals_pack_from_the_folder(cli: Run, tmp_path: Path) -> None:
    root = tmp_path / "tree"
    for label in range(3):
        for number in range(5):
            touch(root, f"k{label}/img{number}.jpg", data=jpeg(60 + 4 * number, 48, seed=label * 10 + number))
    assert cli("list", str(root), str(tmp_path / "lists" / "ds"), "--seed", "3").returncode == 0
    common = ["--name", "ds", "--resize", "40", "--num-shards", "2", "--workers", "1", "--json"]
    from_lst = cli("pack", str(tmp_path / "lists" / "ds.lst"), str(tmp_path / "a"), "--root", str(root), *common)
    from_folder = cli("pack", str(root), str(tmp_path / "b"), "--seed", "3", *common)
    assert from_lst.returncode == 0, from_lst.stderr
    assert from_folder.returncode == 0, from_folder.stderr
    assert json.loads(from_lst.stdout)["records"] == json.loads(from_folder.stdout)["records"] == 15
    for name in ("ds-00000-of-00002.rec", "ds-00000-of-00002.idx", "ds-00001-of-00002.rec", "ds-00001-of-00002.idx",
                 "ds.synsets.txt"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "b" / "ds.lst").read_bytes() == (tmp_path / "lists" / "ds.lst").read_bytes()
