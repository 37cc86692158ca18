"""The keystore contract on PostgreSQL, plus what only several connections to one database can show.

Needs the cluster of infra/postgres: `CONSENTRY_SERVICES=postgres bash infra/with-services.sh
.venv/bin/pytest tests/contract/test_postgres_keystore.py`. The DSNs come from the environment and a
missing one fails the test. Each contract test gets a fresh schema made by the owner role; the role
tests use the real `keystore` schema. The file scans read the cluster's data directory (root or the
server's OS user) and CHECKPOINT as the superuser, whose password file lies next to that directory.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from consentry.adapters.postgres_keystore import PostgresKeystore
from consentry.core.errors import KeyExists, KeyProviderError, KeystoreError, ScopeShredded
from consentry.core.keys import KeyProvider, LocalKeyFileProvider, WrappedKey
from consentry.core.keystore import KeyRow, Keystore, ShreddedKey
from consentry.core.sealing import CONSENT_SCOPE, DataKey, purpose_scope
from tests.contract.keystore_contract import (
    MARKETING,
    SUPPORT,
    KeystoreContract,
    same_key,
    wraps_counted,
)
from tests.support import StepClock, calls_of, master_key

pytestmark = pytest.mark.postgres
WAITS = 0.3  # seconds a blocked operation must stay blocked


def pg_env(name: str) -> str:
    """A setting infra/postgres/start.sh writes; the test fails if it is missing."""
    value = os.environ.get(name)
    if not value:
        pytest.fail(
            f"{name} is not set: start PostgreSQL with "
            "`CONSENTRY_SERVICES=postgres bash infra/with-services.sh .venv/bin/pytest ...`",
            pytrace=False,
        )
    return value


def connect(dsn: str) -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(dsn, autocommit=True)


def superuser() -> psycopg.Connection[tuple[Any, ...]]:
    """The cluster's superuser, for CHECKPOINT; its password file is next to the data directory."""
    password_file = Path(pg_env("CONSENTRY_PG_DATA_DIR")).parent / "superuser.password"
    try:
        password = password_file.read_text().strip()
    except OSError as exc:
        pytest.fail(f"cannot read {password_file} ({exc.strerror}): run as root or the server's user")
    return psycopg.connect(
        host=pg_env("CONSENTRY_PG_HOST"),
        port=pg_env("CONSENTRY_PG_PORT"),
        dbname=pg_env("CONSENTRY_PG_DATABASE"),
        user="postgres",
        password=password,
        autocommit=True,
    )


def checkpoint() -> None:
    """Writes every dirty page to the data files."""
    with superuser() as conn:
        conn.execute("CHECKPOINT")


def read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:  # a dropped relation's file, unlinked by a checkpoint meanwhile
        return b""
    except PermissionError:
        pytest.fail(f"cannot read {path}: run the tests as root or as the server's OS user")


def contents(files: list[Path]) -> dict[str, bytes]:
    """The files' bytes by name, read once for several needles."""
    return {path.name: read(path) for path in files}


def holding(files: dict[str, bytes], needle: bytes) -> list[str]:
    """Names of the files whose bytes contain the needle."""
    return sorted(name for name, data in files.items() if needle in data)


def heap_files(conn: psycopg.Connection[tuple[Any, ...]], table: str) -> list[Path]:
    """The main-fork segment files of a table (`pg_relation_filepath`, then .1, .2, ...)."""
    row = conn.execute("SELECT pg_relation_filepath(%s::regclass)", (table,)).fetchone()
    assert row is not None
    first = Path(pg_env("CONSENTRY_PG_DATA_DIR")) / row[0]
    return [first, *sorted(first.parent.glob(f"{first.name}.*"))]


def database_files(conn: psycopg.Connection[tuple[Any, ...]]) -> list[Path]:
    """Every file of the current database: heaps, indexes, TOAST, free-space and visibility maps."""
    row = conn.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()
    assert row is not None
    return [
        p
        for p in (Path(pg_env("CONSENTRY_PG_DATA_DIR")) / "base" / str(row[0])).iterdir()
        if p.is_file()
    ]


