"""Shared fixtures: fake AWS credentials everywhere, the mxnet oracle, a moto server on 127.0.0.1, the CLI run in
this process, and the fake ImageNet archives (and their prepared tree) built once per session."""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Mapping
from unittest import mock

import pytest

from environments import interpreter
from waiting import wait_until

if TYPE_CHECKING:
    from recordio_pack.fakes.archives import FakeArchives

REPO = Path(__file__).resolve().parents[1]
ORACLE_ENV = "RECORDIO_PACK_MXNET_PYTHON"


@pytest.fixture(autouse=True)
def _offline_aws(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test may reach AWS or the instance metadata service: fake credentials, no profiles, no IMDS."""
    empty = tmp_path_factory.getbasetemp() / "no-aws-config"
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty / "credentials"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A moto server on 127.0.0.1 (its own process); yields its endpoint URL. State is shared per session:
    tests use unique bucket names / tags, or call ``POST /moto-api/reset``."""
    port = free_port()
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_EC2_METADATA_DISABLED="true")
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        import urllib.request

        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1).read()
            return True
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"moto server exited with status {process.returncode}") from None
            return False

    try:
        wait_until(answers, 30, interval=0.05, message="moto server did not start")
        yield url
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="session")
def mxnet_python() -> str:
    """The oracle interpreter (python3.11 with mxnet 1.9.1). `make test` sets RECORDIO_PACK_MXNET_PYTHON and
    RECORDIO_PACK_REQUIRE_ORACLE=1, so a missing oracle fails there; elsewhere the oracle tests skip."""
    return interpreter(ORACLE_ENV, ".venv-mxnet", "mxnet oracle")


def run_oracle(mxnet_python: str, script: str, *args: str, cwd: Path | None = None) -> str:
    """Run ``script`` (Python source) with the mxnet interpreter; return its stdout, fail with its stderr."""
    completed = subprocess.run([mxnet_python, "-c", textwrap.dedent(script), *args], capture_output=True,
                               text=True, cwd=cwd, env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=600)
    if completed.returncode != 0:
        raise AssertionError(f"mxnet oracle failed ({completed.returncode}):\n{completed.stderr[-4000:]}")
    return completed.stdout


def run_main(capture: pytest.CaptureFixture[str], *argv: str,
             env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``recordio-pack ARGV`` run in this process through ``cli.main``, answered as ``subprocess.run(...,
    capture_output=True, text=True)`` answers: the exit status (argparse's own exits included) and what the command
    wrote to stdout and stderr. ``capture`` is ``capfd`` (what C libraries write counts too) or ``capsys``; ``env``,
    when given, is the whole environment during the call, as it would be for a subprocess."""
    from recordio_pack.cli import main

    capture.readouterr()  # what came before is not this command's output
    with mock.patch.dict(os.environ, env if env is not None else {}, clear=env is not None):
        try:
            status = main(list(argv))
        except SystemExit as exited:  # argparse: --help, --version, usage errors
            status = 0 if exited.code is None else exited.code if isinstance(exited.code, int) else 1
    out, err = capture.readouterr()
    return subprocess.CompletedProcess(["recordio-pack", *argv], status, out, err)


@pytest.fixture()
def cli_main(capfd: pytest.CaptureFixture[str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``cli_main(*argv, env=None)``: :func:`run_main` bound to ``capfd``."""
    return functools.partial(run_main, capfd)


# ---------------------------------------------------------------- fake ImageNet archives, once per session

@pytest.fixture(scope="session")
def fake_archives(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., FakeArchives]:
    """``fake_archives(**options)``: ``make_fake_archives`` with those options, built once per session (and xdist
    worker) and shared: read them only; a test that changes an archive copies it into its ``tmp_path`` first."""
    from recordio_pack.fakes.archives import make_fake_archives

    made: dict[tuple[tuple[str, int], ...], FakeArchives] = {}

    def get(**options: int) -> FakeArchives:
        key = tuple(sorted(options.items()))
        if key not in made:
            made[key] = make_fake_archives(tmp_path_factory.mktemp("archives"), **options)  # type: ignore[arg-type]
        return made[key]

    return get


@pytest.fixture(scope="session")
def prepared_tree(tmp_path_factory: pytest.TempPathFactory) -> Callable[[FakeArchives], Path]:
    """``prepared_tree(fake)``: the folder ``imagenet prepare`` makes of ``fake``'s three archives (train/, val/,
    the label files), built once per session and archives; read it only."""
    from recordio_pack.imagenet.prepare import prepare

    made: dict[str, Path] = {}

    def get(fake: FakeArchives) -> Path:
        if fake.train_tar not in made:
            out = tmp_path_factory.mktemp("prepared")
            prepare(out, train_tar=fake.train_tar, val_tar=fake.val_tar, devkit=fake.devkit)
            made[fake.train_tar] = out
        return made[fake.train_tar]

    return get
