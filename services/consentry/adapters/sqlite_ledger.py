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

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor, SQLiteDatastore

from consentry.adapters.sqlite_binding import bind_directly
from consentry.adapters.sqlite_checkpoints import FALLBACK_CHECKPOINT_PAGES, Checkpointer

RECORDER_TOPIC: Final = "consentry.adapters.sqlite_ledger:CheckpointedSQLiteRecorder"
# Each event is a row of the table and an entry of its (subject, version) key.
ROWS_PER_EVENT: Final = 2


class CheckpointedSQLiteRecorder(SQLiteApplicationRecorder):
    """eventsourcing's SQLite application recorder whose WAL a Checkpointer thread checkpoints."""

    def __init__(self, datastore: SQLiteDatastore, events_table_name: str = "stored_events") -> None:
        bind_directly()  # its rows' state is bytes
        super().__init__(datastore, events_table_name)
        self.checkpoints = Checkpointer(Path(datastore.pool.db_name), synchronous="FULL")

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        positions = super().insert_events(stored_events, **kwargs)
        self.checkpoints.committed(ROWS_PER_EVENT * len(stored_events))
        return positions

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        # A setting of the connection, not of the database: the pool may hand out any of its
        # connections to write, so each write sets it (a pragma per batch, not per event).
        c.execute(f"PRAGMA wal_autocheckpoint={FALLBACK_CHECKPOINT_PAGES}")
        return super()._insert_events(c, stored_events, **kwargs)

    def close(self) -> None:
        """Stops the checkpoints' thread (the datastore is closed by its factory)."""
        self.checkpoints.close()
