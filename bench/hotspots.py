"""`python -m bench.hotspots {ingest,replay,read} [--events N] [--top N]`: where the time goes.

cProfile (standard library) around exactly the work a benchmark times, in one process:
- ingest: the sealed write path on the shared workload (decode, parse, submit, after_write);
- replay: `runner.rebuild()` of a sealed log built first (the build is not profiled);
- read: profile reads with their DataAccessed write, through the real FastAPI app in process
  (raw ASGI calls, no client and no sockets), READERS at a time so their access events are
  grouped as under load; what goes to the executor runs inline so the profiler sees it. The
  figures show the platform's own cost, not uvicorn's or a client's.
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
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

from starlette.types import ASGIApp, Message, Scope

from bench.pipeline import Lane, LogStore, open_variant
from bench.workload import BATCH, READ_PURPOSE, SUPPORT_TOKEN, Workload, subjects_for
from consentry.core.runtime import tune_gc
from consentry.platform import create_app

READERS: Final = 8  # reads in flight at once, as the query benchmark's 8 clients


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
        # Work handed to the executor (the group's access-event write, any read that cannot stay
        # on the loop) runs inline, where cProfile sees it.
        asyncio.get_running_loop().set_default_executor(_Inline())
        profiler.enable()
        for first in range(0, events, READERS):
            batch = [subjects[n % len(subjects)] for n in range(first, min(first + READERS, events))]
            await asyncio.gather(*(_profile_read(app, subject) for subject in batch))
        profiler.disable()

    try:
        asyncio.run(reads())
    finally:
        lane.finish()


async def _profile_read(app: ASGIApp, subject: str) -> None:
    """One profile read through the whole ASGI app (middleware, routing, the read), no client."""
    path = f"/v1/subjects/{subject}/profile"
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": f"purpose={READ_PURPOSE}".encode(),
        "root_path": "",
        "headers": [(b"host", b"bench"), (b"authorization", f"Bearer {SUPPORT_TOKEN}".encode())],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    if sent[0].get("status") != 200:
        raise RuntimeError(f"a profile read answered {sent[0].get('status')}")


class _Inline(ThreadPoolExecutor):
    """Runs what is submitted at once, in the caller's thread."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        done: Future[Any] = Future()
        try:
            done.set_result(fn(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - handed to whoever awaits the future
            done.set_exception(exc)
        return done


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
