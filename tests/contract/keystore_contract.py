"""The contract every `Keystore` adapter must honour, written once and run against each adapter.

Subclasses implement `make_keystore`; everything else is shared. The rules under test are the
crypto-shredding promises: a destroyed scope is never silently recreated, an erased subject is
closed for good, and the blind index of references is deterministic and normalised.
"""

from __future__ import annotations

import hashlib
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from consentry.core.errors import KeyExists, KeyNotFound, KeyProviderError, ScopeShredded
from consentry.core.keys import LocalKeyFileProvider, WrappedKey
from consentry.core.keystore import KeyRow, Keystore, Rewrapped, ShreddedKey, Tombstone
from consentry.core.sealing import CONSENT_SCOPE, IDENTITY_SCOPE, DataKey, purpose_scope
from tests.support import files_under

MARKETING = purpose_scope("marketing")
SUPPORT = purpose_scope("support")


def forget_cache(keystore: Keystore) -> Keystore:
    """Empties the base class's key cache, so the next read goes to the adapter's storage."""
    keystore._cache.clear()
    return keystore


def files_holding(root: Path, needle: bytes) -> list[str]:
    """Names of the files under root whose bytes contain the needle."""
    return sorted(p.name for p in files_under(root) if needle in p.read_bytes())


def same_key(a: DataKey, b: DataKey) -> bool:
    return (a.key_id, a.subject_id, a.scope, a.version, a.secret) == (
        b.key_id,
        b.subject_id,
        b.scope,
        b.version,
        b.secret,
    )


