"""Read models on a SQL database: the statements SQLite and PostgreSQL share.

Every view holds ciphertext and pseudonymous metadata only. A page of changes and the positions it
reaches commit in one transaction. Adapters supply the schema, the connection handling and the
placeholder style; statements here are written with `?` and rewritten for `%s` drivers.
"""

from __future__ import annotations

import json
import uuid
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol

from consentry.core.errors import ConsentryError
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

TABLES = ("positions", "applied", "subjects", "profile_values", "consents", "accesses", "erasures")
VIEW_TABLES = TABLES[1:]


class ViewStoreError(ConsentryError):
    """The read-model database failed."""


class Cursor(Protocol):
    """The slice of a DB-API cursor the statements need."""

    def execute(self, sql: str, params: Sequence[object] = ()) -> Any: ...

    def executemany(self, sql: str, params: Sequence[Sequence[object]]) -> Any: ...

    def fetchall(self) -> list[Any]: ...


# The last time written and its text: an event's values share one time (its `occurred_at`), and
# `isoformat` is most of the cost of a row's parameters. One tuple, swapped whole, so a thread never
# pairs one time with another's text.
_last_ts: tuple[datetime | None, str | None] = (None, None)


def ts(value: datetime | None) -> str | None:
    global _last_ts  # a one-entry cache, replaced whole
    last = _last_ts
    if value is last[0]:
        return last[1]
    text = None if value is None else value.isoformat()
    _last_ts = (value, text)
    return text


def _dt(value: Any) -> datetime:
    return datetime.fromisoformat(str(value))


def _write_of(change: Change) -> tuple[int, Callable[[Any], Write]]:
    """The rank of the table a change writes, and the function that writes it."""
    found = _WRITES.get(type(change))
    if found is None:
        raise ViewStoreError(f"unknown view change {type(change).__name__}")
    return found


Write = tuple[str, list[Sequence[object]]]


def _uuid(value: Any) -> uuid.UUID:
    return uuid.UUID(bytes=bytes(value))


