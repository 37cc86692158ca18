"""Read models in one SQLite file (`views.db`) of the embedded platform."""

from __future__ import annotations

import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from consentry.adapters.sql_views import TABLES, Cursor, SqlViewStore, ViewStoreError
from consentry.adapters.sqlite_binding import bind_directly
from consentry.adapters.sqlite_checkpoints import (
    FALLBACK_CHECKPOINT_PAGES,
    SQLITE_DEFAULT_CACHE,
    WRITER_CACHE_KIB,
    Checkpointer,
)

__all__ = ["SQLiteViewStore", "ViewStoreError"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS positions (name TEXT PRIMARY KEY, position INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS applied (
    subject_id BLOB PRIMARY KEY, sequence INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subjects (
    subject_id BLOB PRIMARY KEY, status TEXT NOT NULL, at TEXT NOT NULL, version INTEGER NOT NULL
    ) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS profile_values (
    subject_id BLOB NOT NULL, purpose TEXT NOT NULL, field TEXT NOT NULL, scope TEXT NOT NULL,
    key_id TEXT NOT NULL, nonce BLOB NOT NULL, ciphertext BLOB NOT NULL, event_id BLOB NOT NULL,
    at TEXT NOT NULL, PRIMARY KEY (subject_id, purpose, field)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS consents (
    subject_id BLOB NOT NULL, purpose TEXT NOT NULL, status TEXT NOT NULL,
    lawful_basis TEXT NOT NULL, since TEXT NOT NULL, expires_at TEXT, event_id BLOB NOT NULL,
    PRIMARY KEY (subject_id, purpose)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS accesses (
    event_id BLOB NOT NULL, subject_id BLOB NOT NULL, actor_id TEXT NOT NULL,
    role TEXT NOT NULL, purpose TEXT NOT NULL, field_names TEXT NOT NULL, kind TEXT NOT NULL,
    allowed INTEGER NOT NULL, reason TEXT NOT NULL, at TEXT NOT NULL,
    PRIMARY KEY (subject_id, at, event_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS erasures (
    subject_id BLOB PRIMARY KEY, status TEXT NOT NULL, at TEXT NOT NULL, event_id BLOB NOT NULL,
    certificate BLOB, signature BLOB);
"""
# The layout above, as PRAGMA user_version. Layout 1 (user_version 0) kept the access log by event id
# with an index by subject: every access event dirtied a random page of each. Keyed by (subject,
# time, event) alone, it is one tree, appended to in subject order by a rebuild, and read in the
# order the access log is asked for. The event id still makes each row unique: it fixes the
# subject and the time.
LAYOUT: Final = 3
# Live, a Checkpointer's thread checkpoints the views (see adapters/sqlite_checkpoints.py).
BULK_CHECKPOINT_PAGES: Final = 20_000  # WAL pages between the writer's checkpoints in a rebuild
WAL_KEPT_BYTES: Final = 4 * 1024 * 1024  # the WAL file's size once a checkpoint has emptied it
CHECKPOINT_TRIES: Final = 3  # each waits up to the connection's 30 s busy timeout


class _ReaderConnection(sqlite3.Connection):
    """A reading thread's connection (a subclass, so it can be held weakly)."""


class SQLiteViewStore(SqlViewStore):
    """The embedded platform's read models; ciphertext and pseudonymous metadata only."""

    driver_errors = (sqlite3.Error,)
    reads_inline = True

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        bind_directly()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        # The views are derived: a power cut may lose their last commits, never their consistency
        # (changes and position commit together), and catching up from the ledger redoes them.
        # So commits skip the fsync the ledger and keystore pay (synchronous=NORMAL in WAL mode).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA secure_delete=ON")
        # Once a checkpoint has emptied it, the WAL file is cut back to 4 MiB (about what 1,000
        # pages make it), however far a rebuild's larger checkpoints (`bulk_writes`) let it grow,
        # so no more old page images stay in it than SQLite's defaults leave.
        self._db.execute(f"PRAGMA wal_autocheckpoint={FALLBACK_CHECKPOINT_PAGES}")
        self._db.execute(f"PRAGMA journal_size_limit={WAL_KEPT_BYTES}")
        self._db.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
        self._checkpoints = Checkpointer(path)
        # Set by a reset until its compaction is done (see `reset`).
        self._uncompacted = False
        self._migrate()
        self._lock = threading.RLock()
        # Each reading thread has a connection of its own: in WAL mode it reads the last committed
        # state while a page's apply is under way on `_db`, instead of waiting for the lock.
        self._readers = threading.local()
        # Weakly held: a thread's connection closes when the thread ends, the rest on `close`.
        self._reader_dbs: weakref.WeakSet[_ReaderConnection] = weakref.WeakSet()
        self._registry = threading.Lock()

    def _migrate(self) -> None:
        """Creates the tables; views of an older layout are dropped first.

        The views are derived from the ledger: with its positions gone, the runner's next catch-up
        projects the whole log into the new layout. No personal data is lost or exposed: the
        dropped rows hold ciphertext (secure_delete overwrites them).
        """
        self._db.execute("BEGIN IMMEDIATE")
        try:
            layout = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            if layout < LAYOUT:
                for table in TABLES:
                    self._db.execute(f"DROP TABLE IF EXISTS {table}")  # fixed table names
            for statement in filter(str.strip, _SCHEMA.split(";")):
                self._db.execute(statement)
            if layout < LAYOUT:
                self._db.execute(f"PRAGMA user_version={LAYOUT}")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._checkpoints.close()
        with self._lock, self._registry:
            for reader in list(self._reader_dbs):
                reader.close()
            try:
                if self._uncompacted:
                    self._compact()
            finally:
                self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[Cursor]:
        with self._lock:
            changed = self._db.total_changes
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db.cursor()
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self._checkpoints.committed(self._db.total_changes - changed)

    @contextmanager
    def _read(self) -> Iterator[Cursor]:
        # One SELECT is its own read transaction in SQLite: no write lock (BEGIN IMMEDIATE), no
        # commit, and a consistent snapshot of what was committed when it started.
        reader: _ReaderConnection | None = getattr(self._readers, "db", None)
        if reader is None:
            reader = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=30,
                factory=_ReaderConnection,
            )
            with self._registry:
                self._reader_dbs.add(reader)
            self._readers.db = reader
        yield reader.cursor()

    @contextmanager
    def bulk_writes(self) -> Iterator[None]:
        # A rebuild's pages touch pages all over the views, and a checkpoint writes each page
        # changed since the last one back to the file once: fewer, larger checkpoints (every
        # 20,000 pages, ~80 MiB of WAL) write a hot page once instead of again and again. Only
        # while nothing waits on reads: a reader's page lookups grow with the WAL, and a request
        # waiting for the views would wait for a whole large checkpoint (live, at 8 clients, the
        # profile read's p99 went from 7.7 to 9.5 ms, A/B in one session). Meanwhile the WAL file
        # is not cut back after each checkpoint either (2 % of a 1M rebuild); the first checkpoint
        # after it is.
        with self._lock:
            self._checkpoints.pause(True)
            self._db.execute(f"PRAGMA wal_autocheckpoint={BULK_CHECKPOINT_PAGES}")
            self._db.execute("PRAGMA journal_size_limit=-1")
        try:
            with self._small_cache():
                yield
        finally:
            with self._lock:
                self._db.execute(f"PRAGMA wal_autocheckpoint={FALLBACK_CHECKPOINT_PAGES}")
                self._db.execute(f"PRAGMA journal_size_limit={WAL_KEPT_BYTES}")
                self._checkpoints.pause(False)

    @contextmanager
    def _small_cache(self) -> Iterator[None]:
        """SQLite's default page cache for the writer meanwhile: a reset and a rebuild touch each
        page of the views once or twice, and their memory stays flat in the size of the log."""
        with self._lock:
            self._db.execute(f"PRAGMA cache_size={SQLITE_DEFAULT_CACHE}")
        try:
            yield
        finally:
            with self._lock:
                self._db.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")

    def reset(self, name: str) -> None:
        # Emptied for a rebuild: zeroing every page as it is freed (secure_delete) took 1.0 of
        # the reset's 1.1 s at 1M events. Instead the pages are freed as they are, and VACUUM
        # then writes the (empty) database anew, so the checkpoint truncates the file to the
        # pages still in use and empties the WAL: no freed page is left, zeroed or not (0.2 s).
        # The deletes of single rows (an erasure, a shred) zero what they free, as before.
        with self._lock, self._checkpoints.paused(), self._small_cache():
            self._db.execute("PRAGMA secure_delete=OFF")
            try:
                self._uncompacted = True
                super().reset(name)
            finally:
                self._db.execute("PRAGMA secure_delete=ON")
            self._compact()

    def _compact(self) -> None:
        """VACUUM, then a truncating checkpoint that waits for readers of older snapshots.

        Until both are done, the freed pages are still in the files: a failure raises, and the
        next reset or the close tries again.
        """
        try:
            self._db.execute("VACUUM")
            for _ in range(CHECKPOINT_TRIES):
                busy, _log, _done = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                if not busy:
                    self._uncompacted = False
                    return
                threading.Event().wait(0.02)
        except sqlite3.Error as exc:
            raise ViewStoreError(
                f"read models could not be compacted after a reset: {type(exc).__name__}"
            ) from exc
        raise ViewStoreError("read models could not be compacted after a reset: readers held the WAL")
