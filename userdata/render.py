"""Render the boot script into EC2 user-data: plain bash, or cloud-config around it.

The script is ``common.sh.tmpl`` (settings, logging, instance metadata) followed by the body for the data
source: ``boot.sh.tmpl`` (a volume from an EBS snapshot) or ``boot-s3.sh.tmpl`` (S3 onto instance-store NVMe).
Together they are a complete, commented bash script except for one marker line, replaced by a block of shell
variable assignments built here from validated options (every value is shell-quoted as well). Comment lines are
dropped when rendering (the template holds no heredocs or multi-line strings, so that is safe) to leave room
under EC2's user-data limit of 16 KB (16384 bytes, counted before base64), which the rendered text must fit.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from recordio_pack import __version__
from recordio_pack.aws.ebs_options import (
    VolumeSpec,
    check_id,
    check_initialization_rate,
    check_mount_target,
    check_region,
    read_only_mount_options,
)
from recordio_pack.aws.s3 import parse_s3_uri
from recordio_pack.errors import RecordioPackError, RefusedError, UsageError
from recordio_pack.fsutil import atomic_output

__all__ = ["MAX_USER_DATA_BYTES", "FORMATS", "SCRIPT_PATH", "UserDataOptions", "UserDataTooLarge", "OutputExists",
           "render_script", "render", "check_size", "write_user_data"]

MAX_USER_DATA_BYTES = 16384  # EC2's limit on raw user-data
FORMATS = ("shell", "cloud-config")
SCRIPT_PATH = "/usr/local/sbin/recordio-pack-boot.sh"  # where the cloud-config variant keeps the script
_MARKER = "@@SETTINGS@@"

_MOUNT_POINT = re.compile(r"^(/[A-Za-z0-9._+-]+)+$")  # no spaces or quotes: it goes into fstab and awk
_DEVICE = re.compile(r"^/dev/(sd|xvd)[b-z][a-z]?$")
_LABEL = re.compile(r"^[A-Za-z0-9._-]{1,16}$")
S3_FILESYSTEM = "ext4"  # what the S3 script makes on the instance store
S3_LABEL = "rp-dataset"  # its label unless one is given: how the script knows its own filesystem again
RAID_NAME = "recordio-pack"  # the md array's name, likewise


class OutputExists(RefusedError):
    """The file to write exists and replacing it was not allowed."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} exists; allow overwriting to replace it")
        self.path = path


class UserDataTooLarge(UsageError):
    """The rendered user-data is over EC2's 16 KB limit: bad usage (exit 2), the message names the size."""


@dataclass(frozen=True)
class UserDataOptions:
    """What the boot script does. Sizes: ``size_gib`` in GiB (None: the snapshot's size); ``iops`` in I/O
    operations per second; ``throughput`` in MiB/s (gp3 only); ``prewarm_rate`` in MiB/s, 100-300, given to
    create-volume as the volume initialization rate (implies ``prewarm``). ``region`` None: the instance's own,
    read from instance metadata at boot. Exactly one of ``snapshot_id`` (an EBS volume from the snapshot) and
    ``source`` (``s3://bucket/prefix``, restored onto the instance-store NVMe disks; the volume options do not
    apply, ``filesystem_label`` names the filesystem the script makes, default ``rp-dataset``)."""

    snapshot_id: str | None = None
    source: str | None = None
    mount_point: str = "/data"
    volume_type: str = "gp3"
    iops: int | None = None
    throughput: int | None = None
    size_gib: int | None = None
    device: str = "/dev/sdf"
    filesystem_label: str | None = None
    prewarm: bool = False
    prewarm_rate: int | None = None
    delete_on_termination: bool = True
    region: str | None = None

    def __post_init__(self) -> None:
        if (self.snapshot_id is None) == (self.source is None):
            raise UsageError("give either a snapshot id (an EBS volume) or an s3:// source (instance-store NVMe)")
        if self.snapshot_id is not None:
            check_id("snapshot", self.snapshot_id)
        else:
            self._check_source()
        if not _MOUNT_POINT.fullmatch(self.mount_point) or "/." in self.mount_point:
            raise UsageError(f"mount point must be an absolute path of letters, digits and ._+- "
                             f"(no trailing slash, no . or .. parts): {self.mount_point!r}")
        check_mount_target(self.mount_point)
        VolumeSpec(self.volume_type, self.iops, self.throughput, self.size_gib)
        if not _DEVICE.fullmatch(self.device):
            raise UsageError(f"device name must look like /dev/sdf or /dev/xvdf: {self.device!r}")
        if self.filesystem_label is not None and not _LABEL.fullmatch(self.filesystem_label):
            raise UsageError(f"filesystem label must be 1-16 letters, digits or ._-: {self.filesystem_label!r}")
        check_initialization_rate(self.prewarm_rate)
        if self.region is not None:
            check_region(self.region)

    def _check_source(self) -> None:
        assert self.source is not None
        try:
            parse_s3_uri(self.source)
        except ValueError as error:
            raise UsageError(str(error)) from None
        if not re.fullmatch(r"s3://[ -~]+", self.source) or "'" in self.source:
            raise UsageError(f"the S3 source must be printable ASCII without quotes: {self.source!r}")
        ebs_only = {"--volume-type": self.volume_type != "gp3", "--iops": self.iops is not None,
                    "--throughput": self.throughput is not None, "--size": self.size_gib is not None,
                    "--device": self.device != "/dev/sdf", "--prewarm": self.prewarm,
                    "--prewarm-rate": self.prewarm_rate is not None,
                    "--no-delete-on-termination": not self.delete_on_termination}
        given = [flag for flag, set_ in ebs_only.items() if set_]
        if given:
            raise UsageError(f"{', '.join(given)} shape an EBS volume; with an S3 source the dataset goes onto "
                             "the instance store")

    @property
    def description(self) -> str:
        """What the script does, in a few words (for its header)."""
        if self.source is not None:
            return f"{self.source} onto instance-store NVMe at {self.mount_point}"
        return f"{self.snapshot_id} read-only at {self.mount_point}"

    @property
    def body(self) -> str:
        """The template that follows ``common.sh.tmpl``."""
        return "boot-s3.sh.tmpl" if self.source is not None else "boot.sh.tmpl"

    def settings(self) -> dict[str, str]:
        """The shell variables the template reads, as strings (empty: not set)."""
        def text(value: object) -> str:
            return "" if value is None else str(value)

        if self.source is not None:
            return {"SOURCE_URI": self.source.rstrip("/"), "MOUNT_POINT": self.mount_point,
                    "REGION": text(self.region), "TOOL_VERSION": __version__, "FS_TYPE": S3_FILESYSTEM,
                    "FS_LABEL": self.filesystem_label or S3_LABEL, "RAID_NAME": RAID_NAME}
        return {
            "SNAPSHOT_ID": text(self.snapshot_id),
            "MOUNT_POINT": self.mount_point,
            "VOLUME_TYPE": self.volume_type,
            "VOLUME_IOPS": text(self.iops),
            "VOLUME_THROUGHPUT": text(self.throughput),
            "VOLUME_SIZE": text(self.size_gib),
            "DEVICE_NAME": self.device,
            "FS_LABEL": text(self.filesystem_label),
            "PREWARM": "1" if self.prewarm or self.prewarm_rate is not None else "0",
            "PREWARM_RATE": text(self.prewarm_rate),
            "DELETE_ON_TERMINATION": "true" if self.delete_on_termination else "false",
            "REGION": text(self.region),
            "TOOL_VERSION": __version__,
            "EXT_MOUNT_OPTS": read_only_mount_options("ext4"),
            "XFS_MOUNT_OPTS": read_only_mount_options("xfs"),
            "BTRFS_MOUNT_OPTS": read_only_mount_options("btrfs"),
        }


