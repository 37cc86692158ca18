"""Benchmarks 1 and 2, distributed: ingest into the PostgreSQL read models with baselines, erasure.

Ingest: the workload's batches are POSTed to the distributed API (`consentry serve`) one after the
other; the clock runs from the first POST until the read models hold every event of the ledger
(relay → Kafka → faust processors → PostgreSQL): the sum of the per-subject watermarks in
views.applied equals the number of events in ledger.stored_events. The baselines run the same
topology with the API's ledger storing through their mappers (bench/baseline_services.py). Each
variant's stack runs on a fresh Kafka broker and PostgreSQL cluster of its own, one stack at a
time, the variants' order reversed every other round; a variant's rate is its events over its
seconds, summed over the rounds.

Erasure (on the first sealed stack): POST erasure (202 `requested`); keys destroyed = no
keystore.data_keys row of the subject left (the shredder worker), views purged = views.erasures
says `erased` (the processors worker), 410 = the first profile read after the POST's answer that
says so. Probes poll PostgreSQL as the owner role every millisecond from a thread of the benchmark
process.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Final

import psycopg

from bench.baselines import VARIANTS, Variant, stored_as
from bench.context import RunContext
from bench.erasure import STAGES, Probe, erase_all, erasure_figures
from bench.figures import BenchError, BenchResult, Figure, Target, rate
from bench.ingest import ratios
from bench.machine import cpu_seconds, peak_rss_kib
from bench.pipeline import say
from bench.server import send, send_batches, subjects_of
from bench.stack import Stack, distributed_stack, fresh_services
from bench.workload import Workload, subjects_for

NAME: Final = "distributed"
ERASURE: Final = Target("<=", 2000.0)
SETTLE_TIMEOUT: Final = 120.0
METHOD: Final = (
    "Real processes (`consentry serve`, `relay`, `worker processors`, `worker shredder`) on a "
    "fresh Kafka broker and PostgreSQL cluster per stack (infra/'s scripts), loopback only. "
    "Ingest: one HTTP client POSTs the workload's batches back to back; events/s = ledger events / "
    "time from the first POST until sum(views.applied.sequence) = count(ledger.stored_events); "
    "accepted = the same events / time until the last POST was answered. Baselines: the same "
    "stack with the API's ledger storing plaintext values (plaintext) or whole states encrypted "
    "by eventsourcing's AESCipher (aes_cipher; its relay decrypts). The stacks run one at a time, "
    "each variant once per round, the order reversed every other round; rates are summed events "
    "over summed seconds; each process's peak RSS (VmHWM), and its CPU time since the first POST, "
    "are read once the views hold the workload. Erasure (on the first sealed stack): as the "
    "embedded benchmark, with keystore.data_keys and views.erasures polled in PostgreSQL."
)


@dataclass(frozen=True, slots=True)
class IngestRun:
    """One variant's ingest on one stack."""

    variant: Variant
    events: int
    accepted_s: float
    settled_s: float
    # Each process's peak RSS by the time the views held the workload (MiB, VmHWM).
    peak_rss_mib: dict[str, float]
    # Each process's CPU time from the first POST until the views held the workload.
    cpu_s: dict[str, float]


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


def ingest_once(stack: Stack, variant: Variant, events: int) -> IngestRun:
    """The workload into one stack's views; fails unless the ledger stored what the variant claims."""
    with psycopg.connect(stack.services.dsns["owner"], autocommit=True) as pg:
        first = wait_settled(pg)
        batches = list(Workload(events, subjects_for(events), seed=7).batches())
        cpu = {p.name: cpu_seconds(p.process.pid) for p in stack.processes}
        started = time.perf_counter()
        send_batches(stack.base, batches)
        accepted = time.perf_counter() - started
        done = wait_settled(pg) - first
        settled = time.perf_counter() - started
        cpu = {p.name: cpu_seconds(p.process.pid) - cpu[p.name] for p in stack.processes}
        _check_stored(pg, variant)
    peaks = {p.name: peak_rss_kib(p.process.pid) / 1024 for p in stack.processes}
    return IngestRun(variant, done, accepted, settled, peaks, cpu)


