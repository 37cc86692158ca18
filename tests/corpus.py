"""The hostile intake corpus: named cases, each with the outcome docs/reason-codes.md promises.

Built as data, deterministically (the same names and defects in every run; only the canary values
and idempotency keys are fresh). Every personal value in a case is a registered canary, so the leak
check proves that no refused value reached any file. Families:

- `record_cases`: one bad record each (JSON over HTTP; the ones marked `avro` are also sealed over
  Kafka, where the same defect survives Avro encoding);
- `request_cases`: whole HTTP requests that are refused before any record is looked at;
- `avro_byte_cases`: record bytes that are not a valid intake record (Kafka only);
- `envelope_cases` (in the Kafka test): envelopes that do not open or authenticate.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from consentry.core.errors import Reason
from consentry.core.intake import MAX_FIELDS, MAX_REF_LEN, MAX_TEXT_LEN, MAX_VALUE_LEN, IntakeParser
from tests.support import ROOT, canary, fake_email

DUPLICATE: Final = "duplicate"
OCCURRED: Final = "2026-11-01T09:00:00+00:00"
REQUIRED: Final = {
    "consent.grant": ("subject_ref", "purpose", "channel", "notice_version"),
    "consent.withdrawal": ("subject_ref", "purpose", "channel"),
    "data.update": ("subject_ref", "purpose", "fields"),
    "erasure.request": ("subject_ref",),
    "contact.report": ("subject_ref", "purpose", "channel"),
    "access.report": ("subject_ref", "purpose", "actor_id", "role", "field_names"),
}
KINDS: Final = tuple(REQUIRED)
# The plain (not personal) text fields of each record type, checked for blank and oversized values.
TEXTS: Final = {
    "consent.grant": ("purpose", "channel", "notice_version", "lawful_basis", "idempotency_key"),
    "consent.withdrawal": ("purpose", "channel", "idempotency_key"),
    "data.update": ("purpose", "idempotency_key"),
    "erasure.request": ("reason", "idempotency_key"),
    "contact.report": ("purpose", "channel", "idempotency_key"),
    "access.report": ("purpose", "actor_id", "role", "idempotency_key"),
}


@dataclass(frozen=True)
class Case:
    """One hostile record and what must come of it.

    `expect` is a reason code or "duplicate"; `kept` says the refusal is kept in the ledger as a
    `DataUpdateRejected` event (a data update of a known subject); `prelude` records are sent
    (and accepted) first; `avro` says the defect survives Avro encoding, so Kafka tries it too.
    """

    name: str
    expect: str
    record: Any
    avro: bool = False
    kept: bool = False
    prelude: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class RequestCase:
    """A whole HTTP request to `POST /v1/events` that is refused before any record is decided."""

    name: str
    status: int
    reason: Reason
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    token: str | None = "demo-shop-token"
    chunked: bool = False


@dataclass(frozen=True)
class BytesCase:
    """Bytes in place of one record of a sealed envelope (Kafka only)."""

    name: str
    expect: Reason
    data: bytes


def new_ref() -> str:
    return f"shop:{canary('ref')}"


def valid(kind: str, ref: str, purpose: str = "support") -> dict[str, Any]:
    """A record of the type that would be accepted for a subject with consent for `purpose`."""
    base: dict[str, Any] = {
        "type": kind,
        "subject_ref": ref,
        "idempotency_key": f"idem-{uuid.uuid4().hex}",
        "occurred_at": OCCURRED,
    }
    extra: dict[str, dict[str, Any]] = {
        "consent.grant": {
            "purpose": purpose,
            "channel": "web",
            "notice_version": "n-1",
            "evidence": canary("evidence"),
        },
        "consent.withdrawal": {"purpose": purpose, "channel": "web"},
        "data.update": {"purpose": purpose, "fields": {"email": fake_email(), "first_name": canary()}},
        "erasure.request": {"reason": "customer asked"},
        "contact.report": {"purpose": purpose, "channel": "email"},
        "access.report": {
            "purpose": purpose,
            "actor_id": "agent-7",
            "role": "support_agent",
            "field_names": ["email"],
        },
    }
    return base | extra[kind]


def _shift(days: float) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


def _parse_defects(known: str) -> Iterator[Case]:
    """Records that fail validation whoever they name (the parser refuses them)."""
    odd_values: list[Any] = [42, ["x"], {"x": "y"}, True]
    for kind in KINDS:
        for name in (*REQUIRED[kind], "idempotency_key", "occurred_at"):
            absent = valid(kind, known)
            del absent[name]
            yield Case(f"{kind} without {name}", Reason.MISSING_FIELD, absent)
            yield Case(
                f"{kind} with null {name}", Reason.MISSING_FIELD, valid(kind, known) | {name: None}
            )
        for index, name in enumerate((*REQUIRED[kind][1:], "idempotency_key", "occurred_at")):
            odd = odd_values[index % len(odd_values)]
            yield Case(
                f"{kind} with {type(odd).__name__} {name}",
                Reason.INVALID_VALUE,
                valid(kind, known) | {name: odd},
            )
        for name in TEXTS[kind]:
            yield Case(
                f"{kind} with blank {name}",
                Reason.INVALID_VALUE,
                valid(kind, known) | {name: "  "},
                avro=True,
            )
            yield Case(
                f"{kind} with oversized {name}",
                Reason.OVERSIZED,
                valid(kind, known) | {name: "x" * (MAX_TEXT_LEN + 1)},
                avro=True,
            )
        yield Case(
            f"{kind} with an oversized reference",
            Reason.OVERSIZED,
            valid(kind, "shop:" + "r" * MAX_REF_LEN),
            avro=True,
        )
        yield Case(
            f"{kind} with an unexpected field", Reason.INVALID_VALUE, valid(kind, known) | {"note": "hi"}
        )
        yield Case(
            f"{kind} with a lone surrogate in its reference",
            Reason.INVALID_VALUE,
            valid(kind, f"shop:{canary('ref')}\ud800"),
        )
        yield Case(
            f"{kind} with a lone surrogate in its idempotency key",
            Reason.INVALID_VALUE,
            valid(kind, known) | {"idempotency_key": "k-\udfff"},
        )
        # Far-future and pre-1970 times survive Avro encoding; malformed texts exist only in JSON.
        for label, when, avro in (
            ("occurred a day ahead", _shift(1), True),
            ("occurred ten years ahead", _shift(3650), True),
            ("occurred in the year 9999", "9999-12-31T23:59:59+00:00", True),
            ("occurred before 1970", "1969-12-31T23:59:59+00:00", True),
            ("with occurred_at without a zone", "2026-11-01T09:00:00", False),
            ("with occurred_at as a word", "yesterday", False),
            ("with occurred_at as an empty text", "", False),
            ("with occurred_at in month 13", "2026-13-01T09:00:00+00:00", False),
        ):
            record = valid(kind, known) | {"occurred_at": when}
            yield Case(f"{kind} {label}", Reason.INVALID_VALUE, record, avro=avro)
    for label, ref in (
        ("no namespace", "no-colon-" + canary("ref")),
        ("an empty namespace", ":" + canary("ref")),
        ("an upper-case namespace", "SHOP:" + canary("ref")),
        ("a namespace starting with a digit", "1shop:" + canary("ref")),
        ("a space in the namespace", "sh op:" + canary("ref")),
        ("a 64-character namespace", "s" * 64 + ":" + canary("ref")),
        ("an empty value", "shop:"),
        ("a blank value", "shop:   "),
    ):
        for kind in ("consent.grant", "data.update"):
            yield Case(
                f"{kind} with {label} in its reference",
                Reason.INVALID_VALUE,
                valid(kind, ref),
                avro=True,
            )


def _field_defects(known: str) -> Iterator[Case]:
    """Data updates and grants whose fields or categories are wrong."""
    too_many = {f"f{i}": canary() for i in range(MAX_FIELDS + 1)}
    for label, fields, reason, avro in (
        ("no fields", {}, Reason.INVALID_VALUE, True),
        ("fields as a list", [fake_email()], Reason.INVALID_VALUE, False),
        ("an upper-case field name", {"Email": fake_email()}, Reason.INVALID_VALUE, True),
        ("an empty field name", {"": fake_email()}, Reason.INVALID_VALUE, True),
        ("a field name with a slash", {"e/mail": fake_email()}, Reason.INVALID_VALUE, True),
        ("a numeric value", {"email": 42}, Reason.INVALID_VALUE, False),
        ("a null value", {"email": None}, Reason.INVALID_VALUE, False),
        ("a nested value", {"email": {"v": fake_email()}}, Reason.INVALID_VALUE, False),
        ("an oversized value", {"email": canary() + "x" * MAX_VALUE_LEN}, Reason.OVERSIZED, True),
        ("65 fields", too_many, Reason.OVERSIZED, True),
        ("a lone surrogate in a value", {"email": canary() + "\ud83d"}, Reason.INVALID_VALUE, False),
        ("a lone surrogate in a field name", {"email\udc00": fake_email()}, Reason.INVALID_VALUE, False),
        ("a field outside the purpose", {"street": canary("street")}, Reason.FIELD_NOT_ALLOWED, True),
        (
            "one allowed and one other field",
            {"email": fake_email(), "city": canary()},
            Reason.FIELD_NOT_ALLOWED,
            True,
        ),
    ):
        # The ledger keeps a refused update of a known subject (names only); the parser keeps nothing.
        kept = reason == Reason.FIELD_NOT_ALLOWED
        yield Case(
            f"data.update with {label}",
            reason,
            valid("data.update", known) | {"fields": fields},
            avro=avro,
            kept=kept,
        )
    yield Case(
        "data.update with a text rectification flag",
        Reason.INVALID_VALUE,
        valid("data.update", known) | {"rectification": "yes"},
    )
    for label, values, reason, avro in (
        (
            "a category outside the purpose",
            {"data_categories": ["street"]},
            Reason.FIELD_NOT_ALLOWED,
            True,
        ),
        ("categories as a text", {"data_categories": "email"}, Reason.INVALID_VALUE, False),
        ("65 categories", {"data_categories": ["email"] * 65}, Reason.OVERSIZED, True),
        ("an oversized category", {"data_categories": ["e" * 257]}, Reason.OVERSIZED, True),
        ("an unknown lawful basis", {"lawful_basis": "vibes"}, Reason.INVALID_VALUE, True),
        (
            "an expiry before it occurred",
            {"expires_at": "2026-10-01T09:00:00+00:00"},
            Reason.INVALID_VALUE,
            True,
        ),
        ("an expiry without a zone", {"expires_at": "2027-10-01T09:00:00"}, Reason.INVALID_VALUE, False),
        (
            "an oversized evidence text",
            {"evidence": canary() + "e" * MAX_VALUE_LEN},
            Reason.OVERSIZED,
            True,
        ),
        ("a numeric evidence", {"evidence": 7}, Reason.INVALID_VALUE, False),
    ):
        yield Case(
            f"consent.grant with {label}", reason, valid("consent.grant", new_ref()) | values, avro=avro
        )
    for label, names, reason, avro in (
        ("a field outside the purpose", ["street"], Reason.FIELD_NOT_ALLOWED, True),
        ("field names as a text", "email", Reason.INVALID_VALUE, False),
        ("numeric field names", [1, 2], Reason.INVALID_VALUE, False),
        ("65 field names", ["email"] * 65, Reason.OVERSIZED, True),
    ):
        yield Case(
            f"access.report with {label}",
            reason,
            valid("access.report", known) | {"field_names": names},
            avro=avro,
        )


def _type_defects(known: str) -> Iterator[Case]:
    for label, kind in (
        ("an unknown type", "consent.grant2"),
        ("an event type of the ledger", "DataUpdated"),
        ("an empty type", ""),
        ("a numeric type", 42),
        ("a null type", None),
        ("a type with a lone surrogate", "data.update\ud800"),
    ):
        yield Case(
            f"a record with {label}",
            Reason.UNKNOWN_EVENT_TYPE,
            valid("data.update", known) | {"type": kind},
        )
    no_type = valid("data.update", known)
    del no_type["type"]
    yield Case("a record without a type", Reason.UNKNOWN_EVENT_TYPE, no_type)
    for label, item in (
        ("a list", ["data.update"]),
        ("a text", "data.update"),
        ("a number", 7),
        ("null", None),
    ):
        yield Case(f"a record that is {label}", Reason.INVALID_VALUE, item)


def _ledger_defects(known: str, erased: str, shredded: bool) -> Iterator[Case]:
    """Well-formed records the ledger refuses for who they name or what the policy says.

    Once an erased subject's keys are shredded (at once in embedded mode), its reference is
    unlinked: records naming it name an unknown reference (and a new grant makes a new subject, so
    none is tried). Until then (distributed mode, before the shredder worker has run) they are
    refused as `subject_erased`, and a data update's refusal is kept.
    """
    after_erasure: dict[str, str] = {
        "consent.withdrawal": Reason.UNKNOWN_SUBJECT,
        "data.update": Reason.NO_CONSENT,
        "contact.report": Reason.UNKNOWN_SUBJECT,
        "access.report": Reason.UNKNOWN_SUBJECT,
        "erasure.request": Reason.UNKNOWN_SUBJECT,
    }
    if not shredded:
        after_erasure = dict.fromkeys(after_erasure, Reason.SUBJECT_ERASED)
        after_erasure |= {"consent.grant": Reason.SUBJECT_ERASED, "erasure.request": DUPLICATE}
    for kind, reason in after_erasure.items():
        kept = kind == "data.update" and not shredded
        name = f"{kind} after the subject's erasure"
        yield Case(name, reason, valid(kind, erased), avro=True, kept=kept)
    for kind in (
        "consent.grant",
        "consent.withdrawal",
        "data.update",
        "contact.report",
        "access.report",
    ):
        yield Case(
            f"{kind} for an unknown purpose",
            Reason.UNKNOWN_PURPOSE,
            valid(kind, known, purpose="astrology"),
            avro=True,
            kept=kind == "data.update",
        )
        yield Case(
            f"{kind} of a new subject for an unknown purpose",
            Reason.UNKNOWN_PURPOSE,
            valid(kind, new_ref(), purpose="nonexistent-purpose"),
            avro=True,
        )
        for label, ref in (
            ("another namespace", f"crm:{canary('ref')}"),
            ("a namespace like ours", f"shop2:{canary('ref')}"),
        ):
            yield Case(f"{kind} in {label}", Reason.PRODUCER_NOT_ALLOWED, valid(kind, ref), avro=True)
    yield Case(
        "erasure.request in another namespace",
        Reason.PRODUCER_NOT_ALLOWED,
        valid("erasure.request", f"crm:{canary('ref')}"),
        avro=True,
    )
    yield Case(
        "data.update of an unknown reference",
        Reason.NO_CONSENT,
        valid("data.update", new_ref()),
        avro=True,
    )
    yield Case(
        "data.update for a purpose without consent",
        Reason.NO_CONSENT,
        valid("data.update", known, purpose="marketing"),
        avro=True,
        kept=True,
    )
    for kind in ("consent.withdrawal", "erasure.request", "contact.report", "access.report"):
        yield Case(
            f"{kind} of an unknown reference", Reason.UNKNOWN_SUBJECT, valid(kind, new_ref()), avro=True
        )
    # An erasure's replay is the erasure family above; these replay every other type.
    for kind in [k for k in KINDS if k != "erasure.request"]:
        # Each replay names a subject of its own, so no replayed record changes another case's subject.
        ref = new_ref()
        grant = valid("consent.grant", ref)
        first = grant if kind == "consent.grant" else valid(kind, ref)
        again = valid(kind, ref) | {"idempotency_key": first["idempotency_key"]}
        prelude = (grant,) if first is grant else (grant, first)
        yield Case(f"{kind} replaying an idempotency key", DUPLICATE, again, avro=True, prelude=prelude)


def record_cases(known: str, erased: str, *, shredded: bool) -> list[Case]:
    """Every one-record case, for a subject with support consent (`known`) and an erased one.

    `shredded`: whether the erased subject's keys are destroyed yet (see `_ledger_defects`).
    """
    cases = [
        *_parse_defects(known),
        *_field_defects(known),
        *_type_defects(known),
        *_ledger_defects(known, erased, shredded),
    ]
    names = [c.name for c in cases]
    assert len(set(names)) == len(names), "corpus case names must be unique"
    return cases


def _batch(records: list[Any]) -> bytes:
    return json.dumps({"events": records}).encode()


def request_cases(max_batch: int, max_bytes: int) -> list[RequestCase]:
    """Requests refused whole: bodies that are no batch, too big, or without a producer's token."""
    good = [valid("consent.grant", new_ref())]
    json_type = {"Content-Type": "application/json"}
    return [
        RequestCase(
            "a body that is not UTF-8",
            400,
            Reason.MALFORMED_REQUEST,
            b'{"events": [\xff\xfe]}',
            json_type,
        ),
        RequestCase("a body that is not JSON", 422, Reason.MALFORMED_REQUEST, b"events=1", json_type),
        RequestCase(
            "a truncated JSON body", 422, Reason.MALFORMED_REQUEST, _batch(good)[:-7], json_type
        ),
        RequestCase("an empty body", 422, Reason.MALFORMED_REQUEST, b"", json_type),
        RequestCase("a JSON list", 422, Reason.MALFORMED_REQUEST, json.dumps(good).encode(), json_type),
        RequestCase("a batch without events", 422, Reason.MALFORMED_REQUEST, b"{}", json_type),
        RequestCase("a batch of no events", 422, Reason.MALFORMED_REQUEST, b'{"events": []}', json_type),
        RequestCase(
            "events as an object", 422, Reason.MALFORMED_REQUEST, b'{"events": {"a": 1}}', json_type
        ),
        RequestCase("events as null", 422, Reason.MALFORMED_REQUEST, b'{"events": null}', json_type),
        RequestCase(
            "a batch over CONSENTRY_MAX_BATCH",
            413,
            Reason.OVERSIZED,
            _batch([{"type": "x"}] * (max_batch + 1)),
            json_type,
        ),
        RequestCase(
            "a body over CONSENTRY_MAX_REQUEST_BYTES",
            413,
            Reason.OVERSIZED,
            b'{"events": ["' + b"x" * max_bytes + b'"]}',
            json_type,
        ),
        RequestCase(
            "a chunked body over CONSENTRY_MAX_REQUEST_BYTES",
            413,
            Reason.OVERSIZED,
            b'{"events": ["' + b"x" * max_bytes + b'"]}',
            json_type,
            chunked=True,
        ),
        RequestCase("no token", 401, Reason.UNAUTHORIZED, _batch(good), json_type, token=None),
        RequestCase(
            "a forged token", 401, Reason.UNAUTHORIZED, _batch(good), json_type, token="forged-token-1"
        ),
        RequestCase(
            "a bearer scheme without a token",
            401,
            Reason.UNAUTHORIZED,
            _batch(good),
            json_type | {"Authorization": "Bearer"},
            token=None,
        ),
        RequestCase(
            "a staff token",
            401,
            Reason.UNAUTHORIZED,
            _batch(good),
            json_type,
            token="demo-support-token",
        ),
        RequestCase(
            "a token under another scheme",
            401,
            Reason.UNAUTHORIZED,
            _batch(good),
            json_type | {"Authorization": "Basic ZGVtby1zaG9wLXRva2Vu"},
            token=None,
        ),
    ]