class SqlViewStore(ViewStore):
    """The shared statements; subclasses open transactions and cursors."""

    placeholder = "?"
    # The database driver's own error types, reported as ViewStoreError.
    driver_errors: tuple[type[Exception], ...] = ()

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[Cursor]:
        """A cursor inside a transaction that commits on success and rolls back on error."""

    def _read(self) -> AbstractContextManager[Cursor]:
        """A cursor for one read statement: by default inside a transaction of its own."""
        return self._transaction()

    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def _write(self, cur: Cursor, sql: str, rows: list[Sequence[object]]) -> None:
        """Runs one statement of a page for each of its rows, in order."""
        cur.executemany(self._sql(sql), rows)

    def _rows(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        with self._read() as cur:
            cur.execute(self._sql(sql), params)
            return cur.fetchall()

    # -- writes ----------------------------------------------------------------------------------

    def position(self, name: str) -> int:
        rows = self._rows("SELECT position FROM positions WHERE name=?", (name,))
        return int(rows[0][0]) if rows else 0

    def positions(self, prefix: str) -> dict[str, int]:
        rows = self._rows("SELECT name, position FROM positions WHERE name LIKE ?", (prefix + "%",))
        return {str(name): int(position) for name, position in rows}

    def apply(self, name: str, changes: Sequence[Change], position: int) -> None:
        self.apply_at(changes, {name: position})

    def apply_at(self, changes: Sequence[Change], positions: Mapping[str, int]) -> None:
        # Each statement touches its own table only, so a page's changes can go table by table
        # (keeping their order within each table), and consecutive changes of one statement go to
        # the database together: a few executemany calls per page instead of one every time the
        # statement changes. The rows are made before the transaction starts: other writers of
        # the database (a rebuild's helper processes) wait only while SQLite writes them.
        tables: dict[int, list[tuple[str, list[Sequence[object]]]]] = {}
        for change in changes:
            rank, write = _write_of(change)
            sql, rows = write(change)
            runs = tables.setdefault(rank, [])
            if runs and runs[-1][0] == sql:
                runs[-1][1].extend(rows)
            else:
                runs.append((sql, rows))
        try:
            with self._transaction() as cur:
                for rank in sorted(tables):
                    for sql, rows in tables[rank]:
                        self._write(cur, sql, rows)
                self._write(
                    cur,
                    "INSERT INTO positions VALUES (?,?) "
                    "ON CONFLICT (name) DO UPDATE SET position=excluded.position",
                    list(positions.items()),
                )
        except self.driver_errors as exc:
            raise ViewStoreError(f"read models could not be updated: {type(exc).__name__}") from exc

    def applied(self, subject_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
        found: dict[uuid.UUID, int] = {}
        for chunk in _chunks(list(subject_ids), 500):
            marks = ",".join("?" * len(chunk))
            rows = self._rows(
                f"SELECT subject_id, sequence FROM applied WHERE subject_id IN ({marks})",  # noqa: S608
                [s.bytes for s in chunk],
            )
            found.update((_uuid(s), int(n)) for s, n in rows)
        return found

    def reset(self, name: str) -> None:
        with self._transaction() as cur:
            for table in TABLES:
                cur.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names

    # -- reads -----------------------------------------------------------------------------------

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

    def current_values(
        self, subject_id: uuid.UUID, purpose: str, version: int
    ) -> dict[str, SealedValue] | None:
        # One statement (a profile read makes it on the event loop): the subject's applied mark
        # with the purpose's values, so the values are those of the state the mark vouches for.
        rows = self._rows(
            "SELECT a.sequence, v.field, v.scope, v.key_id, v.nonce, v.ciphertext FROM applied a "
            "LEFT JOIN profile_values v ON v.subject_id = a.subject_id AND v.purpose = ? "
            "WHERE a.subject_id = ? ORDER BY v.field",
            (purpose, subject_id.bytes),
        )
        if (int(rows[0][0]) if rows else 0) < version:
            return None
        return {
            f: SealedValue(scope, key_id, bytes(nonce), bytes(ct))
            for _, f, scope, key_id, nonce, ct in rows
            if f is not None
        }

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
            "FROM accesses WHERE subject_id=? ORDER BY at, event_id",
            (subject_id.bytes,),
        )
        return [
            AccessRow(_uuid(e), a, r, p, tuple(json.loads(f)), k, bool(ok), why, _dt(at))
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
            _uuid(event_id),
            None if cert is None else bytes(cert),
            None if sig is None else bytes(sig),
        )

    def dump(self) -> dict[str, list[tuple[object, ...]]]:
        return {
            table: sorted(
                (
                    tuple(bytes(v) if isinstance(v, memoryview) else v for v in r)
                    for r in self._rows(f"SELECT * FROM {table}")  # noqa: S608
                ),
                key=repr,
            )
            for table in VIEW_TABLES
        }


def _one(sql: str, params: Sequence[object]) -> Write:
    return sql, [params]


# One function per kind of change, found by its type: a view change is written for every event a
# rebuild projects, and a lookup costs less than trying a `match` statement's cases in turn.
def _put_value(change: PutValue) -> Write:
    s = change.sealed
    return _one(
        "INSERT INTO profile_values VALUES (?,?,?,?,?,?,?,?,?) "
        "ON CONFLICT (subject_id, purpose, field) DO UPDATE SET scope=excluded.scope, "
        "key_id=excluded.key_id, nonce=excluded.nonce, ciphertext=excluded.ciphertext, "
        "event_id=excluded.event_id, at=excluded.at",
        (
            change.subject_id.bytes,
            change.purpose,
            change.field_name,
            s.scope,
            s.key_id,
            s.nonce,
            s.ciphertext,
            change.event_id.bytes,
            ts(change.at),
        ),
    )


def _drop_values(change: DropValues) -> Write:
    if change.scopes is None:
        return _one("DELETE FROM profile_values WHERE subject_id=?", (change.subject_id.bytes,))
    return (
        "DELETE FROM profile_values WHERE subject_id=? AND scope=?",
        [(change.subject_id.bytes, scope) for scope in change.scopes],
    )


def _put_consent(change: PutConsent) -> Write:
    c = change.consent
    return _one(
        "INSERT INTO consents VALUES (?,?,?,?,?,?,?) ON CONFLICT (subject_id, purpose) "
        "DO UPDATE SET status=excluded.status, lawful_basis=excluded.lawful_basis, "
        "since=excluded.since, expires_at=excluded.expires_at, "
        "event_id=excluded.event_id",
        (
            change.subject_id.bytes,
            c.purpose,
            c.status,
            c.lawful_basis,
            ts(c.since),
            ts(c.expires_at),
            change.event_id.bytes,
        ),
    )


def _add_access(change: AddAccess) -> Write:
    a = change.access
    return _one(
        "INSERT INTO accesses VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
        (
            a.event_id.bytes,
            change.subject_id.bytes,
            a.actor_id,
            a.role,
            a.purpose,
            json.dumps(list(a.field_names)),
            a.kind,
            int(a.allowed),
            a.reason,
            ts(a.at),
        ),
    )


def _put_subject(change: PutSubject) -> Write:
    return _one(
        "INSERT INTO subjects VALUES (?,?,?,?) ON CONFLICT (subject_id) DO UPDATE SET "
        "status=excluded.status, at=excluded.at, version=excluded.version",
        (change.subject_id.bytes, change.status, ts(change.at), change.version),
    )


def _put_erasure(change: PutErasure) -> Write:
    e = change.erasure
    return _one(
        "INSERT INTO erasures VALUES (?,?,?,?,?,?) ON CONFLICT (subject_id) DO UPDATE "
        "SET status=excluded.status, at=excluded.at, event_id=excluded.event_id, "
        "certificate=excluded.certificate, signature=excluded.signature",
        (change.subject_id.bytes, e.status, ts(e.at), e.event_id.bytes, e.certificate, e.signature),
    )


def _mark_applied(change: MarkApplied) -> Write:
    return _one(
        "INSERT INTO applied VALUES (?,?) ON CONFLICT (subject_id) "
        "DO UPDATE SET sequence=excluded.sequence",
        (change.subject_id.bytes, change.sequence),
    )


# Per kind of change: the rank of the table it writes (both value changes write profile_values,
# every other kind a table of its own), so a page can go table by table, and its write.
_WRITES: dict[type, tuple[int, Callable[[Any], Write]]] = {
    PutValue: (0, _put_value),
    DropValues: (0, _drop_values),
    PutConsent: (1, _put_consent),
    AddAccess: (2, _add_access),
    PutSubject: (3, _put_subject),
    PutErasure: (4, _put_erasure),
    MarkApplied: (5, _mark_applied),
}


def _chunks(items: list[uuid.UUID], size: int) -> Iterator[list[uuid.UUID]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
