"""S3 pieces shared by backup and restore: ``s3://`` locations, transfer settings, listings, object
checksums and local hashing.

Checksums: every object we write carries S3's full-object CRC32 (``ChecksumCRC32``, base64 of the
manifest's big-endian hex value) and our SHA-256 as user metadata ``sha256``; a bucket object is "ours and
intact" only when its size, CRC32 and SHA-256 metadata all equal the manifest's.
"""

from __future__ import annotations

import posixpath
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recordio_pack.aws.session import AwsError, AwsTarget, aws_errors
from recordio_pack.digest import Digests, crc32_base64, file_digests
from recordio_pack.errors import RecordioPackError, describe_os_error
from recordio_pack.manifest import FileRecord, Manifest
from recordio_pack.progress import Task

__all__ = [
    "MiB", "MIN_PART_SIZE", "DEFAULT_PART_SIZE", "DEFAULT_MULTIPART_THRESHOLD", "MAX_SINGLE_PUT", "MAX_PART_SIZE",
    "MAX_PARTS", "SHA256_METADATA", "S3Location", "parse_s3_uri", "check_relative_name", "part_size_for",
    "TransferOptions", "s3_client", "Listed", "list_objects", "ObjectInfo", "head_object",
    "head_objects", "delete_objects", "Placement", "LocalFileError", "local_errors",
    "RateLimiter", "hash_file", "hash_files", "dataset_files", "DatasetMismatch", "iter_chunks",
]

MiB = 1 << 20
MIN_PART_SIZE = 5 * MiB  # S3's minimum for every part but the last
DEFAULT_PART_SIZE = 16 * MiB  # fewer requests than 8 MiB (each has its own latency), still 8-16 MB as S3 advises
DEFAULT_MULTIPART_THRESHOLD = 64 * MiB
MAX_SINGLE_PUT = 5 << 30  # S3's limit for one PutObject
MAX_PART_SIZE = 5 << 30
MAX_PARTS = 10_000
SHA256_METADATA = "sha256"  # x-amz-meta-sha256: the manifest's hex SHA-256 of the object

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix (no leading or trailing slash; may be empty)."""

    bucket: str
    prefix: str = ""

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    @property
    def list_prefix(self) -> str:
        """The prefix to list: ``prefix/`` so ``data`` never matches ``data-old/...``."""
        return f"{self.prefix}/" if self.prefix else ""

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def __str__(self) -> str:
        return self.uri


def parse_s3_uri(text: str) -> S3Location:
    """``s3://bucket/some/prefix/`` -> S3Location("bucket", "some/prefix"); ValueError names the problem."""
    if not text.startswith("s3://"):
        raise ValueError(f"not an S3 URI: {text!r} (expected s3://bucket/prefix)")
    bucket, _, prefix = text[len("s3://"):].partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ValueError(f"not a valid bucket name: {bucket!r} in {text!r}")
    prefix = prefix.strip("/")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise ValueError(f"S3 prefix must not contain empty, '.' or '..' parts: {text!r}")
    return S3Location(bucket, prefix)


def check_relative_name(name: str) -> str:
    """A manifest file name must stay inside its folder: relative, '/'-separated, no '..' (a manifest read
    back from a bucket could otherwise write anywhere on restore). Returns ``name``; ValueError otherwise."""
    if (not name or name.startswith("/") or "\\" in name or "\0" in name
            or any(part in ("", ".", "..") for part in name.split("/"))
            or posixpath.normpath(name) != name):
        raise ValueError(f"unsafe file name in manifest: {name!r}")
    return name


