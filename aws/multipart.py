"""Unfinished multipart uploads left by an interrupted backup: find them, continue them, or abort them.

s3transfer aborts its own multipart uploads when a transfer fails or is cancelled, but a process that is
killed (SIGKILL, power loss, a lost network that also fails the abort) leaves parts behind that S3 bills
until someone aborts them. The next backup lists them: an upload of a file it still has to send is
continued (parts already in S3 are checked against the local bytes and kept, the rest are sent), every
other one of ours is aborted. Nothing is left without being reported.
"""

from __future__ import annotations

import hashlib
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from recordio_pack.aws.s3 import (
    MAX_PARTS,
    MIN_PART_SIZE,
    RateLimiter,
    S3Location,
    iter_chunks,
)
from recordio_pack.aws.session import aws_errors
from recordio_pack.digest import crc32_base64
from recordio_pack.manifest import FileRecord
from recordio_pack.progress import Task

__all__ = ["Unfinished", "CannotContinue", "ContinueResult", "list_unfinished", "abort", "continue_upload"]


@dataclass(frozen=True)
class Unfinished:
    """One multipart upload S3 still holds under our prefix."""

    key: str
    upload_id: str
    initiated: datetime | None
    checksum_algorithm: str | None
    checksum_type: str | None
    storage_class: str


class CannotContinue(Exception):
    """The unfinished upload is not one we can finish correctly; abort it and upload afresh."""


@dataclass(frozen=True)
class ContinueResult:
    reused_parts: int
    reused_bytes: int
    sent_parts: int
    sent_bytes: int


def list_unfinished(client: Any, location: S3Location) -> list[Unfinished]:
    """Multipart uploads under ``location``, oldest first."""
    found = []
    with aws_errors(f"listing unfinished multipart uploads under {location}"):
        pages = client.get_paginator("list_multipart_uploads").paginate(Bucket=location.bucket,
                                                                        Prefix=location.list_prefix)
        for page in pages:
            for item in page.get("Uploads", []):
                found.append(Unfinished(item["Key"], item["UploadId"], item.get("Initiated"),
                                        item.get("ChecksumAlgorithm"), item.get("ChecksumType"),
                                        item.get("StorageClass", "STANDARD")))
    return sorted(found, key=lambda upload: (upload.initiated is None, upload.initiated or 0, upload.key))


def abort(client: Any, bucket: str, upload: Unfinished) -> None:
    """Abort ``upload`` (already gone is fine)."""
    from botocore.exceptions import ClientError

    with aws_errors(f"aborting the unfinished upload of s3://{bucket}/{upload.key}"):
        try:
            client.abort_multipart_upload(Bucket=bucket, Key=upload.key, UploadId=upload.upload_id)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "NoSuchUpload":
                raise


def _list_parts(client: Any, bucket: str, upload: Unfinished) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    with aws_errors(f"listing the parts of s3://{bucket}/{upload.key}"):
        pages = client.get_paginator("list_parts").paginate(Bucket=bucket, Key=upload.key,
                                                            UploadId=upload.upload_id)
        for page in pages:
            parts.extend(page.get("Parts", []))
    return sorted(parts, key=lambda part: part["PartNumber"])


