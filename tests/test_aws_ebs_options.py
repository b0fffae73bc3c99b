"""aws/ebs_options.py: the one place for EC2 id patterns, volume limits, mount targets and mount options."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from recordio_pack.aws.ebs_options import (ID_PATTERNS, VOLUME_LIMITS, VOLUME_TYPES, InvalidVolumeSpec, MalformedId,
                                           UnsafeMountPoint, VolumeSpec, check_id, check_mount_target, check_region,
                                           read_only_mount_options)

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("kind, good, bad", [
    ("snapshot", ["snap-01234567", "snap-0123456789abcdef0"], ["snap-0123", "snap-0123456789abcdef", "SNAP-01234567",
                                                              "snap-0123456g", "vol-01234567", "snap-01234567\n"]),
    ("volume", ["vol-01234567", "vol-0123456789abcdef0"], ["vol-0f", "vol-", "vol-0123456789abcdef00"]),
    ("instance", ["i-01234567", "i-0123456789abcdef0"], ["i-1", "i-bogus", "i-0123456789abcdef"]),
    ("image", ["ami-12345678", "ami-0123456789abcdef0"], ["ami-0abc", "ami-"]),
])
def test_ids_are_8_or_17_lowercase_hex_digits(kind: str, good: list[str], bad: list[str]) -> None:
    for value in good:
        assert check_id(kind, value) == value
    for value in bad:
        with pytest.raises(MalformedId, match=f"not an EC2 {kind} id"):
            check_id(kind, value)
    assert MalformedId("").exit_code == 2


def test_regions() -> None:
    assert check_region("us-gov-west-1") == "us-gov-west-1"
    for bad in ("mars", "us-east", "US-EAST-1", ""):
        with pytest.raises(MalformedId, match="not an AWS region name"):
            check_region(bad)


def test_published_limits() -> None:
    """The ranges in the EC2 CreateVolume reference (botocore 1.44 documents the same)."""
    assert VOLUME_TYPES == ("gp3", "gp2", "io1", "io2", "st1", "sc1", "standard")
    gp3 = VOLUME_LIMITS["gp3"]
    assert (gp3.iops, gp3.throughput, gp3.size_gib, gp3.iops_per_gib, gp3.mibps_per_iops) == (
        (3000, 80000), (125, 2000), (1, 65536), 500, 0.25)
    assert (VOLUME_LIMITS["io1"].iops, VOLUME_LIMITS["io1"].iops_per_gib) == ((100, 64000), 50)
    assert (VOLUME_LIMITS["io2"].iops, VOLUME_LIMITS["io2"].iops_per_gib) == ((100, 256000), 1000)
    assert all(VOLUME_LIMITS[kind].iops is None and VOLUME_LIMITS[kind].throughput is None
               for kind in ("gp2", "st1", "sc1", "standard"))


def test_volume_spec_rules() -> None:
    with pytest.raises(InvalidVolumeSpec, match="gp3 IOPS must be 3000-80000, not 100000"):
        VolumeSpec("gp3", iops=100000)
    with pytest.raises(InvalidVolumeSpec, match="io1 volumes need an IOPS value"):
        VolumeSpec("io1")
    with pytest.raises(InvalidVolumeSpec, match="over 500 per GiB of a 10 GiB volume"):
        VolumeSpec("gp3", iops=6000, size_gib=10)
    spec = VolumeSpec("io2", iops=20000)
    with pytest.raises(InvalidVolumeSpec, match="over 1000 per GiB"):
        spec.with_size(10)
    assert spec.with_size(20).size_gib == 20
    assert VolumeSpec("gp3", iops=8000, throughput=2000).throughput == 2000


def test_mount_targets() -> None:
    assert check_mount_target("//data/./x/") == "/data/x"
    for path in ("/", "//.", "/etc", "/etc/x", "/usr", "/var", "/home", "/home/ec2-user", "/proc", "/sys/x", "/dev/shm",
                 "/run/data", "/boot", "/bin", "/sbin", "/lib", "/lib64", "/root", "/tmp", "/opt", "/var/lib"):
        with pytest.raises(UnsafeMountPoint):
            check_mount_target(path)
    with pytest.raises(UnsafeMountPoint, match="absolute"):
        check_mount_target("data")
    for path in ("/data", "/mnt", "/mnt/imagenet", "/srv/data", "/home/ubuntu/data", "/var/data", "/opt/datasets"):
        assert check_mount_target(path) == path


def test_mount_options() -> None:
    assert [read_only_mount_options(fs) for fs in ("ext4", "ext3", "xfs", "btrfs", "vfat", None)] == [
        "ro,noload", "ro,noload", "ro,norecovery", "ro,rescue=nologreplay", "ro", "ro"]


def test_no_second_copy_of_these_rules() -> None:
    """Before: replicate and userdata each had a VOLUME_TYPES and a snapshot-id regex, and they differed."""
    sources = [path for folder in ("aws", "userdata", "recordio_pack")
               for path in (REPO / folder).rglob("*.py") if path.name != "ebs_options.py"]
    for path in sources:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"VOLUME_TYPES\s*=|\"gp2\", \"io1\"", text), path
        assert not re.search(r"\^(snap|vol|i|ami)-\[0-9a-f\]", text), path
        assert not re.search(r"[\"']ro,(noload|norecovery)[\"']", text), path
    assert set(ID_PATTERNS) == {"snapshot", "volume", "instance", "image"}
