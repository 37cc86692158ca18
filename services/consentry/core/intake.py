"""Intake records: what producers send, validated into typed records (JSON over HTTP, Avro on Kafka).

Every refusal is a `Rejected` with a documented reason code and a detail that names fields, never
values. Validation happens before anything is stored, so a bad record leaves no partial state.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Final

from consentry.core.avro import AvroCodec, Contract
from consentry.core.errors import Reason, Rejected, SchemaError
from consentry.core.sealing import Personal
from consentry.core.slots import maker

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
        # Each record type's checks, decided once, here: a schema whose fields are not those of
        # its record class is refused when the parser is made (at start-up), not at a first record.
        self._plans: dict[str, _Plan] = {}
        for kind in INTAKE_TYPES:
            self._plan(codec.intake_contract(kind))

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
        plan = self._plan(contract)
        values = {k: v for k, v in obj.items() if k != "type"}
        if not values.keys() <= plan.names:
            unexpected = sorted(values.keys() - plan.names)
            raise Rejected(
                Reason.INVALID_VALUE,
                f"unexpected field {unexpected[0]!r}"
                if len(unexpected[0]) <= 64
                else "unexpected field",
            )
        for name in plan.times:
            if values.get(name) is not None:
                values[name] = _parse_time(name, values[name])
        return self._made(plan, values)

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
        return self._made(self._plan(contract), values)

    def _plan(self, contract: Contract) -> _Plan:
        plan = self._plans.get(contract.name)
        if plan is None:
            plan = self._plans[contract.name] = _Plan.of(contract, self._checker)
        return plan

    def _made(self, plan: _Plan, values: dict[str, Any]) -> IntakeRecord:
        """The record of checked values; each field checked in the contract's order."""
        for name in plan.required:
            if values.get(name) is None:
                raise Rejected(Reason.MISSING_FIELD, f"{plan.intake_type} needs '{name}'")
        get = values.get
        checked = [check(get(name, default)) for name, check, default in plan.checks]
        return plan.make(*plan.in_record_order(checked))

    def _checker(self, name: str, personal: bool) -> Callable[[Any], Any]:
        """The check of one field's value (decided by its name, once per contract)."""
        if name == "subject_ref":
            return _check_ref
        if name == "fields":
            return _check_fields
        if name in _TIMES:
            return functools.partial(self._check_optional_time, name)
        if name == "rectification":
            return _check_flag
        if name in ("data_categories", "field_names"):
            return functools.partial(_check_names, name)
        return functools.partial(_check_value, name, personal)

    def _check_optional_time(self, name: str, value: Any) -> datetime | None:
        return None if value is None else self._check_time(name, value)

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


_TIMES: Final = ("occurred_at", "expires_at")


@dataclass(frozen=True, slots=True)
class _Plan:
    """How one intake type's records are checked and built, decided once per contract: the
    checks of its fields in the contract's order, and the record made by setting its slots."""

    intake_type: str
    names: frozenset[str]
    required: tuple[str, ...]
    times: tuple[str, ...]
    checks: tuple[tuple[str, Callable[[Any], Any], Any], ...]
    # The checked values (contract order) in the record class's field order.
    in_record_order: Callable[[list[Any]], tuple[Any, ...]]
    make: Callable[..., IntakeRecord]

    @classmethod
    def of(cls, contract: Contract, checker: Callable[[str, bool], Callable[[Any], Any]]) -> _Plan:
        intake_type = str(contract.intake_type)
        record = INTAKE_TYPES[intake_type]
        order = [f.name for f in dataclasses.fields(record)]
        names = contract.field_names
        if sorted(order) != sorted(names):
            raise SchemaError(f"{contract.name}: its fields are not those of {record.__name__}")
        defaults = contract.defaults
        positions = [names.index(name) for name in order]
        return cls(
            intake_type,
            frozenset(names),
            tuple(contract.required_fields),
            tuple(name for name in names if name in _TIMES),
            tuple((n, checker(n, n in contract.pii), defaults.get(n)) for n in names),
            # A tuple: every record has the four fields of IntakeRecord, and more.
            operator.itemgetter(*positions),
            maker(record),
        )


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


def _check_flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Rejected(Reason.INVALID_VALUE, "'rectification' must be a boolean")
    return value


def _check_names(name: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise Rejected(Reason.INVALID_VALUE, f"'{name}' must be a list of strings")
    if len(value) > MAX_FIELDS or any(len(v) > MAX_TEXT_LEN for v in value):
        raise Rejected(Reason.OVERSIZED, f"'{name}' is too long")
    return tuple(value)


def _check_value(name: str, personal: bool, value: Any) -> Personal | str | None:
    """A text field's value: personal ones up to MAX_VALUE_LEN, others up to MAX_TEXT_LEN and not
    blank."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise Rejected(Reason.INVALID_VALUE, f"'{name}' must be a string")
    limit = MAX_VALUE_LEN if personal else MAX_TEXT_LEN
    if len(value) > limit:
        raise Rejected(Reason.OVERSIZED, f"'{name}' is longer than {limit}")
    if personal:
        return Personal(value)
    if not value.strip():
        raise Rejected(Reason.INVALID_VALUE, f"'{name}' must not be empty")
    return value


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
