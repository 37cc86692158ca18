"""The ledger's memory of its recent appends: what the catch-ups right after a batch find there."""

from __future__ import annotations

import uuid

from consentry.core.events import LedgerEvent
from consentry.ledger import memory
from consentry.ledger.memory import WriterMemory
from consentry.ledger.subject import Context, SubjectState, decide
from tests.support import T0, parser, policy, record


def _events(count: int) -> list[LedgerEvent]:
    """`count` real ledger events (consent grants of new subjects), for positions to point at."""
    ctx = Context(now=T0, policy=policy(), new_id=uuid.uuid4, producer="shop")
    events: list[LedgerEvent] = []
    while len(events) < count:
        item = parser().from_json(record("consent.grant", f"shop:fake-memory-{len(events)}"))
        decision = decide(SubjectState(uuid.uuid4()), item, ctx)
        assert decision.events
        events.extend(decision.events)
    return events[:count]


def _write(mem: WriterMemory, first: int, events: list[LedgerEvent]) -> None:
    mem.written([], range(first, first + len(events)), events)


def test_recent_events_run_on_from_the_position_asked_for() -> None:
    mem, events = WriterMemory(), _events(6)
    _write(mem, 1, events[:3])
    _write(mem, 4, events[3:])

    assert mem.recent(2) == list(zip(range(3, 7), events[2:], strict=True))
    assert mem.recent(6) == []


def test_the_window_keeps_a_bounded_number_of_events_and_drops_the_oldest() -> None:
    window = memory.RECENT_EVENTS
    events = _events(3)
    mem = WriterMemory()
    for position in range(1, window + 3):
        _write(mem, position, [events[position % 3]])

    assert mem.recent(0) == []  # positions 1 and 2 fell out: a catch-up from 0 reads the store
    kept = mem.recent(2)
    assert [position for position, _ in kept] == list(range(3, window + 3))


def test_a_batch_larger_than_the_window_is_kept_whole_until_the_next_write() -> None:
    window = memory.RECENT_EVENTS
    one = _events(1)[0]
    mem = WriterMemory()
    _write(mem, 1, [one] * (window + 500))

    assert len(mem.recent(0)) == window + 500

    _write(mem, window + 501, [one])
    assert mem.recent(0) == []
    kept = [position for position, _ in mem.recent(501)]
    assert kept == list(range(502, window + 502))  # the window again: the last `window` events
