"""Back a packed dataset folder up to ``s3://bucket/prefix``: data files first, manifests last.

What moves is decided by content only: each file's size, CRC32 and SHA-256 from our manifest against the
bucket's copy of the manifest and what S3 reports for the object (HeadObject with checksum mode); never
modification times. Every object is written with S3's full-object CRC32 (S3 rejects bytes that do not match
it) and our SHA-256 as metadata. Each file to send is read once (``aws/upload.py``): its size, CRC32 and
SHA-256 are computed on the bytes as they are read to be sent and compared with the manifest before the
object is completed; files already in the bucket with the manifest's content are not read at all. A manifest
is written only after every data object of the run is in place and verified, so a manifest in the bucket
means a complete backup.

Versions: a prefix holds one version of each dataset. When the bucket's manifest of the same name lists other
files or other contents, the run refuses (``OtherVersionError``) unless ``overwrite``: then the new data goes
up, then the new manifest, and only then are the objects of the old version that the new manifests do not
list deleted, together with objects of ours (they carry our sha256 metadata) that no manifest lists and that
are named like the dataset's files (``NAME-...``, ``NAME....``), left by an interrupted replacement. Objects
that are not ours, and other datasets' manifests and files, are left alone.

Placement: an object whose content is right but whose storage class or encryption is not what the run asks
is uploaded again, so the options always take effect (S3 cannot change either in place).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recordio_pack.aws import multipart
from recordio_pack.aws.s3 import (
    SHA256_METADATA,
    DatasetMismatch,
    Listed,
    LocalFileError,
    ObjectInfo,
    Placement,
    RateLimiter,
    S3Location,
    TransferOptions,
    dataset_files,
    delete_objects,
    hash_file,
    head_object,
    head_objects,
    list_objects,
    local_errors,
    part_size_for,
    s3_client,
)
from recordio_pack.aws.s3_options import SSE_MODES, STORAGE_CLASSES
from recordio_pack.aws.session import AwsTarget, aws_errors
from recordio_pack.aws.upload import ContentDiffers, Outgoing, upload_files
from recordio_pack.errors import RecordioPackError, RefusedError
from recordio_pack.manifest import MANIFEST_SUFFIX, FileRecord, Manifest, find_manifests
from recordio_pack.progress import NullProgress, Progress, Task, start_task

__all__ = ["STORAGE_CLASSES", "SSE_MODES", "BackupOptions", "FilePlan", "BackupResult", "OtherVersionError",
           "decide", "backup"]

UPLOAD, CONTINUE, SKIP = "upload", "continue", "skip"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackupOptions:
    """``storage_class`` (default STANDARD), server-side encryption ``sse`` (default AES256; ``aws:kms`` with
    an optional ``kms_key_id``), ``dry_run`` (plan only: nothing read beyond sizes, nothing sent or aborted),
    ``verify_local`` (default True: the SHA-256 of every byte sent, computed as it is read, must be the
    manifest's, or that file's object is not completed and the run fails; False skips the SHA-256 and leaves
    content to the CRC32, which is computed as the bytes are read and checked by S3 on arrival), ``overwrite``
    (default False: refuse when the bucket holds another version of the dataset; True: replace it, deleting
    the old version's objects once the new manifest is up). A dry run reads the local manifests (not the
    data files), the bucket's listing, manifests and object checksums; it sends, aborts and deletes nothing."""

    storage_class: str = "STANDARD"
    sse: str = "AES256"
    kms_key_id: str | None = None
    dry_run: bool = False
    verify_local: bool = True
    overwrite: bool = False
    transfer: TransferOptions = field(default_factory=TransferOptions)

    def __post_init__(self) -> None:
        if self.storage_class not in STORAGE_CLASSES:
            raise ValueError(f"storage class must be one of {', '.join(STORAGE_CLASSES)}, not {self.storage_class!r}")
        if self.sse not in SSE_MODES:
            raise ValueError(f"server-side encryption must be one of {', '.join(SSE_MODES)}, not {self.sse!r}")
        if self.kms_key_id and self.sse != "aws:kms":
            raise ValueError("a KMS key id needs server-side encryption aws:kms")

    @property
    def placement(self) -> Placement:
        return Placement(self.storage_class, self.sse, self.kms_key_id)


