"""TFRecord shards of ``tf.train.Example`` as a ``RecordFormat``, in three layouts (presets):

- ``tpu``: what the Cloud TPU guide's ``imagenet_to_gcs.py`` writes: ``train-00000-of-01024``,
  ``validation-00000-of-00128``; keys ``image/encoded``, ``image/format`` ('JPEG'), ``image/class/label`` (int64,
  1-based over the sorted class map), ``image/class/synset``, ``image/height``, ``image/width``,
  ``image/colorspace`` ('RGB'), ``image/channels`` (3), ``image/filename`` (the file's base name).
- ``aip``: AI Platform's built-in image classifier: ``image/encoded`` and ``image/class/label`` 1..N, plus the
  label map ``NAME.label_map.txt`` (``label<TAB>class``).
- ``tfds``: a TFDS data_dir for ``imagenet2012`` (version ``TFDS_VERSION``): shards
  ``imagenet2012/5.1.0/imagenet2012-SPLIT.tfrecord-00000-of-00016`` with TFDS's keys ``image``, ``label``
  (0-based, sorted WNID order) and ``file_name``, and ``dataset_info.json``, ``features.json`` and
  ``label.labels.txt`` beside them, so ``tfds.builder("imagenet2012", data_dir=OUTDIR)`` loads it unprepared.
  The train and validation packs share those three files (``dataset_info.json`` lists both splits): each
  manifest lists them, and a pack that rewrites them refreshes their checksums in the other split's manifest.

Each shard has DALI's index (``tfrecord2idx``'s ``offset size`` lines) at ``dali_idx/<shard file>.idx``: outside
the shards' own names, so a ``train-*`` glob (the TPU input pipeline's) matches shards only.

Images the layout declares RGB (tpu, tfds) are stored as 3-channel JPEGs: a grayscale JPEG kept as it is by
``--reencode auto`` is converted here (decoded as colour, encoded at ``quality``), as imagenet_to_gcs does.
"""

from __future__ import annotations

import json
import posixpath
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recordio_pack import tfrecord
from recordio_pack.example import ExampleError, decode_example, encode_example
from recordio_pack.format import Buffer, Damage, Frame
from recordio_pack.formats import IndexLine, RecordView, UnknownFormat
from recordio_pack.sources import Entry

__all__ = ["iter_examples", "split_name", "PRESETS", "TFDS_VERSION", "TFDS_NAME", "TFDS_CLASSES", "SPLITS", "TFRecordFormat", "tfrecord_format",
           "default_num_shards", "INDEX_FOLDER"]

PRESETS = ("tpu", "aip", "tfds")
TFDS_NAME = "imagenet2012"
TFDS_VERSION = "5.1.0"  # tensorflow-datasets 4.9's imagenet2012 (5.1.0: "Added test split")
TFDS_CLASSES = 1000
SPLITS = ("train", "validation")
INDEX_FOLDER = "dali_idx"
FRAMING = tfrecord.HEADER_BYTES + tfrecord.FOOTER_BYTES  # bytes a record adds to its data (TFDS's numBytes lacks them)
TPU_SHARDS = {"train": 1024, "validation": 128}  # imagenet_to_gcs.py's defaults
_NUMBERED = "-[0-9][0-9][0-9][0-9][0-9]-of-[0-9][0-9][0-9][0-9][0-9]"
LABEL_BASE = {"tpu": 1, "aip": 1, "tfds": 0}
_REQUIRED = {
    "tpu": {"image/encoded": "bytes", "image/format": "bytes", "image/class/label": "int64",
            "image/class/synset": "bytes", "image/height": "int64", "image/width": "int64",
            "image/colorspace": "bytes", "image/channels": "int64", "image/filename": "bytes"},
    "aip": {"image/encoded": "bytes", "image/class/label": "int64"},
    "tfds": {"image": "bytes", "label": "int64", "file_name": "bytes"},
    "": {},
}