def wal_contents(conn: psycopg.Connection[tuple[Any, ...]]) -> dict[str, bytes]:
    """The WAL segment files' bytes with their page headers cut out, so split records join up.

    Every WAL page starts with a header (40 bytes on a segment's first page, 24 on the others);
    a record that crosses a page boundary is split around it, so a needle could straddle it.
    """
    row = conn.execute("SELECT current_setting('wal_block_size')::int").fetchone()
    assert row is not None
    page = row[0]
    segments = sorted((Path(pg_env("CONSENTRY_PG_DATA_DIR")) / "pg_wal").glob("[0-9A-F]" * 24))
    joined: dict[str, bytes] = {}
    for name, data in contents(segments).items():
        pages = (data[at + (40 if at == 0 else 24) : at + page] for at in range(0, len(data), page))
        joined[name] = b"".join(pages)
    return joined


def vacuumed(store: PostgresKeystore, *, full: bool = False) -> None:
    """VACUUMs until no dead row is kept: a snapshot (autovacuum's ANALYZE, say) may keep them."""
    for _ in range(50):
        if store.vacuum(full=full) == 0:
            return
        time.sleep(0.1)
    pytest.fail("VACUUM kept dead key rows for 5 s: an old transaction holds a snapshot", pytrace=False)


def blob_of(store: PostgresKeystore, key_id: str) -> bytes:
    row = store._key_by_id(key_id)
    assert isinstance(row, KeyRow)
    return row.wrapped.blob


class PausingProvider(LocalKeyFileProvider):
    """Holds each wrap until released: in `create`'s transaction, after its checks, before its insert."""

    paused: threading.Event
    release: threading.Event

    @classmethod
    def armed(cls, secret: str) -> PausingProvider:
        provider = cls.from_master_key(secret)
        assert isinstance(provider, PausingProvider)
        provider.paused, provider.release = threading.Event(), threading.Event()
        return provider

    def wrap_all(self, keys: Sequence[tuple[bytes, uuid.UUID, str, str]]) -> list[WrappedKey]:
        self.paused.set()
        self.release.wait(10)
        return super().wrap_all(keys)


class UnlockedPostgresKeystore(PostgresKeystore):
    """The adapter without its subject lock: shows that the race tests catch the race."""

    def _lock_subject(self, subject_id: uuid.UUID) -> None:
        return None


