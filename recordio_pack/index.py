"""Rebuilding `.idx` files from `.rec` files, and one combined index over many shards (DALI-style)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

from recordio_pack.format import unpack_payload
from recordio_pack.recordio import iter_records, mapped, write_idx_atomic

__all__ = ["IndexResult", "scan_offsets", "rebuild_index", "combined_index"]


@dataclass(frozen=True)
class IndexResult:
    output: str
    records: int
    sources: int


def scan_offsets(rec: str | Path, key: Literal["position", "id"] = "position") -> list[tuple[int, int]]:
    """``(key, offset)`` for every record of ``rec``; key is the position or the IRHeader id."""
    pairs = []
    with mapped(rec) as data:
        for position, (offset, payload) in enumerate(iter_records(data)):
            pairs.append((position if key == "position" else unpack_payload(payload)[0].id, offset))
    return pairs


def _refuse_existing(path: Path, overwrite: bool) -> None:
    from recordio_pack.errors import RefusedError

    if path.exists() and not overwrite:
        raise RefusedError(f"{path} exists; pass --overwrite to replace it")


def rebuild_index(rec: str | Path, output: str | Path | None = None, key: Literal["position", "id"] = "position",
                  overwrite: bool = False) -> IndexResult:
    """Write ``output`` (default: the `.idx` beside ``rec``) from the records actually in ``rec``."""
    rec = Path(rec)
    target = Path(output) if output else rec.with_suffix(".idx")
    _refuse_existing(target, overwrite)
    pairs = scan_offsets(rec, key)
    keys = [pair[0] for pair in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{rec}: record ids are not unique; use position keys")
    write_idx_atomic(target, pairs)
    return IndexResult(str(target), len(pairs), 1)


def combined_index(recs: Sequence[str | Path], output: str | Path, overwrite: bool = False) -> IndexResult:
    """One index over ``recs`` taken in the given order: keys 0..N-1, offsets cumulative across the files, as
    DALI's readers.mxnet accepts with several `.rec` paths and one index."""
    target = Path(output)
    _refuse_existing(target, overwrite)
    pairs: list[tuple[int, int]] = []
    base = 0
    for rec in recs:
        for _, offset in scan_offsets(rec):
            pairs.append((len(pairs), base + offset))
        base += Path(rec).stat().st_size
    write_idx_atomic(target, pairs)
    return IndexResult(str(target), len(pairs), len(recs))
