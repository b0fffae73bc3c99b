"""Indexing the tars in place: each entry's byte range reads exactly the extracted file, labels as ``list`` gives."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import pytest

from recordio_pack.errors import RecordioPackError, UsageError
from recordio_pack.fakes.archives import FakeArchives
from recordio_pack.imagenet.archive import archive_kind, index_train_tar, open_archive_input
from recordio_pack.listing import scan_tree
from recordio_pack.sources import FolderSource, RangeSource


@pytest.fixture(scope="module")
def fake(fake_archives: Callable[..., FakeArchives]) -> FakeArchives:
    return fake_archives(classes=4, train_per_class=5, val_per_class=2, seed=11, max_side=96)


@pytest.fixture(scope="module")
def prepared(fake: FakeArchives, prepared_tree: Callable[[FakeArchives], Path]) -> Path:
    return prepared_tree(fake)


@pytest.mark.parametrize("split", ["train", "val"])
def test_archive_entries_read_the_same_bytes_as_the_extracted_files(fake: FakeArchives, prepared: Path,
                                                                    split: str) -> None:
    tar = fake.train_tar if split == "train" else fake.val_tar
    entries, source, classes, convention = open_archive_input(Path(tar))
    assert isinstance(source, RangeSource) and source.container == tar and convention == "sorted"
    listing = scan_tree(prepared / split)
    assert entries and all(entry.offset > 0 and entry.size > 0 for entry in entries)
    # same paths, order, indices and labels as listing the prepared folder
    assert [(e.index, e.labels, e.path) for e in entries] == [(e.index, e.labels, e.path) for e in listing.entries]
    assert classes == listing.classes == fake.classes
    folder = FolderSource(str(prepared / split))
    for entry in entries:
        assert source.read(entry) == folder.read(entry), entry.path


def test_label_conventions_for_archive_input(fake: FakeArchives) -> None:
    entries, _, classes, convention = open_archive_input(Path(fake.val_tar), labels="devkit")
    assert convention == "devkit" and classes == fake.devkit_order
    for entry in entries:
        wnid, name = entry.path.split("/")
        assert fake.val_labels[name] == wnid
        assert entry.labels == (float(fake.devkit_order.index(wnid)),)
    entries, _, classes, _ = open_archive_input(Path(fake.train_tar), labels="tf")
    assert classes == ["background"] + fake.classes
    assert {entry.labels[0] for entry in entries} == {1.0, 2.0, 3.0, 4.0}
    for entry in entries:
        assert classes[int(entry.labels[0])] == entry.path.split("/")[0]


def test_val_needs_a_devkit_found_beside_it_or_given(fake: FakeArchives, tmp_path: Path) -> None:
    alone = tmp_path / "ILSVRC2012_img_val.tar"
    shutil.copy(fake.val_tar, alone)
    with pytest.raises(UsageError, match="needs the devkit"):
        open_archive_input(alone)
    entries, *_ = open_archive_input(alone, devkit=Path(fake.devkit))
    assert len(entries) == 8
    train = tmp_path / "ILSVRC2012_img_train.tar"
    shutil.copy(fake.train_tar, train)
    with pytest.raises(UsageError, match="--labels devkit needs the devkit"):
        open_archive_input(train, labels="devkit")


def test_kinds_and_rejections(fake: FakeArchives, tmp_path: Path) -> None:
    assert archive_kind(fake.train_tar) == "train" and archive_kind(fake.val_tar) == "val"
    with pytest.raises(RecordioPackError, match="not an uncompressed tar"):
        open_archive_input(Path(fake.devkit))
    classes, images = index_train_tar(fake.train_tar, threads=2)
    assert classes == fake.classes and len(images) == 20
    assert [image.path for image in images] == sorted(image.path for image in images)
