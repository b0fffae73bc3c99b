"""Packing one shard: a contiguous slice of the list into one shard's files (its data file and index), in the
task's record format (``recordio_pack.formats``: RecordIO `.rec`/`.idx`, TFRecord + DALI index).

A shard is packed whole by one worker (``pack_shard``), or, so that every core has work when shards are
fewer than workers (a small dataset, the last shards of a large one), cut into chunks that several workers
prepare (``prepare_chunk``) while the parent writes them in list order (``ShardAssembly``).  Both ways
prepare each image with ``prepare_entry`` and write with ``ShardWriter``, so a shard's bytes are the same
whichever way, and however many workers, packed it.  Tasks are plain, picklable values.  Files are written
under temporary names, fsynced and renamed only when the shard is complete.
"""

from __future__ import annotations

import io
import os
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from recordio_pack.digest import DigestingWriter
from recordio_pack.formats import RecordFormat
from recordio_pack.formats.recordio import recordio_shard_names
from recordio_pack.fsutil import fsync_dir
from recordio_pack.imaging import ImageRejected, prepare_image, single_threaded_codec
from recordio_pack.manifest import FileRecord, HasShardFiles, ShardRecord, encode_record_crc32s
from recordio_pack.options import PackOptions
from recordio_pack.outputs import LocalFolder, Output
from recordio_pack.recordio import RecordWriter
from recordio_pack.sources import Entries, Entry, ImageSource, NotRegularFile, Read, read_ahead

__all__ = ["ShardTask", "ChunkTask", "ChunkResult", "ShardResult", "ShardProgress", "Prepared", "ImageFailed",
           "ShardWriteError", "ShardWriter", "ShardAssembly", "prepare_entry", "pack_shard", "prepare_chunk",
           "pack_work", "split_shards", "shard_names"]

WRITE_BUFFER = 8 << 20
PROGRESS_EVERY_S = 0.25
CHUNK_IMAGES = 32  # the most images in one chunk: small enough to balance the tail, large enough to keep
                  # the per-message cost (a pipe round trip, pickling) far below the codec's


def shard_names(name: str, index: int, count: int) -> tuple[str, str]:
    """RecordIO's ``(rec, idx)`` file names: NAME.rec when there is one shard, else NAME-00003-of-00016.rec
    (other formats: ``RecordFormat.shard_files``)."""
    return recordio_shard_names(name, index, count)


@dataclass(frozen=True)
class ShardTask:
    index: int
    count: int
    name: str
    out_dir: str
    entries: Entries  # a list, or a listing.LstSlice the worker reads itself
    source: ImageSource
    options: PackOptions
    inputs: str = ""  # the digest of this shard's inputs, carried into its result and the manifest
    fmt: RecordFormat | None = None  # None: what ``options`` write, without a class map
    output: Output = LocalFolder()  # where the finished files go from ``out_dir`` (published by the writer)

    @property
    def record_format(self) -> RecordFormat:
        return self.fmt if self.fmt is not None else self.options.record_format()

    @property
    def names(self) -> tuple[str, ...]:
        """The shard's files, data file first (relative to ``out_dir``)."""
        return self.record_format.shard_files(self.name, self.index, self.count)


@dataclass(frozen=True)
class ShardProgress:
    shard: int
    images: int  # inputs handled since the last event (packed or rejected)
    bytes_in: int
    bytes_out: int