def split_name(name: str) -> str:
    """The split a dataset called ``name`` is (``val`` -> ``validation``), for the layouts that name files after
    the split; other names are returned as they are (and refused by ``name_problem``)."""
    return {"val": "validation", "valid": "validation"}.get(name, name)


def default_num_shards(preset: str, name: str) -> int | None:
    """imagenet_to_gcs.py's shard counts for the ``tpu`` preset (train 1024, validation 128); else None."""
    return TPU_SHARDS.get(name) if preset == "tpu" else None


def tfrecord_format(preset: str, label_base: int | None, classes: Sequence[str] | None,
                    pack_label: bool = False, quality: int = 95) -> TFRecordFormat:
    """The TFRecord format for ``preset``; UnknownFormat for a preset or label base it does not take."""
    if preset not in PRESETS and preset != "":
        raise UnknownFormat(f"unknown TFRecord preset {preset!r} (choose {', '.join(PRESETS)})")
    if label_base not in (None, 0, 1):
        raise UnknownFormat(f"--label-base must be 0 or 1, got {label_base}")
    if preset == "tfds" and label_base == 1:
        raise UnknownFormat("TFDS's imagenet2012 labels are 0-based (--label-base 0); --preset tfds takes no other")
    if preset == "tfds" and classes is not None and len(classes) != TFDS_CLASSES:
        raise UnknownFormat(f"TFDS's imagenet2012 has {TFDS_CLASSES} classes (its label.labels.txt); this input has "
                            f"{len(classes)}, and TFDS refuses a data_dir whose class names differ from its own")
    base = LABEL_BASE.get(preset, 1) if label_base is None else label_base
    return TFRecordFormat(preset, base, tuple(classes) if classes is not None else None, quality)


