"""Interoperability with the Apache `avro` reference library, using nothing but the schema files.

Apache avro (Python) has no single-object helper, so the tests frame the bytes themselves:
`C3 01`, the CRC-64-AVRO fingerprint of the schema's Parsing Canonical Form (little-endian), body.
The canonical form and the CRC are computed here from the Avro specification, independently of our
codec and of fastavro, and cross-checked against Apache avro's own `canonical_form` / `fingerprint`.
"""

from __future__ import annotations

import io
import json
import os
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import avro.io
import avro.name
import avro.schema
import pytest

from consentry.core.avro import AvroCodec
from consentry.core.errors import Reason, Rejected
from consentry.core.events import (
    Actor,
    ConsentGranted,
    DataUpdated,
    EventMeta,
    KeysShredded,
    LedgerEvent,
    event_from_record,
    event_to_record,
)
from consentry.core.intake import ConsentGrant, DataUpdate, IntakeParser
from consentry.core.sealing import CONSENT_SCOPE, Personal, SealedValue, purpose_scope
from tests.support import SCHEMAS, T0, StepClock, codec, fake_email, parser, record

MAGIC = b"\xc3\x01"
PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
WHEN = datetime(2026, 11, 1, 9, 30, 15, 123456, tzinfo=UTC)

# -- the Avro specification, written out --------------------------------------------------------

_EMPTY64 = 0xC15D213AA4D7A795


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY64 & -(fp & 1))
        table.append(fp)
    return table


_TABLE = _crc_table()


def crc64_avro(data: bytes) -> bytes:
    """The 64-bit Rabin fingerprint of the spec, little-endian as single-object encoding wants."""
    fp = _EMPTY64
    for byte in data:
        fp = (fp >> 8) ^ _TABLE[(fp ^ byte) & 0xFF]
    return fp.to_bytes(8, "little")


