"""cleanup: only what our tag marks, only old enough, deleted only when asked; one failure does not stop the rest."""

from __future__ import annotations

import datetime as dt
from typing import Any, Iterator

import pytest

from recordio_pack.aws.cleanup import CleanupOptions, cleanup, find_leftovers, newest_per_dataset, s3_folder
from recordio_pack.aws.ec2 import MANAGED_BY_KEY, tag_list
from recordio_pack.aws.session import AwsError, AwsTarget
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
    options = CleanupOptions(older_than_days=30, bucket="cleanup-bucket", prefix="datasets/", keep_latest=0)
    items = find_leftovers(aws, options, now=later(days=31))
    assert [(item.kind, item.id) for item in items] == [
        ("volume", leftovers["volume"]), ("snapshot", leftovers["snapshot"]),
        ("multipart-upload", "s3://cleanup-bucket/datasets/imagenet/train-00000.rec")]
    assert all(item.state == "found" for item in items)


def test_default_is_list_only(aws: AwsTarget, leftovers: dict[str, Any]) -> None:
    result = cleanup(aws, CleanupOptions(older_than_days=0, volume_grace_hours=0, bucket="cleanup-bucket",
                                         keep_latest=0), now=later(hours=1))
    assert len(result.items) == 4 and not result.deleted  # 1 volume, 1 snapshot, 2 uploads (no prefix)
    ec2 = aws.client("ec2")
    assert ec2.describe_volumes(VolumeIds=[leftovers["volume"]])["Volumes"]
    assert ec2.describe_snapshots(SnapshotIds=[leftovers["snapshot"]])["Snapshots"]
    assert len(aws.client("s3").list_multipart_uploads(Bucket="cleanup-bucket")["Uploads"]) == 2


def test_ages_and_grace_periods(aws: AwsTarget, leftovers: dict[str, Any]) -> None:
    fresh = find_leftovers(aws, CleanupOptions(older_than_days=30, keep_latest=0), now=later(hours=0.5))
    assert [item.kind for item in fresh] == []  # volume within its 1 h grace (replicate may attach it)
    young = find_leftovers(aws, CleanupOptions(older_than_days=30, keep_latest=0), now=later(days=29))
    assert [item.kind for item in young] == ["volume"]  # snapshot too young
    older = find_leftovers(aws, CleanupOptions(older_than_days=30, keep_latest=0), now=later(days=30, hours=1))
    assert [item.kind for item in older] == ["volume", "snapshot"]


