"""Benchmark 3, embedded: profile reads over real HTTP with 1, 8 and 32 concurrent clients.

Every read is `GET /v1/subjects/{id}/profile?purpose=support` with a support agent's token: the
server checks role and consent, appends the durable `DataAccessed` event, catches the views up and
only then opens the sealed values. The load comes from wrk (`bench/wrk.py`): N keep-alive
connections read random subjects back to back for a fixed time.
"""

from __future__ import annotations

from typing import Final

from bench import wrk
from bench.context import RunContext
from bench.figures import BenchError, BenchResult, Figure, Target, rate
from bench.pipeline import say
from bench.server import embedded_server, send, subjects_of
from bench.workload import READ_PURPOSE, SUPPORT_TOKEN, Workload

NAME: Final = "query"
P99_AT_8: Final = Target("<=", 10.0)
WARM_UP_SECONDS: Final = 1.0
# The HTTP stack's own floor: an endpoint that touches no store (the certificate public key), loaded
# the same way in the same run, so the profile read's figures can be read against it.
FLOOR_PATH: Final = "/v1/keys/certificate-public-key"
METHOD: Final = (
    "Real uvicorn server (`consentry run`, SQLite) over loopback HTTP. wrk (one thread, N "
    "keep-alive connections) reads random subjects' support profiles back to back; each read "
    "appends DataAccessed before the answer (checked by wrk's Lua script: a read counts as good "
    "only if it is a 200 carrying access_event_id; any other answer is an error). After a 1 s "
    "warm-up, latency = request round trip from wrk's histogram; throughput = good reads / "
    "elapsed time. wrk and the server share the 2 cores. Floor: the same load on "
    f"{FLOOR_PATH}, which touches no store, for half as long, right after each phase."
)


def _phase(base: str, paths: list[str], clients: int, seconds: float, need: str | None) -> wrk.Load:
    def run(length: float, seed: int) -> wrk.Load:
        return wrk.load(
            base,
            paths,
            connections=clients,
            seconds=length,
            token=SUPPORT_TOKEN,
            need=need,
            seed=seed,
        )

    run(WARM_UP_SECONDS, seed=clients)
    return run(seconds, seed=clients + 1)


def _latency(prefix: str, load: wrk.Load, target: Target | None, note: str) -> list[Figure]:
    sampled = f"{load.requests} requests; {note}"
    return [
        Figure(f"{prefix}.p50", load.p50_ms, "ms", note=sampled),
        Figure(f"{prefix}.p99", load.p99_ms, "ms", target=target, note=sampled),
        Figure(f"{prefix}.max", load.max_ms, "ms", note=sampled),
    ]


def run(ctx: RunContext) -> BenchResult:
    """Latency and throughput of profile reads at each client count."""
    opts = ctx.options
    result = BenchResult(
        NAME, "Profile reads (with their DataAccessed write), embedded, over HTTP", METHOD
    )
    with embedded_server(ctx.scratch("query")) as base:
        say(f"query: {opts.query_subjects:,} subjects, {opts.query_seconds:g} s per client count")
        subjects = subjects_of(send(base, Workload(events=0, subjects=0).profiles(opts.query_subjects)))
        profiles = [f"/v1/subjects/{s}/profile?purpose={READ_PURPOSE}" for s in subjects]
        for clients in opts.clients:
            load = _phase(base, profiles, clients, opts.query_seconds, "access_event_id")
            floor = _phase(base, [FLOOR_PATH], clients, opts.query_seconds / 2, None)
            if not load.good or not floor.good:
                raise BenchError(
                    f"no read succeeded with {clients} clients (last status {load.bad_status})"
                )
            target = P99_AT_8 if clients == 8 else None
            note = f"{clients} concurrent clients"
            floor_note = f"{clients} concurrent clients on {FLOOR_PATH} (no store touched)"
            errors = load.bad + load.socket_errors
            result.add(
                *_latency(f"clients_{clients}", load, target, note),
                Figure(
                    f"clients_{clients}.throughput", rate(load.good, load.seconds), "reads/s", note=note
                ),
                Figure(f"clients_{clients}.errors", errors, "requests", note=note),
                *_latency(f"floor_{clients}", floor, None, floor_note),
                Figure(
                    f"floor_{clients}.throughput",
                    rate(floor.good, floor.seconds),
                    "requests/s",
                    note=floor_note,
                ),
                Figure(
                    f"clients_{clients}.p99_to_floor",
                    load.p99_ms / floor.p99_ms,
                    "ratio",
                    note="profile read p99 / floor p99, same client count, same run",
                ),
            )
            result.details[f"clients_{clients}"] = {
                "errors": errors,
                "last_error_status": load.bad_status,
                "reads": load.good,
                "floor_requests": floor.good,
                "floor_errors": floor.bad + floor.socket_errors,
            }
    return result
