"""``aws/restore.py`` against moto in-process: verified downloads, resume, refusal to overwrite, damage found."""

from __future__ import annotations

import errno
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import boto3
import pytest
from moto import mock_aws

from recordio_pack.aws.backup import BackupOptions, backup
from recordio_pack.aws.restore import RestoreOptions, restore
from recordio_pack.aws.s3 import LocalFileError, S3Location, TransferOptions
from recordio_pack.aws.session import AwsTarget
from recordio_pack.errors import RecordioPackError, RefusedError

from s3_helpers import PART, SIZES, SMALL, Calls, damage, write_dataset

BUCKET = "rp-restore-test"
WHERE = S3Location(BUCKET, "backups/ds")
TRANSFER = TransferOptions(part_size=PART, concurrency=4, multipart_threshold=PART)


@contextmanager
def moto_backup(tmp_path: Path, sizes: dict[str, int]) -> Iterator[tuple[Any, AwsTarget, Calls, Path]]:
    """A dataset of ``sizes`` backed up to moto: (client, target, call recorder, source folder)."""
    with mock_aws():
        session = boto3.Session(region_name="us-east-1")
        client = session.client("s3")
        client.create_bucket(Bucket=BUCKET)
        write_dataset(tmp_path / "source", sizes=sizes)
        target = AwsTarget(region="us-east-1", _session=session)
        backup(tmp_path / "source", WHERE, BackupOptions(transfer=TRANSFER), target)
        yield client, target, Calls(session), tmp_path / "source"


@pytest.fixture
def backed_up(tmp_path: Path) -> Iterator[tuple[Any, AwsTarget, Calls, Path]]:
    """Small files (no multipart): for tests about something else."""
    with moto_backup(tmp_path, SMALL) as state:
        yield state


