"""The contact rule on its own: consent, opt-out, quiet hours and a sliding cap window."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time, timedelta

import pytest
import yaml

from consentry.core import events as ev
from consentry.core.errors import PolicyError, Reason
from consentry.core.events import EventMeta
from consentry.core.policy import Policy, QuietHours, parse_policy
from consentry.ledger.contact import contact_verdict
from consentry.ledger.subject import SubjectState
from tests.support import EXAMPLE_POLICY, T0, policy

SUBJECT = uuid.uuid4()


def _meta(sequence: int, at: datetime) -> EventMeta:
    return EventMeta(uuid.uuid4(), SUBJECT, sequence, at, at, "p")


def _state(*contacts: tuple[datetime, str], expires_at: datetime | None = None) -> SubjectState:
    state = SubjectState(SUBJECT)
    state.apply(
        ev.ConsentGranted(_meta(1, T0), "marketing", ("email",), "consent", "web", "n", None, expires_at)
    )
    for n, (at, channel) in enumerate(contacts, start=2):
        state.apply(ev.ContactRecorded(_meta(n, at), "marketing", channel))
    return state


def test_the_cap_counts_email_contacts_in_a_sliding_seven_day_window() -> None:
    rules = policy()
    first, second = T0 + timedelta(hours=1), T0 + timedelta(days=2)
    state = _state((first, "email"), (second, "email"), (second, "sms"))
    refused = contact_verdict(state, rules, "marketing", "email", second + timedelta(hours=1))
    assert (refused.reason, refused.in_window, refused.cap) == (Reason.CAP_REACHED, 2, 2)
    assert refused.next_allowed_at == first + timedelta(days=7)
    assert contact_verdict(state, rules, "marketing", "sms", second).allowed  # sms is not capped
    again = contact_verdict(state, rules, "marketing", "email", first + timedelta(days=7))
    assert again.allowed and again.in_window == 1


def test_opt_out_no_consent_and_expiry_come_before_the_cap() -> None:
    rules = policy()
    state = _state()
    state.apply(ev.ConsentWithdrawn(_meta(2, T0), "marketing", "email"))
    assert contact_verdict(state, rules, "marketing", "email", T0).reason == Reason.OPTED_OUT
    assert (
        contact_verdict(SubjectState(SUBJECT), rules, "marketing", None, T0).reason == Reason.NO_CONSENT
    )
    lapsed = _state(expires_at=T0 + timedelta(days=1))
    assert contact_verdict(lapsed, rules, "marketing", "email", T0 + timedelta(days=1)).reason == (
        Reason.CONSENT_EXPIRED
    )
    assert contact_verdict(SubjectState(SUBJECT), rules, "billing", "letter", T0).allowed


def _quiet(start: time, end: time, zone: str) -> Policy:
    rules = policy()
    marketing = rules.purposes["marketing"].model_copy(
        update={"quiet_hours": QuietHours(start=start, end=end, timezone=zone)}
    )
    return rules.model_copy(update={"purposes": rules.purposes | {"marketing": marketing}})


def test_quiet_hours_span_midnight_in_their_own_time_zone() -> None:
    rules = _quiet(time(21, 0), time(8, 0), "Europe/Berlin")  # UTC+1 in November
    state = _state()
    at = datetime(2026, 11, 20, tzinfo=UTC)
    assert contact_verdict(
        state, rules, "marketing", "email", at.replace(hour=20, minute=30)
    ).reason == (Reason.QUIET_HOURS)
    assert contact_verdict(state, rules, "marketing", "email", at.replace(hour=6, minute=59)).reason == (
        Reason.QUIET_HOURS
    )
    assert contact_verdict(state, rules, "marketing", "email", at.replace(hour=7)).allowed
    assert contact_verdict(state, rules, "marketing", "email", at.replace(hour=19, minute=59)).allowed


def test_a_bad_time_zone_in_quiet_hours_fails_the_policy_with_its_key() -> None:
    raw = yaml.safe_load(EXAMPLE_POLICY.read_text())
    raw["purposes"]["marketing"]["quiet_hours"] = {
        "start": "21:00",
        "end": "08:00",
        "timezone": "Mars/Olympus",
    }
    with pytest.raises(PolicyError, match=r"purposes\.marketing\.quiet_hours\.timezone.*Mars/Olympus"):
        parse_policy(raw)
