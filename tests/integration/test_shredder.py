"""The shredder on real SQLite files: erasure, withdrawal, crash recovery and signed certificates."""

from __future__ import annotations

import sqlite3
import uuid
from contextlib import closing
from dataclasses import fields
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from consentry.core.events import (
    Actor,
    ConsentWithdrawn,
    DataUpdated,
    ErasureRequested,
    KeysShredded,
    LedgerEvent,
    SubjectErased,
)
from consentry.core.sealing import (
    CONSENT_SCOPE,
    ERASED,
    IDENTITY_SCOPE,
    Erased,
    Personal,
    SealedValue,
    purpose_scope,
)
from consentry.ledger.application import Ledger
from consentry.ledger.chain import verify_chain
from consentry.ledger.commands import RequestErasure
from consentry.shredder.certificates import (
    CertificateError,
    load_public_key,
    public_key_pem,
    verify,
)
from consentry.shredder.service import Shredder, ShredderError
from consentry.workers import shredder_reads
from tests.support import canary, codec, files_under, record, scan, sqlite_ledger, submit

MARKETING, SUPPORT = purpose_scope("marketing"), purpose_scope("support")


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return sqlite_ledger(tmp_path)


@pytest.fixture
def shredder(ledger: Ledger) -> Shredder:
    return Shredder(ledger, ledger.clock)


def _seed(ledger: Ledger) -> tuple[uuid.UUID, str, list[str]]:
    """A subject with consent evidence and data under two purposes; returns its id, ref, canaries."""
    ref_value = canary("ref")
    planted = [ref_value, canary("evidence"), canary("mail"), canary("name"), canary("phone")]
    ref = f"shop:{ref_value}"
    outcomes = submit(
        ledger,
        record("consent.grant", ref, evidence=planted[1]),
        record("consent.grant", ref, purpose="support"),
        record("data.update", ref, fields={"email": planted[2], "first_name": planted[3]}),
        record("data.update", ref, purpose="support", fields={"phone": planted[4]}),
    )
    assert [o.status for o in outcomes] == ["accepted"] * 4
    subject_id = outcomes[0].subject_id
    assert subject_id is not None
    return subject_id, ref, planted


def _personal_values(ledger: Ledger, subject_id: uuid.UUID) -> list[Personal | Erased]:
    """Every personal value of the revealed history: opened, or ERASED."""
    found: list[Personal | Erased] = []
    for event in ledger.history(subject_id, reveal=True):
        for f in fields(event):
            value = getattr(event, f.name)
            values = value.values() if isinstance(value, dict) else [value]
            found += [v for v in values if isinstance(v, Personal | Erased)]
    return found


def _purpose_values(ledger: Ledger, subject_id: uuid.UUID, purpose: str) -> list[object]:
    return [
        value.reveal() if isinstance(value, Personal) else value
        for event in ledger.history(subject_id, reveal=True)
        if isinstance(event, DataUpdated) and event.purpose == purpose
        for value in event.fields.values()
    ]


def _public_key(ledger: Ledger) -> Ed25519PublicKey:
    """The verification key as a customer would get it: from the published PEM."""
    return load_public_key(public_key_pem(ledger.keystore.provider))


def _shreds(ledger: Ledger, subject_id: uuid.UUID) -> list[KeysShredded]:
    return [e for e in ledger.history(subject_id) if isinstance(e, KeysShredded)]


def _first(events: list[LedgerEvent], kind: type[LedgerEvent]) -> LedgerEvent:
    return next(e for e in events if isinstance(e, kind))


