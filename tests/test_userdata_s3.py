"""The ``--source s3://...`` boot script, rendered and run under bash: instance-store NVMe disks told from EBS by
their model string in a fake /sys/block, fake /dev entries, mdadm, mkfs, blkid, mount and systemctl that record
what they are asked and keep the state a real disk would, instance metadata from the IMDSv2 stub, and a real
``recordio-pack restore`` from the moto server into the "mounted" folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from recordio_pack.userdata.render import UserDataOptions, render

from imds_stub import ImdsStub
from s3_helpers import SMALL, write_dataset

VENV_BIN = Path(sys.executable).parent
BASH = shutil.which("bash") or "/bin/bash"
REGION = "us-east-1"
INSTANCE = "i-0123456789abcdef0"
STORE = "Amazon EC2 NVMe Instance Storage        "  # padded to 40 characters, as the controller reports it
EBS = "Amazon Elastic Block Store              "


class InstanceImds(ImdsStub):
    """The stub, also answering ``instance-type``."""

    def values(self) -> dict[str, str]:
        return {**super().values(), "instance-type": "g5.12xlarge"}


@dataclass
class NvmeHost:
    """An instance with NVMe disks, inside tmp_path: ``disks`` maps nvmeXn1 to its model string."""

    root: Path
    disks: dict[str, str]

    def __post_init__(self) -> None:
        self.sys_block, self.dev, self.fs, self.bin = (self.root / name for name in ("sys-block", "dev", "fs", "bin"))
        self.mount_point = self.root / "mnt" / "data"
        self.calls = self.root / "calls"
        self.log = self.root / "log" / "boot.log"
        for folder in (self.sys_block, self.dev, self.fs, self.bin, self.mount_point):
            folder.mkdir(parents=True, exist_ok=True)
        for name, model in self.disks.items():
            (self.sys_block / name / "device").mkdir(parents=True)
            (self.sys_block / name / "device" / "model").write_text(model + "\n")
            (self.dev / name).write_bytes(b"")
        (self.sys_block / "loop0").mkdir()  # not NVMe: never looked at
        record = f'printf "%s %s\\n" "${{0##*/}}" "$*" >>"{self.calls}"'
        # what each device holds: fs/NAME is "TYPE LABEL" (absent: blank), as blkid -p would probe it
        self.tool("blkid", f'f="{self.fs}/${{@: -1}}"; f="{self.fs}/$(basename "${{@: -1}}")"\n'
                           '[[ -f $f ]] || exit 2\nread -r type label <"$f"\n'
                           'case "$*" in *TYPE*) echo "$type" ;; *LABEL*) echo "$label" ;; esac')
        self.tool("mdadm", f'{record}\narray=$2; shift 2\n'
                           f'members=(); for a in "$@"; do [[ $a == /* ]] && members+=("$a"); done\n'
                           'case $1-$array in\n'
                           f'  --run-*) for m in "${{members[@]}}"; do echo "linux_raid_member ip-10-0-0-1:recordio-pack" '
                           f'>"{self.fs}/$(basename "$m")"; done; mkdir -p "$(dirname "$array")"; : >"$array" ;;\n'
                           f'  *) for m in "${{members[@]}}"; do grep -q raid "{self.fs}/$(basename "$m")" 2>/dev/null '
                           '|| exit 1; done; mkdir -p "$(dirname "$array")"; : >"$array" ;;\nesac')
        self.tool("mkfs", f'{record}\nwhile getopts qE:L: o; do [[ $o == L ]] && label=$OPTARG; done\n'
                          f'echo "ext4 $label" >"{self.fs}/$(basename "${{@: -1}}")"')
        self.tool("mount", f'{record}\nprintf "%s\\t%s\\n" "${{@: -2:1}}" "${{@: -1}}" >>"{self.root}/mounted"')
        self.tool("findmnt", f'[[ -f "{self.root}/mounted" ]] || exit 1\n'
                             f'awk -F "\\t" -v mp="${{@: -1}}" \'$2 == mp {{s = $1}} END {{if (!s) exit 1; print s}}\' '
                             f'"{self.root}/mounted"')
        self.tool("systemctl", record)

    def tool(self, name: str, body: str) -> None:
        path = self.bin / name
        path.write_text(f"#!/bin/bash\n{body}\n")
        path.chmod(0o755)

    def recorded(self, tool: str) -> list[str]:
        lines = self.calls.read_text().splitlines() if self.calls.exists() else []
        return [line.split(" ", 1)[1] for line in lines if line.split(" ", 1)[0] == tool]

    def stop_start(self) -> None:
        """A stop and start: new, blank instance-store disks, nothing mounted, the mount point empty again."""
        for path in self.fs.iterdir():
            path.unlink()
        shutil.rmtree(self.dev / "md", ignore_errors=True)
        (self.root / "mounted").unlink()
        shutil.rmtree(self.mount_point)
        self.mount_point.mkdir()

    def run(self, options: UserDataOptions, imds: str, endpoint: str | None = None,
            **env_changes: str) -> subprocess.CompletedProcess[str]:
        script = self.root / "user-data.sh"
        script.write_text(render(options))
        env = dict(os.environ, PATH=f"{self.bin}:{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                   RECORDIO_PACK_IMDS_ENDPOINT=imds, RECORDIO_PACK_SYS_BLOCK=str(self.sys_block),
                   RECORDIO_PACK_DEV_DIR=str(self.dev), RECORDIO_PACK_MKFS_CMD=str(self.bin / "mkfs"),
                   RECORDIO_PACK_MOUNT_CMD=str(self.bin / "mount"), RECORDIO_PACK_LOG=str(self.log),
                   RECORDIO_PACK_CLI=str(VENV_BIN / "recordio-pack"), RECORDIO_PACK_UNIT_DIR=str(self.root / "units"),
                   RECORDIO_PACK_SCRIPT_COPY=str(self.root / "sbin" / "boot.sh"), RECORDIO_PACK_IMDS_TRIES="2",
                   AWS_EC2_METADATA_DISABLED="true", AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
        env.pop("AWS_ENDPOINT_URL", None)
        if endpoint:
            env["AWS_ENDPOINT_URL"] = endpoint
        env.update(env_changes)
        return subprocess.run([BASH, str(script)], env=env, capture_output=True, text=True, timeout=240)


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    return lines[-1] if lines else ""


@pytest.fixture
def backed_up(moto_server: str, tmp_path: Path) -> str:
    """A small dataset backed up to a fresh bucket of the moto server; returns its s3:// URI."""
    bucket = f"rp-boot-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", region_name=REGION, endpoint_url=moto_server, aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket=bucket)
    write_dataset(tmp_path / "source", sizes=SMALL)
    done = subprocess.run([str(VENV_BIN / "recordio-pack"), "backup", str(tmp_path / "source"), f"s3://{bucket}/ds",
                           "--endpoint-url", moto_server, "-q"], capture_output=True, text=True,
                          env=dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                                   AWS_DEFAULT_REGION=REGION))
    assert done.returncode == 0, done.stderr
    return f"s3://{bucket}/ds"


