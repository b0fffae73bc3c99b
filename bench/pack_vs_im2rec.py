#!/usr/bin/env python3
"""``recordio-pack pack`` against MXNet's ``im2rec.py``, side by side on the same corpus and the same list.

The corpus is ``--images`` real photos: the JPEGs in ``../shared/ref/imagenet-samples`` repeated as hard links
in class folders (nothing is copied), or, when that folder is missing, the output of ``recordio-pack fake``
repeated the same way.  One ``.lst`` (written by ``recordio-pack list``) feeds both tools.  Each case runs
both tools alternately, ``--repeats`` times; the table shows medians of the wall times.

im2rec validates nothing in pass-through, so the like-for-like rows run ours with ``--validate header``;
labelled variant rows run ours with its default ``--validate full`` against the same im2rec runs.

Measured per run: wall time of the whole command (interpreter start and imports included: the user pays
them), images/s, and peak resident memory over the process tree, polled from ``/proc`` every 50 ms: "max"
is the largest VmHWM (peak RSS) of any one process, "sum" the largest sum of VmRSS over all processes seen
at one poll (shared library pages count once per process, as RSS does).  Also measured in the same run:
the codec limit (the bare loop of full decode + short side to 256 with INTER_LINEAR + JPEG q95 encode, with
each side's OpenCV: in one process alone, and in --workers processes running at the same time, whose combined
rate is the limit the 256 case's throughput is compared with, since cores that share caches, memory bandwidth
and a hypervisor do not each run as fast as one alone), the mean PSNR of both tools' 256-pixel output against a reference (full decode + INTER_AREA resize to the
same size, no encoding), ``recordio-pack --help`` start-up time, and our peak memory at a larger corpus
(``--memory-images``), with the growth per image projected to the 1.28M images of ImageNet train.  CPU time (user + system over the whole process tree, from
RUSAGE_CHILDREN; this script adopts orphaned descendants so none is missed) is shown next to wall time:
on a machine shared with other work it is the steadier of the two.

Usage: python bench/pack_vs_im2rec.py [--images 10000] [--repeats 3] [--workers N] [--out bench/out]
Results: a printed table and OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "ref" / "imagenet-samples"
POLL_S = 0.05
MIB = 1 << 20
IMAGENET_TRAIN = 1_281_167  # images in ILSVRC2012 train: the memory projection's target size
MEMORY_LIMIT_MIB = 200  # the per-process limit
PSNR_MARGIN_DB = 0.5  # issue 12: ours at 256 q95 at least this much above im2rec's mean PSNR


@dataclass(frozen=True)
class Case:
    key: str
    title: str
    im2rec: tuple[str, ...]
    ours: tuple[str, ...]
    target: float  # required speed-up over im2rec
    baseline: str = ""  # a case whose im2rec runs this one shares (only ours runs again): a labelled variant


# im2rec --pass-through validates nothing, and its --resize decodes everything without checking for damage, so
# the like-for-like rows run ours with --validate header; the "--validate full" rows show what our default costs.
CASES = {
    "256": Case("256", "re-encode 256 q95 (im2rec semantics)", ("--resize", "256", "--quality", "95"),
                ("--resize", "256", "--upscale", "--reencode", "always", "--quality", "95"), 1.2),
    "256-1shard": Case("256-1shard", "re-encode 256 q95, ours as one shard (--num-shards 1)", (),
                       ("--resize", "256", "--upscale", "--reencode", "always", "--quality", "95", "--num-shards", "1"),
                       1.2, baseline="256"),
    "480": Case("480", "short side <= 480 (ours: --reencode auto --validate header)",
                ("--resize", "480", "--quality", "95"), ("--resize", "480", "--validate", "header"), 5.0),
    "480-full": Case("480-full", "short side <= 480 (auto), ours with --validate full", (),
                     ("--resize", "480", "--validate", "full"), 5.0, baseline="480"),
    "pass": Case("pass", "pass-through (ours: --validate header)", ("--pass-through",),
                 ("--reencode", "never", "--validate", "header"), 1.5),
    "pass-full": Case("pass-full", "pass-through, ours with --validate full", (),
                      ("--reencode", "never", "--validate", "full"), 1.5, baseline="pass"),
}
PRIMARY_CASES = ",".join(key for key, case in CASES.items() if not case.baseline)


@dataclass
class Run:
    """One measured command."""

    wall_s: float
    peak_max_mib: float  # largest VmHWM of any process in the tree
    peak_main_mib: float  # VmHWM of the command's own process (ours: the parent that holds the list)
    peak_sum_mib: float  # largest sum of VmRSS over the tree at one poll
    processes: int  # distinct processes seen
    cpu_s: float  # user + system CPU of the whole process tree
    records: int = 0


@dataclass
class CaseResult:
    case: str
    title: str
    images: int
    im2rec: list[Run] = field(default_factory=list)
    ours: list[Run] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- process tree


def _descendants(root: int) -> list[int]:
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{pid}/task/{task}/children") as stream:
                    stack.extend(int(child) for child in stream.read().split())
            except OSError:
                pass
    return found


def _memory_kib(pid: int) -> tuple[int, int] | None:
    """(VmHWM, VmRSS) in KiB, or None for a process that is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/status") as stream:
            text = stream.read()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        if line.startswith(("VmHWM:", "VmRSS:")):
            name, value = line.split(":", 1)
            values[name] = int(value.split()[0])
    if len(values) < 2:
        return None
    return values["VmHWM"], values["VmRSS"]