def test_delete_removes_exactly_what_was_listed(aws: AwsTarget, leftovers: dict[str, Any]) -> None:
    result = cleanup(aws, CleanupOptions(older_than_days=1, bucket="cleanup-bucket", prefix="datasets/", delete=True,
                                         keep_latest=0), now=later(days=2))
    assert result.ok and [item.state for item in result.items] == ["deleted"] * 3
    ec2 = aws.client("ec2")
    remaining = {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
    assert leftovers["volume"] not in remaining
    assert {leftovers["attached"], leftovers["foreign_volume"]} <= remaining
    snapshots = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert leftovers["snapshot"] not in snapshots and leftovers["foreign_snapshot"] in snapshots
    uploads = aws.client("s3").list_multipart_uploads(Bucket="cleanup-bucket").get("Uploads", [])
    assert [upload["UploadId"] for upload in uploads] == [leftovers["other_upload"]]


OURS_FILTER = [{"Name": f"tag:{MANAGED_BY_KEY}", "Values": ["recordio-pack"]}]


def expect_references(stub: Any, snapshot_ids: list[str], volumes: list[dict[str, Any]] = (),
                      images: list[dict[str, Any]] = (), instances: list[dict[str, Any]] = ()) -> None:
    """The look-ups cleanup makes before it may delete any of ``snapshot_ids``."""
    stub.add_response("describe_volumes", {"Volumes": list(volumes)},
                      {"Filters": [{"Name": "snapshot-id", "Values": sorted(snapshot_ids)}]})
    stub.add_response("describe_images", {"Images": list(images)},
                      {"Owners": ["self"], "IncludeDeprecated": True, "IncludeDisabled": True})
    stub.add_response("describe_launch_templates", {"LaunchTemplates": []})
    stub.add_response("describe_instances", {"Reservations": [{"Instances": list(instances)}] if instances else []},
                      {"Filters": [{"Name": "instance-state-name",
                                    "Values": ["pending", "running", "shutting-down", "stopping", "stopped"]}]})


def test_a_failed_delete_is_reported_and_the_rest_go_on() -> None:
    old = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
    with StubTarget() as target:
        stub = target.stubs["ec2"]
        stub.add_response("describe_volumes", {"Volumes": []})
        stub.add_response("describe_snapshots", {"Snapshots": [
            {"SnapshotId": f"snap-0{n}", "StartTime": old, "State": "completed", "VolumeSize": 1} for n in (1, 2)]},
            {"OwnerIds": ["self"], "Filters": OURS_FILTER})
        expect_references(stub, ["snap-01", "snap-02"])
        stub.add_client_error("delete_snapshot", "InvalidSnapshot.InUse", "snap-01 is in use by ami-1",
                              expected_params={"SnapshotId": "snap-01"})
        stub.add_response("delete_snapshot", {}, {"SnapshotId": "snap-02"})
        result = cleanup(target, CleanupOptions(delete=True, keep_latest=0))
        target.assert_done()
    assert [(item.id, item.state) for item in result.items] == [("snap-01", "failed"), ("snap-02", "deleted")]
    assert "InvalidSnapshot.InUse" in result.items[0].error and not result.ok


# ---- snapshots still in use, or the newest of their dataset, are never deleted ------------------------------

def test_snapshots_that_volumes_templates_or_instance_tags_refer_to_are_kept(aws: AwsTarget) -> None:
    ec2 = aws.client("ec2")
    by_volume, by_attached, by_template, by_tag, unused = (snapshot(aws, OURS) for _ in range(5))
    ec2.create_volume(AvailabilityZone="us-east-1a", SnapshotId=by_volume)  # "available", not ours: still a user
    in_use = ec2.create_volume(AvailabilityZone="us-east-1a", SnapshotId=by_attached)["VolumeId"]
    instance = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1,
                                 Placement={"AvailabilityZone": "us-east-1a"}, TagSpecifications=[
                                     {"ResourceType": "instance", "Tags": tag_list(
                                         {"recordio-pack:dataset-snapshot": by_tag})}])["Instances"][0]["InstanceId"]
    ec2.attach_volume(VolumeId=in_use, InstanceId=instance, Device="/dev/sdf")
    ec2.create_launch_template(LaunchTemplateName="gpu-fleet", LaunchTemplateData={"BlockDeviceMappings": [
        {"DeviceName": "/dev/sdf", "Ebs": {"SnapshotId": by_template}}]})
    result = cleanup(aws, CleanupOptions(older_than_days=1, delete=True, keep_latest=0), now=later(days=2))
    states = {item.id: (item.state, item.kept_because) for item in result.items if item.kind == "snapshot"}
    assert states[unused] == ("deleted", [])
    assert states[by_volume][0] == states[by_attached][0] == states[by_template][0] == states[by_tag][0] == "kept"
    assert "(available) was made from it" in states[by_volume][1][0]
    assert states[by_attached][1] == [f"volume {in_use} (in-use) was made from it"]
    assert states[by_template][1] == ["launch template gpu-fleet version 1 maps it at /dev/sdf"]
    assert states[by_tag][1] == [f"instance {instance} names it in tag recordio-pack:dataset-snapshot"]
    remaining = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert {by_volume, by_attached, by_template, by_tag} <= remaining and unused not in remaining


def _ours_snapshot(snapshot_id: str, day: int, dataset: str | None) -> dict[str, Any]:
    tags = {**OURS, **({"recordio-pack:dataset": dataset} if dataset else {})}
    return {"SnapshotId": snapshot_id, "VolumeId": "vol-0aaaaaaaaaaaaaaaa", "State": "completed", "VolumeSize": 1,
            "StartTime": dt.datetime(2020, 1, day, tzinfo=dt.timezone.utc), "Tags": tag_list(tags)}


