"""Looking inside shards: a table of records, and a contact sheet of captioned sample images.

The library side of ``recordio-pack inspect`` (named ``peek`` so as not to shadow the standard library's
``inspect``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from recordio_pack.errors import RecordioPackError
from recordio_pack.format import Buffer, Damage
from recordio_pack.formats import RecordFormat
from recordio_pack.fsutil import atomic_output
from recordio_pack.imaging import ImageRejected, probe
from recordio_pack.index import shard_format
from recordio_pack.recordio import DamagedShard, InputError, mapped, require_file

__all__ = ["RecordRow", "iter_rows", "contact_sheet"]


@dataclass(frozen=True)
class RecordRow:
    key: int
    offset: int
    label: float
    labels: tuple[float, ...]
    class_name: str
    id: int | None  # the IRHeader id; None for a format without one (TFRecord)
    bytes: int
    width: int
    height: int
    format: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _keys(rec: Path, fmt: RecordFormat) -> dict[int, int]:
    idx = fmt.index_beside(rec)
    if not idx.exists():
        return {}
    try:
        return {line.offset: line.key for line in fmt.read_index(idx)}
    except (ValueError, UnicodeDecodeError) as error:
        raise InputError(str(error) if str(error).startswith(str(idx)) else f"{idx}: {error}") from None


def _records(rec: Path, data: Buffer, fmt: RecordFormat) -> Iterator[tuple[int, bytes]]:
    """``(offset, payload)`` of each record; DamagedShard at the first damaged byte range."""
    for item in fmt.scan(data):
        if isinstance(item, Damage):
            raise DamagedShard(rec, [item])
        yield item.start, item.payload


def iter_rows(rec: str | Path, classes: Sequence[str] | None = None, limit: int | None = None,
              with_images: bool = False, fmt: RecordFormat | None = None) -> Iterator[tuple[RecordRow, bytes]]:
    """One row per record (key from the index beside ``rec`` when there is one, else the position) of a shard in
    ``fmt`` (default: told by its first bytes); ``classes`` names class ``label - label base``."""
    rec = require_file(rec)
    fmt = fmt if fmt is not None else shard_format(rec)
    keys = _keys(rec, fmt)
    with mapped(rec) as data:
        for position, (offset, payload) in enumerate(_records(rec, data, fmt)):
            if limit is not None and position >= limit:
                return
            try:
                view = fmt.decode(payload)
            except ValueError as error:
                raise InputError(f"{rec}: record at byte {offset}: {error}") from None
            image = view.image
            try:
                info = probe(bytes(image))
                width, height, kind = info.width, info.height, info.format
            except ImageRejected as error:
                width, height, kind = 0, 0, f"bad: {error.reason}"
            label, index = view.label, view.label - view.label_base
            name = classes[int(index)] if classes and index == int(index) and 0 <= index < len(classes) else ""
            row = RecordRow(keys.get(offset, position), offset, label, view.labels, name, view.id, len(image),
                            width, height, kind)
            yield row, (bytes(image) if with_images else b"")


def contact_sheet(recs: Sequence[str | Path], output: str | Path, classes: Sequence[str] | None = None,
                  count: int = 48, columns: int = 8, tile: int = 160) -> int:
    """Write a PNG grid of the first ``count`` records over ``recs``, each captioned "label: class"; return
    how many images it shows."""
    import cv2
    import numpy as np

    tiles: list[np.ndarray] = []
    for rec in recs:
        for row, image in iter_rows(rec, classes, limit=count - len(tiles), with_images=True):
            picture = cv2.imdecode(np.frombuffer(image, dtype=np.uint8), cv2.IMREAD_COLOR)
            canvas = np.full((tile + 22, tile, 3), 255, dtype=np.uint8)
            if picture is not None:
                scale = tile / max(picture.shape[:2])
                size = (max(1, int(picture.shape[1] * scale)), max(1, int(picture.shape[0] * scale)))
                small = cv2.resize(picture, size, interpolation=cv2.INTER_AREA)
                top, left = (tile - size[1]) // 2, (tile - size[0]) // 2
                canvas[top:top + size[1], left:left + size[0]] = small
            caption = f"{row.label:g}: {row.class_name}"[:26]
            cv2.putText(canvas, caption, (3, tile + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
            tiles.append(canvas)
        if len(tiles) >= count:
            break
    if not tiles:
        raise RecordioPackError("no records to show")
    rows = -(-len(tiles) // columns)
    blank = np.full_like(tiles[0], 255)
    grid = [np.hstack(tiles[row * columns:(row + 1) * columns] +
                      [blank] * (columns - len(tiles[row * columns:(row + 1) * columns])))
            for row in range(rows)]
    ok, encoded = cv2.imencode(".png", np.vstack(grid))
    if not ok:
        raise RecordioPackError("PNG encoding of the contact sheet failed")
    with atomic_output(output) as stream:
        stream.write(encoded.tobytes())
    return len(tiles)
