"""Helpers for the S3 backup/restore tests: small packed-looking datasets and S3 call recorders."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

from recordio_pack.digest import file_digests
from recordio_pack.manifest import FileRecord, Manifest, ShardRecord, manifest_path

MiB = 1 << 20
PART = 5 * MiB  # the part size the tests configure, so moto sees real multipart uploads

# each .rec spans two 5 MiB parts; the rest go in one PutObject each
SIZES = {"ds-00000-of-00002.rec": PART + 12345, "ds-00000-of-00002.idx": 321,
         "ds-00001-of-00002.rec": PART + 999, "ds-00001-of-00002.idx": 0,
         "ds.lst": 4000, "ds.synsets.txt": 77}
# the same layout without multipart, for tests about something else
SMALL = {"ds-00000-of-00002.rec": 30000, "ds-00000-of-00002.idx": 321, "ds-00001-of-00002.rec": 20000,
         "ds-00001-of-00002.idx": 0, "ds.lst": 4000, "ds.synsets.txt": 77}


def write_dataset(directory: Path, sizes: dict[str, int] | None = None, seed: int = 0,
                  name: str = "ds") -> Manifest:
    """Random files of ``sizes`` (pairs of .rec/.idx become shards, the rest plain files) and the manifest
    vouching for them, saved as ``directory/NAME.manifest.json``."""
    sizes = SIZES if sizes is None else sizes
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for file_name, size in sizes.items():
        (directory / file_name).write_bytes(rng.randbytes(size))
    records = {file_name: FileRecord.of(file_name, file_digests(directory / file_name)) for file_name in sizes}
    recs = sorted(n for n in sizes if n.endswith(".rec"))
    shards = [ShardRecord(i, 10 + i, 0, records[rec], records[rec[:-4] + ".idx"]) for i, rec in enumerate(recs)]
    used = {n for rec in recs for n in (rec, rec[:-4] + ".idx")}
    manifest = Manifest(name=name, fingerprint=f"test-{seed}", options={"seed": seed}, key_convention="position",
                        classes=["a", "b"], label_convention="sorted", shards=shards,
                        files=[records[n] for n in sizes if n not in used])
    manifest.save(manifest_path(directory, name))
    return manifest


def damage(path: Path, offset: int = 100) -> None:
    """Flip one byte in place: same size, other content."""
    with open(path, "r+b") as stream:
        stream.seek(offset)
        byte = stream.read(1)
        stream.seek(offset)
        stream.write(bytes([byte[0] ^ 0xFF]))


class Calls:
    """Records (operation, key) of every S3 call made by clients of a boto3 session."""

    def __init__(self, session: Any) -> None:
        self.calls: list[tuple[str, str | None]] = []
        session.events.register("provide-client-params.s3", self._record)

    def _record(self, params: dict[str, Any], model: Any, **kwargs: Any) -> None:
        self.calls.append((model.name, params.get("Key")))

    def ops(self) -> Counter:
        return Counter(op for op, _ in self.calls)

    def sent_keys(self) -> set[str]:
        """Keys that received object data (PutObject or UploadPart)."""
        return {key for op, key in self.calls if op in ("PutObject", "UploadPart") and key}

    def clear(self) -> None:
        self.calls.clear()
