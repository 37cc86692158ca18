"""Group commit: commands that callers send at the same time are decided and appended together.

Every profile read appends its `DataAccessed` event before it answers. Appended one at a time,
each read waits for the writer and pays its own transaction and fsync; grouped, the commands
that arrive while one group is being written go together in the next: one transaction, one
fsync. Each caller still gets exactly its own outcomes, and only once they are durable.

`GroupCommit` serves callers on threads: one of them writes for everyone waiting. `AsyncGroupCommit`
serves coroutines on one event loop: they never occupy a thread while they wait. A group is written
on the loop itself when its writer says that cannot wait on anyone (`now`), otherwise in one
hand-off to a thread. The hand-off is dear where the GIL is busy: the thread and the loop take it
from each other at every SQLite call, from different cores.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

C = TypeVar("C")
R = TypeVar("R")


@dataclass(slots=True)
class _Request(Generic[C, R]):
    items: Sequence[C]
    outcomes: list[R] | None = None
    error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self.outcomes is not None or self.error is not None


class GroupCommit(Generic[C, R]):
    """Runs `run` over the concatenated commands of whoever is waiting, one group at a time.

    `run` must return one outcome per command, in order, and write nothing when it raises. If a
    group fails, each of its callers' commands is run again on its own, so one caller's failure
    never becomes another's.
    """

    def __init__(self, run: Callable[[Sequence[C]], list[R]]) -> None:
        self._run = run
        self._changed = threading.Condition()
        self._waiting: list[_Request[C, R]] = []
        self._busy = False

    def __call__(self, items: Sequence[C]) -> list[R]:
        request: _Request[C, R] = _Request(items)
        with self._changed:
            self._waiting.append(request)
            while self._busy and not request.done:
                self._changed.wait()
            group: list[_Request[C, R]] = []
            if not request.done:
                # Nobody is writing: this caller writes for everyone waiting, itself included.
                self._busy = True
                group, self._waiting = self._waiting, []
        if group:
            try:
                _serve(self._run, group)
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()
        if request.error is not None:
            raise request.error
        assert request.outcomes is not None
        return request.outcomes


class AsyncGroupCommit(Generic[C, R]):
    """`GroupCommit` for coroutines: those awaiting while a group is written go in the next one.

    The groups run one at a time, with the same rules: `run` must return one outcome per command
    and write nothing when it raises, and a failed group's callers each run again alone. `now`, if
    given, is tried first on the loop: it writes the group and returns its outcomes, or returns
    None at once when the write could wait on anyone (a lock, a slow disk), and the group goes to
    the loop's default executor. A caller that is cancelled stops waiting; its commands are still
    written. One instance serves one event loop (`Ledger.execute_async` keeps one per loop).

    When the last group had several callers, the writer lets the loop run one more pass before it
    writes, so callers that reach the group a pass after the first one still join it. Profile reads
    under wrk (`consentry run`, a server each way, 3 s phases alternating between them, on the
    slower machine of bench/results/latest.md) at 8 clients went from 3.3 to 6.7-7.8 reads per
    group, 1,079 -> 1,240 reads/s, p99 13.5 -> 11.5 ms and CPU per read 910 -> 838 µs (medians of
    10 rounds; more reads/s in every round); at 32 clients 1,166 -> 1,234 reads/s and p99 52.6 ->
    41.6 ms (8 rounds); at 1 client no change (it never waits).
    """

    def __init__(
        self,
        run: Callable[[Sequence[C]], list[R]],
        now: Callable[[Sequence[C]], list[R] | None] | None = None,
    ) -> None:
        self._run = run
        self._now = now
        self._waiting: list[tuple[_Request[C, R], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        # How many callers the last group had. After a group of one the next is written at once: a
        # lone caller gains nothing from waiting a pass of the loop, and waiting always cost reads
        # at 1 client about a tenth of their rate (628 -> 564 reads/s, medians of 8 phases).
        self._last_group = 1

    async def __call__(self, items: Sequence[C]) -> list[R]:
        loop = asyncio.get_running_loop()
        request: _Request[C, R] = _Request(items)
        written = loop.create_future()
        self._waiting.append((request, written))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write_all())
            self._writer.add_done_callback(self._ended)
        await written
        if request.error is not None:
            raise request.error
        if request.outcomes is None:
            raise RuntimeError("the group's write was interrupted before it was known to be durable")
        return request.outcomes

    async def _write_all(self) -> None:
        loop = asyncio.get_running_loop()
        if self._last_group > 1:
            # Callers come together: one more pass of the loop first, so those whose tasks get
            # here a pass after the first caller's share its write (and its sync to disk) instead
            # of waiting for a group of their own.
            await asyncio.sleep(0)
        while self._waiting:
            batch, self._waiting = self._waiting, []
            self._last_group = len(batch)
            group = [r for r, _ in batch]
            try:
                if not self._written_now(group):
                    await loop.run_in_executor(None, _serve, self._run, group)
            finally:
                _wake(batch)

    def _written_now(self, group: list[_Request[C, R]]) -> bool:
        """Whether `now` wrote the group on the loop; if it failed, the executor runs the group."""
        if self._now is None:
            return False
        try:
            outcomes = self._now([item for request in group for item in request.items])
        except Exception as exc:  # noqa: BLE001 - nothing was written: `_serve` runs it again
            log.warning("a group written on the event loop failed: %s", type(exc).__name__)
            return False
        if outcomes is None:
            return False
        _hand_out(group, outcomes)
        return True

    def _ended(self, writer: asyncio.Task[None]) -> None:
        # However the writer ended (done, a hand-off that failed, cancelled even before it ran or
        # during its pass before writing), whoever is still queued hears so instead of waiting
        # for a write that never comes.
        # (A writer started since serves whoever queued after this one stopped looking.)
        if self._writer is writer:
            self._writer = None
            stranded, self._waiting = self._waiting, []
            _wake(stranded)
        if not writer.cancelled() and (failure := writer.exception()) is not None:
            log.warning("a group's hand-off to the executor failed: %s", type(failure).__name__)


def _wake(waiting: list[tuple[_Request[C, R], asyncio.Future[None]]]) -> None:
    for _, written in waiting:
        if not written.done():
            written.set_result(None)


def _serve(run: Callable[[Sequence[C]], list[R]], group: list[_Request[C, R]]) -> None:
    """Runs a group's commands together; if that fails, each caller's alone (errors to the caller)."""
    try:
        if len(group) == 1:
            _alone(run, group[0])
            return
        try:
            outcomes = run([item for request in group for item in request.items])
        except Exception:  # noqa: BLE001 - whatever failed, each caller's commands try alone
            for request in group:
                _alone(run, request)
            return
        _hand_out(group, outcomes)
    except BaseException as exc:
        for request in group:
            if not request.done:
                request.error = exc
        raise


def _hand_out(group: list[_Request[C, R]], outcomes: list[R]) -> None:
    start = 0
    for request in group:
        request.outcomes = outcomes[start : start + len(request.items)]
        start += len(request.items)


def _alone(run: Callable[[Sequence[C]], list[R]], request: _Request[C, R]) -> None:
    try:
        request.outcomes = run(request.items)
    except Exception as exc:  # noqa: BLE001 - handed to the caller, who raises it
        request.error = exc
