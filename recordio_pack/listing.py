"""Listing: a class-folder tree to im2rec `.lst` entries, and reading/writing `.lst` and class-map files.

Labels follow sorted top-level folder order (0..N-1: the convention of MXNet, PyTorch and Keras pretrained
models); images inside a class folder are found recursively.  Symlinked directories are followed once each,
so loops neither hang nor duplicate entries.
"""

from __future__ import annotations

import os
import random
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from recordio_pack.errors import RecordioPackError
from recordio_pack.format import format_lst_line, lst_path_problem, parse_lst_line
from recordio_pack.fsutil import atomic_output
from recordio_pack.sources import Entry, file_kind

__all__ = ["DEFAULT_EXTS", "DEFAULT_SEED", "TreeListing", "ListResult", "LstIndex", "LstSlice", "scan_tree", "UnreadableFolder", "count_by_extension", "ordered_entries",
           "split_entries", "write_lst", "read_lst", "write_class_map", "read_class_map", "make_lists"]

DEFAULT_EXTS = (".jpeg", ".jpg", ".png")
DEFAULT_SEED = 100  # im2rec's shuffle seed, so our lists match its lists for the same tree
CLASS_MAP_NAME = "synsets.txt"


@dataclass
class TreeListing:
    """Every file found under a root, each in exactly one of ``entries``, ``rejects`` and ``skipped``."""

    classes: list[str]  # label -> class folder name
    entries: list[Entry]  # class order, then sorted walk order inside a class; index = position
    rejects: list[tuple[str, str]] = field(default_factory=list)  # (path, why it cannot be packed)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why it is not an input): other extensions
    cross_class_links: list[tuple[str, str]] = field(default_factory=list)  # (link, class folder of its target)

    @property
    def files(self) -> int:
        """Files found (any type): the invariant is files = entries + rejects + skipped."""
        return len(self.entries) + len(self.rejects) + len(self.skipped)

    @property
    def problems(self) -> list[tuple[str, str]]:
        return self.rejects

    @property
    def skipped_other_ext(self) -> int:
        return len(self.skipped)

    def skipped_by_extension(self) -> dict[str, int]:
        return count_by_extension(path for path, _ in self.skipped)


def count_by_extension(paths: Iterable[str]) -> dict[str, int]:
    """How many of ``paths`` per lower-case extension, as scan_tree tells extensions ("(none)" for none)."""
    counts: dict[str, int] = {}
    for path in paths:
        extension = os.path.splitext(path)[1].lower() or "(none)"
        counts[extension] = counts.get(extension, 0) + 1
    return dict(sorted(counts.items()))


class UnreadableFolder(RecordioPackError):
    """A folder under the root cannot be listed: its files could be neither packed nor accounted for."""

    def __init__(self, path: str, error: OSError) -> None:
        super().__init__(f"{path}: cannot list this folder ({error.strerror or error}); every folder under the "
                         "input must be readable, so that each file is packed, rejected or skipped with a reason")
        self.path = path


def _scandir_sorted(directory: Path) -> list[os.DirEntry[str]]:
    try:
        return sorted(os.scandir(directory), key=lambda item: item.name)
    except OSError as error:
        raise UnreadableFolder(str(directory), error) from None


def _walk_files(directory: Path, seen: set[tuple[int, int]]) -> Iterable[os.DirEntry[str]]:
    """Non-directory entries below ``directory`` in sorted order, following symlinked directories at most once."""
    try:
        info = directory.stat()
    except OSError:
        return
    identity = (info.st_dev, info.st_ino)
    if identity in seen:
        return
    seen.add(identity)
    for child in _scandir_sorted(directory):
        if _is_dir(child):
            yield from _walk_files(Path(child.path), seen)
        else:
            yield child


def _not_an_image_file(child: os.DirEntry[str]) -> str | None:
    """Why a non-directory entry cannot be read as an image, judged from its metadata alone (never opened)."""
    try:
        mode = child.stat(follow_symlinks=True).st_mode
    except FileNotFoundError:
        return "broken symbolic link" if child.is_symlink() else "vanished while listing"
    except OSError as error:
        return f"unreadable: {error.strerror or error}"
    kind = file_kind(mode)
    return f"not a regular file ({kind})" if kind else None