@dataclass
class ShardResult(HasShardFiles):
    index: int
    records: int
    rejects: list[tuple[str, str]]  # (path, reason)
    files: list[FileRecord]  # the data file first, then its index
    reencoded: int = 0
    inputs: str = ""
    record_crc32: str = ""  # manifest.encode_record_crc32s of each record's framed bytes

    def to_dict(self) -> dict[str, Any]:
        """As JSON holds it (the pack journal); ``from_dict`` reads it back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShardResult:
        files = data["files"] if "files" in data else [data["rec"], data["idx"]]  # journals of older versions
        return cls(data["index"], data["records"], [(path, reason) for path, reason in data["rejects"]],
                   [FileRecord(**record) for record in files], data.get("reencoded", 0),
                   data.get("inputs", ""), data.get("record_crc32", ""))

    @classmethod
    def of_record(cls, shard: ShardRecord) -> ShardResult:
        """A finished shard as a manifest lists it (which keeps the count of rejects, not the rows)."""
        return cls(shard.index, shard.records, [], list(shard.files), shard.reencoded, shard.inputs,
                   shard.record_crc32)

    def record(self) -> ShardRecord:
        """The shard as the manifest lists it."""
        return ShardRecord(self.index, self.records, len(self.rejects), record_crc32=self.record_crc32,
                           inputs=self.inputs, reencoded=self.reencoded, files=tuple(self.files))


class ImageFailed(Exception):
    """Raised under ``on_error="fail"``: the first bad image stops the run."""


class ShardWriteError(Exception):
    """Writing a shard's files failed (a full disk, most often): the file, errno and text, picklable."""

    def __init__(self, path: str, errno: int, strerror: str) -> None:
        super().__init__(path, errno, strerror)
        self.path, self.errno, self.strerror = path, errno, strerror

    def __str__(self) -> str:
        return f"{self.path}: {self.strerror}"


@dataclass(frozen=True, slots=True)
class Prepared:
    """One input as a worker leaves it: its framed record with that record's CRC32 (computed where the bytes
    were made), or the reason it was rejected."""

    path: str
    index: int  # the entry's .lst index
    framed: bytes  # b"" when rejected
    crc32: int
    reject: str  # "" when packed
    reencoded: bool
    bytes_in: int


def prepare_entry(entry: Entry, source: ImageSource, options: PackOptions,
                  fmt: RecordFormat | None = None, read: Read = None) -> Prepared:
    """Read, check and convert one input into its framed record in ``fmt`` (default: what ``options`` write),
    or a reject (ImageFailed under ``on_error="fail"``).  ``read``: its bytes, or the error reading them gave,
    when they were read ahead (``sources.read_ahead``); None reads them here."""
    fmt = fmt if fmt is not None else options.record_format()
    bytes_in = 0
    try:
        if isinstance(read, BaseException):
            raise read
        data = source.read(entry) if read is None else read
        bytes_in = len(data)
        image, reencoded = prepare_image(data, options.image)
        payload = fmt.payload(entry, image)
        if len(payload) > fmt.max_payload:
            raise ImageRejected(f"record of {len(payload)} bytes exceeds {fmt.limit_text}")
    except (ImageRejected, OSError, ValueError) as error:
        reason = (error.reason if isinstance(error, ImageRejected) else str(error)
                  if isinstance(error, NotRegularFile) else f"unreadable: {error}")
        if options.on_error == "fail":
            raise ImageFailed(f"{entry.path}: {reason}") from None
        return Prepared(entry.path, entry.index, b"", 0, reason, False, bytes_in)
    framed = fmt.frame(payload)
    return Prepared(entry.path, entry.index, framed, zlib.crc32(framed), "", reencoded, bytes_in)


