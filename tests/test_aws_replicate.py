"""replicate: per-instance volumes under moto; same-AZ by construction and attachment waits with Stubber."""

from __future__ import annotations

import datetime as dt
from typing import Any, Iterator

import pytest
from botocore.stub import ANY

from recordio_pack.aws.ec2 import MANAGED_BY_KEY, Waiting, free_device_name, tag_list, tags_of
from recordio_pack.aws.replicate import ReplicateOptions, parse_filter, replicate
from recordio_pack.aws.session import AwsError, AwsTarget
from recordio_pack.errors import RecordioPackError, UsageError
from recordio_pack.progress import Polled, RecordingProgress

from ec2_helpers import StubTarget, moto_target

INSTANT = Waiting(poll_seconds=0, sleep=lambda seconds: None)


@pytest.fixture
def aws() -> Iterator[AwsTarget]:
    yield from moto_target()


def launch(target: AwsTarget, zone: str, role: str) -> str:
    ec2 = target.client("ec2")
    return ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="p4d.24xlarge",
                             Placement={"AvailabilityZone": zone},
                             TagSpecifications=[{"ResourceType": "instance", "Tags": tag_list({"role": role})}]
                             )["Instances"][0]["InstanceId"]


def dataset_snapshot(target: AwsTarget) -> str:
    ec2 = target.client("ec2")
    volume = ec2.create_volume(AvailabilityZone="us-east-1a", Size=20)["VolumeId"]
    return ec2.create_snapshot(VolumeId=volume, TagSpecifications=[{"ResourceType": "snapshot", "Tags": tag_list(
        {"Name": "imagenet rec", MANAGED_BY_KEY: "recordio-pack", "recordio-pack:dataset": "imagenet"})}]
                               )["SnapshotId"]


def volumes_from(target: AwsTarget, snapshot_id: str) -> list[dict[str, Any]]:
    return target.client("ec2").describe_volumes(
        Filters=[{"Name": "snapshot-id", "Values": [snapshot_id]}])["Volumes"]


def test_each_instance_gets_a_volume_in_its_own_zone(aws: AwsTarget) -> None:
    snapshot = dataset_snapshot(aws)
    first, second = launch(aws, "us-east-1b", "gpu"), launch(aws, "us-east-1c", "gpu")
    launch(aws, "us-east-1a", "cpu")
    stopped = launch(aws, "us-east-1a", "gpu")
    aws.client("ec2").stop_instances(InstanceIds=[stopped])
    result = replicate(aws, ReplicateOptions(snapshot, filters=(parse_filter("tag:role=gpu"),), iops=4000,
                                             throughput=250), INSTANT)
    assert result.ok
    rows = {row.instance_id: row for row in result.placements}
    assert sorted(rows) == sorted([first, second])  # the stopped and the cpu instance are not selected
    for instance_id, zone in ((first, "us-east-1b"), (second, "us-east-1c")):
        row = rows[instance_id]
        assert (row.availability_zone, row.device, row.state, row.delete_on_termination) == (
            zone, "/dev/sdf", "attached", True)
        volume = aws.client("ec2").describe_volumes(VolumeIds=[row.volume_id])["Volumes"][0]
        assert volume["AvailabilityZone"] == zone and volume["SnapshotId"] == snapshot
        assert (volume["VolumeType"], volume["Iops"], volume["Throughput"], volume["Size"]) == ("gp3", 4000, 250, 20)
        assert volume["Attachments"][0]["InstanceId"] == instance_id
        tags = tags_of(volume)
        assert tags[MANAGED_BY_KEY] == "recordio-pack" and tags["recordio-pack:target-instance"] == instance_id
        assert tags["recordio-pack:source-snapshot"] == snapshot and tags["recordio-pack:dataset"] == "imagenet"
        assert tags["Name"] == "imagenet rec"
        instance = aws.client("ec2").describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
        mapping = {m["DeviceName"]: m["Ebs"] for m in instance["BlockDeviceMappings"]}
        assert mapping["/dev/sdf"]["VolumeId"] == row.volume_id and mapping["/dev/sdf"]["DeleteOnTermination"]


def test_rerun_skips_instances_that_already_have_the_volume(aws: AwsTarget) -> None:
    snapshot = dataset_snapshot(aws)
    instance = launch(aws, "us-east-1b", "gpu")
    first = replicate(aws, ReplicateOptions(snapshot, instance_ids=(instance,)), INSTANT)
    again = replicate(aws, ReplicateOptions(snapshot, instance_ids=(instance,)), INSTANT)
    assert again.placements[0].state == "already-attached"
    assert again.placements[0].volume_id == first.placements[0].volume_id
    assert len(volumes_from(aws, snapshot)) == 1


