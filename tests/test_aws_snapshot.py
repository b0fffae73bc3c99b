"""snapshot: tags, copies, sharing (never public) under moto; waiting, NotFound and freezing with botocore Stubber."""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
from botocore.stub import ANY

from recordio_pack import __version__
from recordio_pack.aws.ec2 import MANAGED_BY_KEY, Waiting, tags_of
from recordio_pack.aws.session import AwsError, AwsTarget
from recordio_pack.aws.snapshot import Freezer, SnapshotOptions, create_dataset_snapshot, share_snapshot
from recordio_pack.errors import RecordioPackError, UsageError
from recordio_pack.mount import FreezeRefused, LocalPaths, freezable_mount_root
from recordio_pack.progress import Polled, RecordingProgress

from ec2_helpers import StubTarget, moto_target

VOLUME = "vol-0123456789abcdef0"
SNAPSHOT = "snap-0123456789abcdef0"
NOW = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)


@pytest.fixture
def aws() -> Iterator[AwsTarget]:
    yield from moto_target()


def make_volume(target: AwsTarget, **kwargs: Any) -> str:
    return target.client("ec2").create_volume(AvailabilityZone="us-east-1a", Size=8, **kwargs)["VolumeId"]


def instant(**kwargs: Any) -> Waiting:
    return Waiting(poll_seconds=0, sleep=lambda seconds: None, **kwargs)


def test_snapshot_is_tagged_and_waited_on(aws: AwsTarget, tmp_path: Path) -> None:
    manifest = tmp_path / "imagenet.manifest.json"
    manifest.write_bytes(b'{"name": "imagenet"}\n')
    volume_id = make_volume(aws)
    synced: list[bool] = []
    recorder = RecordingProgress()
    options = SnapshotOptions(volume_id, dataset="imagenet", extra_tags={"team": "vision"},
                              manifest_sha256=hashlib.sha256(manifest.read_bytes()).hexdigest())
    result = create_dataset_snapshot(aws, options, instant(progress=recorder),
                                     sync=lambda: synced.append(True))
    events: list[Polled] = recorder.of(Polled)
    assert synced == [True] and result.state == "completed" and not result.frozen
    assert events[-1].state == "completed" and events[-1].percent == 100
    described = aws.client("ec2").describe_snapshots(SnapshotIds=[result.snapshot_id])["Snapshots"][0]
    tags = tags_of(described)
    assert described["VolumeId"] == volume_id
    assert tags == {"Name": "recordio-pack imagenet", MANAGED_BY_KEY: "recordio-pack", "team": "vision",
                    "recordio-pack:dataset": "imagenet", "recordio-pack:source-volume": volume_id,
                    "recordio-pack:manifest-sha256": hashlib.sha256(b'{"name": "imagenet"}\n').hexdigest(),
                    "recordio-pack:tool-version": __version__}
    assert result.tags == tags


def test_copies_land_in_each_region_with_tags(aws: AwsTarget) -> None:
    volume_id = make_volume(aws)
    result = create_dataset_snapshot(aws, SnapshotOptions(volume_id, dataset="d1",
                                                          copy_to_regions=("eu-west-1", "us-west-2")), instant())
    assert [copy["region"] for copy in result.copies] == ["eu-west-1", "us-west-2"]
    for copy in result.copies:
        assert copy["state"] == "completed"
        described = aws.client("ec2", region=copy["region"]).describe_snapshots(
            SnapshotIds=[copy["snapshot_id"]])["Snapshots"][0]
        tags = tags_of(described)
        assert tags["recordio-pack:source-snapshot"] == result.snapshot_id
        assert tags["recordio-pack:source-region"] == "us-east-1"
        assert tags["recordio-pack:dataset"] == "d1" and tags[MANAGED_BY_KEY] == "recordio-pack"


