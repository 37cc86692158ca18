"""Audit endpoints: a subject's timeline and verification of every hash chain."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query

from consentry.audit.anomalies import anomaly_list
from consentry.audit.exposure import Selector, exposure_report, selector_of
from consentry.audit.timeline import clear_metadata
from consentry.core.events import AccessAnomalyFlagged, KeysShredded, LedgerEvent
from consentry.core.problems import Problem
from consentry.ledger.application import Ledger
from consentry.ledger.chain import verify_chain

Auth = Annotated[str | None, Header(alias="Authorization")]
From = Annotated[datetime | None, Query(alias="from")]
To = Annotated[datetime | None, Query(alias="to")]
Name = Annotated[str | None, Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@\-]{0,127}$")]


def audit_router(
    ledger: Ledger,
    rebuild: Callable[[], int] | None,
    document: Callable[[bytes, bytes], dict[str, Any]],
) -> APIRouter:
    """Endpoints for auditors and data-protection officers (permission `audit`).

    `document` turns a stored certificate and its signature into a verifiable document.

    `rebuild` empties every read model and projects the whole log again, answering how many events;
    None where the views belong to other processes (distributed mode: `consentry replay --kafka`).
    """
    router = APIRouter(tags=["audit"])

    def auditor(authorization: str | None) -> str:
        token = (authorization or "").removeprefix("Bearer ").strip()
        name = ledger.policy.actor_for_token(token) if token else None
        if name is None:
            raise Problem(401, "unauthorized", "a valid staff token is required")
        roles = ledger.policy.actors[name].roles
        if not any("audit" in ledger.policy.roles[r].permissions for r in roles):
            raise Problem(403, "role-not-allowed", "the audit permission is required")
        return name

    def history(subject_id: uuid.UUID, authorization: str | None) -> list[LedgerEvent]:
        auditor(authorization)
        events = ledger.history(subject_id)
        if not events:
            raise Problem(404, "unknown-subject", "no such subject")
        return events

    @router.get("/v1/subjects/{subject_id}/timeline", summary="Every event's clear metadata")
    def timeline(subject_id: uuid.UUID, authorization: Auth = None) -> dict[str, Any]:
        events = history(subject_id, authorization)
        return {
            "subject_id": str(subject_id),
            "events": [clear_metadata(ledger.codec, e) for e in events],
        }

    @router.get(
        "/v1/subjects/{subject_id}/certificates",
        summary="Every shredding certificate of a subject: erasure, withdrawal, retention",
    )
    def subject_certificates(subject_id: uuid.UUID, authorization: Auth = None) -> dict[str, Any]:
        events = history(subject_id, authorization)
        return {
            "subject_id": str(subject_id),
            "certificates": [
                document(e.certificate, e.signature) for e in events if isinstance(e, KeysShredded)
            ],
        }

    @router.get("/v1/audit/verify", summary="Verify every subject's hash chain")
    def verify(authorization: Auth = None) -> dict[str, Any]:
        auditor(authorization)
        report = verify_chain(ledger.codec, ledger.notifications())
        return {
            "ok": report.ok,
            "events": report.events,
            "subjects": report.subjects,
            "breaks": [
                {
                    "subject_id": str(b.subject_id) if b.subject_id else None,
                    "position": b.position,
                    "problem": b.problem,
                }
                for b in report.breaks[:100]
            ],
        }

    def selected(
        authorization: str | None,
        actor: str | None,
        producer: str | None,
        processor: str | None,
        start: datetime | None,
        end: datetime | None,
    ) -> Selector:
        """An auditor's selector of one party and a window; 422 when it makes no sense."""
        auditor(authorization)
        try:
            return selector_of(actor, producer, processor, start, end)
        except ValueError as exc:
            raise Problem(422, "invalid-request", str(exc)) from None

    @router.get("/v1/audit/exposure", summary="Breach impact: subjects and fields exposed to a party")
    def exposure(
        actor: Name = None,
        producer: Name = None,
        processor: Name = None,
        start: From = None,
        end: To = None,
        authorization: Auth = None,
    ) -> dict[str, Any]:
        """What one actor decrypted, one producer sent or reported, or one processor received."""
        selector = selected(authorization, actor, producer, processor, start, end)
        return exposure_report(ledger.codec, ledger.notifications(), selector)

    @router.get("/v1/audit/anomalies", summary="Access anomalies flagged, per actor and window")
    def anomalies(
        actor: Name = None,
        start: From = None,
        end: To = None,
        authorization: Auth = None,
    ) -> dict[str, Any]:
        """Reads above an actor's usual rate or outside any open task (`AccessAnomalyFlagged`)."""
        window = selected(authorization, actor or "*", None, None, start, end)

        def keep(event: AccessAnomalyFlagged) -> bool:
            return actor in (None, event.actor_id) and window.covers(event.meta.recorded_at)

        found = anomaly_list(ledger.codec, ledger.notifications(), keep)
        return {"actor": actor, "from": start, "to": end, "anomalies": found}

    @router.post("/v1/audit/replay", summary="Rebuild every read model from the log")
    def replay(authorization: Auth = None) -> dict[str, Any]:
        auditor(authorization)
        if rebuild is None:
            raise Problem(
                409,
                "replay-elsewhere",
                "the processors worker owns the read models here: stop it and run consentry replay",
            )
        started = time.perf_counter()
        events = rebuild()
        return {"events": events, "seconds": round(time.perf_counter() - started, 3)}

    return router
