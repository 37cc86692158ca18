"""Avro bodies of our schemas, written and read by functions built once per schema.

fastavro interprets the schema for every record; for the ledger's events that is ~50 µs each way,
more than sealing every field of the event. These functions do the same work with the dispatch
done in advance (one closure per schema node). They cover what `schemas/` uses — null, boolean,
long, string, bytes, records, arrays, maps, unions of null and one type, and the `uuid` and
`timestamp-micros` logical types — and produce exactly fastavro's bytes and records (a property
test compares them). A schema with anything else gets no compiled codec, and fastavro serves it.

Reading is strict: a length or union index out of range, bad UTF-8, an overlong varint or a
truncated body raises `ValueError` (or `IndexError`/`UnicodeDecodeError`), never a partial record.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

Writer = Callable[[bytearray, Any], None]
Reader = Callable[[bytes, int], tuple[Any, int]]

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MICROSECOND: Final = timedelta(microseconds=1)
MAX_VARINT_BYTES: Final = 10


class Unsupported(Exception):
    """The schema uses something these codecs do not cover."""


def _zigzag_bytes(value: int) -> bytes:
    n = (value << 1) ^ (value >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL: Final = [_zigzag_bytes(n) for n in range(4096)]


def write_long(out: bytearray, value: int) -> None:
    if 0 <= value < 4096:
        out += _SMALL[value]
    else:
        out += _zigzag_bytes(value)


def read_long(data: bytes, pos: int) -> tuple[int, int]:
    byte = data[pos]
    pos += 1
    n = byte & 0x7F
    shift = 7
    while byte & 0x80:
        if shift >= 7 * MAX_VARINT_BYTES:
            raise ValueError("varint is too long")
        byte = data[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        shift += 7
    return (n >> 1) ^ -(n & 1), pos


def _write_null(out: bytearray, value: Any) -> None:
    if value is not None:
        raise TypeError("null expected")


def _read_null(data: bytes, pos: int) -> tuple[None, int]:
    return None, pos


def _write_boolean(out: bytearray, value: Any) -> None:
    out.append(1 if value else 0)


def _read_boolean(data: bytes, pos: int) -> tuple[bool, int]:
    byte = data[pos]
    if byte > 1:
        raise ValueError("boolean byte out of range")
    return byte == 1, pos + 1


def _write_string(out: bytearray, value: Any) -> None:
    raw = value.encode()
    write_long(out, len(raw))
    out += raw


def _read_span(data: bytes, pos: int) -> tuple[int, int]:
    size, pos = read_long(data, pos)
    end = pos + size
    if size < 0 or end > len(data):
        raise ValueError("length out of range")
    return pos, end


def _read_string(data: bytes, pos: int) -> tuple[str, int]:
    start, end = _read_span(data, pos)
    return data[start:end].decode(), end


def _write_bytes(out: bytearray, value: Any) -> None:
    write_long(out, len(value))
    out += value


def _read_bytes(data: bytes, pos: int) -> tuple[bytes, int]:
    start, end = _read_span(data, pos)
    return data[start:end], end


def _write_uuid(out: bytearray, value: Any) -> None:
    _write_string(out, str(value) if isinstance(value, uuid.UUID) else value)


def _read_uuid(data: bytes, pos: int) -> tuple[uuid.UUID, int]:
    text, pos = _read_string(data, pos)
    return uuid.UUID(text), pos


def _write_timestamp_micros(out: bytearray, value: Any) -> None:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise TypeError("timestamps must be timezone-aware")
        value = (value - EPOCH) // ONE_MICROSECOND
    write_long(out, value)


def _read_timestamp_micros(data: bytes, pos: int) -> tuple[datetime, int]:
    micros, pos = read_long(data, pos)
    return EPOCH + timedelta(0, 0, micros), pos


_PRIMITIVES: Final[dict[str, tuple[Writer, Reader]]] = {
    "null": (_write_null, _read_null),
    "boolean": (_write_boolean, _read_boolean),
    "long": (write_long, read_long),
    "string": (_write_string, _read_string),
    "bytes": (_write_bytes, _read_bytes),
}
_LOGICAL: Final[dict[tuple[str, str], tuple[Writer, Reader]]] = {
    ("string", "uuid"): (_write_uuid, _read_uuid),
    ("long", "timestamp-micros"): (_write_timestamp_micros, _read_timestamp_micros),
}


def compile_schema(schema: Any) -> tuple[Writer, Reader]:
    """The writer and reader of a fully expanded schema; Unsupported if it uses anything else."""
    if isinstance(schema, str):
        if schema not in _PRIMITIVES:
            raise Unsupported(schema)
        return _PRIMITIVES[schema]
    if isinstance(schema, list):
        return _union(schema)
    if not isinstance(schema, Mapping):
        raise Unsupported(type(schema).__name__)
    kind = schema.get("type")
    logical = schema.get("logicalType")
    if logical is not None:
        pair = _LOGICAL.get((str(kind), str(logical)))
        if pair is None:
            raise Unsupported(f"{kind}/{logical}")
        return pair
    if kind == "record":
        return _record(schema["fields"])
    if kind == "map":
        return _map(*compile_schema(schema["values"]))
    if kind == "array":
        if schema["items"] == "null":
            raise Unsupported("arrays of null")
        return _array(*compile_schema(schema["items"]))
    return compile_schema(kind)


def _union(branches: list[Any]) -> tuple[Writer, Reader]:
    if len(branches) != 2 or "null" not in branches or branches[0] == branches[1]:
        raise Unsupported("only unions of null and one other type")
    null_index = branches.index("null")
    other_index = 1 - null_index
    write_other, read_other = compile_schema(branches[other_index])
    null_tag, other_tag = _SMALL[null_index], _SMALL[other_index]

    def write(out: bytearray, value: Any) -> None:
        if value is None:
            out += null_tag
        else:
            out += other_tag
            write_other(out, value)

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        index, pos = read_long(data, pos)
        if index == other_index:
            return read_other(data, pos)
        if index == null_index:
            return None, pos
        raise ValueError("union branch out of range")

    return write, read


def _record(fields: list[Mapping[str, Any]]) -> tuple[Writer, Reader]:
    compiled = [
        (f["name"], "default" in f, f.get("default"), *compile_schema(f["type"])) for f in fields
    ]
    writers = [(name, has_default, default, w) for name, has_default, default, w, _ in compiled]
    readers = [(name, r) for name, _, _, _, r in compiled]

    def write(out: bytearray, record: Any) -> None:
        for name, has_default, default, write_field in writers:
            if has_default:
                write_field(out, record.get(name, default))
            else:
                write_field(out, record[name])

    def read(data: bytes, pos: int) -> tuple[dict[str, Any], int]:
        record: dict[str, Any] = {}
        for name, read_field in readers:
            record[name], pos = read_field(data, pos)
        return record, pos

    return write, read


def _blocks(data: bytes, pos: int) -> tuple[int, int]:
    """The item count of the next block (its byte size, if given, is skipped).

    Every item takes at least one byte (arrays of null are refused when compiling), so a count
    beyond the bytes left is a lie, refused before looping on it.
    """
    count, pos = read_long(data, pos)
    if count < 0:
        count = -count
        _size, pos = read_long(data, pos)
    if count > len(data) - pos:
        raise ValueError("block count beyond the data")
    return count, pos


def _map(write_value: Writer, read_value: Reader) -> tuple[Writer, Reader]:
    def write(out: bytearray, value: Any) -> None:
        if value:
            write_long(out, len(value))
            for key, item in value.items():
                _write_string(out, key)
                write_value(out, item)
        out.append(0)

    def read(data: bytes, pos: int) -> tuple[dict[str, Any], int]:
        result: dict[str, Any] = {}
        count, pos = _blocks(data, pos)
        while count:
            for _ in range(count):
                key, pos = _read_string(data, pos)
                result[key], pos = read_value(data, pos)
            count, pos = _blocks(data, pos)
        return result, pos

    return write, read


def _array(write_item: Writer, read_item: Reader) -> tuple[Writer, Reader]:
    def write(out: bytearray, value: Any) -> None:
        if value:
            write_long(out, len(value))
            for item in value:
                write_item(out, item)
        out.append(0)

    def read(data: bytes, pos: int) -> tuple[list[Any], int]:
        result: list[Any] = []
        count, pos = _blocks(data, pos)
        while count:
            for _ in range(count):
                item, pos = read_item(data, pos)
                result.append(item)
            count, pos = _blocks(data, pos)
        return result, pos

    return write, read
