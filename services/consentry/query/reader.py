"""Opening sealed values for a caller whose access is already recorded, and the DSAR export."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from consentry.core import events as ev
from consentry.core.errors import KeyNotFound, ScopeShredded
from consentry.core.sealing import Erased, Personal, SealedValue, by_key, open_many
from consentry.core.views import ViewStore
from consentry.ledger.application import Ledger
from consentry.ledger.commands import RecordAccess
from consentry.ledger.subject import SubjectState


class Reader:
    """Decrypts only after the caller's access event is durable (the caller checks that)."""

    def __init__(self, ledger: Ledger, views: ViewStore) -> None:
        self.ledger = ledger
        self.views = views

    def open_fields(
        self, subject_id: uuid.UUID, sealed: dict[str, SealedValue]
    ) -> dict[str, str | None]:
        """Plaintext per field; None where the key is gone (erased)."""
        opened: dict[str, str | None] = {}
        for key_id, values in by_key(sealed).items():
            try:
                key = self.ledger.keystore.get_by_id(key_id)
            except (ScopeShredded, KeyNotFound):
                key = None
            if key is None or key.subject_id != subject_id:
                opened |= dict.fromkeys(values)
            else:
                opened |= open_many(key, values)
        return {name: opened[name] for name in sealed}

    def open_cached(
        self, subject_id: uuid.UUID, sealed: dict[str, SealedValue]
    ) -> dict[str, str] | None:
        """`open_fields` from cached keys only (no lock, no I/O); None if a key is not cached."""
        groups = by_key(sealed)
        keys = {key_id: self.ledger.keystore.cached(key_id) for key_id in groups}
        opened: dict[str, str] = {}
        for key_id, values in groups.items():
            key = keys[key_id]
            if key is None or key.subject_id != subject_id:
                return None
            opened |= open_many(key, values)
        return {name: opened[name] for name in sealed}

    def export(
        self, state: SubjectState, actor: ev.Actor, catch_up: Callable[[uuid.UUID], None]
    ) -> dict[str, Any]:
        """Everything held about the subject: data per purpose, consent history, accesses."""
        subject_id = state.subject_id
        base: dict[str, Any] = {"subject_id": str(subject_id), "erased": state.erasure_requested}
        if state.erasure_requested:
            erasure = self.views.erasure(subject_id)
            base |= {
                "data": {},
                "references": [],
                "consent_history": self._consents(subject_id, False),
                "erasure_status": erasure.status if erasure else "requested",
            }
        else:
            sealed = self.views.values(subject_id)
            commands = [
                RecordAccess(subject_id, actor, purpose, tuple(sorted(values)), "export")
                for purpose, values in sorted(sealed.items())
            ]
            commands.append(RecordAccess(subject_id, actor, "*", ("references", "evidence"), "export"))
            outcomes = self.ledger.execute(commands)
            if any(o.status != "accepted" for o in outcomes):
                return base | {"erased": True, "data": {}}
            catch_up(subject_id)
            base |= {
                "data": {p: self.open_fields(subject_id, v) for p, v in sealed.items()},
                "references": self._references(subject_id),
                "consent_history": self._consents(subject_id, True),
            }
        base["accesses"] = [
            {
                "event_id": str(a.event_id),
                "actor": a.actor_id,
                "role": a.role,
                "purpose": a.purpose,
                "fields": list(a.field_names),
                "kind": a.kind,
                "allowed": a.allowed,
                "reason": a.reason or None,
                "at": a.at.isoformat(),
            }
            for a in self.views.accesses(subject_id)
        ]
        base["shares"] = self._shares(subject_id)
        return base

    def _shares(self, subject_id: uuid.UUID) -> list[dict[str, Any]]:
        """Which sub-processors received which fields, under which agreement, sent by whom."""
        return [
            {
                "event_id": str(event.meta.event_id),
                "processor": event.processor,
                "agreement": event.agreement,
                "purpose": event.purpose,
                "fields": list(event.field_names),
                "actor": event.meta.actor.actor_id if event.meta.actor else None,
                "at": event.meta.recorded_at.isoformat(),
            }
            for event in self.ledger.history(subject_id)
            if isinstance(event, ev.DataShared)
        ]

    def _references(self, subject_id: uuid.UUID) -> list[dict[str, str | None]]:
        refs = []
        for event in self.ledger.history(subject_id, reveal=True):
            if isinstance(event, ev.ReferenceLinked):
                refs.append({"namespace": event.namespace, "ref": _plain(event.ref)})
        return refs

    def _consents(self, subject_id: uuid.UUID, reveal: bool) -> list[dict[str, Any]]:
        history = []
        for event in self.ledger.history(subject_id, reveal=reveal):
            item: dict[str, Any] = {"event": event.type_name, "at": event.meta.occurred_at.isoformat()}
            match event:
                case ev.ConsentGranted():
                    item |= {
                        "purpose": event.purpose,
                        "lawful_basis": event.lawful_basis,
                        "channel": event.channel,
                        "notice_version": event.notice_version,
                        "evidence": _plain(event.evidence) if reveal else None,
                        "expires_at": event.expires_at.isoformat() if event.expires_at else None,
                    }
                case ev.ConsentWithdrawn():
                    item |= {"purpose": event.purpose, "channel": event.channel}
                case ev.ConsentExpired():
                    item |= {"purpose": event.purpose}
                case _:
                    continue
            history.append(item)
        return history


def _plain(value: object) -> str | None:
    if isinstance(value, Personal):
        return value.reveal()
    if isinstance(value, Erased | SealedValue) or value is None:
        return None
    return None
