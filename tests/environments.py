"""The interpreters of the suite's other virtualenvs (mxnet's oracle, torch and DALI, TensorFlow and TFDS), each
built by `make test`, which names them in the environment and sets RECORDIO_PACK_REQUIRE_ORACLE=1: there a
missing one fails the test; elsewhere (`make test-fast`, a bare pytest) the test skips."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def interpreter(variable: str, venv: str, what: str) -> str:
    """``$variable``, else ``REPO/venv/bin/python``, when it exists; else fail or skip as the docstring says."""
    candidate = os.environ.get(variable) or str(REPO / venv / "bin" / "python")
    if not Path(candidate).exists():
        if os.environ.get("RECORDIO_PACK_REQUIRE_ORACLE"):
            pytest.fail(f"{what} interpreter not found at {candidate}")
        pytest.skip(f"{venv} not built (run make test)")
    return candidate
