"""``aws/backup.py`` and ``aws/s3.py`` against moto in-process: content decides what moves, checksums end to
end, manifests last, resume after an interrupted upload, clear AWS errors."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import zlib
from pathlib import Path
from typing import Any, Iterator

import boto3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from moto import mock_aws
from moto.core import set_initial_no_auth_action_count

from recordio_pack.aws import multipart
from recordio_pack.aws.backup import SKIP, UPLOAD, BackupOptions, backup, decide
from recordio_pack.aws.s3 import (
    MAX_PARTS, MiB, ObjectInfo, Placement, RateLimiter, S3Location, TransferOptions, check_relative_name,
    parse_s3_uri, part_size_for,
)
from recordio_pack.aws.session import AwsError, AwsTarget
from recordio_pack.digest import crc32_base64, file_digests
from recordio_pack.errors import RecordioPackError, RefusedError
from recordio_pack.manifest import FileRecord
from recordio_pack.progress import NullProgress, Task

from s3_helpers import PART, SIZES, SMALL, Calls, damage, write_dataset

BUCKET = "rp-backup-test"
WHERE = S3Location(BUCKET, "datasets/ds")
BIG = "ds-00000-of-00002.rec"


def options(**changes: Any) -> BackupOptions:
    transfer = TransferOptions(part_size=PART, concurrency=changes.pop("concurrency", 4),
                               multipart_threshold=changes.pop("multipart_threshold", PART))
    return BackupOptions(transfer=transfer, **changes)


@pytest.fixture
def s3() -> Iterator[tuple[Any, AwsTarget, Calls]]:
    """moto in-process with an empty bucket: (client, target for the code under test, call recorder)."""
    with mock_aws():
        session = boto3.Session(region_name="us-east-1")
        client = session.client("s3")
        client.create_bucket(Bucket=BUCKET)
        calls = Calls(session)
        yield client, AwsTarget(region="us-east-1", _session=session), calls


def keys(client: Any) -> dict[str, int]:
    listed = client.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    return {item["Key"]: item["Size"] for item in listed}


def key(name: str) -> str:
    return WHERE.key(name)


# --- pure parts ------------------------------------------------------------------------------------------

def test_part_size_keeps_every_file_under_ten_thousand_parts() -> None:
    assert part_size_for(0) == 16 * MiB
    assert part_size_for(1) == 16 * MiB
    assert part_size_for(MAX_PARTS * 16 * MiB) == 16 * MiB
    assert part_size_for(MAX_PARTS * 16 * MiB + 1) == 17 * MiB
    for size in (150 * 10**9, 150 * 2**30, 5 * 2**40):  # a 150 GB .rec, and bigger
        part = part_size_for(size)
        assert -(-size // part) <= MAX_PARTS and part % MiB == 0 and part >= 16 * MiB
    assert part_size_for(150 * 10**9) == 16 * MiB and part_size_for(150 * 10**9, 8 * MiB) == 15 * MiB
    assert part_size_for(500 * 10**9) == 48 * MiB
    assert part_size_for(1000, minimum=5 * MiB) == 5 * MiB
    with pytest.raises(ValueError, match="5 MiB"):
        part_size_for(1000, minimum=4 * MiB)
    with pytest.raises(ValueError, match="10000 parts"):
        part_size_for(MAX_PARTS * (5 << 30) + 1)


@settings(max_examples=100, deadline=None)
@given(size=st.integers(0, MAX_PARTS * (5 << 30)), minimum=st.integers(5, 64).map(lambda m: m * MiB))
def test_part_size_is_the_smallest_that_fits(size: int, minimum: int) -> None:
    part = part_size_for(size, minimum)
    assert part >= minimum and part % MiB == 0 and -(-size // part) <= MAX_PARTS
    smaller = part - MiB
    assert smaller < minimum or -(-size // smaller) > MAX_PARTS


def test_s3_uris_and_names() -> None:
    assert parse_s3_uri("s3://my-bucket/a/b/") == S3Location("my-bucket", "a/b")
    assert parse_s3_uri("s3://my-bucket") == S3Location("my-bucket", "")
    assert S3Location("my-bucket", "a").key("x.rec") == "a/x.rec" and S3Location("my-bucket").key("x") == "x"
    assert S3Location("my-bucket", "a").list_prefix == "a/"
    for bad in ("my-bucket/a", "s3://", "s3://B/a", "s3://my-bucket/a//b", "s3://my-bucket/../x"):
        with pytest.raises(ValueError):
            parse_s3_uri(bad)
    assert check_relative_name("sub/x.rec") == "sub/x.rec"
    for bad in ("../x", "/etc/passwd", "a/../../x", "a//b", "", "a\\b", "./x"):
        with pytest.raises(ValueError):
            check_relative_name(bad)


def test_transfer_options_are_checked_when_made() -> None:
    assert TransferOptions().multipart_threshold == 64 * MiB
    for bad in ({"part_size": MiB}, {"concurrency": 0}, {"multipart_threshold": MiB},
                {"multipart_threshold": (5 << 30) + 1}, {"max_bandwidth": 0}):
        with pytest.raises(ValueError):
            TransferOptions(**bad)


def test_decide_by_content_only() -> None:
    record = FileRecord("x.rec", 10, "ab" * 32, "0badc0de")
    other = FileRecord("x.rec", 10, "cd" * 32, "12345678")
    good = ObjectInfo(10, crc32_base64(record.crc32), "FULL_OBJECT", record.sha256, "STANDARD", "AES256")
    assert decide(record, record, good) == (SKIP, "unchanged")
    assert decide(record, None, good)[0] == SKIP  # uploaded by an interrupted run: no manifest yet
    assert decide(record, None, None) == (UPLOAD, "new")
    assert decide(record, other, good)[0] == SKIP  # the object already holds our content
    assert decide(record, other, None) == (UPLOAD, "changed checksum since the bucket's manifest")
    assert decide(record, record, None) == (UPLOAD, "missing in bucket")
    same_size_other_crc = ObjectInfo(10, crc32_base64(other.crc32), None, record.sha256, "STANDARD", None)
    action, reason = decide(record, record, same_size_other_crc)
    assert action == UPLOAD and "CRC32" in reason
    no_sha = ObjectInfo(10, crc32_base64(record.crc32), None, None, "STANDARD", None)
    assert decide(record, None, no_sha)[0] == UPLOAD


# --- backups against moto --------------------------------------------------------------------------------

def test_backup_uploads_everything_with_checksums_then_the_manifest_last(tmp_path: Path, s3: Any) -> None:
    client, target, calls = s3
    manifest = write_dataset(tmp_path / "ds")
    result = backup(tmp_path / "ds", WHERE, options(), target)
    assert result.count(UPLOAD) == len(SIZES) + 1 and result.sent_bytes == sum(SIZES.values()) + len(
        (tmp_path / "ds" / "ds.manifest.json").read_bytes())
    assert keys(client) == {key(n): s for n, s in SIZES.items()} | {key("ds.manifest.json"): len(
        (tmp_path / "ds" / "ds.manifest.json").read_bytes())}
    for record in manifest.data_files():
        head = client.head_object(Bucket=BUCKET, Key=key(record.name), ChecksumMode="ENABLED")
        assert head["ChecksumCRC32"] == crc32_base64(record.crc32)
        assert head["Metadata"]["sha256"] == record.sha256
        assert head["ServerSideEncryption"] == "AES256"
    assert client.head_object(Bucket=BUCKET, Key=key(BIG), ChecksumMode="ENABLED")["ChecksumType"] == "FULL_OBJECT"
    ops = [op for op, _ in calls.calls]
    assert ops.count("UploadPart") == 2 + 2  # both .rec files went in 5 MiB parts
    writes = [(op, k) for op, k in calls.calls if op in ("PutObject", "CompleteMultipartUpload")]
    assert writes[-1] == ("PutObject", key("ds.manifest.json"))  # the manifest is the last object written
    assert client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_a_second_run_sends_nothing_and_a_changed_file_is_found_by_content(tmp_path: Path, s3: Any) -> None:
    client, target, calls = s3
    write_dataset(tmp_path / "ds")
    backup(tmp_path / "ds", WHERE, options(), target)
    calls.clear()
    again = backup(tmp_path / "ds", WHERE, options(), target)
    assert {plan.reason for plan in again.plans} == {"unchanged"} and again.sent_bytes == 0
    assert calls.sent_keys() == set()
    # same sizes, different bytes (as a re-pack would give), and an object lost from the bucket
    write_dataset(tmp_path / "ds", seed=1)
    client.delete_object(Bucket=BUCKET, Key=key("ds.lst"))
    calls.clear()
    dry = backup(tmp_path / "ds", WHERE, options(dry_run=True, overwrite=True), target)
    assert calls.sent_keys() == set() and dry.sent_bytes == 0
    reasons = {plan.name: plan.reason for plan in dry.plans}
    assert reasons[BIG] == "changed checksum since the bucket's manifest"
    assert reasons["ds.manifest.json"] == "changed"
    real = backup(tmp_path / "ds", WHERE, options(overwrite=True), target)
    empty = "ds-00001-of-00002.idx"  # 0 bytes: the same content whatever the seed
    assert [plan.name for plan in real.plans if plan.action == SKIP] == [empty]
    assert calls.sent_keys() == {key(n) for n in SIZES if n != empty} | {key("ds.manifest.json")}


def test_missing_object_is_reuploaded_alone(tmp_path: Path, s3: Any) -> None:
    client, target, calls = s3
    write_dataset(tmp_path / "ds")
    backup(tmp_path / "ds", WHERE, options(), target)
    client.delete_object(Bucket=BUCKET, Key=key("ds.lst"))
    calls.clear()
    result = backup(tmp_path / "ds", WHERE, options(), target)
    assert {plan.name: plan.reason for plan in result.plans}["ds.lst"] == "missing in bucket"
    assert calls.sent_keys() == {key("ds.lst")}  # the manifest is identical: not rewritten
    client.put_object(Bucket=BUCKET, Key=key("ds.lst"), Body=b"truncated")
    again = backup(tmp_path / "ds", WHERE, options(dry_run=True), target)
    assert {plan.name: plan.reason for plan in again.plans}["ds.lst"] == (
        "changed in bucket (size 9 in bucket, 4000 in manifest)")


def test_storage_class_and_kms(tmp_path: Path, s3: Any) -> None:
    client, target, _ = s3
    write_dataset(tmp_path / "ds", sizes={"ds.lst": 100})
    backup(tmp_path / "ds", WHERE, options(storage_class="GLACIER_IR", sse="aws:kms", kms_key_id="alias/ours"),
           target)
    head = client.head_object(Bucket=BUCKET, Key=key("ds.lst"))
    assert head["StorageClass"] == "GLACIER_IR"
    assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"].endswith("alias/ours")
    with pytest.raises(ValueError):
        BackupOptions(storage_class="GLACIER")
    with pytest.raises(ValueError):
        BackupOptions(kms_key_id="k")


def test_upload_killed_mid_file_resumes_without_resending_finished_files(tmp_path: Path, s3: Any) -> None:
    client, target, calls = s3
    write_dataset(tmp_path / "ds")
    second = key("ds-00001-of-00002.rec")
    finished_before_failure: list[str] = []

    def die_in_second_rec(params: dict[str, Any], model: Any, **kwargs: Any) -> None:
        if model.name in ("PutObject", "CompleteMultipartUpload"):
            finished_before_failure.append(params["Key"])
        if model.name == "UploadPart" and params["Key"] == second and params["PartNumber"] == 2:
            raise ConnectionError("link died mid-file")

    target.session().events.register("provide-client-params.s3", die_in_second_rec)
    with pytest.raises(ConnectionError):
        backup(tmp_path / "ds", WHERE, options(concurrency=1), target)
    target.session().events.unregister("provide-client-params.s3", die_in_second_rec)
    assert client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []  # aborted, not left behind
    done = set(keys(client))
    assert key("ds.manifest.json") not in done and second not in done
    assert done, "the failure was meant to come after some files were finished"
    calls.clear()
    result = backup(tmp_path / "ds", WHERE, options(), target)
    resent = calls.sent_keys()
    assert resent.isdisjoint(done)  # finished files are not sent again
    assert resent | done == {key(n) for n in SIZES} | {key("ds.manifest.json")}
    assert all(plan.action == SKIP for plan in result.plans if WHERE.key(plan.name) in done)


def start_leftover_upload(client: Any, name: str, data: bytes, parts: list[int]) -> str:
    """What a killed backup leaves: a full-object CRC32 multipart upload with some parts in S3."""
    upload_id = client.create_multipart_upload(
        Bucket=BUCKET, Key=key(name), ChecksumAlgorithm="CRC32", ChecksumType="FULL_OBJECT",
        Metadata={"sha256": hashlib.sha256(data).hexdigest()}, ServerSideEncryption="AES256")["UploadId"]
    for number in parts:
        chunk = data[(number - 1) * PART:number * PART]
        client.upload_part(Bucket=BUCKET, Key=key(name), UploadId=upload_id, PartNumber=number, Body=chunk,
                           ChecksumAlgorithm="CRC32")
    return upload_id


def test_unfinished_multipart_upload_is_continued_and_others_aborted(tmp_path: Path, s3: Any) -> None:
    client, target, calls = s3
    write_dataset(tmp_path / "ds")
    data = (tmp_path / "ds" / BIG).read_bytes()
    start_leftover_upload(client, BIG, data, [1])  # killed after the first of its 2 parts
    client.create_multipart_upload(Bucket=BUCKET, Key="elsewhere/other.bin")  # not ours: left alone
    calls.clear()
    result = backup(tmp_path / "ds", WHERE, options(), target)
    big_parts = [k for op, k in calls.calls if op == "UploadPart" and k == key(BIG)]
    assert len(big_parts) == 1 and result.reused_parts == 1
    assert {plan.name: plan.action for plan in result.plans}[BIG] == "continue"
    head = client.head_object(Bucket=BUCKET, Key=key(BIG), ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == crc32_base64(f"{zlib.crc32(data):08x}") and head["ContentLength"] == len(data)
    left = client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
    assert [upload["Key"] for upload in left] == ["elsewhere/other.bin"]
    assert client.get_object(Bucket=BUCKET, Key=key(BIG))["Body"].read() == data


def test_leftover_upload_of_other_content_is_aborted_and_sent_afresh(tmp_path: Path, s3: Any) -> None:
    client, target, calls = s3
    write_dataset(tmp_path / "ds")
    data = (tmp_path / "ds" / BIG).read_bytes()
    start_leftover_upload(client, BIG, bytes(len(data)), [1])  # zeros: another version of the file
    stale_id = start_leftover_upload(client, "ds.lst", bytes(PART), [1])  # a file that goes in one PutObject
    calls.clear()
    result = backup(tmp_path / "ds", WHERE, options(), target)
    assert sorted(result.aborted) == sorted([key(BIG), key("ds.lst")])
    assert len([k for op, k in calls.calls if op == "UploadPart" and k == key(BIG)]) == 2
    assert client.get_object(Bucket=BUCKET, Key=key(BIG))["Body"].read() == data
    assert client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    assert stale_id  # aborted, as the empty listing shows


@pytest.mark.parametrize("name", [BIG, "ds.lst"])  # a multipart upload, and one PutObject
def test_a_damaged_file_to_send_is_found_as_it_is_read_and_never_completed(tmp_path: Path, s3: Any,
                                                                            name: str) -> None:
    client, target, calls = s3
    write_dataset(tmp_path / "ds")
    backup(tmp_path / "ds", WHERE, options(), target)
    damage(tmp_path / "ds" / name)
    calls.clear()
    again = backup(tmp_path / "ds", WHERE, options(), target)  # in the bucket already: not read, not sent
    assert calls.sent_keys() == set() and {plan.reason for plan in again.plans} == {"unchanged"}
    client.delete_object(Bucket=BUCKET, Key=key(name))  # now it has to be sent
    with pytest.raises(RecordioPackError, match=rf"{name} sha256 differs\); {name} was not completed in the "
                                                r"bucket, and no manifest was uploaded.*recordio-pack verify"):
        backup(tmp_path / "ds", WHERE, options(), target)
    assert key(name) not in keys(client)
    assert client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []  # aborted, none left
    if name == "ds.lst":
        assert (calls.ops()["PutObject"], calls.sent_keys()) == (0, set())  # checked before anything was sent
    (tmp_path / "ds" / "ds.lst").write_bytes(b"short")
    with pytest.raises(RecordioPackError, match="ds.lst has 5 bytes"):  # sizes are checked even without hashing
        backup(tmp_path / "ds", WHERE, options(verify_local=False, dry_run=True), target)


def test_changed_bytes_are_caught_as_they_are_read_when_local_verification_is_off(tmp_path: Path, s3: Any) -> None:
    client, target, _ = s3
    write_dataset(tmp_path / "ds")
    damage(tmp_path / "ds" / BIG)  # before the first backup: the manifest promises other bytes
    with pytest.raises(RecordioPackError, match=f"{BIG} CRC32 differs"):  # the CRC32 is still computed as read
        backup(tmp_path / "ds", WHERE, options(verify_local=False), target)
    assert key("ds.manifest.json") not in keys(client) and key(BIG) not in keys(client)
    assert client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_no_manifest_is_a_clear_error(tmp_path: Path, s3: Any) -> None:
    _, target, _ = s3
    (tmp_path / "empty").mkdir()
    with pytest.raises(RecordioPackError, match="no \\*.manifest.json"):
        backup(tmp_path / "empty", WHERE, options(), target)


def test_missing_bucket_and_missing_credentials_are_one_line(tmp_path: Path, s3: Any,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    _, target, _ = s3
    write_dataset(tmp_path / "ds", sizes={"ds.lst": 10})
    with pytest.raises(AwsError, match="NoSuchBucket") as caught:
        backup(tmp_path / "ds", S3Location("rp-no-such-bucket", "x"), options(), target)
    assert "\n" not in str(caught.value) and "ListObjectsV2" in str(caught.value)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(AwsError, match="no AWS credentials"):
        backup(tmp_path / "ds", WHERE, options(), AwsTarget(region="us-east-1"))


@set_initial_no_auth_action_count(4)
@mock_aws
def test_access_denied_names_the_action(tmp_path: Path) -> None:
    iam, s3 = boto3.client("iam", region_name="us-east-1"), boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    iam.create_user(UserName="reader")
    iam.put_user_policy(UserName="reader", PolicyName="read-only", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}))
    access = iam.create_access_key(UserName="reader")["AccessKey"]
    session = boto3.Session(aws_access_key_id=access["AccessKeyId"], aws_secret_access_key=access["SecretAccessKey"],
                            region_name="us-east-1")
    write_dataset(tmp_path / "ds", sizes={"ds.lst": 10})
    with pytest.raises(AwsError, match="access denied for ListObjectsV2"):
        backup(tmp_path / "ds", WHERE, options(), AwsTarget(_session=session))


def test_continue_refuses_uploads_it_cannot_finish(tmp_path: Path, s3: Any) -> None:
    client, _, _ = s3
    write_dataset(tmp_path / "ds")
    upload_id = client.create_multipart_upload(Bucket=BUCKET, Key=key(BIG))["UploadId"]  # no checksum
    [upload] = multipart.list_unfinished(client, WHERE)
    assert upload.upload_id == upload_id
    record = FileRecord.of(BIG, file_digests(tmp_path / "ds" / BIG))
    with pytest.raises(multipart.CannotContinue, match="CRC32"):
        multipart.continue_upload(client, WHERE, upload, tmp_path / "ds" / BIG, record, concurrency=2,
                                  limiter=RateLimiter(None), task=Task(NullProgress(), "uploading"))
    assert client.list_multipart_uploads(Bucket=BUCKET)["Uploads"][0]["UploadId"] == upload_id  # untouched


# --- versions in one prefix, storage class and encryption (issue 10 §6) ------------------------------------

V2 = {"ds-00000-of-00001.rec": 7000, "ds-00000-of-00001.idx": 40, "ds.lst": 900, "ds.synsets.txt": 77}


def test_another_version_is_refused_and_replaced_only_with_overwrite(tmp_path: Path, s3: Any) -> None:
    client, target, calls = s3
    write_dataset(tmp_path / "v1", sizes=SMALL)
    backup(tmp_path / "v1", WHERE, options(), target)
    before = keys(client)
    write_dataset(tmp_path / "v2", sizes=V2, seed=2)
    calls.clear()
    for dry_run in (True, False):
        with pytest.raises(RefusedError, match=r"holds another version.*ds.manifest.json.*files only there") as caught:
            backup(tmp_path / "v2", WHERE, options(dry_run=dry_run), target)
        assert caught.value.exit_code == 3 and "--" not in str(caught.value)  # flags are the CLI's words
    assert calls.sent_keys() == set() and keys(client) == before
    dry = backup(tmp_path / "v2", WHERE, options(dry_run=True, overwrite=True), target)
    old_only = sorted(set(SMALL) - set(V2))
    assert dry.deleted == old_only and dry.replaced == ["ds.manifest.json"] and keys(client) == before
    calls.clear()
    done = backup(tmp_path / "v2", WHERE, options(overwrite=True), target)
    assert done.deleted == old_only
    assert keys(client) == {key(n): s for n, s in V2.items()} | {
        key("ds.manifest.json"): (tmp_path / "v2" / "ds.manifest.json").stat().st_size}
    ops = [(op, k) for op, k in calls.calls if op in ("PutObject", "CompleteMultipartUpload", "DeleteObjects")]
    assert ops[-2:] == [("PutObject", key("ds.manifest.json")), ("DeleteObjects", None)]  # delete only after
    assert backup(tmp_path / "v2", WHERE, options(), target).count(UPLOAD) == 0  # now the same version


def test_an_interrupted_replacement_is_finished_by_the_next_overwrite_and_others_objects_stay(
        tmp_path: Path, s3: Any) -> None:
    client, target, _ = s3
    write_dataset(tmp_path / "v1", sizes=SMALL)
    backup(tmp_path / "v1", WHERE, options(), target)
    write_dataset(tmp_path / "other", sizes={"val.lst": 50}, name="val")  # another dataset in the same prefix
    backup(tmp_path / "other", WHERE, options(), target)
    client.put_object(Bucket=BUCKET, Key=key("NOTES.txt"), Body=b"not ours")
    client.put_object(Bucket=BUCKET, Key=key("extra.bin"), Body=b"x", Metadata={"sha256": "0" * 64})  # not ds's
    write_dataset(tmp_path / "v2", sizes=V2, seed=2)

    def fail_deletes(model: Any, **kwargs: Any) -> None:
        if model.name == "DeleteObjects":
            raise ConnectionError("killed before the old version was deleted")

    target.session().events.register("provide-client-params.s3", fail_deletes)
    with pytest.raises(ConnectionError):
        backup(tmp_path / "v2", WHERE, options(overwrite=True), target)
    target.session().events.unregister("provide-client-params.s3", fail_deletes)
    old_only = sorted(set(SMALL) - set(V2))
    assert all(key(name) in keys(client) for name in old_only)  # the new manifest is up, the old files linger
    plain = backup(tmp_path / "v2", WHERE, options(), target)  # same version now: no refusal, nothing deleted
    assert plain.unlisted == old_only and plain.deleted == []
    assert all(key(name) in keys(client) for name in old_only)
    finished = backup(tmp_path / "v2", WHERE, options(overwrite=True), target)
    assert finished.deleted == old_only
    assert set(keys(client)) == {key(n) for n in [*V2, "ds.manifest.json", "val.lst", "val.manifest.json",
                                                   "NOTES.txt", "extra.bin"]}


def test_a_changed_storage_class_or_encryption_is_applied_not_called_unchanged(tmp_path: Path, s3: Any) -> None:
    client, target, calls = s3
    write_dataset(tmp_path / "ds", sizes={"ds.lst": 100, "ds.synsets.txt": 20})
    backup(tmp_path / "ds", WHERE, options(), target)
    names = ["ds.lst", "ds.synsets.txt", "ds.manifest.json"]
    calls.clear()
    colder = backup(tmp_path / "ds", WHERE, options(storage_class="STANDARD_IA"), target)
    assert all("storage class STANDARD in bucket, STANDARD_IA asked" in plan.reason for plan in colder.plans)
    assert calls.sent_keys() == {key(n) for n in names}
    assert {client.head_object(Bucket=BUCKET, Key=key(n))["StorageClass"] for n in names} == {"STANDARD_IA"}
    assert backup(tmp_path / "ds", WHERE, options(storage_class="STANDARD_IA"), target).count(UPLOAD) == 0
    kms = backup(tmp_path / "ds", WHERE, options(storage_class="STANDARD_IA", sse="aws:kms"), target)
    assert all("encryption AES256 in bucket, aws:kms asked" in plan.reason for plan in kms.plans)
    assert {client.head_object(Bucket=BUCKET, Key=key(n))["ServerSideEncryption"] for n in names} == {"aws:kms"}
    assert backup(tmp_path / "ds", WHERE, options(storage_class="STANDARD_IA", sse="aws:kms"),
                  target).count(UPLOAD) == 0


def test_decide_applies_the_asked_placement() -> None:
    record = FileRecord("x.rec", 10, "ab" * 32, "0badc0de")
    good = ObjectInfo(10, crc32_base64(record.crc32), "FULL_OBJECT", record.sha256, "STANDARD", "AES256")
    assert decide(record, record, good, Placement("STANDARD", "AES256")) == (SKIP, "unchanged")
    action, reason = decide(record, record, good, Placement("GLACIER_IR", "AES256"))
    assert action == UPLOAD and "storage class STANDARD in bucket, GLACIER_IR asked" in reason
    kms = ObjectInfo(10, crc32_base64(record.crc32), None, record.sha256, "STANDARD", "aws:kms",
                     "arn:aws:kms:us-east-1:123456789012:key/k-1")
    assert decide(record, record, kms, Placement("STANDARD", "aws:kms", "k-1"))[0] == SKIP
    assert decide(record, record, kms, Placement("STANDARD", "aws:kms", "alias/ours"))[0] == SKIP  # not comparable
    assert "KMS key" in decide(record, record, kms, Placement("STANDARD", "aws:kms", "k-2"))[1]


def test_local_read_errors_are_one_line_naming_the_file(tmp_path: Path, s3: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from recordio_pack.aws import upload as upload_module

    _, target, _ = s3
    with pytest.raises(RecordioPackError, match="no such folder") as caught:
        backup(tmp_path / "nowhere", WHERE, options(), target)
    assert "\n" not in str(caught.value)
    write_dataset(tmp_path / "ds", sizes={"ds.lst": 10})

    def failing_disk(path: Any, *args: Any, **kwargs: Any) -> Any:
        if str(path).endswith("ds.lst"):
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(upload_module, "open", failing_disk, raising=False)  # the one read of each file sent
    with pytest.raises(RecordioPackError, match=r"ds/ds.lst: Input/output error") as caught:
        backup(tmp_path / "ds", WHERE, options(), target)
    assert "\n" not in str(caught.value)
    monkeypatch.delattr(upload_module, "open")
    (tmp_path / "ds" / "ds.lst").chmod(0)
    try:
        if os.access(tmp_path / "ds" / "ds.lst", os.R_OK):
            pytest.skip("running as root: permissions do not stop reads")
        with pytest.raises(RecordioPackError, match=r"ds.lst: Permission denied \(check the file's permissions\)"):
            backup(tmp_path / "ds", WHERE, options(), target)
    finally:
        (tmp_path / "ds" / "ds.lst").chmod(0o644)


def test_each_file_sent_is_read_once_and_files_in_the_bucket_not_at_all(tmp_path: Path, s3: Any,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from recordio_pack import digest as digest_module
    from recordio_pack.aws import upload as upload_module

    client, target, _ = s3
    write_dataset(tmp_path / "ds")
    opened: list[str] = []

    def counting(module: Any) -> Any:
        def open_and_count(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            if "r" in mode and not str(path).endswith(".manifest.json"):
                opened.append(Path(path).name)
            return open(path, mode, *args, **kwargs)
        return open_and_count

    monkeypatch.setattr(upload_module, "open", counting(upload_module), raising=False)
    monkeypatch.setattr(digest_module, "open", counting(digest_module), raising=False)
    backup(tmp_path / "ds", WHERE, options(), target)
    assert sorted(opened) == sorted(SIZES)  # one open per data file, by the uploader; no separate hashing pass
    opened.clear()
    client.delete_object(Bucket=BUCKET, Key=key("ds.lst"))
    backup(tmp_path / "ds", WHERE, options(), target)
    assert opened == ["ds.lst"]  # the others are in the bucket with the manifest's checksums: not read