def test_erasure_destroys_every_key_and_reference_and_records_a_verifiable_certificate(
    ledger: Ledger, shredder: Shredder
) -> None:
    subject_id, ref, planted = _seed(ledger)
    submit(ledger, record("erasure.request", ref))

    result = shredder.erase(subject_id)

    assert ledger.find_subject("shop", planted[0]) is None
    values = _personal_values(ledger, subject_id)
    assert len(values) == 5 and all(v is ERASED for v in values)
    assert set(result.scopes) == {IDENTITY_SCOPE, CONSENT_SCOPE, MARKETING, SUPPORT}
    assert all(ledger.keystore.is_shredded(subject_id, scope) for scope in result.scopes)
    history = ledger.history(subject_id)
    shred, erased = history[-2:]
    assert isinstance(shred, KeysShredded) and isinstance(erased, SubjectErased)
    assert (shred.certificate, shred.signature) == (result.certificate, result.signature)
    request = _first(history, ErasureRequested)
    assert shred.meta.causation_id == str(request.meta.event_id)
    assert ledger.load(subject_id).erased

    certificate = verify(result.certificate, result.signature, _public_key(ledger))
    assert (certificate.subject_id, certificate.reason, certificate.requester) == (
        subject_id,
        "erasure",
        "shop",
    )
    assert certificate.scopes == result.scopes and certificate.key_ids == result.key_ids
    assert len(certificate.key_ids) == 4
    assert certificate.causation_id == str(request.meta.event_id)
    assert certificate.chain_head == shred.meta.prev_hash.hex()
    assert not any(value.encode() in result.certificate for value in planted)
    assert verify_chain(codec(), ledger.notifications()).ok
    tampered = result.certificate.replace(b'"erasure"', b'"retention"')
    with pytest.raises(CertificateError, match="signature"):
        verify(tampered, result.signature, _public_key(ledger))


def test_erasing_twice_keeps_exactly_one_certificate(ledger: Ledger, shredder: Shredder) -> None:
    subject_id, _, _ = _seed(ledger)
    ledger.execute([RequestErasure(subject_id, Actor("dana-dpo", "dsr"))])

    first = shredder.erase(subject_id)
    second = shredder.erase(subject_id)

    assert not first.already_done and second.already_done
    assert (second.certificate, second.signature) == (first.certificate, first.signature)
    assert len(_shreds(ledger, subject_id)) == 1
    assert verify(first.certificate, first.signature, _public_key(ledger)).requester == "dana-dpo"
    assert shredder.pending() == [] and shredder.run_pending() == []


def test_erasure_without_a_request_is_refused_and_destroys_nothing(
    ledger: Ledger, shredder: Shredder
) -> None:
    subject_id, _, _ = _seed(ledger)
    with pytest.raises(ShredderError):
        shredder.erase(subject_id)
    with pytest.raises(ShredderError):
        shredder.erase(uuid.uuid4())
    assert not ledger.keystore.is_shredded(subject_id, MARKETING)


def test_a_crash_between_key_destruction_and_certificate_is_finished_on_restart(
    ledger: Ledger, shredder: Shredder
) -> None:
    subject_id, ref, _ = _seed(ledger)
    submit(ledger, record("erasure.request", ref))
    destroyed = ledger.keystore.erase_subject(subject_id)  # then the process dies

    assert shredder.pending() == [(subject_id, "erasure", None)]
    results = Shredder(ledger, ledger.clock).run_pending()

    assert [r.subject_id for r in results] == [subject_id]
    assert set(results[0].key_ids) == {k.key_id for k in destroyed}
    assert set(results[0].scopes) == {k.scope for k in destroyed}
    assert len(_shreds(ledger, subject_id)) == 1
    assert isinstance(ledger.history(subject_id)[-1], SubjectErased)
    assert shredder.pending() == [] and shredder.run_pending() == []
    assert len(_shreds(ledger, subject_id)) == 1


def test_withdrawal_shreds_only_that_purpose_and_is_certified_once(
    ledger: Ledger, shredder: Shredder
) -> None:
    subject_id, ref, planted = _seed(ledger)
    submit(ledger, record("consent.withdrawal", ref))
    assert shredder.pending() == [(subject_id, "withdrawal", "marketing")]

    result = shredder.withdraw(subject_id, "marketing")

    assert result is not None and result.scopes == (MARKETING,)
    assert _purpose_values(ledger, subject_id, "marketing") == [ERASED, ERASED]
    assert _purpose_values(ledger, subject_id, "support") == [planted[4]]
    assert not ledger.keystore.is_shredded(subject_id, CONSENT_SCOPE)
    assert ledger.find_subject("shop", planted[0]) == subject_id
    certificate = verify(result.certificate, result.signature, _public_key(ledger))
    assert (certificate.reason, certificate.scopes) == ("withdrawal", (MARKETING,))
    withdrawn = _first(ledger.history(subject_id), ConsentWithdrawn)
    assert certificate.causation_id == str(withdrawn.meta.event_id)
    again = shredder.withdraw(subject_id, "marketing")
    assert again is not None and again.already_done and again.certificate == result.certificate
    assert shredder.pending() == [] and shredder.run_pending() == []
    assert len(_shreds(ledger, subject_id)) == 1
    assert shredder.withdraw(subject_id, "support") is None


