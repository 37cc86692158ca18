"""The embedded ledger's log read subject by subject, for rebuilding the read models.

The log is eventsourcing's `stored_events` table in `events.db`: its primary key is (originator_id,
originator_version) and its rowid is the notification id the runners record as their position.
Reading in key order hands a rebuild each subject's whole history at once, so the views are written
in key order (appended to their B-trees, not scattered over them) and only a subject's final rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

_PAGE_SQL = (
    "SELECT originator_id, originator_version, state FROM stored_events "
    "WHERE (originator_id, originator_version) > (?, ?) AND rowid <= ? {below}"
    "ORDER BY originator_id, originator_version LIMIT ?"
)


class SQLiteSubjectLog:
    """Reads `events.db` on a connection of its own; it never writes."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("PRAGMA query_only=ON")
        return db

    def last_position(self) -> int:
        """The notification id of the last event committed to the log (0 if none)."""
        with closing(self._connect()) as db:
            row = db.execute("SELECT MAX(rowid) FROM stored_events").fetchone()
        return int(row[0] or 0)

    def by_subject(
        self, upto: int, page: int, span: tuple[str, str | None] = ("", None)
    ) -> Iterator[list[bytes]]:
        """The stored bytes of the events at positions up to `upto`, subject by subject, in pages.

        Only subjects whose id (as text) is in `span` (from its start, inclusive, to its end,
        exclusive; None: to the last). Each page is a read of its own (no snapshot is held between
        pages, so the ledger's WAL can be checkpointed meanwhile); events after `upto` are left for
        the runner's catch-up.
        """
        start, end = span
        sql = _PAGE_SQL.format(below="" if end is None else "AND originator_id < ? ")
        after: tuple[str, int] = (start, 0)
        with closing(self._connect()) as db:
            while True:
                bounds = (upto,) if end is None else (upto, end)
                rows = db.execute(sql, (*after, *bounds, page)).fetchall()
                if not rows:
                    return
                after = (str(rows[-1][0]), int(rows[-1][1]))
                yield [bytes(state) for _, _, state in rows]
