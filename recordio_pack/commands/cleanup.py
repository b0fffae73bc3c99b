"""``recordio-pack cleanup``: list (and with --delete, delete) stray volumes, old snapshots, unfinished uploads."""

from __future__ import annotations

import argparse
from typing import Any

from recordio_pack.commands import _common

_non_negative = _common.ranged(float, 0.0)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cleanup", help="list or delete what recordio-pack left behind (volumes, snapshots, uploads)",
        description="List what carries recordio-pack's managed-by tag and costs money: unattached volumes, "
                    "snapshots older than --older-than days, and (with --bucket) unfinished S3 multipart uploads. "
                    "Nothing is deleted unless --delete is given. One region per run.")
    parser.add_argument("--older-than", type=_non_negative, default=30.0, metavar="DAYS",
                        help="snapshots started at least this many days ago (30)")
    parser.add_argument("--volume-grace", type=_non_negative, default=1.0, metavar="HOURS",
                        help="skip volumes created in the last HOURS, which replicate may be about to attach (1)")
    parser.add_argument("--bucket", help="also list unfinished multipart uploads in this S3 bucket")
    parser.add_argument("--prefix", default="",
                        help="... in this folder of the bucket ('data' means data/, never data-old/)")
    parser.add_argument("--upload-grace", type=_non_negative, default=24.0, metavar="HOURS",
                        help="skip uploads started in the last HOURS, which a running backup may still finish (24)")
    parser.add_argument("--keep-latest", type=_common.ranged(int, 0), default=1, metavar="N",
                        help="keep the N newest snapshots of each dataset, however old (1; 0 keeps none for being "
                             "newest). Snapshots a volume, AMI, launch template or instance tag refers to are "
                             "always kept")
    parser.add_argument("--delete", action="store_true",
                        help="delete the volumes and snapshots and abort the uploads listed (not those kept)")
    _common.add_output_options(parser)
    _common.add_aws_options(parser)
    parser.set_defaults(run=run)


def _text(data: dict[str, Any]) -> str:
    items = data["items"]
    if not items:
        return f"nothing to clean up in {data['region']}"
    lines = [f"{item['kind']:<16}  {item['id']}  {item['created'][:19]}  {item['state']}  {item['detail']}"
             + (f"  ERROR {item['error']}" if item["error"] else "")
             + "".join(f"\n    kept: {why}" for why in item["kept_because"]) for item in items]
    kept = sum(item["state"] == "kept" for item in items)
    kept_text = f"; {kept} kept (in use or newest)" if kept else ""
    if not data["delete"]:
        lines.append(f"{len(items) - kept} item(s) found{kept_text}; nothing deleted (rerun with --delete to "
                     "delete them)")
    else:
        lines.append(f"{sum(item['state'] == 'deleted' for item in items)} of {len(items) - kept} deleted{kept_text}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from recordio_pack.aws.cleanup import CleanupOptions, cleanup
    from recordio_pack.aws.session import AwsTarget

    _common.require(not args.prefix or bool(args.bucket), "--prefix needs --bucket")
    options = CleanupOptions(older_than_days=args.older_than, volume_grace_hours=args.volume_grace,
                             upload_grace_hours=args.upload_grace, bucket=args.bucket, prefix=args.prefix,
                             delete=args.delete, keep_latest=args.keep_latest)
    result = cleanup(AwsTarget.from_args(args), options)
    data = result.as_dict()
    _common.emit(args, data, _text(data))
    return 0 if result.ok else 1
