"""``imagenet prepare`` on the fake archives: placement by ground truth, labels per convention, resume, guards."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path
from typing import Callable

import pytest

import recordio_pack.imagenet.prepare as prepare_module
from recordio_pack.errors import RecordioPackError, RefusedError
from recordio_pack.fakes.archives import FakeArchives
from recordio_pack.imagenet.labels import TABLE_NAME
from recordio_pack.imagenet.prepare import STATE_DIR, prepare
from recordio_pack.listing import read_class_map, scan_tree
from recordio_pack.progress import Advanced, Progress


@pytest.fixture(scope="module")
def fake(fake_archives: Callable[..., FakeArchives]) -> FakeArchives:
    return fake_archives(classes=5, train_per_class=4, val_per_class=3, seed=7, max_side=96)


def _run(fake: FakeArchives, out: Path, **options: object) -> prepare_module.PrepareResult:
    return prepare(out, train_tar=fake.train_tar, val_tar=fake.val_tar, devkit=fake.devkit,
                   **options)  # type: ignore[arg-type]


def _tree(out: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under train/ and val/, plus the label files."""
    files = [path for part in ("train", "val") for path in (out / part).rglob("*") if path.is_file()]
    files += [out / "synsets.txt", out / TABLE_NAME]
    return {str(path.relative_to(out)): hashlib.sha256(path.read_bytes()).hexdigest() for path in files}


def _train_from_archive(fake: FakeArchives) -> dict[str, bytes]:
    """Every train image, read independently with tarfile: "<wnid>/<file>" -> bytes."""
    images = {}
    with tarfile.open(fake.train_tar) as outer:
        for member in outer:
            data = outer.extractfile(member).read()  # type: ignore[union-attr]
            with tarfile.open(fileobj=io.BytesIO(data)) as inner:
                for image in inner:
                    stream = inner.extractfile(image)
                    assert stream is not None
                    images[f"{member.name[:-4]}/{image.name}"] = stream.read()
    return images


@pytest.mark.parametrize("convention", ["sorted", "devkit", "tf"])
def test_val_images_in_the_right_class_under_each_convention(fake: FakeArchives, tmp_path: Path,
                                                             convention: str) -> None:
    result = _run(fake, tmp_path, labels=convention)
    assert (result.train_images, result.val_images) == (20, 15)
    assert result.per_class_val == {wnid: 3 for wnid in fake.classes}
    classes = read_class_map(tmp_path / "synsets.txt")
    label_of = {name: label for label, name in enumerate(classes)}
    expected = {"sorted": lambda wnid: fake.classes.index(wnid),
                "devkit": lambda wnid: fake.devkit_order.index(wnid),
                "tf": lambda wnid: fake.classes.index(wnid) + 1}[convention]
    placed = {path.name: path.parent.name for path in (tmp_path / "val").rglob("*.JPEG")}
    assert placed == fake.val_labels  # keyed by the number in the file name, not by archive order
    for name, wnid in placed.items():
        assert label_of[wnid] == expected(wnid), name
    assert (classes[0] == "background") == (convention == "tf")
    # the class table: label, ILSVRC2012_ID, wnid, sorted index, names
    rows = [line.split("\t") for line in (tmp_path / TABLE_NAME).read_text().splitlines()[1:]]
    rows = [row for row in rows if row[2] != "background"]
    assert len(rows) == 5
    for label, ilsvrc_id, wnid, sorted_index, names in rows:
        assert int(label) == expected(wnid)
        assert int(ilsvrc_id) == fake.devkit_order.index(wnid) + 1
        assert int(sorted_index) == fake.classes.index(wnid)
        assert names == f"fake class {wnid}, synthetic {ilsvrc_id}"


def test_train_tree_holds_the_archive_bytes(fake: FakeArchives, tmp_path: Path) -> None:
    prepare(tmp_path, train_tar=fake.train_tar)
    extracted = {str(path.relative_to(tmp_path / "train")): path.read_bytes()
                 for path in (tmp_path / "train").rglob("*") if path.is_file()}
    assert extracted == _train_from_archive(fake)
    assert scan_tree(tmp_path / "train").classes == fake.classes
    assert not (tmp_path / "val").exists()


