"""`POST /v1/events`: producers send batches of intake records with their bearer token.

Each record is validated on its own; the valid ones are decided and appended together in one batch.
The answer lists, per record and in order, `accepted` (with the subject id), `duplicate` or
`rejected` with its reason code. Nothing of a rejected record is stored but its rejection event.
"""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header

from consentry.core.errors import Reason, Rejected
from consentry.core.intake import IntakeParser, IntakeRecord
from consentry.core.problems import Problem
from consentry.ledger.application import Ledger
from consentry.ledger.subject import Outcome


def outcome_json(outcome: Outcome) -> dict[str, Any]:
    """The wire form of one outcome."""
    body: dict[str, Any] = {"status": outcome.status}
    if outcome.subject_id is not None:
        body["subject_id"] = str(outcome.subject_id)
    if outcome.event_id is not None:
        body["event_id"] = str(outcome.event_id)
    if outcome.reason is not None:
        body["reason"] = outcome.reason.value
        body["detail"] = outcome.detail
    return body


def intake_router(
    ledger: Ledger, parser: IntakeParser, max_batch: int, after_write: Callable[[], None]
) -> APIRouter:
    """The intake endpoints bound to one ledger."""
    router = APIRouter(tags=["intake"])

    def producer(authorization: Annotated[str | None, Header()] = None) -> str:
        token = (authorization or "").removeprefix("Bearer ").strip()
        name = ledger.policy.producer_for_token(token) if token else None
        if name is None:
            raise Problem(
                401, "unauthorized", "a valid producer token is required", reason=Reason.UNAUTHORIZED
            )
        return name

    @router.post("/v1/events", summary="Send a batch of intake records")
    def post_events(
        name: Annotated[str, Depends(producer)],
        body: Annotated[
            dict[str, Any],
            Body(
                examples=[
                    {
                        "events": [
                            {
                                "type": "consent.grant",
                                "subject_ref": "shop:1001",
                                "purpose": "marketing",
                                "channel": "web",
                                "notice_version": "2026-11",
                                "idempotency_key": "k-1",
                                "occurred_at": "2026-11-01T09:00:00+00:00",
                            }
                        ]
                    }
                ]
            ),
        ],
    ) -> dict[str, Any]:
        records = body.get("events")
        if not isinstance(records, list) or not records:
            raise Problem(
                422,
                "invalid-batch",
                'the body must be {"events": [ ...records ]}',
                reason=Reason.MALFORMED_REQUEST,
            )
        if len(records) > max_batch:
            raise Problem(
                413,
                "batch-too-large",
                f"at most {max_batch} records per request",
                reason=Reason.OVERSIZED,
            )
        parsed: list[IntakeRecord | Rejected] = []
        for item in records:
            try:
                parsed.append(parser.from_json(item))
            except Rejected as exc:
                parsed.append(exc)
        outcomes = ledger.submit(name, parsed)
        after_write()
        return {
            "results": [outcome_json(o) for o in outcomes],
            "accepted": sum(o.status == "accepted" for o in outcomes),
            "rejected": sum(o.status == "rejected" for o in outcomes),
        }

    return router
