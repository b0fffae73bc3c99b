"""A small fake ILSVRC2012 in the official archive layout, for tests and demos (``imagenet fake-archives``).

Writes into OUT:

- ``ILSVRC2012_img_train.tar``: uncompressed tar of per-class tars ``<wnid>.tar`` (in shuffled order), each
  holding ``<wnid>_<n>.JPEG`` files; one of them is a CMYK JPEG and one a PNG, both named ``.JPEG`` like the
  real oddities (their paths are in the result's ``awkward``).
- ``ILSVRC2012_img_val.tar``: flat ``ILSVRC2012_val_%08d.JPEG`` files, members in shuffled order.
- ``ILSVRC2012_devkit_t12.tar.gz``: ``data/meta.mat`` (scipy ``savemat``, the devkit's ``synsets`` struct
  array: leaf classes with ILSVRC2012_ID 1..N in an order that differs from sorted WNID order, plus ancestor
  entries with children) and ``data/ILSVRC2012_validation_ground_truth.txt``.

Pixels come from ``recordio_pack.fakes.images``' photo-like generator, or, with ``photos``, each image is the bytes
of a real JPEG from that folder (taken in sorted order, over again when there are fewer than images; no awkward
members then): archives of real photos for benchmarks.  The same arguments give byte-identical archives (fixed
tar header fields, gzip mtime 0, a fixed MAT-file header text).
"""

from __future__ import annotations

import gzip
import io
import tarfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recordio_pack.errors import RecordioPackError, RefusedError, UsageError
from recordio_pack.fakes.images import ImagePlan, class_ids, encode_image, plan_image, render_image
from recordio_pack.fsutil import atomic_output
from recordio_pack.imagenet.devkit import DEVKIT_NAME, GROUND_TRUTH, META_MAT

__all__ = ["TRAIN_NAME", "VAL_NAME", "FakeArchives", "make_fake_archives"]

TRAIN_NAME = "ILSVRC2012_img_train.tar"
VAL_NAME = "ILSVRC2012_img_val.tar"
DEVKIT_DIR = "ILSVRC2012_devkit_t12"
_MTIME = 1_335_830_400  # 2012-05-01, a fixed time for every tar header
_STREAM = 61  # random streams of their own, apart from those recordio_pack.fakes.images uses
_MAT_HEADER = b"MATLAB 5.0 MAT-file, written by recordio-pack imagenet fake-archives"


@dataclass
class FakeArchives:
    """What ``make_fake_archives`` wrote.  ``classes`` is sorted; ``devkit_order`` is by ILSVRC2012_ID."""

    out: str
    train_tar: str
    val_tar: str
    devkit: str
    classes: list[str]
    devkit_order: list[str]
    train_images: int
    val_images: int
    train_per_class: dict[str, int] = field(default_factory=dict)
    val_labels: dict[str, str] = field(default_factory=dict)  # val file name -> wnid
    awkward: dict[str, str] = field(default_factory=dict)  # "<wnid>/<file>" -> "cmyk_jpeg" | "png_named_jpeg"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _tarinfo(name: str, size: int, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.uid, info.gid, info.uname, info.gname = size, _MTIME, 0, 0, "", ""
    info.type, info.mode = (tarfile.DIRTYPE, 0o755) if directory else (tarfile.REGTYPE, 0o644)
    return info