def wraps_counted(keystore: Keystore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many keys each call of the keystore's provider wraps, from now on (one call per
    creation of one or more keys)."""
    wrapped: list[int] = []
    wrap_all = keystore.provider.wrap_all

    def counting(keys: Sequence[tuple[bytes, uuid.UUID, str, str]]) -> list[WrappedKey]:
        wrapped.append(len(keys))
        return wrap_all(keys)

    monkeypatch.setattr(keystore.provider, "wrap_all", counting)
    return wrapped


class KeystoreContract(ABC):
    """Shared tests; a subclass per adapter provides `make_keystore`."""

    @abstractmethod
    def make_keystore(self, tmp_path: Path) -> Keystore:
        """A new, empty keystore of the adapter under test (files, if any, under tmp_path)."""

    @pytest.fixture
    def keystore(self, tmp_path: Path) -> Iterator[Keystore]:
        store = self.make_keystore(tmp_path)
        yield store
        store.close()

    # -- create / get / get_or_create --------------------------------------------------------

    def test_a_created_key_comes_back_from_get_with_the_same_id_and_secret(
        self, keystore: Keystore
    ) -> None:
        subject = uuid.uuid4()
        created = keystore.create(subject, MARKETING)
        assert (created.subject_id, created.scope, created.version) == (subject, MARKETING, 1)
        assert len(created.secret) == 32
        assert same_key(keystore.get(subject, MARKETING), created)
        assert same_key(forget_cache(keystore).get(subject, MARKETING), created)
        assert same_key(forget_cache(keystore).get_by_id(created.key_id), created)

    def test_a_batch_makes_its_keys_and_references_durable_together(self, keystore: Keystore) -> None:
        subject = uuid.uuid4()
        ref = keystore.blind_index("shop", "batch-ok")
        with keystore.batch():
            created = [keystore.create(subject, scope) for scope in (MARKETING, CONSENT_SCOPE)]
            assert keystore.link_reference(ref, subject) == subject
            with keystore.batch():  # nested batches join the outer one
                identity = keystore.get_or_create(subject, IDENTITY_SCOPE)
        fresh = forget_cache(keystore)
        for key in [*created, identity]:
            assert same_key(fresh.get_by_id(key.key_id), key)
        assert fresh.find_reference(ref) == subject

    def test_a_key_created_in_a_batch_is_found_inside_it_without_the_cache(
        self, keystore: Keystore
    ) -> None:
        subject = uuid.uuid4()
        with keystore.batch():
            created = keystore.create(subject, MARKETING)
            # Each lookup below must reach the adapter's own storage.
            assert same_key(forget_cache(keystore).get(subject, MARKETING), created)
            assert forget_cache(keystore).create(subject, MARKETING, new_version=True).version == 2
        assert [row.version for row in keystore.key_versions(subject, MARKETING)] == [1, 2]

    def test_a_batch_that_names_its_wanted_keys_answers_as_key_by_key_lookups_would(
        self, keystore: Keystore
    ) -> None:
        live, erased, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        kept = keystore.create(live, SUPPORT)
        keystore.create(live, MARKETING)
        keystore.destroy(live, [MARKETING])  # a tombstone of version 1
        renewed = keystore.create(live, CONSENT_SCOPE)
        keystore.destroy_keys(live, [renewed.key_id])
        renewed = keystore.create(live, CONSENT_SCOPE, new_version=True)  # tombstone v1, live v2
        keystore.create(erased, SUPPORT)
        keystore.erase_subject(erased)
        wanted = [
            (s, scope) for s in (live, erased, other) for scope in (SUPPORT, MARKETING, CONSENT_SCOPE)
        ]
        with forget_cache(keystore).batch(wanted):
            assert same_key(keystore.get_or_create(live, SUPPORT), kept)
            assert same_key(keystore.get_or_create(live, CONSENT_SCOPE), renewed)
            with pytest.raises(ScopeShredded):
                keystore.get_or_create(live, MARKETING)
            for scope in (SUPPORT, MARKETING, IDENTITY_SCOPE):
                with pytest.raises(ScopeShredded):
                    keystore.get_or_create(erased, scope)
            created = keystore.get_or_create(other, SUPPORT)
            identity = keystore.get_or_create(live, IDENTITY_SCOPE)  # not named: looked up alone
            # Created in the batch, then forgotten by the cache: found, never created twice.
            assert same_key(forget_cache(keystore).get_or_create(other, SUPPORT), created)
            assert same_key(keystore.get_or_create(live, IDENTITY_SCOPE), identity)
            # A scope destroyed, or a subject erased, inside the batch is closed at once.
            keystore.destroy(other, [SUPPORT])
            with pytest.raises(ScopeShredded):
                keystore.get_or_create(other, SUPPORT)
            keystore.erase_subject(other)
            with pytest.raises(ScopeShredded):
                keystore.get_or_create(other, CONSENT_SCOPE)
        assert [r.version for r in keystore.key_versions(other, SUPPORT)] == [1]
        assert same_key(forget_cache(keystore).get(live, IDENTITY_SCOPE), identity)

    def test_a_batch_hands_out_the_newest_live_key_it_named_even_after_changes_inside_it(
        self, keystore: Keystore
    ) -> None:
        first, second, third = (uuid.uuid4() for _ in range(3))
        keys = {
            (s, c): keystore.create(s, c)
            for s in (first, second, third)
            for c in (SUPPORT, CONSENT_SCOPE)
        }
        keystore.destroy_keys(first, [keys[(first, SUPPORT)].key_id])
        renewed = keystore.create(first, SUPPORT, new_version=True)
        with forget_cache(keystore).batch(list(keys)):
            # The first lookup of a named key reads the batch's named live keys.
            assert same_key(keystore.get_or_create(second, SUPPORT), keys[(second, SUPPORT)])
            assert same_key(keystore.get_or_create(first, SUPPORT), renewed)
            keystore.destroy(third, [CONSENT_SCOPE])
            with pytest.raises(ScopeShredded):
                forget_cache(keystore).get_or_create(third, CONSENT_SCOPE)
            newer = keystore.create(second, CONSENT_SCOPE, new_version=True)
            assert same_key(forget_cache(keystore).get_or_create(second, CONSENT_SCOPE), newer)
            assert same_key(keystore.get_or_create(third, SUPPORT), keys[(third, SUPPORT)])
            assert same_key(keystore.get_or_create(first, CONSENT_SCOPE), keys[(first, CONSENT_SCOPE)])
        assert [r.version for r in keystore.key_versions(second, CONSENT_SCOPE)] == [1, 2]

    def test_a_failed_batch_keeps_no_key_and_no_reference(self, keystore: Keystore) -> None:
        subject = uuid.uuid4()
        ref = keystore.blind_index("shop", "batch-failed")
        created: list[DataKey] = []

        def failing_batch() -> None:
            with keystore.batch():
                created.append(keystore.create(subject, MARKETING))
                keystore.link_reference(ref, subject)
                raise RuntimeError("the batch's events could not be decided")

        with pytest.raises(RuntimeError):
            failing_batch()
        # Not even the cache remembers it: nothing may be sealed under a key that was never stored.
        with pytest.raises(KeyNotFound):
            keystore.get_by_id(created[0].key_id)
        with pytest.raises(KeyNotFound):
            keystore.get(subject, MARKETING)
        assert keystore.find_reference(ref) is None
        assert keystore.create(subject, MARKETING).version == 1

    def test_a_fresh_subject_gets_its_keys_once_within_the_batch_and_durably_after_it(
        self, keystore: Keystore
    ) -> None:
        subject = uuid.uuid4()
        with keystore.batch():
            keystore.fresh_subject(subject)
            first = keystore.get_or_create(subject, MARKETING)
            assert same_key(keystore.get_or_create(subject, MARKETING), first)
            consent = keystore.get_or_create(subject, CONSENT_SCOPE)
        # The mark ended with the batch; the keys are stored like any other.
        assert same_key(keystore.get_or_create(subject, MARKETING), first)
        fresh = forget_cache(keystore)
        assert same_key(fresh.get(subject, MARKETING), first)
        assert same_key(fresh.get_by_id(consent.key_id), consent)
        keystore.fresh_subject(subject)  # outside a batch the note is ignored
        assert same_key(keystore.get_or_create(subject, CONSENT_SCOPE), consent)

    def test_a_failed_batch_of_a_fresh_subject_keeps_none_of_its_keys(self, keystore: Keystore) -> None:
        subject = uuid.uuid4()
        created: list[DataKey] = []

        def failing_batch() -> None:
            with keystore.batch():
                keystore.fresh_subject(subject)
                created.append(keystore.get_or_create(subject, MARKETING))
                raise RuntimeError("the batch's events could not be appended")

        with pytest.raises(RuntimeError):
            failing_batch()
        with pytest.raises(KeyNotFound):
            forget_cache(keystore).get_by_id(created[0].key_id)
        assert keystore.get_or_create(subject, MARKETING).key_id != created[0].key_id

    def test_prepared_keys_are_the_ones_get_or_create_hands_out_and_are_stored_with_the_batch(
        self, keystore: Keystore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        fresh, known = uuid.uuid4(), uuid.uuid4()
        consent = keystore.get_or_create(known, CONSENT_SCOPE)
        forget_cache(keystore)
        wrapped = wraps_counted(keystore, monkeypatch)
        wanted = [(known, CONSENT_SCOPE), (known, MARKETING)]
        with keystore.batch(wanted):
            keystore.fresh_subject(fresh)
            named = [(fresh, MARKETING), (fresh, CONSENT_SCOPE), (fresh, MARKETING), *wanted]
            prepared = keystore.prepare(named)  # a pair named twice is made once
            # The keys it makes, it makes together: the fresh subject's and the known subject's
            # missing one (an adapter that locks subjects holds the lock of an announced one).
            made = list(wrapped)
            assert made == [3]
            asked = {
                (s, scope): keystore.get_or_create(s, scope)
                for s, scope in [(fresh, MARKETING), (fresh, CONSENT_SCOPE), *wanted]
            }
        assert wrapped == made  # each key made once, by prepare
        # What it answers is what asking answers.
        assert prepared.keys() == asked.keys()
        for pair, key in prepared.items():
            assert same_key(key, asked[pair])
        assert same_key(asked[(known, CONSENT_SCOPE)], consent)  # an existing key is not made again
        keys = list(asked.values())
        assert len({k.key_id for k in keys}) == len({k.secret for k in keys}) == len(keys)
        stored = forget_cache(keystore)
        for (s, scope), key in asked.items():
            assert key.version == 1
            assert same_key(stored.get(s, scope), key)
            assert same_key(stored.get_by_id(key.key_id), key)
            assert [row.key_id for row in stored.key_versions(s, scope)] == [key.key_id]

    def test_prepare_makes_nothing_for_a_closed_scope_or_subject_nor_outside_a_batch(
        self, keystore: Keystore
    ) -> None:
        subject, erased, loose = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        keystore.get_or_create(subject, MARKETING)
        keystore.destroy(subject, [MARKETING])
        keystore.get_or_create(erased, CONSENT_SCOPE)
        keystore.erase_subject(erased)
        with keystore.batch([(subject, MARKETING), (subject, SUPPORT)]):
            prepared = keystore.prepare([(subject, MARKETING), (subject, SUPPORT), (erased, MARKETING)])
            assert (subject, MARKETING) not in prepared and (erased, MARKETING) not in prepared
            with pytest.raises(ScopeShredded):
                keystore.get_or_create(subject, MARKETING)
            with pytest.raises(ScopeShredded):
                keystore.get_or_create(erased, MARKETING)
            support = keystore.get_or_create(subject, SUPPORT)
        stored = forget_cache(keystore)
        assert [type(r) for r in stored.key_versions(subject, MARKETING)] == [Tombstone]
        assert [r.key_id for r in stored.key_versions(subject, SUPPORT)] == [support.key_id]
        assert stored.key_versions(erased, MARKETING) == []
        assert keystore.prepare([(loose, MARKETING)]) == {}  # no batch: nothing is made until asked
        with pytest.raises(KeyNotFound):
            keystore.get(loose, MARKETING)

    def test_a_failed_batch_keeps_none_of_its_prepared_keys(
        self, keystore: Keystore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        subject = uuid.uuid4()
        wrapped = wraps_counted(keystore, monkeypatch)
        prepared: list[DataKey] = []

        def failing_batch() -> None:
            with keystore.batch():
                keystore.fresh_subject(subject)
                keystore.prepare([(subject, MARKETING), (subject, CONSENT_SCOPE)])
                prepared.extend(keystore.get_or_create(subject, s) for s in (MARKETING, CONSENT_SCOPE))
                raise RuntimeError("the batch's events could not be appended")

        with pytest.raises(RuntimeError):
            failing_batch()
        assert wrapped == [2]
        for key in prepared:
            assert keystore.cached(key.key_id) is None
            with pytest.raises(KeyNotFound):
                forget_cache(keystore).get_by_id(key.key_id)
        assert keystore.key_versions(subject, MARKETING) == []

    def test_get_or_create_creates_once_and_then_returns_the_same_key(self, keystore: Keystore) -> None:
        subject = uuid.uuid4()
        first = keystore.get_or_create(subject, CONSENT_SCOPE)
        assert same_key(keystore.get_or_create(subject, CONSENT_SCOPE), first)
        assert same_key(forget_cache(keystore).get_or_create(subject, CONSENT_SCOPE), first)
        assert same_key(forget_cache(keystore).get(subject, CONSENT_SCOPE), first)
        assert first.version == 1

    def test_keys_of_different_scopes_and_subjects_are_different(self, keystore: Keystore) -> None:
        alice, bob = uuid.uuid4(), uuid.uuid4()
        keys = [
            keystore.create(alice, MARKETING),
            keystore.create(alice, SUPPORT),
            keystore.create(bob, MARKETING),
        ]
        assert len({k.key_id for k in keys}) == 3
        assert len({k.secret for k in keys}) == 3

    def test_a_second_create_of_an_active_scope_raises_key_exists(self, keystore: Keystore) -> None:
        subject = uuid.uuid4()
        created = keystore.create(subject, MARKETING)
        with pytest.raises(KeyExists):
            keystore.create(subject, MARKETING)
        with pytest.raises(KeyExists):
            forget_cache(keystore).create(subject, MARKETING)
        assert same_key(keystore.get(subject, MARKETING), created)

    def test_an_unknown_scope_raises_key_not_found(self, keystore: Keystore) -> None:
        subject = uuid.uuid4()
        keystore.create(subject, MARKETING)
        with pytest.raises(KeyNotFound):
            keystore.get(subject, SUPPORT)
        with pytest.raises(KeyNotFound):
            keystore.get(uuid.uuid4(), MARKETING)
        assert not keystore.is_shredded(subject, SUPPORT)

    def test_an_unknown_key_id_raises_key_not_found(self, keystore: Keystore) -> None:
        keystore.create(uuid.uuid4(), MARKETING)
        with pytest.raises(KeyNotFound):
            keystore.get_by_id(uuid.uuid4().hex)

    def test_an_older_version_stays_readable_by_id_after_a_new_version(self, keystore: Keystore) -> None:
        subject = uuid.uuid4()
        first = keystore.create(subject, MARKETING)
        second = keystore.create(subject, MARKETING, new_version=True)
        assert second.version == 2
        assert second.key_id != first.key_id
        assert second.secret != first.secret
        assert same_key(keystore.get(subject, MARKETING), second)
        assert same_key(keystore.get_by_id(first.key_id), first)
        forget_cache(keystore)
        assert same_key(keystore.get(subject, MARKETING), second)
        assert same_key(keystore.get_by_id(first.key_id), first)
        assert same_key(keystore.get_by_id(second.key_id), second)

    def test_an_older_version_read_by_id_is_never_handed_out_for_new_values(
        self, keystore: Keystore
    ) -> None:
        """A re-consent's withdrawn version lives until the shredder destroys it: new data read
        after its old data (an empty cache, say) must still go under the new version."""
        subject = uuid.uuid4()
        first = keystore.create(subject, MARKETING)
        second = keystore.create(subject, MARKETING, new_version=True)
        forget_cache(keystore)
        assert same_key(keystore.get_by_id(first.key_id), first)
        assert same_key(keystore.get_or_create(subject, MARKETING), second)
        assert same_key(keystore.get(subject, MARKETING), second)
        forget_cache(keystore).get_by_id(first.key_id)
        with keystore.batch([(subject, MARKETING)]):
            assert same_key(keystore.get_or_create(subject, MARKETING), second)

    # -- destroy -----------------------------------------------------------------------------

    def test_destroy_returns_every_shredded_key_of_the_scope(self, keystore: Keystore) -> None:
        subject = uuid.uuid4()
        first = keystore.create(subject, MARKETING)
        second = keystore.create(subject, MARKETING, new_version=True)
        keystore.create(subject, SUPPORT)
        shredded = keystore.destroy(subject, [MARKETING])
        assert sorted(shredded, key=lambda s: s.version) == [
            ShreddedKey(first.key_id, MARKETING, 1),
            ShreddedKey(second.key_id, MARKETING, 2),
        ]
        assert keystore.destroy(subject, [MARKETING]) == []

    def test_destroying_one_scope_leaves_other_scopes_and_subjects_readable(
        self, keystore: Keystore
    ) -> None:
        alice, bob = uuid.uuid4(), uuid.uuid4()
        doomed = keystore.create(alice, MARKETING)
        alice_support = keystore.create(alice, SUPPORT)
        bob_marketing = keystore.create(bob, MARKETING)
        assert keystore.destroy(alice, [MARKETING]) == [ShreddedKey(doomed.key_id, MARKETING, 1)]
        for store in (keystore, forget_cache(keystore)):
            assert same_key(store.get(alice, SUPPORT), alice_support)
            assert same_key(store.get(bob, MARKETING), bob_marketing)
            assert same_key(store.get_by_id(bob_marketing.key_id), bob_marketing)
        assert keystore.is_shredded(alice, MARKETING)
        assert not keystore.is_shredded(alice, SUPPORT)
        assert not keystore.is_shredded(bob, MARKETING)

    def test_a_destroyed_scope_raises_scope_shredded_on_get_and_get_by_id(
        self, keystore: Keystore
    ) -> None:
        subject = uuid.uuid4()
        key = keystore.create(subject, MARKETING)
        keystore.get(subject, MARKETING)
        keystore.get_by_id(key.key_id)
        keystore.destroy(subject, [MARKETING])
        for _ in range(2):
            with pytest.raises(ScopeShredded):
                keystore.get(subject, MARKETING)
            with pytest.raises(ScopeShredded):
                keystore.get_by_id(key.key_id)
            forget_cache(keystore)

    def test_a_destroyed_scope_is_never_recreated_silently(self, keystore: Keystore) -> None:
        subject = uuid.uuid4()
        keystore.create(subject, MARKETING)
        keystore.destroy(subject, [MARKETING])
        for _ in range(2):
            with pytest.raises(ScopeShredded):
                keystore.get_or_create(subject, MARKETING)
            with pytest.raises(ScopeShredded):
                keystore.create(subject, MARKETING)
            with pytest.raises(ScopeShredded):
                keystore.create(subject, MARKETING, new_version=False)
            forget_cache(keystore)
        assert keystore.is_shredded(subject, MARKETING)

    def test_a_new_version_after_destroy_is_version_two_with_a_new_key_id(
        self, keystore: Keystore
    ) -> None:
        subject = uuid.uuid4()
        old = keystore.create(subject, MARKETING)
        keystore.destroy(subject, [MARKETING])
        new = keystore.create(subject, MARKETING, new_version=True)
        assert new.version == 2
        assert new.key_id != old.key_id
        assert new.secret != old.secret
        assert not keystore.is_shredded(subject, MARKETING)
        for store in (keystore, forget_cache(keystore)):
            assert same_key(store.get(subject, MARKETING), new)
            assert same_key(store.get_or_create(subject, MARKETING), new)
            with pytest.raises(ScopeShredded):
                store.get_by_id(old.key_id)

    def test_destroy_without_scopes_shreds_every_scope_of_the_subject(self, keystore: Keystore) -> None:
        subject, other = uuid.uuid4(), uuid.uuid4()
        keys = [keystore.create(subject, scope) for scope in (MARKETING, SUPPORT, CONSENT_SCOPE)]
        survivor = keystore.create(other, MARKETING)
        shredded = keystore.destroy(subject)
        assert {s.key_id for s in shredded} == {k.key_id for k in keys}
        for key in keys:
            with pytest.raises(ScopeShredded):
                keystore.get(subject, key.scope)
        assert same_key(forget_cache(keystore).get(other, MARKETING), survivor)

    def test_destroying_a_scope_that_has_no_key_shreds_nothing(self, keystore: Keystore) -> None:
        subject = uuid.uuid4()
        key = keystore.create(subject, MARKETING)
        assert keystore.destroy(subject, [SUPPORT]) == []
        assert keystore.destroy(uuid.uuid4()) == []
        assert same_key(forget_cache(keystore).get(subject, MARKETING), key)

    # -- destroy_keys / key_versions / shredded_keys ----------------------------------------------

    def test_destroying_one_key_version_leaves_the_newer_version_readable(
        self, keystore: Keystore
    ) -> None:
        subject, other = uuid.uuid4(), uuid.uuid4()
        old = keystore.create(subject, MARKETING)
        new = keystore.create(subject, MARKETING, new_version=True)
        support = keystore.create(subject, SUPPORT)
        foreign = keystore.create(other, MARKETING)
        keystore.get_by_id(old.key_id)
        shredded = keystore.destroy_keys(subject, [old.key_id, foreign.key_id])
        assert shredded == [ShreddedKey(old.key_id, MARKETING, 1)]
        assert keystore.destroy_keys(subject, [old.key_id]) == []
        assert keystore.destroy_keys(subject, []) == []
        for _ in range(2):
            with pytest.raises(ScopeShredded):
                keystore.get_by_id(old.key_id)
            assert same_key(keystore.get(subject, MARKETING), new)
            assert same_key(keystore.get_by_id(new.key_id), new)
            assert same_key(keystore.get(subject, SUPPORT), support)
            assert same_key(keystore.get_by_id(foreign.key_id), foreign)
            assert not keystore.is_shredded(subject, MARKETING)
            forget_cache(keystore)

    def test_destroying_the_newest_version_closes_the_scope_but_not_older_versions(
        self, keystore: Keystore
    ) -> None:
        subject = uuid.uuid4()
        old = keystore.create(subject, MARKETING)
        new = keystore.create(subject, MARKETING, new_version=True)
        keystore.get(subject, MARKETING)
        keystore.destroy_keys(subject, [new.key_id])
        for _ in range(2):
            assert keystore.is_shredded(subject, MARKETING)
            with pytest.raises(ScopeShredded):
                keystore.get(subject, MARKETING)
            with pytest.raises(ScopeShredded):
                keystore.get_or_create(subject, MARKETING)
            assert same_key(keystore.get_by_id(old.key_id), old)
            forget_cache(keystore)

    def test_key_versions_and_shredded_keys_list_rows_and_tombstones_oldest_first(
        self, keystore: Keystore
    ) -> None:
        subject = uuid.uuid4()
        old = keystore.create(subject, MARKETING)
        new = keystore.create(subject, MARKETING, new_version=True)
        support = keystore.create(subject, SUPPORT)
        keystore.destroy_keys(subject, [old.key_id])
        keystore.tombstone(subject, CONSENT_SCOPE)  # a closed scope, but no key was destroyed
        versions = keystore.key_versions(subject, MARKETING)
        assert [(type(v), v.key_id, v.version) for v in versions] == [
            (Tombstone, old.key_id, 1),
            (KeyRow, new.key_id, 2),
        ]
        (tombstone,) = keystore.shredded_keys(subject)
        assert (tombstone.key_id, tombstone.scope, tombstone.version) == (old.key_id, MARKETING, 1)
        assert isinstance(versions[1], KeyRow) and versions[1].created_at < tombstone.shredded_at
        keystore.erase_subject(subject)
        assert {t.key_id for t in keystore.shredded_keys(subject)} == {
            old.key_id,
            new.key_id,
            support.key_id,
        }
        assert keystore.key_versions(uuid.uuid4(), MARKETING) == []
        assert keystore.shredded_keys(uuid.uuid4()) == []

    def test_a_destroyed_key_version_leaves_no_bytes_in_the_adapters_files(
        self, keystore: Keystore, tmp_path: Path
    ) -> None:
        subject = uuid.uuid4()
        old = keystore.create(subject, MARKETING)
        new = keystore.create(subject, MARKETING, new_version=True)
        old_row, new_row = keystore._key_by_id(old.key_id), keystore._key_by_id(new.key_id)
        assert isinstance(old_row, KeyRow) and isinstance(new_row, KeyRow)
        # The in-memory fake writes no files; an adapter that does must show the key beforehand.
        on_disk = any(True for _ in files_under(tmp_path))
        assert bool(files_holding(tmp_path, old_row.wrapped.blob)) == on_disk

        keystore.destroy_keys(subject, [old.key_id])

        assert files_holding(tmp_path, old_row.wrapped.blob) == []
        assert files_holding(tmp_path, old.secret) == []
        assert bool(files_holding(tmp_path, new_row.wrapped.blob)) == on_disk
        keystore.close()
        assert files_holding(tmp_path, old_row.wrapped.blob) == []

    # -- tombstone / erase_subject -------------------------------------------------------------

    def test_a_tombstoned_scope_that_never_existed_cannot_be_created_by_get_or_create(
        self, keystore: Keystore
    ) -> None:
        subject = uuid.uuid4()
        keystore.tombstone(subject, MARKETING)
        keystore.tombstone(subject, MARKETING)
        assert keystore.is_shredded(subject, MARKETING)
        for _ in range(2):
            with pytest.raises(ScopeShredded):
                keystore.get_or_create(subject, MARKETING)
            with pytest.raises(ScopeShredded):
                keystore.get(subject, MARKETING)
            with pytest.raises(ScopeShredded):
                keystore.create(subject, MARKETING)
            forget_cache(keystore)
        fresh = keystore.create(subject, MARKETING, new_version=True)
        assert fresh.version == 2

    def test_tombstoning_an_active_scope_destroys_its_key(self, keystore: Keystore) -> None:
        subject = uuid.uuid4()
        key = keystore.create(subject, MARKETING)
        keystore.tombstone(subject, MARKETING)
        with pytest.raises(ScopeShredded):
            keystore.get(subject, MARKETING)
        with pytest.raises(ScopeShredded):
            forget_cache(keystore).get_by_id(key.key_id)

    def test_an_erased_subject_is_closed_for_every_scope(self, keystore: Keystore) -> None:
        subject = uuid.uuid4()
        keys = [keystore.create(subject, scope) for scope in (MARKETING, CONSENT_SCOPE)]
        shredded = keystore.erase_subject(subject)
        assert {s.key_id for s in shredded} == {k.key_id for k in keys}
        for _ in range(2):
            for scope in (MARKETING, CONSENT_SCOPE, SUPPORT, IDENTITY_SCOPE):
                assert keystore.is_shredded(subject, scope)
                with pytest.raises(ScopeShredded):
                    keystore.get_or_create(subject, scope)
                with pytest.raises(ScopeShredded):
                    keystore.create(subject, scope)
                with pytest.raises(ScopeShredded):
                    keystore.create(subject, scope, new_version=True)
            for key in keys:
                with pytest.raises(ScopeShredded):
                    keystore.get(subject, key.scope)
                with pytest.raises(ScopeShredded):
                    keystore.get_by_id(key.key_id)
            forget_cache(keystore)

    def test_erasing_a_subject_twice_shreds_nothing_the_second_time(self, keystore: Keystore) -> None:
        subject = uuid.uuid4()
        keystore.create(subject, MARKETING)
        assert len(keystore.erase_subject(subject)) == 1
        assert keystore.erase_subject(subject) == []
        assert keystore.is_shredded(subject, MARKETING)

    def test_erase_subject_drops_its_references_and_leaves_other_subjects_alone(
        self, keystore: Keystore
    ) -> None:
        alice, bob = uuid.uuid4(), uuid.uuid4()
        keystore.create(alice, IDENTITY_SCOPE)
        bob_key = keystore.create(bob, IDENTITY_SCOPE)
        alice_refs = [keystore.blind_index("shop", "1001"), keystore.blind_index("crm", "c-7")]
        bob_ref = keystore.blind_index("shop", "1002")
        for ref in alice_refs:
            keystore.link_reference(ref, alice)
        keystore.link_reference(bob_ref, bob)
        keystore.erase_subject(alice)
        assert [keystore.find_reference(ref) for ref in alice_refs] == [None, None]
        assert keystore.find_reference(bob_ref) == bob
        assert same_key(forget_cache(keystore).get(bob, IDENTITY_SCOPE), bob_key)
        assert not keystore.is_shredded(bob, MARKETING)
        assert keystore.get_or_create(bob, MARKETING).version == 1

    def test_erase_subject_keeps_the_request_digests_pointing_at_the_erased_subject(
        self, keystore: Keystore
    ) -> None:
        alice, bob = uuid.uuid4(), uuid.uuid4()
        keystore.create(alice, MARKETING)
        keystore.link_reference(keystore.blind_index("shop", "1001"), alice)
        grant, erasure, unknown = (hashlib.sha256(n.encode()).digest() for n in ("c-1", "e-1", "x-1"))
        assert keystore.find_erased_request(grant) is None
        keystore.erase_subject(alice, [grant, erasure, grant])
        keystore.erase_subject(bob)
        fresh = forget_cache(keystore)
        assert [fresh.find_erased_request(d) for d in (grant, erasure)] == [alice, alice]
        assert fresh.find_erased_request(unknown) is None

    def test_erasing_again_keeps_each_digest_with_the_subject_it_first_pointed_at(
        self, keystore: Keystore
    ) -> None:
        alice, bob = uuid.uuid4(), uuid.uuid4()
        digests = [hashlib.sha256(n.encode()).digest() for n in ("c-1", "e-1", "u-1")]
        keystore.create(alice, MARKETING)
        keystore.erase_subject(alice, digests[:2])
        assert keystore.erase_subject(alice, digests) == []  # a crashed shredder's re-run
        keystore.erase_subject(bob, digests[1:])  # a producer that reused a key for another subject
        assert [keystore.find_erased_request(d) for d in digests] == [alice, alice, alice]
        assert keystore.is_shredded(alice, MARKETING) and keystore.is_shredded(bob, MARKETING)

    def test_a_failed_erasure_keeps_keys_references_and_writes_no_digest(
        self, keystore: Keystore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        subject = uuid.uuid4()
        key = keystore.create(subject, MARKETING)
        ref = keystore.blind_index("shop", "1001")
        keystore.link_reference(ref, subject)
        digest = hashlib.sha256(b"e-1").digest()
        write = keystore._put_erased_requests

        def write_then_fail(digests: Sequence[bytes], subject_id: uuid.UUID) -> None:
            write(digests, subject_id)
            raise RuntimeError("the erasure's last write failed")

        monkeypatch.setattr(keystore, "_put_erased_requests", write_then_fail)
        with pytest.raises(RuntimeError):
            keystore.erase_subject(subject, [digest])
        monkeypatch.undo()
        # All or nothing: the key, the reference and an open subject are all still there.
        fresh = forget_cache(keystore)
        assert same_key(fresh.get_by_id(key.key_id), key)
        assert fresh.find_reference(ref) == subject
        assert fresh.find_erased_request(digest) is None
        assert not fresh.is_shredded(subject, CONSENT_SCOPE)
        assert [s.key_id for s in fresh.erase_subject(subject, [digest])] == [key.key_id]
        assert (fresh.find_reference(ref), fresh.find_erased_request(digest)) == (None, subject)

    # -- blind index of references ---------------------------------------------------------------

    def test_the_blind_index_is_deterministic(self, keystore: Keystore) -> None:
        first = keystore.blind_index("email", "user-0001@example.com")
        assert keystore.blind_index("email", "user-0001@example.com") == first
        assert len(first) == 32
        assert b"user-0001" not in first
        assert keystore.blind_index("email", "user-0002@example.com") != first

    @pytest.mark.parametrize(
        "variant",
        [
            "User-0001@Example.COM",
            "  user-0001@example.com\t\n",
            "\uff55\uff53\uff45\uff52-0001@example.com",  # fullwidth "user"
            "USER-0001@EXAMPLE.COM ",
        ],
    )
    def test_the_blind_index_normalises_case_whitespace_and_nfkc(
        self, keystore: Keystore, variant: str
    ) -> None:
        assert keystore.blind_index("email", variant) == keystore.blind_index(
            "email", "user-0001@example.com"
        )

    def test_the_blind_index_normalises_compatibility_ligatures(self, keystore: Keystore) -> None:
        assert keystore.blind_index("name", "\ufb01ctional") == keystore.blind_index("name", "fictional")

    def test_the_blind_index_differs_by_namespace(self, keystore: Keystore) -> None:
        assert keystore.blind_index("shop", "1001") != keystore.blind_index("crm", "1001")
        assert keystore.blind_index("shop", "1001") != keystore.blind_index("shop1", "001")

    def test_link_reference_keeps_the_first_subject(self, keystore: Keystore) -> None:
        first, second = uuid.uuid4(), uuid.uuid4()
        ref = keystore.blind_index("shop", "1001")
        assert keystore.find_reference(ref) is None
        assert keystore.link_reference(ref, first) == first
        assert keystore.link_reference(ref, second) == first
        assert keystore.link_reference(ref, first) == first
        assert keystore.find_reference(ref) == first

    def test_find_references_answers_the_linked_ones_of_many_in_one_call(
        self, keystore: Keystore
    ) -> None:
        subjects = [uuid.uuid4() for _ in range(3)]
        # More references than one SQL statement takes, a third of them linked.
        refs = [keystore.blind_index("shop", f"many-{n}") for n in range(1000)]
        linked = {ref: subjects[n // 3 % 3] for n, ref in enumerate(refs) if n % 3 == 0}
        for ref, subject in linked.items():
            keystore.link_reference(ref, subject)
        assert keystore.find_references(refs) == linked
        assert keystore.find_references(refs[1:3]) == {}
        assert keystore.find_references([]) == {}
        keystore.drop_references(subjects[0])
        kept = {ref: subject for ref, subject in linked.items() if subject != subjects[0]}
        assert keystore.find_references(refs) == kept and len(set(kept.values())) == 2

    def test_link_references_links_many_at_once_and_keeps_each_first_subject(
        self, keystore: Keystore
    ) -> None:
        first, later = uuid.uuid4(), uuid.uuid4()
        # More references than one SQL statement takes, a third of them linked before.
        refs = [keystore.blind_index("shop", f"bulk-{n}") for n in range(1000)]
        for ref in refs[::3]:
            keystore.link_reference(ref, first)
        wanted = {ref: uuid.uuid4() for ref in refs}
        winners = keystore.link_references(wanted)
        expected = {ref: first if n % 3 == 0 else wanted[ref] for n, ref in enumerate(refs)}
        assert winners == expected
        assert keystore.find_references(refs) == expected
        assert keystore.link_references({refs[1]: later, refs[0]: later}) == {
            refs[1]: wanted[refs[1]],
            refs[0]: first,
        }
        assert keystore.link_references({}) == {}

    def test_find_erased_requests_answers_the_stored_digests_of_many_in_one_call(
        self, keystore: Keystore
    ) -> None:
        alice, bob = uuid.uuid4(), uuid.uuid4()
        digests = [hashlib.sha256(f"r-{n}".encode()).digest() for n in range(1000)]
        keystore.create(alice, MARKETING)
        keystore.erase_subject(alice, digests[:600])
        keystore.erase_subject(bob, digests[500:900])  # the first subject's digests stay its own
        expected = dict.fromkeys(digests[:600], alice) | dict.fromkeys(digests[600:900], bob)
        fresh = forget_cache(keystore)
        assert fresh.find_erased_requests(digests) == expected
        assert {d: fresh.find_erased_request(d) for d in digests[::37]} == {
            d: expected.get(d) for d in digests[::37]
        }
        assert fresh.find_erased_requests(digests[900:]) == {}
        assert fresh.find_erased_requests([]) == {}

    def test_drop_references_removes_only_that_subjects_references(self, keystore: Keystore) -> None:
        alice, bob = uuid.uuid4(), uuid.uuid4()
        alice_refs = [keystore.blind_index("shop", str(n)) for n in range(1001, 1004)]
        bob_ref = keystore.blind_index("shop", "2001")
        for ref in alice_refs:
            keystore.link_reference(ref, alice)
        keystore.link_reference(bob_ref, bob)
        assert keystore.drop_references(alice) == 3
        assert keystore.drop_references(alice) == 0
        assert all(keystore.find_reference(ref) is None for ref in alice_refs)
        assert keystore.find_reference(bob_ref) == bob
        assert keystore.link_reference(alice_refs[0], bob) == bob

    # -- KEK rotation --------------------------------------------------------------------------

    def test_rewrap_then_retire_keeps_every_key_and_makes_copies_wrapped_before_useless(
        self, keystore: Keystore, tmp_path: Path
    ) -> None:
        provider = LocalKeyFileProvider.open(tmp_path / "rotating-keys.json")
        keystore.provider = provider  # before any key exists, so every key is wrapped under it
        subjects = [uuid.uuid4() for _ in range(4)]
        keys = [keystore.create(s, scope) for s in subjects for scope in (MARKETING, CONSENT_SCOPE)]
        gone = keystore.create(uuid.uuid4(), SUPPORT)
        keystore.destroy(gone.subject_id, [SUPPORT])
        copies = {k.key_id: keystore._key_by_id(k.key_id) for k in keys}  # what a backup keeps
        assert keystore.kek_usage() == {1: len(keys)}

        assert provider.add_kek() == 2
        assert keystore.rewrap(batch=3) == Rewrapped(len(keys), 0)
        assert keystore.rewrap() == Rewrapped(0, 0)
        assert keystore.kek_usage() == {2: len(keys)}
        assert provider.retire_keks() == (1,)

        reopened = LocalKeyFileProvider.open(tmp_path / "rotating-keys.json")
        for key in keys:
            assert same_key(forget_cache(keystore).get_by_id(key.key_id), key)
            copy = copies[key.key_id]
            assert isinstance(copy, KeyRow) and copy.wrapped.kek_version == 1
            for holder in (provider, reopened):
                with pytest.raises(KeyProviderError, match="retired"):
                    holder.unwrap(copy.wrapped, key.subject_id, key.scope, key.key_id)
        with pytest.raises(ScopeShredded):
            keystore.get_by_id(gone.key_id)

    def test_rewrap_counts_keys_no_kek_opens_and_leaves_them_alone(
        self, keystore: Keystore, tmp_path: Path
    ) -> None:
        keystore.provider = LocalKeyFileProvider.open(tmp_path / "one.json")
        foreign = keystore.create(uuid.uuid4(), MARKETING)
        other = LocalKeyFileProvider.open(tmp_path / "other.json")
        other.add_kek()
        keystore.provider = other
        mine = keystore.create(uuid.uuid4(), MARKETING)
        before = keystore._key_by_id(foreign.key_id)
        assert keystore.rewrap() == Rewrapped(0, 1)
        assert keystore._key_by_id(foreign.key_id) == before
        assert keystore.kek_usage() == {1: 1, 2: 1}
        assert same_key(forget_cache(keystore).get_by_id(mine.key_id), mine)
