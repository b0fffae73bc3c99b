"""Launch instances that run our boot script (``run_instances`` with the rendered user-data).

IMDSv2 is required on the launched instances (the boot script uses tokens only); the instance profile
gives the script its credentials, so nothing secret travels in the user-data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from recordio_pack.aws.ebs_options import check_id
from recordio_pack.aws.ec2 import TAG_PREFIX, base_tags, tag_specification
from recordio_pack.aws.session import AwsTarget, aws_errors
from recordio_pack.errors import UsageError

__all__ = ["LaunchOptions", "LaunchResult", "launch_instances"]

SNAPSHOT_TAG = TAG_PREFIX + "dataset-snapshot"


@dataclass(frozen=True)
class LaunchOptions:
    """``count`` identical instances of ``instance_type`` from ``image_id``; ``iam_instance_profile`` is a
    profile name or ARN; ``tags`` go on the instances (with Name, managed-by and, when known, the snapshot)."""

    image_id: str
    instance_type: str
    user_data: str
    iam_instance_profile: str
    count: int = 1
    key_name: str | None = None
    subnet_id: str | None = None
    security_group_ids: tuple[str, ...] = ()
    name: str = "recordio-pack-gpu"
    snapshot_id: str | None = None
    tags: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.count < 1:
            raise UsageError(f"the instance count must be at least 1: {self.count}")
        check_id("image", self.image_id)
        if self.snapshot_id is not None:
            check_id("snapshot", self.snapshot_id)
        if not self.iam_instance_profile:
            raise UsageError("an instance profile is needed: the boot script gets its AWS access from it")
        if not self.user_data:
            raise UsageError("empty user-data")

    def request(self) -> dict[str, Any]:
        """The ``run_instances`` keyword arguments."""
        profile = self.iam_instance_profile
        extra = dict(self.tags)
        if self.snapshot_id:
            extra[SNAPSHOT_TAG] = self.snapshot_id
        request: dict[str, Any] = {
            "ImageId": self.image_id, "InstanceType": self.instance_type, "MinCount": self.count,
            "MaxCount": self.count, "UserData": self.user_data,
            "IamInstanceProfile": {"Arn": profile} if profile.startswith("arn:") else {"Name": profile},
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
            "TagSpecifications": tag_specification("instance", base_tags(self.name, extra)),
        }
        if self.key_name:
            request["KeyName"] = self.key_name
        if self.subnet_id:
            request["SubnetId"] = self.subnet_id
        if self.security_group_ids:
            request["SecurityGroupIds"] = list(self.security_group_ids)
        return request


@dataclass(frozen=True)
class LaunchResult:
    instance_ids: list[str]
    reservation_id: str
    availability_zones: dict[str, str] = field(default_factory=dict)  # instance id -> zone

    def as_dict(self) -> dict[str, Any]:
        return {"instance_ids": self.instance_ids, "reservation_id": self.reservation_id,
                "availability_zones": self.availability_zones}


def launch_instances(target: AwsTarget, options: LaunchOptions) -> LaunchResult:
    """Start the instances (boto3 base64-encodes the user-data); returns their ids as soon as EC2 accepts."""
    from recordio_pack.userdata.render import check_size

    check_size(options.user_data)
    ec2 = target.client("ec2")
    with aws_errors(f"launching {options.count} {options.instance_type} instance(s)"):
        reply = ec2.run_instances(**options.request())
    instances = reply.get("Instances") or []
    return LaunchResult(
        instance_ids=[instance["InstanceId"] for instance in instances],
        reservation_id=reply.get("ReservationId", ""),
        availability_zones={instance["InstanceId"]: instance.get("Placement", {}).get("AvailabilityZone", "")
                            for instance in instances})
