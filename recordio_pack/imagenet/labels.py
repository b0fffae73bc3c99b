"""ImageNet label conventions and the class-map files written with every prepared or packed set.

- ``sorted`` (default): index of the WNID in sorted order, 0..999 — what MXNet, PyTorch (ImageFolder) and Keras
  pretrained models use, and what ``recordio-pack list`` gives a ``train/<wnid>/`` tree.
- ``devkit``: ILSVRC2012_ID - 1, the devkit's meta.mat order (needs the devkit).
- ``tf``: sorted index + 1, label 0 left for "background" (TensorFlow's inception / TPU scripts, 1001 outputs).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from recordio_pack.errors import UsageError
from recordio_pack.fsutil import atomic_output
from recordio_pack.imagenet.devkit import Devkit

__all__ = ["CONVENTIONS", "BACKGROUND", "TABLE_NAME", "CLASS_MAP_NAME", "ClassRow", "LabelMap", "label_map",
           "write_label_files"]

CONVENTIONS = ("sorted", "devkit", "tf")
BACKGROUND = "background"  # tf convention's label 0
TABLE_NAME = "ilsvrc2012_classes.tsv"
CLASS_MAP_NAME = "synsets.txt"


@dataclass(frozen=True)
class ClassRow:
    wnid: str
    sorted_index: int  # 0-based index in sorted WNID order
    ilsvrc_id: int | None  # 1-based devkit ID; None without a devkit
    names: str  # human-readable, from meta.mat's "words" ("" without a devkit)


@dataclass(frozen=True)
class LabelMap:
    """Which label each class gets under one convention; ``rows`` are in sorted WNID order."""

    convention: str
    rows: tuple[ClassRow, ...]
    _index: dict[str, ClassRow] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {row.wnid: row for row in self.rows})

    def label(self, wnid: str) -> int:
        """The label of ``wnid``; KeyError for a class this map does not have."""
        row = self._index[wnid]
        if self.convention == "devkit":
            assert row.ilsvrc_id is not None
            return row.ilsvrc_id - 1
        return row.sorted_index + (1 if self.convention == "tf" else 0)

    def class_names(self) -> list[str]:
        """Class name (WNID) by label, 0..max; under ``tf`` entry 0 is "background"."""
        names = [BACKGROUND] if self.convention == "tf" else []
        names += [row.wnid for row in sorted(self.rows, key=lambda row: self.label(row.wnid))]
        return names

    def table(self) -> list[tuple[int, ClassRow]]:
        """``(label, row)`` in label order."""
        return sorted(((self.label(row.wnid), row) for row in self.rows), key=lambda item: item[0])


def label_map(convention: str = "sorted", *, devkit: Devkit | None = None,
              wnids: Iterable[str] | None = None) -> LabelMap:
    """The label map for ``convention`` over the devkit's classes, or over ``wnids`` when there is no devkit.

    With both, every WNID in ``wnids`` must be one of the devkit's classes (UsageError otherwise).
    """
    if convention not in CONVENTIONS:
        raise UsageError(f"unknown label convention {convention!r} (choose {', '.join(CONVENTIONS)})")
    if devkit is None:
        if convention == "devkit":
            raise UsageError("--labels devkit needs the devkit (ILSVRC2012_devkit_t12.tar.gz)")
        if wnids is None:
            raise UsageError("need the devkit or the class list to build labels")
        ordered = sorted(set(wnids))
        return LabelMap(convention, tuple(ClassRow(wnid, index, None, "") for index, wnid in enumerate(ordered)))
    if wnids is not None:
        unknown = sorted(set(wnids) - {synset.wnid for synset in devkit.synsets})
        if unknown:
            raise UsageError(f"{len(unknown)} class(es) are not in the devkit {devkit.source}: "
                             f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}")
    ordered_synsets = sorted(devkit.synsets, key=lambda synset: synset.wnid)
    rows = tuple(ClassRow(synset.wnid, index, synset.ilsvrc_id, synset.words)
                 for index, synset in enumerate(ordered_synsets))
    return LabelMap(convention, rows)


def _clean(text: str) -> str:
    return " ".join(text.split())  # no tabs or newlines inside a TSV field


def write_label_files(labels: LabelMap, out_dir: str | Path) -> dict[str, str]:
    """Write ``ilsvrc2012_classes.tsv`` (label, ILSVRC2012_ID, wnid, sorted index, names; label order) and
    ``synsets.txt`` (``label<TAB>wnid`` lines, what ``list``/``pack`` read) into ``out_dir``; return their paths.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table_path, map_path = out_dir / TABLE_NAME, out_dir / CLASS_MAP_NAME
    lines = [f"#label ({labels.convention})\tILSVRC2012_ID\twnid\tsorted_index\tnames\n"]
    if labels.convention == "tf":
        lines.append(f"0\t\t{BACKGROUND}\t\t{BACKGROUND}\n")
    for label, row in labels.table():
        ilsvrc_id = "" if row.ilsvrc_id is None else str(row.ilsvrc_id)
        lines.append(f"{label}\t{ilsvrc_id}\t{row.wnid}\t{row.sorted_index}\t{_clean(row.names)}\n")
    with atomic_output(table_path) as stream:
        stream.write("".join(lines).encode("utf-8"))
    class_map = "".join(f"{label}\t{name}\n" for label, name in enumerate(labels.class_names()))
    with atomic_output(map_path) as stream:
        stream.write(class_map.encode("utf-8"))
    return {"table": str(table_path), "class_map": str(map_path)}