def become_subreaper() -> bool:
    """Adopt orphaned descendants (Linux prctl), so that their CPU time reaches our RUSAGE_CHILDREN.

    A forkserver (ours) outlives the main process by a moment; without this it would be re-parented to init
    and its workers' CPU time lost.
    """
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def _reap_orphans(deadline_s: float = 30.0) -> None:
    """Wait for adopted descendants that are still exiting (we start no other children meanwhile)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.01)


def _children_cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_measured(command: Sequence[str], log: Path, cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> Run:
    """Run ``command`` (output to ``log``) and measure it; CPU is user + system of the whole tree, from
    RUSAGE_CHILDREN. Dirty pages are flushed first, outside the timing, so every run starts with an idle disk.

    Raises RuntimeError with the log's tail when the command fails.
    """
    hwm: dict[int, int] = {}
    peak_sum = [0]
    os.sync()  # untimed: the previous run's deferred write-back (im2rec never fsyncs) must not land in this one
    cpu_before = _children_cpu_s()
    with open(log, "wb") as output:
        started = time.perf_counter()
        process = subprocess.Popen(list(command), stdout=output, stderr=subprocess.STDOUT, cwd=cwd,
                                   env=None if env is None else {**os.environ, **env})
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                total = 0
                for pid in _descendants(process.pid):
                    memory = _memory_kib(pid)
                    if memory:
                        hwm[pid] = max(hwm.get(pid, 0), memory[0])
                        total += memory[1]
                peak_sum[0] = max(peak_sum[0], total)
                done.wait(POLL_S)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = process.wait()
        wall = time.perf_counter() - started
        done.set()
        sampler.join()
    _reap_orphans()
    cpu = _children_cpu_s() - cpu_before
    if code != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(map(str, command))} exited with {code}:\n{tail}")
    return Run(wall, max(hwm.values(), default=0) / 1024, hwm.get(process.pid, 0) / 1024, peak_sum[0] / 1024,
               len(hwm), cpu)


# ---------------------------------------------------------------------------------------------- corpus


def recordio_pack_command() -> list[str]:
    """The installed console script beside this interpreter (what users run), else ``python -m``."""
    script = Path(sys.executable).with_name("recordio-pack")
    if script.exists():
        return [str(script)]
    found = shutil.which("recordio-pack")
    return [found] if found else [sys.executable, "-m", "recordio_pack"]


def source_images(args: argparse.Namespace, out: Path) -> tuple[str, list[tuple[str, Path]]]:
    """(description, [(class name, file)]) of the distinct images the corpus repeats."""
    samples = Path(args.samples)
    if args.source == "samples" or (args.source == "auto" and samples.is_dir()):
        files = sorted(path for path in samples.iterdir() if path.is_file())
        if not files:
            raise SystemExit(f"{samples}: no images")
        return f"{len(files)} real ImageNet photos from {samples}", [(path.name.split("_")[0], path) for path in files]
    fake = out / "fake-source"
    marker = fake / ".bench-complete"
    if not marker.exists():
        shutil.rmtree(fake, ignore_errors=True)
        subprocess.run([*recordio_pack_command(), "fake", str(fake), "--classes", str(args.fake_classes),
                        "--images-per-class", str(args.fake_per_class), "--seed", "0", "-q"], check=True)
        marker.write_text("ok\n")
    files = sorted(path for path in fake.glob("*/*") if path.is_file())
    count = len(files)
    return f"{count} synthetic photos from `recordio-pack fake`", [(path.parent.name, path) for path in files]


def build_corpus(sources: list[tuple[str, Path]], images: int, root: Path) -> None:
    """``root/<class>/r<repeat>_<name>``: image i is source i mod len(sources), hard-linked (symlink if not)."""
    marker = root / ".bench-complete"
    identity = f"{images} {len(sources)} {sources[0][1]}\n"
    if marker.exists() and marker.read_text() == identity:
        return
    shutil.rmtree(root, ignore_errors=True)
    for number in range(images):
        name, source = sources[number % len(sources)]
        target = root / name / f"r{number // len(sources):04d}_{source.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:
            os.symlink(source.resolve(), target)
    marker.write_text(identity)


def write_list(corpus: Path, list_dir: Path) -> Path:
    """One shuffled im2rec list (+ synsets.txt) for both tools, written by ``recordio-pack list``."""
    shutil.rmtree(list_dir, ignore_errors=True)
    list_dir.mkdir(parents=True)
    subprocess.run([*recordio_pack_command(), "list", str(corpus), str(list_dir / "data"), "-q"], check=True,
                   stdout=subprocess.DEVNULL)
    return list_dir / "data.lst"


def warm_cache(sources: list[tuple[str, Path]]) -> None:
    """Read every distinct image once so that neither tool pays for the first, cold read."""
    for _, path in sources:
        path.read_bytes()


# ---------------------------------------------------------------------------------------------- the two tools


def find_im2rec(mxnet_python: str, given: str | None) -> Path:
    if given:
        return Path(given)
    prefix = Path(mxnet_python).parent.parent
    for candidate in sorted(prefix.glob("lib/python3*/site-packages/mxnet/tools/im2rec.py")):
        return candidate
    located = subprocess.run([mxnet_python, "-c", "import mxnet, os; print(os.path.dirname(mxnet.__file__))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    return Path(located) / "tools" / "im2rec.py"


def _idx_records(directory: Path) -> int:
    """Records in the shards' `.idx` files (not in our NAME.all.idx, which indexes the same records again)."""
    return sum(sum(1 for line in path.open() if line.strip()) for path in directory.glob("*.idx")
               if not path.name.endswith(".all.idx"))