def avro_byte_cases(parser: IntakeParser, known: str, ledger_event: bytes) -> list[BytesCase]:
    """Record bytes that are no intake record: truncated, random, foreign, invalid UTF-8.

    `ledger_event` is a stored ledger event (valid Avro of an event schema, not an intake one).
    """
    good = parser.to_avro(parser.from_json(valid("data.update", known)))
    marker = "Z" * 24
    with_marker = parser.to_avro(parser.from_json(valid("consent.grant", f"shop:{marker}")))
    cases = [
        BytesCase("no bytes", Reason.MALFORMED_AVRO, b""),
        BytesCase("one byte", Reason.MALFORMED_AVRO, b"\xc3"),
        BytesCase("the header alone", Reason.MALFORMED_AVRO, good[:10]),
        BytesCase(
            "bytes without the single-object magic", Reason.MALFORMED_AVRO, b"\x00\x01" + good[2:]
        ),
        BytesCase("an unknown fingerprint", Reason.UNKNOWN_SCHEMA, good[:2] + b"\x01" * 8 + good[10:]),
        BytesCase("a ledger event", Reason.UNKNOWN_EVENT_TYPE, ledger_event),
        BytesCase("trailing bytes", Reason.MALFORMED_AVRO, good + b"\x00"),
        BytesCase(
            "invalid UTF-8 in a text",
            Reason.MALFORMED_AVRO,
            with_marker.replace(marker.encode(), b"\xff\xfe" * 12),
        ),
    ]
    for cut in (11, 13, len(good) // 2, len(good) - 1):
        cases.append(BytesCase(f"a record cut at byte {cut}", Reason.MALFORMED_AVRO, good[:cut]))
    for index, size in enumerate((16, 64, 200)):
        # Deterministic noise after a valid header: never decodes as the whole record.
        noise = bytes((index * 31 + i * 97 + 13) % 256 for i in range(size))
        cases.append(
            BytesCase(f"{size} noise bytes after the header", Reason.MALFORMED_AVRO, good[:10] + noise)
        )
        cases.append(BytesCase(f"{size} noise bytes", Reason.MALFORMED_AVRO, noise))
    return cases


def avro_record(parser: IntakeParser, record: dict[str, Any]) -> bytes:
    """The Avro single-object bytes of a JSON record, encoded as is (no intake checks)."""
    values = {k: v for k, v in record.items() if k != "type"}
    for name in ("occurred_at", "expires_at"):
        if isinstance(values.get(name), str):
            values[name] = datetime.fromisoformat(values[name])
    contract = parser.codec.intake_contract(record["type"])
    return parser.codec.encode(contract.name, values)


def documented_reasons() -> set[str]:
    """The codes listed in docs/reason-codes.md's table."""
    text = (ROOT / "docs" / "reason-codes.md").read_text()
    return set(re.findall(r"^\| `([a-z_]+)` \|", text, flags=re.MULTILINE))


def personal_values(item: Any) -> set[str]:
    """The canary texts a case's record carries (what must never be stored or echoed)."""
    found: set[str] = set()
    stack: list[Any] = [item]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack += [*value.keys(), *value.values()]
        elif isinstance(value, list | tuple):
            stack += list(value)
        elif isinstance(value, str):
            found |= set(
                re.findall(r"(canary-[a-z]+-[0-9a-f]{12}|user-[0-9a-f]{10}@example\.com)", value)
            )
    return found
