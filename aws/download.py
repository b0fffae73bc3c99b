"""Resumable, verified downloads of S3 objects: ranged GETs into ``NAME.partial``, what is known about that file
in ``NAME.partial.json``, and a rename to ``NAME`` only once the whole file matches its manifest record.

A restore that is killed leaves, for each unfinished file, the partial file (its full size, with holes where
parts are missing) and its state: the object's key, ETag and size, the part size, then one line per part
that is on disk. The next run keeps those parts when the object still has that ETag and size, fetches the
others with ``Range`` GETs conditioned on the ETag (``If-Match``: an object replaced meanwhile fails the
request instead of mixing two versions in one file), and checks the whole file against the manifest exactly
as a fresh download is checked. A resumed file that fails the check is fetched again from zero, once.

Verified as written, with no second pass: each part's bytes are fed to the file's SHA-256 and CRC32 as it
arrives, in file order (``_InOrder``: a part that comes before the ones ahead of it waits in memory, up to
``HOLD_PARTS`` parts a file; beyond that, and for parts kept from an interrupted run, its bytes are read back
from the partial file when its turn comes), so the check at the end compares digests already computed.

Only this module's names count as its temporaries: ``NAME.partial`` and ``NAME.partial.json`` of a file it
restores (``partial_paths``), and any ``*.partial.json`` that is a state file of ours.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore import exceptions as bx

from recordio_pack.aws.s3 import RateLimiter, S3Location, iter_chunks, part_size_for
from recordio_pack.aws.session import aws_errors
from recordio_pack.digest import RunningDigests
from recordio_pack.errors import RecordioPackError
from recordio_pack.fsutil import fsync_dir
from recordio_pack.manifest import FileRecord
from recordio_pack.progress import Task

__all__ = ["PARTIAL_SUFFIX", "STATE_SUFFIX", "Wanted", "DownloadResult", "ObjectChanged", "partial_paths",
           "remove_partial", "remove_stray_partials", "download_files"]

PARTIAL_SUFFIX = ".partial"
STATE_SUFFIX = ".partial.json"
STATE_FORMAT = "recordio-pack.partial-download/1"
READ_CHUNK = 1 << 20
HOLD_PARTS = 4  # parts of one file that may wait in memory for the parts before them
log = logging.getLogger(__name__)
_ATTEMPTS = 3  # per part, for a response body that breaks off mid-way (requests themselves retry in botocore)
_BROKEN_BODY = (bx.IncompleteReadError, bx.ReadTimeoutError, bx.ResponseStreamingError, bx.ConnectionClosedError)


class ObjectChanged(RecordioPackError):
    """An object was replaced in the bucket while this run was downloading it."""


@dataclass(frozen=True)
class Wanted:
    """One file to fetch: its manifest ``record`` (name relative to the folder, size, checksums) and the
    object's ``etag`` as the listing gave it."""

    record: FileRecord
    etag: str


@dataclass
class DownloadResult:
    received_bytes: int = 0  # fetched by this run
    resumed_bytes: int = 0  # kept from partial files of an interrupted run
    resumed_files: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # files whose bytes did not match the manifest


def partial_paths(path: Path) -> tuple[Path, Path]:
    """``(NAME.partial, NAME.partial.json)`` for the file ``path``."""
    return path.with_name(path.name + PARTIAL_SUFFIX), path.with_name(path.name + STATE_SUFFIX)


def remove_partial(path: Path) -> None:
    for leftover in partial_paths(path):
        with suppress(FileNotFoundError):
            leftover.unlink()


@dataclass(frozen=True)
class _Header:
    key: str
    etag: str
    size: int
    part_size: int

    def line(self) -> str:
        return json.dumps({"format": STATE_FORMAT, "key": self.key, "etag": self.etag, "size": self.size,
                           "part_size": self.part_size}, sort_keys=True) + "\n"


