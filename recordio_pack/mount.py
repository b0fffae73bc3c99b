"""On the instance: EBS volume id <-> local block device, and a read-only mount without journal replay.

Nitro instances expose EBS volumes as NVMe devices whose names (``nvme1n1``) say nothing about the volume;
the volume id is the NVMe serial (``vol0123…``, no hyphen) and udev links it as
``/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0123…``. Xen instances keep the attachment name with an
``xvd`` prefix (``/dev/sdf`` -> ``/dev/xvdf``). Every root (/proc, /sys, /dev, by-id) is injectable so tests
build a fake tree in a temp folder.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from recordio_pack.aws.ebs_options import check_id, check_mount_target, read_only_mount_options
from recordio_pack.errors import RecordioPackError, RefusedError

__all__ = ["LocalPaths", "MountEntry", "MountResult", "FreezeRefused", "read_mountinfo", "mount_entry_for",
           "disk_of", "volume_id_of_disk", "volume_for_mount_point", "device_for_volume", "detect_fstype",
           "mount_options", "mount_volume", "PROTECTED_FROM_FREEZE", "tool_paths", "freezable_mount_root"]

BY_ID_PREFIX = "nvme-Amazon_Elastic_Block_Store_"


@dataclass(frozen=True)
class LocalPaths:
    """Where the kernel's views live; tests point these into a temp folder."""

    proc: Path = Path("/proc")
    sys: Path = Path("/sys")
    dev: Path = Path("/dev")
    by_id: Path = Path("/dev/disk/by-id")


class FreezeRefused(RefusedError):
    """Freezing this filesystem would block the machine or this command itself (exit 3)."""


@dataclass(frozen=True)
class MountEntry:
    mount_point: str
    source: str  # e.g. /dev/nvme1n1p1
    fstype: str
    major_minor: str  # "259:1"
    options: str


@dataclass(frozen=True)
class MountResult:
    volume_id: str
    device: str
    mount_point: str
    fstype: str | None
    options: str
    state: str  # "mounted" or "already-mounted"

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as 3-digit octal."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)


def read_mountinfo(paths: LocalPaths = LocalPaths()) -> list[MountEntry]:
    """Parse ``/proc/self/mountinfo`` (proc(5)); later lines are mounts made on top of earlier ones."""
    entries = []
    for line in (paths.proc / "self" / "mountinfo").read_text(encoding="utf-8", errors="replace").splitlines():
        fields = line.split(" ")
        if "-" not in fields[6:]:
            continue
        separator = fields.index("-", 6)
        if len(fields) < separator + 3:
            continue
        entries.append(MountEntry(mount_point=_unescape(fields[4]), source=_unescape(fields[separator + 2]),
                                  fstype=fields[separator + 1], major_minor=fields[2], options=fields[5]))
    return entries


def mount_entry_for(path: str, entries: Sequence[MountEntry]) -> MountEntry | None:
    """The mount that holds ``path``: the longest mount point containing it (the last one if stacked)."""
    target = os.path.normpath(os.path.abspath(path))
    best: MountEntry | None = None
    for entry in entries:
        point = entry.mount_point
        inside = target == point or point == "/" or target.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best.mount_point)):
            best = entry
    return best


def disk_of(entry: MountEntry, paths: LocalPaths = LocalPaths()) -> str:
    """The whole-disk kernel name (``nvme1n1``) behind a mount, partitions stripped."""
    link = paths.sys / "dev" / "block" / entry.major_minor
    name = Path(os.path.realpath(link)).name if link.exists() else Path(entry.source).name
    if name.startswith("dm-") or entry.source.startswith("/dev/mapper/"):
        raise RecordioPackError(f"{entry.mount_point} is on {entry.source}, a device-mapper (LVM/RAID) device that "
                                "may span several EBS volumes; snapshot each volume by its id instead")
    if (paths.sys / "block" / name).exists():
        return name
    match = re.match(r"^(nvme\d+n\d+)p\d+$", name) or re.match(r"^((?:xvd|sd|hd)[a-z]+)\d+$", name)
    return match.group(1) if match else name


def _volume_id_from_serial(serial: str) -> str | None:
    serial = serial.strip()
    match = re.match(r"^vol-?([0-9a-f]+)$", serial)
    return f"vol-{match.group(1)}" if match else None


def volume_id_of_disk(disk: str, paths: LocalPaths = LocalPaths()) -> str | None:
    """The EBS volume id of an NVMe disk: its serial in /sys, else the by-id symlink pointing at it."""
    serial_file = paths.sys / "block" / disk / "device" / "serial"
    if serial_file.exists():
        volume_id = _volume_id_from_serial(serial_file.read_text(errors="replace"))
        if volume_id:
            return volume_id
    if paths.by_id.is_dir():
        for link in sorted(paths.by_id.iterdir()):
            if link.name.startswith(BY_ID_PREFIX) and "-part" not in link.name:
                if Path(os.path.realpath(link)).name == disk:
                    return _volume_id_from_serial(link.name[len(BY_ID_PREFIX):].split("_")[0])
    return None


