"""Reading packed shards for training, without mxnet: `IndexedRecordIO` (random access by key) and `iter_payloads`
(sequential, no index needed).

Byte logic is `recordio_pack.format`'s (`read_record`, `unpack_payload`) and file logic `recordio_pack.recordio`'s
(`mapped`, `read_idx`); what a path stands for is decided as `verify` and `inspect` decide it (`resolve_path`).
Files are memory-mapped on first use and mapped again in a process that was forked after that (DataLoader
workers), so one reader may be made before the workers start and used in all of them; a pickled reader carries
only its paths and index.
"""

from __future__ import annotations

import bisect
import os
from array import array
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recordio_pack.format import Buffer, FramingError, IRHeader, read_record, unpack_payload
from recordio_pack.index import cumulative_pairs, dataset_index_name
from recordio_pack.recordio import InputError, mapped, read_idx, require_file

if TYPE_CHECKING:
    import numpy as np

__all__ = ["DamagedRecord", "MissingKey", "MappedFile", "IndexedRecordIO", "iter_payloads", "decode_rgb"]


class DamagedRecord(InputError):
    """A record that cannot be read where the index puts it; ``path`` and ``offset`` (in that file) name it."""

    def __init__(self, path: str | Path, offset: int, detail: str, key: int | None = None) -> None:
        which = f"record with key {key}" if key is not None else "record"
        super().__init__(f"{path}: {which} at byte {offset}: {detail}")
        self.path, self.offset, self.key = str(path), offset, key


class MissingKey(KeyError):
    """A key the index does not hold."""


class MappedFile:
    """One file memory-mapped read-only on first use, and mapped again in a process forked after that."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._pid = -1
        self._stack: ExitStack | None = None
        self._data: Buffer = b""

    def data(self) -> Buffer:
        if self._pid != os.getpid():
            self._stack = ExitStack()  # a forked child's copy of the parent's map is left to the parent
            self._data = self._stack.enter_context(mapped(self.path))
            self._pid = os.getpid()
        return self._data

    def read(self, offset: int, key: int | None = None) -> tuple[bytes, int]:
        """``(payload, offset of the next record)`` of the record at ``offset``; DamagedRecord if it is not one."""
        try:
            return read_record(self.data(), offset)
        except FramingError as error:
            raise DamagedRecord(self.path, offset, str(error), key) from None

    def close(self) -> None:
        if self._stack is not None and self._pid == os.getpid():
            self._stack.close()
        self._stack, self._data, self._pid = None, b"", -1

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])  # type: ignore[misc]


def iter_payloads(rec: str | Path, start: int = 0, count: int | None = None) -> Iterator[bytes]:
    """The payloads of ``rec`` in file order, from the record at byte ``start``, ``count`` of them (default: to
    the end); no index needed.  DamagedRecord names the file and byte where the framing breaks."""
    file = MappedFile(require_file(rec))
    try:
        size = len(file.data())
        offset, done = start, 0
        while offset < size and (count is None or done < count):
            payload, offset = file.read(offset)
            done += 1
            yield payload
    finally:
        file.close()


class IndexedRecordIO:
    """Random access by key to one `.rec` + `.idx`, or to a dataset of several shards.

    ``path``: a `.rec` (its `.idx` beside it), a shard's `.idx`, a combined index (``NAME.all.idx``, ``index
    --combined``) with the shards beside it, a manifest, or a folder holding one dataset.  ``index``: an `.idx`
    to use instead (then ``path`` is a `.rec`, or a sequence of `.rec` paths in the order the index counts them).
    Keys: the `.idx`'s for one shard; for a dataset of several, the combined index's (0..N-1 in shard order),
    made from the shards' own indexes when the manifest lists none.  InputError (NoSuchFile among them) names
    a path that cannot be read.
    """

    def __init__(self, path: str | Path | Sequence[str | Path], index: str | Path | None = None) -> None:
        if index is not None:
            recs = [Path(path)] if isinstance(path, (str, Path)) else [Path(item) for item in path]
            self._setup([require_file(rec) for rec in recs], _read_pairs(require_file(index)))
        elif isinstance(path, (str, Path)):
            self._setup(*_resolve(Path(path)))
        else:
            raise TypeError("several .rec paths need the index that covers them (index=...)")

    def _setup(self, recs: list[Path], pairs: list[tuple[int, int]]) -> None:
        self.recs = recs
        self.files = [MappedFile(rec) for rec in recs]
        sizes = [rec.stat().st_size for rec in recs]
        self._bases = [sum(sizes[:number]) for number in range(len(sizes))]
        self._keys = array("q", (key for key, _ in pairs))
        self._offsets = array("q", (offset for _, offset in pairs))
        first = self._keys[0] if self._keys else 0
        contiguous = all(key == first + number for number, key in enumerate(self._keys))
        self._first = first if contiguous else None
        self._position = None if contiguous else {key: number for number, key in enumerate(self._keys)}
        if not contiguous and len(self._position or {}) != len(self._keys):
            raise InputError(f"{recs[0] if len(recs) == 1 else 'the index'}: keys repeat in the index")

    def __len__(self) -> int:
        return len(self._keys)

    def keys(self) -> list[int]:
        """Every key, in index order."""
        return self._keys.tolist()

    def __contains__(self, key: object) -> bool:
        return isinstance(key, int) and self._find(key) is not None

    def _find(self, key: int) -> int | None:
        if self._first is not None:
            number = key - self._first
            return number if 0 <= number < len(self._keys) else None
        assert self._position is not None
        return self._position.get(key)

    def locate(self, key: int) -> tuple[Path, int]:
        """The `.rec` that holds ``key`` and the record's byte offset in it; MissingKey if there is none."""
        shard, offset = self._locate(key)
        return self.recs[shard], offset

    def _locate(self, key: int) -> tuple[int, int]:
        number = self._find(key)
        if number is None:
            raise MissingKey(key)
        offset = self._offsets[number]
        shard = bisect.bisect_right(self._bases, offset) - 1
        return shard, offset - self._bases[shard]

    def read(self, key: int) -> bytes:
        """The payload of ``key`` (IRHeader + image bytes, segments rejoined); DamagedRecord names file and byte."""
        shard, offset = self._locate(key)
        return self.files[shard].read(offset, key)[0]

    def read_at(self, position: int) -> bytes:
        """The payload of the ``position``-th record of the index (0-based)."""
        return self.read(self._keys[position])

    def header(self, key: int) -> IRHeader:
        """The IRHeader of ``key``'s record."""
        return self.unpack(key)[0]

    def unpack(self, key: int) -> tuple[IRHeader, bytes]:
        """``(IRHeader, image bytes)`` of ``key``'s record."""
        payload = self.read(key)
        try:
            header, image = unpack_payload(payload)
        except ValueError as error:
            path, offset = self.locate(key)
            raise DamagedRecord(path, offset, str(error), key) from None
        return header, bytes(image)

    def __iter__(self) -> Iterator[bytes]:
        """Every payload in index order."""
        for key in self._keys:
            yield self.read(key)

    def shard_offsets(self) -> list[array]:
        """Per shard, in order, the byte offsets (in that shard's `.rec`) of the records the index holds, sorted:
        what sequential readers (`iter_payloads`) split work by."""
        local: list[list[int]] = [[] for _ in self.recs]
        for offset in self._offsets:
            shard = bisect.bisect_right(self._bases, offset) - 1
            local[shard].append(offset - self._bases[shard])
        return [array("q", sorted(offsets)) for offsets in local]

    def close(self) -> None:
        for file in self.files:
            file.close()

    def __enter__(self) -> IndexedRecordIO:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_pairs(idx: Path) -> list[tuple[int, int]]:
    try:
        return read_idx(idx)
    except (ValueError, UnicodeDecodeError) as error:
        raise InputError(f"{idx}: {error}" if str(idx) not in str(error) else str(error)) from None
    except OSError as error:
        raise InputError(f"{idx}: cannot read: {error.strerror or error}") from None


