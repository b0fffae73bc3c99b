"""Uploads that read each local file once: the bytes are checksummed as they are read to be sent, and an object
is completed only when they are the bytes its manifest record describes.

A file of at most ``single_put_limit`` bytes (default 64 MiB) goes up in one PutObject: read whole, compared with
its record (size, CRC32 and, unless ``check_sha256`` is off, SHA-256), then sent with the record's CRC32, which S3
checks on arrival; one request, and no multipart assembly. A bigger file is a multipart upload with a full-object CRC32 (the kind ``multipart.continue_upload`` finishes
after a kill): one reader thread per file reads its parts in order, feeds them to the file's running digests
and hands each part, with its own CRC32, to the request threads. After the last part the digests are compared
with the record, and only when they match is the upload completed, with the record's full-object CRC32 (S3
refuses a completion whose assembled object has another). A file that does not match is reported as
``ContentDiffers``; every multipart upload of the run still open when it fails or is interrupted is aborted.

Memory: the bytes read and not yet sent stay within a budget (``BUFFER_BYTES``, 256 MiB, or more when one
request needs more); a reader waits for room before it reads.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recordio_pack.aws import multipart
from recordio_pack.aws.s3 import RateLimiter, iter_chunks, local_errors
from recordio_pack.aws.session import aws_errors
from recordio_pack.digest import RunningDigests, crc32_base64
from recordio_pack.errors import RecordioPackError
from recordio_pack.manifest import FileRecord
from recordio_pack.progress import Task

__all__ = ["SINGLE_PUT_LIMIT", "BUFFER_BYTES", "Outgoing", "ContentDiffers", "ArrivedDifferently", "upload_files"]

SINGLE_PUT_LIMIT = 64 << 20  # bytes: files up to this size go in one PutObject
BUFFER_BYTES = 256 << 20  # bytes read and not yet sent, at most (or one request's worth when that is more)
_WAIT = 0.2  # seconds a reader waits for room in the budget before looking whether the run was stopped


@dataclass(frozen=True)
class Outgoing:
    """One file to send: its manifest ``record``, the local ``path``, the object ``key`` and ``extra``, the
    arguments PutObject and CreateMultipartUpload both take (Metadata, StorageClass, encryption, ContentType)."""

    record: FileRecord
    path: Path
    key: str
    extra: dict[str, Any]


class ContentDiffers(RecordioPackError):
    """The bytes read from ``name`` are not its manifest's (``problem``: which check failed); nothing of it
    was completed in the bucket."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(name, problem)  # both in args: it survives pickling (a worker's error reaches the parent)
        self.name, self.problem = name, problem

    def __str__(self) -> str:
        return f"{self.name} {self.problem}"


class ArrivedDifferently(RecordioPackError):
    """S3 reports a checksum other than the one sent for an object it accepted."""


def _mismatch(record: FileRecord, running: RunningDigests, check_sha256: bool) -> str | None:
    got = running.digests()
    if got.size != record.bytes:
        return f"has {got.size} bytes, its manifest says {record.bytes}"
    if check_sha256 and got.sha256 != record.sha256:
        return "sha256 differs"
    if got.crc32 != record.crc32:
        return "CRC32 differs"
    return None


