"""``recordio-pack index REC...``: rebuild lost .idx files, or write one combined index over several shards."""

from __future__ import annotations

import argparse

from recordio_pack.commands._common import add_output_options, emit


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "index", help="rebuild .idx files from .rec files (and DALI indexes of TFRecord shards)",
        description="Rebuild the .idx beside each REC from the records it holds (what mxnet's rec2idx.py does; for "
                    "a TFRecord shard, DALI's 'offset size' index, what tfrecord2idx writes, into dali_idx/ "
                    "beside it when that folder exists), "
                    "or with --combined OUT write one index over all RECs in the order given: keys 0..N-1 and "
                    "offsets counted across the files, as DALI's readers.mxnet takes with several .rec paths. "
                    "A REC with damaged bytes is refused (the file and byte are named) unless --salvage. A "
                    "missing REC exits 1 (REC: no such file).")
    parser.add_argument("recs", nargs="+", metavar="REC")
    parser.add_argument("--combined", metavar="OUT", help="write one combined index to OUT")
    parser.add_argument("--key", choices=["position", "id"], default="position",
                        help="keys: record position (default) or the IRHeader id (im2rec's .lst index)")
    parser.add_argument("--salvage", action="store_true",
                        help="index the intact records of a damaged REC and list the byte ranges skipped")
    parser.add_argument("--overwrite", action="store_true", help="replace existing index files")
    add_output_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from recordio_pack.errors import RecordioPackError, UsageError
    from recordio_pack.index import combined_index, rebuild_index
    from recordio_pack.recordio import DamagedShard

    if args.combined and args.key != "position":
        raise UsageError("a combined index always uses position keys (drop --key)")
    try:
        if args.combined:
            results = [combined_index(args.recs, args.combined, overwrite=args.overwrite, salvage=args.salvage)]
        else:
            results = [rebuild_index(rec, key=args.key, overwrite=args.overwrite, salvage=args.salvage)
                       for rec in args.recs]
    except DamagedShard as error:
        raise RecordioPackError(f"cannot index {error}; rerun with --salvage to index the intact records "
                                "and list the bytes skipped") from None
    lines = []
    for result in results:
        lines.append(f"{result.output}: {result.records} records from {result.sources} file(s)"
                     + (f", {len(result.skipped)} damaged range(s) skipped:" if result.skipped else ""))
        lines += [f"  {item.rec}: {item.error}: not indexed" for item in result.skipped]
    emit(args, {"indexes": [result.as_dict() for result in results]}, "\n".join(lines))
    return 0
