"""Shared EC2 helpers: our tags, patient waiters that report progress, and free device names.

boto3's built-in waiters give up after 10 minutes and fail at once on the ``NotFound`` that EC2's eventual
consistency returns right after a create; a 150 GB snapshot takes far longer. ``Waiting`` polls for as long
as it is told (``timeout=None``: forever), tolerates ``NotFound`` for a grace period, and reports every poll
to its ``progress`` (``recordio_pack.progress``: one task per resource, a ``Polled`` event per poll) so the
CLI can draw a bar.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from recordio_pack import __version__
from recordio_pack.aws.session import AwsError, aws_errors
from recordio_pack.progress import Done, NullProgress, Polled, Progress, Queued, Unit

__all__ = ["TAG_PREFIX", "MANAGED_BY_KEY", "MANAGED_BY_VALUE", "TOOL_VERSION_KEY", "tag_list", "tags_of", "base_tags",
           "tag_specification", "paginate", "describe_instances", "Waiting",
           "wait_snapshot_completed", "wait_volume_available", "attachment_to", "wait_attached", "free_device_name",
           "used_device_names", "attachment_device"]

TAG_PREFIX = "recordio-pack:"
MANAGED_BY_KEY = TAG_PREFIX + "managed-by"  # cleanup lists exactly what carries this tag
MANAGED_BY_VALUE = "recordio-pack"
TOOL_VERSION_KEY = TAG_PREFIX + "tool-version"

# Device names AWS recommends for attaching EBS volumes to Linux instances.
_DEVICE_LETTERS = "fghijklmnop"


def tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    """``{"k": "v"}`` -> ``[{"Key": "k", "Value": "v"}]`` (sorted, so requests are deterministic)."""
    return [{"Key": key, "Value": str(value)} for key, value in sorted(tags.items())]


def tags_of(resource: Mapping[str, Any]) -> dict[str, str]:
    """The ``Tags`` of a described resource as a dict."""
    return {tag["Key"]: tag["Value"] for tag in resource.get("Tags") or []}


def base_tags(name: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Name, managed-by and tool-version tags, plus ``extra`` (empty values dropped)."""
    tags = {"Name": name, MANAGED_BY_KEY: MANAGED_BY_VALUE, TOOL_VERSION_KEY: __version__}
    tags.update({key: value for key, value in (extra or {}).items() if value})
    return tags


def tag_specification(resource_type: str, tags: Mapping[str, str]) -> list[dict[str, Any]]:
    """A ``TagSpecifications`` argument: tags applied atomically with the create call."""
    return [{"ResourceType": resource_type, "Tags": tag_list(tags)}]


def paginate(client: Any, operation: str, key: str, **params: Any) -> list[dict[str, Any]]:
    """Every item under ``key`` across all pages of ``operation``."""
    items: list[dict[str, Any]] = []
    for page in client.get_paginator(operation).paginate(**params):
        items.extend(page.get(key) or [])
    return items


def describe_instances(client: Any, **params: Any) -> list[dict[str, Any]]:
    """All instances matching ``params`` (flattened out of their reservations)."""
    return [instance for reservation in paginate(client, "describe_instances", "Reservations", **params)
            for instance in reservation.get("Instances") or []]