def part_size_for(file_size: int, minimum: int = DEFAULT_PART_SIZE) -> int:
    """Multipart part size in bytes for a file of ``file_size`` bytes: at least ``minimum`` (default 16 MiB,
    never below S3's 5 MiB), grown in whole MiB so the file needs at most 10,000 parts (a 500 GB file gets
    48 MiB parts). ValueError when no part size of at most 5 GiB fits (files over ~48.8 TiB)."""
    if minimum < MIN_PART_SIZE:
        raise ValueError(f"part size {minimum} is below S3's minimum of 5 MiB")
    if file_size < 0:
        raise ValueError(f"negative file size {file_size}")
    needed = max(minimum, -(-file_size // MAX_PARTS))
    size = -(-needed // MiB) * MiB
    if size > MAX_PART_SIZE:
        raise ValueError(f"a file of {file_size} bytes does not fit in {MAX_PARTS} parts of at most 5 GiB")
    return size


@dataclass(frozen=True)
class TransferOptions:
    """How data moves. ``part_size``: minimum multipart part size in bytes, and the size of ranged GETs
    (default 16 MiB, grown per run so the largest file stays under 10,000 parts); ``multipart_threshold``: files
    up to this many bytes are uploaded in one PutObject, bigger ones in parts (default 64 MiB; below
    ``part_size`` it counts as ``part_size``); ``concurrency``: parallel requests (default 10);
    ``max_bandwidth``: bytes per second over all threads, None for unlimited."""

    part_size: int = DEFAULT_PART_SIZE
    concurrency: int = 10
    max_bandwidth: int | None = None
    multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD

    def __post_init__(self) -> None:
        if self.part_size < MIN_PART_SIZE or self.part_size > MAX_PART_SIZE:
            raise ValueError(f"part size must be between 5 MiB and 5 GiB, not {self.part_size} bytes")
        if self.multipart_threshold < MIN_PART_SIZE or self.multipart_threshold > MAX_SINGLE_PUT:
            raise ValueError(f"multipart threshold must be between 5 MiB and 5 GiB, not {self.multipart_threshold} "
                             "bytes")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {self.concurrency}")
        if self.max_bandwidth is not None and self.max_bandwidth <= 0:
            raise ValueError(f"max bandwidth must be positive, not {self.max_bandwidth}")


def s3_client(target: AwsTarget, options: TransferOptions) -> Any:
    """An S3 client with a connection pool large enough for ``options.concurrency`` threads."""
    return target.client("s3", max_pool_connections=max(10, options.concurrency + 2))


@dataclass(frozen=True)
class Listed:
    """One object as ListObjectsV2 shows it: ``size`` in bytes and its ``etag`` (quoted, as S3 gives it)."""

    size: int
    etag: str


def list_objects(client: Any, location: S3Location) -> dict[str, Listed]:
    """Every object under ``location`` (recursively), by name relative to the prefix."""
    found: dict[str, Listed] = {}
    start = len(location.list_prefix)
    with aws_errors(f"listing {location}"):
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=location.bucket,
                                                                Prefix=location.list_prefix)
        for page in pages:
            for item in page.get("Contents", []):
                found[item["Key"][start:]] = Listed(item["Size"], item.get("ETag", ""))
    return found


def delete_objects(client: Any, location: S3Location, names: Sequence[str]) -> None:
    """Delete ``names`` under ``location`` (1,000 per request, S3's limit); a name already gone is fine."""
    names = list(names)
    for start in range(0, len(names), 1000):
        batch = names[start:start + 1000]
        with aws_errors(f"deleting {len(batch)} objects under {location}"):
            response = client.delete_objects(Bucket=location.bucket, Delete={
                "Objects": [{"Key": location.key(name)} for name in batch], "Quiet": True})
        if response.get("Errors"):
            first = response["Errors"][0]
            raise AwsError(f"deleting objects under {location}: {len(response['Errors'])} not deleted, e.g. "
                           f"{first.get('Key')}: {first.get('Code')} {first.get('Message', '')}".rstrip())


@dataclass(frozen=True)
class Placement:
    """How an object is stored: S3 storage class, server-side encryption mode and, for ``aws:kms``, the KMS
    key asked for (None: the account's default ``aws/s3`` key, or whichever key is there)."""

    storage_class: str = "STANDARD"
    sse: str | None = None
    kms_key_id: str | None = None

    def differs_from(self, wanted: Placement) -> str | None:
        """Why an object stored like this is not stored as ``wanted`` asks (None when it is). A KMS key is
        compared only when ``wanted`` names a key id or ARN: S3 reports the key's ARN, never an alias."""
        if self.storage_class != wanted.storage_class:
            return f"storage class {self.storage_class} in bucket, {wanted.storage_class} asked"
        if self.sse != wanted.sse:
            return f"encryption {self.sse or 'none'} in bucket, {wanted.sse} asked"
        asked = wanted.kms_key_id
        if asked and not asked.startswith("alias/") and ":alias/" not in asked and not (
                self.kms_key_id or "").endswith(asked):
            return f"KMS key {self.kms_key_id} in bucket, {asked} asked"
        return None


@dataclass(frozen=True)
class ObjectInfo:
    """What S3 says about one object (HeadObject with checksum mode on)."""

    size: int
    crc32: str | None  # base64, as S3 reports ChecksumCRC32
    checksum_type: str | None  # FULL_OBJECT, COMPOSITE or None (not reported)
    sha256: str | None  # our metadata, hex
    storage_class: str
    sse: str | None
    kms_key_id: str | None = None  # the key ARN S3 reports for aws:kms

    @property
    def placement(self) -> Placement:
        return Placement(self.storage_class, self.sse, self.kms_key_id)

    def mismatch(self, record: FileRecord) -> str | None:
        """Why this object is not ``record``'s content (None when size, CRC32 and SHA-256 all agree)."""
        if self.size != record.bytes:
            return f"size {self.size} in bucket, {record.bytes} in manifest"
        if self.crc32 is None:
            return "no CRC32 checksum in bucket"
        if self.crc32 != crc32_base64(record.crc32):
            return f"CRC32 {self.crc32} in bucket, {crc32_base64(record.crc32)} in manifest"
        if self.sha256 != record.sha256:
            return "no sha256 metadata in bucket" if self.sha256 is None else "sha256 in bucket differs"
        return None


def head_object(client: Any, location: S3Location, name: str) -> ObjectInfo | None:
    """ObjectInfo for ``name`` under ``location``, None when there is no such object."""
    from botocore.exceptions import ClientError

    key = location.key(name)
    with aws_errors(f"checking s3://{location.bucket}/{key}"):
        try:
            head = client.head_object(Bucket=location.bucket, Key=key, ChecksumMode="ENABLED")
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
    return ObjectInfo(size=head["ContentLength"], crc32=head.get("ChecksumCRC32"),
                      checksum_type=head.get("ChecksumType"),
                      sha256=head.get("Metadata", {}).get(SHA256_METADATA),
                      storage_class=head.get("StorageClass", "STANDARD"), sse=head.get("ServerSideEncryption"),
                      kms_key_id=head.get("SSEKMSKeyId"))


def head_objects(client: Any, location: S3Location, names: Sequence[str], workers: int) -> dict[str, ObjectInfo | None]:
    """head_object for many names with ``workers`` threads."""
    if not names:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(names)))) as pool:
        return dict(zip(names, pool.map(lambda name: head_object(client, location, name), names)))


