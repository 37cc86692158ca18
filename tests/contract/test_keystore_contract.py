"""The keystore contract run against every adapter, plus what only a real SQLite file can show."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest

from consentry.adapters.sqlite_keystore import SQLiteKeystore
from consentry.core.errors import KeyProviderError, ScopeShredded
from consentry.core.keys import KeyProvider, LocalKeyFileProvider
from consentry.core.keystore import KeyRow, Keystore, Tombstone
from consentry.core.memory_keystore import InMemoryKeystore
from consentry.core.sealing import CONSENT_SCOPE, DataKey
from tests.contract.keystore_contract import (
    MARKETING,
    SUPPORT,
    KeystoreContract,
    files_holding,
    forget_cache,
    same_key,
)
from tests.contract.sole_writer_contract import SoleWriterContract, minted
from tests.support import StepClock, files_under, master_key


class TestInMemoryKeystore(SoleWriterContract):
    def make_keystore(self, tmp_path: Path) -> Keystore:
        return InMemoryKeystore(LocalKeyFileProvider.from_master_key(master_key()), StepClock())


def keystore_dir(tmp_path: Path) -> Path:
    return tmp_path / "keystore"


def open_sqlite(tmp_path: Path, provider: KeyProvider | None = None) -> SQLiteKeystore:
    """The keystore file under tmp_path, with the key file next to it unless told otherwise."""
    the_provider = provider or LocalKeyFileProvider.open(tmp_path / "keys.json")
    return SQLiteKeystore(keystore_dir(tmp_path) / "keystore.db", the_provider, StepClock())


def wrapped_blob(keystore: SQLiteKeystore, subject: uuid.UUID, scope: str) -> bytes:
    row = keystore._latest(subject, scope)
    assert isinstance(row, KeyRow)
    return row.wrapped.blob


class TestSQLiteKeystoreAsSoleWriter(SoleWriterContract):
    """The contract again where the cache may know a subject's every key (the embedded platform)."""

    def make_keystore(self, tmp_path: Path) -> Keystore:
        provider = LocalKeyFileProvider.open(tmp_path / "keys.json")
        path = keystore_dir(tmp_path) / "keystore.db"
        return SQLiteKeystore(path, provider, StepClock(), sole_writer=True)


