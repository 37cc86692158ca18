"""The ledger on real SQLite files: no plaintext at rest, per-purpose shredding, bad intake."""

from __future__ import annotations

import sqlite3
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import closing
from pathlib import Path

import pytest

from consentry.core.errors import Reason, Rejected
from consentry.core.events import ConsentGranted, DataUpdated, LedgerEvent, ReferenceLinked, evolve
from consentry.core.keystore import KeyRow
from consentry.core.sealing import ERASED, Personal, SealedValue, purpose_scope
from consentry.ledger import application
from consentry.ledger.application import Ledger
from consentry.ledger.chain import verify_chain
from consentry.ledger.store import events_after
from consentry.ledger.subject import Outcome
from tests.contract.keystore_contract import wraps_counted
from tests.contract.sole_writer_contract import store_reads
from tests.support import calls_of, canary, codec, parser, record, scan, sqlite_ledger


def _submit(ledger: Ledger, *records: dict[str, object]) -> list[Outcome]:
    intake = parser()
    parsed: list[object] = []
    for item in records:
        try:
            parsed.append(intake.from_json(item))
        except Rejected as exc:
            parsed.append(exc)
    return ledger.submit("shop", parsed)  # type: ignore[arg-type]  # mixed records and refusals


def _profile(ledger: Ledger, subject_id: uuid.UUID, purpose: str) -> dict[str, object]:
    values: dict[str, object] = {}
    for event in ledger.history(subject_id, reveal=True):
        if isinstance(event, DataUpdated) and event.purpose == purpose:
            for name, value in event.fields.items():
                values[name] = value.reveal() if isinstance(value, Personal) else value
    return values


def test_no_canary_value_is_stored_in_the_clear_in_any_file(tmp_path: Path) -> None:
    ledger = sqlite_ledger(tmp_path)
    planted: list[str] = []
    batch: list[dict[str, object]] = []
    for n in range(300):
        ref_value, evidence, email, name = (
            canary(f"ref{n}"),
            canary(f"ev{n}"),
            canary(f"mail{n}"),
            canary(f"name{n}"),
        )
        planted += [ref_value, evidence, email, name]
        ref = f"shop:{ref_value}"
        batch += [
            record("consent.grant", ref, evidence=evidence),
            record("consent.grant", ref, purpose="support"),
            record("data.update", ref, fields={"email": email, "first_name": name}),
            record("data.update", ref, purpose="support", fields={"last_name": name}),
        ]
    outcomes = _submit(ledger, *batch)
    assert {o.status for o in outcomes} == {"accepted"}
    assert (tmp_path / "events.db-wal").exists() or (tmp_path / "events.db").stat().st_size > 0
    assert scan(tmp_path, planted) == {}
    # The values are really there, sealed: the ledger opens them for the right subject.
    assert _profile(ledger, outcomes[2].subject_id, "marketing")["email"] == planted[2]  # type: ignore[arg-type]


def test_shredding_one_purpose_erases_only_that_purpose_and_the_chain_still_verifies(
    tmp_path: Path,
) -> None:
    ledger = sqlite_ledger(tmp_path)
    mine, other = "shop:" + canary("me"), "shop:" + canary("other")
    my_email, my_phone, their_email = canary("mail"), canary("phone"), canary("mail")
    outcomes = _submit(
        ledger,
        record("consent.grant", mine),
        record("consent.grant", mine, purpose="support"),
        record("data.update", mine, fields={"email": my_email}),
        record("data.update", mine, purpose="support", fields={"phone": my_phone}),
        record("consent.grant", other),
        record("data.update", other, fields={"email": their_email}),
    )
    assert [o.status for o in outcomes] == ["accepted"] * 6
    me, them = outcomes[0].subject_id, outcomes[4].subject_id
    assert me is not None and them is not None

    shredded = ledger.keystore.destroy(me, [purpose_scope("marketing")])

    assert [k.scope for k in shredded] == ["purpose:marketing"]
    assert _profile(ledger, me, "marketing") == {"email": ERASED}
    assert _profile(ledger, me, "support") == {"phone": my_phone}
    assert _profile(ledger, them, "marketing") == {"email": their_email}
    history = ledger.history(me, reveal=True)
    assert isinstance(history[0], ReferenceLinked) and isinstance(history[0].ref, Personal)
    assert any(isinstance(e, ConsentGranted) for e in history)
    report = verify_chain(codec(), ledger.notifications())
    assert report.ok, report.breaks
    assert (report.events, report.subjects) == (8, 2)