def _read_state(state: Path) -> tuple[_Header, set[int]] | None:
    """The header and the part numbers a state file records; None when it is not a readable state of ours
    (a line torn by a kill, at the end, is ignored)."""
    try:
        first, *rest = state.read_text(encoding="utf-8").split("\n")
        data = json.loads(first)
        if data.pop("format", None) != STATE_FORMAT:
            return None
        header = _Header(str(data["key"]), str(data["etag"]), int(data["size"]), int(data["part_size"]))
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None
    return header, {int(line) for line in rest if line.strip().isdigit()}


def remove_stray_partials(directory: Path, keep: Iterable[str]) -> list[str]:
    """Remove our partial downloads directly in ``directory`` (recognised by their state file) of files not
    in ``keep`` (names relative to ``directory``); returns the names of the files they were for."""
    keep = set(keep)
    removed = []
    for state in sorted(directory.glob(f"*{STATE_SUFFIX}")):
        name = state.name[:-len(STATE_SUFFIX)]
        if name not in keep and _read_state(state) is not None:
            remove_partial(directory / name)
            removed.append(name)
    return removed


class _InOrder:
    """Size, SHA-256 and CRC32 of a file whose parts arrive in any order, fed in file order (module docstring).
    ``add`` is called from many threads, once per part, after the part's bytes are in the partial file."""

    def __init__(self, data: Path, layout: dict[int, tuple[int, int]], hold: int) -> None:
        self.data, self.layout, self.hold = data, layout, hold
        self.running = RunningDigests()
        self._next = 1
        self._waiting: dict[int, list[bytes] | None] = {}  # None: read it back from the partial file
        self._held = 0
        self._digesting = False  # one thread at a time feeds ``running``, in order
        self._lock = threading.Lock()

    def add(self, number: int, chunks: list[bytes] | None) -> None:
        """Hand in part ``number``; whichever thread finds parts ready in order digests them, outside the lock,
        so the others go back to fetching. Returns once nothing handed in before it is left undigested by it
        or by the thread already digesting."""
        with self._lock:
            size = sum(map(len, chunks)) if chunks is not None else 0
            if number != self._next and self._held + size > self.hold:
                chunks, size = None, 0
            self._waiting[number] = chunks
            self._held += size
            if self._digesting:
                return
            self._digesting = True
        while True:
            with self._lock:
                ready = []
                while self._next in self._waiting:
                    part = self._waiting.pop(self._next)
                    self._held -= sum(map(len, part)) if part is not None else 0
                    ready.append((self._next, part))
                    self._next += 1
                if not ready:
                    self._digesting = False
                    return
            for number, part in ready:
                for chunk in part if part is not None else [self._read_back(*self.layout[number])]:
                    self.running.update(chunk)

    def _read_back(self, offset: int, length: int) -> bytes:
        with open(self.data, "rb") as stream:
            stream.seek(offset)
            return stream.read(length)


