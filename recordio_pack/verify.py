"""Checking packed shards: framing (RecordIO's escaping, TFRecord's CRC32Cs), index coverage, record sanity
(headers or tf.Example keys), labels, manifest checksums.  Every format-specific step asks the shard's
``RecordFormat`` (``recordio_pack.formats``): the manifest's, or the one the file's first bytes show.

``verify_paths`` takes folders (every manifest inside, else every shard file), manifests, shard files or index
files (`resolve_path` says what each stands for) and returns a report listing each problem precisely (file,
byte offset or line, the record by position and key).  A damaged byte range does not end the check of a file:
the scan resynchronises on the next readable record, reports the range and the records it held, and goes on.
Each `.rec` is read once: framing, the file's SHA-256 and each record's CRC32 come from the same pass.
Repeated problems of one kind show their first `LINES_PER_KIND` lines, then a count.
"""

from __future__ import annotations

import bisect
import math
import re
import zlib
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from recordio_pack.digest import CHUNK, Digests, RunningDigests, file_digests
from recordio_pack.format import Buffer, Damage, Frame
from recordio_pack.formats import FORMATS, IndexLine, RecordFormat, RecordView, detect, format_of, make_format
from recordio_pack.imaging import ImageRejected, check_decodes, sniff
from recordio_pack.index import dataset_index_name
from recordio_pack.manifest import MANIFEST_SUFFIX, FileRecord, Manifest, ShardRecord, find_manifests
from recordio_pack.progress import NullProgress, Progress, Task, start_task
from recordio_pack.recordio import InputError, mapped, require_file

__all__ = ["VerifyReport", "ShardCheck", "DamagedRange", "Target", "BadManifest", "LINES_PER_KIND",
           "check_shard", "verify_paths", "resolve_path", "load_class_map", "load_manifest"]

MAX_LABELS = 1 << 16
LINES_PER_KIND = 10  # lines shown per kind of problem and file before "... and K more"
SNIFF_BYTES = 512
_SHARD_SUFFIX = re.compile(r"-\d{5}-of-\d{5}$")

OnError = Callable[[InputError], None]
T = TypeVar("T")


class BadManifest(InputError):
    """A manifest that cannot be read or parsed; the message names the file."""


# ---------------------------------------------------------------- what a path stands for

@dataclass(frozen=True)
class Target:
    """What one path given to verify or inspect stands for.

    ``kind``: a manifest (all its shards), one `.rec` (with the manifest beside it that lists it, if any), or a
    combined index over ``recs``.  ``classes``: the manifest's class map, else a ``NAME.synsets.txt`` beside.
    """

    kind: Literal["manifest", "rec", "index"]
    path: Path
    manifest: Manifest | None = None
    shard: ShardRecord | None = None  # kind "rec": its entry in ``manifest``
    classes: list[str] | None = None
    recs: tuple[Path, ...] = ()  # kind "index": the shards it covers, in order
    fmt: RecordFormat | None = None  # the shards' format: the manifest's, else told by the file's content

    @property
    def record_format(self) -> RecordFormat:
        return self.fmt if self.fmt is not None else make_format()

    def rec_paths(self) -> list[Path]:
        if self.kind == "manifest":
            assert self.manifest is not None
            return [self.path.parent / shard.rec.name for shard in self.manifest.shards]
        return [self.path] if self.kind == "rec" else list(self.recs)


def load_manifest(path: str | Path) -> Manifest:
    """`Manifest.load` with every failure as BadManifest naming the file."""
    try:
        return Manifest.load(path)
    except ValueError as error:
        raise BadManifest(str(error)) from None
    except OSError as error:
        raise BadManifest(f"{path}: cannot read the manifest: {error.strerror or error}") from None


def load_class_map(path: str | Path) -> list[str]:
    """A ``label<TAB>name`` class map; NoSuchFile or InputError naming the file (and line) otherwise."""
    from recordio_pack.listing import read_class_map

    path = require_file(path)
    try:
        return read_class_map(path)
    except (ValueError, UnicodeDecodeError) as error:
        text = str(error)
        raise InputError(text if text.startswith(str(path)) else f"{path}: {text}") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read the class map: {error.strerror or error}") from None


