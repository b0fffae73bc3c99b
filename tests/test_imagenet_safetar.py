"""Hostile tars are refused, naming the member, and nothing is written outside the target."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from recordio_pack.imagenet.prepare import prepare
from recordio_pack.imagenet.safetar import UnsafeArchiveError, extract_all, open_range


def _file(name: str, data: bytes = b"payload") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info, b""


def _tar_bytes(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def _files_under(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


def _hostile_cases(outside: Path) -> dict[str, list[tuple[tarfile.TarInfo, bytes]]]:
    return {
        "absolute path": [_file("good.JPEG"), _file(str(outside / "evil.JPEG"))],
        "'..' in the path": [_file("good.JPEG"), _file("../outside/evil.JPEG")],
        "nested '..'": [_file("a/../../outside/evil.JPEG")],
        "symbolic link": [_special("etc", tarfile.SYMTYPE, "/etc"), _file("etc/evil.JPEG")],
        "symlink to outside": [_special("link", tarfile.SYMTYPE, str(outside)), _file("link/evil.JPEG")],
        "hard link": [_special("passwd", tarfile.LNKTYPE, "/etc/passwd")],
        "device file": [_special("sda", tarfile.BLKTYPE), _special("null", tarfile.CHRTYPE)],
        "FIFO": [_special("pipe", tarfile.FIFOTYPE)],
    }


@pytest.mark.parametrize("case", ["absolute path", "'..' in the path", "nested '..'", "symbolic link",
                                  "symlink to outside", "hard link", "device file", "FIFO"])
def test_extract_all_refuses_hostile_members_and_writes_nothing(tmp_path: Path, case: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    members = _hostile_cases(outside)[case]
    archive = tmp_path / "hostile.tar"
    archive.write_bytes(_tar_bytes(members))
    target = tmp_path / "target"
    with pytest.raises(UnsafeArchiveError) as raised:
        extract_all(archive, target)
    bad = next(info for info, _ in members if info.name != "good.JPEG")
    assert repr(bad.name) in str(raised.value) and str(archive) in str(raised.value)
    assert _files_under(outside) == set()
    assert _files_under(target) == set()  # checked before writing: not even the good member
    assert sorted(os.listdir(tmp_path)) == ["hostile.tar", "outside", "target"]


def test_symlink_planted_in_target_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    (target / "sub").symlink_to(outside, target_is_directory=True)
    archive = tmp_path / "plain.tar"
    archive.write_bytes(_tar_bytes([_file("sub/evil.JPEG")]))
    with pytest.raises(UnsafeArchiveError, match="not a plain folder"):
        extract_all(archive, target)
    assert _files_under(outside) == set()


def test_safe_archive_extracts(tmp_path: Path) -> None:
    archive = tmp_path / "ok.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for info, data in [_file("./a/b.JPEG", b"bee"), _file("c.JPEG", b"sea")]:
            tar.addfile(info, io.BytesIO(data))
    result = extract_all(archive, tmp_path / "out")
    assert (result.files, result.bytes) == (2, 6)
    assert (tmp_path / "out" / "a" / "b.JPEG").read_bytes() == b"bee"
    assert _files_under(tmp_path / "out") == {"a", "a/b.JPEG", "c.JPEG"}


def test_prepare_refuses_hostile_inner_class_tar(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    inner = _tar_bytes([_file("n01440764_1.JPEG"), _file("../../../outside/evil.JPEG")])
    train = tmp_path / "ILSVRC2012_img_train.tar"
    train.write_bytes(_tar_bytes([_file("n01440764.tar", inner)]))
    out = tmp_path / "prepared"
    with pytest.raises(UnsafeArchiveError, match=r"n01440764\.tar: refusing member '\.\./\.\./\.\./outside/evil"):
        prepare(out, train_tar=train)
    assert _files_under(outside) == set()
    assert not (out / "train" / "n01440764").exists()  # the class never completed


def test_prepare_refuses_symlink_in_outer_tar(tmp_path: Path) -> None:
    train = tmp_path / "ILSVRC2012_img_train.tar"
    train.write_bytes(_tar_bytes([_special("n01440764.tar", tarfile.SYMTYPE, "/etc/passwd")]))
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        prepare(tmp_path / "prepared", train_tar=train)


def test_byte_range_reader(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(bytes(range(256)) * 4)
    fd = os.open(path, os.O_RDONLY)
    try:
        reader = open_range(fd, 100, 50, buffer_size=16)
        assert reader.read(10) == bytes(range(100, 110))
        reader.seek(45)
        assert reader.read() == bytes(range(145, 150))
        reader.seek(-5, io.SEEK_END)
        assert reader.tell() == 45
        assert reader.read(100) == bytes(range(145, 150)) and reader.read(1) == b""
    finally:
        os.close(fd)
