"""cleanup: only what our tag marks, only old enough, deleted only when asked; one failure does not stop the rest."""

from __future__ import annotations

import datetime as dt
from typing import Any, Iterator

import pytest

from recordio_pack.aws.cleanup import CleanupOptions, cleanup, find_leftovers
from recordio_pack.aws.ec2 import MANAGED_BY_KEY, tag_list
from recordio_pack.aws.session import AwsTarget
from recordio_pack.errors import UsageError

from ec2_helpers import StubTarget, moto_target

OURS = {MANAGED_BY_KEY: "recordio-pack", "Name": "recordio-pack test"}


@pytest.fixture
def aws() -> Iterator[AwsTarget]:
    yield from moto_target()


def volume(target: AwsTarget, tags: dict[str, str] | None) -> str:
    spec = [{"ResourceType": "volume", "Tags": tag_list(tags)}] if tags else []
    return target.client("ec2").create_volume(AvailabilityZone="us-east-1a", Size=4, TagSpecifications=spec)["VolumeId"]


def snapshot(target: AwsTarget, tags: dict[str, str] | None) -> str:
    spec = [{"ResourceType": "snapshot", "Tags": tag_list(tags)}] if tags else []
    return target.client("ec2").create_snapshot(VolumeId=volume(target, None), TagSpecifications=spec)["SnapshotId"]


@pytest.fixture
def leftovers(aws: AwsTarget) -> dict[str, Any]:
    ec2 = aws.client("ec2")
    ours_free = volume(aws, OURS)
    ours_attached = volume(aws, OURS)
    instance = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1,
                                 Placement={"AvailabilityZone": "us-east-1a"})["Instances"][0]["InstanceId"]
    ec2.attach_volume(VolumeId=ours_attached, InstanceId=instance, Device="/dev/sdf")
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="cleanup-bucket")
    inside = s3.create_multipart_upload(Bucket="cleanup-bucket", Key="datasets/imagenet/train-00000.rec")
    outside = s3.create_multipart_upload(Bucket="cleanup-bucket", Key="other/file.bin")
    return {"volume": ours_free, "attached": ours_attached, "foreign_volume": volume(aws, {"Name": "not ours"}),
            "snapshot": snapshot(aws, OURS), "foreign_snapshot": snapshot(aws, {"team": "x"}),
            "upload": inside["UploadId"], "other_upload": outside["UploadId"]}


def later(days: float = 0, hours: float = 0) -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=days, hours=hours)


def test_lists_only_our_unattached_volumes_old_snapshots_and_uploads_under_the_prefix(
        aws: AwsTarget, leftovers: dict[str, Any]) -> None:
    options = CleanupOptions(older_than_days=30, bucket="cleanup-bucket", prefix="datasets/")
    items = find_leftovers(aws, options, now=later(days=31))
    assert [(item.kind, item.id) for item in items] == [
        ("volume", leftovers["volume"]), ("snapshot", leftovers["snapshot"]),
        ("multipart-upload", "s3://cleanup-bucket/datasets/imagenet/train-00000.rec")]
    assert all(item.state == "found" for item in items)


def test_default_is_list_only(aws: AwsTarget, leftovers: dict[str, Any]) -> None:
    result = cleanup(aws, CleanupOptions(older_than_days=0, volume_grace_hours=0, bucket="cleanup-bucket"),
                     now=later(hours=1))
    assert len(result.items) == 4 and not result.deleted  # 1 volume, 1 snapshot, 2 uploads (no prefix)
    ec2 = aws.client("ec2")
    assert ec2.describe_volumes(VolumeIds=[leftovers["volume"]])["Volumes"]
    assert ec2.describe_snapshots(SnapshotIds=[leftovers["snapshot"]])["Snapshots"]
    assert len(aws.client("s3").list_multipart_uploads(Bucket="cleanup-bucket")["Uploads"]) == 2


def test_ages_and_grace_periods(aws: AwsTarget, leftovers: dict[str, Any]) -> None:
    fresh = find_leftovers(aws, CleanupOptions(older_than_days=30), now=later(hours=0.5))
    assert [item.kind for item in fresh] == []  # volume within its 1 h grace (replicate may attach it)
    young = find_leftovers(aws, CleanupOptions(older_than_days=30), now=later(days=29))
    assert [item.kind for item in young] == ["volume"]  # snapshot too young
    older = find_leftovers(aws, CleanupOptions(older_than_days=30), now=later(days=30, hours=1))
    assert [item.kind for item in older] == ["volume", "snapshot"]


def test_delete_removes_exactly_what_was_listed(aws: AwsTarget, leftovers: dict[str, Any]) -> None:
    result = cleanup(aws, CleanupOptions(older_than_days=1, bucket="cleanup-bucket", prefix="datasets/", delete=True),
                     now=later(days=2))
    assert result.ok and [item.state for item in result.items] == ["deleted"] * 3
    ec2 = aws.client("ec2")
    remaining = {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
    assert leftovers["volume"] not in remaining
    assert {leftovers["attached"], leftovers["foreign_volume"]} <= remaining
    snapshots = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert leftovers["snapshot"] not in snapshots and leftovers["foreign_snapshot"] in snapshots
    uploads = aws.client("s3").list_multipart_uploads(Bucket="cleanup-bucket").get("Uploads", [])
    assert [upload["UploadId"] for upload in uploads] == [leftovers["other_upload"]]


def test_a_failed_delete_is_reported_and_the_rest_go_on() -> None:
    old = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
    with StubTarget() as target:
        stub = target.stubs["ec2"]
        stub.add_response("describe_volumes", {"Volumes": []})
        stub.add_response("describe_snapshots", {"Snapshots": [
            {"SnapshotId": f"snap-0{n}", "StartTime": old, "State": "completed", "VolumeSize": 1} for n in (1, 2)]},
            {"OwnerIds": ["self"], "Filters": [{"Name": f"tag:{MANAGED_BY_KEY}", "Values": ["recordio-pack"]}]})
        stub.add_client_error("delete_snapshot", "InvalidSnapshot.InUse", "snap-01 is in use by ami-1",
                              expected_params={"SnapshotId": "snap-01"})
        stub.add_response("delete_snapshot", {}, {"SnapshotId": "snap-02"})
        result = cleanup(target, CleanupOptions(delete=True))
        target.assert_done()
    assert [(item.id, item.state) for item in result.items] == [("snap-01", "failed"), ("snap-02", "deleted")]
    assert "InvalidSnapshot.InUse" in result.items[0].error and not result.ok


def test_option_validation() -> None:
    with pytest.raises(UsageError, match="--prefix needs --bucket"):
        CleanupOptions(prefix="x/")
    with pytest.raises(UsageError):
        CleanupOptions(older_than_days=-1)
