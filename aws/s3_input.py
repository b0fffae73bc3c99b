"""Images in S3 as ``pack`` input: a class-folder prefix (``s3://bucket/train``) listed like a local tree, and
an ``ImageSource`` that reads each image with a GET.

The listing streams ListObjectsV2 pages and keeps one ``Entry`` per image (its size and LastModified in it, so
planning sends no request per image); keys are ordered by path components, as ``listing.scan_tree`` walks a
folder, so an S3 prefix and a local copy of the same tree give the same list. Keys that end in ``/`` (the
console's empty "folder" markers) are not files and are not counted.

``S3Source`` is a small picklable value (bucket, prefix, connection settings): each process makes its own client
on first use. Retries are botocore's standard mode (throttling and dropped connections back off and retry); a
missing object is a reject like a missing file, any other failure after the retries stops the run.
"""

from __future__ import annotations

import os
import posixpath
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from recordio_pack.aws.s3 import S3Location, parse_s3_uri
from recordio_pack.aws.session import AwsTarget, aws_errors
from recordio_pack.errors import UsageError
from recordio_pack.format import lst_path_problem
from recordio_pack.listing import DEFAULT_EXTS, TreeListing
from recordio_pack.sources import Entry, InputStat

__all__ = ["S3Source", "list_s3_tree", "parse_root", "location_of", "process_client"]

_MISSING = ("NoSuchKey", "404", "NotFound")
READ_AHEAD = 16  # GETs in flight per worker: a GET's latency (tens of ms) hidden behind the codec's few ms

_clients: dict[tuple[Any, int], Any] = {}  # (source settings, pid) -> client: one per process
_clients_lock = threading.Lock()


def process_client(profile: str | None, region: str | None, endpoint_url: str | None, connections: int) -> Any:
    """This process's S3 client for these settings, made on first use (a task travelling to a worker or a Ray
    node carries the settings, never a client)."""
    key = ((profile, region, endpoint_url, connections), os.getpid())
    with _clients_lock:
        if key not in _clients:
            _clients[key] = AwsTarget(profile, region, endpoint_url).client("s3", max_pool_connections=connections)
        return _clients[key]


@dataclass(frozen=True)
class S3Source:
    """Images as objects ``s3://bucket/prefix<entry.path>``."""

    bucket: str
    prefix: str  # "" or ending in "/"
    profile: str | None = None
    region: str | None = None
    endpoint_url: str | None = None

    def client(self) -> Any:
        return process_client(self.profile, self.region, self.endpoint_url, READ_AHEAD + 4)

    def key(self, entry: Entry) -> str:
        return self.prefix + entry.path

    def read(self, entry: Entry) -> bytes:
        """The object's bytes. A missing object is FileNotFoundError (a reject, as a missing file is); any other
        failure (access denied, a timeout, a dropped connection once botocore's retries are spent) raises
        AwsError, which stops the run: it says nothing about the image."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client().get_object(Bucket=self.bucket, Key=self.key(entry))["Body"].read()
        except (ClientError, BotoCoreError) as error:  # some BotoCoreErrors are OSErrors: never a reject
            if isinstance(error, ClientError) and error.response.get("Error", {}).get("Code", "") in _MISSING:
                raise FileNotFoundError(f"{self.describe()}{entry.path}: no such object") from None
            with aws_errors(f"reading s3://{self.bucket}/{self.key(entry)}"):
                raise

    def stat(self, entry: Entry) -> InputStat:
        """Size and LastModified: from the listing when it gave them, else one HeadObject."""
        if entry.size >= 0 and entry.mtime_ns >= 0:
            return InputStat(entry.size, entry.mtime_ns)
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            head = self.client().head_object(Bucket=self.bucket, Key=self.key(entry))
        except (ClientError, BotoCoreError) as error:
            if isinstance(error, ClientError) and error.response.get("Error", {}).get("Code", "") in _MISSING:
                raise FileNotFoundError(f"{self.describe()}{entry.path}: no such object") from None
            with aws_errors(f"looking up s3://{self.bucket}/{self.key(entry)}"):
                raise
        return InputStat(head["ContentLength"], _nanoseconds(head["LastModified"]))

    def size(self, entry: Entry) -> int:
        return self.stat(entry).size

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def read_all(self, entries: Iterable[Entry], ahead: int = READ_AHEAD) -> Iterator[tuple[Entry, bytes | OSError]]:
        """Each entry with its bytes (or the OSError that rejects it), in order, with ``ahead`` GETs in flight."""
        def fetch(entry: Entry) -> bytes | OSError:
            try:
                return self.read(entry)
            except FileNotFoundError as error:  # a reject; every other failure propagates and stops the run
                return error

        with ThreadPoolExecutor(ahead, thread_name_prefix="s3-read") as pool:
            queued: deque[tuple[Entry, Future[bytes | OSError]]] = deque()
            remaining = iter(entries)
            while True:
                while len(queued) < ahead and (entry := next(remaining, None)) is not None:
                    queued.append((entry, pool.submit(fetch, entry)))
                if not queued:
                    return
                entry, future = queued.popleft()
                yield entry, future.result()


def _nanoseconds(moment: Any) -> int:
    return int(moment.timestamp() * 1_000_000) * 1000


def location_of(uri: str) -> S3Location:
    """``s3://bucket/prefix`` as given on the command line; UsageError for a malformed URI."""
    try:
        return parse_s3_uri(uri)
    except ValueError as error:
        raise UsageError(str(error)) from None


