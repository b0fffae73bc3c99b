"""Stale or mixed output is impossible: one writer per dataset, changed inputs repacked, damaged shards never
reused, names that stay inside OUTDIR, keys that stay unique, a full disk and signals handled in one line."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from imagegen import class_tree, jpeg
from recordio_pack import cli
from recordio_pack.errors import RefusedError
from recordio_pack.inputs import open_input
from recordio_pack.locking import dataset_lock
from recordio_pack.manifest import Manifest
from recordio_pack.options import PackOptions
from recordio_pack.pack import NotEnoughSpace, pack_input
from waiting import journal_shards

CLI = [sys.executable, "-m", "recordio_pack"]


def tree(root: Path, classes: int = 3, per_class: int = 8, side: int = 64) -> Path:
    return class_tree(root, classes, per_class, side, side)


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def outputs(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


def assert_same_dataset(first: Path, second: Path) -> None:
    """Every file byte-identical, the manifest's update note aside (it says how the dataset was reached)."""
    one, two = outputs(first), outputs(second)
    assert sorted(one) == sorted(two)
    for name in one:
        if name.endswith(".manifest.json"):
            left, right = json.loads(one[name]), json.loads(two[name])
            left.pop("update"), right.pop("update")
            assert left == right
        else:
            assert one[name] == two[name], name


PACK = ["--resize", "48", "--num-shards", "4", "--workers", "2", "-q"]


def test_a_second_pack_of_the_same_dataset_is_refused_naming_the_holder(tmp_path: Path) -> None:
    root = tree(tmp_path / "tree")
    (tmp_path / "out").mkdir()
    with dataset_lock(tmp_path / "out", "tree"):
        refused = run_cli("pack", str(root), str(tmp_path / "out"), *PACK)
    assert refused.returncode == 3, refused.stderr
    assert f"pid {os.getpid()}" in refused.stderr and refused.stderr.count("\n") == 1
    assert not (tmp_path / "out" / "tree.manifest.json").exists()
    assert run_cli("pack", str(root), str(tmp_path / "out"), *PACK).returncode == 0
    assert not (tmp_path / "out" / "tree.lock").exists()


@pytest.mark.slow
def test_two_packs_at_once_with_other_options_never_mix(tmp_path: Path) -> None:
    root = tree(tmp_path / "tree", per_class=30)
    out = tmp_path / "out"
    commands = [[*CLI, "pack", str(root), str(out), "--resize", size, "--num-shards", "4", "--workers", "1", "-q"]
                for size in ("56", "40")]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for command in commands]
    finished = [process.communicate(timeout=120) + (process.returncode,) for process in processes]
    codes = sorted(code for _, _, code in finished)
    assert codes == [0, 3], finished  # one packs; the other is refused: by the lock, or for its other options
    assert all("Traceback" not in err for _, err, _ in finished)
    verified = run_cli("verify", str(out), "--decode")
    assert verified.returncode == 0, verified.stdout
    manifest = Manifest.load(out / "tree.manifest.json")
    winner = [command for command, (_, _, code) in zip(commands, finished) if code == 0][0]
    assert manifest.options["resize"] == int(winner[winner.index("--resize") + 1])


def test_a_changed_input_repacks_only_its_shard(tmp_path: Path) -> None:
    root = tree(tmp_path / "tree")
    assert run_cli("pack", str(root), str(tmp_path / "out"), *PACK).returncode == 0
    before = outputs(tmp_path / "out")
    changed = root / "n00000001" / "3.JPEG"
    changed.write_bytes(jpeg(67, 64, seed=999))  # same path, other bytes (same size or not)
    rerun = run_cli("pack", str(root), str(tmp_path / "out"), *PACK, "--json")
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["shards_repacked_changed"] == 1 and summary["shards_resumed"] == 3
    after = outputs(tmp_path / "out")
    assert sum(before[name] != after[name] for name in before if name.endswith(".rec")) == 1
    manifest = Manifest.load(tmp_path / "out" / "tree.manifest.json")
    assert manifest.update is not None and len(manifest.update["shards_repacked"]) == 1
    assert manifest.update["replaced"] == json.loads(before["tree.manifest.json"])["fingerprint"]

    assert run_cli("pack", str(root), str(tmp_path / "fresh"), *PACK).returncode == 0
    assert_same_dataset(tmp_path / "out", tmp_path / "fresh")


