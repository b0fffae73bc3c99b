"""A drop-in for ``mxnet.recordio``, without mxnet: ``import recordio_pack.mxnet_compat as recordio``.

The names and signatures of mxnet 1.9.1's ``mxnet/recordio.py``: `MXRecordIO`, `MXIndexedRecordIO`, `IRHeader`,
`pack`, `unpack`, `pack_img`, `unpack_img`, for reading and writing; the files written are byte for byte what
mxnet writes for the same calls (the suite checks it against mxnet itself).  The framing and the header layout
are `recordio_pack.format`'s; reading goes through `recordio_pack.reader` (memory-mapped, reopened after fork).

InsightFace-style files read as they do with mxnet: record 0 is a header record (``flag > 0``, ``label =
[end, ...]``, no image) and the identity-range records follow.

Label precision: IRHeader labels are float32, which holds every integer up to 2**24 = 16,777,216 exactly and
not all above it (16,777,217 is stored as 16,777,216).  Class labels are far below that, but record keys or
image counts kept in labels (InsightFace's header record and identity ranges of datasets beyond 16.7 million
images) are rounded; `pack` warns (`LabelPrecisionWarning`) when a label it writes is not stored exactly.
mxnet writes the same rounded value, silently.
"""

from __future__ import annotations

import numbers
import os
import warnings
from collections import namedtuple
from pathlib import Path
from typing import IO, Any

import numpy as np

from recordio_pack import format as fmt
from recordio_pack.errors import RecordioPackError
from recordio_pack.format import frame
from recordio_pack.reader import IndexedRecordIO, MappedFile

__all__ = ["IRHeader", "MXRecordIO", "MXIndexedRecordIO", "pack", "unpack", "pack_img", "unpack_img",
           "LabelPrecisionWarning", "RecordIOUsageError"]

IRHeader = namedtuple("IRHeader", ["flag", "label", "id", "id2"])
IRHeader.__doc__ = """mxnet's image record header: ``flag`` (0, or the number of float32 labels that follow the
header), ``label`` (a float, or a float32 array when flag > 0), ``id`` and ``id2`` (unsigned 64-bit)."""


class LabelPrecisionWarning(UserWarning):
    """A label written to the float32 label field is not stored exactly (integers above 2**24)."""


class RecordIOUsageError(RecordioPackError, ValueError):
    """A call mxnet would also refuse: a bad flag, writing to a reader, reading from a writer."""


class MXRecordIO:
    """Sequential reading (``flag="r"``) or writing (``flag="w"``) of one `.rec` file."""

    def __init__(self, uri: str | os.PathLike[str], flag: str) -> None:
        self.uri = str(uri)
        self.flag = flag
        self.is_open = False
        self.open()

    def open(self) -> None:
        if self.flag == "w":
            self._stream: IO[bytes] | None = open(self.uri, "wb")
            self.writable = True
        elif self.flag == "r":
            self._stream = None
            self._file = MappedFile(self.uri)
            self._file.data()  # NoSuchFile/OSError now, as mxnet fails at open
            self._position = 0
            self.writable = False
        else:
            raise RecordIOUsageError(f"Invalid flag {self.flag!r}: 'r' reads, 'w' writes")
        self.is_open = True

    def close(self) -> None:
        if not self.is_open:
            return
        if self.writable:
            assert self._stream is not None
            self._stream.close()
        else:
            self._file.close()
        self.is_open = False

    def reset(self) -> None:
        """Back to the first record (a reader), or truncate and start again (a writer), as mxnet does."""
        self.close()
        self.open()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # at interpreter shutdown the modules it needs may be gone
            pass

    def __enter__(self) -> MXRecordIO:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        """Pickled as its uri and flag (and a reader's position); reopened when unpickled, as mxnet does."""
        if self.writable:
            raise RecordIOUsageError(f"{self.uri}: a writer cannot be pickled")
        return {"uri": self.uri, "flag": self.flag, "position": self._position}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.uri, self.flag, self.is_open = state["uri"], state["flag"], False
        self.open()
        self._position = state["position"]

    def write(self, buf: bytes) -> None:
        """Append one record (magic escaping and padding as dmlc-core writes them)."""
        if not self.writable:
            raise RecordIOUsageError(f"{self.uri}: opened for reading")
        assert self._stream is not None
        self._stream.write(frame(bytes(buf)))

    def read(self) -> bytes | None:
        """The next record's payload, or None at the end of the file; DamagedRecord names file and byte."""
        if self.writable:
            raise RecordIOUsageError(f"{self.uri}: opened for writing")
        if self._position >= len(self._file.data()):
            return None
        payload, self._position = self._file.read(self._position)
        return payload

    def tell(self) -> int:
        """The byte offset of the next record to be read or written."""
        if self.writable:
            assert self._stream is not None
            return self._stream.tell()
        return self._position


