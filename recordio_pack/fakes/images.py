"""A synthetic, ImageNet-shaped image tree for demos, tests and benchmarks (the "fake_imagenet" idea).

``OUT/<wnid>/<wnid>_<n>.JPEG``: class folders named like WordNet ids, photo-like JPEGs whose pixel sizes,
orientations, grayscale share and byte sizes resemble ILSVRC2012 train (median 500x375, a long tail of
big photos, a few thumbnails, ~2% single-channel), and optionally one file of each awkward kind a real
crawl contains (CMYK JPEG, PNG named ``.JPEG``, truncated, empty, not an image, gray+alpha and 16-bit PNG).

Everything is drawn from seeds derived from ``(seed, class, image)``, so the same seed and arguments give
byte-identical files with the same numpy, OpenCV (and for awkward files Pillow) builds, and any single
image can be regenerated alone.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from recordio_pack.errors import RecordioPackError, RefusedError, UsageError
from recordio_pack.fsutil import atomic_output
from recordio_pack.progress import NullProgress, Progress, Task, start_task

__all__ = ["AWKWARD_KINDS", "AWKWARD_LIST", "AwkwardFile", "FakeResult", "ImagePlan", "class_ids", "plan_image",
           "render_image", "encode_image", "make_fake_dataset"]

AWKWARD_LIST = "AWKWARD.tsv"  # written at OUT's top level: relative_path<TAB>kind per line

# kind -> (file suffix, whether a packer should convert it (True) or reject it (False), description)
AWKWARD_KINDS: dict[str, tuple[str, bool, str]] = {
    "cmyk_jpeg": (".JPEG", True, "CMYK JPEG (4 components, Adobe marker), like 22 ILSVRC2012 train files"),
    "png_named_jpeg": (".JPEG", True, "an 8-bit RGB PNG file named .JPEG, like one ILSVRC2012 train file"),
    "gray_alpha_png": (".png", True, "8-bit grayscale PNG with an alpha channel"),
    "png_16bit": (".png", True, "16-bit RGB PNG"),
    "truncated_jpeg": (".JPEG", False, "the first half of a valid JPEG: no end-of-image marker"),
    "zero_byte": (".JPEG", False, "an empty file"),
    "not_an_image": (".JPEG", False, "a short text file"),
}

# Independent random streams: each seeds its own generator, so drawing more of one never shifts another.
_CLASS_STREAM, _PLAN_STREAM, _PIXEL_STREAM, _AWKWARD_STREAM = 1, 2, 3, 4
_WNID_RANGE = (1_000_000, 16_000_000)  # real ILSVRC ids run from n01440764 to n15075141
_MAX_CLASSES = 1_000_000
_RENDER_LONG_SIDE = 1024  # bigger images are rendered at this size and upscaled (real big photos are soft)

# Long side in px: (probability, low, high) buckets, calibrated on 1000 real ILSVRC2012 train images
# (70% exactly 500, 17% below, 13% above).  Photos of 2000 px and more are ~0.1% there; we make 1% so
# that small runs still exercise the big-image path.  A further 2% are thumbnails (short side < 200).
_THUMBNAIL_SHARE = 0.02
_LONG_SIDE_BUCKETS = ((0.15, 200, 499), (0.715, 500, 500), (0.11, 501, 999), (0.015, 1000, 1999),
                      (0.01, 2000, 3000))
# Short/long side ratios: 4:3, 3:2, square, 16:9 and anything between 1:2 and 1:1.
_RATIOS = (3 / 4, 2 / 3, 1.0, 9 / 16, None)
_RATIO_SHARES = (0.40, 0.27, 0.05, 0.02, 0.26)
_PORTRAIT_SHARE = 0.25
_QUALITY_RANGE = (85, 96)  # JPEG quality, drawn per image (upper bound exclusive): ~90 on average


@dataclass(frozen=True)
class ImagePlan:
    """What one fake image will be: its size in px, channel count and JPEG quality."""

    width: int
    height: int
    grayscale: bool
    quality: int


@dataclass(frozen=True)
class AwkwardFile:
    """One awkward file: ``path`` relative to OUT (POSIX), its ``kind`` (a key of AWKWARD_KINDS), and whether a
    packer should convert it (True) or reject it (False)."""

    path: str
    kind: str
    convertible: bool


@dataclass(frozen=True)
class FakeResult:
    """What ``make_fake_dataset`` wrote.  ``bytes`` counts every file written (images, awkward files, list)."""

    out: Path
    seed: int
    classes: int
    images_per_class: int
    images: int  # regular JPEGs
    grayscale: int  # of those, single-channel
    bytes: int
    class_names: tuple[str, ...]  # folder names, sorted: label i is class_names[i]
    awkward: tuple[AwkwardFile, ...] = ()

    @property
    def files(self) -> int:
        return self.images + len(self.awkward)

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "seed": self.seed, "classes": self.classes,
                "images_per_class": self.images_per_class, "images": self.images, "grayscale": self.grayscale,
                "files": self.files, "bytes": self.bytes, "class_names": list(self.class_names),
                "awkward": [{"path": a.path, "kind": a.kind, "convertible": a.convertible} for a in self.awkward],
                "awkward_list": AWKWARD_LIST if self.awkward else None}


def class_ids(seed: int, count: int) -> list[str]:
    """``count`` unique WordNet-style folder names ("n" + 8 digits) in creation order; a prefix of a longer list."""
    rng = np.random.default_rng([seed, _CLASS_STREAM])
    seen: set[str] = set()
    names: list[str] = []
    while len(names) < count:
        name = f"n{int(rng.integers(*_WNID_RANGE)):08d}"
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def _pick(rng: np.random.Generator, shares: Sequence[float]) -> int:
    """An index drawn with probability proportional to ``shares``."""
    draw = rng.random() * sum(shares)
    for index, share in enumerate(shares):
        draw -= share
        if draw < 0:
            return index
    return len(shares) - 1


def plan_image(seed: int, class_index: int, image_index: int, grayscale_fraction: float = 0.02) -> ImagePlan:
    """The size, colour and quality of image ``image_index`` of class ``class_index`` (cheap: draws no pixels)."""
    rng = np.random.default_rng([seed, _PLAN_STREAM, class_index, image_index])
    ratio = _RATIOS[_pick(rng, _RATIO_SHARES)]
    if ratio is None:
        ratio = float(rng.uniform(0.5, 1.0))
    if rng.random() < _THUMBNAIL_SHARE:
        short = int(rng.integers(48, 200))
        long = max(short, round(short / ratio))
    else:
        bucket = _LONG_SIDE_BUCKETS[_pick(rng, [b[0] for b in _LONG_SIDE_BUCKETS])]
        long = int(rng.integers(bucket[1], bucket[2] + 1))
        short = max(1, round(long * ratio))
    portrait = short != long and rng.random() < _PORTRAIT_SHARE
    width, height = (short, long) if portrait else (long, short)
    grayscale = bool(rng.random() < grayscale_fraction)
    return ImagePlan(width, height, grayscale, int(rng.integers(*_QUALITY_RANGE)))


def _smooth_field(rng: np.random.Generator, width: int, height: int, channels: int,
                  saturation: float = 1.0) -> np.ndarray:
    """Low-frequency structure: a few random control points, bicubically interpolated (uint8, HxWxC).

    ``saturation`` < 1 pulls the control points' colours towards their grey (photos are rarely all neon).
    """
    grid = rng.integers(0, 256, (int(rng.integers(2, 6)), int(rng.integers(2, 6)), channels)).astype(np.float32)
    if channels == 3 and saturation < 1.0:
        grey = grid.mean(axis=2, keepdims=True)
        grid = grey + saturation * (grid - grey)
    return cv2.resize(grid.round().astype(np.uint8), (width, height), interpolation=cv2.INTER_CUBIC)


def _texture(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Zero-centred float32 detail with equal energy in octaves of 1..32 px, folded for crisp creases."""
    cells = (1, 2, 4, 8, 16, 32)
    total: np.ndarray = np.zeros((height, width), np.float32)
    for cell in cells:
        rows, cols = height // cell + 2, width // cell + 2
        grid: np.ndarray = np.frombuffer(rng.bytes(rows * cols), np.uint8).reshape(rows, cols)
        if cell > 1:
            grid = cv2.resize(grid, (width, height), interpolation=cv2.INTER_LINEAR)
        total = cv2.add(total, grid[:height, :width], dtype=cv2.CV_32F)
    total -= 127.5 * len(cells)
    # |x| adds ridges (bark, fur, grass) that a sum of smooth layers lacks; the offset keeps the mean at 0
    ridges = np.abs(total)
    return cv2.addWeighted(total, 1.0, ridges, 0.5, -0.5 * float(ridges.mean()))