class LocalFileError(RecordioPackError):
    """A local file or folder could not be read or written: one line naming it, the cause and what to do."""


@contextmanager
def local_errors(doing: str) -> Iterator[None]:
    """Turn an OSError raised inside (not InterruptedError, which is a stop request) into LocalFileError."""
    try:
        yield
    except InterruptedError:
        raise
    except OSError as error:
        raise LocalFileError(f"{doing}: {describe_os_error(error)}") from error


class RateLimiter:
    """Spreads ``throttle(n)`` calls from many threads so they average at most ``rate`` bytes per second
    (None: no limit): every upload and download request takes its bytes through one."""

    def __init__(self, rate: int | None) -> None:
        self.rate = rate
        self._lock = threading.Lock()
        self._next = time.monotonic()

    def throttle(self, nbytes: int) -> None:
        if not self.rate:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + nbytes / self.rate
        if start > now:
            time.sleep(start - now)


def hash_file(path: str | Path, task: Task | None = None, stop: threading.Event | None = None) -> Digests:
    """``digest.file_digests`` advancing ``task`` (bytes) by the bytes read; gives up with InterruptedError when
    ``stop`` is set."""
    return file_digests(path, on_bytes=task.advance if task is not None else None, stop=stop)


def hash_files(paths: Iterable[Path], task: Task | None, workers: int) -> dict[Path, Digests]:
    """hash_file for many files on ``workers`` threads (hashlib and zlib release the GIL on big chunks). On
    an error or Ctrl-C the other threads stop at their next chunk instead of reading on."""
    paths = list(paths)
    if not paths:
        return {}
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(paths))))
    try:
        return dict(zip(paths, pool.map(lambda path: hash_file(path, task, stop), paths)))
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)


class DatasetMismatch(ValueError):
    """Two manifests of one folder disagree about a file, or a name is unsafe."""


def dataset_files(manifests: Iterable[Manifest]) -> dict[str, FileRecord]:
    """Every data file the manifests vouch for, by name, in manifest order; DatasetMismatch when two
    manifests give one name different contents or a name would leave the folder."""
    files: dict[str, FileRecord] = {}
    for manifest in manifests:
        for record in manifest.data_files():
            try:
                check_relative_name(record.name)
            except ValueError as error:
                raise DatasetMismatch(str(error)) from None
            known = files.setdefault(record.name, record)
            if known != record:
                raise DatasetMismatch(f"{record.name}: two manifests give it different sizes or checksums")
    return files


def iter_chunks(total: int, part_size: int) -> Iterator[tuple[int, int, int]]:
    """``(part_number, offset, length)`` of a multipart split: parts numbered from 1."""
    for number, offset in enumerate(range(0, total, part_size), 1):
        yield number, offset, min(part_size, total - offset)

