"""Opening sealed values: one key lookup and one cipher per key, whatever the field count.

The real embedded platform (SQLite files): a subject's support and marketing values sit under two
keys. The reader opens each key's values together and answers every field in the order asked,
None where the key is gone or belongs to another subject; the ledger's revealed history opens
each event's values the same way.
"""

from __future__ import annotations

import uuid

import pytest

from consentry.core.events import DataUpdated
from consentry.core.sealing import Personal, SealedValue
from consentry.platform import Platform
from consentry.query.reader import Reader
from tests.support import calls_of, canary, record, submit

MARKETING = ("first_name", "preferred_language")


def _profile(
    platform: Platform, ref: str | None = None
) -> tuple[uuid.UUID, dict[str, str], dict[str, SealedValue]]:
    """A subject (`ref`, or a new one) with three support fields and two marketing ones (no name
    in both): its plaintexts and sealed values, in one dict, so one call asks for values under
    both keys."""
    ref = ref or "shop:" + canary("ref")
    support = {"email": canary("mail") + "@example.com", "last_name": canary(), "phone": canary()}
    marketing = {"first_name": canary("name"), "preferred_language": "en"}
    outcomes = submit(
        platform.ledger,
        record("consent.grant", ref, purpose="support"),
        record("data.update", ref, purpose="support", fields=support),
        record("consent.grant", ref, purpose="marketing"),
        record("data.update", ref, purpose="marketing", fields=marketing),
    )
    assert [o.status for o in outcomes] == ["accepted"] * 4
    subject_id = outcomes[0].subject_id
    assert subject_id is not None
    platform.after_write()
    held = platform.views.values(subject_id)
    # Interleaved, so the order asked is not the order of the keys.
    names = ["phone", "first_name", "email", "preferred_language", "last_name"]
    sealed = {name: (held["support"] | held["marketing"])[name] for name in names}
    assert len({value.key_id for value in sealed.values()}) == 2
    return subject_id, support | marketing, sealed


def test_each_keys_values_open_together_in_the_order_asked(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    subject_id, plain, sealed = _profile(platform)
    reader = Reader(platform.ledger, platform.views)
    looked_up = calls_of(platform.keystore, "get_by_id", monkeypatch)
    opened = reader.open_fields(subject_id, sealed)
    assert list(opened) == list(sealed)
    assert opened == {name: plain[name] for name in sealed}
    assert sorted(key_id for (key_id,) in looked_up) == sorted({v.key_id for v in sealed.values()})
    assert len(looked_up) == 2
    cached = reader.open_cached(subject_id, sealed)
    assert cached == opened and list(cached) == list(sealed)


def test_values_of_a_shredded_key_read_none_and_the_others_still_open(platform: Platform) -> None:
    ref = "shop:" + canary("ref")
    subject_id, plain, sealed = _profile(platform, ref)
    reader = Reader(platform.ledger, platform.views)
    [outcome] = submit(platform.ledger, record("consent.withdrawal", ref, purpose="marketing"))
    assert outcome.status == "accepted"
    platform.after_write()  # the shredder destroys the marketing key
    opened = reader.open_fields(subject_id, sealed)
    assert list(opened) == list(sealed)
    assert opened == {name: None if name in MARKETING else plain[name] for name in sealed}
    assert reader.open_cached(subject_id, sealed) is None  # a key it needs is no longer held


def test_values_under_another_subjects_keys_read_none(platform: Platform) -> None:
    subject_id, _, sealed = _profile(platform)
    other, _, _ = _profile(platform)
    reader = Reader(platform.ledger, platform.views)
    assert reader.open_fields(other, sealed) == dict.fromkeys(sealed)
    assert reader.open_cached(other, sealed) is None
    assert None not in reader.open_fields(subject_id, sealed).values()


def test_a_revealed_history_looks_up_each_events_keys_once(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    subject_id, plain, _ = _profile(platform)
    ledger = platform.ledger
    # One lookup per event, personal field and key its values are sealed under, not per value.
    lookups = 0
    for event in ledger.history(subject_id):
        for name in ledger.codec.contract(event.avro_name).pii:
            value = getattr(event, name)
            if isinstance(value, dict):
                lookups += len({v.key_id for v in value.values()})
            elif value is not None:
                lookups += 1
    looked_up = calls_of(platform.keystore, "get_by_id", monkeypatch)
    revealed = {
        name: value.reveal()
        for event in ledger.history(subject_id, reveal=True)
        if isinstance(event, DataUpdated)
        for name, value in event.fields.items()
        if isinstance(value, Personal)
    }
    assert revealed == plain
    assert (
        len(looked_up)
        == lookups
        < sum(len(e.fields) for e in ledger.history(subject_id) if isinstance(e, DataUpdated))
    )
