"""Benchmark 5: the scaling curve, ingest and replay cost per event at every size of the run.

Nothing is measured twice: the figures come from the ingest and replay measurements of the same
run (each size's log is built once, by the sealed ingest, and reused by the replay). Growth is
the cost per event at the largest size over the cost at the smallest: 1.0 means flat.
"""

from __future__ import annotations

from typing import Any, Final

from bench import replay
from bench.context import RunContext
from bench.figures import BenchResult, Figure

NAME: Final = "scaling"
METHOD: Final = (
    "Derived from the ingest and replay measurements of this run: each size's sealed log is built "
    "once and replayed; the ingest figures are the ingest benchmark's reported run (the median of "
    "its runs where it repeats a size; the log's build where it did not run), with its baselines. "
    "cost growth = µs per event at the largest size / µs per event at the smallest size."
)


def run(ctx: RunContext) -> BenchResult:
    """One row per size, and the growth of ingest and replay cost from the smallest to the largest."""
    result = BenchResult(NAME, "Scaling curve: cost per event against history size", METHOD)
    rows: list[dict[str, Any]] = []
    for size in ctx.options.sizes:
        # The reported ingest run's rates if the ingest benchmark ran (with repeated runs, the
        # median one, which need not be the run that built the log); else the log's build alone.
        built = ctx.logs.get(size).stats
        variants = ctx.ingests.get(size, {"sealed": built})
        sealed = variants["sealed"]
        replayed = replay.measure(ctx, size)
        rows.append(
            {
                "size": size,
                "events": sealed.events,
                "ingest_events_per_s": {v: s.events_per_s for v, s in variants.items()},
                "ingest_us_per_event": 1e6 / sealed.events_per_s,
                "replay_events_per_s": replayed.events_per_s,
                "replay_us_per_event": 1e6 / replayed.events_per_s,
                "replay_peak_rss_mib": replayed.rss_peak_kib / 1024,
                "log_bytes": built.bytes_on_disk,
            }
        )
        result.add(
            Figure("ingest.us_per_event", 1e6 / sealed.events_per_s, "µs", size),
            Figure("replay.us_per_event", 1e6 / replayed.events_per_s, "µs", size),
        )
    first, last = rows[0], rows[-1]
    span = f"{last['size']:,} vs {first['size']:,} events"
    for stage in ("ingest", "replay"):
        growth = last[f"{stage}_us_per_event"] / first[f"{stage}_us_per_event"]
        result.add(Figure(f"{stage}.cost_growth", growth, "ratio", last["size"], note=span))
    result.details["rows"] = rows
    return result
