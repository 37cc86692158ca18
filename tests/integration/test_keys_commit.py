"""The embedded keystore commits a batch's keys on a thread of its own while the ledger inserts the
batch's events; the events commit only once the keys are durable, and not at all if they fail."""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from consentry.adapters.sqlite_keystore import SQLiteKeystore
from consentry.core.errors import KeystoreError
from consentry.core.sealing import Personal
from consentry.core.settings import load_settings
from consentry.ledger.subject import Outcome
from consentry.platform import Platform
from tests.support import EXAMPLE_POLICY, canary, fake_email, record, submit, until


def _count(path: Path, table: str) -> int:
    with closing(sqlite3.connect(path)) as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608


def _waiting_for_keys(thread: threading.Thread) -> bool:
    """Whether the thread waits in a PendingCommit, called from inside the event store's insert
    (its transaction open, the events inserted), not before it."""
    frame = sys._current_frames().get(thread.ident or -1)
    calls = []
    while frame is not None:
        calls.append((frame.f_code.co_name, Path(frame.f_code.co_filename).name))
        frame = frame.f_back
    return ("settle", "pending_commit.py") in calls and ("_insert_events", "sqlite_ledger.py") in calls


class _FailingCommit:
    """The keystore's connection, whose next COMMIT fails as a full disk would make it."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self.failed = False

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT" and not self.failed:
            self.failed = True
            raise sqlite3.OperationalError("database or disk is full")
        return self._db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


@pytest.fixture
def platform(tmp_path: Path) -> Any:
    opened = Platform.open(load_settings(data_dir=tmp_path, policy=EXAMPLE_POLICY))
    try:
        yield opened
    finally:
        opened.close()


def test_the_events_commit_after_their_keys_whose_commit_runs_beside_the_inserts(
    platform: Platform, tmp_path: Path
) -> None:
    keystore = platform.keystore
    assert isinstance(keystore, SQLiteKeystore)
    started, release = threading.Event(), threading.Event()
    committers: list[str] = []
    commit = keystore._commit

    def held_commit(changed: int) -> None:
        committers.append(threading.current_thread().name)
        started.set()
        release.wait(20)
        commit(changed)

    keystore._commit = held_commit  # type: ignore[method-assign]
    email = fake_email()
    ref = f"shop:{canary('ref')}"
    outcomes: list[Outcome] = []
    writer = threading.Thread(
        target=lambda: outcomes.extend(
            submit(
                platform.ledger,
                record("consent.grant", ref, purpose="support"),
                record("data.update", ref, purpose="support", fields={"email": email}),
            )
        )
    )
    writer.start()
    try:
        assert started.wait(20), "the keys' commit never started"
        # The ledger's thread has inserted the events and now waits for the keys, inside its
        # transaction: neither the keys nor the events are in their files yet.
        until(lambda: _waiting_for_keys(writer), "the ledger did not wait for its keys")
        assert _count(tmp_path / "keystore.db", "data_keys") == 0
        assert _count(tmp_path / "events.db", "stored_events") == 0
    finally:
        release.set()
        writer.join(20)
    assert committers and committers[0].startswith("keystore-commit")
    assert [o.status for o in outcomes] == ["accepted", "accepted"]
    assert _count(tmp_path / "keystore.db", "data_keys") >= 2
    _assert_written(platform, tmp_path, outcomes, email)


def _assert_written(platform: Platform, tmp_path: Path, outcomes: list[Outcome], email: str) -> None:
    """The subject's events are all in events.db, and its email opens under its durable key."""
    subject_id = outcomes[0].subject_id
    assert subject_id is not None
    history = platform.ledger.history(subject_id, reveal=True)
    assert _count(tmp_path / "events.db", "stored_events") == len(history) >= 2
    updates = [e for e in history if type(e).__name__ == "DataUpdated"]
    assert [getattr(e, "fields") for e in updates] == [{"email": Personal(email)}]  # noqa: B009


def test_a_failed_commit_of_the_keys_writes_no_event_and_leaves_no_key_cached(
    platform: Platform, tmp_path: Path
) -> None:
    keystore = platform.keystore
    assert isinstance(keystore, SQLiteKeystore)
    failing = _FailingCommit(keystore._db)
    keystore._db = failing  # type: ignore[assignment]
    email = fake_email()
    ref = f"shop:{canary('ref')}"
    records = (
        record("consent.grant", ref, purpose="support"),
        record("data.update", ref, purpose="support", fields={"email": email}),
    )
    with pytest.raises(KeystoreError, match="keystore commit failed"):
        submit(platform.ledger, *records)
    assert failing.failed
    assert _count(tmp_path / "keystore.db", "data_keys") == 0
    assert _count(tmp_path / "events.db", "stored_events") == 0
    assert len(keystore._cache) == 0  # no key of the failed batch is handed out again

    # Nothing of it was written, so the same records go in afresh, sealed under new, durable keys.
    outcomes = submit(platform.ledger, *records)
    assert [o.status for o in outcomes] == ["accepted", "accepted"]
    _assert_written(platform, tmp_path, outcomes, email)


def test_a_failed_commit_settled_by_a_destroy_and_by_the_ledger_at_once_ends_both(
    platform: Platform, tmp_path: Path
) -> None:
    keystore = platform.keystore
    assert isinstance(keystore, SQLiteKeystore)
    first = record("consent.grant", f"shop:{canary('ref')}", purpose="support")
    earlier = submit(platform.ledger, first)
    other = earlier[0].subject_id
    assert other is not None
    started, release = threading.Event(), threading.Event()
    commit = keystore._commit

    def failing_commit(changed: int) -> None:
        started.set()
        release.wait(20)
        keystore._db = _FailingCommit(keystore._db)  # type: ignore[assignment]
        commit(changed)

    keystore._commit = failing_commit  # type: ignore[method-assign]
    errors: list[BaseException] = []

    def run(work: Callable[[], object]) -> threading.Thread:
        def guarded() -> None:
            try:
                work()
            except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
                errors.append(exc)

        thread = threading.Thread(target=guarded, daemon=True)
        thread.start()
        return thread

    ref = f"shop:{canary('ref')}"
    writer = run(lambda: submit(platform.ledger, record("consent.grant", ref, purpose="support")))
    assert started.wait(20)
    until(lambda: _waiting_for_keys(writer), "the ledger did not wait for its keys")
    # The shredder's destroy holds the keystore's lock while it waits for the same commit; the
    # failure then wakes both, and each drops the batch's keys or leaves that to the other.
    shredder = run(lambda: keystore.destroy(other, ["purpose:support"]))
    time.sleep(0.2)
    release.set()
    writer.join(20)
    shredder.join(20)
    assert not writer.is_alive() and not shredder.is_alive(), "the two waits deadlocked"
    assert [type(e) for e in errors] == [KeystoreError]
    assert _count(tmp_path / "events.db", "stored_events") == len(platform.ledger.history(other))
