"""Group commit: concurrent callers (threads or coroutines) share a run, yet each gets exactly its
own outcomes or error."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from consentry.ledger.group import AsyncGroupCommit, GroupCommit

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


BAD = 5


def _calls_with_a_bad_one() -> list[list[str]]:
    calls = [[f"c{i}"] for i in range(CALLERS)]
    calls[BAD] = [f"bad-{BAD}"]
    return calls


def _only_the_bad_caller_failed(results: Sequence[object], run: Recorder) -> None:
    for index, result in enumerate(results):
        if index == BAD:
            assert isinstance(result, ValueError)
        else:
            assert result == [f"C{index}"]
    # Every good item was written exactly once with outcomes (a failed group writes nothing).
    succeeded = [batch for batch in run.runs if not any(i.startswith("bad") for i in batch)]
    assert sorted(i for batch in succeeded for i in batch) == sorted(
        f"c{i}" for i in range(CALLERS) if i != BAD
    )


def test_a_failing_caller_fails_alone_and_the_others_of_its_group_still_succeed() -> None:
    run = Recorder()
    _only_the_bad_caller_failed(_call_all(GroupCommit(run), _calls_with_a_bad_one()), run)


def test_a_lone_caller_gets_its_error() -> None:
    with pytest.raises(ValueError, match="bad item"):
        GroupCommit(Recorder())(["bad"])


# -- the same rules for coroutines on one event loop ---------------------------------------------


async def _await_all(group: AsyncGroupCommit[str, str], calls: list[list[str]]) -> list[object]:
    return list(await asyncio.gather(*(group(call) for call in calls), return_exceptions=True))


async def test_awaiting_callers_share_runs_in_one_thread_and_each_gets_its_own_outcomes() -> None:
    run = Recorder()
    calls = [[f"c{i}-a", f"c{i}-b"] for i in range(CALLERS)]
    threads: set[str] = set()

    def traced(items: Sequence[str]) -> list[str]:
        threads.add(threading.current_thread().name)
        return run(items)

    results = await _await_all(AsyncGroupCommit(traced), calls)
    assert results == [[item.upper() for item in call] for call in calls]
    assert len(run.runs) < CALLERS
    assert sorted(item for batch in run.runs for item in batch) == sorted(i for c in calls for i in c)
    # The runs happened off the event loop's thread.
    assert threading.current_thread().name not in threads


async def test_an_awaiting_caller_that_fails_fails_alone() -> None:
    run = Recorder()
    results = await _await_all(AsyncGroupCommit(run), _calls_with_a_bad_one())
    _only_the_bad_caller_failed(results, run)


async def test_a_cancelled_caller_stops_waiting_and_its_commands_are_still_written() -> None:
    run = Recorder()
    group: AsyncGroupCommit[str, str] = AsyncGroupCommit(run)
    first = asyncio.ensure_future(group(["first"]))
    await asyncio.sleep(0)  # the first group is being written
    gone = asyncio.ensure_future(group(["gone"]))
    await asyncio.sleep(0)
    gone.cancel()
    assert await first == ["FIRST"]
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert await group(["later"]) == ["LATER"]
    assert [i for batch in run.runs for i in batch] == ["first", "gone", "later"]


class FailingLater(ThreadPoolExecutor):
    """An executor whose hand-offs fail after a while (as when it is shut down under load)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        timer = threading.Timer(0.05, future.set_exception, (RuntimeError("executor shut down"),))
        timer.start()
        return future


async def test_when_a_hand_off_fails_every_awaiting_caller_hears_of_it_none_waits_forever() -> None:
    run = Recorder()
    group: AsyncGroupCommit[str, str] = AsyncGroupCommit(run)
    asyncio.get_running_loop().set_default_executor(FailingLater())
    first = asyncio.ensure_future(group(["first"]))
    await asyncio.sleep(0)  # the first hand-off is under way
    later = [asyncio.ensure_future(group([f"later-{i}"])) for i in range(3)]
    results = await asyncio.wait_for(asyncio.gather(first, *later, return_exceptions=True), timeout=5)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert run.runs == []


