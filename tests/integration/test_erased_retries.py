"""Retries after an erasure, on real SQLite files: the request is still known once its reference is gone.

A producer whose answer was lost retries with the same idempotency key. If the shredder erased the
subject meanwhile, the blind index no longer leads to it; the keystore's request digests of erased
subjects do, so the retry is answered `duplicate`, exactly as before the erasure.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from consentry.core.errors import Reason
from consentry.ledger.application import Ledger
from consentry.ledger.subject import Outcome
from consentry.shredder.service import Shredder
from tests.support import T0, canary, record, sqlite_ledger, submit


@pytest.fixture(params=[False, True], ids=["folded", "sole-writer"])
def ledger(tmp_path: Path, request: pytest.FixtureRequest) -> Ledger:
    # The embedded platform is a sole writer (it remembers subject states); distributed intake folds.
    return sqlite_ledger(tmp_path, sole_writer=request.param)


def _accepted(ledger: Ledger, *records: dict[str, Any]) -> list[Outcome]:
    """Submits the records one batch each; every one must be accepted."""
    outcomes = [submit(ledger, r)[0] for r in records]
    assert [o.status for o in outcomes] == ["accepted"] * len(records)
    return outcomes


def _shred(ledger: Ledger, subject_id: uuid.UUID | None) -> uuid.UUID:
    """Erases the subject whose erasure was requested, as the shredder does after the request."""
    assert subject_id is not None
    assert not Shredder(ledger, ledger.clock).erase(subject_id).already_done
    return subject_id


def _answers(outcomes: list[Outcome]) -> list[tuple[str, uuid.UUID | None, uuid.UUID | None]]:
    return [(o.status, o.subject_id, o.event_id) for o in outcomes]


def _log_end(ledger: Ledger) -> int:
    return ledger.recorder.max_notification_id() or 0


def test_retried_requests_of_an_erased_subject_are_duplicates_with_their_original_event_ids(
    ledger: Ledger,
) -> None:
    ref = f"shop:{canary('ref')}"
    value = ref.removeprefix("shop:")
    grant = record("consent.grant", ref)
    second = record("consent.grant", ref, purpose="support")
    erasure = record("erasure.request", ref)
    granted = _accepted(ledger, grant, second)
    # Retries before the erasure. (The grant that created the subject answers the id of the event
    # its digest is stored on, the subject's first: ReferenceLinked, not the ConsentGranted the
    # first answer named. That is how every retry answers; here it must not change.)
    before = submit(ledger, grant, second)
    assert [o.status for o in before] == ["duplicate"] * 2
    assert before[1].event_id == granted[1].event_id
    (requested,) = _accepted(ledger, erasure)
    subject_id = _shred(ledger, requested.subject_id)
    assert ledger.find_subject("shop", value) is None
    end = _log_end(ledger)

    retried = [submit(ledger, r)[0] for r in (grant, second, erasure)]
    together = submit(ledger, erasure, grant, second)

    expected = [*_answers(before), ("duplicate", subject_id, requested.event_id)]
    assert _answers(retried) == expected
    assert _answers(together) == [expected[2], expected[0], expected[1]]
    # Nothing written, no subject created, the reference still leads nowhere.
    assert _log_end(ledger) == end
    assert ledger.find_subject("shop", value) is None


def test_a_new_request_for_an_erased_reference_is_decided_as_before(ledger: Ledger) -> None:
    ref = f"shop:{canary('ref')}"
    old_erasure = record("erasure.request", ref)
    outcomes = _accepted(ledger, record("consent.grant", ref), old_erasure)
    subject_id = _shred(ledger, outcomes[0].subject_id)

    # Another erasure request (a new key) finds no subject, as before this change.
    (again,) = submit(ledger, record("erasure.request", ref))
    assert (again.status, again.reason) == ("rejected", Reason.UNKNOWN_SUBJECT)
    # A retry and a returning customer's new grant in one batch: the retry is the erased subject's,
    # the new grant creates a new subject (the erased one is closed for good).
    retry, returning = submit(ledger, old_erasure, record("consent.grant", ref))
    assert (retry.status, retry.subject_id) == ("duplicate", subject_id)
    assert returning.status == "accepted" and returning.subject_id not in (None, subject_id)
    assert ledger.find_subject("shop", ref.removeprefix("shop:")) == returning.subject_id


def test_a_reused_key_for_another_customer_is_not_taken_for_the_erased_subjects_retry(
    ledger: Ledger,
) -> None:
    # A producer that reuses one idempotency key per customer (say, its consent form's id): the
    # record of another customer, at another time, is a new request, not a retry.
    key = f"signup-form-{uuid.uuid4().hex[:8]}"
    first_ref, other_ref = f"shop:{canary('ref')}", f"shop:{canary('ref')}"
    grant = record("consent.grant", first_ref, idempotency_key=key)
    (granted,) = _accepted(ledger, grant)
    (requested,) = _accepted(ledger, record("erasure.request", first_ref))
    erased = _shred(ledger, requested.subject_id)

    later = (T0 + timedelta(minutes=5)).isoformat()
    other = record("consent.grant", other_ref, idempotency_key=key, occurred_at=later)
    (new,) = submit(ledger, other)
    assert new.status == "accepted" and new.subject_id not in (None, erased, granted.subject_id)
    assert ledger.find_subject("shop", other_ref.removeprefix("shop:")) == new.subject_id
    # The erased customer's own resend is still its duplicate.
    (retry,) = submit(ledger, grant)
    assert (retry.status, retry.subject_id) == ("duplicate", erased)


def test_a_batch_of_new_subjects_reads_erased_requests_and_references_in_a_fixed_number_of_queries(
    tmp_path: Path,
) -> None:
    # A reference the keystore does not know may be a retry of an erased subject's request: a batch
    # asks about all of its unknown ones at once, and links its new subjects' references at once,
    # instead of a query or two per record.
    reads = []
    for size in (10, 300):
        ledger = sqlite_ledger(tmp_path / str(size), sole_writer=True)
        statements: list[str] = []
        ledger.keystore._db.set_trace_callback(statements.append)  # type: ignore[attr-defined]
        outcomes = submit(
            ledger, *(record("consent.grant", f"shop:{canary('ref')}") for _ in range(size))
        )
        ledger.keystore._db.set_trace_callback(None)  # type: ignore[attr-defined]
        assert [o.status for o in outcomes] == ["accepted"] * size
        assert len({o.subject_id for o in outcomes}) == size
        reads.append(
            sum(
                s.lstrip().upper().startswith("SELECT")
                and ("erased_requests" in s or "references_index" in s)
                for s in statements
            )
        )
    assert reads[0] == reads[1] > 0
