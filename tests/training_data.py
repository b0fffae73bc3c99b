"""A small packed dataset for the reader, torch and DALI tests: real JPEGs in class folders, some carrying the
RecordIO magic in a JPEG comment so that their records need escaping, packed as they are into several shards."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from environments import interpreter
from imagegen import jpeg
from recordio_pack.format import MAGIC_BYTES, frame, unpack_payload
from recordio_pack.listing import ordered_entries, scan_tree
from recordio_pack.manifest import Manifest
from recordio_pack.options import PackOptions
from recordio_pack.pack import pack_entries
from recordio_pack.recordio import iter_records, mapped
from recordio_pack.sources import FolderSource

# The magic at four offsets of different residues mod 4: one of them lies on an aligned payload word
# whatever the comment's position, so the record must be split there.
MAGIC_COMMENT = MAGIC_BYTES + b"\0" + MAGIC_BYTES + b"\0\0" + MAGIC_BYTES + b"\0\0\0" + MAGIC_BYTES


def with_magic(image: bytes) -> bytes:
    """``image`` (a JPEG) with a COM segment holding `MAGIC_COMMENT` right after its SOI marker."""
    body = MAGIC_COMMENT * 2
    return image[:2] + b"\xff\xfe" + struct.pack(">H", len(body) + 2) + body + image[2:]


def image_tree(root: Path, classes: int = 3, per_class: int = 8, every_magic: int = 3) -> Path:
    """``root/nXXXXXXXX/img_N.jpg``: small photos of varied sizes; every ``every_magic``-th carries the magic."""
    for label in range(classes):
        folder = root / f"n{label:08d}"
        folder.mkdir(parents=True)
        for number in range(per_class):
            seed = label * 1000 + number
            data = jpeg(40 + 8 * (seed % 5), 32 + 4 * (seed % 3), seed=seed)
            if number % every_magic == 0:
                data = with_magic(data)
            (folder / f"img_{number}.jpg").write_bytes(data)
    return root


@dataclass(frozen=True)
class Packed:
    out: Path
    name: str
    manifest: Manifest
    recs: list[Path]
    payloads: list[bytes]  # every record's payload, in shard order
    labels: list[float]

    @property
    def manifest_path(self) -> Path:
        return self.out / f"{self.name}.manifest.json"

    def escaped(self) -> list[int]:
        """Positions of the records whose framing needed magic escaping."""
        return [number for number, payload in enumerate(self.payloads) if frame(payload).count(MAGIC_BYTES) > 1]


def pack_tree(root: Path, out: Path, name: str = "data", num_shards: int = 3, **options: object) -> Packed:
    listing = scan_tree(root)
    pack_entries(ordered_entries(listing.entries), FolderSource(str(root)), out, name,
                 PackOptions(num_shards=num_shards, reencode="never", workers=1, **options),  # type: ignore[arg-type]
                 classes=listing.classes, label_convention="sorted")
    manifest = Manifest.load(out / f"{name}.manifest.json")
    recs = [out / shard.rec.name for shard in manifest.shards]
    payloads: list[bytes] = []
    for rec in recs:
        with mapped(rec) as data:
            payloads.extend(payload for _, payload in iter_records(data))
    labels = [unpack_payload(payload)[0].label for payload in payloads]
    return Packed(out, name, manifest, recs, payloads, labels)


# ---------------------------------------------------------------- the training environment (.venv-train)

TRAIN_ENV = "RECORDIO_PACK_TRAIN_PYTHON"
REPO = Path(__file__).resolve().parents[1]


def find_train_python() -> str:
    """The interpreter of the training environment (torch and NVIDIA DALI, built by `make test` as .venv-train).
    `make test` sets RECORDIO_PACK_TRAIN_PYTHON and RECORDIO_PACK_REQUIRE_ORACLE=1, so a missing one fails
    there, as the mxnet oracle does; elsewhere these tests skip."""
    return interpreter(TRAIN_ENV, ".venv-train", "training environment (torch, DALI)")


def run_train(python: str, script: str | Path, *args: str, cwd: Path | None = None, timeout: float = 600) -> str:
    """Run ``script`` (Python source, or a file: what torch.multiprocessing's spawn needs) with the training
    interpreter, recordio_pack importable from this checkout; return its stdout, fail with its stderr."""
    import os
    import subprocess
    import textwrap

    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    command = [python, str(script)] if isinstance(script, Path) else [python, "-c", textwrap.dedent(script)]
    completed = subprocess.run([*command, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    if completed.returncode != 0:
        raise AssertionError(f"training env script failed ({completed.returncode}):\n{completed.stderr[-4000:]}")
    return completed.stdout
