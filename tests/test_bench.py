"""bench/pack_vs_im2rec.py: a tiny run end to end (so the benchmark cannot rot), and its corpus and PSNR parts.

No timing is asserted: only that every row is printed, every figure parses, and both tools packed every image.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recordio_pack.format import IRHeader, pack_payload
from recordio_pack.recordio import RecordWriter

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "pack_vs_im2rec.py"


def _bench_module():
    """The script as a module (bench/ is not a package); registered first, as dataclasses need."""
    if "pack_vs_im2rec" in sys.modules:
        return sys.modules["pack_vs_im2rec"]
    spec = importlib.util.spec_from_file_location("pack_vs_im2rec", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["pack_vs_im2rec"] = module
    spec.loader.exec_module(module)
    return module


def _rows_after_rules(text: str) -> list[list[str]]:
    rows, in_table = [], False
    for line in text.splitlines():
        if line.startswith("|---"):
            in_table = True
        elif line.startswith("|") and in_table:
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        else:
            in_table = False
    return rows


@pytest.mark.oracle
@pytest.mark.slow
def test_tiny_run_prints_every_row_and_every_figure_parses(tmp_path: Path, mxnet_python: str) -> None:
    out = tmp_path / "bench"
    command = [sys.executable, str(SCRIPT), "--images", "200", "--repeats", "1", "--memory-images", "300",
               "--memory-cases", "pass", "--psnr-images", "40", "--codec-images", "40", "--out", str(out),
               "--mxnet-python", mxnet_python]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO,
                               env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert completed.returncode == 0, completed.stderr[-3000:]
    rows = _rows_after_rules(completed.stdout)
    labels = [row[0] for row in rows]
    bench = _bench_module()
    for case in bench.CASES.values():
        assert labels.count(case.title) >= 2, f"no throughput or memory row for {case.title}"
    expected = ["codec limit, one core, OpenCV", "codec limit, images/s per core", "codec limit x 2 workers",
                "codec limit, one core, im2rec's OpenCV", "ours at 256 q95: images/s over codec limit",
                "im2rec at 256 q95: images/s over codec limit", "ours at 256 q95: codec CPU ms",
                "im2rec at 256 q95: codec CPU ms", "mean PSNR at 256, im2rec", "mean PSNR at 256, ours",
                "recordio-pack --help, s", "python -c 'import mxnet'", "ours: peak RSS of one process over all runs",
                "ours: main process peak RSS growth, pass-through, 200 -> 300 images",
                "ours: largest process peak RSS growth, pass-through, 200 -> 300 images",
                "ours: projected peak RSS of one process at 1281167 images, pass-through"]
    for prefix in expected:
        assert any(label.startswith(prefix) for label in labels), f"missing row {prefix!r}"
    for row in rows:
        for cell in row[1:]:
            if cell not in ("", "yes", "no", "n/a"):
                float(cell)  # raises on anything that is not a plain number

    summary = json.loads((out / "results.json").read_text())
    assert [row["case"] for row in summary["cases"]] == ["256", "480", "pass"]
    assert all(row["records_ok"] for row in summary["cases"]), "a tool did not pack every image"
    assert all(entry["records_ok"] for entry in summary["memory"])
    assert [entry["case"] for entry in summary["memory"]] == ["pass"]
    assert summary["memory"][0]["peak_main_mib"] > 0 and "projected_main_mib" in summary["memory"][0]
    assert summary["psnr"]["images"] == 40
    assert 25 < summary["psnr"]["im2rec_db"] < 60 and 25 < summary["psnr"]["ours_db"] < 60
    assert summary["codec_limit"]["ms_per_image"] > 0
    assert 0 < summary["memory_target"]["peak_max_mib"] < 1024
    assert all(row["im2rec_processes"] >= 2 and row["ours_processes"] >= 2 for row in summary["cases"])


def test_memory_projection_catches_slow_growth_that_looks_flat() -> None:
    bench = _bench_module()
    case = bench.CASES["pass"]
    result = bench.CaseResult("pass", case.title, 10_000)
    result.ours.append(bench.Run(1.0, peak_max_mib=30.0, peak_main_mib=25.0, peak_sum_mib=100.0, processes=5,
                                 cpu_s=1.0))
    # +10 MiB in the main process over 40,000 more images: 262 bytes per image, about 330 MiB at 1.28M
    growing = bench._memory_entry(case, result, bench.Run(1.0, 35.0, 35.0, 110.0, 5, 1.0, 50_000), 10_000, 50_000)
    assert round(growing["main_bytes_per_image"]) == 262
    assert 300 < growing["projected_main_mib"] < 360
    assert growing["flat"] is False and growing["records_ok"] is True
    steady = bench._memory_entry(case, result, bench.Run(1.0, 30.5, 25.2, 101.0, 5, 1.0, 50_000), 10_000, 50_000)
    assert steady["flat"] is True
    assert steady["projected_max_mib"] < 200


def test_corpus_repeats_each_source_as_links_and_is_reused(tmp_path: Path) -> None:
    bench = _bench_module()
    sources = []
    for number in range(3):
        path = tmp_path / "src" / f"n0000000{number}_thing.JPEG"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"\xff\xd8\xff" + bytes([number]) * 10)
        sources.append((path.name.split("_")[0], path))
    corpus = tmp_path / "corpus"
    bench.build_corpus(sources, 7, corpus)
    files = sorted(path for path in corpus.rglob("*.JPEG"))
    assert len(files) == 7
    assert sorted(path.parent.name for path in files) == ["n00000000"] * 3 + ["n00000001"] * 2 + ["n00000002"] * 2
    assert (corpus / "n00000000" / "r0002_n00000000_thing.JPEG").exists()
    for path in files:
        source = tmp_path / "src" / path.name.split("_", 1)[1]
        assert path.read_bytes() == source.read_bytes()
        assert path.is_symlink() or path.stat().st_ino == source.stat().st_ino  # linked, never copied
    first = (corpus / "n00000000" / "r0000_n00000000_thing.JPEG").lstat().st_ctime_ns
    bench.build_corpus(sources, 7, corpus)  # same request: kept as it is
    assert (corpus / "n00000000" / "r0000_n00000000_thing.JPEG").lstat().st_ctime_ns == first
    bench.build_corpus(sources, 4, corpus)  # another size: rebuilt
    assert len(list(corpus.rglob("*.JPEG"))) == 4


def test_fake_source_is_used_when_asked(tmp_path: Path) -> None:
    bench = _bench_module()
    args = bench.parse_args(["--source", "fake", "--fake-classes", "2", "--fake-per-class", "3",
                             "--out", str(tmp_path)])
    description, sources = bench.source_images(args, tmp_path)
    assert "recordio-pack fake" in description
    assert len(sources) == 6
    assert len({name for name, _ in sources}) == 2
    assert all(path.read_bytes()[:3] == b"\xff\xd8\xff" for _, path in sources)


def test_psnr_compares_against_an_area_resized_reference(tmp_path: Path) -> None:
    import cv2
    import numpy as np

    bench = _bench_module()
    rng = np.random.default_rng(0)
    source = tmp_path / "photo.png"
    pixels = cv2.GaussianBlur(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8), (0, 0), 3)
    cv2.imwrite(str(source), pixels)
    exact = cv2.resize(pixels, (200, 150), interpolation=cv2.INTER_AREA)
    noisy = np.clip(exact.astype(np.int16) + rng.integers(-20, 21, exact.shape), 0, 255).astype(np.uint8)
    for tool, image in (("exact", exact), ("noisy", noisy)):
        directory = tmp_path / tool
        directory.mkdir()
        with open(directory / "data.rec", "wb") as rec, open(directory / "data.idx", "wb") as idx:
            encoded = cv2.imencode(".png", image)[1].tobytes()  # lossless: the PSNR is the pixels'
            RecordWriter(rec, idx).write(0, pack_payload(IRHeader((1.0,), id=7), encoded))
    result = bench.mean_psnr({"exact": tmp_path / "exact", "noisy": tmp_path / "noisy"}, {7: source})
    assert result["images"] == 1
    assert result["exact_db"] == 99.0  # identical to the reference
    assert 20 < result["noisy_db"] < 30  # uniform noise of +-20: about 22.8 dB


def test_cost_breakdown_times_every_stage_and_scores_both_outputs(tmp_path: Path) -> None:
    from imagegen import jpeg

    for number in range(12):
        (tmp_path / f"photo{number:02d}.jpg").write_bytes(jpeg(300 + 8 * number, 260, seed=number))
    (tmp_path / "notes.txt").write_text("not an image\n")
    completed = subprocess.run([sys.executable, str(REPO / "bench" / "cost_breakdown.py"), "--images", str(tmp_path),
                                "--batch", "5", "--rounds", "1", "--json"],
                               capture_output=True, text=True, timeout=120, cwd=REPO)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout)
    assert result["images"] == 12
    assert set(result["ms_per_image"]) == {"codec limit", "ours without I/O", "ours, whole shard loop"}
    assert all(value > 0 for value in result["ms_per_image"].values())
    assert 25 < result["psnr_db"]["codec limit"] < 60 and 25 < result["psnr_db"]["ours"] < 60
    assert result["ceiling_percent"] > 0
    table = subprocess.run([sys.executable, str(REPO / "bench" / "cost_breakdown.py"), "--images", str(tmp_path),
                            "--batch", "6", "--rounds", "1"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert table.returncode == 0 and "| ours, whole shard loop |" in table.stdout and "ceiling" in table.stdout