def _full(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def canonical_form(
    schema: Any, defined: dict[str, Any], seen: set[str], namespace: str | None = None
) -> str:
    """Parsing Canonical Form of a schema whose named references resolve through `defined`.

    A named type is written in full at its first occurrence and by full name afterwards; only
    name, type, fields, symbols, items, values and size survive ([STRIP]); a primitive with
    extra attributes such as a logicalType becomes its bare name ([PRIMITIVES]).
    """
    if isinstance(schema, list):
        return "[" + ",".join(canonical_form(s, defined, seen, namespace) for s in schema) + "]"
    if isinstance(schema, str):
        if schema in PRIMITIVES:
            return json.dumps(schema)
        fullname = _full(schema, namespace)
        if fullname in seen:
            return json.dumps(fullname, ensure_ascii=False)
        return canonical_form(defined[fullname], defined, seen, namespace)
    kind = schema["type"]
    if not isinstance(kind, str):
        return canonical_form(kind, defined, seen, namespace)
    if kind in PRIMITIVES:
        return json.dumps(kind)
    if kind == "array":
        return (
            '{"type":"array","items":' + canonical_form(schema["items"], defined, seen, namespace) + "}"
        )
    if kind == "map":
        return (
            '{"type":"map","values":' + canonical_form(schema["values"], defined, seen, namespace) + "}"
        )
    if kind not in ("record", "error", "enum", "fixed"):
        return canonical_form(kind, defined, seen, namespace)
    fullname = _full(schema["name"], schema.get("namespace", namespace))
    if fullname in seen:
        return json.dumps(fullname, ensure_ascii=False)
    seen.add(fullname)
    inner = fullname.rsplit(".", 1)[0] if "." in fullname else None
    head = '{"name":' + json.dumps(fullname, ensure_ascii=False) + ',"type":' + json.dumps(kind)
    if kind == "enum":
        return head + ',"symbols":' + json.dumps(schema["symbols"], separators=(",", ":")) + "}"
    if kind == "fixed":
        return head + ',"size":' + str(int(schema["size"])) + "}"
    parts = [
        '{"name":'
        + json.dumps(f["name"], ensure_ascii=False)
        + ',"type":'
        + canonical_form(f["type"], defined, seen, inner)
        + "}"
        for f in schema["fields"]
    ]
    return head + ',"fields":[' + ",".join(parts) + "]}"


# -- the schema files, read without our codec -----------------------------------------------------


def raw_schemas() -> dict[str, tuple[Path, dict[str, Any]]]:
    found = {}
    for path in sorted(SCHEMAS.glob("*/*.avsc")):
        raw = json.loads(path.read_text(encoding="utf-8"))
        found[_full(raw["name"], raw.get("namespace"))] = (path, raw)
    return found


RAW = raw_schemas()
DEFINED = {name: raw for name, (_, raw) in RAW.items()}


def spec_canonical_form(name: str) -> str:
    return canonical_form(DEFINED[name], DEFINED, set())


def spec_fingerprint(name: str) -> bytes:
    return crc64_avro(spec_canonical_form(name).encode("utf-8"))


def apache_schemas() -> dict[str, avro.schema.RecordSchema]:
    """Every schema file parsed by Apache avro, common files first so later files can refer."""
    names = avro.name.Names()
    parsed: dict[str, avro.schema.RecordSchema] = {}
    for kind in ("common", "events", "intake"):
        for path in sorted((SCHEMAS / kind).glob("*.avsc")):
            schema = avro.schema.make_avsc_object(json.loads(path.read_text("utf-8")), names)
            assert isinstance(schema, avro.schema.RecordSchema)
            parsed[schema.fullname] = schema
    return parsed


APACHE = apache_schemas()
BY_SPEC_FINGERPRINT = {spec_fingerprint(name): schema for name, schema in APACHE.items()}


def apache_write(name: str, datum: dict[str, Any], fingerprint: bytes) -> bytes:
    buffer = io.BytesIO()
    buffer.write(MAGIC + fingerprint)
    avro.io.DatumWriter(APACHE[name]).write(datum, avro.io.BinaryEncoder(buffer))
    return buffer.getvalue()


def apache_read_body(schema: avro.schema.Schema, body: bytes) -> dict[str, Any]:
    buffer = io.BytesIO(body)
    datum = avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(buffer))
    assert buffer.tell() == len(body), "Apache avro left bytes unread"
    assert isinstance(datum, dict)
    return datum


def apache_read(data: bytes) -> dict[str, Any]:
    """What a reader with only the schema files does: find the writer schema by fingerprint."""
    assert data[:2] == MAGIC
    schema = BY_SPEC_FINGERPRINT.get(data[2:10])
    assert schema is not None, "the fingerprint matches no schema file's canonical form"
    return apache_read_body(schema, data[10:])


# -- sample data ----------------------------------------------------------------------------------


def sealed(scope: str) -> SealedValue:
    return SealedValue(scope, uuid.uuid4().hex, os.urandom(12), os.urandom(40))


def meta() -> EventMeta:
    return EventMeta(
        event_id=uuid.uuid4(),
        subject_id=uuid.uuid4(),
        sequence=3,
        occurred_at=WHEN,
        recorded_at=WHEN + timedelta(microseconds=1),
        policy_version="policy-fake-1",
        producer="shop-fake",
        actor=Actor("staff-0001", "support"),
        correlation_id="corr-fake",
        idempotency=os.urandom(32),
        prev_hash=os.urandom(32),
    )


def data_updated() -> DataUpdated:
    scope = purpose_scope("marketing")
    return DataUpdated(meta(), "marketing", {"email": sealed(scope), "phone": sealed(scope)})


def consent_granted() -> ConsentGranted:
    return ConsentGranted(
        meta(),
        "marketing",
        ("contact",),
        "consent",
        "web",
        "notice-3",
        sealed(CONSENT_SCOPE),
        WHEN + timedelta(days=365, microseconds=7),
    )


