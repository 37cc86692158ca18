"""The keystore in PostgreSQL, shared by the intake, query and shredder processes in distributed mode.

Every operation that creates, destroys or tombstones keys of a subject runs in one transaction that
first takes a transaction-scoped advisory lock on the subject, so "is the subject closed, is the
scope shredded?" and the insert cannot interleave with another process's erasure; a `batch` is one
transaction that keeps the lock of every subject it touched until it commits. Keys are never
cached: another process may destroy them at any moment. PostgreSQL has no secure delete, so deleted
key bytes linger in page free space, the WAL and backups; docs/keystore-postgres.md says where and
for how long, and how `vacuum` and KEK rotation (`rewrap`, then retiring the old KEK) bound that.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, LiteralString

import psycopg
from psycopg import errors, sql

from consentry.core.clock import Clock
from consentry.core.errors import KeyExists, KeystoreError
from consentry.core.key_rows import ScopeVersion
from consentry.core.keys import KeyProvider, WrappedKey
from consentry.core.keystore import KeyRow, Keystore, ShreddedKey, Tombstone
from consentry.core.sealing import DataKey

Row = tuple[Any, ...]

# No statistics on `wrapped` and `blind`: ANALYZE would copy sampled values into pg_statistic, where
# they stay even if the column is set to 0 later, so it is set in the transaction that creates it.
# Autovacuum visits the key and reference tables once a single row is dead, not after 20 % of them.
_TABLES = """
CREATE TABLE IF NOT EXISTS {s}.data_keys (
    key_id TEXT PRIMARY KEY, subject_id UUID NOT NULL, scope TEXT NOT NULL,
    version INTEGER NOT NULL CHECK (version > 0), kek_version INTEGER NOT NULL,
    wrapped BYTEA NOT NULL, created_at TIMESTAMPTZ NOT NULL, UNIQUE (subject_id, scope, version));
CREATE TABLE IF NOT EXISTS {s}.tombstones (
    subject_id UUID NOT NULL, scope TEXT NOT NULL, version INTEGER NOT NULL, key_id TEXT,
    shredded_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (subject_id, scope, version));
CREATE INDEX IF NOT EXISTS tombstones_by_key ON {s}.tombstones (key_id);
CREATE TABLE IF NOT EXISTS {s}.references_index (blind BYTEA PRIMARY KEY, subject_id UUID NOT NULL);
CREATE INDEX IF NOT EXISTS references_by_subject ON {s}.references_index (subject_id);
CREATE TABLE IF NOT EXISTS {s}.erased_requests (digest BYTEA PRIMARY KEY, subject_id UUID NOT NULL);
ALTER TABLE {s}.data_keys ALTER COLUMN wrapped SET STATISTICS 0;
ALTER TABLE {s}.references_index ALTER COLUMN blind SET STATISTICS 0;
ALTER TABLE {s}.data_keys SET (autovacuum_vacuum_threshold = 0, autovacuum_vacuum_scale_factor = 0);
ALTER TABLE {s}.references_index
    SET (autovacuum_vacuum_threshold = 0, autovacuum_vacuum_scale_factor = 0);
