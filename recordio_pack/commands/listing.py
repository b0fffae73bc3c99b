"""``recordio-pack list ROOT PREFIX``: im2rec's --list, done right."""

from __future__ import annotations

import argparse

from recordio_pack.commands._common import add_output_options, emit, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "list", help="list a class-folder tree into im2rec .lst files",
        description="Write PREFIX.lst (index, label, path) for every image under ROOT's class folders, labels in "
                    "sorted folder order, and the class map (synsets.txt: label -> folder) beside it. Paths a "
                    ".lst cannot hold (tab, newline) are reported, never dropped silently.")
    parser.add_argument("root", help="folder with one sub-folder per class")
    parser.add_argument("prefix", help="output prefix: PREFIX.lst, or PREFIX_train.lst/_val.lst/_test.lst")
    parser.add_argument("--exts", default=".jpeg,.jpg,.png", help="comma-separated extensions (default %(default)s, any case)")
    parser.add_argument("--no-shuffle", dest="shuffle", action="store_false", help="keep sorted order")
    parser.add_argument("--seed", type=int, default=100, help="shuffle seed (default %(default)s, im2rec's)")
    parser.add_argument("--train-ratio", type=float, default=1.0, help="fraction for PREFIX_train.lst (default 1: one list)")
    parser.add_argument("--test-ratio", type=float, default=0.0, help="fraction for PREFIX_test.lst (default 0)")
    parser.add_argument("--chunks", type=positive_int, default=1, help="split into this many numbered lists")
    parser.add_argument("--overwrite", action="store_true", help="replace existing lists / class map")
    add_output_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from recordio_pack.errors import RecordioPackError, UsageError
    from recordio_pack.listing import make_lists

    try:
        result = make_lists(args.root, args.prefix, exts=[ext for ext in args.exts.split(",") if ext],
                            shuffle=args.shuffle, seed=args.seed, train_ratio=args.train_ratio,
                            test_ratio=args.test_ratio, chunks=args.chunks, overwrite=args.overwrite)
    except FileNotFoundError as error:  # a missing input is exit 1, as for every command
        raise RecordioPackError(str(error)) from None
    except ValueError as error:
        raise UsageError(str(error)) from None
    lines = [f"{path}: {count} images" for path, count in result.lists.items()]
    lines.append(f"{result.class_map}: {result.classes} classes")
    if result.skipped_other_ext:
        by_extension = ", ".join(f"{count} {extension}" for extension, count in result.skipped_by_extension.items())
        lines.append(f"skipped {result.skipped_other_ext} files with other extensions ({by_extension})")
    if result.cross_class_links:
        lines.append(f"warning: {len(result.cross_class_links)} symbolic link(s) to an image of another class, "
                     "listed under the link's class, e.g. " + ", ".join(
                         f"{link!r} -> {target}" for link, target in result.cross_class_links[:3]))
    for path, problem in result.problems:
        lines.append(f"not listed: {path!r}: {problem}")
    emit(args, {"lists": result.lists, "class_map": result.class_map, "classes": result.classes,
                "images": result.images, "skipped_other_ext": result.skipped_other_ext,
                "skipped_by_extension": result.skipped_by_extension,
                "cross_class_links": [{"path": link, "target_class": target} for link, target in result.cross_class_links],
                "problems": [{"path": path, "reason": why} for path, why in result.problems]}, "\n".join(lines))
    return 0
