"""recordio_pack.imaging: the resize filter, judged the way the benchmark judges it (against area averaging)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from recordio_pack.imaging import ImageOptions, prepare_image


def _psnr(image: np.ndarray, reference: np.ndarray) -> float:
    error = float(np.mean((image.astype(np.float64) - reference.astype(np.float64)) ** 2))
    return 99.0 if error == 0 else 10 * math.log10(255.0**2 / error)


def _fine_detail(width: int, height: int) -> np.ndarray:
    """Stripes at 0.42 cycles per pixel: under the source's Nyquist limit, over the limit of a 0.68x copy."""
    x = np.arange(width, dtype=np.float64)[None, :]
    y = np.arange(height, dtype=np.float64)[:, None]
    wave = 127.5 + 100 * np.sin(2 * math.pi * 0.42 * (x + 0.5 * y))
    return np.repeat(wave[:, :, None], 3, axis=2).astype(np.uint8)


@pytest.mark.parametrize("width, height", [(500, 375), (375, 500), (600, 400)])
def test_downscaling_is_anti_aliased(width: int, height: int) -> None:
    """Plain bilinear (im2rec) folds the stripes into a false coarse pattern; ours must stay near area averaging."""
    source = _fine_detail(width, height)
    lossless = cv2.imencode(".png", source)[1].tobytes()
    options = ImageOptions(resize=256, reencode="always", encoding="png")
    ours = cv2.imdecode(np.frombuffer(prepare_image(lossless, options)[0], np.uint8), cv2.IMREAD_COLOR)
    size = (ours.shape[1], ours.shape[0])
    assert min(size) == 256
    reference = cv2.resize(source, size, interpolation=cv2.INTER_AREA)
    bilinear = cv2.resize(source, size, interpolation=cv2.INTER_LINEAR)
    assert _psnr(ours, reference) > _psnr(bilinear, reference) + 3.0


def test_a_mild_downscale_keeps_the_detail() -> None:
    """The low-pass is sized to the factor: a 0.95x copy of a photo stays as sharp as bilinear makes it."""
    rng = np.random.default_rng(7)
    source = cv2.GaussianBlur(rng.integers(0, 256, size=(269, 360, 3), dtype=np.uint8), (0, 0), 1.0)
    lossless = cv2.imencode(".png", source)[1].tobytes()
    ours = cv2.imdecode(np.frombuffer(prepare_image(lossless, ImageOptions(resize=256, encoding="png"))[0],
                                      np.uint8), cv2.IMREAD_COLOR)
    bilinear = cv2.resize(source, (ours.shape[1], ours.shape[0]), interpolation=cv2.INTER_LINEAR)
    assert _psnr(ours, bilinear) > 45
