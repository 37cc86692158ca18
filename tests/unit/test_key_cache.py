"""The keystore's key cache: found by scope and id, forgotten by subject without a full scan."""

from __future__ import annotations

import os
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

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


def test_old_versions_count_toward_the_size_and_go_with_their_subject() -> None:
    cache, subject = KeyCache(2), uuid.uuid4()
    versions = [key(subject, version=n) for n in range(1, 4)]
    for k in versions:
        cache.remember(k)
    # The subject being remembered stays whole, even with more keys than the cache's size.
    assert len(cache) == 3
    assert cache.newest(subject, versions[0].scope) is versions[-1]
    assert all(cache.by_id(k.key_id) is k for k in versions)

    cache.remember(other := key(uuid.uuid4()))

    assert len(cache) == 1 and cache.by_id(other.key_id) is other
    assert all(cache.by_id(k.key_id) is None for k in versions)
    assert cache.newest(subject, versions[0].scope) is None


def test_the_least_recently_used_subject_goes_with_all_its_keys() -> None:
    cache, first, second = KeyCache(4), uuid.uuid4(), uuid.uuid4()
    mine = [key(first, "purpose:a"), key(first, "purpose:b")]
    theirs = [key(second, "purpose:a"), key(second, "purpose:b")]
    for k in [*mine, *theirs]:
        cache.remember(k)
    assert cache.newest(first, "purpose:a") is mine[0]  # a use: `second` is now the older one

    cache.remember(third := key(uuid.uuid4()))

    assert all(cache.by_id(k.key_id) is k for k in [*mine, third])
    assert all(cache.by_id(k.key_id) is None for k in theirs)
    assert cache.newest(second, "purpose:b") is None and not cache.holds(second, "purpose:a")
    assert len(cache) == 3


def test_a_key_remembered_again_keeps_one_slot_and_goes_when_forgotten() -> None:
    cache, subject = KeyCache(10), uuid.uuid4()
    v1, v2, v3 = (key(subject, version=n) for n in (1, 2, 3))
    for k in (v2, v1, v3):
        cache.remember(k)
    again = DataKey.build(v1.key_id, subject, v1.scope, 1, v1.secret)  # unwrapped anew
    cache.remember(again)
    assert len(cache) == 3 and cache.by_id(v1.key_id) is again
    assert cache.newest(subject, v1.scope) is v3

    cache.forget(subject, lambda k: k.key_id == v1.key_id)

    assert cache.by_id(v1.key_id) is None and len(cache) == 2
    cache.forget(subject, lambda k: k.key_id == v3.key_id)
    # The newest is gone: the scope is not answered from an older version.
    assert cache.newest(subject, v1.scope) is None and cache.by_id(v2.key_id) is v2


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


SUBJECTS = [uuid.UUID(int=n + 1) for n in range(4)]
SCOPES = ["purpose:a", "purpose:b"]
_ops = st.lists(
    st.tuples(
        st.sampled_from(["remember", "forget_scope", "forget_key", "use"]),
        st.integers(0, len(SUBJECTS) - 1),
        st.integers(0, len(SCOPES) - 1),
        st.integers(1, 3),
    ),
    max_size=60,
)


@given(size=st.integers(0, 6), ops=_ops)
@settings(max_examples=300, deadline=None)
def test_a_forgotten_key_is_never_answered_and_the_newest_answer_is_a_live_key(
    size: int, ops: list[tuple[str, int, int, int]]
) -> None:
    cache = KeyCache(size)
    live: dict[str, DataKey] = {}  # remembered and not forgotten since (the cache may drop them)
    ids: dict[tuple[int, int, int], str] = {}  # one id per (subject, scope, version)
    for op, s, c, version in ops:
        subject, scope = SUBJECTS[s], SCOPES[c]
        key_id = ids.setdefault((s, c, version), uuid.uuid4().hex)
        if op == "remember":
            made = DataKey.build(key_id, uuid.UUID(int=subject.int), scope, version, os.urandom(32))
            cache.remember(made)
            live[key_id] = made
        elif op == "forget_scope":
            cache.forget(subject, lambda k, scope=scope: k.scope == scope)  # type: ignore[misc]
            live = {i: k for i, k in live.items() if not (k.subject_id == subject and k.scope == scope)}
        elif op == "forget_key":
            cache.forget(subject, lambda k, key_id=key_id: k.key_id == key_id)  # type: ignore[misc]
            live.pop(key_id, None)
        else:
            cache.newest(subject, scope)
        answered = {i: found for i in ids.values() if (found := cache.by_id(i)) is not None}
        assert all(live.get(i) is k for i, k in answered.items())
        assert len(cache) == len(answered)
        for scope in SCOPES:  # the subject just worked on: asking counts as a use of it
            newest = cache.newest(subject, scope)
            assert (newest is not None) == cache.holds(subject, scope)
            cached = [
                k.version for k in answered.values() if (k.subject_id, k.scope) == (subject, scope)
            ]
            assert newest is None or (
                live.get(newest.key_id) is newest and newest.version == max(cached)
            )


def test_a_subject_is_known_whole_only_while_it_is_cached() -> None:
    cache, subject = KeyCache(2), uuid.uuid4()
    cache.mark_complete(subject)  # nothing of it cached: no mark
    assert not cache.complete(subject)
    cache.remember(key(subject))
    cache.mark_complete(subject)
    assert cache.complete(subject)
    cache.remember(key(uuid.uuid4()))
    cache.remember(key(uuid.uuid4()))  # the cache is full: the least recent subject goes
    assert not cache.complete(subject)
    assert cache.newest(subject, "purpose:marketing") is None


def test_forgetting_a_subjects_keys_or_a_failed_batchs_keys_ends_its_mark() -> None:
    cache, subject = KeyCache(10), uuid.uuid4()
    made = [key(subject), key(subject, "purpose:support")]
    for k in made:
        cache.remember(k)
    cache.mark_complete(subject)
    cache.forget_keys(made[1:])
    assert not cache.complete(subject)
    cache.mark_complete(subject)
    cache.forget(subject, lambda k: True)
    cache.remember(made[0])
    assert not cache.complete(subject)
    cache.mark_complete(subject)
    cache.incomplete(subject)
    assert not cache.complete(subject)
    cache.mark_complete(subject)
    cache.clear()
    assert not cache.complete(subject)


def test_a_key_not_known_to_be_the_newest_answers_by_id_but_never_for_its_scope() -> None:
    cache, subject = KeyCache(10), uuid.uuid4()
    old, new = key(subject, version=1), key(subject, version=2)
    cache.remember(old, newest=False)
    assert cache.by_id(old.key_id) is old
    assert cache.newest(subject, old.scope) is None
    assert not cache.holds(subject, old.scope)
    cache.remember(new)
    assert cache.newest(subject, new.scope) is new
    assert cache.version(subject, new.scope) == 2
    cache.remember(old)  # an older version stays off the scope even if said to be the newest
    assert cache.newest(subject, new.scope) is new
    cache.remember(new, newest=False)  # the very version the scope holds stays there
    assert cache.newest(subject, new.scope) is new
    assert len(cache) == 2