class TestSQLiteKeystore(KeystoreContract):
    def make_keystore(self, tmp_path: Path) -> Keystore:
        return open_sqlite(tmp_path)

    def test_one_of_several_writers_never_takes_its_cache_for_a_subjects_every_key(
        self, tmp_path: Path
    ) -> None:
        mine, other = open_sqlite(tmp_path), open_sqlite(tmp_path)
        subject = minted(mine)
        theirs = other.create(subject, MARKETING)
        assert not mine.knows_keys_of(subject)
        assert same_key(mine.get_or_create(subject, MARKETING), theirs)
        other.tombstone(subject, SUPPORT)
        with pytest.raises(ScopeShredded), mine.batch([(subject, SUPPORT)]):
            mine.get_or_create(subject, SUPPORT)
        mine.close()
        other.close()

    def test_a_batch_reads_the_live_keys_it_names_in_one_query_not_one_per_key(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        keystore = open_sqlite(tmp_path)
        subjects = [uuid.uuid4() for _ in range(300)]  # more than one chunk of the query
        keys = {(s, MARKETING): keystore.create(s, MARKETING) for s in subjects}
        one_by_one: list[tuple[uuid.UUID, str]] = []
        together: list[int] = []
        latest, live_rows = keystore._latest, keystore._live_rows

        def counted_latest(subject_id: uuid.UUID, scope: str) -> KeyRow | Tombstone | None:
            one_by_one.append((subject_id, scope))
            return latest(subject_id, scope)

        def counted_live_rows(wanted: Sequence[tuple[uuid.UUID, str, int]]) -> list[KeyRow]:
            together.append(len(wanted))
            return live_rows(wanted)

        monkeypatch.setattr(keystore, "_latest", counted_latest)
        monkeypatch.setattr(keystore, "_live_rows", counted_live_rows)
        with forget_cache(keystore).batch(list(keys)):
            for slot, key in keys.items():
                assert same_key(keystore.get_or_create(*slot), key)
        assert (one_by_one, together) == ([], [300])
        keystore.close()

    def test_destroyed_key_bytes_are_in_no_file_of_the_keystore(self, tmp_path: Path) -> None:
        keystore = open_sqlite(tmp_path)
        subjects = [uuid.uuid4() for _ in range(200)]
        keys: dict[tuple[uuid.UUID, str], DataKey] = {}
        for n, subject in enumerate(subjects):
            for scope in (MARKETING, CONSENT_SCOPE):
                keys[(subject, scope)] = keystore.create(subject, scope)
            keystore.link_reference(keystore.blind_index("shop", f"{1000 + n}"), subject)
        destroyed = [(s, MARKETING) for s in subjects[10:15]]
        erased = subjects[100]
        destroyed += [(erased, MARKETING), (erased, CONSENT_SCOPE)]
        survivors = [slot for slot in keys if slot not in destroyed]
        blobs = {slot: wrapped_blob(keystore, *slot) for slot in keys}
        directory = keystore_dir(tmp_path)
        for slot in destroyed:
            assert files_holding(directory, blobs[slot]), "the scan must see the key before"

        for subject, scope in destroyed[:5]:
            keystore.destroy(subject, [scope])
        keystore.erase_subject(erased)

        names = sorted(p.name for p in files_under(directory))
        assert "keystore.db" in names
        leaks = {f"{s}/{sc}": files_holding(directory, blobs[(s, sc)]) for s, sc in destroyed}
        assert {slot: where for slot, where in leaks.items() if where} == {}, names
        for slot in survivors[::25]:
            assert files_holding(directory, blobs[slot])
        for key in keys.values():
            assert files_holding(directory, key.secret) == []

        keystore.close()
        for slot in destroyed:
            assert files_holding(directory, blobs[slot]) == []

    def test_a_reopened_keystore_still_refuses_destroyed_scopes(self, tmp_path: Path) -> None:
        keystore = open_sqlite(tmp_path)
        alice, bob, carol = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        doomed = keystore.create(alice, MARKETING)
        kept = keystore.create(alice, CONSENT_SCOPE)
        bob_key = keystore.create(bob, MARKETING)
        carol_key = keystore.create(carol, MARKETING)
        bob_ref = keystore.blind_index("shop", "1002")
        carol_ref = keystore.blind_index("shop", "1003")
        keystore.link_reference(bob_ref, bob)
        keystore.link_reference(carol_ref, carol)
        bob_request = hashlib.sha256(b"bob-e-1").digest()
        keystore.destroy(alice, [MARKETING])
        keystore.erase_subject(bob, [bob_request])
        keystore.tombstone(carol, CONSENT_SCOPE)
        keystore.close()

        reopened = open_sqlite(tmp_path)
        try:
            with pytest.raises(ScopeShredded):
                reopened.get(alice, MARKETING)
            with pytest.raises(ScopeShredded):
                reopened.get_or_create(alice, MARKETING)
            with pytest.raises(ScopeShredded):
                reopened.get_by_id(doomed.key_id)
            assert same_key(reopened.get(alice, CONSENT_SCOPE), kept)
            with pytest.raises(ScopeShredded):
                reopened.get_by_id(bob_key.key_id)
            with pytest.raises(ScopeShredded):
                reopened.create(bob, CONSENT_SCOPE, new_version=True)
            assert reopened.find_reference(bob_ref) is None
            assert reopened.find_erased_request(bob_request) == bob
            with pytest.raises(ScopeShredded):
                reopened.get_or_create(carol, CONSENT_SCOPE)
            assert same_key(reopened.get_by_id(carol_key.key_id), carol_key)
            assert reopened.find_reference(carol_ref) == carol
            assert reopened.create(alice, MARKETING, new_version=True).version == 2
        finally:
            reopened.close()

    def test_a_keystore_file_cannot_be_unwrapped_with_another_master_key(self, tmp_path: Path) -> None:
        writer = open_sqlite(tmp_path, LocalKeyFileProvider.from_master_key(master_key()))
        subject = uuid.uuid4()
        key = writer.create(subject, MARKETING)
        writer.close()
        intruder = open_sqlite(tmp_path, LocalKeyFileProvider.from_master_key(master_key()))
        try:
            with pytest.raises(KeyProviderError):
                intruder.get(subject, MARKETING)
            with pytest.raises(KeyProviderError):
                intruder.get_by_id(key.key_id)
        finally:
            intruder.close()

    def test_a_keystore_file_cannot_be_unwrapped_with_another_key_file(self, tmp_path: Path) -> None:
        writer = open_sqlite(tmp_path, LocalKeyFileProvider.open(tmp_path / "keys-a.json"))
        subject = uuid.uuid4()
        writer.create(subject, MARKETING)
        writer.close()
        intruder = open_sqlite(tmp_path, LocalKeyFileProvider.open(tmp_path / "keys-b.json"))
        try:
            with pytest.raises(KeyProviderError):
                intruder.get(subject, MARKETING)
        finally:
            intruder.close()
        same = open_sqlite(tmp_path, LocalKeyFileProvider.open(tmp_path / "keys-a.json"))
        try:
            assert same.get(subject, MARKETING).version == 1
        finally:
            same.close()