def same_dataset(source: Path, restored: Path) -> bool:
    names = sorted(p.name for p in source.iterdir())
    return all((restored / name).read_bytes() == (source / name).read_bytes() for name in names)


@pytest.mark.slow
def test_raid0_across_instance_store_then_restore_reboot_and_stop_start(tmp_path: Path, moto_server: str,
                                                                        backed_up: str) -> None:
    host = NvmeHost(tmp_path / "host", {"nvme0n1": EBS, "nvme1n1": STORE, "nvme2n1": STORE})
    options = UserDataOptions(source=backed_up, mount_point=str(host.mount_point))
    with InstanceImds(INSTANCE, REGION, "us-east-1a") as stub:
        first = host.run(options, stub.url, moto_server)
    assert first.returncode == 0, first.stderr
    members = [str(host.dev / "nvme1n1"), str(host.dev / "nvme2n1")]  # the EBS root volume is not one of them
    array = str(host.dev / "md" / "recordio-pack")
    assert host.recorded("mdadm")[-1] == " ".join(
        ["--create", array, "--run", "--level=0", "--name=recordio-pack", "--raid-devices=2", *members])
    assert host.recorded("mkfs") == [f"-q -E nodiscard -L rp-dataset {array}"]
    assert host.recorded("mount") == [f"-o noatime {array} {host.mount_point}"]
    assert same_dataset(tmp_path / "source", host.mount_point)  # the real restore, verified, into the mount
    assert (host.mount_point / "ds.manifest.json").is_file()
    assert "g5.12xlarge" in first.stderr and "2 NVMe disk(s)" in first.stderr
    unit = (host.root / "units" / "recordio-pack-data.service").read_text()
    assert f"ExecStart=/bin/bash {host.root / 'sbin' / 'boot.sh'}" in unit
    assert (host.root / "sbin" / "boot.sh").read_text() == render(options)
    assert host.recorded("systemctl") == ["enable recordio-pack-data.service"]
    assert last_line(first).endswith(f"done: {backed_up} verified at {host.mount_point} ({array})")
    assert not (host.fs / "nvme0n1").exists()  # the EBS volume was never touched

    # reboot: the array, the filesystem, the mount and the verified dataset are all there; nothing is redone
    calls = host.calls.read_text()
    with InstanceImds(INSTANCE, REGION, "us-east-1a") as stub:
        again = host.run(options, stub.url, moto_server)
    assert again.returncode == 0, again.stderr
    assert host.calls.read_text() == calls  # no mdadm, mkfs, mount or systemctl call
    assert "already holds the verified dataset" in again.stderr and "restoring" not in again.stderr

    # stop/start: the instance store comes back blank; everything is built and restored again
    host.stop_start()
    with InstanceImds(INSTANCE, REGION, "us-east-1a") as stub:
        rebuilt = host.run(options, stub.url, moto_server)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert len([c for c in host.recorded("mdadm") if "--run" in c]) == 2 and len(host.recorded("mkfs")) == 2
    assert same_dataset(tmp_path / "source", host.mount_point)