"""
# Array parameters go in binary (`%b`): a text array is escaped element by element in Python
# (adapters/postgres_ledger.py says what that cost).
# Rows as (key_id, version, kek_version, wrapped, created_at, shredded_at), tombstones included.
_LATEST = """
SELECT key_id, version, kek_version, wrapped, created_at, NULL::timestamptz
FROM {s}.data_keys WHERE subject_id = %(u)s AND scope = %(c)s
UNION ALL SELECT key_id, version, NULL, NULL, NULL, shredded_at
FROM {s}.tombstones WHERE subject_id = %(u)s AND scope = %(c)s ORDER BY 2 DESC LIMIT 1
"""
_BY_ID = """
SELECT subject_id, scope, key_id, version, kek_version, wrapped, created_at, NULL::timestamptz
FROM {s}.data_keys WHERE key_id = %(k)s
UNION ALL SELECT subject_id, scope, key_id, version, NULL, NULL, NULL, shredded_at
FROM {s}.tombstones WHERE key_id = %(k)s LIMIT 1
"""
# Scopes sort by bytes (COLLATE "C"), as in SQLite, whatever the database's locale.
_VERSIONS = """
SELECT scope COLLATE "C", key_id, version, kek_version, wrapped, created_at, NULL::timestamptz
FROM {s}.data_keys WHERE subject_id = %(u)s AND (%(c)s::text IS NULL OR scope = %(c)s)
UNION ALL SELECT scope COLLATE "C", key_id, version, NULL, NULL, NULL, shredded_at
FROM {s}.tombstones WHERE subject_id = %(u)s AND (%(c)s::text IS NULL OR scope = %(c)s) ORDER BY 1, 3
"""
_SCOPES_OF = """
SELECT subject_id, scope, version, false FROM {s}.data_keys WHERE subject_id = ANY(%(u)b)
UNION ALL SELECT subject_id, scope, version, true FROM {s}.tombstones WHERE subject_id = ANY(%(u)b)
"""
# A batch's new keys in one statement: one array per column.
_INSERT_KEYS = """
INSERT INTO {s}.data_keys (key_id, subject_id, scope, version, kek_version, wrapped, created_at)
SELECT * FROM unnest(%(k)b::text[], %(u)b::uuid[], %(c)b::text[], %(v)b::integer[],
    %(e)b::integer[], %(w)b::bytea[], %(t)b::timestamptz[])
"""
# The rows of given (subject, scope, version)s, for a batch's announced keys: one query.
_LIVE_ROWS = """
SELECT d.key_id, d.subject_id, d.scope, d.version, d.kek_version, d.wrapped, d.created_at
FROM unnest(%(u)b::uuid[], %(c)b::text[], %(v)b::integer[]) AS w(u, c, v)
JOIN {s}.data_keys d ON d.subject_id = w.u AND d.scope = w.c AND d.version = w.v
"""
# Advisory locks in the order of the array (a function scan yields it in order).
_LOCK_SUBJECTS = """
SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) FROM unnest(%(k)b::text[]) AS k
"""
_INSERT_TOMBSTONE = """
INSERT INTO {s}.tombstones (subject_id, scope, version, key_id, shredded_at)
VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING
"""
# One statement deletes the key rows and writes their tombstones: both or neither.
_DESTROY = """
WITH gone AS (
    DELETE FROM {s}.data_keys WHERE subject_id = %(u)s
    AND (%(c)b::text[] IS NULL OR scope = ANY(%(c)b::text[]))
    AND (%(k)b::text[] IS NULL OR key_id = ANY(%(k)b::text[]))
    RETURNING subject_id, scope, version, key_id)
