"""``pack s3://bucket/prefix``: an S3 prefix of class folders listed and read like a local tree, against a moto
server on 127.0.0.1."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from imagegen import jpeg
from recordio_pack.aws.s3_input import S3Source, list_s3_tree
from recordio_pack.aws.session import AwsTarget
from recordio_pack.inputs import open_input
from recordio_pack.listing import write_lst
from recordio_pack.options import PackOptions
from recordio_pack.pack import pack_input
from recordio_pack.sources import Entry


def client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def awkward_files() -> dict[str, bytes]:
    files = {f"n0000000{label}/{number}.JPEG": jpeg(70 + number, 50, seed=label * 10 + number)
             for label in (1, 2, 3) for number in range(4)}
    files.update({
        "n00000002/deeper/inner.jpg": jpeg(64, 64, seed=99),  # nested inside a class: still that class
        "n00000002/notes.txt": b"not an image",  # other extension: skipped
        "stray.JPEG": jpeg(40, 40, seed=98),  # beside the classes: a reject
        "README": b"hello",  # beside the classes, no image extension: skipped
        "n00000003/tab\tname.JPEG": jpeg(40, 40, seed=97),  # a name a .lst line cannot hold: a reject
        "n00000001/empty.JPEG": b"",  # the worker rejects it, as for a file
        "n00000001/a-b.JPEG": jpeg(44, 44, seed=96),  # sorts before "a/..." by bytes, after it by path parts
        "n00000001/a/c.JPEG": jpeg(46, 46, seed=95),
    })
    return files


@pytest.fixture()
def s3_tree(moto_server: str, tmp_path: Path) -> tuple[str, Path, AwsTarget]:
    """The same files in a bucket under ``train/`` (with a console-style folder marker) and in a local folder."""
    bucket = f"in-{uuid.uuid4().hex[:12]}"
    s3 = client(moto_server)
    s3.create_bucket(Bucket=bucket)
    local = tmp_path / "train"
    for relative, data in awkward_files().items():
        s3.put_object(Bucket=bucket, Key=f"train/{relative}", Body=data)
        (local / relative).parent.mkdir(parents=True, exist_ok=True)
        (local / relative).write_bytes(data)
    s3.put_object(Bucket=bucket, Key="train/n00000002/", Body=b"")  # a "folder": not a file
    s3.put_object(Bucket=bucket, Key="train-old/n00000001/x.JPEG", Body=b"other prefix, never listed")
    return f"s3://{bucket}/train", local, AwsTarget(endpoint_url=moto_server)


def test_a_prefix_lists_as_its_local_copy_does(s3_tree: tuple[str, Path, AwsTarget]) -> None:
    uri, local, target = s3_tree
    remote, here = open_input(uri, aws=target), open_input(local)
    assert remote.classes == here.classes == ["n00000001", "n00000002", "n00000003"]
    assert [(entry.index, entry.labels, entry.path) for entry in remote.entries] == \
        [(entry.index, entry.labels, entry.path) for entry in here.entries]
    assert sorted(remote.rejects) == sorted(here.rejects) and len(remote.rejects) == 2
    assert sorted(remote.skipped) == sorted(here.skipped) and len(remote.skipped) == 2
    assert remote.name == "train" and remote.origin.startswith("s3:s3://")
    assert all(entry.size >= 0 and entry.mtime_ns > 0 for entry in remote.entries)  # planning needs no HEAD


def test_packing_a_prefix_gives_the_shards_a_local_pack_gives(s3_tree: tuple[str, Path, AwsTarget],
                                                              tmp_path: Path) -> None:
    uri, local, target = s3_tree
    options = PackOptions(resize=48, num_shards=2, workers=2)
    from_s3 = pack_input(open_input(uri, aws=target), tmp_path / "from-s3", options)
    from_disk = pack_input(open_input(local), tmp_path / "from-disk", options)
    assert from_s3.records == from_disk.records == 15 and from_s3.rejects == from_disk.rejects == 3
    assert from_s3.files_accounted == len(awkward_files())
    for name in ("train-00000-of-00002.rec", "train-00001-of-00002.rec", "train-00000-of-00002.idx",
                 "train.rejects.tsv", "train.skipped.tsv", "train.lst", "train.synsets.txt"):
        assert (tmp_path / "from-s3" / name).read_bytes() == (tmp_path / "from-disk" / name).read_bytes(), name
    again = pack_input(open_input(uri, aws=target), tmp_path / "from-s3", options)
    assert again.up_to_date


def test_an_object_gone_after_the_listing_is_a_reject_with_its_reason(s3_tree: tuple[str, Path, AwsTarget],
                                                                      tmp_path: Path, moto_server: str) -> None:
    uri, _, target = s3_tree
    found = open_input(uri, aws=target)
    bucket = uri[len("s3://"):].split("/")[0]
    client(moto_server).delete_object(Bucket=bucket, Key="train/n00000003/2.JPEG")
    result = pack_input(found, tmp_path / "out", PackOptions(resize=48, workers=1))
    reasons = dict(line.split("\t", 1) for line in (tmp_path / "out" / "train.rejects.tsv").read_text().splitlines()[1:])
    assert "no such object" in reasons["n00000003/2.JPEG"]
    assert result.records == 14


def test_a_list_with_an_s3_root_reads_its_paths_from_the_bucket(s3_tree: tuple[str, Path, AwsTarget],
                                                                tmp_path: Path) -> None:
    uri, local, target = s3_tree
    entries = [Entry(7, (1.0,), "n00000002/0.JPEG"), Entry(8, (2.0,), "n00000003/1.JPEG")]
    write_lst(tmp_path / "two.lst", entries)
    result = pack_input(open_input(tmp_path / "two.lst", root=uri, aws=target), tmp_path / "out",
                        PackOptions(workers=1, reencode="never"))
    assert result.records == 2
    from recordio_pack.format import unpack_payload
    from recordio_pack.recordio import iter_records, mapped

    with mapped(tmp_path / "out" / "two.rec") as data:
        stored = [bytes(unpack_payload(payload)[1]) for _, payload in iter_records(data)]
    assert stored == [(local / entry.path).read_bytes() for entry in entries]


def test_reads_come_back_in_order_with_their_errors(s3_tree: tuple[str, Path, AwsTarget]) -> None:
    uri, local, target = s3_tree
    source = open_input(uri, aws=target).source
    assert isinstance(source, S3Source)
    wanted = [Entry(0, (0.0,), "n00000001/0.JPEG"), Entry(1, (0.0,), "n00000001/missing.JPEG"),
              Entry(2, (0.0,), "n00000002/deeper/inner.jpg")]
    results = list(source.read_all(wanted, ahead=2))
    assert [entry for entry, _ in results] == wanted
    assert results[0][1] == (local / wanted[0].path).read_bytes()
    assert isinstance(results[1][1], FileNotFoundError) and "no such object" in str(results[1][1])
    assert results[2][1] == (local / wanted[2].path).read_bytes()
    assert source.stat(Entry(3, (0.0,), "n00000001/1.JPEG")).size == len((local / "n00000001/1.JPEG").read_bytes())


def test_an_empty_prefix_and_a_bad_uri_are_one_line_usage_errors(moto_server: str, cli_main: Any) -> None:
    from recordio_pack.errors import UsageError

    bucket = f"empty-{uuid.uuid4().hex[:12]}"
    client(moto_server).create_bucket(Bucket=bucket)
    target = AwsTarget(endpoint_url=moto_server)
    with pytest.raises(UsageError, match="no objects under this prefix"):
        list_s3_tree(S3Source(bucket, "nothing/", endpoint_url=moto_server))
    with pytest.raises(UsageError, match="not a valid bucket name"):
        open_input("s3://Bad_Bucket/x", aws=target)


def test_the_cli_packs_a_prefix_with_endpoint_url(s3_tree: tuple[str, Path, AwsTarget], tmp_path: Path,
                                                  moto_server: str, cli_main: Any) -> None:
    uri, _, _ = s3_tree
    done = cli_main("pack", uri, str(tmp_path / "out"), "--endpoint-url", moto_server, "--resize", "48", "--json", "-q")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["records"] == 15 and result["files_accounted"] == len(awkward_files())
    missing = cli_main("pack", uri.replace("/train", "/nothing"), str(tmp_path / "none"), "--endpoint-url", moto_server)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "no objects under this prefix" in missing.stderr


def test_the_shipped_policy_allows_every_call_a_pack_from_s3_makes(s3_tree: tuple[str, Path, AwsTarget],
                                                                   tmp_path: Path) -> None:
    from importlib import resources

    uri, _, target = s3_tree
    found = open_input(uri, aws=target)
    operations: set[str] = set()
    found.source.client().meta.events.register(  # type: ignore[attr-defined]
        "provide-client-params.s3", lambda model, **kwargs: operations.add(model.name))
    listed = open_input(uri, aws=target)  # the listing, through the same (per-process) client
    listed.source.stat(Entry(0, (0.0,), "n00000001/0.JPEG", -1, -1, -1))  # a .lst input's HEAD
    pack_input(listed, tmp_path / "out", PackOptions(resize=48, workers=1))
    assert {"ListObjectsV2", "GetObject", "HeadObject"} <= operations
    policy = json.loads((resources.files("recordio_pack.aws.policies") / "pack-from-s3.json").read_text())
    allowed = {action for statement in policy["Statement"] for action in
               ([statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"])}
    needed = {"ListObjectsV2": "s3:ListBucket", "GetObject": "s3:GetObject", "HeadObject": "s3:GetObject"}
    assert {needed[operation] for operation in operations} == allowed


@pytest.mark.parametrize("failure", ["AccessDenied", "timeout"])
def test_a_read_that_fails_for_another_reason_than_a_missing_object_stops_the_run(
        s3_tree: tuple[str, Path, AwsTarget], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str) -> None:
    from botocore.exceptions import ClientError, ReadTimeoutError

    from recordio_pack.aws.session import AwsError

    uri, _, target = s3_tree
    found = open_input(uri, aws=target)
    client = found.source.client()  # type: ignore[attr-defined]
    real_get = client.get_object
    victim = found.entries[3].path

    def get_object(**kwargs: Any) -> Any:
        if kwargs["Key"].endswith(victim):
            if failure == "timeout":
                raise ReadTimeoutError(endpoint_url="http://127.0.0.1")
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no kms:Decrypt"}}, "GetObject")
        return real_get(**kwargs)

    monkeypatch.setattr(client, "get_object", get_object)
    with pytest.raises(AwsError):
        pack_input(found, tmp_path / "out", PackOptions(resize=48, workers=1))
    assert not (tmp_path / "out" / "train.manifest.json").exists()