def run_im2rec(case: Case, lst: Path, corpus: Path, work: Path, mxnet_python: str, im2rec: Path,
               workers: int) -> Run:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.link(lst, work / "data.lst")
    command = [mxnet_python, str(im2rec), str(work / "data"), str(corpus), "--num-thread", str(workers),
               *case.im2rec]
    run = run_measured(command, work.parent / f"{work.name}.log")
    run.records = _idx_records(work)
    return run


def run_ours(case: Case, lst: Path, corpus: Path, work: Path, workers: int, shards: int) -> Run:
    shutil.rmtree(work, ignore_errors=True)
    command = [*recordio_pack_command(), "pack", str(lst), str(work), "--root", str(corpus), "--name", "data",
               "--workers", str(workers), "--num-shards", str(shards), "-q", *case.ours]
    run = run_measured(command, work.parent / f"{work.name}.log")
    run.records = _idx_records(work)
    return run


# One bare codec loop. It loads and warms up, says "ready", waits for "go" on stdin (so that N copies start
# their loops together), then times its pass over the images; CLOCK_MONOTONIC is system-wide, so the parent can
# line up the copies' start and end times.
CODEC_SCRIPT = r"""
import json, sys, time
import cv2, numpy as np
cv2.setNumThreads(1)
blobs = [np.fromfile(path, dtype=np.uint8) for path in sys.argv[1:]]
def one(blob):
    image = cv2.imdecode(blob, cv2.IMREAD_COLOR)
    h, w = image.shape[:2]
    size = (256, h * 256 // w) if w <= h else (w * 256 // h, 256)
    ok, encoded = cv2.imencode(".jpg", cv2.resize(image, size, interpolation=cv2.INTER_LINEAR),
                               [cv2.IMWRITE_JPEG_QUALITY, 95])
for blob in blobs[:5]:
    one(blob)
jpeg = [line.split(":", 1)[1].strip() for line in cv2.getBuildInformation().splitlines()
        if line.strip().startswith("JPEG:")]
print("ready", flush=True)
sys.stdin.readline()
started, cpu = time.monotonic(), time.process_time()
for blob in blobs:
    one(blob)
ended, cpu = time.monotonic(), time.process_time() - cpu
print(json.dumps({"ms_per_image": 1000 * (ended - started) / len(blobs), "cpu_ms_per_image": 1000 * cpu / len(blobs),
                  "started": started, "ended": ended, "images": len(blobs), "opencv": cv2.__version__,
                  "jpeg": jpeg[0] if jpeg else ""}))
"""


