"""``pack INPUT s3://bucket/prefix``: each shard uploaded as it finishes and its data file removed from the staging
folder, the manifest last; the objects are the files a local pack writes; reruns resume, update or refuse as for a
local dataset. Against a moto server on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from imagegen import class_tree
from recordio_pack.aws.s3_output import S3Output
from recordio_pack.errors import RefusedError
from recordio_pack.inputs import open_input
from recordio_pack.options import PackOptions
from recordio_pack.pack import pack_input


def tree(root: Path) -> Path:
    class_tree(root, 3, 8, 60, 44, seed_stride=20)
    (root / "n00000002" / "broken.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return root


def objects(endpoint: str, bucket: str, prefix: str) -> dict[str, bytes]:
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
        for item in page.get("Contents", ()):
            found[item["Key"][len(prefix) + 1:]] = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    return found


def files_of(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


@pytest.fixture()
def bucket(moto_server: str) -> str:
    name = f"out-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(Bucket=name)
    return name


OPTIONS = PackOptions(resize=40, num_shards=3, workers=2)  # shard 0 packed whole by a worker, 1 and 2 in chunks


def test_the_objects_are_the_files_of_a_local_pack_and_staging_keeps_no_data_file(
        tmp_path: Path, moto_server: str, bucket: str) -> None:
    root = tree(tmp_path / "tree")
    output = S3Output(bucket, "datasets/train", endpoint_url=moto_server)
    result = pack_input(open_input(root), tmp_path / "staging", OPTIONS, output=output)
    assert result.published_to == f"s3://{bucket}/datasets/train" and result.records == 24 and result.rejects == 1
    local = pack_input(open_input(root), tmp_path / "local", OPTIONS)
    assert objects(moto_server, bucket, "datasets/train") == files_of(tmp_path / "local")
    assert local.records == result.records
    staged = {path.name for path in (tmp_path / "staging").iterdir()}
    assert not [name for name in staged if name.endswith(".rec") or name.endswith(".tmp")]  # data files sent, gone
    assert "tree-00001-of-00003.idx" in staged and "tree.manifest.json" in staged


def test_restore_reads_what_pack_uploaded(tmp_path: Path, moto_server: str, bucket: str, cli_main: Any) -> None:
    root = tree(tmp_path / "tree")
    pack_input(open_input(root), tmp_path / "staging", OPTIONS, output=S3Output(bucket, "ds", endpoint_url=moto_server))
    done = cli_main("restore", f"s3://{bucket}/ds", str(tmp_path / "restored"), "--endpoint-url", moto_server, "-q")
    assert done.returncode == 0, done.stderr
    assert cli_main("verify", str(tmp_path / "restored"), "-q").returncode == 0


def test_a_rerun_from_a_new_machine_finds_the_dataset_in_the_bucket(tmp_path: Path, moto_server: str,
                                                                    bucket: str) -> None:
    root = tree(tmp_path / "tree")
    output = S3Output(bucket, "ds", endpoint_url=moto_server)
    pack_input(open_input(root), tmp_path / "staging", OPTIONS, output=output)
    again = pack_input(open_input(root), tmp_path / "staging", OPTIONS, output=output)
    assert again.up_to_date
    shutil.rmtree(tmp_path / "staging")  # another machine: nothing local
    elsewhere = pack_input(open_input(root), tmp_path / "staging", OPTIONS, output=output)
    assert elsewhere.up_to_date
    with pytest.raises(RefusedError, match="other options"):
        shutil.rmtree(tmp_path / "staging")
        pack_input(open_input(root), tmp_path / "staging", PackOptions(resize=48, num_shards=3, workers=2),
                   output=output)


def test_a_run_that_fails_mid_way_leaves_no_manifest_and_a_rerun_completes_it(
        tmp_path: Path, moto_server: str, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tree(tmp_path / "tree")
    output = S3Output(bucket, "ds", endpoint_url=moto_server)
    options = PackOptions(resize=40, num_shards=3, workers=1)
    real_publish = S3Output.publish
    calls = []

    def failing_second(self, out_dir, files):  # type: ignore[no-untyped-def]
        calls.append(files[0].name)
        if len(calls) == 2:
            raise ConnectionError("the network went away")
        return real_publish(self, out_dir, files)

    with monkeypatch.context() as patch:
        patch.setattr(S3Output, "publish", failing_second)
        with pytest.raises(ConnectionError):
            pack_input(open_input(root), tmp_path / "staging", options, output=output)
    sent = objects(moto_server, bucket, "ds")
    assert "ds.manifest.json" not in sent and "tree.manifest.json" not in sent and len(sent) == 2  # shard 0's files
    resumed = pack_input(open_input(root), tmp_path / "staging", options, output=output)
    assert resumed.shards_resumed == 1  # shard 0, sent; shard 1 (its sending failed, so never recorded) packed again
    pack_input(open_input(root), tmp_path / "local", options)
    assert objects(moto_server, bucket, "ds") == files_of(tmp_path / "local")


def test_the_cli_packs_to_a_prefix(tmp_path: Path, moto_server: str, bucket: str, cli_main: Any) -> None:
    root = tree(tmp_path / "tree")
    done = cli_main("pack", str(root), f"s3://{bucket}/cli", "--endpoint-url", moto_server, "--staging",
                    str(tmp_path / "staging"), "--resize", "40", "--json", "-q")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["published_to"] == f"s3://{bucket}/cli"
    assert "tree.manifest.json" in objects(moto_server, bucket, "cli")
    wrong = cli_main("pack", str(root), str(tmp_path / "here"), "--staging", str(tmp_path / "s"))
    assert wrong.returncode == 2 and "--staging is for an s3:// OUTDIR" in wrong.stderr


def test_shards_written_but_not_sent_when_a_run_stopped_are_sent_by_the_rerun(
        tmp_path: Path, moto_server: str, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tree(tmp_path / "tree")
    output = S3Output(bucket, "ds", endpoint_url=moto_server)

    def no_network(self, out_dir, files):  # type: ignore[no-untyped-def]
        raise ConnectionError("the network went away")

    with monkeypatch.context() as patch:  # this process only: it writes shards 1 and 2 from their chunks
        patch.setattr(S3Output, "publish", no_network)
        with pytest.raises(ConnectionError):
            pack_input(open_input(root), tmp_path / "staging", OPTIONS, output=output)
    assert "tree.manifest.json" not in objects(moto_server, bucket, "ds")  # stopped at the first failed upload
    journal = json.loads((tmp_path / "staging" / "tree.pack-state.json").read_text())
    written = {shard["index"] for shard in journal["shards"]}
    assert written & {1, 2}  # a shard written here, recorded, not sent
    resumed = pack_input(open_input(root), tmp_path / "staging", OPTIONS, output=output)
    assert resumed.shards_resumed == len(written)  # those are sent by the rerun, not packed again
    pack_input(open_input(root), tmp_path / "local", OPTIONS)
    assert objects(moto_server, bucket, "ds") == files_of(tmp_path / "local")


def test_a_staging_folder_current_here_is_still_sent_and_a_lost_bucket_manifest_sent_again(
        tmp_path: Path, moto_server: str, bucket: str) -> None:
    root = tree(tmp_path / "tree")
    pack_input(open_input(root), tmp_path / "folder", OPTIONS)  # a local pack first ...
    output = S3Output(bucket, "ds", endpoint_url=moto_server)
    sent = pack_input(open_input(root), tmp_path / "folder", OPTIONS, output=output)  # ... then staged from it
    assert not sent.up_to_date and sent.shards_resumed == 3  # nothing packed again, everything sent
    pack_input(open_input(root), tmp_path / "local", OPTIONS)
    assert objects(moto_server, bucket, "ds") == files_of(tmp_path / "local")
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    s3.delete_object(Bucket=bucket, Key="ds/tree.manifest.json")  # e.g. an update started elsewhere, then stopped
    again = pack_input(open_input(root), tmp_path / "folder", OPTIONS, output=output)
    assert not again.up_to_date and again.shards_resumed == 3
    assert objects(moto_server, bucket, "ds") == files_of(tmp_path / "local")


def test_objects_no_run_recorded_are_not_replaced_and_a_staging_folder_serves_one_output(
        tmp_path: Path, moto_server: str, bucket: str) -> None:
    root = tree(tmp_path / "tree")
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    s3.put_object(Bucket=bucket, Key="theirs/tree-00001-of-00003.rec", Body=b"someone else's")
    with pytest.raises(RefusedError, match="tree-00001-of-00003.rec"):
        pack_input(open_input(root), tmp_path / "s1", OPTIONS, output=S3Output(bucket, "theirs", endpoint_url=moto_server))
    assert s3.get_object(Bucket=bucket, Key="theirs/tree-00001-of-00003.rec")["Body"].read() == b"someone else's"
    pack_input(open_input(root), tmp_path / "s2", OPTIONS, output=S3Output(bucket, "a", endpoint_url=moto_server))
    with pytest.raises(RefusedError, match="choose another --staging"):
        pack_input(open_input(root), tmp_path / "s2", OPTIONS, output=S3Output(bucket, "b", endpoint_url=moto_server))


def test_uploads_a_killed_run_left_open_are_aborted_by_the_rerun(tmp_path: Path, moto_server: str, bucket: str) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    left = s3.create_multipart_upload(Bucket=bucket, Key="ds/tree-00002-of-00003.rec")
    s3.upload_part(Bucket=bucket, Key="ds/tree-00002-of-00003.rec", UploadId=left["UploadId"], PartNumber=1,
                   Body=b"x" * (5 << 20))
    other = s3.create_multipart_upload(Bucket=bucket, Key="ds/someone-else.bin")  # not this dataset's: kept
    pack_input(open_input(tree(tmp_path / "tree")), tmp_path / "staging", OPTIONS,
               output=S3Output(bucket, "ds", endpoint_url=moto_server))
    still_open = [(upload["Key"], upload["UploadId"]) for upload in
                  s3.list_multipart_uploads(Bucket=bucket, Prefix="ds/").get("Uploads", [])]
    assert still_open == [("ds/someone-else.bin", other["UploadId"])]


def test_a_file_the_new_version_no_longer_has_leaves_the_bucket(tmp_path: Path, moto_server: str, bucket: str) -> None:
    root = tree(tmp_path / "tree")
    (root / "n00000000" / "notes.txt").write_text("not an image")
    output = S3Output(bucket, "ds", endpoint_url=moto_server)
    pack_input(open_input(root), tmp_path / "staging", OPTIONS, output=output)
    assert "tree.skipped.tsv" in objects(moto_server, bucket, "ds")
    (root / "n00000000" / "notes.txt").unlink()
    pack_input(open_input(root), tmp_path / "staging", OPTIONS, output=output)
    pack_input(open_input(root), tmp_path / "local", OPTIONS)
    sent, local = objects(moto_server, bucket, "ds"), files_of(tmp_path / "local")
    manifests = [json.loads(files.pop("tree.manifest.json")) for files in (sent, local)]
    assert sent == local and "tree.skipped.tsv" not in sent  # the shards and lists, nothing older
    assert manifests[0]["update"] is not None and manifests[1]["update"] is None  # an update, and says so
    manifests[0].pop("update"), manifests[1].pop("update")
    assert manifests[0] == manifests[1]
