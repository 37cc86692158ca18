"""The subject aggregate's pure decisions: no data without consent, only declared fields."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from consentry.core import events as ev
from consentry.core.errors import Reason
from consentry.core.intake import IntakeRecord
from consentry.ledger.commands import RecordAccess, RecordShare, RecordShredding, RequestErasure
from consentry.ledger.subject import Context, SubjectState, decide, decide_staff
from tests.support import T0, parser, policy, record


def _ctx(producer: str = "shop") -> Context:
    return Context(now=T0, policy=policy(), new_id=uuid.uuid4, producer=producer)


def _rec(kind: str, **values: Any) -> IntakeRecord:
    return parser().from_json(record(kind, "shop:fake-1", **values))


def _fold(state: SubjectState, *records: IntakeRecord) -> SubjectState:
    for item in records:
        for event in decide(state, item, _ctx()).events:
            state.apply(event)
    return state


def test_a_data_update_for_an_unknown_subject_without_consent_creates_nothing() -> None:
    decision = decide(SubjectState(uuid.uuid4()), _rec("data.update"), _ctx())
    assert decision.events == ()
    assert decision.outcome.reason == Reason.NO_CONSENT


def test_a_consent_grant_creates_the_subject_with_its_reference_first() -> None:
    decision = decide(SubjectState(uuid.uuid4()), _rec("consent.grant"), _ctx())
    assert [type(e) for e in decision.events] == [ev.ReferenceLinked, ev.ConsentGranted]
    assert [e.meta.sequence for e in decision.events] == [1, 2]


def test_data_under_a_contract_basis_needs_no_consent_grant() -> None:
    update = _rec("data.update", purpose="billing", fields={"city": "Exampleville"})
    decision = decide(SubjectState(uuid.uuid4()), update, _ctx())
    assert [type(e) for e in decision.events] == [ev.ReferenceLinked, ev.DataUpdated]


def test_an_update_after_the_consent_expired_records_the_expiry_and_a_rejection() -> None:
    state = _fold(
        SubjectState(uuid.uuid4()),
        _rec("consent.grant", expires_at=(T0 + timedelta(days=1)).isoformat()),
    )
    late = _rec("data.update", occurred_at=(T0 + timedelta(days=2)).isoformat())
    decision = decide(state, late, _ctx())
    assert [type(e) for e in decision.events] == [ev.ConsentExpired, ev.DataUpdateRejected]
    assert decision.outcome.reason == Reason.CONSENT_EXPIRED


def test_a_rejected_update_keeps_field_names_and_never_values() -> None:
    state = _fold(SubjectState(uuid.uuid4()), _rec("consent.grant"))
    decision = decide(state, _rec("data.update", fields={"phone": "000-fake"}), _ctx())
    (rejected,) = decision.events
    assert isinstance(rejected, ev.DataUpdateRejected)
    assert rejected.field_names == ("phone",)
    assert "000-fake" not in repr(rejected)


def test_a_producer_may_only_send_what_the_policy_allows_it() -> None:
    decision = decide(SubjectState(uuid.uuid4()), _rec("consent.grant"), _ctx("intruder"))
    assert (decision.events, decision.outcome.reason) == ((), Reason.PRODUCER_NOT_ALLOWED)


def test_a_re_consent_after_withdrawal_asks_for_a_new_key_version() -> None:
    state = _fold(SubjectState(uuid.uuid4()), _rec("consent.grant"), _rec("consent.withdrawal"))
    assert decide(state, _rec("consent.grant"), _ctx()).renew_scopes == ("purpose:marketing",)


def test_reads_are_refused_once_erasure_was_requested_but_denials_are_still_recorded() -> None:
    state = _fold(SubjectState(uuid.uuid4()), _rec("consent.grant"))
    actor = ev.Actor("dana-dpo", "dsr")
    for event in decide_staff(state, RequestErasure(state.subject_id, actor), _ctx()).events:
        state.apply(event)
    read = RecordAccess(state.subject_id, actor, "marketing", ("email",))
    decision = decide_staff(state, read, _ctx())
    assert (decision.events, decision.outcome.reason) == ((), Reason.SUBJECT_ERASED)
    assert (
        decide_staff(state, RequestErasure(state.subject_id, actor), _ctx()).outcome.status
        == "duplicate"
    )


def test_a_second_shredding_record_for_the_same_request_is_a_duplicate() -> None:
    state = _fold(SubjectState(uuid.uuid4()), _rec("consent.grant"), _rec("consent.withdrawal"))
    cause = str(uuid.uuid4())

    def shredding(causation_id: str) -> RecordShredding:
        return RecordShredding(
            state.subject_id,
            "withdrawal",
            ("purpose:marketing",),
            ("k-1",),
            b"{}",
            b"sig",
            False,
            causation_id,
        )

    first = decide_staff(state, shredding(cause), _ctx())
    assert first.outcome.status == "accepted"
    for event in first.events:
        state.apply(event)
    assert state.shredded_causes == {cause}
    again = decide_staff(state, shredding(cause), _ctx())
    assert (again.events, again.outcome.status) == ((), "duplicate")
    assert decide_staff(state, shredding(str(uuid.uuid4())), _ctx()).outcome.status == "accepted"


def test_access_records_leave_the_data_version_where_the_last_data_change_put_it() -> None:
    state = _fold(SubjectState(uuid.uuid4()), _rec("consent.grant"), _rec("data.update"))
    changed = state.version
    assert state.data_version == changed
    read = RecordAccess(
        state.subject_id, ev.Actor("sam-support", "support_agent"), "marketing", ("email",)
    )
    for event in decide_staff(state, read, _ctx()).events:
        state.apply(event)
    assert (state.version, state.data_version) == (changed + 1, changed)
    _fold(state, _rec("consent.withdrawal"))
    assert state.data_version == state.version == changed + 2
    assert state.clone().data_version == state.data_version


def test_a_read_or_share_decided_after_the_consent_went_records_a_denial_not_a_disclosure() -> None:
    state = _fold(SubjectState(uuid.uuid4()), _rec("consent.grant"), _rec("data.update"))
    agent = ev.Actor("sam-support", "support_agent")
    read = RecordAccess(state.subject_id, agent, "marketing", ("email",))
    share = RecordShare(state.subject_id, agent, "marketing", "mailer", "agr-1", ("email",))
    assert [type(e) for e in decide_staff(state, read, _ctx()).events] == [ev.DataAccessed]
    # The caller was admitted, then the withdrawal was decided before its read or share.
    _fold(state, _rec("consent.withdrawal"))
    for command, kind in ((read, "profile"), (share, "share")):
        decision = decide_staff(state, command, _ctx())
        (denied,) = decision.events
        assert isinstance(denied, ev.AccessDenied)
        assert (denied.purpose, denied.reason, denied.access_kind) == ("marketing", "no_consent", kind)
        outcome = decision.outcome
        assert (outcome.status, outcome.reason, outcome.event_id) == (
            "rejected",
            Reason.NO_CONSENT,
            denied.meta.event_id,
        )
    # An export answers the subject's right of access: it is recorded whatever the consents.
    export = RecordAccess(state.subject_id, agent, "marketing", ("email",), "export")
    assert [type(e) for e in decide_staff(state, export, _ctx()).events] == [ev.DataAccessed]


def test_a_read_decided_after_the_consent_expired_is_denied() -> None:
    state = _fold(
        SubjectState(uuid.uuid4()),
        _rec("consent.grant", expires_at=(T0 + timedelta(minutes=5)).isoformat()),
    )
    read = RecordAccess(state.subject_id, ev.Actor("sam-support", "support_agent"), "marketing", ())
    later = Context(now=T0 + timedelta(minutes=6), policy=policy(), new_id=uuid.uuid4, producer=None)
    assert decide_staff(state, read, _ctx()).outcome.status == "accepted"
    assert decide_staff(state, read, later).outcome.reason == Reason.NO_CONSENT


def test_what_a_clone_folds_leaves_the_original_as_it_was() -> None:
    # A writer caches states and hands out clones; the clone shares the immutable parts.
    original = _fold(
        SubjectState(uuid.uuid4()),
        _rec("consent.grant", expires_at=(T0 + timedelta(days=1)).isoformat()),
    )
    granted, seen = original.purposes["marketing"], dict(original.seen)
    copy = original.clone()
    late = _rec("data.update", occurred_at=(T0 + timedelta(days=2)).isoformat())
    expiry = RecordShredding(
        copy.subject_id, "retention", ("purpose:marketing",), ("k-1",), b"{}", b"sig", False, "c-1"
    )
    written = decide(copy, late, _ctx()).events
    for event in (*written, *decide_staff(copy, expiry, _ctx()).events):
        copy.apply(event)
    assert copy.purposes["marketing"].status == "expired"
    assert (copy.lapsed, copy.shredded_causes) == (frozenset({"marketing"}), frozenset({"c-1"}))
    assert len(copy.seen) == len(seen) + 1
    assert original.purposes["marketing"] is granted and granted.status == "granted"
    assert (original.lapsed, original.shredded_causes, original.seen) == (frozenset(), frozenset(), seen)
    # A retried record finds the id of the event it was first written with.
    again = decide(copy, late, _ctx())
    assert again.outcome.status == "duplicate" and again.events == ()
    assert again.outcome.event_id == next(e.meta.event_id for e in written if e.meta.idempotency)