class OtherVersionError(RefusedError):
    """The bucket holds another version of the dataset under the prefix; ``names`` are its manifests."""

    def __init__(self, message: str, names: list[str]) -> None:
        super().__init__(message)
        self.names = names


@dataclass
class FilePlan:
    """One object of the backup and what the run does with it, and why."""

    name: str
    record: FileRecord
    action: str  # upload, continue (an unfinished multipart upload) or skip
    reason: str
    manifest: bool = False
    path: Path | None = None
    upload: multipart.Unfinished | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "bytes": self.record.bytes, "action": self.action, "reason": self.reason,
                "manifest": self.manifest}


@dataclass
class BackupResult:
    source: str
    destination: str
    dry_run: bool
    plans: list[FilePlan]
    aborted: list[str] = field(default_factory=list)  # keys of unfinished uploads aborted (or to abort)
    foreign_uploads: int = 0  # unfinished uploads under the prefix that are not of this dataset; left alone
    replaced: list[str] = field(default_factory=list)  # bucket manifests of another version this run replaces
    deleted: list[str] = field(default_factory=list)  # names deleted (dry run: to delete) after the manifests
    unlisted: list[str] = field(default_factory=list)  # our objects in no manifest, left alone (no overwrite)
    sent_bytes: int = 0
    reused_parts: int = 0
    seconds: float = 0.0
    upload_seconds: float = 0.0

    def count(self, *actions: str, manifest: bool | None = None) -> int:
        """Plans with one of ``actions``: data files only (``manifest=False``), manifests only (True), or both."""
        return sum(plan.action in actions and manifest in (None, plan.manifest) for plan in self.plans)

    def to_dict(self) -> dict[str, Any]:
        """Counts: ``*_files`` are data files (what restore counts too), ``*_manifests`` the manifests;
        ``uploaded_bytes`` covers both."""
        return {
            "source": self.source, "destination": self.destination, "dry_run": self.dry_run,
            "files": [plan.to_dict() for plan in self.plans],
            "uploaded_files": self.count(UPLOAD, CONTINUE, manifest=False),
            "uploaded_manifests": self.count(UPLOAD, manifest=True),
            "skipped_files": self.count(SKIP, manifest=False), "skipped_manifests": self.count(SKIP, manifest=True),
            "uploaded_bytes": self.sent_bytes, "reused_parts": self.reused_parts,
            "aborted_uploads": self.aborted, "foreign_uploads": self.foreign_uploads,
            "replaced_manifests": self.replaced, "deleted_objects": self.deleted, "unlisted_objects": self.unlisted,
            "seconds": round(self.seconds, 3),
            "mb_per_s": round(self.sent_bytes / self.upload_seconds / 1e6, 2) if self.upload_seconds else None,
        }


def _placement_reason(moved: str) -> str:
    return f"stored differently ({moved}); uploaded again to apply it"


def decide(record: FileRecord, in_bucket_manifest: FileRecord | None, obj: ObjectInfo | None,
           wanted: Placement | None = None) -> tuple[str, str]:
    """``(action, reason)`` for one file: skip when the object in the bucket is already exactly ``record``,
    stored as ``wanted`` asks (storage class, encryption; None: any); else upload, saying whether it is new,
    changed since the bucket's manifest, missing from the bucket, or stored differently."""
    problem = obj.mismatch(record) if obj is not None else "absent"
    if problem is None:
        assert obj is not None
        moved = obj.placement.differs_from(wanted) if wanted is not None else None
        if moved is not None:
            return UPLOAD, _placement_reason(moved)
        if in_bucket_manifest == record:
            return SKIP, "unchanged"
        return SKIP, "unchanged (already uploaded by an earlier, unfinished run)"
    if in_bucket_manifest is None:
        return UPLOAD, "new" if obj is None else f"changed ({problem})"
    if (in_bucket_manifest.bytes, in_bucket_manifest.sha256) != (record.bytes, record.sha256):
        return UPLOAD, "changed checksum since the bucket's manifest"
    if obj is None:
        return UPLOAD, "missing in bucket"
    return UPLOAD, f"changed in bucket ({problem})"


