"""Events read straight into their classes against the record way (decode, then event_from_record),
and written straight from them against encode(event_to_record(event)).

Records are generated from each event schema of `schemas/`, as in test_avro_compiled.
"""

from __future__ import annotations

import gc
import io
import json
import shutil
import uuid
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consentry.core.avro import HEADER_LEN, MAGIC, AvroCodec, Contract
from consentry.core.avro_compiled import ClassMismatch, Unsupported, compile_reader, compile_writer
from consentry.core.errors import Reason, Rejected, SchemaError
from consentry.core.event_codec import (
    RECORD_CLASSES,
    decode_event,
    event_decoder,
    event_encoder,
    event_readers,
    event_writers,
)
from consentry.core.events import (
    EVENT_TYPES,
    Actor,
    EventMeta,
    LedgerEvent,
    event_from_record,
    event_to_record,
    field_names,
)
from tests.support import SCHEMAS
from tests.unit.test_avro_compiled import EXAMPLES, strategy
from tests.unit.test_slots import _Checked

CODEC = AvroCodec(SCHEMAS)
EVENTS = sorted(CODEC.contracts("events"), key=lambda c: c.name)


def the_record_way(codec: AvroCodec, data: bytes) -> LedgerEvent:
    return event_from_record(*codec.decode(data))


def assert_same_event(built: LedgerEvent, expected: LedgerEvent) -> None:
    """Equal, and of the same types down to each field (a tuple is not a list, an EventMeta is
    not a dict, a SealedValue is a SealedValue)."""
    assert built == expected
    assert type(built) is type(expected)
    for name in field_names(type(expected)):
        mine, theirs = getattr(built, name), getattr(expected, name)
        assert type(mine) is type(theirs), name
        if isinstance(theirs, dict):
            assert [type(v) for v in mine.values()] == [type(v) for v in theirs.values()], name
    assert type(built.meta) is EventMeta
    assert built.meta.actor is None or type(built.meta.actor) is Actor


def test_every_event_schema_is_read_straight_into_its_classes() -> None:
    readers = event_readers(CODEC)
    assert [c.short_name for c in EVENTS if c.fingerprint not in readers] == []
    assert len(EVENTS) >= 15
    # Each reader builds its event itself (a reader of dicts would pass every equality test below,
    # through event_from_record).
    for contract in EVENTS:
        data = CODEC.encode(contract.name, _record_of(contract))
        built, _end = readers[contract.fingerprint](data, HEADER_LEN)
        assert type(built) is EVENT_TYPES[contract.name], contract.short_name


@pytest.mark.parametrize("contract", EVENTS, ids=lambda c: c.short_name)
def test_an_event_read_straight_equals_the_one_built_from_its_record(contract: Contract) -> None:
    read = event_decoder(CODEC)

    @EXAMPLES
    @given(record=strategy(contract.expanded))
    def check(record: dict[str, Any]) -> None:
        data = CODEC.encode(contract.name, record)
        assert_same_event(read(data), the_record_way(CODEC, data))

    check()


@pytest.mark.parametrize("contract", EVENTS, ids=lambda c: c.short_name)
def test_damaged_bytes_are_refused_alike_or_read_alike(contract: Contract) -> None:
    @EXAMPLES
    @given(record=strategy(contract.expanded), data=st.data())
    def check(record: dict[str, Any], data: st.DataObject) -> None:
        body = bytearray(CODEC.encode(contract.name, record))
        cut = data.draw(st.integers(0, len(body)))
        if data.draw(st.booleans()):
            del body[cut:]
        elif body:
            body[cut % len(body)] ^= data.draw(st.integers(1, 255))
        outcomes: list[LedgerEvent | Reason] = []
        for way in (decode_event, the_record_way):
            try:
                outcomes.append(way(CODEC, bytes(body)))
            except Rejected as exc:
                outcomes.append(exc.reason)
        if isinstance(outcomes[0], LedgerEvent):
            assert isinstance(outcomes[1], LedgerEvent)
            assert_same_event(outcomes[0], outcomes[1])
        else:
            assert outcomes[0] == outcomes[1]

    check()


