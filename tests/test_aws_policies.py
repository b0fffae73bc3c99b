"""The shipped IAM policies allow every API action our code calls (recorded under moto), and nothing broad.

Conditions and resource ARNs cannot be evaluated offline; this test checks actions (with IAM's wildcards),
which is where a missing permission breaks a run.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
from importlib import resources
from typing import Any, Iterator
from unittest import mock

import boto3
import pytest
from moto import mock_aws

from recordio_pack.aws.cleanup import CleanupOptions, cleanup
from recordio_pack.aws.ec2 import MANAGED_BY_KEY, Waiting, tag_list
from recordio_pack.aws.replicate import ReplicateOptions, replicate
from recordio_pack.aws.session import AwsTarget
from recordio_pack.aws.snapshot import SnapshotOptions, create_dataset_snapshot

from ec2_helpers import fast_session

POLICY_NAMES = ("packing-instance", "operator", "gpu-instance-boot")
INSTANT = Waiting(poll_seconds=0, sleep=lambda seconds: None)

# S3 operations whose IAM action is not "s3:<OperationName>" (per the S3 authorization reference).
S3_ACTIONS: dict[str, tuple[str, ...]] = {
    "HeadBucket": ("s3:ListBucket",),
    "ListObjects": ("s3:ListBucket",),
    "ListObjectsV2": ("s3:ListBucket",),
    "HeadObject": ("s3:GetObject",),
    "GetObject": ("s3:GetObject",),
    "GetObjectAttributes": ("s3:GetObject", "s3:GetObjectAttributes"),
    "PutObject": ("s3:PutObject",),
    "CopyObject": ("s3:GetObject", "s3:PutObject"),
    "CreateMultipartUpload": ("s3:PutObject",),
    "UploadPart": ("s3:PutObject",),
    "UploadPartCopy": ("s3:GetObject", "s3:PutObject"),
    "CompleteMultipartUpload": ("s3:PutObject",),
    "AbortMultipartUpload": ("s3:AbortMultipartUpload",),
    "ListParts": ("s3:ListMultipartUploadParts",),
    "ListMultipartUploads": ("s3:ListBucketMultipartUploads",),
    "GetBucketLocation": ("s3:GetBucketLocation",),
    "DeleteObject": ("s3:DeleteObject",),
    "DeleteObjects": ("s3:DeleteObject",),  # the batch call is authorised per object
}


def load_policy(name: str) -> dict[str, Any]:
    text = (resources.files("recordio_pack.aws") / "policies" / f"{name}.json").read_text(encoding="utf-8")
    return json.loads(text)


def _listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def allows(policy: dict[str, Any], action: str) -> bool:
    """True when an Allow statement's Action matches ``action`` (IAM: case-insensitive, * and ? wildcards) and no
    Deny statement does."""
    def matches(statement: dict[str, Any]) -> bool:
        return any(fnmatch.fnmatchcase(action.lower(), pattern.lower())
                   for pattern in _listed(statement.get("Action", [])))

    statements = policy["Statement"]
    return (any(s["Effect"] == "Allow" and matches(s) for s in statements)
            and not any(s["Effect"] == "Deny" and matches(s) for s in statements))


def iam_actions(service: str, operation: str, params: dict[str, Any]) -> list[str]:
    """The IAM actions one API call needs."""
    if service == "s3":
        assert operation in S3_ACTIONS, f"add the IAM action(s) of s3 {operation} to S3_ACTIONS"
        actions = list(S3_ACTIONS[operation])
    else:
        actions = [f"{service}:{operation}"]
    if params.get("TagSpecifications"):  # tag-on-create is authorized as ec2:CreateTags too
        actions.append(f"{service}:CreateTags")
    return actions


class Recorder:
    """Records the IAM actions of every call made through a boto3 session's clients."""

    def __init__(self, session: boto3.Session) -> None:
        self.actions: set[str] = set()
        self.calls: list[str] = []
        session.events.register("provide-client-params.*.*", self._record)

    def _record(self, params: dict[str, Any], model: Any, **kwargs: Any) -> None:
        service = model.service_model.signing_name
        self.calls.append(f"{service}:{model.name}")
        self.actions.update(iam_actions(service, model.name, params))

    def reset(self) -> None:
        self.actions.clear()
        self.calls.clear()


@pytest.fixture
def recorded() -> Iterator[tuple[AwsTarget, Recorder, AwsTarget]]:
    """(recorded target, its recorder, unrecorded target for setting the stage)."""
    with mock.patch.dict(os.environ, {"MOTO_EC2_LOAD_DEFAULT_AMIS": "false"}), mock_aws():
        session = fast_session()
        setup = AwsTarget(region="us-east-1", _session=fast_session())
        yield AwsTarget(region="us-east-1", _session=session), Recorder(session), setup


