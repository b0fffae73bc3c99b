"""``recordio-pack restore s3://bucket/prefix DIR``: download a backed-up dataset, verifying every file."""

from __future__ import annotations

import argparse
from typing import Any

from recordio_pack.commands import _common, _s3
from recordio_pack.errors import RefusedError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "restore", help="download a dataset backed up with `backup`, verifying every checksum",
        description="Download the manifests under s3://BUCKET/PREFIX/ and every file they name into DIR. Each file "
                    "goes to NAME.partial with ranged GETs, is checked for size, SHA-256 and CRC32 against the "
                    "manifest (computed as the parts are written: no second read), and only then renamed; manifests are written last. An interrupted restore resumes: "
                    "files already present with the right content are skipped, partial files continue where "
                    "they stopped (from zero if the object changed), and leftover temporaries are removed. A "
                    "present file with other content is reported and left alone unless --overwrite.",
        epilog="example: recordio-pack restore s3://my-bucket/datasets/imagenet /data/imagenet")
    parser.add_argument("source", metavar="s3://BUCKET/PREFIX", help="where the backup is")
    parser.add_argument("directory", metavar="DIR", help="folder to restore into (created if needed)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace local files whose content differs from the backup (default: refuse, exit 3)")
    _s3.add_transfer_options(parser)
    _common.add_output_options(parser)
    _common.add_aws_options(parser)
    parser.set_defaults(run=run)


def _text(result: Any) -> str:
    data = result.to_dict()
    rate = f" at {data['mb_per_s']} MB/s" if data["mb_per_s"] else ""
    downloaded = _s3.files_text(data["downloaded_files"], data["downloaded_manifests"])
    present = _s3.files_text(data["skipped_files"], data["skipped_manifests"])
    text = (f"restored {result.source} into {result.destination}: downloaded {downloaded} "
            f"({_s3.human_bytes(result.received_bytes)}{rate}), {present} already present and verified")
    if result.resumed_files:
        text += (f"\ncontinued {len(result.resumed_files)} partial downloads "
                 f"({_s3.human_bytes(result.resumed_bytes)} were already on disk)")
    if result.removed_leftovers:
        text += f"\nremoved {len(result.removed_leftovers)} temporary files of an interrupted restore"
    if result.replaced:
        text += (f"\nreplaced {len(result.replaced)} local files that differed from the backup: "
                 + ", ".join(result.replaced[:10]) + (" ..." if len(result.replaced) > 10 else ""))
    return text


def run(args: argparse.Namespace) -> int:
    from recordio_pack.aws.restore import LocalFilesDiffer, RestoreOptions, restore
    from recordio_pack.aws.session import AwsTarget

    source = _s3.location(args.source)
    options = RestoreOptions(overwrite=args.overwrite, transfer=_s3.transfer_options(args))
    try:
        with _s3.flag_hints(), _common.ProgressBar(args, skip_empty=True) as progress:
            result = restore(source, args.directory, options, AwsTarget.from_args(args), progress)
    except LocalFilesDiffer as error:
        raise RefusedError(f"{error}. Rerun with --overwrite to replace them with the bucket's copy") from None
    _common.emit(args, result.to_dict(), _text(result))
    return 0
