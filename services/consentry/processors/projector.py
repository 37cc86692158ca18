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
    # Marks are keyed by the subject's UUID as an int (hashing a UUID object runs Python code,
    # twice per event here); `moved` keeps the UUID of each subject whose mark moves.
    marks = {subject.int: sequence for subject, sequence in applied.items()}
    moved: dict[int, uuid.UUID] = {}
    changes: list[Change] = []
    for event in events:
        meta = event.meta
        subject, sequence = meta.subject_id, meta.sequence
        key = subject.int
        if sequence <= marks.get(key, 0):
            continue
        found = _PROJECTIONS.get(type(event))
        if found is not None:
            changes.extend(found(event))
        marks[key] = sequence
        moved[key] = subject
    changes = compact(changes)
    changes.extend(MarkApplied(subject, marks[key]) for key, subject in moved.items())
    return changes


def compact(changes: Sequence[Change]) -> list[Change]:
    """The same page of changes without the writes a later change of the page undoes.

    A put replaces every column of its row (value, consent, subject status, erasure entry), so only
    a row's last put needs writing; a `DropValues` deletes the subject's earlier values of its
    scopes, so those puts need no writing either (the drop stays: it also deletes older rows). The
    rest keeps its order. A subject's whole history in one page (a rebuild reads the log subject by
    subject) comes down to its final rows.
    """
    # One pass from the end: a put is kept unless a later put of its row, or a later drop of its
    # value's scope, was seen. Rows are keyed by the subject's UUID as an int (hashing a UUID
    # object runs Python code).
    kept: list[Change] = []
    seen: set[tuple[object, ...]] = set()
    # Per subject, the scopes a later drop deletes (None: all of them).
    dropped: dict[int, set[str] | None] = {}
    for change in reversed(changes):
        if isinstance(change, PutValue):
            subject = change.subject_id.int
            row: tuple[object, ...] = (0, subject, change.purpose, change.field_name)
            if row in seen:
                continue
            seen.add(row)
            if subject in dropped:
                scopes = dropped[subject]
                if scopes is None or change.sealed.scope in scopes:
                    continue
        elif isinstance(change, DropValues):
            subject = change.subject_id.int
            later = dropped.get(subject, set())
            dropped[subject] = (
                None if change.scopes is None or later is None else later | set(change.scopes)
            )
        elif (row_of := _ROW_OF.get(type(change))) is not None:
            row = row_of(change)
            if row in seen:
                continue
            seen.add(row)
        kept.append(change)
    kept.reverse()
    return kept


# The row each other kind of put replaces whole, found by the change's exact type (as `_WRITES` of
# the SQL view stores finds its write); adds and deletes have none.
_ROW_OF: dict[type, Callable[[Any], tuple[object, ...]]] = {
    PutConsent: lambda c: (1, c.subject_id.int, c.consent.purpose),
    PutSubject: lambda c: (2, c.subject_id.int),
    PutErasure: lambda c: (3, c.subject_id.int),
}
