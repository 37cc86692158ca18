"""Group commit: concurrent callers share a run, yet each gets exactly its own outcomes or error."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from consentry.ledger.group import GroupCommit

CALLERS = 16


class Recorder:
    """A run that takes a while (so callers pile up) and fails whole groups holding a bad item."""

    def __init__(self) -> None:
        self.runs: list[list[str]] = []
        self.lock = threading.Lock()

    def __call__(self, items: Sequence[str]) -> list[str]:
        with self.lock:
            self.runs.append(list(items))
        time.sleep(0.01)
        if any(item.startswith("bad") for item in items):
            raise ValueError("a bad item")
        return [item.upper() for item in items]


def _call_all(group: GroupCommit[str, str], calls: list[list[str]]) -> list[list[str] | Exception]:
    results: list[list[str] | Exception] = [[] for _ in calls]
    start = threading.Barrier(len(calls))

    def call(index: int) -> None:
        start.wait()
        try:
            results[index] = group(calls[index])
        except ValueError as exc:
            results[index] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    return results


def test_concurrent_callers_share_runs_and_each_gets_its_own_outcomes() -> None:
    run = Recorder()
    calls = [[f"c{i}-a", f"c{i}-b"] for i in range(CALLERS)]
    results = _call_all(GroupCommit(run), calls)
    assert results == [[item.upper() for item in call] for call in calls]
    # Callers that arrived while a run was going were written together in the next one.
    assert len(run.runs) < CALLERS
    assert sorted(item for batch in run.runs for item in batch) == sorted(i for c in calls for i in c)


def test_a_failing_caller_fails_alone_and_the_others_of_its_group_still_succeed() -> None:
    run = Recorder()
    calls = [[f"c{i}"] for i in range(CALLERS)]
    calls[5] = ["bad-5"]
    results = _call_all(GroupCommit(run), calls)
    for index, result in enumerate(results):
        if index == 5:
            assert isinstance(result, ValueError)
        else:
            assert result == [f"C{index}"]
    # Every good item was written exactly once with outcomes (a failed group writes nothing).
    succeeded = [batch for batch in run.runs if not any(i.startswith("bad") for i in batch)]
    assert sorted(i for batch in succeeded for i in batch) == sorted(
        f"c{i}" for i in range(CALLERS) if i != 5
    )


def test_a_lone_caller_gets_its_error() -> None:
    with pytest.raises(ValueError, match="bad item"):
        GroupCommit(Recorder())(["bad"])
