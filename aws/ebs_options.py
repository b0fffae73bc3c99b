"""The one place for EBS option rules: resource-id patterns, volume types and their limits, mount targets and
read-only mount options. Pure (no boto3, no file system): ``replicate``, ``userdata``, ``launch``, ``mount`` and
``snapshot`` all check their values here, so the same value is accepted or refused the same way everywhere.

Limits are AWS's published ones (EC2 ``CreateVolume`` API reference and the EBS volume-type pages): sizes in GiB,
IOPS in I/O operations per second, throughput in MiB/s. Messages name the value, never a command-line flag.
"""

from __future__ import annotations

import math
import posixpath
import re
from dataclasses import dataclass

from recordio_pack.errors import UsageError

__all__ = ["MalformedId", "InvalidVolumeSpec", "UnsafeMountPoint", "ID_PATTERNS", "check_id", "check_region",
           "VolumeLimits",
           "VOLUME_LIMITS", "VOLUME_TYPES", "VolumeSpec", "INITIALIZATION_RATE_RANGE", "check_initialization_rate",
           "READ_ONLY_MOUNT_OPTIONS", "read_only_mount_options", "SYSTEM_TREES", "SYSTEM_FOLDERS",
           "check_mount_target"]


class MalformedId(UsageError):
    """An EC2 resource id that cannot be one (wrong prefix, wrong length, not hex): bad usage, exit 2."""


class InvalidVolumeSpec(UsageError):
    """A volume type, size, IOPS or throughput that AWS would refuse."""


class UnsafeMountPoint(UsageError):
    """A mount target that would hide a system folder."""


# EC2 ids: prefix, a hyphen, then 8 hex digits (older resources) or 17 (since 2016-2018).
_HEX_ID = "[0-9a-f]{8}(?:[0-9a-f]{9})?"
ID_PATTERNS: dict[str, re.Pattern[str]] = {
    kind: re.compile(f"^{prefix}-{_HEX_ID}$")
    for kind, prefix in (("snapshot", "snap"), ("volume", "vol"), ("instance", "i"), ("image", "ami"))}
_ID_EXAMPLES = {"snapshot": "snap-0123456789abcdef0", "volume": "vol-0123456789abcdef0",
                "instance": "i-0123456789abcdef0", "image": "ami-0123456789abcdef0"}


def check_id(kind: str, value: str) -> str:
    """``value`` when it is a well-formed ``kind`` id ("snapshot", "volume", "instance", "image"); else
    ``MalformedId``. Well-formed ids that do not exist are AWS's to report (exit 1), not this check's."""
    if not ID_PATTERNS[kind].fullmatch(value or ""):
        raise MalformedId(f"not an EC2 {kind} id: {value!r} (expected {_ID_EXAMPLES[kind]}: the prefix and 8 or 17 "
                          "hex digits)")
    return value


_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")  # us-east-1, ap-southeast-2, us-gov-west-1


def check_region(name: str) -> str:
    """``name`` when it looks like an AWS region name; else ``MalformedId`` (checked before anything is created)."""
    if not _REGION.fullmatch(name or ""):
        raise MalformedId(f"not an AWS region name: {name!r} (expected e.g. us-east-1)")
    return name


@dataclass(frozen=True)
class VolumeLimits:
    """What one volume type accepts. ``iops``/``throughput`` None: the type takes no such setting.
    ``iops_per_gib``: the highest IOPS-to-size ratio; ``mibps_per_iops``: the highest throughput-to-IOPS ratio."""

    size_gib: tuple[int, int]
    iops: tuple[int, int] | None = None
    iops_required: bool = False
    default_iops: int | None = None
    iops_per_gib: int | None = None
    throughput: tuple[int, int] | None = None
    mibps_per_iops: float | None = None


VOLUME_LIMITS: dict[str, VolumeLimits] = {
    "gp3": VolumeLimits((1, 65536), iops=(3000, 80000), default_iops=3000, iops_per_gib=500,
                        throughput=(125, 2000), mibps_per_iops=0.25),
    "gp2": VolumeLimits((1, 16384)),
    "io1": VolumeLimits((4, 16384), iops=(100, 64000), iops_required=True, iops_per_gib=50),
    "io2": VolumeLimits((4, 65536), iops=(100, 256000), iops_required=True, iops_per_gib=1000),
    "st1": VolumeLimits((125, 16384)),
    "sc1": VolumeLimits((125, 16384)),
    "standard": VolumeLimits((1, 1024)),
}
VOLUME_TYPES: tuple[str, ...] = tuple(VOLUME_LIMITS)
INITIALIZATION_RATE_RANGE = (100, 300)  # MiB/s, EBS's provisioned rate for volume initialization


def _within(what: str, value: int, bounds: tuple[int, int], volume_type: str) -> None:
    low, high = bounds
    if not low <= value <= high:
        raise InvalidVolumeSpec(f"{volume_type} {what} must be {low}-{high}, not {value}")