def test_sharing_names_accounts_and_never_the_public_group(aws: AwsTarget) -> None:
    sent: list[dict[str, Any]] = []
    aws.session().events.register("before-parameter-build.ec2.ModifySnapshotAttribute",
                                  lambda params, **kwargs: sent.append(params))
    volume_id = make_volume(aws, Encrypted=True)  # moto's default EBS key is customer-managed: shareable
    result = create_dataset_snapshot(aws, SnapshotOptions(volume_id, share_with=("111122223333", "444455556666"),
                                                          copy_to_regions=("eu-west-1",)), instant())
    assert result.shared_with == ["111122223333", "444455556666"] and result.problems == []
    assert result.copies[0]["shared_with"] == ["111122223333", "444455556666"]
    for region, snapshot_id in (("us-east-1", result.snapshot_id), ("eu-west-1", result.copies[0]["snapshot_id"])):
        permissions = aws.client("ec2", region=region).describe_snapshot_attribute(
            SnapshotId=snapshot_id, Attribute="createVolumePermission")["CreateVolumePermissions"]
        assert sorted(p.get("UserId") for p in permissions) == ["111122223333", "444455556666"]
        assert all("Group" not in permission for permission in permissions)
    assert len(sent) == 2
    assert all("GroupNames" not in params and params["OperationType"] == "add" for params in sent)


@pytest.mark.parametrize("account", ["all", "12345", "1234567890123", "aws-marketplace", "111122223333\n"])
def test_public_or_malformed_accounts_are_refused(account: str) -> None:
    with pytest.raises(UsageError):
        SnapshotOptions(VOLUME, share_with=(account,))
    with pytest.raises(UsageError):
        share_snapshot(object(), SNAPSHOT, [account])  # nothing reaches a client


def test_option_validation() -> None:
    for malformed in ("snap-123", "vol-123", "vol-0123456789abcdef", "vol-0123456789ABCDEF0", "vol-0123456789abcdef0 "):
        with pytest.raises(UsageError, match="not an EC2 volume id"):
            SnapshotOptions(malformed)
    SnapshotOptions("vol-01234567")  # the older 8-digit form
    with pytest.raises(UsageError, match="reserved"):
        SnapshotOptions(VOLUME, extra_tags={MANAGED_BY_KEY: "someone-else"})


# ---- --freeze: only a mount root, never a filesystem the system or this tool lives on -----------------------

MOUNTINFO = Path(__file__).parent / "fixtures" / "mountinfo"


def mountinfo_paths(tmp_path: Path, text: str) -> LocalPaths:
    (tmp_path / "proc" / "self").mkdir(parents=True)
    (tmp_path / "proc" / "self" / "mountinfo").write_text(text)
    return LocalPaths(proc=tmp_path / "proc")


@pytest.mark.parametrize("fixture, mount_point, refusal", [
    ("nitro-data-volume", "/", "also holds / \\(the system's\\)"),
    ("nitro-data-volume", "//.", "also holds / "),  # normpath keeps "//"; the old check compared with "/"
    ("nitro-data-volume", "/data/..", "also holds / "),
    ("nitro-data-volume", "/data/imagenet", "not a mount point but a folder in the filesystem mounted at /data"),
    ("nitro-data-volume", "/home", "not a mount point but a folder in the filesystem mounted at /,"),
    ("nitro-data-volume", "/boot/efi", "a filesystem inside /boot"),
    ("separate-var-and-usr", "/var", "also holds /var"),
    ("separate-var-and-usr", "/mnt/datasets", "also holds /var"),  # a bind mount of /var's filesystem
    ("separate-var-and-usr", "/mnt/usr-data", "also holds /usr"),
])
def test_freeze_refuses_what_would_freeze_the_system(tmp_path: Path, fixture: str, mount_point: str,
                                                     refusal: str) -> None:
    paths = mountinfo_paths(tmp_path, (MOUNTINFO / f"{fixture}.txt").read_text())
    with pytest.raises(FreezeRefused, match=refusal) as refused:
        freezable_mount_root(mount_point, paths, tool=())
    assert refused.value.exit_code == 3
    log: list[str] = []
    with pytest.raises(FreezeRefused):
        Freezer.guarded(mount_point, paths=paths, tool=(), run=FreezeRecorder(log))
    assert log == []  # nothing was frozen