def same_tree(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    return names == sorted(p.name for p in b.iterdir()) and all(
        (a / n).read_bytes() == (b / n).read_bytes() for n in names)


def test_restore_round_trip_then_resume_skips_verified_files(tmp_path: Path) -> None:
    with moto_backup(tmp_path, SIZES) as (_, target, calls, source):
        result = restore(WHERE, tmp_path / "copy", RestoreOptions(transfer=TRANSFER), target)
        assert same_tree(source, tmp_path / "copy")
        manifest_bytes = (source / "ds.manifest.json").stat().st_size
        assert result.received_bytes == sum(SIZES.values()) + manifest_bytes
        assert result.manifests == result.written_manifests == ["ds.manifest.json"]
        assert sum(op == "GetObject" for op, _ in calls.calls) > len(SIZES)  # the .rec files came in ranged parts
        # an interrupted restore: one file gone, one left half-written under its temp name
        (tmp_path / "copy" / "ds.lst").unlink()
        (tmp_path / "copy" / "ds-00000-of-00002.rec.tmp").write_bytes(b"partial")
        calls.clear()
        again = restore(WHERE, tmp_path / "copy", RestoreOptions(transfer=TRANSFER), target)
        downloaded = {key for op, key in calls.calls if op == "GetObject"}
        assert downloaded == {WHERE.key("ds.lst"), WHERE.key("ds.manifest.json")}
        assert {plan.name for plan in again.plans if plan.action == "download"} == {"ds.lst"}
        assert same_tree(source, tmp_path / "copy")  # the stale temp file is gone too


def test_corrupted_local_file_is_reported_and_only_replaced_with_overwrite(tmp_path: Path, backed_up: Any) -> None:
    _, target, calls, source = backed_up
    restore(WHERE, tmp_path / "copy", RestoreOptions(transfer=TRANSFER), target)
    damage(tmp_path / "copy" / "ds-00001-of-00002.rec")
    damaged = (tmp_path / "copy" / "ds-00001-of-00002.rec").read_bytes()
    calls.clear()
    with pytest.raises(RefusedError, match=r"1 existing file\(s\) differ.*ds-00001-of-00002.rec"):
        restore(WHERE, tmp_path / "copy", RestoreOptions(transfer=TRANSFER), target)
    assert (tmp_path / "copy" / "ds-00001-of-00002.rec").read_bytes() == damaged  # untouched
    assert not any(op == "GetObject" and key != WHERE.key("ds.manifest.json") for op, key in calls.calls)
    fixed = restore(WHERE, tmp_path / "copy", RestoreOptions(overwrite=True, transfer=TRANSFER), target)
    assert fixed.replaced == ["ds-00001-of-00002.rec"]
    assert same_tree(source, tmp_path / "copy")


def test_damaged_bucket_object_is_detected_and_not_written(tmp_path: Path, backed_up: Any) -> None:
    client, target, _, source = backed_up
    bad = bytearray((source / "ds.lst").read_bytes())
    bad[0] ^= 1
    client.put_object(Bucket=BUCKET, Key=WHERE.key("ds.lst"), Body=bytes(bad))
    with pytest.raises(RecordioPackError, match=r"do not match the manifest \(ds.lst\)"):
        restore(WHERE, tmp_path / "copy", RestoreOptions(transfer=TRANSFER), target)
    left = sorted(p.name for p in (tmp_path / "copy").iterdir())
    assert "ds.lst" not in left and "ds.manifest.json" not in left and not any(n.endswith(".tmp") for n in left)


def test_incomplete_backup_and_wrong_prefix_are_clear_errors(tmp_path: Path, backed_up: Any) -> None:
    client, target, calls, _ = backed_up
    with pytest.raises(RecordioPackError, match="no recordio-pack manifest"):
        restore(S3Location(BUCKET, "backups/nothing-here"), tmp_path / "copy", RestoreOptions(), target)
    client.delete_object(Bucket=BUCKET, Key=WHERE.key("ds-00000-of-00002.idx"))
    calls.clear()
    with pytest.raises(RecordioPackError, match="incomplete.*ds-00000-of-00002.idx is missing"):
        restore(WHERE, tmp_path / "copy", RestoreOptions(), target)
    assert {key for op, key in calls.calls if op == "GetObject"} == {WHERE.key("ds.manifest.json")}


def test_a_manifest_naming_paths_outside_the_folder_is_refused(tmp_path: Path, backed_up: Any) -> None:
    client, target, _, source = backed_up
    data = json.loads((source / "ds.manifest.json").read_text())
    data["files"][0]["name"] = "../escaped.txt"
    client.put_object(Bucket=BUCKET, Key=WHERE.key("ds.manifest.json"), Body=json.dumps(data).encode())
    with pytest.raises(RecordioPackError, match="unsafe file name"):
        restore(WHERE, tmp_path / "copy", RestoreOptions(), target)
    assert not (tmp_path / "escaped.txt").exists()


def test_an_existing_different_manifest_needs_overwrite(tmp_path: Path, backed_up: Any) -> None:
    _, target, _, _ = backed_up
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "ds.manifest.json").write_text("{}")
    with pytest.raises(RefusedError, match="ds.manifest.json"):
        restore(WHERE, tmp_path / "copy", RestoreOptions(transfer=TRANSFER), target)
    restore(WHERE, tmp_path / "copy", RestoreOptions(overwrite=True, transfer=TRANSFER), target)
    assert json.loads((tmp_path / "copy" / "ds.manifest.json").read_text())["name"] == "ds"


# --- leftovers and resumable downloads (issue 10 §4) -------------------------------------------------------

BIG = "ds-00000-of-00002.rec"  # PART + 12345 bytes: two ranged GETs of 5 MiB parts


class Ranges:
    """Records (key, Range) of every GetObject, and can interrupt the one that asks for a given range start."""

    def __init__(self, session: Any) -> None:
        self.seen: list[tuple[str, str | None]] = []
        self.interrupt_at: tuple[str, int] | None = None
        session.events.register("provide-client-params.s3.GetObject", self._record)

    def _record(self, params: dict[str, Any], **kwargs: Any) -> None:
        self.seen.append((params["Key"], params.get("Range")))
        if self.interrupt_at and (params["Key"], params.get("Range", "").startswith(
                f"bytes={self.interrupt_at[1]}-")) == (self.interrupt_at[0], True):
            raise KeyboardInterrupt  # as Ctrl-C (or SIGTERM) lands while this part is on its way

    def of(self, name: str) -> list[str | None]:
        return [rng for key, rng in self.seen if key == WHERE.key(name)]


def interrupted_restore(tmp_path: Path, target: AwsTarget, ranges: Ranges) -> Path:
    """A restore stopped while the second part of BIG is requested, after its first part is on disk."""
    ranges.interrupt_at = (WHERE.key(BIG), PART)
    with pytest.raises(KeyboardInterrupt):
        restore(WHERE, tmp_path / "copy", RestoreOptions(transfer=TransferOptions(part_size=PART, concurrency=1)),
                target)
    ranges.interrupt_at = None
    ranges.seen.clear()
    return tmp_path / "copy"


