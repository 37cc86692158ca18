"""The keystore's key cache: found by scope and id, forgotten by subject without a full scan."""

from __future__ import annotations

import os
import uuid

from consentry.core.key_cache import KeyCache
from consentry.core.sealing import DataKey


def key(subject: uuid.UUID, scope: str = "purpose:marketing", version: int = 1) -> DataKey:
    return DataKey.build(uuid.uuid4().hex, subject, scope, version, os.urandom(32))


def test_a_cached_key_is_found_by_scope_and_by_id() -> None:
    cache, subject = KeyCache(10), uuid.uuid4()
    first = key(subject)
    cache.remember(first)
    assert cache.newest(subject, first.scope) is first
    assert cache.by_id(first.key_id) is first


def test_a_newer_version_takes_the_scope_and_the_older_one_stays_findable_by_id() -> None:
    cache, subject = KeyCache(10), uuid.uuid4()
    old, new = key(subject, version=1), key(subject, version=2)
    cache.remember(new)
    cache.remember(old)
    assert cache.newest(subject, new.scope) is new
    assert cache.by_id(old.key_id) is old


def test_forgetting_a_subject_drops_its_picked_keys_only() -> None:
    cache, subject, other = KeyCache(10), uuid.uuid4(), uuid.uuid4()
    marketing, support = key(subject), key(subject, "purpose:support")
    kept = key(other)
    for k in (marketing, support, kept):
        cache.remember(k)

    cache.forget(subject, lambda k: k.scope == marketing.scope)

    assert cache.newest(subject, marketing.scope) is None
    assert cache.by_id(marketing.key_id) is None
    assert cache.newest(subject, support.scope) is support
    assert cache.by_id(kept.key_id) is kept


def test_forgetting_looks_at_the_subjects_own_keys_and_no_others() -> None:
    cache, subject = KeyCache(1_000), uuid.uuid4()
    for _ in range(500):
        cache.remember(key(uuid.uuid4()))
    mine = [key(subject, f"purpose:p{n}") for n in range(3)]
    for k in mine:
        cache.remember(k)
    looked_at: list[DataKey] = []

    def doomed(k: DataKey) -> bool:
        looked_at.append(k)
        return True

    cache.forget(subject, doomed)

    assert sorted(k.key_id for k in looked_at) == sorted(k.key_id for k in mine)
    assert len(cache) == 500


def test_an_evicted_key_leaves_no_trace_a_later_forget_could_trip_on() -> None:
    cache, subject = KeyCache(2), uuid.uuid4()
    evicted = key(subject, "purpose:a")
    cache.remember(evicted)
    cache.remember(key(uuid.uuid4()))
    cache.remember(key(uuid.uuid4()))

    assert cache.by_id(evicted.key_id) is None
    cache.forget(subject, lambda k: True)
    assert len(cache) == 2


def test_old_versions_by_id_are_pruned_to_the_newest_keys() -> None:
    cache, subject = KeyCache(1), uuid.uuid4()
    versions = [key(subject, version=n) for n in range(1, 4)]
    for k in versions:
        cache.remember(k)

    assert len(cache) <= 2
    assert cache.by_id(versions[-1].key_id) is versions[-1]
    cache.forget(subject, lambda k: True)
    assert len(cache) == 0


def test_forget_keys_drops_exactly_the_keys_a_failed_batch_created() -> None:
    cache = KeyCache(10)
    created = [key(uuid.uuid4()), key(uuid.uuid4())]
    kept = key(created[0].subject_id, "purpose:support")
    for k in [*created, kept]:
        cache.remember(k)

    cache.forget_keys(iter(created))

    assert all(cache.by_id(k.key_id) is None for k in created)
    assert cache.newest(kept.subject_id, kept.scope) is kept


def test_a_cache_of_size_zero_keeps_nothing() -> None:
    cache = KeyCache(0)
    cache.remember(key(uuid.uuid4()))
    assert len(cache) == 0