def test_one_disk_is_formatted_directly_without_mdadm(tmp_path: Path, moto_server: str, backed_up: str) -> None:
    host = NvmeHost(tmp_path / "host", {"nvme0n1": EBS, "nvme1n1": STORE})
    (host.bin / "mdadm").unlink()  # not needed, and not installed
    options = UserDataOptions(source=backed_up, mount_point=str(host.mount_point), filesystem_label="imagenet")
    with InstanceImds(INSTANCE, REGION, "us-east-1a") as stub:
        result = host.run(options, stub.url, moto_server)
    assert result.returncode == 0, result.stderr
    assert host.recorded("mkfs") == [f"-q -E nodiscard -L imagenet {host.dev / 'nvme1n1'}"]
    assert same_dataset(tmp_path / "source", host.mount_point)


@pytest.mark.parametrize("held", ["xfs scratch", "linux_raid_member other-host:other-array", "ext4 rp-datasetX"])
def test_a_disk_holding_someone_elses_filesystem_is_refused(tmp_path: Path, held: str) -> None:
    host = NvmeHost(tmp_path / "host", {"nvme0n1": EBS, "nvme1n1": STORE, "nvme2n1": STORE})
    (host.fs / "nvme2n1").write_text(held + "\n")
    options = UserDataOptions(source="s3://rp-boot-none/ds", mount_point=str(host.mount_point))
    with InstanceImds(INSTANCE, REGION, "us-east-1a") as stub:
        result = host.run(options, stub.url)
    kind, label = held.split()
    assert result.returncode == 1
    assert last_line(result).endswith(f"FAILED: {host.dev / 'nvme2n1'} holds a {kind} filesystem (label {label}) "
                                      f"that this script did not make; refusing to format it (wipe it yourself if "
                                      f"it is scratch: wipefs -a {host.dev / 'nvme2n1'})")
    assert sum("FAILED" in line for line in result.stderr.splitlines()) == 1
    assert host.recorded("mdadm") == [] and host.recorded("mkfs") == [] and host.recorded("mount") == []


def test_an_array_of_ours_with_a_foreign_filesystem_on_it_is_refused(tmp_path: Path) -> None:
    host = NvmeHost(tmp_path / "host", {"nvme1n1": STORE, "nvme2n1": STORE})
    (host.dev / "md").mkdir()
    (host.dev / "md" / "recordio-pack").write_bytes(b"")
    (host.fs / "recordio-pack").write_text("xfs home\n")
    with InstanceImds(INSTANCE, REGION, "us-east-1a") as stub:
        result = host.run(UserDataOptions(source="s3://rp-boot-none/ds", mount_point=str(host.mount_point)), stub.url)
    assert result.returncode == 1 and "holds a xfs filesystem (label home)" in last_line(result)
    assert host.recorded("mkfs") == [] and host.recorded("mount") == []


def test_no_instance_store_is_one_failed_line_and_ebs_is_never_formatted(tmp_path: Path) -> None:
    host = NvmeHost(tmp_path / "host", {"nvme0n1": EBS, "nvme1n1": EBS})
    with InstanceImds(INSTANCE, REGION, "us-east-1a") as stub:
        result = host.run(UserDataOptions(source="s3://rp-boot-none/ds", mount_point=str(host.mount_point)), stub.url)
    assert result.returncode == 1
    assert last_line(result).endswith(
        "FAILED: no instance-store NVMe disk on this instance (type g5.12xlarge; 2 EBS volumes, never formatted); "
        "launch a type with local NVMe (g5, g6, p4d, p5) or render with --snapshot-id")
    assert sum("FAILED" in line for line in result.stderr.splitlines()) == 1
    assert host.calls.exists() is False


