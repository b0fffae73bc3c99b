"""Several machines pack one dataset: ``pack --num-nodes N --node-rank K`` each, at the same time, into one
folder, then ``commit``; the result is the dataset one machine packs. Commit refuses what does not add up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from imagegen import class_tree, jpeg

CLI = [sys.executable, "-m", "recordio_pack"]
PACK = ["--resize", "40", "--num-shards", "5", "--workers", "1", "-q"]


def tree(root: Path) -> Path:
    class_tree(root, 3, 6, 50, 40, seed_stride=10)
    (root / "n00000001" / "broken.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    (root / "n00000002" / "notes.txt").write_text("skipped")
    return root


def files_of(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


def node_run(root: Path, out: Path, rank: int, count: int = 2, *extra: str,
             env: dict[str, str] | None = None) -> subprocess.Popen:
    arguments = [*CLI, "pack", str(root), str(out), *PACK, *extra]
    if rank >= 0:
        arguments += ["--num-nodes", str(count), "--node-rank", str(rank)]
    return subprocess.Popen(arguments, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def finished(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


def test_two_nodes_at_once_then_commit_equal_one_machine(tmp_path: Path, cli_main: Any) -> None:
    root = tree(tmp_path / "tree")
    nodes = [node_run(root, tmp_path / "shared", rank) for rank in (0, 1)]  # both at the same time
    for process in nodes:
        code, _, err = finished(process)
        assert code == 0, err
    partials = sorted(path.name for path in (tmp_path / "shared").glob("*.partial.json"))
    assert partials == ["tree.node-00000-of-00002.partial.json", "tree.node-00001-of-00002.partial.json"]
    assert not (tmp_path / "shared" / "tree.manifest.json").exists()
    done = cli_main("commit", str(tmp_path / "shared"), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["records"] == 18 and json.loads(done.stdout)["rejects"] == 1
    assert finished(node_run(root, tmp_path / "single", -1))[0] == 0
    assert files_of(tmp_path / "shared") == files_of(tmp_path / "single")  # manifest included, partials gone
    assert cli_main("verify", str(tmp_path / "shared"), "-q").returncode == 0


def test_commit_refuses_a_node_that_has_not_finished_then_takes_it(tmp_path: Path, cli_main: Any) -> None:
    root = tree(tmp_path / "tree")
    assert finished(node_run(root, tmp_path / "out", 1, 3))[0] == 0
    refused = cli_main("commit", str(tmp_path / "out"))
    assert refused.returncode == 3 and refused.stderr.count("\n") == 1
    assert "node(s) 0, 2 of 3 have not finished" in refused.stderr
    for rank in (0, 2):
        assert finished(node_run(root, tmp_path / "out", rank, 3))[0] == 0
    assert cli_main("commit", str(tmp_path / "out"), "-q").returncode == 0
    assert (tmp_path / "out" / "tree.manifest.json").exists()


def test_commit_refuses_a_missing_shard_file_naming_it(tmp_path: Path, cli_main: Any) -> None:
    root = tree(tmp_path / "tree")
    for rank in (0, 1):
        assert finished(node_run(root, tmp_path / "out", rank))[0] == 0
    (tmp_path / "out" / "tree-00003-of-00005.rec").unlink()
    refused = cli_main("commit", str(tmp_path / "out"))
    assert refused.returncode == 3 and "tree-00003-of-00005.rec is missing" in refused.stderr
    code, out, err = finished(node_run(root, tmp_path / "out", 1))  # node 1 owns shard 3: packs it again
    assert code == 0, err
    assert cli_main("commit", str(tmp_path / "out"), "-q").returncode == 0


def test_nodes_that_packed_with_other_options_do_not_commit(tmp_path: Path, cli_main: Any) -> None:
    root = tree(tmp_path / "tree")
    assert finished(node_run(root, tmp_path / "out", 0))[0] == 0
    assert finished(node_run(root, tmp_path / "out", 1, 2, "--quality", "80"))[0] == 0
    refused = cli_main("commit", str(tmp_path / "out"))
    assert refused.returncode == 3 and "disagree on options_fingerprint" in refused.stderr


def test_aws_batch_array_variables_name_the_node_and_a_rerun_keeps_its_shards(tmp_path: Path, cli_main: Any) -> None:
    root = tree(tmp_path / "tree")
    batch = {"AWS_BATCH_JOB_ARRAY_SIZE": "2"}
    for rank in ("0", "1"):
        code, _, err = finished(node_run(root, tmp_path / "out", -1, env={**batch, "AWS_BATCH_JOB_ARRAY_INDEX": rank}))
        assert code == 0, err
    again = finished(node_run(root, tmp_path / "out", -1, 2, "--json",
                              env={**batch, "AWS_BATCH_JOB_ARRAY_INDEX": "1"}))
    assert again[0] == 0 and json.loads(again[1])["shards_resumed"] == 2  # shards 1 and 3: kept, not repacked
    assert cli_main("commit", str(tmp_path / "out"), "-q").returncode == 0
    # Batch sets the index in every array child: without the size (or --num-nodes) a pack is a whole pack
    plain = finished(node_run(root, tmp_path / "other", -1, 2, "--json", env={"AWS_BATCH_JOB_ARRAY_INDEX": "1"}))
    assert plain[0] == 0 and json.loads(plain[1])["records"] == 18 and (tmp_path / "other" / "tree.manifest.json").exists()


@pytest.mark.parametrize("arguments, message", [
    (["--num-nodes", "2", "--node-rank", "2"], "--node-rank must be 0..1"),
    (["--num-nodes", "2"], "needs --node-rank 0..1"),
    (["--node-rank", "1"], "--node-rank needs --num-nodes"),
])
def test_a_node_rank_out_of_range_is_a_usage_error(tmp_path: Path, cli_main: Any, arguments: list[str],
                                                   message: str) -> None:
    root = tree(tmp_path / "tree")
    done = cli_main("pack", str(root), str(tmp_path / "out"), *arguments)
    assert done.returncode == 2 and message in done.stderr


def test_commit_of_a_folder_without_partials_is_one_line(tmp_path: Path, cli_main: Any) -> None:
    done = cli_main("commit", str(tmp_path))
    assert done.returncode == 2 and "no partial manifest" in done.stderr and done.stderr.count("\n") == 1


def test_the_shipped_batch_job_definitions_run_our_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """aws/batch/*.json: with their parameters filled in, each command parses as recordio-pack's CLI, and an array
    child (AWS_BATCH_JOB_ARRAY_INDEX set by Batch) is node INDEX of numNodes."""
    from importlib import resources

    from recordio_pack.cli import build_parser
    from recordio_pack.commands.pack import _node_share

    folder = resources.files("recordio_pack.aws.batch")
    node_job = json.loads((folder / "pack-array-job.json").read_text())
    commit_job = json.loads((folder / "commit-job.json").read_text())
    for job in (node_job, commit_job):
        command = [job["parameters"].get(part[len("Ref::"):], part) if part.startswith("Ref::") else part
                   for part in job["containerProperties"]["command"]]
        assert command[0] == "recordio-pack" and all(not part.startswith("Ref::") for part in command)
        args = build_parser().parse_args(command[1:])
        if command[1] == "pack":
            monkeypatch.setenv("AWS_BATCH_JOB_ARRAY_INDEX", "5")
            share = _node_share(args)
            assert share is not None and (share.rank, share.count) == (5, int(node_job["parameters"]["numNodes"]))
        else:
            assert command[1] == "commit" and args.outdir == node_job["parameters"]["outdir"]


def test_commit_refuses_while_a_node_packs_again_and_takes_it_once_it_finished(
        tmp_path: Path, cli_main: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from recordio_pack.inputs import open_input
    from recordio_pack.options import PackOptions
    from recordio_pack.pack import NodeShare, pack_input

    root = tree(tmp_path / "tree")
    for rank in (0, 1):
        assert finished(node_run(root, tmp_path / "out", rank))[0] == 0
    (root / "n00000000" / "0.JPEG").write_bytes(jpeg(50, 40, seed=999))  # one shard changes

    class Killed(Exception):
        pass

    def killed(*args: Any, **kwargs: Any) -> None:
        raise Killed()

    options = PackOptions(resize=40, num_shards=5, workers=1)
    with monkeypatch.context() as patch:
        patch.setattr("recordio_pack.pack._run", killed)  # node 0 started again and was killed mid-way
        with pytest.raises(Killed):
            pack_input(open_input(root), tmp_path / "out", options, node=NodeShare(0, 2))
    refused = cli_main("commit", str(tmp_path / "out"))
    assert refused.returncode == 3 and "node-00000-of-00002" in refused.stderr, refused.stderr
    assert finished(node_run(root, tmp_path / "out", 0))[0] == 0
    stale = cli_main("commit", str(tmp_path / "out"))  # node 1's partial is of the inputs before the change
    assert stale.returncode == 3 and "disagree on digests" in stale.stderr
    again = finished(node_run(root, tmp_path / "out", 1, 2, "--json"))
    assert again[0] == 0 and json.loads(again[1])["shards_resumed"] >= 1  # what had not changed is kept
    assert cli_main("commit", str(tmp_path / "out"), "-q").returncode == 0
    assert cli_main("verify", str(tmp_path / "out"), "-q").returncode == 0


def test_an_update_on_nodes_that_start_at_different_times_equals_one_machine(tmp_path: Path, cli_main: Any) -> None:
    root = tree(tmp_path / "tree")
    for rank in (0, 1):
        assert finished(node_run(root, tmp_path / "out", rank))[0] == 0
    assert cli_main("commit", str(tmp_path / "out"), "-q").returncode == 0
    for label in range(3):  # more images: every shard changes
        (root / f"n{label:08d}" / "extra.JPEG").write_bytes(jpeg(70, 50, seed=500 + label))
    for rank in (1, 0):  # node 1 starts the update (the manifest is set aside), node 0 comes later
        code, _, err = finished(node_run(root, tmp_path / "out", rank))
        assert code == 0, err
    assert cli_main("commit", str(tmp_path / "out"), "-q").returncode == 0
    assert finished(node_run(root, tmp_path / "single", -1))[0] == 0
    updated = files_of(tmp_path / "out")
    manifest = json.loads(updated.pop("tree.manifest.json"))
    single = files_of(tmp_path / "single")
    expected = json.loads(single.pop("tree.manifest.json"))
    assert updated == single  # no old shard, partial or set-aside manifest left
    manifest.pop("update"), expected.pop("update")
    assert manifest == expected
