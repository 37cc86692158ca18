"""The read side: the only place that decrypts. Every disclosure is a durable event first.

A profile read names a purpose; the caller's role must act for it and the subject's consent (or the
purpose's basis) must be active. `DataAccessed` is appended before any value is opened; a refusal
appends `AccessDenied` and answers 403; an erased subject answers 410.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from consentry.core.errors import Reason
from consentry.core.events import Actor
from consentry.core.policy import LawfulBasis, Permission
from consentry.core.problems import Problem, invalid_request
from consentry.core.sealing import SealedValue
from consentry.core.views import ViewStore
from consentry.ledger.application import Ledger
from consentry.ledger.commands import (
    DenyAccess,
    RecordAccess,
    RecordContact,
    RecordShare,
    RequestErasure,
)
from consentry.ledger.contact import ContactVerdict, contact_verdict
from consentry.ledger.subject import Outcome, SubjectState
from consentry.query.access import Caller, caller_from_header
from consentry.query.reader import Reader

Auth = Annotated[str | None, Header(alias="Authorization")]
Channel = Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9_\-]{0,62}$")]


class ShareBody(BaseModel):
    """A share to a sub-processor: by default the fields its agreement covers."""

    model_config = ConfigDict(extra="forbid")

    processor: str = Field(max_length=63)
    purpose: str = Field(max_length=63)
    fields: list[Annotated[str, Field(max_length=63)]] | None = Field(default=None, max_length=64)


class ContactBody(BaseModel):
    """A contact staff are about to make."""

    model_config = ConfigDict(extra="forbid")

    purpose: str = Field(max_length=63)
    channel: str = Field(pattern=r"^[a-z][a-z0-9_\-]{0,62}$")


class ProfileAnswer(BaseModel):
    """A profile read: the purpose's fields (None where erased) and the access event that logged it."""

    subject_id: uuid.UUID
    purpose: str
    access_event_id: uuid.UUID
    policy_version: str
    fields: dict[str, str | None]


# What FastAPI would publish for `subject_id: UUID, purpose: str, authorization: Auth`.
_PROFILE_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "subject_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "format": "uuid", "title": "Subject Id"},
    },
    {
        "name": "purpose",
        "in": "query",
        "required": True,
        "schema": {"type": "string", "title": "Purpose"},
    },
    {
        "name": "Authorization",
        "in": "header",
        "required": False,
        "schema": {"anyOf": [{"type": "string"}, {"type": "null"}], "title": "Authorization"},
    },
]


@dataclass(frozen=True, slots=True)
class _Ready:
    """A profile read the event loop has admitted: its access event and the sealed values."""

    access: RecordAccess
    sealed: dict[str, SealedValue]


def _path_uuid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise invalid_request("path.subject_id") from None


class CatchUp(Protocol):
    """Returns once the views hold the subject's events (up to `version`, if given)."""

    def __call__(self, subject_id: uuid.UUID, version: int | None = None) -> None: ...