@dataclass(frozen=True)
class Waiting:
    """How to wait: poll every ``poll_seconds``; give up after ``timeout`` seconds (None: never);
    a ``NotFound`` is taken as "not visible yet" for ``not_found_grace`` seconds. ``progress`` hears of every
    poll. ``sleep``/``clock`` are injectable so tests run instantly."""

    poll_seconds: float = 15.0
    timeout: float | None = None
    not_found_grace: float = 300.0
    progress: Progress = field(default_factory=NullProgress)
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        if self.poll_seconds < 0 or (self.timeout is not None and self.timeout <= 0):
            raise ValueError("poll_seconds must be >= 0 and timeout > 0 (or None)")

    def until(self, what: str, describe: Callable[[], dict[str, Any] | None],
              status: Callable[[dict[str, Any]], tuple[str, float | None, bool]], resource_id: str,
              region: str | None = None, unit: Unit = "polls") -> dict[str, Any]:
        """Poll ``describe`` until ``status(item)`` says done; return the last description.

        ``describe`` returns None while the resource is not visible yet; ``status`` returns
        ``(state, percent, done)`` and raises ``AwsError`` for a failed resource. ``unit``: what the task's
        count is in, "polls" or "percent" (0..100, for resources whose describe reports one).
        """
        task = _WaitTask(self.progress, resource_id + (f" ({region})" if region else ""), unit, region)
        try:
            return self._poll(what, describe, status, resource_id, task)
        finally:
            task.done()

    def _poll(self, what: str, describe: Callable[[], dict[str, Any] | None],
              status: Callable[[dict[str, Any]], tuple[str, float | None, bool]], resource_id: str,
              task: _WaitTask) -> dict[str, Any]:
        start = self.clock()
        while True:
            elapsed = self.clock() - start
            item = describe()
            if item is None:
                if elapsed > self.not_found_grace:
                    raise AwsError(f"{what}: {resource_id} still not found after {elapsed:.0f} s")
                state, percent, done = "not-visible-yet", None, False
            else:
                state, percent, done = status(item)
            task.polled(state, percent, elapsed)
            if done:
                return item  # type: ignore[return-value]
            if self.timeout is not None and elapsed >= self.timeout:
                raise AwsError(f"{what}: gave up on {resource_id} after {elapsed:.0f} s (state {state}"
                               f"{f', {percent:g}%' if percent is not None else ''}); allow a longer wait, or no time "
                               "limit to wait as long as it takes")
            self.sleep(self.poll_seconds)


class _WaitTask:
    """One wait's progress: announced on its first poll (so a run that waits on nothing shows no bar)."""

    def __init__(self, progress: Progress, name: str, unit: Unit, region: str | None) -> None:
        self.progress, self.name, self.unit, self.region = progress, name, unit, region
        self.started, self.last = False, 0.0

    def polled(self, state: str, percent: float | None, elapsed: float) -> None:
        if not self.started:
            self.started = True
            self.progress.on_queued(Queued(self.name, self.unit, 100 if self.unit == "percent" else None))
        if self.unit == "percent":
            amount = max(0.0, (percent if percent is not None else self.last) - self.last)
            self.last = max(self.last, percent if percent is not None else self.last)
        else:
            amount = 1
        self.progress.on_progress(Polled(self.name, amount, state, state=state, percent=percent, elapsed=elapsed,
                                         region=self.region))

    def done(self) -> None:
        if self.started:
            self.progress.on_done(Done(self.name))


def _describe_one(client: Any, operation: str, key: str, doing: str, **params: Any) -> dict[str, Any] | None:
    """The single described item, or None on an ``*.NotFound`` error (eventual consistency)."""
    from botocore.exceptions import ClientError

    try:
        with aws_errors(doing):
            items = getattr(client, operation)(**params).get(key) or []
    except AwsError as error:
        cause = error.__cause__
        if isinstance(cause, ClientError) and cause.response.get("Error", {}).get("Code", "").endswith("NotFound"):
            return None
        raise
    return items[0] if items else None


def _percent(text: str | None) -> float | None:
    match = re.match(r"^\s*(\d+(?:\.\d+)?)\s*%?\s*$", text or "")
    return float(match.group(1)) if match else None


def wait_snapshot_completed(client: Any, snapshot_id: str, waiting: Waiting,
                            region: str | None = None) -> dict[str, Any]:
    """Wait until the snapshot is ``completed``; its ``Progress`` percentage is reported on every poll."""
    def status(snapshot: dict[str, Any]) -> tuple[str, float | None, bool]:
        state = snapshot.get("State", "?")
        if state == "error":
            raise AwsError(f"snapshot {snapshot_id} failed: {snapshot.get('StateMessage', 'state error')}")
        return state, _percent(snapshot.get("Progress")), state == "completed"

    return waiting.until(
        "waiting for the snapshot",
        lambda: _describe_one(client, "describe_snapshots", "Snapshots", f"describing snapshot {snapshot_id}",
                              SnapshotIds=[snapshot_id]),
        status, snapshot_id, region, unit="percent")