@pytest.mark.parametrize("mount_point, root", [("/data", "/data"), ("/data/", "/data"), ("//data/./", "/data"),
                                               ("/srv/imagenet", "/srv/imagenet"), ("/opt/tools", "/opt/tools")])
def test_freeze_accepts_the_dataset_volume_mount_root(tmp_path: Path, mount_point: str, root: str) -> None:
    paths = mountinfo_paths(tmp_path, (MOUNTINFO / "nitro-data-volume.txt").read_text())
    assert freezable_mount_root(mount_point, paths, tool=()).mount_point == root
    assert Freezer.guarded(mount_point, paths=paths, tool=()).mount_point == root


def test_freeze_refuses_the_filesystem_this_tool_runs_from(tmp_path: Path) -> None:
    paths = mountinfo_paths(tmp_path, (MOUNTINFO / "nitro-data-volume.txt").read_text())
    with pytest.raises(FreezeRefused, match="also holds /opt/tools/venv/bin/python \\(this command's own files\\)"):
        freezable_mount_root("/opt/tools", paths, tool=("/opt/tools/venv/bin/python",))
    # by default the running package and interpreter are found on their own
    import recordio_pack

    package = Path(recordio_pack.__file__).resolve().parent
    escaped = str(package).replace(" ", "\\040")  # mountinfo's escape for a space
    here = mountinfo_paths(tmp_path / "here", "22 1 259:1 / / rw - ext4 /dev/nvme0n1p1 rw\n"
                           f"40 22 259:9 / {escaped} rw - ext4 /dev/nvme5n1 rw\n")
    with pytest.raises(FreezeRefused, match="this command's own files"):
        freezable_mount_root(str(package), here)
    import botocore

    library = Path(botocore.__file__).resolve().parent  # imported lazily by boto3 while the freeze would hold
    escaped = str(library).replace(" ", "\\040")
    there = mountinfo_paths(tmp_path / "there", "22 1 259:1 / / rw - ext4 /dev/nvme0n1p1 rw\n"
                            f"40 22 259:9 / {escaped} rw - ext4 /dev/nvme5n1 rw\n")
    with pytest.raises(FreezeRefused, match="this command's own files"):
        freezable_mount_root(str(library), there)


