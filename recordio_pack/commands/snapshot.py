"""``recordio-pack snapshot``: snapshot the dataset's EBS volume, tag it, wait, copy it to regions, share it."""

from __future__ import annotations

import argparse
import os
import re
import shlex
from typing import Any

from recordio_pack.commands import _common
from recordio_pack.errors import UsageError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``"90m"`` -> 5400.0 seconds; units s, m, h, d; a bare number is seconds."""
    match = _DURATION.match(text.lower())
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 45s, 30m, 6h or 2d)")
    return float(match.group(1)) * _SECONDS[match.group(2)]


parse_tag = _common.key_value


def add_local_paths_options(parser: argparse.ArgumentParser) -> None:
    """Where /proc, /sys and /dev live (tests point them at a fake tree; hidden from --help)."""
    for flag, default in (("--proc-root", "/proc"), ("--sys-root", "/sys"), ("--dev-root", "/dev"),
                          ("--by-id-dir", "/dev/disk/by-id")):
        parser.add_argument(flag, default=default, help=argparse.SUPPRESS)


def local_paths(args: argparse.Namespace) -> Any:
    from pathlib import Path

    from recordio_pack.mount import LocalPaths

    return LocalPaths(Path(args.proc_root), Path(args.sys_root), Path(args.dev_root), Path(args.by_id_dir))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "snapshot", help="snapshot the dataset's EBS volume (tags, progress, copies, sharing)",
        description="Create an EBS snapshot of the volume holding a packed dataset: flush (and with --freeze, "
                    "freeze) the filesystem around CreateSnapshot, tag the snapshot, wait with a progress bar for "
                    "as long as it takes, then copy it to other regions and share it with named accounts. "
                    "Snapshots are never made public.")
    source = parser.add_argument_group("what to snapshot")
    source.add_argument("--volume-id", help="the EBS volume (vol-...); or else --mount-point")
    source.add_argument("--mount-point", help="a mounted path on this instance; its EBS volume is found through "
                                               "/proc/self/mountinfo and the NVMe serial")
    source.add_argument("--freeze", action="store_true",
                        help="fsfreeze the --mount-point filesystem during CreateSnapshot (always unfrozen after, "
                             "even on error); needs root. --mount-point must then be the mount point itself, and "
                             "a filesystem holding /, /usr, /var, /etc, /boot or recordio-pack is refused (exit 3)")
    source.add_argument("--freeze-command", default="fsfreeze", help=argparse.SUPPRESS)
    tags = parser.add_argument_group("tags")
    tags.add_argument("--manifest", help="the dataset's NAME.manifest.json: its SHA-256 and name become tags")
    tags.add_argument("--dataset", help="dataset name tag (default: the manifest's name)")
    tags.add_argument("--name", help="Name tag (default: 'recordio-pack DATASET')")
    tags.add_argument("--description", help="snapshot description")
    tags.add_argument("--tag", action="append", type=parse_tag, default=[], metavar="KEY=VALUE",
                      help="an extra tag (repeatable)")
    where = parser.add_argument_group("copies and sharing")
    where.add_argument("--copy-to-region", action="append", default=[], metavar="REGION",
                       help="copy the completed snapshot to this region, tags included (repeatable)")
    where.add_argument("--share-with", action="append", default=[], metavar="ACCOUNT",
                       help="give this 12-digit AWS account createVolumePermission on the snapshot and its copies "
                            "(repeatable); refused for snapshots encrypted with the AWS-managed key aws/ebs")
    wait = parser.add_argument_group("waiting")
    wait.add_argument("--timeout", type=parse_duration, default=None,
                      help="give up waiting after this long, e.g. 6h (default: wait as long as it takes)")
    wait.add_argument("--poll-seconds", type=_common.ranged(float, 0.0), default=15.0,
                      help="seconds between status checks (15)")
    add_local_paths_options(parser)
    _common.add_output_options(parser)
    _common.add_aws_options(parser)
    parser.set_defaults(run=run)


def _text(result: dict[str, Any]) -> str:
    lines = [f"snapshot {result['snapshot_id']} of {result['volume_id']}: {result['state']} "
             f"(region {result['region']}, {'encrypted' if result['encrypted'] else 'not encrypted'}"
             f"{', filesystem frozen during create' if result['frozen'] else ''})"]
    lines += [f"  tag {key} = {value}" for key, value in sorted(result["tags"].items())]
    for copy in result["copies"]:
        lines.append(f"copy {copy['snapshot_id']} in {copy['region']}: {copy['state']}"
                     + (f", shared with {', '.join(copy['shared_with'])}" if copy["shared_with"] else ""))
    if result["shared_with"]:
        lines.append(f"shared {result['snapshot_id']} with {', '.join(result['shared_with'])}")
    lines += [f"problem: {problem}" for problem in result["problems"]]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from recordio_pack.aws.ec2 import Waiting
    from recordio_pack.aws.session import AwsTarget
    from recordio_pack.aws.snapshot import Freezer, SnapshotOptions, create_dataset_snapshot, manifest_sha256
    from recordio_pack.mount import volume_for_mount_point

    _common.require(bool(args.volume_id) != bool(args.mount_point),
                    "give --volume-id or --mount-point (one of them: the volume is found from the mount point)")
    _common.require(not args.freeze or bool(args.mount_point),
                    "--freeze needs --mount-point (the filesystem to freeze) instead of --volume-id")
    volume_id, freezer = args.volume_id, None
    if args.mount_point:
        _common.require(os.path.exists(args.mount_point), f"--mount-point {args.mount_point}: no such folder here")
        if args.freeze:  # refused (exit 3) unless it is a mount root holding no system folder and not this tool
            freezer = Freezer.guarded(args.mount_point, shlex.split(args.freeze_command), local_paths(args))
        volume_id, _entry = volume_for_mount_point(freezer.mount_point if freezer else args.mount_point,
                                                   local_paths(args))
    dataset, digest = args.dataset, None
    if args.manifest:
        try:
            digest = manifest_sha256(args.manifest)
        except OSError as error:
            raise UsageError(f"--manifest: {error}") from None
        if dataset is None:
            from recordio_pack.manifest import Manifest

            try:
                dataset = Manifest.load(args.manifest).name
            except ValueError as error:
                raise UsageError(str(error)) from None
            except AttributeError:  # JSON that is not an object: Manifest.load words ValueError/KeyError/TypeError only
                raise UsageError(f"--manifest {args.manifest}: not a recordio-pack manifest (not a JSON object)"
                                 ) from None
    options = SnapshotOptions(
        volume_id=volume_id, name=args.name, dataset=dataset, manifest_sha256=digest, description=args.description,
        extra_tags=dict(args.tag), copy_to_regions=tuple(args.copy_to_region), share_with=tuple(args.share_with),
        freeze_mount_point=freezer.mount_point if freezer else None)
    with _common.ProgressBar(args, per_task=True) as bars:  # one 0-100 % bar per snapshot waited on
        result = create_dataset_snapshot(
            AwsTarget.from_args(args), options,
            Waiting(poll_seconds=args.poll_seconds, timeout=args.timeout, progress=bars), freezer=freezer)
    data = result.as_dict()
    _common.emit(args, data, _text(data))
    return 1 if result.problems else 0
