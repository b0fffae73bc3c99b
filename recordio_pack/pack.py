"""Packing a list of images into RecordIO shards: plan, resume, run workers, write rejects and the manifest.

The list is cut into contiguous shards (``plan_shards``); each shard is packed by one worker
(``recordio_pack.shard.pack_shard``).  A journal, ``NAME.pack-state.json``, records each finished shard so a
killed run resumes where it stopped; the manifest is written last, and the journal removed, when all are done.
"""

from __future__ import annotations

import hashlib
import json
import os
from array import array
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from recordio_pack.digest import file_digests
from recordio_pack.errors import RecordioPackError, RefusedError
from recordio_pack.listing import LstIndex, write_class_map, write_lst
from recordio_pack.manifest import FileRecord, Manifest, ShardRecord, manifest_path
from recordio_pack.options import DEFAULT_SHARD_SIZE, PackOptions
from recordio_pack.pool import TaskFailed, WorkerDied, run_tasks
from recordio_pack.recordio import atomic_output
from recordio_pack.shard import ImageFailed, ShardProgress, ShardResult, ShardTask, pack_shard, shard_names
from recordio_pack.sources import Entry, ImageSource

__all__ = ["PackResult", "PackEvent", "plan_shards", "entries_digest", "pack_entries"]

JOURNAL_SUFFIX = ".pack-state.json"


@dataclass(frozen=True)
class PackEvent:
    """Progress for renderers: ``kind`` is "plan" (totals), "progress" (deltas) or "shard" (one finished)."""

    kind: str
    images: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    shard: int = -1


