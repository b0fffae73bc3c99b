"""``imagenet fake-archives``: the official layout, a meta.mat the devkit parser reads, reproducible bytes."""

from __future__ import annotations

import argparse
import io
import json
import re
import tarfile
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import scipy.io
from PIL import Image

from recordio_pack.commands import imagenet as imagenet_command
from recordio_pack.errors import RefusedError
from recordio_pack.fakes.archives import FakeArchives, make_fake_archives
from recordio_pack.imagenet.devkit import read_devkit


@pytest.fixture(scope="module")
def fake(fake_archives: Callable[..., FakeArchives]) -> FakeArchives:
    return fake_archives(classes=4, train_per_class=5, val_per_class=3, seed=3, max_side=96)


def _members(path: str | Path, data: bytes | None = None) -> list[tuple[str, bytes]]:
    """(name, bytes) of each file of a tar on disk, or of the tar held in ``data``."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") if data is not None else tarfile.open(path) as tar:
        return [(member.name, tar.extractfile(member).read())  # type: ignore[union-attr]
                for member in tar if member.isreg()]


def test_train_tar_is_a_tar_of_per_class_tars(fake: FakeArchives) -> None:
    outer = _members(fake.train_tar)
    names = [name for name, _ in outer]
    assert sorted(names) == [f"{wnid}.tar" for wnid in fake.classes]
    assert all(re.fullmatch(r"n\d{8}", wnid) for wnid in fake.classes)
    seen_kinds = {}
    for name, data in outer:
        wnid = name[:-4]
        inner = _members(name, data)
        assert len(inner) == fake.train_per_class[wnid] == 5
        for file_name, image in inner:
            assert re.fullmatch(rf"{wnid}_\d+\.JPEG", file_name)
            kind = fake.awkward.get(f"{wnid}/{file_name}")
            opened = Image.open(io.BytesIO(image))
            mode = opened.format, opened.mode
            if kind == "cmyk_jpeg":
                assert mode == ("JPEG", "CMYK")
            elif kind == "png_named_jpeg":
                assert image.startswith(b"\x89PNG\r\n\x1a\n") and mode[0] == "PNG"
            else:
                assert mode[0] == "JPEG" and mode[1] in ("RGB", "L")
            if kind:
                seen_kinds[kind] = seen_kinds.get(kind, 0) + 1
    assert seen_kinds == {"cmyk_jpeg": 1, "png_named_jpeg": 1}


def test_val_tar_is_flat_and_shuffled(fake: FakeArchives) -> None:
    names = [name for name, _ in _members(fake.val_tar)]
    total = len(fake.classes) * 3
    assert sorted(names) == [f"ILSVRC2012_val_{number:08d}.JPEG" for number in range(1, total + 1)]
    assert names != sorted(names)  # archive order is not file-number order
    assert sorted(fake.val_labels) == sorted(names)


def test_devkit_meta_mat_has_the_devkit_structure(fake: FakeArchives) -> None:
    with tarfile.open(fake.devkit, "r:gz") as tar:
        names = tar.getnames()
        meta = tar.extractfile("ILSVRC2012_devkit_t12/data/meta.mat").read()  # type: ignore[union-attr]
    assert "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt" in names
    synsets = scipy.io.loadmat(io.BytesIO(meta))["synsets"]
    assert synsets.shape == (len(fake.classes) + 2, 1)
    assert list(synsets.dtype.names) == ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children",
                                         "wordnet_height", "num_train_images"]
    children = [int(np.squeeze(row["num_children"])) for row in synsets[:, 0]]
    assert children[:len(fake.classes)] == [0] * len(fake.classes) and all(children[len(fake.classes):])

    kit = read_devkit(fake.devkit)
    assert [synset.wnid for synset in kit.synsets] == fake.devkit_order
    assert [synset.ilsvrc_id for synset in kit.synsets] == list(range(1, len(fake.classes) + 1))
    assert fake.devkit_order != sorted(fake.devkit_order)  # ID order differs from sorted WNID order
    assert not kit.is_full_ilsvrc2012
    for name, wnid in fake.val_labels.items():
        assert kit.val_wnid(int(name[15:23])) == wnid


def test_same_arguments_same_bytes(fake: FakeArchives, tmp_path: Path) -> None:
    again = make_fake_archives(tmp_path, classes=4, train_per_class=5, val_per_class=3, seed=3, max_side=96)
    for first, second in [(fake.train_tar, again.train_tar), (fake.val_tar, again.val_tar),
                          (fake.devkit, again.devkit)]:
        assert Path(first).read_bytes() == Path(second).read_bytes()


def test_refuses_to_overwrite_then_cli_overwrites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_fake_archives(tmp_path, classes=2, train_per_class=2, val_per_class=1, max_side=64)
    with pytest.raises(RefusedError, match="--overwrite"):
        make_fake_archives(tmp_path, classes=2, train_per_class=2, val_per_class=1, max_side=64)
    parser = argparse.ArgumentParser()
    imagenet_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["imagenet", "fake-archives", str(tmp_path), "--classes", "3", "--max-side", "64",
                              "--overwrite", "--json"])
    assert args.run(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["classes"]) == 3 and result["train_images"] == 18
    assert len(read_devkit(tmp_path / "ILSVRC2012_devkit_t12.tar.gz").synsets) == 3


def test_photos_become_the_images_in_order_and_cycled(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from imagegen import jpeg
    from recordio_pack import cli

    photos = tmp_path / "photos" / "deeper"
    photos.mkdir(parents=True)
    originals = [jpeg(60 + number, 40, seed=number) for number in range(3)]
    for number, data in enumerate(originals):
        (photos / f"p{number}.jpg").write_bytes(data)
    (photos / "notes.txt").write_text("not a photo")
    code = cli.main(["imagenet", "fake-archives", str(tmp_path / "out"), "--classes", "2", "--train-per-class", "2",
                     "--val-per-class", "1", "--photos", str(tmp_path / "photos"), "-q"])
    assert code == 0
    train = [data for _, inner in sorted(_members(tmp_path / "out" / "ILSVRC2012_img_train.tar"))
             for _, data in _members("", inner)]
    val = [data for _, data in _members(tmp_path / "out" / "ILSVRC2012_img_val.tar")]
    assert sorted(train + val) == sorted(originals * 2)  # 6 images from 3 photos: each twice, nothing generated
    assert code == 0 and cli.main(["pack", str(tmp_path / "out" / "ILSVRC2012_img_train.tar"), str(tmp_path / "rec"),
                                   "-q"]) == 0
    capsys.readouterr()
    assert cli.main(["imagenet", "fake-archives", str(tmp_path / "none"), "--photos", str(tmp_path / "missing")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "no such folder" in error
