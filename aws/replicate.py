"""Replicate a dataset snapshot onto running instances: one volume per instance, attached and ready to mount.

Each volume is created in the availability zone read from ``DescribeInstances`` for *that* instance, so a
cross-AZ attach cannot happen. Work runs in phases over all instances (create all, wait all, attach all,
wait all) so N instances take about as long as one. Reruns are idempotent: an instance that already has a
volume from the snapshot attached is skipped, and a volume left ``available`` for an instance by an
interrupted run (found by our tags) is attached instead of creating another.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from recordio_pack.aws.ebs_options import VolumeSpec, check_id
from recordio_pack.aws.ec2 import (
    TAG_PREFIX,
    Waiting,
    attachment_to,
    base_tags,
    describe_instances,
    free_device_name,
    paginate,
    tag_specification,
    tags_of,
    used_device_names,
    wait_attached,
    wait_volume_available,
)
from recordio_pack.aws.session import AwsTarget, aws_errors
from recordio_pack.aws.snapshot import DATASET_KEY, MANIFEST_KEY, SOURCE_SNAPSHOT_KEY
from recordio_pack.errors import RecordioPackError, UsageError

__all__ = ["ReplicateOptions", "Placement", "ReplicateResult", "parse_filter", "replicate"]

TARGET_INSTANCE_KEY = TAG_PREFIX + "target-instance"
log = logging.getLogger(__name__)


def parse_filter(text: str) -> tuple[str, tuple[str, ...]]:
    """``"tag:role=gpu"`` -> ``("tag:role", ("gpu",))``; values split on commas (any DescribeInstances filter)."""
    name, sep, values = text.partition("=")
    if not sep or not name or not values:
        raise UsageError(f"an instance filter is NAME=VALUE[,VALUE...], e.g. tag:role=gpu, not {text!r}")
    return name, tuple(value for value in values.split(",") if value)


@dataclass(frozen=True)
class ReplicateOptions:
    """Which instances get a volume from ``snapshot_id``, and what volume. ``size_gib`` None: the snapshot's
    size; ``keep``: leave DeleteOnTermination off (the volume outlives the instance)."""

    snapshot_id: str
    instance_ids: tuple[str, ...] = ()
    filters: tuple[tuple[str, tuple[str, ...]], ...] = ()
    volume_type: str = "gp3"
    iops: int | None = None
    throughput: int | None = None  # MiB/s, gp3 only
    size_gib: int | None = None
    keep: bool = False
    dry_run: bool = False
    name: str | None = None

    def __post_init__(self) -> None:
        check_id("snapshot", self.snapshot_id)
        for instance_id in self.instance_ids:
            check_id("instance", instance_id)
        if bool(self.instance_ids) == bool(self.filters):
            raise UsageError("select the instances either by id or by filter (not both, not neither)")
        self.volume()  # checks type, IOPS, throughput and size against EBS's limits

    def volume(self, snapshot_gib: int | None = None) -> VolumeSpec:
        """The volume to create; with ``snapshot_gib``, at its final size (the snapshot's when none was asked)
        and checked for the size-dependent limits as well."""
        spec = VolumeSpec(self.volume_type, self.iops, self.throughput, self.size_gib)
        if snapshot_gib is not None:
            if self.size_gib is not None and self.size_gib < snapshot_gib:
                raise UsageError(f"a {self.size_gib} GiB volume is smaller than the snapshot ({snapshot_gib} GiB)")
            spec = spec.with_size(self.size_gib or snapshot_gib)
        return spec


@dataclass
class Placement:
    """One instance's row of the status table."""

    instance_id: str
    availability_zone: str
    volume_id: str | None = None
    device: str | None = None
    state: str = "planned"  # final: attached, already-attached, would-create, would-attach, skipped, failed
    detail: str = ""
    delete_on_termination: bool | None = None
    instance: dict[str, Any] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key != "instance"}


@dataclass
class ReplicateResult:
    snapshot_id: str
    region: str | None
    dry_run: bool
    placements: list[Placement]

    @property
    def ok(self) -> bool:
        return all(row.state != "failed" for row in self.placements)

    def as_dict(self) -> dict[str, Any]:
        return {"snapshot_id": self.snapshot_id, "region": self.region, "dry_run": self.dry_run, "ok": self.ok,
                "placements": [row.as_dict() for row in self.placements]}


def _snapshot(client: Any, snapshot_id: str) -> dict[str, Any]:
    with aws_errors(f"describing snapshot {snapshot_id}"):
        found = client.describe_snapshots(SnapshotIds=[snapshot_id]).get("Snapshots") or []
    if not found:
        raise RecordioPackError(f"snapshot {snapshot_id} does not exist in this region")
    snapshot = found[0]
    if snapshot.get("State") != "completed":
        raise RecordioPackError(f"snapshot {snapshot_id} is {snapshot.get('State')} ({snapshot.get('Progress', '?')}); "
                                "wait until it is completed")
    return snapshot


def _instances(client: Any, options: ReplicateOptions) -> list[dict[str, Any]]:
    with aws_errors("describing instance(s) " + ", ".join(options.instance_ids) if options.instance_ids
                    else "listing the instances"):
        if options.instance_ids:
            found = describe_instances(client, InstanceIds=list(options.instance_ids))
        else:
            filters = [{"Name": name, "Values": list(values)} for name, values in options.filters]
            found = describe_instances(client, Filters=filters + [{"Name": "instance-state-name",
                                                                    "Values": ["running"]}])
    if not found:
        raise RecordioPackError("no instance matches " + (" ".join(f"{n}={','.join(v)}" for n, v in options.filters)
                                                          or ", ".join(options.instance_ids)))
    return sorted(found, key=lambda instance: instance["InstanceId"])


