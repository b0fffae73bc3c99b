"""Local side on the instance: volume id <-> device, mountinfo, read-only mounts, all on a fake /proc /sys /dev."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from recordio_pack.mount import (LocalPaths, detect_fstype, device_for_volume, mount_entry_for, mount_options,
                                 mount_volume, read_mountinfo, volume_for_mount_point)
from recordio_pack.errors import RecordioPackError, RefusedError, UsageError

VOLUME = "vol-0123456789abcdef0"
EXT4 = b"\0" * 1080 + b"\x53\xef" + b"\0" * 1000
XFS = b"XFSB" + b"\0" * 2044


def fake_system(root: Path, mountinfo: str = "") -> LocalPaths:
    paths = LocalPaths(proc=root / "proc", sys=root / "sys", dev=root / "dev", by_id=root / "dev" / "disk" / "by-id")
    (paths.proc / "self").mkdir(parents=True)
    (paths.proc / "self" / "mountinfo").write_text(mountinfo)
    paths.by_id.mkdir(parents=True)
    (paths.sys / "block").mkdir(parents=True)
    return paths


def add_nvme(paths: LocalPaths, name: str, volume_id: str | None, content: bytes = EXT4, by_id: bool = True,
             serial: bool = True) -> Path:
    device = paths.dev / name
    device.write_bytes(content)
    (paths.sys / "block" / name / "device").mkdir(parents=True)
    if volume_id and serial:  # the kernel pads the serial with spaces
        (paths.sys / "block" / name / "device" / "serial").write_text(volume_id.replace("-", "").ljust(20) + "\n")
    if volume_id and by_id:
        os.symlink(f"../../{name}", paths.by_id / f"nvme-Amazon_Elastic_Block_Store_{volume_id.replace('-', '')}")
        os.symlink(f"../../{name}p1", paths.by_id / f"nvme-Amazon_Elastic_Block_Store_{volume_id.replace('-', '')}-part1")
    return device


class Recorder:
    """Stands in for subprocess.run and remembers each command."""

    def __init__(self, returncode: int = 0, stderr: str = "") -> None:
        self.calls: list[list[str]] = []
        self.returncode, self.stderr = returncode, stderr

    def __call__(self, argv: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        self.calls.append(list(argv))
        return subprocess.CompletedProcess(argv, self.returncode, "", self.stderr)


def test_mountinfo_parse_unescapes_and_finds_the_longest_mount(tmp_path: Path) -> None:
    paths = fake_system(tmp_path, (
        "22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p1 rw\n"
        "40 22 259:3 / /data\\040set rw,relatime shared:5 master:2 - xfs /dev/nvme1n1 rw,attr2\n"
        "41 22 0:5 / /proc rw - proc proc rw\n"))
    entries = read_mountinfo(paths)
    assert [entry.mount_point for entry in entries] == ["/", "/data set", "/proc"]
    assert entries[1].fstype == "xfs" and entries[1].source == "/dev/nvme1n1" and entries[1].major_minor == "259:3"
    assert mount_entry_for("/data set/train/x.rec", entries).mount_point == "/data set"
    assert mount_entry_for("/data settle", entries).mount_point == "/"


def test_volume_for_mount_point_by_serial_through_partition(tmp_path: Path) -> None:
    paths = fake_system(tmp_path, "22 1 259:4 / /data rw - ext4 /dev/nvme1n1p1 rw\n")
    add_nvme(paths, "nvme1n1", VOLUME, by_id=False)
    (paths.sys / "dev" / "block").mkdir(parents=True)
    os.symlink("../../block/nvme1n1/nvme1n1p1", paths.sys / "dev" / "block" / "259:4")
    volume_id, entry = volume_for_mount_point("/data/imagenet", paths)
    assert volume_id == VOLUME and entry.mount_point == "/data"


def test_volume_for_mount_point_by_id_symlink_when_no_serial(tmp_path: Path) -> None:
    paths = fake_system(tmp_path, "22 1 259:4 / /data rw - xfs /dev/nvme2n1 rw\n")
    add_nvme(paths, "nvme2n1", VOLUME, serial=False)
    assert volume_for_mount_point("/data", paths)[0] == VOLUME


def test_volume_for_mount_point_refuses_lvm_and_non_ebs(tmp_path: Path) -> None:
    paths = fake_system(tmp_path, "22 1 253:0 / /data rw - ext4 /dev/mapper/vg-data rw\n"
                                  "23 1 259:9 / /scratch rw - ext4 /dev/nvme3n1 rw\n")
    with pytest.raises(RecordioPackError, match="device-mapper"):
        volume_for_mount_point("/data", paths)
    add_nvme(paths, "nvme3n1", None)  # instance store: serial is not vol...
    (paths.sys / "block" / "nvme3n1" / "device" / "serial").write_text("AWS1234567890ABCDEF\n")
    with pytest.raises(RecordioPackError, match="name the volume by its id"):
        volume_for_mount_point("/scratch", paths)


def test_device_lookup_order_by_id_then_serial_then_xen_name(tmp_path: Path) -> None:
    paths = fake_system(tmp_path)
    add_nvme(paths, "nvme4n1", "vol-0aaaaaaaaaaaaaaaa", serial=False)
    add_nvme(paths, "nvme5n1", "vol-0bbbbbbbbbbbbbbbb", by_id=False)
    (paths.dev / "xvdg").write_bytes(EXT4)
    no_wait = dict(wait_seconds=0, sleep=lambda s: None)
    assert device_for_volume("vol-0aaaaaaaaaaaaaaaa", paths, **no_wait).name == "nvme4n1"
    assert device_for_volume("vol-0bbbbbbbbbbbbbbbb", paths, **no_wait) == paths.dev / "nvme5n1"
    assert device_for_volume("vol-0cccccccccccccccc", paths, attachment_device="/dev/sdg", **no_wait) == paths.dev / "xvdg"
    with pytest.raises(RecordioPackError, match="no local device for vol-0ddd"):
        device_for_volume("vol-0dddddddddddddddd", paths, **no_wait)


def test_device_lookup_waits_for_udev(tmp_path: Path) -> None:
    paths = fake_system(tmp_path)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:  # the link appears after the second poll
        sleeps.append(seconds)
        if len(sleeps) == 2:
            add_nvme(paths, "nvme1n1", VOLUME)

    assert device_for_volume(VOLUME, paths, wait_seconds=3600, sleep=sleep).name == "nvme1n1"
    assert len(sleeps) == 2


def test_fstype_and_options(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(EXT4)
    (tmp_path / "b").write_bytes(XFS)
    (tmp_path / "c").write_bytes(b"\0" * 4096)
    assert [detect_fstype(tmp_path / name) for name in "abc"] == ["ext4", "xfs", None]
    assert mount_options("ext4") == "ro,noload"
    assert mount_options("xfs", ["nouuid"]) == "ro,norecovery,nouuid"
    assert mount_options(None) == "ro"


@pytest.mark.parametrize("content, fstype, options", [(EXT4, "ext4", "ro,noload"), (XFS, "xfs", "ro,norecovery")])
def test_mount_runs_the_configured_command_read_only(tmp_path: Path, content: bytes, fstype: str, options: str) -> None:
    paths = fake_system(tmp_path)
    device = add_nvme(paths, "nvme1n1", VOLUME, content)
    run = Recorder()
    target = tmp_path / "mnt" / "data"
    result = mount_volume(VOLUME, str(target), paths=paths, mount_command=["sudo", "mount"], run=run, wait_seconds=0)
    assert run.calls == [["sudo", "mount", "-t", fstype, "-o", options, str(device), str(target)]]
    assert result.state == "mounted" and result.options == options and target.is_dir()


def test_mount_is_idempotent_and_refuses_a_foreign_mount(tmp_path: Path) -> None:
    target = str(tmp_path / "data")
    paths = fake_system(tmp_path, f"30 1 259:3 / {target} ro,relatime - ext4 /dev/nvme1n1 ro,norecovery\n")
    add_nvme(paths, "nvme1n1", VOLUME)
    run = Recorder()
    result = mount_volume(VOLUME, target, paths=paths, run=run, wait_seconds=0, fstype="ext4")
    assert result.state == "already-mounted" and run.calls == []

    other = fake_system(tmp_path / "other", f"30 1 259:3 / {target} ro - ext4 /dev/nvme7n1 ro\n")
    add_nvme(other, "nvme1n1", VOLUME)
    with pytest.raises(RefusedError, match="nvme7n1 is already mounted"):
        mount_volume(VOLUME, target, paths=other, run=run, wait_seconds=0)
    assert run.calls == []


def test_mount_failure_is_one_clear_error(tmp_path: Path) -> None:
    paths = fake_system(tmp_path)
    add_nvme(paths, "nvme1n1", VOLUME)
    with pytest.raises(RecordioPackError, match="failed \\(32\\): mount: permission denied"):
        mount_volume(VOLUME, str(tmp_path / "d"), paths=paths, run=Recorder(32, "mount: permission denied"),
                     wait_seconds=0)


def test_mount_refuses_system_folders_folders_with_files_and_malformed_ids(tmp_path: Path) -> None:
    paths = fake_system(tmp_path)
    add_nvme(paths, "nvme1n1", VOLUME)
    run = Recorder()
    for system in ("/", "/etc", "/usr/share/data", "//.", "/var", "/home", "/proc/1"):
        with pytest.raises(UsageError, match="refusing to mount on"):
            mount_volume(VOLUME, system, paths=paths, run=run, wait_seconds=0)
    os.symlink("/etc", tmp_path / "innocent")  # resolved first: a link to /etc is /etc
    with pytest.raises(UsageError, match="inside /etc"):
        mount_volume(VOLUME, str(tmp_path / "innocent"), paths=paths, run=run, wait_seconds=0)
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    with pytest.raises(RefusedError, match="is not empty \\(it holds notes.txt"):
        mount_volume(VOLUME, str(full), paths=paths, run=run, wait_seconds=0)
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(RecordioPackError, match="cannot use .*a-file as a mount point"):
        mount_volume(VOLUME, str(tmp_path / "a-file"), paths=paths, run=run, wait_seconds=0)
    with pytest.raises(UsageError, match="not an EC2 volume id"):
        mount_volume("vol-xyz", str(tmp_path / "d"), paths=paths, run=run, wait_seconds=0)
    assert run.calls == []


def test_xen_device_name_is_asked_from_ec2_once_when_the_id_is_not_found(tmp_path: Path) -> None:
    paths = fake_system(tmp_path)
    (paths.dev / "xvdh").write_bytes(XFS)
    asked: list[str] = []

    def lookup(volume_id: str) -> str | None:
        asked.append(volume_id)
        return "/dev/sdh"

    run = Recorder()
    result = mount_volume(VOLUME, str(tmp_path / "d"), paths=paths, run=run, wait_seconds=0, lookup_attachment=lookup)
    assert asked == [VOLUME] and result.device == str(paths.dev / "xvdh") and result.options == "ro,norecovery"
    add_nvme(paths, "nvme1n1", "vol-0aaaaaaaaaaaaaaaa")
    device_for_volume("vol-0aaaaaaaaaaaaaaaa", paths, wait_seconds=0, lookup_attachment=lookup)
    assert asked == [VOLUME]  # found by id: EC2 is not asked
