"""Typed builders of intake records, and their JSON wire form.

Each builder returns the same typed record the intake service parses (`consentry.core.intake`), with
personal values wrapped so a record's repr never shows them. An idempotency key is generated when
none is given: keep the record and re-send it as it is, and a retry is answered `duplicate`.
`occurred_at` defaults to now and must carry a time zone.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import fields
from datetime import UTC, datetime
from typing import TypedDict

from consentry.core.intake import (
    AccessReport,
    ConsentGrant,
    ConsentWithdrawal,
    ContactReport,
    DataUpdate,
    ErasureRequest,
    IntakeRecord,
    TaskReport,
)
from consentry.core.sealing import Personal

JsonValue = str | bool | list[str] | dict[str, str] | None


def new_idempotency_key() -> str:
    """A random idempotency key (32 hex digits)."""
    return uuid.uuid4().hex


class _Common(TypedDict):
    subject_ref: Personal
    idempotency_key: str
    occurred_at: datetime
    correlation_id: str | None


def _common(
    ref: str, idempotency_key: str | None, occurred_at: datetime | None, correlation_id: str | None
) -> _Common:
    moment = occurred_at or datetime.now(UTC)
    if moment.tzinfo is None:
        raise ValueError("occurred_at needs a time zone")
    return {
        "subject_ref": Personal(ref),
        "idempotency_key": idempotency_key or new_idempotency_key(),
        "occurred_at": moment,
        "correlation_id": correlation_id,
    }


def consent_grant(
    ref: str,
    purpose: str,
    channel: str,
    notice_version: str,
    evidence: str | None = None,
    *,
    data_categories: Sequence[str] = (),
    lawful_basis: str = "consent",
    expires_at: datetime | None = None,
    idempotency_key: str | None = None,
    occurred_at: datetime | None = None,
    correlation_id: str | None = None,
) -> ConsentGrant:
    """The customer `ref` (NAMESPACE:VALUE) agreed to `purpose` on `channel` under `notice_version`."""
    if expires_at is not None and expires_at.tzinfo is None:
        raise ValueError("expires_at needs a time zone")
    return ConsentGrant(
        **_common(ref, idempotency_key, occurred_at, correlation_id),
        purpose=purpose,
        data_categories=tuple(data_categories),
        lawful_basis=lawful_basis,
        channel=channel,
        notice_version=notice_version,
        evidence=None if evidence is None else Personal(evidence),
        expires_at=expires_at,
    )


def consent_withdrawal(
    ref: str,
    purpose: str,
    channel: str,
    *,
    idempotency_key: str | None = None,
    occurred_at: datetime | None = None,
    correlation_id: str | None = None,
) -> ConsentWithdrawal:
    """The customer withdrew consent for `purpose` on `channel`."""
    return ConsentWithdrawal(
        **_common(ref, idempotency_key, occurred_at, correlation_id),
        purpose=purpose,
        channel=channel,
    )


def data_update(
    ref: str,
    purpose: str,
    fields: Mapping[str, str],
    *,
    rectification: bool = False,
    idempotency_key: str | None = None,
    occurred_at: datetime | None = None,
    correlation_id: str | None = None,
) -> DataUpdate:
    """Personal `fields` collected for `purpose` (or a correction of them, with `rectification`)."""
    return DataUpdate(
        **_common(ref, idempotency_key, occurred_at, correlation_id),
        purpose=purpose,
        fields={name: Personal(value) for name, value in fields.items()},
        rectification=rectification,
    )


def erasure_request(
    ref: str,
    *,
    reason: str = "customer_request",
    idempotency_key: str | None = None,
    occurred_at: datetime | None = None,
    correlation_id: str | None = None,
) -> ErasureRequest:
    """The customer asked for full erasure."""
    return ErasureRequest(
        **_common(ref, idempotency_key, occurred_at, correlation_id),
        reason=reason,
    )


def contact_report(
    ref: str,
    purpose: str,
    channel: str,
    *,
    idempotency_key: str | None = None,
    occurred_at: datetime | None = None,
    correlation_id: str | None = None,
) -> ContactReport:
    """The producer contacted the customer for `purpose` on `channel`."""
    return ContactReport(
        **_common(ref, idempotency_key, occurred_at, correlation_id),
        purpose=purpose,
        channel=channel,
    )


def access_report(
    ref: str,
    purpose: str,
    actor_id: str,
    role: str,
    field_names: Sequence[str],
    *,
    idempotency_key: str | None = None,
    occurred_at: datetime | None = None,
    correlation_id: str | None = None,
) -> AccessReport:
    """The producer's staff `actor_id` (in `role`) saw the customer's `field_names` for `purpose`."""
    return AccessReport(
        **_common(ref, idempotency_key, occurred_at, correlation_id),
        purpose=purpose,
        actor_id=actor_id,
        role=role,
        field_names=tuple(field_names),
    )


def task_report(
    ref: str,
    task_id: str,
    role: str,
    status: str = "open",
    *,
    idempotency_key: str | None = None,
    occurred_at: datetime | None = None,
    correlation_id: str | None = None,
) -> TaskReport:
    """A task about the customer (`task_id`, e.g. a ticket number) is open or closed for `role`."""
    return TaskReport(
        **_common(ref, idempotency_key, occurred_at, correlation_id),
        task_id=task_id,
        role=role,
        status=status,
    )


def record_json(record: IntakeRecord) -> dict[str, JsonValue]:
    """The JSON form `POST /v1/events` takes: `{"type": ..., field: value, ...}`, times in ISO-8601."""
    body: dict[str, JsonValue] = {"type": record.intake_type}
    for spec in fields(record):
        value: object = getattr(record, spec.name)
        body[spec.name] = _json_value(value)
    return body


def _json_value(value: object) -> JsonValue:
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, Personal):
        return value.reveal()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [str(item) for item in value]
    if isinstance(value, Mapping):
        return {str(k): v.reveal() if isinstance(v, Personal) else str(v) for k, v in value.items()}
    raise TypeError(f"no JSON form for {type(value).__name__}")
