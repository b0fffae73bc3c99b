"""Rebuilding a shard's index from its records (RecordIO's `.idx`, DALI's TFRecord index: the shard's
``RecordFormat`` writes the lines), and one combined index over many RecordIO shards (DALI-style).

``write_dataset_index`` writes a packed dataset's ``NAME.all.idx`` from its shards' own `.idx` files (no shard is
read again): one index over every shard in shard order, keys 0..N-1, offsets cumulative across the files, which
is what DALI's ``fn.readers.mxnet`` takes (it accepts one index file for all the `.rec` paths it is given).

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
from recordio_pack.format import Damage, format_idx_line
from recordio_pack.formats import RecordFormat, detect, make_format
from recordio_pack.fsutil import atomic_output
from recordio_pack.recordio import DamagedShard, InputError, mapped, read_idx, require_file, write_idx_atomic

__all__ = ["IndexResult", "SkippedRange", "DuplicateIds", "DATASET_INDEX_SUFFIX", "dataset_index_name", "scan_offsets",
           "rebuild_index", "combined_index", "cumulative_pairs", "write_dataset_index"]

Key = Literal["position", "id"]
DATASET_INDEX_SUFFIX = ".all.idx"


def dataset_index_name(name: str) -> str:
    """``NAME.all.idx``: the file name of a dataset's combined index over all its shards."""
    return f"{name}{DATASET_INDEX_SUFFIX}"


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


def _key_of(rec: Path, fmt: RecordFormat, key: Key, position: int, offset: int, payload: bytes) -> int:
    if key == "position":
        return position
    try:
        record_id = fmt.decode(payload).id
    except ValueError as error:
        raise InputError(f"{rec}: record at byte {offset}: {error}") from None
    if record_id is None:
        raise InputError(f"{rec}: {fmt.title} records have no id to key by (use position keys)")
    return record_id


def shard_format(rec: Path) -> RecordFormat:
    """A shard file's format, by its first bytes (RecordIO, whose scan then names the damage, otherwise)."""
    with open(rec, "rb") as stream:
        return detect(stream.read(64)) or make_format()


def _scan(rec: Path, fmt: RecordFormat, key: Key, salvage: bool) -> tuple[list[tuple[int, int, int]], list[Damage]]:
    lines: list[tuple[int, int, int]] = []
    damage: list[Damage] = []
    with mapped(rec) as data:
        for item in fmt.scan(data):
            if isinstance(item, Damage):
                damage.append(item)
            elif salvage or not damage:
                lines.append((_key_of(rec, fmt, key, len(lines), item.start, item.payload), item.start,
                              item.end - item.start))
    if damage and not salvage:
        raise DamagedShard(rec, damage)
    return lines, damage


def _skipped(rec: Path, damage: list[Damage]) -> list[SkippedRange]:
    return [SkippedRange(str(rec), item.start, item.end, item.describe()) for item in damage]


def scan_offsets(rec: str | Path, key: Key = "position",
                 salvage: bool = False) -> tuple[list[tuple[int, int]], list[SkippedRange]]:
    """``(key, offset)`` for every readable record of ``rec`` (key: its position among them, or the IRHeader
    id), and the damaged ranges skipped.  Damage raises DamagedShard unless ``salvage``."""
    rec = require_file(rec)
    lines, damage = _scan(rec, shard_format(rec), key, salvage)
    return [(line_key, offset) for line_key, offset, _ in lines], _skipped(rec, damage)


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise RefusedError(f"{path} exists; pass --overwrite to replace it")


def rebuild_index(rec: str | Path, output: str | Path | None = None, key: Key = "position",
                  overwrite: bool = False, salvage: bool = False) -> IndexResult:
    """Write ``output`` (default: the index beside ``rec``: its `.idx`, or a TFRecord's DALI index) from the
    records actually in ``rec``."""
    rec = require_file(rec)
    fmt = shard_format(rec)
    target = Path(output) if output else fmt.index_beside(rec)
    _refuse_existing(target, overwrite)
    lines, damage = _scan(rec, fmt, key, salvage)
    keys = [line[0] for line in lines]
    if len(set(keys)) != len(keys):
        raise DuplicateIds(f"{rec}: record ids are not unique, so they cannot be index keys")
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(target) as stream:
        stream.write(b"".join(fmt.index_line(*line) for line in lines))
    return IndexResult(str(target), len(lines), 1, tuple(_skipped(rec, damage)))