def test_create_dataset_snapshot_guards_its_default_freezer(aws: AwsTarget, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an injected freezer, the library builds a guarded one: / on this machine is never frozen."""
    calls: list[str] = []
    monkeypatch.setattr(Freezer, "_call", lambda self, flag: calls.append(flag))  # were the guard gone: no real freeze
    volume_id = make_volume(aws)
    with pytest.raises(FreezeRefused):
        create_dataset_snapshot(aws, SnapshotOptions(volume_id, freeze_mount_point="//."), instant(),
                                sync=lambda: None)
    assert calls == [] and aws.client("ec2").describe_snapshots(OwnerIds=["self"])["Snapshots"] == []


# ---- Stubber: the state sequences moto cannot produce ----------------------------------------------------------

@pytest.fixture
def stub() -> Iterator[StubTarget]:
    with StubTarget(("ec2", "kms")) as target:
        yield target
        target.assert_done()


def volume_response(encrypted: bool = False, key: str | None = None) -> dict[str, Any]:
    volume = {"VolumeId": VOLUME, "Size": 200, "AvailabilityZone": "us-east-1a", "State": "in-use",
              "Encrypted": encrypted}
    if key:
        volume["KmsKeyId"] = key
    return {"Volumes": [volume]}


def snapshot_state(state: str, progress: str) -> dict[str, Any]:
    return {"Snapshots": [{"SnapshotId": SNAPSHOT, "VolumeId": VOLUME, "State": state, "Progress": progress,
                           "StartTime": NOW, "VolumeSize": 200, "Encrypted": False, "OwnerId": "123456789012"}]}


def expect_create(stub: StubTarget) -> None:
    ec2 = stub.stubs["ec2"]
    ec2.add_response("describe_volumes", volume_response(), {"VolumeIds": [VOLUME]})
    ec2.add_response("create_snapshot", {"SnapshotId": SNAPSHOT, "State": "pending", "VolumeId": VOLUME},
                     {"VolumeId": VOLUME, "Description": ANY, "TagSpecifications": ANY})


def test_waits_through_not_found_and_pending_with_progress(stub: StubTarget) -> None:
    expect_create(stub)
    ec2 = stub.stubs["ec2"]
    ec2.add_client_error("describe_snapshots", "InvalidSnapshot.NotFound", "eventual consistency",
                         expected_params={"SnapshotIds": [SNAPSHOT]})
    for state, progress in (("pending", "0%"), ("pending", "40%"), ("pending", "97%"), ("completed", "100%")):
        ec2.add_response("describe_snapshots", snapshot_state(state, progress), {"SnapshotIds": [SNAPSHOT]})
    recorder = RecordingProgress()
    sleeps: list[float] = []
    result = create_dataset_snapshot(stub, SnapshotOptions(VOLUME), Waiting(
        poll_seconds=30, progress=recorder, sleep=sleeps.append), sync=lambda: None)
    events: list[Polled] = recorder.of(Polled)
    assert result.state == "completed" and result.snapshot_id == SNAPSHOT
    assert [(event.state, event.percent) for event in events] == [
        ("not-visible-yet", None), ("pending", 0), ("pending", 40), ("pending", 97), ("completed", 100)]
    assert sleeps == [30] * 4


def test_timeout_is_explicit_and_the_default_waits_longer_than_ten_minutes(stub: StubTarget) -> None:
    ec2 = stub.stubs["ec2"]
    clock = iter(range(0, 100000, 60)).__next__  # each poll is a minute later
    for _ in range(20):
        ec2.add_response("describe_snapshots", snapshot_state("pending", "5%"), {"SnapshotIds": [SNAPSHOT]})
    ec2.add_response("describe_snapshots", snapshot_state("completed", "100%"), {"SnapshotIds": [SNAPSHOT]})
    from recordio_pack.aws.ec2 import wait_snapshot_completed

    done = wait_snapshot_completed(stub.clients["ec2"], SNAPSHOT, Waiting(poll_seconds=60, sleep=lambda s: None,
                                                                          clock=clock))
    assert done["State"] == "completed"  # 20 minutes of "pending" did not end the wait

    clock = iter(range(0, 100000, 60)).__next__
    for _ in range(2):  # polls at 1 and 2 minutes; the second one is past the timeout
        ec2.add_response("describe_snapshots", snapshot_state("pending", "5%"), {"SnapshotIds": [SNAPSHOT]})
    with pytest.raises(AwsError, match="gave up on snap-0123456789abcdef0 after 120 s \\(state pending, 5%\\)"):
        wait_snapshot_completed(stub.clients["ec2"], SNAPSHOT, Waiting(poll_seconds=60, timeout=120,
                                                                       sleep=lambda s: None, clock=clock))


def test_snapshot_in_error_state_fails(stub: StubTarget) -> None:
    expect_create(stub)
    error_state = snapshot_state("error", "13%")
    error_state["Snapshots"][0]["StateMessage"] = "volume went away"
    stub.stubs["ec2"].add_response("describe_snapshots", error_state, {"SnapshotIds": [SNAPSHOT]})
    with pytest.raises(AwsError, match="volume went away"):
        create_dataset_snapshot(stub, SnapshotOptions(VOLUME), instant(), sync=lambda: None)


class FreezeRecorder:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def __call__(self, argv: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        self.log.append(" ".join(argv))
        return subprocess.CompletedProcess(argv, 0, "", "")


def test_freeze_wraps_only_create_snapshot(stub: StubTarget) -> None:
    expect_create(stub)
    stub.stubs["ec2"].add_response("describe_snapshots", snapshot_state("completed", "100%"),
                                   {"SnapshotIds": [SNAPSHOT]})
    log: list[str] = []
    stub.clients["ec2"].meta.events.register("before-parameter-build.ec2.*", lambda model, **kw: log.append(model.name))
    freezer = Freezer("/data", ["fsfreeze"], run=FreezeRecorder(log))
    result = create_dataset_snapshot(stub, SnapshotOptions(VOLUME, freeze_mount_point="/data"), instant(),
                                     freezer=freezer, sync=lambda: log.append("sync"))
    assert result.frozen
    assert log == ["DescribeVolumes", "sync", "fsfreeze -f /data", "CreateSnapshot", "fsfreeze -u /data",
                   "DescribeSnapshots"]


def test_unfreeze_runs_when_create_snapshot_fails(stub: StubTarget) -> None:
    ec2 = stub.stubs["ec2"]
    ec2.add_response("describe_volumes", volume_response(), {"VolumeIds": [VOLUME]})
    ec2.add_client_error("create_snapshot", "SnapshotCreationPerVolumeRateExceeded", "too many snapshots")
    log: list[str] = []
    with pytest.raises(AwsError, match="SnapshotCreationPerVolumeRateExceeded"):
        create_dataset_snapshot(stub, SnapshotOptions(VOLUME, freeze_mount_point="/data"), instant(),
                                freezer=Freezer("/data", run=FreezeRecorder(log)), sync=lambda: None)
    assert log == ["fsfreeze -f /data", "fsfreeze -u /data"]


def test_aws_managed_key_cannot_be_shared_and_nothing_is_created(stub: StubTarget) -> None:
    key = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
    stub.stubs["ec2"].add_response("describe_volumes", volume_response(True, key), {"VolumeIds": [VOLUME]})
    stub.stubs["kms"].add_response("describe_key", {"KeyMetadata": {"KeyId": key.rsplit("/", 1)[1], "Arn": key,
                                                                    "KeyManager": "AWS"}}, {"KeyId": key})
    with pytest.raises(RecordioPackError, match="AWS-managed key alias/aws/ebs.*sharing is refused"):
        create_dataset_snapshot(stub, SnapshotOptions(VOLUME, share_with=("111122223333",)), instant(),
                                sync=lambda: None)
    # no create_snapshot was stubbed: had it been called, Stubber would have raised a different error


def test_a_copy_under_an_aws_managed_key_is_a_reported_problem_not_a_lost_share() -> None:
    from recordio_pack.aws.snapshot import _share_copies

    class Kms:
        def describe_key(self, KeyId: str) -> dict[str, Any]:
            return {"KeyMetadata": {"KeyId": KeyId, "KeyManager": "AWS" if KeyId == "aws-ebs-key" else "CUSTOMER"}}

    class Ec2:
        def __init__(self) -> None:
            self.calls: list[dict[str, Any]] = []

        def modify_snapshot_attribute(self, **params: Any) -> None:
            self.calls.append(params)

    class Target:
        def client(self, service: str, region: str | None = None) -> Any:
            assert service == "kms" and region in ("eu-west-1", "us-west-2")
            return Kms()

    west, eu = Ec2(), Ec2()
    copies = [{"region": "eu-west-1", "snapshot_id": "snap-0e", "encrypted": True, "kms_key_id": "aws-ebs-key",
               "client": eu, "shared_with": []},
              {"region": "us-west-2", "snapshot_id": "snap-0w", "encrypted": True, "kms_key_id": "my-cmk",
               "client": west, "shared_with": []}]
    problems = _share_copies(Target(), copies, ["111122223333"])
    assert len(problems) == 1 and "copy snap-0e in eu-west-1" in problems[0] and "alias/aws/ebs" in problems[0]
    assert eu.calls == [] and copies[0]["shared_with"] == []
    assert west.calls == [{"SnapshotId": "snap-0w", "Attribute": "createVolumePermission", "OperationType": "add",
                           "UserIds": ["111122223333"]}]
    assert copies[1]["shared_with"] == ["111122223333"]
