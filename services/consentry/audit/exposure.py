"""Breach impact: which subjects and fields an actor, producer or sub-processor was exposed to.

Built from the ledger alone, so it holds whatever the read models say: every decryption is a
`DataAccessed` event (actor, purpose, field names) written before the data left, every export to a
sub-processor a `DataShared` event, every value a producer sent a `DataUpdated` event naming it. The
report is pseudonymous (subject ids, purposes, field names, times), ready to drive notification.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

from consentry.core import events as ev
from consentry.core.avro import AvroCodec
from consentry.core.event_codec import decode_event

Kind = Literal["actor", "producer", "processor"]
_EXPOSING: Final = frozenset(
    cls.avro_name for cls in (ev.DataAccessed, ev.DataShared, ev.DataUpdated, ev.ErasureRequested)
)


@dataclass(frozen=True, slots=True)
class Selector:
    """Whose exposure, and in which window of recording time (`start` inclusive, `end` exclusive)."""

    kind: Kind
    name: str
    start: datetime | None = None
    end: datetime | None = None

    def covers(self, at: datetime) -> bool:
        return (self.start is None or at >= self.start) and (self.end is None or at < self.end)


@dataclass(slots=True)
class Exposed:
    """What of one subject was exposed."""

    fields: set[str] = field(default_factory=set)
    purposes: set[str] = field(default_factory=set)
    events: int = 0
    first_at: datetime | None = None
    last_at: datetime | None = None

    def add(self, at: datetime, purpose: str, names: Iterable[str]) -> None:
        self.fields.update(names)
        self.purposes.add(purpose)
        self.events += 1
        self.first_at = at if self.first_at is None else min(self.first_at, at)
        self.last_at = at if self.last_at is None else max(self.last_at, at)


def selector_of(
    actor: str | None,
    producer: str | None,
    processor: str | None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Selector:
    """The selector of exactly one party and a window; ValueError says what is wrong."""
    parties: tuple[tuple[Kind, str | None], ...] = (
        ("actor", actor),
        ("producer", producer),
        ("processor", processor),
    )
    named = [(kind, name) for kind, name in parties if name]
    if len(named) != 1:
        raise ValueError("name exactly one of actor, producer, processor")
    if any(moment is not None and moment.tzinfo is None for moment in (start, end)):
        raise ValueError("'from' and 'to' need a time zone")
    if start is not None and end is not None and end <= start:
        raise ValueError("'to' must be after 'from'")
    return Selector(*named[0], start, end)


def _exposure(event: ev.LedgerEvent, selector: Selector) -> tuple[str, tuple[str, ...]] | None:
    """(purpose, field names) if the event exposed data to the selected party."""
    meta = event.meta
    actor = meta.actor.actor_id if meta.actor else None
    match event, selector.kind:
        case ev.DataAccessed(), "actor" if actor == selector.name:
            return event.purpose, event.field_names
        case ev.DataShared(), "actor" if actor == selector.name:
            return event.purpose, event.field_names  # the staff member saw what was sent
        case ev.DataShared(), "processor" if event.processor == selector.name:
            return event.purpose, event.field_names
        case ev.DataUpdated(), "producer" if meta.producer == selector.name:
            return event.purpose, tuple(sorted(event.fields))
        case ev.DataAccessed(), "producer" if meta.producer == selector.name:
            return event.purpose, event.field_names  # an access the producer reported itself
    return None


def exposure_report(
    codec: AvroCodec, notifications: Iterable[tuple[int, bytes]], selector: Selector
) -> dict[str, Any]:
    """Scans the log (headers first, so other events are never decoded) into the report."""
    found: dict[uuid.UUID, Exposed] = {}
    erased: set[uuid.UUID] = set()
    scanned = 0
    for _, state in notifications:
        scanned += 1
        writer = codec.writer_of(state)
        if writer is None or writer.name not in _EXPOSING:
            continue
        event = decode_event(codec, state)
        if isinstance(event, ev.ErasureRequested):
            erased.add(event.meta.subject_id)
            continue
        hit = _exposure(event, selector)
        if hit is not None and selector.covers(event.meta.recorded_at):
            found.setdefault(event.meta.subject_id, Exposed()).add(event.meta.recorded_at, *hit)
    subjects = [
        {
            "subject_id": str(subject),
            "fields": sorted(exposed.fields),
            "purposes": sorted(exposed.purposes),
            "events": exposed.events,
            "first_at": _iso(exposed.first_at),
            "last_at": _iso(exposed.last_at),
            "erased": subject in erased,
        }
        for subject, exposed in sorted(found.items(), key=lambda item: str(item[0]))
    ]
    return {
        selector.kind: selector.name,
        "from": _iso(selector.start),
        "to": _iso(selector.end),
        "subjects": subjects,
        "totals": {
            "subjects": len(subjects),
            "events": sum(exposed.events for exposed in found.values()),
            "fields": sorted({f for exposed in found.values() for f in exposed.fields}),
            "log_events_scanned": scanned,
        },
    }


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()
