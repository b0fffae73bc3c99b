"""Rebuilding `.idx` files from `.rec` files, and one combined index over many shards (DALI-style).

A `.rec` with damaged bytes is refused (DamagedShard names the file and the byte), unless ``salvage`` is set:
then the intact records are indexed (the scan resynchronises past each damaged range) and every skipped
range is returned with the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from recordio_pack.errors import RefusedError
from recordio_pack.format import Damage, scan_frames, unpack_payload
from recordio_pack.recordio import DamagedShard, InputError, mapped, require_file, write_idx_atomic

__all__ = ["IndexResult", "SkippedRange", "DuplicateIds", "scan_offsets", "rebuild_index", "combined_index"]

Key = Literal["position", "id"]


class DuplicateIds(InputError):
    """IRHeader ids that repeat, so they cannot be index keys."""


@dataclass(frozen=True)
class SkippedRange:
    """Bytes ``start..end`` of ``rec`` that held no readable record and are not indexed."""

    rec: str
    start: int
    end: int
    error: str


@dataclass(frozen=True)
class IndexResult:
    output: str
    records: int
    sources: int
    skipped: tuple[SkippedRange, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _key_of(rec: Path, key: Key, position: int, offset: int, payload: bytes) -> int:
    if key == "position":
        return position
    try:
        return unpack_payload(payload)[0].id
    except ValueError as error:
        raise InputError(f"{rec}: record at byte {offset}: {error}") from None


def scan_offsets(rec: str | Path, key: Key = "position",
                 salvage: bool = False) -> tuple[list[tuple[int, int]], list[SkippedRange]]:
    """``(key, offset)`` for every readable record of ``rec`` (key: its position among them, or the IRHeader
    id), and the damaged ranges skipped.  Damage raises DamagedShard unless ``salvage``."""
    rec = require_file(rec)
    pairs: list[tuple[int, int]] = []
    damage: list[Damage] = []
    with mapped(rec) as data:
        for item in scan_frames(data):
            if isinstance(item, Damage):
                damage.append(item)
            elif salvage or not damage:
                pairs.append((_key_of(rec, key, len(pairs), item.start, item.payload), item.start))
    if damage and not salvage:
        raise DamagedShard(rec, damage)
    return pairs, [SkippedRange(str(rec), item.start, item.end, item.describe()) for item in damage]


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise RefusedError(f"{path} exists; pass --overwrite to replace it")


def rebuild_index(rec: str | Path, output: str | Path | None = None, key: Key = "position",
                  overwrite: bool = False, salvage: bool = False) -> IndexResult:
    """Write ``output`` (default: the `.idx` beside ``rec``) from the records actually in ``rec``."""
    rec = require_file(rec)
    target = Path(output) if output else rec.with_suffix(".idx")
    _refuse_existing(target, overwrite)
    pairs, skipped = scan_offsets(rec, key, salvage)
    keys = [pair[0] for pair in pairs]
    if len(set(keys)) != len(keys):
        raise DuplicateIds(f"{rec}: record ids are not unique, so they cannot be index keys")
    write_idx_atomic(target, pairs)
    return IndexResult(str(target), len(pairs), 1, tuple(skipped))


def combined_index(recs: Sequence[str | Path], output: str | Path, overwrite: bool = False,
                   salvage: bool = False) -> IndexResult:
    """One index over ``recs`` taken in the given order: keys 0..N-1, offsets cumulative across the files, as
    DALI's readers.mxnet accepts with several `.rec` paths and one index."""
    paths = [require_file(rec) for rec in recs]
    target = Path(output)
    _refuse_existing(target, overwrite)
    pairs: list[tuple[int, int]] = []
    skipped: list[SkippedRange] = []
    base = 0
    for rec in paths:
        offsets, damage = scan_offsets(rec, salvage=salvage)
        first = len(pairs)
        pairs.extend((first + number, base + offset) for number, (_, offset) in enumerate(offsets))
        skipped.extend(damage)
        base += rec.stat().st_size
    write_idx_atomic(target, pairs)
    return IndexResult(str(target), len(pairs), len(paths), tuple(skipped))
