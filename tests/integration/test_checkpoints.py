"""WAL checkpoints from a thread of their own: the WAL stays short, nothing committed is lost."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eventsourcing.persistence import StoredEvent

from consentry.adapters.sqlite_checkpoints import CHECKPOINT_ROWS, WRITER_CACHE_KIB, Checkpointer
from consentry.adapters.sqlite_keystore import SQLiteKeystore
from consentry.adapters.sqlite_ledger import CheckpointedSQLiteRecorder
from consentry.adapters.sqlite_views import SQLiteViewStore
from consentry.core.sealing import SealedValue
from consentry.core.settings import load_settings
from consentry.core.views import PutValue
from consentry.platform import Platform
from tests.support import EXAMPLE_POLICY, T0, canary, record, submit, until

ROWS = 400


PASSIVE = "PRAGMA wal_checkpoint(PASSIVE)"


def _writer(path: Path) -> sqlite3.Connection:
    """A WAL database of one table whose writer never checkpoints by itself."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("CREATE TABLE t (k BLOB PRIMARY KEY, v BLOB NOT NULL)")
    return db


def _commit_rows(db: sqlite3.Connection) -> None:
    """One commit of ROWS rows under random keys (each lands on a page anywhere in the tree)."""
    db.execute("BEGIN IMMEDIATE")
    db.executemany(
        "INSERT INTO t VALUES (?, ?)", [(os.urandom(16), os.urandom(200)) for _ in range(ROWS)]
    )
    db.execute("COMMIT")


def _hooked(
    before_passive: Callable[[], None] = lambda: None,
    after_passive: Callable[[], None] = lambda: None,
) -> type[Checkpointer]:
    """A Checkpointer whose thread runs the hooks around each round's PASSIVE checkpoint."""

    class Connection(sqlite3.Connection):
        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
            if sql == PASSIVE:
                before_passive()
            cursor = super().execute(sql, *args)
            if sql == PASSIVE:
                after_passive()
            return cursor

    class Hooked(Checkpointer):
        connection_factory = Connection

    return Hooked


def _until(done: Callable[[], bool]) -> None:
    until(done, "the checkpoints' thread did not get there")