class ShardWriter:
    """One shard's data file and index under temporary names (NAME.rec.PID.tmp), fed prepared records in list
    order, each record's index line written by the task's format.

    ``finish`` fsyncs and renames both into place and returns the result; ``abort`` removes them.  A failed
    write raises ShardWriteError naming the shard's file.
    """

    def __init__(self, task: ShardTask) -> None:
        self.task = task
        out_dir = Path(task.out_dir)
        suffix = f".{os.getpid()}.tmp"
        self._names = task.names
        self._temps = tuple(out_dir / (name + suffix) for name in self._names)
        self.rejects: list[tuple[str, str]] = []
        self.reencoded = 0
        with self._writing():
            for temp in self._temps:
                if temp.parent != out_dir or not out_dir.is_dir():  # a layout with folders (TFDS's, the DALI
                    temp.parent.mkdir(parents=True, exist_ok=True)      # index folder), a Ray node's staging
            self._raw = [open(temp, "wb", buffering=0) for temp in self._temps]
        self._hashing = [DigestingWriter(raw) for raw in self._raw]
        rec_stream = io.BufferedWriter(self._hashing[0], WRITE_BUFFER)  # type: ignore[type-var]  # a RawIOBase
        idx_stream = io.BufferedWriter(self._hashing[1], 1 << 20)  # type: ignore[type-var]
        self._streams = (rec_stream, idx_stream)
        self._writer = RecordWriter(rec_stream, idx_stream, index_line=task.record_format.index_line)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """An OSError while writing our own files becomes ShardWriteError naming the file (by its final name)."""
        try:
            yield
        except InterruptedError:
            raise
        except OSError as error:
            written = next((name for name, temp in zip(self._names, self._temps) if error.filename == str(temp)),
                           self._names[0])
            raise ShardWriteError(str(Path(self.task.out_dir) / written), error.errno or 0,
                                  error.strerror or str(error)) from None

    def add(self, prepared: Prepared) -> int:
        """Write one record (or note its reject); return the `.rec` bytes written."""
        if prepared.reject:
            self.rejects.append((prepared.path, prepared.reject))
            return 0
        key = self._writer.count if self.task.options.key == "position" else prepared.index
        with self._writing():
            self._writer.write_framed(key, prepared.framed, prepared.crc32)
        self.reencoded += prepared.reencoded
        return len(prepared.framed)

    def finish(self) -> ShardResult:
        out_dir = Path(self.task.out_dir)
        with self._writing():
            for stream, raw in zip(self._streams, self._raw):
                stream.flush()
                os.fsync(raw.fileno())
                raw.close()
            for temp, name in zip(self._temps, self._names):
                os.replace(temp, out_dir / name)
            for folder in sorted({(out_dir / name).parent for name in self._names}):
                fsync_dir(folder)
        files = [FileRecord.of(name, hashing.digests()) for name, hashing in zip(self._names, self._hashing)]
        return ShardResult(self.task.index, self._writer.count, self.rejects, files, self.reencoded,
                           self.task.inputs, encode_record_crc32s(self._writer.record_crc32s))

    def abort(self) -> None:
        for raw in self._raw:
            raw.close()
        for temp in self._temps:
            temp.unlink(missing_ok=True)


class _Meter:
    """A worker's progress events: images handled and bytes read and written, about four times a second."""

    def __init__(self, shard: int, emit: Callable[[ShardProgress], None] | None) -> None:
        self._shard, self._emit = shard, emit
        self._pending = ShardProgress(shard, 0, 0, 0)
        self._last = time.monotonic()

    def add(self, prepared: Prepared, bytes_out: int) -> None:
        pending = self._pending
        self._pending = ShardProgress(self._shard, pending.images + 1, pending.bytes_in + prepared.bytes_in,
                                      pending.bytes_out + bytes_out)
        if self._emit and time.monotonic() - self._last >= PROGRESS_EVERY_S:
            self.flush()

    def flush(self) -> None:
        if self._emit and self._pending.images:
            self._emit(self._pending)
        self._pending, self._last = ShardProgress(self._shard, 0, 0, 0), time.monotonic()


def _one_codec_thread(options: PackOptions) -> None:
    if options.worker_count > 1 and options.image.reencode != "never":
        single_threaded_codec()


def pack_shard(task: ShardTask, emit: Callable[[ShardProgress], None] | None = None,
               should_stop: Callable[[], bool] | None = None) -> ShardResult:
    """Pack ``task.entries`` into the task's `.rec`/`.idx`; return counts, rejects and checksums.

    ``emit`` receives progress about four times a second; ``should_stop`` is polled between images and
    aborts the shard (removing its temporary files) when it returns True.
    """
    _one_codec_thread(task.options)
    meter = _Meter(task.index, emit)
    writer = ShardWriter(task)
    fmt = task.record_format
    try:
        for entry, read in read_ahead(task.source, task.entries):
            if should_stop and should_stop():
                raise InterruptedError(f"shard {task.index} stopped")
            prepared = prepare_entry(entry, task.source, task.options, fmt, read)
            meter.add(prepared, writer.add(prepared))
        if should_stop and should_stop():
            raise InterruptedError(f"shard {task.index} stopped")
        result = writer.finish()
    except BaseException:
        writer.abort()
        raise
    task.output.publish(Path(task.out_dir), result.files)  # where it was written (a pool worker, a Ray node)
    meter.flush()
    return result


@dataclass(frozen=True)
class ChunkTask:
    """Images ``first``.. of shard ``shard`` (whose `.rec` is ``rec``), for a worker to prepare; the parent
    writes them."""

    shard: int
    number: int  # of the shard's chunks, from 0
    rec: str
    first: int  # position of the chunk's first image within the shard
    entries: Entries
    source: ImageSource
    options: PackOptions
    fmt: RecordFormat | None = None  # the shard's (ShardTask.fmt)