def combined_index(recs: Sequence[str | Path], output: str | Path, overwrite: bool = False,
                   salvage: bool = False) -> IndexResult:
    """One index over ``recs`` taken in the given order: keys 0..N-1, offsets cumulative across the files, as
    DALI's readers.mxnet accepts with several `.rec` paths and one index."""
    paths = [require_file(rec) for rec in recs]
    for rec in paths:
        if shard_format(rec).name != "recordio":
            raise InputError(f"{rec}: a combined index is for RecordIO shards (DALI's readers.mxnet); DALI's "
                             "readers.tfrecord takes one index per TFRecord file, which `index REC` writes")
    target = Path(output)
    _refuse_existing(target, overwrite)
    skipped: list[SkippedRange] = []
    per_file: list[tuple[list[int], int]] = []
    for rec in paths:
        offsets, damage = scan_offsets(rec, salvage=salvage)
        per_file.append(([offset for _, offset in offsets], rec.stat().st_size))
        skipped.extend(damage)
    pairs = cumulative_pairs(per_file)
    write_idx_atomic(target, pairs)
    return IndexResult(str(target), len(pairs), len(paths), tuple(skipped))


def cumulative_pairs(files: Sequence[tuple[Sequence[int], int]]) -> list[tuple[int, int]]:
    """``(key, offset)`` of one index over several `.rec` files taken in order: ``files`` holds, per file, its
    record offsets (in file order) and its size; keys are 0..N-1, each offset is counted from the start of the
    first file (the sizes of the files before it added)."""
    pairs: list[tuple[int, int]] = []
    base = 0
    for offsets, size in files:
        first = len(pairs)
        pairs.extend((first + number, base + offset) for number, offset in enumerate(sorted(offsets)))
        base += size
    return pairs


def write_dataset_index(out_dir: str | Path, name: str, shard_files: Sequence[tuple[str, str]],
                        rec_sizes: Sequence[int] | None = None) -> Path:
    """Write ``OUT_DIR/NAME.all.idx`` (atomically) over the shards ``shard_files`` — ``(rec, idx)`` file names
    inside ``out_dir``, in shard order — from their `.idx` files and `.rec` sizes (``rec_sizes``, or the files'
    own when not given), and return its path.  A dataset of one shard gets one too (the same offsets as
    ``NAME.idx``, keys 0..N-1), so the DALI recipe is the same for every dataset.  InputError names a shard
    whose `.idx` is missing, unreadable or points past the end of its `.rec`.  Written shard by shard: memory
    holds one shard's offsets (8 bytes each), whatever the dataset's size."""
    from array import array

    out_dir = Path(out_dir)
    target = out_dir / dataset_index_name(name)
    key = base = 0
    with atomic_output(target) as stream:
        for number, (rec_name, idx_name) in enumerate(shard_files):
            idx = require_file(out_dir / idx_name)
            rec = out_dir / rec_name
            size = rec_sizes[number] if rec_sizes is not None else require_file(rec).stat().st_size
            try:
                offsets = array("q", sorted(offset for _, offset in read_idx(idx)))
            except (ValueError, UnicodeDecodeError) as error:
                raise InputError(f"{idx}: {error}") from None
            if offsets and offsets[-1] >= size:
                raise InputError(f"{idx}: offset {offsets[-1]} lies past the end of {rec.name} ({size} bytes)")
            for start in range(0, len(offsets), 65536):
                part = offsets[start:start + 65536]
                stream.write("".join(format_idx_line(key + position, base + offset)
                                     for position, offset in enumerate(part, start)).encode("ascii"))
            key += len(offsets)
            base += size
    return target
