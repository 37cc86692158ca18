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