def resolve_path(raw: str | Path, on_error: OnError | None = None) -> list[Target]:
    """What ``raw`` stands for: a folder (its manifests, else its `.rec` files), a manifest, a `.rec`, or an
    `.idx` (told by its content, whatever its name: a shard's index stands for its `.rec`, another for the
    shards beside it).  NoSuchFile, BadManifest or InputError say why not.  ``on_error``: called with a bad
    manifest among several (in a folder, or beside a `.rec`) to go on without it; by default it is raised."""
    path = Path(raw)
    if path.is_dir():
        manifests = find_manifests(path)
        if manifests:
            return [target for manifest in manifests for target in _guarded(_manifest_target, manifest, on_error)]
        recs = sorted(set(path.glob("*.rec")) | {file for file in path.iterdir() if _is_tfrecord(file)})
        if not recs:
            raise InputError(f"{path}: no manifest or shard (.rec, TFRecord) to read")
        return [_rec_target(rec, on_error) for rec in recs]
    require_file(path)
    if path.name.endswith(MANIFEST_SUFFIX):
        return [_manifest_target(path)]
    index_format = _index_format(path)
    if index_format is not None:
        return [_index_target(path, index_format, on_error)]
    return [_rec_target(path, on_error)]


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as stream:
            return stream.read(SNIFF_BYTES)
    except OSError as error:
        raise InputError(f"{path}: cannot read: {error.strerror or error}") from None


def _is_tfrecord(path: Path) -> bool:
    if not path.is_file() or path.suffix in (".rec", ".idx", ".json", ".txt", ".tsv", ".lst", ".png", ".tmp"):
        return False
    found = detect(_head(path))
    return found is not None and found.name == "tfrecord"


def _content_format(path: Path) -> RecordFormat:
    """The format a shard file's first bytes show; RecordIO (whose checks then name the damage) otherwise."""
    return detect(_head(path)) or make_format()


def _guarded(load: Callable[[Path], T], path: Path, on_error: OnError | None) -> list[T]:
    """``[load(path)]``, or ``[]`` after passing its BadManifest to ``on_error`` (raised without one)."""
    try:
        return [load(path)]
    except BadManifest as error:
        if on_error is None:
            raise
        on_error(error)
        return []


def _manifest_target(path: Path) -> Target:
    manifest = load_manifest(path)
    return Target("manifest", path, manifest, classes=manifest.classes, fmt=_manifest_format(manifest, path))


def _manifest_format(manifest: Manifest, path: Path) -> RecordFormat:
    try:
        return format_of(manifest.options)
    except ValueError as error:
        raise BadManifest(f"{path}: {error}") from None


def _index_format(path: Path) -> RecordFormat | None:
    """The format whose index ``path`` is, by content (an empty `.idx` is RecordIO's), or None."""
    head = _head(path)
    if not head:
        return make_format() if path.suffix == ".idx" else None
    for name in FORMATS:
        candidate = make_format(name)
        if candidate.looks_like_index(head):
            return candidate
    return None


def _dataset_stem(name: str) -> str:
    """``NAME`` of ``NAME-00003-of-00016`` or ``NAME``."""
    return _SHARD_SUFFIX.sub("", name)


def _rec_target(rec: Path, on_error: OnError | None = None) -> Target:
    for manifest_file in find_manifests(rec.parent):
        for manifest in _guarded(load_manifest, manifest_file, on_error):
            shard = next((shard for shard in manifest.shards if (rec.parent / shard.rec.name) == rec), None)
            if shard is not None:
                return Target("rec", rec, manifest, shard, manifest.classes, fmt=_manifest_format(manifest, rec))
    for manifest_file in find_manifests(rec.parent.parent.parent):  # a TFDS shard: OUTDIR/imagenet2012/5.1.0/
        for manifest in _guarded(load_manifest, manifest_file, on_error):
            shard = next((shard for shard in manifest.shards
                          if (manifest_file.parent / shard.rec.name).resolve() == rec.resolve()), None)
            if shard is not None:
                return Target("rec", rec, manifest, shard, manifest.classes, fmt=_manifest_format(manifest, rec))
    stem = rec.stem if rec.suffix == ".rec" else rec.name
    return Target("rec", rec, classes=_class_map_beside(rec.parent, _dataset_stem(stem)), fmt=_content_format(rec))