def test_a_volume_left_by_an_interrupted_run_is_attached_not_duplicated(aws: AwsTarget) -> None:
    snapshot = dataset_snapshot(aws)
    instance = launch(aws, "us-east-1b", "gpu")
    leftover = aws.client("ec2").create_volume(
        AvailabilityZone="us-east-1b", SnapshotId=snapshot, TagSpecifications=[{"ResourceType": "volume", "Tags": tag_list(
            {MANAGED_BY_KEY: "recordio-pack", "recordio-pack:target-instance": instance})}])["VolumeId"]
    result = replicate(aws, ReplicateOptions(snapshot, instance_ids=(instance,)), INSTANT)
    assert result.placements[0].volume_id == leftover and result.placements[0].state == "attached"
    assert len(volumes_from(aws, snapshot)) == 1


def test_keep_leaves_delete_on_termination_alone(aws: AwsTarget) -> None:
    snapshot = dataset_snapshot(aws)
    instance = launch(aws, "us-east-1b", "gpu")
    calls: list[str] = []
    aws.session().events.register("before-parameter-build.ec2.*", lambda model, **kwargs: calls.append(model.name))
    result = replicate(aws, ReplicateOptions(snapshot, instance_ids=(instance,), keep=True), INSTANT)
    assert result.placements[0].state == "attached" and result.placements[0].delete_on_termination is False
    assert "AttachVolume" in calls and "ModifyInstanceAttribute" not in calls


def test_dry_run_changes_nothing(aws: AwsTarget) -> None:
    snapshot = dataset_snapshot(aws)
    instance = launch(aws, "us-east-1b", "gpu")
    result = replicate(aws, ReplicateOptions(snapshot, instance_ids=(instance,), dry_run=True), INSTANT)
    assert [(row.state, row.availability_zone) for row in result.placements] == [("would-create", "us-east-1b")]
    assert volumes_from(aws, snapshot) == []


def test_stopped_instance_named_by_id_is_skipped(aws: AwsTarget) -> None:
    snapshot = dataset_snapshot(aws)
    instance = launch(aws, "us-east-1b", "gpu")
    aws.client("ec2").stop_instances(InstanceIds=[instance])
    result = replicate(aws, ReplicateOptions(snapshot, instance_ids=(instance,)), INSTANT)
    assert result.placements[0].state == "skipped" and "stopp" in result.placements[0].detail
    assert volumes_from(aws, snapshot) == []


def test_no_matching_instance_and_small_size_are_errors(aws: AwsTarget) -> None:
    snapshot = dataset_snapshot(aws)
    with pytest.raises(RecordioPackError, match="no instance matches tag:role=nothing-here"):
        replicate(aws, ReplicateOptions(snapshot, filters=(("tag:role", ("nothing-here",)),)), INSTANT)
    with pytest.raises(UsageError, match="smaller than the snapshot"):
        replicate(aws, ReplicateOptions(snapshot, filters=(("tag:role", ("x",)),), size_gib=10), INSTANT)


def test_size_dependent_limits_are_checked_against_the_snapshot_size(aws: AwsTarget) -> None:
    """20 GiB snapshot: io1 allows 50 IOPS per GiB, so 1000 IOPS at most unless the volume is made bigger."""
    snapshot = dataset_snapshot(aws)
    instance = launch(aws, "us-east-1b", "gpu")
    with pytest.raises(UsageError, match="io1 IOPS 2000 is over 50 per GiB of a 20 GiB volume"):
        replicate(aws, ReplicateOptions(snapshot, instance_ids=(instance,), volume_type="io1", iops=2000), INSTANT)
    assert volumes_from(aws, snapshot) == []
    result = replicate(aws, ReplicateOptions(snapshot, instance_ids=(instance,), volume_type="io1", iops=2000,
                                             size_gib=40), INSTANT)
    assert result.ok and volumes_from(aws, snapshot)[0]["Iops"] == 2000