def assert_allowed(policy_name: str, actions: set[str], unused_ok: frozenset[str] = frozenset()) -> None:
    """Every recorded action is allowed, and (least privilege) every action the policy lists was used, but for
    ``unused_ok``."""
    policy = load_policy(policy_name)
    missing = sorted(action for action in actions if not allows(policy, action))
    assert not missing, f"{policy_name}.json does not allow {missing}"
    listed = {action for statement in policy["Statement"] if statement["Effect"] == "Allow"
              for action in _listed(statement["Action"])}
    unused = sorted(listed - actions - unused_ok)
    assert not unused, f"{policy_name}.json grants {unused}, which no recorded flow used"


def test_policies_are_well_formed_and_never_broad() -> None:
    for name in POLICY_NAMES:
        policy = load_policy(name)
        assert policy["Version"] == "2012-10-17"
        sids = [statement["Sid"] for statement in policy["Statement"]]
        assert len(sids) == len(set(sids))
        for statement in policy["Statement"]:
            assert statement["Effect"] in ("Allow", "Deny") and "NotAction" not in statement
            assert "Resource" in statement and "NotResource" not in statement
            for action in _listed(statement["Action"]):
                assert re.fullmatch(r"[a-z0-9]+:[A-Za-z]+\*?", action), f"{name}: {action} is too broad"
            if statement["Effect"] == "Allow" and any(a.startswith("ec2:") and not a.startswith("ec2:Describe")
                                                      for a in _listed(statement["Action"])):
                assert statement["Resource"] != "*", f"{name}/{statement['Sid']}: EC2 writes need scoped resources"


def test_matcher() -> None:
    policy = {"Statement": [{"Effect": "Allow", "Action": ["ec2:Describe*", "s3:GetObject"], "Resource": "*"},
                            {"Effect": "Deny", "Action": "ec2:DescribeImages", "Resource": "*"}]}
    assert allows(policy, "ec2:DescribeVolumes") and allows(policy, "S3:getobject")
    assert not allows(policy, "ec2:DescribeImages") and not allows(policy, "s3:PutObject")
    assert not allows(policy, "ec2:CreateVolume")


def _stage_replicate(setup: AwsTarget) -> tuple[str, str]:
    ec2 = setup.client("ec2")
    volume = ec2.create_volume(AvailabilityZone="us-east-1a", Size=8)["VolumeId"]
    snapshot = ec2.create_snapshot(VolumeId=volume, TagSpecifications=[
        {"ResourceType": "snapshot", "Tags": tag_list({MANAGED_BY_KEY: "recordio-pack"})}])["SnapshotId"]
    instance = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1,
                                 Placement={"AvailabilityZone": "us-east-1b"})["Instances"][0]["InstanceId"]
    return snapshot, instance


def test_replicate_and_cleanup_need_only_the_operator_policy(recorded: tuple[AwsTarget, Recorder, AwsTarget]) -> None:
    target, recorder, setup = recorded
    snapshot, instance = _stage_replicate(setup)
    assert replicate(target, ReplicateOptions(snapshot, instance_ids=(instance,)), INSTANT).ok
    assert {"ec2:CreateVolume", "ec2:AttachVolume", "ec2:ModifyInstanceAttribute", "ec2:CreateTags"} <= recorder.actions
    spare = setup.client("ec2").create_volume(AvailabilityZone="us-east-1a", Size=1, TagSpecifications=[
        {"ResourceType": "volume", "Tags": tag_list({MANAGED_BY_KEY: "recordio-pack"})}])["VolumeId"]
    setup.client("ec2").create_snapshot(VolumeId=spare, TagSpecifications=[  # no volume made from it: deletable
        {"ResourceType": "snapshot", "Tags": tag_list({MANAGED_BY_KEY: "recordio-pack"})}])
    setup.client("ec2").create_launch_template(LaunchTemplateName="fleet", LaunchTemplateData={})  # versions are read
    setup.client("s3").create_bucket(Bucket="policy-bucket")
    setup.client("s3").create_multipart_upload(Bucket="policy-bucket", Key="data/x.rec")
    result = cleanup(target, CleanupOptions(older_than_days=0, volume_grace_hours=0, bucket="policy-bucket",
                                            prefix="data/", delete=True, keep_latest=0))
    assert result.ok and {item.kind for item in result.items} == {"volume", "snapshot", "multipart-upload"}
    assert {"ec2:DeleteVolume", "ec2:DeleteSnapshot", "s3:AbortMultipartUpload"} <= recorder.actions
    # what cleanup reads to know a snapshot is still in use before it may delete it
    assert {"ec2:DescribeImages", "ec2:DescribeLaunchTemplates",
            "ec2:DescribeLaunchTemplateVersions"} <= recorder.actions
    assert_allowed("operator", recorder.actions)


