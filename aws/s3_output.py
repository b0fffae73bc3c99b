"""``pack INPUT s3://bucket/prefix``: shards uploaded as they finish, the manifest last.

The local output folder becomes a staging folder: each shard is written there as for a local pack, then its
files are uploaded from the worker that wrote them (``aws.upload``: checksummed as they are read, compared with the
shard's record, S3's full-object CRC32 checked on arrival, SHA-256 in the object's metadata) and its data file
removed, so the staging folder holds about one shard per worker plus the small index files. The objects are laid
out as ``backup`` lays out a dataset (the same keys and metadata), so ``restore`` and ``backup`` work on them.
A rerun finds finished shards by their objects (size, CRC32 and SHA-256 as recorded), and, from a staging
folder that lost its state, by the manifest in the bucket.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recordio_pack.aws import multipart
from recordio_pack.aws.s3 import (
    DEFAULT_PART_SIZE,
    SHA256_METADATA,
    RateLimiter,
    S3Location,
    delete_objects,
    head_object,
    list_objects,
)
from recordio_pack.aws.s3_input import location_of, process_client
from recordio_pack.aws.session import AwsTarget, aws_errors
from recordio_pack.aws.upload import Outgoing, upload_files
from recordio_pack.errors import RecordioPackError, RefusedError
from recordio_pack.fsutil import atomic_output
from recordio_pack.manifest import FileRecord, Manifest, manifest_path
from recordio_pack.outputs import Presence, local_copy_intact
from recordio_pack.progress import NullProgress, Task

__all__ = ["S3Output", "parse_output", "default_staging"]

STAGING_MARKER = ".recordio-pack-output"  # in a staging folder: the output it stages
CONCURRENCY = 8  # requests per shard upload: one worker's share of the instance's bandwidth


class DownloadDiffers(RecordioPackError):
    """An object read back from the output is not the one its manifest records."""


@dataclass(frozen=True)
class S3Output:
    bucket: str
    prefix: str = ""  # no leading or trailing slash
    profile: str | None = None
    region: str | None = None
    endpoint_url: str | None = None
    part_size: int = DEFAULT_PART_SIZE
    remote: bool = True

    @property
    def location(self) -> S3Location:
        return S3Location(self.bucket, self.prefix)

    def client(self) -> Any:
        return process_client(self.profile, self.region, self.endpoint_url, CONCURRENCY + 2)

    def describe(self) -> str:
        return self.location.uri

    def prepare(self, out_dir: Path, name: str) -> None:
        """A staging folder is tied to one output (a second output through it is refused); multipart uploads of
        NAME's files that a killed run left open are aborted (this run sends them again); a staging folder with neither
        journal nor manifest of NAME gets the bucket's manifest of NAME and its small files, so a rerun
        elsewhere updates (or refuses to replace) the dataset in the bucket."""
        marker = out_dir / STAGING_MARKER
        if marker.exists() and marker.read_text(encoding="utf-8").strip() != self.describe():
            raise RefusedError(f"{out_dir} stages {marker.read_text(encoding='utf-8').strip()}, not {self.describe()}; "
                               "choose another --staging folder")
        if not marker.exists():
            with atomic_output(marker) as stream:
                stream.write(f"{self.describe()}\n".encode())
        for upload in multipart.list_unfinished(self.client(), self.location):  # a killed run's: S3 keeps them
            relative = upload.key[len(self.location.list_prefix):]
            if relative.startswith((f"{name}-", f"{name}.")):
                multipart.abort(self.client(), self.bucket, upload)
        local = manifest_path(out_dir, name)
        if local.exists() or (out_dir / f"{name}.pack-state.json").exists():
            return
        remote = head_object(self.client(), self.location, local.name)
        if remote is None:
            return
        data = self._get(local.name)
        try:
            manifest = Manifest.from_dict(json.loads(data))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise RecordioPackError(f"{self.describe()}/{local.name}: unreadable manifest ({error}); it cannot be "
                                    "updated (choose another prefix)") from None
        for record in manifest.files:
            self._download(out_dir, record)
        with atomic_output(local) as stream:
            stream.write(data)

    def presence(self, out_dir: Path, files: Sequence[FileRecord], verify: bool) -> Presence:
        if local_copy_intact(out_dir, files, verify):
            return "here"
        for record in files:
            found = head_object(self.client(), self.location, record.name)
            if found is None or found.mismatch(record) is not None:
                return "missing"
        return "published"

    def publish(self, out_dir: Path, files: Sequence[FileRecord]) -> None:
        """Upload the shard's files (checked against their records as they are read), then remove the data
        file; the index files stay (small, and the combined index is made from them)."""
        self._upload(out_dir, files)
        (out_dir / files[0].name).unlink(missing_ok=True)

    def retract(self, names: Sequence[str]) -> None:
        delete_objects(self.client(), self.location, names)

    def localize(self, out_dir: Path, files: Sequence[FileRecord]) -> None:
        for record in files:  # index files: small, so checked by content (an older version's may be there)
            if not local_copy_intact(out_dir, [record], verify=True):
                self._download(out_dir, record)

    def published(self, out_dir: Path, files: Sequence[FileRecord]) -> bool:
        for record in files:
            found = head_object(self.client(), self.location, record.name)
            if found is None or found.mismatch(record) is not None:
                return False
        return True

    def present(self, names: Sequence[str]) -> list[str]:
        held = list_objects(self.client(), self.location)
        return [name for name in names if name in held]

    def finish(self, out_dir: Path, files: Sequence[FileRecord], manifest: Path) -> None:
        from recordio_pack.digest import file_digests

        self._upload(out_dir, files)
        self._upload(out_dir, [FileRecord.of(manifest.name, file_digests(manifest))], content_type="application/json")

    def _upload(self, out_dir: Path, files: Sequence[FileRecord], content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else {}
        items = [Outgoing(record, out_dir / record.name, self.location.key(record.name),
                          {"Metadata": {SHA256_METADATA: record.sha256}, **extra}) for record in files]
        upload_files(self.client(), self.bucket, items, part_size=self.part_size, concurrency=CONCURRENCY,
                     limiter=RateLimiter(None), task=Task(NullProgress(), "upload"))

    def _get(self, name: str) -> bytes:
        key = self.location.key(name)
        with aws_errors(f"reading s3://{self.bucket}/{key}"):
            return self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def _download(self, out_dir: Path, record: FileRecord) -> None:
        data = self._get(record.name)
        if len(data) != record.bytes or hashlib.sha256(data).hexdigest() != record.sha256:
            raise DownloadDiffers(f"{self.describe()}/{record.name} is not the file its manifest records "
                                  f"({len(data)} bytes, {record.bytes} recorded)")
        target = out_dir / record.name
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(target) as stream:
            stream.write(data)


def parse_output(uri: str, target: AwsTarget) -> S3Output:
    """The output for ``s3://bucket/prefix``; UsageError for a malformed URI."""
    location = location_of(uri)
    return S3Output(location.bucket, location.prefix, target.profile, target.region, target.endpoint_url)


def default_staging(output: S3Output) -> Path:
    """``$XDG_CACHE_HOME/recordio-pack/staging/BUCKET/PREFIX`` (``~/.cache`` when unset): the same folder on every
    rerun, so a killed pack resumes."""
    import os

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "recordio-pack" / "staging" / output.bucket / (output.prefix or "_")