def test_a_flipped_byte_in_a_stored_event_breaks_the_chain(tmp_path: Path) -> None:
    ledger = sqlite_ledger(tmp_path)
    ref = "shop:" + canary("ref")
    _submit(ledger, record("consent.grant", ref), record("data.update", ref), record("data.update", ref))
    log = list(ledger.notifications())
    position, state = log[1]
    flipped = bytearray(state)
    flipped[-3] ^= 0x01
    log[1] = (position, bytes(flipped))
    report = verify_chain(codec(), log)
    assert not report.ok
    assert report.breaks[0].position == log[2][0]


def test_events_link_to_the_hash_of_their_predecessor_across_batches(tmp_path: Path) -> None:
    ledger = sqlite_ledger(tmp_path)
    ref = "shop:" + canary("ref")
    _submit(ledger, record("consent.grant", ref))
    _submit(ledger, record("data.update", ref))
    _submit(ledger, record("consent.withdrawal", ref))
    report = verify_chain(codec(), ledger.notifications())
    assert report.ok and report.events == 4


BAD_INTAKE: list[tuple[str, dict[str, object], Reason]] = [
    ("unknown type", {"type": "data.delete", "subject_ref": "shop:x"}, Reason.UNKNOWN_EVENT_TYPE),
    (
        "missing field",
        {
            "type": "data.update",
            "subject_ref": "shop:x",
            "purpose": "marketing",
            "idempotency_key": "k",
            "occurred_at": "2026-11-01T09:00:00+00:00",
        },
        Reason.MISSING_FIELD,
    ),
    (
        "unknown purpose",
        record("data.update", "shop:{ref}", purpose="astrology"),
        Reason.UNKNOWN_PURPOSE,
    ),
    (
        "field outside the purpose",
        record("data.update", "shop:{ref}", fields={"phone": "0"}),
        Reason.FIELD_NOT_ALLOWED,
    ),
    (
        "update without consent",
        record("data.update", "shop:{ref}", purpose="support", fields={"phone": "0"}),
        Reason.NO_CONSENT,
    ),
    ("update for a stranger", record("data.update", "shop:{stranger}"), Reason.NO_CONSENT),
    (
        "oversized value",
        record("data.update", "shop:{ref}", fields={"email": "x" * 5000}),
        Reason.OVERSIZED,
    ),
    (
        "bad timestamp",
        record("data.update", "shop:{ref}", occurred_at="yesterday"),
        Reason.INVALID_VALUE,
    ),
]


@pytest.mark.parametrize(("case", "bad", "reason"), BAD_INTAKE, ids=[c[0] for c in BAD_INTAKE])
def test_bad_intake_gets_its_reason_code_and_stores_no_personal_data(
    tmp_path: Path, case: str, bad: dict[str, object], reason: Reason
) -> None:
    ledger = sqlite_ledger(tmp_path)
    ref = canary("ref")
    granted = _submit(ledger, record("consent.grant", f"shop:{ref}"))[0]
    before = ledger.recorder.max_notification_id()
    item = {
        k: (v.format(ref=ref, stranger=canary("stranger")) if isinstance(v, str) else v)
        for k, v in bad.items()
    }

    outcome = _submit(ledger, item)[0]

    assert (outcome.status, outcome.reason) == ("rejected", reason), case
    new = [ledger.mapper.decode(s) for _, s in ledger.notifications(after=before)]
    assert all(type(e).__name__ == "DataUpdateRejected" for e in new)
    assert granted.subject_id is not None
    assert ledger.keystore.is_shredded(granted.subject_id, purpose_scope("support")) is False
    with pytest.raises(Exception, match="no key"):
        ledger.keystore.get(granted.subject_id, purpose_scope("support"))


