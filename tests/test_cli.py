"""The command line as a whole: every command registers and explains itself; start-up stays light.

One real subprocess per command (its --help) and the import-cost probe; the rest runs ``cli.main`` in-process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from recordio_pack.cli import COMMANDS

CLI = [sys.executable, "-m", "recordio_pack"]
Run = Callable[..., subprocess.CompletedProcess]

# text that only this command's --help holds (checked below), so a help test cannot pass on another one's text
# or on the program's name ("recordio-pack" holds "pack")
HELP_MARKERS = {
    "fake": "--images-per-class", "list": "--train-ratio", "pack": "--num-shards", "verify": "--decode",
    "index": "--salvage", "inspect": "--contact-sheet", "backup": "--storage-class",
    "restore": "folder to restore into", "snapshot": "--copy-to-region", "replicate": "--filter",
    "mount": "--mount-command", "cleanup": "--keep-latest", "imagenet": "download archives with resume",
    "userdata": "--output", "launch": "--instance-type", "commit": "partial manifests of several",
}


def test_help_lists_every_command() -> None:
    result = subprocess.run([*CLI, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for name in COMMANDS:
        assert name in result.stdout


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_has_help(name: str) -> None:
    result = subprocess.run([*CLI, name, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: recordio-pack {name} ")
    assert HELP_MARKERS[name] in result.stdout


def test_each_help_marker_is_in_that_commands_help_only(cli_main: Run) -> None:
    assert sorted(HELP_MARKERS) == sorted(COMMANDS)
    helps = {}
    for name in COMMANDS:
        shown = cli_main(name, "--help")
        assert shown.returncode == 0 and shown.stderr == "", shown.stderr
        helps[name] = shown.stdout
    for name, marker in HELP_MARKERS.items():
        assert [other for other, text in helps.items() if marker in text] == [name], marker


def test_start_up_imports_no_heavy_library() -> None:
    probe = ("import sys; from recordio_pack.cli import build_parser; build_parser(); "
             "print(sorted(m for m in ('cv2', 'numpy', 'boto3', 'botocore', 'tqdm', 'scipy', 'PIL') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_bad_usage_exits_2(cli_main: Run) -> None:
    result = cli_main("pack", "/nonexistent-input", "/tmp/x", "--quality", "0")
    assert result.returncode == 2 and "quality" in result.stderr


def _mistakes(tmp: Path) -> list[tuple[list[str], int, str]]:
    """(arguments, exit status, text the one line must hold) for user mistakes around pack and list."""
    (tmp / "tree" / "a").mkdir(parents=True)
    (tmp / "x.lst").write_text("0\t0\ta/x.jpg\n")
    (tmp / "classes.txt").write_text("0\tcat\nx\tdog\n")
    (tmp / "file.txt").write_text("x")
    return [
        (["pack", str(tmp / "missing"), str(tmp / "out")], 1, "no such file or folder"),
        (["pack", str(tmp / "x.lst"), str(tmp / "out")], 2, "--root is required"),
        (["pack", str(tmp / "x.lst"), str(tmp / "out"), "--root", str(tmp / "nope")], 1, "no such folder (--root)"),
        (["pack", str(tmp / "x.lst"), str(tmp / "out"), "--root", str(tmp), "--classes", str(tmp / "no.txt")], 1,
         "no such file (--classes)"),
        (["pack", str(tmp / "x.lst"), str(tmp / "out"), "--root", str(tmp), "--classes", str(tmp / "classes.txt")], 2,
         "classes.txt:2"),
        (["pack", str(tmp / "tree"), str(tmp / "file.txt")], 2, "is not a folder"),
        (["pack", str(tmp / "file.txt"), str(tmp / "out")], 2, "not a folder, .lst or .tar"),
        (["pack", str(tmp / "tree"), str(tmp / "out"), "--name", "a/b"], 2, "dataset name"),
        (["list", str(tmp / "missing"), str(tmp / "l")], 1, "no such folder"),
    ]


def test_user_mistakes_are_one_line_with_the_tables_exit_status(tmp_path: Path, cli_main: Run) -> None:
    for arguments, status, text in _mistakes(tmp_path):
        result = cli_main(*arguments)
        assert (result.returncode, result.stderr.count("\n")) == (status, 1), (arguments, result.stderr)
        assert text in result.stderr and "Traceback" not in result.stderr, (arguments, result.stderr)


def test_debug_shows_the_traceback(tmp_path: Path, cli_main: Run) -> None:
    result = cli_main("--debug", "pack", str(tmp_path / "missing"), str(tmp_path / "out"))
    assert result.returncode == 1 and "Traceback" in result.stderr and "no such file or folder" in result.stderr


def test_list_pack_verify_and_index_run_without_boto3(tmp_path: Path) -> None:
    """The packing commands never import boto3 (it stays a dependency for the AWS steps: see README)."""
    import cv2
    import numpy as np

    (tmp_path / "tree" / "a").mkdir(parents=True)
    ok, data = cv2.imencode(".jpg", np.full((40, 50, 3), 90, np.uint8))
    (tmp_path / "tree" / "a" / "x.jpg").write_bytes(data.tobytes())
    blocker = ("import sys, runpy\n"
               "class Block:\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] in ('boto3', 'botocore', 's3transfer'):\n"
               "            raise ImportError('blocked: ' + name)\n"
               "sys.meta_path.insert(0, Block())\n"
               "sys.argv = ['recordio-pack'] + sys.argv[1:]\n"
               "runpy.run_module('recordio_pack', run_name='__main__')\n")
    out = tmp_path / "out"
    for arguments in (["list", str(tmp_path / "tree"), str(tmp_path / "l")], ["pack", str(tmp_path / "tree"), str(out)],
                      ["verify", str(out), "--decode"], ["index", str(out / "tree.rec"), "--combined", str(tmp_path / "a.idx")],
                      ["inspect", str(out)]):
        result = subprocess.run([sys.executable, "-c", blocker, *arguments], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, (arguments, result.stderr)
