"""WAL checkpoints from a thread of their own: the WAL stays short, nothing committed is lost."""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from eventsourcing.persistence import StoredEvent

from consentry.adapters.sqlite_checkpoints import WRITER_CACHE_KIB, Checkpointer
from consentry.adapters.sqlite_keystore import SQLiteKeystore
from consentry.adapters.sqlite_ledger import CheckpointedSQLiteRecorder
from consentry.adapters.sqlite_views import SQLiteViewStore
from consentry.core.sealing import SealedValue
from consentry.core.settings import load_settings
from consentry.core.views import PutValue
from consentry.platform import Platform
from tests.support import EXAMPLE_POLICY, T0, canary, record, submit

ROWS = 400


def _writer(path: Path) -> sqlite3.Connection:
    """A WAL database of one table whose writer never checkpoints by itself."""
    db = sqlite3.connect(path, isolation_level=None)
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


def _until(done: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "the checkpoints' thread did not get there"
        time.sleep(0.005)


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


def _sealed() -> SealedValue:
    return SealedValue("purpose:support", uuid.uuid4().hex, os.urandom(12), os.urandom(40))