def partials(copy: Path) -> set[str]:
    """Files whose download was cut short: another file's may have begun when the stop reached BIG, and is
    resumed too (which is right); the tests assert what BIG's own download does."""
    return {path.name[: -len(".partial")] for path in copy.glob("*.partial")}


def test_an_interrupted_download_resumes_with_ranged_gets_for_the_missing_parts_only(tmp_path: Path) -> None:
    with moto_backup(tmp_path, SIZES) as (_, target, _, source):
        ranges = Ranges(target.session())
        copy = interrupted_restore(tmp_path, target, ranges)
        assert (copy / (BIG + ".partial")).stat().st_size == SIZES[BIG] and not (copy / BIG).exists()
        cut_short = partials(copy)
        result = restore(WHERE, copy, RestoreOptions(transfer=TRANSFER), target)
        assert ranges.of(BIG) == [f"bytes={PART}-{SIZES[BIG] - 1}"]  # part 1 was kept, not fetched again
        assert BIG in result.resumed_files and set(result.resumed_files) <= cut_short
        assert result.resumed_bytes >= PART
        assert same_tree(source, copy)  # byte-identical, and no .partial / .partial.json left


def test_a_replaced_object_or_a_damaged_partial_file_starts_from_zero(tmp_path: Path) -> None:
    with moto_backup(tmp_path, SIZES) as (client, target, _, source):
        ranges = Ranges(target.session())
        copy = interrupted_restore(tmp_path, target, ranges)
        # same bytes sent again in one PutObject: another ETag, so the partial file cannot be trusted
        client.put_object(Bucket=BUCKET, Key=WHERE.key(BIG), Body=(source / BIG).read_bytes())
        result = restore(WHERE, copy, RestoreOptions(transfer=TRANSFER), target)
        assert BIG not in result.resumed_files and len(ranges.of(BIG)) == 2 and same_tree(source, copy)
        (copy / BIG).unlink()
        copy = interrupted_restore(tmp_path, target, ranges)
        damage(copy / (BIG + ".partial"), offset=10)  # the part the state says is done is not what S3 holds
        again = restore(WHERE, copy, RestoreOptions(transfer=TRANSFER), target)
        assert BIG in again.resumed_files  # resumed, failed the manifest check, fetched again from zero
        assert len(ranges.of(BIG)) == 3 and same_tree(source, copy)


def test_leftover_temporaries_of_an_interrupted_restore_are_removed_and_only_ours(tmp_path: Path,
                                                                                  backed_up: Any) -> None:
    _, target, _, source = backed_up
    copy = tmp_path / "copy"
    copy.mkdir()
    ours = ["ds-00000-of-00002.rec.tmp.a1B2c3D4", "ds.lst.tmp", "ds.manifest.json.tmp",
            "ds-00001-of-00002.rec.tmp.00ff00ff",  # s3transfer's names for our NAME.tmp, and our own
            "ds.manifest.json.k2_x9q0z.tmp"]  # fsutil.atomic_output's
    theirs = ["ds.lst.tmp.notes", "other.rec.tmp.12345678", "ds.lst.tmp.123456789", "other.partial.json",
              "ds.lst.NOTOURS1.tmp", "other.rec.abcd1234.tmp"]
    for name in ours + theirs:
        (copy / name).write_bytes(b"left over")
    # our partial download of a file an older version of the backup had: its state file says it is ours
    (copy / "ds-00002-of-00003.rec.partial").write_bytes(bytes(100))
    (copy / "ds-00002-of-00003.rec.partial.json").write_text(json.dumps({
        "format": "recordio-pack.partial-download/1", "key": "k", "etag": '"e"', "size": 100,
        "part_size": PART}) + "\n1\n")
    result = restore(WHERE, copy, RestoreOptions(transfer=TRANSFER), target)
    assert sorted(result.removed_leftovers) == sorted([*ours, "ds-00002-of-00003.rec.partial"])
    assert sorted(p.name for p in copy.iterdir()) == sorted([*SMALL, "ds.manifest.json", *theirs])
    assert all((copy / name).read_bytes() == (source / name).read_bytes() for name in SMALL)