@dataclass(frozen=True)
class TFRecordFormat:
    preset: str  # "tpu", "aip", "tfds"; "" for a file found without a manifest (keys told by each record)
    label_base: int = 1
    classes: tuple[str, ...] | None = None
    quality: int = 95
    name: str = "tfrecord"
    title: str = "TFRecord"
    max_payload: int = tfrecord.MAX_LENGTH
    limit_text: str = "the 2 GiB record limit of TensorFlow's readers"

    def options(self) -> dict[str, Any]:
        return {"format": "tfrecord", "preset": self.preset, "label_base": self.label_base}

    # ------------------------------------------------------------ names

    def name_problem(self, name: str) -> str | None:
        if self.preset in ("tpu", "tfds") and name not in SPLITS:
            return (f"--preset {self.preset} names shards after the split: pass --name train or --name validation "
                    f"(got {name!r})")
        return None

    def _data_file(self, name: str, index: int, count: int) -> str:
        numbered = f"{index:05d}-of-{count:05d}"
        if self.preset == "tfds":
            return f"{TFDS_NAME}/{TFDS_VERSION}/{TFDS_NAME}-{name}.tfrecord-{numbered}"
        return f"{name}-{numbered}"

    def shard_files(self, name: str, index: int, count: int) -> tuple[str, ...]:
        data = self._data_file(name, index, count)
        return data, f"{INDEX_FOLDER}/{posixpath.basename(data)}.idx"

    def shard_patterns(self, name: str) -> list[str]:
        data = f"{TFDS_NAME}/{TFDS_VERSION}/{TFDS_NAME}-{name}.tfrecord{_NUMBERED}" if self.preset == "tfds" \
            else f"{name}{_NUMBERED}"
        return [data, f"{INDEX_FOLDER}/{posixpath.basename(data)}.idx"]

    # ------------------------------------------------------------ writing

    def _rgb(self, image: bytes) -> tuple[bytes, int, int, str]:
        """The image as stored, its width, height and format name; 3-channel for the RGB layouts."""
        from recordio_pack.imaging import probe

        info = probe(image)
        if self.preset in ("tpu", "tfds") and info.channels != 3:
            import cv2
            import numpy as np

            picture = cv2.imdecode(np.frombuffer(image, dtype=np.uint8), cv2.IMREAD_COLOR)
            if picture is None:
                raise ValueError("the image does not decode")
            ok, encoded = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            if not ok:
                raise ValueError("JPEG encoding failed")
            image = encoded.tobytes()
            info = probe(image)
        return image, info.width, info.height, info.format.upper()

    def payload(self, entry: Entry, image: bytes) -> bytes:
        label = int(entry.labels[0]) if entry.labels else 0
        filename = posixpath.basename(entry.path.replace("\\", "/")).encode("utf-8", "surrogateescape")
        if self.preset == "aip":
            return encode_example({"image/encoded": [image], "image/class/label": [label + self.label_base]})
        image, width, height, kind = self._rgb(image)
        if self.preset == "tfds":
            return encode_example({"image": [image], "label": [label + self.label_base], "file_name": [filename]})
        synset = self.classes[label].encode("utf-8") if self.classes and 0 <= label < len(self.classes) else b""
        return encode_example({
            "image/encoded": [image], "image/format": [kind.encode("ascii")],
            "image/class/label": [label + self.label_base], "image/class/synset": [synset],
            "image/height": [height], "image/width": [width], "image/colorspace": [b"RGB"],
            "image/channels": [3], "image/filename": [filename]})

    def frame(self, payload: bytes) -> bytes:
        return tfrecord.frame(payload)

    def index_line(self, key: int, offset: int, size: int) -> bytes:
        return tfrecord.format_index_line(offset, size).encode("ascii")

    # ------------------------------------------------------------ reading

    def read_index(self, path: str | Path) -> list[IndexLine]:
        lines: list[IndexLine] = []
        with open(path, encoding="ascii", newline="") as stream:
            for number, line in enumerate(stream, 1):
                if not line.strip():
                    continue
                try:
                    offset, size = tfrecord.parse_index_line(line)
                except ValueError as error:
                    raise ValueError(f"{path}:{number}: {error}") from None
                lines.append(IndexLine(len(lines), offset, size))
        return lines

    def looks_like_index(self, head: bytes) -> bool:
        return tfrecord.looks_like_index(head)

    def index_beside(self, data: Path) -> Path:
        top = data.parent.parent.parent if (data.parent.name, data.parent.parent.name) == (TFDS_VERSION, TFDS_NAME) \
            else data.parent
        candidate = top / INDEX_FOLDER / f"{data.name}.idx"
        return candidate if candidate.parent.is_dir() else data.parent / f"{data.name}.idx"

    def data_beside(self, index: Path) -> Path:
        name = index.name.removesuffix(".idx")
        if index.parent.name == INDEX_FOLDER:
            tfds = index.parent.parent / TFDS_NAME / TFDS_VERSION / name
            return tfds if tfds.exists() else index.parent.parent / name
        return index.parent / name

    def scan(self, data: Buffer) -> Iterator[Frame | Damage]:
        return tfrecord.scan_frames(data)

    def framing_problems(self, data: Buffer, record: Frame) -> list[tuple[str, str]]:
        return []  # both CRCs are checked by the scan: a wrong one is damage

    def decode(self, payload: bytes) -> RecordView:
        try:
            features = decode_example(payload)
        except ExampleError as error:
            raise ValueError(f"not a tf.train.Example: {error}") from None
        values = {key: values for key, (_, values) in features.items()}
        tfds_layout = "image" in values or "label" in values
        image_key, label_key = ("image", "label") if tfds_layout else ("image/encoded", "image/class/label")
        base = self.label_base if self.preset else (0 if tfds_layout else 1)
        images = values.get(image_key) or [b""]
        labels = tuple(float(label) for label in values.get(label_key, []))
        fields = {key: (items[0] if len(items) == 1 else items) for key, items in values.items() if key != image_key}
        return RecordView(labels, None, images[0], {**fields, "kinds": {k: kind for k, (kind, _) in features.items()}},
                          base)

    def required_problems(self, view: RecordView) -> list[str]:
        kinds: dict[str, str] = view.fields.get("kinds", {})
        problems = [f"feature {key} is missing" if key not in kinds else f"feature {key} is {kinds[key]}, not {kind}"
                    for key, kind in _REQUIRED.get(self.preset, {}).items() if kinds.get(key) != kind]
        if not self.preset and not view.labels:
            problems.append("no label feature (image/class/label or label)")
        return problems

    # ------------------------------------------------------------ beside the shards

    def dataset_files(self, out_dir: Path, name: str, shards: Sequence[tuple[Sequence[str], int]],
                      classes: Sequence[str] | None, data_bytes: Sequence[int] | None = None) -> list[Path]:
        from recordio_pack.fsutil import atomic_output

        if self.preset == "aip" and classes is not None:
            target = out_dir / f"{name}.label_map.txt"
            with atomic_output(target) as stream:
                stream.write("".join(f"{label + self.label_base}\t{cls}\n"
                                     for label, cls in enumerate(classes)).encode("utf-8"))
            return [target]
        if self.preset == "tfds":
            with _metadata_lock(out_dir):
                written = write_tfds_metadata(out_dir, name, shards, classes, data_bytes)
                _refresh_other_manifests(out_dir, name, written)
            return written
        return []

    def check_dataset(self, out_dir: Path, name: str, shards: Sequence[tuple[Sequence[str], int]]) -> list[str]:
        """Problems of the files beside a dataset's shards that no manifest vouches for by checksum."""
        if self.preset != "tfds":
            return []
        info_path = out_dir / TFDS_NAME / TFDS_VERSION / "dataset_info.json"
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            return [f"{info_path.relative_to(out_dir)}: unreadable ({error})"]
        split = next((item for item in info.get("splits", []) if item.get("name") == name), None)
        lengths = [str(records) for _, records in shards]
        if split is None:
            return [f"{info_path.relative_to(out_dir)}: lists no {name} split"]
        if split.get("shardLengths") != lengths:
            return [f"{info_path.relative_to(out_dir)}: the {name} split's shard lengths differ from the manifest's"]
        return []


