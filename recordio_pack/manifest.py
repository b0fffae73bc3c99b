"""``NAME.manifest.json``: what a packed dataset is, so resume, verify, backup and restore can check it.

Written last and atomically, only when every shard is complete; its presence means the dataset is whole.
No timestamps: the same inputs and options give the same manifest.
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from recordio_pack import __version__
from recordio_pack.digest import Digests
from recordio_pack.fsutil import atomic_output

__all__ = ["MANIFEST_FORMAT", "MANIFEST_SUFFIX", "FileRecord", "HasShardFiles", "ShardRecord", "encode_record_crc32s",
           "decode_record_crc32s", "Manifest", "manifest_path", "find_manifests"]

MANIFEST_FORMAT = "recordio-pack.manifest/1"
MANIFEST_SUFFIX = ".manifest.json"


@dataclass(frozen=True)
class FileRecord:
    """A file of the dataset, relative to the manifest's folder, with its size and checksums."""

    name: str
    bytes: int
    sha256: str
    crc32: str  # hex; digest.crc32_base64 gives S3's ChecksumCRC32 form

    @classmethod
    def of(cls, name: str, digests: Digests) -> FileRecord:
        return cls(name, digests.size, digests.sha256, digests.crc32)


class HasShardFiles:
    """``rec`` and ``idx`` of a shard whose ``files`` hold the data file first, then its index."""

    files: Sequence[FileRecord]

    @property
    def rec(self) -> FileRecord:
        """The data file (a `.rec`, a TFRecord shard)."""
        return self.files[0]

    @property
    def idx(self) -> FileRecord:
        """The data file's index (`.idx`, DALI's TFRecord index)."""
        return self.files[1]


@dataclass(frozen=True, init=False)
class ShardRecord(HasShardFiles):
    """One shard as the manifest lists it: ``files``, its data file first, then its index (any format's; the
    JSON holds them as ``files``, and manifests of older versions, with ``rec`` and ``idx``, still load).

    ``ShardRecord(index, records, rejects, rec, idx, ...)`` (the two files of a RecordIO shard) or
    ``ShardRecord(index, records, rejects, files=(...), ...)``.
    """

    index: int
    records: int
    rejects: int
    files: tuple[FileRecord, ...]
    # zlib CRC32 of each record's framed bytes (RecordIO: magic through padding; TFRecord: header through footer),
    # in write order, as base64 of little-endian uint32 words (`encode_record_crc32s`); "" in manifests written
    # before it existed
    record_crc32: str = ""
    inputs: str = ""  # SHA-256 over the shard's list lines and each input's size and mtime (or content hash)
    reencoded: int = 0  # records whose image was decoded and encoded again

    def __init__(self, index: int, records: int, rejects: int, rec: FileRecord | None = None,
                 idx: FileRecord | None = None, record_crc32: str = "", inputs: str = "", reencoded: int = 0, *,
                 files: Sequence[FileRecord] = ()) -> None:
        listed = tuple(files) or tuple(record for record in (rec, idx) if record is not None)
        if len(listed) < 2:
            raise ValueError(f"shard {index}: a shard has a data file and its index, got {len(listed)} file(s)")
        for name, value in (("index", index), ("records", records), ("rejects", rejects), ("files", listed),
                            ("record_crc32", record_crc32), ("inputs", inputs), ("reencoded", reencoded)):
            object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "records": self.records, "rejects": self.rejects,
                "files": [asdict(record) for record in self.files], "record_crc32": self.record_crc32,
                "inputs": self.inputs, "reencoded": self.reencoded}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShardRecord:
        files = data["files"] if "files" in data else [data["rec"], data["idx"]]
        return cls(data["index"], data["records"], data["rejects"], record_crc32=data.get("record_crc32", ""),
                   inputs=data.get("inputs", ""), reencoded=data.get("reencoded", 0),
                   files=[FileRecord(**record) for record in files])

    def record_crc32s(self) -> array | None:
        """The per-record CRC32s, or None when the manifest has none; ValueError when they are malformed or
        their count is not ``records``."""
        if not self.record_crc32:
            return None
        values = decode_record_crc32s(self.record_crc32)
        if len(values) != self.records:
            raise ValueError(f"shard {self.index}: {len(values)} record checksums for {self.records} records")
        return values


