"""Read models in PostgreSQL (schema `views`) for the distributed mode's processors and query API.

The processors' role may write here and read the ledger, never the keystore; the query role only
reads. Tables are created by the owner role (`migrate`), as every schema of the cluster is.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from consentry.adapters.sql_views import Cursor, SqlViewStore, ViewStoreError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS {s}.positions (name TEXT PRIMARY KEY, position BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.applied (subject_id BYTEA PRIMARY KEY, sequence BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.subjects (
    subject_id BYTEA PRIMARY KEY, status TEXT NOT NULL, at TEXT NOT NULL, version BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.profile_values (
    subject_id BYTEA NOT NULL, purpose TEXT NOT NULL, field TEXT NOT NULL, scope TEXT NOT NULL,
    key_id TEXT NOT NULL, nonce BYTEA NOT NULL, ciphertext BYTEA NOT NULL, event_id BYTEA NOT NULL,
    at TEXT NOT NULL, PRIMARY KEY (subject_id, purpose, field));
CREATE TABLE IF NOT EXISTS {s}.consents (
    subject_id BYTEA NOT NULL, purpose TEXT NOT NULL, status TEXT NOT NULL,
    lawful_basis TEXT NOT NULL, since TEXT NOT NULL, expires_at TEXT, event_id BYTEA NOT NULL,
    PRIMARY KEY (subject_id, purpose));
CREATE TABLE IF NOT EXISTS {s}.accesses (
    event_id BYTEA PRIMARY KEY, subject_id BYTEA NOT NULL, actor_id TEXT NOT NULL,
    role TEXT NOT NULL, purpose TEXT NOT NULL, field_names TEXT NOT NULL, kind TEXT NOT NULL,
    allowed INTEGER NOT NULL, reason TEXT NOT NULL, at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS accesses_by_subject ON {s}.accesses (subject_id, at);
CREATE TABLE IF NOT EXISTS {s}.erasures (
    subject_id BYTEA PRIMARY KEY, status TEXT NOT NULL, at TEXT NOT NULL, event_id BYTEA NOT NULL,
    certificate BYTEA, signature BYTEA);
"""


def migrate(owner_dsn: str, schema: str = "views") -> None:
    """Creates the view tables (idempotent); run as the schema's owner."""
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL(_SCHEMA).format(s=sql.Identifier(schema)))


class PostgresViewStore(SqlViewStore):
    """The read models on one connection (guarded by a lock) with `search_path` set to the schema."""

    placeholder = "%s"
    driver_errors = (psycopg.Error,)

    def __init__(self, dsn: str, schema: str = "views") -> None:
        try:
            self._conn = psycopg.connect(dsn, autocommit=True)
            self._conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        except psycopg.Error as exc:
            raise ViewStoreError(f"cannot open the read models: {type(exc).__name__}") from None
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[Cursor]:
        with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
            yield cur
