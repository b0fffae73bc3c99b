"""The command line as a whole: every command registers and explains itself; start-up stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

from recordio_pack.cli import COMMANDS

CLI = [sys.executable, "-m", "recordio_pack"]


def test_help_lists_every_command() -> None:
    result = subprocess.run([*CLI, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for name in COMMANDS:
        assert name in result.stdout


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_has_help(name: str) -> None:
    result = subprocess.run([*CLI, name, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "usage: recordio-pack" in result.stdout


def test_start_up_imports_no_heavy_library() -> None:
    probe = ("import sys; from recordio_pack.cli import build_parser; build_parser(); "
             "print(sorted(m for m in ('cv2', 'numpy', 'boto3', 'botocore', 'tqdm', 'scipy', 'PIL') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_bad_usage_exits_2() -> None:
    result = subprocess.run([*CLI, "pack", "/nonexistent-input", "/tmp/x", "--quality", "0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "quality" in result.stderr
