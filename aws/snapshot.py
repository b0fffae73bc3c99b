"""Snapshot the dataset's EBS volume: flush, optionally freeze, create, tag, wait, copy to regions, share.

A snapshot is a point in time fixed when ``CreateSnapshot`` returns, so the filesystem only has to stay
frozen for that one call; it is unfrozen in a ``finally`` whatever happens. Sharing goes only to named
12-digit account ids (``createVolumePermission`` ``UserIds``), never to the group ``all``: this module has no
way to make a snapshot public.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recordio_pack.aws.ebs_options import check_id, check_region
from recordio_pack.aws.ec2 import TAG_PREFIX, Waiting, base_tags, tag_specification, tags_of, wait_snapshot_completed
from recordio_pack.aws.session import AwsTarget, aws_errors
from recordio_pack.digest import hash_file
from recordio_pack.errors import RecordioPackError, UsageError
from recordio_pack.mount import LocalPaths, freezable_mount_root

__all__ = ["SnapshotOptions", "SnapshotResult", "manifest_sha256", "create_dataset_snapshot", "check_shareable",
           "share_snapshot", "Freezer"]

_ACCOUNT = re.compile(r"^\d{12}$")

DATASET_KEY = TAG_PREFIX + "dataset"
MANIFEST_KEY = TAG_PREFIX + "manifest-sha256"
SOURCE_VOLUME_KEY = TAG_PREFIX + "source-volume"
SOURCE_SNAPSHOT_KEY = TAG_PREFIX + "source-snapshot"
SOURCE_REGION_KEY = TAG_PREFIX + "source-region"


@dataclass(frozen=True)
class SnapshotOptions:
    """What to snapshot and where it goes. ``freeze_mount_point``: run fsfreeze on it around the create call."""

    volume_id: str
    name: str | None = None  # Name tag; default "recordio-pack <dataset or volume>"
    dataset: str | None = None
    manifest_sha256: str | None = None
    description: str | None = None
    extra_tags: dict[str, str] = field(default_factory=dict)
    copy_to_regions: tuple[str, ...] = ()
    share_with: tuple[str, ...] = ()
    freeze_mount_point: str | None = None  # checked by Freezer.guarded (mountinfo) before anything is frozen

    def __post_init__(self) -> None:
        check_id("volume", self.volume_id)
        for region in self.copy_to_regions:  # before the snapshot exists, not when its copy is started
            check_region(region)
        for account in self.share_with:
            if not _ACCOUNT.fullmatch(account):
                raise UsageError(f"snapshots are shared with 12-digit AWS account ids only, not {account!r} "
                                 "(they are never made public)")
        for key in self.extra_tags:
            if key.startswith((TAG_PREFIX, "aws:")) or key == "Name":
                raise UsageError(f"tag {key!r} is reserved (the Name tag has an option of its own)")

    def tags(self) -> dict[str, str]:
        name = self.name or f"recordio-pack {self.dataset or self.volume_id}"
        return base_tags(name, {DATASET_KEY: self.dataset or "", MANIFEST_KEY: self.manifest_sha256 or "",
                                SOURCE_VOLUME_KEY: self.volume_id, **self.extra_tags})


@dataclass
class SnapshotResult:
    snapshot_id: str
    volume_id: str
    region: str | None
    state: str
    tags: dict[str, str]
    encrypted: bool
    frozen: bool
    copies: list[dict[str, Any]] = field(default_factory=list)  # {region, snapshot_id, state, shared_with}
    shared_with: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def manifest_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of the manifest file's bytes: ties the snapshot to one exact dataset state."""
    digest = hashlib.sha256()
    hash_file(path, digest)
    return digest.hexdigest()