def encode_record_crc32s(values: Iterable[int]) -> str:
    """Per-record CRC32s as the manifest stores them: base64 of little-endian uint32 words."""
    words = array("I", values)
    if words.itemsize != 4:
        raise RuntimeError(f"array('I') has {words.itemsize}-byte items on this platform, not 4")
    if sys.byteorder != "little":
        words.byteswap()
    return base64.b64encode(words.tobytes()).decode("ascii")


def decode_record_crc32s(text: str) -> array:
    """The inverse of `encode_record_crc32s`; ValueError on text that is not base64 of whole uint32 words."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"record_crc32 is not base64: {error}") from None
    if len(raw) % 4:
        raise ValueError(f"record_crc32 holds {len(raw)} bytes, not a whole number of 4-byte CRC32s")
    words = array("I")
    words.frombytes(raw)
    if sys.byteorder != "little":
        words.byteswap()
    return words


@dataclass
class Manifest:
    name: str
    fingerprint: str
    options: dict[str, Any]
    key_convention: str  # "position" (0..n-1 per shard) or "lst-index"
    classes: list[str] | None  # label -> class name, when known
    label_convention: str
    shards: list[ShardRecord]
    files: list[FileRecord] = field(default_factory=list)  # rejects, lists, class map
    format: str = MANIFEST_FORMAT
    tool: str = f"recordio-pack {__version__}"
    origin: str = ""  # what was packed ("folder:/data/train", "lst:LIST:ROOT", "tar:ARCHIVE"), resolved
    options_fingerprint: str = ""  # PackOptions.fingerprint(): options and codec, without the inputs
    codec: str = ""  # e.g. "opencv 5.0.0"; "" when nothing was re-encoded by design (--reencode never)
    listing_rejects: int = 0  # inputs rejected before packing (outside a class folder, not a regular file, ...)
    skipped: int = 0  # files that are not inputs (other extensions), listed in NAME.skipped.tsv
    skipped_by_extension: dict[str, int] = field(default_factory=dict)
    cross_class_links: int = 0  # symbolic links to an image in another class, packed under the link's class
    update: dict[str, Any] | None = None  # set by an incremental repack: the version it replaced, shards repacked

    @property
    def records(self) -> int:
        return sum(shard.records for shard in self.shards)

    @property
    def rejects(self) -> int:
        """Every input rejected, with its reason in NAME.rejects.tsv: by the workers and by the listing."""
        return sum(shard.rejects for shard in self.shards) + self.listing_rejects

    def data_files(self) -> Iterator[FileRecord]:
        """Every file the manifest vouches for (shards first), not counting the manifest itself."""
        for shard in self.shards:
            yield from shard.files
        yield from self.files

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["shards"] = [shard.to_dict() for shard in self.shards]
        data["records"] = self.records
        data["rejects"] = self.rejects
        data["inputs_accounted"] = self.records + self.rejects + self.skipped  # = files under a packed folder
        return data

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        if data.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"not a recordio-pack manifest (format {data.get('format')!r})")
        return cls(
            name=data["name"], fingerprint=data["fingerprint"], options=data["options"],
            key_convention=data["key_convention"], classes=data.get("classes"),
            label_convention=data["label_convention"],
            shards=[ShardRecord.from_dict(shard) for shard in data["shards"]],
            files=[FileRecord(**record) for record in data.get("files", [])],
            format=data["format"], tool=data["tool"], origin=data.get("origin", ""),
            options_fingerprint=data.get("options_fingerprint", ""), codec=data.get("codec", ""),
            listing_rejects=data.get("listing_rejects", 0), skipped=data.get("skipped", 0),
            skipped_by_extension=data.get("skipped_by_extension", {}),
            cross_class_links=data.get("cross_class_links", 0), update=data.get("update"))

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        with open(path, encoding="utf-8") as stream:
            try:
                return cls.from_dict(json.load(stream))
            except (ValueError, KeyError, TypeError, AttributeError) as error:  # AttributeError: not a JSON object
                raise ValueError(f"{path}: unreadable manifest: {error}") from None

    def save(self, path: str | Path) -> None:
        with atomic_output(path) as stream:
            stream.write(self.dumps().encode("utf-8"))


def manifest_path(directory: str | Path, name: str) -> Path:
    return Path(directory) / f"{name}{MANIFEST_SUFFIX}"


def find_manifests(directory: str | Path) -> list[Path]:
    """The manifests directly inside ``directory``, sorted by name."""
    return sorted(Path(directory).glob(f"*{MANIFEST_SUFFIX}"))
