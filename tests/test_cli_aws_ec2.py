"""``snapshot`` / ``replicate`` / ``mount`` / ``cleanup`` end to end: the CLI (``cli.main`` in this process; its real
subprocesses are in test_cli.py) against the moto server on 127.0.0.1 (``--endpoint-url``), exit statuses, and
one-line errors. Each test works in its own region or with unique tags, since the server is shared."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import uuid
from pathlib import Path
from typing import Any, Callable

import boto3
import pytest
from moto import mock_aws

from recordio_pack.aws.ec2 import MANAGED_BY_KEY, tag_list, tags_of
from recordio_pack.cli import COMMANDS, main

EXT4 = b"\0" * 1080 + b"\x53\xef" + b"\0" * 1000


Run = Callable[..., subprocess.CompletedProcess]


@pytest.fixture()
def cli(cli_main: Run) -> Run:
    """``cli(*args, env=None)``: ``recordio-pack ARGS`` in this process, answered like ``subprocess.run``."""
    return cli_main


def one_error_line(completed: subprocess.CompletedProcess, command: str) -> str:
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"recordio-pack {command}: error: "), completed.stderr
    return lines[0]


def ec2(moto_server: str, region: str) -> Any:
    return boto3.client("ec2", endpoint_url=moto_server, region_name=region)


def recording_script(path: Path, log: Path) -> str:
    """An executable that appends its arguments to ``log`` (stands in for fsfreeze / mount)."""
    path.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def fake_instance_tree(root: Path, volume_id: str, mountinfo: str = "") -> list[str]:
    """/proc, /sys and /dev of an instance with ``volume_id`` attached as nvme1n1 (ext4); returns the CLI flags."""
    (root / "proc" / "self").mkdir(parents=True)
    (root / "proc" / "self" / "mountinfo").write_text(mountinfo)
    (root / "sys" / "block" / "nvme1n1" / "device").mkdir(parents=True)
    (root / "sys" / "block" / "nvme1n1" / "device" / "serial").write_text(volume_id.replace("-", "") + "\n")
    (root / "dev" / "disk" / "by-id").mkdir(parents=True)
    (root / "dev" / "nvme1n1").write_bytes(EXT4)
    return ["--proc-root", str(root / "proc"), "--sys-root", str(root / "sys"), "--dev-root", str(root / "dev"),
            "--by-id-dir", str(root / "dev" / "disk" / "by-id")]


def test_commands_are_registered(capsys: pytest.CaptureFixture[str]) -> None:
    assert {"snapshot", "replicate", "mount", "cleanup"} <= set(COMMANDS)
    for command in ("snapshot", "replicate", "mount", "cleanup"):
        with pytest.raises(SystemExit) as exited:
            main([command, "--help"])
        shown = capsys.readouterr().out
        assert exited.value.code == 0 and "--endpoint-url" in shown and "--json" in shown and "--region" in shown


VOL, SNAP, INSTANCE = "vol-0123456789abcdef0", "snap-0123456789abcdef0", "i-0123456789abcdef0"
NOWHERE = ["--endpoint-url", "http://127.0.0.1:9"]  # were a check missing, the call fails here, never at AWS


@pytest.mark.parametrize("argv, expected", [
    (["snapshot", "--volume-id", VOL, "--share-with", "all"], "never made public"),
    (["snapshot", "--volume-id", VOL, "--freeze"], "--freeze needs --mount-point"),
    (["snapshot"], "give --volume-id or --mount-point"),
    (["snapshot", "--volume-id", VOL, "--mount-point", "/nonexistent"], "give --volume-id or --mount-point (one of"),
    (["snapshot", "--mount-point", "/nonexistent"], "--mount-point /nonexistent: no such folder"),
    (["replicate", "--snapshot-id", SNAP], "either --instance-id"),
    (["replicate", "--snapshot-id", SNAP, "--instance-id", INSTANCE, "--volume-type", "gp2", "--throughput", "300"],
     "gp3 volumes only"),
    (["replicate", "--snapshot-id", SNAP, "--instance-id", INSTANCE, "--iops", "100000"],
     "gp3 IOPS must be 3000-80000, not 100000"),
    (["replicate", "--snapshot-id", SNAP, "--instance-id", INSTANCE, "--volume-type", "io2"], "io2 volumes need"),
    (["replicate", "--snapshot-id", SNAP, "--instance-id", INSTANCE, "--throughput", "2000"],
     "needs at least 8000 IOPS"),
    (["cleanup", "--prefix", "x/"], "--prefix needs --bucket"),
    # malformed ids are bad usage, whichever kind
    (["replicate", "--snapshot-id", "snap-bogus", "--instance-id", INSTANCE], "not an EC2 snapshot id: 'snap-bogus'"),
    (["replicate", "--snapshot-id", SNAP, "--instance-id", "i-bogus"], "not an EC2 instance id: 'i-bogus'"),
    (["replicate", "--snapshot-id", SNAP, "--instance-id", "i-1"], "not an EC2 instance id: 'i-1'"),
    (["snapshot", "--volume-id", "vol-bogus"], "not an EC2 volume id: 'vol-bogus'"),
    (["mount", "--volume-id", "vol-bogus", "--mount-point", "/data"], "not an EC2 volume id: 'vol-bogus'"),
    (["mount", "--volume-id", VOL, "--mount-point", "/etc"], "refusing to mount on '/etc'"),
    (["mount", "--volume-id", VOL, "--mount-point", "/"], "hides the system's /"),
    (["launch", "--snapshot-id", "snap-1", "--image-id", "ami-0123456789abcdef0", "--instance-type", "g5.xlarge",
      "--iam-instance-profile", "p"], "not an EC2 snapshot id: 'snap-1'"),
    (["launch", "--snapshot-id", SNAP, "--image-id", "ami-12345678", "--instance-type", "g5.xlarge",
      "--iam-instance-profile", "p", "--mount-point", "/usr/data"], "inside /usr"),
])
def test_usage_errors_exit_2(argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    """In-process: these fail before any AWS call, with one line and exit 2."""
    assert main([*argv, *NOWHERE]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1, err


@pytest.mark.parametrize("argv", [
    ["replicate", "--snapshot-id", SNAP, "--instance-id", INSTANCE, "--poll-seconds", "-1"],
    ["snapshot", "--volume-id", VOL, "--poll-seconds", "-1"],
    ["snapshot", "--volume-id", VOL, "--copy-to-region", "mars"],
    ["cleanup", "--keep-latest", "-1"],
])
def test_more_mistakes_exit_2_without_a_traceback(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    try:
        status = main([*argv, *NOWHERE])
    except SystemExit as exited:  # argparse's own usage error
        status = exited.code
    assert status == 2 and "Traceback" not in capsys.readouterr().err


def test_unreadable_inputs_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    binary = tmp_path / "user-data.bin"
    binary.write_bytes(b"\xff\xfe\x00boot")
    assert main(["launch", "--user-data-file", str(binary), "--image-id", "ami-0123456789abcdef0", "--instance-type",
                 "g5.xlarge", "--iam-instance-profile", "p", *NOWHERE]) == 2
    assert "is not UTF-8 text" in one_error_line_of(capsys.readouterr().err, "launch")
    data = tmp_path / "data"
    data.mkdir()
    with mock_aws():  # in-process moto: the volume is described, then fsfreeze cannot be run
        volume = boto3.client("ec2", region_name="us-east-1").create_volume(AvailabilityZone="us-east-1a", Size=1)
        flags = fake_instance_tree(tmp_path / "root", volume["VolumeId"], "22 1 259:1 / / rw - ext4 /dev/nvme0n1p1 rw\n"
                                   f"40 22 259:3 / {data} rw - ext4 /dev/nvme1n1 rw\n")
        status = main(["snapshot", "--mount-point", str(data), "--freeze", "--freeze-command",
                       str(tmp_path / "no-such-fsfreeze"), *flags, "--poll-seconds", "0"])
    assert status == 1
    assert "cannot run " in one_error_line_of(capsys.readouterr().err, "snapshot")


@pytest.mark.parametrize("content", [b"[1, 2]\n", b"{}\n", b"\xff\xfe", b"not json"])
def test_a_bad_manifest_is_one_line(content: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "x.manifest.json"
    manifest.write_bytes(content)
    assert main(["snapshot", "--volume-id", VOL, "--manifest", str(manifest), *NOWHERE]) == 2
    assert "manifest" in one_error_line_of(capsys.readouterr().err, "snapshot")


def test_oversize_user_data_is_bad_usage_naming_the_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    big = tmp_path / "user-data"
    big.write_text("#!/bin/bash\n" + "#" * 20000 + "\n")
    assert main(["launch", "--user-data-file", str(big), "--image-id", "ami-0123456789abcdef0", "--instance-type",
                 "g5.xlarge", "--iam-instance-profile", "p", *NOWHERE]) == 2
    assert "user-data is 20013 bytes, over EC2's limit of 16384" in one_error_line_of(capsys.readouterr().err, "launch")


def one_error_line_of(stderr: str, command: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"recordio-pack {command}: error: "), stderr
    return lines[0]


def test_freeze_of_root_is_refused_with_exit_3(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    log = tmp_path / "freeze.log"
    freeze = recording_script(tmp_path / "fsfreeze", log)
    flags = fake_instance_tree(tmp_path / "root", VOL, "22 1 259:1 / / rw - ext4 /dev/nvme0n1p1 rw\n")
    for mount_point in ("//.", "/", str(tmp_path)):
        assert main(["snapshot", "--mount-point", mount_point, "--freeze", "--freeze-command", freeze, *flags,
                     *NOWHERE]) == 3
        line = one_error_line_of(capsys.readouterr().err, "snapshot")
        assert "refusing to freeze /" in line or "not a mount point" in line
    assert not log.exists()  # fsfreeze never ran


def test_snapshot_with_manifest_copy_and_share(cli: Run, tmp_path: Path, moto_server: str) -> None:
    client = ec2(moto_server, "us-east-1")
    volume = client.create_volume(AvailabilityZone="us-east-1a", Size=8)["VolumeId"]
    manifest = tmp_path / "cli.manifest.json"
    manifest.write_text('{"format": "not read when --dataset is given"}\n')
    done = cli("snapshot", "--volume-id", volume, "--manifest", str(manifest), "--dataset", "cli-ds",
               "--copy-to-region", "eu-west-1", "--share-with", "111122223333", "--tag", "team=vision",
               "--poll-seconds", "0", "--endpoint-url", moto_server, "--region", "us-east-1", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["state"] == "completed" and result["shared_with"] == ["111122223333"]
    tags = tags_of(client.describe_snapshots(SnapshotIds=[result["snapshot_id"]])["Snapshots"][0])
    assert tags["recordio-pack:manifest-sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert tags["recordio-pack:dataset"] == "cli-ds" and tags["team"] == "vision" and tags[MANAGED_BY_KEY]
    copy = result["copies"][0]
    described = ec2(moto_server, "eu-west-1").describe_snapshots(SnapshotIds=[copy["snapshot_id"]])["Snapshots"][0]
    assert tags_of(described)["recordio-pack:source-snapshot"] == result["snapshot_id"]


def test_snapshot_by_mount_point_with_freeze(cli: Run, tmp_path: Path, moto_server: str) -> None:
    volume = ec2(moto_server, "us-east-1").create_volume(AvailabilityZone="us-east-1a", Size=8)["VolumeId"]
    data = tmp_path / "data"
    (data / "imagenet").mkdir(parents=True)
    flags = fake_instance_tree(tmp_path / "root", volume, "22 1 259:1 / / rw - ext4 /dev/nvme0n1p1 rw\n"
                                                          f"40 22 259:3 / {data} rw - ext4 /dev/nvme1n1 rw\n")
    log = tmp_path / "freeze.log"
    freeze = recording_script(tmp_path / "fsfreeze", log)
    common = ["--freeze", "--freeze-command", freeze, *flags, "--poll-seconds", "0", "--endpoint-url", moto_server]
    inside = cli("snapshot", "--mount-point", str(data / "imagenet"), *common)  # a folder: fsfreeze would take all
    assert inside.returncode == 3 and "is not a mount point" in one_error_line(inside, "snapshot")
    done = cli("snapshot", "--mount-point", f"{data}/", *common, "-q")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("snapshot snap-") and f"of {volume}: completed" in done.stdout
    assert "filesystem frozen during create" in done.stdout
    assert log.read_text().splitlines() == [f"-f {data}", f"-u {data}"]


def test_snapshot_errors(cli: Run, tmp_path: Path, moto_server: str) -> None:
    common = ["--poll-seconds", "0", "--endpoint-url", moto_server]
    missing = cli("snapshot", "--volume-id", "vol-0000000000000000f", *common)
    assert missing.returncode == 1 and "InvalidVolume.NotFound" in one_error_line(missing, "snapshot")
    env = {key: value for key, value in os.environ.items() if key not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    nocreds = cli("snapshot", "--volume-id", "vol-0000000000000000f", *common, env=env)
    assert nocreds.returncode == 1 and "no AWS credentials found" in one_error_line(nocreds, "snapshot")


def test_replicate_table_rerun_and_dry_run(cli: Run, moto_server: str) -> None:
    region, role = "us-west-2", f"gpu-{uuid.uuid4().hex[:8]}"
    client = ec2(moto_server, region)
    volume = client.create_volume(AvailabilityZone="us-west-2a", Size=8)["VolumeId"]
    snapshot = client.create_snapshot(VolumeId=volume)["SnapshotId"]
    instances = [client.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1,
                                      Placement={"AvailabilityZone": zone}, TagSpecifications=[
                                          {"ResourceType": "instance", "Tags": tag_list({"role": role})}]
                                      )["Instances"][0]["InstanceId"] for zone in ("us-west-2b", "us-west-2c")]
    common = ["--snapshot-id", snapshot, "--filter", f"tag:role={role}", "--poll-seconds", "0",
              "--endpoint-url", moto_server, "--region", region]
    dry = cli("replicate", *common, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert [row["state"] for row in json.loads(dry.stdout)["placements"]] == ["would-create"] * 2
    shown = cli("replicate", *common, "--dry-run")  # progress bars on: a dry run waits on nothing, so shows none
    assert shown.returncode == 0 and shown.stderr == "" and "would-create" in shown.stdout
    done = cli("replicate", *common, "--json")
    assert done.returncode == 0, done.stderr
    rows = {row["instance_id"]: row for row in json.loads(done.stdout)["placements"]}
    assert sorted(rows) == sorted(instances)
    for instance in instances:
        row = rows[instance]
        zone = client.describe_volumes(VolumeIds=[row["volume_id"]])["Volumes"][0]["AvailabilityZone"]
        assert row["state"] == "attached" and row["availability_zone"] == zone and row["device"] == "/dev/sdf"
    again = cli("replicate", *common, "-q")
    assert again.returncode == 0, again.stderr
    header, *lines = again.stdout.splitlines()
    assert header.split() == ["INSTANCE", "AZ", "VOLUME", "DEVICE", "STATE"]
    assert sum("already-attached" in line for line in lines) == 2


def test_well_formed_ids_that_aws_does_not_know_exit_1_naming_them(cli: Run, moto_server: str) -> None:
    common = ["--poll-seconds", "0", "--endpoint-url", moto_server, "--region", "us-east-1"]
    client = ec2(moto_server, "us-east-1")
    snapshot = client.create_snapshot(VolumeId=client.create_volume(AvailabilityZone="us-east-1a", Size=1)["VolumeId"]
                                      )["SnapshotId"]
    for argv, named in ((["replicate", "--snapshot-id", "snap-0000000000000000f", "--instance-id", INSTANCE],
                         "snap-0000000000000000f"),
                        (["replicate", "--snapshot-id", snapshot, "--instance-id", "i-0000000000000000f"],
                         "i-0000000000000000f"),
                        (["snapshot", "--volume-id", "vol-0000000000000000f"], "vol-0000000000000000f")):
        done = cli(*argv, *common)
        assert done.returncode == 1 and named in one_error_line(done, argv[0]), done.stderr


def test_cleanup_keeps_a_snapshot_in_use_and_says_why(cli: Run, moto_server: str) -> None:
    region = "eu-north-1"
    client = ec2(moto_server, region)
    source = client.create_volume(AvailabilityZone="eu-north-1a", Size=1)["VolumeId"]
    ours = [{"ResourceType": "snapshot", "Tags": tag_list({MANAGED_BY_KEY: "recordio-pack",
                                                            "recordio-pack:dataset": f"ds-{uuid.uuid4().hex[:6]}"})}]
    used = client.create_snapshot(VolumeId=source, TagSpecifications=ours)["SnapshotId"]
    unused = client.create_snapshot(VolumeId=source, TagSpecifications=ours)["SnapshotId"]
    made = client.create_volume(AvailabilityZone="eu-north-1b", SnapshotId=used)["VolumeId"]
    done = cli("cleanup", "--older-than", "0", "--keep-latest", "0", "--delete", "--endpoint-url", moto_server,
               "--region", region)
    assert done.returncode == 0, done.stderr
    assert f"kept: volume {made} (available) was made from it" in done.stdout
    assert "deleted; 1 kept (in use or newest)" in done.stdout
    remaining = {item["SnapshotId"] for item in client.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert used in remaining and unused not in remaining


def test_mount_records_the_read_only_call_and_is_idempotent(cli: Run, tmp_path: Path, moto_server: str) -> None:
    volume = "vol-0123456789abcdef0"
    log = tmp_path / "mount.log"
    mount = recording_script(tmp_path / "mount", log)
    # --endpoint-url: a device not found by id makes mount ask EC2 for the attachment name; never real AWS
    flags = fake_instance_tree(tmp_path / "root", volume) + ["--endpoint-url", moto_server]
    target = tmp_path / "data"
    done = cli("mount", "--volume-id", volume, "--mount-point", str(target), "--mount-command", mount, "--wait", "0",
               *flags, "--json")
    assert done.returncode == 0, done.stderr
    device = tmp_path / "root" / "dev" / "nvme1n1"
    assert log.read_text().splitlines() == [f"-t ext4 -o ro,noload {device} {target}"]
    assert json.loads(done.stdout)["state"] == "mounted"
    # what the kernel would show afterwards: the second run does nothing
    (tmp_path / "root" / "proc" / "self" / "mountinfo").write_text(
        f"50 1 259:3 / {target} ro,relatime - ext4 /dev/nvme1n1 ro,noload\n")
    again = cli("mount", "--volume-id", volume, "--mount-point", str(target), "--mount-command", mount, "--wait", "0",
                *flags)
    assert again.returncode == 0 and again.stdout.startswith("already mounted") and len(log.read_text().splitlines()) == 1
    missing = cli("mount", "--volume-id", "vol-0fffffffffffffff0", "--mount-point", str(target), "--wait", "0", *flags)
    assert missing.returncode == 1 and "no local device for vol-0fffffffffffffff0" in one_error_line(missing, "mount")


def test_mount_on_xen_asks_ec2_for_the_attachment_name(cli: Run, tmp_path: Path, moto_server: str) -> None:
    client = ec2(moto_server, "us-east-1")
    volume = client.create_volume(AvailabilityZone="us-east-1a", Size=1)["VolumeId"]
    instance = client.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1,
                                    Placement={"AvailabilityZone": "us-east-1a"})["Instances"][0]["InstanceId"]
    client.attach_volume(VolumeId=volume, InstanceId=instance, Device="/dev/sdh")
    flags = fake_instance_tree(tmp_path / "root", "vol-0ffffffffffffffff")  # an NVMe disk of another volume
    (tmp_path / "root" / "dev" / "xvdh").write_bytes(EXT4)
    log = tmp_path / "mount.log"
    done = cli("mount", "--volume-id", volume, "--mount-point", str(tmp_path / "data"), "--wait", "0",
               "--mount-command", recording_script(tmp_path / "mount", log), *flags, "--endpoint-url", moto_server)
    assert done.returncode == 0, done.stderr
    assert log.read_text().split() == ["-t", "ext4", "-o", "ro,noload", str(tmp_path / "root" / "dev" / "xvdh"),
                                       str(tmp_path / "data")]


def test_cleanup_lists_then_deletes(cli: Run, moto_server: str) -> None:
    region = "ap-southeast-2"
    client = ec2(moto_server, region)
    ours = client.create_volume(AvailabilityZone="ap-southeast-2a", Size=1, TagSpecifications=[
        {"ResourceType": "volume", "Tags": tag_list({MANAGED_BY_KEY: "recordio-pack"})}])["VolumeId"]
    theirs = client.create_volume(AvailabilityZone="ap-southeast-2a", Size=1)["VolumeId"]
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    bucket = f"rp-cleanup-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    s3.create_multipart_upload(Bucket=bucket, Key="ds/a.rec")
    common = ["--volume-grace", "0", "--bucket", bucket, "--prefix", "ds/", "--endpoint-url", moto_server,
              "--region", region]
    listed = cli("cleanup", *common)
    assert listed.returncode == 0, listed.stderr
    assert ours in listed.stdout and theirs not in listed.stdout and f"s3://{bucket}/ds/a.rec" in listed.stdout
    assert "2 item(s) found; nothing deleted (rerun with --delete" in listed.stdout
    assert ours in {v["VolumeId"] for v in client.describe_volumes()["Volumes"]}
    deleted = cli("cleanup", *common, "--delete", "--json")
    assert deleted.returncode == 0, deleted.stderr
    items = json.loads(deleted.stdout)["items"]
    assert [(item["kind"], item["state"]) for item in items] == [("volume", "deleted"), ("multipart-upload", "deleted")]
    remaining = {v["VolumeId"] for v in client.describe_volumes()["Volumes"]}
    assert ours not in remaining and theirs in remaining
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert "nothing to clean up" in cli("cleanup", *common).stdout