class _InterruptAfter(Progress):
    def __init__(self, units: int) -> None:
        self.left = units

    def on_progress(self, event: Advanced) -> None:  # one unit (a class or val) done
        self.left -= 1
        if self.left == 0:
            raise KeyboardInterrupt


def test_interrupted_prepare_resumed_gives_the_same_tree(fake: FakeArchives, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    reference = tmp_path / "reference"
    _run(fake, reference)
    out = tmp_path / "resumed"

    # 1. a crash in the middle of the val archive (the first unit with one thread): some files written
    real_write = prepare_module.write_file
    calls = {"n": 0}

    def failing_write(stream, target, name):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 8:
            raise OSError("disk on fire")
        return real_write(stream, target, name)

    monkeypatch.setattr(prepare_module, "write_file", failing_write)
    with pytest.raises(OSError, match="disk on fire"):
        _run(fake, out, threads=1)
    monkeypatch.undo()
    partial_val = out / STATE_DIR / "partial" / "val"
    assert len(list(partial_val.rglob("*.JPEG"))) == 7 and not (out / "val").exists()

    # 2. interrupted (Ctrl-C) after two units: val and one class done, the next class cut short
    with pytest.raises(KeyboardInterrupt):
        _run(fake, out, threads=1, progress=_InterruptAfter(2))
    done = sorted(path.stem for path in (out / STATE_DIR / "train").glob("*.json"))
    assert len(done) in (1, 2) and (out / "val").is_dir()

    # 3. damage one finished class: its count no longer matches the marker, so it is redone
    victim = next((out / "train" / done[0]).iterdir())
    victim.unlink()
    result = _run(fake, out, threads=2)
    assert result.val_resumed and result.train_classes_resumed == len(done) - 1
    assert _tree(out) == _tree(reference)
    assert not (out / STATE_DIR / "partial").exists()

    again = _run(fake, out)
    assert again.train_classes_resumed == 5 and again.val_resumed
    assert _tree(out) == _tree(reference)


def test_counts_checked_against_ilsvrc2012_when_asked(fake: FakeArchives, tmp_path: Path) -> None:
    with pytest.raises(RecordioPackError, match=r"train: 5 classes, 20 images \(expected 1000, 1,281,167\)"):
        _run(fake, tmp_path, check_counts="real")
    assert _run(fake, tmp_path).counts_checked == "consistency only"


def test_refuses_to_write_into_folders_it_did_not_make(fake: FakeArchives, tmp_path: Path) -> None:
    mine = tmp_path / "train" / fake.classes[0] / "my_photo.JPEG"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"precious")
    with pytest.raises(RefusedError, match="--overwrite"):
        _run(fake, tmp_path)
    assert mine.read_bytes() == b"precious"
    result = _run(fake, tmp_path, overwrite=True)
    assert result.per_class_train[fake.classes[0]] == 4 and not mine.exists()


def test_val_needs_the_devkit(fake: FakeArchives, tmp_path: Path) -> None:
    with pytest.raises(RecordioPackError, match="devkit"):
        prepare(tmp_path, val_tar=fake.val_tar)


def test_ilsvrc2012_totals_pass_and_a_short_class_fails() -> None:
    wnids = [f"n{number:08d}" for number in range(1000)]

    def result(val_counts: dict[str, int]) -> prepare_module.PrepareResult:
        return prepare_module.PrepareResult("out", "sorted", {}, train_classes=1000, train_images=1_281_167,
                                            val_images=sum(val_counts.values()), val_classes=len(val_counts),
                                            per_class_val=val_counts)

    good = result({wnid: 50 for wnid in wnids})
    prepare_module._check_counts(good, real=True)
    assert good.counts_checked == "ILSVRC2012 totals"
    short = result({**{wnid: 50 for wnid in wnids}, wnids[7]: 49})
    with pytest.raises(RecordioPackError, match=r"val: 49,?999 images .*n00000007', 49"):
        prepare_module._check_counts(short, real=True)