def test_option_validation() -> None:
    with pytest.raises(UsageError, match="either by id or by filter"):
        ReplicateOptions(SNAPSHOT)
    with pytest.raises(UsageError, match="gp3 volumes only"):
        ReplicateOptions(SNAPSHOT, instance_ids=(INSTANCE,), volume_type="gp2", throughput=500)
    with pytest.raises(UsageError, match="not an EC2 snapshot id: 'snap-0123'"):
        ReplicateOptions("snap-0123", instance_ids=(INSTANCE,))
    with pytest.raises(UsageError, match="not an EC2 instance id: 'i-1'"):
        ReplicateOptions(SNAPSHOT, instance_ids=(INSTANCE, "i-1"))
    with pytest.raises(UsageError, match="gp3 IOPS must be 3000-80000, not 100000"):
        ReplicateOptions(SNAPSHOT, instance_ids=(INSTANCE,), iops=100000)
    with pytest.raises(UsageError, match="io1 volumes need an IOPS value"):
        ReplicateOptions(SNAPSHOT, instance_ids=(INSTANCE,), volume_type="io1")
    ReplicateOptions(SNAPSHOT, instance_ids=(INSTANCE,), volume_type="io2", iops=256000)
    with pytest.raises(UsageError, match="an instance filter is NAME=VALUE"):
        parse_filter("tag:role")
    assert parse_filter("instance-type=p4d.24xlarge,p5.48xlarge") == ("instance-type", ("p4d.24xlarge", "p5.48xlarge"))


def test_free_device_names() -> None:
    assert free_device_name(["/dev/xvda", "/dev/sda1"]) == "/dev/sdf"
    assert free_device_name(["/dev/sda1", "/dev/xvdf", "sdg", "/dev/sdh1"]) == "/dev/sdi"
    with pytest.raises(AwsError, match="no free device name"):
        free_device_name([f"/dev/sd{letter}" for letter in "fghijklmnop"])


# ---- Stubber: what moto accepts but AWS would not, and the attaching -> attached sequence ----------------------

SNAPSHOT = "snap-0aaaaaaaaaaaaaaaa"
INSTANCE = "i-0bbbbbbbbbbbbbbbb"
VOLUME = "vol-0cccccccccccccccc"
NOW = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)


def volume(state: str, attachment: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"VolumeId": VOLUME, "State": state, "AvailabilityZone": "us-west-2c", "Size": 200,
                            "SnapshotId": SNAPSHOT, "CreateTime": NOW, "Attachments": []}
    if attachment:
        item["Attachments"] = [{"VolumeId": VOLUME, "InstanceId": INSTANCE, "Device": "/dev/sdg", "State": attachment,
                                "AttachTime": NOW, "DeleteOnTermination": False}]
    return {"Volumes": [item]}


def test_volume_is_created_in_the_instance_zone_and_attachment_is_awaited() -> None:
    target = StubTarget(region="us-west-2")
    stub = target.stubs["ec2"]
    stub.add_response("describe_snapshots", {"Snapshots": [{"SnapshotId": SNAPSHOT, "State": "completed",
                                                            "Progress": "100%", "VolumeSize": 200}]},
                      {"SnapshotIds": [SNAPSHOT]})
    stub.add_response("describe_instances", {"Reservations": [{"Instances": [{
        "InstanceId": INSTANCE, "State": {"Name": "running", "Code": 16},
        "Placement": {"AvailabilityZone": "us-west-2c"}, "RootDeviceName": "/dev/xvda",
        "BlockDeviceMappings": [{"DeviceName": "/dev/xvda", "Ebs": {"VolumeId": "vol-0root"}},
                                {"DeviceName": "/dev/sdf", "Ebs": {"VolumeId": "vol-0other"}}]}]}]},
        {"InstanceIds": [INSTANCE]})
    stub.add_response("describe_volumes", {"Volumes": []},
                      {"Filters": [{"Name": "snapshot-id", "Values": [SNAPSHOT]}]})
    stub.add_response("create_volume", {"VolumeId": VOLUME, "State": "creating", "AvailabilityZone": "us-west-2c"},
                      {"AvailabilityZone": "us-west-2c", "SnapshotId": SNAPSHOT, "VolumeType": "gp3",
                       "TagSpecifications": ANY, "ClientToken": ANY})
    stub.add_client_error("describe_volumes", "InvalidVolume.NotFound", "not yet",
                          expected_params={"VolumeIds": [VOLUME]})
    stub.add_response("describe_volumes", volume("creating"), {"VolumeIds": [VOLUME]})
    stub.add_response("describe_volumes", volume("available"), {"VolumeIds": [VOLUME]})
    stub.add_response("attach_volume", {"VolumeId": VOLUME, "InstanceId": INSTANCE, "Device": "/dev/sdg",
                                        "State": "attaching"},
                      {"VolumeId": VOLUME, "InstanceId": INSTANCE, "Device": "/dev/sdg"})
    stub.add_response("describe_volumes", volume("in-use", "attaching"), {"VolumeIds": [VOLUME]})  # in-use, not done
    stub.add_response("describe_volumes", volume("in-use", "attaching"), {"VolumeIds": [VOLUME]})
    stub.add_response("describe_volumes", volume("in-use", "attached"), {"VolumeIds": [VOLUME]})
    stub.add_response("modify_instance_attribute", {}, {"InstanceId": INSTANCE, "BlockDeviceMappings": [
        {"DeviceName": "/dev/sdg", "Ebs": {"VolumeId": VOLUME, "DeleteOnTermination": True}}]})
    recorder = RecordingProgress()
    sent: list[dict[str, Any]] = []
    target.clients["ec2"].meta.events.register("before-parameter-build.ec2.CreateVolume", lambda params, **kw: sent.append(params))
    with target:
        result = replicate(target, ReplicateOptions(SNAPSHOT, instance_ids=(INSTANCE,)),
                           Waiting(poll_seconds=0, sleep=lambda s: None, progress=recorder))
        target.assert_done()
    row = result.placements[0]
    assert (row.availability_zone, row.volume_id, row.device, row.state) == ("us-west-2c", VOLUME, "/dev/sdg", "attached")
    events: list[Polled] = recorder.of(Polled)
    assert [event.state for event in events] == ["not-visible-yet", "creating", "available",
                                                 "attaching", "attaching", "attached"]
    token = sent[0]["ClientToken"]
    assert token.startswith("recordio-pack-") and len(token) <= 64


