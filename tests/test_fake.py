"""recordio_pack.fakes.images and ``recordio-pack fake``: determinism, layout, ImageNet-like sizes, awkward files,
refusal."""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
from pathlib import Path
from statistics import median
from typing import Callable

import pytest

from recordio_pack.errors import RecordioPackError, RefusedError, UsageError
from recordio_pack.fakes import images as fake
from recordio_pack.progress import Advanced, Progress, RecordingProgress

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SOF_MARKERS = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # DHT, JPG and DAC share the range


def jpeg_frame(data: bytes) -> tuple[int, int, int]:
    """(width, height, components) from a JPEG's start-of-frame segment."""
    assert data[:2] == b"\xff\xd8", "no JPEG start-of-image marker"
    offset = 2
    while offset + 4 <= len(data):
        assert data[offset] == 0xFF, f"no marker at offset {offset}"
        marker = data[offset + 1]
        if marker in SOF_MARKERS:
            _, _, height, width, components = struct.unpack(">HBHHB", data[offset + 2:offset + 10])
            return width, height, components
        (length,) = struct.unpack(">H", data[offset + 2:offset + 4])
        offset += 2 + length
    raise AssertionError("no start-of-frame marker")


def png_header(data: bytes) -> tuple[int, int, int, int]:
    """(width, height, bit depth, colour type) from a PNG's IHDR chunk."""
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    return struct.unpack(">IIBB", data[16:26])


