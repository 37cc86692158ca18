"""The Avro codec: every schema file, every event type, single-object framing and its failures."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from dataclasses import fields
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import fastavro
import pytest
from fastavro.schema import (
    UnknownType,
    fingerprint,
    load_schema_ordered,
    to_parsing_canonical_form,
)

from consentry.core.avro import HEADER_LEN, MAGIC, AvroCodec
from consentry.core.errors import Reason, Rejected, SchemaError
from consentry.core.event_codec import event_encoder, event_writers
from consentry.core.events import (
    EVENT_TYPES,
    AccessAnomalyFlagged,
    AccessDenied,
    Actor,
    ConsentExpired,
    ConsentGranted,
    ConsentWithdrawn,
    ContactRecorded,
    DataAccessed,
    DataShared,
    DataUpdated,
    DataUpdateRejected,
    ErasureRequested,
    EventMeta,
    KeysShredded,
    LedgerEvent,
    ReferenceLinked,
    SubjectErased,
    TaskUpdated,
    event_from_record,
    event_to_record,
)
from consentry.core.intake import INTAKE_TYPES, IntakeRecord
from consentry.core.sealing import (
    CONSENT_SCOPE,
    ERASED,
    IDENTITY_SCOPE,
    Personal,
    SealedValue,
    purpose_scope,
)
from tests.support import SCHEMAS, T0, StepClock, canary, codec, fake_email, parser, record

SCHEMA_FILES = sorted(SCHEMAS.glob("*/*.avsc"))
# Common schemas in dependency order: EventMeta refers to Actor.
COMMON_ORDER = [SCHEMAS / "common" / n for n in ("Actor.v1.avsc", "SealedValue.v1.avsc")] + [
    SCHEMAS / "common" / "EventMeta.v1.avsc"
]
WHEN = datetime(2026, 11, 1, 9, 30, 15, 123456, tzinfo=UTC)


@pytest.fixture(scope="module")
def the_codec() -> AvroCodec:
    return codec()


def full_name(path: Path) -> str:
    raw = json.loads(path.read_text(encoding="utf-8"))
    return f"{raw['namespace']}.{raw['name']}"


def sealed(scope: str = purpose_scope("marketing")) -> SealedValue:
    return SealedValue(scope, uuid.uuid4().hex, os.urandom(12), os.urandom(48))


def meta(full: bool = True) -> EventMeta:
    if not full:
        return EventMeta(uuid.uuid4(), uuid.uuid4(), 1, WHEN, WHEN, "policy-1")
    return EventMeta(
        event_id=uuid.uuid4(),
        subject_id=uuid.uuid4(),
        sequence=7,
        occurred_at=WHEN,
        recorded_at=WHEN + timedelta(microseconds=654321),
        policy_version="policy-2026-11",
        producer="shop-fake",
        actor=Actor("staff-0001", "support"),
        causation_id=f"cause-{uuid.uuid4().hex}",
        correlation_id=f"corr-{uuid.uuid4().hex}",
        idempotency=os.urandom(32),
        prev_hash=os.urandom(32),
    )


SAMPLES: dict[type[LedgerEvent], Callable[[EventMeta], LedgerEvent]] = {
    ReferenceLinked: lambda m: ReferenceLinked(m, "shop", sealed(IDENTITY_SCOPE)),
    ConsentGranted: lambda m: ConsentGranted(
        m,
        "marketing",
        ("contact", "preferences"),
        "consent",
        "web",
        "notice-3",
        sealed(CONSENT_SCOPE),
        WHEN + timedelta(days=365, microseconds=1),
    ),
    ConsentWithdrawn: lambda m: ConsentWithdrawn(m, "marketing", "email"),
    ConsentExpired: lambda m: ConsentExpired(m, "marketing", WHEN + timedelta(microseconds=999)),
    DataUpdated: lambda m: DataUpdated(
        m, "marketing", {"email": sealed(), "phone": sealed(), "name": sealed()}, True
    ),
    DataUpdateRejected: lambda m: DataUpdateRejected(
        m, "marketing", "field_not_allowed", ("shoe_size",)
    ),
    DataAccessed: lambda m: DataAccessed(m, "support", ("email", "phone"), "profile"),
    AccessDenied: lambda m: AccessDenied(m, "support", "role_not_allowed", "export"),
    DataShared: lambda m: DataShared(m, "marketing", "mailer-fake", "dpa-7", ("email",)),
    ContactRecorded: lambda m: ContactRecorded(m, "marketing", "email"),
    ErasureRequested: lambda m: ErasureRequested(m, "customer_request"),
    KeysShredded: lambda m: KeysShredded(
        m,
        "erasure",
        ("consent", "purpose:marketing"),
        (uuid.uuid4().hex, uuid.uuid4().hex),
        b'{"certificate":"fake"}',
        os.urandom(64),
    ),
    SubjectErased: lambda m: SubjectErased(m),
    TaskUpdated: lambda m: TaskUpdated(m, "ticket-4711", "support_agent", "open"),
    AccessAnomalyFlagged: lambda m: AccessAnomalyFlagged(
        m, "staff-0001", "support_agent", "rate", uuid.uuid4(), "60 reads in a 60-minute window"
    ),
}


def round_trip(the_codec: AvroCodec, event: LedgerEvent) -> tuple[bytes, LedgerEvent]:
    data = the_codec.encode(event.avro_name, event_to_record(event))
    contract, rec = the_codec.decode(data)
    assert contract.name == event.avro_name
    return data, event_from_record(contract, rec)


def sample_bytes(the_codec: AvroCodec) -> bytes:
    return the_codec.encode(DataUpdated.avro_name, event_to_record(SAMPLES[DataUpdated](meta())))


def rejection(the_codec: AvroCodec, data: bytes) -> Reason:
    with pytest.raises(Rejected) as caught:
        the_codec.decode(data)
    return caught.value.reason


# -- schema files --------------------------------------------------------------------------------


def test_every_schema_file_parses_into_a_contract(the_codec: AvroCodec) -> None:
    assert len(SCHEMA_FILES) == 25
    assert sorted(c.path for c in the_codec.contracts()) == SCHEMA_FILES
    for path in SCHEMA_FILES:
        contract = the_codec.contract(full_name(path))
        assert contract.path == path
        assert contract.kind == path.parent.name
        assert path.name == f"{contract.short_name}.v{contract.version}.avsc"


def test_every_schema_file_parses_with_fastavro_on_its_own_terms() -> None:
    named: dict[str, Any] = {}
    for path in COMMON_ORDER:
        fastavro.parse_schema(json.loads(path.read_text(encoding="utf-8")), named_schemas=named)
    for path in SCHEMA_FILES:
        if path not in COMMON_ORDER:
            raw = json.loads(path.read_text(encoding="utf-8"))
            fastavro.parse_schema(raw, named_schemas=dict(named))


def test_every_event_type_has_a_schema_and_every_event_schema_a_type(
    the_codec: AvroCodec,
) -> None:
    assert {c.name for c in the_codec.contracts("events")} == set(EVENT_TYPES)
    assert set(SAMPLES) == set(EVENT_TYPES.values())


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_every_event_class_has_exactly_the_fields_of_its_schema(the_codec: AvroCodec, name: str) -> None:
    contract = the_codec.contract(name)
    assert {f.name for f in fields(EVENT_TYPES[name])} == set(contract.field_names)


def test_every_intake_type_has_a_schema_and_every_intake_schema_a_type(
    the_codec: AvroCodec,
) -> None:
    assert {c.intake_type for c in the_codec.contracts("intake")} == set(INTAKE_TYPES)
    for kind, cls in INTAKE_TYPES.items():
        contract = the_codec.intake_contract(kind)
        assert {f.name for f in fields(cls)} == set(contract.field_names)


def test_personal_fields_are_declared_on_the_schemas_that_carry_them(
    the_codec: AvroCodec,
) -> None:
    pii = {c.short_name: dict(c.pii) for c in the_codec.contracts("events") if c.pii}
    assert pii == {
        "ReferenceLinked": {"ref": "identity"},
        "ConsentGranted": {"evidence": "consent"},
        "DataUpdated": {"fields": "purpose"},
    }
    assert the_codec.contract(DataUpdated.avro_name).pii_maps == frozenset({"fields"})


# -- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
@pytest.mark.parametrize("full_meta", [True, False], ids=["full-meta", "bare-meta"])
def test_every_event_type_round_trips(the_codec: AvroCodec, name: str, full_meta: bool) -> None:
    event = SAMPLES[EVENT_TYPES[name]](meta(full_meta))
    data, decoded = round_trip(the_codec, event)
    assert data[:2] == MAGIC
    assert type(decoded) is type(event)
    assert decoded == event
    assert decoded.meta.occurred_at.utcoffset() == timedelta(0)
    assert decoded.meta.recorded_at.microsecond == event.meta.recorded_at.microsecond


def test_a_consent_without_evidence_or_expiry_round_trips(the_codec: AvroCodec) -> None:
    event = ConsentGranted(meta(), "marketing", (), "consent", "web", "notice-3")
    assert round_trip(the_codec, event)[1] == event


def test_sealed_values_keep_their_bytes_exactly(the_codec: AvroCodec) -> None:
    event = SAMPLES[DataUpdated](meta())
    decoded = round_trip(the_codec, event)[1]
    assert isinstance(event, DataUpdated)
    assert isinstance(decoded, DataUpdated)
    assert all(isinstance(v, SealedValue) for v in decoded.fields.values())
    assert dict(decoded.fields) == dict(event.fields)


def test_a_time_in_another_zone_decodes_as_the_same_instant_in_utc(
    the_codec: AvroCodec,
) -> None:
    plus_two = timezone(timedelta(hours=2))
    local = WHEN.astimezone(plus_two)
    event = ConsentExpired(meta(), "marketing", local)
    decoded = round_trip(the_codec, event)[1]
    assert isinstance(decoded, ConsentExpired)
    assert decoded.expired_at == WHEN
    assert decoded.expired_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "build",
    [
        lambda m: DataUpdated(m, "marketing", {"email": Personal(canary("email"))}),
        lambda m: DataUpdated(m, "marketing", {"email": sealed(), "phone": Personal("0")}),
        lambda m: ReferenceLinked(m, "shop", Personal(canary("ref"))),
        lambda m: ConsentGranted(m, "marketing", (), "consent", "web", "n-1", Personal("ok")),
        lambda m: ReferenceLinked(m, "shop", ERASED),
    ],
    ids=["map", "map-mixed", "ref", "evidence", "erased"],
)
def test_an_unsealed_personal_value_cannot_be_encoded(
    build: Callable[[EventMeta], LedgerEvent], the_codec: AvroCodec
) -> None:
    event = build(meta())
    with pytest.raises(SchemaError):
        event_to_record(event)
    # The compiled writer that reads the event's attributes refuses it alike.
    assert event.avro_name and the_codec.contract(event.avro_name).fingerprint in event_writers(
        the_codec
    )
    with pytest.raises(SchemaError):
        event_encoder(the_codec)(event)


def test_the_schema_error_never_shows_the_personal_value(the_codec: AvroCodec) -> None:
    secret = canary("email")
    event = DataUpdated(meta(), "marketing", {"email": Personal(secret)})
    for way in (event_to_record, event_encoder(the_codec)):
        with pytest.raises(SchemaError) as caught:
            way(event)
        assert secret not in str(caught.value)
        chain = (caught.value, caught.value.__cause__, caught.value.__context__)
        assert not any(secret in repr(exc) for exc in chain)


def test_encoding_a_record_that_does_not_match_is_rejected_as_invalid(
    the_codec: AvroCodec,
) -> None:
    rec = event_to_record(SAMPLES[DataShared](meta()))
    with pytest.raises(Rejected) as caught:
        the_codec.encode(DataShared.avro_name, {**rec, "field_names": 42})
    assert caught.value.reason is Reason.INVALID_VALUE


# -- framing and failures ------------------------------------------------------------------------


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.stem)
def test_the_fingerprint_is_the_crc_64_avro_of_the_full_canonical_form(
    the_codec: AvroCodec, path: Path
) -> None:
    if path in COMMON_ORDER:
        dependencies = COMMON_ORDER[: COMMON_ORDER.index(path)]
    else:
        dependencies = COMMON_ORDER
    schema = load_schema_ordered([str(p) for p in [*dependencies, path]])
    canonical = to_parsing_canonical_form(schema)
    fastavro.parse_schema(json.loads(canonical))  # stands alone: every named type is defined
    expected = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
    assert the_codec.contract(full_name(path)).fingerprint.hex() == expected.hex()


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.stem)
def test_the_canonical_form_behind_each_fingerprint_stands_alone(
    the_codec: AvroCodec, path: Path
) -> None:
    contract = the_codec.contract(full_name(path))
    canonical = to_parsing_canonical_form(contract.expanded)
    try:
        fastavro.parse_schema(json.loads(canonical))
    except UnknownType as exc:
        pytest.fail(f"the canonical form refers to {exc} without defining it: {canonical}")


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_encoded_bytes_start_with_the_magic_and_the_fingerprint(the_codec: AvroCodec, name: str) -> None:
    event = SAMPLES[EVENT_TYPES[name]](meta())
    data = the_codec.encode(name, event_to_record(event))
    assert data[:2] == b"\xc3\x01"
    assert data[2:HEADER_LEN] == the_codec.contract(name).fingerprint
    assert len(the_codec.contract(name).fingerprint) == 8


def test_fingerprints_are_distinct(the_codec: AvroCodec) -> None:
    prints = [c.fingerprint for c in the_codec.contracts()]
    assert len(set(prints)) == len(prints) == len(SCHEMA_FILES)


@pytest.mark.parametrize(
    "data",
    [b"", b"\xc3", b"\xc3\x01", b"\xc3\x01\x00\x01\x02", b"this is not avro at all", b"{}"],
    ids=["empty", "half-magic", "magic-only", "short-header", "text", "json"],
)
def test_garbage_is_rejected_as_malformed(the_codec: AvroCodec, data: bytes) -> None:
    assert rejection(the_codec, data) is Reason.MALFORMED_AVRO


@pytest.mark.parametrize("magic", [b"\xc3\x02", b"\x01\xc3", b"\x00\x00", b"Ob"])
def test_a_wrong_magic_is_rejected_as_malformed(the_codec: AvroCodec, magic: bytes) -> None:
    data = sample_bytes(the_codec)
    assert rejection(the_codec, magic + data[2:]) is Reason.MALFORMED_AVRO


def test_an_unknown_fingerprint_is_rejected_as_unknown_schema(the_codec: AvroCodec) -> None:
    data = sample_bytes(the_codec)
    known = {c.fingerprint for c in the_codec.contracts()}
    stranger = os.urandom(8)
    assert stranger not in known
    assert rejection(the_codec, MAGIC + stranger + data[HEADER_LEN:]) is Reason.UNKNOWN_SCHEMA
    assert rejection(the_codec, MAGIC + stranger) is Reason.UNKNOWN_SCHEMA


def test_every_truncation_is_rejected_as_malformed(the_codec: AvroCodec) -> None:
    data = sample_bytes(the_codec)
    reasons = {n: rejection(the_codec, data[:n]) for n in range(len(data))}
    assert set(reasons.values()) == {Reason.MALFORMED_AVRO}


def test_trailing_bytes_are_rejected_as_malformed(the_codec: AvroCodec) -> None:
    assert rejection(the_codec, sample_bytes(the_codec) + b"\x00") is Reason.MALFORMED_AVRO


def test_a_garbage_body_behind_a_known_fingerprint_is_rejected_as_malformed(
    the_codec: AvroCodec,
) -> None:
    header = sample_bytes(the_codec)[:HEADER_LEN]
    for body in (b"", b"\xff" * 32, b"\x80" * 12, os.urandom(3)):
        assert rejection(the_codec, header + body) is Reason.MALFORMED_AVRO


def test_a_rejection_never_quotes_the_bytes(the_codec: AvroCodec) -> None:
    secret = canary("body")
    data = sample_bytes(the_codec)[:HEADER_LEN] + secret.encode()
    with pytest.raises(Rejected) as caught:
        the_codec.decode(data)
    assert secret not in str(caught.value)


# -- intake records ------------------------------------------------------------------------------

INTAKE_SAMPLES: dict[str, dict[str, Any]] = {
    "consent.grant": {
        "data_categories": ["contact"],
        "evidence": "checkbox-ticked-fake",
        "expires_at": (T0 + timedelta(days=30, microseconds=42)).isoformat(),
        "correlation_id": "corr-fake-1",
    },
    "consent.withdrawal": {},
    "data.update": {"fields": {"email": fake_email(), "name": "Fake Name"}, "rectification": True},
    "erasure.request": {"reason": "customer_request"},
    "contact.report": {"correlation_id": "corr-fake-2"},
    "access.report": {
        "purpose": "support",
        "actor_id": "staff-0001",
        "role": "support",
        "field_names": ["email"],
    },
    "task.report": {"correlation_id": "corr-fake-3"},
}


@pytest.mark.parametrize("kind", sorted(INTAKE_TYPES))
@pytest.mark.parametrize("extras", [True, False], ids=["optional-set", "defaults"])
def test_every_intake_record_round_trips_through_avro(kind: str, extras: bool) -> None:
    the_parser = parser(StepClock(T0 + timedelta(hours=1)))
    values = dict(INTAKE_SAMPLES[kind]) if extras or kind == "access.report" else {}
    when = (T0 + timedelta(microseconds=123456)).isoformat()
    original = the_parser.from_json(
        record(kind, f"shop:{uuid.uuid4().hex[:8]}", occurred_at=when, **values)
    )
    assert isinstance(original, IntakeRecord)
    assert original.intake_type == kind
    data = the_parser.to_avro(original)
    assert data[:2] == MAGIC
    assert data[2:HEADER_LEN] == the_parser.codec.intake_contract(kind).fingerprint
    decoded = the_parser.from_avro(data)
    assert decoded == original
    assert decoded.occurred_at.microsecond == 123456


@pytest.mark.parametrize(
    "values",
    [
        {"fields": {"email": "user@example.com\ud800"}},
        {"fields": {"email\udfff": "user@example.com"}},
        {"field_names": ["email", "\udbff"]},
        {"fields": {"email": "\ud83d", "name": "\ude00"}},  # two halves never pair up
    ],
    ids=["value", "key", "list", "halves"],
)
def test_a_lone_surrogate_anywhere_in_a_json_record_is_refused(values: dict[str, Any]) -> None:
    the_parser = parser(StepClock(T0 + timedelta(hours=1)))
    kind = "access.report" if "field_names" in values else "data.update"
    base = dict(INTAKE_SAMPLES[kind]) | values
    with pytest.raises(Rejected) as caught:
        the_parser.from_json(record(kind, f"shop:{uuid.uuid4().hex[:8]}", **base))
    assert caught.value.reason is Reason.INVALID_VALUE
    assert "surrogate" in caught.value.detail
    # The same record with every text valid is accepted (é and emoji encode as UTF-8).
    fine: dict[str, Any] = {"fields": {"email": "é@example.com", "name": "\U0001f600"}}
    if kind == "access.report":
        fine = {"field_names": ["email"]}
    the_parser.from_json(record(kind, f"shop:{uuid.uuid4().hex[:8]}", **(base | fine)))


def test_an_event_is_not_accepted_as_an_intake_record() -> None:
    the_parser = parser(StepClock(T0 + timedelta(hours=1)))
    with pytest.raises(Rejected) as caught:
        the_parser.from_avro(sample_bytes(the_parser.codec))
    assert caught.value.reason is Reason.UNKNOWN_EVENT_TYPE
