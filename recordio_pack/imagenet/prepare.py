"""From the ILSVRC2012 archives to ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG`` (ImageFolder layout).

- Train: each per-class tar is read in place from the outer tar (byte range, ``pread``) and its files written
  straight to their folder, classes in parallel threads — the 138 GB are never copied twice.  A class is
  written into ``.recordio-pack-prepare/partial/train/<wnid>`` and renamed to ``train/<wnid>`` when complete;
  then its marker (``.recordio-pack-prepare/train/<wnid>.json``: file count, bytes, which archive range) is
  written.  A rerun skips a class whose marker matches its folder and archive, and redoes any other.  So
  ``train/`` only ever holds complete classes.
- Val: each file goes to the class the devkit ground truth gives **for the number in its file name**
  (``ILSVRC2012_val_%08d.JPEG`` -> line %d), never by archive order.  Written into ``partial/val`` under the
  state folder and renamed to ``val/`` when complete; a rerun keeps the files already there, finishes the rest.
- Every member passes ``safetar`` checks; nothing is written outside ``out_dir``.
- At the end the counts are checked; for the real archives (1000 classes) against ILSVRC2012's numbers.
- The label table and ``synsets.txt`` are written every time (``labels`` module).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tarfile
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from recordio_pack.errors import RecordioPackError, RefusedError, UsageError
from recordio_pack.fsutil import atomic_output
from recordio_pack.imagenet.archive import VAL_FILE, ClassTar, list_class_tars
from recordio_pack.imagenet.devkit import Devkit, read_devkit
from recordio_pack.imagenet.labels import label_map, write_label_files
from recordio_pack.imagenet.safetar import iter_files, open_range, write_file
from recordio_pack.progress import NullProgress, Progress, Task, start_task

__all__ = ["ILSVRC2012_COUNTS", "STATE_DIR", "PrepareResult", "prepare"]

# The real archives' numbers (devkit readme; torchvision's and TFDS's split sizes agree).
ILSVRC2012_COUNTS = {"classes": 1000, "train_images": 1_281_167, "val_images": 50_000, "val_per_class": 50}
STATE_DIR = ".recordio-pack-prepare"
DEFAULT_THREADS = 8
log = logging.getLogger(__name__)


@dataclass
class PrepareResult:
    out_dir: str
    labels: str
    label_files: dict[str, str]
    train_classes: int = 0
    train_images: int = 0
    train_classes_resumed: int = 0  # complete from an earlier run, skipped
    val_images: int = 0
    val_classes: int = 0
    val_resumed: bool = False
    counts_checked: str = "consistency only"  # or "ILSVRC2012 totals"
    per_class_train: dict[str, int] = field(default_factory=dict)
    per_class_val: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Stopped(Exception):
    """Raised inside a worker when the run is being abandoned."""


def _read_marker(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_marker(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as stream:
        stream.write(json.dumps(data, sort_keys=True).encode("utf-8"))


def _folder_totals(folder: Path) -> tuple[int, int]:
    """(regular files, bytes) directly in ``folder``; (-1, -1) when it is not a folder."""
    files = total = 0
    try:
        with os.scandir(folder) as items:
            for item in items:
                if item.is_file(follow_symlinks=False):
                    files += 1
                    total += item.stat(follow_symlinks=False).st_size
    except (FileNotFoundError, NotADirectoryError):
        return -1, -1
    return files, total


def _class_complete(marker: dict[str, Any] | None, item: ClassTar, folder: Path) -> bool:
    if not marker or marker.get("offset") != item.offset or marker.get("size") != item.size:
        return False
    return _folder_totals(folder) == (marker.get("files"), marker.get("bytes"))


def _replace_dir(partial: Path, final: Path) -> None:
    if final.exists():  # an incomplete or damaged earlier result (the overwrite guard ran before)
        shutil.rmtree(final)
    os.rename(partial, final)


def _extract_class(fd: int, item: ClassTar, archive: str, out_dir: Path, stop: threading.Event) -> int:
    partial = out_dir / STATE_DIR / "partial" / "train" / item.wnid
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    files = total = 0
    label = f"{archive}:{item.wnid}.tar"
    try:
        with tarfile.open(fileobj=open_range(fd, item.offset, item.size), mode="r:") as inner:
            for member, name in iter_files(inner, label):
                if stop.is_set():
                    raise _Stopped()
                base = name.rsplit("/", 1)[-1]
                if (partial / base).exists():
                    raise RecordioPackError(f"{label}: {base} appears twice")
                source = inner.extractfile(member)
                assert source is not None
                with source:
                    total += write_file(source, partial, base)
                files += 1
    except tarfile.TarError as error:
        raise RecordioPackError(f"{label}: damaged tar: {error}") from None
    _replace_dir(partial, out_dir / "train" / item.wnid)
    _write_marker(out_dir / STATE_DIR / "train" / f"{item.wnid}.json",
                  {"wnid": item.wnid, "files": files, "bytes": total, "offset": item.offset, "size": item.size})
    return files


def _val_complete(marker: dict[str, Any] | None, archive_size: int, val_dir: Path) -> bool:
    if not marker or marker.get("archive_size") != archive_size:
        return False
    per_class = marker.get("per_class", {})
    if not val_dir.is_dir():
        return False
    return sorted(per_class) == sorted(path.name for path in val_dir.iterdir() if path.is_dir()) and all(
        _folder_totals(val_dir / wnid)[0] == count for wnid, count in per_class.items())


def _extract_val(archive: Path, devkit: Devkit, out_dir: Path, stop: threading.Event) -> int:
    partial = out_dir / STATE_DIR / "partial" / "val"
    partial.mkdir(parents=True, exist_ok=True)
    for leftover in partial.glob("*/*.tmp"):  # a write cut short by an interruption
        leftover.unlink()
    per_class: dict[str, int] = {}
    total = 0
    try:
        with tarfile.open(archive, mode="r:") as tar:
            for member, name in iter_files(tar, str(archive)):
                if stop.is_set():
                    raise _Stopped()
                base = name.rsplit("/", 1)[-1]
                match = VAL_FILE.match(base)
                if not match:
                    raise RecordioPackError(f"{archive}: {name!r} is not a validation image "
                                            "(ILSVRC2012_val_%08d.JPEG)")
                try:
                    wnid = devkit.val_wnid(int(match.group(1)))
                except KeyError as error:
                    raise RecordioPackError(f"{archive}: {base}: {error.args[0]}") from None
                destination = partial / wnid / base
                if destination.is_file() and destination.stat().st_size == member.size:
                    total += member.size  # written by an earlier, interrupted run
                else:
                    source = tar.extractfile(member)
                    assert source is not None
                    with source:
                        total += write_file(source, partial, f"{wnid}/{base}")
                per_class[wnid] = per_class.get(wnid, 0) + 1
    except tarfile.TarError as error:
        raise RecordioPackError(f"{archive}: damaged tar: {error}") from None
    files = sum(per_class.values())
    on_disk = sum(max(0, _folder_totals(folder)[0]) for folder in partial.iterdir() if folder.is_dir())
    if on_disk != files:
        raise RecordioPackError(f"{partial}: {on_disk} files but the archive has {files} (a repeated name, or "
                                "files from another archive); remove the folder and rerun")
    _replace_dir(partial, out_dir / "val")
    _write_marker(out_dir / STATE_DIR / "val.json",
                  {"files": files, "bytes": total, "archive_size": archive.stat().st_size,
                   "per_class": dict(sorted(per_class.items()))})
    return files


def _guard_existing(out_dir: Path, overwrite: bool) -> None:
    """Refuse to write into train/ or val/ folders that an earlier prepare run did not make."""
    if (out_dir / STATE_DIR).is_dir() or overwrite:
        return
    occupied = [str(out_dir / name) for name in ("train", "val")
                if (out_dir / name).is_dir() and any((out_dir / name).iterdir())]
    if occupied:
        raise RefusedError(f"{', '.join(occupied)} already hold files not written by prepare; "
                           "pass --overwrite to replace what differs from the archives")


def _check_free_space(out_dir: Path, needed: int) -> None:
    free = shutil.disk_usage(out_dir).free
    if needed > free:
        raise RecordioPackError(f"{out_dir}: needs about {needed / 1e9:.1f} GB free, has {free / 1e9:.1f} GB")


def _check_counts(result: PrepareResult, real: bool) -> None:
    problems = []
    if real:
        expected = ILSVRC2012_COUNTS
        result.counts_checked = "ILSVRC2012 totals"
        if result.train_classes and (result.train_classes, result.train_images) != (
                expected["classes"], expected["train_images"]):
            problems.append(f"train: {result.train_classes} classes, {result.train_images} images "
                            f"(expected {expected['classes']}, {expected['train_images']:,})")
        if result.val_images:
            wrong = {wnid: count for wnid, count in result.per_class_val.items()
                     if count != expected["val_per_class"]}
            if result.val_images != expected["val_images"] or result.val_classes != expected["classes"] or wrong:
                problems.append(f"val: {result.val_images} images in {result.val_classes} classes "
                                f"(expected {expected['val_images']:,} in {expected['classes']}, 50 each)"
                                + (f"; e.g. {sorted(wrong.items())[:3]}" if wrong else ""))
    if problems:
        raise RecordioPackError("counts differ from ILSVRC2012's: " + "; ".join(problems)
                                + " (a truncated or altered archive?)")


def prepare(out_dir: str | Path, *, train_tar: str | Path | None = None, val_tar: str | Path | None = None,
            devkit: str | Path | None = None, labels: str = "sorted", threads: int = 0, overwrite: bool = False,
            check_counts: str = "auto", progress: Progress | None = None) -> PrepareResult:
    """Extract the archives into ``out_dir/train`` and ``out_dir/val``; resumable; see the module docstring.

    ``threads``: classes extracted at once (0: 8).  ``check_counts``: "auto" (ILSVRC2012 totals when the
    devkit or the train tar has 1000 classes), "real" (always) or "none" (consistency only).
    """
    if train_tar is None and val_tar is None:
        raise UsageError("nothing to prepare: give the train archive, the val archive, or both")
    if val_tar is not None and devkit is None:
        raise UsageError("placing validation images needs the devkit (ILSVRC2012_devkit_t12.tar.gz)")
    if check_counts not in ("auto", "real", "none"):
        raise UsageError(f"check_counts must be auto, real or none, got {check_counts!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _guard_existing(out_dir, overwrite)
    kit = read_devkit(devkit) if devkit is not None else None
    classes = list_class_tars(train_tar) if train_tar is not None else []
    mapping = label_map(labels, devkit=kit, wnids=[item.wnid for item in classes] if train_tar else None)
    state = out_dir / STATE_DIR
    state.mkdir(exist_ok=True)
    result = PrepareResult(str(out_dir), labels, write_label_files(mapping, out_dir))

    train_dir = out_dir / "train"
    pending = []
    for item in classes:
        marker = _read_marker(state / "train" / f"{item.wnid}.json")
        if _class_complete(marker, item, train_dir / item.wnid):
            result.per_class_train[item.wnid] = marker["files"]  # type: ignore[index]
            result.train_classes_resumed += 1
        else:
            pending.append(item)
    val_pending = False
    if val_tar is not None:
        val_tar = Path(val_tar)
        result.val_resumed = _val_complete(_read_marker(state / "val.json"), val_tar.stat().st_size,
                                           out_dir / "val")
        val_pending = not result.val_resumed
    _check_free_space(out_dir, sum(item.size for item in pending)
                      + (Path(val_tar).stat().st_size if val_pending and val_tar else 0))
    skipped = result.train_classes_resumed + (1 if result.val_resumed else 0)
    if skipped:
        log.info("%s: %d unit(s) already extracted and checked, skipped", out_dir, skipped)
    task = start_task(progress or NullProgress(), "prepare", "classes", len(pending) + val_pending,
                      status=f"{skipped} already done" if skipped else "")
    if pending:
        train_dir.mkdir(exist_ok=True)
    _run(pending, train_tar, kit, val_tar if val_pending else None, out_dir, threads, task, result)
    for leftover in (state / "partial" / "train", state / "partial" / "val", state / "partial"):
        try:
            leftover.rmdir()  # only when empty: everything was renamed into place
        except OSError:
            pass

    val_marker = _read_marker(state / "val.json") if val_tar is not None else None
    if val_marker:
        result.per_class_val = dict(val_marker["per_class"])
        result.val_images, result.val_classes = val_marker["files"], len(result.per_class_val)
    result.per_class_train = dict(sorted(result.per_class_train.items()))
    result.train_classes, result.train_images = len(result.per_class_train), sum(result.per_class_train.values())
    real = check_counts == "real" or (check_counts == "auto" and (
        (kit is not None and kit.is_full_ilsvrc2012) or len(classes) == ILSVRC2012_COUNTS["classes"]))
    _check_counts(result, real)
    return result


def _run(pending: list[ClassTar], train_tar: str | Path | None, kit: Devkit | None, val_tar: Path | None,
         out_dir: Path, threads: int, task: Task, result: PrepareResult) -> None:
    """Extract the pending units in threads; on any failure or interruption, stop the others and re-raise."""
    if not pending and val_tar is None:
        return
    stop = threading.Event()
    fd = os.open(train_tar, os.O_RDONLY) if pending and train_tar is not None else -1
    pool = ThreadPoolExecutor(max_workers=max(1, threads or DEFAULT_THREADS))
    futures: dict[Future[int], str] = {}
    try:
        if val_tar is not None:
            assert kit is not None
            futures[pool.submit(_extract_val, val_tar, kit, out_dir, stop)] = "val"
        for item in pending:
            futures[pool.submit(_extract_class, fd, item, str(train_tar), out_dir, stop)] = item.wnid
        remaining = set(futures)
        while remaining:
            done, remaining = wait(remaining, return_when=FIRST_COMPLETED)
            for future in done:
                files = future.result()  # re-raises a worker's error here
                name = futures[future]
                if name != "val":
                    result.per_class_train[name] = files
                task.advance(1, f"{'val' if name == 'val' else f'train/{name}'}: {files} files")
    except BaseException:
        stop.set()
        for future in futures:
            future.cancel()
        raise
    finally:
        pool.shutdown(wait=True)
        if fd >= 0:
            os.close(fd)
