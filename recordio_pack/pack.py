"""Packing a list of images into shards (RecordIO, TFRecord: ``recordio_pack.formats``): plan, reuse what is
current, run workers, write the manifest.

The list is cut into contiguous shards (``plan_shards``); each shard is packed by one worker, or, for the last
shards, in chunks by all of them (``recordio_pack.shard.split_shards``).  Every shard has an *inputs digest*: its list lines with each input's
size and modification time (or content hash).  A shard is packed again only when its digest changed, or its
files are missing or fail their checksum, so a rerun after a killed run resumes, and a rerun after some
images changed repacks only their shards (an incremental update).

Only one process writes a dataset at a time (``locking.dataset_lock``).  While shards are being written the
state lives in the journal, ``NAME.pack-state.json``; the manifest is written last, when every shard is
complete, and removed before an update starts, so a manifest always describes whole, current files.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
from array import array
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from recordio_pack.digest import file_digests
from recordio_pack.errors import RecordioPackError, RefusedError, UsageError
from recordio_pack.executors import Executor, LocalPool
from recordio_pack.formats import RecordFormat, UnknownFormat
from recordio_pack.fsutil import atomic_output
from recordio_pack.inputs import PackInput, check_dataset_name, check_output_folder
from recordio_pack.listing import count_by_extension, write_class_map, write_lst
from recordio_pack.locking import dataset_lock
from recordio_pack.manifest import MANIFEST_SUFFIX, FileRecord, Manifest, ShardRecord, manifest_path
from recordio_pack.options import DEFAULT_SHARD_SIZE, PackOptions
from recordio_pack.outputs import LocalFolder, Output
from recordio_pack.pool import TaskFailed, WorkerDied
from recordio_pack.progress import Advanced, NullProgress, Progress, Task, start_task
from recordio_pack.shard import (
    ChunkResult,
    ChunkTask,
    ImageFailed,
    ShardProgress,
    ShardResult,
    ShardTask,
    ShardWriteError,
    pack_work,
    split_shards,
)
from recordio_pack.sources import Entries, Entry, EntryList, ImageSource

__all__ = ["PackResult", "NotEnoughSpace", "NodeShare", "CommitRefused", "commit_dataset", "plan_shards", "pack_entries",
           "pack_input",
           "estimated_output_bytes"]

JOURNAL_SUFFIX = ".pack-state.json"
IN_PLACE = LocalFolder()  # the default output: files stay in the output folder
SPACE_MARGIN = 64 << 20  # free bytes kept beyond the estimate (the final files, the journal, the filesystem)
ChangeCheck = Literal["stat", "content"]
log = logging.getLogger(__name__)


class NotEnoughSpace(RecordioPackError):
    """The output's filesystem lacks the room the shards still to pack need (estimated, or hit while writing)."""


@dataclass
class PackResult:
    name: str
    out_dir: str
    manifest: str
    shards: int
    shards_resumed: int  # shards reused as they were (finished before, inputs unchanged, checksums match)
    images: int  # inputs listed for packing (= records + worker rejects)
    records: int
    rejects: int  # every reject: by the workers and by the listing
    reencoded: int
    bytes_out: int
    rejects_file: str
    skipped: int = 0
    skipped_file: str = ""
    skipped_by_extension: dict[str, int] = field(default_factory=dict)
    cross_class_links: int = 0
    shards_repacked_changed: int = 0  # shards packed again because their inputs changed (incremental update)
    shards_repacked_damaged: int = 0  # finished shards whose files failed their checksum, packed again
    up_to_date: bool = False  # nothing needed packing
    published_to: str = ""  # where the files were uploaded (an S3 output), out_dir being the staging folder
    reject_samples: list[tuple[str, str]] = field(default_factory=list)  # the first few (path, reason)

    @property
    def files_accounted(self) -> int:
        return self.records + self.rejects + self.skipped

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["files_accounted"] = self.files_accounted
        return data


@dataclass(frozen=True)
class NodeShare:
    """Machine ``rank`` of ``count`` packing one dataset together: it packs the shards whose index is ``rank``
    modulo ``count``, keeps its own journal and lock, and leaves a partial manifest (``NAME.node-K-of-N.partial.json``)
    that ``commit_dataset`` merges with the others'."""

    rank: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.rank < self.count:
            raise UsageError(f"--node-rank must be 0..{self.count - 1} for --num-nodes {self.count}, got {self.rank}")

    def owns(self, index: int) -> bool:
        return index % self.count == self.rank

    def tag(self, name: str) -> str:
        return f"{name}.node-{self.rank:05d}-of-{self.count:05d}"


PARTIAL_SUFFIX = ".partial.json"
REPLACED_SUFFIX = ".manifest.replaced.json"  # nodes' update: the version being replaced, until commit


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


FACTS_BLOCK = 256  # inputs one thread looks at in a row; 16 threads keep 16 stat calls in flight
FACTS_WINDOW = 32  # blocks queued at a time (8,192 entries in memory): flat whatever the list length


@dataclass
class _InputFacts:
    """Per input, in list order: 8 bytes of size, 8 of mtime (-1: unreadable, the worker rejects it with the
    reason) and, with --detect-changes content, the 32-byte SHA-256 of its bytes."""

    sizes: array
    mtimes: array
    hashes: bytearray

    def mark(self, position: int) -> str:
        if self.hashes:
            return self.hashes[32 * position:32 * position + 32].hex()
        return f"{self.sizes[position]}:{self.mtimes[position]}"


def _input_facts(entries: EntryList, source: ImageSource, check: ChangeCheck) -> _InputFacts:
    """Size and change mark of every input. Threads, because on network block storage (EBS) many stat calls
    in flight finish far sooner than one at a time."""
    from collections import deque
    from itertools import islice

    def block(part: list[Entry]) -> tuple[array, array, bytes]:
        sizes, mtimes, hashes = array("q"), array("q"), bytearray()
        for entry in part:
            try:
                stat = source.stat(entry)
                digest = hashlib.sha256(source.read(entry)).digest() if check == "content" else b""
                size, mtime = stat.size, stat.mtime_ns
            except (OSError, ValueError):
                size, mtime, digest = 0, -1, bytes(32) if check == "content" else b""
            sizes.append(size)
            mtimes.append(mtime)
            hashes += digest
        return sizes, mtimes, bytes(hashes)

    facts = _InputFacts(array("q"), array("q"), bytearray())
    remaining = iter(entries)
    with ThreadPoolExecutor(16) as executor:
        queued: deque = deque()
        while True:
            while len(queued) < FACTS_WINDOW and (part := list(islice(remaining, FACTS_BLOCK))):
                queued.append(executor.submit(block, part))
            if not queued:
                return facts
            sizes, mtimes, hashes = queued.popleft().result()
            facts.sizes.extend(sizes)
            facts.mtimes.extend(mtimes)
            facts.hashes += hashes


