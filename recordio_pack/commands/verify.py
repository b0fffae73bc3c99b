"""``recordio-pack verify PATH...``: check what was written, with a precise message for every problem."""

from __future__ import annotations

import argparse

from recordio_pack.commands._common import add_output_options, emit


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "verify", help="check shards, indexes and manifest checksums",
        description="Check RecordIO framing and magic escaping, that every .idx offset starts a record and every "
                    "record is indexed, header sanity, labels within the class map, and the manifest's sizes and "
                    "SHA-256 checksums, naming each damaged record (by the manifest's per-record CRC32s when it has "
                    "them). PATH: a folder (its manifests, else its .rec files and NAME.synsets.txt), a "
                    "NAME.manifest.json, a .rec (checked against the manifest beside it that lists it) or an .idx "
                    "(a shard's index, or a combined one checked against the shards beside it). Damage does not "
                    "stop the scan: it resynchronises on the next record. TFRecord shards (pack --format tfrecord) "
                    "get their own checks: both CRC32Cs of every record, every tf.Example parses with the preset's "
                    "keys, labels within the class map, each DALI index line. Exit 1 on any problem or a missing "
                    "PATH.")
    parser.add_argument("paths", nargs="+", metavar="PATH")
    parser.add_argument("--decode", action="store_true", help="also decode every image")
    parser.add_argument("--classes", help="class map (label<TAB>name) to check labels against, instead of the "
                                           "manifest's or NAME.synsets.txt")
    add_output_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from recordio_pack.commands._common import ProgressBar
    from recordio_pack.verify import load_class_map, verify_paths

    classes = load_class_map(args.classes) if args.classes else None
    with ProgressBar(args) as bar:
        report = verify_paths(args.paths, decode=args.decode, classes=classes, progress=bar)
    if report.ok:
        text = f"OK: {report.records} records in {len(report.shards)} file(s)" + (", all decoded" if args.decode else "")
    else:
        text = "\n".join([f"FAILED: {report.problem_count} problem(s) in {len(report.shards)} file(s):"]
                         + [f"  {problem}" for problem in report.problems])
    emit(args, report.as_dict(), text)
    return 0 if report.ok else 1
