"""Every input accounted for: files under ROOT = records + rejects + skipped, each with its reason, whatever the tree holds."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imagegen import jpeg
from recordio_pack.errors import RecordioPackError
from recordio_pack.inputs import open_input
from recordio_pack.listing import UnreadableFolder, scan_tree
from recordio_pack.manifest import Manifest
from recordio_pack.options import PackOptions
from recordio_pack.pack import pack_input

CLI = [sys.executable, "-m", "recordio_pack"]
GOOD = jpeg(40, 30, seed=1)

# name -> how to make it inside a class folder (or the root); what the pack must say about it is checked by the
# invariant, and the reason by test_each_odd_kind_has_its_reason.
KINDS = {
    "good": lambda path: path.with_suffix(".JPEG").write_bytes(GOOD),
    "gif": lambda path: path.with_suffix(".gif").write_bytes(b"GIF89a" + b"\0" * 20),
    "webp": lambda path: path.with_suffix(".webp").write_bytes(b"RIFF\0\0\0\0WEBP"),
    "jpe": lambda path: path.with_suffix(".jpe").write_bytes(GOOD),
    "bak": lambda path: path.with_suffix(".JPEG.bak").write_bytes(GOOD),
    "noext": lambda path: path.write_bytes(GOOD),
    "empty": lambda path: path.with_suffix(".jpg").write_bytes(b""),
    "truncated": lambda path: path.with_suffix(".jpg").write_bytes(GOOD[: len(GOOD) // 2]),
    "text": lambda path: path.with_suffix(".JPEG").write_text("not an image"),
    "tab": lambda path: path.with_name(path.name + "\tx.jpg").write_bytes(GOOD),
    "newline": lambda path: path.with_name(path.name + "\nx.jpg").write_bytes(GOOD),
    "fifo": lambda path: os.mkfifo(path.with_suffix(".JPEG")),
    "broken_link": lambda path: os.symlink(path.parent / "nowhere.jpg", path.with_suffix(".jpg")),
    "hidden": lambda path: path.with_name("." + path.name).write_bytes(b"x"),
}


def make_tree(root: Path, layout: list[tuple[int, str, bool]]) -> None:
    """``layout``: (class number or -1 for the root itself, kind, in a sub-folder) per file."""
    for number, (folder, kind, nested) in enumerate(layout):
        parent = root if folder < 0 else root / f"class{folder}" / ("sub" if nested else "")
        parent.mkdir(parents=True, exist_ok=True)
        KINDS[kind](parent / f"f{number}")
    (root / "class0").mkdir(parents=True, exist_ok=True)


def files_under(root: Path) -> set[str]:
    found = set()
    for folder, _, names in os.walk(root):
        for name in names:
            found.add((Path(folder) / name).relative_to(root).as_posix())
    return found


def tsv_paths(path: Path) -> list[str]:
    if not path.exists():
        return []
    rows = path.read_text(encoding="utf-8").splitlines()[1:]
    return [row.split("\t")[0].replace("\\t", "\t").replace("\\n", "\n") for row in rows]


def packed_paths(out: Path, name: str) -> list[str]:
    lines = (out / f"{name}.lst").read_text(encoding="utf-8").splitlines()
    return [line.split("\t")[-1] for line in lines if line]


layouts = st.lists(st.tuples(st.integers(-1, 2), st.sampled_from(sorted(KINDS)), st.booleans()), min_size=1, max_size=14)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layout=layouts)
def test_files_under_root_equal_records_plus_rejects_plus_skipped(tmp_path_factory: pytest.TempPathFactory,
                                                                  layout: list[tuple[int, str, bool]]) -> None:
    base = tmp_path_factory.mktemp("tree")
    root, out = base / "root", base / "out"
    make_tree(root, layout)
    result = pack_input(open_input(root), out, PackOptions(workers=1))
    manifest = Manifest.load(result.manifest)
    everything = files_under(root)

    assert result.files_accounted == len(everything) == result.records + result.rejects + result.skipped
    assert manifest.records + manifest.rejects + manifest.skipped == len(everything)
    assert manifest.to_dict()["inputs_accounted"] == len(everything)
    rejected = tsv_paths(out / "root.rejects.tsv")
    skipped = tsv_paths(out / "root.skipped.tsv")
    listed = packed_paths(out, "root")
    packed = set(listed) - set(rejected)
    assert len(rejected) == result.rejects and len(skipped) == result.skipped and len(packed) == result.records
    assert set(rejected) | set(skipped) | packed == everything  # each file once, in one place
    assert len(set(rejected) | set(skipped) | packed) == len(rejected) + len(skipped) + len(packed)


def test_each_odd_kind_has_its_reason(tmp_path: Path) -> None:
    root = tmp_path / "root"
    layout = [(0, kind, False) for kind in sorted(KINDS)] + [(-1, "good", False), (-1, "bak", False)]
    make_tree(root, layout)
    result = pack_input(open_input(root), tmp_path / "out", PackOptions(workers=1), progress=None)
    reasons = dict(zip(tsv_paths(tmp_path / "out" / "root.rejects.tsv"),
                       [row.split("\t")[1] for row in (tmp_path / "out" / "root.rejects.tsv").read_text().splitlines()[1:]]))
    by_kind = {path.split("/")[-1].split(".")[0].split("\t")[0].split("\n")[0]: reason for path, reason in reasons.items()}
    number = {kind: f"f{index}" for index, kind in enumerate(sorted(KINDS))}
    assert "not a regular file (FIFO)" in by_kind[number["fifo"]]
    assert "tab" in by_kind[number["tab"]] and "line break" in by_kind[number["newline"]]
    assert by_kind[number["broken_link"]] == "broken symbolic link"
    assert "empty" in by_kind[number["empty"]] and "truncated" in by_kind[number["truncated"]]
    assert "not an image" in by_kind[number["text"]]
    assert any("outside any class folder" in reason for path, reason in reasons.items() if "/" not in path)
    assert result.skipped_by_extension == {".bak": 2, ".gif": 1, ".jpe": 1, ".webp": 1, "(none)": 2}


def test_a_socket_and_a_fifo_are_rejected_without_being_opened(tmp_path: Path) -> None:
    root = tmp_path / "r"
    (root / "c").mkdir(parents=True)
    (root / "c" / "ok.jpg").write_bytes(GOOD)
    os.mkfifo(root / "c" / "pipe.JPEG")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(root / "c" / "sock.jpg"))
    try:
        listing = scan_tree(root)
    finally:
        server.close()
    assert dict(listing.rejects) == {"c/pipe.JPEG": "not a regular file (FIFO)", "c/sock.jpg": "not a regular file (socket)"}


def test_a_fifo_in_a_lst_is_a_reject_not_a_hang(tmp_path: Path) -> None:
    """A .lst input is not listed by us: the reader itself must refuse the FIFO without blocking on it."""
    root = tmp_path / "r"
    root.mkdir()
    (root / "ok.jpg").write_bytes(GOOD)
    os.mkfifo(root / "pipe.jpg")
    (tmp_path / "x.lst").write_text("0\t0.000000\tpipe.jpg\n1\t0.000000\tok.jpg\n")
    completed = subprocess.run([*CLI, "pack", str(tmp_path / "x.lst"), str(tmp_path / "out"), "--root", str(root),
                                "--json", "--workers", "2", "--num-shards", "2"],
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    summary = json.loads(completed.stdout)
    assert summary["records"] == 1 and summary["reject_samples"] == [["pipe.jpg", "not a regular file (FIFO)"]]
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_an_unreadable_class_folder_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As root, chmod 000 does not stop reading (DAC override), so the refusal of the OS is simulated."""
    root = tmp_path / "r"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        (root / name / "x.jpg").write_bytes(GOOD)
    real_scandir = os.scandir

    def scandir(path):  # type: ignore[no-untyped-def]
        if Path(path).name == "b":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr("recordio_pack.listing.os.scandir", scandir)
    with pytest.raises(UnreadableFolder, match=r"/b: cannot list this folder \(Permission denied\)"):
        scan_tree(root)


