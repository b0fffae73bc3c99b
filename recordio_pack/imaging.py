"""Image bytes in, record image bytes out: validate by content, then keep, or decode/convert/resize/encode.

``probe`` reads only headers (no pixel decode): format by magic bytes, dimensions, channels, bit depth and,
for JPEG, the coding process and the end-of-image marker.  ``prepare_image`` applies the re-encode policy.
Every refusal is an ``ImageRejected`` with a reason a person can act on.
"""

from __future__ import annotations

import math
import os
import struct
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import numpy as np

__all__ = ["single_threaded_codec", "ImageRejected", "ImageInfo", "ImageOptions", "probe", "prepare_image", "target_size",
           "sniff", "check_decodes", "decoder_messages"]


ANTIALIAS_SIGMA = 0.4  # Gaussian sigma per unit of sqrt(1/scale**2 - 1); chosen by PSNR against area resizing
MIN_SIGMA = 0.25  # below this the 3x3 kernel's outer taps weigh < 0.0004: no 8-bit pixel would change


def single_threaded_codec() -> None:
    """One OpenCV thread per process: workers already fill every core, and nested pools only contend."""
    import cv2

    cv2.setNumThreads(1)


class ImageRejected(Exception):
    """The input cannot be packed; ``reason`` says why (it goes to the rejects file)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ImageInfo:
    format: str  # "jpeg", "png" or "bmp"
    width: int
    height: int
    channels: int  # JPEG components (1 gray, 3 colour, 4 CMYK/YCCK); PNG/BMP channels incl. alpha
    bit_depth: int
    baseline_compatible: bool = True  # JPEG: Huffman-coded, 8-bit (what every decoder reads)
    orientation: int = 1  # JPEG: EXIF Orientation (1 upright; 2..8 a reader that honours EXIF turns or mirrors it)


@dataclass(frozen=True)
class ImageOptions:
    """What to do with each image; see ``recordio_pack.options.PackOptions`` for the user-facing meaning."""

    resize: int = 0  # shorter side in pixels; 0 keeps the size
    upscale: bool = False
    center_crop: bool = False
    quality: int = 95
    encoding: Literal["jpg", "png"] = "jpg"
    color: int = 1  # 1 colour (BGR), 0 grayscale, -1 as stored
    reencode: Literal["auto", "always", "never"] = "auto"
    max_pixels: int = 100_000_000
    validate: Literal["full", "header"] = "full"  # full: kept bytes are decoded too, so damage is caught

    def problems(self) -> list[str]:
        """What is wrong with these values, one phrase each (empty when they are valid)."""
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
        return problems


_JPEG_SOF = {0xC0: True, 0xC1: True, 0xC2: True, 0xC3: False, 0xC5: False, 0xC6: False, 0xC7: False,
             0xC9: False, 0xCA: False, 0xCB: False, 0xCD: False, 0xCE: False, 0xCF: False}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}
_OTHER_MAGIC = ((b"GIF8", "GIF"), (b"RIFF", "RIFF/WebP"), (b"II*\0", "TIFF"), (b"MM\0*", "TIFF"),
                (b"\0\0\0\x0cjP", "JPEG 2000"), (b"%PDF", "PDF"))


def sniff(data: bytes) -> str | None:
    """The image format by magic bytes: "jpeg", "png", "bmp", another format's name, or None."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == _PNG_SIGNATURE:
        return "png"
    if data[:2] == b"BM" and len(data) >= 26:
        return "bmp"
    for magic, name in _OTHER_MAGIC:
        if data.startswith(magic):
            return name
    return None


def exif_orientation(segment: bytes) -> int:
    """The Orientation tag (1..8) of an APP1 Exif segment's payload, 1 when absent or unreadable."""
    if not segment.startswith(b"Exif\0\0") or len(segment) < 14:
        return 1
    tiff = segment[6:]
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None:
        return 1
    try:
        (first_ifd,) = struct.unpack_from(f"{order}I", tiff, 4)
        (count,) = struct.unpack_from(f"{order}H", tiff, first_ifd)
        for entry in range(count):
            tag, kind, _, value = struct.unpack_from(f"{order}HHIH", tiff, first_ifd + 2 + 12 * entry)
            if tag == 0x0112 and kind == 3:  # SHORT
                return value if 1 <= value <= 8 else 1
    except struct.error:
        return 1
    return 1


