"""Retention: a purpose's data lives `retention_days` after its consent or lawful basis ends.

For a purpose on consent, the clock starts when the last consent ends (its `expires_at`, or a
recorded expiry); data under an open-ended, active consent has no deadline, and a withdrawal shreds
at once anyway. For a purpose on another basis (a contract, say) the basis is taken to end with the
last data collected for it: the clock starts at that update's `occurred_at` (never later than when it
was recorded), so back-filled history past its retention goes at the next sweep.

The schedule folds the log into pseudonymous (subject, purpose) records; `due` lists those whose
deadline has passed under the current policy. The shredder re-checks each against the subject's own
history before destroying anything (`Shredder.expire`), so a new consent or new data that arrived
after the sweep looked keeps its key.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from consentry.core import events as ev
from consentry.core.errors import ConsentryError
from consentry.core.policy import LawfulBasis, Policy

log = logging.getLogger("consentry.retention")

_WATCHED = frozenset(
    cls.avro_name
    for cls in (
        ev.ConsentGranted,
        ev.ConsentWithdrawn,
        ev.ConsentExpired,
        ev.DataUpdated,
        ev.KeysShredded,
        ev.ErasureRequested,
    )
)


@dataclass(slots=True)
class Held:
    """What retention needs to know of one purpose of one subject (no personal data)."""

    granted: bool = False
    consent_ends: datetime | None = None
    last_data: datetime | None = None
    last_data_sequence: int = 0
    cleared_sequence: int = 0

    @property
    def has_data(self) -> bool:
        """Data was recorded since the purpose's keys were last shredded (by the subject's order)."""
        return self.last_data_sequence > self.cleared_sequence

    def deadline(self, policy: Policy, purpose: str) -> datetime | None:
        """When the purpose's data must be gone; None while it may stay."""
        declared = policy.purpose(purpose)
        if declared is None or not self.has_data or self.last_data is None:
            return None
        if declared.lawful_basis == LawfulBasis.CONSENT:
            if not self.granted or self.consent_ends is None:
                return None  # withdrawn (shredded at once) or open-ended
            start = max(self.consent_ends, self.last_data)
        else:
            start = self.last_data
        return start + timedelta(days=declared.retention_days)


def fold(held: dict[str, Held], event: ev.LedgerEvent) -> None:
    """Folds one event of a subject into its per-purpose records."""
    meta = event.meta
    match event:
        case ev.ConsentGranted():
            slot = held.setdefault(event.purpose, Held())
            slot.granted, slot.consent_ends = True, event.expires_at
        case ev.ConsentExpired():
            slot = held.setdefault(event.purpose, Held())
            slot.consent_ends = min(slot.consent_ends or event.expired_at, event.expired_at)
        case ev.ConsentWithdrawn():
            slot = held.setdefault(event.purpose, Held())
            slot.granted, slot.cleared_sequence = False, meta.sequence
        case ev.DataUpdated():
            slot = held.setdefault(event.purpose, Held())
            at = min(meta.occurred_at, meta.recorded_at)
            slot.last_data = at if slot.last_data is None else max(slot.last_data, at)
            slot.last_data_sequence = meta.sequence
        case ev.KeysShredded() if event.reason == "retention":
            for scope in event.scopes:
                held.setdefault(scope.removeprefix("purpose:"), Held()).cleared_sequence = meta.sequence
        case _:
            pass


@dataclass(frozen=True, slots=True)
class Due:
    """A purpose of a subject whose retention ran out."""

    subject_id: uuid.UUID
    purpose: str
    deadline: datetime


class RetentionSchedule:
    """Every subject's retention records, kept up to date from the log."""

    def __init__(self) -> None:
        self.position = 0
        self._held: dict[uuid.UUID, dict[str, Held]] = {}
        self._closed: set[uuid.UUID] = set()

    def observe(self, event: ev.LedgerEvent) -> None:
        subject = event.meta.subject_id
        if isinstance(event, ev.ErasureRequested) or subject in self._closed:
            self._closed.add(subject)  # erasure shreds every scope; nothing is left to retain
            self._held.pop(subject, None)
            return
        fold(self._held.setdefault(subject, {}), event)

    def follow(
        self,
        notifications: Iterable[tuple[int, bytes]],
        writer_of: Callable[[bytes], Any],
        decode: Callable[[bytes], ev.LedgerEvent],
    ) -> int:
        """Observes the log's new events; answers how many it read."""
        count = 0
        for position, state in notifications:
            count += 1
            self.position = position
            writer = writer_of(state)
            if writer is not None and writer.name not in _WATCHED:
                continue
            try:
                self.observe(decode(state))
            except ConsentryError:
                log.warning("log position %d does not decode; skipped by retention", position)
        return count

    def due(self, policy: Policy, now: datetime) -> Iterator[Due]:
        """The (subject, purpose) pairs whose deadline is at or before `now`, oldest first."""
        found = [
            Due(subject, purpose, deadline)
            for subject, purposes in self._held.items()
            for purpose, held in purposes.items()
            if (deadline := held.deadline(policy, purpose)) is not None and deadline <= now
        ]
        return iter(sorted(found, key=lambda d: d.deadline))