class _Job:
    """One file on its way: the partial file, its state, which parts are on disk, and their digests so far."""

    def __init__(self, location: S3Location, path: Path, wanted: Wanted, part_size: int) -> None:
        self.path, self.record = path, wanted.record
        self.data, self.state = partial_paths(path)
        asked = _Header(location.key(wanted.record.name), wanted.etag, wanted.record.bytes, part_size)
        found = _read_state(self.state)
        resumable = (found is not None and (found[0].key, found[0].etag, found[0].size) == (
            asked.key, asked.etag, asked.size) and self.data.is_file() and self.data.stat().st_size == asked.size)
        # a resumed file keeps its part size: the recorded parts are numbered by it
        self.header = found[0] if resumable and found is not None else asked
        self.layout = {number: (offset, length) for number, offset, length
                       in iter_chunks(self.header.size, self.header.part_size)}
        self.done: set[int] = set()
        if resumable and found is not None:
            self.done = found[1] & set(self.layout)
            self.digests = _InOrder(self.data, self.layout, HOLD_PARTS * self.header.part_size)
            for number in sorted(self.done):  # kept from an interrupted run: checked like the rest
                self.digests.add(number, None)
        else:
            self.start_afresh()
        self.resumed_bytes = sum(self.layout[number][1] for number in self.done)

    def start_afresh(self) -> None:
        remove_partial(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done = set()
        self.digests = _InOrder(self.data, self.layout, HOLD_PARTS * self.header.part_size)
        self.resumed_bytes = 0
        with open(self.state, "w", encoding="utf-8") as stream:  # the state first: it makes the data ours
            stream.write(self.header.line())
            stream.flush()
            os.fsync(stream.fileno())
        with open(self.data, "wb") as stream:
            stream.truncate(self.header.size)

    def missing(self) -> list[int]:
        return [number for number in self.layout if number not in self.done]

    @property
    def complete(self) -> bool:
        return len(self.done) == len(self.layout)

    def record_done(self, number: int) -> None:
        """Append ``number`` to the state (after its bytes were written; a kill in between re-fetches it)."""
        self.done.add(number)
        with open(self.state, "a", encoding="utf-8") as stream:
            stream.write(f"{number}\n")

    def finish(self) -> bool:
        """Check the whole file against the manifest, by the digests computed as its parts were written; rename
        it into place (True) or remove it (False)."""
        with open(self.data, "rb+") as stream:
            os.fsync(stream.fileno())
        got = self.digests.running.digests()
        if (got.size, got.sha256, got.crc32) != (self.record.bytes, self.record.sha256, self.record.crc32):
            remove_partial(self.path)
            return False
        os.replace(self.data, self.path)
        self.state.unlink()
        return True


class _Fetcher:
    """Ranged GETs of parts into partial files, from worker threads; ``stop`` makes them give up between
    chunks (Ctrl-C, SIGTERM, another part's failure)."""

    def __init__(self, client: Any, location: S3Location, limiter: RateLimiter, task: Task) -> None:
        self.client, self.location, self.limiter, self.task = client, location, limiter, task
        self.stop = threading.Event()

    def part(self, job: _Job, number: int) -> tuple[_Job, int, int]:
        """Fetch part ``number`` of ``job``; returns ``(job, number, bytes received)``. A body that breaks off
        is asked for again, up to three times."""
        offset, length = job.layout[number]
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                chunks = self._get(job, offset, length)
                job.digests.add(number, chunks)
                return job, number, length
            except _BROKEN_BODY as error:
                if attempt == _ATTEMPTS:
                    raise
                log.info("%s part %d: the body broke off (%s); asking again (attempt %d of %d)",
                         job.record.name, number, error, attempt + 1, _ATTEMPTS)
        raise AssertionError("unreachable")

    def _get(self, job: _Job, offset: int, length: int) -> list[bytes]:
        """Fetch and write ``length`` bytes at ``offset``; returns them, as received."""
        where = f"s3://{self.location.bucket}/{job.header.key}"
        with aws_errors(f"downloading {where} (bytes {offset}-{offset + length - 1})"):
            try:
                response = self.client.get_object(Bucket=self.location.bucket, Key=job.header.key,
                                                  Range=f"bytes={offset}-{offset + length - 1}",
                                                  IfMatch=job.header.etag)
            except bx.ClientError as error:
                if error.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
                    raise ObjectChanged(f"{where} was replaced while it was being restored (a backup writing to "
                                        "this prefix?); restore again once it has finished") from None
                raise
        written, chunks = 0, []
        fd = os.open(job.data, os.O_WRONLY)
        try:
            body = response["Body"]
            while written < length and (chunk := body.read(min(READ_CHUNK, length - written))):
                if self.stop.is_set():
                    raise InterruptedError(f"stopped downloading {where}")
                self.limiter.throttle(len(chunk))
                _pwrite_all(fd, chunk, offset + written, job.data)
                written += len(chunk)
                chunks.append(chunk)
                self.task.advance(len(chunk))
        except _BROKEN_BODY:
            self.task.advance(-written)
            raise
        finally:
            os.close(fd)
        if written != length:
            raise RecordioPackError(f"{where}: got {written} of {length} bytes at offset {offset}")
        return chunks


def _pwrite_all(fd: int, data: bytes, position: int, path: Path) -> None:
    """Write all of ``data`` at ``position``; an OSError names ``path`` (pwrite alone names no file)."""
    view = memoryview(data)
    try:
        while view:
            count = os.pwrite(fd, view, position)
            view, position = view[count:], position + count
    except OSError as error:
        raise OSError(error.errno, error.strerror, str(path)) from None


def download_files(client: Any, location: S3Location, directory: Path, wanted: list[Wanted], *, part_size: int,
                   concurrency: int, max_bandwidth: int | None, task: Task) -> DownloadResult:
    """Fetch every ``wanted`` file of ``location`` into ``directory`` (see the module docstring), ``concurrency``
    ranged GETs at a time, at most ``max_bandwidth`` bytes per second (None: no limit), parts of at least
    ``part_size`` bytes. Files that do not verify are removed and listed in ``problems``; on any error or
    interrupt, finished parts stay recorded for the next run. ``task`` (bytes) advances by the bytes received
    and by those already on disk from an earlier run."""
    result = DownloadResult()
    fetcher = _Fetcher(client, location, RateLimiter(max_bandwidth), task)
    jobs = [_Job(location, directory / item.record.name, item, part_size_for(item.record.bytes, part_size))
            for item in wanted]
    for job in jobs:
        if job.resumed_bytes:
            result.resumed_bytes += job.resumed_bytes
            result.resumed_files.append(job.record.name)
            task.advance(job.resumed_bytes)
    pool = ThreadPoolExecutor(max_workers=max(1, concurrency))
    run = _Run(pool, fetcher, result)
    try:
        pending: set[Future] = set()
        for job in jobs:
            pending |= run.start(job)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            failed = [future for future in finished if future.exception() is not None]
            for future in finished - set(failed):  # record every part that made it before raising a failure
                pending |= run.done(future, stopping=bool(failed))
            if failed:
                failed[0].result()
    finally:
        fetcher.stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        run.finishing_pool.shutdown(wait=True, cancel_futures=True)
    for parent in sorted({job.path.parent for job in jobs}):
        fsync_dir(parent)
    return result


class _Run:
    """The futures of one ``download_files`` call: parts being fetched (``pool``), and files being checked and
    renamed (threads of their own: a file is renamed as soon as it is complete, not behind the parts queued
    after it, and one file's fsync does not hold up the others)."""

    def __init__(self, pool: ThreadPoolExecutor, fetcher: _Fetcher, result: DownloadResult) -> None:
        self.pool, self.fetcher, self.result = pool, fetcher, result
        self.finishing_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="s3-finish")
        self.finishing: dict[Future, _Job] = {}

    def start(self, job: _Job) -> set[Future]:
        """Submit ``job``'s missing parts; a job with none left (empty file, or every part already on disk) is
        finished at once."""
        missing = job.missing()
        if not missing:
            return self.finish(job)
        return {self.pool.submit(self.fetcher.part, job, number) for number in missing}

    def finish(self, job: _Job) -> set[Future]:
        future = self.finishing_pool.submit(job.finish)
        self.finishing[future] = job
        return {future}

    def done(self, future: Future, stopping: bool) -> set[Future]:
        """Handle a future that succeeded; returns the futures it leads to (none when ``stopping``)."""
        job = self.finishing.pop(future, None)
        if job is None:
            job, number, received = future.result()
            self.result.received_bytes += received
            job.record_done(number)
            return self.finish(job) if job.complete and not stopping else set()
        if future.result():
            return set()
        if job.resumed_bytes:  # a resumed file that does not verify starts again from zero; a fresh one is a problem
            self.fetcher.task.progress.on_note(f"{job.record.name}: the resumed download did not match the "
                                               "manifest; fetching it again")
            self.fetcher.task.advance(-job.record.bytes)
            job.start_afresh()
            return set() if stopping else self.start(job)
        self.result.problems.append(job.record.name)
        return set()