def tree(root: Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_same_seed_gives_byte_identical_trees_and_another_seed_does_not(tmp_path: Path) -> None:
    first = fake.make_fake_dataset(tmp_path / "a", classes=3, images_per_class=4, seed=11, awkward=True)
    second = fake.make_fake_dataset(tmp_path / "b", classes=3, images_per_class=4, seed=11, awkward=True)
    other = fake.make_fake_dataset(tmp_path / "c", classes=3, images_per_class=4, seed=12)
    a, b = tree(tmp_path / "a"), tree(tmp_path / "b")
    assert len(a) == 3 * 4 + len(fake.AWKWARD_KINDS) + 1
    assert a == b
    assert first.awkward == second.awkward and first.class_names == second.class_names
    assert set(other.class_names).isdisjoint(first.class_names)
    assert set(tree(tmp_path / "c").values()).isdisjoint(a.values())


def test_any_subset_is_reproducible_on_its_own(tmp_path: Path) -> None:
    fake.make_fake_dataset(tmp_path / "small", classes=2, images_per_class=3, seed=5)
    fake.make_fake_dataset(tmp_path / "big", classes=3, images_per_class=5, seed=5)
    small, big = tree(tmp_path / "small"), tree(tmp_path / "big")
    assert len(small) == 6 and len(big) == 15
    assert all(big[name] == data for name, data in small.items())
    assert fake.class_ids(5, 2) == fake.class_ids(5, 3)[:2]


def test_layout_naming_and_result(tmp_path: Path) -> None:
    events = RecordingProgress()
    result = fake.make_fake_dataset(tmp_path / "out", classes=4, images_per_class=3, seed=1, progress=events)
    calls = [event.amount for event in events.of(Advanced)]
    folders = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert folders == list(result.class_names) and len(set(folders)) == 4
    assert all(re.fullmatch(r"n\d{8}", name) for name in folders)
    files = tree(tmp_path / "out")
    assert sorted(files) == sorted(f"{w}/{w}_{i}.JPEG" for w in folders for i in range(3))
    for data in files.values():
        assert data[:3] == b"\xff\xd8\xff" and data.endswith(b"\xff\xd9")
    assert (result.images, result.files, result.classes, result.awkward) == (12, 12, 4, ())
    assert result.bytes == sum(len(data) for data in files.values())
    assert calls == [1] * 12
    assert not list((tmp_path / "out").rglob("*.tmp"))
    assert json.loads(json.dumps(result.to_dict()))["images"] == 12


def test_planned_sizes_follow_imagenet() -> None:
    plans = [fake.plan_image(3, i // 100, i % 100, grayscale_fraction=0.05) for i in range(20000)]
    shorts = [min(p.width, p.height) for p in plans]
    longs = [max(p.width, p.height) for p in plans]
    share = lambda flags: sum(flags) / len(plans)  # noqa: E731
    assert 330 <= median(shorts) <= 400 and median(longs) == 500
    assert 0.005 <= share(side >= 2000 for side in longs) <= 0.03
    assert 0.02 <= share(side < 200 for side in shorts) <= 0.10
    assert 0.15 <= share(p.height > p.width for p in plans) <= 0.35
    assert 0.02 <= share(p.height == p.width for p in plans) <= 0.10
    assert 0.04 <= share(p.grayscale for p in plans) <= 0.06
    assert all(85 <= p.quality <= 95 for p in plans)
    assert fake.plan_image(3, 7, 9, 0.05) == plans[709]


def test_rendered_images_look_like_imagenet_files(tmp_path: Path) -> None:
    result = fake.make_fake_dataset(tmp_path, classes=4, images_per_class=25, seed=2, grayscale_fraction=0.1)
    frames, typical_bytes = [], []
    for class_index, wnid in enumerate(fake.class_ids(2, 4)):
        for index in range(25):
            data = (tmp_path / wnid / f"{wnid}_{index}.JPEG").read_bytes()
            plan = fake.plan_image(2, class_index, index, 0.1)
            width, height, components = jpeg_frame(data)
            assert (width, height, components) == (plan.width, plan.height, 1 if plan.grayscale else 3)
            frames.append((width, height, components))
            if max(width, height) == 500 and min(width, height) >= 333:
                typical_bytes.append(len(data))
    assert 250 <= median(min(w, h) for w, h, _ in frames) <= 450
    grays = sum(c == 1 for _, _, c in frames)
    assert grays == result.grayscale and grays >= 1
    # photo-like: far more than a flat picture (a few KB), far less than pure noise (~300 KB at this size)
    assert len(typical_bytes) >= 30
    assert 50_000 <= median(typical_bytes) <= 150_000


def test_awkward_files_are_what_they_claim(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    from PIL import Image

    result = fake.make_fake_dataset(tmp_path, classes=3, images_per_class=1, seed=4, awkward=True)
    kinds = {entry.kind: entry for entry in result.awkward}
    assert set(kinds) == set(fake.AWKWARD_KINDS) and len(result.awkward) == len(fake.AWKWARD_KINDS)
    listed = (tmp_path / fake.AWKWARD_LIST).read_text().splitlines()
    assert listed == [f"{entry.path}\t{entry.kind}" for entry in result.awkward]
    assert not list(tmp_path.glob("*/" + fake.AWKWARD_LIST))
    data = {}
    for kind, entry in kinds.items():
        folder, name = entry.path.split("/")
        assert folder in result.class_names and name.startswith(folder + "_")
        assert entry.convertible == fake.AWKWARD_KINDS[kind][1]
        data[kind] = (tmp_path / entry.path).read_bytes()

    cmyk = data["cmyk_jpeg"]
    assert jpeg_frame(cmyk)[2] == 4 and cmyk.endswith(b"\xff\xd9") and b"Adobe" in cmyk[:64]
    with Image.open(tmp_path / kinds["cmyk_jpeg"].path) as image:
        assert image.mode == "CMYK"
    assert kinds["png_named_jpeg"].path.endswith(".JPEG") and png_header(data["png_named_jpeg"])[2:] == (8, 2)
    assert png_header(data["gray_alpha_png"])[2:] == (8, 4)  # colour type 4: grey + alpha
    assert png_header(data["png_16bit"])[2:] == (16, 2)
    truncated = data["truncated_jpeg"]
    assert truncated[:3] == b"\xff\xd8\xff" and b"\xff\xd9" not in truncated and len(truncated) > 5000
    assert jpeg_frame(truncated)[2] == 3  # a real JPEG's header, cut inside the image data
    assert data["zero_byte"] == b""
    text = data["not_an_image"]
    assert text.decode("ascii").strip().isprintable() and text[:2] != b"\xff\xd8" and text[:8] != PNG_MAGIC
    assert result.bytes == sum(len(d) for d in tree(tmp_path).values())


def test_refuses_a_non_empty_folder_and_overwrite_replaces_only_generated_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(RefusedError, match="--overwrite"):
        fake.make_fake_dataset(out, classes=1, images_per_class=1)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]

    first = fake.make_fake_dataset(out, classes=2, images_per_class=2, overwrite=True)
    image = out / first.class_names[0] / f"{first.class_names[0]}_0.JPEG"
    expected = image.read_bytes()
    image.write_bytes(b"damaged")
    fake.make_fake_dataset(out, classes=2, images_per_class=2, overwrite=True)
    assert image.read_bytes() == expected
    assert (out / "keep.txt").read_text() == "mine"

    (tmp_path / "file").write_text("x")
    with pytest.raises(RecordioPackError, match="not a folder"):
        fake.make_fake_dataset(tmp_path / "file")


def test_an_interrupted_run_leaves_only_whole_files(tmp_path: Path) -> None:
    seen: list[float] = []

    class StopAfterThree(Progress):
        def on_progress(self, event: Advanced) -> None:
            seen.append(event.amount)
            if len(seen) == 3:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fake.make_fake_dataset(tmp_path, classes=2, images_per_class=4, seed=9, progress=StopAfterThree())
    partial = tree(tmp_path)
    assert len(partial) == 3 and not any(name.endswith(".tmp") for name in partial)
    fake.make_fake_dataset(tmp_path / "whole", classes=2, images_per_class=4, seed=9)
    whole = tree(tmp_path / "whole")
    assert all(whole[name] == data for name, data in partial.items())


def test_rejects_bad_arguments_and_missing_pillow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for bad in ({"classes": 0}, {"images_per_class": -1}, {"seed": -1}, {"grayscale_fraction": 1.5}):
        with pytest.raises(UsageError):
            fake.make_fake_dataset(tmp_path / "bad", **bad)
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(RecordioPackError, match="Pillow"):
        fake.make_fake_dataset(tmp_path / "nopil", awkward=True)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "nopil").exists()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).with_name("recordio-pack")  # .venv/bin/recordio-pack under make test
    return subprocess.run([str(executable), "fake", *args], capture_output=True, text=True, timeout=120)


def test_cli_end_to_end(tmp_path: Path, cli_main: Callable[..., subprocess.CompletedProcess]) -> None:
    out = tmp_path / "fake"
    # the installed entry point as a real process; the runs after it go through cli.main in this process
    done = _cli(str(out), "--classes", "2", "--images-per-class", "3", "--seed", "7", "--awkward", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["classes"], summary["images"], summary["seed"]) == (2, 3 * 2, 7)
    assert summary["class_names"] == sorted(fake.class_ids(7, 2)) and summary["files"] == 6 + len(fake.AWKWARD_KINDS)
    assert {a["kind"] for a in summary["awkward"]} == set(fake.AWKWARD_KINDS)
    assert summary["bytes"] == sum(len(data) for data in tree(out).values())
    assert tree(out) == tree(fake.make_fake_dataset(tmp_path / "lib", classes=2, images_per_class=3, seed=7,
                                                    awkward=True).out)

    again = cli_main("fake", str(out), "-q")
    assert again.returncode == 3 and "--overwrite" in again.stderr and again.stderr.count("\n") == 1
    text = cli_main("fake", str(out), "-q", "--overwrite", "--classes", "1", "--images-per-class", "2")
    assert text.returncode == 0 and "1 classes, 2 images" in text.stdout and str(out) in text.stdout
    bad = cli_main("fake", str(tmp_path / "x"), "--classes", "0")
    assert bad.returncode == 2


def test_big_photos_are_rendered_whole_and_deterministic() -> None:
    import numpy as np

    plan = fake.ImagePlan(2100, 1400, True, 90)
    pixels = fake.render_image(plan, np.random.default_rng(1))
    assert pixels.shape == (1400, 2100) and pixels.dtype == np.uint8 and pixels.std() > 10
    assert np.array_equal(pixels, fake.render_image(plan, np.random.default_rng(1)))
    assert jpeg_frame(fake.encode_image(pixels, plan.quality)) == (2100, 1400, 1)


def test_fake_archives_flag_writes_the_official_layout(tmp_path: Path) -> None:
    from recordio_pack.cli import main

    assert main(["fake", str(tmp_path / "a"), "--archives", "--classes", "2", "--images-per-class", "2", "-q"]) == 0
    names = sorted(path.name for path in (tmp_path / "a").iterdir())
    assert names == ["ILSVRC2012_devkit_t12.tar.gz", "ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"]