def _probe_jpeg(data: bytes) -> ImageInfo:
    size = len(data)
    position = 2
    info: ImageInfo | None = None
    orientation = 1
    while True:
        if position + 4 > size:
            raise ImageRejected("truncated JPEG (headers end before the image data)")
        if data[position] != 0xFF:
            raise ImageRejected(f"corrupt JPEG (no marker at byte {position})")
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker == 0xD8 or 0xD0 <= marker <= 0xD7 or marker == 0x01:
            position += 2
            continue
        (length,) = struct.unpack_from(">H", data, position + 2)
        if length < 2 or position + 2 + length > size:
            raise ImageRejected("truncated JPEG (a header segment runs past the end)")
        if marker in _JPEG_SOF:
            precision, height, width, components = struct.unpack_from(">BHHB", data, position + 4)
            if width == 0 or height == 0:
                raise ImageRejected("unsupported JPEG (zero or deferred image size)")
            info = ImageInfo("jpeg", width, height, components, precision,
                             baseline_compatible=_JPEG_SOF[marker] and precision == 8)
        elif marker == 0xE1 and orientation == 1:
            orientation = exif_orientation(data[position + 4:position + 2 + length])
        elif marker == 0xDA:  # start of scan: entropy-coded data follows
            if info is None:
                raise ImageRejected("corrupt JPEG (scan before frame header)")
            if data.rfind(b"\xff\xd9", position) == -1:
                raise ImageRejected("truncated JPEG (no end-of-image marker)")
            return ImageInfo(info.format, info.width, info.height, info.channels, info.bit_depth,
                             info.baseline_compatible, orientation)
        elif marker == 0xD9:
            raise ImageRejected("corrupt JPEG (end-of-image before any image data)")
        position += 2 + length


def _probe_png(data: bytes) -> ImageInfo:
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise ImageRejected("corrupt PNG (no IHDR header)")
    width, height, depth, color_type = struct.unpack_from(">IIBB", data, 16)
    if color_type not in _PNG_CHANNELS or width == 0 or height == 0:
        raise ImageRejected(f"corrupt PNG (colour type {color_type}, size {width}x{height})")
    if data.rfind(b"IEND", max(0, len(data) - 64)) == -1:
        raise ImageRejected("truncated PNG (no IEND chunk)")
    return ImageInfo("png", width, height, _PNG_CHANNELS[color_type], depth)


def _probe_bmp(data: bytes) -> ImageInfo:
    width, height = struct.unpack_from("<ii", data, 18)
    bits = struct.unpack_from("<H", data, 28)[0] if len(data) >= 30 else 24
    if width <= 0 or height == 0:
        raise ImageRejected(f"corrupt BMP (size {width}x{height})")
    return ImageInfo("bmp", width, abs(height), 4 if bits == 32 else 3 if bits > 8 else 1, 8)


def probe(data: bytes, max_pixels: int = 0) -> ImageInfo:
    """Header facts of an encoded image, or ImageRejected. ``max_pixels`` > 0 rejects larger images."""
    if not data:
        raise ImageRejected("empty file (0 bytes)")
    kind = sniff(data)
    if kind == "jpeg":
        info = _probe_jpeg(data)
    elif kind == "png":
        info = _probe_png(data)
    elif kind == "bmp":
        info = _probe_bmp(data)
    elif kind:
        raise ImageRejected(f"unsupported image format {kind} (JPEG, PNG and BMP are packed)")
    else:
        raise ImageRejected(f"not an image (starts with {bytes(data[:8])!r})")
    pixels = info.width * info.height
    if max_pixels and pixels > max_pixels:
        raise ImageRejected(f"decompression bomb guard: {info.width}x{info.height} = {pixels} pixels "
                            f"exceeds the limit of {max_pixels}")
    return info


def target_size(width: int, height: int, options: ImageOptions) -> tuple[int, int] | None:
    """(width, height) after --center-crop/--resize, or None when the pixels stay as they are.

    The shorter side becomes ``resize`` and the longer one scales with it, rounded down (im2rec's rule);
    images already shorter than ``resize`` keep their size unless ``upscale``.
    """
    if options.center_crop and width != height:
        width = height = min(width, height)
    if not options.resize:
        return (width, height) if options.center_crop else None
    short = min(width, height)
    if short < options.resize and not options.upscale:
        return (width, height) if options.center_crop else None
    if short == options.resize and not options.center_crop:
        return None
    if width <= height:
        return options.resize, height * options.resize // width
    return width * options.resize // height, options.resize


def _keeps_original(info: ImageInfo, options: ImageOptions) -> bool:
    if options.reencode != "auto" or info.format != "jpeg" or options.encoding != "jpg":
        return False
    if not info.baseline_compatible or info.orientation != 1:  # turned by EXIF: stored upright instead
        return False
    allowed = {1} if options.color == 0 else {1, 3}
    if info.channels not in allowed:
        return False
    return target_size(info.width, info.height, options) is None


