"""The compiled Avro codecs against fastavro: same bytes, same records, never laxer on bad input.

Records are generated from each schema of `schemas/` (every event, intake and common record), so a
schema change is covered without touching this file.
"""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consentry.core.avro import AvroCodec, Contract
from consentry.core.avro_compiled import (
    Unsupported,
    compile_schema,
    parse_uuid,
    read_long,
    write_long,
)
from tests.support import SCHEMAS

CODEC = AvroCodec(SCHEMAS)
CONTRACTS = sorted(CODEC.contracts(), key=lambda c: c.name)
EXAMPLES = settings(
    max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
LONGS = st.integers(min_value=-(2**63), max_value=2**63 - 1)
TIMESTAMPS = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)


def strategy(schema: Any) -> st.SearchStrategy[Any]:
    """Values of a fully expanded schema, as our events and intake produce them."""
    if isinstance(schema, list):
        return st.one_of(*(strategy(branch) for branch in schema))
    if isinstance(schema, str):
        return {
            "null": st.none(),
            "boolean": st.booleans(),
            "long": LONGS,
            "string": st.text(max_size=20),
            "bytes": st.binary(max_size=40),
        }[schema]
    logical = schema.get("logicalType")
    if logical == "uuid":
        return st.uuids()
    if logical == "timestamp-micros":
        return TIMESTAMPS
    kind = schema["type"]
    if kind == "record":
        return st.fixed_dictionaries({f["name"]: strategy(f["type"]) for f in schema["fields"]})
    if kind == "map":
        return st.dictionaries(st.text(max_size=10), strategy(schema["values"]), max_size=4)
    if kind == "array":
        return st.lists(strategy(schema["items"]), max_size=4)
    return strategy(kind)


def fastavro_bytes(contract: Contract, record: Any) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, contract.parsed, record)
    return buffer.getvalue()


def fastavro_record(contract: Contract, body: bytes) -> Any:
    buffer = io.BytesIO(body)
    record = fastavro.schemaless_reader(buffer, contract.parsed, None)
    if buffer.tell() != len(body):
        raise ValueError("trailing bytes")
    return record


def test_every_schema_of_ours_is_compiled() -> None:
    assert [c.name for c in CONTRACTS if c.write is None or c.read is None] == []


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.short_name)
def test_compiled_codec_writes_and_reads_exactly_what_fastavro_does(contract: Contract) -> None:
    @EXAMPLES
    @given(record=strategy(contract.expanded))
    def check(record: dict[str, Any]) -> None:
        assert contract.write is not None and contract.read is not None
        out = bytearray()
        contract.write(out, record)
        assert bytes(out) == fastavro_bytes(contract, record)
        decoded, end = contract.read(bytes(out), 0)
        assert end == len(out)
        assert decoded == fastavro_record(contract, bytes(out))

    check()


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.short_name)
def test_compiled_reader_never_accepts_what_fastavro_refuses_or_reads_differently(
    contract: Contract,
) -> None:
    @EXAMPLES
    @given(record=strategy(contract.expanded), data=st.data())
    def check(record: dict[str, Any], data: st.DataObject) -> None:
        assert contract.read is not None
        body = bytearray(fastavro_bytes(contract, record))
        cut = data.draw(st.integers(0, len(body)))
        if data.draw(st.booleans()):
            del body[cut:]
        elif body:
            body[cut % len(body)] ^= data.draw(st.integers(1, 255))
        try:
            mine, end = contract.read(bytes(body), 0)
        except (ValueError, IndexError, UnicodeDecodeError, OverflowError):
            return
        if end != len(body):
            return
        assert mine == fastavro_record(contract, bytes(body))

    check()


@given(LONGS)
def test_longs_round_trip_as_zigzag_varints(value: int) -> None:
    out = bytearray()
    write_long(out, value)
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, "long", value)
    assert bytes(out) == buffer.getvalue()
    assert read_long(bytes(out), 0) == (value, len(out))


def test_bad_bodies_raise_instead_of_reading_past_their_end() -> None:
    contract = CODEC.contract("consentry.events.DataUpdated")
    assert contract.read is not None
    for body in (b"", b"\x80" * 11, b"\x7f", b"\x01"):
        with pytest.raises((ValueError, IndexError)):
            contract.read(body, 0)