def test_malformed_avro_bytes_are_refused_with_their_own_reason() -> None:
    intake = parser()
    good = intake.to_avro(intake.from_json(record("data.update", "shop:" + canary("ref"))))
    cases = {
        b"not avro at all": Reason.MALFORMED_AVRO,
        good[:2] + b"\x00" * 8 + good[10:]: Reason.UNKNOWN_SCHEMA,
        good[:-4]: Reason.MALFORMED_AVRO,
        good + b"\x00": Reason.MALFORMED_AVRO,
    }
    for data, reason in cases.items():
        with pytest.raises(Rejected) as caught:
            intake.from_avro(data)
        assert caught.value.reason == reason


def test_nothing_is_accepted_after_erasure_and_a_repeated_erasure_is_a_no_op(
    tmp_path: Path,
) -> None:
    ledger = sqlite_ledger(tmp_path)
    ref = "shop:" + canary("ref")
    first = _submit(ledger, record("consent.grant", ref), record("erasure.request", ref))
    assert [o.status for o in first] == ["accepted", "accepted"]
    after = _submit(
        ledger,
        record("data.update", ref),
        record("consent.grant", ref),
        record("erasure.request", ref),
    )
    assert [(o.status, o.reason) for o in after] == [
        ("rejected", Reason.SUBJECT_ERASED),
        ("rejected", Reason.SUBJECT_ERASED),
        ("duplicate", None),
    ]


def test_a_replayed_idempotency_key_is_recorded_once(tmp_path: Path) -> None:
    ledger = sqlite_ledger(tmp_path)
    ref = "shop:" + canary("ref")
    grant = record("consent.grant", ref)
    update = record("data.update", ref)
    first = _submit(ledger, grant, update)
    again = _submit(ledger, grant, update, update)
    assert [o.status for o in again] == ["duplicate"] * 3
    assert [o.event_id for o in again[1:]] == [first[1].event_id] * 2
    assert ledger.recorder.max_notification_id() == 3


def test_withdrawal_is_idempotent_and_blocks_further_updates(tmp_path: Path) -> None:
    ledger = sqlite_ledger(tmp_path)
    ref = "shop:" + canary("ref")
    _submit(ledger, record("consent.grant", ref))
    outcomes = _submit(
        ledger,
        record("consent.withdrawal", ref),
        record("consent.withdrawal", ref),
        record("data.update", ref),
    )
    assert [(o.status, o.reason) for o in outcomes] == [
        ("accepted", None),
        ("duplicate", None),
        ("rejected", Reason.NO_CONSENT),
    ]


def test_a_re_consent_after_a_shredded_withdrawal_seals_with_a_new_key_version(
    tmp_path: Path,
) -> None:
    ledger = sqlite_ledger(tmp_path)
    ref = "shop:" + canary("ref")
    old_email, new_email = canary("old"), canary("new")
    subject = _submit(
        ledger,
        record("consent.grant", ref),
        record("data.update", ref, fields={"email": old_email}),
    )[0].subject_id
    assert subject is not None
    _submit(ledger, record("consent.withdrawal", ref))
    ledger.keystore.destroy(subject, [purpose_scope("marketing")])
    outcomes = _submit(
        ledger,
        record("consent.grant", ref),
        record("data.update", ref, fields={"email": new_email}),
    )
    assert [o.status for o in outcomes] == ["accepted", "accepted"]
    updates = [e for e in ledger.history(subject, reveal=True) if isinstance(e, DataUpdated)]
    assert [u.fields["email"] for u in updates] == [ERASED, Personal(new_email)]
    assert ledger.keystore.get(subject, purpose_scope("marketing")).version == 2


