"""``recordio-pack index REC...``: rebuild lost .idx files, or write one combined index over several shards."""

from __future__ import annotations

import argparse

from recordio_pack.commands._common import add_output_options, emit


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "index", help="rebuild .idx files from .rec files",
        description="Rebuild the .idx beside each REC from the records it holds (what mxnet's rec2idx.py does), "
                    "or with --combined OUT write one index over all RECs in the order given: keys 0..N-1 and "
                    "offsets counted across the files, as DALI's readers.mxnet takes with several .rec paths.")
    parser.add_argument("recs", nargs="+", metavar="REC")
    parser.add_argument("--combined", metavar="OUT", help="write one combined index to OUT")
    parser.add_argument("--key", choices=["position", "id"], default="position",
                        help="keys: record position (default) or the IRHeader id (im2rec's .lst index)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing index files")
    add_output_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from recordio_pack.errors import UsageError
    from recordio_pack.format import FramingError
    from recordio_pack.index import combined_index, rebuild_index

    try:
        if args.combined:
            if args.key != "position":
                raise UsageError("a combined index always uses position keys")
            results = [combined_index(args.recs, args.combined, overwrite=args.overwrite)]
        else:
            results = [rebuild_index(rec, key=args.key, overwrite=args.overwrite) for rec in args.recs]
    except (FramingError, ValueError) as error:
        from recordio_pack.errors import RecordioPackError

        raise RecordioPackError(f"cannot index: {error}") from None
    emit(args, {"indexes": [result.__dict__ for result in results]},
         "\n".join(f"{result.output}: {result.records} records from {result.sources} file(s)" for result in results))
    return 0
