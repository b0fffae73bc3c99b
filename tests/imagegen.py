"""Small test images made on the fly (the suite never depends on downloaded data)."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import cv2
import numpy as np


def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth, photo-like BGR image (compresses like a photo, not like noise)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    noise = rng.normal(0, 4, size=image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def jpeg(width: int, height: int, seed: int = 0, quality: int = 90, gray: bool = False) -> bytes:
    image = photo(width, height, seed)
    if gray:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return data.tobytes()


def class_tree(root: Path, classes: int, per_class: int, width: int, height: int, seed_stride: int = 100) -> Path:
    """``root/n0000000L/N.JPEG``: ``per_class`` photos in each of ``classes`` class folders, photo N of class L
    ``width + N`` by ``height`` pixels with seed ``L * seed_stride + N``; returns ``root``."""
    for label in range(classes):
        folder = root / f"n{label:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        for number in range(per_class):
            (folder / f"{number}.JPEG").write_bytes(jpeg(width + number, height, seed=label * seed_stride + number))
    return root


def png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image)
    assert ok
    return data.tobytes()


def cmyk_jpeg(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), rgb).convert("CMYK").save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def bomb_jpeg() -> bytes:
    """A tiny real JPEG whose frame header claims 60000 x 60000 pixels."""
    data = bytearray(jpeg(16, 16))
    position = 2
    while True:
        marker = data[position + 1]
        length = struct.unpack_from(">H", data, position + 2)[0]
        if marker in (0xC0, 0xC2):
            struct.pack_into(">HH", data, position + 5, 60000, 60000)
            return bytes(data)
        position += 2 + length


def awkward_tree(root: Path) -> dict[str, str]:
    """A class tree with every awkward kind; returns {relative path: expected outcome}.

    Outcomes: "packed" (kept or converted) or "reject:<word in the reason>".
    """
    expected: dict[str, str] = {}

    def put(relative: str, data: bytes, outcome: str) -> None:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        expected[relative] = outcome

    for number in range(6):
        put(f"a_class/img{number}.JPEG", jpeg(320 + 16 * number, 240, seed=number), "packed")
    put("a_class/big.JPEG", jpeg(1200, 800, seed=40), "packed")
    put("a_class/gray.JPEG", jpeg(300, 200, seed=41, gray=True), "packed")
    put("b_class/cmyk.JPEG", cmyk_jpeg(200, 150, (200, 30, 40)), "packed")
    put("b_class/png_named.JPEG", png(photo(200, 150, 42)), "packed")
    rgba = np.dstack([photo(120, 90, 43), np.full((90, 120), 128, np.uint8)])
    put("b_class/alpha.png", png(rgba), "packed")
    put("b_class/deep.png", png((photo(120, 90, 44).astype(np.uint16) * 257)), "packed")
    put("c_class/truncated.JPEG", jpeg(400, 300, seed=45)[:3000], "reject:truncated")
    put("c_class/empty.JPEG", b"", "reject:empty")
    put("c_class/text.JPEG", b"this is not an image\n", "reject:not an image")
    put("c_class/bomb.JPEG", bomb_jpeg(), "reject:decompression bomb")
    put("c_class/anim.jpg", b"GIF89a" + bytes(64), "reject:unsupported")
    return expected
