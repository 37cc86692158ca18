"""The benchmark harness runs end to end at tiny sizes, so it cannot rot (no timing is asserted).

`python -m bench --quick` runs the embedded benchmarks in a real child process, as `make bench`
would, into a temporary results directory. Every benchmark must report numeric figures, every
target of issue 5 must be there, and the run must leave nothing behind in its temporary directory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.bench.quick import quick_run

EMBEDDED = ("ingest", "replay", "scaling", "erasure", "query")
TARGETED = {
    ("ingest", "sealed.events_per_s"),
    ("ingest", "sealing_overhead"),
    ("replay", "events_per_s"),
    ("replay", "peak_rss_largest_to_smallest"),
    ("erasure", "keys_destroyed.p99"),
    ("erasure", "views_purged.p99"),
    ("erasure", "gone_410.p99"),
    ("query", "clients_8.p99"),
}


@dataclass(frozen=True)
class QuickRun:
    """One `python -m bench --quick` run: its results, where it wrote them, its temporary dir."""

    results: dict[str, Any]
    out: Path
    scratch: Path


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> QuickRun:
    out, scratch = tmp_path_factory.mktemp("results"), tmp_path_factory.mktemp("tmp")
    return QuickRun(quick_run(EMBEDDED, out, scratch, timeout=600), out, scratch)


def test_a_quick_run_reports_numeric_figures_for_every_embedded_benchmark(quick: QuickRun) -> None:
    results = quick.results
    assert results["summary"]["errors"] == []
    for name in EMBEDDED:
        benchmark = results["benchmarks"][name]
        assert benchmark["status"] == "ok", (name, benchmark.get("error"))
        assert benchmark["figures"], name
        for figure in benchmark["figures"]:
            assert isinstance(figure["value"], int | float), figure
            assert math.isfinite(figure["value"]), figure
            assert figure["status"] in ("pass", "miss", "info"), figure
    targeted = {(f["benchmark"], f["name"]) for f in results["figures"] if "target" in f}
    assert targeted >= TARGETED
    # The scaling curve reuses the other benchmarks' measurements, so it may take no time at all.
    for name in set(EMBEDDED) - {"scaling"}:
        cpu = results["benchmarks"][name]["details"]["cpu"]
        assert 0 <= cpu["steal_pct"] <= cpu["busy_pct"] <= 100, (name, cpu)
    sizes = {f["size"] for f in results["benchmarks"]["ingest"]["figures"]}
    assert len(sizes) >= 2, "the scaling curve needs at least two sizes"


def test_a_quick_run_writes_both_reports_and_leaves_no_data_behind(quick: QuickRun) -> None:
    report = (quick.out / "latest.md").read_text()
    assert report.startswith("# Consentry benchmarks")
    assert "## Targets (issue 5)" in report and "## Scaling curve" in report
    # The whole run's shares, then each benchmark's (the scaling curve's may be too short to tell).
    assert report.count("% of their time stolen by the hypervisor") >= len(EMBEDDED)
    assert sorted(p.name for p in quick.out.iterdir()) == ["latest.json", "latest.md"]
    # The data directories (the baselines hold fake personal data in the clear) are gone.
    assert list(quick.scratch.iterdir()) == []
    for path in quick.out.iterdir():
        assert "example.com" not in path.read_text(), path.name


def test_the_sealing_overhead_splits_into_key_management_and_encryption(quick: QuickRun) -> None:
    figures = quick.results["benchmarks"]["ingest"]["figures"]
    by_size: dict[int, dict[str, float]] = {}
    for figure in figures:
        by_size.setdefault(figure["size"], {})[figure["name"]] = figure["value"]
    details = quick.results["benchmarks"]["ingest"]["details"]
    for size, named in by_size.items():
        rates = {v: details[str(size)][v]["events_per_s"] for v in ("sealed", "plaintext", "keys_only")}
        keys, encryption = named["overhead_key_management"], named["overhead_encryption"]
        # Each part is its own pair of lanes (so neither is the other's, mislabelled) ...
        assert keys == pytest.approx((rates["plaintext"] / rates["keys_only"] - 1) * 100), size
        assert encryption == pytest.approx((rates["keys_only"] / rates["sealed"] - 1) * 100), size
        # ... and together they are the whole overhead.
        whole = 1 + named["sealing_overhead"] / 100
        assert (1 + keys / 100) * (1 + encryption / 100) == pytest.approx(whole), size
        assert named["keys_only.events_per_s"] == rates["keys_only"], size


def test_each_small_size_reports_the_ingest_run_with_the_median_overhead(quick: QuickRun) -> None:
    ingest = quick.results["benchmarks"]["ingest"]
    reported = {f["size"]: f for f in ingest["figures"] if f["name"] == "sealing_overhead"}
    for size, figure in reported.items():
        runs = ingest["details"][str(size)]["sealing_overhead_runs"]
        assert len(runs) == 3, (size, runs)
        assert figure["value"] == pytest.approx(sorted(runs)[1]), (size, runs)
        assert "median of 3 runs: " in figure["note"]
        # The rates reported are that run's own: its overhead follows from them.
        details = ingest["details"][str(size)]
        rates = {v: details[v]["events_per_s"] for v in ("sealed", "plaintext")}
        assert figure["value"] == pytest.approx((rates["plaintext"] / rates["sealed"] - 1) * 100)


def test_the_replay_rate_is_the_median_of_three_rebuilds_each_checked(quick: QuickRun) -> None:
    replay = quick.results["benchmarks"]["replay"]
    rates = {f["size"]: f for f in replay["figures"] if f["name"] == "events_per_s"}
    assert sorted(rates) == sorted(int(key) for key in replay["details"] if key.isdigit())
    for size, figure in rates.items():
        details = replay["details"][str(size)]
        runs = details["runs"]
        assert len(runs) == 3 and all(rate > 0 for rate in runs), details
        assert figure["value"] == sorted(runs)[1] == details["events_per_s"]
        assert figure["note"].startswith("median of 3 rebuilds: ")
        assert details["views_match"] is True