def volume_for_mount_point(mount_point: str, paths: LocalPaths = LocalPaths()) -> tuple[str, MountEntry]:
    """The EBS volume id behind a mounted path on this instance, and its mount entry."""
    entry = mount_entry_for(mount_point, read_mountinfo(paths))
    if entry is None or not entry.source.startswith("/dev/"):
        raise RecordioPackError(f"{mount_point} is not on a block device here (is it mounted? run this on the "
                                "instance, or name the volume by its id)")
    disk = disk_of(entry, paths)
    volume_id = volume_id_of_disk(disk, paths)
    if volume_id is None:
        raise RecordioPackError(f"cannot tell the EBS volume behind {entry.mount_point} ({entry.source}): no "
                                "'vol…' NVMe serial (not EBS, or a Xen instance); name the volume by its id")
    return volume_id, entry


# fsfreeze blocks every write to the whole filesystem under a folder; these must stay writable for the machine
# (logins, logs, package files) and this command (which must live to unfreeze) to go on.
PROTECTED_FROM_FREEZE = ("/", "/usr", "/var", "/etc", "/boot")


def _resolved(path: str) -> str:
    """Absolute, symbolic links resolved, ``.``/``..`` gone, and one leading slash (``//.`` -> ``/``)."""
    return "/" + os.path.realpath(path).lstrip("/")


def tool_paths() -> tuple[str, ...]:
    """Where this command runs from: the recordio_pack package folder, the interpreter (as called and resolved),
    its environment's prefix, and boto3/botocore, which import more of themselves while the filesystem would be
    frozen."""
    import importlib.util
    import sys

    import recordio_pack

    paths = [os.path.dirname(os.path.realpath(recordio_pack.__file__)), sys.executable,
             os.path.realpath(sys.executable), sys.prefix]
    for library in ("boto3", "botocore"):
        spec = importlib.util.find_spec(library)
        if spec is not None and spec.origin:
            paths.append(os.path.dirname(os.path.realpath(spec.origin)))
    return tuple(dict.fromkeys(paths))


def _read_mountinfo_for(doing: str, paths: LocalPaths) -> list[MountEntry]:
    try:
        return read_mountinfo(paths)
    except OSError as error:
        raise RecordioPackError(f"{doing}: cannot read {error.filename}: {error.strerror}") from None


def freezable_mount_root(mount_point: str, paths: LocalPaths = LocalPaths(),
                         tool: Sequence[str] | None = None) -> MountEntry:
    """The mount entry ``fsfreeze`` may freeze for ``mount_point``, or ``FreezeRefused``.

    ``mount_point`` (resolved: symbolic links, ``.``, ``..``, ``//``) must be the root of a mount, not a folder
    inside one, since fsfreeze would freeze the whole filesystem holding it; not a mount inside /usr, /var,
    /etc or /boot; and its filesystem (compared by device number, so bind mounts of it count) must hold none of
    ``PROTECTED_FROM_FREEZE`` nor ``tool`` (default ``tool_paths()``: the package and interpreter running now).
    """
    target = _resolved(mount_point)
    entries = _read_mountinfo_for("checking the filesystem to freeze", paths)
    roots = [entry for entry in entries if entry.mount_point == target]
    if not roots:
        holder = mount_entry_for(target, entries)
        where = holder.mount_point if holder else "?"
        raise FreezeRefused(f"{mount_point} ({target}) is not a mount point but a folder in the filesystem mounted at "
                            f"{where}, and fsfreeze would freeze all of {where}; give the mount point of the "
                            "dataset's own volume")
    entry = roots[-1]
    for system in PROTECTED_FROM_FREEZE[1:]:
        if entry.mount_point.startswith(system + "/"):
            raise FreezeRefused(f"refusing to freeze {entry.mount_point}: it is a filesystem inside {system}, where "
                                "the system keeps its own files; put the dataset on a volume mounted elsewhere")
    for path in (*PROTECTED_FROM_FREEZE, *(tool_paths() if tool is None else tool)):
        holder = mount_entry_for(_resolved(path), entries)
        if holder is not None and holder.major_minor == entry.major_minor:
            what = "this command's own files" if path not in PROTECTED_FROM_FREEZE else "the system's"
            raise FreezeRefused(f"refusing to freeze {entry.mount_point}: its filesystem ({entry.source}, "
                                f"{entry.major_minor}) also holds {path} ({what}), and everything writing there, this "
                                "command included, would hang until it is unfrozen; put the dataset on its own "
                                "volume")
    return entry


def _find_device(volume_id: str, paths: LocalPaths, attachment_device: str | None) -> Path | None:
    compact = volume_id.replace("-", "")
    if paths.by_id.is_dir():
        for link in sorted(paths.by_id.iterdir()):
            if link.name.startswith(BY_ID_PREFIX + compact) and "-part" not in link.name:
                rest = link.name[len(BY_ID_PREFIX + compact):]
                if rest == "" or rest.startswith("_") or rest.startswith("-ns"):
                    return Path(os.path.realpath(link))
    block = paths.sys / "block"
    if block.is_dir():
        for disk in sorted(block.iterdir()):
            serial = disk / "device" / "serial"
            if disk.name.startswith("nvme") and serial.exists():
                if _volume_id_from_serial(serial.read_text(errors="replace")) == volume_id:
                    return paths.dev / disk.name
    if attachment_device:
        letter = re.sub(r"^(?:/dev/)?(?:xvd|sd)", "", attachment_device)
        for name in (f"sd{letter}", f"xvd{letter}"):
            if (paths.dev / name).exists():
                return paths.dev / name
    return None


