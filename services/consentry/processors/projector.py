"""The projector: ledger events to view changes. Pure, keyless, shared by every runner."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from consentry.core import events as ev
from consentry.core.sealing import SealedValue
from consentry.core.slots import maker
from consentry.core.views import (
    AccessRow,
    AddAccess,
    Change,
    ConsentRow,
    DropValues,
    ErasureRow,
    MarkApplied,
    PutConsent,
    PutErasure,
    PutSubject,
    PutValue,
)


def project(event: ev.LedgerEvent) -> list[Change]:
    """The changes one event makes to the read models."""
    found = _PROJECTIONS.get(type(event))
    return [] if found is None else found(event)


def _reference_linked(event: ev.ReferenceLinked) -> list[Change]:
    meta = event.meta
    return [PutSubject(meta.subject_id, "active", meta.occurred_at, meta.sequence)]


def _consent_granted(event: ev.ConsentGranted) -> list[Change]:
    meta = event.meta
    granted = ConsentRow(
        event.purpose, "granted", event.lawful_basis, meta.occurred_at, event.expires_at
    )
    return [PutConsent(meta.subject_id, granted, meta.event_id)]


def _consent_withdrawn(event: ev.ConsentWithdrawn) -> list[Change]:
    meta = event.meta
    withdrawn = ConsentRow(event.purpose, "withdrawn", "consent", meta.occurred_at, None)
    return [PutConsent(meta.subject_id, withdrawn, meta.event_id)]


def _consent_expired(event: ev.ConsentExpired) -> list[Change]:
    meta = event.meta
    expired = ConsentRow(event.purpose, "expired", "consent", event.expired_at, event.expired_at)
    return [PutConsent(meta.subject_id, expired, meta.event_id)]


# Built by setting its slots (see core/slots): a rebuild makes one per value of every update.
_put_value: Callable[[uuid.UUID, str, str, SealedValue, uuid.UUID, datetime], PutValue] = maker(PutValue)


def _data_updated(event: ev.DataUpdated) -> list[Change]:
    meta = event.meta
    subject_id, purpose, event_id, at = meta.subject_id, event.purpose, meta.event_id, meta.occurred_at
    return [
        _put_value(subject_id, purpose, name, value, event_id, at)
        for name, value in sorted(event.fields.items())
        if isinstance(value, SealedValue)
    ]


def _data_accessed(event: ev.DataAccessed) -> list[Change]:
    return [_access(event, event.field_names, event.access_kind)]


def _access_denied(event: ev.AccessDenied) -> list[Change]:
    return [_access(event, (), event.access_kind, reason=event.reason)]


def _data_shared(event: ev.DataShared) -> list[Change]:
    return [_access(event, event.field_names, f"share:{event.processor}")]


def _erasure_requested(event: ev.ErasureRequested) -> list[Change]:
    meta = event.meta
    return [
        PutSubject(meta.subject_id, "erasing", meta.recorded_at, meta.sequence),
        PutErasure(meta.subject_id, ErasureRow("requested", meta.recorded_at, meta.event_id)),
    ]


def _keys_shredded(event: ev.KeysShredded) -> list[Change]:
    meta = event.meta
    erasure = event.reason == "erasure"
    changes: list[Change] = [DropValues(meta.subject_id, None if erasure else event.scopes)]
    if erasure:
        row = ErasureRow("erased", meta.recorded_at, meta.event_id, event.certificate, event.signature)
        changes.append(PutErasure(meta.subject_id, row))
    return changes


def _subject_erased(event: ev.SubjectErased) -> list[Change]:
    meta = event.meta
    return [
        DropValues(meta.subject_id, None),
        PutSubject(meta.subject_id, "erased", meta.recorded_at, meta.sequence),
    ]


# The projection of each event type, found by the event's type (every replayed event asks); the
# other event types change no read model.
_PROJECTIONS: dict[type, Callable[[Any], list[Change]]] = {
    ev.ReferenceLinked: _reference_linked,
    ev.ConsentGranted: _consent_granted,
    ev.ConsentWithdrawn: _consent_withdrawn,
    ev.ConsentExpired: _consent_expired,
    ev.DataUpdated: _data_updated,
    ev.DataAccessed: _data_accessed,
    ev.AccessDenied: _access_denied,
    ev.DataShared: _data_shared,
    ev.ErasureRequested: _erasure_requested,
    ev.KeysShredded: _keys_shredded,
    ev.SubjectErased: _subject_erased,
}


def _access(
    event: ev.DataAccessed | ev.AccessDenied | ev.DataShared,
    field_names: tuple[str, ...],
    kind: str,
    reason: str = "",
) -> AddAccess:
    """An access log entry: a granted read or share (no reason) or a refusal (with its reason)."""
    meta = event.meta
    actor_id = meta.actor.actor_id if meta.actor else (meta.producer or "")
    role = meta.actor.role if meta.actor else "producer"
    entry = AccessRow(
        meta.event_id,
        actor_id,
        role,
        event.purpose,
        field_names,
        kind,
        not reason,
        reason,
        meta.recorded_at,
    )
    return AddAccess(meta.subject_id, entry)


def project_new(events: Sequence[ev.LedgerEvent], applied: Mapping[uuid.UUID, int]) -> list[Change]:
    """The changes of the events the views do not hold yet, then each subject's new watermark.

    `applied` is the last sequence of each subject already in the views: a redelivered event (at or
    below it) changes nothing, so runners with at-least-once delivery stay exact.
    """
    marks = dict(applied)
    changes: list[Change] = []
    for event in events:
        subject, sequence = event.meta.subject_id, event.meta.sequence
        if sequence <= marks.get(subject, 0):
            continue
        changes.extend(project(event))
        marks[subject] = sequence
    changes = compact(changes)
    changes.extend(MarkApplied(s, n) for s, n in marks.items() if n != applied.get(s))
    return changes


def compact(changes: Sequence[Change]) -> list[Change]:
    """The same page of changes without the writes a later change of the page undoes.

    A put replaces every column of its row (value, consent, subject status, erasure entry), so only
    a row's last put needs writing; a `DropValues` deletes the subject's earlier values of its
    scopes, so those puts need no writing either (the drop stays: it also deletes older rows). The
    rest keeps its order. A subject's whole history in one page (a rebuild reads the log subject by
    subject) comes down to its final rows.
    """
    # Rows are keyed by the subject's UUID as an int: hashing a UUID object runs Python code, and
    # a rebuild's page hashes each change's subject a few times.
    out: list[Change | None] = list(changes)
    last: dict[tuple[object, ...], int] = {}
    values: dict[int, list[tuple[int, PutValue]]] = {}
    for index, change in enumerate(changes):
        if isinstance(change, DropValues):
            subject = change.subject_id.int
            kept = []
            for earlier, put in values.pop(subject, ()):
                if out[earlier] is not put:
                    continue  # a later put of its row took its place
                if change.scopes is None or put.sealed.scope in change.scopes:
                    out[earlier] = None
                else:
                    kept.append((earlier, put))
            if kept:
                values[subject] = kept
            continue
        key = _row_of(change)
        if key is None:
            continue
        replaced = last.get(key)
        if replaced is not None:
            out[replaced] = None
        last[key] = index
        if isinstance(change, PutValue):
            values.setdefault(change.subject_id.int, []).append((index, change))
    return [change for change in out if change is not None]


def _row_of(change: Change) -> tuple[object, ...] | None:
    """The row a put replaces whole (None for a change that adds or deletes rows)."""
    if isinstance(change, PutValue):
        return (0, change.subject_id.int, change.purpose, change.field_name)
    if isinstance(change, PutConsent):
        return (1, change.subject_id.int, change.consent.purpose)
    if isinstance(change, PutSubject):
        return (2, change.subject_id.int)
    if isinstance(change, PutErasure):
        return (3, change.subject_id.int)
    return None
