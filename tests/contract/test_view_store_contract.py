"""One contract for the read-model stores: SQLite (embedded) and PostgreSQL (distributed)."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from consentry.adapters.postgres_views import PostgresViewStore, migrate
from consentry.adapters.sql_views import ViewStoreError
from consentry.adapters.sqlite_checkpoints import SQLITE_DEFAULT_CACHE, WRITER_CACHE_KIB
from consentry.adapters.sqlite_views import SQLiteViewStore
from consentry.core.sealing import SealedValue
from consentry.core.views import (
    AccessRow,
    AddAccess,
    Change,
    ConsentRow,
    DropValues,
    ErasureRow,
    MarkApplied,
    PutConsent,
    PutErasure,
    PutSubject,
    PutValue,
    ViewStore,
)
from tests.services import pg_dsn, scratch_schema
from tests.support import T0


def sealed(scope: str) -> SealedValue:
    return SealedValue(scope, uuid.uuid4().hex, b"n" * 12, uuid.uuid4().bytes)


class ViewStoreContract(ABC):
    @abstractmethod
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[ViewStore]: ...

    def test_changes_and_position_commit_together_and_read_back(self, store: ViewStore) -> None:
        subject, event = uuid.uuid4(), uuid.uuid4()
        value = sealed("purpose:support")
        store.apply(
            "views",
            [
                PutSubject(subject, "active", T0, 1),
                PutValue(subject, "support", "email", value, event, T0),
                PutConsent(subject, ConsentRow("support", "granted", "consent", T0, None), event),
                AddAccess(
                    subject,
                    AccessRow(event, "alice", "agent", "support", ("email",), "profile", True, "", T0),
                ),
                MarkApplied(subject, 3),
            ],
            7,
        )
        assert store.position("views") == 7
        assert store.values(subject) == {"support": {"email": value}}
        assert store.values(subject, "marketing") == {}
        assert store.consents(subject) == [ConsentRow("support", "granted", "consent", T0, None)]
        assert [a.actor_id for a in store.accesses(subject)] == ["alice"]
        assert store.subject_status(subject) == "active"
        assert store.applied([subject, uuid.uuid4()]) == {subject: 3}

    def test_current_values_are_the_purposes_values_once_the_views_hold_the_version(
        self, store: ViewStore
    ) -> None:
        subject, event = uuid.uuid4(), uuid.uuid4()
        email, phone, mark = sealed("purpose:support"), sealed("purpose:support"), sealed("purpose:m")
        # Nothing applied yet: behind for any version but 0.
        assert store.current_values(subject, "support", 1) is None
        assert store.current_values(subject, "support", 0) == {}
        store.apply(
            "views",
            [
                PutValue(subject, "support", "phone", phone, event, T0),
                PutValue(subject, "support", "email", email, event, T0),
                PutValue(subject, "marketing", "email", mark, event, T0),
                MarkApplied(subject, 4),
            ],
            1,
        )
        assert store.current_values(subject, "support", 5) is None
        got = store.current_values(subject, "support", 4)
        assert got == {"email": email, "phone": phone}
        assert list(got or {}) == ["email", "phone"]  # by field, as `values` answers
        assert store.current_values(subject, "support", 2) == store.values(subject, "support")["support"]
        # Current, with nothing held for the purpose.
        assert store.current_values(subject, "contracts", 4) == {}

    def test_replacing_dropping_and_erasing(self, store: ViewStore) -> None:
        subject, event = uuid.uuid4(), uuid.uuid4()
        store.apply(
            "views",
            [
                PutValue(subject, "support", "email", sealed("purpose:support"), event, T0),
                PutValue(subject, "marketing", "email", sealed("purpose:marketing"), event, T0),
            ],
            1,
        )
        newer = sealed("purpose:support")
        store.apply("views", [PutValue(subject, "support", "email", newer, event, T0)], 2)
        store.apply("views", [DropValues(subject, ("purpose:marketing",))], 3)
        assert store.values(subject) == {"support": {"email": newer}}
        erased = ErasureRow("erased", T0 + timedelta(seconds=1), event, b"cert", b"sig")
        store.apply("views", [DropValues(subject, None), PutErasure(subject, erased)], 4)
        assert store.values(subject) == {}
        assert store.erasure(subject) == erased

    def test_a_failed_page_changes_nothing(self, store: ViewStore) -> None:
        subject, event = uuid.uuid4(), uuid.uuid4()
        good = PutValue(subject, "support", "email", sealed("purpose:support"), event, T0)
        bad = PutSubject(subject, None, T0, 1)  # type: ignore[arg-type]  # NOT NULL column
        with pytest.raises(ViewStoreError):
            store.apply("views", [good, bad], 9)
        assert store.values(subject) == {}
        assert store.position("views") == 0

    def test_a_page_with_a_change_of_unknown_kind_is_refused_whole(self, store: ViewStore) -> None:
        subject, event = uuid.uuid4(), uuid.uuid4()
        good = PutValue(subject, "support", "email", sealed("purpose:support"), event, T0)
        with pytest.raises(ViewStoreError, match="unknown view change"):
            store.apply("views", [good, object()], 9)  # type: ignore[list-item]  # not a Change
        assert store.values(subject) == {}
        assert store.position("views") == 0

    def test_one_page_of_interleaved_changes_equals_the_changes_one_at_a_time(
        self, store: ViewStore
    ) -> None:
        # The store may batch a page's changes per table; the order within each table must hold
        # (a value put, dropped and put again; a subject active, then erasing; marks rising).
        a, b, event = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        first, second = sealed("purpose:support"), sealed("purpose:support")
        page: list[Change] = [
            PutSubject(a, "active", T0, 1),
            PutValue(a, "support", "email", first, event, T0),
            MarkApplied(a, 1),
            AddAccess(
                a, AccessRow(event, "al", "agent", "support", ("email",), "profile", True, "", T0)
            ),
            DropValues(a, ("purpose:support",)),
            PutConsent(b, ConsentRow("support", "granted", "consent", T0, None), event),
            PutValue(b, "support", "email", first, event, T0),
            PutValue(a, "support", "email", second, event, T0 + timedelta(seconds=1)),
            MarkApplied(a, 2),
            PutSubject(a, "erasing", T0, 2),
            DropValues(b, None),
            PutErasure(a, ErasureRow("requested", T0, event)),
            MarkApplied(b, 5),
        ]
        store.apply("views", page, 13)
        together = store.dump()
        store.reset("views")
        for position, change in enumerate(page, start=1):
            store.apply("views", [change], position)
        assert store.dump() == together
        assert store.values(a) == {"support": {"email": second}}
        assert store.values(b) == {}
        assert store.subject_status(a) == "erasing"
        assert store.applied([a, b]) == {a: 2, b: 5}

    def test_a_page_of_many_rows_per_table_equals_its_rows_one_at_a_time(self, store: ViewStore) -> None:
        # Many rows of each insert in one page (a store may send them as one statement): a key put
        # several times keeps its last row, a repeated access its first, and columns that are
        # NULL in every row of the page stay NULL.
        subjects = [uuid.uuid4() for _ in range(40)]
        event = uuid.uuid4()
        page: list[Change] = []
        for n, subject in enumerate(subjects):
            page += [
                PutSubject(subject, "active", T0, n),
                PutConsent(subject, ConsentRow("support", "granted", "consent", T0, None), event),
                PutValue(subject, "support", "email", sealed("purpose:support"), event, T0),
                PutValue(subject, "support", "phone", sealed("purpose:support"), event, T0),
                PutErasure(subject, ErasureRow("requested", T0, event)),
                MarkApplied(subject, n + 1),
            ]
        access = AccessRow(event, "al", "agent", "support", ("email",), "profile", True, "", T0)
        again = AccessRow(event, "bo", "agent", "support", ("phone",), "profile", False, "no", T0)
        last = sealed("purpose:support")
        page += [
            AddAccess(subjects[0], access),
            AddAccess(subjects[0], again),  # the same event's entry again: the first one stays
            PutValue(subjects[1], "support", "email", last, event, T0 + timedelta(seconds=1)),
            PutSubject(subjects[1], "erasing", T0, 99),
            PutConsent(subjects[1], ConsentRow("support", "withdrawn", "consent", T0, T0), event),
            MarkApplied(subjects[1], 100),
        ]
        store.apply("views", page, len(page))
        together = store.dump()
        store.reset("views")
        for position, change in enumerate(page, start=1):
            store.apply("views", [change], position)
        assert store.dump() == together
        assert store.values(subjects[1], "support")["support"]["email"] == last
        assert store.subject_status(subjects[1]) == "erasing"
        assert store.consents(subjects[1]) == [ConsentRow("support", "withdrawn", "consent", T0, T0)]
        assert store.consents(subjects[2]) == [ConsentRow("support", "granted", "consent", T0, None)]
        assert store.erasure(subjects[2]) == ErasureRow("requested", T0, event)
        assert [a.actor_id for a in store.accesses(subjects[0])] == ["al"]
        assert store.applied(subjects[:3]) == {subjects[0]: 1, subjects[1]: 100, subjects[2]: 3}

    def test_positions_by_prefix_and_reset(self, store: ViewStore) -> None:
        store.apply_at([], {"kafka:0": 5, "kafka:1": 9, "other": 1})
        assert store.positions("kafka:") == {"kafka:0": 5, "kafka:1": 9}
        subject = uuid.uuid4()
        store.apply("views", [MarkApplied(subject, 2)], 3)
        store.reset("views")
        assert store.positions("") == {}
        assert store.applied([subject]) == {}
        assert all(rows == [] for rows in store.dump().values())


class TestSQLiteViewStore(ViewStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[ViewStore]:
        store = SQLiteViewStore(tmp_path / "views.db")
        yield store
        store.close()

    def test_a_shred_after_a_reset_still_leaves_no_byte_of_the_values_in_the_files(
        self, tmp_path: Path
    ) -> None:
        # A reset frees the tables' pages without zeroing them, then leaves none in the file; the
        # deletes after it zero what they delete, as before.
        where, store, subject, puts = _store_with(tmp_path / "shred", 2000)
        values = [put.sealed for put in puts]

        def left() -> list[SealedValue]:
            return _left_in(where, values)

        store.apply("views", puts, 1)
        assert len(left()) == len(values)
        store.reset("views")
        assert left() == []
        store.apply("views", puts, 1)
        store.apply("views", [DropValues(subject, ("purpose:support",))], 2)
        store.close()  # the last connection's close empties the WAL into the file
        assert left() == []

    def test_bulk_writes_checkpoint_less_often_only_meanwhile(self, store: ViewStore) -> None:
        assert isinstance(store, SQLiteViewStore)

        def every() -> int:
            return int(store._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0])

        def cache() -> int:
            return int(store._db.execute("PRAGMA cache_size").fetchone()[0])

        # Live, the checkpoints' thread checkpoints; the writer only past its fallback, and it
        # keeps the pages it rereads in a cache of its own size.
        assert every() == 10_000 and not store._checkpoints._paused
        assert cache() == -WRITER_CACHE_KIB
        with store.bulk_writes():
            # A rebuild keeps SQLite's default cache: its memory stays flat in the log's size.
            assert every() == 20_000 and store._checkpoints._paused
            assert cache() == SQLITE_DEFAULT_CACHE
            store.apply("views", [MarkApplied(uuid.uuid4(), 1)], 1)
        assert every() == 10_000 and not store._checkpoints._paused
        assert cache() == -WRITER_CACHE_KIB
        with pytest.raises(RuntimeError), store.bulk_writes():
            raise RuntimeError("a rebuild failed")
        assert every() == 10_000 and not store._checkpoints._paused
        assert cache() == -WRITER_CACHE_KIB
        store.reset("views")  # with the default cache meanwhile, then the writer's again
        assert cache() == -WRITER_CACHE_KIB

    def test_a_reset_waits_for_a_reader_of_an_older_snapshot_before_leaving_the_files(
        self, tmp_path: Path
    ) -> None:
        where, store, _subject, puts = _store_with(tmp_path / "held", 500)
        store.apply("views", puts, 1)
        reader = sqlite3.connect(where / "views.db", isolation_level=None)
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM profile_values").fetchone() == (500,)
        resetting = threading.Thread(target=store.reset, args=("views",))
        resetting.start()
        resetting.join(0.5)
        assert resetting.is_alive()  # the checkpoint waits: the reader's snapshot is in the WAL
        reader.execute("COMMIT")
        reader.close()
        resetting.join(10)
        assert not resetting.is_alive()
        assert _left_in(where, [put.sealed for put in puts]) == []
        store.close()

    def test_a_read_sees_the_last_commit_without_waiting_for_an_apply_under_way(
        self, store: ViewStore
    ) -> None:
        # The event loop reads the views itself (`reads_inline`): a read must never wait behind a
        # page being applied, which holds the writer's lock for its whole transaction.
        assert isinstance(store, SQLiteViewStore) and store.reads_inline
        subject = uuid.uuid4()
        store.apply("views", [MarkApplied(subject, 1)], 1)
        inside, release = threading.Event(), threading.Event()

        def slow_apply() -> None:
            with store._transaction() as cur:
                cur.execute("UPDATE applied SET sequence = 2")
                inside.set()
                release.wait(10)

        writer = threading.Thread(target=slow_apply)
        writer.start()
        assert inside.wait(10)
        seen: list[dict[uuid.UUID, int]] = []
        reader = threading.Thread(target=lambda: seen.append(store.applied([subject])))
        reader.start()
        reader.join(timeout=5)
        finished = not reader.is_alive()
        release.set()
        writer.join(timeout=10)
        reader.join(timeout=10)
        assert finished, "the read waited for the apply"
        assert seen == [{subject: 1}]
        assert store.applied([subject]) == {subject: 2}


class TestPostgresViewStore(ViewStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[ViewStore]:
        with scratch_schema("views_test") as schema:
            migrate(pg_dsn("owner"), schema)
            store = PostgresViewStore(pg_dsn("owner"), schema)
            yield store
            store.close()

    def test_each_insert_of_a_page_goes_as_one_statement(
        self, store: ViewStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        a, b, event = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        page: list[Change] = []
        emails = {a: sealed("purpose:support"), b: sealed("purpose:support")}
        for subject, email in emails.items():
            access = AccessRow(uuid.uuid4(), "al", "agent", "support", (), "profile", True, "", T0)
            page += [
                PutValue(subject, "support", "email", email, event, T0),
                PutConsent(subject, ConsentRow("support", "granted", "consent", T0, None), event),
                AddAccess(subject, access),
                PutSubject(subject, "active", T0, 1),
                PutErasure(subject, ErasureRow("requested", T0, event)),
                MarkApplied(subject, 1),
            ]
        sent: list[str] = []
        execute = psycopg.Cursor.execute

        def counted(cursor: Any, query: Any, params: Any = None, **kwargs: Any) -> Any:
            sent.append(str(query).split()[2].strip('"'))  # the table
            return execute(cursor, query, params, **kwargs)

        def row_by_row(*args: Any, **kwargs: Any) -> None:
            raise AssertionError("an insert went row by row")

        monkeypatch.setattr(psycopg.Cursor, "execute", counted)
        monkeypatch.setattr(psycopg.Cursor, "executemany", row_by_row)
        assert isinstance(store, PostgresViewStore)
        store.apply_at(page, {"views": 12, "other": 3})
        tables = ["profile_values", "consents", "accesses", "subjects", "erasures", "applied"]
        assert sent == [*tables, "positions"]
        assert store.values(b) == {"support": {"email": emails[b]}}

    def test_an_insert_whose_conflict_keeps_other_columns_goes_row_by_row(
        self, store: ViewStore
    ) -> None:
        assert isinstance(store, PostgresViewStore)
        upsert = "INSERT INTO applied VALUES (?,?) ON CONFLICT (subject_id) DO UPDATE SET "
        assert store._insert(upsert + "sequence=excluded.sequence") is not None
        assert store._insert(upsert + "sequence=applied.sequence + 1") is None
        partial = "INSERT INTO subjects VALUES (?,?,?,?) ON CONFLICT (subject_id) DO UPDATE SET "
        assert store._insert(partial + "status=excluded.status") is None
        unknown = "INSERT INTO applied VALUES (?,?) ON CONFLICT (nothing) DO UPDATE SET "
        assert store._insert(unknown + "sequence=excluded.sequence") is None
        assert store._insert("INSERT INTO nowhere VALUES (?,?) ON CONFLICT DO NOTHING") is None
        assert store._insert("INSERT INTO applied VALUES (?) ON CONFLICT DO NOTHING") is None


def test_the_processors_role_writes_views_and_cannot_touch_the_keystore() -> None:
    migrate(pg_dsn("owner"), "views")
    store = PostgresViewStore(pg_dsn("processors"))
    subject = uuid.uuid4()
    store.apply("contract-check", [MarkApplied(subject, 1)], 1)
    assert store.applied([subject]) == {subject: 1}
    store.close()
    # The real views schema is shared with the distributed tests: leave nothing behind.
    with psycopg.connect(pg_dsn("owner"), autocommit=True) as conn:
        conn.execute("DELETE FROM views.applied WHERE subject_id = %s", (subject.bytes,))
        conn.execute("DELETE FROM views.positions WHERE name = 'contract-check'")
    with (
        psycopg.connect(pg_dsn("processors")) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("SELECT 1 FROM keystore.data_keys LIMIT 1")


def _store_with(where: Path, count: int) -> tuple[Path, SQLiteViewStore, uuid.UUID, list[PutValue]]:
    """A SQLite store in `where`, and one subject's `count` sealed values of one purpose (each
    under a field of its own) to put in it."""
    subject, event = uuid.uuid4(), uuid.uuid4()
    puts = [
        PutValue(subject, "support", f"field-{n}", sealed("purpose:support"), event, T0)
        for n in range(count)
    ]
    return where, SQLiteViewStore(where / "views.db"), subject, puts


def _left_in(where: Path, values: list[SealedValue]) -> list[SealedValue]:
    """The values whose ciphertext some file under `where` still holds."""
    files = b"".join(p.read_bytes() for p in where.iterdir())
    return [v for v in values if v.ciphertext in files]
