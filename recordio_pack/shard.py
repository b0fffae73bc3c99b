"""Packing one shard: a contiguous slice of the list into one `.rec`/`.idx` pair.

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
from recordio_pack.format import MAX_PAYLOAD, IRHeader, frame, pack_payload
from recordio_pack.fsutil import fsync_dir
from recordio_pack.imaging import ImageRejected, prepare_image, single_threaded_codec
from recordio_pack.manifest import FileRecord, ShardRecord, encode_record_crc32s
from recordio_pack.options import PackOptions
from recordio_pack.recordio import RecordWriter
from recordio_pack.sources import Entries, Entry, ImageSource, NotRegularFile

__all__ = ["ShardTask", "ChunkTask", "ChunkResult", "ShardResult", "ShardProgress", "Prepared", "ImageFailed",
           "ShardWriteError", "ShardWriter", "ShardAssembly", "prepare_entry", "pack_shard", "prepare_chunk",
           "pack_work", "split_shards", "shard_names"]

WRITE_BUFFER = 8 << 20
PROGRESS_EVERY_S = 0.25
CHUNK_IMAGES = 32  # the most images in one chunk: small enough to balance the tail, large enough to keep
                  # the per-message cost (a pipe round trip, pickling) far below the codec's


def shard_names(name: str, index: int, count: int) -> tuple[str, str]:
    """``(rec, idx)`` file names: NAME.rec when there is one shard, else NAME-00003-of-00016.rec."""
    stem = name if count == 1 else f"{name}-{index:05d}-of-{count:05d}"
    return f"{stem}.rec", f"{stem}.idx"


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

    @property
    def names(self) -> tuple[str, str]:
        return shard_names(self.name, self.index, self.count)


@dataclass(frozen=True)
class ShardProgress:
    shard: int
    images: int  # inputs handled since the last event (packed or rejected)
    bytes_in: int
    bytes_out: int


@dataclass
class ShardResult:
    index: int
    records: int
    rejects: list[tuple[str, str]]  # (path, reason)
    rec: FileRecord
    idx: FileRecord
    reencoded: int = 0
    inputs: str = ""
    record_crc32: str = ""  # manifest.encode_record_crc32s of each record's framed bytes

    def to_dict(self) -> dict[str, Any]:
        """As JSON holds it (the pack journal); ``from_dict`` reads it back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShardResult:
        return cls(data["index"], data["records"], [(path, reason) for path, reason in data["rejects"]],
                   FileRecord(**data["rec"]), FileRecord(**data["idx"]), data.get("reencoded", 0),
                   data.get("inputs", ""), data.get("record_crc32", ""))

    @classmethod
    def of_record(cls, shard: ShardRecord) -> ShardResult:
        """A finished shard as a manifest lists it (which keeps the count of rejects, not the rows)."""
        return cls(shard.index, shard.records, [], shard.rec, shard.idx, shard.reencoded, shard.inputs,
                   shard.record_crc32)

    def record(self) -> ShardRecord:
        """The shard as the manifest lists it."""
        return ShardRecord(self.index, self.records, len(self.rejects), self.rec, self.idx, self.record_crc32,
                           self.inputs, self.reencoded)


class ImageFailed(Exception):
    """Raised under ``on_error="fail"``: the first bad image stops the run."""


class ShardWriteError(Exception):
    """Writing a shard's files failed (a full disk, most often): the file, errno and text, picklable."""

    def __init__(self, path: str, errno: int, strerror: str) -> None:
        super().__init__(path, errno, strerror)
        self.path, self.errno, self.strerror = path, errno, strerror

    def __str__(self) -> str:
        return f"{self.path}: {self.strerror}"


def _payload(entry: Entry, image: bytes, options: PackOptions) -> bytes:
    vector = options.pack_label and len(entry.labels) > 1
    header = IRHeader(entry.labels if vector else entry.labels[:1], id=entry.index, vector=vector)
    return pack_payload(header, image)


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