def _load_local(directory: Path) -> tuple[list[tuple[Path, Manifest]], dict[str, FileRecord]]:
    if not directory.is_dir():
        raise LocalFileError(f"{directory}: no such folder; give the folder `recordio-pack pack` wrote")
    with local_errors(f"reading {directory}"):
        paths = find_manifests(directory)
    if not paths:
        raise RecordioPackError(f"{directory}: no *.manifest.json here; back up a folder written by "
                                "`recordio-pack pack`")
    manifests = []
    for path in paths:
        try:
            manifests.append((path, Manifest.load(path)))
        except (OSError, ValueError) as error:
            raise RecordioPackError(str(error)) from None
    try:
        files = dataset_files(manifest for _, manifest in manifests)
    except DatasetMismatch as error:
        raise RecordioPackError(f"{directory}: {error}") from None
    return manifests, files


def _check_sizes(directory: Path, files: dict[str, FileRecord]) -> None:
    problems = []
    for name, record in files.items():
        path = directory / name
        if not path.is_file():
            problems.append(f"{name} is missing")
            continue
        with local_errors(f"reading {path}"):
            size = path.stat().st_size
            with open(path, "rb"):  # an unreadable file fails here, before anything is sent
                pass
        if size != record.bytes:
            problems.append(f"{name} has {path.stat().st_size} bytes, its manifest says {record.bytes}")
    if problems:
        raise RecordioPackError(_mismatch_message(directory, problems))


def _mismatch_message(directory: Path, problems: list[str], done: str = "nothing was uploaded") -> str:
    shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
    return (f"{directory}: the manifest no longer matches the data ({shown}); {done}. "
            f"Re-verify the dataset (recordio-pack verify {directory}) and re-pack what is damaged")


def _bucket_manifests(client: Any, location: S3Location, listing: dict[str, Listed]) -> dict[str, bytes]:
    """The bytes of every manifest directly under the prefix, by name."""
    found = {}
    for name in sorted(name for name in listing if "/" not in name and name.endswith(MANIFEST_SUFFIX)):
        with aws_errors(f"reading {location.key(name)} from {location.bucket}"):
            found[name] = client.get_object(Bucket=location.bucket, Key=location.key(name))["Body"].read()
    return found


def _records_of(manifest_bytes: bytes | None) -> dict[str, FileRecord] | None:
    """The data files a manifest's bytes vouch for, by name; None when they are not a readable manifest."""
    if manifest_bytes is None:
        return None
    try:
        return {record.name: record for record in Manifest.from_dict(json.loads(manifest_bytes)).data_files()}
    except (ValueError, KeyError, TypeError):
        return None


def _other_version(local: Manifest, remote_bytes: bytes) -> str | None:
    """Why the bucket's manifest of this dataset describes another version of it (None: the same files)."""
    remote = _records_of(remote_bytes)
    if remote is None:
        return "its manifest there is unreadable"
    here = {record.name: record for record in local.data_files()}
    if remote == here:
        return None
    gone, new = sorted(set(remote) - set(here)), sorted(set(here) - set(remote))
    changed = sorted(name for name in set(remote) & set(here) if remote[name] != here[name])
    return ", ".join(f"{len(names)} {what} (e.g. {names[0]})" for names, what in (
        (gone, "files only there"), (new, "files only here"), (changed, "files differ")) if names)


@dataclass
class _Bucket:
    """What the bucket holds under the prefix, as far as this run needs it."""

    listing: dict[str, Listed]
    manifests: dict[str, bytes]  # every manifest directly under the prefix

    def vouched(self, manifest_names: list[str]) -> dict[str, FileRecord]:
        """The files the bucket's manifests of ``manifest_names`` list."""
        found: dict[str, FileRecord] = {}
        for name in manifest_names:
            found.update(_records_of(self.manifests.get(name)) or {})
        return found


