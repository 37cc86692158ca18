"""Avro bodies of our schemas, written and read by Python functions generated once per schema.

fastavro interprets the schema for every record; for the ledger's events that is ~50 µs each way,
more than sealing every field of the event. Here each schema becomes the source of one writer and
one reader function with every nested record, union and primitive inlined, compiled at start-up.
They cover what `schemas/` uses — null, boolean, long, string, bytes, records, arrays, maps,
unions of null and one type, and the `uuid` and `timestamp-micros` logical types — and produce
exactly fastavro's bytes and records (a property test compares them on every schema). A schema
with anything else gets no compiled codec, and fastavro serves it. A reader may also build
instances of given slotted dataclasses for the records they are named after (`compile_reader`),
and a writer may read those records from such instances instead of dicts (`compile_writer`).

Reading is strict: a length or union index out of range, bad UTF-8, an overlong varint, a block
count beyond the data or a truncated body raises (ValueError, IndexError, UnicodeDecodeError),
never a partial record. The generated source names no value: it is built from the schema alone.
"""

from __future__ import annotations

import dataclasses
import keyword
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from consentry.core.slots import NotPlain, slot_setters

Writer = Callable[[bytearray, Any], None]
Reader = Callable[[bytes, int], tuple[Any, int]]

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MICROSECOND: Final = timedelta(microseconds=1)
MAX_VARINT_BYTES: Final = 10
SMALL: Final = 4096


class Unsupported(Exception):
    """The schema uses something these codecs do not cover."""


class ClassMismatch(TypeError):
    """A writer found a value of another class where it reads a record from an instance."""