def iter_examples(path: str | Path) -> Iterator[dict[str, list[Any]]]:
    """Every tf.train.Example of a TFRecord file, in file order, as ``{key: values}`` (bytes, int or float values):
    the reader of ours that TensorFlow's own files are checked against.  DamagedShard (naming the file and the
    byte range) at the first record whose framing or CRCs fail; ValueError for a record that is not an Example."""
    from recordio_pack.recordio import DamagedShard, mapped, require_file

    path = require_file(path)
    with mapped(path) as data:
        for item in tfrecord.scan_frames(data):
            if isinstance(item, Damage):
                raise DamagedShard(path, [item])
            try:
                features = decode_example(item.payload)
            except ExampleError as error:
                raise ValueError(f"{path}: record at byte {item.start}: {error}") from None
            yield {key: values for key, (_, values) in features.items()}


@contextmanager
def _metadata_lock(out_dir: Path, wait_s: float = 30.0) -> Iterator[None]:
    """The TFDS files are shared by the train and validation datasets of one data_dir: one writer at a time (each
    holds it for milliseconds, so a busy lock is waited for)."""
    from recordio_pack.locking import DatasetLocked, dataset_lock

    deadline = time.monotonic() + wait_s
    while True:
        try:
            with dataset_lock(out_dir, f".{TFDS_NAME}-metadata"):
                yield
            return
        except DatasetLocked:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _refresh_other_manifests(out_dir: Path, name: str, written: Sequence[Path]) -> None:
    """Give the other TFDS datasets' manifests in ``out_dir`` the new checksums of the shared TFDS files (their
    content covers every split), so each manifest vouches for the files as they are.  A dataset being packed
    right now is left alone: it rewrites them, and ours, when it finishes."""
    from recordio_pack.digest import file_digests
    from recordio_pack.locking import DatasetLocked, dataset_lock
    from recordio_pack.manifest import FileRecord, Manifest, find_manifests

    fresh = {path.relative_to(out_dir).as_posix(): FileRecord.of(path.relative_to(out_dir).as_posix(),
                                                                 file_digests(path)) for path in written}
    for manifest_file in find_manifests(out_dir):
        try:
            other = Manifest.load(manifest_file)
            if other.name == name or other.options.get("preset") != "tfds":
                continue
            with dataset_lock(out_dir, other.name):
                other = Manifest.load(manifest_file)  # as it is now that we hold its lock
                other.files = [fresh.get(record.name, record) for record in other.files]
                other.save(manifest_file)
        except (DatasetLocked, ValueError, OSError):
            continue


