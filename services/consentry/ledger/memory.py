"""What the ledger keeps in memory between batches: subject states and the events it just sealed.

Every writer remembers each subject's state after its own writes and reads. A sole writer (the
embedded platform: one process writes the ledger) takes a remembered state as it is. Where several
processes write, a remembered state could be behind, and some decisions (a repeated withdrawal,
say) write nothing that would conflict: so such a writer catches each state up with what the store
holds after its version before it decides on it (Ledger._states), which costs a read of the new
events only, not a fold of the whole history. A conflict drops the states of the batch.

Every writer keeps the sealed events of its last appends by log position, so the embedded runner
projects them without decoding the bytes just written.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Final

from consentry.core.events import LedgerEvent
from consentry.ledger.subject import SubjectState

STATE_CACHE: Final = 100_000
# The sealed events kept for the catch-ups (views, shredder) that live come right after each batch:
# at least the last batch whole, however large, and up to this many events in all. A catch-up whose
# events fell out (a runner far behind) decodes them from the store instead: slower, as correct.
# Every event kept is walked by each collection of the garbage collector while it is kept (a sealed
# event is about ten objects): 20,000 kept events cost ingest 6.0 us per event in collections at
# 100k events and 8.3 at 300k (sealed; plaintext 4.3 and 3.4), 2,000 cost 1.2 and 2.1 (0.7, 1.9).
RECENT_EVENTS: Final = 2_000


class WriterMemory:
    """Subject states and recent sealed events, each bounded, thread-safe."""

    def __init__(self) -> None:
        self._states: OrderedDict[uuid.UUID, SubjectState] = OrderedDict()
        self._recent: OrderedDict[int, LedgerEvent] = OrderedDict()
        self._lock = threading.Lock()

    def state(self, subject_id: uuid.UUID) -> SubjectState | None:
        """A copy of the subject's remembered state (now the most recently used), if any."""
        with self._lock:
            cached = self._states.get(subject_id)
            if cached is None:
                return None
            self._states.move_to_end(subject_id)
            return cached.clone()

    def holds(self, subject_id: uuid.UUID) -> bool:
        """Whether the subject's state is remembered."""
        with self._lock:
            return subject_id in self._states

    def folded(self, states: Iterable[SubjectState]) -> None:
        """Keeps copies of states read from the store, unless a newer one came meanwhile."""
        with self._lock:
            for state in states:
                held = self._states.get(state.subject_id)
                if state.exists and (held is None or held.version < state.version):
                    self._states[state.subject_id] = state.clone()
                    self._states.move_to_end(state.subject_id)
            self._trim()

    def written(
        self, states: Iterable[SubjectState], positions: Sequence[int], sealed: Sequence[LedgerEvent]
    ) -> None:
        """Takes the states a batch ended with (handed over, not copied) and its sealed events."""
        with self._lock:
            for state in states:
                self._states[state.subject_id] = state
                self._states.move_to_end(state.subject_id)
            self._trim()
            if positions:
                self._recent.update(zip(positions, sealed, strict=True))
                kept = max(RECENT_EVENTS, len(positions))
                while len(self._recent) > kept:
                    self._recent.popitem(last=False)

    def _trim(self) -> None:
        while len(self._states) > STATE_CACHE:
            self._states.popitem(last=False)

    def forget(self, subject_ids: Iterable[uuid.UUID]) -> None:
        with self._lock:
            for subject_id in subject_ids:
                self._states.pop(subject_id, None)

    def recent(self, after: int) -> list[tuple[int, LedgerEvent]]:
        """The sealed events appended right after a log position, as long as they run on."""
        found = []
        with self._lock:
            position = after + 1
            while (event := self._recent.get(position)) is not None:
                found.append((position, event))
                position += 1
        return found
