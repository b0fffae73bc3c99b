"""``recordio-pack imagenet {download,prepare,labels,fake-archives}``: the ILSVRC2012 archives, end to end."""

from __future__ import annotations

import argparse

from recordio_pack.commands._common import add_output_options, emit, positive_int

_CONVENTIONS = ("sorted", "devkit", "tf")
_LABELS_HELP = ("label convention: sorted = sorted WNID index 0..999 (MXNet, PyTorch, Keras models); "
                "devkit = ILSVRC2012_ID - 1 (meta.mat order); tf = sorted + 1 with 0 = background (TensorFlow)")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "imagenet", help="ILSVRC2012 archives: download, prepare folders, labels, fake archives",
        description="Work with the ILSVRC2012 (ImageNet-1k) archives. `pack` also reads "
                    "ILSVRC2012_img_train.tar / ILSVRC2012_img_val.tar directly, with no extracted tree.")
    commands = parser.add_subparsers(dest="imagenet_command", metavar="STEP", required=True)
    _register_download(commands)
    _register_prepare(commands)
    _register_labels(commands)
    _register_fake(commands)


def _register_download(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "download", help="download archives with resume, retries and checksum verification",
        description="Download URLs (or --base-url + --archives) into --out. Data goes to NAME.part and is "
                    "renamed when complete and its MD5/SHA-256 match the published values; a rerun resumes a "
                    ".part with an HTTP Range request. Free space is checked before the first byte.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("urls", nargs="*", metavar="URL", help="archive URLs (from your image-net.org account)")
    parser.add_argument("--base-url", help="URL prefix to which the --archives file names are appended")
    parser.add_argument("--archives", default="train,val,devkit",
                        help="with --base-url: comma-separated train, val, devkit, train_t3 or file names")
    parser.add_argument("-o", "--out", default=".", help="folder to download into")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip the checksum comparison (digests are still computed and reported)")
    parser.add_argument("--retries", type=int, default=8, help="consecutive failed attempts before giving up")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds without data before an attempt fails")
    parser.add_argument("--overwrite", action="store_true", help="download again even when the file exists")
    add_output_options(parser)
    parser.set_defaults(run=run_download)


def _register_prepare(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "prepare", help="archives -> OUT/train/<wnid>/*.JPEG and OUT/val/<wnid>/*.JPEG",
        description="Extract the train archive's per-class tars in parallel straight into OUT/train/<wnid>/ "
                    "(never copying the tar twice), place validation images into OUT/val/<wnid>/ by the devkit's "
                    "ground truth (keyed by file name), and write OUT/synsets.txt and OUT/ilsvrc2012_classes.tsv. "
                    "Resumable: a rerun skips finished classes after checking their counts. Hostile tar members "
                    "(absolute paths, '..', links, devices) are refused.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("out", help="output folder")
    parser.add_argument("--archives", metavar="DIR",
                        help="folder holding the archives under their official names (instead of the next three)")
    parser.add_argument("--train", help="ILSVRC2012_img_train.tar")
    parser.add_argument("--val", help="ILSVRC2012_img_val.tar (needs --devkit)")
    parser.add_argument("--devkit", help="ILSVRC2012_devkit_t12.tar.gz")
    parser.add_argument("--labels", choices=_CONVENTIONS, default="sorted", help=_LABELS_HELP)
    parser.add_argument("--threads", type=positive_int, default=8, help="classes extracted at once")
    parser.add_argument("--check-counts", choices=["auto", "real", "none"], default="auto",
                        help="auto: check ILSVRC2012's totals (1000 classes, 1,281,167 train, 50,000 val, 50 per "
                             "class) when the input has 1000 classes; real: always; none: consistency only")
    parser.add_argument("--overwrite", action="store_true",
                        help="allow writing into train/ or val/ folders that prepare did not create")
    add_output_options(parser)
    parser.set_defaults(run=run_prepare)


def _register_labels(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "labels", help="write synsets.txt and the class table for a label convention",
        description="Write OUT/synsets.txt (label<TAB>wnid, what list/pack read) and OUT/ilsvrc2012_classes.tsv "
                    "(label, ILSVRC2012_ID, wnid, sorted index, names) from the devkit's meta.mat (or, for sorted/tf "
                    "without names, from the train archive's classes).")
    parser.add_argument("out", help="output folder")
    parser.add_argument("--devkit", help="ILSVRC2012_devkit_t12.tar.gz (needed for --labels devkit and for names)")
    parser.add_argument("--train", help="ILSVRC2012_img_train.tar, to take the classes from when there is no devkit")
    parser.add_argument("--labels", choices=_CONVENTIONS, default="sorted", help=_LABELS_HELP)
    add_output_options(parser)
    parser.set_defaults(run=run_labels)


def _register_fake(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "fake-archives", help="write a small fake ILSVRC2012 in the official archive layout",
        description="Write OUT/ILSVRC2012_img_train.tar (tar of per-class tars, with one CMYK JPEG and one PNG "
                    "named .JPEG), OUT/ILSVRC2012_img_val.tar (flat, shuffled) and OUT/ILSVRC2012_devkit_t12.tar.gz "
                    "(meta.mat whose ID order differs from sorted order, and the validation ground truth). "
                    "Same arguments, same bytes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("out", help="output folder")
    parser.add_argument("--classes", type=positive_int, default=5, help="number of classes (at least 2)")
    parser.add_argument("--train-per-class", type=positive_int, default=6, help="train images per class")
    parser.add_argument("--val-per-class", type=positive_int, default=3, help="validation images per class")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--max-side", type=int, default=0,
                        help="cap on the longer image side in px (0: realistic sizes, median 500x375)")
    parser.add_argument("--photos", metavar="DIR",
                        help="take each image's bytes from the JPEGs in DIR (sorted, cycled) instead of generating "
                             "them: archives of real photos for benchmarks")
    parser.add_argument("--overwrite", action="store_true", help="replace existing archives")
    add_output_options(parser)
    parser.set_defaults(run=run_fake)


def run_download(args: argparse.Namespace) -> int:
    from recordio_pack.commands._common import ProgressBar
    from recordio_pack.errors import UsageError
    from recordio_pack.imagenet.download import archive_urls, download

    urls = list(args.urls)
    if args.base_url:
        urls += archive_urls(args.base_url, [item.strip() for item in args.archives.split(",") if item.strip()])
    if not urls:
        raise UsageError("give archive URLs, or --base-url (with --archives)")

    results, lines = [], []
    for url in urls:
        with ProgressBar(args) as bar:  # "hash NAME" for bytes already on disk, then "NAME"
            result = download(url, args.out, verify=args.verify, retries=args.retries, timeout=args.timeout,
                              overwrite=args.overwrite, progress=bar)
        results.append(result.as_dict())
        state = "verified" if result.verified else "NOT verified"
        lines.append(f"{result.path}: {result.bytes:,} bytes, {state}"
                     + (f" ({result.note})" if result.note else "") + f"; md5 {result.md5 or '-'}")
    emit(args, {"downloads": results}, "\n".join(lines))
    return 0


def _archive_paths(args: argparse.Namespace) -> tuple[str | None, str | None, str | None]:
    from pathlib import Path

    from recordio_pack.errors import UsageError
    from recordio_pack.imagenet.download import OFFICIAL_NAMES

    train, val, devkit = args.train, args.val, args.devkit
    if args.archives:
        folder = Path(args.archives)
        found = {key: folder / OFFICIAL_NAMES[key] for key in ("train", "val", "devkit")}
        train = train or (str(found["train"]) if found["train"].exists() else None)
        val = val or (str(found["val"]) if found["val"].exists() else None)
        devkit = devkit or (str(found["devkit"]) if found["devkit"].exists() else None)
        if not (train or val):
            raise UsageError(f"{folder}: neither {OFFICIAL_NAMES['train']} nor {OFFICIAL_NAMES['val']} is there")
    return train, val, devkit


def run_prepare(args: argparse.Namespace) -> int:
    from recordio_pack.commands._common import ProgressBar
    from recordio_pack.imagenet.prepare import prepare

    train, val, devkit = _archive_paths(args)

    with ProgressBar(args) as bar:  # "prepare", in classes (val counts as one)
        result = prepare(args.out, train_tar=train, val_tar=val, devkit=devkit, labels=args.labels,
                         threads=args.threads, overwrite=args.overwrite, check_counts=args.check_counts,
                         progress=bar)
    lines = []
    if train:
        lines.append(f"train: {result.train_images:,} images in {result.train_classes} classes"
                     + (f" ({result.train_classes_resumed} already done)" if result.train_classes_resumed else ""))
    if val:
        lines.append(f"val: {result.val_images:,} images in {result.val_classes} classes"
                     + (" (already done)" if result.val_resumed else ""))
    lines.append(f"counts checked: {result.counts_checked}")
    lines.append(f"labels ({result.labels}): {result.label_files['class_map']}, {result.label_files['table']}")
    emit(args, result.as_dict(), "\n".join(lines))
    return 0


def run_labels(args: argparse.Namespace) -> int:
    from recordio_pack.errors import UsageError
    from recordio_pack.imagenet.archive import list_class_tars
    from recordio_pack.imagenet.devkit import read_devkit
    from recordio_pack.imagenet.labels import label_map, write_label_files

    if not (args.devkit or args.train):
        raise UsageError("give --devkit (or --train for sorted/tf labels without names)")
    kit = read_devkit(args.devkit) if args.devkit else None
    wnids = [item.wnid for item in list_class_tars(args.train)] if args.train else None
    mapping = label_map(args.labels, devkit=kit, wnids=wnids)
    paths = write_label_files(mapping, args.out)
    emit(args, {"labels": args.labels, "classes": len(mapping.rows), **paths},
         f"{len(mapping.rows)} classes, labels {args.labels}: {paths['class_map']}, {paths['table']}")
    return 0


def run_fake(args: argparse.Namespace) -> int:
    from recordio_pack.fakes.archives import make_fake_archives

    result = make_fake_archives(args.out, classes=args.classes, train_per_class=args.train_per_class,
                                val_per_class=args.val_per_class, seed=args.seed, max_side=args.max_side,
                                overwrite=args.overwrite, photos=args.photos)
    emit(args, result.as_dict(),
         f"{result.train_tar}: {result.train_images} images in {len(result.classes)} class tars\n"
         f"{result.val_tar}: {result.val_images} images\n{result.devkit}\n"
         f"awkward files: " + ", ".join(f"{path} ({kind})" for path, kind in result.awkward.items()))
    return 0
