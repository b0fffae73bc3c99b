"""The README's demo command, run as `make demo` runs it (scripts/demo.sh with the venv on PATH)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(["bash", str(REPO / "scripts" / "demo.sh"), str(tmp_path / "demo")], env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    demo = tmp_path / "demo"
    manifest = json.loads((demo / "packed" / "train.manifest.json").read_text())
    assert manifest["records"] == 600 + 4  # 600 photos + CMYK, PNG-named-JPEG, alpha and 16-bit PNG converted
    assert manifest["rejects"] == 3  # truncated, empty, text
    assert (demo / "contact-sheet.png").stat().st_size > 10_000
    restored = sorted(path.name for path in (demo / "restored").iterdir())
    assert restored == sorted(path.name for path in (demo / "packed").iterdir())
    for name in restored:
        assert (demo / "restored" / name).read_bytes() == (demo / "packed" / name).read_bytes()
    assert "OK: 604 records" in result.stdout
    assert result.stdout.count(" attached") >= 3  # two replicated volumes and the boot script's
    mount_call = (demo / "boot" / "mount.log").read_text()
    assert mount_call.startswith("mount -o ro,noload ") and "nvme-Amazon_Elastic_Block_Store_vol" in mount_call
    assert "ro,noload,nofail" in (demo / "boot" / "fstab").read_text()
