#!/usr/bin/env python3
"""From the ILSVRC2012 tars to verified shards: ``recordio-pack`` straight from the archives against what a user
does today (extract the outer and inner tars, sort val into class folders, im2rec ``--list``, im2rec pack).

The archives are ``recordio-pack imagenet fake-archives --photos``: the official layout (a tar of per-class
tars, a flat val tar, a devkit) around the real photos of ``../shared/ref/imagenet-samples``, cycled.

Both sides, per mode (``256``: short side to 256, JPEG q95, im2rec semantics; ``pass``: bytes as they are):

- ours: ``pack TRAIN.tar`` (name train), ``pack VAL.tar --devkit`` (name val), ``verify`` of the output folder;
- theirs: ``tar xf`` the train tar, then each per-class tar into its folder, removing it (the loop the ImageNet
  guides give); ``tar xf`` the val tar and move each file into its class folder (what valprep.sh does; the
  script is written from the devkit's ground truth before the timing); ``im2rec.py --list --recursive`` for
  train and val; ``im2rec.py`` pack for train and val.

Every step is a timed command (``pack_vs_im2rec.run_measured``: dirty pages flushed, untimed, before each; CPU
of the whole process tree). Peak disk is the largest size of the side's work folder (extracted tree, lists,
shards: the allocated blocks of every file) seen by a poller every 0.25 s through all of that side's steps.
Both sides read the archives from the page cache (warmed once before).

Usage: python bench/archives_vs_extract.py --mxnet-python .venv-mxnet/bin/python [--classes 100]
       [--train-per-class 100] [--val-per-class 10] [--workers N] [--modes 256,pass] [--repeats 1]
Results: a printed table and OUT/archives-results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from recordio_pack.options import default_workers

from pack_vs_im2rec import (
    REPO,
    SAMPLES,
    Run,
    become_subreaper,
    find_im2rec,
    recordio_pack_command,
    run_measured,
    save_summary,
)

MIB = 1 << 20
MODES = {
    "256": {"ours": ["--resize", "256", "--upscale", "--reencode", "always", "--quality", "95"],
            "im2rec": ["--resize", "256", "--quality", "95"]},
    "pass": {"ours": ["--reencode", "never", "--validate", "header"], "im2rec": ["--pass-through"]},
}
EXTRACT_TRAIN = """set -e
mkdir -p "$2" && tar -xf "$1" -C "$2" && cd "$2"
for NAME in *.tar; do mkdir -p "${NAME%.tar}"; tar -xf "$NAME" -C "${NAME%.tar}"; rm -f "$NAME"; done
"""


@dataclass
class Step:
    name: str
    run: Run


@dataclass
class Side:
    steps: list[Step] = field(default_factory=list)
    peak_disk_bytes: int = 0
    output_bytes: int = 0  # the shards (and their indexes, lists, manifests) that stay
    records: int = 0

    @property
    def wall_s(self) -> float:
        return sum(step.run.wall_s for step in self.steps)

    @property
    def cpu_s(self) -> float:
        return sum(step.run.cpu_s for step in self.steps)


def allocated_bytes(root: Path) -> int:
    """Blocks allocated to every file under ``root`` (what the disk holds), 0 when it is gone."""
    total = 0
    stack = [root]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(Path(entry.path))
                        else:
                            total += entry.stat(follow_symlinks=False).st_blocks * 512
                    except OSError:
                        pass
        except OSError:
            pass
    return total


class DiskPoller:
    """The largest ``allocated_bytes(root)`` seen, polled every 0.25 s while running (and once at the end)."""

    def __init__(self, root: Path) -> None:
        self.root, self.peak = root, 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, allocated_bytes(self.root))
            self._done.wait(0.25)

    def __enter__(self) -> DiskPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, allocated_bytes(self.root))


def make_archives(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """The fake archives around real photos (kept between runs with the same arguments); their description."""
    identity = [args.classes, args.train_per_class, args.val_per_class, str(args.samples)]
    stamp = folder / "bench-archives.json"
    if stamp.exists():
        made = json.loads(stamp.read_text())
        if made.get("identity") == identity:
            return made
    shutil.rmtree(folder, ignore_errors=True)
    completed = subprocess.run([*recordio_pack_command(), "imagenet", "fake-archives", str(folder), "--classes",
                                str(args.classes), "--train-per-class", str(args.train_per_class), "--val-per-class",
                                str(args.val_per_class), "--photos", str(args.samples), "--json", "-q"],
                               check=True, capture_output=True, text=True)
    made = {"identity": identity, "fake": json.loads(completed.stdout)}
    stamp.write_text(json.dumps(made))
    return made


def valprep_script(val_labels: dict[str, str]) -> str:
    """What valprep.sh does for the real val tar: a folder per class, each image moved into its class's."""
    lines = ["set -e", 'cd "$1"'] + [f"mkdir -p {wnid}" for wnid in sorted(set(val_labels.values()))]
    lines += [f"mv {shlex.quote(name)} {wnid}/" for name, wnid in sorted(val_labels.items())]
    return "\n".join(lines) + "\n"