def _shard_inputs_digest(index: int, count: int, entries: Iterable[Entry], facts: _InputFacts, first: int) -> str:
    digest = hashlib.sha256(f"{index}/{count}\n".encode())
    for position, entry in enumerate(entries, first):
        digest.update(f"{entry.index}\t{entry.labels}\t{entry.path}\t{entry.offset}\t{entry.size}\t"
                      f"{facts.mark(position)}\n".encode())
    return digest.hexdigest()


def estimated_output_bytes(input_size: int, options: PackOptions) -> int:
    """About how many bytes one input becomes: its own size when stored as it is or not resized; when resized,
    at most what a photo of the target size takes (JPEG ~0.6 bytes/pixel at quality <= 95, PNG ~3)."""
    image = options.image
    if not image.resize or image.reencode == "never":
        return input_size + 64
    short = image.resize
    pixels = short * short * (1 if image.center_crop else 4 / 3)
    per_pixel = 3.0 if image.encoding == "png" else 1.2 if image.quality > 95 else 0.6
    return int(min(input_size, pixels * per_pixel)) + 64


def _human(size: int) -> str:
    return f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"


def _check_space(out_dir: Path, output_bytes: int) -> None:
    needed = output_bytes + SPACE_MARGIN
    free = shutil.disk_usage(out_dir).free
    if free < needed:
        raise NotEnoughSpace(f"{out_dir}: {_human(free)} free, the shards still to pack need about "
                             f"{_human(needed)} (an estimate from input sizes and --resize); free space or "
                             "choose another output folder (--skip-space-check to try anyway)")


@dataclass
class _Previous:
    """What an earlier run left: a finished dataset (manifest) or an unfinished one (journal)."""

    path: Path
    options: dict[str, Any]
    codec: str
    options_fingerprint: str
    origin: str
    fingerprint: str
    shard_count: int
    done: dict[int, ShardResult]
    files: list[str]  # every shard file it lists
    replaces: str = ""  # journal of an update: the fingerprint of the version it replaces
    stale: list[str] = field(default_factory=list)  # journal of an update: old shard files still to remove
    manifest: Manifest | None = None  # a finished dataset's manifest, read once


def _load_previous(out_dir: Path, name: str, state_name: str | None = None) -> _Previous | None:
    """The journal of an unfinished run (``state_name``'s: a node's own), else a node's partial manifest, else the
    dataset's manifest."""
    state_name = state_name or name
    journal = out_dir / f"{state_name}{JOURNAL_SUFFIX}"
    partial = out_dir / f"{state_name}{PARTIAL_SUFFIX}"
    if not journal.exists() and state_name != name and partial.exists():
        journal = partial  # a node's finished share: a journal with the listing beside it
    if journal.exists():
        try:
            state = _Journal.load(journal)
        except (ValueError, KeyError, TypeError) as error:
            raise RefusedError(f"{journal}: unreadable ({error}); remove it, or pass --overwrite to start over") from None
        return _Previous(journal, state.options, state.codec, state.options_fingerprint, state.origin, "",
                         state.shard_count, state.done, _shard_files(state.done.values()), state.replaces,
                         list(state.stale))
    manifest_file = manifest_path(out_dir, name)
    if not manifest_file.exists() and state_name != name:
        manifest_file = out_dir / f"{name}{REPLACED_SUFFIX}"  # another node has started the update
    if manifest_file.exists():
        try:
            manifest = Manifest.load(manifest_file)
        except ValueError as error:
            raise RefusedError(f"{error}; pass --overwrite to replace the dataset") from None
        return _Previous(manifest_file, manifest.options, manifest.codec, manifest.options_fingerprint,
                         manifest.origin, manifest.fingerprint, len(manifest.shards),
                         {shard.index: ShardResult.of_record(shard) for shard in manifest.shards},
                         _shard_files(manifest.shards), manifest=manifest)
    return None


def _shard_files(shards: Iterable[ShardResult | ShardRecord]) -> list[str]:
    return [record.name for shard in shards for record in shard.files]


def _differences(previous: _Previous, options: PackOptions) -> str:
    """The options (and codec) that differ, as ``--name old -> new`` pairs."""
    current = options.output_affecting()
    changed = [f"{key} {previous.options.get(key)!r} -> {value!r}" for key, value in sorted(current.items())
               if previous.options.get(key) != value and key != "on_error"]
    if previous.codec != options.codec():
        changed.append(f"codec {previous.codec or 'none'!r} -> {options.codec() or 'none'!r}")
    return ", ".join(changed) or "the options of an older recordio-pack"


@dataclass
class _Journal:
    """NAME.pack-state.json: what identifies the job and every finished shard's result, rewritten atomically
    (``record``) and read back (``load``) as one JSON object: these fields, then ``shards``."""

    path: Path
    options: dict[str, Any]  # PackOptions.output_affecting()
    codec: str
    options_fingerprint: str
    origin: str
    shard_count: int
    replaces: str = ""  # an update's: the fingerprint of the version it replaces
    stale: list[str] = field(default_factory=list)  # an update's: old shard files still to remove
    done: dict[int, ShardResult] = field(default_factory=dict)

    @classmethod
    def start(cls, path: Path, options: PackOptions, origin: str, shard_count: int, replaces: str,
              stale: list[str], done: dict[int, ShardResult]) -> _Journal:
        return cls(path, options.output_affecting(), options.codec(), options.fingerprint(), origin, shard_count,
                   replaces, stale, done)

    @classmethod
    def load(cls, path: Path) -> _Journal:
        """ValueError, KeyError or TypeError when the file is not a journal."""
        data = json.loads(path.read_text(encoding="utf-8"))
        done = {result.index: result for result in map(ShardResult.from_dict, data["shards"])}
        return cls(path, data.get("options", {}), data.get("codec", ""), data.get("options_fingerprint", ""),
                   data.get("origin", ""), data["shard_count"], data.get("replaces", ""), list(data.get("stale", [])),
                   done)

    def as_dict(self) -> dict[str, Any]:
        return {"options": self.options, "codec": self.codec, "options_fingerprint": self.options_fingerprint,
                "origin": self.origin, "shard_count": self.shard_count, "replaces": self.replaces,
                "stale": self.stale, "shards": [self.done[index].to_dict() for index in sorted(self.done)]}

    def record(self, result: ShardResult | None = None) -> None:
        if result is not None:
            self.done[result.index] = result
        with atomic_output(self.path) as stream:
            stream.write(json.dumps(self.as_dict()).encode("utf-8"))