def _read(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as stream:
        stream.seek(offset)
        data = stream.read(length)
    if len(data) != length:
        raise CannotContinue(f"{path} is shorter than its manifest says")
    return data


def _part_matches(part: dict[str, Any], data: bytes) -> bool:
    """Whether the part S3 holds is ``data``: by its CRC32 when S3 lists one, else by its MD5 ETag."""
    listed_crc = part.get("ChecksumCRC32")
    if listed_crc:
        return listed_crc == crc32_base64(f"{zlib.crc32(data):08x}")
    etag = part.get("ETag", "").strip('"')
    return len(etag) == 32 and etag == hashlib.md5(data, usedforsecurity=False).hexdigest()


def _part_size(parts: list[dict[str, Any]], total: int) -> int:
    if not parts or parts[0]["PartNumber"] != 1:
        raise CannotContinue("its first part is not in S3")
    size = parts[0]["Size"]
    if size < total and (size < MIN_PART_SIZE or -(-total // size) > MAX_PARTS):
        raise CannotContinue(f"its part size {size} does not fit this file")
    return size


def continue_upload(client: Any, location: S3Location, upload: Unfinished, path: Path, record: FileRecord,
                    *, concurrency: int, limiter: RateLimiter, task: Task) -> ContinueResult:
    """Finish ``upload`` of ``path`` (whose content is ``record``): keep the parts S3 holds that equal the local
    bytes at their offsets, send the others, and complete with the manifest's full-object CRC32 (S3 rejects
    the completion when the assembled object differs). CannotContinue (upload untouched) when the upload is
    not resumable; any other failure aborts the upload before it propagates. ``task`` (bytes) advances by each
    part sent."""
    if (upload.checksum_algorithm or "").upper() != "CRC32" or (upload.checksum_type or "") != "FULL_OBJECT":
        raise CannotContinue(f"it was started with {upload.checksum_algorithm} {upload.checksum_type} "
                             "checksums, not full-object CRC32")
    if record.bytes == 0:
        raise CannotContinue("the file is empty")
    parts = _list_parts(client, location.bucket, upload)
    part_size = _part_size(parts, record.bytes)
    layout = {number: (offset, length) for number, offset, length in iter_chunks(record.bytes, part_size)}
    in_s3 = {part["PartNumber"]: part for part in parts}
    if any(number not in layout or part["Size"] != layout[number][1] for number, part in in_s3.items()):
        raise CannotContinue("its parts do not split this file the way they should")

    def check(number: int) -> tuple[int, dict[str, str] | None]:
        data = _read(path, *layout[number])
        if not _part_matches(in_s3[number], data):
            return number, None
        return number, {"ETag": in_s3[number]["ETag"], "ChecksumCRC32": crc32_base64(f"{zlib.crc32(data):08x}")}

    def send(number: int) -> tuple[int, dict[str, str]]:
        data = _read(path, *layout[number])
        limiter.throttle(len(data))
        with aws_errors(f"uploading part {number} of s3://{location.bucket}/{upload.key}"):
            response = client.upload_part(Bucket=location.bucket, Key=upload.key, UploadId=upload.upload_id,
                                          PartNumber=number, Body=data, ChecksumAlgorithm="CRC32")
        task.advance(len(data))
        crc = response.get("ChecksumCRC32") or crc32_base64(f"{zlib.crc32(data):08x}")
        return number, {"ETag": response["ETag"], "ChecksumCRC32": crc}

    pool = ThreadPoolExecutor(max_workers=concurrency)
    try:
        kept = {number: info for number, info in pool.map(check, sorted(in_s3)) if info is not None}
        if len(kept) < len(in_s3):
            # A part S3 holds differs from our bytes: that upload was of other content; its metadata is wrong too.
            raise CannotContinue(f"{len(in_s3) - len(kept)} of its parts differ from the local file")
        try:
            sent = dict(pool.map(send, [number for number in layout if number not in kept]))
            completed = sorted({**kept, **sent}.items())
            with aws_errors(f"completing the upload of s3://{location.bucket}/{upload.key}"):
                client.complete_multipart_upload(
                    Bucket=location.bucket, Key=upload.key, UploadId=upload.upload_id,
                    ChecksumType="FULL_OBJECT", ChecksumCRC32=crc32_base64(record.crc32),
                    MultipartUpload={"Parts": [{"PartNumber": number, **info} for number, info in completed]})
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # no queued part goes out after a failure or Ctrl-C
            with suppress(Exception):  # the original error matters more; a failed abort is found next run
                abort(client, location.bucket, upload)
            raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    reused_bytes = sum(layout[number][1] for number in kept)
    return ContinueResult(len(kept), reused_bytes, len(sent), record.bytes - reused_bytes)