@dataclass
class PackResult:
    name: str
    out_dir: str
    manifest: str
    shards: int
    shards_resumed: int
    images: int
    records: int
    rejects: int
    reencoded: int
    bytes_out: int
    rejects_file: str
    reject_samples: list[tuple[str, str]] = field(default_factory=list)  # the first few (path, reason)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_shards(count: int, sizes: Iterable[int] = (), num_shards: int | None = None,
                shard_size: int | None = None) -> list[range]:
    """Cut ``count`` entries into contiguous ranges: ``num_shards`` of near-equal counts, or greedy runs of
    about ``shard_size`` input bytes (``sizes``: one per entry; the default when neither is given). Always at
    least one range."""
    if num_shards is not None:
        num_shards = max(1, min(num_shards, count)) if count else 1
        bounds = [count * part // num_shards for part in range(num_shards + 1)]
        return [range(bounds[part], bounds[part + 1]) for part in range(num_shards)]
    limit = shard_size or DEFAULT_SHARD_SIZE
    ranges, start, total = [], 0, 0
    for position, size in enumerate(sizes):
        if total and total + size > limit:
            ranges.append(range(start, position))
            start, total = position, 0
        total += size
    ranges.append(range(start, count))
    return ranges


def entries_digest(entries: Iterable[Entry]) -> str:
    digest = hashlib.sha256()
    for entry in entries:
        digest.update(f"{entry.index}\t{entry.labels}\t{entry.path}\t{entry.offset}\t{entry.size}\n".encode())
    return digest.hexdigest()


def _input_sizes(entries: Iterable[Entry], source: ImageSource) -> array[int]:
    """Input bytes per entry (0 when unreadable: the worker rejects it with the reason). Threads, because on
    network block storage (EBS) many stat calls in flight finish far sooner than one at a time."""
    from concurrent.futures import ThreadPoolExecutor

    def size(entry: Entry) -> int:
        try:
            return source.size(entry)
        except OSError:
            return 0

    with ThreadPoolExecutor(16) as executor:
        return array("q", executor.map(size, entries, chunksize=4096))


class _Journal:
    """NAME.pack-state.json: the fingerprint and every finished shard's result, rewritten atomically."""

    def __init__(self, path: Path, fingerprint: str, shard_count: int) -> None:
        self.path = path
        self.fingerprint = fingerprint
        self.shard_count = shard_count
        self.done: dict[int, ShardResult] = {}

    def load(self) -> str | None:
        """Read finished shards from a previous run; return its fingerprint (None when there is no journal)."""
        if not self.path.exists():
            return None
        data = json.loads(self.path.read_text(encoding="utf-8"))
        if data.get("fingerprint") == self.fingerprint and data.get("shard_count") == self.shard_count:
            for raw in data["shards"]:
                result = ShardResult(raw["index"], raw["records"], [tuple(pair) for pair in raw["rejects"]],
                                     raw["rec"], raw["idx"], raw.get("reencoded", 0))
                self.done[result.index] = result
        return str(data.get("fingerprint"))

    def record(self, result: ShardResult) -> None:
        self.done[result.index] = result
        data = {"fingerprint": self.fingerprint, "shard_count": self.shard_count,
                "shards": [asdict(self.done[index]) for index in sorted(self.done)]}
        with atomic_output(self.path) as stream:
            stream.write(json.dumps(data).encode("utf-8"))


def _sizes_match(out_dir: Path, files: Iterable[tuple[str, int]]) -> bool:
    """Every ``(name, bytes)`` is a file in ``out_dir`` of that size."""
    for name, size in files:
        path = out_dir / name
        if not path.exists() or path.stat().st_size != size:
            return False
    return True


def _still_there(out_dir: Path, result: ShardResult) -> bool:
    files = [(str(record["name"]), int(str(record["bytes"]))) for record in (result.rec, result.idx)]
    return _sizes_match(out_dir, files)


def _check_overwrite(out_dir: Path, name: str, fingerprint: str, outputs: list[str], overwrite: bool) -> None:
    """Refuse to replace files we did not make for exactly this job, unless ``overwrite``."""
    if overwrite:
        return
    manifest_file = manifest_path(out_dir, name)
    if manifest_file.exists():
        try:
            previous = Manifest.load(manifest_file).fingerprint
        except ValueError:
            previous = None
        if previous != fingerprint:
            raise RefusedError(f"{manifest_file} describes a dataset packed with other options or inputs; "
                               "pass --overwrite to replace it, or choose another --name/output folder")
        return
    journal = out_dir / f"{name}{JOURNAL_SUFFIX}"
    if journal.exists():
        return  # a resumable run of ours; its fingerprint is checked by the caller
    clashes = [output for output in outputs if (out_dir / output).exists()]
    if clashes:
        shown = ", ".join(clashes[:3]) + (" ..." if len(clashes) > 3 else "")
        raise RefusedError(f"{out_dir} already has {shown} not made by a pack run with these options; "
                           "pass --overwrite to replace")


def _remove_temporaries(out_dir: Path, outputs: list[str]) -> None:
    for output in outputs:
        for stale in out_dir.glob(f"{output}.*.tmp"):
            stale.unlink(missing_ok=True)


def _write_rejects(path: Path, rejects: list[tuple[str, str]]) -> None:
    with atomic_output(path) as stream:
        stream.write(b"path\treason\n")
        for reject_path, reason in rejects:
            clean = reason.replace("\t", " ").replace("\n", " ")
            stream.write(f"{reject_path}\t{clean}\n".encode("utf-8", "backslashreplace"))


def pack_entries(entries: Sequence[Entry] | LstIndex, source: ImageSource, out_dir: str | Path, name: str,
                 options: PackOptions, *, classes: Sequence[str] | None = None,
                 label_convention: str = "lst", overwrite: bool = False, write_list: bool = False,
                 progress: Callable[[PackEvent], None] | None = None) -> PackResult:
    """Pack ``entries`` (in this order) from ``source`` into ``out_dir/NAME*.rec/.idx`` + manifest + rejects.

    ``entries`` is a list, or an ``LstIndex`` over a `.lst` (then workers read their own slices of the file
    and this process holds 16 bytes per image).

    Resumes a killed run of the same job; refuses (RefusedError) to replace different outputs unless
    ``overwrite``.  ``write_list`` also writes NAME.lst (for packs made straight from a folder or archive).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    emit = progress or (lambda event: None)
    fingerprint = options.fingerprint(entries_digest(entries))
    sizes = () if options.num_shards else _input_sizes(entries, source)
    ranges = plan_shards(len(entries), sizes, options.num_shards, options.shard_size)
    count = len(ranges)
    outputs = [file for index in range(count) for file in shard_names(name, index, count)]
    _check_overwrite(out_dir, name, fingerprint, outputs, overwrite)

    journal = _Journal(out_dir / f"{name}{JOURNAL_SUFFIX}", fingerprint, count)
    previous = journal.load()
    if previous is not None and previous != fingerprint and not overwrite:
        raise RefusedError(f"{journal.path} belongs to an unfinished pack with other options or inputs; "
                           "rerun with those options to finish it, or pass --overwrite to start over")
    manifest_file = manifest_path(out_dir, name)
    if overwrite:
        manifest_file.unlink(missing_ok=True)
    elif manifest_file.exists():
        finished = _already_packed(out_dir, name, manifest_file, len(entries))
        if finished is not None:
            return finished
    _remove_temporaries(out_dir, outputs)  # left by a killed run
    resumed = {index for index, result in journal.done.items() if _still_there(out_dir, result)}
    journal.done = {index: journal.done[index] for index in resumed}

    tasks = [ShardTask(index, count, name, str(out_dir), entries[span.start:span.stop], source, options)
             for index, span in enumerate(ranges) if index not in resumed]
    emit(PackEvent("plan", images=len(entries), shard=count))
    if resumed:
        emit(PackEvent("progress", images=sum(len(ranges[index]) for index in resumed),
                       bytes_out=sum(int(journal.done[index].rec["bytes"]) for index in resumed)))

    def on_event(event: ShardProgress) -> None:
        emit(PackEvent("progress", event.images, event.bytes_in, event.bytes_out, event.shard))

    def on_done(result: ShardResult) -> None:
        journal.record(result)
        emit(PackEvent("shard", shard=result.index))

    preload = ["recordio_pack.shard"] + (["recordio_pack.codec_preload"] if options.reencode != "never" else [])
    try:
        run_tasks(pack_shard, tasks, options.worker_count, on_event, on_done,
                  task_name=lambda task: f"shard {task.names[0]}", preload=preload)
    except ImageFailed as failure:  # --on-error fail, single worker
        raise RecordioPackError(f"bad image (--on-error fail): {failure}") from None
    except TaskFailed as failure:
        raise RecordioPackError(f"{failure.task_name} failed: {failure.detail.strip()}") from None
    except WorkerDied as death:
        raise RecordioPackError(f"{death}; rerun the same command to resume") from None
    finally:
        _remove_temporaries(out_dir, outputs)  # of shards whose workers were stopped

    return _finish(out_dir, name, options, fingerprint, journal, classes, label_convention, entries,
                   write_list, len(resumed))


def _already_packed(out_dir: Path, name: str, manifest_file: Path, images: int) -> PackResult | None:
    """The result of a finished identical job whose files are all still there, else None (pack again)."""
    manifest = Manifest.load(manifest_file)
    if not _sizes_match(out_dir, ((record.name, record.bytes) for record in manifest.data_files())):
        return None
    rejects_file = out_dir / f"{name}.rejects.tsv"
    lines = rejects_file.read_text(encoding="utf-8").splitlines()[1:]
    rejects = [(path, reason) for path, _, reason in (line.partition("\t") for line in lines)]
    return PackResult(
        name=name, out_dir=str(out_dir), manifest=str(manifest_file), shards=len(manifest.shards),
        shards_resumed=len(manifest.shards), images=images, records=manifest.records, rejects=manifest.rejects,
        reencoded=0, bytes_out=sum(shard.rec.bytes + shard.idx.bytes for shard in manifest.shards),
        rejects_file=str(rejects_file), reject_samples=rejects[:10])


def _finish(out_dir: Path, name: str, options: PackOptions, fingerprint: str, journal: _Journal,
            classes: Sequence[str] | None, label_convention: str, entries: Sequence[Entry] | LstIndex, write_list: bool,
            resumed: int) -> PackResult:
    results = [journal.done[index] for index in sorted(journal.done)]
    rejects = [reject for result in results for reject in result.rejects]
    rejects_file = out_dir / f"{name}.rejects.tsv"
    _write_rejects(rejects_file, rejects)
    extra_files = [rejects_file]
    if classes is not None:
        write_class_map(out_dir / f"{name}.synsets.txt", classes)
        extra_files.append(out_dir / f"{name}.synsets.txt")
    if write_list:
        write_lst(out_dir / f"{name}.lst", entries)
        extra_files.append(out_dir / f"{name}.lst")
    manifest = Manifest(
        name=name, fingerprint=fingerprint, options=options.output_affecting(), key_convention=options.key,
        classes=list(classes) if classes is not None else None, label_convention=label_convention,
        shards=[ShardRecord(result.index, result.records, len(result.rejects),
                            FileRecord(**result.rec), FileRecord(**result.idx)) for result in results],  # type: ignore[arg-type]
        files=[FileRecord.of(path.name, file_digests(path)) for path in extra_files])
    manifest_file = manifest_path(out_dir, name)
    manifest.save(manifest_file)
    journal.path.unlink(missing_ok=True)
    return PackResult(
        name=name, out_dir=str(out_dir), manifest=str(manifest_file), shards=len(results), shards_resumed=resumed,
        images=len(entries), records=manifest.records, rejects=len(rejects),
        reencoded=sum(result.reencoded for result in results),
        bytes_out=sum(shard.rec.bytes + shard.idx.bytes for shard in manifest.shards),
        rejects_file=str(rejects_file), reject_samples=rejects[:10])