INSERT INTO {s}.tombstones (subject_id, scope, version, key_id, shredded_at)
SELECT subject_id, scope, version, key_id, %(at)s FROM gone
ON CONFLICT (subject_id, scope, version)
DO UPDATE SET key_id = EXCLUDED.key_id, shredded_at = EXCLUDED.shredded_at
RETURNING key_id, scope, version
"""
# Each absent reference linked to its subject; one that exists keeps its subject.
_PUT_REFERENCES = """
INSERT INTO {s}.references_index (blind, subject_id)
SELECT * FROM unnest(%(b)b::bytea[], %(u)b::uuid[]) ON CONFLICT DO NOTHING
"""
_PUT_ERASED = """
INSERT INTO {s}.erased_requests (digest, subject_id)
SELECT digest, %(u)s FROM unnest(%(d)b::bytea[]) AS digest ON CONFLICT DO NOTHING
"""
_TO_REWRAP = """
SELECT key_id, subject_id, scope, version, kek_version, wrapped, created_at FROM {s}.data_keys
WHERE kek_version <> %s AND key_id > %s ORDER BY key_id LIMIT %s
"""
# Matching the old bytes, so a key destroyed (or re-wrapped) meanwhile is left as it is.
_REWRAP = "UPDATE {s}.data_keys SET kek_version = %s, wrapped = %s WHERE key_id = %s AND wrapped = %s"
_DEAD_ROWS = """
SELECT coalesce(sum(pg_stat_get_dead_tuples(c.oid)), 0) FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname IN ('data_keys', 'references_index')
"""


def migrate(owner_dsn: str, schema: str = "keystore") -> None:
    """Creates the schema (if absent), tables and indexes, idempotently; run as the owner role."""
    try:
        with psycopg.connect(owner_dsn, autocommit=True) as conn, conn.transaction():
            # Two services starting at once must not both run CREATE TABLE IF NOT EXISTS.
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"{schema}:migrate",))
            # CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the schema exists.
            exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
            if exists is None:
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            conn.execute(sql.SQL(_TABLES).format(s=sql.Identifier(schema)))
    except psycopg.Error as exc:
        raise _translate(exc, f"cannot create the keystore tables in schema {schema}") from None


class PostgresKeystore(Keystore):
    """Keys in PostgreSQL; one connection per instance, used under the base class's lock.

    Several writers share these keys. A batch takes the locks of all the subjects it announced
    (`batch(wanted)`) in one statement as it begins, in one order every writer follows, so the
    scopes and live rows read for the whole batch afterwards (two queries) stay true until it
    commits; a subject it did not announce is locked when first asked for, as any lookup outside
    a batch is. Keys it creates are sent together (one INSERT over column arrays) before its next
    read or its commit, whichever comes first.
    """

    def __init__(
        self,
        dsn: str,
        provider: KeyProvider,
        clock: Clock | None = None,
        *,
        schema: str = "keystore",
        create: bool = False,
    ) -> None:
        # cache_size=0: the base class keeps no key beyond the call that unwrapped it, because the
        # shredder may destroy a key from another process at any time, unseen by this one.
        super().__init__(provider, clock, cache_size=0)
        if create:
            migrate(dsn, schema)
        self.schema = schema
        self._dsn = dsn
        self._in_transaction = False
        self._locked: set[uuid.UUID] = set()  # subjects whose lock the open transaction holds
        self._unsent: list[KeyRow] = []  # keys the open transaction created but has not sent yet
        self._closed = False
        self._conn = self._connect()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._conn.close()

    # -- what creates, destroys or tombstones keys runs in one transaction under the subject lock

    def create(self, subject_id: uuid.UUID, scope: str, *, new_version: bool = False) -> DataKey:
        with self._subject_transaction(subject_id):
            return super().create(subject_id, scope, new_version=new_version)

    def get_or_create(self, subject_id: uuid.UUID, scope: str) -> DataKey:
        if subject_id in self._fresh:
            # Minted in the open batch: no other process can know the id before the batch commits,
            # so there is nothing to lock against and nothing to look up (one insert, no reads).
            return super().get_or_create(subject_id, scope)
        # The lock comes before the lookup: a key another process created meanwhile is found, and
        # an erasure cannot slip in between the lookup and the insert.
        with self._subject_transaction(subject_id):
            return super().get_or_create(subject_id, scope)

    def prepare(self, wanted: Iterable[tuple[uuid.UUID, str]]) -> dict[tuple[uuid.UUID, str], DataKey]:
        """Prepares the keys of the subjects the open batch holds: those minted in it (no lock, no
        look-up, as `get_or_create` takes them) and those whose locks it holds (the ones it
        announced, locked as it began, are read in its two reads). Each existing key is unwrapped
        once for the whole batch: no other process can change it before the batch commits.
        Another subject's key is made when asked, under that subject's lock."""
        with self._lock:
            fresh, locked = self._fresh, self._locked
            return super().prepare([(s, c) for s, c in wanted if s in fresh or s in locked])

    def destroy(self, subject_id: uuid.UUID, scopes: Iterable[str] | None = None) -> list[ShreddedKey]:
        with self._subject_transaction(subject_id):
            return super().destroy(subject_id, scopes)

    def destroy_keys(self, subject_id: uuid.UUID, key_ids: Iterable[str]) -> list[ShreddedKey]:
        with self._subject_transaction(subject_id):
            return super().destroy_keys(subject_id, key_ids)

    def erase_subject(self, subject_id: uuid.UUID, requests: Iterable[bytes] = ()) -> list[ShreddedKey]:
        with self._subject_transaction(subject_id):
            return super().erase_subject(subject_id, requests)

    def tombstone(self, subject_id: uuid.UUID, scope: str) -> None:
        with self._subject_transaction(subject_id):
            super().tombstone(subject_id, scope)

    # -- maintenance -------------------------------------------------------------------------

    def vacuum(self, *, full: bool = False) -> int:
        """VACUUMs the key and reference tables (`full`: into new files); returns the dead rows kept.

        VACUUM keeps dead rows (and their bytes) that an older snapshot may still see: call again
        later while this is above 0. Only the tables' owner may VACUUM them (PostgreSQL < 17); a
        CHECKPOINT (superuser or pg_checkpoint) then writes the cleaned pages to the data files.
        """
        skipped: list[str] = []

        def on_notice(diagnostic: errors.Diagnostic) -> None:
            # VACUUM skips a table the role does not own with a WARNING, not an error.
            if diagnostic.severity_nonlocalized == "WARNING":
                skipped.append(diagnostic.sqlstate or "")

        tables = sql.SQL("{s}.data_keys, {s}.references_index").format(s=sql.Identifier(self.schema))
        # Our own deletes' counts go to the statistics first, so VACUUM's count of the dead rows it
        # kept is not raised by them afterwards. VACUUM FULL counts nothing: a plain one follows.
        statements: list[sql.SQL | sql.Composed] = [sql.SQL("SELECT pg_stat_force_next_flush()")]
        statements += [sql.SQL("VACUUM (FULL) {}").format(tables)] if full else []
        statements.append(sql.SQL("VACUUM {}").format(tables))
        with self._lock:
            conn = self._connection()
            conn.add_notice_handler(on_notice)
            try:
                for statement in statements:
                    conn.execute(statement)
            except psycopg.Error as exc:
                raise _translate(exc, "keystore VACUUM failed") from None
            finally:
                conn.remove_notice_handler(on_notice)
            if skipped:
                raise KeystoreError("only the owner of the keystore tables may VACUUM them")
            return int(self._run(_DEAD_ROWS, (self.schema,))[0][0])

    # -- storage primitives ------------------------------------------------------------------

    def _latest(self, subject_id: uuid.UUID, scope: str) -> KeyRow | Tombstone | None:
        rows = self._run(_LATEST, {"u": subject_id, "c": scope})
        return _to_row(subject_id, scope, rows[0]) if rows else None

    def _key_by_id(self, key_id: str) -> KeyRow | Tombstone | None:
        rows = self._run(_BY_ID, {"k": key_id})
        return _to_row(rows[0][0], rows[0][1], rows[0][2:]) if rows else None

    def _versions(self, subject_id: uuid.UUID, scope: str | None) -> list[KeyRow | Tombstone]:
        rows = self._run(_VERSIONS, {"u": subject_id, "c": scope})
        return [_to_row(subject_id, row[0], row[1:]) for row in rows]

    def _scopes_of(self, subject_ids: Sequence[uuid.UUID]) -> list[ScopeVersion]:
        rows = self._run(_SCOPES_OF, {"u": list(subject_ids)})
        return [(row[0], row[1], row[2], row[3]) for row in rows]

    def _live_rows(self, wanted: Sequence[tuple[uuid.UUID, str, int]]) -> list[KeyRow]:
        rows = self._run(
            _LIVE_ROWS,
            {
                "u": [subject_id for subject_id, _, _ in wanted],
                "c": [scope for _, scope, _ in wanted],
                "v": [version for _, _, version in wanted],
            },
        )
        return [
            KeyRow(key_id, subject_id, scope, version, WrappedKey(kek, bytes(blob)), created)
            for key_id, subject_id, scope, version, kek, blob, created in rows
        ]

    def _insert_key(self, row: KeyRow) -> None:
        # In a transaction the row waits for the next statement or the commit (`_send_keys`).
        self._unsent.append(row)
        if not self._in_transaction:
            self._send_keys()

    def _send_keys(self) -> None:
        """Inserts the keys created since the last statement, in one statement over column arrays.

        A unique violation on (subject_id, scope, version) comes back as KeyExists.
        """
        rows, self._unsent = self._unsent, []
        if not rows:
            return
        statement = sql.SQL(_INSERT_KEYS).format(s=sql.Identifier(self.schema))
        params = {
            "k": [r.key_id for r in rows],
            "u": [r.subject_id for r in rows],
            "c": [r.scope for r in rows],
            "v": [r.version for r in rows],
            "e": [r.wrapped.kek_version for r in rows],
            "w": [r.wrapped.blob for r in rows],
            "t": [r.created_at for r in rows],
        }
        try:
            with self._connection().cursor() as cursor:
                cursor.execute(statement, params)
        except psycopg.Error as exc:
            raise _translate(exc, "keystore insert failed") from None

    def _insert_tombstone(self, tombstone: Tombstone) -> None:
        t = tombstone
        self._run(_INSERT_TOMBSTONE, (t.subject_id, t.scope, t.version, t.key_id, t.shredded_at))

    def _destroy(
        self, subject_id: uuid.UUID, scopes: Sequence[str] | None, at: datetime
    ) -> list[ShreddedKey]:
        return self._destroy_where(subject_id, at, None if scopes is None else list(scopes), None)

    def _destroy_keys(
        self, subject_id: uuid.UUID, key_ids: Sequence[str], at: datetime
    ) -> list[ShreddedKey]:
        return self._destroy_where(subject_id, at, None, list(key_ids))

    def _destroy_where(
        self, subject_id: uuid.UUID, at: datetime, scopes: list[str] | None, key_ids: list[str] | None
    ) -> list[ShreddedKey]:
        """Deletes the subject's rows (narrowed by scope or key id) and tombstones them."""
        rows = self._run(_DESTROY, {"u": subject_id, "c": scopes, "k": key_ids, "at": at})
        return [ShreddedKey(key_id, scope, version) for key_id, scope, version in rows]

    def _stale_keys(self, active: int, after: str, limit: int) -> list[KeyRow]:
        rows = self._run(_TO_REWRAP, (active, after, limit))
        return [
            KeyRow(key_id, subject_id, scope, version, WrappedKey(kek, bytes(blob)), created)
            for key_id, subject_id, scope, version, kek, blob, created in rows
        ]

    def _replace_wrapped(self, key_id: str, old: WrappedKey, new: WrappedKey) -> int:
        return self._execute(_REWRAP, (new.kek_version, new.blob, key_id, old.blob)).rowcount

    def _kek_counts(self) -> dict[int, int]:
        rows = self._run("SELECT kek_version, count(*) FROM {s}.data_keys GROUP BY kek_version")
        return {int(v): int(n) for v, n in rows}

    def _insert_references(self, links: Mapping[bytes, uuid.UUID]) -> None:
        self._run(_PUT_REFERENCES, {"b": list(links), "u": list(links.values())})

    def _get_reference(self, blind: bytes) -> uuid.UUID | None:
        rows = self._run("SELECT subject_id FROM {s}.references_index WHERE blind = %s", (blind,))
        return rows[0][0] if rows else None

    def _get_references(self, blinds: Sequence[bytes]) -> dict[bytes, uuid.UUID]:
        rows = self._run(
            "SELECT blind, subject_id FROM {s}.references_index WHERE blind = ANY(%(b)b)",
            {"b": list(blinds)},
        )
        return {bytes(row[0]): row[1] for row in rows}

    def _drop_references(self, subject_id: uuid.UUID) -> int:
        return self._execute(
            "DELETE FROM {s}.references_index WHERE subject_id = %s", (subject_id,)
        ).rowcount

    def _put_erased_requests(self, digests: Sequence[bytes], subject_id: uuid.UUID) -> None:
        self._run(_PUT_ERASED, {"u": subject_id, "d": list(digests)})

    def _get_erased_request(self, digest: bytes) -> uuid.UUID | None:
        rows = self._run("SELECT subject_id FROM {s}.erased_requests WHERE digest = %s", (digest,))
        return rows[0][0] if rows else None

    def _get_erased_requests(self, digests: Sequence[bytes]) -> dict[bytes, uuid.UUID]:
        rows = self._run(
            "SELECT digest, subject_id FROM {s}.erased_requests WHERE digest = ANY(%(d)b)",
            {"d": list(digests)},
        )
        return {bytes(row[0]): row[1] for row in rows}

    # -- connection, transactions, locks -----------------------------------------------------

    def _connect(self) -> psycopg.Connection[Row]:
        try:
            conn = psycopg.connect(self._dsn, autocommit=True, application_name="consentry-keystore")
            # READ COMMITTED: each statement after the advisory lock sees what the previous holder
            # committed (REPEATABLE READ would keep the snapshot taken before the lock was granted).
            conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
            conn.execute("SET TIME ZONE 'UTC'")
        except psycopg.Error as exc:
            raise _translate(exc, "cannot connect to the keystore database") from None
        return conn

    def _connection(self) -> psycopg.Connection[Row]:
        """The connection, reopened if the server dropped it (never inside a transaction)."""
        if self._closed:
            raise KeystoreError("the keystore is closed")
        if (self._conn.closed or self._conn.broken) and not self._in_transaction:
            self._conn = self._connect()
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One transaction on the connection (also the base class's `batch`); nested calls join it."""
        with self._lock:
            if self._in_transaction:
                yield
                return
            try:
                with self._connection().transaction():
                    self._in_transaction = True
                    yield
                    self._send_keys()
            except psycopg.Error as exc:
                raise _translate(exc, "keystore transaction failed") from None
            finally:
                self._in_transaction = False
                self._locked.clear()
                self._unsent.clear()  # rolled back with the rest, if an error left any

    @contextmanager
    def _subject_transaction(self, subject_id: uuid.UUID) -> Iterator[None]:
        """The open transaction (a batch, say) or a new one, holding the subject's advisory lock."""
        with self._lock, self._transaction():
            if subject_id not in self._locked:
                self._lock_subject(subject_id)
                self._locked.add(subject_id)
            yield

    def _lock_subject(self, subject_id: uuid.UUID) -> None:
        """Waits for the subject's advisory lock, which the transaction holds until it ends."""
        self._run(_LOCK_SUBJECTS, {"k": [self._lock_name(subject_id)]})

    def _hold_subjects(self, subject_ids: Sequence[uuid.UUID]) -> None:
        """Takes the locks of the batch's subjects (minted ones need none) in one statement.

        In the order of their lock names, as every batch here takes them: two batches never each
        hold a lock the other waits for among the subjects they announced.
        """
        wanted = {s for s in subject_ids if s not in self._locked and s not in self._fresh}
        if not wanted:
            return
        self._run(_LOCK_SUBJECTS, {"k": sorted(self._lock_name(s) for s in wanted)})
        self._locked |= wanted

    def _lock_name(self, subject_id: uuid.UUID) -> str:
        # Keyed on schema and subject, so other advisory locks on subject ids never collide with ours.
        return f"{self.schema}:{subject_id}"

    def _run(
        self, text: LiteralString, params: Sequence[object] | Mapping[str, object] = ()
    ) -> list[Row]:
        """The rows of one statement ({s} is the schema), in the open transaction or on its own."""
        cursor = self._execute(text, params)
        return cursor.fetchall() if cursor.description else []

    def _execute(
        self, text: LiteralString, params: Sequence[object] | Mapping[str, object]
    ) -> psycopg.Cursor[Row]:
        with self._lock:
            self._send_keys()  # what the transaction created is there for its next statement
            try:
                statement = sql.SQL(text).format(s=sql.Identifier(self.schema))
                return self._connection().execute(statement, params)
            except psycopg.Error as exc:
                # `from None`: psycopg's message may quote a failing row, wrapped key bytes included.
                raise _translate(exc, "keystore query failed") from None


def _translate(exc: psycopg.Error, doing: str) -> KeystoreError:
    """A KeystoreError naming the failure class only: server messages may quote row values."""
    if isinstance(exc, errors.UniqueViolation):
        return KeyExists("key version taken")
    if isinstance(exc, errors.InsufficientPrivilege):
        return KeystoreError(f"{doing}: permission denied (the role lacks a grant on the keystore)")
    return KeystoreError(f"{doing}: {type(exc).__name__} (SQLSTATE {exc.sqlstate or 'none'})")


def _to_row(subject_id: uuid.UUID, scope: str, row: Row) -> KeyRow | Tombstone:
    key_id, version, kek_version, wrapped, created_at, shredded_at = row
    if shredded_at is not None:
        return Tombstone(subject_id, scope, version, key_id, shredded_at)
    return KeyRow(
        key_id, subject_id, scope, version, WrappedKey(kek_version, bytes(wrapped)), created_at
    )
