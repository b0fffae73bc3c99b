"""The rendered boot script, run under bash: against the moto server with the AWS CLI and an IMDSv2 stub on
127.0.0.1, with a fake /dev/disk/by-id folder and a mount command that records its arguments.

Some failure paths use a fake ``aws`` on PATH instead of moto (moto grants every permission and attaches
instantly), which also makes them fast.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import boto3
import pytest

from recordio_pack.userdata.render import UserDataOptions, render

from imds_stub import ImdsStub
from waiting import wait_until

VENV_BIN = Path(sys.executable).parent
BASH = shutil.which("bash") or "/bin/bash"
REGION = "us-east-1"
BY_ID = "nvme-Amazon_Elastic_Block_Store_"
TIMESTAMPED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ recordio-pack: ")


@pytest.fixture(scope="module")
def ec2(moto_server: str):
    return boto3.client("ec2", region_name=REGION, endpoint_url=moto_server,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def make_snapshot(ec2) -> str:
    """A dataset snapshot in moto (from a volume in us-east-1a, tagged uniquely)."""
    volume = ec2.create_volume(AvailabilityZone="us-east-1a", Size=1)["VolumeId"]
    tags = [{"ResourceType": "snapshot", "Tags": [{"Key": "test", "Value": uuid.uuid4().hex}]}]
    return ec2.create_snapshot(VolumeId=volume, TagSpecifications=tags)["SnapshotId"]


def make_instance(ec2, zone: str) -> str:
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    reply = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, Placement={"AvailabilityZone": zone})
    return reply["Instances"][0]["InstanceId"]


def volumes_from(ec2, snapshot_id: str) -> list[dict]:
    return ec2.describe_volumes(Filters=[{"Name": "snapshot-id", "Values": [snapshot_id]}])["Volumes"]


@dataclass
class FakeHost:
    """What the script touches on an instance, inside tmp_path."""

    root: Path

    def __post_init__(self) -> None:
        self.by_id = self.root / "dev-disk-by-id"
        self.mount_point = self.root / "mnt" / "data"
        self.bin = self.root / "bin"
        self.disk = self.root / "disk.img"  # the "block device": a regular file
        self.mount_record = self.root / "mount-calls"
        self.volume_files = self.root / "volume-files"  # what the dataset volume holds; the fake mount copies it
        self.fstab = self.root / "fstab"
        self.log = self.root / "log" / "recordio-pack-userdata.log"
        for folder in (self.by_id, self.mount_point, self.bin, self.volume_files):
            folder.mkdir(parents=True)
        self.disk.write_bytes(bytes(4096))
        self.fstab.write_text("LABEL=root / ext4 defaults 0 1")  # no final newline, as some editors leave it
        # mount: records its arguments and makes the volume's files appear at the mount point (its last argument);
        # findmnt: reports what that fake mount "mounted", as the kernel would after a real one.
        self.tool("mount", f'printf "%s\\t" "$@" >>"{self.mount_record}"; echo >>"{self.mount_record}"\n'
                           f'cp -R "{self.volume_files}/." "${{@: -1}}"')
        self.tool("findmnt", f'[[ -f "{self.mount_record}" ]] || exit 1\n'
                             f'line=$(grep -F "$(printf "\\t%s\\t" "${{@: -1}}")" "{self.mount_record}" | tail -n 1)'
                             ' || exit 1\n'
                             'IFS=$\'\\t\' read -r -a fields <<<"$line"\n'
                             'printf "%s ext4\\n" "${fields[${#fields[@]} - 2]}"')

    def tool(self, name: str, body: str) -> Path:
        path = self.bin / name
        path.write_text(f"#!/bin/bash\n{body}\n")
        path.chmod(0o755)
        return path

    def link_for(self, volume_id: str) -> Path:
        return self.by_id / (BY_ID + volume_id.replace("-", ""))

    def mount_calls(self) -> list[list[str]]:
        if not self.mount_record.exists():
            return []
        return [line.rstrip("\t").split("\t") for line in self.mount_record.read_text().splitlines()]

    def run(self, options: UserDataOptions, imds_url: str, endpoint: str | None = None, *,
            path: str | None = None, wait_seconds: int = 60) -> subprocess.CompletedProcess[str]:
        script = self.root / "user-data.sh"
        script.write_text(render(options))
        env = dict(os.environ,
                   PATH=path or f"{self.bin}:{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                   RECORDIO_PACK_IMDS_ENDPOINT=imds_url, RECORDIO_PACK_DEVICE_DIR=str(self.by_id),
                   RECORDIO_PACK_MOUNT_CMD=str(self.bin / "mount"), RECORDIO_PACK_FSTAB=str(self.fstab),
                   RECORDIO_PACK_LOG=str(self.log), RECORDIO_PACK_WAIT_SECONDS=str(wait_seconds),
                   RECORDIO_PACK_POLL_SECONDS="0.2", RECORDIO_PACK_IMDS_TRIES="3", AWS_EC2_METADATA_DISABLED="true")
        if endpoint:
            env["AWS_ENDPOINT_URL"] = endpoint
        return subprocess.run([BASH, str(script)], env=env, capture_output=True, text=True, timeout=240)


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    return lines[-1] if lines else ""


@contextlib.contextmanager
def device_appears(ec2, host: FakeHost, instance_id: str) -> Iterator[None]:
    """Plays udev: once a volume tagged for ``instance_id`` exists, its by-id link appears (the script polls)."""
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            found = ec2.describe_volumes(Filters=[{"Name": "tag:recordio-pack:target-instance",
                                                   "Values": [instance_id]}])["Volumes"]
            if found:
                host.link_for(found[0]["VolumeId"]).symlink_to(host.disk)
                return
            stop.wait(0.1)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


@pytest.mark.slow
def test_boot_creates_attaches_and_mounts_once(ec2, moto_server: str, tmp_path: Path) -> None:
    if Path("/dev/sdf").exists() or Path("/dev/xvdf").exists():
        pytest.skip("this host has /dev/sdf, the script's fallback device name")
    assert (VENV_BIN / "aws").exists(), "the AWS CLI is not in the test environment (pip install awscli)"
    snapshot = make_snapshot(ec2)
    instance = make_instance(ec2, "us-east-1b")
    host = FakeHost(tmp_path)
    for name in ("imagenet-train-00000-of-00002.rec", "imagenet-train-00001-of-00002.rec", "a.idx"):
        (host.volume_files / name).write_bytes(b"\x0a\x23\xd7\xce" * 64)
    options = UserDataOptions(snapshot, mount_point=str(host.mount_point), prewarm=True)

    with ImdsStub(instance, REGION, "us-east-1b", fail_first=1) as stub, device_appears(ec2, host, instance):
        first = host.run(options, stub.url, moto_server)
    assert first.returncode == 0, first.stderr

    (volume,) = volumes_from(ec2, snapshot)
    volume_id = volume["VolumeId"]
    assert volume["AvailabilityZone"] == "us-east-1b"  # the instance's zone, not the snapshot source's
    tags = {tag["Key"]: tag["Value"] for tag in volume["Tags"]}
    assert tags["recordio-pack:target-instance"] == instance
    assert tags["recordio-pack:source-snapshot"] == snapshot
    assert tags["recordio-pack:managed-by"] == "recordio-pack"
    (attachment,) = volume["Attachments"]
    assert (attachment["InstanceId"], attachment["State"], attachment["Device"]) == (instance, "attached", "/dev/sdf")
    mappings = ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]["BlockDeviceMappings"]
    (mapping,) = [m for m in mappings if m["Ebs"]["VolumeId"] == volume_id]
    assert mapping["DeviceName"] == "/dev/sdf" and mapping["Ebs"]["DeleteOnTermination"] is True

    link = str(host.link_for(volume_id))
    assert host.mount_calls() == [["-o", "ro,noload", link, str(host.mount_point)]]  # type unknown: ext4's first
    entries = [line.split() for line in host.fstab.read_text().splitlines() if line and not line.startswith("#")]
    assert entries[0][:2] == ["LABEL=root", "/"]  # the existing line survives
    assert entries[1] == [link, str(host.mount_point), "auto", "ro,noload,nofail", "0", "0"]

    log_lines = host.log.read_text().splitlines()
    assert log_lines and all(TIMESTAMPED.match(line) for line in log_lines)
    assert any(f"done: {volume_id} mounted read-only" in line for line in log_lines)
    assert first.stderr.strip().splitlines()[-1].endswith(f"done: {volume_id} mounted read-only at {host.mount_point}")

    # IMDSv2 only: a 503 on the first token request is retried; every metadata read carried a valid token.
    assert [r.status for r in stub.requests if r.method == "PUT"] == [503, 200]
    gets = [r for r in stub.requests if r.method == "GET"]
    assert gets and all(r.had_valid_token and r.status == 200 for r in gets)

    # the prewarm pass runs detached from the script
    wait_until(lambda: "prewarm: read 2 .rec files" in host.log.read_text(), 30, message=host.log.read_text)

    # A reboot or a cloud-init re-run: the same volume is found by its attachment and tags; nothing new.
    with ImdsStub(instance, REGION, "us-east-1b") as stub:
        second = host.run(options, stub.url, moto_server)
    assert second.returncode == 0, second.stderr
    assert f"reusing {volume_id} (in-use, attached as /dev/sdf)" in second.stderr
    assert "creating" not in second.stderr and "attaching" not in second.stderr
    assert f"{host.mount_point} is already mounted from {link}" in second.stderr  # its files do not stop a rerun
    assert [v["VolumeId"] for v in volumes_from(ec2, snapshot)] == [volume_id]
    assert len(ec2.describe_volumes(Filters=[{"Name": "tag:recordio-pack:target-instance",
                                              "Values": [instance]}])["Volumes"]) == 1
    assert host.mount_calls()[-1] == ["-o", "ro,noload", link, str(host.mount_point)]
    assert sum(str(host.mount_point) in line and not line.startswith("#")
               for line in host.fstab.read_text().splitlines()) == 1


def test_missing_snapshot_fails_with_one_clear_line(ec2, moto_server: str, tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    instance = f"i-{uuid.uuid4().hex[:17]}"
    missing = "snap-0123456789abcdef0"
    with ImdsStub(instance, REGION, "us-east-1a") as stub:
        result = host.run(UserDataOptions(missing, mount_point=str(host.mount_point)), stub.url, moto_server)
    assert result.returncode != 0
    assert last_line(result).endswith(f"FAILED: snapshot {missing} not found in {REGION} "
                                      "(wrong region, or not shared with this account)")
    assert last_line(result) in host.log.read_text()
    assert volumes_from(ec2, missing) == [] and host.mount_calls() == []


def test_metadata_refusing_tokens_fails_with_one_clear_line(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    aws_calls = host.root / "aws-calls"
    host.tool("aws", f'echo "$*" >>"{aws_calls}"')
    with ImdsStub("i-0123456789abcdef0", REGION, "us-east-1a", refuse_tokens=True) as stub:
        result = host.run(UserDataOptions("snap-0123456789abcdef0", mount_point=str(host.mount_point)), stub.url)
    assert result.returncode != 0
    assert "FAILED: the instance metadata service refused an IMDSv2 token (HTTP 403)" in last_line(result)
    assert [(r.method, r.status) for r in stub.requests] == [("PUT", 403)]  # no IMDSv1 fallback, no retry
    assert not aws_calls.exists()


def test_no_aws_cli_is_named(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    tools = host.root / "only-basics"
    tools.mkdir()
    for name in ("curl", "mktemp", "date", "mkdir", "dirname", "rm"):
        found = shutil.which(name, path="/usr/bin:/bin")
        assert found, name
        (tools / name).symlink_to(found)
    with ImdsStub("i-0123456789abcdef0", REGION, "us-east-1a") as stub:
        result = host.run(UserDataOptions("snap-0123456789abcdef0"), stub.url, path=str(tools))
    assert result.returncode != 0
    assert "FAILED: the AWS CLI (aws) is not installed" in last_line(result)
    assert stub.requests == []


def fake_aws(host: FakeHost, describe_volumes: str = "", error: str | None = None) -> Path:
    """An `aws` that records its arguments, answers describe-volumes with ``describe_volumes``, other calls
    with nothing, or fails every call with the AWS error code ``error``."""
    calls = host.root / "aws-calls"
    failing = (f'echo "An error occurred ({error}) when calling the DescribeVolumes operation: '
               f'You are not authorized to perform this operation." >&2; exit 254') if error else ""
    host.tool("aws", f'echo "$*" >>"{calls}"\n{failing}\n'
                     f'if [[ $2 == describe-volumes ]]; then printf "%s\\n" "{describe_volumes}"; fi')
    return calls


def test_access_denied_names_the_policy(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    fake_aws(host, error="UnauthorizedOperation")
    with ImdsStub("i-0123456789abcdef0", REGION, "us-east-1a") as stub:
        result = host.run(UserDataOptions("snap-0123456789abcdef0", mount_point=str(host.mount_point)), stub.url)
    assert result.returncode != 0
    assert last_line(result).endswith("FAILED: access denied for ec2 describe-volumes (UnauthorizedOperation); "
                                      "the instance role needs aws/policies/gpu-instance-boot.json")


@pytest.mark.parametrize("label, ok", [("imagenet", True), ("scratch", False)])
def test_volume_from_a_launch_template_is_only_mounted(tmp_path: Path, label: str, ok: bool) -> None:
    """EC2 made and attached the volume (block device mapping): no create, no attach; xfs gets norecovery."""
    host = FakeHost(tmp_path)
    volume_id = "vol-0aaaabbbbccccdddd"
    calls = fake_aws(host, describe_volumes=f"{volume_id}\tin-use\tattached\t/dev/sdg\tTrue")
    host.tool("blkid", f'case "$*" in *TYPE*) echo xfs ;; *LABEL*) echo {label} ;; esac')
    host.link_for(volume_id).symlink_to(host.disk)
    options = UserDataOptions("snap-0123456789abcdef0", mount_point=str(host.mount_point),
                              filesystem_label="imagenet", region="eu-west-1")
    with ImdsStub("i-0123456789abcdef0", "us-east-1", "us-east-1a") as stub:
        result = host.run(options, stub.url)
    recorded = calls.read_text().splitlines()
    assert len(recorded) == 1 and recorded[0].startswith("ec2 describe-volumes")
    assert "--region eu-west-1" in recorded[0]  # --region given: not the instance's own
    if not ok:
        assert result.returncode != 0 and host.mount_calls() == []
        assert "label on" in last_line(result) and "'scratch', expected 'imagenet'" in last_line(result)
        return
    assert result.returncode == 0, result.stderr
    link = str(host.link_for(volume_id))
    assert host.mount_calls() == [["-t", "xfs", "-o", "ro,norecovery", link, str(host.mount_point)]]
    assert f"{link} {host.mount_point} xfs ro,norecovery,nofail 0 0" in host.fstab.read_text()


def test_a_mount_point_holding_files_is_refused(tmp_path: Path) -> None:
    """Mounting on a folder with files would hide them (a home folder, a notebook folder): the script refuses."""
    host = FakeHost(tmp_path)
    volume_id = "vol-0aaaabbbbccccdddd"
    fake_aws(host, describe_volumes=f"{volume_id}\tin-use\tattached\t/dev/sdg\tTrue")
    host.link_for(volume_id).symlink_to(host.disk)
    (host.mount_point / ".ssh").mkdir()
    with ImdsStub("i-0123456789abcdef0", REGION, "us-east-1a") as stub:
        result = host.run(UserDataOptions("snap-0123456789abcdef0", mount_point=str(host.mount_point)), stub.url)
    assert result.returncode == 1 and host.mount_calls() == []
    assert last_line(result).endswith(f"FAILED: {host.mount_point} holds files and nothing is mounted on it; mounting "
                                      "there would hide them (render the script with another --mount-point)")
    assert str(host.mount_point) not in host.fstab.read_text()


def test_device_that_never_appears_times_out(tmp_path: Path) -> None:
    if Path("/dev/sdh").exists() or Path("/dev/xvdh").exists():
        pytest.skip("this host has /dev/sdh, the fallback device name used here")
    host = FakeHost(tmp_path)
    fake_aws(host, describe_volumes="vol-0aaaabbbbccccdddd\tin-use\tattached\t/dev/sdh\tTrue")
    with ImdsStub("i-0123456789abcdef0", REGION, "us-east-1a") as stub:
        result = host.run(UserDataOptions("snap-0123456789abcdef0", mount_point=str(host.mount_point)), stub.url,
                          wait_seconds=1)
    assert result.returncode != 0
    assert last_line(result).endswith(
        "FAILED: timed out after 1s waiting for the block device of vol-0aaaabbbbccccdddd to appear")
    assert host.mount_calls() == []
