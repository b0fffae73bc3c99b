"""Packing one shard: a contiguous slice of the list into one `.rec`/`.idx` pair.

``pack_shard`` is a plain, picklable function of its task: the same task gives the same bytes on any machine
with the same codec, whichever process runs it.  Files are written under temporary names, fsynced and
renamed only when the shard is complete.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from recordio_pack.digest import DigestingWriter
from recordio_pack.format import MAX_PAYLOAD, IRHeader, pack_payload
from recordio_pack.fsutil import fsync_dir
from recordio_pack.imaging import ImageRejected, prepare_image, single_threaded_codec
from recordio_pack.manifest import FileRecord, ShardRecord, encode_record_crc32s
from recordio_pack.options import PackOptions
from recordio_pack.recordio import RecordWriter
from recordio_pack.sources import Entries, Entry, ImageSource, NotRegularFile

__all__ = ["ShardTask", "ShardResult", "ShardProgress", "ImageFailed", "ShardWriteError", "pack_shard", "shard_names"]

WRITE_BUFFER = 8 << 20
PROGRESS_EVERY_S = 0.25


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


def pack_shard(task: ShardTask, emit: Callable[[ShardProgress], None] | None = None,
               should_stop: Callable[[], bool] | None = None) -> ShardResult:
    """Pack ``task.entries`` into the task's `.rec`/`.idx`; return counts, rejects and checksums.

    ``emit`` receives progress about four times a second; ``should_stop`` is polled between images and
    aborts the shard (removing its temporary files) when it returns True.
    """
    rec_name, idx_name = task.names
    out_dir = Path(task.out_dir)
    suffix = f".{os.getpid()}.tmp"
    rec_temp, idx_temp = out_dir / (rec_name + suffix), out_dir / (idx_name + suffix)
    if task.options.worker_count > 1 and task.options.image.reencode != "never":
        single_threaded_codec()
    rejects: list[tuple[str, str]] = []
    reencoded_count = 0
    pending = ShardProgress(task.index, 0, 0, 0)
    last_emit = time.monotonic()
    try:
        with open(rec_temp, "wb", buffering=0) as rec_raw, open(idx_temp, "wb", buffering=0) as idx_raw:
            rec_hashing, idx_hashing = DigestingWriter(rec_raw), DigestingWriter(idx_raw)
            rec_stream = io.BufferedWriter(rec_hashing, WRITE_BUFFER)  # type: ignore[type-var]  # a RawIOBase
            idx_stream = io.BufferedWriter(idx_hashing, 1 << 20)  # type: ignore[type-var]
            writer = RecordWriter(rec_stream, idx_stream)
            for entry in task.entries:
                if should_stop and should_stop():
                    raise InterruptedError(f"shard {task.index} stopped")
                bytes_in = 0
                try:
                    data = task.source.read(entry)
                    bytes_in = len(data)
                    image, reencoded = prepare_image(data, task.options.image)
                    payload = _payload(entry, image, task.options)
                    if len(payload) > MAX_PAYLOAD:
                        raise ImageRejected(f"record of {len(payload)} bytes exceeds RecordIO's 2**29-byte limit")
                except (ImageRejected, OSError, ValueError) as error:
                    reason = (error.reason if isinstance(error, ImageRejected) else str(error)
                              if isinstance(error, NotRegularFile) else f"unreadable: {error}")
                    if task.options.on_error == "fail":
                        raise ImageFailed(f"{entry.path}: {reason}") from None
                    rejects.append((entry.path, reason))
                    pending = ShardProgress(task.index, pending.images + 1, pending.bytes_in + bytes_in,
                                            pending.bytes_out)
                    continue
                key = writer.count if task.options.key == "position" else entry.index
                before = writer.offset
                writer.write(key, payload)
                reencoded_count += reencoded
                pending = ShardProgress(task.index, pending.images + 1, pending.bytes_in + bytes_in,
                                        pending.bytes_out + writer.offset - before)
                if emit and time.monotonic() - last_emit >= PROGRESS_EVERY_S:
                    emit(pending)
                    pending, last_emit = ShardProgress(task.index, 0, 0, 0), time.monotonic()
            rec_stream.flush()
            idx_stream.flush()
            os.fsync(rec_raw.fileno())
            os.fsync(idx_raw.fileno())
        if should_stop and should_stop():
            raise InterruptedError(f"shard {task.index} stopped")
        os.replace(rec_temp, out_dir / rec_name)
        os.replace(idx_temp, out_dir / idx_name)
        fsync_dir(out_dir)
    except BaseException as error:
        rec_temp.unlink(missing_ok=True)
        idx_temp.unlink(missing_ok=True)
        if isinstance(error, OSError) and not isinstance(error, InterruptedError):  # writing our own files failed
            written = out_dir / (idx_name if error.filename == str(idx_temp) else rec_name)
            raise ShardWriteError(str(written), error.errno or 0, error.strerror or str(error)) from None
        raise
    if emit and pending.images:
        emit(pending)
    return ShardResult(task.index, writer.count, rejects, FileRecord.of(rec_name, rec_hashing.digests()),
                       FileRecord.of(idx_name, idx_hashing.digests()), reencoded_count, task.inputs,
                       encode_record_crc32s(writer.record_crc32s))