def test_a_re_consent_in_the_same_batch_as_the_withdrawal_keeps_earlier_data_under_the_old_key(
    tmp_path: Path,
) -> None:
    ledger = sqlite_ledger(tmp_path)
    ref = "shop:" + canary("ref")
    old_email, new_email = canary("old"), canary("new")
    outcomes = _submit(
        ledger,
        record("consent.grant", ref),
        record("data.update", ref, fields={"email": old_email}),
        record("consent.withdrawal", ref),
        record("consent.grant", ref),
        record("data.update", ref, fields={"email": new_email}),
    )
    subject = outcomes[0].subject_id
    assert subject is not None
    first, second = ledger.keystore.key_versions(subject, purpose_scope("marketing"))
    assert first.key_id is not None
    ledger.keystore.destroy_keys(subject, [first.key_id])
    updates = [e for e in ledger.history(subject, reveal=True) if isinstance(e, DataUpdated)]
    assert [u.fields["email"] for u in updates] == [ERASED, Personal(new_email)]
    assert second.version == 2


def test_a_remembered_state_another_writer_moved_on_from_is_folded_again(tmp_path: Path) -> None:
    """A sole-writer ledger remembers states; if another writer appends anyway, nothing is lost."""
    mine = sqlite_ledger(tmp_path, sole_writer=True)
    other = sqlite_ledger(tmp_path)
    ref = "shop:" + canary("ref")
    submit_one(mine, record("consent.grant", ref, purpose="support"))
    submit_one(other, record("consent.withdrawal", ref, purpose="support"))
    # `mine` still remembers the grant; its update conflicts with the withdrawal, then is refused.
    update = submit_one(mine, record("data.update", ref, purpose="support", fields={"email": canary()}))
    assert (update.status, update.reason) == ("rejected", Reason.NO_CONSENT)
    subject = update.subject_id
    assert subject is not None
    assert mine.load(subject).purposes["support"].status == "withdrawn"
    assert verify_chain(mine.codec, mine.notifications()).ok


def test_a_writer_among_several_catches_its_remembered_state_up_before_deciding(
    tmp_path: Path,
) -> None:
    """A grant decided against a stale remembered state would write nothing (already granted)."""
    mine, other = sqlite_ledger(tmp_path), sqlite_ledger(tmp_path)  # neither is the sole writer
    ref = "shop:" + canary("ref")
    subject = submit_one(mine, record("consent.grant", ref, purpose="support")).subject_id
    assert subject is not None
    submit_one(other, record("consent.withdrawal", ref, purpose="support"))
    again = submit_one(mine, record("consent.grant", ref, purpose="support"))
    assert again.status == "accepted"
    assert mine.load(subject).purposes["support"].status == "granted"
    grants = [e for e in other.history(subject) if isinstance(e, ConsentGranted)]
    assert len(grants) == 2
    assert verify_chain(mine.codec, mine.notifications()).ok


def test_a_writer_among_several_reads_only_the_events_after_the_state_it_remembers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine, other = sqlite_ledger(tmp_path), sqlite_ledger(tmp_path)
    ref = "shop:" + canary("ref")
    subject = submit_one(mine, record("consent.grant", ref, purpose="support")).subject_id
    assert subject is not None
    remembered = mine.load(subject).version  # ReferenceLinked and ConsentGranted
    submit_one(other, record("data.update", ref, purpose="support", fields={"email": canary()}))
    asked: list[dict[uuid.UUID, int]] = []

    def spy(recorder: object, versions: dict[uuid.UUID, int]) -> object:
        asked.append(dict(versions))
        return events_after(recorder, versions)  # type: ignore[arg-type]

    monkeypatch.setattr(application, "events_after", spy)
    update = submit_one(mine, record("data.update", ref, purpose="support", fields={"email": canary()}))
    assert update.status == "accepted"
    assert asked == [{subject: remembered}]
    assert mine.load(subject).version == remembered + 2


def test_the_runner_projects_remembered_events_exactly_as_decoded_ones(tmp_path: Path) -> None:
    ledger = sqlite_ledger(tmp_path, sole_writer=True)
    ref = "shop:" + canary("ref")
    submit_one(ledger, record("consent.grant", ref, purpose="support"))
    submit_one(ledger, record("data.update", ref, purpose="support", fields={"email": canary()}))
    remembered = [event for _, event in ledger.recent(0)]
    decoded = [ledger.mapper.decode(state) for _, state in ledger.notifications()]
    assert remembered == decoded