def _check_stored(pg: psycopg.Connection[tuple[int, ...]], variant: Variant) -> None:
    keys = pg.execute("SELECT count(*) FROM keystore.data_keys").fetchone()
    first = pg.execute(
        "SELECT state FROM ledger.stored_events ORDER BY notification_id LIMIT 1"
    ).fetchone()
    if keys is None or not stored_as(variant, int(keys[0]), None if first is None else bytes(first[0])):
        raise BenchError(f"the distributed {variant} stack stored bytes of another kind")


def erasures(stack: Stack, count: int) -> list[dict[str, float]]:
    """Erasure latency on a running stack: `count` fresh profiles, each erased."""
    owner = stack.services.dsns["owner"]
    with psycopg.connect(owner, autocommit=True) as pg:
        profiles = Workload(events=0, subjects=0, seed=8).profiles(count)
        subjects = subjects_of(send(stack.base, profiles))
        wait_settled(pg)
    with pg_probes(owner) as probes_of:
        return erase_all(stack.base, subjects, probes_of)


def run(ctx: RunContext) -> BenchResult:
    """Distributed ingest throughput against the baselines, and erasure latency."""
    opts = ctx.options
    result = BenchResult(NAME, "Distributed mode: ingest into the views with baselines, erasure", METHOD)
    events = opts.distributed_events
    runs: list[IngestRun] = []
    samples: list[dict[str, float]] | None = None
    for number in range(opts.distributed_rounds):
        for variant in VARIANTS if number % 2 == 0 else VARIANTS[::-1]:
            name = f"{variant}-{number}"
            say(f"distributed: {variant} ingest of {events:,} events over HTTP (round {number + 1})")
            with (
                fresh_services(ctx.scratch(f"services-{name}")) as services,
                distributed_stack(ctx.scratch(f"stack-{name}"), services, variant) as stack,
            ):
                runs.append(ingest_once(stack, variant, events))
                if variant == "sealed" and samples is None:
                    say(f"distributed: {opts.distributed_erasures} erasures")
                    samples = erasures(stack, opts.distributed_erasures)
    _ingest_figures(result, runs, events)
    if samples is None:
        raise BenchError("no sealed stack ran, so no erasure was measured")
    erasure_figures(result, samples, dict.fromkeys(STAGES[:3], ERASURE), prefix="erasure.")
    return result


def _ingest_figures(result: BenchResult, runs: list[IngestRun], events: int) -> None:
    """Each variant's rates (into the views, answered by the API) and the ratios of both."""
    settled: dict[Variant, float] = {}
    accepted: dict[Variant, float] = {}
    for variant in VARIANTS:
        mine = [r for r in runs if r.variant == variant]
        done = sum(r.events for r in mine)
        settled[variant] = rate(done, sum(r.settled_s for r in mine))
        accepted[variant] = rate(done, sum(r.accepted_s for r in mine))
        each = " / ".join(f"{rate(r.events, r.settled_s):,.0f}" for r in mine)
        result.add(
            Figure(
                f"ingest.{variant}.events_per_s",
                settled[variant],
                "events/s",
                events,
                note=f"into the views; rounds: {each}",
            ),
            Figure(
                f"ingest.{variant}.accepted_events_per_s",
                accepted[variant],
                "events/s",
                events,
                note="answered by the API",
            ),
            Figure(
                f"ingest.{variant}.api_peak_rss",
                max(r.peak_rss_mib["api"] for r in mine),
                "MiB",
                events,
                note="the API process's VmHWM, the highest of the rounds",
            ),
        )
    result.add(*ratios(settled, events, prefix="ingest."))
    result.add(*ratios(accepted, events, prefix="ingest.accepted."))
    result.details["ingest"] = [asdict(r) for r in runs]