def consent_granted_bare() -> ConsentGranted:
    return ConsentGranted(meta(), "marketing", (), "consent", "web", "notice-3")


def keys_shredded() -> KeysShredded:
    return KeysShredded(
        meta(),
        "erasure",
        (CONSENT_SCOPE, purpose_scope("marketing")),
        (uuid.uuid4().hex, uuid.uuid4().hex),
        b'{"certificate":"fake"}',
        os.urandom(64),
    )


EVENTS = {
    "DataUpdated": data_updated,
    "ConsentGranted": consent_granted,
    "ConsentGranted-nulls": consent_granted_bare,
    "KeysShredded": keys_shredded,
}


def as_apache(event: LedgerEvent) -> dict[str, Any]:
    """The datum Apache avro writes and reads back: UUIDs are strings there."""
    datum = event_to_record(event)
    datum["meta"] = {
        **datum["meta"],
        "event_id": str(event.meta.event_id),
        "subject_id": str(event.meta.subject_id),
    }
    return datum


@pytest.fixture(scope="module")
def the_codec() -> AvroCodec:
    return codec()


@pytest.fixture
def the_parser() -> IntakeParser:
    return parser(StepClock(T0 + timedelta(hours=1)))


# -- the fingerprint -----------------------------------------------------------------------------


def test_our_crc_64_avro_matches_the_spec_and_apache_avro() -> None:
    assert int.from_bytes(crc64_avro(b'"null"'), "little", signed=True) == 7195948357588979594
    for text in ('"int"', '"string"', '{"type":"array","items":"long"}'):
        assert crc64_avro(text.encode()) == avro.schema.parse(text).fingerprint()


@pytest.mark.parametrize("name", sorted(APACHE))
def test_our_canonical_form_agrees_with_apache_avro(name: str) -> None:
    # Apache avro 1.12 (Python) keeps {"type":"long"} for logical types where the spec's
    # [PRIMITIVES] rule, Java and fastavro write "long"; everything else must be identical.
    apache = re.sub(r'\{"type":"([a-z]+)"\}', r'"\1"', APACHE[name].canonical_form)
    assert spec_canonical_form(name) == apache


@pytest.mark.parametrize("name", ["consentry.common.Actor", "consentry.common.SealedValue"])
def test_without_logical_types_apache_avro_computes_the_same_fingerprint(name: str) -> None:
    assert APACHE[name].fingerprint("CRC-64-AVRO") == spec_fingerprint(name)


@pytest.mark.parametrize("name", sorted(APACHE))
def test_our_codec_frames_each_schema_with_the_spec_fingerprint(the_codec: AvroCodec, name: str) -> None:
    assert the_codec.contract(name).fingerprint.hex() == spec_fingerprint(name).hex()


# -- Apache avro writes, we read -----------------------------------------------------------------


@pytest.mark.parametrize("build", list(EVENTS.values()), ids=list(EVENTS))
def test_events_written_by_apache_avro_decode_with_our_codec(the_codec: AvroCodec, build: Any) -> None:
    event = build()
    data = apache_write(event.avro_name, as_apache(event), spec_fingerprint(event.avro_name))
    contract, rec = the_codec.decode(data)
    assert event_from_record(contract, rec) == event


@pytest.mark.parametrize("build", list(EVENTS.values()), ids=list(EVENTS))
def test_event_bodies_written_by_apache_avro_decode_with_our_codec(
    the_codec: AvroCodec, build: Any
) -> None:
    """The body alone, framed with the fingerprint our codec expects."""
    event = build()
    ours = the_codec.contract(event.avro_name).fingerprint
    contract, rec = the_codec.decode(apache_write(event.avro_name, as_apache(event), ours))
    assert event_from_record(contract, rec) == event


