"""``recordio-pack commit OUTDIR``: merge the partial manifests of ``pack --num-nodes N --node-rank K`` runs."""

from __future__ import annotations

import argparse

from recordio_pack.commands._common import add_output_options, emit


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "commit", help="finish a dataset packed by several machines (pack --num-nodes N --node-rank K)",
        description="Check that every node's partial manifest (NAME.node-K-of-N.partial.json) is in OUTDIR, that "
                    "they agree (same inputs, options and plan) and that together they hold every shard exactly "
                    "once with its files in place; then write NAME.rejects.tsv, the combined index and "
                    "NAME.manifest.json as one machine would have, and remove the partial manifests. Refuses "
                    "(exit 3), naming what is missing or which two disagree.")
    parser.add_argument("outdir", help="the folder every node packed into")
    parser.add_argument("--name", help="the dataset, when OUTDIR holds partial manifests of several")
    add_output_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from recordio_pack.commands.pack import summary
    from recordio_pack.pack import commit_dataset

    result = commit_dataset(args.outdir, args.name)
    emit(args, result.as_dict(), summary(result))
    return 0
