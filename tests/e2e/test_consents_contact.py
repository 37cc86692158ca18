"""Consent state and contact checks over real HTTP: per purpose, after a withdrawal, after erasure.

`GET /v1/subjects/{id}/consents` lists each purpose's status, lawful basis, since and whether it is
active now; `GET /v1/subjects/{id}/contact-check?purpose=P` says whether the subject may be contacted
for P, with a reason code when not. Both need a staff token and answer problem details otherwise.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.e2e.api import DPO, MARKETING, SHOP, SUPPORT, problem, send_accepted, subject_of, timeline
from tests.e2e.conftest import Server
from tests.support import T0, canary, fake_email, record

GRANTED_AT = T0
WITHDRAWN_AT = T0 + timedelta(hours=2)


@dataclass(frozen=True)
class Subject:
    ref: str
    id: str


def _new_subject(server: Server) -> Subject:
    """A subject with consent for marketing and support (granted at GRANTED_AT) and data for both."""
    ref = f"shop:{canary('ref')}"
    send_accepted(
        server,
        record("consent.grant", ref, purpose="marketing", occurred_at=GRANTED_AT.isoformat()),
        record("consent.grant", ref, purpose="support", occurred_at=GRANTED_AT.isoformat()),
        record("data.update", ref, purpose="marketing", fields={"email": fake_email()}),
        record("data.update", ref, purpose="support", fields={"email": fake_email()}),
    )
    return Subject(ref, subject_of(server, ref))


def _withdraw_marketing(server: Server, subject: Subject) -> None:
    withdrawal = record(
        "consent.withdrawal", subject.ref, purpose="marketing", occurred_at=WITHDRAWN_AT.isoformat()
    )
    send_accepted(server, withdrawal)


def _consents(server: Server, subject: str) -> dict[str, Any]:
    with server.client(SUPPORT) as staff:
        answer = staff.get(f"/v1/subjects/{subject}/consents")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    assert body["subject_id"] == subject
    return body


def _by_purpose(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["purpose"]: c for c in body["consents"]}


def _contact(server: Server, subject: str, purpose: str) -> dict[str, Any]:
    with server.client(MARKETING) as marketer:
        answer = marketer.get(f"/v1/subjects/{subject}/contact-check", params={"purpose": purpose})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    # The verdict's cap details are tested in test_contact_protection.py.
    return {key: body[key] for key in ("allowed", "reason", "purpose") if key in body}


def _assert_consent(
    item: dict[str, Any], *, status: str, active: bool, since: datetime, basis: str = "consent"
) -> None:
    assert item["status"] == status, item
    assert item["lawful_basis"] == basis, item
    assert datetime.fromisoformat(item["since"]) == since, item
    assert item["expires_at"] is None, item
    assert item["active"] is active, item


def test_consents_list_every_granted_purpose_and_contact_is_allowed(server: Server) -> None:
    subject = _new_subject(server)
    body = _consents(server, subject.id)
    assert body["erased"] is False
    consents = _by_purpose(body)
    assert sorted(consents) == ["marketing", "support"]
    for purpose in ("marketing", "support"):
        _assert_consent(consents[purpose], status="granted", active=True, since=GRANTED_AT)
    assert _contact(server, subject.id, "marketing") == {
        "allowed": True,
        "reason": None,
        "purpose": "marketing",
    }
    assert _contact(server, subject.id, "support")["allowed"] is True


def test_a_withdrawal_turns_marketing_off_and_leaves_support_on(server: Server) -> None:
    subject = _new_subject(server)
    _withdraw_marketing(server, subject)
    consents = _by_purpose(_consents(server, subject.id))
    _assert_consent(consents["marketing"], status="withdrawn", active=False, since=WITHDRAWN_AT)
    _assert_consent(consents["support"], status="granted", active=True, since=GRANTED_AT)
    assert _contact(server, subject.id, "marketing") == {
        "allowed": False,
        "reason": "opted_out",
        "purpose": "marketing",
    }
    assert _contact(server, subject.id, "support") == {
        "allowed": True,
        "reason": None,
        "purpose": "support",
    }


def test_a_marketing_read_after_the_withdrawal_is_refused_and_recorded(server: Server) -> None:
    subject = _new_subject(server)
    _withdraw_marketing(server, subject)
    with server.client(MARKETING) as marketer:
        refused = marketer.get(f"/v1/subjects/{subject.id}/profile", params={"purpose": "marketing"})
    body = problem(refused, 403)
    assert body["type"].endswith("/no-consent"), body
    denied = [e for e in timeline(server, subject.id) if e["type"] == "AccessDenied"]
    assert len(denied) == 1, denied
    assert denied[0]["purpose"] == "marketing"
    assert denied[0]["reason"] == "no_consent"
    assert denied[0]["actor"] == {"actor_id": "bob-marketing", "role": "marketer"}


def test_a_contract_purpose_is_contactable_without_any_consent(server: Server) -> None:
    subject = _new_subject(server)
    assert _contact(server, subject.id, "billing") == {
        "allowed": True,
        "reason": None,
        "purpose": "billing",
    }
    assert "billing" not in _by_purpose(_consents(server, subject.id))


def test_an_unknown_purpose_is_a_422_problem(server: Server) -> None:
    subject = _new_subject(server)
    with server.client(MARKETING) as marketer:
        unknown = marketer.get(
            f"/v1/subjects/{subject.id}/contact-check", params={"purpose": "horoscopes"}
        )
        missing = marketer.get(f"/v1/subjects/{subject.id}/contact-check")
    assert problem(unknown, 422)["type"].endswith("/unknown-purpose")
    assert problem(missing, 422)["type"].endswith("/invalid-request")


@pytest.mark.parametrize("path", ["consents", "contact-check?purpose=marketing"])
def test_an_unknown_subject_is_a_404_problem(server: Server, path: str) -> None:
    with server.client(DPO) as dpo:
        answer = dpo.get(f"/v1/subjects/{uuid.uuid4()}/{path}")
    assert problem(answer, 404)["type"].endswith("/unknown-subject")


@pytest.mark.parametrize("path", ["consents", "contact-check?purpose=marketing"])
@pytest.mark.parametrize("token", [None, "forged-token", SHOP], ids=["missing", "forged", "producer"])
def test_a_missing_or_forged_staff_token_is_a_401_problem(
    server: Server, path: str, token: str | None
) -> None:
    subject = _new_subject(server)
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.base, headers=headers, timeout=10) as anyone:
        answer = anyone.get(f"/v1/subjects/{subject.id}/{path}")
    assert problem(answer, 401)["type"].endswith("/unauthorized")


def test_after_erasure_nobody_may_be_contacted_and_consents_say_erased(server: Server) -> None:
    subject = _new_subject(server)
    with server.client(DPO) as dpo:
        assert dpo.post(f"/v1/subjects/{subject.id}/erasure").status_code == 202
    for purpose in ("marketing", "support", "billing"):
        assert _contact(server, subject.id, purpose) == {"allowed": False, "reason": "subject_erased"}
    body = _consents(server, subject.id)
    assert body["erased"] is True
    assert all(c["active"] is False for c in body["consents"]), body
