"""A fake ImageNet in the Cloud TPU layout (what the TPU guide's ``fake_imagenet`` demo data is): ``train-*`` and
``validation-*`` TFRecord shards of ``tf.train.Example`` as ``imagenet_to_gcs.py`` writes them, packed by our own
pipeline from ``images.make_fake_dataset``'s photo-like JPEGs, with both manifests and DALI's index files.

Each class gets ``images_per_class + val_per_class`` images; the last ``val_per_class`` of each class make the
validation split, so both splits share the class map (1-based labels over the sorted class folders).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recordio_pack.errors import RecordioPackError, RefusedError
from recordio_pack.fakes.images import make_fake_dataset
from recordio_pack.formats.tfrecord import default_num_shards
from recordio_pack.inputs import open_input
from recordio_pack.options import PackOptions
from recordio_pack.pack import PackResult, pack_input
from recordio_pack.progress import Progress

__all__ = ["FakeTFRecords", "make_fake_tfrecords"]


@dataclass(frozen=True)
class FakeTFRecords:
    out: Path
    train: PackResult
    validation: PackResult

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "train": self.train.as_dict(), "validation": self.validation.as_dict()}


def make_fake_tfrecords(out: Path, *, classes: int = 10, images_per_class: int = 20, val_per_class: int = 3,
                        seed: int = 0, grayscale_fraction: float = 0.02, overwrite: bool = False,
                        workers: int = 0, progress: Progress | None = None) -> FakeTFRecords:
    """Write the two splits into ``out`` (refused when it holds anything, unless ``overwrite``): shard counts
    are imagenet_to_gcs.py's (1024 train, 128 validation), fewer when there are fewer images than that."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RecordioPackError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise RefusedError(f"{out} is not empty; use --overwrite to replace the files this command generates")
    out.mkdir(parents=True, exist_ok=True)
    images = out / ".fake-images"  # a fixed name: the manifests' origin is the same on every run
    shutil.rmtree(images, ignore_errors=True)
    try:
        made = make_fake_dataset(images / "train", classes=classes, images_per_class=images_per_class + val_per_class,
                                 seed=seed, grayscale_fraction=grayscale_fraction, progress=progress)
        for wnid in made.class_names:  # the last val_per_class images of each class are the validation split
            (images / "validation" / wnid).mkdir(parents=True)
            for number in range(images_per_class, images_per_class + val_per_class):
                name = f"{wnid}_{number}.JPEG"
                (images / "train" / wnid / name).rename(images / "validation" / wnid / name)
        results = {}
        for split in ("train", "validation"):
            options = PackOptions(format="tfrecord", preset="tpu", num_shards=default_num_shards("tpu", split),
                                  workers=workers)
            results[split] = pack_input(open_input(images / split, seed=seed), out, options, name=split,
                                        overwrite=overwrite, progress=progress)
    finally:
        shutil.rmtree(images, ignore_errors=True)
    return FakeTFRecords(out, results["train"], results["validation"])