def _draw_shapes(rng: np.random.Generator, image: np.ndarray) -> None:
    """Objects with hard, anti-aliased edges: ellipses, boxes, polygons and strokes in random colours."""
    height, width = image.shape[:2]
    scale = min(width, height)
    for _ in range(int(rng.integers(3, 14))):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = int(rng.integers(0, 4))
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        radius = max(1, int(rng.uniform(0.03, 0.4) * scale))
        if kind == 0:
            axes = (radius, max(1, int(radius * rng.uniform(0.3, 1.0))))
            cv2.ellipse(image, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, color, -1, cv2.LINE_AA)
        elif kind == 1:
            cv2.rectangle(image, (cx - radius, cy - radius // 2), (cx + radius, cy + radius // 2), color, -1,
                          cv2.LINE_AA)
        elif kind == 2:
            points = (rng.normal(0, radius, (int(rng.integers(3, 7)), 2)) + (cx, cy)).astype(np.int32)
            cv2.fillPoly(image, [points], color, cv2.LINE_AA)
        else:
            end = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            cv2.line(image, (cx, cy), end, color, int(rng.integers(1, 6)), cv2.LINE_AA)


def render_image(plan: ImagePlan, rng: np.random.Generator) -> np.ndarray:
    """Photo-like pixels for ``plan``: BGR uint8 HxWx3, or HxW when ``plan.grayscale``.

    A smooth colour field (sky, walls, bokeh), shapes with hard edges, and fine texture whose strength varies
    smoothly across the picture (flat and busy regions), so JPEG sizes resemble real photos.
    """
    long_side = max(plan.width, plan.height)
    shrink = min(1.0, _RENDER_LONG_SIDE / long_side)
    width, height = max(1, round(plan.width * shrink)), max(1, round(plan.height * shrink))
    image = _smooth_field(rng, width, height, 3, saturation=float(rng.uniform(0.15, 0.7)))
    _draw_shapes(rng, image)
    strength = float(rng.uniform(20, 55)) / (73.9 * 6 ** 0.5)  # texture std in grey levels, before masking
    mask = _smooth_field(rng, width, height, 1)
    detail = cv2.multiply(_texture(rng, width, height), mask, dtype=cv2.CV_32F, scale=2 * strength / 255)
    image = cv2.add(image, cv2.cvtColor(detail, cv2.COLOR_GRAY2BGR), dtype=cv2.CV_8U)
    if shrink < 1.0:
        image = cv2.resize(image, (plan.width, plan.height), interpolation=cv2.INTER_LINEAR)
        grain = np.frombuffer(rng.bytes(plan.width * plan.height), np.uint8).reshape(plan.height, plan.width)
        weight = 3.0 / 73.9  # sensor grain of ~3 grey levels std
        image = cv2.addWeighted(image, 1.0, cv2.cvtColor(grain, cv2.COLOR_GRAY2BGR), weight, -127.5 * weight)
    if plan.grayscale:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return image


def encode_image(pixels: np.ndarray, quality: int) -> bytes:
    """Baseline JPEG bytes (1 component for HxW input, 3 for HxWx3 BGR)."""
    ok, encoded = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RecordioPackError(f"OpenCV could not encode a {pixels.shape} image as JPEG")
    return encoded.tobytes()


def _image_bytes(seed: int, class_index: int, image_index: int, grayscale_fraction: float) -> tuple[bytes, ImagePlan]:
    plan = plan_image(seed, class_index, image_index, grayscale_fraction)
    rng = np.random.default_rng([seed, _PIXEL_STREAM, class_index, image_index])
    return encode_image(render_image(plan, rng), plan.quality), plan


def _pillow() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise RecordioPackError("awkward files need Pillow: pip install 'recordio-pack[fake]'") from None
    return Image


def _awkward_bytes(kind: str, seed: int, index: int, image_module: Any) -> bytes:
    """The content of one awkward file, drawn from its own stream (same seed -> same bytes)."""
    if kind == "zero_byte":
        return b""
    if kind == "not_an_image":
        return b"This is not an image: a text file with an image's name, as web crawls sometimes contain.\n"
    rng = np.random.default_rng([seed, _AWKWARD_STREAM, index])
    width = int(rng.integers(300, 501))
    plan = ImagePlan(width, width * 3 // 4, False, 90)
    bgr = render_image(plan, rng)
    if kind == "truncated_jpeg":
        data = encode_image(bgr, plan.quality)
        data = data[: len(data) // 2]
        return data[:-1] if data.endswith(b"\xff\xd9") else data
    if kind == "png_named_jpeg":
        return _png(bgr)
    if kind == "png_16bit":
        return _png(bgr.astype(np.uint16) * 257)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    buffer = io.BytesIO()
    if kind == "cmyk_jpeg":
        image_module.fromarray(rgb).convert("CMYK").save(buffer, format="JPEG", quality=plan.quality)
    elif kind == "gray_alpha_png":
        gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        alpha = _smooth_field(rng, plan.width, plan.height, 1)
        image_module.fromarray(np.dstack([gray, alpha])).save(buffer, format="PNG")
    else:
        raise ValueError(f"unknown awkward kind {kind!r}")
    return buffer.getvalue()


def _png(pixels: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise RecordioPackError("OpenCV could not encode a PNG")
    return encoded.tobytes()


def _write_atomic(path: Path, data: bytes) -> None:
    """Write through a temporary and rename (``fsutil.atomic_output``), so an interrupted run never leaves a
    partial file under NAME.

    No fsync: a fake tree is cheap to regenerate, and syncing every image would dominate the run time.
    """
    with atomic_output(path, fsync=False) as stream:
        stream.write(data)


def _check_arguments(classes: int, images_per_class: int, seed: int, grayscale_fraction: float) -> None:
    if not 1 <= classes <= _MAX_CLASSES:
        raise UsageError(f"classes must be between 1 and {_MAX_CLASSES}, not {classes}")
    if images_per_class < 0:
        raise UsageError(f"images per class must be 0 or more, not {images_per_class}")
    if seed < 0:
        raise UsageError(f"seed must be 0 or more, not {seed}")
    if not 0.0 <= grayscale_fraction <= 1.0:
        raise UsageError(f"grayscale fraction must be between 0 and 1, not {grayscale_fraction}")


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise RecordioPackError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise RefusedError(f"{out} is not empty; use --overwrite to replace the files this command generates "
                           "(other files are left alone)")
    out.mkdir(parents=True, exist_ok=True)


def _file_counter(progress: Progress, total: int) -> Callable[[], None]:
    """``wrote_one()``: one more file of ``total``; the task "fake" is announced on the first."""
    task: list[Task] = []

    def wrote_one() -> None:
        if not task:
            task.append(start_task(progress, "fake", "images", total))
        task[0].advance(1)
    return wrote_one


def make_fake_dataset(out: Path, *, classes: int = 10, images_per_class: int = 20, seed: int = 0,
                      awkward: bool = False, grayscale_fraction: float = 0.02, overwrite: bool = False,
                      progress: Progress | None = None) -> FakeResult:
    """Write ``classes`` folders of ``images_per_class`` fake photos each under ``out``.

    Args:
        out: the tree's root folder; created if missing.  Refused (RefusedError) when it holds anything,
            unless ``overwrite``: then files of the same names are replaced and nothing else is touched.
        classes: number of class folders (default 10).
        images_per_class: JPEGs per folder, named ``<wnid>_<n>.JPEG`` with n = 0..images_per_class-1 (default 20).
        seed: any integer >= 0 (default 0); with the same arguments, the output is byte-identical.
        awkward: also write one file of each kind in AWKWARD_KINDS into seeded class folders, and list them
            in ``out/AWKWARD.tsv`` (needs Pillow, the ``fake`` extra).
        grayscale_fraction: probability (0..1) that an image is a single-channel JPEG (default 0.02).
        progress: a task "fake" in images (awkward files included), advanced by 1 per file written; announced
            after the first file, so a failure before it shows no empty bar.
    """
    out = Path(out)
    _check_arguments(classes, images_per_class, seed, grayscale_fraction)
    image_module = _pillow() if awkward else None  # fail before writing anything
    _prepare_out(out, overwrite)
    names = class_ids(seed, classes)
    total_bytes = images = grayscale = 0
    total_files = classes * images_per_class + (len(AWKWARD_KINDS) if awkward else 0)
    wrote_one = _file_counter(progress or NullProgress(), total_files)
    try:
        for class_index, wnid in enumerate(names):
            folder = out / wnid
            folder.mkdir(exist_ok=True)
            for image_index in range(images_per_class):
                data, plan = _image_bytes(seed, class_index, image_index, grayscale_fraction)
                _write_atomic(folder / f"{wnid}_{image_index}.JPEG", data)
                total_bytes += len(data)
                images += 1
                grayscale += plan.grayscale
                wrote_one()
        written: list[AwkwardFile] = []
        if awkward:
            placement = np.random.default_rng([seed, _AWKWARD_STREAM])
            for index, (kind, (suffix, convertible, _)) in enumerate(AWKWARD_KINDS.items()):
                wnid = names[int(placement.integers(0, classes))]
                relative = f"{wnid}/{wnid}_{kind}{suffix}"
                data = _awkward_bytes(kind, seed, index, image_module)
                _write_atomic(out / relative, data)
                total_bytes += len(data)
                written.append(AwkwardFile(relative, kind, convertible))
                wrote_one()
            listing = "".join(f"{a.path}\t{a.kind}\n" for a in written).encode("ascii")
            _write_atomic(out / AWKWARD_LIST, listing)
            total_bytes += len(listing)
    except OSError as error:
        raise RecordioPackError(f"cannot write under {out}: {error.strerror or error}") from error
    return FakeResult(out, seed, classes, images_per_class, images, grayscale, total_bytes,
                      tuple(sorted(names)), tuple(written))