def _tfds_features(classes: int) -> dict[str, Any]:
    prefix = "tensorflow_datasets.core.features."
    return {"featuresDict": {"features": {
        "file_name": {"pythonClassName": prefix + "text_feature.Text", "text": {}},
        "image": {"image": {"dtype": "uint8", "encodingFormat": "jpeg",
                            "shape": {"dimensions": ["-1", "-1", "3"]}},
                  "pythonClassName": prefix + "image_feature.Image"},
        "label": {"classLabel": {"numClasses": str(classes)},
                  "pythonClassName": prefix + "class_label_feature.ClassLabel"}}},
        "pythonClassName": prefix + "features_dict.FeaturesDict"}


def write_tfds_metadata(out_dir: Path, split: str, shards: Sequence[tuple[Sequence[str], int]],
                        classes: Sequence[str] | None, data_bytes: Sequence[int] | None = None) -> list[Path]:
    """``dataset_info.json`` (this split's shard lengths and bytes merged with the other splits already listed),
    ``features.json`` and ``label.labels.txt`` in the TFDS version folder, as TFDS writes them.  ``data_bytes``: each
    shard data file's size (default: read from ``out_dir``, where they may no longer be once published elsewhere)."""
    from recordio_pack.fsutil import atomic_output

    folder = out_dir / TFDS_NAME / TFDS_VERSION
    folder.mkdir(parents=True, exist_ok=True)
    info_path = folder / "dataset_info.json"
    try:
        splits = [item for item in json.loads(info_path.read_text(encoding="utf-8")).get("splits", [])
                  if item.get("name") != split]
    except (OSError, ValueError):
        splits = []
    sizes = data_bytes if data_bytes is not None else [(out_dir / files[0]).stat().st_size for files, _ in shards]
    payload_bytes = sum(size - FRAMING * records for size, (_, records) in zip(sizes, shards))
    splits.append({"filepathTemplate": "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}", "name": split,
                   "numBytes": str(payload_bytes), "shardLengths": [str(records) for _, records in shards]})
    info = {"fileFormat": "tfrecord", "moduleName":
            "tensorflow_datasets.datasets.imagenet2012.imagenet2012_dataset_builder", "name": TFDS_NAME,
            "splits": sorted(splits, key=lambda item: SPLITS.index(item["name"]) if item["name"] in SPLITS else 9),
            "supervisedKeys": {"tuple": {"items": [{"featureKey": "image"}, {"featureKey": "label"}]}},
            "version": TFDS_VERSION}
    written = []
    names = list(classes) if classes is not None else []
    for target, text in ((info_path, json.dumps(info, indent=2, sort_keys=True)),
                         (folder / "features.json", json.dumps(_tfds_features(len(names) or TFDS_CLASSES),
                                                               indent=4, sort_keys=True)),
                         (folder / "label.labels.txt", "".join(f"{name}\n" for name in names))):
        if target.name == "label.labels.txt" and not names:
            continue
        with atomic_output(target) as stream:
            stream.write(text.encode("utf-8"))
        written.append(target)
    return written

