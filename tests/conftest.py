"""Shared fixtures: fake AWS credentials everywhere, the mxnet oracle, and a moto server on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Iterator

import pytest

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
    try:
        import time
        import urllib.request

        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/moto-api/", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("moto server did not start")
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="session")
def mxnet_python() -> str:
    """The oracle interpreter (python3.11 with mxnet 1.9.1). `make test` sets RECORDIO_PACK_MXNET_PYTHON and
    RECORDIO_PACK_REQUIRE_ORACLE=1, so a missing oracle fails there; elsewhere the oracle tests skip."""
    candidate = os.environ.get(ORACLE_ENV) or str(REPO / ".venv-mxnet" / "bin" / "python")
    if not Path(candidate).exists():
        if os.environ.get("RECORDIO_PACK_REQUIRE_ORACLE"):
            pytest.fail(f"mxnet oracle interpreter not found at {candidate}")
        pytest.skip("mxnet oracle virtualenv not built (run make test)")
    return candidate


def run_oracle(mxnet_python: str, script: str, *args: str, cwd: Path | None = None) -> str:
    """Run ``script`` (Python source) with the mxnet interpreter; return its stdout, fail with its stderr."""
    completed = subprocess.run([mxnet_python, "-c", textwrap.dedent(script), *args], capture_output=True,
                               text=True, cwd=cwd, env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=600)
    if completed.returncode != 0:
        raise AssertionError(f"mxnet oracle failed ({completed.returncode}):\n{completed.stderr[-4000:]}")
    return completed.stdout