def test_restoring_into_a_file_is_one_line_naming_it(tmp_path: Path, backed_up: Any) -> None:
    _, target, _, _ = backed_up
    (tmp_path / "afile").write_text("x")
    with pytest.raises(RecordioPackError, match=r"afile: not a folder") as caught:
        restore(WHERE, tmp_path / "afile", RestoreOptions(transfer=TRANSFER), target)
    assert "\n" not in str(caught.value)


def test_a_full_disk_is_one_line_naming_the_file_and_the_rerun_resumes(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    with moto_backup(tmp_path, SIZES) as (_, target, _, source):
        real_pwrite = os.pwrite
        written = [0]

        def disk_fills_up(fd: int, data: Any, position: int) -> int:
            if written[0] + len(data) > PART + 1000:  # in the second part of BIG
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written[0] += len(data)
            return real_pwrite(fd, data, position)

        monkeypatch.setattr(os, "pwrite", disk_fills_up)
        one_at_a_time = RestoreOptions(transfer=TransferOptions(part_size=PART, concurrency=1))
        full = rf"{BIG}.partial: No space left on device \(free some space"
        with pytest.raises(LocalFileError, match=full) as caught:
            restore(WHERE, tmp_path / "copy", one_at_a_time, target)
        assert "\n" not in str(caught.value) and not (tmp_path / "copy" / "ds.manifest.json").exists()
        monkeypatch.setattr(os, "pwrite", real_pwrite)  # space freed
        result = restore(WHERE, tmp_path / "copy", RestoreOptions(transfer=TRANSFER), target)
        assert BIG in result.resumed_files and same_tree(source, tmp_path / "copy")


def test_parts_arriving_in_any_order_are_digested_in_file_order(tmp_path: Path) -> None:
    """The check at the end uses digests computed as parts arrived: early parts wait in memory (up to the hold),
    beyond it they are read back from the partial file, and the result is the whole file's digests."""
    from recordio_pack.aws.download import _InOrder
    from recordio_pack.aws.s3 import iter_chunks
    from recordio_pack.digest import file_digests

    data = os.urandom(10 * 1000 + 7)
    partial = tmp_path / "x.partial"
    partial.write_bytes(data)
    layout = {number: (offset, length) for number, offset, length in iter_chunks(len(data), 1000)}
    read_back: list[int] = []
    for hold, order in ((10**6, [3, 1, 2, 11, 5, 4, 6, 7, 8, 10, 9]), (1500, list(range(11, 0, -1)))):
        digests = _InOrder(partial, layout, hold)
        original = digests._read_back
        digests._read_back = lambda offset, length: read_back.append(offset) or original(offset, length)
        for number in order:
            offset, length = layout[number]
            digests.add(number, [data[offset:offset + length // 2], data[offset + length // 2:offset + length]])
        assert digests.running.digests() == file_digests(partial)
    assert read_back and len(read_back) < 10  # only the small hold spilled, and not every part


def test_a_restore_reads_no_downloaded_file_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No second pass: with parts arriving in order nothing is read back, and each file is still checked."""
    from recordio_pack.aws import download

    with moto_backup(tmp_path, SIZES) as (_, target, _, source):
        read_back: list[Any] = []
        monkeypatch.setattr(download._InOrder, "_read_back", lambda self, *where: read_back.append(where))
        one_at_a_time = RestoreOptions(transfer=TransferOptions(part_size=PART, concurrency=1))
        restore(WHERE, tmp_path / "copy", one_at_a_time, target)
        assert same_tree(source, tmp_path / "copy") and read_back == []
        # the same digests catch a wrong byte: a part changed on its way (as a bad disk or network would)
        real_get = download._Fetcher._get

        def flip_one_byte(self: Any, job: Any, offset: int, length: int) -> list[bytes]:
            chunks = real_get(self, job, offset, length)
            if job.record.name == "ds-00001-of-00002.rec" and offset == 0:
                chunks[0] = bytes([chunks[0][0] ^ 1]) + chunks[0][1:]
            return chunks

        monkeypatch.setattr(download._Fetcher, "_get", flip_one_byte)
        with pytest.raises(RecordioPackError, match="ds-00001-of-00002.rec"):
            restore(WHERE, tmp_path / "again", one_at_a_time, target)
        assert not (tmp_path / "again" / "ds-00001-of-00002.rec").exists()
        assert not (tmp_path / "again" / "ds.manifest.json").exists()
