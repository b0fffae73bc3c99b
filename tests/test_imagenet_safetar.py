"""Hostile tars are refused, naming the member, and nothing is written outside the target."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from recordio_pack.imagenet.prepare import prepare
from recordio_pack.imagenet.safetar import UnsafeArchiveError, iter_files, member_problem, open_range, write_file


def _file(name: str, data: bytes = b"payload") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info, b""


def _sparse(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.sparse = tarfile.GNUTYPE_SPARSE, [(0, 0)]  # type: ignore[assignment]  # as a sparse header sets
    return info


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


HOSTILE = ["absolute path", "'..' in the path", "nested '..'", "symbolic link", "symlink to outside", "hard link",
           "device file", "FIFO"]


def _extract(archive: Path, target: Path) -> tuple[int, int]:
    """Every regular file of ``archive`` below ``target``, all members checked first: (files, bytes)."""
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, mode="r:*") as tar:
        files = list(iter_files(tar, str(archive)))
        total = 0
        for member, name in files:
            source = tar.extractfile(member)
            assert source is not None
            with source:
                total += write_file(source, target, name)
    return len(files), total


def _hostile(tmp_path: Path, case: str) -> tuple[Path, list[tuple[tarfile.TarInfo, bytes]], tarfile.TarInfo]:
    """An empty ``outside`` folder, the members of ``case`` and the one of them that must be refused."""
    outside = tmp_path / "outside"
    outside.mkdir()
    members = _hostile_cases(outside)[case]
    return outside, members, next(info for info, _ in members if info.name != "good.JPEG")


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_members_are_refused_before_anything_is_written(tmp_path: Path, case: str) -> None:
    outside, members, bad = _hostile(tmp_path, case)
    archive = tmp_path / "hostile.tar"
    archive.write_bytes(_tar_bytes(members))
    target = tmp_path / "target"
    with pytest.raises(UnsafeArchiveError) as raised:
        _extract(archive, target)
    assert repr(bad.name) in str(raised.value) and str(archive) in str(raised.value)
    assert _files_under(outside) == set()
    assert _files_under(target) == set()  # checked before writing: not even the good member
    assert sorted(os.listdir(tmp_path)) == ["hostile.tar", "outside", "target"]


@pytest.mark.parametrize("case", HOSTILE)
def test_prepare_refuses_hostile_members_of_a_class_tar(tmp_path: Path, case: str) -> None:
    outside, members, bad = _hostile(tmp_path, case)
    train = tmp_path / "ILSVRC2012_img_train.tar"
    train.write_bytes(_tar_bytes([_file("n01440764.tar", _tar_bytes(members))]))
    out = tmp_path / "prepared"
    with pytest.raises(UnsafeArchiveError) as raised:
        prepare(out, train_tar=train)
    assert repr(bad.name) in str(raised.value) and f"{train}:n01440764.tar" in str(raised.value)
    assert _files_under(outside) == set()
    assert not (out / "train" / "n01440764").exists()  # the class never completed
    assert sorted(os.listdir(tmp_path)) == ["ILSVRC2012_img_train.tar", "outside", "prepared"]


@pytest.mark.parametrize("info, reason", [
    (_special("a/link.JPEG", tarfile.SYMTYPE, "b.JPEG")[0], "symbolic link (to 'b.JPEG')"),
    (_special("a/hard.JPEG", tarfile.LNKTYPE, "a/b.JPEG")[0], "hard link (to 'a/b.JPEG')"),
    (_special("a/../b.JPEG", tarfile.REGTYPE)[0], "'..' in the path"),
    (_special("/b.JPEG", tarfile.REGTYPE)[0], "absolute path"),
    (_sparse("sparse.JPEG"), "sparse file"),
])
def test_stricter_than_data_filter(tmp_path: Path, info: tarfile.TarInfo, reason: str) -> None:
    tarfile.data_filter(info, str(tmp_path))  # the standard library's filter lets each of these through
    assert member_problem(info) == reason


def test_member_problem_starts_from_data_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    info = _file("fine.JPEG")[0]
    assert member_problem(info) is None

    def refuse(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
        raise tarfile.FilterError("refused by a newer data_filter")

    monkeypatch.setattr(tarfile, "data_filter", refuse)
    assert member_problem(info) == "refused by a newer data_filter"


def test_symlink_planted_in_target_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    (target / "sub").symlink_to(outside, target_is_directory=True)
    archive = tmp_path / "plain.tar"
    archive.write_bytes(_tar_bytes([_file("sub/evil.JPEG")]))
    with pytest.raises(UnsafeArchiveError, match="not a plain folder"):
        _extract(archive, target)
    assert _files_under(outside) == set()


def test_a_symlink_at_the_file_name_is_replaced_not_written_through(tmp_path: Path) -> None:
    outside = tmp_path / "outside.JPEG"
    outside.write_bytes(b"theirs")
    target = tmp_path / "target"
    target.mkdir()
    (target / "x.JPEG").symlink_to(outside)
    assert write_file(io.BytesIO(b"ours"), target, "x.JPEG") == 4
    assert outside.read_bytes() == b"theirs" and not (target / "x.JPEG").is_symlink()
    assert (target / "x.JPEG").read_bytes() == b"ours" and _files_under(target) == {"x.JPEG"}


class _Broken(io.RawIOBase):
    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        raise OSError(5, "Input/output error")


def test_a_failed_copy_leaves_no_temporary_and_a_read_error_is_not_named_as_the_output(tmp_path: Path) -> None:
    with pytest.raises(OSError) as raised:
        write_file(_Broken(), tmp_path, "a/x.JPEG")  # type: ignore[arg-type]
    assert raised.value.errno == 5 and raised.value.filename is None  # the archive failed, not the output
    assert _files_under(tmp_path) == {"a"}


def test_safe_archive_extracts(tmp_path: Path) -> None:
    archive = tmp_path / "ok.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for info, data in [_file("./a/b.JPEG", b"bee"), _file("c.JPEG", b"sea")]:
            tar.addfile(info, io.BytesIO(data))
    assert _extract(archive, tmp_path / "out") == (2, 6)
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
