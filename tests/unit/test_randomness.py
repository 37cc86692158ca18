"""Random bytes for ids and nonces: pages of os.urandom, each byte handed out once per process."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator

import pytest

from consentry.core.randomness import PAGE_BYTES, RandomPages, take_random


@pytest.fixture
def busy_switching() -> Iterator[None]:
    """Threads switch as often as the interpreter allows: a race has every chance to happen."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


class NumberedPages:
    """A source in place of os.urandom: pages of 4-byte serial numbers, so a byte handed out twice shows
    as a number seen twice."""

    def __init__(self) -> None:
        self._next = 0
        self._lock = threading.Lock()

    def __call__(self, n: int) -> bytes:
        assert n % 4 == 0
        with self._lock:
            first, self._next = self._next, self._next + n // 4
        return b"".join(number.to_bytes(4) for number in range(first, first + n // 4))


def _numbers(values: list[bytes]) -> list[int]:
    return [int.from_bytes(v[i : i + 4]) for v in values for i in range(0, len(v), 4)]


def test_threads_taking_at_once_never_get_the_same_bytes(
    busy_switching: None,
) -> None:
    # A new page every ten nonces or so: many refills under way.
    pages = RandomPages(page_bytes=120, source=NumberedPages())
    taken: list[list[bytes]] = [[] for _ in range(4)]

    def take_many(mine: list[bytes]) -> None:
        for n in range(5000):
            mine.append(pages.take(12 if n % 3 else 16))

    threads = [threading.Thread(target=take_many, args=(mine,)) for mine in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [value for mine in taken for value in mine]
    assert sorted({len(value) for value in every}) == [12, 16]
    numbers = _numbers(every)
    assert len(set(numbers)) == len(numbers)  # no byte handed out twice


def test_a_forked_process_never_hands_out_its_parents_bytes() -> None:
    pages = RandomPages()
    pages.take(12)  # a page drawn before the fork, with most of it still to hand out
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe and exits at once
        try:
            os.write(write_end, pages.take(32) + take_random(32))
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        from_child = pipe.read()
    os.waitpid(child, 0)
    assert len(from_child) == 64
    assert from_child[:32] != pages.take(32)
    assert from_child[32:] != take_random(32)


def test_values_of_any_length_come_whole_across_pages() -> None:
    pages = RandomPages(page_bytes=100)
    lengths = [12, 16, 48, 30, 99, 100, 1, 60]
    values = [pages.take(n) for n in lengths]
    assert [len(v) for v in values] == lengths
    assert len(pages.take(PAGE_BYTES * 3)) == PAGE_BYTES * 3  # larger than a page: drawn alone
    # Random: over many values each bit is set in some and clear in others.
    drawn = [int.from_bytes(pages.take(16)) for _ in range(500)]
    set_somewhere = clear_somewhere = 0
    for value in drawn:
        set_somewhere |= value
        clear_somewhere |= ~value
    every_bit = (1 << 128) - 1
    assert set_somewhere & every_bit == every_bit and clear_somewhere & every_bit == every_bit
