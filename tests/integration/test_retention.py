"""Retention on real SQLite files with an injected clock: each purpose's keys go when its time is up.

Billing (a contract, 3650 days) keeps data 3650 days after the last invoice data; marketing (consent,
365 days) keeps it 365 days after the consent ends; an open-ended consent keeps it. Each shredding is
one `KeysShredded` event with a signed `retention` certificate, and later data starts a new key.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from consentry.core.clock import FixedClock
from consentry.core.errors import ScopeShredded
from consentry.core.events import DataUpdated, KeysShredded
from consentry.core.sealing import ERASED, Personal, purpose_scope
from consentry.ledger.application import Ledger
from consentry.ledger.chain import verify_chain
from consentry.shredder.certificates import verify
from consentry.shredder.retention import RetentionSchedule
from consentry.shredder.service import Shredder
from tests.support import T0, canary, parser, record, sqlite_ledger, submit

BILLING, MARKETING, SUPPORT = (purpose_scope(p) for p in ("billing", "marketing", "support"))


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def ledger(tmp_path: Path, clock: FixedClock) -> Ledger:
    return sqlite_ledger(tmp_path, clock)


def _subject(ledger: Ledger, ref: str) -> uuid.UUID:
    found = ledger.find_subject("shop", ref.removeprefix("shop:"))
    assert found is not None
    return found


def _customer(ledger: Ledger) -> tuple[uuid.UUID, str]:
    """Billing data at T0, marketing consent ending at T0+10d, open-ended support consent."""
    ref = f"shop:{canary('ref')}"
    outcomes = submit(
        ledger,
        record("data.update", ref, purpose="billing", fields={"city": canary("city")}),
        record(
            "consent.grant",
            ref,
            purpose="marketing",
            expires_at=(T0 + timedelta(days=10)).isoformat(),
        ),
        record("data.update", ref, purpose="marketing", fields={"email": f"{canary('m')}@example.com"}),
        record("consent.grant", ref, purpose="support"),
        record("data.update", ref, purpose="support", fields={"email": f"{canary('s')}@example.com"}),
    )
    assert [o.status for o in outcomes] == ["accepted"] * 5, outcomes
    return _subject(ledger, ref), ref


def _shredded(ledger: Ledger, subject: uuid.UUID) -> list[KeysShredded]:
    return [e for e in ledger.history(subject) if isinstance(e, KeysShredded)]


def _values(ledger: Ledger, subject: uuid.UUID, purpose: str) -> list[object]:
    return [
        value
        for e in ledger.history(subject, reveal=True)
        if isinstance(e, DataUpdated) and e.purpose == purpose
        for value in e.fields.values()
    ]


def test_each_purpose_is_shredded_when_its_retention_runs_out_and_only_then(
    ledger: Ledger, clock: FixedClock
) -> None:
    subject, _ = _customer(ledger)
    shredder, schedule = Shredder(ledger, clock), RetentionSchedule()
    marketing_due = T0 + timedelta(days=10 + 365)
    billing_due = T0 + timedelta(days=3650)

    clock.advance(marketing_due - T0 - timedelta(seconds=1))
    assert shredder.sweep(schedule) == []
    clock.advance(timedelta(seconds=1))
    [first] = shredder.sweep(schedule)
    assert (first.reason, first.scopes) == ("retention", (MARKETING,))
    assert _values(ledger, subject, "marketing") == [ERASED]
    assert all(isinstance(v, Personal) for v in _values(ledger, subject, "billing"))

    clock.advance(billing_due - marketing_due - timedelta(seconds=1))
    assert shredder.sweep(schedule) == []
    clock.advance(timedelta(seconds=1))
    [second] = shredder.sweep(schedule)
    assert second.scopes == (BILLING,)
    assert _values(ledger, subject, "billing") == [ERASED]
    assert all(isinstance(v, Personal) for v in _values(ledger, subject, "support"))

    clock.advance(timedelta(days=100_000 // 10))
    assert shredder.sweep(schedule) == []  # an open-ended consent keeps its data
    assert Shredder(ledger, clock).sweep(RetentionSchedule()) == []  # a full rescan finds nothing new

    public_key = ledger.keystore.provider.signing_key().public_key()
    events = _shredded(ledger, subject)
    assert [(e.reason, e.scopes) for e in events] == [
        ("retention", (MARKETING,)),
        ("retention", (BILLING,)),
    ]
    for event, deadline in zip(events, (marketing_due, billing_due), strict=True):
        certificate = verify(event.certificate, event.signature, public_key)
        assert certificate.reason == "retention" and certificate.requester == "retention"
        assert certificate.requested_at == deadline
        assert set(certificate.key_ids) == set(event.key_ids) and event.key_ids
        for key_id in event.key_ids:
            with pytest.raises(ScopeShredded):
                ledger.keystore.get_by_id(key_id)
    assert verify_chain(ledger.codec, ledger.notifications()).ok


def test_data_after_a_retention_shredding_gets_a_new_key_and_its_own_deadline(
    ledger: Ledger, clock: FixedClock
) -> None:
    subject, ref = _customer(ledger)
    shredder, schedule = Shredder(ledger, clock), RetentionSchedule()
    clock.advance(timedelta(days=3650))
    assert {r.scopes for r in shredder.sweep(schedule)} == {(MARKETING,), (BILLING,)}

    city = canary("city")
    later = clock.now()
    update = record("data.update", ref, purpose="billing", fields={"city": city})
    [outcome] = ledger.submit(
        "shop", [parser(clock).from_json(update | {"occurred_at": later.isoformat()})]
    )
    assert outcome.status == "accepted", outcome
    assert _values(ledger, subject, "billing")[-1] == Personal(city)
    assert ledger.keystore.get(subject, BILLING).version == 2

    clock.advance(timedelta(days=3649))
    assert shredder.sweep(schedule) == []
    clock.advance(timedelta(days=1))
    [again] = shredder.sweep(schedule)
    assert again.scopes == (BILLING,)
    assert _values(ledger, subject, "billing")[-1] == ERASED


def test_back_filled_data_past_its_retention_goes_at_the_next_sweep(
    ledger: Ledger, clock: FixedClock
) -> None:
    ref = f"shop:{canary('ref')}"
    old = datetime(2012, 3, 1, tzinfo=T0.tzinfo)
    submit(
        ledger,
        record(
            "data.update",
            ref,
            purpose="billing",
            fields={"city": canary("c")},
            occurred_at=old.isoformat(),
        ),
    )
    subject = _subject(ledger, ref)
    [result] = Shredder(ledger, clock).sweep(RetentionSchedule())
    assert result.scopes == (BILLING,)
    assert _values(ledger, subject, "billing") == [ERASED]
