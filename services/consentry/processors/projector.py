"""The projector: ledger events to view changes. Pure, keyless, shared by every runner."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

from consentry.core import events as ev
from consentry.core.sealing import SealedValue
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
    meta = event.meta
    subject = meta.subject_id
    match event:
        case ev.ReferenceLinked():
            return [PutSubject(subject, "active", meta.occurred_at, meta.sequence)]
        case ev.ConsentGranted():
            granted = ConsentRow(
                event.purpose, "granted", event.lawful_basis, meta.occurred_at, event.expires_at
            )
            return [PutConsent(subject, granted, meta.event_id)]
        case ev.ConsentWithdrawn():
            withdrawn = ConsentRow(event.purpose, "withdrawn", "consent", meta.occurred_at, None)
            return [PutConsent(subject, withdrawn, meta.event_id)]
        case ev.ConsentExpired():
            expired = ConsentRow(event.purpose, "expired", "consent", event.expired_at, event.expired_at)
            return [PutConsent(subject, expired, meta.event_id)]
        case ev.DataUpdated():
            return [
                PutValue(subject, event.purpose, name, value, meta.event_id, meta.occurred_at)
                for name, value in sorted(event.fields.items())
                if isinstance(value, SealedValue)
            ]
        case ev.DataAccessed():
            return [_access(event, event.field_names, event.access_kind)]
        case ev.AccessDenied():
            return [_access(event, (), event.access_kind, reason=event.reason)]
        case ev.DataShared():
            return [_access(event, event.field_names, f"share:{event.processor}")]
        case ev.ErasureRequested():
            return [
                PutSubject(subject, "erasing", meta.recorded_at, meta.sequence),
                PutErasure(subject, ErasureRow("requested", meta.recorded_at, meta.event_id)),
            ]
        case ev.KeysShredded():
            changes: list[Change] = [
                DropValues(subject, event.scopes if event.reason != "erasure" else None)
            ]
            if event.reason == "erasure":
                changes.append(
                    PutErasure(
                        subject,
                        ErasureRow(
                            "erased",
                            meta.recorded_at,
                            meta.event_id,
                            event.certificate,
                            event.signature,
                        ),
                    )
                )
            return changes
        case ev.SubjectErased():
            return [
                DropValues(subject, None),
                PutSubject(subject, "erased", meta.recorded_at, meta.sequence),
            ]
    return []


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
    changes.extend(MarkApplied(s, n) for s, n in marks.items() if n != applied.get(s))
    return changes
