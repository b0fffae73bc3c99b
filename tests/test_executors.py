"""Executors: the local pool and a real Ray cluster on 127.0.0.1 run the same tasks to the same results; a
failing task and a dying worker are reported as the pool reports them; Ray retries a worker that died."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from recordio_pack.executors import LocalPool, RayExecutor, RayUnavailable
from recordio_pack.inputs import open_input
from recordio_pack.options import PackOptions
from recordio_pack.pack import pack_input
from recordio_pack.pool import TaskFailed, WorkerDied
from recordio_pack.sources import Entry, FolderSource

if os.environ.get("RECORDIO_PACK_REQUIRE_ORACLE"):
    import ray  # make test installs the [ray] extra: without it this module fails, never skips
else:
    ray = pytest.importorskip("ray")


class Refused(Exception):
    pass


def square(task: int, emit: Any, should_stop: Any) -> tuple[int, int]:
    if task < 0:
        raise Refused(f"task {task} refused")
    return task, task * task


def dies_once(task: str, emit: Any, should_stop: Any) -> str:
    """Kills its own process the first time it runs for ``task`` (a path whose existence marks the attempt)."""
    marker = Path(task)
    if not marker.exists():
        marker.write_text("attempted")
        os._exit(9)
    return marker.read_text()


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    from ray import cloudpickle

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the test module is not importable in workers
    # Ray's workers get the offline AWS settings every test has (this module-wide cluster starts before the
    # per-test fixture sets them): fake credentials, no profile, no metadata service
    offline = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
               "AWS_CONFIG_FILE": "/nonexistent/aws-config", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials"}
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1",
             object_store_memory=100 << 20, runtime_env={"env_vars": offline})
    try:
        yield
    finally:
        ray.shutdown()


def results_of(executor: Any, tasks: list[Any], function: Any = square) -> list[Any]:
    results: list[Any] = []
    executor.run(function, tasks, lambda event: None, results.append)
    return results


def test_ray_and_the_local_pool_give_the_same_results(cluster: None) -> None:
    tasks = list(range(9))
    on_ray = results_of(RayExecutor(address="auto"), tasks)
    assert sorted(on_ray) == sorted(results_of(LocalPool(2), tasks)) == [(task, task * task) for task in tasks]
    assert len(on_ray) == len(tasks)  # each result handed over once


def test_a_task_that_raises_fails_the_run_with_its_own_error(cluster: None) -> None:
    with pytest.raises(TaskFailed) as failed:
        results_of(RayExecutor(), [1, -2, 3])
    assert isinstance(failed.value.error, Refused) and "task -2 refused" in failed.value.detail
    assert failed.value.task_name == "-2"


def test_a_worker_that_dies_is_retried_and_the_result_is_the_same(cluster: None, tmp_path: Path) -> None:
    tasks = [str(tmp_path / f"attempt-{number}") for number in range(2)]
    assert results_of(RayExecutor(max_retries=2), tasks, dies_once) == ["attempted", "attempted"]


def test_a_worker_that_dies_with_no_retries_left_is_worker_died(cluster: None, tmp_path: Path) -> None:
    with pytest.raises(WorkerDied, match="its Ray worker died 1 time"):
        results_of(RayExecutor(max_retries=0), [str(tmp_path / "once")], dies_once)


def test_no_ray_is_a_usage_error_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(RayUnavailable, match=r"recordio-pack\[ray\]"):
        results_of(RayExecutor(), [1])


def photo_tree(root: Path, classes: int = 2, per_class: int = 12) -> Path:
    from imagegen import class_tree

    return class_tree(root, classes, per_class, 60, 48, seed_stride=50)


def dataset_files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


@dataclass(frozen=True)
class DiesOnceSource(FolderSource):
    """Reading ``victim`` kills the reading process the first time (``marker`` records the attempt)."""

    victim: str = ""
    marker: str = ""

    def read(self, entry: Entry) -> bytes:
        if entry.path == self.victim and not os.path.exists(self.marker):
            Path(self.marker).write_text("killed")
            os._exit(9)
        return super().read(entry)


def test_a_pack_on_ray_is_byte_identical_to_a_local_one(cluster: None, tmp_path: Path) -> None:
    root = photo_tree(tmp_path / "tree")
    options = PackOptions(resize=40, num_shards=3, workers=2)
    on_ray = pack_input(open_input(root), tmp_path / "ray", options, executor=RayExecutor())
    local = pack_input(open_input(root), tmp_path / "local", options)
    assert on_ray.records == local.records == 24 and on_ray.shards == 3
    assert dataset_files(tmp_path / "ray") == dataset_files(tmp_path / "local")


def test_a_ray_worker_killed_inside_a_shard_is_retried_to_the_same_bytes(cluster: None, tmp_path: Path) -> None:
    root = photo_tree(tmp_path / "tree")
    pack_in = open_input(root)
    victim = pack_in.entries[5].path
    killing = dataclasses.replace(pack_in, source=DiesOnceSource(str(root), victim, str(tmp_path / "killed")))
    options = PackOptions(resize=40, num_shards=2, workers=2)
    result = pack_input(killing, tmp_path / "ray", options, executor=RayExecutor(max_retries=2))
    assert (tmp_path / "killed").exists() and result.records == 24
    pack_input(open_input(root), tmp_path / "local", options)
    assert dataset_files(tmp_path / "ray") == dataset_files(tmp_path / "local")
    assert not list((tmp_path / "ray").glob("*.tmp"))


def test_the_cli_packs_on_ray_with_engine_ray(cluster: None, tmp_path: Path, cli_main: Any) -> None:
    root = photo_tree(tmp_path / "tree", per_class=4)
    done = cli_main("pack", str(root), str(tmp_path / "out"), "--engine", "ray", "--resize", "40", "--json", "-q")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["records"] == 8 and (tmp_path / "out" / "tree.manifest.json").exists()


def test_s3_to_s3_on_ray_gives_the_objects_a_local_pack_gives_as_files(cluster: None, tmp_path: Path,
                                                                       moto_server: str) -> None:
    import uuid

    import boto3

    from recordio_pack.aws.s3_output import S3Output
    from recordio_pack.aws.session import AwsTarget

    root = photo_tree(tmp_path / "tree")
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    bucket = f"ray-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    for path in sorted(root.rglob("*.JPEG")):
        s3.put_object(Bucket=bucket, Key=f"in/tree/{path.relative_to(root).as_posix()}", Body=path.read_bytes())
    options = PackOptions(resize=40, num_shards=3, workers=2)
    pack_in = open_input(f"s3://{bucket}/in/tree", aws=AwsTarget(endpoint_url=moto_server))
    result = pack_input(pack_in, tmp_path / "staging", options, executor=RayExecutor(),
                        output=S3Output(bucket, "out", endpoint_url=moto_server))
    assert result.records == 24 and result.published_to == f"s3://{bucket}/out"
    pack_input(open_input(root), tmp_path / "local", options)
    sent = {}
    for item in s3.list_objects_v2(Bucket=bucket, Prefix="out/")["Contents"]:
        sent[item["Key"][len("out/"):]] = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    local = dataset_files(tmp_path / "local")
    shard_files = [name for name in local if name.startswith("tree-")]
    assert len(shard_files) == 6 and all(sent[name] == local[name] for name in shard_files)
    assert sorted(sent) == sorted(local)  # the shards, index, lists and manifest, nothing else
