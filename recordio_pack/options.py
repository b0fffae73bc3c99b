"""``PackOptions``: every packing choice in one frozen object, validated once when it is made."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Literal

from recordio_pack.imaging import ImageOptions

if TYPE_CHECKING:
    from recordio_pack.formats import RecordFormat

__all__ = ["PackOptions", "default_workers", "opencv_version", "DEFAULT_SHARD_SIZE"]

DEFAULT_SHARD_SIZE = 256 << 20  # bytes of input per shard when neither --num-shards nor --shard-size is given
# the wheels that install cv2 (each adds a build number to OpenCV's version)
log = logging.getLogger(__name__)
OPENCV_DISTRIBUTIONS = ("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless",
                        "opencv-contrib-python")
_IMAGE_FIELDS = tuple(spec.name for spec in fields(ImageOptions))
_FORMAT_FIELDS = ("format", "preset", "label_base")  # left out of RecordIO's options: fingerprints stay as they were


def opencv_version() -> str:
    """``cv2.__version__``, from the installed opencv wheel's metadata when there is one.

    Loading OpenCV only to learn its version costs the parent up to 0.7 s before any worker starts.  The
    opencv-python wheels add a build number to OpenCV's version (``"5.0.0.93"`` for OpenCV 5.0.0).  When no
    such wheel is installed, or several of different versions are, cv2 is imported and asked.
    """
    versions = set()
    for distribution in OPENCV_DISTRIBUTIONS:
        try:
            match = re.match(r"\d+\.\d+\.\d+", importlib.metadata.version(distribution))
        except importlib.metadata.PackageNotFoundError:
            continue
        if match:
            versions.add(match.group(0))
    if len(versions) == 1:
        return versions.pop()
    log.info("OpenCV's version is not clear from the installed wheels (%s); importing cv2 to ask it",
             ", ".join(sorted(versions)) or "none found")
    from recordio_pack.codec_preload import cv2

    return str(cv2.__version__)


def default_workers() -> int:
    """The CPUs this process may run on (respects taskset and container CPU sets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True, init=False)
