"""The ``recordio-pack`` command line: one thin subcommand per module in ``recordio_pack.commands``.

Start-up stays light: command modules import only argparse at load time and the library when they run.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from recordio_pack import __version__
from recordio_pack.errors import EXIT_INTERRUPTED, RecordioPackError

# subcommand name -> module in recordio_pack.commands (each has register(subparsers))
COMMANDS: dict[str, str] = {
    "fake": "fake",
    "list": "listing",
    "pack": "pack",
    "verify": "verify",
    "index": "index",
    "inspect": "inspect",
    "backup": "backup",
    "restore": "restore",
    "snapshot": "snapshot",
    "replicate": "replicate",
    "mount": "mount",
    "cleanup": "cleanup",
    "imagenet": "imagenet",
    "userdata": "userdata",
    "launch": "launch",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recordio-pack",
        description="Pack image folders into MXNet RecordIO shards, verify them, and ship them on AWS.",
        epilog="Exit status: 0 ok, 1 failed or a problem found, 2 bad usage, 3 refused (would overwrite "
               "or mix options; see --overwrite), 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"recordio-pack {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMANDS.values():
        importlib.import_module(f"recordio_pack.commands.{module_name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except RecordioPackError as error:
        print(f"recordio-pack {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"recordio-pack {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
