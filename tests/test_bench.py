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
    summary = json.loads((out / "results.json").read_text())

    def summary_cv(side: str) -> str:
        return summary["codec_limit"][side]["opencv"]

    for case in bench.CASES.values():
        assert labels.count(case.title) >= 2, f"no throughput or memory row for {case.title}"
    expected = [f"codec limit, {whose} OpenCV {version}, {figure}"
                for whose, version in (("ours", summary_cv("ours")), ("im2rec's", summary_cv("im2rec")))
                for figure in ("one core: ms/image", "one core: CPU ms/image", "one core x 2: images/s",
                               "2 loops at once: ms/image per loop", "2 loops at once: CPU ms/image per loop",
                               "2 loops at once: images/s (the codec limit)", "2 loops at once over one core x 2, %")]
    expected += ["ours at 256 q95: images/s over the codec limit (2 loops at once, ours OpenCV), %",
                "im2rec at 256 q95: images/s over the codec limit (2 loops at once, its OpenCV), %",
                "ours at 256 q95: codec CPU ms (loops at once)", "im2rec at 256 q95: codec CPU ms (loops at once)",
                "mean PSNR at 256, im2rec", "mean PSNR at 256, ours",
                "recordio-pack --help, s", "python -c 'import mxnet'", "ours: peak RSS of one process over all runs",
                f"ours: main process peak RSS growth, {bench.CASES['pass'].title}, 200 -> 300 images",
                f"ours: largest process peak RSS growth, {bench.CASES['pass'].title}, 200 -> 300 images",
                f"ours: projected peak RSS of one process at 1281167 images, {bench.CASES['pass'].title}"]
    for prefix in expected:
        assert any(label.startswith(prefix) for label in labels), f"missing row {prefix!r}"
    for row in rows:
        for cell in row[1:]:
            if cell not in ("", "yes", "no", "n/a"):
                float(cell)  # raises on anything that is not a plain number

    assert "ours: OpenCV" in completed.stdout and "im2rec: OpenCV" in completed.stdout  # both sides' versions
    assert "short side <= 480 (auto), ours with --validate full" in labels
    assert "pass-through, ours with --validate full" in labels
    throughput = {row[0]: row for row in rows if len(row) == 13}
    assert throughput[bench.CASES["256"].title][-1] and throughput[bench.CASES["256"].title][-2]  # % of the limit
    assert [row["case"] for row in summary["cases"]] == ["256", "256-1shard", "480", "480-full", "pass", "pass-full"]
    assert any(label.startswith("ours at 256 q95, one shard, 2 workers: CPU s / wall s") for label in labels)
    by_case = {row["case"]: row for row in summary["cases"]}
    assert by_case["pass-full"]["im2rec_walls"] == by_case["pass"]["im2rec_walls"]  # shared, not rerun
    for side in ("ours", "im2rec"):
        figures = summary["codec_limit"][side]
        assert figures["concurrent_images_s"] > 0 and figures["concurrent_ms_per_image"] > 0
    assert summary["codec_limit"]["im2rec"]["opencv"] and summary["codec_limit"]["ours"]["opencv"]
    assert all(row["records_ok"] for row in summary["cases"]), "a tool did not pack every image"
    assert all(entry["records_ok"] for entry in summary["memory"])
    assert [entry["case"] for entry in summary["memory"]] == ["pass"]
    assert summary["memory"][0]["peak_main_mib"] > 0 and "projected_main_mib" in summary["memory"][0]
    assert summary["psnr"]["images"] == 40
    assert 25 < summary["psnr"]["im2rec_db"] < 60 and 25 < summary["psnr"]["ours_db"] < 60
    assert summary["codec_limit"]["ours"]["ms_per_image"] > 0 and summary["codec_limit"]["workers"] == 2
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
    assert set(result["ms_per_image"]) == {"decode alone", "decode + resize", "codec limit", "ours without I/O",
                                           "ours, per image in a worker", "ours, whole shard loop"}
    assert result["ms_per_image"]["decode alone"] < result["ms_per_image"]["codec limit"]
    assert all(value > 0 for value in result["ms_per_image"].values())
    assert 25 < result["psnr_db"]["codec limit"] < 60 and 25 < result["psnr_db"]["ours"] < 60
    assert result["ceiling_percent"] > 0
    table = subprocess.run([sys.executable, str(REPO / "bench" / "cost_breakdown.py"), "--images", str(tmp_path),
                            "--batch", "6", "--rounds", "1"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert table.returncode == 0 and "| ours, whole shard loop |" in table.stdout and "ceiling" in table.stdout


def _jpegs(folder: Path, count: int) -> list[Path]:
    from imagegen import jpeg

    folder.mkdir()
    files = []
    for number in range(count):
        files.append(folder / f"photo{number}.jpg")
        files[-1].write_bytes(jpeg(320 + 16 * number, 240, seed=number))
    return files


def test_codec_limit_runs_n_loops_at_once_and_reports_their_combined_rate(tmp_path: Path) -> None:
    bench = _bench_module()
    files = _jpegs(tmp_path / "jpegs", 8)
    alone = bench.codec_limit(sys.executable, files)
    together = bench.codec_limit(sys.executable, files, processes=3)
    for result, processes in ((alone, 1), (together, 3)):
        assert result["processes"] == processes
        assert result["ms_per_image"] > 0 and result["cpu_ms_per_image"] > 0 and result["images_s"] > 0
        assert result["opencv"] and "jpeg" in result
    # One loop's rate is its own images over its own time; three loops' rate counts all 24 images over the span
    # from the first start to the last end.
    assert alone["images"] == 8 and alone["images_s"] == pytest.approx(1000 / alone["ms_per_image"])
    assert together["images"] == 24 and together["images_s"] == pytest.approx(24 / together["span_s"])


def test_codec_limit_failure_names_the_interpreter(tmp_path: Path) -> None:
    bench = _bench_module()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(RuntimeError, match="codec loop of"):
        bench.codec_limit(sys.executable, [broken], processes=2)


def test_codec_summary_compares_loops_at_once_with_one_core_times_workers() -> None:
    bench = _bench_module()

    def loop(ms: float, images_s: float, version: str) -> dict:
        return {"ms_per_image": ms, "cpu_ms_per_image": ms, "images_s": images_s, "opencv": version,
                "jpeg": "libjpeg-turbo"}

    codec = {"ours": [loop(2.0, 500, "5.0.0"), loop(2.2, 455, "5.0.0"), loop(1.9, 526, "5.0.0")],
             "ours_concurrent": [loop(2.5, 800, "5.0.0"), loop(2.4, 830, "5.0.0"), loop(2.6, 770, "5.0.0")],
             "im2rec": [loop(2.1, 476, "4.11.0")] * 3, "im2rec_concurrent": [loop(2.8, 714, "4.11.0")] * 3}
    limit = bench.codec_summary(codec, workers=2)
    assert limit["ours"]["ms_per_image"] == 2.0 and limit["ours"]["one_core_x_workers_images_s"] == 1000
    assert limit["ours"]["concurrent_images_s"] == 800 and limit["ours"]["concurrent_ms_per_image"] == 2.5
    assert limit["ours"]["concurrent_over_one_core_x_workers"] == pytest.approx(0.8)
    assert limit["im2rec"]["opencv"] == "4.11.0" and limit["im2rec"]["jpeg"] == "libjpeg-turbo"
    assert limit["im2rec"]["concurrent_over_one_core_x_workers"] == pytest.approx(714 / (2 * 1000 / 2.1))


def test_validate_full_rows_share_their_baselines_im2rec_runs() -> None:
    bench = _bench_module()
    assert bench.CASES["pass"].ours[-2:] == ("--validate", "header")  # like for like: im2rec validates nothing
    assert bench.CASES["pass-full"].ours[-2:] == ("--validate", "full") and bench.CASES["pass-full"].baseline == "pass"
    assert bench.CASES["480-full"].baseline == "480" and bench.CASES["480"].ours[-2:] == ("--validate", "header")
    args = bench.parse_args(["--cases", "256,pass,pass-full"])
    assert args.memory_cases == "256,pass"  # variants are not rerun at --memory-images by default
    with pytest.raises(SystemExit):
        bench.parse_args(["--cases", "256,pass-full"])  # nothing to compare it with


ARCHIVES_SCRIPT = REPO / "bench" / "archives_vs_extract.py"


@pytest.mark.oracle
@pytest.mark.slow
def test_archives_bench_runs_both_sides_to_the_same_records(tmp_path: Path, mxnet_python: str) -> None:
    from imagegen import jpeg

    photos = tmp_path / "photos"  # the suite makes its own data (../shared need not exist where it runs)
    photos.mkdir()
    for number in range(5):
        (photos / f"p{number}.JPEG").write_bytes(jpeg(300 + 20 * number, 260, seed=number))
    completed = subprocess.run(
        [sys.executable, str(ARCHIVES_SCRIPT), "--classes", "3", "--train-per-class", "4", "--val-per-class", "2",
         "--out", str(tmp_path / "bench"), "--mxnet-python", mxnet_python, "--workers", "2", "--samples", str(photos)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO / "bench")})
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads((tmp_path / "bench" / "archives-results.json").read_text())
    for mode in ("256", "pass"):
        row = summary["modes"][mode]
        assert row["ours_records"] == row["theirs_records"] == 18  # 12 train + 6 val, every one on both sides
        assert row["theirs_peak_disk_mib"] > row["theirs_output_mib"]  # the extracted tree was on the disk too
        assert row["speedup"] > 0 and f"| {mode} |" in completed.stdout


def test_valprep_moves_each_val_image_into_its_class_folder(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    try:
        _bench_module()
        spec = importlib.util.spec_from_file_location("archives_vs_extract", ARCHIVES_SCRIPT)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["archives_vs_extract"] = module  # before running it, as dataclasses need
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO / "bench"))
    labels = {"ILSVRC2012_val_00000001.JPEG": "n02", "ILSVRC2012_val_00000002.JPEG": "n01",
              "ILSVRC2012_val_00000003.JPEG": "n02"}
    for name in labels:
        (tmp_path / name).write_bytes(name.encode())
    (tmp_path / "valprep.sh").write_text(module.valprep_script(labels))
    subprocess.run(["bash", str(tmp_path / "valprep.sh"), str(tmp_path)], check=True)
    assert sorted(str(path.relative_to(tmp_path)) for path in tmp_path.glob("n*/*")) == [
        f"{wnid}/{name}" for name, wnid in sorted(labels.items(), key=lambda item: (item[1], item[0]))]
    assert module.allocated_bytes(tmp_path / "n02") > 0 and module.allocated_bytes(tmp_path / "gone") == 0