def test_an_unreadable_folder_is_one_line_and_exit_1(tmp_path: Path) -> None:
    if os.geteuid() == 0 and not _can_drop_dac():
        pytest.skip("root reads every folder, and setpriv cannot drop the override here")
    root = tmp_path / "r"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        (root / name / "x.jpg").write_bytes(GOOD)
    (root / "b").chmod(0)
    prefix = ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search"] \
        if os.geteuid() == 0 else []
    try:
        completed = subprocess.run([*prefix, *CLI, "pack", str(root), str(tmp_path / "out")],
                                   capture_output=True, text=True, timeout=60)
    finally:
        (root / "b").chmod(0o755)
    assert completed.returncode == 1
    assert completed.stderr.count("\n") == 1 and "cannot list this folder" in completed.stderr


def _can_drop_dac() -> bool:
    try:
        return subprocess.run(["setpriv", "--inh-caps=-dac_override", "--bounding-set=-dac_override", "true"],
                              capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def test_a_symlink_into_another_class_is_counted_and_warned(tmp_path: Path) -> None:
    root = tmp_path / "r"
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        (root / name / f"{name}.jpg").write_bytes(GOOD)
    os.symlink("../dog/dog.jpg", root / "cat" / "alias.jpg")
    completed = subprocess.run([*CLI, "pack", str(root), str(tmp_path / "out"), "-q"], capture_output=True,
                               text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert "1 symbolic link(s) point to an image in another class" in completed.stdout
    assert Manifest.load(tmp_path / "out" / "r.manifest.json").cross_class_links == 1


def test_listing_rejects_are_in_the_rejects_file_and_json_and_on_error_fail_stops(tmp_path: Path) -> None:
    root = tmp_path / "r"
    (root / "c").mkdir(parents=True)
    (root / "c" / "ok.jpg").write_bytes(GOOD)
    (root / "loose.jpg").write_bytes(GOOD)
    (root / "c" / "a\tb.jpg").write_bytes(GOOD)
    completed = subprocess.run([*CLI, "pack", str(root), str(tmp_path / "out"), "--json", "-q"], capture_output=True,
                               text=True, timeout=60)
    assert completed.returncode == 0 and completed.stderr == ""  # nothing on stderr under -q / --json
    summary = json.loads(completed.stdout)
    assert summary["rejects"] == 2 and summary["records"] == 1 and summary["files_accounted"] == 3
    assert sorted(tsv_paths(tmp_path / "out" / "r.rejects.tsv")) == ["c/a\tb.jpg", "loose.jpg"]

    failed = subprocess.run([*CLI, "pack", str(root), str(tmp_path / "out2"), "--on-error", "fail"],
                            capture_output=True, text=True, timeout=60)
    assert failed.returncode == 1 and "--on-error fail" in failed.stderr and "Traceback" not in failed.stderr
    assert not (tmp_path / "out2" / "r.manifest.json").exists()


def test_on_error_fail_names_a_listing_reject_in_the_library(tmp_path: Path) -> None:
    root = tmp_path / "r"
    (root / "c").mkdir(parents=True)
    (root / "loose.JPEG").write_bytes(GOOD)
    with pytest.raises(RecordioPackError, match="loose.JPEG: outside any class folder"):
        pack_input(open_input(root), tmp_path / "out", PackOptions(on_error="fail", workers=1))


def test_a_name_that_is_not_utf8_is_a_reject_not_a_traceback(tmp_path: Path) -> None:
    root = tmp_path / "r"
    (root / "c").mkdir(parents=True)
    (root / "c" / "ok.jpg").write_bytes(GOOD)
    (root / "c").joinpath(os.fsdecode(b"bad\xff.jpg")).write_bytes(GOOD)
    completed = subprocess.run([*CLI, "pack", str(root), str(tmp_path / "out"), "--json", "-q"], capture_output=True,
                               text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    summary = json.loads(completed.stdout)
    assert summary["records"] == 1 and summary["rejects"] == 1 and "not valid UTF-8" in summary["reject_samples"][0][1]
