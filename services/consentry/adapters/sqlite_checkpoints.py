"""WAL checkpoints of a SQLite database run by a thread of their own, not by the committing one.

In WAL mode a commit appends the pages it changed to the WAL, and SQLite's automatic checkpoint
copies them back into the database file inside the commit that takes the WAL past 1,000 pages: on
the writer's thread, between two of its pages. Here the writer's connection leaves that to a
`Checkpointer` (its own automatic checkpoint only stays as a fallback, at a WAL ten times larger)
and tells it how many rows each commit changed. Once about as many rows as SQLite's 1,000 pages
have been committed, the checkpointer's thread checkpoints on a connection of its own. SQLite does
that work without Python's GIL, so the writer goes on with its next page on the other core
meanwhile (in-process ingest of 100k sealed events, old/new twice: 5,528/5,533 -> 6,584/6,196
events/s, with the ledger's events.db checkpointed the same way; the keystore's too).

Each round is two checkpoints. A PASSIVE one copies the pages without waiting for any reader or
writer: the bulk of the work, and the writer may commit meanwhile. Then a RESTART one copies what
the writer added since and makes sure the next write starts the WAL again from its beginning: a
writer that began while the PASSIVE one was still syncing would otherwise go on appending, and the
WAL would only grow (a 100k ingest left the views' WAL at 40 MiB, the fallback's size; with the
RESTART, the three WALs stayed under 5 MiB). The RESTART waits for nobody (`RESTART_WAIT_MS`): with
the writer or a reader of an older snapshot busy, it gives up until the next round, so it holds
writers back only while it copies the few pages left, never while readers finish. A failed round
loses nothing: every committed page stays in the WAL until a checkpoint has copied it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

CHECKPOINT_ROWS: Final = 1_000
"""Rows committed between two checkpoints: most rows change a page of their own (random keys), so
about SQLite's default of 1,000 WAL pages."""
FALLBACK_CHECKPOINT_PAGES: Final = 10_000
"""The writer's own automatic checkpoint, set on its connection: only if the WAL grows this large
all the same (the thread behind, or gone)."""
WRITER_CACHE_KIB: Final = 32 * 1024
"""SQLite's page cache of the live writing connection of the ledger (events.db) and of the views,
against SQLite's 2 MiB default. With the default, each write read pages of the tree it had read a
batch before back from the WAL (its pages are spread by random subject ids): in-process sealed
ingest of 100k events, the last 18,437 alternately with and without, three times: read calls
8.0 -> 2.5 per event, bytes read 33 -> 10 KB, wall time 184.6 / 205.6 / 210.3 -> 177.8 / 197.5 /
195.1 us per event. The cache fills only as far as the files' hot pages go: at most this much."""
SQLITE_DEFAULT_CACHE: Final = -2000
"""SQLite's own default `cache_size` (2,000 KiB), for work that does not reread its pages."""
RESTART_WAIT_MS: Final = 0
"""How long a RESTART checkpoint waits for the writer, then for readers of older snapshots: not at
all (while it waited for readers, it would hold the writer back, and reads wait on writes)."""


class Checkpointer:
    """Checkpoints one database from a daemon thread, a round after enough committed rows.

    A thread that cannot open its connection checkpoints nothing: the writer's fallback does.
    """

    # The class of the thread's connection (tests put hooks into its statements).
    connection_factory: type[sqlite3.Connection] = sqlite3.Connection

    def __init__(self, path: Path, rows: int = CHECKPOINT_ROWS, synchronous: str = "NORMAL") -> None:
        self._path = path
        self._rows = rows
        self._synchronous = synchronous
        self._pending = 0
        self._paused = False
        self._running = False
        self._closed = False
        self.rounds = 0  # rounds done, for tests and diagnostics
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"checkpoints-{path.name}", daemon=True)
        self._thread.start()

    def committed(self, rows: int) -> None:
        """Notes a commit that changed `rows` rows; wakes the thread once enough are pending."""
        with self._wake:
            self._pending += rows
            if self._pending >= self._rows and not self._paused:
                self._wake.notify()

    def pause(self, paused: bool) -> None:
        """While paused, the thread checkpoints nothing (the writer checkpoints for itself).

        Pausing waits for a round under way to end: a checkpoint of the writer's own (a reset's
        truncating one, say) would find the checkpoint lock taken and give up.
        """
        with self._wake:
            self._paused = paused
            self._pending = 0
            self._wake.notify_all()
            self._wake.wait_for(lambda: not self._running)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Paused meanwhile (see `pause`), then as before."""
        with self._wake:
            was = self._paused
        self.pause(True)
        try:
            yield
        finally:
            self.pause(was)

    def close(self) -> None:
        """Stops the thread (after a checkpoint under way) and closes its connection."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        self._thread.join()

    def _due(self) -> bool:
        return self._closed or (self._pending >= self._rows and not self._paused)

    def _run(self) -> None:
        db = sqlite3.connect(
            self._path,
            isolation_level=None,
            check_same_thread=False,
            timeout=30,
            factory=self.connection_factory,
        )
        try:
            db.execute(f"PRAGMA synchronous={self._synchronous}")
            db.execute(f"PRAGMA busy_timeout={RESTART_WAIT_MS}")
            while True:
                with self._wake:
                    self._wake.wait_for(self._due)
                    if self._closed:
                        return
                    self._pending = 0
                    self._running = True
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    db.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
                    self.rounds += 1
                except sqlite3.Error:
                    # Tried again after the next commits; until then the WAL keeps the pages.
                    with self._wake:
                        self._pending = max(self._pending, self._rows // 2)
                finally:
                    with self._wake:
                        self._running = False
                        self._wake.notify_all()
        finally:
            db.close()