def _describe_volume(client: Any, volume_id: str) -> dict[str, Any] | None:
    """The volume's description, or None while EC2 does not know it yet."""
    return _describe_one(client, "describe_volumes", "Volumes", f"describing volume {volume_id}",
                         VolumeIds=[volume_id])


def wait_volume_available(client: Any, volume_id: str, waiting: Waiting) -> dict[str, Any]:
    """Wait until a new volume is ``available`` (it starts as ``creating``)."""
    def status(volume: dict[str, Any]) -> tuple[str, float | None, bool]:
        state = volume.get("State", "?")
        if state in ("error", "deleting", "deleted"):
            raise AwsError(f"volume {volume_id} is {state} instead of becoming available")
        return state, None, state == "available"

    return waiting.until(
        "waiting for the volume",
        lambda: _describe_volume(client, volume_id),
        status, volume_id)


def attachment_to(volume: Mapping[str, Any], instance_id: str) -> dict[str, Any] | None:
    """The volume's attachment to ``instance_id``, if any."""
    for attachment in volume.get("Attachments") or []:
        if attachment.get("InstanceId") == instance_id:
            return attachment
    return None


def wait_attached(client: Any, volume_id: str, instance_id: str, waiting: Waiting) -> dict[str, Any]:
    """Wait until the volume's *attachment* to the instance is ``attached`` (a volume can be ``in-use`` while
    its attachment is still ``attaching``); returns the volume description."""
    def status(volume: dict[str, Any]) -> tuple[str, float | None, bool]:
        attachment = attachment_to(volume, instance_id)
        state = attachment.get("State", "?") if attachment else "not-attached-yet"
        if state in ("detaching", "detached", "busy"):
            raise AwsError(f"volume {volume_id} attachment to {instance_id} is {state}")
        return state, None, state == "attached"

    return waiting.until(
        "waiting for the attachment",
        lambda: _describe_volume(client, volume_id),
        status, volume_id)


def _device_key(name: str) -> str:
    """``/dev/xvdf``, ``/dev/sdf``, ``sdf1`` -> ``f``-style key: EC2 treats sdX and xvdX as the same slot."""
    base = name.rsplit("/", 1)[-1]
    base = re.sub(r"^(xvd|sd|hd)", "", base)
    return re.sub(r"\d+$", "", base)


def free_device_name(used: Iterable[str]) -> str:
    """The first of ``/dev/sdf`` .. ``/dev/sdp`` not taken by ``used`` (names from the instance's block
    device mappings and root device; ``xvdX`` and ``sdX`` count as the same slot)."""
    taken = {_device_key(name) for name in used}
    for letter in _DEVICE_LETTERS:
        if letter not in taken:
            return f"/dev/sd{letter}"
    raise AwsError("no free device name between /dev/sdf and /dev/sdp on this instance; detach a volume first")


def used_device_names(instance: Mapping[str, Any]) -> list[str]:
    """Device names an instance description shows as taken (block device mappings and the root device)."""
    names = [mapping.get("DeviceName", "") for mapping in instance.get("BlockDeviceMappings") or []]
    if instance.get("RootDeviceName"):
        names.append(instance["RootDeviceName"])
    return [name for name in names if name]


def attachment_device(client: Any, volume_id: str) -> str | None:
    """The device name (``/dev/sdf``) the volume is attached under, or None when it is not attached."""
    with aws_errors(f"describing volume {volume_id}"):
        volumes = client.describe_volumes(VolumeIds=[volume_id]).get("Volumes") or []
    for volume in volumes:
        for attachment in volume.get("Attachments") or []:
            if attachment.get("State") in ("attached", "attaching") and attachment.get("Device"):
                return attachment["Device"]
    return None