def test_the_aws_cli_fallback_checks_every_file_against_the_manifest(tmp_path: Path, moto_server: str,
                                                                    backed_up: str) -> None:
    """No recordio-pack to be had (its install fails): `aws s3 cp`, then each file's SHA-256 against the manifest."""
    host = NvmeHost(tmp_path / "host", {"nvme1n1": STORE})
    only_aws = tmp_path / "only-aws"
    only_aws.mkdir()
    (only_aws / "aws").symlink_to(VENV_BIN / "aws")
    python3 = shutil.which("python3", path="/usr/bin:/bin")
    assert python3, "python3 is needed for the fallback's manifest check"
    options = UserDataOptions(source=backed_up, mount_point=str(host.mount_point))
    environment = {"PATH": f"{host.bin}:{only_aws}:/usr/bin:/bin", "RECORDIO_PACK_CLI": "",
                   "RECORDIO_PACK_VENV": "/dev/null/no-venv"}
    with InstanceImds(INSTANCE, REGION, "us-east-1a") as stub:
        result = host.run(options, stub.url, moto_server, **environment)
    assert result.returncode == 0, result.stderr
    assert "using the AWS CLI" in result.stderr
    assert same_dataset(tmp_path / "source", host.mount_point) and (host.mount_point / "ds.manifest.json").is_file()
    # the same with a damaged object in the bucket: the check fails, the manifest is not put in place
    host.stop_start()
    bucket, prefix = backed_up[len("s3://"):].split("/", 1)
    client = boto3.client("s3", region_name=REGION, endpoint_url=moto_server, aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    client.put_object(Bucket=bucket, Key=f"{prefix}/ds.lst", Body=b"x" * SMALL["ds.lst"])
    with InstanceImds(INSTANCE, REGION, "us-east-1a") as stub:
        damaged = host.run(options, stub.url, moto_server, **environment)
    assert damaged.returncode == 1
    assert "FAILED: files restored by the AWS CLI do not match ds.manifest.json: ds.lst" in last_line(damaged)
    assert not (host.mount_point / "ds.manifest.json").exists()


def test_the_s3_boot_policy_allows_exactly_what_a_restore_calls(tmp_path: Path) -> None:
    """aws/policies/gpu-instance-s3-restore.json, the instance role for --source: every S3 call a restore makes
    (recorded under moto) is allowed, and it grants nothing a restore does not use."""
    import json
    from importlib import resources

    from moto import mock_aws

    from recordio_pack.aws.backup import BackupOptions, backup
    from recordio_pack.aws.restore import RestoreOptions, restore
    from recordio_pack.aws.s3 import S3Location
    from recordio_pack.aws.session import AwsTarget

    from s3_helpers import SIZES, Calls

    text = (resources.files("recordio_pack.aws") / "policies" / "gpu-instance-s3-restore.json").read_text()
    granted = {action for statement in json.loads(text)["Statement"] for action in [statement["Action"]]}
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        session.client("s3").create_bucket(Bucket="rp-policy")
        write_dataset(tmp_path / "source", sizes=SIZES)
        target = AwsTarget(region=REGION, _session=session)
        where = S3Location("rp-policy", "ds")
        backup(tmp_path / "source", where, BackupOptions(), target)
        calls = Calls(session)
        restore(where, tmp_path / "copy", RestoreOptions(), target)
        restore(where, tmp_path / "copy", RestoreOptions(), target)  # the rerun of a reboot: checks only
    iam = {"ListObjectsV2": "s3:ListBucket", "GetObject": "s3:GetObject"}
    used = {iam.get(operation, f"s3:{operation}") for operation in calls.ops()}
    assert used == granted


def test_our_array_assembled_at_boot_under_its_host_name_is_used_not_rebuilt(tmp_path: Path, moto_server: str,
                                                                             backed_up: str) -> None:
    host = NvmeHost(tmp_path / "host", {"nvme1n1": STORE, "nvme2n1": STORE})
    for disk in ("nvme1n1", "nvme2n1"):
        (host.fs / disk).write_text("linux_raid_member ip-10-0-0-9:recordio-pack\n")
    (host.dev / "md").mkdir()
    array = host.dev / "md" / "ip-10-0-0-9:recordio-pack"  # what udev names it when the host name changed
    array.write_bytes(b"")
    (host.fs / array.name).write_text("ext4 rp-dataset\n")
    with InstanceImds(INSTANCE, REGION, "us-east-1a") as stub:
        result = host.run(UserDataOptions(source=backed_up, mount_point=str(host.mount_point)), stub.url, moto_server)
    assert result.returncode == 0, result.stderr
    assert host.recorded("mdadm") == [] and host.recorded("mkfs") == []  # found, not assembled or formatted again
    assert host.recorded("mount") == [f"-o noatime {array} {host.mount_point}"]
    assert same_dataset(tmp_path / "source", host.mount_point)