def test_naive_timestamps_and_unknown_types_are_refused() -> None:
    writer, _ = compile_schema({"type": "long", "logicalType": "timestamp-micros"})
    with pytest.raises(TypeError):
        writer(bytearray(), datetime(2026, 1, 1))
    writer(bytearray(), datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=1))
    for schema in ("double", {"type": "fixed", "size": 4, "name": "F"}, ["null", "string", "long"]):
        with pytest.raises(Unsupported):
            compile_schema(schema)
    assert uuid.UUID(int=0)  # uuids are covered by the schema-driven properties above


def _parsed(parse: Any, text: str) -> tuple[str, int | None]:
    try:
        return "ok", parse(text).int
    except ValueError as exc:
        return type(exc).__name__, None


@pytest.mark.parametrize(
    "shape",
    [
        lambda s: s,
        str.upper,
        lambda s: s.replace("-", ""),
        lambda s: "{" + s + "}",
        lambda s: "urn:uuid:" + s,
        lambda s: "{" + s[1:-1] + "}",
        lambda s: "urn:uuid:" + s.replace("-", "")[:23],
        lambda s: s[:-1] + "g",
        lambda s: "+" + s[1:],
        lambda s: " " + s[1:],
        lambda s: s[:3] + "_" + s[4:],
        lambda s: s + "0",
        lambda s: "",
    ],
)
def test_the_uuid_parser_answers_exactly_as_uuid_does(shape: Any) -> None:
    text = shape(str(uuid.uuid4()))
    assert _parsed(parse_uuid, text) == _parsed(uuid.UUID, text)
    if _parsed(uuid.UUID, text)[0] == "ok":
        parsed, expected = parse_uuid(text), uuid.UUID(text)
        assert (parsed, hash(parsed), parsed.is_safe, str(parsed)) == (
            expected,
            hash(expected),
            expected.is_safe,
            str(expected),
        )


TIMESTAMP: Any = {"type": "long", "logicalType": "timestamp-micros"}
UUID_SCHEMA: Any = {"type": "string", "logicalType": "uuid"}
# Microseconds around every varint length (1 to 9 bytes) a datetime can have, both signs.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FIRST, LAST = (
    (moment.replace(tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)
    for moment in (datetime.min, datetime.max)
)
MICROS = sorted(
    micros
    for micros in {0, 1, -1}
    | {sign * ((1 << bits) + delta) for bits in range(5, 59) for sign in (1, -1) for delta in (-1, 0, 1)}
    if FIRST <= micros <= LAST
)


@pytest.mark.parametrize("micros", MICROS)
def test_timestamps_of_every_varint_length_read_as_fastavro_reads_them(micros: int) -> None:
    moment = EPOCH + timedelta(microseconds=micros)
    writer, reader = compile_schema(TIMESTAMP)
    body = bytearray()
    writer(body, moment)
    expected = fastavro.schemaless_reader(io.BytesIO(bytes(body)), TIMESTAMP, None)
    # Followed by other bytes (a varint's end is found, not assumed) and cut short.
    for tail in (b"", b"\x00", b"\xff" * 9):
        assert reader(bytes(body) + tail, 0) == (expected, len(body))
    for cut in range(len(body)):
        with pytest.raises(IndexError):
            reader(bytes(body[:cut]), 0)


def test_a_uuid_field_reads_each_record_s_own_id_however_the_ids_repeat() -> None:
    schema = {"type": "record", "name": "R", "fields": [{"name": "id", "type": UUID_SCHEMA}]}
    writer, reader = compile_schema(schema)
    ids = [uuid.uuid4() for _ in range(3)]
    bodies = {}
    for one in ids:
        body = bytearray()
        writer(body, {"id": one})
        bodies[one] = bytes(body)
    for one in [ids[0], ids[0], ids[1], ids[0], ids[2], ids[2], ids[1]]:
        read, _end = reader(bodies[one], 0)
        assert read["id"] == one
    # The body of the id read last with its last hex digit made "z": parsed (and refused), not reused.
    bad = bodies[ids[1]].replace(str(ids[1])[-1].encode(), b"z")
    with pytest.raises(ValueError):
        reader(bad, 0)
    assert reader(bodies[ids[1]], 0)[0]["id"] == ids[1]