def scan_tree(root: str | Path, exts: Sequence[str] = DEFAULT_EXTS) -> TreeListing:
    """Every file under ``root``: class-folder images as entries (labels from sorted class-folder order), and
    every other file as a reject (cannot be packed: why) or a skip (not an image extension: why).

    A folder that cannot be listed raises UnreadableFolder: its files could not be accounted for.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: {'not a folder' if root.exists() else 'no such folder'}")
    wanted = {ext.lower() if ext.startswith(".") else f".{ext.lower()}" for ext in exts}
    listing = TreeListing(classes=[], entries=[])
    seen: set[tuple[int, int]] = set()
    seen.add((root.stat().st_dev, root.stat().st_ino))
    items: list[tuple[str, int]] = []
    children = _scandir_sorted(root)
    class_dirs = [child for child in children if _is_dir(child)]
    # A class folder belongs to its own class: a symlink to it from inside another class is not followed.
    unwalked = {(child.stat().st_dev, child.stat().st_ino) for child in class_dirs}
    seen |= unwalked
    class_of_folder = {os.path.realpath(child.path): child.name for child in class_dirs}
    class_names = {child.name for child in class_dirs}
    for child in children:
        if child.name in class_names:
            continue
        relative = child.name
        if os.path.splitext(relative)[1].lower() in wanted:
            listing.rejects.append((relative, "outside any class folder (images go in ROOT/CLASS/)"))
        else:
            listing.skipped.append((relative, "outside any class folder, not an image extension"))
    for child in class_dirs:
        label = len(listing.classes)
        listing.classes.append(child.name)
        identity = (child.stat().st_dev, child.stat().st_ino)
        if identity in unwalked:  # else a second name for a class folder already listed
            unwalked.discard(identity)
            seen.discard(identity)
        for found in _walk_files(Path(child.path), seen):
            relative = Path(found.path).relative_to(root).as_posix()
            extension = os.path.splitext(found.name)[1].lower()
            if extension not in wanted:
                listing.skipped.append((relative, f"extension {extension or '(none)'} is not in --exts"))
                continue
            problem = _not_an_image_file(found) or lst_path_problem(relative)
            if problem:
                listing.rejects.append((relative, problem))
                continue
            if found.is_symlink():
                target_class = _class_of(os.path.realpath(found.path), class_of_folder)
                if target_class is not None and target_class != child.name:
                    listing.cross_class_links.append((relative, target_class))
            items.append((relative, label))
    labels = [(float(label),) for label in range(len(listing.classes))]  # one shared tuple per class
    listing.entries = [Entry(index, labels[label], relative) for index, (relative, label) in enumerate(items)]
    return listing


def _is_dir(child: os.DirEntry[str]) -> bool:
    try:
        return child.is_dir(follow_symlinks=True)
    except OSError:
        return False


def _class_of(real_path: str, class_of_folder: dict[str, str]) -> str | None:
    """The class folder (by real path) that holds ``real_path``, if any."""
    folder = os.path.dirname(real_path)
    while True:
        if folder in class_of_folder:
            return class_of_folder[folder]
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def ordered_entries(entries: list[Entry], shuffle: bool = True, seed: int = DEFAULT_SEED) -> list[Entry]:
    """The list order to pack in: a seeded shuffle by default, so neighbouring records mix classes."""
    ordered = list(entries)
    if shuffle:
        random.Random(seed).shuffle(ordered)
    return ordered


def split_entries(entries: list[Entry], train_ratio: float = 1.0, test_ratio: float = 0.0,
                  chunks: int = 1) -> dict[str, list[Entry]]:
    """im2rec's chunks and train/val/test split; keys are the file suffixes ("" "_train" "_val" "_test")."""
    if not (0 < train_ratio <= 1 and 0 <= test_ratio < 1 and train_ratio + test_ratio <= 1):
        raise ValueError("need 0 < train-ratio <= 1, 0 <= test-ratio < 1 and their sum <= 1")
    if chunks < 1:
        raise ValueError("chunks must be >= 1")
    parts: dict[str, list[Entry]] = {}
    chunk_size = -(-len(entries) // chunks) if entries else 0
    for number in range(chunks):
        chunk = entries[number * chunk_size:(number + 1) * chunk_size]
        chunk_tag = f"_{number}" if chunks > 1 else ""
        train_end = int(chunk_size * train_ratio)
        test_end = int(chunk_size * test_ratio)
        if train_ratio == 1.0:
            parts[chunk_tag] = chunk
            continue
        if test_ratio:
            parts[f"{chunk_tag}_test"] = chunk[:test_end]
        if train_ratio + test_ratio < 1.0:
            parts[f"{chunk_tag}_val"] = chunk[test_end + train_end:]
        parts[f"{chunk_tag}_train"] = chunk[test_end:test_end + train_end]
    return parts


def write_lst(path: str | Path, entries: Iterable[Entry]) -> None:
    from recordio_pack.format import LstEntry

    with atomic_output(path) as stream:
        for entry in entries:
            stream.write(format_lst_line(LstEntry(entry.index, entry.labels, entry.path)).encode("utf-8"))


def read_lst(path: str | Path) -> list[Entry]:
    """Entries of an im2rec `.lst`, in file order; ValueError names the first bad line."""
    with open(path, "rb") as stream:
        return list(_parse_lines(stream.read(), str(path), 1))


def _parse_lines(data: bytes, origin: str, first_line: int) -> Iterator[Entry]:
    shared_labels: dict[tuple[float, ...], tuple[float, ...]] = {}
    for number, raw in enumerate(data.split(b"\n"), first_line):
        if not raw.strip():
            continue
        try:
            parsed = parse_lst_line(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as error:
            raise ValueError(f"{origin}:{number}: {error}") from None
        yield Entry(parsed.index, shared_labels.setdefault(parsed.labels, parsed.labels), parsed.path)


@dataclass(frozen=True)
class LstSlice:
    """Lines ``[start, stop)`` (byte offsets) of a `.lst`: what a worker needs to read its shard's entries itself,
    so the parent never sends (or holds) the entries."""

    path: str
    start: int
    stop: int
    count: int
    first_line: int

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Entry]:
        with open(self.path, "rb") as stream:
            stream.seek(self.start)
            data = stream.read(self.stop - self.start)
        return _parse_lines(data, self.path, self.first_line)


class LstIndex:
    """A `.lst` read once for the byte offset of each entry (8 bytes per image), not held as entries.

    ``len``, iteration and slicing (``index[a:b]`` -> ``LstSlice``) behave like a list of entries.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._starts = array("q")  # byte offset of each non-blank line, plus the end of the last one
        self._lines = array("q")  # 1-based line number of each non-blank line, for error messages
        with open(self.path, "rb") as stream:
            offset = 0
            for number, raw in enumerate(stream, 1):
                if raw.strip():
                    self._starts.append(offset)
                    self._lines.append(number)
                    end = offset + len(raw)
                offset += len(raw)
        self._starts.append(end if self._lines else 0)
        for _ in self:  # parse everything once, so a bad line fails now, naming its number
            pass

    def __len__(self) -> int:
        return len(self._lines)

    def __getitem__(self, span: slice) -> LstSlice:
        start, stop, _ = span.indices(len(self))
        stop = max(start, stop)
        first_line = self._lines[start] if start < len(self) else 0
        return LstSlice(self.path, self._starts[start], self._starts[stop], stop - start, first_line)

    def __iter__(self) -> Iterator[Entry]:
        chunk = 4096  # lines parsed at a time: memory stays flat whatever the list length
        for start in range(0, len(self), chunk):
            yield from self[start:start + chunk]


def write_class_map(path: str | Path, classes: Sequence[str]) -> None:
    """``label<TAB>class name`` lines, label order."""
    with atomic_output(path) as stream:
        stream.write(format_class_map(classes).encode("utf-8"))


def format_class_map(classes: Sequence[str]) -> str:
    return "".join(f"{label}\t{name}\n" for label, name in enumerate(classes))


def read_class_map(path: str | Path) -> list[str]:
    classes: list[str] = []
    with open(path, encoding="utf-8") as stream:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            label, _, name = line.rstrip("\n").partition("\t")
            if not label.strip().isdigit():
                raise ValueError(f"{path}:{number}: label {label!r} is not a whole number (want label<TAB>name)")
            if int(label) != len(classes):
                raise ValueError(f"{path}:{number}: labels must run 0, 1, 2, ... in order, got {label}")
            classes.append(name)
    return classes


@dataclass
class ListResult:
    lists: dict[str, int]  # written .lst path -> entries
    class_map: str
    classes: int
    images: int
    problems: list[tuple[str, str]]  # files that could not be listed, with the reason
    skipped_other_ext: int
    skipped_by_extension: dict[str, int] = field(default_factory=dict)
    cross_class_links: list[tuple[str, str]] = field(default_factory=list)


def make_lists(root: str | Path, prefix: str | Path, *, exts: Sequence[str] = DEFAULT_EXTS, shuffle: bool = True,
               seed: int = DEFAULT_SEED, train_ratio: float = 1.0, test_ratio: float = 0.0, chunks: int = 1,
               overwrite: bool = False) -> ListResult:
    """``list ROOT PREFIX``: write PREFIX*.lst and the class map beside them; never overwrite unless asked."""
    from recordio_pack.errors import RefusedError

    listing = scan_tree(root, exts)
    parts = split_entries(ordered_entries(listing.entries, shuffle, seed), train_ratio, test_ratio, chunks)
    prefix = Path(prefix)
    targets = {Path(f"{prefix}{suffix}.lst"): part for suffix, part in parts.items()}
    class_map = prefix.parent / CLASS_MAP_NAME
    new_map = format_class_map(listing.classes)
    if not overwrite:
        existing = [str(path) for path in targets if path.exists()]
        if class_map.exists() and class_map.read_text(encoding="utf-8") != new_map:
            existing.append(f"{class_map} (a different class map)")
        if existing:
            raise RefusedError(f"would overwrite {', '.join(existing)}; pass --overwrite to replace")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    for path, part in targets.items():
        write_lst(path, part)
    write_class_map(class_map, listing.classes)
    return ListResult({str(path): len(part) for path, part in targets.items()}, str(class_map),
                      len(listing.classes), len(listing.entries), listing.rejects, listing.skipped_other_ext,
                      listing.skipped_by_extension(), listing.cross_class_links)
