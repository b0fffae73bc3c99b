"""``recordio-pack userdata``: render the boot script that puts the dataset snapshot on a new instance."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from recordio_pack.commands import _common

DESCRIPTION = """\
Print (or write with -o) EC2 user-data: a bash script that, at the instance's first boot, puts the dataset on it.
With --snapshot-id it creates a volume from the snapshot in the instance's own availability zone, attaches it,
mounts it read-only without journal replay, and adds a nofail fstab line; re-running it (reboot, cloud-init)
reuses the volume it made. With --source s3://BUCKET/PREFIX it finds the instance-store NVMe disks (never an
EBS volume), joins several into one RAID0 array (mdadm), makes a filesystem on them (only on blank disks or its
own), mounts it and runs `recordio-pack restore` (installed from PyPI; the AWS CLI as fallback), verifying
every file against the manifest; a systemd unit runs it at every boot, so a reboot does nothing and a
stop/start (instance store wiped) restores again. It reads instance metadata with IMDSv2 tokens only and needs
bash, curl and an instance role with aws/policies/gpu-instance-boot.json (--source: s3:GetObject and
s3:ListBucket on the prefix). The rendered text is checked against EC2's 16 KB user-data limit."""


def add_render_options(parser: argparse.ArgumentParser, *, snapshot_required: bool = True,
                       with_region: bool = True, with_source: bool = False) -> None:
    """The options that shape the boot script (shared with ``launch``); ``with_source`` adds ``--source`` as
    the alternative to ``--snapshot-id`` (one of them is then required)."""
    group = parser.add_argument_group("boot script")
    if with_source:
        which = group.add_mutually_exclusive_group(required=True)
        which.add_argument("--snapshot-id", help="the dataset's EBS snapshot (snap-...): a volume per instance")
        which.add_argument("--source", metavar="s3://BUCKET/PREFIX",
                           help="a backup made by `recordio-pack backup`: restored onto the instance-store NVMe "
                                "disks (RAID0 when several) at boot")
    else:
        group.add_argument("--snapshot-id", required=snapshot_required, help="the dataset's EBS snapshot (snap-...)")
    group.add_argument("--mount-point", default="/data",
                       help="where the dataset appears (default /data); system folders (/, /etc, /usr, /var, "
                            "/home, /opt, /tmp, /proc, ...) are refused")
    group.add_argument("--volume-type", default="gp3", help="gp3 (default), gp2, io1, io2, st1, sc1 or standard")
    group.add_argument("--iops", type=_common.positive_int,
                       help="provisioned IOPS (gp3: 3000-80000; io1: 100-64000; io2: 100-256000, which need it)")
    group.add_argument("--throughput", type=_common.positive_int, metavar="MIBPS",
                       help="gp3 throughput in MiB/s (125-2000, at most IOPS/4)")
    group.add_argument("--size", type=_common.positive_int, metavar="GIB",
                       help="volume size in GiB (default: the snapshot's size)")
    group.add_argument("--device", default="/dev/sdf",
                       help="attachment name (default /dev/sdf; Nitro instances show it as an NVMe disk, "
                            "found by volume id)")
    group.add_argument("--filesystem-label", metavar="LABEL",
                       help="refuse to mount unless the filesystem carries this label (--source: the label of the "
                            "filesystem the script makes, default rp-dataset)")
    group.add_argument("--prewarm", action="store_true",
                       help="after mounting, read the .rec files once in the background at idle I/O priority, so "
                            "the first epoch does not pay EBS's lazy loading from S3")
    group.add_argument("--prewarm-rate", type=_common.positive_int, metavar="MIBPS",
                       help="create the volume with this EBS volume initialization rate (100-300 MiB/s, billed); "
                            "implies --prewarm for a volume the script did not create")
    group.add_argument("--delete-on-termination", action=argparse.BooleanOptionalAction, default=True,
                       help="delete the volume when the instance terminates (default: on)")
    if with_region:
        group.add_argument("--region", dest="script_region", metavar="REGION",
                           help="region the script works in (default: the instance's own, from instance metadata)")
    group.add_argument("--format", choices=("shell", "cloud-config"), default="shell",
                       help="shell (default): a bash script; cloud-config: the same script in a #cloud-config "
                            "document (write_files + runcmd)")


def options_from_args(args: argparse.Namespace) -> Any:
    """A ``UserDataOptions`` built from the ``add_render_options`` arguments."""
    from recordio_pack.userdata.render import UserDataOptions

    return UserDataOptions(
        snapshot_id=args.snapshot_id, source=getattr(args, "source", None), mount_point=args.mount_point, volume_type=args.volume_type,
        iops=args.iops, throughput=args.throughput, size_gib=args.size, device=args.device,
        filesystem_label=args.filesystem_label, prewarm=args.prewarm, prewarm_rate=args.prewarm_rate,
        delete_on_termination=args.delete_on_termination, region=getattr(args, "script_region", None))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "userdata", help="render the boot script that mounts the dataset snapshot on new instances",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples: recordio-pack userdata --snapshot-id snap-0123456789abcdef0 --prewarm -o boot.sh\n"
               "          recordio-pack userdata --source s3://my-bucket/datasets/imagenet -o boot.sh")
    add_render_options(parser, with_source=True)
    parser.add_argument("-o", "--output", metavar="FILE", help="write here (atomically) instead of stdout")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    _common.add_output_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from recordio_pack.errors import RefusedError
    from recordio_pack.userdata.render import MAX_USER_DATA_BYTES, OutputExists, check_size, render, write_user_data

    text = render(options_from_args(args), args.format)
    size = check_size(text)
    result: dict[str, Any] = {"format": args.format, "bytes": size, "limit_bytes": MAX_USER_DATA_BYTES,
                              "snapshot_id": args.snapshot_id, "source": args.source}
    if args.output:
        try:
            result["path"] = str(write_user_data(args.output, text, overwrite=args.overwrite))
        except OutputExists as error:
            raise RefusedError(f"{error.path} exists; rerun with --overwrite to replace it") from None
        _common.emit(args, result, f"wrote {args.output} ({args.format}, {size} of {MAX_USER_DATA_BYTES} bytes)")
    elif args.json:
        _common.emit(args, {**result, "user_data": text}, "")
    else:
        sys.stdout.write(text)
    return 0