def _read_bucket(client: Any, location: S3Location) -> _Bucket:
    listing = list_objects(client, location)
    return _Bucket(listing, _bucket_manifests(client, location, listing))


def _check_versions(location: S3Location, manifests: list[tuple[Path, Manifest]], bucket: _Bucket,
                    overwrite: bool) -> list[str]:
    """The bucket manifests this run replaces with another version (only with ``overwrite``; else
    OtherVersionError naming them and what differs)."""
    other: dict[str, str] = {}
    for path, manifest in manifests:
        why = _other_version(manifest, bucket.manifests[path.name]) if path.name in bucket.manifests else None
        if why is not None:
            other[path.name] = why
    if other and not overwrite:
        detail = "; ".join(f"{name}: {why}" for name, why in sorted(other.items()))
        raise OtherVersionError(f"{location} holds another version of this dataset ({detail}); nothing was "
                                "uploaded", sorted(other))
    return sorted(other)


def _leftovers(client: Any, location: S3Location, bucket: _Bucket, replaced: list[str], kept: set[str],
               datasets: list[str], workers: int) -> list[str]:
    """Objects to delete once the new manifests are up, never one in ``kept`` or listed by another manifest:
    those the replaced manifests list, and top-level objects of ours (our sha256 metadata) that no manifest
    lists and that are named like a file of one of ``datasets`` (``NAME-...`` or ``NAME....``)."""
    kept = kept | set(bucket.manifests) | set(bucket.vouched([n for n in bucket.manifests if n not in replaced]))
    old = set(bucket.vouched(replaced))
    candidates = [name for name in bucket.listing if name not in kept]
    unlisted = [name for name in candidates if name not in old and "/" not in name
                and any(name.startswith((f"{dataset}-", f"{dataset}.")) for dataset in datasets)]
    heads = head_objects(client, location, unlisted, workers)
    return sorted(name for name in candidates
                  if name in old or (heads.get(name) is not None and heads[name].sha256 is not None))


def _data_plans(directory: Path, location: S3Location, client: Any, options: BackupOptions, bucket: _Bucket,
                manifest_names: list[str], files: dict[str, FileRecord]) -> list[FilePlan]:
    in_bucket = bucket.vouched(manifest_names)
    heads = head_objects(client, location, [name for name, record in files.items()
                                            if name in bucket.listing and bucket.listing[name].size == record.bytes],
                         options.transfer.concurrency)
    plans = []
    for name, record in files.items():
        obj = heads.get(name)
        if obj is None and name in bucket.listing:  # another size: no need to ask S3 for checksums to know it differs
            obj = ObjectInfo(bucket.listing[name].size, None, None, None, "STANDARD", None)
        action, reason = decide(record, in_bucket.get(name), obj, options.placement)
        plans.append(FilePlan(name, record, action, reason, path=directory / name))
    return plans


def _manifest_plans(location: S3Location, client: Any, options: BackupOptions, bucket: _Bucket,
                    manifests: list[tuple[Path, Manifest]]) -> list[FilePlan]:
    plans = []
    for path, _ in manifests:
        with local_errors(f"reading {path}"):
            local = path.read_bytes()
            record = FileRecord.of(path.name, hash_file(path))
        remote = bucket.manifests.get(path.name)
        action, reason = (SKIP, "unchanged") if remote == local else (UPLOAD, "new" if remote is None else "changed")
        obj = head_object(client, location, path.name) if action == SKIP else None
        if action == SKIP and obj is None:
            action, reason = UPLOAD, "missing in bucket"
        elif obj is not None and (moved := obj.placement.differs_from(options.placement)) is not None:
            action, reason = UPLOAD, _placement_reason(moved)
        plans.append(FilePlan(path.name, record, action, reason, manifest=True, path=path))
    return plans