class TestPostgresKeystore(KeystoreContract):
    """The contract in a fresh schema per test, then what only PostgreSQL can show."""

    schema: str
    secret: str
    owner: psycopg.Connection[tuple[Any, ...]]
    opened: list[PostgresKeystore]

    @pytest.fixture(autouse=True)
    def fresh_schema(self) -> Iterator[None]:
        self.secret, self.schema = master_key(), f"keystore_test_{uuid.uuid4().hex[:12]}"
        self.owner, self.opened = connect(pg_env("CONSENTRY_PG_DSN_OWNER")), []
        try:
            self.owner.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema)))
        except psycopg.errors.InsufficientPrivilege:
            self.owner.close()
            pytest.fail(
                "consentry_owner may not create schemas; infra/postgres/roles.sql needs "
                "`GRANT CREATE ON DATABASE consentry TO consentry_owner`",
                pytrace=False,
            )
        yield
        for store in self.opened:
            store.close()
        self.owner.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(self.schema)))
        self.owner.close()

    def open(
        self, provider: KeyProvider | None = None, cls: type[PostgresKeystore] = PostgresKeystore
    ) -> PostgresKeystore:
        """Another instance (and connection) on this test's schema; keys from the test's master key."""
        the_provider = provider or LocalKeyFileProvider.from_master_key(self.secret)
        dsn = pg_env("CONSENTRY_PG_DSN_OWNER")
        store = cls(dsn, the_provider, StepClock(), schema=self.schema, create=True)
        self.opened.append(store)
        return store

    def make_keystore(self, tmp_path: Path) -> Keystore:
        return self.open()

    def heap(self) -> list[Path]:
        return heap_files(self.owner, f"{self.schema}.data_keys")

    def live_rows(self, subject: uuid.UUID) -> int:
        query = sql.SQL("SELECT count(*) FROM {}.data_keys WHERE subject_id = %s")
        row = self.owner.execute(query.format(sql.Identifier(self.schema)), (subject,)).fetchone()
        assert row is not None
        return int(row[0])

    def fill(self, store: PostgresKeystore, count: int) -> list[tuple[uuid.UUID, str, bytes]]:
        """Keys of `count` new subjects, in insertion order: (subject, key id, wrapped bytes)."""
        keys = [(s, store.create(s, MARKETING).key_id) for s in (uuid.uuid4() for _ in range(count))]
        return [(subject, key_id, blob_of(store, key_id)) for subject, key_id in keys]

    def with_keys_made_elsewhere(
        self, count: int
    ) -> tuple[PostgresKeystore, PostgresKeystore, dict[uuid.UUID, DataKey]]:
        """A keystore, another instance, and the MARKETING keys the other made for `count` new
        subjects (the first instance has seen none of them)."""
        store, other = self.open(), self.open()
        return (
            store,
            other,
            {s: other.create(s, MARKETING) for s in (uuid.uuid4() for _ in range(count))},
        )

    # -- the contract's file scan, in PostgreSQL's terms -------------------------------------

    def test_a_destroyed_key_version_leaves_no_bytes_in_the_adapters_files(
        self, keystore: Keystore, tmp_path: Path
    ) -> None:
        assert isinstance(keystore, PostgresKeystore)
        subject = uuid.uuid4()
        old = keystore.create(subject, MARKETING)
        new = keystore.create(subject, MARKETING, new_version=True)
        old_blob, new_blob = blob_of(keystore, old.key_id), blob_of(keystore, new.key_id)
        checkpoint()
        assert holding(contents(self.heap()), old_blob), "the scan must see the key before"

        keystore.destroy_keys(subject, [old.key_id])
        vacuumed(keystore, full=True)
        checkpoint()

        database = contents(database_files(self.owner))
        assert holding(database, old_blob) == []
        assert holding(contents(self.heap()), new_blob)
        everything = database | wal_contents(self.owner)
        assert holding(everything, old.secret) == []
        assert holding(everything, new.secret) == []

    # -- several instances, one database -----------------------------------------------------

    def test_a_key_destroyed_by_one_instance_is_refused_by_another_that_used_it(self) -> None:
        shredder, reader = self.open(), self.open()
        subject = uuid.uuid4()
        key = shredder.create(subject, MARKETING)
        assert same_key(reader.get(subject, MARKETING), key)
        assert same_key(reader.get_by_id(key.key_id), key)

        shredder.destroy(subject, [MARKETING])

        with pytest.raises(ScopeShredded):
            reader.get(subject, MARKETING)
        with pytest.raises(ScopeShredded):
            reader.get_by_id(key.key_id)
        assert not len(reader._cache)

    def race_create_with_erase(
        self, creator: PostgresKeystore, provider: PausingProvider
    ) -> tuple[Future[DataKey], Future[list[ShreddedKey]]]:
        """Starts an erasure (on another connection) while `creator` is paused inside a create."""
        subject, eraser = uuid.uuid4(), self.open()
        pool = ThreadPoolExecutor(2)
        created = pool.submit(creator.create, subject, MARKETING)
        assert provider.paused.wait(5), "the create never reached its insert"
        erased = pool.submit(eraser.erase_subject, subject)
        wait_for([erased], timeout=WAITS)
        pool.shutdown(wait=False)
        return created, erased

    def test_an_erasure_waits_for_a_create_in_flight_and_then_destroys_its_key(self) -> None:
        provider = PausingProvider.armed(self.secret)
        creator = self.open(provider)
        created, erased = self.race_create_with_erase(creator, provider)
        assert not erased.done(), "the erasure must wait for the subject lock"
        provider.release.set()
        key = created.result(timeout=10)
        assert [s.key_id for s in erased.result(timeout=10)] == [key.key_id]
        assert self.live_rows(key.subject_id) == 0
        with pytest.raises(ScopeShredded):
            creator.get_by_id(key.key_id)
        with pytest.raises(ScopeShredded):
            creator.create(key.subject_id, CONSENT_SCOPE)

    def test_a_batch_holds_the_lock_of_every_subject_it_created_keys_for_until_it_commits(self) -> None:
        provider = PausingProvider.armed(self.secret)
        creator, eraser = self.open(provider), self.open()
        doomed, other = uuid.uuid4(), uuid.uuid4()

        def batch() -> list[DataKey]:
            with creator.batch():
                return [creator.create(subject, MARKETING) for subject in (doomed, other)]

        with ThreadPoolExecutor(2) as pool:
            created = pool.submit(batch)
            assert provider.paused.wait(5)
            erased = pool.submit(eraser.erase_subject, doomed)
            assert not wait_for([erased], timeout=WAITS).done, "the erasure must wait for the batch"
            provider.release.set()
            doomed_key, other_key = created.result(timeout=10)
            assert [s.key_id for s in erased.result(timeout=10)] == [doomed_key.key_id]
        assert self.live_rows(doomed) == 0
        assert same_key(eraser.get(other, MARKETING), other_key)

    def test_an_erasure_waits_for_a_batch_that_prepared_the_subjects_existing_key_then_destroys_it(
        self,
    ) -> None:
        store, eraser, keys = self.with_keys_made_elsewhere(1)
        ((subject, key),) = keys.items()
        with ThreadPoolExecutor(1) as pool:
            with store.batch([(subject, MARKETING)]):
                prepared = store.prepare([(subject, MARKETING)])
                assert same_key(prepared[(subject, MARKETING)], key)
                erased = pool.submit(eraser.erase_subject, subject)
                # The batch may seal with the key it prepared until it commits.
                assert not wait_for([erased], timeout=WAITS).done, "the erasure must wait for the batch"
            assert [s.key_id for s in erased.result(timeout=10)] == [key.key_id]
        assert self.live_rows(subject) == 0

    def test_two_batches_locking_subjects_in_opposite_orders_fail_one_batch_whole(self) -> None:
        providers = [PausingProvider.armed(self.secret) for _ in range(2)]
        stores = [self.open(provider) for provider in providers]
        subjects = [uuid.uuid4(), uuid.uuid4()]

        def batch(store: PostgresKeystore, order: list[uuid.UUID]) -> list[str]:
            with store.batch():
                return [store.create(subject, MARKETING).key_id for subject in order]

        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(batch, stores[0], subjects)
            assert providers[0].paused.wait(5)
            second = pool.submit(batch, stores[1], subjects[::-1])
            assert providers[1].paused.wait(5)  # each batch holds one subject's lock
            for provider in providers:
                provider.release.set()
            outcomes = [f.exception(timeout=10) or f.result() for f in (first, second)]
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(failures) == 1 and isinstance(failures[0], KeystoreError)
        assert "SQLSTATE 40P01" in str(failures[0])
        (winner,) = [o for o in outcomes if isinstance(o, list)]
        assert {k.key_id for s in subjects for k in stores[0].key_versions(s, MARKETING)} == set(winner)

    def test_a_batch_finds_the_key_it_created_for_a_fresh_subject_without_a_cache(self) -> None:
        store = self.open()
        subject = uuid.uuid4()
        with store.batch():
            store.fresh_subject(subject)
            first = store.get_or_create(subject, MARKETING)
            assert same_key(store.get_or_create(subject, MARKETING), first)
            store.link_reference(store.blind_index("shop", "fresh"), subject)
        assert same_key(self.open().get(subject, MARKETING), first)

    def test_without_the_subject_lock_the_same_race_leaves_a_live_key_of_an_erased_subject(self) -> None:
        provider = PausingProvider.armed(self.secret)
        creator = self.open(provider, UnlockedPostgresKeystore)
        created, erased = self.race_create_with_erase(creator, provider)
        assert erased.result(timeout=10) == []  # nothing waited: the create had not inserted yet
        provider.release.set()
        key = created.result(timeout=10)
        assert self.live_rows(key.subject_id) == 1  # the race the lock prevents

    def test_creating_and_erasing_in_parallel_never_leaves_a_live_key(self) -> None:
        creator, eraser = self.open(), self.open()
        rng = random.Random(7)

        def create_until_closed(subject: uuid.UUID) -> set[str]:
            made: set[str] = set()
            for n in range(500):
                try:
                    made.add(creator.create(subject, purpose_scope(f"p{n}")).key_id)
                except ScopeShredded:
                    break
            return made

        def erase_soon(subject: uuid.UUID, delay: float) -> set[str]:
            time.sleep(delay)
            return {s.key_id for s in eraser.erase_subject(subject)}

        with ThreadPoolExecutor(2) as pool:
            for _ in range(15):
                subject = uuid.uuid4()
                made = pool.submit(create_until_closed, subject)
                erased = pool.submit(erase_soon, subject, rng.uniform(0, 0.02))
                assert made.result() == erased.result()
                assert self.live_rows(subject) == 0
                assert {t.key_id for t in creator.shredded_keys(subject)} == made.result()

    def test_get_or_create_racing_in_two_instances_returns_one_key(self) -> None:
        provider = PausingProvider.armed(self.secret)
        first, second = self.open(provider), self.open()
        subject = uuid.uuid4()
        with ThreadPoolExecutor(2) as pool:
            mine = pool.submit(first.get_or_create, subject, MARKETING)
            assert provider.paused.wait(5)
            theirs = pool.submit(second.get_or_create, subject, MARKETING)
            assert not wait_for([theirs], timeout=WAITS).done, "the second create must wait"
            provider.release.set()
            assert same_key(mine.result(timeout=10), theirs.result(timeout=10))
        assert len(second.key_versions(subject, MARKETING)) == 1

    def test_another_writer_waits_for_a_batch_that_announced_the_subject_then_finds_its_key(
        self,
    ) -> None:
        # The batch names its keys and locks their subjects as it begins, before it reads their
        # scopes once for all. Another writer's get_or_create of one of them must wait for the
        # batch to commit and then find the batch's key, not create one the batch's read missed.
        writer, other = self.open(), self.open()
        first, second = uuid.uuid4(), uuid.uuid4()
        for subject in (first, second):
            other.create(subject, SUPPORT)  # existing subjects: nothing is fresh
        with ThreadPoolExecutor(1) as pool:
            with writer.batch([(first, MARKETING), (second, MARKETING)]):
                mine = writer.get_or_create(first, MARKETING)  # the scopes of both are read here
                theirs = pool.submit(other.get_or_create, second, MARKETING)
                assert not wait_for([theirs], timeout=WAITS).done, "the other writer must wait"
                found = writer.get_or_create(second, MARKETING)
            assert same_key(theirs.result(timeout=10), found)
        assert [r.key_id for r in other.key_versions(second, MARKETING)] == [found.key_id]
        assert same_key(other.get(first, MARKETING), mine)

    def test_a_batch_locks_and_reads_its_announced_subjects_in_three_statements_whatever_their_number(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        store, other, keys = self.with_keys_made_elsewhere(60)
        subjects = list(keys)
        statements: list[str] = []
        sent: list[int] = []
        execute, send_keys = store._execute, store._send_keys

        def counted_execute(text: Any, params: Any) -> Any:
            statements.append(" ".join(str(text).split()[:2]))
            return execute(text, params)

        def counted_send() -> None:
            if store._unsent:
                sent.append(len(store._unsent))
            send_keys()

        monkeypatch.setattr(store, "_execute", counted_execute)
        monkeypatch.setattr(store, "_send_keys", counted_send)
        key_inserts: list[int] = []
        cursor_execute = psycopg.Cursor.execute

        def counted_cursor(cursor: Any, query: Any, params: Any = None, **kwargs: Any) -> Any:
            text = str(query)
            if all(part in text for part in ("INSERT INTO", "data_keys", "unnest")):
                key_inserts.append(len(params["k"]))
            return cursor_execute(cursor, query, params, **kwargs)

        def one_by_one(*args: Any, **kwargs: Any) -> None:
            raise AssertionError("the keys went one statement each")

        monkeypatch.setattr(psycopg.Cursor, "execute", counted_cursor)
        monkeypatch.setattr(psycopg.Cursor, "executemany", one_by_one)
        wanted = [(s, scope) for s in subjects for scope in (MARKETING, SUPPORT)]
        with store.batch(wanted):
            for subject in subjects:
                # Asked twice: a keystore without a cache hands the batch's row out again.
                for _ in range(2):
                    assert same_key(store.get_or_create(subject, MARKETING), keys[subject])
            created = {subject: store.get_or_create(subject, SUPPORT) for subject in subjects}
            assert other.key_versions(subjects[0], SUPPORT) == []  # not committed yet
        # The locks, the scopes and the live rows; the 60 new keys in one statement.
        assert len(statements) == 3, statements
        assert sent == [60]
        assert key_inserts == [60]
        for subject, key in created.items():
            assert same_key(other.get(subject, SUPPORT), key)

    def test_a_batch_prepares_the_keys_of_the_subjects_it_announced_each_read_and_unwrapped_once(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        store, other, keys = self.with_keys_made_elsewhere(20)
        subjects = list(keys)
        stranger = uuid.uuid4()  # an existing subject the batch did not announce
        other.create(stranger, MARKETING)
        statements = calls_of(store, "_execute", monkeypatch)
        unwrapped = calls_of(store, "_unwrap", monkeypatch)
        wrapped = wraps_counted(store, monkeypatch)
        wanted = [(s, scope) for s in subjects for scope in (MARKETING, SUPPORT)]
        with store.batch(wanted):
            prepared = store.prepare([*wanted, (stranger, SUPPORT)])
            # The locks, the scopes and the live rows, whatever the number of subjects.
            assert len(statements) == 3
            assert all(same_key(prepared[(s, MARKETING)], keys[s]) for s in subjects)
            assert len(unwrapped) == len(subjects)  # each existing key once, for the whole batch
            assert wrapped == [len(subjects)]  # the missing ones made together
            # Not locked by the batch: left to get_or_create, which takes its lock first.
            assert (stranger, SUPPORT) not in prepared
            assert other.key_versions(subjects[0], SUPPORT) == []  # not committed yet
        for subject in subjects:
            assert same_key(other.get(subject, SUPPORT), prepared[(subject, SUPPORT)])

    def test_references_link_and_erased_requests_are_found_in_a_fixed_number_of_statements(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        store = self.open()
        links = {store.blind_index("shop", f"{n}-{uuid.uuid4().hex}"): uuid.uuid4() for n in range(100)}
        erased = uuid.uuid4()
        digests = [uuid.uuid4().bytes * 2 for _ in range(100)]
        store.erase_subject(erased, digests[:40])
        statements: list[str] = []
        execute = store._execute

        def counted_execute(text: Any, params: Any) -> Any:
            statements.append(" ".join(str(text).split()[:2]))
            return execute(text, params)

        monkeypatch.setattr(store, "_execute", counted_execute)
        assert store.link_references(links) == links
        assert store.find_erased_requests(digests) == dict.fromkeys(digests[:40], erased)
        assert len(statements) == 3, statements  # insert, read back; one read of the digests

    def test_a_read_in_a_batch_sees_the_keys_the_batch_created_before_it(self) -> None:
        store = self.open()
        subject = uuid.uuid4()
        store.create(subject, SUPPORT)
        with store.batch():
            key = store.create(subject, MARKETING)  # waits to be sent with the next statement
            assert [r.key_id for r in store.key_versions(subject, MARKETING)] == [key.key_id]
            with pytest.raises(KeyExists):
                store.create(subject, MARKETING)
        assert same_key(self.open().get(subject, MARKETING), key)

    # -- where destroyed bytes go: heap, WAL, statistics -------------------------------------

    def test_plain_vacuum_wipes_rows_that_live_rows_slide_over_but_not_the_last_row_of_a_page(
        self, keystore: Keystore
    ) -> None:
        assert isinstance(keystore, PostgresKeystore)
        keys = self.fill(keystore, 120)  # several heap pages
        (middle_subject, middle_id, middle), (last_subject, last_id, last) = keys[10], keys[-1]
        checkpoint()
        before = contents(self.heap())
        assert holding(before, middle) and holding(before, last)

        keystore.destroy_keys(middle_subject, [middle_id])
        keystore.destroy_keys(last_subject, [last_id])
        vacuumed(keystore)
        checkpoint()

        # VACUUM compacts each page by sliding its live rows over the dead ones; it does not zero
        # the space it frees. The row inserted last sits lowest in its page: nothing slides over it.
        after = contents(self.heap())
        assert holding(after, middle) == []
        assert holding(after, last), (
            "PostgreSQL now zeroes freed space: update docs/keystore-postgres.md"
        )
        assert all(
            holding(after, blob) for _, key_id, blob in keys if key_id not in (middle_id, last_id)
        )
        # New rows fill the freed space from its top, where the leftover bytes are.
        self.fill(keystore, 60)
        checkpoint()
        assert holding(contents(self.heap()), last) == []

    def test_vacuum_counts_the_destroyed_rows_an_open_snapshot_still_keeps(
        self, keystore: Keystore
    ) -> None:
        assert isinstance(keystore, PostgresKeystore)
        (subject, key_id, _), *_ = self.fill(keystore, 3)
        reader = connect(pg_env("CONSENTRY_PG_DSN_OWNER"))
        with reader.transaction():
            reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            reader.execute("SELECT 1").fetchone()  # takes the snapshot
            keystore.destroy_keys(subject, [key_id])
            assert keystore.vacuum() == 1
            assert keystore.vacuum(full=True) == 1
        reader.close()
        vacuumed(keystore)

    def test_vacuum_full_wipes_destroyed_keys_from_the_database_files_but_the_wal_keeps_them(
        self, keystore: Keystore
    ) -> None:
        assert isinstance(keystore, PostgresKeystore)
        keys = self.fill(keystore, 120)
        doomed, kept = keys[5::10], [k for k in keys if k not in keys[5::10]]
        old_heap = self.heap()
        for subject, key_id, _ in doomed:
            keystore.destroy_keys(subject, [key_id])

        vacuumed(keystore, full=True)
        checkpoint()

        database = contents(database_files(self.owner))
        assert {key_id: holding(database, blob) for _, key_id, blob in doomed} == {
            key_id: [] for _, key_id, _ in doomed
        }
        new_heap = self.heap()
        assert new_heap[0] != old_heap[0] and read(old_heap[0]) == b""  # rewritten; the old file gone
        assert all(holding(contents(new_heap), blob) for _, _, blob in kept)
        # The WAL still holds every destroyed key (the INSERT records, and full page images of the
        # first change after a checkpoint) until its segment files are overwritten or removed.
        wal = wal_contents(self.owner)
        assert all(holding(wal, blob) for _, _, blob in doomed)

    def test_analyze_keeps_no_sample_of_wrapped_keys_or_blind_references(
        self, keystore: Keystore
    ) -> None:
        for n in range(50):
            subject = uuid.uuid4()
            keystore.create(subject, MARKETING)
            keystore.link_reference(keystore.blind_index("shop", f"{1000 + n}"), subject)
        for table in ("data_keys", "references_index"):
            self.owner.execute(
                sql.SQL("ANALYZE {}.{}").format(*map(sql.Identifier, (self.schema, table)))
            )
        query = "SELECT tablename || '.' || attname FROM pg_stats WHERE schemaname = %s"
        sampled = {row[0] for row in self.owner.execute(query, (self.schema,))}
        assert {"data_keys.subject_id", "references_index.subject_id"} <= sampled
        assert "data_keys.wrapped" not in sampled
        assert "references_index.blind" not in sampled

    def test_after_rewrap_and_retiring_the_old_kek_old_copies_of_wrapped_keys_are_useless(self) -> None:
        keks, index, seed = {1: os.urandom(32), 2: os.urandom(32)}, os.urandom(32), os.urandom(32)
        before = self.open(LocalKeyFileProvider({1: keks[1]}, 1, index, seed))
        subjects = [uuid.uuid4() for _ in range(5)]
        keys = [before.create(s, scope) for s in subjects for scope in (MARKETING, CONSENT_SCOPE)]
        copies = {k.key_id: blob_of(before, k.key_id) for k in keys}  # what a WAL or a backup keeps

        rotating = self.open(LocalKeyFileProvider(keks, 2, index, seed))
        assert rotating.rewrap(batch=3).rewrapped == len(keys)
        assert rotating.rewrap().rewrapped == 0

        retired = LocalKeyFileProvider({2: keks[2]}, 2, index, seed)
        after = self.open(retired)
        for key in keys:
            assert same_key(after.get(key.subject_id, key.scope), key)
            with pytest.raises(KeyProviderError):
                retired.unwrap(WrappedKey(1, copies[key.key_id]), key.subject_id, key.scope, key.key_id)
        with pytest.raises(KeyProviderError):
            before.get(subjects[0], MARKETING)

    # -- errors and lifecycle ----------------------------------------------------------------

    def test_a_database_error_names_no_key_bytes(self, keystore: Keystore) -> None:
        assert isinstance(keystore, PostgresKeystore)
        key = keystore.create(uuid.uuid4(), MARKETING)
        row = keystore._key_by_id(key.key_id)
        assert isinstance(row, KeyRow)
        with pytest.raises(KeyExists):
            keystore._insert_key(row)
        bad = KeyRow(uuid.uuid4().hex, row.subject_id, SUPPORT, 0, row.wrapped, row.created_at)
        with pytest.raises(KeystoreError) as caught:  # version 0 breaks a CHECK: "Failing row contains"
            keystore._insert_key(bad)
        assert "SQLSTATE 23514" in str(caught.value)
        assert row.wrapped.blob.hex() not in str(caught.value)
        assert caught.value.__cause__ is None and caught.value.__suppress_context__

    def test_migrating_again_keeps_the_keys_and_a_closed_keystore_refuses_work(
        self, keystore: Keystore
    ) -> None:
        key = keystore.create(uuid.uuid4(), MARKETING)
        again = self.open()
        assert same_key(again.get_by_id(key.key_id), key)
        again.close()
        with pytest.raises(KeystoreError, match="closed"):
            again.get_by_id(key.key_id)


class TestPostgresKeystoreRoles:
    """The real `keystore` schema, reached by each service's role."""

    opened: list[PostgresKeystore]

    @pytest.fixture
    def provider(self) -> LocalKeyFileProvider:
        return LocalKeyFileProvider.from_master_key(master_key())

    @pytest.fixture
    def subjects(self, provider: LocalKeyFileProvider) -> Iterator[list[uuid.UUID]]:
        """Subjects the test may use; the owner migrates the schema first and cleans them up after."""
        PostgresKeystore(pg_env("CONSENTRY_PG_DSN_OWNER"), provider, create=True).close()
        self.opened = []
        used = [uuid.uuid4() for _ in range(2)]
        yield used
        for store in self.opened:
            store.close()
        with connect(pg_env("CONSENTRY_PG_DSN_OWNER")) as owner:
            for table in ("data_keys", "tombstones", "references_index", "erased_requests"):
                query = sql.SQL("DELETE FROM keystore.{} WHERE subject_id = ANY(%s)")
                owner.execute(query.format(sql.Identifier(table)), (used,))

    def open(self, role: str, provider: KeyProvider) -> PostgresKeystore:
        store = PostgresKeystore(pg_env(f"CONSENTRY_PG_DSN_{role}"), provider)
        self.opened.append(store)
        return store

    def test_the_ledger_and_shredder_roles_create_read_and_destroy_keys(
        self, provider: LocalKeyFileProvider, subjects: list[uuid.UUID]
    ) -> None:
        alice, bob = subjects
        ledger, shredder = self.open("LEDGER", provider), self.open("SHREDDER", provider)
        key = ledger.create(alice, MARKETING)
        ref = ledger.blind_index("shop", "1001")
        assert ledger.link_reference(ref, alice) == alice
        assert same_key(shredder.get_by_id(key.key_id), key)
        assert shredder.create(bob, MARKETING).version == 1
        request = uuid.uuid4().bytes * 2  # a request digest of a test's own
        assert [s.key_id for s in shredder.erase_subject(alice, [request])] == [key.key_id]
        assert ledger.find_reference(ref) is None
        assert ledger.find_erased_request(request) == alice
        with pytest.raises(ScopeShredded):
            ledger.get_or_create(alice, MARKETING)

    def test_the_query_role_reads_keys_but_cannot_create_or_destroy_them(
        self, provider: LocalKeyFileProvider, subjects: list[uuid.UUID]
    ) -> None:
        alice, bob = subjects
        key = self.open("LEDGER", provider).create(alice, MARKETING)
        query = self.open("QUERY", provider)
        assert same_key(query.get(alice, MARKETING), key)
        assert same_key(query.get_by_id(key.key_id), key)
        for attempt in (
            lambda: query.create(bob, MARKETING),
            lambda: query.destroy(alice, [MARKETING]),
            lambda: query.erase_subject(alice),
            lambda: query.link_reference(query.blind_index("shop", "1001"), alice),
        ):
            with pytest.raises(KeystoreError, match="permission denied"):
                attempt()
        assert same_key(query.get(alice, MARKETING), key)

    def test_the_processors_role_is_denied_the_keystore(
        self, provider: LocalKeyFileProvider, subjects: list[uuid.UUID]
    ) -> None:
        key = self.open("LEDGER", provider).create(subjects[0], MARKETING)
        processors = self.open("PROCESSORS", provider)
        for attempt in (
            lambda: processors.get(subjects[0], MARKETING),
            lambda: processors.get_by_id(key.key_id),
            lambda: processors.find_reference(processors.blind_index("shop", "1001")),
            lambda: processors.find_erased_request(b"\x00" * 32),
            lambda: processors.create(subjects[1], MARKETING),
        ):
            with pytest.raises(KeystoreError, match="permission denied") as caught:
                attempt()
            assert key.key_id not in str(caught.value)

    def test_only_the_owner_may_vacuum_the_keystore(
        self, provider: LocalKeyFileProvider, subjects: list[uuid.UUID]
    ) -> None:
        shredder = self.open("SHREDDER", provider)
        shredder.create(subjects[0], MARKETING)
        shredder.erase_subject(subjects[0])
        for role in ("SHREDDER", "LEDGER", "QUERY"):
            with pytest.raises(KeystoreError, match="only the owner"):
                self.open(role, provider).vacuum()
        vacuumed(self.open("OWNER", provider))
