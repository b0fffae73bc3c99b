"""A minimal ``tf.train.Example`` protobuf encoder and decoder, with no TensorFlow and no protobuf runtime.

Example { Features features = 1 }; Features { map<string, Feature> feature = 1 } (each entry a message of
key = 1, value = 2); Feature { oneof: BytesList bytes_list = 1, FloatList float_list = 2, Int64List int64_list = 3 };
BytesList { repeated bytes value = 1 }; FloatList { repeated float value = 1 [packed] }; Int64List { repeated int64
value = 1 [packed] } (``tensorflow/core/example/{example,feature}.proto``).

``encode_example`` writes the features in sorted key order, so the same features give the same bytes (TensorFlow's
own serializer orders map entries as it likes; every reader accepts any order).  Values are lists of ``bytes``
(bytes_list), ``int`` (int64_list) or ``float`` (float_list).  ``decode_example`` reads what TensorFlow writes:
packed or unpacked repeated numbers, unknown fields skipped.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["FeatureValues", "encode_example", "decode_example", "ExampleError"]

FeatureValues = Sequence[bytes] | Sequence[int] | Sequence[float]
_LEN, _VARINT, _I64, _I32 = 2, 0, 1, 5
_KINDS = {1: "bytes", 2: "float", 3: "int64"}


class ExampleError(ValueError):
    """Bytes that are not a serialized tf.train.Example (or use a field in a way Example does not)."""


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64 as protobuf writes it: negative numbers take ten bytes
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | _LEN) + _varint(len(data)) + data


def _feature(values: FeatureValues) -> bytes:
    if not values:
        raise ValueError("a feature needs at least one value (its type is told by them)")
    first = values[0]
    if isinstance(first, (bytes, bytearray, memoryview)):
        inner = b"".join(_field(1, bytes(value)) for value in values)  # type: ignore[arg-type]
        return _field(1, inner)
    if isinstance(first, bool) or not isinstance(first, (int, float)):
        raise TypeError(f"feature values must be bytes, int or float, got {type(first).__name__}")
    if isinstance(first, int):
        packed = b"".join(_varint(int(value)) for value in values)
        return _field(3, _field(1, packed))
    packed = struct.pack(f"<{len(values)}f", *values)
    return _field(2, _field(1, packed))


def encode_example(features: Mapping[str, FeatureValues]) -> bytes:
    """A serialized tf.train.Example holding ``features``, keys in sorted order."""
    entries = b"".join(_field(1, _field(1, key.encode("utf-8")) + _field(2, _feature(features[key])))
                       for key in sorted(features))
    return _field(1, entries)


def _read_varint(data: bytes, position: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if position >= end:
            raise ExampleError("truncated varint")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
        if shift >= 70:
            raise ExampleError("varint longer than 10 bytes")


def _fields(data: bytes, start: int, end: int) -> list[tuple[int, int, int | tuple[int, int]]]:
    """``(number, wire type, value)`` of every field in ``data[start:end]``; a length-delimited value is its
    ``(start, end)``."""
    out: list[tuple[int, int, int | tuple[int, int]]] = []
    position = start
    while position < end:
        tag, position = _read_varint(data, position, end)
        number, wire = tag >> 3, tag & 7
        if wire == _VARINT:
            value, position = _read_varint(data, position, end)
            out.append((number, wire, value))
        elif wire == _LEN:
            length, position = _read_varint(data, position, end)
            if position + length > end:
                raise ExampleError(f"field {number} runs past the end of its message")
            out.append((number, wire, (position, position + length)))
            position += length
        elif wire in (_I64, _I32):
            width = 8 if wire == _I64 else 4
            if position + width > end:
                raise ExampleError(f"field {number} runs past the end of its message")
            out.append((number, wire, int.from_bytes(data[position:position + width], "little")))
            position += width
        else:
            raise ExampleError(f"unsupported wire type {wire} (field {number})")
    if position != end:
        raise ExampleError("message runs past its end")
    return out


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _decode_feature(data: bytes, start: int, end: int) -> tuple[str, list]:
    kind: str = ""
    values: list[Any] = []
    for number, wire, value in _fields(data, start, end):
        if number not in _KINDS:
            continue
        if wire != _LEN:
            raise ExampleError(f"Feature field {number} is not a message")
        kind = _KINDS[number]
        values = []
        assert isinstance(value, tuple)
        for inner_number, inner_wire, item in _fields(data, *value):
            if inner_number != 1:
                continue
            if kind == "bytes":
                if inner_wire != _LEN:
                    raise ExampleError("bytes_list value is not length-delimited")
                assert isinstance(item, tuple)
                values.append(data[item[0]:item[1]])
            elif kind == "int64":
                if inner_wire == _VARINT:
                    assert isinstance(item, int)
                    values.append(_signed(item))
                elif inner_wire == _LEN:
                    assert isinstance(item, tuple)
                    position = item[0]
                    while position < item[1]:
                        number_value, position = _read_varint(data, position, item[1])
                        values.append(_signed(number_value))
                else:
                    raise ExampleError("int64_list value of the wrong wire type")
            else:
                if inner_wire == _I32:
                    assert isinstance(item, int)
                    values.append(struct.unpack("<f", item.to_bytes(4, "little"))[0])
                elif inner_wire == _LEN:
                    assert isinstance(item, tuple)
                    if (item[1] - item[0]) % 4:
                        raise ExampleError("packed float_list is not a whole number of floats")
                    values.extend(struct.unpack_from(f"<{(item[1] - item[0]) // 4}f", data, item[0]))
                else:
                    raise ExampleError("float_list value of the wrong wire type")
    return kind, values


def decode_example(data: bytes) -> dict[str, tuple[str, list]]:
    """``{key: (kind, values)}`` of a serialized Example; kind is "bytes", "int64", "float", or "" for a Feature
    with no list set.  ExampleError on bytes that do not parse."""
    features: dict[str, tuple[str, list]] = {}
    for number, wire, value in _fields(data, 0, len(data)):
        if number != 1:
            continue
        if wire != _LEN:
            raise ExampleError("Example.features is not a message")
        assert isinstance(value, tuple)
        for entry_number, entry_wire, entry in _fields(data, *value):
            if entry_number != 1:
                continue
            if entry_wire != _LEN:
                raise ExampleError("a Features map entry is not a message")
            assert isinstance(entry, tuple)
            key, feature = b"", (0, 0)
            for part_number, part_wire, part in _fields(data, *entry):
                if part_wire == _LEN and part_number in (1, 2):
                    assert isinstance(part, tuple)
                    if part_number == 1:
                        key = data[part[0]:part[1]]
                    else:
                        feature = part
            try:
                name = key.decode("utf-8")
            except UnicodeDecodeError:
                raise ExampleError(f"feature key {key!r} is not UTF-8") from None
            features[name] = _decode_feature(data, *feature)
    return features
