"""bench/read_speed.py: a tiny run end to end (so the benchmark cannot rot): every reader's rows are printed and
parse, every DataLoader run gave every image.  No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from training_data import find_train_python

pytestmark = [pytest.mark.oracle, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]


def test_a_tiny_read_bench_prints_every_row(mxnet_python: str, tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(REPO / "bench" / "read_speed.py"), "--images", "60", "--shards", "3", "--repeats", "1",
         "--out", str(tmp_path), "--mxnet-python", mxnet_python, "--train-python", find_train_python()],
        capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in completed.stdout.splitlines() if line.startswith("| ")]
    readers = [(row[0].strip(), row[1].strip()) for row in rows if len(row) == 5 and row[0].strip() != "reader"]
    assert readers == [("mxnet 1.9.1 MXIndexedRecordIO", "sequential"), ("mxnet 1.9.1 MXIndexedRecordIO", "random"),
                       ("DALI fn.readers.mxnet (CPU)", "sequential"),
                       ("DALI fn.readers.mxnet (CPU)", "random (shuffle buffer)"),
                       ("ours: reader.IndexedRecordIO", "sequential"), ("ours: reader.IndexedRecordIO", "random"),
                       ("ours: reader.IndexedRecordIO", "sequential, no index")]
    for row in rows:
        if len(row) == 5 and row[0].strip() != "reader":
            assert float(row[2].split("(")[0].replace(",", "")) > 0 and float(row[3].replace(",", "")) > 0
    results = json.loads((tmp_path / "read-60" / "results.json").read_text())
    assert results["records"] == 60 and set(results["loader"]) == {"our shards (RecordIODataset)",
                                                                    "files (ImageFolder logic)"}
    assert all(rate > 0 for rates in results["loader"].values() for rate in rates)
    assert len(list((tmp_path / "read-60" / "files").rglob("*.jpg"))) == 60