def test_every_event_schema_is_written_straight_from_its_classes() -> None:
    writers = event_writers(CODEC)
    assert [c.short_name for c in EVENTS if c.fingerprint not in writers] == []
    # Each writer reads the event's attributes (a writer of dicts would pass every equality test
    # below, through event_to_record): handed the record dict, it refuses it.
    for contract in EVENTS:
        with pytest.raises(ClassMismatch):
            writers[contract.fingerprint](bytearray(), _record_of(contract))


@pytest.mark.parametrize("contract", EVENTS, ids=lambda c: c.short_name)
def test_an_event_written_straight_has_the_bytes_of_its_record(contract: Contract) -> None:
    read, write = event_decoder(CODEC), event_encoder(CODEC)

    @EXAMPLES
    @given(record=strategy(contract.expanded))
    def check(record: dict[str, Any]) -> None:
        data = CODEC.encode(contract.name, record)
        event = read(data)
        assert write(event) == CODEC.encode(contract.name, event_to_record(event)) == data

    check()


def test_a_writer_refuses_a_class_whose_fields_are_not_the_records() -> None:
    contract = CODEC.contract("consentry.events.DataAccessed")
    fewer = {**RECORD_CLASSES, contract.name: Actor}  # two fields, none of them the record's
    with pytest.raises(Unsupported):
        compile_writer(contract.expanded, fewer)
    assert CODEC.writer_from(contract, fewer) is None


def test_an_event_of_an_older_schema_version_is_written_with_the_newest(tmp_path: Path) -> None:
    """With a v2 of DataUpdated, events are written as v2 (by fastavro from the record, as its
    writer reads no instance of a class with fewer fields than the record); the v1 contract
    cannot be written with at all."""
    codec, older, newest = _with_a_noted_v2(tmp_path)
    assert newest.fingerprint not in event_writers(codec)
    event = decode_event(codec, codec.encode(newest.name, _record(newest) | {"note": "a note"}))
    data = event_encoder(codec)(event)
    assert data[2:HEADER_LEN] == newest.fingerprint
    assert_same_event(decode_event(codec, data), event)
    with pytest.raises(SchemaError):
        codec.encode_with(older, event_to_record(event), {})


def test_the_readers_are_compiled_once_per_codec_and_go_with_it() -> None:
    assert event_readers(CODEC) is event_readers(CODEC)
    assert event_writers(CODEC) is event_writers(CODEC)
    codec = AvroCodec(SCHEMAS)
    assert event_readers(codec) is not event_readers(CODEC)
    assert event_writers(codec) is not event_writers(CODEC)
    data = CODEC.encode(EVENTS[0].name, _record_of(EVENTS[0]))
    assert_same_event(event_decoder(codec)(data), decode_event(CODEC, data))
    gone = weakref.ref(codec)
    del codec
    gc.collect()
    assert gone() is None


def test_a_schema_with_a_sealed_value_outside_its_personal_fields_takes_the_record_way(
    tmp_path: Path,
) -> None:
    """The class reader would build a SealedValue there, event_from_record a dict: no reader."""
    schemas = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, schemas)
    v1 = json.loads((schemas / "events" / "DataUpdated.v1.avsc").read_text())
    extra = {"name": "copy", "type": ["null", "consentry.common.SealedValue"], "default": None}
    v2 = v1 | {"version": 2, "fields": [*v1["fields"], extra]}
    (schemas / "events" / "DataUpdated.v2.avsc").write_text(json.dumps(v2))
    codec = AvroCodec(schemas)
    newest = codec.contract("consentry.events.DataUpdated")
    assert newest.fingerprint not in event_readers(codec)
    assert codec.contract("consentry.events.DataAccessed").fingerprint in event_readers(codec)
    record = _record(newest)
    data = codec.encode(newest.name, record | {"copy": record["fields"]["email"]})
    assert_same_event(decode_event(codec, data), the_record_way(codec, data))