def _same_size_same_mtime_edit(image: Path) -> None:
    stat = image.stat()
    data = bytearray(image.read_bytes())
    data[-10] ^= 0x55  # inside the scan: a different picture, same size
    image.write_bytes(bytes(data))
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_content_mode_sees_a_change_that_keeps_size_and_mtime(tmp_path: Path) -> None:
    root = tree(tmp_path / "tree")
    content = [*PACK, "--detect-changes", "content", "--json"]
    assert run_cli("pack", str(root), str(tmp_path / "by-content"), *content).returncode == 0
    assert run_cli("pack", str(root), str(tmp_path / "by-stat"), *PACK).returncode == 0
    _same_size_same_mtime_edit(root / "n00000002" / "5.JPEG")
    by_stat = json.loads(run_cli("pack", str(root), str(tmp_path / "by-stat"), *PACK, "--json").stdout)
    assert by_stat["up_to_date"] is True  # the documented limit of the default: size and mtime only
    by_content = json.loads(run_cli("pack", str(root), str(tmp_path / "by-content"), *content).stdout)
    assert by_content["shards_repacked_changed"] == 1 and by_content["shards_resumed"] == 3


def test_a_finished_shard_with_a_flipped_byte_is_packed_again(tmp_path: Path) -> None:
    root = tree(tmp_path / "tree")
    assert run_cli("pack", str(root), str(tmp_path / "out"), *PACK).returncode == 0
    reference = outputs(tmp_path / "out")
    shard = tmp_path / "out" / "tree-00002-of-00004.rec"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size: only a checksum can tell
    shard.write_bytes(bytes(data))

    trusted = run_cli("pack", str(root), str(tmp_path / "out"), *PACK, "--trust-finished", "--json")
    assert json.loads(trusted.stdout)["up_to_date"] is True  # sizes only, as asked
    checked = run_cli("pack", str(root), str(tmp_path / "out"), *PACK, "--json")
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["shards_repacked_damaged"] == 1
    assert outputs(tmp_path / "out")["tree-00002-of-00004.rec"] == reference["tree-00002-of-00004.rec"]


def test_an_unchanged_rerun_is_up_to_date_and_says_so(tmp_path: Path) -> None:
    root = tree(tmp_path / "tree")
    assert run_cli("pack", str(root), str(tmp_path / "out"), *PACK).returncode == 0
    again = run_cli("pack", str(root), str(tmp_path / "out"), *PACK)
    assert again.returncode == 0 and "is up to date" in again.stdout and "0 re-encoded" not in again.stdout


def test_a_new_file_of_another_extension_updates_the_skipped_list(tmp_path: Path) -> None:
    root = tree(tmp_path / "tree")
    assert run_cli("pack", str(root), str(tmp_path / "out"), *PACK).returncode == 0
    (root / "n00000000" / "notes.txt").write_text("x")
    rerun = run_cli("pack", str(root), str(tmp_path / "out"), *PACK, "--json")
    summary = json.loads(rerun.stdout)
    assert summary["skipped"] == 1 and summary["shards_resumed"] == 4
    assert "notes.txt" in (tmp_path / "out" / "tree.skipped.tsv").read_text()


def test_other_options_are_refused_naming_what_differs(tmp_path: Path) -> None:
    root = tree(tmp_path / "tree")
    assert run_cli("pack", str(root), str(tmp_path / "out"), *PACK).returncode == 0
    refused = run_cli("pack", str(root), str(tmp_path / "out"), "--resize", "32", "--num-shards", "4", "-q")
    assert refused.returncode == 3 and "resize 48 -> 32" in refused.stderr


def test_another_input_into_the_same_dataset_is_refused(tmp_path: Path) -> None:
    assert run_cli("pack", str(tree(tmp_path / "a" / "data")), str(tmp_path / "out"), *PACK).returncode == 0
    other = tree(tmp_path / "b" / "data", per_class=5)
    refused = run_cli("pack", str(other), str(tmp_path / "out"), *PACK)
    assert refused.returncode == 3 and "packed from folder:" in refused.stderr and str(tmp_path / "a") in refused.stderr
    replaced = run_cli("pack", str(other), str(tmp_path / "out"), *PACK, "--overwrite", "--json")
    assert replaced.returncode == 0 and json.loads(replaced.stdout)["records"] == 15