def _wal_bytes(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def test_the_thread_checkpoints_after_enough_rows_and_the_wal_starts_again(tmp_path: Path) -> None:
    unchecked = tmp_path / "unchecked.db"
    alone = _writer(unchecked)
    for _ in range(40):
        _commit_rows(alone)
    grown = _wal_bytes(unchecked)
    alone.close()
    path = tmp_path / "store.db"
    db = _writer(path)
    checkpoints = Checkpointer(path, rows=2 * ROWS)
    try:
        largest = 0
        for n in range(1, 41):
            _commit_rows(db)
            checkpoints.committed(ROWS)
            rounds = n // 2  # a round every second commit
            _until(lambda: checkpoints.rounds == rounds)  # noqa: B023 - called before the next n
            largest = max(largest, _wal_bytes(path))
        assert checkpoints.rounds == 20
    finally:
        checkpoints.close()
    assert db.execute("SELECT count(*) FROM t").fetchone() == (40 * ROWS,)
    # The WAL was written again from its beginning after each round instead of growing with
    # every commit as it does without checkpoints: it never held more than a few commits' pages.
    assert 0 < 4 * largest < grown
    db.close()


def test_a_round_starts_the_wal_again_even_when_the_writer_committed_during_its_passive_pass(
    tmp_path: Path,
) -> None:
    """The PASSIVE pass copies the WAL only as far as it may: pages committed while it runs (here:
    after a reader's snapshot, which holds the pass back just the same) stay behind it, and SQLite
    starts the WAL again only once every page is copied. The round's RESTART copies the rest and
    makes the next commit write the WAL from its beginning; without it, the WAL of a busy writer
    would only grow."""
    path = tmp_path / "store.db"
    db = _writer(path)
    reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    midway = threading.Event()

    def commit_behind_a_snapshot() -> None:
        if not midway.is_set():
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM t").fetchone()
            _commit_rows(db)

    def end_the_snapshot() -> None:
        if not midway.is_set():
            midway.set()
            reader.execute("COMMIT")

    hooked = _hooked(before_passive=commit_behind_a_snapshot, after_passive=end_the_snapshot)
    checkpoints = hooked(path, rows=ROWS)
    try:
        for _ in range(10):  # a few hundred pages of WAL before the round
            _commit_rows(db)
        checkpoints.committed(ROWS)
        _until(lambda: checkpoints.rounds == 1)
        assert midway.is_set()
        before = _wal_bytes(path)
        _commit_rows(db)
        # Written from the WAL's beginning: over the old frames, not after them.
        assert _wal_bytes(path) == before
        checkpoints.pause(True)
        frames = db.execute(PASSIVE).fetchone()[1]
        assert 0 < frames * 4096 < before // 2
    finally:
        checkpoints.close()
        reader.close()
    assert db.execute("SELECT count(*) FROM t").fetchone() == (12 * ROWS,)
    db.close()


def test_a_paused_checkpointer_leaves_the_wal_to_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    db = _writer(path)
    checkpoints = Checkpointer(path, rows=ROWS)
    try:
        checkpoints.pause(True)
        for _ in range(10):
            _commit_rows(db)
            checkpoints.committed(ROWS)
        time.sleep(0.2)
        assert checkpoints.rounds == 0
        assert _wal_bytes(path) > path.stat().st_size  # every page is in the WAL still
        checkpoints.pause(False)  # rows committed while paused do not count
        time.sleep(0.1)
        assert checkpoints.rounds == 0
        _commit_rows(db)
        checkpoints.committed(ROWS)
        _until(lambda: checkpoints.rounds == 1)
    finally:
        checkpoints.close()
    assert not checkpoints._thread.is_alive()
    db.close()


def test_the_embedded_ledger_keystore_and_views_are_checkpointed_off_the_writer(
    tmp_path: Path,
) -> None:
    platform = Platform.open(load_settings(data_dir=tmp_path, policy=EXAMPLE_POLICY))
    recorder = platform.ledger.recorder
    assert isinstance(recorder, CheckpointedSQLiteRecorder)
    assert isinstance(platform.views, SQLiteViewStore)
    views_checkpoints = platform.views._checkpoints
    assert isinstance(platform.keystore, SQLiteKeystore)
    keystore_checkpoints = platform.keystore._checkpoints
    try:
        for n in range(12):
            submit(
                platform.ledger,
                *[
                    record("consent.grant", f"shop:{canary(f'ref{n}-{m}')}", purpose="support")
                    for m in range(60)
                ],
            )
            platform.after_write()
        every = (recorder.checkpoints, views_checkpoints, keystore_checkpoints)
        _until(lambda: all(checkpoints.rounds > 0 for checkpoints in every))
    finally:
        platform.close()
    assert not any(checkpoints._thread.is_alive() for checkpoints in every)


def test_the_ledgers_writing_connection_keeps_a_page_cache_of_its_own_size(tmp_path: Path) -> None:
    platform = Platform.open(load_settings(data_dir=tmp_path, policy=EXAMPLE_POLICY))
    recorder = platform.ledger.recorder
    assert isinstance(recorder, CheckpointedSQLiteRecorder)
    try:
        with recorder.datastore.transaction(commit=True) as cursor:
            cursor.execute("PRAGMA cache_size=-1")  # a pool connection as a reader left it
            recorder._insert_events(cursor, [StoredEvent(uuid.uuid4(), 1, "fake.Event", b"\x00")])
            cursor.execute("PRAGMA cache_size")
            assert cursor.fetchone()[0] == -WRITER_CACHE_KIB
    finally:
        platform.close()


def test_pausing_waits_for_the_round_under_way(tmp_path: Path) -> None:
    """A checkpoint of the writer's own (a reset's, a destroy's) needs the checkpoint lock a round
    holds: pausing returns only once no round runs, and none starts until it is resumed."""
    path = tmp_path / "store.db"
    db = _writer(path)
    for _ in range(60):  # a WAL of some 30 MiB: its round takes long enough to be seen running
        _commit_rows(db)
    checkpoints = Checkpointer(path, rows=ROWS)
    try:
        checkpoints.committed(ROWS)
        _until(lambda: checkpoints._running)
        checkpoints.pause(True)
        assert not checkpoints._running and checkpoints.rounds == 1
        assert db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0  # not busy
        checkpoints.committed(10 * ROWS)
        time.sleep(0.1)
        assert checkpoints.rounds == 1
        with checkpoints.paused():
            pass
        assert checkpoints._paused  # as it was before
    finally:
        checkpoints.close()
    db.close()


def test_a_reset_right_after_a_large_apply_leaves_no_round_in_its_way(tmp_path: Path) -> None:
    """The apply's commit starts a round; the reset's truncating checkpoint must not find the
    checkpoint lock taken by it (a replay failed so once: 'readers held the WAL')."""
    store = SQLiteViewStore(tmp_path / "views.db")
    try:
        for _ in range(10):
            subject = uuid.uuid4()
            puts = [
                PutValue(subject, "support", f"field-{n}", _sealed(), uuid.uuid4(), T0)
                for n in range(3000)
            ]
            store.apply("views", puts, 1)
            store.reset("views")
            assert store.dump()["profile_values"] == []
    finally:
        store.close()


def test_a_reset_waits_for_the_round_under_way_before_its_own_checkpoint(tmp_path: Path) -> None:
    """Held at the start of its PASSIVE pass, a round keeps a reset waiting: the reset's own
    truncating checkpoint runs only after the round is done, never beside it."""
    path = tmp_path / "views.db"
    store = SQLiteViewStore(path)
    started, release = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        assert release.wait(20), "the test never let the round go on"

    store._checkpoints.close()
    store._checkpoints = _hooked(before_passive=hold)(path)
    resetting = threading.Thread(target=store.reset, args=("views",))
    try:
        puts = [
            PutValue(uuid.uuid4(), "support", f"field-{n}", _sealed(), uuid.uuid4(), T0)
            for n in range(2 * CHECKPOINT_ROWS)
        ]
        store.apply("views", puts, 1)
        assert started.wait(20), "the apply's commit started no round"
        resetting.start()
        resetting.join(0.3)
        assert resetting.is_alive()  # waiting for the round
        assert len(store.dump()["profile_values"]) == len(puts)  # nothing deleted yet
        release.set()
        resetting.join(20)
        assert not resetting.is_alive()
        assert store.dump()["profile_values"] == []
        assert store._checkpoints.rounds == 1
        assert _wal_bytes(path) == 0  # the reset's checkpoint emptied the WAL
    finally:
        release.set()
        if resetting.ident is not None:
            resetting.join(20)
        store.close()


def _sealed() -> SealedValue:
    return SealedValue("purpose:support", uuid.uuid4().hex, os.urandom(12), os.urandom(40))
