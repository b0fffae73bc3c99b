"""Index the uncompressed ILSVRC2012 tars in place: the byte range of every image, nothing extracted.

``ILSVRC2012_img_train.tar`` is a tar of 1000 uncompressed per-class tars (``n01440764.tar`` holding
``n01440764_10026.JPEG`` ...); ``ILSVRC2012_img_val.tar`` is flat (``ILSVRC2012_val_00000001.JPEG`` ...).  An
image's bytes are contiguous in the outer file at ``outer member data offset + inner member data offset``, so
``recordio_pack.sources.RangeSource(container=tar)`` reads each with one ``pread``.  Only tar headers are read
(512 bytes each), in parallel threads since on network disks that is latency-bound.

Entries get the paths the prepared tree would have (``<wnid>/<file>``) and are sorted by that path, so packing
the archive gives the same records as packing ``prepare``'s ``train/`` or ``val/`` folder.
"""

from __future__ import annotations

import os
import re
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from recordio_pack.errors import RecordioPackError, UsageError
from recordio_pack.imagenet.devkit import DEVKIT_NAME, Devkit, read_devkit
from recordio_pack.imagenet.labels import LabelMap, label_map
from recordio_pack.imagenet.safetar import ByteRange, iter_files
from recordio_pack.progress import NullProgress, Progress, start_task
from recordio_pack.sources import Entry, RangeSource

__all__ = ["CLASS_TAR", "VAL_FILE", "ClassTar", "ArchiveImage", "list_class_tars", "index_class_tar",
           "index_train_tar", "index_val_tar", "archive_kind", "train_entries", "val_entries",
           "open_archive_input"]

CLASS_TAR = re.compile(r"^(n\d{8})\.tar$")
VAL_FILE = re.compile(r"^ILSVRC2012_val_(\d{8})\.JPEG$")
INDEX_THREADS = 8


@dataclass(frozen=True)
class ClassTar:
    """One per-class tar inside the train tar: its data's byte range in the outer file."""

    wnid: str
    offset: int
    size: int


@dataclass(frozen=True)
class ArchiveImage:
    """One image inside an archive: ``path`` as in the prepared tree (``<wnid>/<file>``), and its byte range."""

    path: str
    wnid: str
    offset: int
    size: int


def _open_outer(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, mode="r:")  # uncompressed only: byte ranges must be real file offsets
    except (tarfile.TarError, OSError) as error:
        raise RecordioPackError(f"{path}: not an uncompressed tar archive: {error}") from None


def list_class_tars(path: str | Path) -> list[ClassTar]:
    """The per-class tars of a train archive, in archive order; RecordioPackError for any other member."""
    path = Path(path)
    classes = []
    with _open_outer(path) as tar:
        for member, name in iter_files(tar, str(path)):
            match = CLASS_TAR.match(name)
            if not match:
                raise RecordioPackError(f"{path}: {name!r} is not a per-class tar (nXXXXXXXX.tar); "
                                        "is this ILSVRC2012_img_train.tar?")
            classes.append(ClassTar(match.group(1), member.offset_data, member.size))
    if len({item.wnid for item in classes}) != len(classes):
        raise RecordioPackError(f"{path}: a class tar appears twice")
    return classes


def index_class_tar(fd: int, item: ClassTar, archive: str) -> list[ArchiveImage]:
    """The images of one per-class tar read through ``fd`` (the open outer archive), with absolute offsets."""
    label = f"{archive}:{item.wnid}.tar"
    images = []
    try:
        # unbuffered: tarfile seeks over every file's data, so each header costs one 512-byte pread
        reader = ByteRange(fd, item.offset, item.size)
        with tarfile.open(fileobj=reader, mode="r:") as inner:
            for member, name in iter_files(inner, label):
                images.append(ArchiveImage(f"{item.wnid}/{name.rsplit('/', 1)[-1]}", item.wnid,
                                           item.offset + member.offset_data, member.size))
    except tarfile.TarError as error:
        raise RecordioPackError(f"{label}: damaged tar: {error}") from None
    return images


def index_train_tar(path: str | Path, *, threads: int = INDEX_THREADS,
                    progress: Progress | None = None) -> tuple[list[str], list[ArchiveImage]]:
    """``(sorted class WNIDs, images sorted by path)`` of a train archive. ``progress``: a task "index NAME" in
    classes, advanced by 1 per class indexed (status: "WNID: N images")."""
    path = Path(path)
    classes = list_class_tars(path)
    task = start_task(progress or NullProgress(), f"index {path.name}", "classes", len(classes))
    fd = os.open(path, os.O_RDONLY)
    try:
        images: list[ArchiveImage] = []
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            for item, found in zip(classes, pool.map(lambda item: index_class_tar(fd, item, str(path)), classes)):
                images.extend(found)
                task.advance(1, f"{item.wnid}: {len(found)} images")
    finally:
        os.close(fd)
    images.sort(key=lambda image: image.path)
    _check_unique(path, images)
    return sorted(item.wnid for item in classes), images