def test_fewer_shards_after_an_update_leave_no_stale_shard_files(tmp_path: Path) -> None:
    root = tree(tmp_path / "tree")
    assert run_cli("pack", str(root), str(tmp_path / "out"), "--shard-size", "8KiB", "-q").returncode == 0
    before = sorted(path.name for path in (tmp_path / "out").glob("*.rec"))
    for path in list((root / "n00000002").iterdir())[:6]:
        path.unlink()
    assert run_cli("pack", str(root), str(tmp_path / "out"), "--shard-size", "8KiB", "-q").returncode == 0
    after = sorted(path.name for path in (tmp_path / "out").glob("*.rec"))
    manifest = Manifest.load(tmp_path / "out" / "tree.manifest.json")
    assert len(after) < len(before) and after == sorted(shard.rec.name for shard in manifest.shards)


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", "..", "."])
def test_names_that_would_leave_outdir_or_hide_are_usage_errors(tmp_path: Path, name: str) -> None:
    root = tree(tmp_path / "tree", classes=1, per_class=2)
    completed = run_cli("pack", str(root), str(tmp_path / "out"), "--name", name)
    assert completed.returncode == 2 and "Traceback" not in completed.stderr and "dataset name" in completed.stderr
    assert not (tmp_path / "escape.rec").exists() and not list(tmp_path.glob("*.manifest.json"))


