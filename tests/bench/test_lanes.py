"""Each ingest variant runs in a child process of its own, fed batches one at a time."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from bench.figures import BenchError
from bench.pipeline import LaneProcess
from bench.workload import Workload


def test_a_lane_process_ingests_each_batch_before_it_answers_and_then_reports_its_figures(
    tmp_path: Path,
) -> None:
    batches = [json.dumps({"events": b}) for b in Workload(300, 30).batches()]
    lane = LaneProcess(tmp_path / "plaintext", "plaintext")
    try:
        seen = []
        for text in batches:
            lane.step(text)
            seen.append(lane.events)
        stats = lane.finish()
    finally:
        lane.kill()
    assert seen == sorted(seen) and seen[0] > 0
    assert (stats.variant, stats.events) == ("plaintext", seen[-1])
    assert stats.records == sum(len(json.loads(t)["events"]) for t in batches)
    assert stats.seconds == pytest.approx(lane.seconds) and stats.bytes_on_disk > 0
    assert stats.cpu_seconds > 0
    assert (tmp_path / "plaintext" / "events.db").exists()


def test_a_lane_that_fails_ends_with_a_bench_error_and_leaves_no_process(tmp_path: Path) -> None:
    lane = LaneProcess(tmp_path / "sealed", "sealed")
    pid = lane._child.pid
    try:
        with pytest.raises(BenchError, match="the sealed lane exited"):
            lane.step("this is not a batch")
    finally:
        lane.kill()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