def _recover_rejects(out_dir: Path, name: str, manifest: Manifest, reusable: dict[int, ShardResult], plan: _Plan,
                     entries: EntryList) -> int:
    """Give shards reused from a finished dataset their reject rows back, from its NAME.rejects.tsv (the manifest
    keeps only counts): worker rejects follow the listing's, in shard and list order. Shards whose rows do not
    add up are dropped from ``reusable`` (packed again); returns how many."""
    from collections import defaultdict, deque

    try:
        lines = _tsv_rows(out_dir / f"{name}.rejects.tsv")
    except OSError:
        lines = []
    rows: dict[str, deque[str]] = defaultdict(deque)
    expected_rejects = {shard.index: shard.rejects for shard in manifest.shards}
    dropped = 0
    for line in lines[manifest.listing_rejects:]:
        path, _, reason = line.partition("\t")
        rows[path].append(reason)
    for index in sorted(reusable):
        result = reusable[index]
        result.rejects = []
        expected = expected_rejects[index]
        span = plan.ranges[index]
        for entry in entries[span.start:span.stop] if expected else ():
            if rows.get(entry.path):
                result.rejects.append((entry.path, rows[entry.path].popleft()))
        if len(result.rejects) != expected:  # the rejects file does not match the manifest: pack the shard again
            del reusable[index]
            dropped += 1
    return dropped


def _tsv_rows(path: Path) -> list[str]:
    """The rows of one of our TSV files after its header (split on newlines only: a name may hold U+2028)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    return [row for row in text.split("\n")[1:] if row]


def _shard_files_of(out_dir: Path, name: str, fmt: RecordFormat) -> list[str]:
    """Every file in ``out_dir`` named like a shard of NAME in ``fmt`` (RecordIO: NAME.rec/.idx,
    NAME-00003-of-00016.rec/.idx), relative to ``out_dir``."""
    return sorted(path.relative_to(out_dir).as_posix() for pattern in fmt.shard_patterns(name)
                  for path in out_dir.glob(pattern))


def _remove_files(out_dir: Path, names: Iterable[str]) -> None:
    for file in names:
        (out_dir / file).unlink(missing_ok=True)


def _dataset_files(name: str) -> list[str]:
    """The dataset's files beside its shards, each written through fsutil.atomic_output."""
    return [f"{name}{suffix}" for suffix in (".rejects.tsv", ".skipped.tsv", ".synsets.txt", ".lst", ".all.idx", ".label_map.txt",
                                             MANIFEST_SUFFIX, JOURNAL_SUFFIX)]


def _remove_temporaries(out_dir: Path, outputs: Iterable[str]) -> None:
    for output in outputs:
        for stale in out_dir.glob(f"{output}.*.tmp"):
            stale.unlink(missing_ok=True)


def _write_listing(path: Path, rows: Sequence[tuple[str, str]], header: str) -> None:
    with atomic_output(path) as stream:
        stream.write(f"path\t{header}\n".encode())
        for row_path, reason in rows:
            clean_path = row_path.replace("\t", "\\t").replace("\n", "\\n")  # a name a line cannot hold, escaped
            clean = reason.replace("\t", " ").replace("\n", " ")
            stream.write(f"{clean_path}\t{clean}\n".encode("utf-8", "backslashreplace"))


def _check_unique_keys(entries: EntryList) -> None:
    """Refuse duplicate `.lst` indexes (they would be duplicate `.idx` keys), holding 8 bytes per entry."""
    keys = sorted(array("q", (entry.index for entry in entries)))
    duplicate = next((key for key, following in zip(keys, keys[1:]) if key == following), None)
    if duplicate is None:
        return
    paths = [entry.path for entry in entries if entry.index == duplicate][:2]
    raise RefusedError(f"--key lst-index needs unique .lst indexes, but index {duplicate} is used by "
                       f"{paths[0]!r} and {paths[1]!r}; renumber the list or use --key position")


@dataclass
class _Plan:
    ranges: list[range]
    digests: list[str]
    names: list[tuple[str, ...]]
    facts: _InputFacts
    fmt: RecordFormat

    @property
    def outputs(self) -> list[str]:
        return [file for pair in self.names for file in pair]

    def estimated_output(self, shards: Iterable[int], options: PackOptions) -> int:
        """About how many bytes ``shards`` will write (``estimated_output_bytes`` of each of their inputs)."""
        return sum(estimated_output_bytes(size, options) for index in shards
                   for size in self.facts.sizes[self.ranges[index].start:self.ranges[index].stop])


def _plan(entries: EntryList, source: ImageSource, options: PackOptions, name: str,
          check: ChangeCheck, fmt: RecordFormat) -> _Plan:
    facts = _input_facts(entries, source, check)
    ranges = plan_shards(len(entries), facts.sizes, options.num_shards, options.shard_size)
    count = len(ranges)
    digests = []
    for index, span in enumerate(ranges):
        digests.append(_shard_inputs_digest(index, count, entries[span.start:span.stop], facts, span.start))
    return _Plan(ranges, digests, [fmt.shard_files(name, index, count) for index in range(count)], facts, fmt)


def _owned_outputs(plan: _Plan, node: NodeShare | None) -> list[str]:
    """The shard files this run may write: all of the plan's, or a node's share of them."""
    if node is None:
        return plan.outputs
    return [file for index, files in enumerate(plan.names) if node.owns(index) for file in files]


