"""The replay benchmark's child (`python -m bench.replay_child DATA_DIR`): rebuild, then report.

A module of its own, whose top imports little (the standard library and `bench.figures`): the
rebuild spawns its helper processes, and a spawned process first imports its parent's main
module. `bench.replay`, which imports the benchmark suite and the whole platform, cost each
helper ~1 s of CPU before its first span (`python -c "import bench.replay"`: 0.96 s), where
`consentry replay`'s main module, the CLI, costs 0.22 s. Here a helper starts as it does under
the command.
"""

from __future__ import annotations

import json
import resource
import sqlite3
import sys
import time
from contextlib import closing
from pathlib import Path

from bench.machine import peak_rss_kib


def _counts(data_dir: Path) -> dict[str, int]:
    from consentry.adapters.sql_views import VIEW_TABLES

    with closing(sqlite3.connect(data_dir / "views.db")) as views:
        return {t: int(views.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in VIEW_TABLES}  # noqa: S608 - fixed table names


def child(data_dir: Path) -> dict[str, object]:
    """The child's work: open, rebuild, report (JSON on stdout)."""
    from bench.pipeline import open_variant  # not at the top: see the module's docstring

    before = _counts(data_dir)
    platform = open_variant(data_dir)
    try:
        rss_open = peak_rss_kib()
        started = time.perf_counter()
        events = platform.runner.rebuild()
        seconds = time.perf_counter() - started
        rss_peak = peak_rss_kib()
    finally:
        platform.close()
    return {
        "events": events,
        "seconds": seconds,
        "rss_open_kib": rss_open,
        "rss_peak_kib": rss_peak,
        "views_match": _counts(data_dir) == before,
        "helpers_rss_peak_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    }


if __name__ == "__main__":
    from consentry.core.runtime import tune_gc

    tune_gc()  # as `consentry replay` runs
    print(json.dumps(child(Path(sys.argv[1]))))
