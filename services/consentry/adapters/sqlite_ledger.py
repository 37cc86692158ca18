"""The embedded ledger's event store: eventsourcing's SQLite recorder, checkpointed off the writer.

`CheckpointedSQLiteRecorder` is eventsourcing's own `SQLiteApplicationRecorder` (same table, same
statements, same transactions), selected through its `APPLICATION_RECORDER_TOPIC` setting. Only
the WAL checkpoints move: the writing connection leaves them to a `Checkpointer` thread (see
adapters/sqlite_checkpoints.py) instead of running them inside the commit that crossed 1,000 pages
(ingest of 100k events in process, with no checkpoint of events.db at all: 6-8 µs less per event;
this is where most of that goes). Commits still sync the WAL (synchronous=FULL), so an appended
event is as durable as before; the checkpoints sync the database file as SQLite's own do.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor, SQLiteDatastore

from consentry.adapters.sqlite_binding import bind_directly
from consentry.adapters.sqlite_checkpoints import (
    FALLBACK_CHECKPOINT_PAGES,
    WRITER_CACHE_KIB,
    Checkpointer,
)
from consentry.core.pending_commit import PendingCommit

RECORDER_TOPIC: Final = "consentry.adapters.sqlite_ledger:CheckpointedSQLiteRecorder"
# Each event is a row of the table and an entry of its (subject, version) key.
ROWS_PER_EVENT: Final = 2
# Subjects per query of `select_events_after`: two parameters each, far below SQLite's limit.
SUBJECTS_PER_READ: Final = 400


class CheckpointedSQLiteRecorder(SQLiteApplicationRecorder):
    """eventsourcing's SQLite application recorder whose WAL a Checkpointer thread checkpoints."""

    calls_before_commit: Final = True  # ledger/store.WaitsBeforeCommit

    def __init__(self, datastore: SQLiteDatastore, events_table_name: str = "stored_events") -> None:
        bind_directly()  # its rows' state is bytes
        super().__init__(datastore, events_table_name)
        self.checkpoints = Checkpointer(Path(datastore.pool.db_name), synchronous="FULL")

    def insert_events(
        self,
        stored_events: Sequence[StoredEvent],
        *,
        before_commit: Callable[[], None] = PendingCommit.DONE,
        **kwargs: Any,
    ) -> Sequence[int] | None:
        """Inserts the events, calls `before_commit` and commits (ledger/store.WaitsBeforeCommit)."""
        positions = super().insert_events(stored_events, before_commit=before_commit, **kwargs)
        self.checkpoints.committed(ROWS_PER_EVENT * len(stored_events))
        return positions

    def _insert_events(
        self,
        c: SQLiteCursor,
        stored_events: Sequence[StoredEvent],
        *,
        before_commit: Callable[[], None] = PendingCommit.DONE,
        **kwargs: Any,
    ) -> Sequence[int] | None:
        # Settings of the connection, not of the database: the pool may hand out any of its
        # connections to write, so each write sets them (two pragmas per batch, not per event).
        c.execute(f"PRAGMA wal_autocheckpoint={FALLBACK_CHECKPOINT_PAGES}")
        c.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
        positions = super()._insert_events(c, stored_events, **kwargs)
        before_commit()  # raising here rolls the inserts back
        return positions

    def select_events_after(
        self, versions: Mapping[uuid.UUID, int]
    ) -> dict[uuid.UUID, list[StoredEvent]]:
        """Each subject's events after its version, in version order: one query per 400 subjects
        (ledger/store.py), each a lookup of the (subject, version) key per subject."""
        found: dict[uuid.UUID, list[StoredEvent]] = {}
        wanted = [(subject_id.hex, version) for subject_id, version in versions.items()]
        by_hex = {subject_id.hex: subject_id for subject_id in versions}
        for start in range(0, len(wanted), SUBJECTS_PER_READ):
            chunk = wanted[start : start + SUBJECTS_PER_READ]
            # Only placeholders and the recorder's own table name go into the text.
            pairs = ", ".join(["(?, ?)"] * len(chunk))
            statement = (
                f"WITH wanted(id, after) AS (VALUES {pairs}) "  # noqa: S608
                "SELECT e.originator_id, e.originator_version, e.topic, e.state "
                f"FROM wanted CROSS JOIN {self.events_table_name} e "
                "ON e.originator_id = wanted.id AND e.originator_version > wanted.after "
                "ORDER BY e.originator_id, e.originator_version"
            )
            with self.datastore.transaction(commit=False) as c:
                c.execute(statement, [value for pair in chunk for value in pair])
                rows = c.fetchall()
            for hex_id, version, topic, state in rows:
                subject_id = by_hex[hex_id]
                found.setdefault(subject_id, []).append(StoredEvent(subject_id, version, topic, state))
        return found

    def close(self) -> None:
        """Stops the checkpoints' thread (the datastore is closed by its factory)."""
        self.checkpoints.close()
