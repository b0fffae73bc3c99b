"""Checking packed shards: framing and escaping, `.idx` coverage, header sanity, labels, manifest checksums.

``verify_paths`` takes folders (every manifest inside, else every `.rec`), manifests or `.rec` files and
returns a report listing each problem precisely (file, byte offset or line).  It never stops at the first
problem of a dataset, only at the first framing error of a file (past it nothing can be trusted).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from recordio_pack.digest import file_digests
from recordio_pack.format import FramingError, IRHeader, unescaped_magics, unpack_payload
from recordio_pack.imaging import sniff
from recordio_pack.manifest import MANIFEST_SUFFIX, Manifest, find_manifests
from recordio_pack.recordio import iter_records, mapped, read_idx

__all__ = ["VerifyReport", "ShardCheck", "check_shard", "verify_paths"]

MAX_LABELS = 1 << 16


@dataclass
class ShardCheck:
    rec: str
    records: int = 0
    bytes: int = 0
    labels: dict[float, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


@dataclass
class VerifyReport:
    shards: list[ShardCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # every problem, shard ones included

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def records(self) -> int:
        return sum(shard.records for shard in self.shards)

    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "records": self.records, "shards": len(self.shards), "problems": self.problems,
                "files": [{"rec": shard.rec, "records": shard.records, "bytes": shard.bytes,
                           "problems": shard.problems} for shard in self.shards]}


def _check_header(name: str, offset: int, header: IRHeader, image: memoryview, classes: Sequence[str] | None,
                  decode: bool, problems: list[str]) -> None:
    where = f"{name}: record at byte {offset}"
    if header.vector and len(header.labels) > MAX_LABELS:
        problems.append(f"{where}: implausible label count {len(header.labels)}")
    for label in header.labels:
        if not math.isfinite(label):
            problems.append(f"{where}: label {label} is not a finite number")
        elif classes is not None and (label != int(label) or not 0 <= label < len(classes)):
            problems.append(f"{where}: label {label:g} is outside the class map (0..{len(classes) - 1})")
    kind = sniff(bytes(image[:16]))
    if kind not in ("jpeg", "png", "bmp"):
        problems.append(f"{where}: payload is not an encoded image (starts with {bytes(image[:8])!r})")
    elif decode:
        import cv2
        import numpy as np

        if cv2.imdecode(np.frombuffer(image, dtype=np.uint8), cv2.IMREAD_UNCHANGED) is None:
            problems.append(f"{where}: the {kind} image does not decode")


def check_shard(rec: Path, idx: Path | None, classes: Sequence[str] | None = None, decode: bool = False,
                on_record: Callable[[int], None] | None = None) -> ShardCheck:
    """Scan one `.rec` (and its `.idx` when given) and collect every problem found."""
    check = ShardCheck(str(rec))
    problems = check.problems
    offsets: list[int] = []
    with mapped(rec) as data:
        check.bytes = len(data)
        try:
            for offset, payload in iter_records(data):
                offsets.append(offset)
                try:
                    header, image = unpack_payload(payload)
                except ValueError as error:
                    problems.append(f"{rec.name}: record at byte {offset}: {error}")
                    continue
                for label in header.labels[:1]:
                    check.labels[label] = check.labels.get(label, 0) + 1
                _check_header(rec.name, offset, header, image, classes, decode, problems)
                if on_record:
                    on_record(1)
        except FramingError as error:
            problems.append(f"{rec.name}: {error} (the file is damaged or truncated from here on)")
        for position in unescaped_magics(data)[:10]:
            problems.append(f"{rec.name}: unescaped magic inside a record at byte {position} (readers that "
                            "resynchronise on the magic, such as DALI, would split the record there)")
    check.records = len(offsets)
    if idx is None:
        return check
    if not idx.exists():
        problems.append(f"{idx.name}: missing (rebuild it with `recordio-pack index {rec}`)")
        return check
    try:
        pairs = read_idx(idx)
    except (ValueError, UnicodeDecodeError) as error:
        problems.append(f"{idx.name}: {error}")
        return check
    starts = set(offsets)
    seen_keys: set[int] = set()
    for line, (key, offset) in enumerate(pairs, 1):
        if key in seen_keys:
            problems.append(f"{idx.name}:{line}: duplicate key {key}")
        seen_keys.add(key)
        if offset not in starts:
            problems.append(f"{idx.name}:{line}: offset {offset} of key {key} is not the start of a record")
    indexed = {offset for _, offset in pairs}
    missing = [offset for offset in offsets if offset not in indexed]
    if missing:
        problems.append(f"{idx.name}: {len(missing)} record(s) not in the index, first at byte {missing[0]}")
    if len(pairs) != len(indexed):
        problems.append(f"{idx.name}: {len(pairs) - len(indexed)} offset(s) listed more than once")
    return check


def _verify_manifest(path: Path, decode: bool, report: VerifyReport, on_record: Callable[[int], None] | None) -> None:
    try:
        manifest = Manifest.load(path)
    except (OSError, ValueError) as error:
        report.problems.append(str(error))
        return
    folder = path.parent
    for record in manifest.data_files():
        file = folder / record.name
        if not file.exists():
            report.problems.append(f"{record.name}: missing (listed in {path.name})")
        elif file.stat().st_size != record.bytes:
            report.problems.append(f"{record.name}: {file.stat().st_size} bytes, the manifest says {record.bytes}")
        elif file_digests(file).sha256 != record.sha256:
            report.problems.append(f"{record.name}: SHA-256 differs from the manifest (the file changed)")
    for shard in manifest.shards:
        rec = folder / shard.rec.name
        if not rec.exists():
            continue
        check = check_shard(rec, folder / shard.idx.name, manifest.classes, decode, on_record)
        if check.records != shard.records and not check.problems:
            check.problems.append(f"{rec.name}: {check.records} records, the manifest says {shard.records}")
        report.shards.append(check)
        report.problems.extend(check.problems)


def verify_paths(paths: Sequence[str | Path], decode: bool = False, classes: Sequence[str] | None = None,
                 on_record: Callable[[int], None] | None = None) -> VerifyReport:
    """Verify folders, manifests and `.rec` files (a `.rec`'s `.idx` is the file beside it, if any)."""
    report = VerifyReport()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            manifests = find_manifests(path)
            targets = manifests or sorted(path.glob("*.rec"))
            if not targets:
                report.problems.append(f"{path}: no manifest or .rec file to verify")
            for target in targets:
                _verify_one(target, decode, classes, report, on_record)
        elif path.exists():
            _verify_one(path, decode, classes, report, on_record)
        else:
            report.problems.append(f"{path}: no such file or folder")
    return report


def _verify_one(path: Path, decode: bool, classes: Sequence[str] | None, report: VerifyReport,
                on_record: Callable[[int], None] | None) -> None:
    if path.name.endswith(MANIFEST_SUFFIX):
        _verify_manifest(path, decode, report, on_record)
        return
    idx = path.with_suffix(".idx")
    check = check_shard(path, idx if idx.exists() else None, classes, decode, on_record)
    report.shards.append(check)
    report.problems.extend(check.problems)