def test_a_re_consent_after_a_certified_withdrawal_keeps_its_new_key_version(
    ledger: Ledger, shredder: Shredder
) -> None:
    subject_id, ref, _ = _seed(ledger)
    submit(ledger, record("consent.withdrawal", ref))
    shredder.run_pending()
    new_email = canary("new")
    submit(
        ledger,
        record("consent.grant", ref),
        record("data.update", ref, fields={"email": new_email}),
    )

    assert shredder.pending() == [] and shredder.run_pending() == []
    again = shredder.withdraw(subject_id, "marketing")
    assert again is not None and again.already_done

    assert ledger.keystore.get(subject_id, MARKETING).version == 2
    assert _purpose_values(ledger, subject_id, "marketing") == [ERASED, ERASED, new_email]
    # Withdrawing again shreds version 2 and certifies only the key not certified before.
    first_key_ids = set(_shreds(ledger, subject_id)[0].key_ids)
    submit(ledger, record("consent.withdrawal", ref))
    (second,) = shredder.run_pending()
    latest = [e for e in ledger.history(subject_id) if isinstance(e, DataUpdated)][-1].fields["email"]
    assert isinstance(latest, SealedValue) and second.key_ids == (latest.key_id,)
    assert not first_key_ids & set(second.key_ids)
    assert _purpose_values(ledger, subject_id, "marketing") == [ERASED, ERASED, ERASED]


def test_a_re_consent_before_the_shredder_ran_keeps_only_its_new_key_version(
    ledger: Ledger, shredder: Shredder
) -> None:
    subject_id, ref, _ = _seed(ledger)
    withdrawn_key = ledger.keystore.get(subject_id, MARKETING)
    submit(ledger, record("consent.withdrawal", ref))
    submit(ledger, record("consent.grant", ref))
    assert shredder.pending() == [(subject_id, "withdrawal", "marketing")]

    (result,) = shredder.run_pending()

    assert result.key_ids == (withdrawn_key.key_id,)
    withdrawn = _first(ledger.history(subject_id), ConsentWithdrawn)
    certificate = verify(result.certificate, result.signature, _public_key(ledger))
    assert certificate.causation_id == str(withdrawn.meta.event_id)
    assert not ledger.keystore.is_shredded(subject_id, MARKETING)
    assert ledger.keystore.get(subject_id, MARKETING).version == 2
    assert shredder.pending() == [] and shredder.run_pending() == []
    assert len(_shreds(ledger, subject_id)) == 1


def test_data_withdrawn_before_a_quick_re_consent_stays_unreadable(
    tmp_path: Path, ledger: Ledger, shredder: Shredder
) -> None:
    subject_id, ref, _ = _seed(ledger)
    new_email = canary("new")
    submit(ledger, record("consent.withdrawal", ref))
    submit(
        ledger,
        record("consent.grant", ref),
        record("data.update", ref, fields={"email": new_email}),
    )

    shredder.run_pending()

    assert _purpose_values(ledger, subject_id, "marketing") == [ERASED, ERASED, new_email]
    # A second process has no cached keys: what it reads comes from the keystore file.
    reopened = sqlite_ledger(tmp_path)
    try:
        assert _purpose_values(reopened, subject_id, "marketing") == [ERASED, ERASED, new_email]
    finally:
        reopened.keystore.close()


def test_a_crash_recovered_erasure_certifies_unused_keys_with_their_real_shredding_time(
    ledger: Ledger, shredder: Shredder
) -> None:
    subject_id, ref, _ = _seed(ledger)
    submit(ledger, record("consent.withdrawal", ref))
    shredder.run_pending()
    submit(ledger, record("consent.grant", ref))  # a new key version that seals nothing
    unused = ledger.keystore.get(subject_id, MARKETING)
    submit(ledger, record("erasure.request", ref))
    ledger.keystore.erase_subject(subject_id)  # then the process dies
    tombstones = ledger.keystore.shredded_keys(subject_id)

    (result,) = Shredder(ledger, ledger.clock).run_pending()

    assert unused.key_id in result.key_ids
    assert set(result.key_ids) == {t.key_id for t in tombstones}
    certificate = verify(result.certificate, result.signature, _public_key(ledger))
    assert certificate.shredded_at == max(t.shredded_at for t in tombstones)
    assert certificate.shredded_at < certificate.issued_at