def _tar_bytes(files: list[tuple[str, bytes]], directories: tuple[str, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in directories:
            tar.addfile(_tarinfo(name, 0, directory=True))
        for name, data in files:
            tar.addfile(_tarinfo(name, len(data)), io.BytesIO(data))
    return buffer.getvalue()


def _photo(seed: int, stream: int, class_index: int, image_index: int, max_side: int) -> np.ndarray:
    plan = plan_image(seed, class_index, image_index)
    longest = max(plan.width, plan.height)
    if max_side and longest > max_side:
        plan = ImagePlan(max(8, plan.width * max_side // longest), max(8, plan.height * max_side // longest),
                         plan.grayscale, plan.quality)
    return render_image(plan, np.random.default_rng([seed, _STREAM, stream, class_index, image_index]))


def _awkward(kind: str, pixels: np.ndarray) -> bytes:
    """A CMYK JPEG (through Pillow, as the real ones carry an Adobe marker) or a PNG, from BGR pixels."""
    import cv2

    if pixels.ndim == 2:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR)
    if kind == "png_named_jpeg":
        ok, encoded = cv2.imencode(".png", pixels)
        if not ok:
            raise RecordioPackError("OpenCV could not encode a PNG")
        return encoded.tobytes()
    try:
        from PIL import Image
    except ImportError:
        raise RecordioPackError("the CMYK JPEG needs Pillow: pip install 'recordio-pack[fake]'") from None
    buffer = io.BytesIO()
    cmyk = Image.fromarray(cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)).convert("CMYK")
    cmyk.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _meta_mat(leaves: list[str], ancestors: list[str], train_counts: dict[str, int]) -> bytes:
    """The devkit's meta.mat: a (N, 1) ``synsets`` struct array, leaves first (IDs 1..N), then ancestors."""
    try:
        import scipy.io
    except ImportError:
        raise RecordioPackError("writing meta.mat needs scipy: pip install 'recordio-pack[fake]'") from None
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
              "num_train_images"]
    synsets = np.zeros((len(leaves) + len(ancestors), 1), dtype=[(name, object) for name in fields])
    for index, wnid in enumerate(leaves):
        synsets[index, 0] = (np.array([[index + 1]], np.uint16), wnid,
                             f"fake class {wnid}, synthetic {index + 1}", "a synthetic class for tests",
                             np.array([[0]], np.uint16), np.zeros((1, 0), np.uint16), np.array([[0]], np.uint16),
                             np.array([[train_counts[wnid]]], np.uint16))
    # ancestors: the first holds the first half of the leaves, the second the rest and the first ancestor
    half = max(1, len(leaves) // 2)
    groups = [list(range(1, half + 1)), list(range(half + 1, len(leaves) + 1)) + [len(leaves) + 1]]
    for offset, (wnid, children) in enumerate(zip(ancestors, groups)):
        ilsvrc_id = len(leaves) + offset + 1
        synsets[ilsvrc_id - 1, 0] = (np.array([[ilsvrc_id]], np.uint16), wnid, f"fake ancestor {wnid}",
                                     "a synthetic group", np.array([[len(children)]], np.uint16),
                                     np.array([children], np.uint16), np.array([[offset + 1]], np.uint16),
                                     np.array([[0]], np.uint16))
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"synsets": synsets}, format="5")
    data = bytearray(buffer.getvalue())
    data[:116] = _MAT_HEADER.ljust(116)  # savemat puts the current time here; keep the output reproducible
    return bytes(data)


def _devkit_bytes(meta: bytes, ground_truth: list[int]) -> bytes:
    truth = "".join(f"{value}\n" for value in ground_truth).encode("ascii")
    readme = b"A fake ILSVRC2012 devkit written by recordio-pack for tests; not the real one.\n"
    tar = _tar_bytes([(f"{DEVKIT_DIR}/{META_MAT}", meta), (f"{DEVKIT_DIR}/{GROUND_TRUTH}", truth),
                      (f"{DEVKIT_DIR}/readme.txt", readme)], (f"{DEVKIT_DIR}/", f"{DEVKIT_DIR}/data/"))
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as stream:
        stream.write(tar)
    return buffer.getvalue()


def _shuffled(rng: np.random.Generator, count: int) -> list[int]:
    """A seeded permutation of range(count) that is never the identity (for count > 1)."""
    order = [int(index) for index in rng.permutation(count)]
    return order[::-1] if order == sorted(order) else order


def _write(path: Path, data: bytes) -> None:
    with atomic_output(path) as stream:
        stream.write(data)


