"""bytes and None reach SQLite without the sqlite3 module's adapter search, and bind as before."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from types import NoneType
from typing import Any

import pytest
from eventsourcing.sqlite import SQLiteDatastore

from consentry.adapters.sqlite_binding import bind_directly
from consentry.adapters.sqlite_keystore import SQLiteKeystore
from consentry.adapters.sqlite_ledger import CheckpointedSQLiteRecorder
from consentry.adapters.sqlite_views import SQLiteViewStore
from consentry.core.keys import LocalKeyFileProvider
from tests.support import StepClock

_DIRECT: tuple[tuple[type[Any], type[Any]], ...] = (
    (bytes, sqlite3.PrepareProtocol),
    (NoneType, sqlite3.PrepareProtocol),
)


@pytest.fixture
def registry_without_ours() -> Iterator[None]:
    """The sqlite3 module's adapters without the two, as in a process that opened no store yet."""
    saved = {key: sqlite3.adapters.pop(key) for key in _DIRECT if key in sqlite3.adapters}
    yield
    for key in _DIRECT:
        sqlite3.adapters.pop(key, None)
    sqlite3.adapters.update(saved)


def _views(where: Path) -> Callable[[], None]:
    return SQLiteViewStore(where / "views.db").close


def _keystore(where: Path) -> Callable[[], None]:
    provider = LocalKeyFileProvider.open(where / "keys.json")
    return SQLiteKeystore(where / "keystore.db", provider, StepClock()).close


def _ledger(where: Path) -> Callable[[], None]:
    datastore = SQLiteDatastore(str(where / "events.db"))
    recorder = CheckpointedSQLiteRecorder(datastore)

    def close() -> None:
        recorder.close()
        datastore.close()

    return close


@pytest.mark.usefixtures("registry_without_ours")
@pytest.mark.parametrize("opened", [_views, _keystore, _ledger], ids=["views", "keystore", "ledger"])
def test_opening_each_sqlite_store_registers_the_direct_adapters(
    tmp_path: Path, opened: Callable[[Path], Callable[[], None]]
) -> None:
    assert not any(key in sqlite3.adapters for key in _DIRECT)
    close = opened(tmp_path)
    close()
    assert sqlite3.adapters[_DIRECT[0]] is bytes
    assert sqlite3.adapters[_DIRECT[1]](None) is None


class _Bytes(bytes):
    """A subclass: not registered, so the module adapts it as it always did."""


@pytest.mark.usefixtures("registry_without_ours")
def test_values_bind_as_they_did_without_the_adapters(tmp_path: Path) -> None:
    rows = [
        (b"\x00example\xff", None, bytearray(b"ba"), _Bytes(b"sub"), b""),
        (b"x" * 5000, None, bytearray(), _Bytes(), b"\x00"),
    ]

    def stored(path: Path) -> list[tuple[object, ...]]:
        with closing(sqlite3.connect(path)) as db:
            db.execute("CREATE TABLE t (a, b, c, d, e)")
            db.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?)", rows)
            db.execute("INSERT INTO t VALUES (?, ?, ?, ?, ?)", rows[0])
            return db.execute(
                "SELECT a, typeof(a), b, typeof(b), c, typeof(c), d, typeof(d), e, typeof(e) FROM t"
            ).fetchall()

    before = stored(tmp_path / "before.db")
    bind_directly()
    bind_directly()  # again: still the same two adapters
    after = stored(tmp_path / "after.db")

    assert after == before
    assert [r[1::2] for r in after] == [("blob", "null", "blob", "blob", "blob")] * 3
    assert [r[0] for r in after] == [rows[0][0], rows[1][0], rows[0][0]]