def _match_unfinished(uploads: list[multipart.Unfinished], location: S3Location, plans: list[FilePlan],
                      storage_class: str) -> tuple[list[multipart.Unfinished], int]:
    """Pair unfinished uploads with plans: the newest one of a data file we still have to send turns that
    plan into ``continue``. Returns the other uploads of our keys (to abort) and how many uploads under the
    prefix are not of this dataset (left alone)."""
    by_key = {location.key(plan.name): plan for plan in plans}
    stale, foreign = [], 0
    for upload in reversed(uploads):  # newest first
        plan = by_key.get(upload.key)
        if plan is None:
            foreign += 1
        elif (plan.action == UPLOAD and not plan.manifest and plan.upload is None
              and upload.storage_class == storage_class):
            plan.action, plan.upload = CONTINUE, upload
            plan.reason += "; continue its unfinished upload"
        else:
            stale.append(upload)
    return stale, foreign


def _extra_args(record: FileRecord, options: BackupOptions, manifest: bool) -> dict[str, Any]:
    """What PutObject and CreateMultipartUpload both get besides the checksums ``upload`` adds."""
    args: dict[str, Any] = {
        "Metadata": {SHA256_METADATA: record.sha256},
        "StorageClass": options.storage_class, "ServerSideEncryption": options.sse,
    }
    if options.kms_key_id:
        args["SSEKMSKeyId"] = options.kms_key_id
    if manifest:
        args["ContentType"] = "application/json"
    return args


def _verify_uploaded(client: Any, location: S3Location, plan: FilePlan, wanted: Placement) -> str | None:
    obj = head_object(client, location, plan.name)
    if obj is None:
        return "not in the bucket after upload"
    return obj.mismatch(plan.record) or obj.placement.differs_from(wanted)


class _Uploader:
    """The sending half of a run: continued multipart uploads, then fresh ones (``aws/upload.py``)."""

    def __init__(self, client: Any, location: S3Location, options: BackupOptions, task: Task,
                 result: BackupResult) -> None:
        """``task``: "uploading", in bytes; its notes tell of continued and aborted uploads."""
        self.client, self.location, self.options, self.task, self.result = (
            client, location, options, task, result)
        self.limiter = RateLimiter(options.transfer.max_bandwidth)  # one cap over continued and fresh uploads

    def continue_or_fallback(self, plan: FilePlan) -> bool:
        """Finish ``plan``'s unfinished upload; False (upload aborted) when it has to be sent afresh."""
        assert plan.upload is not None and plan.path is not None
        try:
            done = multipart.continue_upload(
                self.client, self.location, plan.upload, plan.path, plan.record,
                concurrency=self.options.transfer.concurrency,
                limiter=self.limiter, task=self.task)
        except multipart.CannotContinue as why:
            self.task.progress.on_note(f"{plan.name}: cannot continue its unfinished upload ({why}); aborted it, "
                                       "sending the file again")
            multipart.abort(self.client, self.location.bucket, plan.upload)
            self.result.aborted.append(plan.upload.key)
            plan.action, plan.reason = UPLOAD, f"{plan.reason} (not possible: {why}; sent afresh)"
            return False
        self.task.advance(done.reused_bytes)
        problem = _verify_uploaded(self.client, self.location, plan, self.options.placement)
        if problem is not None:
            self.task.progress.on_note(f"{plan.name}: the continued upload does not match the manifest "
                                       f"({problem}); sending the file again")
            self.task.advance(-plan.record.bytes)
            plan.action, plan.reason = UPLOAD, f"{plan.reason} (did not verify: {problem}; sent afresh)"
            return False
        self.result.sent_bytes += done.sent_bytes
        self.result.reused_parts += done.reused_parts
        self.task.progress.on_note(f"{plan.name}: continued an unfinished upload ({done.reused_parts} parts were "
                                   f"already in the bucket, {done.sent_parts} sent)")
        return True

    def send(self, plans: list[FilePlan], part_size: int) -> None:
        """Upload ``plans``, each file read once and checked against the manifest as it is sent
        (``aws/upload.py``); a file whose bytes differ from the manifest is not completed and fails the run."""
        transfer = self.options.transfer
        items = [Outgoing(plan.record, plan.path, self.location.key(plan.name),
                                 _extra_args(plan.record, self.options, plan.manifest))
                 for plan in plans if plan.path is not None]
        try:
            self.result.sent_bytes += upload_files(
                self.client, self.location.bucket, items, part_size=part_size, concurrency=transfer.concurrency,
                limiter=self.limiter, task=self.task, check_sha256=self.options.verify_local,
                readers=min(4, transfer.concurrency), single_put_limit=transfer.multipart_threshold)
        except ContentDiffers as error:
            raise RecordioPackError(_mismatch_message(
                Path(self.result.source), [str(error)],
                f"{error.name} was not completed in the bucket, and no manifest was uploaded")) from None


