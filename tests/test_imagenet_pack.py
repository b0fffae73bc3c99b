"""Packing straight from the ILSVRC2012 tars gives the same records as packing the prepared tree."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable

import pytest
from PIL import Image

from recordio_pack.cli import main
from recordio_pack.fakes.archives import FakeArchives
from recordio_pack.format import unpack_payload
from recordio_pack.imagenet.archive import open_archive_input
from recordio_pack.listing import ordered_entries, scan_tree
from recordio_pack.options import PackOptions
from recordio_pack.pack import pack_entries
from recordio_pack.recordio import iter_records, mapped
from recordio_pack.sources import FolderSource


@pytest.fixture(scope="module")
def fake(fake_archives: Callable[..., FakeArchives]) -> FakeArchives:
    return fake_archives(classes=4, train_per_class=5, val_per_class=2, seed=11, max_side=96)


@pytest.fixture(scope="module")
def prepared(fake: FakeArchives, prepared_tree: Callable[[FakeArchives], Path]) -> Path:
    return prepared_tree(fake)


def _outputs(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())
            if path.suffix in (".rec", ".idx") or path.name.endswith(".synsets.txt")}


@pytest.mark.parametrize("split", ["train", "val"])
def test_pack_from_archive_equals_pack_from_prepared_tree(fake: FakeArchives, prepared: Path, tmp_path: Path,
                                                          split: str) -> None:
    options = PackOptions(num_shards=2, workers=1)
    entries, source, classes, convention = open_archive_input(Path(fake.train_tar if split == "train"
                                                                   else fake.val_tar))
    listing = scan_tree(prepared / split)
    from_archive = pack_entries(ordered_entries(entries), source, tmp_path / "archive", "ds", options,
                                classes=classes, label_convention=convention)
    from_tree = pack_entries(ordered_entries(listing.entries), FolderSource(str(prepared / split)),
                             tmp_path / "tree", "ds", options, classes=listing.classes,
                             label_convention="sorted")
    assert from_archive.records == from_tree.records == len(entries)
    assert from_archive.rejects == from_tree.rejects == 0
    archive_files, tree_files = _outputs(tmp_path / "archive"), _outputs(tmp_path / "tree")
    assert len(archive_files) == 6 and archive_files == tree_files  # 2 shards, rejects, manifest, all.idx

    # every record, the CMYK JPEG and the PNG named .JPEG included, holds an ordinary 3-channel JPEG
    labels = []
    for name in sorted(archive_files):
        if name.endswith(".rec"):
            with mapped(tmp_path / "archive" / name) as data:
                for _, payload in iter_records(data):
                    header, image = unpack_payload(payload)
                    opened = Image.open(io.BytesIO(image))
                    assert (opened.format, opened.mode) in (("JPEG", "RGB"), ("JPEG", "L"))
                    labels.append(header.label)
    assert sorted(labels) == sorted(entry.labels[0] for entry in entries)
    if split == "train":
        assert from_archive.reencoded >= len(fake.awkward) == 2


@pytest.mark.parametrize("order", [[], ["--no-shuffle"]], ids=["shuffled", "sorted"])
def test_cli_pack_of_the_tar_matches_the_folder(fake: FakeArchives, prepared: Path, tmp_path: Path,
                                                order: list[str]) -> None:
    common = ["--name", "train", "--num-shards", "2", "--workers", "1", "-q", *order]
    assert main(["pack", fake.train_tar, str(tmp_path / "archive"), *common]) == 0
    assert main(["pack", str(prepared / "train"), str(tmp_path / "tree"), *common]) == 0
    assert _outputs(tmp_path / "archive") == _outputs(tmp_path / "tree")
