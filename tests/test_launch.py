"""`recordio-pack launch`: run_instances with the boot script as user-data (moto in-process)."""

from __future__ import annotations

import argparse
import base64
import json
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from recordio_pack.aws.launch import LaunchOptions, launch_instances
from recordio_pack.aws.session import AwsTarget
from recordio_pack.errors import UsageError
from recordio_pack.userdata.render import UserDataOptions, UserDataTooLarge, render

SNAP = "snap-0123456789abcdef0"
PROFILE = "recordio-pack-gpu"


@pytest.fixture(scope="module")
def aws():
    """In-process moto for this module (starting it costs a second): tests look only at the instances they made."""
    with mock_aws():
        iam = boto3.client("iam", region_name="us-east-1")
        iam.create_instance_profile(InstanceProfileName=PROFILE)
        ec2 = boto3.client("ec2", region_name="us-east-1")
        image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        yield ec2, image


def described(ec2, instance_ids: list[str]) -> list[dict]:
    reply = ec2.describe_instances(InstanceIds=instance_ids)
    return [instance for reservation in reply["Reservations"] for instance in reservation["Instances"]]


def user_data_of(ec2, instance_id: str) -> str:
    value = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")["UserData"]["Value"]
    return base64.b64decode(value).decode()


def run_cli(argv: list[str]) -> int:
    from recordio_pack.commands import launch

    parser = argparse.ArgumentParser()
    launch.register(parser.add_subparsers())
    args = parser.parse_args(["launch", *argv])
    return args.run(args)


def test_launch_starts_instances_with_the_boot_script(aws) -> None:
    ec2, image = aws
    script = render(UserDataOptions(SNAP, prewarm=True))
    options = LaunchOptions(image_id=image, instance_type="g5.xlarge", user_data=script,
                            iam_instance_profile=PROFILE, count=2, snapshot_id=SNAP, tags=(("team", "vision"),))
    result = launch_instances(AwsTarget(region="us-east-1"), options)
    assert len(result.instance_ids) == 2 and set(result.availability_zones) == set(result.instance_ids)
    # moto associates the profile with the first instance of a reservation only, and ignores MetadataOptions
    # (the request itself is checked in test_launch_request_*).
    associations = ec2.describe_iam_instance_profile_associations()["IamInstanceProfileAssociations"]
    assert any(a["InstanceId"] == result.instance_ids[0] and a["IamInstanceProfile"]["Arn"].endswith(
        f"instance-profile/{PROFILE}") for a in associations)
    for instance in described(ec2, result.instance_ids):
        assert instance["InstanceType"] == "g5.xlarge" and instance["ImageId"] == image
        tags = {tag["Key"]: tag["Value"] for tag in instance["Tags"]}
        assert tags["team"] == "vision" and tags["Name"] == "recordio-pack-gpu"
        assert tags["recordio-pack:dataset-snapshot"] == SNAP
        assert user_data_of(ec2, instance["InstanceId"]) == script


def test_launch_request_uses_an_arn_when_given_one() -> None:
    arn = "arn:aws:iam::123456789012:instance-profile/gpu"
    request = LaunchOptions(image_id="ami-12345678", instance_type="p4d.24xlarge", user_data="#!/bin/bash\n",
                            iam_instance_profile=arn, subnet_id="subnet-1", security_group_ids=("sg-1", "sg-2"),
                            key_name="me").request()
    assert request["IamInstanceProfile"] == {"Arn": arn}
    assert request["MetadataOptions"] == {"HttpTokens": "required", "HttpEndpoint": "enabled"}
    assert LaunchOptions(image_id="ami-12345678", instance_type="g5.xlarge", user_data="x",
                         iam_instance_profile=PROFILE).request()["IamInstanceProfile"] == {"Name": PROFILE}
    assert (request["MinCount"], request["MaxCount"]) == (1, 1)
    assert request["SubnetId"] == "subnet-1" and request["SecurityGroupIds"] == ["sg-1", "sg-2"]
    assert request["KeyName"] == "me"


def test_launch_refuses_oversized_user_data_before_calling_aws() -> None:
    options = LaunchOptions(image_id="ami-12345678", instance_type="g5.xlarge", user_data="#" * 16385,
                            iam_instance_profile=PROFILE)
    with pytest.raises(UserDataTooLarge):
        launch_instances(AwsTarget(region="us-east-1", endpoint_url="http://127.0.0.1:9"), options)
    with pytest.raises(UsageError, match="count"):
        LaunchOptions(image_id="ami-12345678", instance_type="g5.xlarge", user_data="x",
                      iam_instance_profile=PROFILE, count=0)


def test_cli_prints_instance_ids(aws, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    ec2, image = aws
    common = ["--image-id", image, "--instance-type", "g5.xlarge", "--iam-instance-profile", PROFILE,
              "--region", "us-east-1"]
    assert run_cli([*common, "--snapshot-id", SNAP, "--count", "3", "--format", "cloud-config", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["instance_ids"]) == 3
    assert user_data_of(ec2, report["instance_ids"][0]) == render(UserDataOptions(SNAP), "cloud-config")

    rendered = tmp_path / "boot.sh"
    rendered.write_text("#!/bin/bash\necho custom\n")
    assert run_cli([*common, "--user-data-file", str(rendered), "--tag", "owner=me"]) == 0
    (instance_id,) = capsys.readouterr().out.split()
    assert user_data_of(ec2, instance_id) == "#!/bin/bash\necho custom\n"

    with pytest.raises(UsageError, match="either --snapshot-id"):
        run_cli(common)
