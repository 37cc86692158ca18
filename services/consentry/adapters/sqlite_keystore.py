"""The keystore on a SQLite file, with `secure_delete` and a WAL checkpoint after every destroy.

`secure_delete` overwrites deleted rows with zeros in the database file; the truncating checkpoint
then empties the write-ahead log, which still holds the pages as they were before the delete. Once
`destroy` returns, the wrapped key bytes are in none of the keystore's files. Inside a transaction (a
batch, an erasure) the checkpoint waits for the commit: until then the WAL holds the delete only.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from consentry.adapters.sqlite_binding import bind_directly
from consentry.adapters.sqlite_checkpoints import FALLBACK_CHECKPOINT_PAGES, Checkpointer
from consentry.core.clock import Clock
from consentry.core.errors import KeyExists, KeystoreError
from consentry.core.key_rows import ScopeVersion
from consentry.core.keys import KeyProvider, WrappedKey
from consentry.core.keystore import KeyRow, Keystore, ShreddedKey, Tombstone
from consentry.core.pending_commit import PendingCommit

CACHE_KIB: Final = 64 * 1024  # SQLite's page cache for the keystore, taken as the file grows

_SCHEMA = """
CREATE TABLE IF NOT EXISTS data_keys (
    key_id TEXT PRIMARY KEY,
    subject_id BLOB NOT NULL,
    scope TEXT NOT NULL,
    version INTEGER NOT NULL,
    kek_version INTEGER NOT NULL,
    wrapped BLOB NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (subject_id, scope, version)
);
CREATE TABLE IF NOT EXISTS tombstones (
    subject_id BLOB NOT NULL,
    scope TEXT NOT NULL,
    version INTEGER NOT NULL,
    key_id TEXT,
    shredded_at TEXT NOT NULL,
    PRIMARY KEY (subject_id, scope, version)
);
CREATE INDEX IF NOT EXISTS tombstones_by_key ON tombstones (key_id);
CREATE TABLE IF NOT EXISTS references_index (
    blind BLOB PRIMARY KEY,
    subject_id BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS references_by_subject ON references_index (subject_id);
CREATE TABLE IF NOT EXISTS erased_requests (
    digest BLOB PRIMARY KEY,
    subject_id BLOB NOT NULL
);
"""


_INSERT_KEY: Final = "INSERT INTO data_keys VALUES (?,?,?,?,?,?,?)"
_IN_CHUNK: Final = 400  # values per IN list (at most twice that many parameters per statement)


class SQLiteKeystore(Keystore):
    """Keys in one SQLite file; safe to share between threads of one process."""

    def __init__(
        self,
        path: Path,
        provider: KeyProvider,
        clock: Clock | None = None,
        *,
        sole_writer: bool = False,
    ) -> None:
        super().__init__(provider, clock, sole_writer=sole_writer)
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        bind_directly()
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA secure_delete=ON")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            # Key lookups land anywhere in the table (random subject ids): SQLite's default 2 MiB
            # page cache makes every lookup a read once there are a few hundred thousand keys.
            self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            # A thread of its own checkpoints the WAL (see adapters/sqlite_checkpoints.py); a
            # destroy's commit still empties it itself before it returns.
            self._db.execute(f"PRAGMA wal_autocheckpoint={FALLBACK_CHECKPOINT_PAGES}")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise KeystoreError(f"cannot open keystore {path.name}: {exc}") from exc
        self._checkpoints = Checkpointer(path, synchronous="FULL")
        self._db_lock = threading.Lock()
        # Callers hold the base class's lock around every transaction, so these need no lock of
        # their own: whether one is open, and whether its commit must empty the WAL.
        self._in_transaction = False
        self._scrub = False
        # Key rows created inside the open transaction, sent to SQLite together (one executemany)
        # before any other statement runs, so every read still sees them, and before the commit.
        self._staged: list[tuple[object, ...]] = []
        # Batches' commits run here, one at a time (see `_commit_later`); the last one started.
        self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keystore-commit")
        self._in_flight: PendingCommit | None = None

    def close(self) -> None:
        with self._lock:
            self._settle()
        self._committer.shutdown(wait=True)
        self._checkpoints.close()
        with self._db_lock:
            self._db.close()

    def _batch_transaction(self, pending: PendingCommit) -> AbstractContextManager[None]:
        return self._transaction(pending)

    @contextmanager
    def _transaction(self, pending: PendingCommit | None = None) -> Iterator[None]:
        """Statements in one transaction (one sync to disk); nested calls join the open one.

        A commit that deleted key bytes or references empties the WAL before it returns. A batch's
        (`pending`) that deleted nothing runs on the committer's thread instead, once the batch's
        statements are done: the SQLite transaction stays open until then, while the connection's
        lock stays taken (see core/pending_commit.py).
        """
        if self._in_transaction:
            yield
            return
        self._settle()
        with self._db_lock:
            changed = self._db.total_changes
            self._db.execute("BEGIN IMMEDIATE")
        self._in_transaction, self._scrub = True, False
        try:
            yield
            with self._connection():
                pass  # the staged key rows go in now, inside the transaction
            if pending is not None and not self._scrub:
                self._commit_later(pending, changed)
                return
        except BaseException:
            with self._db_lock:
                self._staged.clear()
                self._db.execute("ROLLBACK")
            raise
        finally:
            self._in_transaction = False
        with self._db_lock:
            self._db.execute("COMMIT")
            if self._scrub:
                self._checkpoint()
            else:
                self._checkpoints.committed(self._db.total_changes - changed)

    def _commit_later(self, pending: PendingCommit, changed: int) -> None:
        """Hands the open transaction's commit to the committer's thread.

        The connection's lock passes with it: whoever needs the connection next (the next batch, a
        read, a destroy) waits until the commit is done, which releases it. Only the commit goes:
        it is one call into SQLite, which writes and syncs the WAL without the GIL. (The rows went
        there too at first, and took three times as long: each row's insert wanted the GIL back
        from the ledger's thread.)
        """
        self._db_lock.acquire()
        try:
            future = self._committer.submit(self._commit, changed)
        except BaseException:
            self._db_lock.release()
            raise
        pending.started(future)
        self._in_flight = pending

    def _commit(self, changed: int) -> None:
        """On the committer's thread, holding the connection's lock: the commit. Any failure is a
        KeystoreError, with the transaction rolled back."""
        try:
            try:
                self._db.execute("COMMIT")
                rows = self._db.total_changes - changed
            except Exception as exc:
                self._roll_back_quietly()
                raise KeystoreError(f"keystore commit failed: {exc}") from exc
        finally:
            self._db_lock.release()
        self._checkpoints.committed(rows)

    def _roll_back_quietly(self) -> None:
        """Ends a failed commit's transaction, if it is still open (the commit's error is the one
        to report; a ROLLBACK that fails too leaves the next BEGIN to fail)."""
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def _settle(self) -> None:
        """Waits for the last batch's commit, if it still runs; a failed one's keys leave the cache
        (the ledger, waiting for it as well, gets its error)."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            in_flight.settle()

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """The connection under its lock, once the transaction's staged key rows are in."""
        with self._db_lock:
            if self._staged:
                rows, self._staged = self._staged, []
                try:
                    self._db.executemany(_INSERT_KEY, rows)
                except sqlite3.IntegrityError as exc:
                    raise KeyExists("key version taken") from exc
                except sqlite3.Error as exc:
                    raise KeystoreError(f"keystore insert failed: {exc}") from exc
            yield self._db

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        with self._connection():
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise KeystoreError(f"keystore query failed: {exc}") from exc

    def _latest(self, subject_id: uuid.UUID, scope: str) -> KeyRow | Tombstone | None:
        rows = self._query(
            "SELECT key_id, version, kek_version, wrapped, created_at, NULL FROM data_keys "
            "WHERE subject_id=? AND scope=? UNION ALL "
            "SELECT key_id, version, NULL, NULL, NULL, shredded_at FROM tombstones "
            "WHERE subject_id=? AND scope=? ORDER BY 2 DESC LIMIT 1",
            (subject_id.bytes, scope, subject_id.bytes, scope),
        )
        return _to_row(subject_id, scope, rows[0]) if rows else None

    def _key_by_id(self, key_id: str) -> KeyRow | Tombstone | None:
        rows = self._query(
            "SELECT subject_id, scope, key_id, version, kek_version, wrapped, created_at, NULL "
            "FROM data_keys WHERE key_id=? UNION ALL "
            "SELECT subject_id, scope, key_id, version, NULL, NULL, NULL, shredded_at "
            "FROM tombstones WHERE key_id=?",
            (key_id, key_id),
        )
        if not rows:
            return None
        subject, scope, *rest = rows[0]
        return _to_row(uuid.UUID(bytes=bytes(subject)), str(scope), tuple(rest))

    def _versions(self, subject_id: uuid.UUID, scope: str | None) -> list[KeyRow | Tombstone]:
        where, params = _where(subject_id, "scope", None if scope is None else [scope])
        live = "scope, key_id, version, kek_version, wrapped, created_at, NULL FROM data_keys"
        dead = "scope, key_id, version, NULL, NULL, NULL, shredded_at FROM tombstones"
        sql = f"SELECT {live} WHERE {where} UNION ALL SELECT {dead} WHERE {where} ORDER BY 1, 3"
        rows = self._query(sql, params * 2)
        return [_to_row(subject_id, str(found), tuple(rest)) for found, *rest in rows]

    def _scopes_of(self, subject_ids: Sequence[uuid.UUID]) -> list[ScopeVersion]:
        found: list[ScopeVersion] = []
        for start in range(0, len(subject_ids), _IN_CHUNK):
            chunk = {s.bytes: s for s in subject_ids[start : start + _IN_CHUNK]}
            where = f"subject_id IN ({','.join('?' * len(chunk))})"  # placeholders; ids are params
            rows = self._query(
                f"SELECT subject_id, scope, version, 0 FROM data_keys WHERE {where} "  # noqa: S608
                f"UNION ALL SELECT subject_id, scope, version, 1 FROM tombstones WHERE {where}",
                [*chunk, *chunk],
            )
            found += [(chunk[bytes(s)], str(c), int(v), bool(d)) for s, c, v, d in rows]
        return found

    def _live_rows(self, wanted: Sequence[tuple[uuid.UUID, str, int]]) -> list[KeyRow]:
        found: list[KeyRow] = []
        step = _IN_CHUNK // 2
        for start in range(0, len(wanted), step):
            chunk = wanted[start : start + step]
            ids = {s.bytes: s for s, _, _ in chunk}
            # A row-value IN over a subquery of VALUES: SQLite looks each one up in the unique
            # (subject_id, scope, version) index (a plain IN (VALUES ...) scans the table).
            values = ",".join("(?,?,?)" for _ in chunk)  # placeholders; the values are parameters
            sql = (
                "SELECT subject_id, key_id, scope, version, kek_version, wrapped, created_at "  # noqa: S608
                "FROM data_keys WHERE (subject_id, scope, version) IN "
                f"(SELECT column1, column2, column3 FROM (VALUES {values}))"
            )
            rows = self._query(
                sql,
                [p for s, scope, version in chunk for p in (s.bytes, scope, version)],
            )
            found += [
                KeyRow(
                    str(key_id),
                    ids[bytes(subject)],
                    str(scope),
                    int(version),
                    WrappedKey(int(kek), bytes(wrapped)),
                    datetime.fromisoformat(str(created)),
                )
                for subject, key_id, scope, version, kek, wrapped, created in rows
            ]
        return found

    def _insert_key(self, row: KeyRow) -> None:
        if self._in_transaction:
            self._insert_keys([row])
            return
        with self._connection() as db:
            try:
                db.execute(_INSERT_KEY, _key_values(row, row.created_at.isoformat()))
            except sqlite3.IntegrityError as exc:
                raise KeyExists("key version taken") from exc
            except sqlite3.Error as exc:
                raise KeystoreError(f"keystore insert failed: {exc}") from exc

    def _insert_keys(self, rows: Sequence[KeyRow]) -> None:
        if not self._in_transaction:
            super()._insert_keys(rows)
            return
        # Keys created together share their creation time: its text is made once for them.
        values: list[tuple[object, ...]] = []
        stamp, text = None, ""
        for row in rows:
            if row.created_at is not stamp:
                stamp, text = row.created_at, row.created_at.isoformat()
            values.append(_key_values(row, text))
        # A batch's keys go in together; SQLite's write lock is already this transaction's.
        # (Under the connection's lock: a thread outside the batch may be sending them now.)
        with self._db_lock:
            self._staged += values

    def _insert_tombstone(self, tombstone: Tombstone) -> None:
        self._query(
            "INSERT OR IGNORE INTO tombstones VALUES (?,?,?,?,?)",
            (
                tombstone.subject_id.bytes,
                tombstone.scope,
                tombstone.version,
                tombstone.key_id,
                tombstone.shredded_at.isoformat(),
            ),
        )

    def _destroy(
        self, subject_id: uuid.UUID, scopes: Sequence[str] | None, at: datetime
    ) -> list[ShreddedKey]:
        return self._destroy_where(subject_id, at, *_where(subject_id, "scope", scopes))

    def _destroy_keys(
        self, subject_id: uuid.UUID, key_ids: Sequence[str], at: datetime
    ) -> list[ShreddedKey]:
        return self._destroy_where(subject_id, at, *_where(subject_id, "key_id", key_ids))

    def _destroy_where(
        self, subject_id: uuid.UUID, at: datetime, where: str, params: list[object]
    ) -> list[ShreddedKey]:
        """Tombstones then deletes the matching rows in one transaction, then empties the WAL."""
        with self._transaction(), self._connection():
            try:
                rows = self._db.execute(
                    f"SELECT key_id, scope, version FROM data_keys WHERE {where}",  # noqa: S608 - placeholders only
                    params,
                ).fetchall()
                self._db.executemany(
                    "INSERT OR REPLACE INTO tombstones VALUES (?,?,?,?,?)",
                    [
                        (subject_id.bytes, scope, version, key_id, at.isoformat())
                        for key_id, scope, version in rows
                    ],
                )
                self._db.execute(f"DELETE FROM data_keys WHERE {where}", params)  # noqa: S608
            except sqlite3.Error as exc:
                raise KeystoreError(f"keystore destroy failed: {exc}") from exc
            self._scrub = self._scrub or bool(rows)
        return [ShreddedKey(str(k), str(s), int(v)) for k, s, v in rows]

    def _checkpoint(self) -> None:
        """Empties the WAL so no pre-delete page image survives there."""
        with self._checkpoints.paused():  # its thread's rounds would take the checkpoint lock
            self._truncate_wal()

    def _truncate_wal(self) -> None:
        for _ in range(50):
            busy, _log, _done = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy:
                return
            threading.Event().wait(0.02)
        raise KeystoreError("keystore WAL could not be checkpointed after a destroy")

    def _stale_keys(self, active: int, after: str, limit: int) -> list[KeyRow]:
        rows = self._query(
            "SELECT key_id, subject_id, scope, version, kek_version, wrapped, created_at FROM data_keys "
            "WHERE kek_version<>? AND key_id>? ORDER BY key_id LIMIT ?",
            (active, after, limit),
        )
        return [
            KeyRow(
                str(key_id),
                uuid.UUID(bytes=bytes(subject)),
                str(scope),
                int(version),
                WrappedKey(int(kek), bytes(wrapped)),
                datetime.fromisoformat(str(created)),
            )
            for key_id, subject, scope, version, kek, wrapped, created in rows
        ]

    def _replace_wrapped(self, key_id: str, old: WrappedKey, new: WrappedKey) -> int:
        with self._connection():
            try:
                cursor = self._db.execute(
                    "UPDATE data_keys SET kek_version=?, wrapped=? WHERE key_id=? AND wrapped=?",
                    (new.kek_version, new.blob, key_id, old.blob),
                )
            except sqlite3.Error as exc:
                raise KeystoreError(f"keystore re-wrap failed: {exc}") from exc
            return int(cursor.rowcount)

    def _kek_counts(self) -> dict[int, int]:
        rows = self._query("SELECT kek_version, count(*) FROM data_keys GROUP BY kek_version")
        return {int(v): int(n) for v, n in rows}

    def _after_rewrap(self) -> None:
        """The WAL still holds the pages with the old wrapped bytes; empty it."""
        with self._connection():
            self._checkpoint()

    def _get_reference(self, blind: bytes) -> uuid.UUID | None:
        rows = self._query("SELECT subject_id FROM references_index WHERE blind=?", (blind,))
        return uuid.UUID(bytes=bytes(rows[0][0])) if rows else None

    def _get_references(self, blinds: Sequence[bytes]) -> dict[bytes, uuid.UUID]:
        return self._subjects_by("SELECT blind, subject_id FROM references_index WHERE blind", blinds)

    def _insert_references(self, links: Mapping[bytes, uuid.UUID]) -> None:
        with self._connection():
            try:
                self._db.executemany(
                    "INSERT OR IGNORE INTO references_index VALUES (?,?)",
                    [(blind, subject_id.bytes) for blind, subject_id in links.items()],
                )
            except sqlite3.Error as exc:
                raise KeystoreError(f"keystore insert failed: {exc}") from exc

    def _subjects_by(self, select: str, values: Sequence[bytes]) -> dict[bytes, uuid.UUID]:
        """{value: subject} of a `SELECT value, subject_id ... WHERE value` IN the values (chunked)."""
        found: dict[bytes, uuid.UUID] = {}
        for start in range(0, len(values), _IN_CHUNK):
            chunk = values[start : start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))  # placeholders; the values are parameters
            rows = self._query(f"{select} IN ({marks})", chunk)
            found |= {bytes(v): uuid.UUID(bytes=bytes(s)) for v, s in rows}
        return found

    def _drop_references(self, subject_id: uuid.UUID) -> int:
        with self._transaction(), self._connection():
            count = self._db.execute(
                "DELETE FROM references_index WHERE subject_id=?", (subject_id.bytes,)
            ).rowcount
            self._scrub = self._scrub or count > 0
        return int(count)

    def _put_erased_requests(self, digests: Sequence[bytes], subject_id: uuid.UUID) -> None:
        with self._connection():
            try:
                self._db.executemany(
                    "INSERT OR IGNORE INTO erased_requests VALUES (?,?)",
                    [(digest, subject_id.bytes) for digest in digests],
                )
            except sqlite3.Error as exc:
                raise KeystoreError(f"keystore insert failed: {exc}") from exc

    def _get_erased_request(self, digest: bytes) -> uuid.UUID | None:
        rows = self._query("SELECT subject_id FROM erased_requests WHERE digest=?", (digest,))
        return uuid.UUID(bytes=bytes(rows[0][0])) if rows else None

    def _get_erased_requests(self, digests: Sequence[bytes]) -> dict[bytes, uuid.UUID]:
        return self._subjects_by("SELECT digest, subject_id FROM erased_requests WHERE digest", digests)