def test_replicating_onto_itself_needs_only_the_gpu_boot_policy(recorded: tuple[AwsTarget, Recorder, AwsTarget]) -> None:
    target, recorder, setup = recorded
    snapshot, instance = _stage_replicate(setup)
    assert replicate(target, ReplicateOptions(snapshot, instance_ids=(instance,)), INSTANT).ok
    assert_allowed("gpu-instance-boot", recorder.actions)
    policy = load_policy("gpu-instance-boot")
    assert not any(allows(policy, action) for action in ("ec2:DeleteVolume", "ec2:DeleteSnapshot", "s3:GetObject",
                                                         "ec2:CreateSnapshot", "ec2:DetachVolume"))



def _leftover_upload(s3: Any, key: str, data: bytes, part: int) -> None:
    """What a killed backup leaves: a full-object CRC32 multipart upload with its first part in S3."""
    upload = s3.create_multipart_upload(Bucket="policy-backup", Key=key, ChecksumAlgorithm="CRC32",
                                        ChecksumType="FULL_OBJECT", ServerSideEncryption="AES256",
                                        Metadata={"sha256": hashlib.sha256(data).hexdigest()})["UploadId"]
    s3.upload_part(Bucket="policy-backup", Key=key, UploadId=upload, PartNumber=1, Body=data[:part],
                   ChecksumAlgorithm="CRC32")


def test_packing_instance_policy_covers_snapshot_backup_and_restore(
        recorded: tuple[AwsTarget, Recorder, AwsTarget], tmp_path: Any) -> None:
    """The packing instance's whole job: snapshot (copy, share, encrypted so the KMS check runs), then backup
    (aws/backup.py, continuing one killed upload and aborting another) and restore (aws/restore.py)."""
    from recordio_pack.aws.backup import BackupOptions, backup
    from recordio_pack.aws.restore import RestoreOptions, restore
    from recordio_pack.aws.s3 import TransferOptions, parse_s3_uri

    from s3_helpers import PART, write_dataset

    target, recorder, setup = recorded
    volume = setup.client("ec2").create_volume(AvailabilityZone="us-east-1a", Size=8, Encrypted=True)["VolumeId"]
    create_dataset_snapshot(target, SnapshotOptions(volume, dataset="d", copy_to_regions=("eu-west-1",),
                                                    share_with=("111122223333",)), INSTANT, sync=lambda: None)
    assert {"ec2:CreateSnapshot", "ec2:CopySnapshot", "ec2:ModifySnapshotAttribute", "ec2:CreateTags",
            "kms:DescribeKey"} <= recorder.actions

    s3 = setup.client("s3")
    s3.create_bucket(Bucket="policy-backup")
    write_dataset(tmp_path / "ds", sizes={"ds-00000-of-00001.rec": 2 * PART + 10, "ds-00000-of-00001.idx": 20,
                                          "ds.lst": 100})
    data = (tmp_path / "ds" / "ds-00000-of-00001.rec").read_bytes()
    _leftover_upload(s3, "v1/ds-00000-of-00001.rec", data, PART)  # continued
    _leftover_upload(s3, "v1/ds.lst", bytes(PART), PART)  # another version: aborted
    transfer = TransferOptions(part_size=PART, concurrency=2)
    location = parse_s3_uri("s3://policy-backup/v1")
    result = backup(tmp_path / "ds", location, BackupOptions(transfer=transfer), target)
    assert result.reused_parts == 1 and result.aborted
    restore(location, tmp_path / "copy", RestoreOptions(transfer=transfer), target)
    assert (tmp_path / "copy" / "ds-00000-of-00001.rec").read_bytes() == data
    # another version replacing this one (backup --overwrite): the old version's objects are deleted at the end
    write_dataset(tmp_path / "ds2", sizes={"ds-00000-of-00002.rec": 30, "ds-00000-of-00002.idx": 10,
                                           "ds-00001-of-00002.rec": 30, "ds-00001-of-00002.idx": 10}, seed=7)
    backup(tmp_path / "ds2", location, BackupOptions(transfer=transfer, overwrite=True), target)
    assert {"s3:PutObject", "s3:GetObject", "s3:ListBucket", "s3:ListBucketMultipartUploads",
            "s3:ListMultipartUploadParts", "s3:AbortMultipartUpload", "s3:DeleteObject"} <= recorder.actions
    # SSE-KMS (backup --sse aws:kms) is the one path moto cannot show: S3 asks KMS for data keys on our behalf.
    assert_allowed("packing-instance", recorder.actions, unused_ok=frozenset({"kms:GenerateDataKey", "kms:Decrypt"}))
    assert not allows(load_policy("packing-instance"), "ec2:DeleteSnapshot")  # it cannot destroy what it made
