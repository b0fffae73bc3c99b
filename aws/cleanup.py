"""Find, and on request delete, what recordio-pack left behind and is costing money.

- EBS volumes carrying our managed-by tag that are ``available`` (attached to nothing);
- EBS snapshots carrying our managed-by tag, owned by this account, older than ``older_than_days``;
- unfinished S3 multipart uploads under ``s3://bucket/prefix`` (their parts are billed until aborted).

Listing is the default; deleting happens only with ``delete=True``. Grace periods keep a cleanup running next to
``replicate`` or ``backup`` from removing a volume about to be attached or an upload still in progress.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Callable

from recordio_pack.aws.ec2 import MANAGED_BY_KEY, MANAGED_BY_VALUE, paginate, tags_of
from recordio_pack.aws.session import AwsTarget, aws_errors
from recordio_pack.errors import RecordioPackError, UsageError

__all__ = ["CleanupOptions", "CleanupItem", "CleanupResult", "find_leftovers", "cleanup"]


@dataclass(frozen=True)
class CleanupOptions:
    """Ages: snapshots older than ``older_than_days``; volumes created more than ``volume_grace_hours`` ago;
    uploads started more than ``upload_grace_hours`` ago. ``bucket`` None: S3 is not looked at."""

    older_than_days: float = 30.0
    volume_grace_hours: float = 1.0
    upload_grace_hours: float = 24.0
    bucket: str | None = None
    prefix: str = ""
    delete: bool = False

    def __post_init__(self) -> None:
        if min(self.older_than_days, self.volume_grace_hours, self.upload_grace_hours) < 0:
            raise UsageError("ages must not be negative")
        if self.prefix and not self.bucket:
            raise UsageError("--prefix needs --bucket")


@dataclass
class CleanupItem:
    kind: str  # "volume", "snapshot" or "multipart-upload"
    id: str  # volume id, snapshot id, or s3://bucket/key
    created: str  # ISO 8601, UTC
    detail: str
    state: str = "found"  # found, deleted, failed
    error: str = ""
    upload_id: str = field(default="", repr=False)

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        if not self.upload_id:
            data.pop("upload_id")
        return data


@dataclass
class CleanupResult:
    region: str | None
    deleted: bool
    items: list[CleanupItem]

    @property
    def ok(self) -> bool:
        return all(item.state != "failed" for item in self.items)

    def as_dict(self) -> dict[str, Any]:
        return {"region": self.region, "delete": self.deleted, "ok": self.ok,
                "items": [item.as_dict() for item in self.items]}


def _utc(value: Any) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def _ours() -> list[dict[str, Any]]:
    return [{"Name": f"tag:{MANAGED_BY_KEY}", "Values": [MANAGED_BY_VALUE]}]


def find_leftovers(target: AwsTarget, options: CleanupOptions, now: dt.datetime | None = None) -> list[CleanupItem]:
    """Everything ``options`` selects, oldest first within each kind; nothing is changed."""
    now = _utc(now or dt.datetime.now(dt.timezone.utc))
    items: list[CleanupItem] = []
    ec2 = target.client("ec2")
    with aws_errors("listing our volumes"):
        volumes = paginate(ec2, "describe_volumes", "Volumes",
                           Filters=_ours() + [{"Name": "status", "Values": ["available"]}])
    for volume in sorted(volumes, key=lambda v: _utc(v["CreateTime"])):
        created = _utc(volume["CreateTime"])
        if now - created >= dt.timedelta(hours=options.volume_grace_hours):
            detail = (f"{volume.get('Size')} GiB {volume.get('VolumeType')} in {volume.get('AvailabilityZone')}, "
                      f"unattached; {tags_of(volume).get('Name', '')}")
            items.append(CleanupItem("volume", volume["VolumeId"], created.isoformat(), detail.rstrip("; ")))
    with aws_errors("listing our snapshots"):
        snapshots = paginate(ec2, "describe_snapshots", "Snapshots", OwnerIds=["self"], Filters=_ours())
    for snapshot in sorted(snapshots, key=lambda s: _utc(s["StartTime"])):
        created = _utc(snapshot["StartTime"])
        if now - created >= dt.timedelta(days=options.older_than_days):
            tags = tags_of(snapshot)
            items.append(CleanupItem("snapshot", snapshot["SnapshotId"], created.isoformat(),
                                     f"{snapshot.get('VolumeSize')} GiB, {snapshot.get('State')}; "
                                     f"{tags.get('Name', '')}".rstrip("; ")))
    if options.bucket:
        items.extend(_uploads(target, options, now))
    return items


def _uploads(target: AwsTarget, options: CleanupOptions, now: dt.datetime) -> list[CleanupItem]:
    s3 = target.client("s3")
    with aws_errors(f"listing unfinished multipart uploads in s3://{options.bucket}/{options.prefix}"):
        uploads = paginate(s3, "list_multipart_uploads", "Uploads", Bucket=options.bucket, Prefix=options.prefix)
    found = []
    for upload in sorted(uploads, key=lambda u: _utc(u["Initiated"])):
        created = _utc(upload["Initiated"])
        if now - created >= dt.timedelta(hours=options.upload_grace_hours):
            found.append(CleanupItem("multipart-upload", f"s3://{options.bucket}/{upload['Key']}", created.isoformat(),
                                     f"unfinished upload {upload['UploadId'][:16]}…", upload_id=upload["UploadId"]))
    return found


def _deleter(target: AwsTarget, options: CleanupOptions) -> Callable[[CleanupItem], None]:
    ec2 = target.client("ec2")
    s3 = target.client("s3") if options.bucket else None

    def delete(item: CleanupItem) -> None:
        if item.kind == "volume":
            with aws_errors(f"deleting volume {item.id}"):
                ec2.delete_volume(VolumeId=item.id)
        elif item.kind == "snapshot":
            with aws_errors(f"deleting snapshot {item.id}"):
                ec2.delete_snapshot(SnapshotId=item.id)
        else:
            key = item.id[len(f"s3://{options.bucket}/"):]
            with aws_errors(f"aborting the multipart upload of {item.id}"):
                s3.abort_multipart_upload(Bucket=options.bucket, Key=key, UploadId=item.upload_id)

    return delete


def cleanup(target: AwsTarget, options: CleanupOptions, now: dt.datetime | None = None) -> CleanupResult:
    """List leftovers; with ``options.delete`` delete each one (a failure is recorded on its item, the rest go on)."""
    items = find_leftovers(target, options, now)
    if options.delete and items:
        delete = _deleter(target, options)
        for item in items:
            try:
                delete(item)
                item.state = "deleted"
            except RecordioPackError as error:
                item.state, item.error = "failed", str(error)
    return CleanupResult(target.region_name, options.delete, items)
