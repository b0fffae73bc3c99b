"""``recordio-pack backup`` / ``restore`` end to end: the CLI as a subprocess against a moto server on
127.0.0.1, exit statuses and one-line errors, a backup killed mid-file that the next run continues, and the
backup-vs-awscli benchmark on a tiny size."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.core import set_initial_no_auth_action_count

from recordio_pack.cli import main

from s3_helpers import PART, SMALL, damage, write_dataset

REPO = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "recordio-pack")


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env=env if env is not None else dict(os.environ))


def new_bucket(moto_server: str) -> tuple[Any, str]:
    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    bucket = f"rp-cli-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return client, bucket


def one_error_line(completed: subprocess.CompletedProcess, command: str) -> str:
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"recordio-pack {command}: error: "), completed.stderr
    return lines[0]


def test_backup_dry_run_and_restore_round_trip(tmp_path: Path, moto_server: str) -> None:
    _, bucket = new_bucket(moto_server)
    write_dataset(tmp_path / "ds", sizes=SMALL)  # multipart through the CLI: the kill test below
    where = f"s3://{bucket}/imagenet/v1"
    common = ["--endpoint-url", moto_server, "--part-size", "5MiB"]
    dry = cli("backup", str(tmp_path / "ds"), where, "--dry-run", *common)
    assert dry.returncode == 0, dry.stderr
    assert "upload" in dry.stdout and "(new)" in dry.stdout and "dry run: would upload 6 data files + 1 manifest" in dry.stdout
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


def test_errors_are_one_line_with_meaningful_exit_status(tmp_path: Path, moto_server: str) -> None:
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


def test_killed_backup_continues_its_unfinished_multipart_upload(tmp_path: Path, moto_server: str) -> None:
    client, bucket = new_bucket(moto_server)
    big = "ds-00000-of-00001.rec"
    write_dataset(tmp_path / "ds", sizes={big: 3 * PART + 17, "ds-00000-of-00001.idx": 64})
    args = [str(tmp_path / "ds"), f"s3://{bucket}/ds", "--endpoint-url", moto_server, "--part-size", "5MiB"]
    process = subprocess.Popen([CLI, "backup", *args, "-q", "--concurrency", "1", "--max-bandwidth", "4MiB/s"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        parts = 0
        while parts < 1:  # kill it once a part of the big file is in S3 (the rest takes seconds more)
            assert process.poll() is None, "the throttled backup finished before it could be killed"
            assert time.monotonic() < deadline, "no parts appeared"
            uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
            if uploads:
                parts = len(client.list_parts(Bucket=bucket, Key=uploads[0]["Key"],
                                              UploadId=uploads[0]["UploadId"]).get("Parts", []))
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(30)
    assert len(client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])) == 1  # what the kill left
    resumed = cli("backup", *args, "--json")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["reused_parts"] >= 1
    assert {f["name"]: f["action"] for f in summary["files"]}[big] == "continue"
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    body = client.get_object(Bucket=bucket, Key=f"ds/{big}")["Body"].read()
    assert body == (tmp_path / "ds" / big).read_bytes()


def test_benchmark_runs_on_a_tiny_size(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(REPO / "bench" / "backup_vs_awscli.py"), "--big-files", "1", "--big-size", "6MiB",
         "--small-files", "2", "--small-size", "1KiB", "--runs", "1", "--json", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=180)
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["files"] == 5 and set(result["tools"]) == {"recordio-pack", "aws s3 cp"}
    assert all(tool["mb_per_s"] > 0 for tool in result["tools"].values()) and result["ratio"] > 0
