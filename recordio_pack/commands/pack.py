"""``recordio-pack pack INPUT OUTDIR``: images (a folder, an im2rec .lst, or an ImageNet tar) to RecordIO shards."""

from __future__ import annotations

import argparse

from recordio_pack.commands._common import add_output_options, emit, parse_size, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pack", help="pack images into RecordIO .rec/.idx shards",
        description="Pack INPUT into OUTDIR/NAME.rec/.idx (one shard) or NAME-00003-of-00016.rec/.idx, with "
                    "NAME.manifest.json (checksums), NAME.rejects.tsv (every skipped input and why) and the class "
                    "map. INPUT is a class-folder tree (listed like `list`), an im2rec .lst (with --root), or an "
                    "uncompressed ILSVRC2012 train/val tar. A killed run resumes when rerun; outputs of other "
                    "options are never replaced without --overwrite.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("input", help="folder, .lst file or .tar archive")
    parser.add_argument("outdir", help="output folder")
    parser.add_argument("--name", help="dataset name for output files (default: INPUT's base name)")
    parser.add_argument("--root", help="folder the .lst paths are relative to (required with a .lst)")
    parser.add_argument("--classes", help="class map file (label<TAB>name lines) for a .lst; default: synsets.txt beside it")
    image = parser.add_argument_group("images")
    image.add_argument("--resize", type=int, default=0, help="shorter side in pixels; 0 keeps the size")
    image.add_argument("--upscale", action="store_true", help="also enlarge images smaller than --resize (im2rec always does)")
    image.add_argument("--center-crop", action="store_true", help="crop the central square before resizing")
    image.add_argument("--quality", type=int, default=95, help="JPEG quality when re-encoding")
    image.add_argument("--encoding", choices=["jpg", "png"], default="jpg", help="format of re-encoded images")
    image.add_argument("--color", type=int, choices=[1, 0, -1], default=1, help="1 colour, 0 grayscale, -1 as stored")
    image.add_argument("--reencode", choices=["auto", "always", "never"], default="auto",
                       help="auto: keep valid 8-bit RGB/gray JPEGs that need no resize, convert the rest; "
                            "always: re-encode every image (im2rec); never: store bytes as they are (--pass-through)")
    image.add_argument("--max-pixels", type=positive_int, default=100_000_000, help="decompression-bomb guard")
    records = parser.add_argument_group("records and shards")
    records.add_argument("--pack-label", action="store_true", help="store multi-label .lst lines as label vectors")
    records.add_argument("--key", choices=["position", "lst-index"], default="position",
                         help=".idx keys: 0..n-1 per shard, or the .lst index (im2rec)")
    shards = records.add_mutually_exclusive_group()
    shards.add_argument("--num-shards", type=positive_int, help="number of shards")
    shards.add_argument("--shard-size", type=parse_size, help="input bytes per shard, e.g. 512MiB (default 256MiB)")
    listing = parser.add_argument_group("listing (folder input)")
    listing.add_argument("--exts", default=".jpeg,.jpg,.png", help="extensions to list")
    listing.add_argument("--no-shuffle", dest="shuffle", action="store_false", help="pack in sorted order")
    listing.add_argument("--seed", type=int, default=100, help="shuffle seed")
    archive = parser.add_argument_group("archive input")
    archive.add_argument("--labels", choices=["sorted", "devkit", "tf"], default="sorted", help="ImageNet label convention")
    archive.add_argument("--devkit", help="ILSVRC2012_devkit_t12.tar.gz (labels for the val tar)")
    run_group = parser.add_argument_group("run")
    run_group.add_argument("--workers", type=positive_int, help="worker processes (default: all usable CPUs)")
    run_group.add_argument("--on-error", choices=["skip", "fail"], default="skip",
                           help="skip: reject a bad image (listed in NAME.rejects.tsv) and go on; fail: stop")
    run_group.add_argument("--overwrite", action="store_true", help="replace outputs of a different pack")
    add_output_options(parser)
    parser.set_defaults(run=run)