def _class_map_beside(folder: Path, stem: str) -> list[str] | None:
    for candidate in (folder / f"{stem}.synsets.txt", folder / "synsets.txt"):
        if candidate.is_file():
            return load_class_map(candidate)
    return None


def _index_target(idx: Path, fmt: RecordFormat, on_error: OnError | None = None) -> Target:
    rec = fmt.data_beside(idx)
    if rec.is_file():
        return _rec_target(rec, on_error)
    if fmt.name != "recordio":
        raise InputError(f"{idx}: a {fmt.title} index, and its shard {rec} is not there")
    stem = idx.name.removesuffix(".idx").removesuffix(".all")
    manifest_file = idx.parent / f"{stem}{MANIFEST_SUFFIX}"
    if manifest_file.is_file():
        manifest = load_manifest(manifest_file)
        recs = tuple(idx.parent / shard.rec.name for shard in manifest.shards)
        return Target("index", idx, manifest, classes=manifest.classes, recs=recs)
    recs = tuple(sorted(idx.parent.glob(f"{stem}-?????-of-?????.rec")) or
                 ([idx.parent / f"{stem}.rec"] if (idx.parent / f"{stem}.rec").is_file() else []))
    if not recs:
        raise InputError(f"{idx}: an index (key<TAB>offset lines), not a .rec, and no shards beside it "
                         f"({stem}{MANIFEST_SUFFIX} or {stem}-*.rec) to check it against")
    return Target("index", idx, classes=_class_map_beside(idx.parent, stem), recs=recs)


# ---------------------------------------------------------------- results

@dataclass(frozen=True)
class DamagedRange:
    """Bytes ``start..end`` of a `.rec` that hold no readable record, and the records the `.idx` puts there."""

    start: int
    end: int
    error: str
    records: tuple[str, ...]  # "record #position (key K, byte N)" per record hit; empty without an .idx

    def as_dict(self) -> dict[str, object]:
        return {"start": self.start, "end": self.end, "error": self.error, "records": list(self.records)}