def submit_one(ledger: Ledger, item: dict[str, object]) -> Outcome:
    parsed = parser().from_json(item)
    return ledger.submit("shop", [parsed])[0]


def test_a_batch_reads_its_subjects_missing_keys_in_one_query_and_reuses_the_stored_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = sqlite_ledger(tmp_path)
    refs = [f"shop:{canary(f'ref{n}')}" for n in range(20)]
    first = _submit(
        ledger,
        *[record("consent.grant", ref, evidence=canary("ev")) for ref in refs],
        *[record("data.update", ref) for ref in refs],
    )
    subjects = [o.subject_id for o in first[:20] if o.subject_id is not None]
    stored = {s: ledger.keystore.get(s, purpose_scope("marketing")).key_id for s in subjects}
    ledger.keystore._cache.clear()  # a later batch, after the keys left the cache
    lookups = calls_of(ledger.keystore, "_latest", monkeypatch)
    together: list[int] = []
    live_rows = ledger.keystore._live_rows

    def counted_rows(wanted: Sequence[tuple[uuid.UUID, str, int]]) -> list[KeyRow]:
        together.append(len(wanted))
        return live_rows(wanted)

    monkeypatch.setattr(ledger.keystore, "_live_rows", counted_rows)
    second = _submit(
        ledger,
        *[record("data.update", ref) for ref in refs],  # keys stored by the first batch
        *[record("consent.grant", ref, purpose="support") for ref in refs],  # keys not made yet
        *[record("data.update", ref, purpose="support") for ref in refs],
    )
    assert {o.status for o in second} == {"accepted"}
    # The live keys' rows (for their key bytes) were read together; no scope that has no key yet,
    # and no live key, was asked for alone.
    assert (lookups, together) == ([], [len(subjects)])
    for subject in subjects:
        values = _profile(ledger, subject, "marketing")
        assert len(values) == 1
        assert ledger.keystore.get(subject, purpose_scope("marketing")).key_id == stored[subject]
        assert [r.version for r in ledger.keystore.key_versions(subject, purpose_scope("support"))] == [
            1
        ]


def test_a_sole_writers_later_batches_for_subjects_it_made_read_no_key_from_the_keystore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = sqlite_ledger(tmp_path, sole_writer=True)
    refs = [f"shop:{canary(f'ref{n}')}" for n in range(20)]
    first = _submit(ledger, *[record("consent.grant", ref, evidence=canary("ev")) for ref in refs])
    subjects = {o.subject_id for o in first}
    scoped: list[uuid.UUID] = []
    key_scopes = ledger.mapper.key_scopes

    def counted_scopes(event: LedgerEvent) -> set[str]:
        scoped.append(event.meta.subject_id)
        return key_scopes(event)

    with store_reads(ledger.keystore, monkeypatch) as reads:
        monkeypatch.setattr(ledger.mapper, "key_scopes", counted_scopes)
        second = _submit(
            ledger,
            *[record("data.update", ref, fields={"email": canary()}) for ref in refs],
            *[record("consent.grant", ref, purpose="support", evidence=canary("ev")) for ref in refs],
            *[record("data.update", ref, purpose="support", fields={"email": canary()}) for ref in refs],
        )
    assert {o.status for o in second} == {"accepted"}
    assert {o.subject_id for o in second} == subjects
    assert reads == []  # keys made on first use, none looked for in the store
    # Each event's scopes are worked out once, to make the batch's new keys together.
    assert Counter(scoped) == Counter(o.subject_id for o in second)
    for subject in subjects:
        assert subject is not None
        for scope in ("marketing", "support"):
            versions = ledger.keystore.key_versions(subject, purpose_scope(scope))
            assert [r.version for r in versions] == [1]
        assert _profile(ledger, subject, "support")["email"]