def _template(body: str) -> str:
    folder = resources.files("recordio_pack.userdata")
    return "".join(folder.joinpath(name).read_text(encoding="utf-8") for name in ("common.sh.tmpl", body))


def _strip_comments(script: str) -> str:
    return "".join(line for line in script.splitlines(keepends=True)
                   if line.startswith("#!") or not line.lstrip().startswith("#"))


def render_script(options: UserDataOptions) -> str:
    """The bash boot script for ``options`` (not size-checked; ``render`` checks)."""
    template = _template(options.body)
    if template.count(_MARKER) != 1:
        raise RecordioPackError("the boot script template is damaged (settings marker missing)")
    header = (f"# recordio-pack {__version__} boot script: {options.description}.\n"
              f"# Rendered from recordio_pack/userdata/common.sh.tmpl + {options.body} (the commented source); "
              "safe to re-run.\n")
    block = "\n".join(f"{name}={shlex.quote(value) if value else ''}"
                      for name, value in options.settings().items())
    shebang, rest = _strip_comments(template).split("\n", 1)
    return f"{shebang}\n{header}{rest.replace(_MARKER, block)}"


def _cloud_config(script: str, options: UserDataOptions) -> str:
    # A YAML literal block keeps the script byte for byte (only indentation is added), and write_files keeps
    # it on disk so it can be re-run by hand; runcmd runs it once per instance, like a plain user-data script.
    body = "".join(f"    {line}\n" if line else "\n" for line in script.splitlines())
    return (
        "#cloud-config\n"
        f"# recordio-pack: {options.description}\n"
        "write_files:\n"
        f"- path: {SCRIPT_PATH}\n"
        "  owner: root:root\n"
        "  permissions: '0755'\n"
        "  content: |\n"
        f"{body}"
        "runcmd:\n"
        f"- [bash, {SCRIPT_PATH}]\n"
    )


def check_size(text: str) -> int:
    """The size of ``text`` in bytes (UTF-8); raises ``UserDataTooLarge`` over ``MAX_USER_DATA_BYTES``."""
    size = len(text.encode("utf-8"))
    if size > MAX_USER_DATA_BYTES:
        raise UserDataTooLarge(f"user-data is {size} bytes, over EC2's limit of {MAX_USER_DATA_BYTES}")
    return size


def render(options: UserDataOptions, fmt: str = "shell") -> str:
    """User-data text in ``fmt`` ("shell": a bash script; "cloud-config": the same script inside a
    #cloud-config document), checked against the 16 KB limit."""
    if fmt not in FORMATS:
        raise UsageError(f"format must be one of {', '.join(FORMATS)}: {fmt!r}")
    script = render_script(options)
    text = script if fmt == "shell" else _cloud_config(script, options)
    check_size(text)
    return text


def write_user_data(path: str | os.PathLike[str], text: str, overwrite: bool = False) -> Path:
    """Write ``text`` to ``path`` atomically (a temp file in the same folder, fsync, rename); refuses an
    existing file unless ``overwrite``."""
    target = Path(path)
    if target.exists() and not overwrite:
        raise OutputExists(target)
    try:
        with atomic_output(target, "w", encoding="utf-8", newline="\n", permissions=0o644) as handle:
            handle.write(text)
    except OSError as error:  # e.g. disk full, or target is a folder: one line, no temp file left
        if isinstance(error, FileNotFoundError) and not target.parent.is_dir():
            raise UsageError(f"cannot write {target}: the folder {target.parent} does not exist") from None
        raise RecordioPackError(f"cannot write {target}: {error.strerror or error}") from None
    return target
