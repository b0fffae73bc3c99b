"""Imported by the worker pool's forkserver (its first preload): SIGINT is blocked there, so a worker forked from
it cannot be interrupted while Python starts it, before ``pool._worker_main`` ignores SIGINT and unblocks it
(a Ctrl-C to the process group then would print a worker's KeyboardInterrupt traceback)."""

import signal

signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
