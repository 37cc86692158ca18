"""`python -m bench [--quick] [--only NAME ...] [--sizes 10000,100000,1000000] [--out DIR]`.

Runs the selected benchmarks in a fixed order (ingest, replay, scaling, erasure, query, distributed)
in one temporary directory that is deleted at the end, and writes DIR/latest.json and
DIR/latest.md (default bench/results). A benchmark that fails is reported as an error without
hiding the others' figures; the exit status is then 1. Missed targets are reported, not fatal.
The distributed benchmark starts a fresh Kafka broker and PostgreSQL cluster (infra/'s scripts)
for each stack it measures, and stops them.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Final

from bench import distributed, erasure, ingest, query, replay, scaling
from bench.context import Options, RunContext
from bench.figures import BenchResult
from bench.machine import cpu_times, shares
from bench.pipeline import say
from bench.report import Run, number, write
from bench.workload import BENCH_DIR
from consentry.core.runtime import tune_gc

BENCHMARKS: Final[dict[str, Callable[[RunContext], BenchResult]]] = {
    "ingest": ingest.run,
    "replay": replay.run,
    "scaling": scaling.run,
    "erasure": erasure.run,
    "query": query.run,
    "distributed": distributed.run,
}
DEFAULT_OUT: Final = BENCH_DIR / "results"


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = sorted({int(part.replace("_", "")) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError("sizes are comma-separated event counts") from None
    if not sizes or sizes[0] < 10:
        raise argparse.ArgumentTypeError("give at least one size, each of 10 events or more")
    return tuple(sizes)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench", description="Consentry benchmarks.")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: the whole suite in seconds")
    parser.add_argument(
        "--only", nargs="+", choices=list(BENCHMARKS), metavar="NAME", help="run only these"
    )
    parser.add_argument("--sizes", type=_sizes, help="event counts of the ingest/replay/scaling runs")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where latest.json/.md go")
    return parser.parse_args(argv)


def _git() -> dict[str, Any]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=BENCH_DIR, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    return {"commit": git("rev-parse", "HEAD") or "unknown", "dirty": bool(git("status", "--porcelain"))}


def _info(options: Options, selected: list[str]) -> dict[str, Any]:
    return {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
        "quick": options.quick,
        "sizes": list(options.sizes),
        "benchmarks": selected,
        "git": _git(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "sqlite": sqlite3.sqlite_version,
        },
        "load_avg_start": os.getloadavg()[0],
    }


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Unwinds like Ctrl-C, so child processes stop and the temporary directory goes.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the suite and writes the results; 0 if every selected benchmark ran."""
    args = parse(argv)
    # The platform runs in this process for ingest, as in `consentry run`: with its GC settings.
    tune_gc()
    options = Options.make(quick=args.quick, sizes=args.sizes)
    selected = [name for name in BENCHMARKS if not args.only or name in args.only]
    run = Run(_info(options, selected))
    whole = cpu_times()
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    root = Path(tempfile.mkdtemp(prefix="consentry-bench-"))
    started = time.monotonic()
    try:
        ctx = RunContext(options, root)
        for name in selected:
            say(f"== {name}")
            load, times = os.getloadavg()[0], cpu_times()
            try:
                result = BENCHMARKS[name](ctx)
            except Exception as exc:  # noqa: BLE001 - one broken benchmark must not hide the others
                traceback.print_exc()
                run.errors[name] = f"{type(exc).__name__}: {exc}"
                continue
            result.details["load_avg"] = [load, os.getloadavg()[0]]
            result.details["cpu"] = shares(times, cpu_times())
            run.results[name] = result
    finally:
        shutil.rmtree(root, ignore_errors=True)
    run.info |= {
        "seconds": time.monotonic() - started,
        "load_avg_end": os.getloadavg()[0],
        "cpu": shares(whole, cpu_times()),
        "git_end": _git(),
    }
    json_path, md_path = write(run, args.out)
    _summary(run)
    say(f"results: {json_path} and {md_path}")
    return 1 if run.errors else 0


def _summary(run: Run) -> None:
    for name, result in run.results.items():
        for figure in result.figures:
            if figure.target is not None:
                size = f" @{figure.size:,}" if figure.size else ""
                print(
                    f"{figure.status:5} {name}.{figure.name}{size}: {number(figure.value)} {figure.unit}"
                    f" (target {figure.target.label()})"
                )
    for name, error in run.errors.items():
        print(f"ERROR {name}: {error}")


if __name__ == "__main__":
    raise SystemExit(main())