def test_an_ami_mapping_keeps_its_snapshot_and_the_newest_of_each_dataset_is_kept() -> None:
    """Stubber: moto's RegisterImage makes a snapshot of its own instead of mapping the one given."""
    snapshots = [_ours_snapshot("snap-0a1", 1, "imagenet"), _ours_snapshot("snap-0a2", 2, "imagenet"),
                 _ours_snapshot("snap-0a3", 3, "imagenet"), _ours_snapshot("snap-0b1", 1, "places"),
                 _ours_snapshot("snap-0c1", 1, None)]
    image = {"ImageId": "ami-0123456789abcdef0", "BlockDeviceMappings": [
        {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": "snap-0a1"}}]}
    with StubTarget() as target:
        stub = target.stubs["ec2"]
        stub.add_response("describe_volumes", {"Volumes": []})
        stub.add_response("describe_snapshots", {"Snapshots": snapshots},
                          {"OwnerIds": ["self"], "Filters": OURS_FILTER})
        expect_references(stub, [s["SnapshotId"] for s in snapshots], images=[image])
        stub.add_response("delete_snapshot", {}, {"SnapshotId": "snap-0a2"})  # the only one neither used nor newest
        result = cleanup(target, CleanupOptions(delete=True))
        target.assert_done()
    states = {item.id: (item.state, item.kept_because) for item in result.items}
    assert states["snap-0a1"] == ("kept", ["image ami-0123456789abcdef0 maps it at /dev/xvda"])
    assert states["snap-0a2"] == ("deleted", [])
    assert states["snap-0a3"] == ("kept", ["the newest snapshot of dataset imagenet"])
    assert states["snap-0b1"] == ("kept", ["the newest snapshot of dataset places"])
    assert states["snap-0c1"] == ("kept", ["the newest snapshot of volume vol-0aaaaaaaaaaaaaaaa"])
    assert result.ok and [item.id for item in result.kept] == ["snap-0a1", "snap-0b1", "snap-0c1", "snap-0a3"]


def test_keep_latest_counts_per_dataset() -> None:
    snapshots = [_ours_snapshot(f"snap-0{day}", day, "imagenet") for day in (1, 2, 3)]
    assert newest_per_dataset(snapshots, 0) == {}
    assert newest_per_dataset(snapshots, 2) == {"snap-03": "one of the 2 newest snapshots of dataset imagenet",
                                                "snap-02": "one of the 2 newest snapshots of dataset imagenet"}
    failed = {**_ours_snapshot("snap-04", 4, "imagenet"), "State": "error"}  # newest, but no use to anyone
    assert newest_per_dataset([*snapshots, failed], 1) == {"snap-03": "the newest snapshot of dataset imagenet"}


def test_a_failed_reference_look_up_deletes_nothing() -> None:
    old = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
    with StubTarget() as target:
        stub = target.stubs["ec2"]
        stub.add_response("describe_volumes", {"Volumes": []})
        stub.add_response("describe_snapshots", {"Snapshots": [{"SnapshotId": "snap-01", "StartTime": old}]})
        stub.add_response("describe_volumes", {"Volumes": []})
        stub.add_client_error("describe_images", "UnauthorizedOperation", "not allowed", http_status_code=403)
        with pytest.raises(AwsError, match="listing this account's AMIs: access denied for DescribeImages"):
            cleanup(target, CleanupOptions(delete=True, keep_latest=0))
        target.assert_done()  # and no delete_snapshot was stubbed: Stubber would have failed on one


def test_prefix_is_a_folder(aws: AwsTarget) -> None:
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="folder-bucket")
    for key in ("data/a.rec", "data-old/b.rec", "database.rec"):
        s3.create_multipart_upload(Bucket="folder-bucket", Key=key)
    for prefix in ("data", "data/", "/data/"):
        items = find_leftovers(aws, CleanupOptions(bucket="folder-bucket", prefix=prefix, upload_grace_hours=0))
        assert [item.id for item in items] == ["s3://folder-bucket/data/a.rec"], prefix
    assert (s3_folder(""), s3_folder("/"), s3_folder("a/b")) == ("", "", "a/b/")


def test_option_validation() -> None:
    with pytest.raises(UsageError, match="a prefix needs a bucket"):
        CleanupOptions(prefix="x/")
    with pytest.raises(UsageError):
        CleanupOptions(older_than_days=-1)
    with pytest.raises(UsageError, match="must not be negative"):
        CleanupOptions(keep_latest=-1)