def device_for_volume(volume_id: str, paths: LocalPaths = LocalPaths(), attachment_device: str | None = None,
                      wait_seconds: float = 60.0, sleep: Callable[[float], None] = time.sleep,
                      clock: Callable[[], float] = time.monotonic,
                      lookup_attachment: Callable[[str], str | None] | None = None) -> Path:
    """The local block device of an attached EBS volume, waiting up to ``wait_seconds`` for udev to make it.

    Order: the by-id symlink, the NVMe serials in /sys, then (Xen) the attachment name as ``sdX``/``xvdX``.
    Without ``attachment_device``, ``lookup_attachment(volume_id)`` (an EC2 call) is asked for it once, after
    the first look finds nothing; it should return None rather than raise.
    """
    deadline = clock() + wait_seconds
    while True:
        device = _find_device(volume_id, paths, attachment_device)
        if device is not None:
            return device
        if attachment_device is None and lookup_attachment is not None:
            attachment_device, lookup_attachment = lookup_attachment(volume_id), None
            continue
        if clock() >= deadline:
            hint = "" if attachment_device else " (on a Xen instance give the attachment's device name)"
            raise RecordioPackError(f"no local device for {volume_id} after {wait_seconds:g} s: is it attached to "
                                    f"this instance?{hint}")
        sleep(1.0)


def detect_fstype(device: Path) -> str | None:
    """``"ext4"`` (any ext with a journal or not), ``"xfs"``, or None, from the superblock magic."""
    try:
        with open(device, "rb") as stream:
            head = stream.read(2048)
    except PermissionError:
        raise RecordioPackError(f"cannot read {device} to tell its filesystem: run as root or give the filesystem type") from None
    if head[:4] == b"XFSB":
        return "xfs"
    if len(head) >= 1082 and head[1080:1082] == b"\x53\xef":
        return "ext4"
    return None


def mount_options(fstype: str | None, extra: Sequence[str] = ()) -> str:
    """Read-only and no journal replay (``ebs_options.read_only_mount_options``: ``ro,noload`` for ext4,
    ``ro,norecovery`` for xfs), then ``extra``."""
    return ",".join([read_only_mount_options(fstype)] + [option for option in extra if option])


def _same_device(source: str, device: Path) -> bool:
    return os.path.realpath(source) == os.path.realpath(device) or Path(source).name == device.name


def _prepare_mount_point(target: str) -> None:
    """Create ``target``; refuse a folder that holds files, which the mount would hide."""
    try:
        os.makedirs(target, exist_ok=True)
        with os.scandir(target) as listing:
            hidden = next(listing, None)
    except OSError as error:
        raise RecordioPackError(f"cannot use {target} as a mount point: {error.strerror}") from None
    if hidden is not None:
        raise RefusedError(f"{target} is not empty (it holds {hidden.name}, ...), and mounting on it would hide "
                           "that; choose an empty or new folder")


def mount_volume(volume_id: str, mount_point: str, *, paths: LocalPaths = LocalPaths(),
                 attachment_device: str | None = None, fstype: str | None = None, extra_options: Sequence[str] = (),
                 mount_command: Sequence[str] = ("mount",), wait_seconds: float = 60.0,
                 run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
                 sleep: Callable[[float], None] = time.sleep,
                 lookup_attachment: Callable[[str], str | None] | None = None) -> MountResult:
    """Mount the attached EBS volume read-only at ``mount_point`` (created if missing).

    Idempotent: if this volume's device is already mounted there, nothing runs. Refuses when something else
    is mounted at ``mount_point``, when it is a system folder (``ebs_options.check_mount_target``) or a folder
    holding files that the mount would hide.
    """
    check_id("volume", volume_id)
    target = check_mount_target(_resolved(mount_point))
    device = device_for_volume(volume_id, paths, attachment_device, wait_seconds, sleep,
                               lookup_attachment=lookup_attachment)
    fstype = fstype or detect_fstype(device)
    options = mount_options(fstype, extra_options)
    current = [entry for entry in _read_mountinfo_for(f"mounting {volume_id}", paths) if entry.mount_point == target]
    if current:
        if _same_device(current[-1].source, device):
            return MountResult(volume_id, str(device), target, current[-1].fstype, current[-1].options,
                               "already-mounted")
        raise RefusedError(f"{current[-1].source} is already mounted at {target}; unmount it or choose another "
                           "mount point")
    _prepare_mount_point(target)
    command = [*mount_command, *(["-t", fstype] if fstype else []), "-o", options, str(device), target]
    completed = run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RecordioPackError(f"{' '.join(command)} failed ({completed.returncode}): "
                                f"{(completed.stderr or completed.stdout).strip()}")
    return MountResult(volume_id, str(device), target, fstype, options, "mounted")