def _refuse_if_foreign(out_dir: Path, name: str, previous: _Previous | None, plan: _Plan, options: PackOptions,
                       origin: str, outputs: Sequence[str] | None = None, destination: Output = IN_PLACE) -> None:
    """Refuse (RefusedError) to touch outputs that another job made: other options, another input, or files
    that no run of ours recorded (of ``outputs``: the files this run may write, by default the plan's)."""
    if previous is None:
        candidates = plan.outputs if outputs is None else list(outputs)
        clashes = [output for output in candidates if (out_dir / output).exists()] + destination.present(candidates)
        if clashes:
            shown = ", ".join(clashes[:3]) + (" ..." if len(clashes) > 3 else "")
            raise RefusedError(f"{out_dir} already has {shown}, which no pack run of {name} recorded; "
                               "pass --overwrite to replace, or choose another --name/output folder")
        return
    what = "a finished dataset" if previous.manifest is not None else "an unfinished pack"
    if previous.options_fingerprint != options.fingerprint():
        raise RefusedError(f"{previous.path} describes {what} packed with other options ({_differences(previous, options)}); "
                           "rerun with those options, pass --overwrite to replace it, or choose another --name")
    unchanged = previous.shard_count == len(plan.ranges) and all(
        previous.done.get(index) is not None and previous.done[index].inputs == digest
        for index, digest in enumerate(plan.digests))
    if previous.origin != origin and not unchanged:
        raise RefusedError(f"{previous.path} describes {what} packed from {previous.origin or 'another input'}, "
                           f"not {origin}; pass --overwrite to replace it, or choose another --name")