def test_dot_and_dotdot_are_named_after_the_resolved_folder(tmp_path: Path) -> None:
    root = tree(tmp_path / "photos", classes=1, per_class=2)
    completed = subprocess.run([*CLI, "pack", ".", str(tmp_path / "out"), "-q"], cwd=root, capture_output=True,
                               text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert (tmp_path / "out" / "photos.manifest.json").exists() and not (tmp_path / "out" / ".rec").exists()
    nested = root / "n00000000"
    upward = subprocess.run([*CLI, "pack", "..", str(tmp_path / "out2"), "-q"], cwd=nested, capture_output=True,
                            text=True, timeout=60)
    assert upward.returncode == 0 and (tmp_path / "out2" / "photos.rec").exists()


def test_duplicate_lst_indexes_are_refused_with_key_lst_index(tmp_path: Path) -> None:
    root = tmp_path / "images"
    root.mkdir()
    for number in range(3):
        (root / f"{number}.jpg").write_bytes(jpeg(32, 32, seed=number))
    (tmp_path / "x.lst").write_text("0\t0\t0.jpg\n1\t0\t1.jpg\n1\t0\t2.jpg\n")
    refused = run_cli("pack", str(tmp_path / "x.lst"), str(tmp_path / "out"), "--root", str(root), "--key", "lst-index")
    assert refused.returncode == 3 and "index 1" in refused.stderr and "'2.jpg'" in refused.stderr
    assert not list((tmp_path / "out").glob("*.idx"))
    assert run_cli("pack", str(tmp_path / "x.lst"), str(tmp_path / "out"), "--root", str(root)).returncode == 0


def test_not_enough_space_is_refused_up_front_with_the_numbers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tree(tmp_path / "tree")
    import shutil

    real = shutil.disk_usage(tmp_path)
    monkeypatch.setattr("recordio_pack.pack.shutil.disk_usage", lambda path: real._replace(free=1 << 20))
    with pytest.raises(NotEnoughSpace, match=r"1\.0 MiB free, the shards still to pack need about 64\.[0-9] MiB"):
        pack_input(open_input(root), tmp_path / "out", PackOptions(workers=1))
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == []
    pack_input(open_input(root), tmp_path / "out", PackOptions(workers=1), space_check=False)


class _FullDisk:
    """Writes through ``DigestingWriter`` (every shard byte) fail with ENOSPC once ``budget`` bytes are spent."""

    def __init__(self, budget: int) -> None:
        self.budget = budget

    @contextlib.contextmanager
    def installed(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
        from recordio_pack import digest

        real_write = digest.DigestingWriter.write
        state = self

        def write(writer, data):  # type: ignore[no-untyped-def]
            state.budget -= len(data)
            if state.budget < 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_write(writer, data)

        with monkeypatch.context() as patch:
            patch.setattr(digest.DigestingWriter, "write", write)
            yield


def test_a_full_disk_while_writing_shards_is_one_line_and_resumable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    root = tree(tmp_path / "tree")
    arguments = ["pack", str(root), str(tmp_path / "out"), "--resize", "48", "--num-shards", "4", "--workers", "1", "-q"]
    with _FullDisk(budget=9000).installed(monkeypatch):
        code = cli.main(arguments)
    error = capsys.readouterr().err
    assert code == 1 and error.count("\n") == 1, error
    assert "no space left on device" in error and "shard(s) not yet packed need about" in error
    assert not list((tmp_path / "out").glob("*.tmp")) and not (tmp_path / "out" / "tree.manifest.json").exists()
    assert cli.main(arguments) == 0
    assert run_cli("pack", str(root), str(tmp_path / "ref"), *PACK).returncode == 0
    assert_same_dataset(tmp_path / "out", tmp_path / "ref")


def test_a_full_disk_while_writing_the_final_files_leaves_no_temporaries(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    root = tree(tmp_path / "tree")
    (root / "n00000000" / "bad.JPEG").write_bytes(b"junk")
    arguments = ["pack", str(root), str(tmp_path / "out"), "--num-shards", "2", "--workers", "1", "-q"]
    from recordio_pack import pack as pack_module

    real_write_listing = pack_module._write_listing

    def failing(path, rows, header):  # type: ignore[no-untyped-def]
        from recordio_pack.fsutil import atomic_output

        with atomic_output(path) as stream:
            stream.write(b"path\treason\n")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path) + ".tmp")

    monkeypatch.setattr(pack_module, "_write_listing", failing)
    assert cli.main(arguments) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "No space left on device" in error and "rejects.tsv" in error
    assert not list((tmp_path / "out").glob("*.tmp")) and not (tmp_path / "out" / "tree.manifest.json").exists()
    monkeypatch.setattr(pack_module, "_write_listing", real_write_listing)
    assert cli.main(arguments) == 0
    assert "bad.JPEG" in (tmp_path / "out" / "tree.rejects.tsv").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("how, point", [("SIGTERM", "start"), ("SIGTERM", "mid"), ("SIGTERM-group", "mid"),
                                        ("SIGINT-group", "mid"), ("SIGKILL", "mid"), ("SIGKILL", "start")])
def test_signals_at_several_points_then_a_rerun_gives_identical_bytes(tmp_path: Path, how: str, point: str) -> None:
    root = tree(tmp_path / "tree", classes=4, per_class=30, side=96)
    arguments = ["--resize", "80", "--reencode", "always", "--num-shards", "12", "--workers", "2", "-q"]
    assert run_cli("pack", str(root), str(tmp_path / "ref"), *arguments).returncode == 0
    out = tmp_path / "out"
    errors = tmp_path / "stderr.txt"
    with open(errors, "w") as stream:
        process = subprocess.Popen([*CLI, "pack", str(root), str(out), *arguments], stdout=subprocess.DEVNULL,
                                   stderr=stream, start_new_session=True)
    journal = out / "tree.pack-state.json"
    deadline = time.monotonic() + 120
    wanted = (lambda: journal.exists()) if point == "start" else (lambda: journal_shards(journal) >= 1)
    while not wanted() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    signal_name = how.split("-")[0]
    number = getattr(signal, signal_name)
    if how.endswith("group"):
        os.killpg(process.pid, number)  # what a terminal, systemd or `timeout` does
    else:
        os.kill(process.pid, number)
    code = process.wait(timeout=60)
    assert not (out / "tree.manifest.json").exists(), "the run finished before the signal"
    time.sleep(1.5)  # orphaned workers notice the parent is gone between images
    text = errors.read_text()
    assert "Traceback" not in text and "Error" not in text, text
    if signal_name == "SIGTERM":
        assert code == 143 and text.count("\n") == 1 and "terminated" in text
    elif signal_name == "SIGINT":
        assert code == 130 and text.count("\n") == 1 and "interrupted" in text
    else:
        assert code == -signal.SIGKILL and text == ""
    assert not list(out.glob("*.tmp")) or signal_name == "SIGKILL"
    rerun = run_cli("pack", str(root), str(out), *arguments)
    assert rerun.returncode == 0, rerun.stderr
    assert not list(out.glob("*.tmp")) and not (out / "tree.lock").exists()
    assert_same_dataset(out, tmp_path / "ref")


def test_library_refusal_for_a_held_lock_is_typed(tmp_path: Path) -> None:
    root = tree(tmp_path / "tree", classes=1, per_class=2)
    (tmp_path / "out").mkdir()
    with dataset_lock(tmp_path / "out", "tree"):
        with pytest.raises(RefusedError, match="is being written by pid"):
            pack_input(open_input(root), tmp_path / "out", PackOptions(workers=1))


# --- regressions found in review ----------------------------------------------------------------------------------

class _Killed(BaseException):
    """Stands for a kill at the moment the shards start being packed (after the journal, before any shard)."""


def _kill_when_packing_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    def killed(*args: object, **kwargs: object) -> None:
        raise _Killed()

    monkeypatch.setattr("recordio_pack.pack._run", killed)


def test_an_update_killed_after_the_shard_count_changed_leaves_no_old_shard(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    root = tree(tmp_path / "tree")
    options = PackOptions(shard_size=8 << 10, workers=1)
    pack_input(open_input(root), tmp_path / "out", options)
    old = {path.name for path in (tmp_path / "out").glob("*.rec")}
    tree(root, classes=5)  # more images: more shards, all of other names
    with monkeypatch.context() as patch:
        _kill_when_packing_starts(patch)
        with pytest.raises(_Killed):
            pack_input(open_input(root), tmp_path / "out", options)
    pack_input(open_input(root), tmp_path / "out", options)
    now = {path.name for path in (tmp_path / "out").glob("*.rec")}
    manifest = Manifest.load(tmp_path / "out" / "tree.manifest.json")
    assert now == {shard.rec.name for shard in manifest.shards} and not (old - now) & {p.name for p in (tmp_path / "out").iterdir()}
    assert len(list((tmp_path / "out").glob("tree-*.idx"))) == len(now)


def test_an_interrupted_overwrite_leaves_no_shard_of_the_old_version(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    root = tree(tmp_path / "tree")
    pack_input(open_input(root), tmp_path / "out", PackOptions(num_shards=8, workers=1))
    (tmp_path / "out" / "tree.manifest.json").write_text("{ damaged")  # the overwrite cannot read the old state
    with monkeypatch.context() as patch:
        _kill_when_packing_starts(patch)
        with pytest.raises(_Killed):
            pack_input(open_input(root), tmp_path / "out", PackOptions(num_shards=4, workers=1), overwrite=True)
    pack_input(open_input(root), tmp_path / "out", PackOptions(num_shards=4, workers=1), overwrite=True)
    assert sorted(path.name for path in (tmp_path / "out").glob("*.rec")) == [
        f"tree-0000{index}-of-00004.rec" for index in range(4)]


def test_a_changed_class_map_is_not_up_to_date(tmp_path: Path) -> None:
    root = tmp_path / "images"
    root.mkdir()
    (root / "a.jpg").write_bytes(jpeg(32, 32))
    (tmp_path / "x.lst").write_text("0\t0\ta.jpg\n")
    (tmp_path / "synsets.txt").write_text("0\tcat\n")
    arguments = ["pack", str(tmp_path / "x.lst"), str(tmp_path / "out"), "--root", str(root), "--json"]
    assert run_cli(*arguments).returncode == 0
    (tmp_path / "synsets.txt").write_text("0\ttabby\n")
    rerun = run_cli(*arguments)
    assert json.loads(rerun.stdout)["up_to_date"] is False
    assert (tmp_path / "out" / "x.synsets.txt").read_text() == "0\ttabby\n"
    assert Manifest.load(tmp_path / "out" / "x.manifest.json").classes == ["tabby"]


def test_a_reject_named_with_a_unicode_line_separator_does_not_stop_up_to_date(tmp_path: Path) -> None:
    root = tree(tmp_path / "tree", classes=1, per_class=3)
    (root / "n00000000" / "odd\u2028name.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not really")
    arguments = ["pack", str(root), str(tmp_path / "out"), "--num-shards", "2", "--json", "-q"]
    assert json.loads(run_cli(*arguments).stdout)["rejects"] == 1
    again = json.loads(run_cli(*arguments).stdout)
    assert again["up_to_date"] is True and again["rejects"] == 1


def test_an_output_folder_inside_the_input_folder_is_refused(tmp_path: Path) -> None:
    root = tree(tmp_path / "tree", classes=1, per_class=2)
    completed = subprocess.run([*CLI, "pack", ".", "out"], cwd=root, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2 and "inside the input folder" in completed.stderr
    assert not (root / "out").exists()


def test_a_symlinked_lock_file_is_never_written_through(tmp_path: Path) -> None:
    root = tree(tmp_path / "tree", classes=1, per_class=2)
    (tmp_path / "out").mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("important data")
    os.symlink(victim, tmp_path / "out" / "tree.lock")
    refused = run_cli("pack", str(root), str(tmp_path / "out"))
    assert refused.returncode == 3 and "lock" in refused.stderr
    assert victim.read_text() == "important data"


def test_a_pack_with_stderr_closed_still_works(tmp_path: Path) -> None:
    root = tree(tmp_path / "tree", classes=1, per_class=3)
    for workers in ("1", "2"):
        completed = subprocess.run(f"{sys.executable} -m recordio_pack pack {root} {tmp_path / workers} "
                                   f"--workers {workers} --num-shards 2 -q 2>&-", shell=True, capture_output=True,
                                   text=True, timeout=60)
        assert completed.returncode == 0 and "packed 3 of 3" in completed.stdout


def test_a_truncated_train_tar_is_one_line(tmp_path: Path) -> None:
    from recordio_pack.fakes.archives import make_fake_archives

    fake = make_fake_archives(tmp_path / "archives", classes=3, train_per_class=4, val_per_class=1, seed=1, max_side=64)
    data = Path(fake.train_tar).read_bytes()
    Path(fake.train_tar).write_bytes(data[: len(data) // 2 + 100])
    completed = run_cli("pack", fake.train_tar, str(tmp_path / "out"))
    assert completed.returncode == 1 and completed.stderr.count("\n") == 1 and "unreadable archive" in completed.stderr


def test_a_failed_write_of_a_final_file_names_it(tmp_path: Path) -> None:
    from recordio_pack.fsutil import atomic_output

    target = tmp_path / "x.rejects.tsv"
    with pytest.raises(OSError) as raised:
        with atomic_output(target):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what a failed buffered write raises: no file
    assert raised.value.filename == str(target) and raised.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_the_manifest_names_the_shard_size_that_applied_and_resumed_work_is_not_rate(tmp_path: Path) -> None:
    from recordio_pack.options import DEFAULT_SHARD_SIZE
    from recordio_pack.progress import Advanced, Queued, RecordingProgress

    root = tree(tmp_path / "tree")
    pack_input(open_input(root), tmp_path / "out", PackOptions(workers=1))
    assert Manifest.load(tmp_path / "out" / "tree.manifest.json").options["shard_size"] == DEFAULT_SHARD_SIZE

    pack_input(open_input(root), tmp_path / "four", PackOptions(num_shards=4, workers=1))
    (root / "n00000000" / "0.JPEG").write_bytes(jpeg(70, 64, seed=4242))
    events = RecordingProgress()
    pack_input(open_input(root), tmp_path / "four", PackOptions(num_shards=4, workers=1), progress=events)
    [plan] = events.of(Queued)
    packed = sum(event.amount for event in events.of(Advanced))
    assert plan.done == 18 and packed == 6  # the bar starts at 18 (not counted in its rate), then adds 6


def test_temporaries_of_the_final_files_left_by_a_kill_are_removed_by_the_rerun(tmp_path: Path) -> None:
    root = tree(tmp_path / "tree", classes=1, per_class=3)
    pack_input(open_input(root), tmp_path / "out", PackOptions(workers=1))
    leftovers = [tmp_path / "out" / f"tree.{kind}.k1llEd00.tmp" for kind in
                 ("manifest.json", "rejects.tsv", "pack-state.json", "lst", "synsets.txt")]
    for leftover in leftovers:
        leftover.write_bytes(b"half")
    assert pack_input(open_input(root), tmp_path / "out", PackOptions(workers=1)).up_to_date
    assert not any(leftover.exists() for leftover in leftovers)
