"""One writer per dataset: an exclusive ``flock`` on ``OUTDIR/NAME.lock`` for as long as a command writes NAME.

The kernel drops the lock when its holder dies (even by SIGKILL), so a stale lock file never blocks a rerun.
The file holds who took it (pid, host, command), so a refusal can name the holder.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from recordio_pack.errors import RefusedError

__all__ = ["LOCK_SUFFIX", "DatasetLocked", "dataset_lock"]

LOCK_SUFFIX = ".lock"


class DatasetLocked(RefusedError):
    """Another process holds the dataset's lock."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return "another process"
    return f"pid {info.get('pid')} on {info.get('host')} ({info.get('command', '?')})"


@contextmanager
def dataset_lock(out_dir: str | Path, name: str) -> Iterator[Path]:
    """Hold ``OUTDIR/NAME.lock`` exclusively, or raise DatasetLocked naming the holder. Removed on release."""
    path = Path(out_dir) / f"{name}{LOCK_SUFFIX}"
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)  # never write through a link
        except OSError as error:
            raise DatasetLocked(f"{path}: cannot take the dataset's lock ({error.strerror}); it must be a plain "
                                "file of ours (remove it if no pack is running)") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DatasetLocked(f"{name} in {out_dir} is being written by {_holder(path)}; wait for it to finish, "
                                "or stop it (a rerun then resumes)") from None
        try:  # the holder before us may have removed the file after we opened it: lock the file that is there
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:])[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode("utf-8"), 0)
        yield path
    finally:
        try:
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)