def test_failure_on_one_instance_does_not_stop_the_others() -> None:
    target = StubTarget(region="us-west-2")
    stub = target.stubs["ec2"]
    other = "i-0dddddddddddddddd"
    stub.add_response("describe_snapshots", {"Snapshots": [{"SnapshotId": SNAPSHOT, "State": "completed",
                                                            "VolumeSize": 10}]})
    instances = [{"InstanceId": iid, "State": {"Name": "running", "Code": 16}, "Placement": {"AvailabilityZone": zone},
                  "BlockDeviceMappings": []} for iid, zone in ((INSTANCE, "us-west-2a"), (other, "us-west-2b"))]
    stub.add_response("describe_instances", {"Reservations": [{"Instances": instances}]})
    stub.add_response("describe_volumes", {"Volumes": []})
    stub.add_client_error("create_volume", "VolumeLimitExceeded", "quota reached",
                          expected_params={"AvailabilityZone": "us-west-2a", "SnapshotId": SNAPSHOT, "VolumeType": "gp3",
                                           "TagSpecifications": ANY, "ClientToken": ANY})
    stub.add_response("create_volume", {"VolumeId": VOLUME}, {"AvailabilityZone": "us-west-2b", "SnapshotId": SNAPSHOT,
                                                              "VolumeType": "gp3", "TagSpecifications": ANY,
                                                              "ClientToken": ANY})
    stub.add_response("describe_volumes", volume("available"))
    stub.add_response("attach_volume", {"VolumeId": VOLUME, "State": "attaching"})
    attached = volume("in-use", "attached")
    attached["Volumes"][0]["Attachments"][0]["InstanceId"] = other
    stub.add_response("describe_volumes", attached)
    stub.add_response("modify_instance_attribute", {})
    with target:
        result = replicate(target, ReplicateOptions(SNAPSHOT, filters=(("tag:role", ("gpu",)),)), INSTANT)
        target.assert_done()
    states = {row.instance_id: (row.state, row.detail) for row in result.placements}
    assert states[INSTANCE][0] == "failed" and "VolumeLimitExceeded" in states[INSTANCE][1]
    assert states[other][0] == "attached" and not result.ok


def test_pending_snapshot_is_refused() -> None:
    target = StubTarget(region="us-west-2")
    target.stubs["ec2"].add_response("describe_snapshots", {"Snapshots": [{"SnapshotId": SNAPSHOT, "State": "pending",
                                                                   "Progress": "42%"}]})
    with target, pytest.raises(RecordioPackError, match="is pending \\(42%\\); wait until it is completed"):
        replicate(target, ReplicateOptions(SNAPSHOT, instance_ids=(INSTANCE,)), INSTANT)


def test_access_denied_is_one_readable_line_naming_the_action() -> None:
    target = StubTarget(region="us-west-2")
    encoded = "Encoded authorization failure message: " + "x" * 1500
    target.stubs["ec2"].add_client_error(
        "describe_snapshots", "UnauthorizedOperation",
        f"You are not authorized to perform this operation. {encoded}", http_status_code=403)
    with target, pytest.raises(AwsError) as raised:
        replicate(target, ReplicateOptions(SNAPSHOT, instance_ids=(INSTANCE,)), INSTANT)
    message = str(raised.value)
    assert message.startswith(f"describing snapshot {SNAPSHOT}: access denied for DescribeSnapshots")
    assert "xxxx" not in message and "decode-authorization-message" in message and "\n" not in message
