"""What ``pack`` reads: a class-folder tree, an im2rec ``.lst`` with its root, or an ILSVRC2012 tar, as one typed value.

``open_input`` is the one dispatcher; ``pack`` never branches on the kind of input after it.  A folder is listed
here, so what cannot be packed (outside a class folder, not a regular file, a path a `.lst` cannot hold) arrives
as ``rejects`` and what is not an image by extension as ``skipped``: every file under the folder is accounted for.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from recordio_pack.errors import RecordioPackError, UsageError
from recordio_pack.sources import EntryList, FolderSource, ImageSource

if TYPE_CHECKING:
    from recordio_pack.aws.session import AwsTarget

__all__ = ["PackInput", "InputNotFound", "open_input", "check_dataset_name", "check_output_folder",
           "default_dataset_name"]


class InputNotFound(RecordioPackError):
    """The input path does not exist (exit 1, like every missing file)."""


@dataclass
class PackInput:
    entries: EntryList  # a list, or a listing.LstIndex over a .lst
    source: ImageSource
    classes: list[str] | None  # label -> class name, when known
    label_convention: str  # "sorted", "devkit", "tf" or "lst"
    name: str  # default dataset name, from the resolved input path
    origin: str  # what was packed, resolved: checked on reruns so another input never mixes into a dataset
    write_list: bool  # the list was made here: write NAME.lst beside the shards
    rejects: list[tuple[str, str]] = field(default_factory=list)  # found but cannot be packed: (path, why)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # not an input by extension: (path, why)
    cross_class_links: list[tuple[str, str]] = field(default_factory=list)  # (link, class of its target)
    folder: str = ""  # a folder input, resolved: the output must not lie inside it

    def check_output(self, out_dir: str | Path) -> None:
        """UsageError when ``out_dir`` lies inside the folder being packed: the next pack would list its own
        output as a class."""
        if self.folder and Path(out_dir).resolve().is_relative_to(self.folder):
            raise UsageError(f"{out_dir}: the output folder is inside the input folder {self.folder}; a rerun would "
                             "pack the output as a class. Choose an output folder outside it")


_BAD_NAME = re.compile(r"[/\\\x00-\x1f\x7f]")


def check_dataset_name(name: str) -> str:
    """``name`` when it is a plain file-name stem for NAME.rec, NAME.manifest.json, ...; else UsageError."""
    if not name or name in (".", "..") or name.startswith(".") or _BAD_NAME.search(name) or len(name) > 200:
        raise UsageError(f"dataset name {name!r} cannot name files in the output folder: use letters, digits, "
                         "'-', '_' or '.', not starting with '.', without '/' (it names NAME.rec, NAME.manifest.json)")
    return name


def default_dataset_name(path: Path) -> str:
    """The input's own name, resolved (so ``pack .`` is named after the folder, not "")."""
    resolved = path.resolve()
    stem = resolved.name if resolved.is_dir() else resolved.name.split(".")[0] if resolved.suffix == ".tar" else resolved.stem
    return stem or "dataset"


def open_input(input_path: str | Path, *, root: str | None = None, classes_file: str | None = None,
               exts: Sequence[str] = (".jpeg", ".jpg", ".png"), shuffle: bool = True, seed: int = 100,
               labels: str = "sorted", devkit: str | None = None, aws: AwsTarget | None = None) -> PackInput:
    """The entries and source to pack from a folder, a ``.lst`` (with ``root``) or an ILSVRC2012 ``.tar``; a
    folder or a ``root`` may be an S3 prefix (``s3://bucket/prefix``, reached with ``aws``'s settings)."""
    from recordio_pack.listing import LstIndex, ordered_entries, read_class_map, scan_tree

    if str(input_path).startswith("s3://"):
        return _open_s3_folder(str(input_path), exts, shuffle, seed, aws)
    path = Path(input_path)
    if not path.exists():
        raise InputNotFound(f"{path}: no such file or folder")
    if path.is_dir():
        listing = scan_tree(path, exts)
        return PackInput(ordered_entries(listing.entries, shuffle, seed), FolderSource(str(path)), listing.classes,
                         "sorted", default_dataset_name(path), f"folder:{path.resolve()}", True,
                         listing.rejects, listing.skipped, listing.cross_class_links, str(path.resolve()))
    if path.suffix == ".lst":
        if not root:
            raise UsageError("--root is required with a .lst input (the folder its paths are relative to)")
        if not root.startswith("s3://") and not Path(root).is_dir():
            raise InputNotFound(f"{root}: no such folder (--root)")
        try:
            entries = LstIndex(path)
        except ValueError as error:
            raise UsageError(str(error)) from None
        class_file = Path(classes_file) if classes_file else path.parent / "synsets.txt"
        if classes_file and not class_file.exists():
            raise InputNotFound(f"{class_file}: no such file (--classes)")
        try:
            classes = read_class_map(class_file) if class_file.exists() else None
        except ValueError as error:
            raise UsageError(str(error)) from None
        if root.startswith("s3://"):
            from recordio_pack.aws.s3_input import parse_root
            from recordio_pack.aws.session import AwsTarget

            source: ImageSource = parse_root(root, aws or AwsTarget())
            origin = f"lst:{path.resolve()}:{source.describe()}"
        else:
            source, origin = FolderSource(root), f"lst:{path.resolve()}:{Path(root).resolve()}"
        return PackInput(entries, source, classes, "lst", default_dataset_name(path), origin, False)
    if path.suffix == ".tar":
        import tarfile

        from recordio_pack.imagenet.archive import open_archive_input

        try:
            archive_entries, source, classes, convention = open_archive_input(
                path, labels=labels, devkit=Path(devkit) if devkit else None)
        except tarfile.TarError as error:
            raise RecordioPackError(f"{path}: unreadable archive ({error}); is the download complete?") from None
        return PackInput(ordered_entries(archive_entries, shuffle, seed), source, classes, convention,
                         default_dataset_name(path), f"tar:{path.resolve()}", True)
    raise UsageError(f"{path}: not a folder, .lst or .tar")


def _open_s3_folder(uri: str, exts: Sequence[str], shuffle: bool, seed: int, aws: AwsTarget | None) -> PackInput:
    from recordio_pack.aws.s3_input import list_s3_tree, parse_root
    from recordio_pack.aws.session import AwsTarget
    from recordio_pack.listing import ordered_entries

    source = parse_root(uri, aws or AwsTarget())
    listing = list_s3_tree(source, exts)
    name = source.prefix.rstrip("/").rsplit("/", 1)[-1] or source.bucket
    return PackInput(ordered_entries(listing.entries, shuffle, seed), source, listing.classes, "sorted", name,
                     f"s3:{source.describe()}", True, listing.rejects, listing.skipped)


def check_output_folder(out_dir: str | Path) -> Path:
    """``out_dir`` as a Path, or UsageError when something that is not a folder is in the way."""
    path = Path(out_dir)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path}: exists and is not a folder (the output folder)")
    return path
