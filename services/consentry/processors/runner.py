"""The embedded runner: follows the event store's notification log into the read models.

Each page of events becomes one transaction of view changes plus the new position, so the views are
never ahead of or behind what they record. `catch_up` is called after every ledger write in the
embedded platform (read-your-writes), and a background thread polls for anything else.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

from consentry.core.avro import AvroCodec
from consentry.core.events import LedgerEvent
from consentry.core.runtime import tune_gc
from consentry.core.views import ViewStore
from consentry.processors.rebuild import (
    EVERY_SUBJECT,
    MAX_SPANS,
    Span,
    SpanRebuilder,
    SubjectLog,
    apply_page,
    decode,
    rebuild_span,
    spans,
)

RUNNER_NAME = "views"
# The background thread applies what nobody waits for (other reads' access events, mostly) in small
# pages and gives up the GIL after each: a page of 500 held it for ~10 ms, and every read in flight
# waited that long. With 8 readers under wrk: read p99 15.0-17.2 -> 13.1-13.6 ms for ~2 % more CPU.
BACKGROUND_PAGE = 50
# ... and it looks every 50 ms, so each look finds a few pages, not a burst of them: read p99 at 8
# readers 13.5-17.0 (every 200 ms) -> 11.9-13.4 ms, for 0.06 -> 0.07 ms of CPU per read. Idle, a
# look costs one position read and one log query.
BACKGROUND_INTERVAL = 0.05
# A rebuild reads the log subject by subject in pages this large: most subjects' histories fit in
# one page whole, so a page writes their final rows only, once. At 100k events: 17.6k -> 21.0k
# events/s against pages of 500 in log order (views written 43 -> 12 µs per event).
REBUILD_PAGE = 5000
# Helper processes rebuild spans of subjects beside this one when the log has this many events: a
# helper takes ~0.3 s to start.
HELPERS_FROM = 20_000
MAX_PROCESSES = 4
# Spans of the key space a rebuild's processes claim one at a time: about this many events each.
SPAN_EVENTS = 5_000


def _cores() -> int:
    """The cores this process may run on (all of the machine's where affinity is unknown)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def rebuild_processes(cores: int) -> int:
    """How many processes a large rebuild runs in on that many cores, its own included.

    One per core leaves a core idle whenever its process waits: for the views' write lock (SQLite
    wakes a waiter only after sleeping 1, 2, 5... ms), for a helper to start, for the last span.
    One more process fills those gaps. 1M events on 2 cores, 2 and 3 processes alternating:
    38.9-39.7k -> 43.9-44.2k events/s (`python -m bench.replay_child`, 2 pairs; CPUs busy 86-93 %
    -> 96-97 % in 4 earlier pairs). At 100k a helper's start weighs more: 32.4-36.6k against
    32.9-40.6k, 3 pairs. One core gets no helper: it would only share the core.
    """
    return 1 if cores <= 1 else min(cores + 1, MAX_PROCESSES)


class _Claims:
    """Spans not yet claimed, taken from either end by several threads."""

    def __init__(self, todo: list[Span]) -> None:
        self._todo = deque(todo)
        self._lock = threading.Lock()

    def take(self, *, first: bool) -> Span | None:
        with self._lock:
            if not self._todo:
                return None
            return self._todo.popleft() if first else self._todo.pop()

    def drop(self) -> None:
        with self._lock:
            self._todo.clear()


class EmbeddedRunner:
    """Projects the ledger's log into a view store, from the store's recorded position."""

    def __init__(
        self,
        log: Callable[[int], Iterator[tuple[int, bytes]]],
        codec: AvroCodec,
        store: ViewStore,
        page: int = 500,
        recent: Callable[[int], Sequence[tuple[int, LedgerEvent]]] | None = None,
        subjects: SubjectLog | None = None,
        rebuild_page: int = REBUILD_PAGE,
        helper: SpanRebuilder | None = None,
        processes: int | None = None,
        helpers_from: int = HELPERS_FROM,
        span_events: int = SPAN_EVENTS,
    ) -> None:
        self._log = log
        self._subjects = subjects
        self._rebuild_page = rebuild_page
        self._helper = helper
        # How many processes a large rebuild runs in, this one included (`rebuild_processes`),
        # each taking spans of about `span_events` events in turn.
        self._processes = processes or rebuild_processes(_cores())
        self._span_events = span_events
        self._helpers_from = helpers_from
        self._codec = codec
        self.store = store
        self._page = page
        self._recent = recent
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self, subject_id: uuid.UUID | None = None, version: int | None = None) -> None:
        """Returns once the views are current: for everything, or up to a subject's `version`.

        A reader that needs a subject's events only up to `version` does not wait for the rest of
        the log (the access events of other reads, say): the background thread takes those in.
        """
        if (
            subject_id is not None
            and version is not None
            and self.store.applied([subject_id]).get(subject_id, 0) >= version
        ):
            return
        self.catch_up()

    def catch_up(self, progress: Callable[[int], None] | None = None) -> int:
        """Applies everything after the recorded position; returns how many events."""
        return self._catch_up(self._page, progress)

    def _catch_up(
        self, size: int, progress: Callable[[int], None] | None = None, *, yielding: bool = False
    ) -> int:
        """Applies everything in pages of `size`; `yielding`, it lets other threads run after each."""
        with self._lock:
            done = 0
            position = self.store.position(RUNNER_NAME)
            # Events this process just appended come as objects: nothing to decode.
            fresh = self._recent(position) if self._recent is not None else []
            for start in range(0, len(fresh), size):
                page = fresh[start : start + size]
                done += self._apply([e for _, e in page], page[-1][0])
                position = page[-1][0]
                if yielding:
                    time.sleep(0)  # gives up the GIL: a waiting thread (the event loop) runs now
            batch: list[tuple[int, bytes]] = []
            for entry in self._log(position):
                batch.append(entry)
                if len(batch) >= size:
                    done += self._apply(self._decode(batch), batch[-1][0])
                    batch = []
                    if progress:
                        progress(done)
                    if yielding:
                        time.sleep(0)
            if batch:
                done += self._apply(self._decode(batch), batch[-1][0])
            if progress and done:
                progress(done)
            return done

    def _decode(self, batch: list[tuple[int, bytes]]) -> list[LedgerEvent]:
        return decode(self._codec, (state for _, state in batch))

    def _apply(self, events: list[LedgerEvent], position: int) -> int:
        return apply_page(self.store, events, {RUNNER_NAME: position})

    def rebuild(self, progress: Callable[[int], None] | None = None) -> int:
        """Empties the views and projects the whole log again; readers that catch up wait for it.

        With a log that reads subject by subject, everything up to the log's last position goes in
        that order first, and the position is recorded once at the end. A rebuild cut short leaves
        whole pages of subjects behind, each with its applied mark, and no position: the next
        catch-up starts from the beginning and skips what those marks say is there. A large log is
        split into spans of subjects that this process and helper processes (`rebuild_processes`)
        claim one at a time until none is left, and a helper's failure fails the rebuild.
        """
        with self._lock:
            self.store.reset(RUNNER_NAME)
            if self._subjects is None:
                return self.catch_up(progress)
            upto = self._subjects.last_position()
            with self.store.bulk_writes():
                done = self._rebuild_upto(self._subjects, upto, progress)
            self.store.apply(RUNNER_NAME, [], upto)
            return done + self.catch_up(None if progress is None else lambda n: progress(done + n))

    def _rebuild_upto(self, log: SubjectLog, upto: int, progress: Callable[[int], None] | None) -> int:
        """Everything up to `upto`: spans of subjects here and in helper processes at once."""
        count = self._processes if self._helper is not None and upto >= self._helpers_from else 1
        if count == 1 or self._helper is None:
            return rebuild_span(
                log, self._codec, self.store, upto, self._rebuild_page, EVERY_SUBJECT, progress
            )
        # The key space goes in spans of about `span_events` events, claimed as they go: the
        # helpers take them from the start, this process from the end, until none is left. So a
        # helper's late start (~0.5 s) and an uneven split cost at most a span's time at the end.
        todo = _Claims(spans(min(MAX_SPANS, max(count, upto // self._span_events))))
        helper = self._helper
        # Spawned, not forked: this process may be a server with threads holding locks. Each
        # helper's collector is tuned as Consentry's own processes tune theirs (without it, a
        # helper spent 16 % more CPU on its span than this process did on its own, at 1M events).
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(count - 1, mp_context=context, initializer=tune_gc) as pool:
            helped: list[Future[int]] = []

            def submit() -> Future[int] | None:
                span = todo.take(first=True)
                if span is None:
                    return None
                future = pool.submit(helper, span, upto, self._rebuild_page)
                helped.append(future)  # read here once the feeder has ended
                return future

            # Each helper's first span is handed out before this process takes any (so every
            # helper has one), the next ones as each is done: the pool would queue them ahead.
            first = {future for _ in range(count - 1) if (future := submit()) is not None}

            def feed(running: set[Future[int]]) -> None:
                while running:
                    finished, running = wait(running, return_when=FIRST_COMPLETED)
                    if any(f.exception() is not None for f in finished):
                        todo.drop()  # a helper failed: the rebuild fails, nothing more starts
                    running |= {f for _ in finished if (f := submit()) is not None}

            feeder = threading.Thread(target=feed, args=(first,), name="rebuild-feed", daemon=True)
            feeder.start()
            done = 0
            try:
                while span := todo.take(first=False):
                    offset = done
                    done += rebuild_span(
                        log,
                        self._codec,
                        self.store,
                        upto,
                        self._rebuild_page,
                        span,
                        None if progress is None else lambda n: progress(offset + n),  # noqa: B023 - called within this iteration
                    )
            finally:
                todo.drop()
                feeder.join()
            return done + sum(future.result() for future in helped)

    def start(self, interval: float = BACKGROUND_INTERVAL) -> None:
        """Polls the log in a daemon thread until `stop`."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, args=(interval,), name="views", daemon=True)
        self._thread.start()

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self._catch_up(BACKGROUND_PAGE, yielding=True)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