def zigzag_bytes(value: int) -> bytes:
    """The zig-zag varint of a long."""
    n = (value << 1) ^ (value >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL: Final = [zigzag_bytes(n) for n in range(SMALL)]


def write_long(out: bytearray, value: int) -> None:
    out += _SMALL[value] if 0 <= value < SMALL else zigzag_bytes(value)


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


def _timestamp_micros(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise TypeError("timestamps must be timezone-aware")
        return (value - EPOCH) // ONE_MICROSECOND
    return value


def _null(value: Any) -> None:
    if value is not None:
        raise TypeError("null expected")


_SAFE_UNKNOWN: Final = uuid.SafeUUID.unknown
_new_object = object.__new__
_set = object.__setattr__


def parse_uuid(text: str) -> uuid.UUID:
    """`uuid.UUID(text)`, without its prefix and brace handling when the text has none.

    Once the hyphens are gone, a text of 32 characters is either what UUID() would parse the
    same way (`int(digits, 16)`, then the same two attributes set) or one that both reject with
    ValueError: braces or a `urn:uuid:` prefix are not hex digits here and leave fewer than 32
    characters there. Anything else goes to UUID() itself.
    """
    digits = text.replace("-", "")
    if len(digits) != 32:
        return uuid.UUID(text)
    value = _new_object(uuid.UUID)
    _set(value, "int", int(digits, 16))
    _set(value, "is_safe", _SAFE_UNKNOWN)
    return value


def _bad(what: str) -> ValueError:
    return ValueError(what)


def _mismatch(record: str) -> ClassMismatch:
    # The record's name only: the value found may be personal.
    return ClassMismatch(f"an instance of the {record} record's class was expected")


_NAMESPACE: Final[dict[str, Any]] = {
    "_SMALL": _SMALL,
    "_zigzag": zigzag_bytes,
    "_long": read_long,
    "_blocks": _blocks,
    "_ts": _timestamp_micros,
    "_null": _null,
    "_bad": _bad,
    "_mismatch": _mismatch,
    "_UUID": parse_uuid,
    "_uuid_type": uuid.UUID,
    "_EPOCH": EPOCH,
    "_td": timedelta,
    "_new": _new_object,
    "_from": int.from_bytes,
}


class _Source:
    """Lines of generated code and fresh variable names."""

    def __init__(self, classes: Mapping[str, type] | None = None) -> None:
        self.lines: list[str] = []
        self.count = 0
        self.constants: dict[str, Any] = {}
        self.classes: Mapping[str, type] = classes or {}

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def constant(self, value: Any) -> str:
        name = self.name("_c")
        self.constants[name] = value
        return name

    def add(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)


def _kind(schema: Any) -> tuple[str, Any]:
    """(kind, schema) with logical types as kinds of their own; Unsupported for anything else."""
    if isinstance(schema, str):
        if schema not in ("null", "boolean", "long", "string", "bytes"):
            raise Unsupported(schema)
        return schema, schema
    if isinstance(schema, list):
        if len(schema) != 2 or "null" not in schema or schema[0] == schema[1]:
            raise Unsupported("only unions of null and one other type")
        return "union", schema
    if not isinstance(schema, Mapping):
        raise Unsupported(type(schema).__name__)
    kind, logical = schema.get("type"), schema.get("logicalType")
    if logical is not None:
        if (kind, logical) == ("string", "uuid"):
            return "uuid", schema
        if (kind, logical) == ("long", "timestamp-micros"):
            return "timestamp", schema
        raise Unsupported(f"{kind}/{logical}")
    if kind in ("record", "map", "array"):
        if kind == "array" and schema["items"] == "null":
            raise Unsupported("arrays of null")
        return str(kind), schema
    return _kind(kind)


# -- writing ---------------------------------------------------------------------------------------


def _write_long(src: _Source, depth: int, value: str) -> None:
    src.add(depth, f"out += _SMALL[{value}] if 0 <= {value} < {SMALL} else _zigzag({value})")


def _write(src: _Source, schema: Any, value: str, depth: int) -> None:
    """Lines that append the encoding of the variable `value` to `out`."""
    kind, schema = _kind(schema)
    if kind == "null":
        src.add(depth, f"_null({value})")
    elif kind == "boolean":
        src.add(depth, f"out.append(1 if {value} else 0)")
    elif kind == "long":
        _write_long(src, depth, value)
    elif kind == "timestamp":
        src.add(depth, f"{value} = _ts({value})")
        _write_long(src, depth, value)
    elif kind in ("string", "uuid", "bytes"):
        raw, size = src.name("raw"), src.name("n")
        if kind == "uuid":
            src.add(depth, f"if isinstance({value}, _uuid_type): {value} = str({value})")
        src.add(depth, f"{raw} = {value}.encode()" if kind != "bytes" else f"{raw} = {value}")
        src.add(depth, f"{size} = len({raw})")
        _write_long(src, depth, size)
        src.add(depth, f"out += {raw}")
    elif kind == "union":
        null_index = schema.index("null")
        other = schema[1 - null_index]
        src.add(depth, f"if {value} is None:")
        src.add(depth + 1, f"out.append({2 * null_index})")
        src.add(depth, "else:")
        src.add(depth + 1, f"out.append({2 * (1 - null_index)})")
        _write(src, other, value, depth + 1)
    elif kind == "record":
        cls = src.classes.get(schema["name"])
        if cls is not None:
            _check_attributes(cls, schema)
            src.add(depth, f"if type({value}) is not {src.constant(cls)}:")
            src.add(depth + 1, f"raise _mismatch({schema['name']!r})")
        for field in schema["fields"]:
            item = src.name("v")
            if cls is not None:
                src.add(depth, f"{item} = {value}.{field['name']}")
            elif "default" in field:
                default = src.constant(field["default"])
                src.add(depth, f"{item} = {value}.get({field['name']!r}, {default})")
            else:
                src.add(depth, f"{item} = {value}[{field['name']!r}]")
            _write(src, field["type"], item, depth)
    else:  # map or array
        size, key, item = src.name("n"), src.name("k"), src.name("v")
        src.add(depth, f"if {value}:")
        src.add(depth + 1, f"{size} = len({value})")
        _write_long(src, depth + 1, size)
        if kind == "map":
            src.add(depth + 1, f"for {key}, {item} in {value}.items():")
            _write(src, "string", key, depth + 2)
            _write(src, schema["values"], item, depth + 2)
        else:
            src.add(depth + 1, f"for {item} in {value}:")
            _write(src, schema["items"], item, depth + 2)
        src.add(depth, "out.append(0)")


def _check_attributes(cls: type, schema: Any) -> None:
    """Unsupported unless the dataclass's fields are exactly the record's (none left unwritten)."""
    names = [field["name"] for field in schema["fields"]]
    if not dataclasses.is_dataclass(cls) or {f.name for f in dataclasses.fields(cls)} != set(names):
        raise Unsupported(f"{schema['name']} and {cls.__name__} have other fields")
    if any(keyword.iskeyword(name) for name in names):
        raise Unsupported(f"{schema['name']} has a field named as a Python keyword")


# -- reading ---------------------------------------------------------------------------------------


def _read_long(src: _Source, depth: int, target: str) -> None:
    byte = src.name("b")
    src.add(depth, f"{byte} = data[pos]")
    src.add(depth, f"if {byte} < 128:")
    src.add(depth + 1, f"{target} = ({byte} >> 1) ^ -({byte} & 1)")
    src.add(depth + 1, "pos += 1")
    src.add(depth, "else:")
    src.add(depth + 1, f"{target}, pos = _long(data, pos)")


def _read_length(src: _Source, depth: int) -> str:
    """Lines that read a string's or bytes' length and check it; answers the end's variable."""
    size, end = src.name("n"), src.name("e")
    _read_long(src, depth, size)
    src.add(depth, f"{end} = pos + {size}")
    src.add(depth, f"if {size} < 0 or {end} > size: raise _bad('length out of range')")
    return end


def _read_timestamp(src: _Source, depth: int, target: str) -> None:
    """Lines that read a timestamp-micros into an aware datetime.

    Every time from 1979 to 3111 is a varint of 8 bytes (zig-zag values from 2**49 to 2**56),
    which `read_long` would take in 8 turns of its loop. Here those 8 bytes are one int: when the
    first 7 have their continuation bit set and the last has not, the masks below drop the 8
    continuation bits and close the gaps (7-bit groups to 14, 28, then 56 bits) in three steps.
    Any other length goes to `read_long`, and so does a body that ends within those 8 bytes (which
    `read_long` refuses).
    """
    raw = src.name("x")
    src.add(depth, f"{raw} = _from(data[pos:pos + 8], 'little')")
    src.add(depth, f"if {raw} & 0x8080808080808080 == 0x0080808080808080 and pos + 8 <= size:")
    src.add(depth + 1, f"{raw} &= 0x7F7F7F7F7F7F7F7F")
    src.add(depth + 1, f"{raw} = ({raw} & 0x007F007F007F007F) | (({raw} & 0x7F007F007F007F00) >> 1)")
    src.add(depth + 1, f"{raw} = ({raw} & 0x00003FFF00003FFF) | (({raw} & 0x3FFF00003FFF0000) >> 2)")
    src.add(depth + 1, f"{raw} = ({raw} & 0x000000000FFFFFFF) | (({raw} & 0x0FFFFFFF00000000) >> 4)")
    src.add(depth + 1, f"{target} = ({raw} >> 1) ^ -({raw} & 1)")
    src.add(depth + 1, "pos += 8")
    src.add(depth, "else:")
    src.add(depth + 1, f"{target}, pos = _long(data, pos)")
    src.add(depth, f"{target} = _EPOCH + _td(0, 0, {target})")


def _read_uuid(src: _Source, depth: int, target: str) -> None:
    """Lines that read a uuid, parsing its text only when it differs from the field's last one.

    A rebuild reads the log subject by subject, so a subject id repeats for every event of its
    subject. The field's last text and UUID (both immutable) sit in one tuple, swapped whole: a
    thread reading with the same reader at once can only miss, never pair a text with another id.
    """
    end = _read_length(src, depth)
    raw, last, cache = src.name("r"), src.name("l"), src.constant([(None, None)])
    src.add(depth, f"{raw} = data[pos:{end}]")
    src.add(depth, f"{last} = {cache}[0]")
    src.add(depth, f"if {raw} == {last}[0]:")
    src.add(depth + 1, f"{target} = {last}[1]")
    src.add(depth, "else:")
    src.add(depth + 1, f"{target} = _UUID({raw}.decode())")
    src.add(depth + 1, f"{cache}[0] = ({raw}, {target})")
    src.add(depth, f"pos = {end}")


def _read(src: _Source, schema: Any, target: str, depth: int) -> None:
    """Lines that read one value at `pos` into the variable `target` and move `pos` past it."""
    kind, schema = _kind(schema)
    if kind == "null":
        src.add(depth, f"{target} = None")
    elif kind == "boolean":
        byte = src.name("b")
        src.add(depth, f"{byte} = data[pos]")
        src.add(depth, f"if {byte} > 1: raise _bad('boolean byte out of range')")
        src.add(depth, f"{target} = {byte} == 1")
        src.add(depth, "pos += 1")
    elif kind == "long":
        _read_long(src, depth, target)
    elif kind == "timestamp":
        _read_timestamp(src, depth, target)
    elif kind == "uuid":
        _read_uuid(src, depth, target)
    elif kind in ("string", "bytes"):
        end = _read_length(src, depth)
        text = "data[pos:{e}].decode()" if kind == "string" else "data[pos:{e}]"
        src.add(depth, f"{target} = {text.format(e=end)}")
        src.add(depth, f"pos = {end}")
    elif kind == "union":
        null_index = schema.index("null")
        index = src.name("i")
        _read_long(src, depth, index)
        src.add(depth, f"if {index} == {1 - null_index}:")
        _read(src, schema[1 - null_index], target, depth + 1)
        src.add(depth, f"elif {index} == {null_index}:")
        src.add(depth + 1, f"{target} = None")
        src.add(depth, "else:")
        src.add(depth + 1, "raise _bad('union branch out of range')")
    elif kind == "record":
        items: dict[str, str] = {}
        for field in schema["fields"]:
            item = items[field["name"]] = src.name("v")
            _read(src, field["type"], item, depth)
        cls = src.classes.get(schema["name"])
        if cls is None:
            pairs = (f"{name!r}: {item}" for name, item in items.items())
            src.add(depth, f"{target} = {{{', '.join(pairs)}}}")
        else:
            _read_into(src, cls, schema, items, target, depth)
    else:  # map or array
        count, key, item = src.name("n"), src.name("k"), src.name("v")
        src.add(depth, f"{target} = {{}}" if kind == "map" else f"{target} = []")
        src.add(depth, f"{count}, pos = _blocks(data, pos)")
        src.add(depth, f"while {count}:")
        src.add(depth + 1, f"for _ in range({count}):")
        if kind == "map":
            _read(src, "string", key, depth + 2)
            _read(src, schema["values"], item, depth + 2)
            src.add(depth + 2, f"{target}[{key}] = {item}")
        else:
            _read(src, schema["items"], item, depth + 2)
            src.add(depth + 2, f"{target}.append({item})")
        src.add(depth + 1, f"{count}, pos = _blocks(data, pos)")


def _read_into(
    src: _Source, cls: type, schema: Any, items: Mapping[str, str], target: str, depth: int
) -> None:
    """Lines that build an instance of `cls` from the record's field values read into `items`."""
    kinds = {field["name"]: _kind(field["type"])[0] for field in schema["fields"]}
    src.add(depth, f"{target} = _new({src.constant(cls)})")
    try:
        setters = slot_setters(cls)
    except NotPlain as exc:
        raise Unsupported(str(exc)) from exc
    for name, setter in setters.items():
        item = items.get(name)
        if item is None:
            raise Unsupported(f"{schema['name']} has no field {name}")
        # A list becomes a tuple (our frozen dataclasses hold tuples), as event_from_record does.
        value = {
            "array": f"tuple({item})",
            "union": f"tuple({item}) if type({item}) is list else {item}",
        }.get(kinds[name], item)
        src.add(depth, f"{src.constant(setter)}({target}, {value})")


def _function(src: _Source, name: str) -> Any:
    namespace = dict(_NAMESPACE) | src.constants
    exec(compile("\n".join(src.lines), "<avro codec>", "exec"), namespace)  # noqa: S102 - generated from our schema files only
    return namespace[name]


def compile_schema(schema: Any) -> tuple[Writer, Reader]:
    """The writer and reader of a fully expanded schema; Unsupported if it uses anything else."""
    return compile_writer(schema), compile_reader(schema)


def compile_writer(schema: Any, classes: Mapping[str, type] | None = None) -> Writer:
    """The writer of a fully expanded schema; Unsupported if it uses anything else.

    A record whose full name is in `classes` is read from an instance of exactly that dataclass
    (each field from the attribute of its name) instead of a dict; any other value there raises
    ClassMismatch. Unsupported if the class's fields are not exactly the record's.
    """
    src = _Source(classes)
    src.add(0, "def write(out, value):")
    _write(src, schema, "value", 1)
    write: Writer = _function(src, "write")
    return write


def compile_reader(schema: Any, classes: Mapping[str, type] | None = None) -> Reader:
    """The reader of a fully expanded schema; Unsupported if it uses anything else.

    A record whose full name is in `classes` is read into an instance of that slotted dataclass
    (each field of the class from the record's field of that name, a list as a tuple) instead of
    a dict; Unsupported if the record lacks one of the class's fields.
    """
    src = _Source(classes)
    src.add(0, "def read(data, pos):")
    src.add(1, "size = len(data)")
    _read(src, schema, "value", 1)
    src.add(1, "return value, pos")
    read: Reader = _function(src, "read")
    return read