def query_router(
    ledger: Ledger,
    views: ViewStore,
    catch_up: CatchUp,
    on_erasure: Callable[[uuid.UUID], dict[str, Any]],
    certificate: Callable[[uuid.UUID], dict[str, Any] | None],
) -> APIRouter:
    """The query endpoints."""
    router = APIRouter(tags=["query"])
    reader = Reader(ledger, views)

    def caller(authorization: str | None) -> Caller:
        return caller_from_header(ledger.policy, authorization)

    def known(subject_id: uuid.UUID) -> SubjectState:
        state = ledger.load(subject_id)
        if not state.exists:
            raise Problem(404, "unknown-subject", "no such subject")
        return state

    def refuse(
        state: SubjectState, who: Caller, role: str, purpose: str, reason: str, kind: str, status: int
    ) -> Problem:
        ledger.execute([DenyAccess(state.subject_id, Actor(who.actor_id, role), purpose, reason, kind)])
        catch_up(state.subject_id)
        return Problem(
            status, reason.replace("_", "-"), f"access refused: {reason}", reason=Reason(reason)
        )

    @router.get("/v1/subjects", summary="Find a subject by an external reference")
    def lookup(
        ref: Annotated[str, Query(max_length=256, pattern=r"^[a-z][a-z0-9_\-]*:.+$")],
        authorization: Auth = None,
    ) -> dict[str, Any]:
        caller(authorization)
        namespace, _, value = ref.partition(":")
        subject_id = ledger.find_subject(namespace, value)
        if subject_id is None:
            raise Problem(404, "unknown-subject", "no subject has that reference")
        return {"subject_id": str(subject_id)}

    @router.get(
        "/v1/subjects/{subject_id}/profile",
        summary="Read the fields held for one purpose",
        response_model=ProfileAnswer,
        openapi_extra={"parameters": _PROFILE_PARAMETERS},
    )
    async def profile(request: Request) -> Response:
        # The platform's busiest endpoint reads its three parameters itself (the 422s are the ones
        # FastAPI's validation gives, through `invalid_request`) and answers bytes: FastAPI's
        # per-request validation and encoding were about a tenth of a read's CPU under wrk.
        subject_id = _path_uuid(request.path_params["subject_id"])
        purpose = request.query_params.get("purpose")
        if purpose is None:
            raise invalid_request("query.purpose")
        authorization = request.headers.get("authorization")
        ready = ready_read(subject_id, purpose, authorization)
        if ready is None:
            # Anything that may block (a state to fold, views to catch up, a refusal to record, a
            # key to read) runs in the event loop's executor.
            loop = asyncio.get_running_loop()
            answer = await loop.run_in_executor(None, read_profile, subject_id, purpose, authorization)
        else:
            answer = await read_ready(ready)
        return Response(json.dumps(answer).encode(), media_type="application/json")

    def ready_read(subject_id: uuid.UUID, purpose: str, authorization: str | None) -> _Ready | None:
        """A read the event loop can make itself, or None.

        It can when everything is at hand: the caller's token (a 401 raises here), a remembered
        state that admits the read, and views that hold the subject's data and read without
        waiting. Where anything is missing, or the read must be refused (the refusal is recorded),
        `read_profile` does it all in a thread.
        """
        who = caller(authorization)
        state = ledger.remembered(subject_id) if views.reads_inline else None
        if state is None or not state.exists or ledger.policy.purpose(purpose) is None:
            return None
        role = who.role_for(ledger.policy, purpose, "read")
        if role is None or not _purpose_active(ledger, state, purpose):
            return None
        if views.applied([subject_id]).get(subject_id, 0) < state.data_version:
            return None
        sealed = views.values(subject_id, purpose).get(purpose, {})
        access = RecordAccess(
            subject_id, Actor(who.actor_id, role), purpose, tuple(sorted(sealed)), "profile"
        )
        return _Ready(access, sealed)

    async def read_ready(ready: _Ready) -> dict[str, Any]:
        """Appends the read's access event with the other reads awaiting theirs, then answers."""
        access = ready.access
        outcome = (await ledger.execute_async([access]))[0]
        if outcome.status != "accepted":
            raise Problem(410, "subject-erased", "the subject is erased")
        fields: dict[str, str] | dict[str, str | None] | None = reader.open_cached(
            access.subject_id, ready.sealed
        )
        if fields is None:
            loop = asyncio.get_running_loop()
            fields = await loop.run_in_executor(
                None, disclose, outcome.status, access.subject_id, access.purpose, ready.sealed
            )
        return answer_of(access.subject_id, access.purpose, outcome, fields)

    def answer_of(
        subject_id: uuid.UUID, purpose: str, outcome: Outcome, fields: Mapping[str, str | None]
    ) -> dict[str, Any]:
        return {
            "subject_id": str(subject_id),
            "purpose": purpose,
            "access_event_id": str(outcome.event_id),
            "policy_version": ledger.policy.version,
            "fields": fields,
        }

    def read_profile(subject_id: uuid.UUID, purpose: str, authorization: str | None) -> dict[str, Any]:
        who = caller(authorization)
        state = known(subject_id)
        if ledger.policy.purpose(purpose) is None:
            raise Problem(422, "unknown-purpose", "the purpose is not in the policy")
        role = admit(state, who, purpose, "read", "profile")
        # The answer needs the subject's data in the views, not other reads' access events.
        catch_up(state.subject_id, state.data_version)
        sealed = views.values(subject_id, purpose).get(purpose, {})
        outcome = ledger.execute(
            [
                RecordAccess(
                    subject_id, Actor(who.actor_id, role), purpose, tuple(sorted(sealed)), "profile"
                )
            ]
        )[0]
        # The access event is durable now; the access-log view picks it up with the next catch-up
        # (every view read catches up first), so the answer does not wait for it.
        fields = disclose(outcome.status, subject_id, purpose, sealed)
        return answer_of(subject_id, purpose, outcome, fields)

    def admit(state: SubjectState, who: Caller, purpose: str, permission: Permission, kind: str) -> str:
        """The caller's role for a disclosure; every refusal is recorded as AccessDenied first."""
        role = who.role_for(ledger.policy, purpose, permission)
        if role is None:
            raise refuse(state, who, who.roles[0], purpose, "role_not_allowed", kind, 403)
        if state.erasure_requested:
            raise refuse(state, who, role, purpose, "subject_erased", kind, 410)
        if not _purpose_active(ledger, state, purpose):
            raise refuse(state, who, role, purpose, "no_consent", kind, 403)
        return role

    def disclose(
        status: str, subject_id: uuid.UUID, purpose: str, sealed: dict[str, SealedValue]
    ) -> dict[str, str | None]:
        """Opens the values once their disclosure event is recorded (`status` "accepted")."""
        if status != "accepted":
            raise Problem(410, "subject-erased", "the subject is erased")
        fields = reader.open_fields(subject_id, sealed)
        if None in fields.values():
            # A key went between the disclosure event and the opening: an erasure or withdrawal won.
            fresh = ledger.load(subject_id)
            if fresh.erasure_requested:
                raise Problem(410, "subject-erased", "the subject was erased during the read")
            if not _purpose_active(ledger, fresh, purpose):
                raise Problem(403, "no-consent", "consent was withdrawn during the read")
        return fields

    @router.post(
        "/v1/subjects/{subject_id}/shares",
        status_code=201,
        summary="Export a purpose's fields to a sub-processor under its agreement (DataShared first)",
    )
    def share(subject_id: uuid.UUID, body: ShareBody, authorization: Auth = None) -> dict[str, Any]:
        who = caller(authorization)
        state = known(subject_id)
        policy, purpose = ledger.policy, body.purpose
        declared = policy.purpose(purpose)
        if declared is None:
            raise Problem(422, "unknown-purpose", "the purpose is not in the policy")
        processor = policy.processors.get(body.processor)
        if processor is None:
            raise Problem(422, "unknown-processor", "the processor is not in the policy")
        wanted = set(body.fields or ())
        if not wanted <= set(declared.fields):
            raise Problem(422, "field-not-allowed", "a field is not of the purpose")
        role = admit(state, who, purpose, "share", "share")
        agreement, why = processor.agreement_for(purpose, wanted, ledger.clock.now().date())
        if agreement is None:
            raise refuse(state, who, role, purpose, why, "share", 403)
        names = wanted or set(agreement.fields) & set(declared.fields)
        catch_up(state.subject_id)
        held = views.values(subject_id, purpose).get(purpose, {})
        sealed = {name: value for name, value in held.items() if name in names}
        command = RecordShare(
            subject_id,
            Actor(who.actor_id, role),
            purpose,
            body.processor,
            agreement.id,
            tuple(sorted(sealed)),
        )
        outcome = ledger.execute([command])[0]
        fields = disclose(outcome.status, subject_id, purpose, sealed)
        return {
            "subject_id": str(subject_id),
            "processor": body.processor,
            "agreement": agreement.id,
            "agreement_expires": agreement.expires.isoformat(),
            "purpose": purpose,
            "share_event_id": str(outcome.event_id),
            "policy_version": policy.version,
            "fields": fields,
        }

    @router.get("/v1/subjects/{subject_id}/consents", summary="Consent state per purpose")
    def consents(subject_id: uuid.UUID, authorization: Auth = None) -> dict[str, Any]:
        caller(authorization)
        state = known(subject_id)
        catch_up(state.subject_id)
        return {
            "subject_id": str(subject_id),
            "erased": state.erasure_requested,
            "consents": [
                {
                    "purpose": c.purpose,
                    "status": c.status,
                    "lawful_basis": c.lawful_basis,
                    "since": c.since.isoformat(),
                    "expires_at": c.expires_at.isoformat() if c.expires_at else None,
                    "active": _purpose_active(ledger, state, c.purpose),
                }
                for c in views.consents(subject_id)
            ],
        }

    @router.get("/v1/subjects/{subject_id}/contact-check", summary="May this subject be contacted?")
    def contact_check(
        subject_id: uuid.UUID, purpose: str, channel: Channel = None, authorization: Auth = None
    ) -> dict[str, Any]:
        """Consent, opt-out, quiet hours and the purpose's contact cap, as of now."""
        caller(authorization)
        state = known(subject_id)
        if state.erasure_requested:
            return {"allowed": False, "reason": "subject_erased"}
        if ledger.policy.purpose(purpose) is None:
            raise Problem(422, "unknown-purpose", "the purpose is not in the policy")
        verdict = contact_verdict(state, ledger.policy, purpose, channel, ledger.clock.now())
        return {"purpose": purpose, "channel": channel} | _verdict(verdict)

    @router.post(
        "/v1/subjects/{subject_id}/contacts",
        status_code=201,
        summary="Record a contact, if the policy allows it now (checked and recorded in one write)",
    )
    def record_contact(
        subject_id: uuid.UUID, contact: ContactBody, authorization: Auth = None
    ) -> dict[str, Any]:
        who = caller(authorization)
        state = known(subject_id)
        if ledger.policy.purpose(contact.purpose) is None:
            raise Problem(422, "unknown-purpose", "the purpose is not in the policy")
        role = who.role_for(ledger.policy, contact.purpose, "contact")
        if role is None:
            raise Problem(403, "role-not-allowed", "the caller's roles may not contact for the purpose")
        command = RecordContact(subject_id, Actor(who.actor_id, role), contact.purpose, contact.channel)
        outcome = ledger.execute([command])[0]
        if outcome.status != "accepted":
            reason = outcome.reason.value if outcome.reason else "refused"
            status = 410 if reason == "subject_erased" else 403
            raise Problem(status, reason.replace("_", "-"), f"contact refused: {reason}")
        catch_up(state.subject_id)
        after = contact_verdict(
            ledger.load(subject_id), ledger.policy, contact.purpose, contact.channel, ledger.clock.now()
        )
        return {
            "subject_id": str(subject_id),
            "purpose": contact.purpose,
            "channel": contact.channel,
            "event_id": str(outcome.event_id),
            "next": _verdict(after),
        }

    @router.get("/v1/subjects/{subject_id}/export", summary="Everything held about the subject (DSAR)")
    def export(subject_id: uuid.UUID, authorization: Auth = None) -> dict[str, Any]:
        who = caller(authorization)
        state = known(subject_id)
        role = who.any_role_with(ledger.policy, "export")
        if role is None:
            raise refuse(state, who, who.roles[0], "*", "role_not_allowed", "export", 403)
        catch_up(state.subject_id)
        return reader.export(state, Actor(who.actor_id, role), catch_up)

    @router.post("/v1/subjects/{subject_id}/erasure", status_code=202, summary="Erase the subject")
    def erase(subject_id: uuid.UUID, authorization: Auth = None) -> dict[str, Any]:
        who = caller(authorization)
        state = known(subject_id)
        role = who.any_role_with(ledger.policy, "erase")
        if role is None:
            raise refuse(state, who, who.roles[0], "*", "role_not_allowed", "erasure", 403)
        ledger.execute([RequestErasure(subject_id, Actor(who.actor_id, role))])
        result = on_erasure(subject_id)
        catch_up(state.subject_id)
        return result

    @router.get("/v1/subjects/{subject_id}/erasure", summary="The erasure certificate")
    def erasure(subject_id: uuid.UUID, authorization: Auth = None) -> dict[str, Any]:
        caller(authorization)
        document = certificate(subject_id)
        if document is None:
            raise Problem(404, "not-erased", "the subject has no erasure certificate")
        return document

    return router


def _verdict(verdict: ContactVerdict) -> dict[str, Any]:
    return {
        "allowed": verdict.allowed,
        "reason": None if verdict.reason is None else verdict.reason.value,
        "contacts_in_window": verdict.in_window,
        "cap": verdict.cap,
        "per_days": verdict.per_days,
        "next_allowed_at": verdict.next_allowed_at.isoformat() if verdict.next_allowed_at else None,
    }


def _purpose_active(ledger: Ledger, state: SubjectState, purpose: str) -> bool:
    declared = ledger.policy.purpose(purpose)
    if declared is None or state.erasure_requested:
        return False
    current = state.purposes.get(purpose)
    if declared.lawful_basis != LawfulBasis.CONSENT:
        return current is None or current.status != "withdrawn"
    if current is None or current.status != "granted":
        return False
    return current.expires_at is None or current.expires_at > ledger.clock.now()
