"""The projector: ledger events to view changes. Pure, keyless, shared by every runner."""

from __future__ import annotations

from consentry.core import events as ev
from consentry.core.sealing import SealedValue
from consentry.core.views import (
    AddAccess,
    Change,
    DropValues,
    PutConsent,
    PutErasure,
    PutSubject,
    PutValue,
)


def project(event: ev.LedgerEvent) -> list[Change]:
    """The changes one event makes to the read models."""
    meta = event.meta
    subject = meta.subject_id
    actor_id = meta.actor.actor_id if meta.actor else (meta.producer or "")
    role = meta.actor.role if meta.actor else "producer"
    match event:
        case ev.ReferenceLinked():
            return [PutSubject(subject, "active", meta.occurred_at, meta.sequence)]
        case ev.ConsentGranted():
            return [
                PutConsent(
                    subject,
                    event.purpose,
                    "granted",
                    event.lawful_basis,
                    meta.occurred_at,
                    event.expires_at,
                    meta.event_id,
                )
            ]
        case ev.ConsentWithdrawn():
            return [
                PutConsent(
                    subject, event.purpose, "withdrawn", "consent", meta.occurred_at, None, meta.event_id
                )
            ]
        case ev.ConsentExpired():
            return [
                PutConsent(
                    subject,
                    event.purpose,
                    "expired",
                    "consent",
                    event.expired_at,
                    event.expired_at,
                    meta.event_id,
                )
            ]
        case ev.DataUpdated():
            return [
                PutValue(subject, event.purpose, name, value, meta.event_id, meta.occurred_at)
                for name, value in sorted(event.fields.items())
                if isinstance(value, SealedValue)
            ]
        case ev.DataAccessed():
            return [
                AddAccess(
                    meta.event_id,
                    subject,
                    actor_id,
                    role,
                    event.purpose,
                    event.field_names,
                    event.access_kind,
                    True,
                    "",
                    meta.recorded_at,
                )
            ]
        case ev.AccessDenied():
            return [
                AddAccess(
                    meta.event_id,
                    subject,
                    actor_id,
                    role,
                    event.purpose,
                    (),
                    event.access_kind,
                    False,
                    event.reason,
                    meta.recorded_at,
                )
            ]
        case ev.DataShared():
            return [
                AddAccess(
                    meta.event_id,
                    subject,
                    actor_id,
                    role,
                    event.purpose,
                    event.field_names,
                    f"share:{event.processor}",
                    True,
                    "",
                    meta.recorded_at,
                )
            ]
        case ev.ErasureRequested():
            return [
                PutSubject(subject, "erasing", meta.recorded_at, meta.sequence),
                PutErasure(subject, "requested", meta.recorded_at, meta.event_id),
            ]
        case ev.KeysShredded():
            changes: list[Change] = [
                DropValues(subject, event.scopes if event.reason != "erasure" else None)
            ]
            if event.reason == "erasure":
                changes.append(
                    PutErasure(
                        subject,
                        "erased",
                        meta.recorded_at,
                        meta.event_id,
                        event.certificate,
                        event.signature,
                    )
                )
            return changes
        case ev.SubjectErased():
            return [
                DropValues(subject, None),
                PutSubject(subject, "erased", meta.recorded_at, meta.sequence),
            ]
    return []