def codec_limit(python: str, files: list[Path], processes: int = 1) -> dict[str, Any]:
    """The bare loop (full decode + short side to 256 with INTER_LINEAR + JPEG q95, OpenCV of ``python``, one
    thread each) in ``processes`` processes running at the same time, each over all of ``files`` in memory.

    Returns ``images_s``: all processes' ``images`` over ``span_s``, from the first start to the last end (the
    throughput N workers could reach with nothing but the codec), ``ms_per_image`` and ``cpu_ms_per_image``:
    medians over the processes of their own figures, plus ``processes``, ``opencv`` and ``jpeg`` (the JPEG
    library in OpenCV's build information). Raises RuntimeError with the output of a loop that fails.
    """
    env = {**os.environ, "OPENCV_FOR_THREADS_NUM": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    children = [subprocess.Popen([python, "-c", CODEC_SCRIPT, *map(str, files)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                for _ in range(processes)]
    reports = []
    try:
        for child in children:  # all loaded and warmed up before any loop starts
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError(f"codec loop of {python} failed:\n{child.communicate()[1][-3000:]}")
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        for child in children:
            output, errors = child.communicate()
            if child.returncode != 0:
                raise RuntimeError(f"codec loop of {python} exited with {child.returncode}:\n{errors[-3000:]}")
            reports.append(json.loads(output.strip().splitlines()[-1]))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    span = max(report["ended"] for report in reports) - min(report["started"] for report in reports)
    images = sum(report["images"] for report in reports)
    return {"processes": processes, "images": images, "span_s": span, "images_s": images / span,
            "ms_per_image": statistics.median(report["ms_per_image"] for report in reports),
            "cpu_ms_per_image": statistics.median(report["cpu_ms_per_image"] for report in reports),
            "opencv": reports[0]["opencv"], "jpeg": reports[0]["jpeg"]}


def startup_s(repeats: int = 7) -> float:
    """Median wall time of ``recordio-pack --help``."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([*recordio_pack_command(), "--help"], check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def mxnet_import_s(mxnet_python: str, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([mxnet_python, "-c", "import mxnet"], check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


# ---------------------------------------------------------------------------------------------- quality


def _encoded_images(rec_dir: Path, wanted: dict[int, Path]) -> dict[int, bytes]:
    """Record id -> stored image bytes, for the records of ``rec_dir/*.rec`` whose id is in ``wanted``."""
    from recordio_pack.format import unpack_payload
    from recordio_pack.recordio import iter_records, mapped

    found = {}
    for rec in sorted(rec_dir.glob("*.rec")):
        with mapped(rec) as data:
            for _, payload in iter_records(data):
                header, image = unpack_payload(payload)
                if header.id in wanted:
                    found[header.id] = bytes(image)
    return found


def _psnr(image: Any, reference: Any) -> float:
    import numpy as np

    error = float(np.mean((image.astype(np.float64) - reference.astype(np.float64)) ** 2))
    return 99.0 if error == 0 else 10 * math.log10(255.0**2 / error)


def mean_psnr(rec_dirs: dict[str, Path], wanted: dict[int, Path]) -> dict[str, Any]:
    """Mean PSNR (dB, over all pixels and channels) of each tool's records whose id is in ``wanted``, against
    the source fully decoded and INTER_AREA-resized to the record's size (no encoding); images both have."""
    import cv2
    import numpy as np

    stored = {tool: _encoded_images(directory, wanted) for tool, directory in rec_dirs.items()}
    common = sorted(set.intersection(*(set(images) for images in stored.values())))
    scores: dict[str, list[float]] = {tool: [] for tool in stored}
    for record_id in common:
        full = cv2.imread(str(wanted[record_id]), cv2.IMREAD_COLOR)
        references: dict[tuple[int, int], Any] = {}
        for tool, images in stored.items():
            decoded = cv2.imdecode(np.frombuffer(images[record_id], dtype=np.uint8), cv2.IMREAD_COLOR)
            size = (decoded.shape[1], decoded.shape[0])
            if size not in references:
                same = size == (full.shape[1], full.shape[0])
                references[size] = full if same else cv2.resize(full, size, interpolation=cv2.INTER_AREA)
            scores[tool].append(_psnr(decoded, references[size]))
    result: dict[str, Any] = {"images": len(common)}
    result.update({f"{tool}_db": statistics.fmean(values) if values else float("nan")
                   for tool, values in scores.items()})
    return result


def psnr_sample(lst: Path, corpus: Path, limit: int) -> dict[int, Path]:
    """List index -> file for the first repeat of each distinct source (up to ``limit``)."""
    from recordio_pack.listing import read_lst

    chosen = {}
    for entry in sorted(read_lst(lst), key=lambda entry: entry.path):
        if Path(entry.path).name.startswith("r0000_"):
            chosen[entry.index] = corpus / entry.path
    return dict(sorted(chosen.items())[:limit])


# ---------------------------------------------------------------------------------------------- report


def _median(runs: list[Run], name: str) -> float:
    return statistics.median(getattr(run, name) for run in runs)


def codec_summary(codec: dict[str, list[dict[str, Any]]], workers: int) -> dict[str, Any]:
    """Medians over the repeats of the codec loops, per side ("ours", "im2rec"): one process alone, and
    ``workers`` processes at the same time (``concurrent_*``; ``concurrent_images_s`` is the limit that the
    packing throughput is compared with), and how the concurrent rate compares with one core x workers."""
    limit: dict[str, Any] = {"workers": workers}
    for side in ("ours", "im2rec"):
        alone, together = codec[side], codec[f"{side}_concurrent"]
        one_ms = statistics.median(entry["ms_per_image"] for entry in alone)
        concurrent_images_s = statistics.median(entry["images_s"] for entry in together)
        limit[side] = {
            "opencv": alone[0]["opencv"], "jpeg": alone[0].get("jpeg", ""),
            "ms_per_image": one_ms, "cpu_ms_per_image": statistics.median(entry["cpu_ms_per_image"] for entry in alone),
            "images_s_core": 1000 / one_ms, "one_core_x_workers_images_s": 1000 / one_ms * workers,
            "concurrent_images_s": concurrent_images_s,
            "concurrent_ms_per_image": statistics.median(entry["ms_per_image"] for entry in together),
            "concurrent_cpu_ms_per_image": statistics.median(entry["cpu_ms_per_image"] for entry in together),
            "concurrent_over_one_core_x_workers": concurrent_images_s / (1000 / one_ms * workers)}
    return limit


def summarize(args: argparse.Namespace, cases: list[CaseResult], codec: dict[str, list[dict[str, Any]]],
              psnr: dict[str, Any], startup: float, mx_import: float, memory: list[dict[str, Any]],
              corpus: str) -> dict[str, Any]:
    """Every figure of the table, with the targets and whether each is met."""
    rows = []
    for result in cases:
        case = CASES[result.case]
        im2rec_wall, ours_wall = _median(result.im2rec, "wall_s"), _median(result.ours, "wall_s")
        rows.append({
            "case": result.case, "title": result.title, "images": result.images,
            "im2rec_wall_s": im2rec_wall, "im2rec_images_s": result.images / im2rec_wall,
            "ours_wall_s": ours_wall, "ours_images_s": result.images / ours_wall,
            "speedup": im2rec_wall / ours_wall, "target": case.target,
            "im2rec_cpu_ms": 1000 * _median(result.im2rec, "cpu_s") / result.images,
            "ours_cpu_ms": 1000 * _median(result.ours, "cpu_s") / result.images,
            "im2rec_walls": [run.wall_s for run in result.im2rec], "ours_walls": [run.wall_s for run in result.ours],
            "im2rec_peak_max_mib": max(run.peak_max_mib for run in result.im2rec),
            "im2rec_peak_sum_mib": max(run.peak_sum_mib for run in result.im2rec),
            "im2rec_processes": max(run.processes for run in result.im2rec),
            "ours_peak_max_mib": max(run.peak_max_mib for run in result.ours),
            "ours_peak_main_mib": max(run.peak_main_mib for run in result.ours),
            "im2rec_peak_main_mib": max(run.peak_main_mib for run in result.im2rec),
            "ours_peak_sum_mib": max(run.peak_sum_mib for run in result.ours),
            "ours_processes": max(run.processes for run in result.ours),
            "records_ok": all(run.records == result.images for run in result.im2rec + result.ours),
        })
        rows[-1]["cpu_ratio"] = rows[-1]["im2rec_cpu_ms"] / rows[-1]["ours_cpu_ms"]
        rows[-1]["ours_cpu_per_wall"] = _median(result.ours, "cpu_s") / ours_wall  # cores kept busy, on average
        rows[-1]["met"] = rows[-1]["speedup"] >= case.target
    limit = codec_summary(codec, args.workers)
    by_case = {row["case"]: row for row in rows}
    for row in rows:  # the 256 re-encode is the codec loop's own work: % of the concurrent limit, each side's OpenCV
        if row["case"] == "256":
            row["ours_limit_percent"] = 100 * row["ours_images_s"] / limit["ours"]["concurrent_images_s"]
            row["im2rec_limit_percent"] = 100 * row["im2rec_images_s"] / limit["im2rec"]["concurrent_images_s"]
    if "256" in by_case:
        row = by_case["256"]
        limit["ours_efficiency"] = row["ours_limit_percent"] / 100
        limit["im2rec_efficiency"] = row["im2rec_limit_percent"] / 100
        limit["ours_cpu_efficiency"] = limit["ours"]["concurrent_cpu_ms_per_image"] / row["ours_cpu_ms"]
        limit["im2rec_cpu_efficiency"] = limit["im2rec"]["concurrent_cpu_ms_per_image"] / row["im2rec_cpu_ms"]
        limit["met"] = limit["ours_efficiency"] >= 0.9
    peak_all = max([row["ours_peak_max_mib"] for row in rows] + [entry["peak_max_mib"] for entry in memory])
    flat = all(entry["flat"] for entry in memory)
    return {
        "corpus": corpus, "images": args.images, "repeats": args.repeats, "workers": args.workers,
        "shards": args.shards, "cpus": os.cpu_count(), "loadavg_start": args.loadavg_start,
        "loadavg_end": os.getloadavg(),
        "cases": rows, "codec_limit": limit, "psnr": psnr, "memory": memory,
        "memory_target": {"peak_max_mib": peak_all, "limit_mib": MEMORY_LIMIT_MIB, "flat": flat,
                          "met": peak_all <= MEMORY_LIMIT_MIB and flat},
        "startup": {"help_s": startup, "target_s": 0.3, "met": startup < 0.3, "mxnet_import_s": mx_import},
    }


def _yes(flag: bool | None) -> str:
    return "n/a" if flag is None else ("yes" if flag else "no")


def _table(header: Sequence[str], rows: list[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def _percent(row: dict[str, Any], name: str) -> str:
    return f"{row[name]:.1f}" if name in row else ""


def _throughput_table(summary: dict[str, Any]) -> list[str]:
    workers = summary["workers"]
    header = ("case", "im2rec s", "im2rec img/s", "im2rec CPU ms/img", "ours s", "ours img/s", "ours CPU ms/img",
              "speed-up x", "CPU ratio x", "target x", "met", f"im2rec % of codec limit ({workers} at once)",
              f"ours % of codec limit ({workers} at once)")
    rows = [(row["title"], f"{row['im2rec_wall_s']:.2f}", f"{row['im2rec_images_s']:.0f}", f"{row['im2rec_cpu_ms']:.2f}",
             f"{row['ours_wall_s']:.2f}", f"{row['ours_images_s']:.0f}", f"{row['ours_cpu_ms']:.2f}",
             f"{row['speedup']:.2f}", f"{row['cpu_ratio']:.2f}", f"{row['target']:.1f}", _yes(row["met"]),
             _percent(row, "im2rec_limit_percent"), _percent(row, "ours_limit_percent"))
            for row in summary["cases"]]
    return _table(header, rows)


def _memory_table(summary: dict[str, Any]) -> list[str]:
    header = ("peak RSS in MiB, case", "images", "im2rec max/process", "im2rec main", "im2rec sum",
              "im2rec processes", "ours max/process", "ours main", "ours sum", "ours processes")
    rows = [(row["title"], row["images"],
             *(("", "", "", "") if CASES[row["case"]].baseline else  # im2rec's runs are the baseline's: shown there
               (f"{row['im2rec_peak_max_mib']:.0f}", f"{row['im2rec_peak_main_mib']:.0f}",
                f"{row['im2rec_peak_sum_mib']:.0f}", row["im2rec_processes"])),
             f"{row['ours_peak_max_mib']:.0f}", f"{row['ours_peak_main_mib']:.0f}", f"{row['ours_peak_sum_mib']:.0f}",
             row["ours_processes"])
            for row in summary["cases"]]
    rows += [(entry["title"], entry["images"], "", "", "", "", f"{entry['peak_max_mib']:.0f}",
              f"{entry['peak_main_mib']:.0f}", f"{entry['peak_sum_mib']:.0f}", entry["processes"])
             for entry in summary["memory"]]
    return _table(header, rows)


def _codec_rows(limit: dict[str, Any]) -> list[Sequence[Any]]:
    workers = limit["workers"]
    rows: list[Sequence[Any]] = []
    for side, whose in (("ours", "ours"), ("im2rec", "im2rec's")):
        figures = limit[side]
        name = f"codec limit, {whose} OpenCV {figures['opencv']}"
        rows += [(f"{name}, one core: ms/image", f"{figures['ms_per_image']:.3f}", "", ""),
                 (f"{name}, one core: CPU ms/image", f"{figures['cpu_ms_per_image']:.3f}", "", ""),
                 (f"{name}, one core x {workers}: images/s", f"{figures['one_core_x_workers_images_s']:.0f}", "", ""),
                 (f"{name}, {workers} loops at once: ms/image per loop", f"{figures['concurrent_ms_per_image']:.3f}",
                  "", ""),
                 (f"{name}, {workers} loops at once: CPU ms/image per loop",
                  f"{figures['concurrent_cpu_ms_per_image']:.3f}", "", ""),
                 (f"{name}, {workers} loops at once: images/s (the codec limit)",
                  f"{figures['concurrent_images_s']:.0f}", "", ""),
                 (f"{name}, {workers} loops at once over one core x {workers}, %",
                  f"{100 * figures['concurrent_over_one_core_x_workers']:.1f}", "", "")]
    return rows


def _measures_table(summary: dict[str, Any]) -> list[str]:
    limit, psnr, start, memory = summary["codec_limit"], summary["psnr"], summary["startup"], summary["memory_target"]
    workers = limit["workers"]
    rows = _codec_rows(limit)
    if "ours_efficiency" in limit:
        rows += [(f"ours at 256 q95: images/s over the codec limit ({workers} loops at once, ours OpenCV), %",
                  f"{100 * limit['ours_efficiency']:.1f}", "90", _yes(limit["met"])),
                 (f"im2rec at 256 q95: images/s over the codec limit ({workers} loops at once, its OpenCV), %",
                  f"{100 * limit['im2rec_efficiency']:.1f}", "", ""),
                 ("ours at 256 q95: codec CPU ms (loops at once) over our CPU ms per image, %",
                  f"{100 * limit['ours_cpu_efficiency']:.1f}", "", ""),
                 ("im2rec at 256 q95: codec CPU ms (loops at once) over im2rec CPU ms per image, %",
                  f"{100 * limit['im2rec_cpu_efficiency']:.1f}", "", "")]
    one_shard = next((row for row in summary["cases"] if row["case"] == "256-1shard"), None)
    if one_shard is not None:
        busy = one_shard["ours_cpu_per_wall"]
        rows += [(f"ours at 256 q95, one shard, {workers} workers: CPU s / wall s (cores kept busy)", f"{busy:.2f}",
                  f"{0.9 * workers:.1f}", _yes(busy >= 0.9 * workers))]
    if psnr:
        rows += [(f"mean PSNR at 256, im2rec, dB ({psnr['images']} images)", f"{psnr['im2rec_db']:.2f}", "", ""),
                 (f"mean PSNR at 256, ours, dB ({psnr['images']} images; target: im2rec's + {PSNR_MARGIN_DB} dB)",
                  f"{psnr['ours_db']:.2f}", f"{psnr['im2rec_db'] + PSNR_MARGIN_DB:.2f}", _yes(psnr["met"]))]
    rows += [("recordio-pack --help, s", f"{start['help_s']:.3f}", "0.3", _yes(start["met"])),
             ("python -c 'import mxnet' (part of im2rec's start-up), s", f"{start['mxnet_import_s']:.3f}", "", ""),
             ("ours: peak RSS of one process over all runs, MiB", f"{memory['peak_max_mib']:.0f}",
              f"{MEMORY_LIMIT_MIB}", _yes(memory["peak_max_mib"] <= MEMORY_LIMIT_MIB))]
    for entry in summary["memory"]:
        span = f"{entry['title']}, {entry['base_images']} -> {entry['images']} images"
        rows += [(f"ours: main process peak RSS growth, {span}, bytes/image", f"{entry['main_bytes_per_image']:.0f}",
                  "", ""),
                 (f"ours: largest process peak RSS growth, {span}, bytes/image", f"{entry['max_bytes_per_image']:.0f}",
                  "", ""),
                 (f"ours: projected peak RSS of one process at {IMAGENET_TRAIN} images, {entry['title']}, MiB",
                  f"{max(entry['projected_max_mib'], entry['projected_main_mib']):.0f}", f"{MEMORY_LIMIT_MIB}",
                  _yes(entry["flat"]))]
    return _table(("measure", "value", "target", "met"), rows)


def render(summary: dict[str, Any]) -> str:
    """The results as markdown tables (plain numbers, so that scripts can parse them)."""
    limit = summary["codec_limit"]
    head = (f"corpus: {summary['corpus']}; {summary['images']} images; {summary['workers']} workers "
            f"(im2rec --num-thread {summary['workers']}, ours --num-shards {summary['shards']}); medians of "
            f"{summary['repeats']} alternating runs; {summary['cpus']} CPUs, load average (1 min) "
            f"{summary['loadavg_start'][0]:.2f} at the start, {summary['loadavg_end'][0]:.2f} at the end; "
            + "; ".join(f"{side}: OpenCV {limit[side]['opencv']} (JPEG: {limit[side]['jpeg'] or 'not reported'})"
                        for side in ("ours", "im2rec")))
    return "\n".join([head, "", *_throughput_table(summary), "", *_memory_table(summary), "",
                      *_measures_table(summary)])


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from recordio_pack.options import default_workers

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000, help="corpus size")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each tool per case (medians are shown)")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="worker processes for both tools (im2rec --num-thread)")
    parser.add_argument("--shards", type=int, default=0, help="our --num-shards (0: 4 per worker)")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of the cases")
    parser.add_argument("--memory-images", type=int, default=-1,
                        help="second corpus size for the flat-memory check, ours only (-1: 5 x --images, 0: skip)")
    parser.add_argument("--memory-cases", help=f"cases run at --memory-images (default: those of --cases among "
                        f"{PRIMARY_CASES})")
    parser.add_argument("--psnr-images", type=int, default=1000, help="distinct images compared for PSNR (0: skip)")
    parser.add_argument("--codec-images", type=int, default=1000, help="distinct images timed for the codec limit")
    parser.add_argument("--out", default=str(REPO / "bench" / "out"), help="work folder (corpus, lists, outputs)")
    parser.add_argument("--mxnet-python", default=os.environ.get("RECORDIO_PACK_MXNET_PYTHON")
                        or str(REPO / ".venv-mxnet" / "bin" / "python"), help="interpreter with mxnet 1.9.1")
    parser.add_argument("--im2rec", help="path of im2rec.py (default: the one in --mxnet-python's mxnet)")
    parser.add_argument("--source", choices=["auto", "samples", "fake"], default="auto",
                        help="auto: --samples when present, else `recordio-pack fake`")
    parser.add_argument("--samples", default=str(SAMPLES), help="folder of real JPEGs to repeat")
    parser.add_argument("--fake-classes", type=int, default=100, help="fake source: classes")
    parser.add_argument("--fake-per-class", type=int, default=10, help="fake source: images per class")
    args = parser.parse_args(argv)
    cases = args.cases.split(",")
    args.memory_cases = args.memory_cases or ",".join(key for key in cases if key in PRIMARY_CASES.split(","))
    unknown = [case for case in f"{args.cases},{args.memory_cases}".split(",") if case not in CASES]
    if unknown or args.images <= 0 or args.repeats <= 0 or args.workers <= 0:
        parser.error(f"bad --cases {unknown}" if unknown else "--images, --repeats and --workers must be positive")
    orphans = [key for key in cases if CASES[key].baseline and CASES[key].baseline not in cases]
    if orphans:
        parser.error(f"--cases {orphans[0]} needs its baseline case {CASES[orphans[0]].baseline} too")
    args.shards = args.shards or 4 * args.workers
    if args.memory_images < 0:
        args.memory_images = 5 * args.images
    return args


def _measure_cases(args: argparse.Namespace, lst: Path, corpus: Path, out: Path, im2rec: Path,
                   unique: list[Path]) -> tuple[list[CaseResult], dict[str, list[Any]]]:
    """The alternating runs: per repeat, the codec limit (one process, then --workers processes at once, with
    each side's OpenCV), then per case im2rec and ours (order flips; a variant case runs ours only and shares
    its baseline's im2rec runs)."""
    results = [CaseResult(key, CASES[key].title, args.images) for key in args.cases.split(",")]
    codec: dict[str, list[Any]] = {"ours": [], "im2rec": [], "ours_concurrent": [], "im2rec_concurrent": []}
    for repeat in range(args.repeats):
        for name, python in (("ours", sys.executable), ("im2rec", args.mxnet_python)):
            codec[name].append(codec_limit(python, unique[:args.codec_images]))
            codec[f"{name}_concurrent"].append(codec_limit(python, unique[:args.codec_images], args.workers))
            print(f"  [{repeat + 1}/{args.repeats}] codec {name:<6} one core {codec[name][-1]['ms_per_image']:.3f} "
                  f"ms/img; {args.workers} at once {codec[f'{name}_concurrent'][-1]['ms_per_image']:.3f} ms/img each, "
                  f"{codec[f'{name}_concurrent'][-1]['images_s']:.0f} img/s", file=sys.stderr, flush=True)
        for result in results:
            case = CASES[result.case]
            order = ("im2rec", "ours") if repeat % 2 == 0 else ("ours", "im2rec")
            for tool in order:
                if tool == "im2rec" and case.baseline:
                    continue
                work = out / "runs" / f"{tool}-{case.key}"
                if tool == "im2rec":
                    run = run_im2rec(case, lst, corpus, work, args.mxnet_python, im2rec, args.workers)
                else:
                    run = run_ours(case, lst, corpus, work, args.workers, args.shards)
                getattr(result, tool).append(run)
                print(f"  [{repeat + 1}/{args.repeats}] {case.key:>4} {tool:<6} {run.wall_s:7.2f} s  "
                      f"{args.images / run.wall_s:7.0f} img/s  {1000 * run.cpu_s / args.images:6.2f} CPU ms/img  "
                      f"peak {run.peak_max_mib:5.0f} MiB/process",
                      file=sys.stderr, flush=True)
    by_key = {result.case: result for result in results}
    for result in results:
        if CASES[result.case].baseline:
            result.im2rec = by_key[CASES[result.case].baseline].im2rec
    return results, codec


def _memory_runs(args: argparse.Namespace, sources: list[tuple[str, Path]], out: Path,
                 results: list[CaseResult]) -> list[dict[str, Any]]:
    """Ours once per case on a ``--memory-images`` corpus, next to the peaks at ``--images``."""
    if args.memory_images <= 0:
        return []
    corpus = out / f"corpus-{args.memory_images}"
    build_corpus(sources, args.memory_images, corpus)
    lst = write_list(corpus, out / f"list-{args.memory_images}")
    entries = []
    for result in results:
        case = CASES[result.case]
        if case.key not in args.memory_cases.split(","):
            continue
        work = out / "runs" / f"ours-{case.key}-{args.memory_images}"
        run = run_ours(case, lst, corpus, work, args.workers, args.shards)
        shutil.rmtree(work, ignore_errors=True)  # only its peak memory matters; the shards take gigabytes
        print(f"  [memory] {case.key:>4} ours   {run.wall_s:7.2f} s  {args.memory_images / run.wall_s:7.0f} img/s  "
              f"peak {run.peak_max_mib:5.0f} MiB/process", file=sys.stderr, flush=True)
        entries.append(_memory_entry(case, result, run, args.images, args.memory_images))
    return entries


def _memory_entry(case: Case, result: CaseResult, run: Run, base: int, images: int) -> dict[str, Any]:
    """Peaks at two corpus sizes, the growth per image, and the straight-line projection to ImageNet train.

    "flat" means the projected peak of every process at ``IMAGENET_TRAIN`` images stays within the 200 MiB
    target: a peak that grows by a few hundred bytes per image looks flat between 10,000 and 50,000 images
    and is not at 1.28 million.
    """
    entry: dict[str, Any] = {
        "case": case.key, "title": case.title, "base_images": base, "images": images,
        "base_peak_max_mib": max(r.peak_max_mib for r in result.ours), "peak_max_mib": run.peak_max_mib,
        "base_peak_main_mib": max(r.peak_main_mib for r in result.ours), "peak_main_mib": run.peak_main_mib,
        "base_peak_sum_mib": max(r.peak_sum_mib for r in result.ours), "peak_sum_mib": run.peak_sum_mib,
        "processes": run.processes, "wall_s": run.wall_s, "records_ok": run.records == images}
    for name in ("max", "main"):
        slope = max(0.0, entry[f"peak_{name}_mib"] - entry[f"base_peak_{name}_mib"]) / max(1, images - base)
        entry[f"{name}_bytes_per_image"] = slope * MIB
        entry[f"projected_{name}_mib"] = entry[f"peak_{name}_mib"] + slope * max(0, IMAGENET_TRAIN - images)
    entry["flat"] = max(entry["projected_max_mib"], entry["projected_main_mib"]) <= MEMORY_LIMIT_MIB
    return entry


def save_summary(summary: dict[str, Any], path: Path, script: str, argv: Sequence[str] | None) -> None:
    """``summary`` with the command that made it (``script`` and its arguments) as JSON at ``path``."""
    summary["command"] = " ".join(["python", script, *(argv if argv is not None else sys.argv[1:])])
    path.write_text(json.dumps(summary, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.loadavg_start = os.getloadavg()
    become_subreaper()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not Path(args.mxnet_python).exists():
        raise SystemExit(f"{args.mxnet_python}: no mxnet interpreter (`make bench` builds it)")
    im2rec = find_im2rec(args.mxnet_python, args.im2rec)
    description, sources = source_images(args, out)
    corpus = out / f"corpus-{args.images}"
    build_corpus(sources, args.images, corpus)
    lst = write_list(corpus, out / f"list-{args.images}")
    warm_cache(sources)
    unique = [path for _, path in sources]
    print(f"corpus: {args.images} images ({description}) in {corpus}", file=sys.stderr, flush=True)

    results, codec = _measure_cases(args, lst, corpus, out, im2rec, unique)
    psnr: dict[str, Any] = {}
    if "256" in args.cases.split(",") and args.psnr_images > 0:
        wanted = psnr_sample(lst, corpus, args.psnr_images)
        psnr = mean_psnr({"im2rec": out / "runs" / "im2rec-256", "ours": out / "runs" / "ours-256"}, wanted)
        psnr["met"] = psnr["ours_db"] >= psnr["im2rec_db"] + PSNR_MARGIN_DB
    memory = _memory_runs(args, sources, out, results)
    startup = startup_s()
    mx_import = mxnet_import_s(args.mxnet_python, args.repeats)
    summary = summarize(args, results, codec, psnr, startup, mx_import, memory, description)
    save_summary(summary, out / "results.json", "bench/pack_vs_im2rec.py", argv)
    print(render(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
