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
from dataclasses import dataclass, field
from typing import Final

import httpx

from bench.context import RunContext
from bench.figures import BenchError, BenchResult, Figure, Target, latency_figures, rate
from bench.pipeline import say
from bench.server import embedded_server, send, subjects_of
from bench.workload import READ_PURPOSE, SUPPORT_TOKEN, Workload

NAME: Final = "query"
P99_AT_8: Final = Target("<=", 10.0)
WARM_UP_SECONDS: Final = 0.5
METHOD: Final = (
    "Real uvicorn server (`consentry run`, SQLite) over loopback HTTP. N asyncio workers in the "
    "benchmark process (httpx, one keep-alive connection each) read random subjects' support "
    "profiles back to back; each read appends DataAccessed before the answer (checked: every 200 "
    "carries access_event_id). After a 0.5 s warm-up, latency = request round trip; throughput = "
    "successful reads / elapsed time. Client and server share the 2 cores."
)


@dataclass
class Load:
    """What one load phase measured."""

    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


async def _read_for(base: str, subjects: list[str], clients: int, seconds: float, seed: int) -> Load:
    load = Load()
    rng = random.Random(seed)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {SUPPORT_TOKEN}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=30) as http:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                path = f"/v1/subjects/{rng.choice(subjects)}/profile"
                sent = time.perf_counter()
                answer = await http.get(path, params={"purpose": READ_PURPOSE})
                took = time.perf_counter() - sent
                if answer.status_code == 200 and b"access_event_id" in answer.content:
                    load.latencies.append(took)
                else:
                    load.errors[str(answer.status_code)] += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        load.seconds = time.perf_counter() - started
    return load


def run(ctx: RunContext) -> BenchResult:
    """Latency and throughput of profile reads at each client count."""
    opts = ctx.options
    result = BenchResult(
        NAME, "Profile reads (with their DataAccessed write), embedded, over HTTP", METHOD
    )
    with embedded_server(ctx.scratch("query")) as base:
        say(f"query: {opts.query_subjects:,} subjects, {opts.query_seconds:g} s per client count")
        subjects = subjects_of(send(base, Workload(events=0, subjects=0).profiles(opts.query_subjects)))
        for clients in opts.clients:
            asyncio.run(_read_for(base, subjects, clients, WARM_UP_SECONDS, seed=clients))
            load = asyncio.run(_read_for(base, subjects, clients, opts.query_seconds, seed=clients + 1))
            if not load.latencies:
                raise BenchError(
                    f"no profile read succeeded with {clients} clients: {dict(load.errors)}"
                )
            target = P99_AT_8 if clients == 8 else None
            note = f"{clients} concurrent clients"
            result.add(
                *latency_figures(f"clients_{clients}", load.latencies, target, note),
                Figure(
                    f"clients_{clients}.throughput",
                    rate(len(load.latencies), load.seconds),
                    "reads/s",
                    note=note,
                ),
                Figure(f"clients_{clients}.errors", sum(load.errors.values()), "requests", note=note),
            )
            result.details[f"clients_{clients}"] = {
                "errors": dict(load.errors),
                "reads": len(load.latencies),
            }
    return result
