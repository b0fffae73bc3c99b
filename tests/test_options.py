"""PackOptions: one ImageOptions inside, flat keywords accepted, fingerprints as before the split."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import pickle
from typing import Any

import pytest

from recordio_pack import options as options_module
from recordio_pack.imaging import ImageOptions
from recordio_pack.options import DEFAULT_SHARD_SIZE, PackOptions, opencv_version

# Computed with the code before PackOptions held an ImageOptions (every field flat), with OpenCV 5.0.0: a manifest
# or journal written then must still match the same options now.
_PINNED = [
    ({}, "df77d0051bf4bc40ae67499420216f34c3a25fa6b832585dca87eae0d06b8d4a"),
    (dict(resize=256, upscale=True, center_crop=True, quality=90, encoding="png", color=0, reencode="always",
          max_pixels=50_000_000, validate="header", pack_label=True, key="lst-index", num_shards=4, on_error="fail",
          workers=3), "5df3c9ba2f4ba879ce46ee9943c70e7d6ed58ddd9323798115f9e8ac942bf1ff"),
    (dict(reencode="never", shard_size=1 << 20), "fe9a1c9015c6525f4d98a20ea852cc9e0cbdb9346cc0f83115a076e3b64a85d3"),
]


@pytest.mark.parametrize(("settings", "fingerprint"), _PINNED, ids=["default", "everything-set", "pass-through"])
def test_the_fingerprint_is_the_one_the_flat_options_gave(monkeypatch: pytest.MonkeyPatch, settings: dict[str, Any],
                                                          fingerprint: str) -> None:
    monkeypatch.setattr(options_module, "opencv_version", lambda: "5.0.0")
    assert PackOptions(**settings).fingerprint() == fingerprint


def test_output_affecting_options_stay_flat_in_the_same_order() -> None:
    assert list(PackOptions(resize=64, workers=2).output_affecting().items()) == [
        ("resize", 64), ("upscale", False), ("center_crop", False), ("quality", 95), ("encoding", "jpg"),
        ("color", 1), ("reencode", "auto"), ("max_pixels", 100_000_000), ("validate", "full"), ("pack_label", False),
        ("key", "position"), ("num_shards", None), ("shard_size", DEFAULT_SHARD_SIZE), ("on_error", "skip")]


def test_flat_keywords_build_the_image_options() -> None:
    options = PackOptions(resize=128, quality=80, encoding="png", workers=2)
    assert options.image == ImageOptions(resize=128, quality=80, encoding="png")
    assert options.workers == 2
    assert PackOptions(image=ImageOptions(resize=128, quality=80, encoding="png"), workers=2) == options
    assert PackOptions(image=ImageOptions(resize=64), quality=80).image == ImageOptions(resize=64, quality=80)
    assert dataclasses.replace(options, workers=4) == PackOptions(resize=128, quality=80, encoding="png", workers=4)
    assert pickle.loads(pickle.dumps(options)) == options


def test_unknown_keywords_are_refused() -> None:
    with pytest.raises(TypeError, match="resise"):
        PackOptions(resise=128)


def test_every_invalid_value_is_reported_at_once_image_ones_first() -> None:
    with pytest.raises(ValueError) as raised:
        PackOptions(quality=0, color=2, key="other", workers=-1)
    assert str(raised.value) == ("quality must be 1..100, got 0; color must be 1, 0 or -1, got 2; key must be position "
                                 "or lst-index, got 'other'; workers must be >= 0, got -1")
    with pytest.raises(ValueError, match="pass-through"):
        PackOptions(reencode="never", resize=64)


def _installed(monkeypatch: pytest.MonkeyPatch, versions: dict[str, str]) -> None:
    def version(distribution: str) -> str:
        if distribution not in versions:
            raise importlib.metadata.PackageNotFoundError(distribution)
        return versions[distribution]

    monkeypatch.setattr(importlib.metadata, "version", version)


def test_the_opencv_version_is_the_wheels_without_its_build_number(monkeypatch: pytest.MonkeyPatch) -> None:
    _installed(monkeypatch, {"opencv-contrib-python": "4.10.0.84"})
    assert opencv_version() == "4.10.0"
    _installed(monkeypatch, {"opencv-python": "4.10.0.84", "opencv-python-headless": "4.10.0.82"})
    assert opencv_version() == "4.10.0"


@pytest.mark.parametrize("versions", [{}, {"opencv-python": "4.10.0.84", "opencv-python-headless": "5.0.0.93"}],
                         ids=["no-wheel", "wheels-disagree"])
def test_without_one_answer_from_the_wheels_opencv_is_asked(monkeypatch: pytest.MonkeyPatch,
                                                           versions: dict[str, str]) -> None:
    import cv2

    _installed(monkeypatch, versions)
    assert opencv_version() == cv2.__version__