def idx_records(folder: Path) -> int:
    return sum(sum(1 for line in path.open() if line.strip()) for path in folder.glob("*.idx")
               if not path.name.endswith(".all.idx"))


def run_ours(mode: str, fake: dict[str, Any], work: Path, workers: int) -> Side:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rec, side = work / "rec", Side()
    common = ["--workers", str(workers), "-q", *MODES[mode]["ours"]]
    with DiskPoller(work) as poller:
        side.steps.append(Step("pack train tar", run_measured(
            [*recordio_pack_command(), "pack", fake["train_tar"], str(rec), "--name", "train", *common],
            work / "train.log")))
        side.steps.append(Step("pack val tar", run_measured(
            [*recordio_pack_command(), "pack", fake["val_tar"], str(rec), "--name", "val", "--devkit", fake["devkit"],
             *common], work / "val.log")))
        side.steps.append(Step("verify", run_measured([*recordio_pack_command(), "verify", str(rec), "-q"],
                                                      work / "verify.log")))
    side.peak_disk_bytes, side.output_bytes, side.records = poller.peak, allocated_bytes(rec), idx_records(rec)
    return side


def run_theirs(mode: str, fake: dict[str, Any], work: Path, workers: int, mxnet_python: str, im2rec: Path) -> Side:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    tree, rec, side = work / "imagenet", work / "rec", Side()
    rec.mkdir()
    scripts = work / "scripts"
    scripts.mkdir()
    (scripts / "extract_train.sh").write_text(EXTRACT_TRAIN)
    (scripts / "valprep.sh").write_text(valprep_script(fake["val_labels"]))
    with DiskPoller(work) as poller:
        side.steps.append(Step("extract train (outer + per-class tars)", run_measured(
            ["bash", str(scripts / "extract_train.sh"), fake["train_tar"], str(tree / "train")], work / "x-train.log")))
        side.steps.append(Step("extract val + valprep", run_measured(
            ["bash", "-c", f'mkdir -p "$2" && tar -xf "$1" -C "$2" && bash "$3" "$2"', "extract",
             fake["val_tar"], str(tree / "val"), str(scripts / "valprep.sh")], work / "x-val.log")))
        for split in ("train", "val"):
            side.steps.append(Step(f"im2rec --list {split}", run_measured(
                [mxnet_python, str(im2rec), "--list", "--recursive", str(rec / split), str(tree / split)],
                work / f"list-{split}.log")))
        for split in ("train", "val"):
            side.steps.append(Step(f"im2rec {split}", run_measured(
                [mxnet_python, str(im2rec), str(rec / split), str(tree / split), "--num-thread", str(workers),
                 *MODES[mode]["im2rec"]], work / f"pack-{split}.log")))
    side.peak_disk_bytes, side.output_bytes, side.records = poller.peak, allocated_bytes(rec), idx_records(rec)
    return side


def summarize(args: argparse.Namespace, fake: dict[str, Any], results: dict[str, dict[str, list[Side]]],
              archive_bytes: int) -> dict[str, Any]:
    modes = {}
    for mode, sides in results.items():
        ours_wall = statistics.median(side.wall_s for side in sides["ours"])
        theirs_wall = statistics.median(side.wall_s for side in sides["theirs"])
        last_ours, last_theirs = sides["ours"][-1], sides["theirs"][-1]
        modes[mode] = {
            "ours_wall_s": ours_wall, "theirs_wall_s": theirs_wall, "speedup": theirs_wall / ours_wall,
            "ours_cpu_s": statistics.median(side.cpu_s for side in sides["ours"]),
            "theirs_cpu_s": statistics.median(side.cpu_s for side in sides["theirs"]),
            "ours_peak_disk_mib": last_ours.peak_disk_bytes / MIB,
            "theirs_peak_disk_mib": last_theirs.peak_disk_bytes / MIB,
            "ours_output_mib": last_ours.output_bytes / MIB, "theirs_output_mib": last_theirs.output_bytes / MIB,
            "ours_records": last_ours.records, "theirs_records": last_theirs.records,
            "ours_steps": [(step.name, step.run.wall_s, step.run.cpu_s) for step in last_ours.steps],
            "theirs_steps": [(step.name, step.run.wall_s, step.run.cpu_s) for step in last_theirs.steps],
            "runs": {name: [[asdict(step.run) for step in side.steps] for side in runs] for name, runs in sides.items()},
        }
    images = fake["fake"]["train_images"] + fake["fake"]["val_images"]
    return {"images": images, "train_images": fake["fake"]["train_images"], "val_images": fake["fake"]["val_images"],
            "archive_mib": archive_bytes / MIB, "workers": args.workers, "repeats": args.repeats,
            "loadavg_start": args.loadavg_start, "modes": modes}


