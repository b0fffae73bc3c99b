"""``recordio-pack mount``: on the instance, mount an attached dataset volume read-only, found by volume id."""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from recordio_pack.aws.ebs_options import READ_ONLY_MOUNT_OPTIONS
from recordio_pack.commands import _common
from recordio_pack.commands.snapshot import add_local_paths_options, local_paths


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "mount", help="mount an attached dataset volume read-only (run on the instance)",
        description="Find the local device of an attached EBS volume by its id (NVMe serial / "
                    "/dev/disk/by-id, else the Xen sdX/xvdX name) and mount it read-only without journal replay "
                    "(ext4: ro,noload; xfs: ro,norecovery). Does nothing when it is already mounted there. "
                    "Needs root.")
    parser.add_argument("--volume-id", required=True, help="the attached volume (vol-...)")
    parser.add_argument("--mount-point", required=True,
                        help="where to mount it (created if missing), e.g. /data; a folder holding files and system "
                             "folders (/, /etc, /usr, /var, /home, /opt, /tmp, ...) are refused")
    parser.add_argument("--device", help="the attachment device name (e.g. /dev/sdf), for Xen instances whose volumes "
                                         "have no NVMe serial (default: asked from EC2 when the id is not found)")
    parser.add_argument("--fstype", choices=sorted(READ_ONLY_MOUNT_OPTIONS),
                        help="filesystem type (default: read from the device)")
    parser.add_argument("--options", default="", help="extra mount options, comma-separated (e.g. nouuid for an "
                                                      "xfs copy of a filesystem mounted on the same instance)")
    parser.add_argument("--wait", type=float, default=60.0, metavar="SECONDS",
                        help="how long to wait for the device to appear after attaching (60)")
    parser.add_argument("--mount-command", default="mount",
                        help="the mount program, split like a shell would (default: mount; e.g. 'sudo mount')")
    add_local_paths_options(parser)
    _common.add_output_options(parser)
    _common.add_aws_options(parser)
    parser.set_defaults(run=run)


def _ec2_lookup(args: argparse.Namespace) -> Any:
    """Asks EC2 for the attachment's device name; None (not an error) when that is not possible here."""
    from recordio_pack.aws.ec2 import attachment_device
    from recordio_pack.aws.session import AwsTarget
    from recordio_pack.errors import RecordioPackError

    def lookup(volume_id: str) -> str | None:
        try:
            return attachment_device(AwsTarget.from_args(args).client("ec2"), volume_id)
        except RecordioPackError:
            return None

    return lookup


def run(args: argparse.Namespace) -> int:
    from recordio_pack.mount import mount_volume

    result = mount_volume(
        args.volume_id, args.mount_point, paths=local_paths(args), attachment_device=args.device,
        fstype=args.fstype, extra_options=[option for option in args.options.split(",") if option],
        mount_command=shlex.split(args.mount_command), wait_seconds=args.wait, lookup_attachment=_ec2_lookup(args))
    data: dict[str, Any] = result.as_dict()
    verb = "already mounted" if result.state == "already-mounted" else "mounted"
    _common.emit(args, data, f"{verb} {result.volume_id} ({result.device}, {result.fstype or 'unknown type'}) at "
                             f"{result.mount_point} with -o {result.options}")
    return 0
