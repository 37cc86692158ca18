"""Benchmarks 1 and 2, distributed: ingest into the PostgreSQL read models, and erasure latency.

Ingest: the workload's batches are POSTed to the distributed API (`consentry serve`) one after the
other; the clock runs from the first POST until the read models hold every event of the ledger
(relay → Kafka → faust processors → PostgreSQL): the sum of the per-subject watermarks in
views.applied equals the number of events in ledger.stored_events.

Erasure: POST erasure (202 `requested`); keys destroyed = no keystore.data_keys row of the subject
left (the shredder worker), views purged = views.erasures says `erased` (the processors worker),
410 = the first profile read after the POST's answer that says so. Probes poll PostgreSQL as the
owner role every millisecond from a thread of the benchmark process.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final

import psycopg

from bench.context import RunContext
from bench.erasure import STAGES, Probe, erase_all, erasure_figures
from bench.figures import BenchError, BenchResult, Figure, Target, rate
from bench.pipeline import say
from bench.server import send, send_batches, subjects_of
from bench.stack import distributed_stack
from bench.workload import Workload, subjects_for

NAME: Final = "distributed"
ERASURE: Final = Target("<=", 2000.0)
SETTLE_TIMEOUT: Final = 600.0
METHOD: Final = (
    "Real processes (`consentry serve`, `relay`, `worker processors`, `worker shredder`) on the "
    "Kafka broker and PostgreSQL cluster infra/ started, loopback only. Ingest: one HTTP client "
    "POSTs the workload's batches back to back; events/s = ledger events / time from the first "
    "POST until sum(views.applied.sequence) = count(ledger.stored_events). Erasure: as the "
    "embedded benchmark, with keystore.data_keys and views.erasures polled in PostgreSQL."
)


def _counts(pg: psycopg.Connection[tuple[int, ...]]) -> tuple[int, int]:
    """(events in the ledger, events the read models hold)."""
    ledger = pg.execute("SELECT count(*) FROM ledger.stored_events").fetchone()
    views = pg.execute("SELECT coalesce(sum(sequence), 0) FROM views.applied").fetchone()
    if ledger is None or views is None:
        raise BenchError("the ledger or the views could not be counted")
    return int(ledger[0]), int(views[0])


def wait_settled(pg: psycopg.Connection[tuple[int, ...]]) -> int:
    """Waits until the read models hold every ledger event; answers how many events that is."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while time.monotonic() < deadline:
        ledger, views = _counts(pg)
        if ledger == views:
            return ledger
        time.sleep(0.02)
    raise BenchError(f"the read models did not catch up with the ledger in {SETTLE_TIMEOUT:.0f} s")


@contextmanager
def pg_probes(dsn: str) -> Iterator[Callable[[uuid.UUID], dict[str, Probe]]]:
    """Erasure probes on PostgreSQL (one connection, used by the probing thread only)."""
    with psycopg.connect(dsn, autocommit=True) as pg:

        def probes(subject: uuid.UUID) -> dict[str, Probe]:
            def keys_destroyed() -> bool:
                row = pg.execute("SELECT 1 FROM keystore.data_keys WHERE subject_id=%s", (subject,))
                return row.fetchone() is None

            def views_purged() -> bool:
                row = pg.execute(
                    "SELECT status FROM views.erasures WHERE subject_id=%s", (subject.bytes,)
                ).fetchone()
                return row is not None and row[0] == "erased"

            return {"keys_destroyed": keys_destroyed, "views_purged": views_purged}

        yield probes


def run(ctx: RunContext) -> BenchResult:
    """Distributed ingest throughput and erasure latency."""
    opts = ctx.options
    result = BenchResult(NAME, "Distributed mode: ingest into the views, erasure latency", METHOD)
    with distributed_stack(ctx.scratch("distributed")) as stack:
        owner = stack.services.dsns["owner"]
        with psycopg.connect(owner, autocommit=True) as pg:
            first = wait_settled(pg)
            events = opts.distributed_events
            say(f"distributed: ingest of {events:,} events over HTTP into the PostgreSQL views")
            batches = list(Workload(events, subjects_for(events), seed=7).batches())
            started = time.perf_counter()
            send_batches(stack.base, batches)
            accepted = time.perf_counter() - started
            done = wait_settled(pg) - first
            settled = time.perf_counter() - started
            result.add(
                Figure(
                    "ingest.events_per_s", rate(done, settled), "events/s", events, note="into the views"
                ),
                Figure("ingest.accepted_events_per_s", rate(done, accepted), "events/s", events),
            )
            result.details["ingest"] = {"events": done, "accepted_s": accepted, "settled_s": settled}
            say(f"distributed: {opts.distributed_erasures} erasures")
            profiles = Workload(events=0, subjects=0, seed=8).profiles(opts.distributed_erasures)
            subjects = subjects_of(send(stack.base, profiles))
            wait_settled(pg)
        with pg_probes(owner) as probes_of:
            samples = erase_all(stack.base, subjects, probes_of)
    targets = dict.fromkeys(STAGES[:3], ERASURE)
    erasure_figures(result, samples, targets, prefix="erasure.")
    return result