def pack_entries(entries: EntryList, source: ImageSource, out_dir: str | Path, name: str,
                 options: PackOptions, *, classes: Sequence[str] | None = None,
                 label_convention: str = "lst", overwrite: bool = False, write_list: bool = False,
                 progress: Progress | None = None, origin: str = "",
                 rejects: Sequence[tuple[str, str]] = (), skipped: Sequence[tuple[str, str]] = (),
                 cross_class_links: int = 0, detect_changes: ChangeCheck = "stat", verify_finished: bool = True,
                 space_check: bool = True, executor: Executor | None = None,
                 node: NodeShare | None = None, output: Output | None = None) -> PackResult:
    """Pack ``entries`` (in this order) from ``source`` into ``out_dir/NAME*.rec/.idx`` (or the shards of
    ``options.format``) + manifest + rejects.  UsageError for a format, preset or name that do not go together.

    ``entries`` is a list, or an ``LstIndex`` over a `.lst` (then workers read their own slices of the file
    and this process holds about 16 bytes per image plus one change mark).

    ``rejects``/``skipped``: inputs found by the listing that cannot be packed / are not inputs, written to
    NAME.rejects.tsv / NAME.skipped.tsv and counted in the manifest.  ``origin`` names the input; a dataset
    packed from another input is not updated without ``overwrite``.  Shards whose inputs are unchanged
    (``detect_changes``: "stat" = size and mtime, "content" = SHA-256 of each input) and whose files pass
    their checksum (``verify_finished``; False checks sizes only) are kept; the rest are packed.
    Refuses (RefusedError) to replace outputs of other options, inputs or tools unless ``overwrite``, and
    while another process writes the same dataset.  With ``node`` (of more than one), only that node's share of
    the shards is packed, ending in its partial manifest; ``commit_dataset`` then writes the dataset's files.
    ``output``: where finished files go (default: they stay in ``out_dir``; ``aws.s3_output.S3Output``: uploaded
    as each shard finishes, ``out_dir`` a staging folder, the manifest last).
    """
    name = check_dataset_name(name)
    out_dir = check_output_folder(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    node = node if node is not None and node.count > 1 else None
    if node is not None and overwrite:
        raise UsageError("--overwrite is for one machine: remove the old dataset's files, then pack on the nodes")
    output = output or LocalFolder()
    if output.remote and node is not None:
        raise UsageError("--num-nodes packs into one shared folder; it cannot be combined with an S3 output yet "
                         "(pack into the shared folder, commit, then backup)")
    if output.remote and options.format == "tfrecord" and options.preset == "tfds":
        raise UsageError("--preset tfds makes OUTDIR a TFDS data_dir, a local folder: pack locally, then backup")
    with dataset_lock(out_dir, node.tag(name) if node is not None else name):
        result = _pack_locked(entries, source, out_dir, name, options, classes=classes,
                            label_convention=label_convention, overwrite=overwrite, write_list=write_list,
                            progress=progress or NullProgress(), origin=origin, rejects=rejects, skipped=skipped,
                            cross_class_links=cross_class_links, detect_changes=detect_changes,
                            verify_finished=verify_finished, space_check=space_check,
                            executor=executor or LocalPool(options.worker_count), node=node, output=output)
    result.published_to = output.describe() if output.remote else ""
    return result


def pack_input(pack_in: PackInput, out_dir: str | Path, options: PackOptions, *, name: str | None = None,
               **kwargs: Any) -> PackResult:
    """``pack_entries`` for what ``inputs.open_input`` found."""
    pack_in.check_output(out_dir)
    return pack_entries(pack_in.entries, pack_in.source, out_dir, name or pack_in.name, options,
                        classes=pack_in.classes, label_convention=pack_in.label_convention,
                        write_list=pack_in.write_list, origin=pack_in.origin, rejects=pack_in.rejects,
                        skipped=pack_in.skipped, cross_class_links=len(pack_in.cross_class_links), **kwargs)


def _pack_locked(entries: EntryList, source: ImageSource, out_dir: Path, name: str,
                 options: PackOptions, *, classes: Sequence[str] | None, label_convention: str, overwrite: bool,
                 write_list: bool, progress: Progress, origin: str,
                 rejects: Sequence[tuple[str, str]], skipped: Sequence[tuple[str, str]], cross_class_links: int,
                 detect_changes: ChangeCheck, verify_finished: bool, space_check: bool,
                 executor: Executor, node: NodeShare | None = None,
                 output: Output = IN_PLACE) -> PackResult:
    if options.key == "lst-index":
        _check_unique_keys(entries)
    if rejects and options.on_error == "fail":
        path, reason = rejects[0]
        raise RecordioPackError(f"bad input (--on-error fail): {path}: {reason}")
    try:
        fmt = options.record_format(classes)
    except UnknownFormat as error:
        raise UsageError(str(error)) from None
    problem = fmt.name_problem(name)
    if problem:
        raise UsageError(problem)
    plan = _plan(entries, source, options, name, detect_changes, fmt)
    state_name = node.tag(name) if node is not None else name  # a node's journal and partial are its own
    output.prepare(out_dir, name)
    if overwrite:  # start over: nothing is reused; every shard file of an older version goes
        try:
            replaced = _load_previous(out_dir, name)
        except RefusedError:
            replaced = None
        stale_files = _shard_files_of(out_dir, name, fmt) + (replaced.files + replaced.stale if replaced else [])
        previous = None
    else:
        previous = _load_previous(out_dir, name, state_name)
        _refuse_if_foreign(out_dir, name, previous, plan, options, origin, _owned_outputs(plan, node), output)
        stale_files = previous.files + previous.stale if previous is not None else []
    stale_files = sorted(set(stale_files) - set(plan.outputs)) if node is None else []  # commit's job on nodes

    reusable: dict[int, ShardResult] = {}
    unpublished: list[ShardResult] = []  # reused shards still only in out_dir (a run killed before it sent them)
    damaged = changed = 0
    if previous is not None and previous.shard_count == len(plan.ranges):
        candidates = {index: result for index, result in previous.done.items()
                      if index < len(plan.digests) and result.inputs == plan.digests[index]}
        changed = len(previous.done) - len(candidates)
        with ThreadPoolExecutor(8) as checkers:
            presence = dict(zip(candidates, checkers.map(
                lambda result: output.presence(out_dir, result.files, verify_finished), candidates.values())))
        reusable = {index: result for index, result in candidates.items() if presence[index] != "missing"}
        if output.remote:
            unpublished = [reusable[index] for index in sorted(reusable) if presence[index] == "here"]
        damaged = len(candidates) - len(reusable)
        if previous.manifest is not None:
            damaged += _recover_rejects(out_dir, name, previous.manifest, reusable, plan, entries)
    elif previous is not None:
        changed = len(previous.done)
    listing_state = _extras_digest(rejects, skipped, classes, label_convention, write_list)
    # left by a killed run (we hold the lock): of every output, or, on a node, of its own shards only (the
    # others' may be being written right now)
    _remove_temporaries(out_dir, _owned_outputs(plan, node) + (
        _dataset_files(name) if node is None else [f"{state_name}{JOURNAL_SUFFIX}", f"{state_name}{PARTIAL_SUFFIX}"]))
    if (node is None and previous is not None and previous.manifest is not None and len(reusable) == len(plan.ranges)
            and not stale_files):
        up_to_date = _finished_result(out_dir, name, previous.path, previous.manifest, plan, listing_state)
        if up_to_date is not None and output.remote and (unpublished or not output.published(
                out_dir, [*previous.manifest.files, FileRecord.of(previous.path.name, file_digests(previous.path))])):
            up_to_date = None  # current here, not (all) at the output: finished again below, which sends it
        if up_to_date is not None:
            log.info("%s in %s is up to date: nothing to pack", name, out_dir)
            return up_to_date

    pending = [index for index in range(len(plan.ranges))
               if index not in reusable and (node is None or node.owns(index))]
    if node is not None:
        reusable = {index: result for index, result in reusable.items() if node.owns(index)}
    if reusable:
        log.info("%s: reusing %d finished shard(s), packing %d", name, len(reusable), len(pending))
    if space_check:  # a staging folder holds the shards being written, about two per worker
        staged = pending[:2 * executor.chunk_workers + 2] if output.remote else pending
        _check_space(out_dir, plan.estimated_output(staged, options))
    replaces = (previous.fingerprint or previous.replaces) if previous is not None else ""
    journal = _Journal.start(out_dir / f"{state_name}{JOURNAL_SUFFIX}", options, origin, len(plan.ranges), replaces,
                             stale_files, dict(reusable))
    journal.record()  # before the manifest goes: from here on the journal is the state
    if node is not None:
        (out_dir / f"{state_name}{PARTIAL_SUFFIX}").unlink(missing_ok=True)  # commit waits for this node again
        if pending and manifest_path(out_dir, name).exists():  # kept aside: the nodes that start later find it
            os.replace(manifest_path(out_dir, name), out_dir / f"{name}{REPLACED_SUFFIX}")
    else:
        manifest_path(out_dir, name).unlink(missing_ok=True)
        if output.remote:
            output.retract([manifest_path(out_dir, name).name])  # never a manifest of files being replaced
    _remove_files(out_dir, stale_files)  # the old version's shards that the new plan does not have
    if output.remote and stale_files:
        output.retract(stale_files)
    if output.remote:
        for finished in unpublished:
            output.publish(out_dir, finished.files)
    tasks = [ShardTask(index, len(plan.ranges), name, str(out_dir), entries[plan.ranges[index].start:plan.ranges[index].stop],
                       source, options, plan.digests[index], fmt, output) for index in pending]
    task = start_task(progress, f"pack {name}", "images", total=len(entries),
                      done=sum(len(plan.ranges[index]) for index in reusable))  # resumed: counted, not in the rate
    _run(tasks, options, journal, task, out_dir, plan, executor, output, entries)
    task.done()
    unfinished = [shard.index for shard in tasks if shard.index not in journal.done]
    if unfinished:  # every executor hands back every shard; this guards the manifest against one that did not
        raise RecordioPackError(f"shard(s) {unfinished[:5]} of {name} were never finished; rerun to resume")
    if node is not None:
        return _finish_node(out_dir, name, node, journal, plan, entries, classes, label_convention, write_list,
                            rejects, skipped, cross_class_links, listing_state, len(reusable))

    unchanged = journal.replaces == _fingerprint(options.fingerprint(), plan.digests, listing_state)
    update = {"replaced": journal.replaces, "shards_repacked": pending} if journal.replaces and not unchanged else None
    result = _finish(out_dir, name, options, origin, journal, classes, label_convention, entries, write_list,
                     rejects, skipped, cross_class_links, listing_state, update, fmt, output=output)
    result.shards_resumed = len(reusable)
    result.shards_repacked_changed = changed
    result.shards_repacked_damaged = damaged
    return result


def _run(tasks: list[ShardTask], options: PackOptions, journal: _Journal, task: Task, out_dir: Path,
         plan: _Plan, executor: Executor, output: Output, entries: EntryList) -> None:
    def advance(event: ShardProgress) -> None:  # images packed, with the bytes read and written
        task.progress.on_progress(Advanced(task.name, event.images, bytes_in=event.bytes_in, bytes_out=event.bytes_out))

    def cut(shard: ShardTask, first: int, stop: int) -> Entries:  # a slice of the list: a byte range of a .lst
        start = plan.ranges[shard.index].start
        return entries[start + first:start + min(stop, len(plan.ranges[shard.index]))]

    items, assemblies = split_shards(tasks, executor.chunk_workers, cut)

    def on_done(result: ShardResult | ChunkResult) -> None:
        if isinstance(result, ChunkResult):  # a chunk of a shard this process writes
            advance(result.progress())
            finished = assemblies[result.shard].add(result)
            if finished is None:
                return
            result = finished
            if output.remote:  # sent from here, on a thread, while the workers go on
                publishing.append(publisher.submit(output.publish, out_dir, result.files))
        elif not executor.streams_events:  # a whole shard from an executor that sends no progress as it goes
            advance(ShardProgress(result.index, result.records + len(result.rejects), 0,
                                  sum(record.bytes for record in result.files)))
        journal.record(result)
        for sent in publishing:  # a failed upload stops the run now, not after every other shard
            if sent.done() and sent.exception() is not None:
                sent.result()

    def item_name(item: ShardTask | ChunkTask) -> str:
        if isinstance(item, ChunkTask):
            return f"shard {item.rec} (images {item.first}-{item.first + len(item.entries) - 1})"
        return f"shard {item.names[0]}"

    decodes = options.image.reencode != "never" or options.image.validate == "full"
    preload = ["recordio_pack.shard"] + (["recordio_pack.codec_preload"] if decodes else [])
    publisher = ThreadPoolExecutor(2, thread_name_prefix="publish")
    publishing: list[Future[None]] = []
    try:
        executor.run(pack_work, items, advance, on_done, task_name=item_name, preload=preload)
        for future in publishing:
            future.result()  # the first failure to send a shard written here propagates
    except ImageFailed as failure:  # --on-error fail, single worker
        raise RecordioPackError(f"bad image (--on-error fail): {failure}") from None
    except ShardWriteError as failure:  # single worker, or a shard this process writes
        raise _write_failure(failure, out_dir, tasks, journal, options, plan) from None
    except TaskFailed as failure:
        if isinstance(failure.error, ShardWriteError):
            raise _write_failure(failure.error, out_dir, tasks, journal, options, plan) from None
        detail = failure.detail.strip().splitlines()[-1] if failure.detail.strip() else "no detail"
        raise RecordioPackError(f"{failure.task_name} failed: {detail}") from None
    except WorkerDied as death:
        raise RecordioPackError(f"{death}; rerun the same command to resume") from None
    finally:
        publisher.shutdown(wait=True, cancel_futures=True)
        for assembly in assemblies.values():
            assembly.abort()
        _remove_temporaries(out_dir, [file for task in tasks for file in task.names])  # of stopped workers' shards


def _write_failure(failure: ShardWriteError, out_dir: Path, tasks: list[ShardTask], journal: _Journal,
                   options: PackOptions, plan: _Plan) -> RecordioPackError:
    if failure.errno != errno.ENOSPC:
        return RecordioPackError(f"writing {failure.path} failed: {failure.strerror}")
    left = [task.index for task in tasks if task.index not in journal.done]
    needed = plan.estimated_output(left, options)
    return NotEnoughSpace(f"{failure.path}: no space left on device; the {len(left)} shard(s) not yet packed need "
                          f"about {_human(needed)} more ({_human(shutil.disk_usage(out_dir).free)} free now); free "
                          "space and rerun the same command to resume")


def _extras_digest(rejects: Sequence[tuple[str, str]], skipped: Sequence[tuple[str, str]],
                   classes: Sequence[str] | None, label_convention: str, write_list: bool) -> str:
    """What the dataset holds beside its shards: the listing's rejects and skips, the class map, the list."""
    digest = hashlib.sha256(json.dumps([list(classes) if classes is not None else None, label_convention,
                                        write_list]).encode())
    for kind, rows in (("reject", rejects), ("skip", skipped)):
        for path, reason in rows:
            digest.update(f"{kind}\t{path}\t{reason}\n".encode("utf-8", "backslashreplace"))
    return digest.hexdigest()


def _fingerprint(options_fingerprint: str, digests: Sequence[str], listing_state: str) -> str:
    """Identifies the dataset version: how it was packed (PackOptions.fingerprint), from which inputs (the
    shards' input digests), and what the listing found."""
    material = {"options": options_fingerprint, "shards": list(digests), "listing": listing_state}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def _finished_result(out_dir: Path, name: str, manifest_file: Path, manifest: Manifest, plan: _Plan,
                     listing_state: str) -> PackResult | None:
    """The result of a finished dataset that is current in every part, else None (then it is updated)."""
    if manifest.fingerprint != _fingerprint(manifest.options_fingerprint, plan.digests, listing_state):
        return None
    for record in manifest.files:  # rejects, skipped, class map, list: small, so checked by content
        path = out_dir / record.name
        if not path.is_file() or file_digests(path).sha256 != record.sha256:
            return None
    rejects_file = out_dir / f"{name}.rejects.tsv"
    lines = _tsv_rows(rejects_file)
    samples = [(path, reason) for path, _, reason in (line.partition("\t") for line in lines)]
    skipped_file = out_dir / f"{name}.skipped.tsv"
    return PackResult(
        name=name, out_dir=str(out_dir), manifest=str(manifest_file), shards=len(manifest.shards),
        shards_resumed=len(manifest.shards), images=sum(len(span) for span in plan.ranges), records=manifest.records,
        rejects=manifest.rejects, reencoded=sum(shard.reencoded for shard in manifest.shards),
        bytes_out=sum(record.bytes for shard in manifest.shards for record in shard.files),
        rejects_file=str(rejects_file), skipped=manifest.skipped,
        skipped_file=str(skipped_file) if skipped_file.exists() else "",
        skipped_by_extension=manifest.skipped_by_extension, cross_class_links=manifest.cross_class_links,
        up_to_date=True, reject_samples=samples[:10])



def _finish(out_dir: Path, name: str, options: PackOptions, origin: str, journal: _Journal,
            classes: Sequence[str] | None, label_convention: str, entries: EntryList | None,
            write_list: bool, listed_rejects: Sequence[tuple[str, str]], skipped: Sequence[tuple[str, str]],
            cross_class_links: int, listing_state: str, update: dict[str, Any] | None,
            fmt: RecordFormat, identity: tuple[str, str] | None = None, images: int = 0,
            output: Output = IN_PLACE) -> PackResult:
    """Write the dataset's files beside its shards, then the manifest.  ``entries`` None: the list (when
    ``write_list``) is already written, and ``images`` counts them; ``identity``: the (options fingerprint,
    codec) the shards were packed with, when not this process's own (a commit of nodes' work)."""
    options_fingerprint, codec = identity or (options.fingerprint(), options.codec())
    _remove_files(out_dir, journal.stale)
    if output.remote and journal.stale:
        output.retract(journal.stale)
    results = [journal.done[index] for index in sorted(journal.done)]
    output.localize(out_dir, [record for result in results for record in result.files[1:]])  # index files
    if not output.remote:  # the manifest vouches only for files that are here
        absent = [record.name for result in results for record in result.files
                  if not (out_dir / record.name).is_file() or (out_dir / record.name).stat().st_size != record.bytes]
        if absent:
            raise RecordioPackError(f"{absent[0]} is not in {out_dir} as it was written (with --engine ray on "
                                    "several machines, OUTDIR must be a folder every node sees, or s3://)")
    worker_rejects = [reject for result in results for reject in result.rejects]
    all_rejects = list(listed_rejects) + worker_rejects
    rejects_file = out_dir / f"{name}.rejects.tsv"
    _write_listing(rejects_file, all_rejects, "reason")
    extra_files = [rejects_file]
    skipped_file = out_dir / f"{name}.skipped.tsv"
    if skipped:
        _write_listing(skipped_file, skipped, "why")
        extra_files.append(skipped_file)
    else:
        skipped_file.unlink(missing_ok=True)
        if output.remote:  # an older version's list, no longer part of the dataset
            output.retract([skipped_file.name])
    if classes is not None:
        write_class_map(out_dir / f"{name}.synsets.txt", classes)
        extra_files.append(out_dir / f"{name}.synsets.txt")
    if write_list:
        if entries is not None:
            write_lst(out_dir / f"{name}.lst", entries)
        extra_files.append(out_dir / f"{name}.lst")
    extra_files += fmt.dataset_files(out_dir, name, [([record.name for record in result.files], result.records)
                                                     for result in results], classes,
                                     [result.files[0].bytes for result in results])
    digests = [result.inputs for result in results]
    manifest = Manifest(
        name=name, fingerprint=_fingerprint(options_fingerprint, digests, listing_state),
        options=options.output_affecting(),
        key_convention=options.key, classes=list(classes) if classes is not None else None,
        label_convention=label_convention,
        shards=[result.record() for result in results],
        files=[FileRecord.of(path.relative_to(out_dir).as_posix(), file_digests(path)) for path in extra_files],
        origin=origin, options_fingerprint=options_fingerprint, codec=codec,
        listing_rejects=len(listed_rejects), skipped=len(skipped),
        skipped_by_extension=count_by_extension(path for path, _ in skipped),
        cross_class_links=cross_class_links, update=update)
    manifest_file = manifest_path(out_dir, name)
    manifest.save(manifest_file)
    output.finish(out_dir, manifest.files, manifest_file)  # the dataset's files, then its manifest, last
    journal.path.unlink(missing_ok=True)
    return PackResult(
        name=name, out_dir=str(out_dir), manifest=str(manifest_file), shards=len(results), shards_resumed=0,
        images=len(entries) if entries is not None else images, records=manifest.records, rejects=len(all_rejects),
        reencoded=sum(result.reencoded for result in results),
        bytes_out=sum(record.bytes for shard in manifest.shards for record in shard.files),
        rejects_file=str(rejects_file), skipped=len(skipped), skipped_file=str(skipped_file) if skipped else "",
        skipped_by_extension=manifest.skipped_by_extension, cross_class_links=cross_class_links,
        reject_samples=all_rejects[:10])


def _finish_node(out_dir: Path, name: str, node: NodeShare, journal: _Journal, plan: _Plan, entries: EntryList,
                 classes: Sequence[str] | None, label_convention: str, write_list: bool,
                 rejects: Sequence[tuple[str, str]], skipped: Sequence[tuple[str, str]], cross_class_links: int,
                 listing_state: str, resumed: int) -> PackResult:
    """A node's share is packed: its partial manifest (the journal, the plan's digests and what the listing
    found, for ``commit_dataset``) replaces its journal.  Node 0 also writes the class map and the list."""
    if node.rank == 0:
        if classes is not None:
            write_class_map(out_dir / f"{name}.synsets.txt", classes)
        if write_list:
            write_lst(out_dir / f"{name}.lst", entries)
    partial = out_dir / f"{node.tag(name)}{PARTIAL_SUFFIX}"
    data = {**journal.as_dict(), "node": {"rank": node.rank, "count": node.count}, "digests": plan.digests,
            "listing_state": listing_state, "classes": list(classes) if classes is not None else None,
            "label_convention": label_convention, "write_list": write_list, "images": len(entries),
            "rejects": [list(row) for row in rejects], "skipped": [list(row) for row in skipped],
            "cross_class_links": cross_class_links}
    with atomic_output(partial) as stream:
        stream.write(json.dumps(data).encode("utf-8"))
    journal.path.unlink(missing_ok=True)
    results = list(journal.done.values())
    return PackResult(
        name=name, out_dir=str(out_dir), manifest=str(partial), shards=len(results), shards_resumed=resumed,
        images=sum(len(plan.ranges[result.index]) for result in results),
        records=sum(result.records for result in results),
        rejects=sum(len(result.rejects) for result in results),
        reencoded=sum(result.reencoded for result in results),
        bytes_out=sum(record.bytes for result in results for record in result.files), rejects_file="")


class CommitRefused(RefusedError):
    """The nodes' partial manifests do not make one whole, consistent dataset: the message says what is missing
    or which two disagree."""


def _partial_name(path: Path) -> tuple[str, int, int] | None:
    match = re.fullmatch(r"(.+)\.node-(\d{5})-of-(\d{5})" + re.escape(PARTIAL_SUFFIX), path.name)
    return (match.group(1), int(match.group(2)), int(match.group(3))) if match else None


def commit_dataset(out_dir: str | Path, name: str | None = None) -> PackResult:
    """Merge the partial manifests that ``--num-nodes N --node-rank K`` runs left in ``out_dir`` into the dataset:
    its rejects and skipped lists, combined index and manifest, as one machine would have written them.
    CommitRefused when a node has not finished, a shard is missing, or two partials disagree."""
    out_dir = check_output_folder(out_dir)
    found = [(path, parsed) for path in sorted(out_dir.glob(f"*.node-*{PARTIAL_SUFFIX}"))
             if (parsed := _partial_name(path)) is not None]
    names = sorted({parsed[0] for _, parsed in found})
    if name is None:
        if len(names) != 1:
            raise UsageError(f"{out_dir}: " + (f"partial manifests of several datasets ({', '.join(names)}): pass --name"
                                               if names else "no partial manifest (NAME.node-K-of-N.partial.json) in it"))
        name = names[0]
    mine = [(path, rank, count) for path, (base, rank, count) in found if base == name]
    if not mine:
        raise CommitRefused(f"{out_dir}: no partial manifest of {name} (NAME.node-K-of-N.partial.json)")
    journals = sorted(out_dir.glob(f"{name}.node-*-of-*{JOURNAL_SUFFIX}"))
    if journals:
        raise CommitRefused(f"{journals[0].name}: that node is packing, or was stopped; let it finish (or rerun it), "
                            "then commit")
    from contextlib import ExitStack

    from recordio_pack.locking import DatasetLocked

    with dataset_lock(out_dir, name), ExitStack() as nodes:
        for _, rank, count in mine:  # no node may start while its partial is being merged
            try:
                nodes.enter_context(dataset_lock(out_dir, NodeShare(rank, count).tag(name)))
            except DatasetLocked as error:
                raise CommitRefused(f"{error}; commit when it has finished") from None
        return _commit_locked(out_dir, name, mine)


def _commit_locked(out_dir: Path, name: str, partials: list[tuple[Path, int, int]]) -> PackResult:
    counts = {count for _, _, count in partials}
    if len(counts) != 1:
        raise CommitRefused(f"{name}: partial manifests of runs with different --num-nodes ({sorted(counts)}); "
                            "remove the stale ones")
    count = counts.pop()
    missing_nodes = sorted(set(range(count)) - {rank for _, rank, _ in partials})
    if missing_nodes:
        raise CommitRefused(f"{name}: node(s) {', '.join(map(str, missing_nodes))} of {count} have not finished (no "
                            f"{NodeShare(missing_nodes[0], count).tag(name)}{PARTIAL_SUFFIX}); run them, then commit")
    parts = []
    for path, _, _ in partials:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            parts.append((path, data, _Journal.load(path)))
        except (ValueError, KeyError, TypeError) as error:
            raise CommitRefused(f"{path}: unreadable partial manifest ({error})") from None
    first_path, first, _ = parts[0]
    for path, data, _ in parts[1:]:
        for key in ("options_fingerprint", "codec", "origin", "shard_count", "digests", "listing_state"):
            if data.get(key) != first.get(key):
                raise CommitRefused(f"{path.name} and {first_path.name} disagree on {key}: the nodes packed different "
                                    "inputs or options; rerun the odd one with the others' options")
    done: dict[int, ShardResult] = {}
    for path, _, journal in parts:
        for index, result in journal.done.items():
            if index in done and done[index] != result:
                raise CommitRefused(f"two nodes packed shard {index} differently ({path.name} and another)")
            done[index] = result
    try:
        options = PackOptions(**first["options"])
    except (TypeError, ValueError) as error:
        raise CommitRefused(f"{first_path}: options this recordio-pack cannot read ({error})") from None
    classes = first.get("classes")
    fmt = options.record_format(classes)
    shard_count = first["shard_count"]
    absent = [index for index in range(shard_count) if index not in done]
    if absent:
        files = ", ".join(fmt.shard_files(name, index, shard_count)[0] for index in absent[:3])
        raise CommitRefused(f"{name}: {len(absent)} shard(s) missing from every partial manifest ({files}"
                            f"{' ...' if len(absent) > 3 else ''}); rerun the node(s) that own them")
    gone = [record.name for index in sorted(done) for record in done[index].files
            if not (out_dir / record.name).is_file() or (out_dir / record.name).stat().st_size != record.bytes]
    if gone:
        raise CommitRefused(f"{name}: {gone[0]} is missing or not the size its node recorded; rerun that node")
    journal = _Journal(out_dir / f"{name}{JOURNAL_SUFFIX}", first["options"], first["codec"],
                       first["options_fingerprint"], first["origin"], shard_count, done=done)
    rejects = [(path, reason) for path, reason in first.get("rejects", [])]
    skipped = [(path, why) for path, why in first.get("skipped", [])]
    committed = _finish(out_dir, name, options, first["origin"], journal, classes,
                        first.get("label_convention", "lst"), None, first.get("write_list", False), rejects, skipped,
                        first.get("cross_class_links", 0), first["listing_state"], None, fmt,
                        identity=(first["options_fingerprint"], first["codec"]), images=first.get("images", 0))
    replaced = out_dir / f"{name}{REPLACED_SUFFIX}"
    if replaced.exists():  # an update: the old version's shard files that the new one does not have go
        try:
            old_files = _shard_files(Manifest.load(replaced).shards)
        except ValueError:
            old_files = []
        kept = {record.name for result in done.values() for record in result.files}
        _remove_files(out_dir, [file for file in old_files if file not in kept])
        replaced.unlink()
    for path, _, _ in partials:
        path.unlink(missing_ok=True)
    return committed
