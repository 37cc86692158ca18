"""The read side: the only place that decrypts. Every disclosure is a durable event first.

A profile read names a purpose; the caller's role must act for it and the subject's consent (or the
purpose's basis) must be active. `DataAccessed` is appended before any value is opened; a refusal
appends `AccessDenied` and answers 403; an erased subject answers 410.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

from consentry.core.events import Actor
from consentry.core.problems import Problem, invalid_request
from consentry.core.views import ViewStore
from consentry.ledger.application import Ledger
from consentry.ledger.commands import (
    RecordContact,
    RecordShare,
    RequestErasure,
)
from consentry.ledger.contact import ContactVerdict, contact_verdict
from consentry.query.disclosure import CatchUp, Disclosures

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


class RequestRoute(APIRoute):
    """A route whose endpoint takes the `Request` and returns a `Response` itself.

    FastAPI's documented custom route class: the endpoint is the request handler, so no
    dependencies are solved and no response model is applied per request (the route still
    publishes its parameters and answer in the schema, and errors still reach the app's handlers).
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint: Callable[[Request], Coroutine[Any, Any, Response]] = self.endpoint
        return endpoint


def _path_uuid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise invalid_request("path.subject_id") from None


def query_router(
    ledger: Ledger,
    views: ViewStore,
    catch_up: CatchUp,
    on_erasure: Callable[[uuid.UUID], dict[str, Any]],
    certificate: Callable[[uuid.UUID], dict[str, Any] | None],
) -> APIRouter:
    """The query endpoints."""
    router = APIRouter(tags=["query"])
    desk = Disclosures(ledger, views, catch_up)
    caller, known, refuse, admit = desk.caller, desk.known, desk.refuse, desk.admit

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

    async def profile(request: Request) -> Response:
        # The platform's busiest endpoint reads its three parameters itself (the 422s are the ones
        # FastAPI's validation gives, through `invalid_request`) and answers bytes: FastAPI's
        # per-request validation and encoding were about a tenth of a read's CPU under wrk.
        subject_id = _path_uuid(request.path_params["subject_id"])
        purpose = request.query_params.get("purpose")
        if purpose is None:
            raise invalid_request("query.purpose")
        authorization = request.headers.get("authorization")
        ready = desk.ready(subject_id, purpose, authorization)
        if ready is None:
            # Anything that may block (a state to fold, views to catch up, a refusal to record, a
            # key to read) runs in the event loop's executor.
            loop = asyncio.get_running_loop()
            answer = await loop.run_in_executor(
                None, desk.read_profile, subject_id, purpose, authorization
            )
        else:
            answer = await desk.finish(ready)
        return Response(json.dumps(answer).encode(), media_type="application/json")

    router.add_api_route(
        "/v1/subjects/{subject_id}/profile",
        profile,
        methods=["GET"],
        summary="Read the fields held for one purpose",
        response_model=ProfileAnswer,
        openapi_extra={"parameters": _PROFILE_PARAMETERS},
        route_class_override=RequestRoute,
    )

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
        fields = desk.disclose(outcome, subject_id, purpose, sealed)
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
                    "active": desk.active(state, c.purpose),
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
        return desk.reader.export(state, Actor(who.actor_id, role), catch_up)

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
