"""PyTorch datasets over packed shards (``pip install 'recordio-pack[torch]'``); no mxnet, no torchvision.

`RecordIODataset` is map-style (random access through `recordio_pack.reader.IndexedRecordIO`, any sampler);
`RecordIOIterableDataset` reads the shards sequentially, the way a disk or a network volume is fastest: per epoch
it shuffles the shard order and, within a buffer, the records, and splits the records among the
``torch.distributed`` ranks and the DataLoader workers so that every record is seen once per epoch.

Both give ``(image, label)``: the image decoded to an HWC uint8 RGB array (``decode=False``: the encoded bytes),
then passed to ``transform`` when one is given; the label an int (a float when it is not a whole number, a
float32 array for a label vector).
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch.distributed
import torch.utils.data

from recordio_pack.format import IRHeader, unpack_payload
from recordio_pack.reader import IndexedRecordIO, decode_rgb, iter_payloads

__all__ = ["RecordIODataset", "RecordIOIterableDataset", "decode_rgb", "epoch_parts"]

Sample = tuple[Any, Any]
Segment = tuple[int, int, int]  # shard, first record (position in the shard), record count


def _label(header: IRHeader) -> Any:
    if header.vector:
        return np.array(header.labels, dtype=np.float32)
    return int(header.label) if float(header.label).is_integer() else header.label


def _sample(payload: bytes, decode: bool, transform: Callable[[Any], Any] | None) -> Sample:
    header, view = unpack_payload(payload)
    image: Any = decode_rgb(bytes(view)) if decode else bytes(view)
    return (transform(image) if transform is not None else image), _label(header)


class RecordIODataset(torch.utils.data.Dataset):
    """Map-style: item ``i`` is the ``i``-th record of the index.  ``path`` and ``index`` as for
    `IndexedRecordIO` (a folder, a manifest, a `.rec`, an `.idx`)."""

    def __init__(self, path: str | Path, transform: Callable[[Any], Any] | None = None, decode: bool = True,
                 index: str | Path | None = None) -> None:
        self.reader = IndexedRecordIO(path, index)
        self.transform = transform
        self.decode = decode

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, position: int) -> Sample:
        return _sample(self.reader.read_at(position), self.decode, self.transform)


def _split(segments: Sequence[Segment], parts: int, part: int) -> list[Segment]:
    """The ``part``-th of ``parts`` contiguous, near-equal slices (sizes differ by at most 1) of the records
    ``segments`` hold, in their order."""
    total = sum(count for _, _, count in segments)
    begin, end = part * total // parts, (part + 1) * total // parts
    taken: list[Segment] = []
    position = 0
    for shard, first, count in segments:
        low, high = max(begin, position), min(end, position + count)
        if low < high:
            taken.append((shard, first + low - position, high - low))
        position += count
    return taken


def epoch_parts(counts: Sequence[int], seed: int, epoch: int, shuffle: bool, rank: int, world_size: int,
                worker: int, workers: int) -> list[Segment]:
    """What one DataLoader worker of one rank reads in one epoch: the shards (record ``counts`` each) in an
    order shuffled by ``(seed, epoch)`` (the same on every rank and worker), cut into ``world_size`` contiguous
    near-equal slices, the rank's slice cut again into ``workers``.  Every record falls in exactly one part."""
    order = np.random.default_rng([seed, epoch]).permutation(len(counts)) if shuffle else range(len(counts))
    segments = [(int(shard), 0, counts[shard]) for shard in order]
    return _split(_split(segments, world_size, rank), workers, worker)


class RecordIOIterableDataset(torch.utils.data.IterableDataset):
    """Sequential reading of every shard, shuffled per epoch and split across ranks and DataLoader workers.

    ``seed``/``epoch`` (`set_epoch`, as with DistributedSampler: call it before each epoch) decide the shard
    order and the shuffle; ``shuffle=False`` reads in order.  ``buffer_size``: records held for the shuffle
    within each worker.  ``rank``/``world_size``: default ``torch.distributed``'s when it is initialised, else
    0 and 1.  Ranks get record counts that differ by at most one; ``len()`` is this rank's count.
    """

    def __init__(self, path: str | Path, transform: Callable[[Any], Any] | None = None, decode: bool = True,
                 shuffle: bool = True, seed: int = 0, buffer_size: int = 1024, rank: int | None = None,
                 world_size: int | None = None, index: str | Path | None = None) -> None:
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be at least 1, got {buffer_size}")
        reader = IndexedRecordIO(path, index)
        self.recs = list(reader.recs)
        self.offsets: list[array] = reader.shard_offsets()
        reader.close()
        self.transform, self.decode, self.shuffle = transform, decode, shuffle
        self.seed, self.buffer_size, self.epoch = seed, buffer_size, 0
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.rank = rank if rank is not None else torch.distributed.get_rank() if distributed else 0
        self.world_size = world_size if world_size is not None else \
            torch.distributed.get_world_size() if distributed else 1
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not in 0..{self.world_size - 1}")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return sum(count for _, _, count in self._part(0, 1))

    def _part(self, worker: int, workers: int) -> list[Segment]:
        counts = [len(offsets) for offsets in self.offsets]
        return epoch_parts(counts, self.seed, self.epoch, self.shuffle, self.rank, self.world_size, worker, workers)

    def _payloads(self, part: list[Segment]) -> Iterator[bytes]:
        for shard, first, count in part:
            yield from iter_payloads(self.recs[shard], self.offsets[shard][first], count)

    def __iter__(self) -> Iterator[Sample]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        payloads = self._payloads(self._part(worker, workers))
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker])
            payloads = _buffer_shuffle(payloads, self.buffer_size, rng)
        for payload in payloads:
            yield _sample(payload, self.decode, self.transform)


def _buffer_shuffle(items: Iterator[bytes], size: int, rng: np.random.Generator) -> Iterator[bytes]:
    """``items`` in a random order drawn through a buffer of ``size``: each new item replaces a random one,
    which is given out; the rest are given out shuffled at the end."""
    buffer: list[bytes] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        slot = int(rng.integers(size))
        buffer[slot], item = item, buffer[slot]
        yield item
    rng.shuffle(buffer)
    yield from buffer
