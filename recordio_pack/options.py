"""``PackOptions``: every packing choice in one frozen object, validated once when it is made."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from recordio_pack.imaging import ImageOptions

__all__ = ["PackOptions", "default_workers", "opencv_version", "DEFAULT_SHARD_SIZE"]

DEFAULT_SHARD_SIZE = 256 << 20  # bytes of input per shard when neither --num-shards nor --shard-size is given


def opencv_version() -> str:
    """``cv2.__version__``, read from the wheel's ``cv2/version.py`` when it has one.

    Loading OpenCV only to learn its version costs the parent up to 0.7 s before any worker starts; the
    opencv-python wheels write their version there (``"5.0.0.93"`` for OpenCV 5.0.0).  Other builds are
    imported.
    """
    spec = importlib.util.find_spec("cv2")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        try:
            text = open(os.path.join(folder, "version.py"), encoding="utf-8").read()
        except OSError:
            continue
        match = re.search(r'^opencv_version\s*=\s*"(\d+\.\d+\.\d+)', text, re.MULTILINE)
        if match:
            return match.group(1)
    from recordio_pack.codec_preload import cv2

    return str(cv2.__version__)


def default_workers() -> int:
    """The CPUs this process may run on (respects taskset and container CPU sets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class PackOptions:
    """How to pack.

    resize: shorter side in pixels (0 keeps the size); never upscales unless ``upscale``.
    quality: JPEG quality 1..100 when re-encoding.  encoding: "jpg" or "png" for re-encoded images.
    color: 1 colour, 0 grayscale, -1 as stored.  reencode: "auto", "always" or "never" (pass-through).
    max_pixels: decompression-bomb guard, width x height read from the header before decoding.
    validate: "full" (default) also decodes the images stored as they are, so a damaged one is rejected;
      "header" checks only their structure (magic bytes, headers, end-of-image marker).
    pack_label: write multi-label `.lst` lines as IRHeader label vectors (else the first label, like im2rec).
    key: "position" (0..n-1 within each shard) or "lst-index" (im2rec's keys).
    num_shards / shard_size: how the list is cut into shards (shard_size counts input bytes);
      neither given: ``DEFAULT_SHARD_SIZE``.  on_error: "skip" (reject and go on) or "fail".
    workers: processes packing shards in parallel (does not change the output).
    """

    resize: int = 0
    upscale: bool = False
    center_crop: bool = False
    quality: int = 95
    encoding: Literal["jpg", "png"] = "jpg"
    color: int = 1
    reencode: Literal["auto", "always", "never"] = "auto"
    max_pixels: int = 100_000_000
    validate: Literal["full", "header"] = "full"
    pack_label: bool = False
    key: Literal["position", "lst-index"] = "position"
    num_shards: int | None = None
    shard_size: int | None = None
    on_error: Literal["skip", "fail"] = "skip"
    workers: int = 0  # 0: default_workers()

    def __post_init__(self) -> None:
        problems = []
        if self.resize < 0:
            problems.append(f"resize must be >= 0, got {self.resize}")
        if not 1 <= self.quality <= 100:
            problems.append(f"quality must be 1..100, got {self.quality}")
        if self.encoding not in ("jpg", "png"):
            problems.append(f"encoding must be jpg or png, got {self.encoding!r}")
        if self.color not in (1, 0, -1):
            problems.append(f"color must be 1, 0 or -1, got {self.color}")
        if self.reencode not in ("auto", "always", "never"):
            problems.append(f"reencode must be auto, always or never, got {self.reencode!r}")
        if self.validate not in ("full", "header"):
            problems.append(f"validate must be full or header, got {self.validate!r}")
        if self.max_pixels <= 0:
            problems.append(f"max_pixels must be positive, got {self.max_pixels}")
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
        if self.reencode == "never" and (self.resize or self.center_crop):
            problems.append("reencode=never (pass-through) cannot resize or crop")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def worker_count(self) -> int:
        return self.workers or default_workers()

    def image_options(self) -> ImageOptions:
        return ImageOptions(resize=self.resize, upscale=self.upscale, center_crop=self.center_crop,
                            quality=self.quality, encoding=self.encoding, color=self.color,
                            reencode=self.reencode, max_pixels=self.max_pixels,
                            validate=self.validate)

    def output_affecting(self) -> dict[str, Any]:
        """The options that change output bytes (everything but ``workers``), for the manifest; the shard size
        that applies is written even when it is the default."""
        data = asdict(self)
        data.pop("workers")
        if data["num_shards"] is None and data["shard_size"] is None:
            data["shard_size"] = DEFAULT_SHARD_SIZE
        return data

    def codec(self) -> str:
        """The codec whose version changes re-encoded bytes ("" when pixels are never decoded and re-encoded)."""
        return f"opencv {opencv_version()}" if self.reencode != "never" else ""

    def fingerprint(self) -> str:
        """Identifies how inputs become records: the output-affecting options and the codec version."""
        options = self.output_affecting()
        options.pop("on_error")  # a run that finished under "fail" rejected nothing: the same output as "skip"
        material = {"options": options, "codec": self.codec()}
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()

    @classmethod
    def field_names(cls) -> list[str]:
        return [field.name for field in fields(cls)]
