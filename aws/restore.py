"""Restore a backed-up dataset from ``s3://bucket/prefix`` into a folder, verifying every byte.

The bucket's manifests say what the dataset is. Each data file is downloaded with ranged GETs to
``NAME.partial`` (``aws/download.py``), checked for size, SHA-256 and CRC32 against the manifest, and only then
renamed into place; manifests are written last, so a manifest in the folder means every file it names is
there and verified. A rerun skips files already present with the right content and continues partial
downloads where they stopped; a present file with other content (a corrupted or different version) is
reported, and replaced only when ``overwrite`` is asked for.

Leftovers of an interrupted run are removed on the next one, and only names this tool makes: for a file the
manifests name, ``NAME.XXXXXXXX.tmp`` (``fsutil.atomic_output``'s temporaries, e.g. of a manifest), and
``NAME.tmp`` and ``NAME.tmp.XXXXXXXX`` (earlier versions: a fixed temporary name, and s3transfer's); and our
partial downloads of files the manifests no longer name.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import re
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recordio_pack.aws import download
from recordio_pack.aws.s3 import (
    SHA256_METADATA,
    DatasetMismatch,
    Listed,
    LocalFileError,
    S3Location,
    TransferOptions,
    dataset_files,
    hash_files,
    list_objects,
    local_errors,
    s3_client,
)
from recordio_pack.aws.session import AwsTarget, aws_errors
from recordio_pack.errors import RecordioPackError, RefusedError
from recordio_pack.fsutil import atomic_output, temporaries_of
from recordio_pack.manifest import MANIFEST_SUFFIX, FileRecord, Manifest
from recordio_pack.progress import NullProgress, Progress, Task, start_task

__all__ = ["RestoreOptions", "RestorePlan", "RestoreResult", "LocalFilesDiffer", "restore"]

DOWNLOAD, SKIP = "download", "skip"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RestoreOptions:
    """``overwrite``: replace local files whose content differs from the backup (default False: refuse)."""

    overwrite: bool = False
    transfer: TransferOptions = field(default_factory=TransferOptions)


class LocalFilesDiffer(RefusedError):
    """Files in the destination hold other content than the backup; ``names`` are the first of them."""

    def __init__(self, message: str, names: list[str]) -> None:
        super().__init__(message)
        self.names = names


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
    written_manifests: list[str] = field(default_factory=list)  # manifests this run wrote (new or changed)
    received_bytes: int = 0  # data fetched by this run plus the manifests it wrote
    resumed_bytes: int = 0  # kept from partial downloads of an interrupted run
    resumed_files: list[str] = field(default_factory=list)
    removed_leftovers: list[str] = field(default_factory=list)  # temporaries of an interrupted run, removed
    seconds: float = 0.0
    download_seconds: float = 0.0

    @property
    def replaced(self) -> list[str]:
        return [plan.name for plan in self.plans if plan.action == DOWNLOAD and plan.reason.startswith("differs")]

    def to_dict(self) -> dict[str, Any]:
        """Counts as backup gives them: ``*_files`` are data files, ``*_manifests`` the manifests."""
        return {
            "source": self.source, "destination": self.destination, "manifests": self.manifests,
            "files": [plan.to_dict() for plan in self.plans],
            "downloaded_files": sum(plan.action == DOWNLOAD for plan in self.plans),
            "downloaded_manifests": len(self.written_manifests),
            "skipped_files": sum(plan.action == SKIP for plan in self.plans),
            "skipped_manifests": len(self.manifests) - len(self.written_manifests),
            "downloaded_bytes": self.received_bytes, "resumed_bytes": self.resumed_bytes,
            "resumed_files": self.resumed_files, "removed_leftovers": self.removed_leftovers,
            "replaced": self.replaced,
            "seconds": round(self.seconds, 3),
            "mb_per_s": round(self.received_bytes / self.download_seconds / 1e6, 2) if self.download_seconds else None,
        }


def _read_manifests(client: Any, location: S3Location, listing: dict[str, Listed]) -> dict[str, tuple[bytes, Manifest]]:
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


def _check_bucket(location: S3Location, files: dict[str, FileRecord], listing: dict[str, Listed]) -> None:
    problems = [f"{name} is missing" if name not in listing else f"{name} has {listing[name].size} bytes, not "
                f"{record.bytes}" for name, record in files.items()
                if name not in listing or listing[name].size != record.bytes]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise RecordioPackError(f"{location}: the backup is incomplete ({shown}); nothing was downloaded. "
                                "Run backup again from the source")


def _plan(directory: Path, files: dict[str, FileRecord], overwrite: bool, workers: int,
          progress: Progress) -> list[RestorePlan]:
    present = {name: directory / name for name in files if (directory / name).is_file()}
    same_size = {path: files[name] for name, path in present.items() if path.stat().st_size == files[name].bytes}
    task = start_task(progress, "verifying", "bytes", sum(record.bytes for record in same_size.values()))
    with local_errors(f"reading {directory}"):
        found = hash_files(same_size, task, workers)
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
        raise LocalFilesDiffer(f"{directory}: {len(differing)} existing file(s) differ from the backup (corrupted "
                               f"or another version): {shown}; nothing was downloaded", differing[:5])
    return plans


def _check_local_manifests(directory: Path, manifests: dict[str, tuple[bytes, Manifest]], overwrite: bool) -> None:
    differing = [name for name, (data, _) in manifests.items()
                 if (directory / name).is_file() and (directory / name).read_bytes() != data]
    if differing and not overwrite:
        raise LocalFilesDiffer(f"{directory}: {', '.join(differing)} already exist(s) with other content",
                               differing)


_S3TRANSFER_TEMP = re.compile(r"\.tmp\.[0-9A-Fa-f]{8}")  # after NAME: s3transfer's temp of NAME.tmp


def _leftovers_of(path: Path) -> list[Path]:
    """What an interrupted run may have left for ``path``: atomic_output's ``NAME.XXXXXXXX.tmp``, and from
    earlier versions ``NAME.tmp`` (the fixed temp name of partial downloads and manifests) and s3transfer's
    ``NAME.tmp.XXXXXXXX`` (8 hex digits)."""
    temp = path.with_name(path.name + ".tmp")
    found = [temp] if temp.is_file() else []
    if path.parent.is_dir():
        found += [other for other in path.parent.glob(f"{glob.escape(temp.name)}.*")
                  if _S3TRANSFER_TEMP.fullmatch(other.name[len(path.name):]) and other.is_file()]
    return found + temporaries_of(path)


def _remove_leftovers(directory: Path, names: list[str]) -> list[str]:
    """Remove the leftovers of the files ``names`` and our partial downloads of files no longer named; returns
    what was removed, relative to ``directory``."""
    removed = []
    for path in (leftover for name in names for leftover in _leftovers_of(directory / name)):
        with suppress(FileNotFoundError):
            path.unlink()
            removed.append(str(path.relative_to(directory)))
    removed += [name + download.PARTIAL_SUFFIX for name in download.remove_stray_partials(directory, names)]
    return removed


def _download(client: Any, location: S3Location, directory: Path, plans: list[RestorePlan],
              listing: dict[str, Listed], options: RestoreOptions, task: Task) -> download.DownloadResult:
    """Download ``plans`` (resuming partial files), verify each, rename; raise when one does not verify."""
    wanted = [download.Wanted(plan.record, listing[plan.name].etag) for plan in plans]
    with local_errors(f"restoring into {directory}"):
        done = download.download_files(client, location, directory, wanted, part_size=options.transfer.part_size,
                                       concurrency=options.transfer.concurrency,
                                       max_bandwidth=options.transfer.max_bandwidth, task=task)
    if done.problems:
        raise RecordioPackError(f"{location}: {len(done.problems)} downloaded file(s) do not match the manifest "
                                f"({', '.join(done.problems[:5])}): the bucket copy is damaged or was overwritten "
                                "by a later, unfinished backup; they were not written")
    return done


def _write_manifests(directory: Path, manifests: dict[str, tuple[bytes, Manifest]]) -> list[str]:
    """Write each manifest that is missing or differs locally (atomically); returns the names written."""
    written = []
    for name, (data, _) in manifests.items():
        path = directory / name
        if not path.is_file() or path.read_bytes() != data:
            with local_errors(f"writing {path}"), atomic_output(path) as stream:
                stream.write(data)
            written.append(name)
    return written


def restore(location: S3Location, directory: str | Path, options: RestoreOptions, target: AwsTarget,
            progress: Progress | None = None) -> RestoreResult:
    """Restore the dataset at ``location`` into ``directory`` (created if needed); see the module docstring.
    Raises LocalFilesDiffer when local files differ and ``overwrite`` is off, RecordioPackError when the backup
    is incomplete or a download does not verify, LocalFileError when the folder cannot be written, AwsError
    for AWS failures."""
    started = time.monotonic()
    progress = progress or NullProgress()
    directory = Path(directory)
    client = s3_client(target, options.transfer)
    listing = list_objects(client, location)
    manifests = _read_manifests(client, location, listing)
    try:
        files = dataset_files(manifest for _, manifest in manifests.values())
    except DatasetMismatch as error:
        raise RecordioPackError(f"{location}: {error}") from None
    _check_bucket(location, files, listing)
    if directory.exists() and not directory.is_dir():
        raise LocalFileError(f"{directory}: not a folder; restore into a folder (it is created if needed)")
    with local_errors(f"creating {directory}"):
        directory.mkdir(parents=True, exist_ok=True)
        removed = _remove_leftovers(directory, [*files, *manifests])
    _check_local_manifests(directory, manifests, options.overwrite)
    plans = _plan(directory, files, options.overwrite, min(4, options.transfer.concurrency), progress)
    result = RestoreResult(location.uri, str(directory), plans, sorted(manifests), removed_leftovers=removed)
    for plan in plans:
        if plan.action == SKIP:  # present and verified: a partial download of it is of no more use
            download.remove_partial(directory / plan.name)
    wanted = [plan for plan in plans if plan.action == DOWNLOAD]
    if len(wanted) < len(plans):
        log.info("%d file(s) already in %s and verified, not downloaded again", len(plans) - len(wanted), directory)
    task = start_task(progress, "downloading", "bytes", sum(plan.record.bytes for plan in wanted))
    download_started = time.monotonic()
    done = _download(client, location, directory, wanted, listing, options, task)
    result.received_bytes, result.resumed_bytes, result.resumed_files = (
        done.received_bytes, done.resumed_bytes, done.resumed_files)
    result.download_seconds = time.monotonic() - download_started
    result.written_manifests = _write_manifests(directory, manifests)  # last: they vouch for verified files only
    result.received_bytes += sum(len(manifests[name][0]) for name in result.written_manifests)
    result.seconds = time.monotonic() - started
    return result