@dataclass
class ShardCheck:
    rec: str
    records: int = 0
    bytes: int = 0
    labels: dict[float, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    damage: list[DamagedRange] = field(default_factory=list)
    problem_count: int = 0  # every problem found, the ones beyond the shown lines included
    starts: list[int] = field(default_factory=list, repr=False)  # offset of every readable record
    sizes: list[int] = field(default_factory=list, repr=False)  # its framed bytes
    digests: Digests | None = field(default=None, repr=False)  # of the .rec, from the framing scan

    def as_dict(self) -> dict[str, object]:
        return {"rec": self.rec, "records": self.records, "bytes": self.bytes, "problems": self.problems,
                "problem_count": self.problem_count, "damaged": [damage.as_dict() for damage in self.damage]}


@dataclass
class VerifyReport:
    shards: list[ShardCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # every problem line, shard ones included
    problem_count: int = 0  # every problem found (repeated ones are shown as "... and K more" lines)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def records(self) -> int:
        return sum(shard.records for shard in self.shards)

    def add(self, check: ShardCheck) -> None:
        self.shards.append(check)
        self.problems.extend(check.problems)
        self.problem_count += check.problem_count or len(check.problems)

    def problem(self, text: str, count: int = 1) -> None:
        """A problem of no single shard (a path, a manifest, a listed file, a combined index)."""
        self.problems.append(text)
        self.problem_count += count

    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "records": self.records, "shards": len(self.shards), "problems": self.problems,
                "problem_count": self.problem_count, "files": [shard.as_dict() for shard in self.shards]}


class ProblemLog:
    """The problems of one file: each kind shows its first ``limit`` lines, then one "... and K more" line."""

    def __init__(self, lines: list[str], limit: int = LINES_PER_KIND) -> None:
        self.lines = lines
        self.limit = limit
        self._seen: dict[str, int] = {}
        self._where: dict[str, str] = {}
        self._last: dict[str, int] = {}

    def add(self, kind: str, where: str, text: str) -> None:
        """``text``: the whole line; ``where``: the file name the "... and K more ``kind``" line starts with."""
        seen = self._seen[kind] = self._seen.get(kind, 0) + 1
        if seen <= self.limit:
            self.lines.append(text)
            self._where[kind] = where
            self._last[kind] = len(self.lines)

    @property
    def count(self) -> int:
        return sum(self._seen.values())

    def close(self) -> None:
        for kind, last in sorted(self._last.items(), key=lambda item: -item[1]):
            extra = self._seen[kind] - self.limit
            if extra > 0:
                self.lines.insert(last, f"{self._where[kind]}: ... and {extra} more {kind}")


class RecordLocator:
    """Names records by their write position and key, from the `.idx` when there is one."""

    def __init__(self, pairs: list[tuple[int, int]] | None) -> None:
        self.indexed = pairs is not None
        self._by_offset = {offset: (line, key) for line, (key, offset) in enumerate(pairs or [])}
        ordered = sorted(self._by_offset.items())
        self._offsets = [offset for offset, _ in ordered]
        self._entries = [entry for _, entry in ordered]

    def position(self, offset: int, fallback: int) -> int:
        return self._by_offset.get(offset, (fallback, None))[0]

    def knows(self, offset: int) -> bool:
        return offset in self._by_offset

    def describe(self, position: int, offset: int) -> str:
        key = self._by_offset.get(offset, (None, None))[1]
        return f"record #{position} ({'' if key is None else f'key {key}, '}byte {offset})"

    def records_in(self, start: int, end: int) -> list[str]:
        """The indexed records whose extent (up to the next indexed offset) overlaps bytes ``start..end``."""
        first = max(bisect.bisect_right(self._offsets, start) - 1, 0)
        stop = bisect.bisect_left(self._offsets, end)
        return [f"record #{line} (key {key}, byte {offset})"
                for offset, (line, key) in zip(self._offsets[first:stop], self._entries[first:stop])]


# ---------------------------------------------------------------- one shard

def _check_header(where: str, view: RecordView, classes: Sequence[str] | None,
                  decode: bool, log: ProblemLog, name: str) -> None:
    if len(view.labels) > MAX_LABELS:
        log.add("implausible label counts", name, f"{where}: implausible label count {len(view.labels)}")
    base = view.label_base
    for label in view.labels:
        if not math.isfinite(label):
            log.add("non-finite labels", name, f"{where}: label {label} is not a finite number")
        elif classes is not None and (label != int(label) or not 0 <= label - base < len(classes)):
            log.add("labels outside the class map", name,
                    f"{where}: label {label:g} is outside the class map ({base}..{len(classes) - 1 + base})")
    image = view.image
    kind = sniff(bytes(image[:32]))  # BMP needs 26 bytes to be told apart
    if kind not in ("jpeg", "png", "bmp"):
        log.add("payloads that are not images", name,
                f"{where}: payload is not an encoded image (starts with {bytes(image[:8])!r})")
    elif decode:
        try:
            check_decodes(bytes(image))
        except ImageRejected as rejected:  # fails to decode, or the decoder reported damage on the way
            log.add("images that do not decode", name, f"{where}: the {kind} image: {rejected.reason}")


def _read_index(idx: Path | None, rec: Path, log: ProblemLog, fmt: RecordFormat) -> list[IndexLine] | None:
    if idx is None:
        return None
    if not idx.exists():
        log.add("index problems", idx.name, f"{idx.name}: missing (rebuild it with `recordio-pack index {rec}`)")
        return None
    try:
        return fmt.read_index(idx)
    except (ValueError, UnicodeDecodeError) as error:
        log.add("index problems", idx.name, f"{idx.name}: {error}")
        return None


def _listed_crcs(listed: ShardRecord | None, log: ProblemLog, name: str) -> array | None:
    if listed is None:
        return None
    try:
        return listed.record_crc32s()
    except ValueError as error:
        log.add("manifest problems", name, f"{name}: the manifest's record checksums are unusable: {error}")
        return None


@dataclass
class _Scan:
    """State of one pass over a `.rec`: where the next record is expected in write order."""

    name: str
    size: int
    locator: RecordLocator
    crcs: array | None
    log: ProblemLog
    fmt: RecordFormat
    position: int = 0
    after_damage: bool = False

    def place(self, record: Frame, crc: int) -> str:
        """The record's write position (from the .idx, the running count, or after damage its CRC32 in the
        manifest); logs a CRC32 mismatch; returns how to name the record."""
        position = self.locator.position(record.start, self.position)
        matched = self.crcs is None or (position < len(self.crcs) and self.crcs[position] == crc)
        if not matched and self.after_damage and not self.locator.knows(record.start):
            try:
                position, matched = self.crcs.index(crc, self.position), True  # type: ignore[union-attr]
            except ValueError:
                pass
        self.position, self.after_damage = position + 1, False
        where = f"{self.name}: {self.locator.describe(position, record.start)}"
        if not matched:
            self.log.add("records whose CRC32 differs from the manifest", self.name,
                         f"{where}: CRC32 differs from the manifest (the record's bytes changed)")
        return where

    def damaged(self, damage: Damage) -> DamagedRange:
        hit = self.locator.records_in(damage.start, damage.end)
        if hit:
            held = "it held " + ", ".join(hit[:5]) + (f" and {len(hit) - 5} more" if len(hit) > 5 else "")
        else:
            held = "no .idx to name the records it held" if not self.locator.indexed else "no indexed record there"
        after = "resynchronised at the next record" if damage.end < self.size else "up to the end of the file"
        self.log.add("damaged byte ranges", self.name, f"{self.name}: {damage.describe()}; {held}; {after}")
        self.after_damage = True
        return DamagedRange(damage.start, damage.end, str(damage.error), tuple(hit))


def _feed(running: RunningDigests, data: Buffer, start: int, end: int) -> None:
    for chunk in range(start, end, CHUNK):
        running.update(data[chunk:min(chunk + CHUNK, end)])


def _scan_rec(rec: Path, check: ShardCheck, scan: _Scan, classes: Sequence[str] | None, decode: bool,
              records: Task | None) -> None:
    """One pass over ``rec``: framing with resynchronisation, the file digests, CRC32s and header checks."""
    running = RunningDigests()
    with mapped(rec) as data:
        check.bytes = scan.size = len(data)
        for item in scan.fmt.scan(data):
            if isinstance(item, Damage):
                _feed(running, data, item.start, item.end)
                check.damage.append(scan.damaged(item))
                continue
            raw = data[item.start:item.end]
            running.update(raw)
            where = scan.place(item, zlib.crc32(raw))
            check.starts.append(item.start)
            check.sizes.append(item.end - item.start)
            _check_record(where, item, data, classes, decode, scan, check)
            if records is not None:
                records.advance(1)
    check.records = len(check.starts)
    check.digests = running.digests()


def _check_record(where: str, record: Frame, data: Buffer, classes: Sequence[str] | None, decode: bool,
                  scan: _Scan, check: ShardCheck) -> None:
    log, name = scan.log, scan.name
    for kind, text in scan.fmt.framing_problems(data, record):
        log.add(kind, name, f"{name}: {text}")
    try:
        view = scan.fmt.decode(record.payload)
    except ValueError as error:
        log.add("records with a bad header", name, f"{where}: {error}")
        return
    for problem in scan.fmt.required_problems(view):
        log.add("records without a required feature", name, f"{where}: {problem}")
    for label in view.labels[:1]:
        check.labels[label] = check.labels.get(label, 0) + 1
    _check_header(where, view, classes, decode, log, name)


def _check_index(name: str, pairs: Sequence[IndexLine], starts: dict[int, int], damage: Sequence[DamagedRange],
                 log: ProblemLog) -> None:
    """Every index line names a record start (lines pointing into damaged bytes are the damage's, said once
    there), with the record's size when the index holds sizes, keys are unique, and every readable record is
    indexed.  ``starts``: each readable record's offset and framed size."""
    damaged = sorted((item.start, item.end) for item in damage)
    seen_keys: set[int] = set()
    for line, entry in enumerate(pairs, 1):
        key, offset = entry.key, entry.offset
        if key in seen_keys:
            log.add("duplicate keys", name, f"{name}:{line}: duplicate key {key}")
        seen_keys.add(key)
        if offset not in starts and not _inside(damaged, offset):
            log.add("index lines not at a record start", name,
                    f"{name}:{line}: offset {offset} of key {key} is not the start of a record")
        elif entry.size is not None and offset in starts and starts[offset] != entry.size:
            log.add("index lines with a wrong size", name,
                    f"{name}:{line}: size {entry.size} at offset {offset}, the record there has {starts[offset]}")
    indexed = {entry.offset for entry in pairs}
    missing = sorted(set(starts) - indexed)
    if missing:
        log.add("index problems", name, f"{name}: {len(missing)} record(s) not in the index, first at byte {missing[0]}")
    if len(pairs) != len(indexed):
        log.add("index problems", name, f"{name}: {len(pairs) - len(indexed)} offset(s) listed more than once")


def _inside(ranges: list[tuple[int, int]], offset: int) -> bool:
    at = bisect.bisect_right(ranges, (offset, float("inf"))) - 1
    return at >= 0 and ranges[at][0] <= offset < ranges[at][1]


def _compare_listed(rec: Path, idx: Path | None, listed: ShardRecord, check: ShardCheck, has_crcs: bool,
                    log: ProblemLog) -> None:
    """The shard against its manifest entry: record count, the `.rec`'s size and SHA-256, the `.idx`'s."""
    name = rec.name
    if check.records != listed.records:
        lost = f" ({listed.records - check.records} lost in damaged bytes)" if check.damage else ""
        log.add("manifest problems", name,
                f"{name}: {check.records} readable records, the manifest says {listed.records}{lost}")
    digests = check.digests
    assert digests is not None
    if digests.size != listed.rec.bytes:
        log.add("manifest problems", name, f"{name}: {digests.size} bytes, the manifest says {listed.rec.bytes}")
    elif digests.sha256 != listed.rec.sha256:
        why = "" if has_crcs else "; this manifest has no per-record checksums to say which record"
        log.add("manifest problems", name, f"{name}: SHA-256 differs from the manifest (the file changed{why})")
    if idx is not None and idx.exists():
        problem = _file_problem(idx, listed.idx)
        if problem:
            log.add("manifest problems", idx.name, problem)


def _file_problem(file: Path, record: FileRecord) -> str | None:
    size = file.stat().st_size
    if size != record.bytes:
        return f"{record.name}: {size} bytes, the manifest says {record.bytes}"
    if file_digests(file).sha256 != record.sha256:
        return f"{record.name}: SHA-256 differs from the manifest (the file changed)"
    return None


def check_shard(rec: Path, idx: Path | None, classes: Sequence[str] | None = None, decode: bool = False,
                records: Task | None = None, listed: ShardRecord | None = None,
                fmt: RecordFormat | None = None) -> ShardCheck:
    """Scan one shard file (and its index when given; a missing one is a problem) and collect every problem
    found.  ``listed``: the shard's manifest entry, to check sizes, checksums and, when it has them, each
    record's CRC32 (naming the record that changed).  ``fmt``: the shard's format (default: told by its first
    bytes)."""
    fmt = fmt if fmt is not None else _content_format(rec)
    check = ShardCheck(str(rec))
    log = ProblemLog(check.problems)
    pairs = _read_index(idx, rec, log, fmt)
    crcs = _listed_crcs(listed, log, rec.name)
    locator = RecordLocator([(entry.key, entry.offset) for entry in pairs] if pairs is not None else None)
    scan = _Scan(rec.name, 0, locator, crcs, log, fmt)
    _scan_rec(rec, check, scan, classes, decode, records)
    if pairs is not None and idx is not None:
        _check_index(idx.name, pairs, dict(zip(check.starts, check.sizes)), check.damage, log)
    if listed is not None:
        _compare_listed(rec, idx, listed, check, crcs is not None, log)
    log.close()
    check.problem_count = log.count
    return check


# ---------------------------------------------------------------- targets

def _check_listed_shard(folder: Path, shard: ShardRecord, classes: Sequence[str] | None, decode: bool,
                        records: Task | None, manifest_name: str, fmt: RecordFormat) -> ShardCheck:
    rec = folder / shard.rec.name
    if not rec.exists():
        return ShardCheck(str(rec), problems=[f"{shard.rec.name}: missing (listed in {manifest_name})"])
    return check_shard(rec, folder / shard.idx.name, classes, decode, records, shard, fmt)


def _verify_manifest(target: Target, decode: bool, classes: Sequence[str] | None, report: VerifyReport,
                     records: Task | None) -> None:
    manifest = target.manifest
    assert manifest is not None
    folder = target.path.parent
    fmt = target.record_format
    from concurrent.futures import ThreadPoolExecutor

    from recordio_pack.options import default_workers

    # shards on threads: hashing, CRC32 and the magic scans run outside the GIL, so cores share the work
    with ThreadPoolExecutor(max(1, min(8, default_workers(), len(manifest.shards)))) as pool:
        checks = list(pool.map(lambda shard: _check_listed_shard(folder, shard, classes or manifest.classes, decode,
                                                                 records, target.path.name, fmt), manifest.shards))
    for check in checks:
        report.add(check)
    for text in fmt.check_dataset(folder, manifest.name, [([record.name for record in shard.files], shard.records)
                                                          for shard in manifest.shards]):
        report.problem(text)
    combined = folder / dataset_index_name(manifest.name)
    if any(record.name == combined.name for record in manifest.files) and combined.exists() and \
            all(Path(check.rec).exists() for check in checks):
        _check_combined(combined, checks, report)
    for record in manifest.files:
        file = folder / record.name
        problem = f"{record.name}: missing (listed in {target.path.name})" if not file.exists() else \
            _file_problem(file, record)
        if problem:
            report.problem(problem)


def _verify_rec(target: Target, decode: bool, classes: Sequence[str] | None, report: VerifyReport,
                records: Task | None) -> None:
    rec = target.path
    if target.shard is not None:
        assert target.manifest is not None
        folder = target.path.parent if (target.path.parent / target.shard.rec.name) == rec else \
            rec.parent.parent.parent  # a TFDS shard, listed from OUTDIR
        report.add(check_shard(rec, folder / target.shard.idx.name, classes or target.classes, decode,
                               records, target.shard, target.record_format))
        return
    fmt = target.record_format
    idx = fmt.index_beside(rec)
    report.add(check_shard(rec, idx if idx.exists() else None, classes or target.classes, decode, records,
                           fmt=fmt))


def _verify_combined_index(target: Target, decode: bool, classes: Sequence[str] | None, report: VerifyReport,
                           records: Task | None) -> None:
    """Check each shard the index covers, then the index: offsets counted across the shards in order."""
    listed = {shard.rec.name: shard for shard in target.manifest.shards} if target.manifest else {}
    checks: list[ShardCheck] = []
    for rec in target.recs:
        shard = listed.get(rec.name)
        if not rec.exists():
            report.problem(f"{rec.name}: missing (covered by {target.path.name})")
            return
        idx = rec.parent / shard.idx.name if shard else rec.with_suffix(".idx")
        check = check_shard(rec, idx if shard or idx.exists() else None, classes or target.classes, decode,
                            records, shard, target.fmt)
        report.add(check)
        checks.append(check)
    _check_combined(target.path, checks, report)


def _check_combined(index: Path, checks: Sequence[ShardCheck], report: VerifyReport) -> None:
    """``index`` against the shards ``checks`` were made of, in order: every line at a record start, offsets
    counted across the shards (each shard's size added to the ones after it), every record indexed once."""
    starts: dict[int, int] = {}
    damage: list[DamagedRange] = []
    base = 0
    for check in checks:
        starts.update((base + start, size) for start, size in zip(check.starts, check.sizes))
        damage.extend(DamagedRange(base + item.start, base + item.end, item.error, ()) for item in check.damage)
        base += check.bytes
    problems: list[str] = []
    log = ProblemLog(problems)
    pairs = _read_index(index, index, log, make_format())
    if pairs is not None:
        _check_index(index.name, pairs, starts, damage, log)
    log.close()
    report.problems.extend(problems)
    report.problem_count += log.count


_VERIFIERS = {"manifest": _verify_manifest, "rec": _verify_rec, "index": _verify_combined_index}


def verify_paths(paths: Sequence[str | Path], decode: bool = False, classes: Sequence[str] | None = None,
                 progress: Progress | None = None) -> VerifyReport:
    """Verify folders, manifests, `.rec` and `.idx` files (see `resolve_path`).  ``classes`` (label -> name)
    replaces the class map of every target when given.  ``progress``: a task "verify" in records (total not
    known), advanced by 1 per record read."""
    records = start_task(progress or NullProgress(), "verify", "records")
    report = VerifyReport()
    for raw in paths:
        try:
            targets = resolve_path(raw, on_error=lambda error: report.problem(str(error)))
        except InputError as error:
            report.problem(str(error))
            continue
        for target in targets:
            _VERIFIERS[target.kind](target, decode, classes, report, records)
    return report