def _resolve(path: Path) -> tuple[list[Path], list[tuple[int, int]]]:
    """The shards ``path`` stands for (as verify reads it) and the ``(key, offset)`` pairs of their index."""
    from recordio_pack.verify import resolve_path

    targets = resolve_path(path)
    kinds = {target.kind for target in targets}
    if len(targets) > 1 and kinds != {"rec"}:
        raise InputError(f"{path}: holds {len(targets)} datasets; open one of their manifests")
    target = targets[0]
    if target.kind == "index":
        return [require_file(rec) for rec in target.recs], _read_pairs(target.path)
    if target.kind == "manifest":
        assert target.manifest is not None
        folder = target.path.parent
        combined = folder / dataset_index_name(target.manifest.name)
        recs = [require_file(folder / shard.rec.name) for shard in target.manifest.shards]
        if any(record.name == combined.name for record in target.manifest.files):
            return recs, _read_pairs(require_file(combined))
        return recs, _pairs_of_shards(recs, [folder / shard.idx.name for shard in target.manifest.shards])
    recs = [target.path for target in targets]
    idxs = [folder / target.shard.idx.name if target.shard else target.path.with_suffix(".idx")
            for target, folder in ((target, target.path.parent) for target in targets)]
    for idx in idxs:
        if not idx.exists():
            raise InputError(f"{idx}: missing; rebuild it with `recordio-pack index {idx.with_suffix('.rec')}`, "
                             "or read the .rec in order with reader.iter_payloads")
    if len(recs) == 1:
        return recs, _read_pairs(idxs[0])
    return recs, _pairs_of_shards(recs, idxs)


def _pairs_of_shards(recs: list[Path], idxs: list[Path]) -> list[tuple[int, int]]:
    files = [([offset for _, offset in _read_pairs(require_file(idx))], rec.stat().st_size)
             for rec, idx in zip(recs, idxs)]
    return cumulative_pairs(files)


def decode_rgb(image: bytes) -> np.ndarray:
    """An encoded image (a record's image bytes) as an HWC uint8 RGB array, decoded by OpenCV; gray images get
    three equal channels.  ValueError when it does not decode."""
    import cv2
    import numpy as np

    decoded = cv2.imdecode(np.frombuffer(image, dtype=np.uint8), cv2.IMREAD_COLOR)
    if decoded is None:
        raise ValueError("the record's image could not be decoded")
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