def _plan(instance: dict[str, Any], volumes: Sequence[dict[str, Any]], dry_run: bool) -> Placement:
    instance_id = instance["InstanceId"]
    row = Placement(instance_id, instance.get("Placement", {}).get("AvailabilityZone", "?"), instance=instance)
    state = instance.get("State", {}).get("Name", "?")
    if state != "running":
        row.state, row.detail = "skipped", f"instance is {state}"
        return row
    for volume in volumes:
        attachment = attachment_to(volume, instance_id)
        if attachment and attachment.get("State") in ("attached", "attaching"):
            row.volume_id, row.device = volume["VolumeId"], attachment.get("Device")
            row.state = "already-attached" if attachment.get("State") == "attached" else "already-attaching"
            row.detail = "volume from this snapshot already on the instance"
            row.delete_on_termination = attachment.get("DeleteOnTermination")
            log.info("%s: %s from this snapshot is already %s there; nothing to create", instance_id,
                     row.volume_id, attachment.get("State"))
            return row
    for volume in volumes:  # left behind by an interrupted run: attach it rather than make another
        if (tags_of(volume).get(TARGET_INSTANCE_KEY) == instance_id and volume.get("State") in ("creating", "available")
                and volume.get("AvailabilityZone") == row.availability_zone):
            row.volume_id, row.state = volume["VolumeId"], "would-attach" if dry_run else "resume"
            row.detail = "volume from an earlier run"
            log.info("%s: reusing %s, left by an earlier run", instance_id, row.volume_id)
            return row
    row.state = "would-create" if dry_run else "create"
    return row


def _create_volume(client: Any, row: Placement, snapshot: dict[str, Any], options: ReplicateOptions) -> None:
    snapshot_tags = tags_of(snapshot)
    tags = base_tags(options.name or snapshot_tags.get("Name") or f"recordio-pack {options.snapshot_id}",
                     {SOURCE_SNAPSHOT_KEY: options.snapshot_id, TARGET_INSTANCE_KEY: row.instance_id,
                      DATASET_KEY: snapshot_tags.get(DATASET_KEY, ""),
                      MANIFEST_KEY: snapshot_tags.get(MANIFEST_KEY, "")})
    params: dict[str, Any] = {
        "AvailabilityZone": row.availability_zone,  # from this instance's own description: never another AZ
        "SnapshotId": options.snapshot_id, "VolumeType": options.volume_type,
        "TagSpecifications": tag_specification("volume", tags),
        "ClientToken": f"recordio-pack-{uuid.uuid4().hex}"}  # retries of this call cannot make a second volume
    if options.size_gib:
        params["Size"] = options.size_gib
    if options.iops:
        params["Iops"] = options.iops
    if options.throughput:
        params["Throughput"] = options.throughput
    with aws_errors(f"creating a volume for {row.instance_id} in {row.availability_zone}"):
        row.volume_id = client.create_volume(**params)["VolumeId"]


def _attach(client: Any, row: Placement) -> None:
    row.device = free_device_name(used_device_names(row.instance))
    with aws_errors(f"attaching {row.volume_id} to {row.instance_id} at {row.device}"):
        client.attach_volume(VolumeId=row.volume_id, InstanceId=row.instance_id, Device=row.device)


def _delete_on_termination(client: Any, row: Placement) -> None:
    with aws_errors(f"setting DeleteOnTermination for {row.volume_id} on {row.instance_id}"):
        client.modify_instance_attribute(InstanceId=row.instance_id, BlockDeviceMappings=[
            {"DeviceName": row.device, "Ebs": {"VolumeId": row.volume_id, "DeleteOnTermination": True}}])
    row.delete_on_termination = True


def replicate(target: AwsTarget, options: ReplicateOptions, waiting: Waiting = Waiting(poll_seconds=5.0)
              ) -> ReplicateResult:
    """Give every matching running instance an attached volume made from ``options.snapshot_id``."""
    client = target.client("ec2")
    snapshot = _snapshot(client, options.snapshot_id)
    if snapshot.get("VolumeSize"):
        options.volume(int(snapshot["VolumeSize"]))
    instances = _instances(client, options)
    with aws_errors(f"listing volumes made from {options.snapshot_id}"):
        volumes = paginate(client, "describe_volumes", "Volumes",
                           Filters=[{"Name": "snapshot-id", "Values": [options.snapshot_id]}])
    rows = [_plan(instance, volumes, options.dry_run) for instance in instances]
    result = ReplicateResult(options.snapshot_id, target.region_name, options.dry_run, rows)
    if options.dry_run:
        return result

    def phase(states: Sequence[str], action: Callable[[Placement], Any]) -> None:
        """One step for every row in ``states``; a failure marks only that row failed."""
        for row in rows:
            if row.state in states:
                try:
                    action(row)
                except RecordioPackError as error:
                    row.state, row.detail = "failed", str(error)

    phase(["create"], lambda row: _create_volume(client, row, snapshot, options))
    phase(["create", "resume"], lambda row: wait_volume_available(client, row.volume_id, waiting))
    phase(["create", "resume"], lambda row: _attach(client, row))
    phase(["create", "resume", "already-attaching"],
          lambda row: wait_attached(client, row.volume_id, row.instance_id, waiting))
    if not options.keep:
        phase(["create", "resume"], lambda row: _delete_on_termination(client, row))
    for row in rows:
        if row.state == "already-attaching":
            row.state = "already-attached"
        if row.state in ("create", "resume"):
            row.state = "attached"
            row.detail = row.detail or "new volume"
            if options.keep:
                row.delete_on_termination = False
    return result
