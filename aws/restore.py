"""Restore a backed-up dataset from ``s3://bucket/prefix`` into a folder, verifying every byte.

The bucket's manifests say what the dataset is. Each data file is downloaded to ``NAME.tmp``, checked for
size, SHA-256 and CRC32 against the manifest, and only then renamed into place; manifests are written last,
so a manifest in the folder means every file it names is there and verified. A rerun skips files already
present with the right content; a present file with other content (a corrupted or different version) is
reported, and replaced only when ``overwrite`` is asked for.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recordio_pack.aws.s3 import (
    SHA256_METADATA, DatasetMismatch, Progress, ProgressSubscriber, S3Location, TransferOptions, dataset_files,
    hash_file, hash_files, list_objects, s3_client, transfer_config, transfer_manager,
)
from recordio_pack.aws.session import AwsTarget, aws_errors
from recordio_pack.errors import RecordioPackError, RefusedError
from recordio_pack.manifest import MANIFEST_SUFFIX, FileRecord, Manifest
from recordio_pack.recordio import atomic_output, fsync_dir

__all__ = ["RestoreOptions", "RestorePlan", "RestoreResult", "restore"]

DOWNLOAD, SKIP = "download", "skip"


@dataclass(frozen=True)
class RestoreOptions:
    """``overwrite``: replace local files whose content differs from the backup (default False: refuse)."""

    overwrite: bool = False
    transfer: TransferOptions = field(default_factory=TransferOptions)


@dataclass
class RestorePlan:
    name: str
    record: FileRecord
    action: str  # download or skip
    reason: str  # missing locally, present (verified), differs locally (replaced)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "bytes": self.record.bytes, "action": self.action, "reason": self.reason}


@dataclass
class RestoreResult:
    source: str
    destination: str
    plans: list[RestorePlan]
    manifests: list[str]
    received_bytes: int = 0
    seconds: float = 0.0
    download_seconds: float = 0.0

    @property
    def replaced(self) -> list[str]:
        return [plan.name for plan in self.plans if plan.action == DOWNLOAD and plan.reason.startswith("differs")]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "destination": self.destination, "manifests": self.manifests,
            "files": [plan.to_dict() for plan in self.plans],
            "downloaded_files": sum(plan.action == DOWNLOAD for plan in self.plans),
            "skipped_files": sum(plan.action == SKIP for plan in self.plans),
            "downloaded_bytes": self.received_bytes, "replaced": self.replaced,
            "seconds": round(self.seconds, 3),
            "mb_per_s": round(self.received_bytes / self.download_seconds / 1e6, 2) if self.download_seconds else None,
        }


def _read_manifests(client: Any, location: S3Location, listing: dict[str, int]) -> dict[str, tuple[bytes, Manifest]]:
    names = sorted(name for name in listing if "/" not in name and name.endswith(MANIFEST_SUFFIX))
    if not names:
        raise RecordioPackError(f"no recordio-pack manifest (*{MANIFEST_SUFFIX}) directly under {location}: "
                                "wrong prefix, or the backup never finished")
    found = {}
    for name in names:
        with aws_errors(f"reading {location.key(name)} from {location.bucket}"):
            response = client.get_object(Bucket=location.bucket, Key=location.key(name), ChecksumMode="ENABLED")
            data = response["Body"].read()
        expected = response.get("Metadata", {}).get(SHA256_METADATA)
        if expected is not None and hashlib.sha256(data).hexdigest() != expected:
            raise RecordioPackError(f"{location}/{name}: the manifest object does not match its sha256 metadata")
        try:
            found[name] = (data, Manifest.from_dict(json.loads(data)))
        except (ValueError, KeyError, TypeError) as error:
            raise RecordioPackError(f"{location}/{name}: unreadable manifest: {error}") from None
    return found


def _check_bucket(location: S3Location, files: dict[str, FileRecord], listing: dict[str, int]) -> None:
    problems = [f"{name} {'is missing' if name not in listing else f'has {listing[name]} bytes, not {record.bytes}'}"
                for name, record in files.items() if listing.get(name) != record.bytes]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise RecordioPackError(f"{location}: the backup is incomplete ({shown}); nothing was downloaded. "
                                "Run backup again from the source")


def _plan(directory: Path, files: dict[str, FileRecord], overwrite: bool, workers: int,
          progress: Progress) -> list[RestorePlan]:
    present = {name: directory / name for name in files if (directory / name).is_file()}
    same_size = {path: files[name] for name, path in present.items() if path.stat().st_size == files[name].bytes}
    progress.stage("verifying", sum(record.bytes for record in same_size.values()))
    found = hash_files(same_size, progress, workers)
    plans, differing = [], []
    for name, record in files.items():
        path = directory / name
        if name not in present:
            plans.append(RestorePlan(name, record, DOWNLOAD, "missing locally"))
        elif path in found and (found[path].sha256, found[path].crc32) == (record.sha256, record.crc32):
            plans.append(RestorePlan(name, record, SKIP, "present (verified)"))
        else:
            differing.append(name)
            plans.append(RestorePlan(name, record, DOWNLOAD, "differs locally (size or checksum); replaced"))
    if differing and not overwrite:
        shown = ", ".join(differing[:5]) + (f" and {len(differing) - 5} more" if len(differing) > 5 else "")
        raise RefusedError(f"{directory}: {len(differing)} existing file(s) differ from the backup (corrupted or "
                           f"another version): {shown}; nothing was downloaded. Rerun with --overwrite to "
                           "replace them with the bucket's copy")
    return plans


def _check_local_manifests(directory: Path, manifests: dict[str, tuple[bytes, Manifest]], overwrite: bool) -> None:
    differing = [name for name, (data, _) in manifests.items()
                 if (directory / name).is_file() and (directory / name).read_bytes() != data]
    if differing and not overwrite:
        raise RefusedError(f"{directory}: {', '.join(differing)} already exist(s) with other content; "
                           "rerun with --overwrite to replace")


def _temp(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def _download(client: Any, location: S3Location, directory: Path, plans: list[RestorePlan],
              options: RestoreOptions, progress: Progress) -> int:
    """Download ``plans`` to temp names, verify each, rename; returns bytes received."""
    config = transfer_config(options.transfer, max((plan.record.bytes for plan in plans), default=0))
    problems: list[str] = []
    received = 0
    try:
        with transfer_manager(client, config) as manager:
            futures = []
            for plan in plans:
                path = directory / plan.name
                path.parent.mkdir(parents=True, exist_ok=True)
                futures.append((plan, path, manager.download(
                    location.bucket, location.key(plan.name), str(_temp(path)),
                    extra_args={"ChecksumMode": "ENABLED"},
                    subscribers=[ProgressSubscriber(progress, plan.record.bytes)])))
            for plan, path, future in futures:
                with aws_errors(f"downloading {location.key(plan.name)} from {location.bucket}"):
                    future.result()
                got = hash_file(_temp(path))
                received += got.size
                if (got.size, got.sha256, got.crc32) != (plan.record.bytes, plan.record.sha256, plan.record.crc32):
                    problems.append(plan.name)
                    _temp(path).unlink()
                    continue
                os.replace(_temp(path), path)
    finally:
        for plan in plans:
            with suppress(OSError):
                _temp(directory / plan.name).unlink()
    for parent in sorted({(directory / plan.name).parent for plan in plans}):
        fsync_dir(parent)
    if problems:
        raise RecordioPackError(f"{location}: {len(problems)} downloaded file(s) do not match the manifest "
                                f"({', '.join(problems[:5])}): the bucket copy is damaged or was overwritten "
                                "by a later, unfinished backup; they were not written")
    return received


def restore(location: S3Location, directory: str | Path, options: RestoreOptions, target: AwsTarget,
            progress: Progress | None = None) -> RestoreResult:
    """Restore the dataset at ``location`` into ``directory`` (created if needed); see the module docstring.
    Raises RefusedError when local files differ and ``overwrite`` is off, RecordioPackError when the backup
    is incomplete or a download does not verify, AwsError for AWS failures."""
    started = time.monotonic()
    progress = progress or Progress()
    directory = Path(directory)
    client = s3_client(target, options.transfer)
    listing = list_objects(client, location)
    manifests = _read_manifests(client, location, listing)
    try:
        files = dataset_files(manifest for _, manifest in manifests.values())
    except DatasetMismatch as error:
        raise RecordioPackError(f"{location}: {error}") from None
    _check_bucket(location, files, listing)
    directory.mkdir(parents=True, exist_ok=True)
    _check_local_manifests(directory, manifests, options.overwrite)
    for name in files:  # temp files of an interrupted restore (our names: NAME.tmp of a file we restore)
        with suppress(FileNotFoundError):
            _temp(directory / name).unlink()
    plans = _plan(directory, files, options.overwrite, min(4, options.transfer.concurrency), progress)
    result = RestoreResult(location.uri, str(directory), plans, sorted(manifests))
    wanted = [plan for plan in plans if plan.action == DOWNLOAD]
    progress.stage("downloading", sum(plan.record.bytes for plan in wanted))
    download_started = time.monotonic()
    result.received_bytes = _download(client, location, directory, wanted, options, progress)
    result.download_seconds = time.monotonic() - download_started
    for name, (data, _) in manifests.items():  # last: a manifest on disk vouches for verified files only
        if not (directory / name).is_file() or (directory / name).read_bytes() != data:
            with atomic_output(directory / name) as stream:
                stream.write(data)
    result.seconds = time.monotonic() - started
    return result