class PackOptions:
    """How to pack: ``image``, what becomes of each image (``ImageOptions``), and how the list becomes shards.

    ``PackOptions(resize=256, quality=90, workers=8)``: the ``ImageOptions`` fields may be given flat; they build
    ``image`` (or override the fields of an ``image=`` given too).  Every invalid value is reported at once, in
    one ValueError.

    image.resize: shorter side in pixels (0 keeps the size); never upscales unless ``image.upscale``.
    image.quality: JPEG quality 1..100 when re-encoding.  image.encoding: "jpg" or "png" for re-encoded images.
    image.color: 1 colour, 0 grayscale, -1 as stored.  image.reencode: "auto", "always" or "never" (pass-through).
    image.max_pixels: decompression-bomb guard, width x height read from the header before decoding.
    image.validate: "full" (default) also decodes the images stored as they are, so a damaged one is rejected;
      "header" checks only their structure (magic bytes, headers, end-of-image marker).
    pack_label: write multi-label `.lst` lines as IRHeader label vectors (else the first label, like im2rec).
    key: "position" (0..n-1 within each shard) or "lst-index" (im2rec's keys).
    num_shards / shard_size: how the list is cut into shards (shard_size counts input bytes);
      neither given: ``DEFAULT_SHARD_SIZE``.  on_error: "skip" (reject and go on) or "fail".
    workers: processes packing shards in parallel (does not change the output).
    format: "recordio" (default) or "tfrecord" (``recordio_pack.formats``).  preset: the TFRecord layout, "tpu"
      (default with tfrecord), "aip" or "tfds".  label_base: the stored label of class 0 (TFRecord: 1 for tpu and
      aip, 0 for tfds, unless given).  The three are written to the manifest only for TFRecord, so the fingerprint
      of a RecordIO pack is what it always was.
    """

    image: ImageOptions
    pack_label: bool = False
    key: Literal["position", "lst-index"] = "position"
    num_shards: int | None = None
    shard_size: int | None = None
    on_error: Literal["skip", "fail"] = "skip"
    workers: int = 0  # 0: default_workers()
    format: str = "recordio"
    preset: str = ""
    label_base: int | None = None

    def __init__(self, image: ImageOptions | None = None, **settings: Any) -> None:
        flat = {name: settings.pop(name) for name in _IMAGE_FIELDS if name in settings}
        object.__setattr__(self, "image", replace(image if image is not None else ImageOptions(), **flat))
        for spec in fields(self):
            if spec.name != "image":
                object.__setattr__(self, spec.name, settings.pop(spec.name, spec.default))
        if settings:
            raise TypeError(f"PackOptions got unexpected keyword arguments: {', '.join(sorted(settings))}")
        if self.format == "tfrecord":  # the preset and its label base, resolved once, so the manifest says them
            from recordio_pack.formats.tfrecord import LABEL_BASE

            object.__setattr__(self, "preset", self.preset or "tpu")
            if self.label_base is None:
                object.__setattr__(self, "label_base", LABEL_BASE.get(self.preset, 1))
        self._check()

    def _check(self) -> None:
        problems = self.image.problems()
        if self.key not in ("position", "lst-index"):
            problems.append(f"key must be position or lst-index, got {self.key!r}")
        if self.num_shards is not None and self.shard_size is not None:
            problems.append("give num_shards or shard_size, not both")
        if self.num_shards is not None and self.num_shards <= 0:
            problems.append(f"num_shards must be positive, got {self.num_shards}")
        if self.shard_size is not None and self.shard_size <= 0:
            problems.append(f"shard_size must be positive, got {self.shard_size}")
        if self.on_error not in ("skip", "fail"):
            problems.append(f"on_error must be skip or fail, got {self.on_error!r}")
        if self.workers < 0:
            problems.append(f"workers must be >= 0, got {self.workers}")
        if self.image.reencode == "never" and (self.image.resize or self.image.center_crop):
            problems.append("reencode=never (pass-through) cannot resize or crop")
        problems += self._format_problems()
        if problems:
            raise ValueError("; ".join(problems))

    def _format_problems(self) -> list[str]:
        from recordio_pack.formats import UnknownFormat, make_format

        try:
            make_format(self.format, self.preset, self.label_base)
        except UnknownFormat as error:
            return [str(error)]
        if self.format == "tfrecord" and self.preset in ("tpu", "tfds") and self.image.encoding != "jpg":
            return [f"preset {self.preset} stores JPEGs (image/format 'JPEG'): encoding must be jpg"]
        return []

    def record_format(self, classes: Sequence[str] | None = None) -> RecordFormat:
        """The record format these options write (``classes``: the class map, for layouts that store names)."""
        from recordio_pack.formats import make_format

        return make_format(self.format, self.preset, self.label_base, classes, pack_label=self.pack_label,
                           quality=self.image.quality)

    @property
    def worker_count(self) -> int:
        return self.workers or default_workers()

    def output_affecting(self) -> dict[str, Any]:
        """The options that change output bytes (everything but ``workers``), flat, for the manifest; the shard
        size that applies is written even when it is the default."""
        data = asdict(self.image)
        data.update((spec.name, getattr(self, spec.name)) for spec in fields(self)
                    if spec.name not in ("image", "workers") + (_FORMAT_FIELDS if self.format == "recordio" else ()))
        if data["num_shards"] is None and data["shard_size"] is None:
            data["shard_size"] = DEFAULT_SHARD_SIZE
        return data

    def codec(self) -> str:
        """The codec whose version changes re-encoded bytes ("" when pixels are never decoded and re-encoded)."""
        return f"opencv {opencv_version()}" if self.image.reencode != "never" else ""

    def fingerprint(self) -> str:
        """Identifies how inputs become records: the output-affecting options and the codec version."""
        options = self.output_affecting()
        options.pop("on_error")  # a run that finished under "fail" rejected nothing: the same output as "skip"
        material = {"options": options, "codec": self.codec()}
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