def render(summary: dict[str, Any]) -> str:
    lines = [f"{summary['images']} images ({summary['train_images']} train + {summary['val_images']} val, "
             f"archives {summary['archive_mib']:.0f} MiB), {summary['workers']} workers, median of "
             f"{summary['repeats']} run(s)", "",
             "| mode | extract + im2rec | ours (pack tars + verify) | ratio | peak disk theirs | peak disk ours "
             "| ours' shards |", "|---|---|---|---|---|---|---|"]
    for mode, row in summary["modes"].items():
        lines.append(f"| {mode} | {row['theirs_wall_s']:.1f} s (CPU {row['theirs_cpu_s']:.1f} s) | "
                     f"{row['ours_wall_s']:.1f} s (CPU {row['ours_cpu_s']:.1f} s) | **{row['speedup']:.2f}x** | "
                     f"{row['theirs_peak_disk_mib']:.0f} MiB | {row['ours_peak_disk_mib']:.0f} MiB | "
                     f"{row['ours_output_mib']:.0f} MiB |")
    for mode, row in summary["modes"].items():
        lines += ["", f"steps, {mode}:", "| side | step | wall s | CPU s |", "|---|---|---|---|"]
        lines += [f"| theirs | {name} | {wall:.2f} | {cpu:.2f} |" for name, wall, cpu in row["theirs_steps"]]
        lines += [f"| ours | {name} | {wall:.2f} | {cpu:.2f} |" for name, wall, cpu in row["ours_steps"]]
        lines.append(f"records: theirs {row['theirs_records']}, ours {row['ours_records']}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--train-per-class", type=int, default=100)
    parser.add_argument("--val-per-class", type=int, default=10)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of: " + ", ".join(MODES))
    parser.add_argument("--repeats", type=int, default=1, help="runs of each side per mode (medians are shown)")
    parser.add_argument("--samples", default=str(SAMPLES), help="folder of real JPEGs the archives hold")
    parser.add_argument("--out", default=str(REPO / "bench" / "out" / "archives"), help="work folder")
    parser.add_argument("--mxnet-python", default=os.environ.get("RECORDIO_PACK_MXNET_PYTHON")
                        or str(REPO / ".venv-mxnet" / "bin" / "python"))
    parser.add_argument("--im2rec", help="path of im2rec.py (default: the one in --mxnet-python's mxnet)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.loadavg_start = os.getloadavg()
    become_subreaper()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    im2rec = find_im2rec(args.mxnet_python, args.im2rec)
    fake = make_archives(args, out / "archives")
    archives = [Path(fake["fake"][key]) for key in ("train_tar", "val_tar", "devkit")]
    for path in archives:  # into the page cache, for both sides alike
        with open(path, "rb") as stream:
            while stream.read(8 << 20):
                pass
    results: dict[str, dict[str, list[Side]]] = {}
    for mode in args.modes.split(","):
        results[mode] = {"ours": [], "theirs": []}
        for repeat in range(args.repeats):
            order = ("theirs", "ours") if repeat % 2 == 0 else ("ours", "theirs")
            for name in order:
                print(f"{mode}: {name} (run {repeat + 1})", file=sys.stderr, flush=True)
                work = out / "runs" / f"{name}-{mode}"
                side = (run_ours(mode, fake["fake"], work, args.workers) if name == "ours" else
                        run_theirs(mode, fake["fake"], work, args.workers, args.mxnet_python, im2rec))
                results[mode][name].append(side)
    summary = summarize(args, fake, results, sum(path.stat().st_size for path in archives))
    save_summary(summary, out / "archives-results.json", "bench/archives_vs_extract.py", argv)
    print(render(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