def test_bytes_of_an_older_schema_version_take_the_record_way(tmp_path: Path) -> None:
    """A v2 of DataUpdated with one more field: v1 bytes are resolved by fastavro against v2, and
    the event is built from that record; v2 bytes are read straight (the extra field is not the
    class's, so it is read past, as event_from_record leaves it)."""
    codec, older, newest = _with_a_noted_v2(tmp_path)
    record = _record(older)

    body = io.BytesIO()
    fastavro.schemaless_writer(body, older.parsed, record)
    old_bytes = MAGIC + older.fingerprint + body.getvalue()
    assert codec.reader_into(older, RECORD_CLASSES) is None
    assert older.fingerprint not in event_readers(codec)
    assert_same_event(decode_event(codec, old_bytes), the_record_way(codec, old_bytes))

    new_bytes = codec.encode(newest.name, record | {"note": "a note"})
    assert new_bytes[2:HEADER_LEN] == newest.fingerprint
    assert newest.fingerprint in event_readers(codec)
    assert_same_event(decode_event(codec, new_bytes), the_record_way(codec, new_bytes))


def _with_a_noted_v2(tmp_path: Path) -> tuple[AvroCodec, Contract, Contract]:
    """A codec of our schemas plus a v2 of DataUpdated with one more field (`note`); its v1 and
    v2 contracts."""
    schemas = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, schemas)
    v1 = json.loads((schemas / "events" / "DataUpdated.v1.avsc").read_text())
    note = {"name": "note", "type": "string", "default": ""}
    v2 = v1 | {"version": 2, "fields": [*v1["fields"], note]}
    (schemas / "events" / "DataUpdated.v2.avsc").write_text(json.dumps(v2))
    codec = AvroCodec(schemas)
    newest = codec.contract("consentry.events.DataUpdated")
    older = next(c for c in codec.contracts("events") if c.name == newest.name and c.version == 1)
    return codec, older, newest


def _record_of(contract: Contract) -> dict[str, Any]:
    """One record of the schema (the first hypothesis would draw, always the same)."""
    found: list[dict[str, Any]] = []

    @settings(max_examples=1, database=None, derandomize=True)
    @given(record=strategy(contract.expanded))
    def draw(record: dict[str, Any]) -> None:
        found.append(record)

    draw()
    return found[0]


def _record(contract: Contract) -> dict[str, Any]:
    """A DataUpdated record (obviously fake values)."""
    assert contract.short_name == "DataUpdated"
    meta = {
        "event_id": uuid.uuid4(),
        "subject_id": uuid.uuid4(),
        "sequence": 3,
        "occurred_at": datetime(2026, 12, 6, tzinfo=UTC),
        "recorded_at": datetime(2026, 12, 6, 0, 0, 1, tzinfo=UTC),
        "producer": "crm-example",
        "actor": {"actor_id": "agent-example", "role": "support"},
        "causation_id": None,
        "correlation_id": "corr-example",
        "idempotency": b"idem",
        "policy_version": "1",
        "prev_hash": bytes(32),
    }
    sealed = {"scope": "purpose:support", "key_id": "k-example", "nonce": b"n" * 12, "ciphertext": b"c"}
    return {
        "meta": meta,
        "purpose": "support",
        "fields": {"email": sealed, "city": sealed | {"ciphertext": b"d"}},
        "rectification": False,
    }


@dataclass(frozen=True, slots=True)
class _Wider:
    a: str
    b: str = "b"


@pytest.mark.parametrize("cls", [_Checked, _Wider, object])
def test_only_plain_slotted_dataclasses_covering_the_record_are_built(cls: type) -> None:
    schema = {"type": "record", "name": "t.R", "fields": [{"name": "a", "type": "string"}]}
    with pytest.raises(Unsupported):
        compile_reader(schema, {"t.R": cls})
    read = compile_reader(schema, {})
    assert read(b"\x02x", 0) == ({"a": "x"}, 2)