def _reduction(info: ImageInfo, options: ImageOptions) -> int:
    """The largest DCT-domain downscale (1, 2, 4 or 8) that still leaves the short side >= the target."""
    if info.format != "jpeg" or not options.resize:
        return 1
    short = min(info.width, info.height)
    for factor in (8, 4, 2):
        if -(-short // factor) >= options.resize:
            return factor
    return 1


# What libjpeg and libpng print (to file descriptor 2, no file name) when they meet damaged data and carry on.
# OpenCV still returns an image, its damaged part filled with garbage or grey: such messages mean a reject.
_DAMAGE_MESSAGES = ("Corrupt JPEG data", "Premature end of JPEG file", "Invalid SOS parameters",
                    "Inconsistent progression sequence", "libpng warning: IDAT", "libpng error")
# What else OpenCV and libpng say while decoding: about this image (so part of a reason when it fails to decode),
# never worth showing with no file name.
_CODEC_CHATTER = ("[ERROR:", "[ WARN:", "[ INFO:", "libpng warning")
_capture: tuple[int, int] | None = None  # (pid, memfd): each process its own, created on first use
_capture_lock = threading.Lock()


def _capture_fd() -> int:
    global _capture
    if _capture is None or _capture[0] != os.getpid():
        _capture = (os.getpid(), os.memfd_create("recordio-pack-decoder-messages", os.MFD_CLOEXEC))
    return _capture[1]


@dataclass
class DecoderMessages:
    damage: list[str]  # lines that mean the data is damaged
    chatter: list[str]  # other lines OpenCV or libpng printed about this image


@contextmanager
def decoder_messages() -> Iterator[DecoderMessages]:
    """What the codec libraries print on stderr inside the block, collected instead of shown.

    File descriptor 2 is process-wide, so blocks are serialised by a lock; workers are processes, not threads.
    Lines from anything else are passed on to the real stderr.
    """
    with _capture_lock:
        capture = _capture_fd()
        if sys.stderr is not None:
            sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # stderr closed: keep it closed afterwards
            saved = -1
        os.dup2(capture, 2)
        messages = DecoderMessages([], [])
        try:
            yield messages
        finally:
            if saved >= 0:
                os.dup2(saved, 2)
                os.close(saved)
            else:
                os.close(2)
            _collect(capture, messages)


def _collect(capture: int, messages: DecoderMessages) -> None:
    length = os.lseek(capture, 0, os.SEEK_CUR)
    if not length:
        return
    text = os.pread(capture, min(length, 1 << 16), 0).decode("utf-8", "replace")
    os.ftruncate(capture, 0)
    os.lseek(capture, 0, os.SEEK_SET)
    for line in text.split("\n"):
        if line.startswith(_DAMAGE_MESSAGES):
            messages.damage.append(line.strip())
        elif line.startswith(_CODEC_CHATTER):
            messages.chatter.append(line.strip())
        elif line.strip() and sys.stderr is not None:
            print(line, file=sys.stderr)


def _imdecode(data: bytes, flag: int, kind: str) -> np.ndarray:
    """``cv2.imdecode``, rejecting the image when it fails or when the decoder reports damage on the way."""
    import cv2
    import numpy as np

    with decoder_messages() as messages:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag)
    damage = messages.damage
    if damage:
        raise ImageRejected(f"damaged {kind}: {damage[0]}" + (f" (+{len(damage) - 1} more)" if len(damage) > 1 else ""))
    if image is None:
        said = f": {messages.chatter[-1][:200]}" if messages.chatter else ""
        raise ImageRejected(f"corrupt {kind} (the decoder could not read it{said})")
    return image


def check_decodes(data: bytes, info: ImageInfo | None = None, max_pixels: int = ImageOptions.max_pixels) -> None:
    """Decode every byte of the image's data as cheaply as the format allows, or raise ImageRejected
    (``max_pixels``: the decompression-bomb guard, checked from the header first).

    JPEGs decode at 1/8 scale in gray: all the entropy-coded data is still read (where damage shows), with
    almost no inverse DCT or colour work.
    """
    import cv2

    info = info or probe(data, max_pixels)
    try:
        if info.format == "jpeg":
            _imdecode(data, cv2.IMREAD_REDUCED_GRAYSCALE_8, "JPEG")
        else:
            _imdecode(data, cv2.IMREAD_UNCHANGED, info.format.upper())
    except cv2.error as error:
        raise ImageRejected(f"OpenCV could not decode it: {_cv2_message(error)}") from None


