"""Contact protection over real HTTP: consent, opt-out, quiet hours and the marketing e-mail cap.

`GET /v1/subjects/{id}/contact-check?purpose=P&channel=C` answers allowed or refused with a reason;
`POST /v1/subjects/{id}/contacts` records a contact only if the same check allows it, in the same
write, as a `ContactRecorded` event. The example policy allows 2 marketing e-mails per 7 days.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.api import DPO, MARKETING, SUPPORT, problem, send_accepted, subject_of, timeline
from tests.e2e.conftest import Server, running_server
from tests.support import EXAMPLE_POLICY, canary, record


def _consenting(server: Server) -> tuple[str, str]:
    ref = f"shop:{canary('ref')}"
    send_accepted(server, record("consent.grant", ref, purpose="marketing"))
    return ref, subject_of(server, ref)


def _check(server: Server, subject: str, channel: str, purpose: str = "marketing") -> dict[str, Any]:
    with server.client(MARKETING) as marketer:
        answer = marketer.get(
            f"/v1/subjects/{subject}/contact-check", params={"purpose": purpose, "channel": channel}
        )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _contact(server: Server, subject: str, channel: str, token: str = MARKETING) -> Any:
    with server.client(token) as staff:
        return staff.post(
            f"/v1/subjects/{subject}/contacts", json={"purpose": "marketing", "channel": channel}
        )


def test_two_marketing_emails_a_week_then_the_cap_refuses_and_says_when(server: Server) -> None:
    _, subject = _consenting(server)
    assert _check(server, subject, "email") | {"next_allowed_at": None} == {
        "purpose": "marketing",
        "channel": "email",
        "allowed": True,
        "reason": None,
        "contacts_in_window": 0,
        "cap": 2,
        "per_days": 7,
        "next_allowed_at": None,
    }
    first = _contact(server, subject, "email")
    assert first.status_code == 201, first.text
    assert first.json()["next"]["allowed"] is True
    second = _contact(server, subject, "email")
    assert second.status_code == 201, second.text
    assert second.json()["next"]["reason"] == "cap_reached"

    refused = problem(_contact(server, subject, "email"), 403)
    assert refused["type"].endswith("/cap-reached"), refused
    check = _check(server, subject, "email")
    assert (check["allowed"], check["reason"], check["contacts_in_window"]) == (False, "cap_reached", 2)
    made = [e for e in timeline(server, subject) if e["type"] == "ContactRecorded"]
    assert [(e["channel"], e["actor"]["actor_id"]) for e in made] == [("email", "bob-marketing")] * 2
    at = datetime.fromisoformat(made[0]["occurred_at"])
    assert datetime.fromisoformat(check["next_allowed_at"]) == at + timedelta(days=7)

    assert _check(server, subject, "sms")["allowed"] is True  # the cap counts e-mails only
    assert _contact(server, subject, "sms").status_code == 201


def test_contacts_reported_by_a_producer_count_against_the_cap(server: Server) -> None:
    ref = f"shop:{canary('ref')}"
    at = datetime.now(UTC)
    reports = [
        record("contact.report", ref, purpose="marketing", channel="email", occurred_at=at.isoformat()),
        record("contact.report", ref, purpose="marketing", channel="email", occurred_at=at.isoformat()),
        # Contacts older than the window do not count.
        record("contact.report", ref, purpose="marketing", channel="email",
               occurred_at=(at - timedelta(days=8)).isoformat()),
    ]  # fmt: skip
    send_accepted(server, record("consent.grant", ref, purpose="marketing"), *reports[2:])
    subject = subject_of(server, ref)
    assert _check(server, subject, "email")["contacts_in_window"] == 0
    send_accepted(server, *reports[:2])
    assert _check(server, subject, "email")["reason"] == "cap_reached"
    assert problem(_contact(server, subject, "email"), 403)["type"].endswith("/cap-reached")


def test_opted_out_and_never_consented_subjects_are_refused_with_their_reason(server: Server) -> None:
    ref, subject = _consenting(server)
    send_accepted(server, record("consent.withdrawal", ref, purpose="marketing"))
    assert _check(server, subject, "email")["reason"] == "opted_out"
    assert problem(_contact(server, subject, "email"), 403)["type"].endswith("/opted-out")

    other = f"shop:{canary('ref')}"
    send_accepted(server, record("consent.grant", other, purpose="support"))
    stranger = subject_of(server, other)
    assert _check(server, stranger, "email")["reason"] == "no_consent"
    assert problem(_contact(server, stranger, "email"), 403)["type"].endswith("/no-consent")
    assert not [e for e in timeline(server, stranger) if e["type"] == "ContactRecorded"]


def test_only_a_role_with_the_contact_permission_may_record_and_bad_input_is_a_422(
    server: Server,
) -> None:
    _, subject = _consenting(server)
    denied = problem(_contact(server, subject, "email", token=SUPPORT), 403)
    assert denied["type"].endswith("/role-not-allowed")
    with server.client(MARKETING) as marketer:
        url = f"/v1/subjects/{subject}/contacts"
        unknown = marketer.post(url, json={"purpose": "horoscopes", "channel": "email"})
        bad = marketer.post(url, json={"purpose": "marketing", "channel": "E-Mail!"})
        extra = marketer.post(url, json={"purpose": "marketing", "channel": "email", "x": 1})
    assert problem(unknown, 422)["type"].endswith("/unknown-purpose")
    assert problem(bad, 422)["type"].endswith("/invalid-request")
    assert problem(extra, 422)["type"].endswith("/invalid-request")
    assert not [e for e in timeline(server, subject) if e["type"] == "ContactRecorded"]


def test_the_verdict_is_the_same_after_every_view_is_rebuilt(server: Server) -> None:
    _, subject = _consenting(server)
    for _ in range(2):
        assert _contact(server, subject, "email").status_code == 201
    before = _check(server, subject, "email")
    with server.client(DPO) as dpo:
        assert dpo.post("/v1/audit/replay").status_code == 200
    assert _check(server, subject, "email") == before


def test_quiet_hours_refuse_contacts_while_they_last(tmp_path: Path) -> None:
    rules = yaml.safe_load(EXAMPLE_POLICY.read_text())
    now = datetime.now(UTC)
    rules["purposes"]["marketing"]["quiet_hours"] = {
        "start": (now - timedelta(hours=1)).strftime("%H:%M"),
        "end": (now + timedelta(hours=1)).strftime("%H:%M"),
        "timezone": "UTC",
    }
    policy = tmp_path / "quiet.yaml"
    policy.write_text(yaml.safe_dump(rules))
    with running_server(tmp_path / "data", policy) as quiet:
        _, subject = _consenting(quiet)
        check = _check(quiet, subject, "email")
        assert (check["allowed"], check["reason"]) == (False, "quiet_hours")
        assert problem(_contact(quiet, subject, "email"), 403)["type"].endswith("/quiet-hours")
        assert _check(quiet, subject, "email", purpose="billing")["allowed"] is True