@dataclass(frozen=True)
class VolumeSpec:
    """A volume to create, checked against ``VOLUME_LIMITS`` when made. ``size_gib`` None: the snapshot's size,
    so the size-dependent checks wait for ``with_size`` (replicate knows the snapshot's size; the boot script
    does not, and AWS checks it there)."""

    volume_type: str = "gp3"
    iops: int | None = None
    throughput: int | None = None  # MiB/s
    size_gib: int | None = None

    def __post_init__(self) -> None:
        limits = VOLUME_LIMITS.get(self.volume_type)
        if limits is None:
            raise InvalidVolumeSpec(f"volume type must be one of {', '.join(VOLUME_TYPES)}: {self.volume_type!r}")
        if self.iops is not None:
            if limits.iops is None:
                raise InvalidVolumeSpec(f"IOPS can be set for gp3, io1 and io2 volumes, not {self.volume_type}")
            _within("IOPS", self.iops, limits.iops, self.volume_type)
        elif limits.iops_required:
            raise InvalidVolumeSpec(f"{self.volume_type} volumes need an IOPS value "
                                    f"({limits.iops[0]}-{limits.iops[1]})")  # type: ignore[index]
        if self.throughput is not None:
            if limits.throughput is None:
                raise InvalidVolumeSpec(f"throughput can be set for gp3 volumes only, not {self.volume_type}")
            _within("throughput (MiB/s)", self.throughput, limits.throughput, self.volume_type)
            iops = self.iops or limits.default_iops or 0
            if limits.mibps_per_iops and self.throughput > iops * limits.mibps_per_iops:
                raise InvalidVolumeSpec(
                    f"{self.volume_type} throughput {self.throughput} MiB/s needs at least "
                    f"{math.ceil(self.throughput / limits.mibps_per_iops)} IOPS (at most {limits.mibps_per_iops} MiB/s "
                    f"per IOPS; IOPS is {iops})")
        if self.size_gib is not None:
            _within("size (GiB)", self.size_gib, limits.size_gib, self.volume_type)
            if self.iops is not None and limits.iops_per_gib and self.iops > self.size_gib * limits.iops_per_gib:
                raise InvalidVolumeSpec(
                    f"{self.volume_type} IOPS {self.iops} is over {limits.iops_per_gib} per GiB of a "
                    f"{self.size_gib} GiB volume (at most {self.size_gib * limits.iops_per_gib})")

    def with_size(self, size_gib: int) -> VolumeSpec:
        """This spec at ``size_gib`` (checked again, size-dependent rules included)."""
        return VolumeSpec(self.volume_type, self.iops, self.throughput, size_gib)


def check_initialization_rate(rate: int | None) -> int | None:
    low, high = INITIALIZATION_RATE_RANGE
    if rate is not None and not low <= rate <= high:
        raise InvalidVolumeSpec(f"the volume initialization rate must be {low}-{high} MiB/s (EBS's range): {rate}")
    return rate


# Read-only without journal replay: a volume made from a snapshot of a live filesystem has an unclean journal,
# and replaying it writes (a plain "ro" ext4 mount replays).
READ_ONLY_MOUNT_OPTIONS: dict[str, str] = {
    "ext2": "ro,noload", "ext3": "ro,noload", "ext4": "ro,noload",
    "xfs": "ro,norecovery",
    "btrfs": "ro,rescue=nologreplay",
}


def read_only_mount_options(fstype: str | None) -> str:
    """``"ro,noload"`` for ext*, ``"ro,norecovery"`` for xfs, ``"ro,rescue=nologreplay"`` for btrfs, else ``"ro"``."""
    return READ_ONLY_MOUNT_OPTIONS.get(fstype or "", "ro")


# Mount targets. A mount hides whatever the folder held, so:
# - SYSTEM_TREES are refused, and every folder below them (the OS, kernel views, volatile /run);
# - SYSTEM_FOLDERS, and each home folder /home/USER, are refused themselves (mounting on them hides homes, SSH
#   keys, logs, packages), while a folder below them (/home/ubuntu/data, /var/data, /opt/datasets) is the user's
#   choice. /mnt, /media and /srv exist to be mounted on and stay allowed.
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run", "/sbin",
                "/snap", "/sys", "/usr")
SYSTEM_FOLDERS = ("/", "/home", "/opt", "/root", "/tmp", "/var", "/var/cache", "/var/lib", "/var/log", "/var/mail",
                  "/var/spool", "/var/tmp", "/lost+found")


def check_mount_target(path: str) -> str:
    """The normalized absolute ``path`` when it may receive a mount; ``UnsafeMountPoint`` for a system folder
    (see ``SYSTEM_TREES`` and ``SYSTEM_FOLDERS``). Resolving symbolic links is the caller's job on the instance."""
    if not path.startswith("/"):
        raise UnsafeMountPoint(f"a mount point must be an absolute path: {path!r}")
    normal = posixpath.normpath(path)
    normal = "/" + normal.lstrip("/")  # POSIX keeps a leading "//"; Linux treats it as "/"
    for tree in SYSTEM_TREES:
        if normal == tree or normal.startswith(tree + "/"):
            raise UnsafeMountPoint(f"refusing to mount on {path!r}: it is inside {tree}, a system folder "
                                   "(choose e.g. /data or /mnt/dataset)")
    if normal in SYSTEM_FOLDERS:
        raise UnsafeMountPoint(f"refusing to mount on {path!r}: mounting there hides the system's {normal} "
                               "(choose a folder below it, e.g. /data or /mnt/dataset)")
    if posixpath.dirname(normal) == "/home":
        raise UnsafeMountPoint(f"refusing to mount on {path!r}: it is a user's home folder, and mounting there hides "
                               f"it, SSH keys included (choose e.g. {normal}/data)")
    return normal
