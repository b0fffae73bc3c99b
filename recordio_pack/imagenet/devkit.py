"""The ILSVRC2012 devkit (``ILSVRC2012_devkit_t12.tar.gz``): class metadata and validation ground truth.

``data/meta.mat`` holds a ``synsets`` struct array (fields ``ILSVRC2012_ID``, ``WNID``, ``words``, ``gloss``,
``num_children``, ``children``, ``wordnet_height``, ``num_train_images``): the 1000 leaf classes
(``num_children == 0``) have ILSVRC2012_ID 1..1000, in an order that is *not* sorted WNID order; the other
entries are WordNet ancestors.  ``data/ILSVRC2012_validation_ground_truth.txt`` has one ILSVRC2012_ID per
line: line *n* is the class of ``ILSVRC2012_val_%08d.JPEG`` % *n*.

Reading meta.mat needs scipy (``pip install scipy``, or the package's ``fake``/``test`` extras).
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recordio_pack.errors import RecordioPackError
from recordio_pack.imagenet.safetar import iter_files

__all__ = ["DEVKIT_NAME", "META_MAT", "GROUND_TRUTH", "Synset", "Devkit", "read_devkit", "parse_meta_mat",
           "parse_ground_truth"]

DEVKIT_NAME = "ILSVRC2012_devkit_t12.tar.gz"
META_MAT = "data/meta.mat"
GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"


@dataclass(frozen=True)
class Synset:
    ilsvrc_id: int  # 1-based ILSVRC2012_ID
    wnid: str  # WordNet ID, e.g. "n01440764"
    words: str  # human-readable names, comma separated ("tench, Tinca tinca")
    num_train_images: int = 0  # as meta.mat states it (0 when the field is missing)


@dataclass(frozen=True)
class Devkit:
    """The leaf classes in ILSVRC2012_ID order and the validation ground truth (ILSVRC2012_IDs)."""

    synsets: tuple[Synset, ...]
    val_ground_truth: tuple[int, ...]  # [n - 1] = ILSVRC2012_ID of ILSVRC2012_val_%08d.JPEG % n
    source: str = ""
    _by_id: dict[int, Synset] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._by_id.update((synset.ilsvrc_id, synset) for synset in self.synsets)

    def synset(self, ilsvrc_id: int) -> Synset:
        return self._by_id[ilsvrc_id]

    def val_wnid(self, number: int) -> str:
        """The WNID of validation image ``number`` (1-based, as in its file name)."""
        if not 1 <= number <= len(self.val_ground_truth):
            raise KeyError(f"validation image {number} is not in the ground truth "
                           f"(1..{len(self.val_ground_truth)})")
        return self._by_id[self.val_ground_truth[number - 1]].wnid

    @property
    def is_full_ilsvrc2012(self) -> bool:
        """True for the real devkit's shape: 1000 classes and 50,000 validation images."""
        return len(self.synsets) == 1000 and len(self.val_ground_truth) == 50_000


def _loadmat(data: bytes) -> dict[str, Any]:
    try:
        import scipy.io
    except ImportError:
        raise RecordioPackError("reading the devkit's meta.mat needs scipy: pip install scipy "
                                "(or install recordio-pack with the [fake] extra)") from None
    return scipy.io.loadmat(io.BytesIO(data), squeeze_me=True)


def parse_meta_mat(data: bytes, source: str = "meta.mat") -> list[Synset]:
    """The leaf synsets (``num_children == 0``) of a devkit meta.mat, sorted by ILSVRC2012_ID.

    Raises RecordioPackError unless their IDs run 1..N with unique WNIDs.
    """
    import numpy as np

    try:
        synsets = np.atleast_1d(_loadmat(data)["synsets"])
    except RecordioPackError:
        raise
    except Exception as error:  # scipy raises many kinds for a damaged file
        raise RecordioPackError(f"{source}: cannot read a 'synsets' struct array: {error}") from None
    names = synsets.dtype.names or ()
    missing = {"ILSVRC2012_ID", "WNID", "num_children"} - set(names)
    if missing:
        raise RecordioPackError(f"{source}: synsets lacks the field(s) {', '.join(sorted(missing))}")
    leaves = []
    for row in synsets:
        if int(row["num_children"]) != 0:
            continue
        leaves.append(Synset(int(row["ILSVRC2012_ID"]), str(row["WNID"]).strip(),
                             str(row["words"]).strip() if "words" in names else "",
                             int(row["num_train_images"]) if "num_train_images" in names else 0))
    leaves.sort(key=lambda synset: synset.ilsvrc_id)
    if [synset.ilsvrc_id for synset in leaves] != list(range(1, len(leaves) + 1)):
        raise RecordioPackError(f"{source}: the leaf synsets' ILSVRC2012_IDs do not run 1..{len(leaves)}")
    if len({synset.wnid for synset in leaves}) != len(leaves):
        raise RecordioPackError(f"{source}: a WNID appears twice among the leaf synsets")
    return leaves


def parse_ground_truth(text: str, classes: int, source: str = "ground truth") -> list[int]:
    """One ILSVRC2012_ID (1..``classes``) per non-empty line; raises RecordioPackError naming a bad line."""
    ids = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = int(line)
        except ValueError:
            raise RecordioPackError(f"{source}:{number}: not a class number: {line.strip()!r}") from None
        if not 1 <= value <= classes:
            raise RecordioPackError(f"{source}:{number}: class {value} is outside 1..{classes}")
        ids.append(value)
    return ids


def _read_members(path: Path) -> dict[str, bytes]:
    """meta.mat and the ground truth from the devkit archive (or an extracted devkit folder)."""
    wanted = {META_MAT: b"", GROUND_TRUTH: b""}
    found: dict[str, bytes] = {}
    if path.is_dir():
        for suffix in wanted:
            candidate = path / suffix
            if candidate.is_file():
                found[suffix] = candidate.read_bytes()
        return found
    try:
        with tarfile.open(path, mode="r:*") as tar:
            for member, name in iter_files(tar, str(path)):
                for suffix in wanted:
                    if name == suffix or name.endswith("/" + suffix):
                        stream = tar.extractfile(member)
                        assert stream is not None
                        found[suffix] = stream.read()
    except (tarfile.TarError, OSError, EOFError) as error:
        raise RecordioPackError(f"{path}: cannot read the devkit archive: {error}") from None
    return found


def read_devkit(path: str | Path) -> Devkit:
    """Parse ``ILSVRC2012_devkit_t12.tar.gz`` (or its extracted folder) without extracting it to disk."""
    path = Path(path)
    if not path.exists():
        raise RecordioPackError(f"{path}: devkit not found")
    members = _read_members(path)
    for suffix in (META_MAT, GROUND_TRUTH):
        if suffix not in members:
            raise RecordioPackError(f"{path}: not an ILSVRC2012 devkit (no {suffix} in it)")
    synsets = parse_meta_mat(members[META_MAT], f"{path}:{META_MAT}")
    truth = parse_ground_truth(members[GROUND_TRUTH].decode("ascii", "replace"), len(synsets),
                               f"{path}:{GROUND_TRUTH}")
    return Devkit(tuple(synsets), tuple(truth), str(path))
