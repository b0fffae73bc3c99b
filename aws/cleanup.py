"""Find, and on request delete, what recordio-pack left behind and is costing money.

- EBS volumes carrying our managed-by tag that are ``available`` (attached to nothing);
- EBS snapshots carrying our managed-by tag, owned by this account, older than ``older_than_days``;
- unfinished S3 multipart uploads under the folder ``s3://bucket/prefix/`` (their parts are billed until aborted).

Listing is the default; deleting happens only with ``delete=True``. Grace periods keep a cleanup running next to
``replicate`` or ``backup`` from removing a volume about to be attached or an upload still in progress.

A snapshot still in use is never deleted: one that a volume (in any state) was made from, that an AMI or the
latest or default version of a launch template maps, or whose id an instance's tag names; nor the
``keep_latest`` newest snapshots of each dataset. Such snapshots are listed as ``kept``, with the reasons.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from recordio_pack.aws.ec2 import MANAGED_BY_KEY, MANAGED_BY_VALUE, describe_instances, paginate, tags_of
from recordio_pack.aws.multipart import list_unfinished
from recordio_pack.aws.s3 import S3Location
from recordio_pack.aws.session import AwsTarget, aws_errors
from recordio_pack.aws.snapshot import DATASET_KEY
from recordio_pack.errors import RecordioPackError, UsageError

__all__ = ["CleanupOptions", "CleanupItem", "CleanupResult", "find_leftovers", "cleanup", "s3_folder",
           "snapshot_references", "newest_per_dataset"]

_SNAPSHOT_ID_IN_TEXT = re.compile(r"\bsnap-[0-9a-f]{8}(?:[0-9a-f]{9})?\b")
_FILTER_VALUES_PER_CALL = 200  # EC2 accepts up to 200 values in one filter
_LIVE_INSTANCE_STATES = ["pending", "running", "shutting-down", "stopping", "stopped"]


def s3_folder(prefix: str) -> str:
    """A prefix as a folder: ``"data"`` and ``"data/"`` -> ``"data/"`` (so ``data-old/`` is not inside);
    ``""`` (or ``"/"``) -> the whole bucket."""
    stripped = prefix.strip("/")
    return f"{stripped}/" if stripped else ""


@dataclass(frozen=True)
class CleanupOptions:
    """Ages: snapshots older than ``older_than_days``; volumes created more than ``volume_grace_hours`` ago;
    uploads started more than ``upload_grace_hours`` ago. ``bucket`` None: S3 is not looked at."""

    older_than_days: float = 30.0
    volume_grace_hours: float = 1.0
    upload_grace_hours: float = 24.0
    bucket: str | None = None
    prefix: str = ""  # a folder: "data" is "data/", never "data-old/"
    delete: bool = False
    keep_latest: int = 1  # newest snapshots kept per dataset (0: none kept for being newest)

    def __post_init__(self) -> None:
        if min(self.older_than_days, self.volume_grace_hours, self.upload_grace_hours) < 0:
            raise UsageError("ages must not be negative")
        if self.keep_latest < 0:
            raise UsageError(f"the number of newest snapshots to keep must not be negative: {self.keep_latest}")
        if self.prefix and not self.bucket:
            raise UsageError("a prefix needs a bucket")


@dataclass
class CleanupItem:
    kind: str  # "volume", "snapshot" or "multipart-upload"
    id: str  # volume id, snapshot id, or s3://bucket/key
    created: str  # ISO 8601, UTC
    detail: str
    state: str = "found"  # found, kept (never deleted: see kept_because), deleted, failed
    error: str = ""
    upload_id: str = field(default="", repr=False)
    kept_because: list[str] = field(default_factory=list)

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

    @property
    def kept(self) -> list[CleanupItem]:
        return [item for item in self.items if item.state == "kept"]

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
    old_enough = [snapshot for snapshot in sorted(snapshots, key=lambda s: _utc(s["StartTime"]))
                  if now - _utc(snapshot["StartTime"]) >= dt.timedelta(days=options.older_than_days)]
    if old_enough:
        reasons = snapshot_references(ec2, [snapshot["SnapshotId"] for snapshot in old_enough])
        for snapshot_id, why in newest_per_dataset(snapshots, options.keep_latest).items():
            reasons[snapshot_id].append(why)
        items.extend(_snapshot_item(snapshot, reasons.get(snapshot["SnapshotId"], [])) for snapshot in old_enough)
    if options.bucket:
        items.extend(_uploads(target, options, now))
    return items


def _snapshot_item(snapshot: dict[str, Any], kept_because: list[str]) -> CleanupItem:
    tags = tags_of(snapshot)
    detail = f"{snapshot.get('VolumeSize')} GiB, {snapshot.get('State')}; {tags.get('Name', '')}".rstrip("; ")
    return CleanupItem("snapshot", snapshot["SnapshotId"], _utc(snapshot["StartTime"]).isoformat(), detail,
                       state="kept" if kept_because else "found", kept_because=kept_because)


def _chunks(values: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(values), size):
        yield list(values[start:start + size])


def _mapped_snapshots(mappings: Iterable[dict[str, Any]] | None) -> Iterator[tuple[str, str]]:
    """(snapshot id, device name) of each EBS block device mapping that names a snapshot."""
    for mapping in mappings or []:
        snapshot_id = (mapping.get("Ebs") or {}).get("SnapshotId")
        if snapshot_id:
            yield snapshot_id, mapping.get("DeviceName", "?")


def _volume_users(ec2: Any, snapshot_ids: Sequence[str]) -> Iterator[tuple[str, str]]:
    with aws_errors("listing volumes made from the snapshots"):
        for chunk in _chunks(sorted(snapshot_ids), _FILTER_VALUES_PER_CALL):
            filters = [{"Name": "snapshot-id", "Values": chunk}]
            for volume in paginate(ec2, "describe_volumes", "Volumes", Filters=filters):
                why = f"volume {volume['VolumeId']} ({volume.get('State')}) was made from it"
                yield volume.get("SnapshotId", ""), why


def _image_users(ec2: Any) -> Iterator[tuple[str, str]]:
    with aws_errors("listing this account's AMIs"):
        images = paginate(ec2, "describe_images", "Images", Owners=["self"], IncludeDeprecated=True,
                          IncludeDisabled=True)
    for image in images:
        for snapshot_id, device in _mapped_snapshots(image.get("BlockDeviceMappings")):
            yield snapshot_id, f"image {image['ImageId']} maps it at {device}"


def _launch_template_users(ec2: Any) -> Iterator[tuple[str, str]]:
    with aws_errors("listing launch templates"):
        for template in paginate(ec2, "describe_launch_templates", "LaunchTemplates"):
            name = template.get("LaunchTemplateName", template["LaunchTemplateId"])
            for version in paginate(ec2, "describe_launch_template_versions", "LaunchTemplateVersions",
                                    LaunchTemplateId=template["LaunchTemplateId"], Versions=["$Latest", "$Default"]):
                mappings = (version.get("LaunchTemplateData") or {}).get("BlockDeviceMappings")
                for snapshot_id, device in _mapped_snapshots(mappings):
                    yield snapshot_id, (f"launch template {name} version {version.get('VersionNumber')} maps it "
                                        f"at {device}")


def _instance_tag_users(ec2: Any) -> Iterator[tuple[str, str]]:
    with aws_errors("listing instances"):
        instances = describe_instances(ec2, Filters=[{"Name": "instance-state-name", "Values": _LIVE_INSTANCE_STATES}])
    for instance in instances:
        for key, value in sorted(tags_of(instance).items()):
            for snapshot_id in _SNAPSHOT_ID_IN_TEXT.findall(value):
                yield snapshot_id, f"instance {instance['InstanceId']} names it in tag {key}"


def snapshot_references(ec2: Any, snapshot_ids: Sequence[str]) -> defaultdict[str, list[str]]:
    """For each of ``snapshot_ids`` still in use, why: volumes (any state) made from it, AMIs of this account and
    launch templates (latest and default versions) whose block device mappings name it, and live instances
    with a tag naming it. A failed look-up raises (``AwsError``): without the facts nothing may be deleted."""
    wanted = set(snapshot_ids)
    reasons: defaultdict[str, list[str]] = defaultdict(list)
    users = (_volume_users(ec2, sorted(wanted)), _image_users(ec2), _launch_template_users(ec2),
             _instance_tag_users(ec2))
    for snapshot_id, why in (use for source in users for use in source):
        if snapshot_id in wanted and why not in reasons[snapshot_id]:
            reasons[snapshot_id].append(why)
    return reasons


def newest_per_dataset(snapshots: Iterable[dict[str, Any]], keep: int) -> dict[str, str]:
    """The ``keep`` newest completed snapshots of each dataset (its ``recordio-pack:dataset`` tag; untagged ones
    grouped by source volume), as snapshot id -> why it is kept. A snapshot in state ``error`` (or not yet
    complete) never counts as the newest, so it cannot cost the dataset its last good snapshot."""
    groups: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for snapshot in (item for item in snapshots if item.get("State") == "completed"):
        dataset = tags_of(snapshot).get(DATASET_KEY)
        groups[f"dataset {dataset}" if dataset else f"volume {snapshot.get('VolumeId', '?')}"].append(snapshot)
    kept: dict[str, str] = {}
    for group, members in groups.items():
        newest = sorted(members, key=lambda s: _utc(s["StartTime"]), reverse=True)[:keep]
        for snapshot in newest:
            kept[snapshot["SnapshotId"]] = (f"the newest snapshot of {group}" if keep == 1 else
                                            f"one of the {keep} newest snapshots of {group}")
    return kept


def _uploads(target: AwsTarget, options: CleanupOptions, now: dt.datetime) -> list[CleanupItem]:
    location = S3Location(options.bucket or "", options.prefix.strip("/"))  # lists s3_folder(options.prefix)
    found = []
    for upload in list_unfinished(target.client("s3"), location):  # oldest first
        created = _utc(upload.initiated)
        if now - created >= dt.timedelta(hours=options.upload_grace_hours):
            found.append(CleanupItem("multipart-upload", f"s3://{options.bucket}/{upload.key}", created.isoformat(),
                                     f"unfinished upload {upload.upload_id[:16]}…", upload_id=upload.upload_id))
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
        elif s3 is not None:  # an upload is only ever listed when a bucket was given
            key = item.id[len(f"s3://{options.bucket}/"):]
            with aws_errors(f"aborting the multipart upload of {item.id}"):
                s3.abort_multipart_upload(Bucket=options.bucket, Key=key, UploadId=item.upload_id)

    return delete


def cleanup(target: AwsTarget, options: CleanupOptions, now: dt.datetime | None = None) -> CleanupResult:
    """List leftovers; with ``options.delete`` delete each one (a failure is recorded on its item, the rest go on)."""
    items = find_leftovers(target, options, now)
    doomed = [item for item in items if item.state == "found"]
    if options.delete and doomed:
        delete = _deleter(target, options)
        for item in doomed:
            try:
                delete(item)
                item.state = "deleted"
            except RecordioPackError as error:
                item.state, item.error = "failed", str(error)
    return CleanupResult(target.region_name, options.delete, items)