def parse_root(uri: str, target: AwsTarget) -> S3Source:
    """The source for ``s3://bucket/prefix`` (a folder of images)."""
    location = location_of(uri)
    return S3Source(location.bucket, location.list_prefix, target.profile, target.region, target.endpoint_url)


def list_s3_tree(source: S3Source, exts: Iterable[str] = DEFAULT_EXTS) -> TreeListing:
    """Every object under the source's prefix, as ``listing.scan_tree`` sees a folder: images in class "folders"
    (the first key part below the prefix; labels in sorted order) are entries, images beside them are rejects,
    other extensions are skipped."""
    wanted = {ext.lower() if ext.startswith(".") else f".{ext.lower()}" for ext in exts}
    listing = TreeListing(classes=[], entries=[])
    found: list[tuple[tuple[str, ...], int, int]] = []  # (path parts, size, mtime_ns)
    paginator = source.client().get_paginator("list_objects_v2")
    with aws_errors(f"listing {source.describe()}"):
        for page in paginator.paginate(Bucket=source.bucket, Prefix=source.prefix):
            for item in page.get("Contents", ()):
                relative = item["Key"][len(source.prefix):]
                if not relative or (relative.endswith("/") and item["Size"] == 0):
                    continue  # a "folder" marker, not a file
                if relative.endswith("/"):
                    listing.skipped.append((relative, "a key ending in '/' names no file"))
                    continue
                found.append((tuple(relative.split("/")), item["Size"], _nanoseconds(item["LastModified"])))
    if not found and not listing.skipped:
        raise UsageError(f"{source.describe()}: no objects under this prefix")
    found.sort(key=lambda item: (len(item[0]) > 1, item[0]))  # files beside the classes first, then the order a
    # sorted walk of the class folders gives (by path parts), as scan_tree reports them
    classes = sorted({parts[0] for parts, _, _ in found if len(parts) > 1})
    label_of = {name: (float(label),) for label, name in enumerate(classes)}
    listing.classes = classes
    for parts, size, mtime_ns in found:
        relative = "/".join(parts)
        extension = posixpath.splitext(parts[-1])[1].lower()
        if len(parts) == 1:
            if extension in wanted:
                listing.rejects.append((relative, "outside any class folder (images go in ROOT/CLASS/)"))
            else:
                listing.skipped.append((relative, "outside any class folder, not an image extension"))
            continue
        if extension not in wanted:
            listing.skipped.append((relative, f"extension {extension or '(none)'} is not in --exts"))
            continue
        problem = lst_path_problem(relative)
        if problem:
            listing.rejects.append((relative, problem))
            continue
        # in class order already (classes sort by their first part), as scan_tree numbers them
        listing.entries.append(Entry(len(listing.entries), label_of[parts[0]], relative, -1, size, mtime_ns))
    return listing
