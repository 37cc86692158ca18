"""A keystore batch's commit that may still be running when the batch has ended.

The ledger makes a batch's keys durable before it commits the events sealed under them. A keystore
that commits when the batch ends hands out one that never waits. The SQLite keystore instead
hands the batch's COMMIT to a thread of its own (adapters/sqlite_keystore.py): SQLite writes the
batch's pages to its WAL and syncs it without Python's GIL, on the second core, while the ledger
inserts the batch's events into the event store. The ledger's recorder calls the pending commit
inside its own transaction, just before it commits: the events become durable only after the keys,
or, if the keys' commit failed, not at all.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import ClassVar

from consentry.core.sealing import DataKey


class PendingCommit:
    """Waits for one batch's commit of keys. A failed commit's keys leave the cache on the first
    wait; every wait raises its error."""

    DONE: ClassVar[PendingCommit]

    def __init__(
        self, keys: Sequence[DataKey] = (), forget: Callable[[Sequence[DataKey]], None] | None = None
    ) -> None:
        # The batch's keys (its own list, which it fills as it creates them) and what drops them
        # from the keystore's cache should the commit fail.
        self._keys = keys
        self._forget = forget
        self._future: Future[None] | None = None
        self._taking = threading.Lock()  # held only to take `_forget`, never while calling it

    def __repr__(self) -> str:
        state = "none" if self._future is None else "running" if not self._future.done() else "done"
        return f"PendingCommit({state}, {len(self._keys)} keys)"

    def started(self, future: Future[None]) -> None:
        """The commit now runs elsewhere; `future` ends with it."""
        self._future = future

    def __call__(self) -> None:
        """Returns once the keys are durable; raises the commit's error if they never will be."""
        error = self.settle()
        if error is not None:
            raise error

    def settle(self) -> BaseException | None:
        """Waits for the commit; if it failed, drops its keys from the cache (once) and answers why."""
        if self._future is None:
            return None
        error = self._future.exception()
        if error is not None:
            # Taken by one waiter only, and called with no lock of ours held: `forget` takes the
            # keystore's lock, which another waiter (a destroy settling first) may hold.
            with self._taking:
                forget, self._forget = self._forget, None
            if forget is not None:
                forget(self._keys)
        return error


PendingCommit.DONE = PendingCommit()