def _load_input(args: argparse.Namespace):  # -> (entries, source, classes, convention, name, write_list)
    import sys
    from pathlib import Path

    from recordio_pack.errors import UsageError
    from recordio_pack.listing import LstIndex, ordered_entries, read_class_map, scan_tree
    from recordio_pack.sources import FolderSource

    path = Path(args.input)
    if path.is_dir():
        listing = scan_tree(path, [ext for ext in args.exts.split(",") if ext])
        for problem_path, problem in listing.problems:
            print(f"not listed: {problem_path!r}: {problem}", file=sys.stderr)
        entries = ordered_entries(listing.entries, args.shuffle, args.seed)
        return entries, FolderSource(str(path)), listing.classes, "sorted", path.name, True
    if path.suffix == ".lst":
        if not args.root:
            raise UsageError("--root is required with a .lst input (the folder its paths are relative to)")
        try:
            entries = LstIndex(path)
        except ValueError as error:
            raise UsageError(str(error)) from None
        class_file = Path(args.classes) if args.classes else path.parent / "synsets.txt"
        classes = read_class_map(class_file) if class_file.exists() else None
        return entries, FolderSource(args.root), classes, "lst", path.stem, False
    if path.suffix == ".tar":
        try:
            from recordio_pack.imagenet.archive import open_archive_input
        except ImportError:
            raise UsageError("packing straight from a .tar needs the imagenet module") from None
        entries, source, classes, convention = open_archive_input(
            path, labels=args.labels, devkit=Path(args.devkit) if args.devkit else None)
        entries = ordered_entries(entries, args.shuffle, args.seed)  # the same order as packing the tree
        return entries, source, classes, convention, path.name.split(".")[0], True
    raise UsageError(f"{path}: not a folder, .lst or .tar")


def run(args: argparse.Namespace) -> int:
    import time

    from recordio_pack.commands._common import ProgressBar
    from recordio_pack.errors import UsageError
    from recordio_pack.options import PackOptions
    from recordio_pack.pack import PackEvent, pack_entries

    try:
        options = PackOptions(
            resize=args.resize, upscale=args.upscale, center_crop=args.center_crop, quality=args.quality,
            encoding=args.encoding, color=args.color, reencode=args.reencode, max_pixels=args.max_pixels,
            pack_label=args.pack_label, key=args.key, num_shards=args.num_shards, shard_size=args.shard_size,
            on_error=args.on_error, workers=args.workers or 0)
    except ValueError as error:
        raise UsageError(str(error)) from None
    entries, source, classes, convention, default_name, write_list = _load_input(args)
    bar: ProgressBar | None = None
    moved = [0, 0]
    started = time.monotonic()

    def progress(event: PackEvent) -> None:
        nonlocal bar
        if event.kind == "plan":
            bar = ProgressBar(args, total=event.images, unit="img", desc=f"pack {args.name or default_name}")
        elif event.kind == "progress" and bar is not None:
            moved[0] += event.bytes_in
            moved[1] += event.bytes_out
            elapsed = max(time.monotonic() - started, 1e-6)
            bar.update(event.images, f"in {moved[0] / 2**20 / elapsed:.1f} MiB/s, out {moved[1] / 2**20 / elapsed:.1f} MiB/s")

    try:
        result = pack_entries(entries, source, args.outdir, args.name or default_name, options, classes=classes,
                              label_convention=convention, overwrite=args.overwrite, write_list=write_list,
                              progress=progress)
    finally:
        if bar is not None:
            bar.close()
    lines = [f"packed {result.records} of {result.images} images into {result.shards} shard(s) in {result.out_dir} "
             f"({result.bytes_out / 2**20:.1f} MiB; {result.reencoded} re-encoded"
             + (f"; {result.shards_resumed} shard(s) already done" if result.shards_resumed else "") + ")",
             f"manifest: {result.manifest}"]
    if result.rejects:
        lines.append(f"rejected {result.rejects} input(s), listed with reasons in {result.rejects_file}:")
        lines += [f"  {path}: {reason}" for path, reason in result.reject_samples]
        if result.rejects > len(result.reject_samples):
            lines.append(f"  ... and {result.rejects - len(result.reject_samples)} more")
    emit(args, result.as_dict(), "\n".join(lines))
    return 0
