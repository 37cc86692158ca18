"""`python -m bench.hotspots {ingest,replay,read} [--events N] [--top N]`: where the time goes.

cProfile (standard library) around exactly the work a benchmark times, in one process:
- ingest: the sealed write path on the shared workload (decode, parse, submit, after_write);
- replay: `runner.rebuild()` of a sealed log built first (the build is not profiled);
- read: profile reads with their DataAccessed write, through the real FastAPI app in process
  (ASGI transport, no sockets; sync endpoints run inline so the profiler sees them), so the
  figures show the platform's own cost, not uvicorn's or the client's.
Prints the top functions by own time and by cumulative time. Data goes to a temporary directory
that is deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from unittest.mock import patch

import httpx

from bench.pipeline import Lane, LogStore, open_variant
from bench.workload import BATCH, READ_PURPOSE, SUPPORT_TOKEN, Workload, subjects_for
from consentry.core.runtime import tune_gc
from consentry.platform import create_app


def ingest(root: Path, events: int, profiler: cProfile.Profile) -> None:
    lane = Lane(root / "ingest", "sealed")
    try:
        for batch in Workload(events, subjects_for(events)).batches():
            text = json.dumps({"events": batch})
            profiler.enable()
            lane.step(text)
            profiler.disable()
    finally:
        lane.finish()


def replay(root: Path, events: int, profiler: cProfile.Profile) -> None:
    platform = open_variant(LogStore(root).get(events).data_dir)
    try:
        profiler.enable()
        platform.runner.rebuild()
        profiler.disable()
    finally:
        platform.close()


def read(root: Path, events: int, profiler: cProfile.Profile) -> None:
    lane = Lane(root / "read", "sealed")
    records = list(Workload(events=0, subjects=0).profiles(max(10, events // 10)))
    subjects: list[str] = []
    for start in range(0, len(records), BATCH):
        outcomes = lane.step(json.dumps({"events": records[start : start + BATCH]}))
        subjects += [str(o.subject_id) for o in outcomes]
    subjects = list(dict.fromkeys(subjects))
    app = create_app(lane.platform)

    async def reads() -> None:
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {SUPPORT_TOKEN}"}
        client = httpx.AsyncClient(transport=transport, base_url="http://bench", headers=headers)
        async with client as http:
            profiler.enable()
            for number in range(events):
                path = f"/v1/subjects/{subjects[number % len(subjects)]}/profile"
                answer = await http.get(path, params={"purpose": READ_PURPOSE})
                answer.raise_for_status()
            profiler.disable()

    # Sync endpoints run inline instead of in anyio's worker threads, which cProfile cannot see.
    try:
        with patch("anyio.to_thread.run_sync", _inline):
            asyncio.run(reads())
    finally:
        lane.finish()


async def _inline(func: Callable[..., Any], *args: Any, **_: Any) -> Any:
    return func(*args)


MODES = {"ingest": ingest, "replay": replay, "read": read}


def main(argv: Sequence[str] | None = None) -> None:
    """Profiles one mode and prints its hotspots."""
    parser = argparse.ArgumentParser(prog="python -m bench.hotspots", description="cProfile hotspots.")
    parser.add_argument("mode", choices=list(MODES))
    parser.add_argument("--events", type=int, default=20_000, help="events (read: reads) to profile")
    parser.add_argument("--top", type=int, default=25, help="how many functions to list")
    args = parser.parse_args(argv)
    tune_gc()  # profile the process as `consentry run` sets it up
    profiler = cProfile.Profile(time.process_time)  # CPU time: steady on a busy machine
    with tempfile.TemporaryDirectory(prefix="consentry-hotspots-") as root:
        MODES[args.mode](Path(root), args.events, profiler)
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(order).print_stats(args.top)
        print(f"== {args.mode}: top {args.top} by {order}\n{out.getvalue()}")


if __name__ == "__main__":
    main()
