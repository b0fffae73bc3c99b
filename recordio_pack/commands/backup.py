"""``recordio-pack backup DIR s3://bucket/prefix``: upload a packed dataset, manifests last, verified."""

from __future__ import annotations

import argparse
from typing import Any

from recordio_pack.aws.s3_options import SSE_MODES, STORAGE_CLASSES
from recordio_pack.commands import _common, _s3
from recordio_pack.errors import RefusedError, UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "backup", help="upload a packed dataset to S3 (content-checked, resumable, manifest last)",
        description="Upload every file the folder's *.manifest.json vouch for to s3://BUCKET/PREFIX/, then the "
                    "manifests, only after every data object is in place and verified. What moves is decided by "
                    "content (sizes, CRC32 and SHA-256 of the manifest against the bucket's manifest and objects), "
                    "never by modification times. Each file sent is read once and checked against the manifest as it "
                    "goes; files already in the bucket are not read. Every object carries S3's full-object CRC32 "
                    "and our SHA-256; an "
                    "interrupted run resumes, continuing or aborting unfinished multipart uploads. A prefix holding "
                    "another version of the dataset is refused (exit 3) unless --overwrite; objects whose storage "
                    "class or encryption differs from what is asked are uploaded again.",
        epilog="example: recordio-pack backup /data/imagenet s3://my-bucket/datasets/imagenet --max-bandwidth 200MB/s")
    parser.add_argument("directory", metavar="DIR", help="folder holding the shards and NAME.manifest.json")
    parser.add_argument("destination", metavar="s3://BUCKET/PREFIX", help="where the dataset goes")
    parser.add_argument("--dry-run", action="store_true",
                        help="print what would be uploaded and why (new, changed, missing in bucket, stored "
                             "differently, unchanged) and what --overwrite would delete; reads the local manifests "
                             "(not the data files), the bucket's listing, manifests and object checksums, and "
                             "sends, aborts and deletes nothing")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace another version of the dataset in the bucket: upload the new one, then its "
                             "manifest, and only then delete the old version's objects it does not list (default: "
                             "refuse, exit 3)")
    parser.add_argument("--storage-class", choices=STORAGE_CLASSES, default="STANDARD",
                        help="S3 storage class of the uploaded objects (default STANDARD)")
    parser.add_argument("--sse", choices=SSE_MODES, default="AES256",
                        help="server-side encryption (default AES256, S3-managed keys)")
    parser.add_argument("--kms-key-id", help="KMS key id or ARN for --sse aws:kms (default: the account's aws/s3 key)")
    parser.add_argument("--no-verify-local", dest="verify_local", action="store_false",
                        help="skip the SHA-256 of the bytes sent (by default each file is read once and its SHA-256 "
                             "and CRC32, computed as it is sent, must match the manifest before its object is "
                             "completed; without it the CRC32 is still checked, here and by S3 on arrival)")
    _s3.add_transfer_options(parser, upload=True)
    _common.add_output_options(parser)
    _common.add_aws_options(parser)
    parser.set_defaults(run=run)


def _text(result: Any) -> str:
    data = result.to_dict()
    lines = []
    uploaded = _s3.files_text(data["uploaded_files"], data["uploaded_manifests"])
    skipped = _s3.files_text(data["skipped_files"], data["skipped_manifests"])
    if result.dry_run:
        for plan in result.plans:
            lines.append(f"{'upload' if plan.action != 'skip' else 'skip':6} {_s3.human_bytes(plan.record.bytes):>11}  "
                         f"{plan.name}  ({plan.reason})")
        lines.extend(f"delete {name}  (old version, not in the new manifest)" for name in result.deleted)
        to_send = sum(plan.record.bytes for plan in result.plans if plan.action != "skip")
        lines.append(f"dry run: would upload {uploaded} ({_s3.human_bytes(to_send)}) to "
                     f"{result.destination}, skip {skipped} unchanged"
                     + (f", abort {len(result.aborted)} unfinished multipart uploads" if result.aborted else "")
                     + (f", then delete {len(result.deleted)} objects" if result.deleted else ""))
    else:
        rate = f" at {data['mb_per_s']} MB/s" if data["mb_per_s"] else ""
        lines.append(f"backed up {result.source} to {result.destination}: uploaded {uploaded} "
                     f"({_s3.human_bytes(result.sent_bytes)}{rate}), skipped {skipped} unchanged"
                     + (f", reused {result.reused_parts} parts of unfinished uploads" if result.reused_parts else "")
                     + (f", aborted {len(result.aborted)} unfinished multipart uploads" if result.aborted else "")
                     + (f", deleted {len(result.deleted)} objects of the replaced version" if result.deleted else ""))
    if result.unlisted:
        lines.append(f"note: {len(result.unlisted)} objects of ours under {result.destination} are in no manifest "
                     f"(e.g. {result.unlisted[0]}; left by an interrupted --overwrite or an unfinished backup of "
                     "another version); rerun with --overwrite to delete them")
    if result.foreign_uploads:
        lines.append(f"note: {result.foreign_uploads} unfinished multipart uploads under {result.destination} are not "
                     "of this dataset and were left alone (see `recordio-pack cleanup`)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from recordio_pack.aws.backup import BackupOptions, OtherVersionError, backup
    from recordio_pack.aws.session import AwsTarget

    destination = _s3.location(args.destination)
    try:
        options = BackupOptions(storage_class=args.storage_class, sse=args.sse, kms_key_id=args.kms_key_id,
                                dry_run=args.dry_run, verify_local=args.verify_local, overwrite=args.overwrite,
                                transfer=_s3.transfer_options(args))
    except ValueError as error:
        raise UsageError(str(error)) from None
    try:
        with _s3.flag_hints(), _common.ProgressBar(args, skip_empty=True) as progress:
            result = backup(args.directory, destination, options, AwsTarget.from_args(args), progress)
    except OtherVersionError as error:
        raise RefusedError(f"{error}. Rerun with --overwrite to replace it (the new version and its manifest go up "
                           "first; only then are the old version's objects deleted), or back up to another "
                           "prefix") from None
    _common.emit(args, result.to_dict(), _text(result))
    return 0