def backup(directory: str | Path, location: S3Location, options: BackupOptions, target: AwsTarget,
           progress: Progress | None = None) -> BackupResult:
    """Back the packed dataset in ``directory`` up to ``location``; see the module docstring. Raises
    OtherVersionError (another version in the bucket, without ``overwrite``), LocalFileError, RecordioPackError
    (local data no longer matches its manifest, or an upload fails verification) or AwsError; a failed run
    leaves no multipart upload of its own behind, no new manifest in the bucket and deletes nothing."""
    started = time.monotonic()
    progress = progress or NullProgress()
    directory = Path(directory)
    manifests, files = _load_local(directory)
    _check_sizes(directory, files)
    client = s3_client(target, options.transfer)
    bucket = _read_bucket(client, location)
    replaced = _check_versions(location, manifests, bucket, options.overwrite)
    plans = (_data_plans(directory, location, client, options, bucket, [path.name for path, _ in manifests], files)
             + _manifest_plans(location, client, options, bucket, manifests))
    leftovers = _leftovers(client, location, bucket, replaced, {plan.name for plan in plans},
                           [path.name[:-len(MANIFEST_SUFFIX)] for path, _ in manifests], options.transfer.concurrency)
    stale, foreign = _match_unfinished(multipart.list_unfinished(client, location), location, plans,
                                       options.storage_class)
    result = BackupResult(str(directory), location.uri, options.dry_run, plans,
                          aborted=[upload.key for upload in stale], foreign_uploads=foreign, replaced=replaced)
    if options.overwrite:
        result.deleted = leftovers
    else:
        result.unlisted = leftovers
    skipped = [plan.name for plan in plans if plan.action == SKIP]
    if skipped:
        log.info("%d file(s) already in %s with the same content, not sent again", len(skipped), location)
    if not options.dry_run:
        _send(client, location, directory, options, progress, result, files, stale)
    result.seconds = time.monotonic() - started
    return result


def _send(client: Any, location: S3Location, directory: Path, options: BackupOptions, progress: Progress,
          result: BackupResult, files: dict[str, FileRecord], stale: list[multipart.Unfinished]) -> None:
    """The writing half of a run: abort stale uploads, send data (checked as it is read), then manifests,
    then delete ``result.deleted``."""
    for upload in stale:
        multipart.abort(client, location.bucket, upload)
        progress.on_note(f"aborted an unfinished multipart upload of s3://{location.bucket}/{upload.key}")
    data = [plan for plan in result.plans if plan.action != SKIP and not plan.manifest]
    manifest_plans = [plan for plan in result.plans if plan.action != SKIP and plan.manifest]
    task = start_task(progress, "uploading", "bytes", sum(plan.record.bytes for plan in data + manifest_plans))
    uploader = _Uploader(client, location, options, task, result)
    upload_started = time.monotonic()
    fresh = [plan for plan in data if plan.action == UPLOAD]
    fresh += [plan for plan in data if plan.action == CONTINUE and not uploader.continue_or_fallback(plan)]
    part_size = part_size_for(max((plan.record.bytes for plan in fresh), default=0), options.transfer.part_size)
    uploader.send(fresh, part_size)
    uploader.send(manifest_plans, part_size)  # last: only once every data object is in place and verified
    result.upload_seconds = time.monotonic() - upload_started
    if result.deleted:  # only now that the new manifests are up: the bucket never lacks a complete version
        delete_objects(client, location, result.deleted)
        progress.on_note(f"deleted {len(result.deleted)} objects of the replaced version under {location}")
