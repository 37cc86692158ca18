"""Rebuilding the read models subject by subject, in spans of subjects that processes share.

A log read in subject order hands each page whole histories, so a page writes each subject's final
rows once, appended to the views' B-trees in key order. Subjects' rows are independent of each
other, so the key space splits into spans that separate processes rebuild at once (Python's GIL
keeps the decoding of one process on one core), each into the same views database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Protocol

from consentry.core.avro import AvroCodec
from consentry.core.event_codec import event_decoder
from consentry.core.events import LedgerEvent
from consentry.core.runtime import collecting_after
from consentry.core.views import ViewStore
from consentry.processors.projector import project_new

# Subjects whose id, as text, is from the first (inclusive) to the second (exclusive; None: the last).
Span = tuple[str, str | None]
EVERY_SUBJECT: Span = ("", None)
MAX_SPANS = 256


class SubjectLog(Protocol):
    """The ledger's log read subject by subject (each subject's events in order)."""

    def last_position(self) -> int:
        """The position of the last event in the log."""

    def by_subject(self, upto: int, page: int, span: Span = EVERY_SUBJECT) -> Iterator[list[bytes]]:
        """The stored bytes of the span's events up to a position, ordered by subject, in pages."""


class SpanRebuilder(Protocol):
    """Rebuilds one span of subjects in another process; picklable; returns how many events."""

    def __call__(self, span: Span, upto: int, page: int) -> int: ...


def spans(count: int) -> list[Span]:
    """The subject key space in `count` (1 to 256) spans of about equal size (ids are random),
    split on the ids' first two hex digits."""
    if not 1 <= count <= MAX_SPANS:
        raise ValueError(f"between 1 and {MAX_SPANS} spans")
    starts = [f"{MAX_SPANS * n // count:02x}" for n in range(count)]
    return [
        ("" if n == 0 else start, starts[n + 1] if n + 1 < count else None)
        for n, start in enumerate(starts)
    ]


def rebuild_span(
    log: SubjectLog,
    codec: AvroCodec,
    store: ViewStore,
    upto: int,
    page: int,
    span: Span = EVERY_SUBJECT,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Projects a span's events up to `upto` into the store, page by page; records no position.

    Each page commits with the applied marks of its subjects, so a rebuild cut short leaves whole
    pages behind that a catch-up from the start skips.
    """
    done = 0
    for states in log.by_subject(upto, page, span):
        with collecting_after():
            done += apply_page(store, decode(codec, states), {})
        if progress:
            progress(done)
    return done


def decode(codec: AvroCodec, states: Iterable[bytes]) -> list[LedgerEvent]:
    """The events of stored bytes."""
    read = event_decoder(codec)
    return [read(state) for state in states]


def apply_page(store: ViewStore, events: list[LedgerEvent], positions: Mapping[str, int]) -> int:
    """Applies the events the views lack with the positions they reach; returns how many events."""
    # In any order: sorting UUID objects compares them in Python, thousands of times a page.
    applied = store.applied(list({e.meta.subject_id: None for e in events}))
    store.apply_at(project_new(events, applied), positions)
    return len(events)