def _photo_files(folder: str | Path) -> list[Path]:
    """The JPEGs under ``folder`` (any depth), sorted; UsageError when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such folder (--photos takes a folder of JPEG files)")
    files = sorted(path for path in folder.rglob("*") if path.suffix.lower() in (".jpeg", ".jpg") and path.is_file())
    if not files:
        raise UsageError(f"{folder}: no .JPEG/.jpg files in it")
    return files


def make_fake_archives(out: str | Path, *, classes: int = 5, train_per_class: int = 6, val_per_class: int = 3,
                       seed: int = 0, max_side: int = 0, overwrite: bool = False,
                       photos: str | Path | None = None) -> FakeArchives:
    """Write the three fake archives into ``out``; refuse (RefusedError) to replace them unless ``overwrite``.

    ``classes`` >= 2 (default 5), ``train_per_class`` >= 2 and ``val_per_class`` >= 1 images per class;
    ``max_side``: cap on the longer side in px (0: the generator's realistic sizes, median 500x375);
    ``photos``: a folder of real JPEGs whose bytes become the images, train then val, in sorted order and
    cycled (``max_side`` and the awkward members do not apply then).
    """
    if classes < 2 or train_per_class < 2 or val_per_class < 1:
        raise UsageError("need at least 2 classes, 2 train images per class and 1 val image per class")
    real = _photo_files(photos) if photos is not None else []
    taken = [0]

    def next_photo() -> bytes:
        data = real[taken[0] % len(real)].read_bytes()
        taken[0] += 1
        return data

    out = Path(out)
    paths = {name: out / name for name in (TRAIN_NAME, VAL_NAME, DEVKIT_NAME)}
    existing = [str(path) for path in paths.values() if path.exists()]
    if existing and not overwrite:
        raise RefusedError(f"would overwrite {', '.join(existing)}; pass --overwrite to replace")
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, _STREAM])
    names = class_ids(seed, classes + 2)
    wnids, ancestors = names[:classes], names[classes:]
    devkit_order = list(wnids)  # creation order: random, so not sorted ...
    if devkit_order == sorted(devkit_order):
        devkit_order.reverse()  # ... and never by accident
    result = FakeArchives(str(out), str(paths[TRAIN_NAME]), str(paths[VAL_NAME]), str(paths[DEVKIT_NAME]),
                          sorted(wnids), devkit_order, 0, 0)
    awkward_class = {"cmyk_jpeg": 0, "png_named_jpeg": 1 % classes}
    class_tars = []
    for class_index, wnid in enumerate(wnids):
        numbers = sorted(int(n) for n in rng.choice(40_000, size=train_per_class, replace=False))
        files = []
        for image_index, number in enumerate(numbers):
            if real:
                files.append((f"{wnid}_{number}.JPEG", next_photo()))
                continue
            pixels = _photo(seed, 0, class_index, image_index, max_side)
            kind = next((kind for kind, index in awkward_class.items()
                         if index == class_index and image_index == 1), None)
            data = _awkward(kind, pixels) if kind else encode_image(pixels, 90)
            files.append((f"{wnid}_{number}.JPEG", data))
            if kind:
                result.awkward[f"{wnid}/{wnid}_{number}.JPEG"] = kind
        class_tars.append((f"{wnid}.tar", _tar_bytes(files)))
        result.train_per_class[wnid] = len(files)
    _write(paths[TRAIN_NAME], _tar_bytes([class_tars[index] for index in _shuffled(rng, len(class_tars))]))
    result.train_images = sum(result.train_per_class.values())

    ground_truth = [devkit_order.index(wnid) + 1 for wnid in wnids for _ in range(val_per_class)]
    ground_truth = [ground_truth[index] for index in _shuffled(rng, len(ground_truth))]
    val_files = []
    for number, ilsvrc_id in enumerate(ground_truth, 1):
        name = f"ILSVRC2012_val_{number:08d}.JPEG"
        data = next_photo() if real else encode_image(_photo(seed, 1, ilsvrc_id, number, max_side), 90)
        val_files.append((name, data))
        result.val_labels[name] = devkit_order[ilsvrc_id - 1]
    _write(paths[VAL_NAME], _tar_bytes([val_files[index] for index in _shuffled(rng, len(val_files))]))
    result.val_images = len(val_files)

    meta = _meta_mat(devkit_order, ancestors, result.train_per_class)
    _write(paths[DEVKIT_NAME], _devkit_bytes(meta, ground_truth))
    return result