def test_a_batch_makes_the_keys_its_events_seal_with_together_and_a_re_consents_as_it_asks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = sqlite_ledger(tmp_path)
    wrapped = wraps_counted(ledger.keystore, monkeypatch)
    asked = calls_of(ledger.keystore, "get_or_create", monkeypatch)
    refs = ["shop:" + canary("ref") for _ in range(5)]
    emails = {ref: canary("mail") for ref in refs}
    outcomes = _submit(
        ledger,
        *[
            r
            for ref in refs
            for r in (
                record("consent.grant", ref),
                record("data.update", ref, fields={"email": emails[ref]}),
            )
        ],
    )
    assert [o.status for o in outcomes] == ["accepted"] * 10
    subjects = list(dict.fromkeys(o.subject_id for o in outcomes if o.subject_id is not None))
    with closing(sqlite3.connect(tmp_path / "keystore.db")) as db:
        made = int(db.execute("SELECT count(*) FROM data_keys").fetchone()[0])
    assert made >= 2 * len(refs) and wrapped == [made]  # every key of the batch in one go
    assert asked == []  # and sealing took them from what the keystore prepared
    for ref, subject in zip(refs, subjects, strict=True):
        updates = [e for e in ledger.history(subject, reveal=True) if isinstance(e, DataUpdated)]
        assert [u.fields["email"] for u in updates] == [Personal(emails[ref])]

    # A re-consent's key is made where it stands: a purpose withdrawn before it held any data gets
    # its first version there, not one made up front and never used.
    ref = "shop:" + canary("ref")
    granted = _submit(ledger, record("consent.grant", ref), record("consent.withdrawal", ref))
    returning = granted[0].subject_id
    assert returning is not None
    marketing = purpose_scope("marketing")
    assert ledger.keystore.key_versions(returning, marketing) == []
    wrapped.clear()
    outcomes = _submit(
        ledger,
        record("consent.grant", ref),
        record("data.update", ref, fields={"email": canary("mail")}),
    )
    assert [o.status for o in outcomes] == ["accepted", "accepted"]
    assert [r.version for r in ledger.keystore.key_versions(returning, marketing)] == [1]
    assert wrapped == [1]  # made as the re-consent's update asked for it


def _scopes_sealed(event: LedgerEvent, pii: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for name in pii:
        value = getattr(event, name)
        for item in value.values() if isinstance(value, Mapping) else (value,):
            if isinstance(item, SealedValue):
                found.add(item.scope)
    return found


def test_the_scopes_an_event_needs_keys_of_are_those_its_sealed_values_are_sealed_in(
    tmp_path: Path,
) -> None:
    ledger = sqlite_ledger(tmp_path)
    ref = "shop:" + canary("ref")
    fields = {"email": canary(), "first_name": canary(), "preferred_language": "en"}
    outcomes = _submit(
        ledger,
        record("consent.grant", ref, evidence=canary("ev")),
        record("data.update", ref, fields=fields),
        record("consent.grant", ref, purpose="support"),
        record("data.update", ref, purpose="support", fields={"email": canary()}),
    )
    assert {o.status for o in outcomes} == {"accepted"}
    subject = outcomes[0].subject_id
    assert subject is not None
    mapper = ledger.mapper
    sealed_events = ledger.history(subject)
    revealed_events = ledger.history(subject, reveal=True)
    named = set()
    for sealed, revealed in zip(sealed_events, revealed_events, strict=True):
        pii = list(codec().contract(sealed.avro_name).pii)
        assert mapper.key_scopes(revealed) == _scopes_sealed(sealed, pii)
        assert mapper.key_scopes(sealed) == set()  # nothing personal left to seal
        named |= mapper.key_scopes(revealed)
    assert {purpose_scope("marketing"), purpose_scope("support"), "consent"} <= named
    # A map with one value sealed already and one personal: the scope is named for the one.
    update = next(e for e in revealed_events if isinstance(e, DataUpdated) and len(e.fields) == 3)
    stored = next(e for e in sealed_events if isinstance(e, DataUpdated) and len(e.fields) == 3)
    mixed = evolve(
        update, fields={"email": stored.fields["email"], "first_name": update.fields["first_name"]}
    )
    assert mapper.key_scopes(mixed) == {purpose_scope("marketing")}
    only_sealed = evolve(update, fields={"email": stored.fields["email"]})
    assert mapper.key_scopes(only_sealed) == set()
