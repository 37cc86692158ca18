"""What a keystore that is the sole writer of its store adds to the contract: it knows subjects whole.

A subject it minted, or whose every scope a batch read, is known whole: a scope the cache lacks for
it has no key yet, so asking for one reads nothing. Anything that destroys or closes a scope of the
subject ends that, so nothing shredded is ever recreated.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from consentry.core.errors import ScopeShredded
from consentry.core.keystore import SUBJECT_SCOPE, Keystore
from consentry.core.sealing import CONSENT_SCOPE, IDENTITY_SCOPE
from tests.contract.keystore_contract import MARKETING, SUPPORT, KeystoreContract, forget_cache

CLOSERS: dict[str, Callable[[Keystore, uuid.UUID], Any]] = {
    "destroy": lambda keystore, s: keystore.destroy(s, [MARKETING]),
    "destroy_keys": lambda keystore, s: keystore.destroy_keys(s, [keystore.get(s, MARKETING).key_id]),
    "tombstone": lambda keystore, s: keystore.tombstone(s, MARKETING),
    "erase_subject": lambda keystore, s: keystore.erase_subject(s),
}


@contextmanager
def store_reads(keystore: Keystore, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The names of the keystore's key reads from its store made inside the block."""
    reads: list[str] = []
    for name in ("_scopes_of", "_latest", "_live_rows", "_subject_closed"):
        method = getattr(keystore, name)

        def counted(*args: Any, _method: Any = method, _name: str = name) -> Any:
            reads.append(_name)
            return _method(*args)

        monkeypatch.setattr(keystore, name, counted)
    yield reads
    monkeypatch.undo()


def minted(keystore: Keystore) -> uuid.UUID:
    """A subject minted in a batch, with its identity and consent keys (as a first grant has)."""
    subject = uuid.uuid4()
    with keystore.batch():
        keystore.fresh_subject(subject)
        keystore.get_or_create(subject, IDENTITY_SCOPE)
        keystore.get_or_create(subject, CONSENT_SCOPE)
    return subject


class SoleWriterContract(KeystoreContract):
    """The contract, plus what only a sole writer's keystore promises."""

    def test_a_subject_it_minted_gets_a_new_scope_later_without_reading_the_store(
        self, keystore: Keystore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        subject = minted(keystore)
        assert keystore.knows_keys_of(subject)
        with store_reads(keystore, monkeypatch) as reads, keystore.batch([(subject, MARKETING)]):
            key = keystore.get_or_create(subject, MARKETING)
        assert reads == []
        assert key.version == 1
        assert forget_cache(keystore).get(subject, MARKETING).key_id == key.key_id

    @pytest.mark.parametrize("closer", sorted(CLOSERS))
    def test_a_scope_closed_after_the_subject_was_known_whole_is_never_recreated(
        self, keystore: Keystore, closer: str
    ) -> None:
        subject = minted(keystore)
        with keystore.batch([(subject, MARKETING)]):
            keystore.get_or_create(subject, MARKETING)
        CLOSERS[closer](keystore, subject)

        assert not keystore.knows_keys_of(subject)
        with pytest.raises(ScopeShredded):
            keystore.get_or_create(subject, MARKETING)
        with pytest.raises(ScopeShredded), keystore.batch([(subject, MARKETING)]):
            keystore.get_or_create(subject, MARKETING)

    def test_a_subject_whose_every_scope_a_batch_read_is_known_whole_after_it(
        self, keystore: Keystore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        subject = uuid.uuid4()
        marketing = keystore.create(subject, MARKETING)
        forget_cache(keystore)
        assert not keystore.knows_keys_of(subject)
        with keystore.batch([(subject, MARKETING), (subject, SUPPORT)]):
            assert keystore.get_or_create(subject, MARKETING).key_id == marketing.key_id
            support = keystore.get_or_create(subject, SUPPORT)
        assert keystore.knows_keys_of(subject)
        with store_reads(keystore, monkeypatch) as reads:
            assert keystore.get_or_create(subject, SUPPORT).key_id == support.key_id
            keystore.get_or_create(subject, CONSENT_SCOPE)
        assert reads == []

    def test_a_subject_with_a_shredded_scope_is_never_known_whole(self, keystore: Keystore) -> None:
        subject = uuid.uuid4()
        keystore.create(subject, MARKETING)
        keystore.destroy(subject, [MARKETING])
        forget_cache(keystore)
        with keystore.batch([(subject, SUPPORT)]):
            keystore.get_or_create(subject, SUPPORT)
        assert not keystore.knows_keys_of(subject)
        with pytest.raises(ScopeShredded):
            keystore.get_or_create(subject, MARKETING)

    def test_an_older_version_found_by_id_leaves_the_subject_as_it_was_known(
        self, keystore: Keystore
    ) -> None:
        subject = uuid.uuid4()
        old = keystore.create(subject, MARKETING)
        forget_cache(keystore)
        with keystore.batch([(subject, MARKETING)]):
            keystore.get_or_create(subject, MARKETING)
        new = keystore.create(subject, MARKETING, new_version=True)  # a re-consent
        forget_cache(keystore)
        keystore.get_by_id(old.key_id)  # a read of data collected before it
        assert not keystore.knows_keys_of(subject)
        assert keystore.get_or_create(subject, MARKETING).key_id == new.key_id

    def test_an_erased_subject_minted_here_stays_closed_for_new_scopes(self, keystore: Keystore) -> None:
        subject = minted(keystore)
        keystore.erase_subject(subject)
        for scope in (SUPPORT, CONSENT_SCOPE, SUBJECT_SCOPE):
            with pytest.raises(ScopeShredded):
                keystore.get_or_create(subject, scope)
