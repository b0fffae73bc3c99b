"""The ``recordio-pack`` command line: one thin subcommand per module in ``recordio_pack.commands``.

Start-up stays light: command modules import only argparse at load time and the library when they run.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Sequence
from typing import Any

from recordio_pack import __version__
from recordio_pack.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    RecordioPackError,
    Terminated,
    describe_os_error,
)

# subcommand name -> module in recordio_pack.commands (each has register(subparsers))
COMMANDS: dict[str, str] = {
    "fake": "fake",
    "list": "listing",
    "pack": "pack",
    "commit": "commit",
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
               "or mix options; see --overwrite), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).",
    )
    parser.add_argument("--version", action="version", version=f"recordio-pack {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    parser.add_argument("--verbose", action="store_true",
                        help="also report what the library does beside progress (retries, fallbacks, skipped work)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMANDS.values():
        importlib.import_module(f"recordio_pack.commands.{module_name}").register(subparsers)
    return parser


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Whatever a user can cause ends in one line on stderr and an exit status from the
    README's table, never a traceback (``--debug`` shows it)."""
    args = build_parser().parse_args(argv)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_terminated)
    prefix = f"recordio-pack {args.command}"
    _set_up_logging(prefix, verbose=args.verbose)
    try:
        return int(args.run(args) or 0)
    except RecordioPackError as error:
        _show_traceback(args)
        print(f"{prefix}: error: {error}", file=sys.stderr)
        return error.exit_code
    except Terminated:
        print(f"{prefix}: terminated (SIGTERM); rerun the same command to resume", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted; rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as error:  # a disk, permission or network failure that no library layer worded
        _show_traceback(args)
        print(f"{prefix}: error: {describe_os_error(error)}", file=sys.stderr)
        return EXIT_FAILED


def _set_up_logging(prefix: str, verbose: bool) -> None:
    """Library log records (the ``recordio_pack`` loggers) to stderr, one line each, prefixed like our errors
    (``recordio-pack pack: info: ...``): INFO and above with --verbose, else WARNING and above."""
    import logging

    class OneLineToStderr(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:  # the sys.stderr of the moment: main() may run many times in one process (tests swap it)
                message = record.getMessage().replace("\n", " ")
                sys.stderr.write(f"{prefix}: {record.levelname.lower()}: {message}\n")
            except Exception:
                self.handleError(record)

    logger = logging.getLogger("recordio_pack")
    for old in [handler for handler in logger.handlers if handler.get_name() == "recordio-pack-cli"]:
        logger.removeHandler(old)
    handler = OneLineToStderr()
    handler.set_name("recordio-pack-cli")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)


def _show_traceback(args: argparse.Namespace) -> None:
    if getattr(args, "debug", False):
        import traceback

        traceback.print_exc()


if __name__ == "__main__":
    sys.exit(main())
