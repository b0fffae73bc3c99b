"""Record formats behind one small protocol: RecordIO (`.rec` + `.idx`) and TFRecord (+ DALI's index).

`pack`, `shard`, `verify`, `inspect` and `index` work through a ``RecordFormat`` and never ask which one it is: a
format names the files of shard i of n, turns one image into its payload and frames it (in the worker), writes an
index line per record, reads its index, scans its files (records and damaged byte ranges), and decodes a payload
into a ``RecordView``.  A format is a plain, frozen, picklable value that travels inside a shard task.

``make_format(name, preset, label_base, classes)`` builds one; ``format_of(options, classes)`` rebuilds the one a
manifest's options describe; ``detect(head)`` tells a shard file's format from its first bytes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from recordio_pack.format import Buffer, Damage, Frame
from recordio_pack.sources import Entry

__all__ = ["RecordFormat", "RecordView", "IndexLine", "FORMATS", "make_format", "format_of", "detect",
           "UnknownFormat"]


class UnknownFormat(ValueError):
    """A format or preset name that is not registered."""


@dataclass(frozen=True)
class IndexLine:
    """One line of a shard's index: the record's key, its offset in the data file, and its size (None when the
    index does not hold sizes, as RecordIO's `.idx`)."""

    key: int
    offset: int
    size: int | None = None


@dataclass(frozen=True)
class RecordView:
    """A decoded record: its labels as stored, its id (None when the format has none), the image bytes, and the
    format's other fields by name (shown by inspect)."""

    labels: tuple[float, ...]
    id: int | None
    image: bytes | memoryview
    fields: dict[str, Any] = field(default_factory=dict)
    label_base: int = 0  # the stored label of class 0 (1 in the TPU and AI Platform layouts)

    @property
    def label(self) -> float:
        return self.labels[0] if self.labels else 0.0


class RecordFormat(Protocol):
    """What a record format knows.  Implementations are frozen dataclasses (picklable task values)."""

    @property
    def name(self) -> str:
        """"recordio", "tfrecord": the --format value and the registry key."""

    @property
    def title(self) -> str:
        """"RecordIO": how messages name it."""

    @property
    def max_payload(self) -> int:
        """The largest payload it frames; larger images are rejected with the reason."""

    @property
    def limit_text(self) -> str:
        """What that reason names: "RecordIO's 2**29-byte limit"."""

    def options(self) -> dict[str, Any]:
        """What the manifest keeps to rebuild this format (``format_of``); {} for the default RecordIO."""

    def shard_files(self, name: str, index: int, count: int) -> tuple[str, ...]:
        """The files of shard ``index`` of ``count``, relative to the output folder: the data file first, then
        its index."""

    def shard_patterns(self, name: str) -> list[str]:
        """Glob patterns (relative to the output folder) matching every shard file a pack of NAME may write."""

    def payload(self, entry: Entry, image: bytes) -> bytes:
        """The record's payload for one prepared image (``entry`` gives labels, index and path)."""

    def frame(self, payload: bytes) -> bytes:
        """The payload framed, ready to append to the data file."""

    def index_line(self, key: int, offset: int, size: int) -> bytes:
        """One line of the shard's index for a record of ``size`` framed bytes at ``offset``."""

    def read_index(self, path: str | Path) -> list[IndexLine]:
        """The lines of an index file; ValueError naming the line when one is malformed."""

    def looks_like_index(self, head: bytes) -> bool:
        """Whether a file's first bytes read as this format's index."""

    def index_beside(self, data: Path) -> Path:
        """Where a shard file's index is when no manifest says (the name this format's packs give it)."""

    def data_beside(self, index: Path) -> Path:
        """The shard file an index file found on its own stands for (which may be missing)."""

    def scan(self, data: Buffer) -> Iterator[Frame | Damage]:
        """Every record of ``data`` and every damaged range between them, in file order, covering it exactly."""

    def framing_problems(self, data: Buffer, record: Frame) -> list[tuple[str, str]]:
        """``(kind, text)`` for what is wrong inside a readable record's framing (RecordIO: unescaped magics)."""

    def decode(self, payload: bytes) -> RecordView:
        """The record's fields; ValueError when the payload cannot be read as this format's record."""

    def required_problems(self, view: RecordView) -> list[str]:
        """What a decoded record lacks that this format's layout requires (TFRecord presets: their keys)."""

    def name_problem(self, name: str) -> str | None:
        """Why a dataset of this format cannot be called ``name`` (a layout that names files after the split)."""

    def dataset_files(self, out_dir: Path, name: str, shards: Sequence[tuple[Sequence[str], int]],
                      classes: Sequence[str] | None, data_bytes: Sequence[int] | None = None) -> list[Path]:
        """Write the files a dataset of this format has beside its shards (``shards``: each one's file names
        and record count, in shard order; ``data_bytes``: each one's data file size, for data files that are
        no longer in ``out_dir`` once published elsewhere); return the paths the manifest lists with their
        checksums."""

    def check_dataset(self, out_dir: Path, name: str, shards: Sequence[tuple[Sequence[str], int]]) -> list[str]:
        """Problems of the files written beside the shards that the manifest does not list by checksum."""


def _recordio(preset: str, label_base: int | None, classes: Sequence[str] | None, pack_label: bool = False,
              quality: int = 95) -> RecordFormat:
    from recordio_pack.formats.recordio import RecordIOFormat

    if preset:
        raise UnknownFormat(f"--preset {preset} is for --format tfrecord; RecordIO has none")
    if label_base not in (None, 0):
        raise UnknownFormat("RecordIO labels are the .lst labels (0-based for folders); --label-base is for "
                            "--format tfrecord")
    return RecordIOFormat(pack_label)


def _tfrecord(preset: str, label_base: int | None, classes: Sequence[str] | None, pack_label: bool = False,
              quality: int = 95) -> RecordFormat:
    from recordio_pack.formats.tfrecord import tfrecord_format

    return tfrecord_format(preset, label_base, classes, pack_label, quality)


class _Builder(Protocol):
    def __call__(self, preset: str, label_base: int | None, classes: Sequence[str] | None, pack_label: bool = False,
                 quality: int = 95) -> RecordFormat: ...


FORMATS: dict[str, _Builder] = {"recordio": _recordio, "tfrecord": _tfrecord}


def make_format(name: str = "recordio", preset: str = "", label_base: int | None = None,
                classes: Sequence[str] | None = None, *, pack_label: bool = False, quality: int = 95) -> RecordFormat:
    """The registered format ``name``, set up for ``preset`` and ``label_base`` (None: the preset's own);
    UnknownFormat names what it does not take."""
    try:
        build = FORMATS[name]
    except KeyError:
        raise UnknownFormat(f"unknown format {name!r} (choose {', '.join(FORMATS)})") from None
    return build(preset, label_base, classes, pack_label, quality)


def format_of(options: Mapping[str, Any], classes: Sequence[str] | None = None) -> RecordFormat:
    """The format a manifest's (or journal's) options describe (``PackOptions.output_affecting``); RecordIO when
    they name none (packs of older versions)."""
    return make_format(options.get("format", "recordio"), options.get("preset", ""), options.get("label_base"),
                       classes, pack_label=bool(options.get("pack_label", False)),
                       quality=int(options.get("quality", 95)))


def detect(head: bytes) -> RecordFormat | None:
    """The format of a shard whose first bytes are ``head`` (at least 12 when the file has them), by content:
    RecordIO starts with its magic, TFRecord with a length whose masked CRC32C follows it.  None otherwise."""
    from recordio_pack.format import MAGIC_BYTES
    from recordio_pack.tfrecord import starts_record

    if head.startswith(MAGIC_BYTES):
        return make_format("recordio")
    if starts_record(head):
        return make_format("tfrecord")
    return None
