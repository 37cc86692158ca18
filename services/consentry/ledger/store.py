"""Reading many subjects' stored events at once, where the event store can.

A batch decides against the states of all its subjects. Folded one subject at a time, that is one
query per subject: on PostgreSQL a round trip each (a batch of 500 records, about 350 subjects,
spent more time waiting for those than on anything else). A recorder that has
`select_events_after` answers them all in one query: each subject's events after the version the
caller already holds (0 for none), so a state remembered from an earlier batch only needs what
other writers appended since.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from eventsourcing.persistence import ApplicationRecorder, StoredEvent


@runtime_checkable
class ReadsManySubjects(Protocol):
    """An event store that reads several subjects' events after given versions in one query."""

    def select_events_after(
        self, versions: Mapping[uuid.UUID, int]
    ) -> dict[uuid.UUID, list[StoredEvent]]:
        """Each subject's stored events after its version, in version order (no entry: none)."""


@runtime_checkable
class WaitsBeforeCommit(Protocol):
    """An event store whose `insert_events` calls `before_commit` inside its transaction, after the
    inserts and before the commit, and writes nothing if it raises (the ledger waits there for the
    keys the events are sealed under: core/pending_commit.py).

    Every recorder has an `insert_events`; the marker tells one that honours `before_commit`.
    """

    calls_before_commit: bool

    def insert_events(
        self,
        stored_events: Sequence[StoredEvent],
        *,
        before_commit: Callable[[], None] = ...,
        **kwargs: Any,
    ) -> Sequence[int] | None:
        """Inserts the events and commits them once `before_commit` has returned."""


def events_after(
    recorder: ApplicationRecorder, versions: Mapping[uuid.UUID, int]
) -> dict[uuid.UUID, list[StoredEvent]]:
    """Each subject's stored events after its version: in one query where the store can, else one
    `select_events` per subject (eventsourcing's own recorders)."""
    if not versions:
        return {}
    if isinstance(recorder, ReadsManySubjects):
        return recorder.select_events_after(versions)
    found: dict[uuid.UUID, list[StoredEvent]] = {}
    for subject_id, version in versions.items():
        stored: Sequence[StoredEvent] = recorder.select_events(subject_id, gt=version or None)
        if stored:
            found[subject_id] = list(stored)
    return found
