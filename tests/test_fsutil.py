"""The one atomic-write helper (``fsutil.atomic_output``), its temporaries, and ``fsync_dir``."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from recordio_pack import fsutil
from recordio_pack.fsutil import atomic_output, fsync_dir, is_temporary_of, temporaries_of


def _names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_atomic_output_success(tmp_path: Path) -> None:
    target = tmp_path / "out.rec"
    with atomic_output(target) as stream:
        stream.write(b"part one ")
        (temp,) = temporaries_of(target)  # nothing under the final name until complete
        assert temp.name.startswith("out.rec.") and temp.name.endswith(".tmp") and not target.exists()
        assert is_temporary_of("out.rec", temp.name) and temp.parent == tmp_path
        stream.write(b"part two")
    assert target.read_bytes() == b"part one part two"
    assert not temp.exists()
    assert _names(tmp_path) == ["out.rec"]


class Boom(Exception):
    pass


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
def test_atomic_output_failure_leaves_nothing(tmp_path: Path, error: type[BaseException]) -> None:
    target = tmp_path / "out.rec"
    with pytest.raises(error):
        with atomic_output(target) as stream:
            stream.write(b"half a shard")
            raise error()
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_failure_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "out.rec"
    target.write_bytes(b"previous")
    with pytest.raises(Boom):
        with atomic_output(target) as stream:
            stream.write(b"new")
            raise Boom()
    assert target.read_bytes() == b"previous"
    assert _names(tmp_path) == ["out.rec"]
    with atomic_output(target) as stream:
        stream.write(b"replacement")
    assert target.read_bytes() == b"replacement"


def test_atomic_output_text_mode(tmp_path: Path) -> None:
    target = tmp_path / "x.lst"
    with atomic_output(target, "w") as stream:
        stream.write("0\t1.000000\ta.jpg\n")
    assert target.read_text() == "0\t1.000000\ta.jpg\n"
    with atomic_output(target, "w", encoding="utf-8", newline="\n") as stream:
        stream.write("é\n")
    assert target.read_bytes() == "é\n".encode()


def test_atomic_output_refuses_other_modes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'ab'"):
        atomic_output(tmp_path / "x", "ab")  # type: ignore[call-overload]
    assert list(tmp_path.iterdir()) == []


def test_two_writers_of_one_target_get_their_own_temporaries(tmp_path: Path) -> None:
    target = tmp_path / "shared.json"
    with atomic_output(target) as first, atomic_output(target) as second:
        first.write(b"first")
        second.write(b"second")
        temps = temporaries_of(target)
        assert len(temps) == 2 and temps[0] != temps[1]
    assert target.read_bytes() == b"first"  # the outer one renamed last
    assert _names(tmp_path) == ["shared.json"]


def test_fsync_is_optional_and_the_folder_is_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        calls.append("file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(fsutil, "fsync_dir", lambda folder: calls.append(f"dir {Path(folder).name}"))
    with atomic_output(tmp_path / "durable") as stream:
        stream.write(b"x")
    assert calls == ["file", f"dir {tmp_path.name}"]
    calls.clear()
    with atomic_output(tmp_path / "cheap", fsync=False) as stream:
        stream.write(b"y")
    assert calls == [] and (tmp_path / "cheap").read_bytes() == b"y"


def test_fsync_dir_fsyncs_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[bool] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    fsync_dir(tmp_path)
    assert synced == [True]
    with pytest.raises(FileNotFoundError):
        fsync_dir(tmp_path / "missing")


def test_an_error_that_names_no_file_is_raised_naming_the_target(tmp_path: Path) -> None:
    target = tmp_path / "x.rejects.tsv"
    with pytest.raises(OSError) as raised:
        with atomic_output(target):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what a failed buffered write raises
    assert raised.value.filename == str(target) and raised.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OSError) as named:
        with atomic_output(target):
            raise OSError(errno.EIO, os.strerror(errno.EIO), "elsewhere")
    assert named.value.filename == "elsewhere" and list(tmp_path.iterdir()) == []


def test_a_failed_rename_removes_the_temporary(tmp_path: Path) -> None:
    target = tmp_path / "folder"
    target.mkdir()
    (target / "inside").write_bytes(b"")
    with pytest.raises(OSError):
        with atomic_output(target) as stream:
            stream.write(b"x")
    assert _names(tmp_path) == ["folder"]


def test_permissions_follow_the_umask_as_open_does(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        fsutil._umask.cache_clear()
        with atomic_output(tmp_path / "default") as stream:
            stream.write(b"")
        with atomic_output(tmp_path / "narrow", permissions=0o644) as stream:
            stream.write(b"")
        with open(tmp_path / "by-open", "wb"):
            pass
    finally:
        os.umask(old)
        fsutil._umask.cache_clear()
    mode = {name: stat.S_IMODE((tmp_path / name).stat().st_mode) for name in ("default", "narrow", "by-open")}
    assert mode == {"default": 0o640, "narrow": 0o640, "by-open": 0o640}


def test_temporaries_of_finds_only_this_helpers_names(tmp_path: Path) -> None:
    target = tmp_path / "a[1].json"
    for name in ["a[1].json.k2_x9q0z.tmp", "a[1].json.tmp", "a[1].json.toolong12.tmp", "a[1].json.SHOUTED1.tmp",
                 "b.json.k2_x9q0z.tmp", "a[1].json.k2_x9q0z.tmp.1"]:
        (tmp_path / name).write_bytes(b"")
    assert [path.name for path in temporaries_of(target)] == ["a[1].json.k2_x9q0z.tmp"]
    assert temporaries_of(tmp_path / "missing" / "x") == []
