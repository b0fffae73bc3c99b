"""``recordio-pack fake OUT``: write a synthetic ImageNet-shaped image tree for demos, tests and benchmarks."""

from __future__ import annotations

import argparse

from recordio_pack.commands._common import ProgressBar, add_output_options, emit, positive_int, ranged

_count = ranged(int, 0)
_fraction = ranged(float, 0.0, 1.0)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fake", help="generate a synthetic ImageNet-shaped image tree",
        description="Write OUT/<wnid>/<wnid>_<n>.JPEG: class folders named like WordNet ids, holding photo-like "
                    "JPEGs whose sizes follow ILSVRC2012 train (median 500x375, some above 2000 px, some "
                    "thumbnails, about 2% grayscale). The same seed and options give byte-identical files. "
                    "--awkward adds one file of each kind a real crawl holds (CMYK JPEG, PNG named .JPEG, "
                    "truncated JPEG, empty file, text named .JPEG, gray+alpha PNG, 16-bit PNG), listed in "
                    "OUT/AWKWARD.tsv.",
        epilog="example: recordio-pack fake demo/train --classes 10 --images-per-class 50 --awkward")
    parser.add_argument("out", metavar="OUT", help="folder to create (must be empty or missing, unless --overwrite)")
    parser.add_argument("--classes", type=positive_int, default=10, metavar="N", help="class folders (default 10)")
    parser.add_argument("--images-per-class", type=_count, default=20, metavar="N",
                        help="JPEGs in each class folder (default 20)")
    parser.add_argument("--seed", type=_count, default=0, metavar="S", help="random seed, 0 or more (default 0)")
    parser.add_argument("--grayscale-fraction", type=_fraction, default=0.02, metavar="F",
                        help="share of single-channel JPEGs, 0..1 (default 0.02)")
    parser.add_argument("--awkward", action="store_true",
                        help="also write one awkward file of each kind (needs Pillow: the 'fake' extra)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty OUT, replacing files of the same names (nothing is deleted)")
    parser.add_argument("--archives", action="store_true",
                        help="write the official ILSVRC2012 archive layout instead (train tar of per-class tars, "
                             "flat val tar, devkit); same as `recordio-pack imagenet fake-archives`")
    parser.add_argument("--val-per-class", type=positive_int, default=3, metavar="N",
                        help="with --archives or --format tfrecord: validation images per class (default 3)")
    parser.add_argument("--format", choices=["images", "tfrecord"], default="images",
                        help="tfrecord: write a fake_imagenet in the Cloud TPU layout instead (train-*-of-* and "
                             "validation-*-of-* TFRecord shards as imagenet_to_gcs.py writes them, with manifests "
                             "and DALI index files), packed from generated images")
    add_output_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import time

    if args.archives:
        from recordio_pack.commands.imagenet import run_fake

        args.train_per_class, args.max_side, args.photos = args.images_per_class, 0, None
        return run_fake(args)
    from pathlib import Path

    from recordio_pack.fakes.images import AWKWARD_LIST, make_fake_dataset

    if args.format == "tfrecord":
        return _run_tfrecord(args)

    started = time.monotonic()
    with ProgressBar(args) as bar:  # drawn from the first file on, so a refusal prints no empty bar
        result = make_fake_dataset(Path(args.out), classes=args.classes, images_per_class=args.images_per_class,
                                   seed=args.seed, awkward=args.awkward, grayscale_fraction=args.grayscale_fraction,
                                   overwrite=args.overwrite, progress=bar)
    seconds = time.monotonic() - started
    summary = result.to_dict()
    summary["seconds"] = round(seconds, 3)
    text = (f"{result.classes} classes, {result.images} images ({result.grayscale} grayscale)"
            + (f" + {len(result.awkward)} awkward files (see {result.out / AWKWARD_LIST})" if result.awkward else "")
            + f", {result.bytes / 1e6:.1f} MB in {seconds:.1f} s ({result.files / max(seconds, 1e-9):.0f} files/s)"
            + f" -> {result.out}")
    emit(args, summary, text)
    return 0


def _run_tfrecord(args: argparse.Namespace) -> int:
    from pathlib import Path

    from recordio_pack.errors import UsageError
    from recordio_pack.fakes.tfrecords import make_fake_tfrecords

    if args.awkward or args.archives:
        raise UsageError("--format tfrecord writes the TPU layout from plain fake photos: drop --awkward/--archives")
    with ProgressBar(args) as bar:
        result = make_fake_tfrecords(Path(args.out), classes=args.classes, images_per_class=args.images_per_class,
                                     val_per_class=args.val_per_class, seed=args.seed,
                                     grayscale_fraction=args.grayscale_fraction, overwrite=args.overwrite,
                                     progress=bar)
    text = "\n".join(f"{split}: {packed.records} records in {packed.shards} TFRecord shard(s)"
                      for split, packed in (("train", result.train), ("validation", result.validation)))
    emit(args, result.to_dict(), f"{text}\n-> {result.out}")
    return 0