def prepare_entry(entry: Entry, source: ImageSource, options: PackOptions) -> Prepared:
    """Read, check and convert one input into its framed record, or a reject (ImageFailed under
    ``on_error="fail"``)."""
    bytes_in = 0
    try:
        data = source.read(entry)
        bytes_in = len(data)
        image, reencoded = prepare_image(data, options.image)
        payload = _payload(entry, image, options)
        if len(payload) > MAX_PAYLOAD:
            raise ImageRejected(f"record of {len(payload)} bytes exceeds RecordIO's 2**29-byte limit")
    except (ImageRejected, OSError, ValueError) as error:
        reason = (error.reason if isinstance(error, ImageRejected) else str(error)
                  if isinstance(error, NotRegularFile) else f"unreadable: {error}")
        if options.on_error == "fail":
            raise ImageFailed(f"{entry.path}: {reason}") from None
        return Prepared(entry.path, entry.index, b"", 0, reason, False, bytes_in)
    framed = frame(payload)
    return Prepared(entry.path, entry.index, framed, zlib.crc32(framed), "", reencoded, bytes_in)


class ShardWriter:
    """One shard's `.rec`/`.idx` under temporary names (NAME.rec.PID.tmp), fed prepared records in list order.

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
            self._raw = [open(temp, "wb", buffering=0) for temp in self._temps]
        self._hashing = [DigestingWriter(raw) for raw in self._raw]
        rec_stream = io.BufferedWriter(self._hashing[0], WRITE_BUFFER)  # type: ignore[type-var]  # a RawIOBase
        idx_stream = io.BufferedWriter(self._hashing[1], 1 << 20)  # type: ignore[type-var]
        self._streams = (rec_stream, idx_stream)
        self._writer = RecordWriter(rec_stream, idx_stream)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """An OSError while writing our own files becomes ShardWriteError naming the file (by its final name)."""
        try:
            yield
        except InterruptedError:
            raise
        except OSError as error:
            written = self._names[1] if error.filename == str(self._temps[1]) else self._names[0]
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
            fsync_dir(out_dir)
        rec, idx = (FileRecord.of(name, hashing.digests()) for name, hashing in zip(self._names, self._hashing))
        return ShardResult(self.task.index, self._writer.count, self.rejects, rec, idx, self.reencoded,
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
    try:
        for entry in task.entries:
            if should_stop and should_stop():
                raise InterruptedError(f"shard {task.index} stopped")
            prepared = prepare_entry(entry, task.source, task.options)
            meter.add(prepared, writer.add(prepared))
        if should_stop and should_stop():
            raise InterruptedError(f"shard {task.index} stopped")
        result = writer.finish()
    except BaseException:
        writer.abort()
        raise
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
    for entry in task.entries:
        if should_stop and should_stop():
            raise InterruptedError(f"shard {task.shard} stopped")
        prepared.append(prepare_entry(entry, task.source, task.options))
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


def split_shards(tasks: list[ShardTask], workers: int) -> tuple[list[ShardTask | ChunkTask], dict[int, ShardAssembly]]:
    """The work for ``workers`` processes, in the order to hand it out: whole shards while they outnumber the
    workers, then the last ``workers`` shards as chunks (of at most CHUNK_IMAGES images, and enough of them to
    give every worker two), so no core idles while the last shards are packed; and the assemblies that write
    the chunked shards, by shard index.  One worker packs every shard whole."""
    if workers <= 1:
        return list(tasks), {}
    whole = max(0, len(tasks) - workers)
    items: list[ShardTask | ChunkTask] = list(tasks[:whole])
    assemblies: dict[int, ShardAssembly] = {}
    for task in tasks[whole:]:
        count = len(task.entries)
        size = max(1, min(CHUNK_IMAGES, -(-count // (2 * workers))))
        starts = range(0, count, size)
        task_entries = task.entries if isinstance(task.entries, list) else list(task.entries)  # an LstSlice: read here
        for number, first in enumerate(starts):
            items.append(ChunkTask(task.index, number, task.names[0], first, task_entries[first:first + size],
                                   task.source, task.options))
        assemblies[task.index] = ShardAssembly(task, len(starts))
    return items, assemblies
