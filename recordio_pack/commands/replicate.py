"""``recordio-pack replicate``: a volume from the dataset snapshot for each running instance, attached."""

from __future__ import annotations

import argparse
from typing import Any

from recordio_pack.commands import _common
from recordio_pack.commands.snapshot import parse_duration


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "replicate", help="create and attach a volume from a snapshot on each running instance",
        description="For each running instance (by id or by filter), create a volume from the snapshot in that "
                    "instance's availability zone, wait until it is available, attach it at a free device name, "
                    "wait until the attachment is 'attached', and set DeleteOnTermination (unless --keep). "
                    "Instances that already have a volume from the snapshot attached are skipped, so reruns are "
                    "safe. Then run 'recordio-pack mount' on each instance.")
    parser.add_argument("--snapshot-id", required=True, help="the dataset snapshot (snap-...)")
    which = parser.add_argument_group("instances (one of)")
    which.add_argument("--instance-id", action="append", default=[], metavar="ID",
                       help="an instance (repeatable); instances that are not running are skipped")
    which.add_argument("--filter", action="append", default=[], metavar="NAME=VALUE[,VALUE]",
                       help="a DescribeInstances filter, e.g. tag:role=gpu (repeatable; running instances only)")
    volume = parser.add_argument_group("volume")
    volume.add_argument("--volume-type", default="gp3", help="EBS volume type: gp3 (default), gp2, io1, io2, st1, sc1 "
                                                             "or standard")
    volume.add_argument("--iops", type=_common.positive_int,
                        help="provisioned IOPS (gp3: 3000-80000; io1: 100-64000; io2: 100-256000, which need it)")
    volume.add_argument("--throughput", type=_common.positive_int,
                        help="gp3 throughput in MiB/s (125-2000, at most IOPS/4)")
    volume.add_argument("--size", type=_common.positive_int, metavar="GIB",
                        help="volume size in GiB (default: the snapshot's size; never smaller)")
    volume.add_argument("--name", help="Name tag of the volumes (default: the snapshot's Name)")
    volume.add_argument("--keep", action="store_true",
                        help="leave DeleteOnTermination off: the volume outlives the instance")
    parser.add_argument("--dry-run", action="store_true",
                        help="show what would be created and attached; change nothing")
    parser.add_argument("--timeout", type=parse_duration, default=None,
                        help="give up waiting on a volume after this long, e.g. 30m (default: no limit)")
    parser.add_argument("--poll-seconds", type=_common.ranged(float, 0.0), default=5.0,
                        help="seconds between status checks (5)")
    _common.add_output_options(parser)
    _common.add_aws_options(parser)
    parser.set_defaults(run=run)


def table(rows: list[dict[str, Any]]) -> str:
    header = ("INSTANCE", "AZ", "VOLUME", "DEVICE", "STATE")
    lines = [header] + [(row["instance_id"], row["availability_zone"], row["volume_id"] or "-", row["device"] or "-",
                         row["state"] + (f" ({row['detail']})" if row["state"] in ("failed", "skipped") else ""))
                        for row in rows]
    widths = [max(len(line[column]) for line in lines) for column in range(len(header) - 1)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)) + "  " + line[-1]
                     for line in lines)


def run(args: argparse.Namespace) -> int:
    from recordio_pack.aws.ec2 import Waiting
    from recordio_pack.aws.replicate import ReplicateOptions, parse_filter, replicate
    from recordio_pack.aws.session import AwsTarget

    _common.require(bool(args.instance_id) != bool(args.filter),
                    "give either --instance-id ... or --filter NAME=VALUE (not both, not neither)")
    options = ReplicateOptions(
        snapshot_id=args.snapshot_id, instance_ids=tuple(args.instance_id),
        filters=tuple(parse_filter(text) for text in args.filter), volume_type=args.volume_type, iops=args.iops,
        throughput=args.throughput, size_gib=args.size, keep=args.keep, dry_run=args.dry_run, name=args.name)
    # one "waiting" bar, drawn from the first poll on: a run that waits on nothing (a dry run, a rerun with
    # every volume attached) shows none
    with _common.ProgressBar(args, label="waiting") as bar:
        result = replicate(AwsTarget.from_args(args), options,
                           Waiting(poll_seconds=args.poll_seconds, timeout=args.timeout, progress=bar))
    data = result.as_dict()
    text = table(data["placements"])
    attached = [row for row in data["placements"] if row["state"] in ("attached", "already-attached")]
    if attached and not args.dry_run:
        text += "\nnext, on each instance: recordio-pack mount --volume-id VOLUME --mount-point /data"
    _common.emit(args, data, text)
    return 0 if result.ok else 1
