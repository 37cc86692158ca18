"""Intake records: what producers send, validated into typed records (JSON over HTTP, Avro on Kafka).

Every refusal is a `Rejected` with a documented reason code and a detail that names fields, never
values. Validation happens before anything is stored, so a bad record leaves no partial state.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Final

from consentry.core.avro import AvroCodec, Contract
from consentry.core.errors import Reason, Rejected
from consentry.core.sealing import Personal

MAX_REF_LEN: Final = 256
MAX_VALUE_LEN: Final = 4096
MAX_FIELDS: Final = 64
MAX_TEXT_LEN: Final = 256
MAX_FUTURE_SKEW: Final = timedelta(minutes=5)
_REF = re.compile(r"^([a-z][a-z0-9_\-]{0,62}):(.+)$", re.DOTALL)
_NAME = re.compile(r"^[a-z][a-z0-9_\-]{0,62}$")


@dataclass(frozen=True, slots=True)
class IntakeRecord:
    """Fields common to every intake record."""

    subject_ref: Personal
    idempotency_key: str = field(repr=False)
    occurred_at: datetime
    correlation_id: str | None
    intake_type: ClassVar[str] = ""

    @property
    def namespace(self) -> str:
        match = _REF.match(self.subject_ref.reveal())
        return match.group(1) if match else ""

    @property
    def ref_value(self) -> str:
        match = _REF.match(self.subject_ref.reveal())
        return match.group(2) if match else ""


@dataclass(frozen=True, slots=True)
class ConsentGrant(IntakeRecord):
    purpose: str
    data_categories: tuple[str, ...]
    lawful_basis: str
    channel: str
    notice_version: str
    evidence: Personal | None
    expires_at: datetime | None
    intake_type: ClassVar[str] = "consent.grant"


@dataclass(frozen=True, slots=True)
class ConsentWithdrawal(IntakeRecord):
    purpose: str
    channel: str
    intake_type: ClassVar[str] = "consent.withdrawal"


@dataclass(frozen=True, slots=True)
class DataUpdate(IntakeRecord):
    purpose: str
    fields: Mapping[str, Personal]
    rectification: bool
    intake_type: ClassVar[str] = "data.update"


@dataclass(frozen=True, slots=True)
class ErasureRequest(IntakeRecord):
    reason: str
    intake_type: ClassVar[str] = "erasure.request"


@dataclass(frozen=True, slots=True)
class ContactReport(IntakeRecord):
    purpose: str
    channel: str
    intake_type: ClassVar[str] = "contact.report"


@dataclass(frozen=True, slots=True)
class AccessReport(IntakeRecord):
    purpose: str
    actor_id: str
    role: str
    field_names: tuple[str, ...]
    intake_type: ClassVar[str] = "access.report"


@dataclass(frozen=True, slots=True)
class TaskReport(IntakeRecord):
    task_id: str
    role: str
    status: str
    intake_type: ClassVar[str] = "task.report"


INTAKE_TYPES: Final[dict[str, type[IntakeRecord]]] = {
    cls.intake_type: cls
    for cls in (
        ConsentGrant,
        ConsentWithdrawal,
        DataUpdate,
        ErasureRequest,
        ContactReport,
        AccessReport,
        TaskReport,
    )
}


class IntakeParser:
    """Validates intake records from JSON objects or Avro single-object bytes."""

    def __init__(self, codec: AvroCodec, now: Callable[[], datetime]) -> None:
        self.codec = codec
        self._now = now

    def from_json(self, obj: object) -> IntakeRecord:
        """A record from its JSON form: `{"type": "data.update", ...}` with ISO-8601 times."""
        if not isinstance(obj, dict):
            raise Rejected(Reason.INVALID_VALUE, "a record must be a JSON object")
        kind = obj.get("type")
        if not isinstance(kind, str) or kind not in INTAKE_TYPES:
            raise Rejected(Reason.UNKNOWN_EVENT_TYPE, "unknown or missing record type")
        if not _encodable(obj):
            raise Rejected(Reason.INVALID_VALUE, "a text is not valid Unicode (a lone surrogate)")
        contract = self.codec.intake_contract(kind)
        values = {k: v for k, v in obj.items() if k != "type"}
        unexpected = sorted(values.keys() - contract.field_names)
        if unexpected:
            raise Rejected(
                Reason.INVALID_VALUE,
                f"unexpected field {unexpected[0]!r}"
                if len(unexpected[0]) <= 64
                else "unexpected field",
            )
        for name in contract.field_names:
            if name in values and _is_timestamp(contract, name) and values[name] is not None:
                values[name] = _parse_time(name, values[name])
        return self._build(contract, values)

    def from_avro(self, data: bytes) -> IntakeRecord:
        """A record from Avro single-object bytes written with one of our intake schemas."""
        contract, record = self.codec.decode(data)
        if contract.kind != "intake" or contract.intake_type not in INTAKE_TYPES:
            raise Rejected(Reason.UNKNOWN_EVENT_TYPE, f"{contract.short_name} is not an intake record")
        return self._build(contract, record)

    def to_avro(self, record: IntakeRecord) -> bytes:
        """The Avro single-object bytes of a record (what the SDK seals for Kafka)."""
        contract = self.codec.intake_contract(record.intake_type)
        values: dict[str, Any] = {}
        for name in contract.field_names:
            value = getattr(record, name)
            if isinstance(value, Personal):
                value = value.reveal()
            elif isinstance(value, Mapping):
                value = {k: v.reveal() for k, v in value.items()}
            elif isinstance(value, tuple):
                value = list(value)
            values[name] = value
        return self.codec.encode(contract.name, values)

    def _build(self, contract: Contract, values: dict[str, Any]) -> IntakeRecord:
        cls = INTAKE_TYPES[str(contract.intake_type)]
        for name in contract.required_fields:
            if values.get(name) is None:
                raise Rejected(Reason.MISSING_FIELD, f"{contract.intake_type} needs '{name}'")
        defaults = contract.defaults
        checked: dict[str, Any] = {}
        for name in contract.field_names:
            value = values.get(name, defaults.get(name))
            checked[name] = self._check(name, value, name in contract.pii)
        return cls(**checked)

    def _check(self, name: str, value: Any, personal: bool) -> Any:
        if name == "subject_ref":
            return _check_ref(value)
        if name == "fields":
            return _check_fields(value)
        if name in ("occurred_at", "expires_at"):
            return None if value is None else self._check_time(name, value)
        if name == "rectification":
            if not isinstance(value, bool):
                raise Rejected(Reason.INVALID_VALUE, "'rectification' must be a boolean")
            return value
        if name in ("data_categories", "field_names"):
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise Rejected(Reason.INVALID_VALUE, f"'{name}' must be a list of strings")
            if len(value) > MAX_FIELDS or any(len(v) > MAX_TEXT_LEN for v in value):
                raise Rejected(Reason.OVERSIZED, f"'{name}' is too long")
            return tuple(value)
        if value is None:
            return None
        if not isinstance(value, str):
            raise Rejected(Reason.INVALID_VALUE, f"'{name}' must be a string")
        if personal:
            if len(value) > MAX_VALUE_LEN:
                raise Rejected(Reason.OVERSIZED, f"'{name}' is longer than {MAX_VALUE_LEN}")
            return Personal(value)
        if len(value) > MAX_TEXT_LEN:
            raise Rejected(Reason.OVERSIZED, f"'{name}' is longer than {MAX_TEXT_LEN}")
        if not value.strip():
            raise Rejected(Reason.INVALID_VALUE, f"'{name}' must not be empty")
        return value

    def _check_time(self, name: str, value: Any) -> datetime:
        if not isinstance(value, datetime):
            raise Rejected(Reason.INVALID_VALUE, f"'{name}' must be a timestamp")
        if value.tzinfo is None:
            raise Rejected(Reason.INVALID_VALUE, f"'{name}' needs a time zone")
        moment: datetime = value.astimezone(UTC)
        if name == "occurred_at" and moment > self._now() + MAX_FUTURE_SKEW:
            raise Rejected(Reason.INVALID_VALUE, "'occurred_at' is in the future")
        if moment.year < 1970:
            raise Rejected(Reason.INVALID_VALUE, f"'{name}' is before 1970")
        return moment


def _is_timestamp(contract: Contract, name: str) -> bool:
    return name in ("occurred_at", "expires_at")


def _encodable(value: object) -> bool:
    """Whether every text in a JSON value encodes as UTF-8 (JSON's `\\ud800` escapes may not).

    The texts, keys included, are joined and checked at once: only a lone surrogate fails to
    encode, and joining never pairs two of them up (Python encodes each surrogate code point on
    its own). ASCII text, the usual case, needs no encoding at all (a 10-field data update:
    3.9 -> 1.2 µs, timeit, against a json.dumps of the whole record).
    """
    texts: list[str] = []
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, dict):
            texts.extend(item)  # the keys: JSON object keys are texts
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    joined = "".join(texts)
    if joined.isascii():
        return True
    try:
        joined.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _parse_time(name: str, value: object) -> datetime:
    if not isinstance(value, str):
        raise Rejected(Reason.INVALID_VALUE, f"'{name}' must be an ISO-8601 string")
    try:
        parsed: datetime = datetime.fromisoformat(value)
    except ValueError:
        raise Rejected(Reason.INVALID_VALUE, f"'{name}' is not an ISO-8601 timestamp") from None
    return parsed


def _check_ref(value: Any) -> Personal:
    if not isinstance(value, str):
        raise Rejected(Reason.INVALID_VALUE, "'subject_ref' must be a string")
    if len(value) > MAX_REF_LEN:
        raise Rejected(Reason.OVERSIZED, f"'subject_ref' is longer than {MAX_REF_LEN}")
    match = _REF.match(value)
    if not match or not match.group(2).strip():
        raise Rejected(Reason.INVALID_VALUE, "'subject_ref' must be NAMESPACE:VALUE")
    return Personal(value)


def _check_fields(value: Any) -> dict[str, Personal]:
    if not isinstance(value, dict) or not value:
        raise Rejected(Reason.INVALID_VALUE, "'fields' must be a non-empty object")
    if len(value) > MAX_FIELDS:
        raise Rejected(Reason.OVERSIZED, f"more than {MAX_FIELDS} fields")
    checked = {}
    for name, item in value.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise Rejected(Reason.INVALID_VALUE, "field names must match [a-z][a-z0-9_-]*")
        if not isinstance(item, str):
            raise Rejected(Reason.INVALID_VALUE, f"field '{name}' must be a string")
        if len(item) > MAX_VALUE_LEN:
            raise Rejected(Reason.OVERSIZED, f"field '{name}' is longer than {MAX_VALUE_LEN}")
        checked[name] = Personal(item)
    return checked
