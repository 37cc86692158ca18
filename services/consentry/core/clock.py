"""Clocks and id factories, passed in so the domain stays deterministic under test."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

from consentry.core.randomness import take_random


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


# uuid.uuid4()'s version and variant bits: the rest of the 128 bits are random.
_KEEP: Final = ~((0xC000 << 48) | (0xF000 << 64))
_MARK: Final = (0x8000 << 48) | (4 << 76)
_new_object = object.__new__
_set = object.__setattr__


def new_id() -> uuid.UUID:
    """A random UUID: subject and event ids are never derived from personal data.

    What `uuid.uuid4()` makes (16 random bytes, version 4, RFC 4122 variant), with the bytes taken
    from a page of `os.urandom` (core/randomness) instead of a system call per id, and built by
    setting the UUID's two attributes as its `__init__` would once its checks pass, which they
    always do here (1.7 -> 1.0 µs, timeit; an event and a new subject take one each).
    """
    made = _new_object(uuid.UUID)
    _set(made, "int", int.from_bytes(take_random(16)) & _KEEP | _MARK)
    _set(made, "is_safe", uuid.SafeUUID.unknown)
    return made