@dataclass
class ChunkResult:
    shard: int
    number: int
    prepared: list[Prepared]

    def progress(self) -> ShardProgress:
        return ShardProgress(self.shard, len(self.prepared), sum(item.bytes_in for item in self.prepared),
                             sum(len(item.framed) for item in self.prepared))


def prepare_chunk(task: ChunkTask, emit: Callable[[ShardProgress], None] | None = None,
                  should_stop: Callable[[], bool] | None = None) -> ChunkResult:
    """Prepare a chunk's images in order (``should_stop`` polled between images)."""
    _one_codec_thread(task.options)
    prepared = []
    fmt = task.fmt if task.fmt is not None else task.options.record_format()
    for entry, read in read_ahead(task.source, task.entries):
        if should_stop and should_stop():
            raise InterruptedError(f"shard {task.shard} stopped")
        prepared.append(prepare_entry(entry, task.source, task.options, fmt, read))
    return ChunkResult(task.shard, task.number, prepared)


def pack_work(item: ShardTask | ChunkTask, emit: Callable[[ShardProgress], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> ShardResult | ChunkResult:
    """What a pool worker runs: a whole shard, or a chunk of one."""
    if isinstance(item, ChunkTask):
        return prepare_chunk(item, emit, should_stop)
    return pack_shard(item, emit, should_stop)


class ShardAssembly:
    """A shard whose chunks several workers prepare: ``add`` takes chunks in any order and writes them in list
    order, returning the shard's result once the last is written.  At most one chunk per worker waits."""

    def __init__(self, task: ShardTask, chunks: int) -> None:
        self.task = task
        self.chunks = chunks
        self._next = 0
        self._waiting: dict[int, ChunkResult] = {}
        self._writer: ShardWriter | None = None

    def add(self, chunk: ChunkResult) -> ShardResult | None:
        self._waiting[chunk.number] = chunk
        while self._next in self._waiting:
            if self._writer is None:  # opened on the first chunk to write, not when the job is planned
                self._writer = ShardWriter(self.task)
            for prepared in self._waiting.pop(self._next).prepared:
                self._writer.add(prepared)
            self._next += 1
        if self._next < self.chunks or self._writer is None:
            return None
        result = self._writer.finish()
        self._writer = None
        return result

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()
            self._writer = None


def split_shards(tasks: list[ShardTask], workers: int,
                 cut: Callable[[ShardTask, int, int], Entries] | None = None,
                 ) -> tuple[list[ShardTask | ChunkTask], dict[int, ShardAssembly]]:
    """The work for ``workers`` processes, in the order to hand it out: whole shards while they outnumber the
    workers, then the last ``workers`` shards as chunks (of at most CHUNK_IMAGES images, and enough of them to
    give every worker two), so no core idles while the last shards are packed; and the assemblies that write
    the chunked shards, by shard index.  One worker packs every shard whole.  ``cut(task, a, b)``: entries
    ``a..b`` of a task's shard (pack slices its list, so a `.lst` chunk is a byte range of the file, read by the
    worker); by default the task's own entries, read here when they are not a list."""
    if workers <= 1:
        return list(tasks), {}
    whole = max(0, len(tasks) - workers)
    items: list[ShardTask | ChunkTask] = list(tasks[:whole])
    assemblies: dict[int, ShardAssembly] = {}
    for task in tasks[whole:]:
        count = len(task.entries)
        if count == 0:  # nothing to share: written whole (an empty .rec/.idx), as with one worker
            items.append(task)
            continue
        size = max(1, min(CHUNK_IMAGES, -(-count // (2 * workers))))
        starts = range(0, count, size)
        listed = (task.entries if isinstance(task.entries, list) else list(task.entries)) if cut is None else []
        for number, first in enumerate(starts):
            part = listed[first:first + size] if cut is None else cut(task, first, first + size)
            items.append(ChunkTask(task.index, number, task.names[0], first, part, task.source, task.options,
                                   task.fmt))
        assemblies[task.index] = ShardAssembly(task, len(starts))
    return items, assemblies