class Freezer:
    """``fsfreeze -f`` / ``-u`` on a mount point through an injectable command (tests record the calls).
    Build it with ``Freezer.guarded``, which refuses what must never be frozen; the plain constructor trusts
    its caller."""

    def __init__(self, mount_point: str, command: Sequence[str] = ("fsfreeze",),
                 run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> None:
        self.mount_point = mount_point
        self.command = list(command)
        self.run = run

    @classmethod
    def guarded(cls, mount_point: str, command: Sequence[str] = ("fsfreeze",), paths: LocalPaths = LocalPaths(),
                tool: Sequence[str] | None = None,
                run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> Freezer:
        """A freezer for the mount root of ``mount_point`` after ``mount.freezable_mount_root`` accepted it
        (a real mount root, not holding /, /usr, /var, /etc, /boot or this tool); else ``FreezeRefused``."""
        return cls(freezable_mount_root(mount_point, paths, tool).mount_point, command, run)

    def _call(self, flag: str) -> None:
        argv = [*self.command, flag, self.mount_point]
        try:
            completed = self.run(argv, capture_output=True, text=True)
        except OSError as error:  # e.g. fsfreeze not installed
            raise RecordioPackError(f"cannot run {' '.join(argv)}: {error.strerror or error}") from None
        if completed.returncode != 0:
            raise RecordioPackError(f"{' '.join(argv)} failed ({completed.returncode}): "
                                    f"{(completed.stderr or '').strip()}")

    def freeze(self) -> None:
        self._call("-f")

    def unfreeze(self) -> None:
        self._call("-u")


def _is_aws_managed_key(target: AwsTarget, key_id: str, region: str | None) -> bool:
    kms = target.client("kms", region=region)
    with aws_errors(f"describing KMS key {key_id}"):
        metadata = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    return metadata.get("KeyManager") == "AWS"


def check_shareable(target: AwsTarget, encrypted: bool, kms_key_id: str | None, what: str,
                    region: str | None = None) -> None:
    """Refuse to share what cannot be shared: a snapshot encrypted with the AWS-managed key ``alias/aws/ebs``."""
    if encrypted and kms_key_id and _is_aws_managed_key(target, kms_key_id, region):
        raise RecordioPackError(
            f"{what} is encrypted with the AWS-managed key alias/aws/ebs, whose key policy cannot be changed, so "
            "other accounts can never decrypt it: sharing is refused. Copy the snapshot with a customer-managed "
            "KMS key (aws ec2 copy-snapshot --kms-key-id ...), grant the accounts kms:DescribeKey, kms:CreateGrant "
            "and kms:Decrypt on that key, and share the copy")


def share_snapshot(client: Any, snapshot_id: str, accounts: Sequence[str]) -> None:
    """Grant ``createVolumePermission`` to named accounts only (``UserIds``; never a group)."""
    accounts = list(accounts)
    for account in accounts:
        if not _ACCOUNT.fullmatch(account):  # "all" would make it public: impossible by construction
            raise UsageError(f"not a 12-digit AWS account id: {account!r}")
    if accounts:
        with aws_errors(f"sharing {snapshot_id}"):
            client.modify_snapshot_attribute(SnapshotId=snapshot_id, Attribute="createVolumePermission",
                                             OperationType="add", UserIds=accounts)


def _describe_volume(client: Any, volume_id: str) -> dict[str, Any]:
    with aws_errors(f"describing volume {volume_id}"):
        volumes = client.describe_volumes(VolumeIds=[volume_id]).get("Volumes") or []
    if not volumes:
        raise RecordioPackError(f"volume {volume_id} does not exist in this region")
    return volumes[0]


def _create(client: Any, options: SnapshotOptions, freezer: Freezer | None,
            sync: Callable[[], None]) -> dict[str, Any]:
    sync()  # page cache to disk before the point in time is taken
    description = options.description or f"recordio-pack snapshot of {options.volume_id}" + (
        f" (dataset {options.dataset})" if options.dataset else "")
    if freezer is not None:
        freezer.freeze()
    try:
        with aws_errors(f"creating a snapshot of {options.volume_id}"):
            return client.create_snapshot(VolumeId=options.volume_id, Description=description[:255],
                                          TagSpecifications=tag_specification("snapshot", options.tags()))
    finally:
        if freezer is not None:
            freezer.unfreeze()


def _copy(target: AwsTarget, snapshot: dict[str, Any], source_region: str, region: str,
          tags: dict[str, str]) -> dict[str, Any]:
    client = target.client("ec2", region=region)
    copy_tags = {**tags, SOURCE_SNAPSHOT_KEY: snapshot["SnapshotId"], SOURCE_REGION_KEY: source_region}
    with aws_errors(f"copying {snapshot['SnapshotId']} to {region}"):
        response = client.copy_snapshot(
            SourceRegion=source_region, SourceSnapshotId=snapshot["SnapshotId"],
            Description=f"copy of {snapshot['SnapshotId']} from {source_region}"[:255],
            TagSpecifications=tag_specification("snapshot", copy_tags))
    return {"region": region, "snapshot_id": response["SnapshotId"], "client": client}


def _share_copies(target: AwsTarget, copies: list[dict[str, Any]], accounts: Sequence[str]) -> list[str]:
    """Share each copy; a copy that cannot be shared (re-encrypted with its region's AWS-managed key) is a
    problem reported in the result, not a reason to lose the others. Returns the problems."""
    problems = []
    for copy in copies:
        try:
            check_shareable(target, copy["encrypted"], copy["kms_key_id"],
                            f"copy {copy['snapshot_id']} in {copy['region']}", copy["region"])
            share_snapshot(copy["client"], copy["snapshot_id"], accounts)
            copy["shared_with"] = list(accounts)
        except RecordioPackError as error:
            problems.append(str(error))
    return problems


def create_dataset_snapshot(target: AwsTarget, options: SnapshotOptions, waiting: Waiting = Waiting(), *,
                            freezer: Freezer | None = None, sync: Callable[[], None] = os.sync) -> SnapshotResult:
    """Snapshot ``options.volume_id`` and wait until it (and every copy) is ``completed``.

    With ``options.freeze_mount_point`` the filesystem is frozen only around ``CreateSnapshot`` (by ``freezer``,
    default ``Freezer.guarded``: fsfreeze, refused for a folder that is not a mount root or a system filesystem).
    Sharing is checked before anything is created, so a refusal leaves nothing behind.
    """
    if freezer is None and options.freeze_mount_point:
        freezer = Freezer.guarded(options.freeze_mount_point)
    region = target.region_name
    client = target.client("ec2")
    volume = _describe_volume(client, options.volume_id)
    if options.share_with:
        check_shareable(target, bool(volume.get("Encrypted")), volume.get("KmsKeyId"),
                        f"a snapshot of {options.volume_id}", region)
    created = _create(client, options, freezer, sync)
    snapshot_id = created["SnapshotId"]
    final = wait_snapshot_completed(client, snapshot_id, waiting, region)
    result = SnapshotResult(snapshot_id, options.volume_id, region, final.get("State", "?"), tags_of(final) or
                            options.tags(), bool(final.get("Encrypted", volume.get("Encrypted"))), freezer is not None)
    # Copies run in parallel on AWS's side: start all, then wait for each.
    copies = [_copy(target, final, region or "", copy_region, options.tags())
              for copy_region in options.copy_to_regions]
    for copy in copies:
        described = wait_snapshot_completed(copy["client"], copy["snapshot_id"], waiting, copy["region"])
        copy.update(state=described.get("State", "?"), encrypted=bool(described.get("Encrypted")),
                    kms_key_id=described.get("KmsKeyId"), shared_with=[])
    if options.share_with:
        share_snapshot(client, snapshot_id, options.share_with)
        result.shared_with = list(options.share_with)
        result.problems += _share_copies(target, copies, options.share_with)
    result.copies = [{key: value for key, value in copy.items() if key not in ("client", "kms_key_id")}
                     for copy in copies]
    return result