class _Digests(RunningDigests):
    """RunningDigests that skips SHA-256 when it is not asked for (CRC32 and size are always kept)."""

    def __init__(self, sha256: bool) -> None:
        super().__init__()
        self._sha256 = sha256

    def update(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        if self._sha256:
            self.sha.update(data)
        self.crc = zlib.crc32(data, self.crc)


class _Budget:
    """Bytes held in memory between a read and the end of its request, from many threads."""

    def __init__(self, total: int, stop: threading.Event) -> None:
        self.free, self.stop = total, stop
        self._room = threading.Condition()

    def take(self, size: int) -> None:
        with self._room:
            while self.free < size:
                if self.stop.is_set():
                    raise InterruptedError("upload stopped")
                self._room.wait(_WAIT)
            self.free -= size

    def give(self, size: int) -> None:
        with self._room:
            self.free += size
            self._room.notify_all()


class _Run:
    """One call of ``upload_files``: the request threads, the part slots and the uploads still open."""

    def __init__(self, client: Any, bucket: str, part_size: int, single_put_limit: int, concurrency: int,
                 limiter: RateLimiter, task: Task, check_sha256: bool) -> None:
        self.client, self.bucket, self.part_size, self.limiter, self.task = client, bucket, part_size, limiter, task
        self.single_put_limit, self.check_sha256 = single_put_limit, check_sha256
        self.requests = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="s3-put")
        self.stop = threading.Event()
        self.budget = _Budget(max(BUFFER_BYTES, part_size, single_put_limit), self.stop)
        self.lock = threading.Lock()
        self.open: dict[str, multipart.Unfinished] = {}  # key -> upload, from creation until completed

    def _request(self, send: Callable[[], Any], size: int) -> Future:
        """Run ``send`` on a request thread; its ``size`` bytes, taken from the budget by the caller, are given
        back when it ends."""
        def run() -> Any:
            try:
                if self.stop.is_set():
                    raise InterruptedError("upload stopped")
                self.limiter.throttle(size)
                response = send()
                self.task.advance(size)
                return response
            finally:
                self.budget.give(size)

        try:
            return self.requests.submit(run)
        except BaseException:
            self.budget.give(size)
            raise

    def _parts(self, item: Outgoing) -> Iterator[tuple[int, bytes]]:
        """The parts of ``item``'s file in order, each read once into room taken from the budget; a file longer
        or shorter than its record ends as ContentDiffers."""
        size = item.record.bytes
        with local_errors(f"reading {item.path}"), open(item.path, "rb") as stream:
            for number, _, length in iter_chunks(size, self.part_size):
                self.budget.take(length)
                data = stream.read(length)
                if len(data) != length:
                    self.budget.give(length)
                    raise ContentDiffers(item.record.name, f"is shorter than its manifest says ({size} bytes)")
                yield number, data
            if stream.read(1):
                raise ContentDiffers(item.record.name, f"is longer than its manifest says ({size} bytes)")

    def send(self, item: Outgoing) -> Future | None:
        """Read and send ``item`` (on a reader thread). One PutObject: returns its future, still running; a
        multipart upload: returns None once it is completed."""
        if item.record.bytes > self.single_put_limit:
            self._multipart(item)
            return None
        self.budget.take(item.record.bytes)
        try:
            with local_errors(f"reading {item.path}"), open(item.path, "rb") as stream:
                data = stream.read(item.record.bytes + 1)  # one byte more: a file grown since the manifest shows
            digests = _Digests(self.check_sha256)
            digests.update(data)
            problem = _mismatch(item.record, digests, self.check_sha256)
            if problem is not None:
                raise ContentDiffers(item.record.name, problem)
        except BaseException:
            self.budget.give(item.record.bytes)
            raise
        expected = crc32_base64(item.record.crc32)

        def put() -> Any:
            with aws_errors(f"uploading {item.record.name} to s3://{self.bucket}/{item.key}"):
                response = self.client.put_object(Bucket=self.bucket, Key=item.key, Body=data,
                                                  ChecksumAlgorithm="CRC32", ChecksumCRC32=expected, **item.extra)
            self._check_arrival(item, response, expected)
            return response

        return self._request(put, item.record.bytes)

    def _multipart(self, item: Outgoing) -> None:
        where = f"s3://{self.bucket}/{item.key}"
        with aws_errors(f"starting the upload of {item.record.name} to {where}"):
            upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=item.key,
                                                            ChecksumAlgorithm="CRC32", ChecksumType="FULL_OBJECT",
                                                            **item.extra)["UploadId"]
        with self.lock:  # registered where it appears: a failure from here on aborts it
            self.open[item.key] = multipart.Unfinished(item.key, upload_id, None, "CRC32", "FULL_OBJECT",
                                                       item.extra.get("StorageClass", "STANDARD"))
        digests = _Digests(self.check_sha256)
        futures: list[tuple[int, str, Future]] = []
        for number, data in self._parts(item):
            digests.update(data)
            crc = crc32_base64(f"{zlib.crc32(data):08x}")

            def part(number: int = number, data: bytes = data, crc: str = crc) -> Any:
                with aws_errors(f"uploading part {number} of {item.record.name} to {where}"):
                    return self.client.upload_part(Bucket=self.bucket, Key=item.key, UploadId=upload_id,
                                                   PartNumber=number, Body=data, ChecksumAlgorithm="CRC32",
                                                   ChecksumCRC32=crc)

            futures.append((number, crc, self._request(part, len(data))))
        problem = _mismatch(item.record, digests, self.check_sha256)
        if problem is not None:
            raise ContentDiffers(item.record.name, problem)
        parts = [{"PartNumber": number, "ETag": future.result()["ETag"], "ChecksumCRC32": crc}
                 for number, crc, future in futures]
        expected = crc32_base64(item.record.crc32)
        with aws_errors(f"completing the upload of {item.record.name} to {where}"):
            response = self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=item.key, UploadId=upload_id, ChecksumType="FULL_OBJECT",
                ChecksumCRC32=expected, MultipartUpload={"Parts": parts})
        with self.lock:
            del self.open[item.key]
        self._check_arrival(item, response, expected)

    def _check_arrival(self, item: Outgoing, response: dict[str, Any], expected: str) -> None:
        reported = response.get("ChecksumCRC32")
        if reported is not None and reported != expected:
            raise ArrivedDifferently(f"s3://{self.bucket}/{item.key}: S3 reports CRC32 {reported} for "
                                     f"{item.record.name}, {expected} was sent")

    def abort_open(self) -> None:
        with self.lock:
            uploads = list(self.open.values())
            self.open.clear()
        for upload in uploads:
            with suppress(Exception):  # the run's own error matters more; a failed abort is found next run
                multipart.abort(self.client, self.bucket, upload)