async def test_a_writer_cancelled_before_it_ran_strands_nobody_and_the_next_caller_is_served() -> None:
    run = Recorder()
    group: AsyncGroupCommit[str, str] = AsyncGroupCommit(run)
    first = asyncio.ensure_future(group(["first"]))
    await asyncio.sleep(0)  # queued, and its writer task created but not yet run
    writer = group._writer
    assert writer is not None
    writer.cancel()
    with pytest.raises(RuntimeError, match="interrupted"):
        await asyncio.wait_for(first, timeout=5)
    assert await asyncio.wait_for(group(["next"]), timeout=5) == ["NEXT"]
    assert run.runs == [["next"]]


# -- groups written on the loop itself (`now`) ---------------------------------------------------


class Now:
    """A `now` that writes on the loop's thread, declines (None), or fails, as told."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.calls: list[list[str]] = []

    def __call__(self, items: Sequence[str]) -> list[str] | None:
        self.calls.append(list(items))
        if self.answer == "decline":
            return None
        if self.answer == "fail":
            raise OSError("disk I/O error")
        return [item.lower() for item in items]


async def _with_now(answer: str, calls: list[list[str]]) -> tuple[list[object], Recorder, Now, int]:
    """The calls' results through a group with that `now`, its runs, and the executor's hand-offs."""
    run, now = Recorder(), Now(answer)
    executor = Counting()
    asyncio.get_running_loop().set_default_executor(executor)
    results = await _await_all(AsyncGroupCommit(run, now), calls)
    return results, run, now, executor.handoffs


async def test_a_group_now_can_write_is_written_on_the_loop_with_no_hand_off() -> None:
    calls = [[f"c{i}-A"] for i in range(CALLERS)]
    results, run, now, handoffs = await _with_now("write", calls)
    assert results == [[item.lower() for item in call] for call in calls]
    assert run.runs == [] and handoffs == 0
    # Callers that arrived together still went in one group.
    assert len(now.calls) < CALLERS


@pytest.mark.parametrize("answer", ["decline", "fail"])
async def test_a_group_now_declines_or_fails_goes_to_the_executor_whole(answer: str) -> None:
    calls = [[f"c{i}-a"] for i in range(CALLERS)]
    results, run, now, handoffs = await _with_now(answer, calls)
    assert results == [[item.upper() for item in call] for call in calls]
    # Each group `now` turned down was run once by the executor, the same items in the same order.
    assert run.runs == now.calls
    assert handoffs == len(now.calls)


class Counting(ThreadPoolExecutor):
    """A default executor that counts its hand-offs."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.handoffs = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.handoffs += 1
        return super().submit(fn, *args, **kwargs)


async def _groups_after(first: list[list[str]]) -> list[list[str]]:
    """The groups written on the loop: `first` (callers arriving together), then a caller, and one
    more whose request the loop starts a pass after the first's (as it starts requests it read
    together with that one)."""
    now = Now("write")
    group: AsyncGroupCommit[str, str] = AsyncGroupCommit(Recorder(), now)
    await _await_all(group, first)
    early = asyncio.ensure_future(group(["early"]))
    await asyncio.sleep(0)  # the early caller is queued and its writer created
    late = asyncio.ensure_future(group(["late"]))
    assert await early == ["early"] and await late == ["late"]
    return now.calls


async def test_after_a_group_of_several_the_next_waits_a_pass_so_callers_starting_then_join() -> None:
    assert await _groups_after([["a"], ["b"]]) == [["a", "b"], ["early", "late"]]


async def test_after_a_lone_caller_the_next_group_is_written_at_once() -> None:
    assert await _groups_after([["a"]]) == [["a"], ["early"], ["late"]]


async def test_a_writer_cancelled_while_it_waits_its_pass_strands_nobody_and_writes_nothing() -> None:
    now = Now("write")
    group: AsyncGroupCommit[str, str] = AsyncGroupCommit(Recorder(), now)
    await _await_all(group, [["a"], ["b"]])  # a group of two: the next writer waits a pass
    waiting = asyncio.ensure_future(group(["waiting"]))
    await asyncio.sleep(0)  # queued, and its writer created
    await asyncio.sleep(0)  # the writer has started its pass
    writer = group._writer
    assert writer is not None and not writer.done()
    writer.cancel()
    with pytest.raises(RuntimeError, match="interrupted"):
        await asyncio.wait_for(waiting, timeout=5)
    assert now.calls == [["a", "b"]]
    assert await asyncio.wait_for(group(["next"]), timeout=5) == ["next"]
    assert now.calls == [["a", "b"], ["next"]]
