"""The one file-hashing loop (``digest.hash_file``) and what is built on it."""

from __future__ import annotations

import hashlib
import threading
import zlib
from pathlib import Path

import pytest

from recordio_pack import digest
from recordio_pack.digest import Digests, RunningDigests, file_digests, hash_file, hashers

DATA = bytes(range(256)) * 1000 + b"tail"


def test_hash_file_feeds_every_sink_in_one_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(digest, "CHUNK", 4096)
    path = tmp_path / "data"
    path.write_bytes(DATA)
    md5, sha256 = hashers("md5", "sha256")
    running = RunningDigests()
    seen: list[int] = []
    assert hash_file(path, md5, sha256, running, on_bytes=seen.append) == len(DATA)
    assert md5.hexdigest() == hashlib.md5(DATA).hexdigest() and sha256.hexdigest() == hashlib.sha256(DATA).hexdigest()
    assert running.digests() == Digests(len(DATA), hashlib.sha256(DATA).hexdigest(), f"{zlib.crc32(DATA):08x}")
    assert sum(seen) == len(DATA) and max(seen) == 4096 and len(seen) == -(-len(DATA) // 4096)


def test_hash_file_continues_running_hashes(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"first ")
    (tmp_path / "b").write_bytes(b"second")
    (sha,) = hashers("sha256")
    assert hash_file(tmp_path / "a", sha) == 6 and hash_file(tmp_path / "b", sha) == 6
    assert sha.hexdigest() == hashlib.sha256(b"first second").hexdigest()


def test_hash_file_stops_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(DATA)
    stop = threading.Event()
    stop.set()
    seen: list[int] = []
    with pytest.raises(InterruptedError, match="stopped hashing .*data"):
        hash_file(path, on_bytes=seen.append, stop=stop)
    assert seen == []
    (tmp_path / "empty").write_bytes(b"")
    assert hash_file(tmp_path / "empty", stop=stop) == 0  # no chunk was read: nothing to stop


def test_file_digests_is_size_sha256_and_crc32(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(DATA)
    seen: list[int] = []
    got = file_digests(path, on_bytes=seen.append)
    assert got == Digests(len(DATA), hashlib.sha256(DATA).hexdigest(), f"{zlib.crc32(DATA):08x}")
    assert sum(seen) == len(DATA)
    assert file_digests(path) == got


def test_the_other_entry_points_are_this_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from recordio_pack.aws import s3, snapshot
    from recordio_pack.imagenet import download

    path = tmp_path / "data"
    path.write_bytes(DATA)
    calls: list[str] = []
    real = digest.hash_file

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(str(args[0]))
        return real(*args, **kwargs)

    for module in (digest, snapshot, download):
        monkeypatch.setattr(module, "hash_file", counting)
    assert s3.hash_file(path) == file_digests(path)
    assert snapshot.manifest_sha256(path) == hashlib.sha256(DATA).hexdigest()
    sums = download.file_checksums(path)
    assert (sums.md5, sums.sha256) == (hashlib.md5(DATA).hexdigest(), hashlib.sha256(DATA).hexdigest())
    assert len(calls) == 4 and set(calls) == {str(path)}