def index_val_tar(path: str | Path) -> list[tuple[int, ArchiveImage]]:
    """``(image number, image)`` for each file of the flat val archive, sorted by number; ``wnid`` is "" here
    (the devkit supplies it).  RecordioPackError for a member not named ILSVRC2012_val_%08d.JPEG, or a repeat."""
    path = Path(path)
    found: dict[int, ArchiveImage] = {}
    with _open_outer(path) as tar:
        for member, name in iter_files(tar, str(path)):
            base = name.rsplit("/", 1)[-1]
            match = VAL_FILE.match(base)
            if not match:
                raise RecordioPackError(f"{path}: {name!r} is not a validation image (ILSVRC2012_val_%08d.JPEG)")
            number = int(match.group(1))
            if number in found:
                raise RecordioPackError(f"{path}: {base} appears twice")
            found[number] = ArchiveImage(base, "", member.offset_data, member.size)
    return sorted(found.items())


def _check_unique(path: Path, images: list[ArchiveImage]) -> None:
    for before, after in zip(images, images[1:]):
        if before.path == after.path:
            raise RecordioPackError(f"{path}: {after.path} appears twice")


def archive_kind(path: str | Path) -> str:
    """"train" (a tar of per-class tars) or "val" (flat ILSVRC2012_val_*.JPEG), from the first file member."""
    path = Path(path)
    with _open_outer(path) as tar:
        for _member, name in iter_files(tar, str(path)):
            if CLASS_TAR.match(name):
                return "train"
            if VAL_FILE.match(name.rsplit("/", 1)[-1]):
                return "val"
            break
    raise UsageError(f"{path}: neither ILSVRC2012_img_train.tar (per-class tars) nor ILSVRC2012_img_val.tar "
                     "(ILSVRC2012_val_*.JPEG files)")


def _entries(images: list[ArchiveImage], labels: LabelMap) -> list[Entry]:
    return [Entry(index, (float(labels.label(image.wnid)),), image.path, image.offset, image.size)
            for index, image in enumerate(images)]


def train_entries(path: str | Path, labels: str = "sorted", devkit: Devkit | None = None,
                  threads: int = INDEX_THREADS) -> tuple[list[Entry], LabelMap]:
    """Entries (index = position in path order) for every image of the train archive, labelled by convention."""
    wnids, images = index_train_tar(path, threads=threads)
    mapping = label_map(labels, devkit=devkit, wnids=wnids)
    return _entries(images, mapping), mapping


def val_entries(path: str | Path, devkit: Devkit, labels: str = "sorted") -> tuple[list[Entry], LabelMap]:
    """Entries for the val archive: class from the devkit ground truth keyed by the number in each file name."""
    placed = []
    for number, image in index_val_tar(path):
        try:
            wnid = devkit.val_wnid(number)
        except KeyError as error:
            raise RecordioPackError(f"{path}: {image.path}: {error.args[0]}") from None
        placed.append(ArchiveImage(f"{wnid}/{image.path}", wnid, image.offset, image.size))
    placed.sort(key=lambda image: image.path)
    mapping = label_map(labels, devkit=devkit)
    return _entries(placed, mapping), mapping


def _find_devkit(path: Path, devkit: Path | None, needed_for: str) -> Devkit:
    candidate = devkit if devkit is not None else path.parent / DEVKIT_NAME
    if not candidate.exists():
        raise UsageError(f"{needed_for} needs the devkit: pass --devkit PATH/{DEVKIT_NAME} "
                         f"(none found at {candidate})")
    return read_devkit(candidate)


def open_archive_input(path: Path, labels: str = "sorted",
                       devkit: Path | None = None) -> tuple[list[Entry], RangeSource, list[str], str]:
    """What ``pack`` needs to pack an ILSVRC2012 train or val tar directly.

    Returns ``(entries, source, class names by label, label convention)``.  The val archive, and
    ``labels="devkit"``, need the devkit: ``devkit`` or ``ILSVRC2012_devkit_t12.tar.gz`` beside the archive.
    """
    path = Path(path)
    kind = archive_kind(path)
    if kind == "val":
        kit = _find_devkit(path, devkit, "packing the validation archive")
        entries, mapping = val_entries(path, kit, labels)
    else:
        kit = None
        if devkit is not None or labels == "devkit":
            kit = _find_devkit(path, devkit, "--labels devkit")
        entries, mapping = train_entries(path, labels, kit)
    return entries, RangeSource(container=str(path)), mapping.class_names(), labels