def _cv2_message(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[-1] if text else type(error).__name__


def _decode(data: bytes, info: ImageInfo, options: ImageOptions) -> np.ndarray:
    import cv2
    import numpy as np

    if info.format == "jpeg":
        factor = _reduction(info, options)
        gray = options.color == 0 or (options.color == -1 and info.channels == 1)
        flag = {
            (False, 1): cv2.IMREAD_COLOR, (False, 2): cv2.IMREAD_REDUCED_COLOR_2,
            (False, 4): cv2.IMREAD_REDUCED_COLOR_4, (False, 8): cv2.IMREAD_REDUCED_COLOR_8,
            (True, 1): cv2.IMREAD_GRAYSCALE, (True, 2): cv2.IMREAD_REDUCED_GRAYSCALE_2,
            (True, 4): cv2.IMREAD_REDUCED_GRAYSCALE_4, (True, 8): cv2.IMREAD_REDUCED_GRAYSCALE_8,
        }[(gray, factor)]
        return _imdecode(data, flag, "JPEG")
    image = _imdecode(data, cv2.IMREAD_UNCHANGED, info.format.upper())
    if image.dtype != np.uint8:  # 16-bit PNG: keep the high byte, rounded
        image = np.clip((image.astype(np.float32) + 128.0) / 257.0, 0, 255).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] in (2, 4):  # alpha: composite onto white
        alpha = image[:, :, -1:].astype(np.float32) / 255.0
        colour = image[:, :, :-1].astype(np.float32)
        image = (colour * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
        if image.shape[2] == 1:
            image = image[:, :, 0]
    if options.color == 1 and image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif options.color == 0 and image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return image


def _transform(image: np.ndarray, info: ImageInfo, options: ImageOptions) -> np.ndarray:
    import cv2

    height, width = image.shape[:2]
    source_w, source_h = info.width, info.height
    if (height > width) != (source_h > source_w) and height != width:  # EXIF orientation rotated it
        source_w, source_h = source_h, source_w
    if options.center_crop and height != width:
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        image = image[top:top + side, left:left + side]
        source_w = source_h = min(source_w, source_h)
    target = target_size(source_w, source_h, options)
    if target is None or target == (image.shape[1], image.shape[0]):
        return image
    scale = min(target[0] / image.shape[1], target[1] / image.shape[0])
    if scale >= 1:
        return cv2.resize(image, target, interpolation=cv2.INTER_CUBIC)
    if scale < 0.5:  # large factors (PNG, or JPEGs past the DCT scaling): area averaging
        return cv2.resize(image, target, interpolation=cv2.INTER_AREA)
    # Mild factors (after DCT scaling, nearly every photo): a 3x3 Gaussian low-pass sized to the factor, then
    # bilinear. Nearly as free of aliasing as INTER_AREA (whose non-integer path costs about 4x) and unlike plain
    # bilinear, which is what im2rec does. GaussianBlur runs 8-bit images in fixed point: cheaper than a float
    # kernel, and the same bytes on every machine.
    sigma = ANTIALIAS_SIGMA * math.sqrt(1 / scale**2 - 1)
    if sigma >= MIN_SIGMA:
        image = cv2.GaussianBlur(image, (3, 3), sigma)
    return cv2.resize(image, target, interpolation=cv2.INTER_LINEAR)


def _encode(image: np.ndarray, options: ImageOptions) -> bytes:
    import cv2

    if options.encoding == "png":
        ok, encoded = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    else:
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, options.quality])
    if not ok:
        raise ImageRejected(f"the {options.encoding} encoder failed")
    return encoded.tobytes()


def prepare_image(data: bytes, options: ImageOptions) -> tuple[bytes, bool]:
    """The bytes to store for one input image, and whether they were re-encoded.

    ``never`` stores the input as it is (after validation); ``auto`` keeps valid 8-bit gray/colour JPEGs that
    need no resize or crop and are upright (EXIF orientation 1), and re-encodes everything else (CMYK, PNG,
    16-bit, alpha, too large, turned by EXIF); ``always`` re-encodes every image.  Kept bytes are decoded as
    well unless ``options.validate`` is "header".
    """
    info = probe(data, options.max_pixels)
    keep = options.reencode == "never" or _keeps_original(info, options)
    if keep and options.validate == "header":
        return data, False
    import cv2  # only here: header-checked pass-through never loads OpenCV and numpy (~0.1 s CPU, ~30 MiB each)

    try:
        if keep:
            check_decodes(data, info)
            return data, False
        image = _decode(data, info, options)
        return _encode(_transform(image, info, options), options), True
    except cv2.error as error:  # OpenCV refuses some malformed inputs by raising instead of returning None
        raise ImageRejected(f"OpenCV could not convert it: {_cv2_message(error)}") from None
