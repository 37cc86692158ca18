"""Read models in one SQLite file; each page of changes and its position commit together."""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from consentry.core.errors import ConsentryError
from consentry.core.sealing import SealedValue
from consentry.core.views import (
    AccessRow,
    AddAccess,
    Change,
    ConsentRow,
    DropValues,
    ErasureRow,
    PutConsent,
    PutErasure,
    PutSubject,
    PutValue,
    ViewStore,
)

TABLES = ("positions", "subjects", "profile_values", "consents", "accesses", "erasures")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS positions (name TEXT PRIMARY KEY, position INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS subjects (
    subject_id BLOB PRIMARY KEY, status TEXT NOT NULL, at TEXT NOT NULL, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS profile_values (
    subject_id BLOB NOT NULL, purpose TEXT NOT NULL, field TEXT NOT NULL, scope TEXT NOT NULL,
    key_id TEXT NOT NULL, nonce BLOB NOT NULL, ciphertext BLOB NOT NULL, event_id BLOB NOT NULL,
    at TEXT NOT NULL, PRIMARY KEY (subject_id, purpose, field));
CREATE TABLE IF NOT EXISTS consents (
    subject_id BLOB NOT NULL, purpose TEXT NOT NULL, status TEXT NOT NULL,
    lawful_basis TEXT NOT NULL, since TEXT NOT NULL, expires_at TEXT, event_id BLOB NOT NULL,
    PRIMARY KEY (subject_id, purpose));
CREATE TABLE IF NOT EXISTS accesses (
    event_id BLOB PRIMARY KEY, subject_id BLOB NOT NULL, actor_id TEXT NOT NULL,
    role TEXT NOT NULL, purpose TEXT NOT NULL, field_names TEXT NOT NULL, kind TEXT NOT NULL,
    allowed INTEGER NOT NULL, reason TEXT NOT NULL, at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS accesses_by_subject ON accesses (subject_id, at);
CREATE TABLE IF NOT EXISTS erasures (
    subject_id BLOB PRIMARY KEY, status TEXT NOT NULL, at TEXT NOT NULL, event_id BLOB NOT NULL,
    certificate BLOB, signature BLOB);
"""


class ViewStoreError(ConsentryError):
    """The read-model database failed."""


def _ts(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _dt(value: Any) -> datetime:
    return datetime.fromisoformat(str(value))


class SQLiteViewStore(ViewStore):
    """The embedded platform's read models (`views.db`); ciphertext and pseudonymous metadata only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _rows(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def position(self, name: str) -> int:
        rows = self._rows("SELECT position FROM positions WHERE name=?", (name,))
        return int(rows[0][0]) if rows else 0

    def apply(self, name: str, changes: Sequence[Change], position: int) -> None:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for change in changes:
                    self._apply_one(change)
                self._db.execute(
                    "INSERT INTO positions VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET position=excluded.position",
                    (name, position),
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._db.execute("ROLLBACK")
                raise ViewStoreError(f"read models could not be updated: {exc}") from exc

    def _apply_one(self, change: Change) -> None:
        db = self._db
        match change:
            case PutValue():
                s = change.sealed
                db.execute(
                    "INSERT OR REPLACE INTO profile_values VALUES (?,?,?,?,?,?,?,?,?)",
                    (
                        change.subject_id.bytes,
                        change.purpose,
                        change.field_name,
                        s.scope,
                        s.key_id,
                        s.nonce,
                        s.ciphertext,
                        change.event_id.bytes,
                        _ts(change.at),
                    ),
                )
            case DropValues():
                if change.scopes is None:
                    db.execute(
                        "DELETE FROM profile_values WHERE subject_id=?", (change.subject_id.bytes,)
                    )
                else:
                    db.executemany(
                        "DELETE FROM profile_values WHERE subject_id=? AND scope=?",
                        [(change.subject_id.bytes, scope) for scope in change.scopes],
                    )
            case PutConsent(subject_id=subject_id, consent=c):
                db.execute(
                    "INSERT OR REPLACE INTO consents VALUES (?,?,?,?,?,?,?)",
                    (
                        subject_id.bytes,
                        c.purpose,
                        c.status,
                        c.lawful_basis,
                        _ts(c.since),
                        _ts(c.expires_at),
                        change.event_id.bytes,
                    ),
                )
            case AddAccess(subject_id=subject_id, access=a):
                db.execute(
                    "INSERT OR IGNORE INTO accesses VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (
                        a.event_id.bytes,
                        subject_id.bytes,
                        a.actor_id,
                        a.role,
                        a.purpose,
                        json.dumps(list(a.field_names)),
                        a.kind,
                        int(a.allowed),
                        a.reason,
                        _ts(a.at),
                    ),
                )
            case PutSubject():
                db.execute(
                    "INSERT OR REPLACE INTO subjects VALUES (?,?,?,?)",
                    (change.subject_id.bytes, change.status, _ts(change.at), change.version),
                )
            case PutErasure(subject_id=subject_id, erasure=e):
                db.execute(
                    "INSERT OR REPLACE INTO erasures VALUES (?,?,?,?,?,?)",
                    (
                        subject_id.bytes,
                        e.status,
                        _ts(e.at),
                        e.event_id.bytes,
                        e.certificate,
                        e.signature,
                    ),
                )

    def reset(self, name: str) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            for table in TABLES:
                self._db.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
            self._db.execute("COMMIT")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def values(
        self, subject_id: uuid.UUID, purpose: str | None = None
    ) -> dict[str, dict[str, SealedValue]]:
        sql = (
            "SELECT purpose, field, scope, key_id, nonce, ciphertext FROM profile_values "
            "WHERE subject_id=?"
        )
        params: list[object] = [subject_id.bytes]
        if purpose is not None:
            sql += " AND purpose=?"
            params.append(purpose)
        out: dict[str, dict[str, SealedValue]] = {}
        for p, f, scope, key_id, nonce, ct in self._rows(sql + " ORDER BY purpose, field", params):
            out.setdefault(p, {})[f] = SealedValue(scope, key_id, bytes(nonce), bytes(ct))
        return out

    def consents(self, subject_id: uuid.UUID) -> list[ConsentRow]:
        rows = self._rows(
            "SELECT purpose, status, lawful_basis, since, expires_at FROM consents WHERE subject_id=? "
            "ORDER BY purpose",
            (subject_id.bytes,),
        )
        return [
            ConsentRow(p, s, b, _dt(since), None if e is None else _dt(e)) for p, s, b, since, e in rows
        ]

    def accesses(self, subject_id: uuid.UUID) -> list[AccessRow]:
        rows = self._rows(
            "SELECT event_id, actor_id, role, purpose, field_names, kind, allowed, reason, at "
            "FROM accesses WHERE subject_id=? ORDER BY at, rowid",
            (subject_id.bytes,),
        )
        return [
            AccessRow(
                uuid.UUID(bytes=bytes(e)), a, r, p, tuple(json.loads(f)), k, bool(ok), why, _dt(at)
            )
            for e, a, r, p, f, k, ok, why, at in rows
        ]

    def subject_status(self, subject_id: uuid.UUID) -> str | None:
        rows = self._rows("SELECT status FROM subjects WHERE subject_id=?", (subject_id.bytes,))
        return str(rows[0][0]) if rows else None

    def erasure(self, subject_id: uuid.UUID) -> ErasureRow | None:
        rows = self._rows(
            "SELECT status, at, event_id, certificate, signature FROM erasures WHERE subject_id=?",
            (subject_id.bytes,),
        )
        if not rows:
            return None
        status, at, event_id, cert, sig = rows[0]
        return ErasureRow(
            status,
            _dt(at),
            uuid.UUID(bytes=bytes(event_id)),
            None if cert is None else bytes(cert),
            None if sig is None else bytes(sig),
        )

    def dump(self) -> dict[str, list[tuple[object, ...]]]:
        return {
            table: [tuple(r) for r in self._rows(f"SELECT * FROM {table} ORDER BY 1, 2")]  # noqa: S608
            for table in TABLES
            if table != "positions"
        }