def test_two_shredders_racing_on_one_withdrawal_record_one_certificate(
    ledger: Ledger, shredder: Shredder, monkeypatch: pytest.MonkeyPatch
) -> None:
    subject_id, ref, _ = _seed(ledger)
    submit(ledger, record("consent.withdrawal", ref))
    late = Shredder(ledger, ledger.clock)
    stale, fresh = late._snapshot(subject_id), late._snapshot
    # The late shredder read the history before the first one recorded its certificate.
    reads = iter([stale])
    monkeypatch.setattr(late, "_snapshot", lambda s: next(reads, None) or fresh(s))

    first = shredder.withdraw(subject_id, "marketing")
    second = late.withdraw(subject_id, "marketing")

    assert first is not None and second is not None
    assert not first.already_done and second.already_done
    assert (second.certificate, second.key_ids) == (first.certificate, first.key_ids)
    assert len(_shreds(ledger, subject_id)) == 1


def test_handle_dispatches_requests_and_ignores_other_events(ledger: Ledger, shredder: Shredder) -> None:
    subject_id, ref, _ = _seed(ledger)
    submit(ledger, record("consent.withdrawal", ref, purpose="support"))
    submit(ledger, record("erasure.request", ref))
    history = ledger.history(subject_id)

    assert shredder.handle(history[0]) is None
    # The pending erasure covers the withdrawal: it is left to the erasure, not certified twice.
    assert shredder.handle(_first(history, ConsentWithdrawn)) is None
    erased = shredder.handle(_first(history, ErasureRequested))

    assert erased is not None and erased.reason == "erasure" and SUPPORT in erased.scopes
    assert len(_shreds(ledger, subject_id)) == 1
    assert shredder.pending() == []


def _wrapped_keys(keystore_file: Path) -> list[bytes]:
    """The wrapped key bytes as the SQLite keystore stores them (read beside the adapter)."""
    with closing(sqlite3.connect(keystore_file)) as db:
        return [bytes(row[0]) for row in db.execute("SELECT wrapped FROM data_keys")]


def test_no_canary_and_no_wrapped_key_is_left_in_any_file_after_erasure(tmp_path: Path) -> None:
    ledger = sqlite_ledger(tmp_path)
    shredder = Shredder(ledger, ledger.clock)
    subjects = [_seed(ledger) for _ in range(5)]
    for _, ref, _ in subjects:
        submit(ledger, record("erasure.request", ref))
    wrapped = _wrapped_keys(tmp_path / "keystore.db")
    assert len(wrapped) == 20

    results = shredder.run_pending()

    assert sorted(r.subject_id for r in results) == sorted(s for s, _, _ in subjects)
    planted = [value for _, _, values in subjects for value in values]
    assert scan(tmp_path, planted) == {}
    for path in files_under(tmp_path):
        data = path.read_bytes()
        assert not any(blob in data for blob in wrapped), path.name
    for result in results:
        assert not any(value.encode() in result.certificate for value in planted)


def test_the_shredder_worker_decodes_only_the_events_it_acts_on(ledger: Ledger) -> None:
    ref = "shop:" + canary("ref")
    submit(ledger, record("consent.grant", ref))
    submit(ledger, record("data.update", ref))
    submit(ledger, record("consent.withdrawal", ref))
    submit(ledger, record("erasure.request", ref))
    events = [(state, ledger.mapper.decode(state)) for _, state in ledger.notifications()]
    acted_on = [isinstance(e, ErasureRequested | ConsentWithdrawn) for _, e in events]
    assert [shredder_reads(ledger.codec, state) for state, _ in events] == acted_on
    assert acted_on.count(True) == 2 and len(acted_on) > 4
    # Bytes of no schema of ours are decoded, so they fail as loudly as they always did.
    assert shredder_reads(ledger.codec, b"\xc3\x01" + bytes(8) + b"body")
