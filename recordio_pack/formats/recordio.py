"""MXNet RecordIO as a ``RecordFormat``: `.rec` + `.idx` per shard, IRHeader payloads, NAME.all.idx beside them.

The byte layout stays in ``recordio_pack.format``; this module only wires it to the protocol.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recordio_pack.format import (
    MAX_PAYLOAD,
    Buffer,
    Damage,
    Frame,
    IRHeader,
    format_idx_line,
    frame,
    looks_like_idx,
    pack_payload,
    scan_frames,
    unescaped_magics_in,
    unpack_payload,
)
from recordio_pack.formats import IndexLine, RecordView
from recordio_pack.sources import Entry

__all__ = ["RecordIOFormat", "recordio_shard_names"]

_NUMBERED = "-[0-9][0-9][0-9][0-9][0-9]-of-[0-9][0-9][0-9][0-9][0-9]"


def recordio_shard_names(name: str, index: int, count: int) -> tuple[str, str]:
    """``(rec, idx)`` file names: NAME.rec when there is one shard, else NAME-00003-of-00016.rec."""
    stem = name if count == 1 else f"{name}-{index:05d}-of-{count:05d}"
    return f"{stem}.rec", f"{stem}.idx"


@dataclass(frozen=True)
class RecordIOFormat:
    """RecordIO records of IRHeader + image; ``pack_label`` stores multi-label lines as label vectors."""

    pack_label: bool = False
    name: str = "recordio"
    title: str = "RecordIO"
    max_payload: int = MAX_PAYLOAD
    limit_text: str = "RecordIO's 2**29-byte limit"

    def options(self) -> dict[str, Any]:
        return {}

    def shard_files(self, name: str, index: int, count: int) -> tuple[str, ...]:
        return recordio_shard_names(name, index, count)

    def shard_patterns(self, name: str) -> list[str]:
        return [f"{name}.rec", f"{name}.idx", f"{name}{_NUMBERED}.rec", f"{name}{_NUMBERED}.idx"]

    def payload(self, entry: Entry, image: bytes) -> bytes:
        vector = self.pack_label and len(entry.labels) > 1
        header = IRHeader(entry.labels if vector else entry.labels[:1], id=entry.index, vector=vector)
        return pack_payload(header, image)

    def frame(self, payload: bytes) -> bytes:
        return frame(payload)

    def index_line(self, key: int, offset: int, size: int) -> bytes:
        return format_idx_line(key, offset).encode("ascii")

    def read_index(self, path: str | Path) -> list[IndexLine]:
        from recordio_pack.recordio import read_idx

        return [IndexLine(key, offset) for key, offset in read_idx(path)]

    def looks_like_index(self, head: bytes) -> bool:
        return looks_like_idx(head)

    def index_beside(self, data: Path) -> Path:
        return data.with_suffix(".idx")

    def data_beside(self, index: Path) -> Path:
        return index.with_suffix(".rec")

    def scan(self, data: Buffer) -> Iterator[Frame | Damage]:
        return scan_frames(data)

    def framing_problems(self, data: Buffer, record: Frame) -> list[tuple[str, str]]:
        return [("unescaped magics", f"unescaped magic inside a record at byte {position} (readers that "
                 "resynchronise on the magic, such as DALI, would split the record there)")
                for position in unescaped_magics_in(data, record)]

    def decode(self, payload: bytes) -> RecordView:
        header, image = unpack_payload(payload)
        return RecordView(header.labels, header.id, image, {"vector": header.vector})

    def required_problems(self, view: RecordView) -> list[str]:
        return []

    def name_problem(self, name: str) -> str | None:
        return None

    def check_dataset(self, out_dir: Path, name: str, shards: Sequence[tuple[Sequence[str], int]]) -> list[str]:
        return []

    def dataset_files(self, out_dir: Path, name: str, shards: Sequence[tuple[Sequence[str], int]],
                      classes: Sequence[str] | None, data_bytes: Sequence[int] | None = None) -> list[Path]:
        from recordio_pack.index import write_dataset_index

        return [write_dataset_index(out_dir, name, [(files[0], files[1]) for files, _ in shards], data_bytes)]
