"""Each ingest variant runs in a child process of its own, fed batches one at a time."""

from __future__ import annotations

import json
import os
import sqlite3
from collections import Counter
from contextlib import closing
from pathlib import Path

import pytest
from bench.baselines import Variant
from bench.figures import BenchError
from bench.pipeline import Lane, LaneProcess
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


def test_the_keys_only_ablation_manages_the_keys_sealing_does_and_seals_no_value(
    tmp_path: Path,
) -> None:
    batches = [json.dumps({"events": b}) for b in Workload(600, 40).batches()]

    def ingest(variant: Variant) -> tuple[Counter[tuple[str, int]], int]:
        lane = Lane(tmp_path / variant, variant)
        for text in batches:
            lane.step(text)
        stats = lane.finish()  # checks the stored bytes are the variant's (check_variant)
        with closing(sqlite3.connect(tmp_path / variant / "keystore.db")) as keystore:
            rows = keystore.execute("SELECT scope, version FROM data_keys").fetchall()
        with closing(sqlite3.connect(tmp_path / variant / "events.db")) as events:
            states = [bytes(s) for (s,) in events.execute("SELECT state FROM stored_events")]
        assert stats.events == len(states)
        return Counter((str(scope), int(version)) for scope, version in rows), sum(
            b"plaintext" in state for state in states
        )

    sealed_keys, sealed_clear = ingest("sealed")
    ablation_keys, ablation_clear = ingest("keys_only")
    plain_keys, plain_clear = ingest("plaintext")
    # Same keys of the same scopes and versions (the subjects' ids are minted at random) ...
    assert ablation_keys == sealed_keys and sum(sealed_keys.values()) > 40
    assert not plain_keys
    # ... while every personal value it stored is in the clear, as the plaintext baseline's are.
    assert sealed_clear == 0 and ablation_clear == plain_clear > 0