def test_an_intake_record_written_by_apache_avro_is_parsed_by_our_parser(
    the_parser: IntakeParser,
) -> None:
    email = fake_email()
    datum = {
        "subject_ref": "shop:1001",
        "purpose": "marketing",
        "fields": {"email": email, "name": "Fake Name"},
        "rectification": True,
        "idempotency_key": "idem-fake-1",
        "occurred_at": T0 + timedelta(microseconds=5),
        "correlation_id": None,
    }
    name = "consentry.intake.DataUpdate"
    parsed = the_parser.from_avro(apache_write(name, datum, spec_fingerprint(name)))
    assert parsed == DataUpdate(
        Personal("shop:1001"),
        "idem-fake-1",
        T0 + timedelta(microseconds=5),
        None,
        "marketing",
        {"email": Personal(email), "name": Personal("Fake Name")},
        True,
    )


def test_a_consent_grant_written_by_apache_avro_keeps_its_nullable_values(
    the_parser: IntakeParser,
) -> None:
    name = "consentry.intake.ConsentGrant"
    base = {
        "subject_ref": "crm:c-7",
        "purpose": "marketing",
        "data_categories": ["contact"],
        "lawful_basis": "consent",
        "channel": "web",
        "notice_version": "n-1",
        "idempotency_key": "idem-fake-2",
        "occurred_at": T0,
        "correlation_id": "corr-fake",
    }
    for evidence, expires in ((None, None), ("checkbox-fake", T0 + timedelta(days=30))):
        datum = {**base, "evidence": evidence, "expires_at": expires}
        parsed = the_parser.from_avro(apache_write(name, datum, spec_fingerprint(name)))
        assert isinstance(parsed, ConsentGrant)
        assert parsed.evidence == (None if evidence is None else Personal(evidence))
        assert parsed.expires_at == expires


# -- we write, Apache avro reads -----------------------------------------------------------------


@pytest.mark.parametrize("build", list(EVENTS.values()), ids=list(EVENTS))
def test_events_written_by_our_codec_decode_with_apache_avro(the_codec: AvroCodec, build: Any) -> None:
    event = build()
    data = the_codec.encode(event.avro_name, event_to_record(event))
    assert apache_read(data) == as_apache(event)


@pytest.mark.parametrize("build", list(EVENTS.values()), ids=list(EVENTS))
def test_event_bodies_written_by_our_codec_decode_with_apache_avro(
    the_codec: AvroCodec, build: Any
) -> None:
    """The body alone, read with the schema chosen by name rather than by fingerprint."""
    event = build()
    data = the_codec.encode(event.avro_name, event_to_record(event))
    assert apache_read_body(APACHE[event.avro_name], data[10:]) == as_apache(event)


def test_intake_records_written_by_our_parser_decode_with_apache_avro(
    the_parser: IntakeParser,
) -> None:
    email = fake_email()
    update = the_parser.from_json(
        record("data.update", "shop:1001", fields={"email": email}, correlation_id="c-1")
    )
    assert apache_read(the_parser.to_avro(update)) == {
        "subject_ref": "shop:1001",
        "purpose": "marketing",
        "fields": {"email": email},
        "rectification": False,
        "idempotency_key": update.idempotency_key,
        "occurred_at": T0,
        "correlation_id": "c-1",
    }
    grant = the_parser.from_json(
        record("consent.grant", "crm:c-7", expires_at=(T0 + timedelta(days=1)).isoformat())
    )
    read = apache_read(the_parser.to_avro(grant))
    assert (read["evidence"], read["expires_at"]) == (None, T0 + timedelta(days=1))
    assert read["lawful_basis"] == "consent"


def test_apache_avro_bytes_with_a_foreign_fingerprint_are_refused(the_codec: AvroCodec) -> None:
    event = keys_shredded()
    data = apache_write(event.avro_name, as_apache(event), bytes(8))
    with pytest.raises(Rejected) as caught:
        the_codec.decode(data)
    assert caught.value.reason is Reason.UNKNOWN_SCHEMA
