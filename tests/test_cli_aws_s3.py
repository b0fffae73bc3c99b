"""``recordio-pack backup`` / ``restore`` end to end against a moto server on 127.0.0.1: exit statuses and one-line
errors, counts that mean the same in both (the CLI in this process, through ``cli.main``), and the fault matrix: kill
-9 and SIGTERM of the installed ``recordio-pack`` (a real subprocess) of backup and of restore at two points
mid-transfer, then a rerun that finishes byte-identical with no temporaries left; and the backup-vs-awscli benchmark
on a tiny size."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Callable

import boto3
import pytest
from moto import mock_aws
from moto.core import set_initial_no_auth_action_count

from recordio_pack.cli import main

from s3_helpers import PART, SMALL, damage, write_dataset
from waiting import wait_until

REPO = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "recordio-pack")


Run = Callable[..., subprocess.CompletedProcess]


@pytest.fixture()
def cli(cli_main: Run) -> Run:
    """``cli(*args, env=None)``: ``recordio-pack ARGS`` in this process, answered like ``subprocess.run``."""
    return cli_main


def new_bucket(moto_server: str) -> tuple[Any, str]:
    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    bucket = f"rp-cli-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return client, bucket


def one_error_line(completed: subprocess.CompletedProcess, command: str) -> str:
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"recordio-pack {command}: error: "), completed.stderr
    return lines[0]


def test_backup_dry_run_and_restore_round_trip(cli: Run, tmp_path: Path, moto_server: str) -> None:
    _, bucket = new_bucket(moto_server)
    write_dataset(tmp_path / "ds", sizes=SMALL)  # multipart through the CLI: the kill test below
    where = f"s3://{bucket}/imagenet/v1"
    common = ["--endpoint-url", moto_server, "--part-size", "5MiB"]
    dry = cli("backup", str(tmp_path / "ds"), where, "--dry-run", *common)
    assert dry.returncode == 0, dry.stderr
    assert "upload" in dry.stdout and "(new)" in dry.stdout
    assert "dry run: would upload 6 data files + 1 manifest" in dry.stdout
    done = cli("backup", str(tmp_path / "ds"), where, "--json", "--max-bandwidth", "500MB/s", *common)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["uploaded_files"] == len(SMALL) and summary["uploaded_manifests"] == 1
    assert summary["skipped_files"] == 0 and summary["aborted_uploads"] == []
    again = cli("backup", str(tmp_path / "ds"), where, *common)
    assert again.returncode == 0 and "uploaded 0 data files + 0 manifests" in again.stdout
    assert "skipped 6 data files + 1 manifest unchanged" in again.stdout
    restored = cli("restore", where, str(tmp_path / "copy"), "--json", *common)
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["downloaded_files"] == len(SMALL)
    for name in [*SMALL, "ds.manifest.json"]:
        assert (tmp_path / "copy" / name).read_bytes() == (tmp_path / "ds" / name).read_bytes()
    damage(tmp_path / "copy" / "ds.lst")
    refused = cli("restore", where, str(tmp_path / "copy"), "-q", *common)
    assert refused.returncode == 3 and "ds.lst" in one_error_line(refused, "restore")
    fixed = cli("restore", where, str(tmp_path / "copy"), "--overwrite", *common)
    assert fixed.returncode == 0 and "replaced 1 local files" in fixed.stdout
    assert (tmp_path / "copy" / "ds.lst").read_bytes() == (tmp_path / "ds" / "ds.lst").read_bytes()


def test_errors_are_one_line_with_meaningful_exit_status(cli: Run, tmp_path: Path, moto_server: str) -> None:
    write_dataset(tmp_path / "ds", sizes={"ds.lst": 10})
    missing = cli("backup", str(tmp_path / "ds"), "s3://rp-cli-no-such-bucket/x", "--endpoint-url", moto_server)
    assert missing.returncode == 1 and "NoSuchBucket" in one_error_line(missing, "backup")
    bad_uri = cli("backup", str(tmp_path / "ds"), "bucket/x", "--endpoint-url", moto_server)
    assert bad_uri.returncode == 2 and "s3://" in one_error_line(bad_uri, "backup")
    no_credentials = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ACCESS_KEY")
                      and not k.startswith("AWS_SECRET")}
    denied = cli("restore", "s3://rp-cli-any/x", str(tmp_path / "copy"), "--endpoint-url", moto_server,
                 env=no_credentials)
    assert denied.returncode == 1 and "no AWS credentials" in one_error_line(denied, "restore")
    bad_kms = cli("backup", str(tmp_path / "ds"), "s3://rp-cli-any/x", "--kms-key-id", "k")
    assert bad_kms.returncode == 2 and "aws:kms" in one_error_line(bad_kms, "backup")


@set_initial_no_auth_action_count(4)
@mock_aws
def test_access_denied_names_the_action(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    iam, s3 = boto3.client("iam", region_name="us-east-1"), boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="rp-cli-denied")
    iam.create_user(UserName="lister")
    iam.put_user_policy(UserName="lister", PolicyName="list-only", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["s3:ListBucket", "s3:ListBucketMultipartUploads"],
                       "Resource": "*"}]}))
    access = iam.create_access_key(UserName="lister")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", access["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", access["SecretAccessKey"])
    write_dataset(tmp_path / "ds", sizes={"ds.lst": 10})
    assert main(["backup", str(tmp_path / "ds"), "s3://rp-cli-denied/x", "-q"]) == 1
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "access denied for PutObject" in error


def test_backup_and_restore_count_the_same_things(cli: Run, tmp_path: Path, moto_server: str) -> None:
    _, bucket = new_bucket(moto_server)
    write_dataset(tmp_path / "ds", sizes=SMALL)
    where, common = f"s3://{bucket}/ds", ["--endpoint-url", moto_server, "-q"]
    backed_up = cli("backup", str(tmp_path / "ds"), where, *common)
    restored = cli("restore", where, str(tmp_path / "copy"), *common)
    said = f"{len(SMALL)} data files + 1 manifest"
    assert f"uploaded {said} (" in backed_up.stdout and f"downloaded {said} (" in restored.stdout, (
        backed_up.stdout, restored.stdout)


def test_flag_errors_and_help_say_what_they_mean(cli: Run, tmp_path: Path) -> None:
    for bad in ("fast", "0MB/s"):
        completed = cli("backup", str(tmp_path), "s3://rp-cli-any/x", "--max-bandwidth", bad)
        line = completed.stderr.strip().splitlines()[-1]
        assert completed.returncode == 2 and "not a rate" in line and "100MB/s" in line and "MiB " not in line, line
    help_text = " ".join(cli("backup", "--help").stdout.split())
    assert "re-reads nothing" not in help_text
    assert "reads the local manifests (not the data files)" in help_text and "--overwrite" in help_text


def test_another_version_in_the_prefix_is_refused_with_exit_3_until_overwrite(cli: Run, tmp_path: Path,
                                                                              moto_server: str) -> None:
    client, bucket = new_bucket(moto_server)
    where, common = f"s3://{bucket}/ds", ["--endpoint-url", moto_server, "-q"]
    write_dataset(tmp_path / "v1", sizes=SMALL)
    assert cli("backup", str(tmp_path / "v1"), where, *common).returncode == 0
    write_dataset(tmp_path / "v2", sizes={"ds-00000-of-00001.rec": 900, "ds-00000-of-00001.idx": 9}, seed=5)
    refused = cli("backup", str(tmp_path / "v2"), where, *common)
    line = one_error_line(refused, "backup")
    assert refused.returncode == 3 and "another version" in line and "--overwrite" in line and where in line
    replaced = cli("backup", str(tmp_path / "v2"), where, "--overwrite", *common)
    assert replaced.returncode == 0 and f"deleted {len(SMALL)} objects of the replaced version" in replaced.stdout
    listed = {o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])}
    assert listed == {f"ds/{n}" for n in ("ds-00000-of-00001.rec", "ds-00000-of-00001.idx", "ds.manifest.json")}
    into_a_file = cli("restore", where, str(tmp_path / "v2" / "ds.manifest.json"), *common)
    assert into_a_file.returncode == 1 and "ds.manifest.json" in one_error_line(into_a_file, "restore")


# --- fault tests: kill -9 and SIGTERM mid-transfer, then rerun (issue 10 §4, "Done when") --------------------

# SIGTERM ends like Ctrl-C through cli.main (recordio_pack.errors.Terminated): one line, exit 143
SIGNALS = [pytest.param(signal.SIGKILL, id="kill-9"), pytest.param(signal.SIGTERM, id="sigterm")]
FIRST, SECOND = "ds-00000-of-00002.rec", "ds-00001-of-00002.rec"  # 3 parts of 5 MiB each (the last one tiny)
FAULT_SIZES = {FIRST: 2 * PART + 17, "ds-00000-of-00002.idx": 64, SECOND: 2 * PART + 5, "ds-00001-of-00002.idx": 32,
               "ds.lst": 300}
THROTTLED = ["-q", "--concurrency", "1", "--max-bandwidth", "4MiB/s", "--part-size", "5MiB"]
# where each run is stopped: inside the first big file, or with the first one done and the second one begun
POINTS = {"mid-file": (None, FIRST), "between-files": (FIRST, SECOND)}


def stop_when(process: subprocess.Popen, ready: Callable[[], bool], sig: signal.Signals,
              what: str) -> subprocess.CompletedProcess:
    """Send ``sig`` to ``process`` once ``ready()`` is true (polled), then collect it."""
    def ready_while_running() -> bool:
        if ready():
            return True
        assert process.poll() is None, f"the throttled {what} finished before it could be stopped"
        return False

    try:
        wait_until(ready_while_running, 90, interval=0.05, message=f"the {what} never got mid-way")
        process.send_signal(sig)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait(30)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def check_stopped(stopped: subprocess.CompletedProcess, sig: signal.Signals, command: str) -> None:
    """kill -9 leaves no word; SIGTERM ends like Ctrl-C: one line saying so, exit 143 (128 + 15)."""
    if sig == signal.SIGKILL:
        assert stopped.returncode == -signal.SIGKILL
        return
    lines = stopped.stderr.strip().splitlines()
    assert stopped.returncode == 143, stopped.stderr
    assert len(lines) == 1 and lines[0].startswith(f"recordio-pack {command}: ") and "resume" in lines[0], lines


def uploading(client: Any, bucket: str, started: str) -> Callable[[], bool]:
    """A poll: ``started`` has a part in an unfinished multipart upload. (s3transfer queues a file's completion
    behind the parts of the files after it, so the first file may still be unfinished when the second is.)"""
    def ready() -> bool:
        uploads = [u for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
                   if u["Key"] == f"ds/{started}"]
        return any(client.list_parts(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"]).get("Parts")
                   for u in uploads)
    return ready


def downloading(copy: Path, done: str | None, started: str) -> Callable[[], bool]:
    """A poll: ``done`` is restored (None: nothing asked) and ``started``'s partial file records a part (its
    state file holds a header line and a part number)."""
    state = copy / (started + ".partial.json")
    return lambda: ((done is None or (copy / done).is_file()) and state.is_file()
                    and len(state.read_text().splitlines()) >= 2)


def fault_dataset(tmp_path: Path, moto_server: str) -> tuple[Any, str, list[str]]:
    """A new bucket and ``tmp_path/ds`` holding FAULT_SIZES: (client, bucket, the folder's file names)."""
    client, bucket = new_bucket(moto_server)
    write_dataset(tmp_path / "ds", sizes=FAULT_SIZES)
    return client, bucket, sorted(p.name for p in (tmp_path / "ds").iterdir())


def same_files(source: Path, copy: Path, names: list[str]) -> bool:
    """``copy`` holds exactly ``names`` (no temporaries), each byte-identical to ``source``'s."""
    return sorted(p.name for p in copy.iterdir()) == names and all(
        (copy / n).read_bytes() == (source / n).read_bytes() for n in names)


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("sig", SIGNALS)
def test_backup_stopped_mid_transfer_resumes_and_restores_byte_identical(cli: Run, tmp_path: Path, moto_server: str,
                                                                         sig: signal.Signals, point: str) -> None:
    client, bucket, before = fault_dataset(tmp_path, moto_server)
    done, started = POINTS[point]
    args = [str(tmp_path / "ds"), f"s3://{bucket}/ds", "--endpoint-url", moto_server]
    process = subprocess.Popen([CLI, "backup", *args, *THROTTLED, "--multipart-threshold", "5MiB"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    check_stopped(stop_when(process, uploading(client, bucket, started), sig, "backup"), sig, "backup")
    assert "ds/ds.manifest.json" not in {o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])}
    left = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    if sig == signal.SIGKILL:  # kill -9 leaves its uploads; SIGTERM aborts them
        assert {u["Key"] for u in left} >= {f"ds/{started}"}
    else:
        assert left == []
    resumed = cli("backup", *args, "--part-size", "5MiB", "--json")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    actions = {f["name"]: f["action"] for f in summary["files"]}
    if sig == signal.SIGKILL:  # parts still in S3 are kept, the rest sent; a file whose parts were all sent
        assert summary["reused_parts"] >= 1 and actions[started] == "continue"  # is not sent again
        assert done is None or actions[done] in ("skip", "continue")
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == before  # backup leaves nothing locally
    restored = cli("restore", f"s3://{bucket}/ds", str(tmp_path / "copy"), "--endpoint-url", moto_server, "-q")
    assert restored.returncode == 0, restored.stderr
    assert same_files(tmp_path / "ds", tmp_path / "copy", before)


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("sig", SIGNALS)
def test_restore_stopped_mid_transfer_resumes_with_ranged_gets_and_leaves_nothing(
        cli: Run, tmp_path: Path, moto_server: str, sig: signal.Signals, point: str) -> None:
    _, bucket, names = fault_dataset(tmp_path, moto_server)
    done, started = POINTS[point]
    where = f"s3://{bucket}/ds"
    assert cli("backup", str(tmp_path / "ds"), where, "--endpoint-url", moto_server, "-q").returncode == 0
    copy = tmp_path / "copy"
    process = subprocess.Popen([CLI, "restore", where, str(copy), "--endpoint-url", moto_server, *THROTTLED],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    check_stopped(stop_when(process, downloading(copy, done, started), sig, "restore"), sig, "restore")
    assert not (copy / started).exists() and (copy / (started + ".partial")).is_file()  # kept to resume from
    assert not (copy / "ds.manifest.json").exists()
    resumed = cli("restore", where, str(copy), "--endpoint-url", moto_server, "--part-size", "5MiB", "--json")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["resumed_files"] == [started] and summary["resumed_bytes"] >= PART
    assert done is None or {f["name"]: f["action"] for f in summary["files"]}[done] == "skip"
    assert same_files(tmp_path / "ds", copy, names)  # byte-identical; no .partial, .partial.json or .tmp left


def test_aws_errors_name_the_setting_and_only_the_cli_names_its_flag() -> None:
    from botocore.exceptions import ClientError, EndpointConnectionError

    from recordio_pack.aws.session import AwsError, aws_errors
    from recordio_pack.commands import _s3

    throttled = ClientError({"Error": {"Code": "SlowDown", "Message": "Reduce your request rate"}}, "PutObject")
    for raised, setting, flag in ((EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), "endpoint",
                                   "--endpoint-url or --region"), (throttled, "concurrency", "--concurrency")):
        with pytest.raises(AwsError) as library:
            with aws_errors("uploading x"):
                raise raised
        assert library.value.setting == setting and "--" not in str(library.value)
        with pytest.raises(AwsError, match=f"; see {flag}$"):
            with _s3.flag_hints(), aws_errors("uploading x"):
                raise raised


@pytest.mark.slow
def test_the_backup_and_restore_bench_runs_on_a_tiny_size(tmp_path: Path) -> None:
    """bench/backup_vs_awscli.py end to end (its own moto server), every tool once: both phases timed, every
    tool's result checked by the bench itself (object count; restored folder byte-identical), clients and
    versions reported. No timing is asserted."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    done = subprocess.run([sys.executable, str(REPO / "bench" / "backup_vs_awscli.py"), "--big-files", "1",
                           "--big-size", "6MiB", "--small-files", "2", "--small-size", "1KiB", "--runs", "1",
                           "--json", "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=300,
                          env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["files"] == 5 and result["endpoint"] == "moto server on 127.0.0.1"
    for phase in ("backup", "restore"):
        assert set(result[phase]["tools"]) == {"recordio-pack", "aws s3 cp"}
        assert all(tool["mb_per_s"] > 0 for tool in result[phase]["tools"].values())
        assert set(result[phase]["ratio_to_aws_cli"]) == {"recordio-pack"}
    assert "no s3transfer" in result["clients"]["recordio-pack"] and "s3transfer" in result["clients"]["aws s3 cp"]
    assert result["versions"]["awscli"] != "not installed"