def upload_files(client: Any, bucket: str, items: list[Outgoing], *, part_size: int, concurrency: int,
                 limiter: RateLimiter, task: Task, check_sha256: bool = True, readers: int = 4,
                 single_put_limit: int = SINGLE_PUT_LIMIT) -> int:
    """Send every ``items`` file to ``bucket`` as the module docstring says: files of at most
    ``single_put_limit`` bytes in one PutObject, bigger ones in parts of ``part_size`` bytes (a multipart
    upload needs more than one part: a limit below ``part_size`` counts as ``part_size``); ``concurrency`` requests at a time,
    up to ``readers`` files read at once; ``task`` (bytes) advances by each request's bytes once S3 has them.
    Returns the bytes sent. Raises the first failure (ContentDiffers, ArrivedDifferently, LocalFileError for a
    file that cannot be read, AwsError, InterruptedError) after stopping the other files and aborting every multipart upload still open."""
    run = _Run(client, bucket, part_size, max(single_put_limit, part_size), concurrency, limiter, task, check_sha256)
    reading = ThreadPoolExecutor(max_workers=max(1, min(readers, concurrency, len(items) or 1)),
                                 thread_name_prefix="s3-read")
    try:
        pending: set[Future] = {reading.submit(run.send, item) for item in items}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                started = future.result()  # the first failure propagates from here
                if isinstance(started, Future):
                    pending.add(started)
    except BaseException:
        run.stop.set()
        run.requests.shutdown(wait=True, cancel_futures=True)
        reading.shutdown(wait=True, cancel_futures=True)
        run.abort_open()
        raise
    finally:
        run.requests.shutdown(wait=True)
        reading.shutdown(wait=True)
    return sum(item.record.bytes for item in items)