def _where(subject_id: uuid.UUID, column: str, values: Sequence[str] | None) -> tuple[str, list[object]]:
    """A WHERE clause on the subject, narrowed to rows whose column is one of the values."""
    if values is None:
        return "subject_id=?", [subject_id.bytes]
    marks = ",".join("?" * len(values))
    return f"subject_id=? AND {column} IN ({marks})", [subject_id.bytes, *values]


def _to_row(subject_id: uuid.UUID, scope: str, row: Any) -> KeyRow | Tombstone:
    key_id, version, kek_version, wrapped, created_at, shredded_at = row
    if shredded_at is not None:
        return Tombstone(
            subject_id,
            scope,
            int(version),
            None if key_id is None else str(key_id),
            datetime.fromisoformat(str(shredded_at)).astimezone(UTC),
        )
    return KeyRow(
        str(key_id),
        subject_id,
        scope,
        int(version),
        WrappedKey(int(kek_version), bytes(wrapped)),
        datetime.fromisoformat(str(created_at)),
    )


def _key_values(row: KeyRow, created_at: str) -> tuple[object, ...]:
    wrapped = row.wrapped
    return (
        row.key_id,
        row.subject_id.bytes,
        row.scope,
        row.version,
        wrapped.kek_version,
        wrapped.blob,
        created_at,
    )