class MXIndexedRecordIO(MXRecordIO):
    """A `.rec` with its `.idx` (``key<TAB>offset`` lines): ``read_idx(key)``, ``write_idx(key, buf)``, and the
    ``idx`` (key -> offset) and ``keys`` (in file order) attributes code like InsightFace's uses.  Keys are
    integers; ``key_type`` converts them (mxnet's default, int)."""

    def __init__(self, idx_path: str | os.PathLike[str], uri: str | os.PathLike[str], flag: str,
                 key_type: type = int) -> None:
        self.idx_path = str(idx_path)
        self.idx: dict[Any, int] = {}
        self.keys: list[Any] = []
        self.key_type = key_type
        self._fidx: IO[str] | None = None
        super().__init__(uri, flag)

    def open(self) -> None:
        super().open()
        self.idx, self.keys = {}, []
        if self.writable:
            self._fidx = open(self.idx_path, "w", encoding="ascii", newline="\n")
            return
        index = IndexedRecordIO(Path(self.uri), index=Path(self.idx_path))
        for key in index.keys():
            converted = self.key_type(key)
            self.idx[converted] = index.locate(key)[1]
            self.keys.append(converted)

    def close(self) -> None:
        if self.is_open and self._fidx is not None:
            self._fidx.close()
            self._fidx = None
        super().close()

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "idx_path": self.idx_path, "key_type": self.key_type}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.idx_path, self.key_type, self._fidx = state["idx_path"], state["key_type"], None
        super().__setstate__(state)

    def seek(self, idx: Any) -> None:
        """Make the next `read` return the record of key ``idx``."""
        if self.writable:
            raise RecordIOUsageError(f"{self.uri}: opened for writing")
        self._position = self.idx[self.key_type(idx)]

    def read_idx(self, idx: Any) -> bytes | None:
        """The payload of the record of key ``idx``."""
        self.seek(idx)
        return self.read()

    def write_idx(self, idx: Any, buf: bytes) -> None:
        """Append a record under key ``idx``, and its index line."""
        key = self.key_type(idx)
        position = self.tell()
        self.write(buf)
        assert self._fidx is not None
        self._fidx.write(f"{key}\t{position}\n")
        self.idx[key] = position
        self.keys.append(key)


def _float32_labels(label: Any) -> tuple[float, ...]:
    values = np.asarray(label, dtype=np.float64).ravel()
    stored = values.astype(np.float32)
    inexact = values[(stored.astype(np.float64) != values) & (values == np.round(values))]
    if inexact.size:
        warnings.warn(f"label {inexact[0]:.0f} is stored in float32 as {float(np.float32(inexact[0])):.0f} "
                      "(integers above 2**24 are not all exact)", LabelPrecisionWarning, stacklevel=3)
    return tuple(float(value) for value in stored)


def pack(header: Any, s: bytes) -> bytes:
    """``header`` (an IRHeader or a 4-tuple) and the bytes ``s`` as one record payload, as mxnet packs them: a
    number label is written in the header (flag 0), anything else as a float32 vector after it (flag = its
    length)."""
    header = IRHeader(*header)
    vector = not isinstance(header.label, numbers.Number)
    labels = _float32_labels(header.label)
    record = fmt.IRHeader(labels if vector else labels[:1], int(header.id), int(header.id2), vector=vector)
    return fmt.pack_payload(record, bytes(s))


def unpack(s: bytes) -> tuple[IRHeader, bytes]:
    """A record payload as ``(IRHeader, image bytes)``; a label vector comes back as a float32 array."""
    header, image = fmt.unpack_payload(bytes(s))
    if header.vector:
        return IRHeader(len(header.labels), np.array(header.labels, dtype=np.float32), header.id, header.id2), \
            bytes(image)
    return IRHeader(0, header.label, header.id, header.id2), bytes(image)


def pack_img(header: Any, img: np.ndarray, quality: int = 95, img_fmt: str = ".jpg") -> bytes:
    """Encode ``img`` (a BGR or gray array, as OpenCV holds it) with OpenCV and `pack` it.  ``quality``: JPEG
    quality, or PNG compression level for ``.png``."""
    import cv2

    params: list[int] | None = None
    if img_fmt.upper() in (".JPG", ".JPEG"):
        params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    elif img_fmt.upper() == ".PNG":
        params = [cv2.IMWRITE_PNG_COMPRESSION, quality]
    ok, buf = cv2.imencode(img_fmt, img, params or [])
    if not ok:
        raise RecordIOUsageError(f"OpenCV could not encode the image as {img_fmt}")
    return pack(header, buf.tobytes())


def unpack_img(s: bytes, iscolor: int = -1) -> tuple[IRHeader, np.ndarray]:
    """`unpack`, then decode the image with OpenCV (``iscolor``: cv2.imdecode's flag; BGR as OpenCV gives it)."""
    import cv2

    header, image = unpack(s)
    decoded = cv2.imdecode(np.frombuffer(image, dtype=np.uint8), iscolor)
    if decoded is None:
        raise RecordIOUsageError("the record's image could not be decoded")
    return header, decoded
