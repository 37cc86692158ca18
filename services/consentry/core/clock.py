"""Clocks and id factories, passed in so the domain stays deterministic under test."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Tells the current time as an aware UTC datetime."""

    def now(self) -> datetime: ...


class SystemClock:
    """The wall clock, truncated to microseconds (what Avro timestamp-micros keeps)."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock tests move by hand."""

    def __init__(self, start: datetime) -> None:
        self._now = start

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> None:
        self._now += delta


IdFactory = Callable[[], uuid.UUID]


def new_id() -> uuid.UUID:
    """A random UUID: subject and event ids are never derived from personal data."""
    return uuid.uuid4()
