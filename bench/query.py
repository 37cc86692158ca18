"""Benchmark 3, embedded: profile reads over real HTTP with 1, 8 and 32 concurrent clients.

Every read is `GET /v1/subjects/{id}/profile?purpose=support` with a support agent's token: the
server checks role and consent, appends the durable `DataAccessed` event, catches the views up and
only then opens the sealed values. The load comes from asyncio workers in the benchmark process
(one keep-alive connection each) that read random subjects back to back for a fixed time.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import httpx

from bench.context import RunContext
from bench.figures import BenchError, BenchResult, Figure, Target, latency_figures, percentile, rate
from bench.pipeline import say
from bench.server import embedded_server, send, subjects_of
from bench.workload import READ_PURPOSE, SUPPORT_TOKEN, Workload

NAME: Final = "query"
P99_AT_8: Final = Target("<=", 10.0)
WARM_UP_SECONDS: Final = 0.5
# The HTTP stack's own floor: an endpoint that touches no store (the certificate public key), loaded
# the same way in the same run, so the profile read's figures can be read against it.
FLOOR_PATH: Final = "/v1/keys/certificate-public-key"
METHOD: Final = (
    "Real uvicorn server (`consentry run`, SQLite) over loopback HTTP. N asyncio workers in the "
    "benchmark process (httpx, one keep-alive connection each) read random subjects' support "
    "profiles back to back; each read appends DataAccessed before the answer (checked: every 200 "
    "carries access_event_id). After a 0.5 s warm-up, latency = request round trip; throughput = "
    "successful reads / elapsed time. Client and server share the 2 cores. Floor: the same load "
    f"on {FLOOR_PATH}, which touches no store, for half as long, right after each phase."
)


@dataclass
class Load:
    """What one load phase measured."""

    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


async def _load_for(
    base: str, paths: Callable[[random.Random], str], clients: int, seconds: float, seed: int
) -> Load:
    """N workers send GETs of `paths(rng)` back to back for `seconds`; 200s are timed."""
    load = Load()
    rng = random.Random(seed)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {SUPPORT_TOKEN}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=30) as http:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                path = paths(rng)
                sent = time.perf_counter()
                answer = await http.get(path)
                took = time.perf_counter() - sent
                # A profile read counts only if it names its access event.
                if answer.status_code == 200 and (
                    path == FLOOR_PATH or b"access_event_id" in answer.content
                ):
                    load.latencies.append(took)
                else:
                    load.errors[str(answer.status_code)] += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        load.seconds = time.perf_counter() - started
    return load


def _phase(base: str, paths: Callable[[random.Random], str], clients: int, seconds: float) -> Load:
    asyncio.run(_load_for(base, paths, clients, WARM_UP_SECONDS, seed=clients))
    return asyncio.run(_load_for(base, paths, clients, seconds, seed=clients + 1))


def run(ctx: RunContext) -> BenchResult:
    """Latency and throughput of profile reads at each client count."""
    opts = ctx.options
    result = BenchResult(
        NAME, "Profile reads (with their DataAccessed write), embedded, over HTTP", METHOD
    )
    with embedded_server(ctx.scratch("query")) as base:
        say(f"query: {opts.query_subjects:,} subjects, {opts.query_seconds:g} s per client count")
        subjects = subjects_of(send(base, Workload(events=0, subjects=0).profiles(opts.query_subjects)))

        def profile(rng: random.Random) -> str:
            return f"/v1/subjects/{rng.choice(subjects)}/profile?purpose={READ_PURPOSE}"

        for clients in opts.clients:
            load = _phase(base, profile, clients, opts.query_seconds)
            floor = _phase(base, lambda _: FLOOR_PATH, clients, opts.query_seconds / 2)
            if not load.latencies or not floor.latencies:
                raise BenchError(
                    f"no read succeeded with {clients} clients: {dict(load.errors + floor.errors)}"
                )
            target = P99_AT_8 if clients == 8 else None
            note = f"{clients} concurrent clients"
            floor_note = f"{clients} concurrent clients on {FLOOR_PATH} (no store touched)"
            result.add(
                *latency_figures(f"clients_{clients}", load.latencies, target, note),
                Figure(
                    f"clients_{clients}.throughput",
                    rate(len(load.latencies), load.seconds),
                    "reads/s",
                    note=note,
                ),
                Figure(f"clients_{clients}.errors", sum(load.errors.values()), "requests", note=note),
                *latency_figures(f"floor_{clients}", floor.latencies, None, floor_note),
                Figure(
                    f"floor_{clients}.throughput",
                    rate(len(floor.latencies), floor.seconds),
                    "requests/s",
                    note=floor_note,
                ),
                Figure(
                    f"clients_{clients}.p99_to_floor",
                    percentile(load.latencies, 99) / percentile(floor.latencies, 99),
                    "ratio",
                    note="profile read p99 / floor p99, same client count, same run",
                ),
            )
            result.details[f"clients_{clients}"] = {
                "errors": dict(load.errors),
                "reads": len(load.latencies),
                "floor_requests": len(floor.latencies),
            }
    return result
