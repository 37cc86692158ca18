"""Profile reads the event loop makes itself: grouped access events, the same answers, the same order.

The real embedded platform (SQLite files) and its app, called in process over ASGI: reads that
arrive together are admitted on the loop, append their access events in shared transactions
(written on the loop while nothing can make it wait, else in one thread hand-off per group), and
open the values only once those are durable. Whatever the loop cannot do without waiting goes to a
thread as before, and answers the same.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from consentry.core import events as ev
from consentry.core.sealing import CONSENT_SCOPE
from consentry.core.settings import load_settings
from consentry.ledger.commands import DenyAccess, RecordAccess, RequestErasure, StaffCommand
from consentry.ledger.mapper import SealingMapper
from consentry.ledger.subject import Outcome
from consentry.platform import Platform, create_app
from tests.support import EXAMPLE_POLICY, canary, record, submit

SUPPORT = {"Authorization": "Bearer demo-support-token"}
READERS = 16


class CountingExecutor(ThreadPoolExecutor):
    """The loop's default executor, counting its hand-offs."""

    def __init__(self) -> None:
        super().__init__(max_workers=4)
        self.handoffs = 0
        self._count = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._count:
            self.handoffs += 1
        return super().submit(fn, *args, **kwargs)


def _subjects(platform: Platform, count: int) -> dict[str, str]:
    """Subjects with a support email each (subject id -> email), projected into the views."""
    emails = {}
    for _ in range(count):
        ref, email = "shop:" + canary("ref"), canary("mail") + "@example.com"
        grant, update = submit(
            platform.ledger,
            record("consent.grant", ref, purpose="support"),
            record("data.update", ref, purpose="support", fields={"email": email}),
        )
        assert update.status == "accepted" and grant.subject_id is not None
        emails[str(grant.subject_id)] = email
    platform.runner.refresh()
    return emails


async def _read_all(app: FastAPI, subjects: Sequence[str]) -> tuple[list[httpx.Response], int]:
    executor = CountingExecutor()
    asyncio.get_running_loop().set_default_executor(executor)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=SUPPORT) as http:
        answers = await asyncio.gather(
            *(http.get(f"/v1/subjects/{s}/profile", params={"purpose": "support"}) for s in subjects)
        )
    return list(answers), executor.handoffs


def _accessed(platform: Platform, subject: str) -> list[str]:
    return [
        str(e.meta.event_id)
        for e in platform.ledger.history(uuid.UUID(subject))
        if isinstance(e, ev.DataAccessed)
    ]


def _count_appends(platform: Platform) -> list[int]:
    """Wraps the event store's insert (eventsourcing's recorder) to count its transactions."""
    recorder = platform.ledger.recorder
    appended: list[int] = []
    insert = recorder.insert_events

    def counted(*args: Any, **kwargs: Any) -> Any:
        appended.append(len(args[0]))
        return insert(*args, **kwargs)

    recorder.insert_events = counted  # type: ignore[method-assign]
    return appended


def test_reads_at_once_share_access_transactions_and_each_answers_with_its_own_durable_event(
    platform: Platform,
) -> None:
    emails = _subjects(platform, READERS)
    app = create_app(platform)
    subjects = list(emails)
    # Once: the states are remembered and the keys cached from the ingest above.
    appended = _count_appends(platform)
    answers, handoffs = asyncio.run(_read_all(app, subjects))
    assert [a.status_code for a in answers] == [200] * READERS
    for subject, answer in zip(subjects, answers, strict=True):
        body = answer.json()
        assert body["fields"] == {"email": emails[subject]}
        # Its access event is in the ledger, the subject's only one.
        assert _accessed(platform, subject) == [body["access_event_id"]]
    # Grouped: fewer transactions than reads, written on the loop with no thread hand-off at all.
    assert sum(appended) == READERS
    assert len(appended) < READERS
    assert handoffs == 0


def test_a_read_the_loop_cannot_finish_alone_goes_to_a_thread_and_answers_the_same(
    tmp_path: Path,
) -> None:
    settings = load_settings(data_dir=tmp_path / "data", policy=EXAMPLE_POLICY)
    first = Platform.open(settings)
    try:
        emails = _subjects(first, 4)
    finally:
        first.close()
    # Reopened: no state remembered, no key cached. Each read folds, reads keys, in a thread.
    platform = Platform.open(settings)
    try:
        subjects = list(emails)
        answers, handoffs = asyncio.run(_read_all(create_app(platform), subjects))
        assert [a.json()["fields"] for a in answers] == [{"email": emails[s]} for s in subjects]
        assert handoffs >= len(subjects)
        # The states are remembered now: the same reads stay on the loop (one hand-off a group).
        answers, handoffs = asyncio.run(_read_all(create_app(platform), subjects))
        assert [a.json()["fields"] for a in answers] == [{"email": emails[s]} for s in subjects]
        assert handoffs < len(subjects)
        for subject in subjects:
            assert len(_accessed(platform, subject)) == 2
    finally:
        platform.close()


def _watch_opened(platform: Platform) -> list[str]:
    """The ids of the cached keys the loop asks for from now on (to open values), in order."""
    opened: list[str] = []
    open_cached = platform.keystore.cached

    def watched(key_id: str) -> Any:
        opened.append(key_id)
        return open_cached(key_id)

    platform.keystore.cached = watched  # type: ignore[method-assign]
    return opened


def _refused_opening_nothing(
    platform: Platform, app: FastAPI, subject: str, status: int, problem: str
) -> None:
    """Reads the subject once: refused with that status and problem, no key asked for to open a
    value, no access event recorded."""
    opened = _watch_opened(platform)
    answers, _ = asyncio.run(_read_all(app, [subject]))
    assert answers[0].status_code == status
    assert answers[0].json()["type"].endswith(problem)
    assert opened == []
    assert _accessed(platform, subject) == []


def test_an_erasure_between_admission_and_the_access_event_answers_410_and_opens_nothing(
    platform: Platform,
) -> None:
    subject = next(iter(_subjects(platform, 1)))
    app = create_app(platform)
    ledger = platform.ledger
    execute_async = ledger.execute_async

    async def erased_first(commands: Sequence[StaffCommand]) -> list[Outcome]:
        # The read was admitted on the loop; the erasure is decided before its access event.
        (erasure,) = ledger.execute([RequestErasure(commands[0].subject_id, DPO_ACTOR)])
        assert erasure.status == "accepted"
        return await execute_async(commands)

    ledger.execute_async = erased_first  # type: ignore[method-assign]
    _refused_opening_nothing(platform, app, subject, 410, "subject-erased")


DPO_ACTOR = ev.Actor("dana-dpo", "dsr")


def test_event_loops_in_two_threads_each_group_their_own_reads_on_one_ledger(
    platform: Platform,
) -> None:
    emails = _subjects(platform, 8)
    app = create_app(platform)
    subjects = list(emails)
    halves = [subjects[:4], subjects[4:]]
    answers: list[list[httpx.Response]] = [[], []]

    def reads(index: int) -> None:
        answers[index] = asyncio.run(_read_all(app, halves[index]))[0]

    threads = [threading.Thread(target=reads, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads), "a loop's reads hung"
    for half, got in zip(halves, answers, strict=True):
        assert [a.json()["fields"] for a in got] == [{"email": emails[s]} for s in half]


def _slowed_inserts(platform: Platform, wait: Callable[[], None]) -> None:
    """Makes every event store insert call `wait` first (in whichever thread inserts)."""
    recorder = platform.ledger.recorder
    insert = recorder.insert_events

    def slowed(*args: Any, **kwargs: Any) -> Any:
        wait()
        return insert(*args, **kwargs)

    recorder.insert_events = slowed  # type: ignore[method-assign]


def test_reads_while_another_thread_writes_hand_their_group_to_a_thread_and_answer_the_same(
    platform: Platform,
) -> None:
    emails = _subjects(platform, 5)
    subjects = list(emails)
    other, readers = subjects[0], subjects[1:]
    app = create_app(platform)
    inside, release = threading.Event(), threading.Event()

    def held() -> None:
        if threading.current_thread().name == "other-writer":
            inside.set()
            release.wait(10)

    _slowed_inserts(platform, held)
    # Another thread is inside the ledger's write (holding its lock) while the reads come in.
    writer = threading.Thread(
        target=platform.ledger.execute,
        args=([DenyAccess(uuid.UUID(other), DPO_ACTOR, "support", "no_consent", "profile")],),
        name="other-writer",
    )
    writer.start()
    assert inside.wait(10)

    async def reads() -> tuple[list[httpx.Response], int]:
        asyncio.get_running_loop().call_later(0.2, release.set)
        return await _read_all(app, readers)

    answers, handoffs = asyncio.run(reads())
    writer.join(timeout=10)
    assert [a.json()["fields"] for a in answers] == [{"email": emails[s]} for s in readers]
    # The loop did not wait for the lock: its group went to a thread, which waited instead.
    assert handoffs >= 1
    for subject, answer in zip(readers, answers, strict=True):
        assert _accessed(platform, subject) == [answer.json()["access_event_id"]]


def test_when_writes_on_the_loop_turn_slow_the_groups_go_to_a_thread_for_a_while(
    platform: Platform,
) -> None:
    emails = _subjects(platform, 12)
    app = create_app(platform)
    # An fsync of 20 ms on every write: the loop's average goes over the limit within a few groups.
    _slowed_inserts(platform, lambda: time.sleep(0.02))

    async def one_at_a_time() -> tuple[list[httpx.Response], int]:
        answers, handoffs = [], 0
        for subject in emails:
            got, moved = await _read_all(app, [subject])
            answers += got
            handoffs += moved
        return answers, handoffs

    answers, handoffs = asyncio.run(one_at_a_time())
    assert [a.json()["fields"] for a in answers] == [{"email": e} for e in emails.values()]
    # The first few groups were written on the loop, then the rest (paused) in a thread.
    assert 0 < handoffs < len(emails)


class KeyedMapper(SealingMapper):
    """A mapper by which every event needs a key (as a sealed value would)."""

    def key_scopes(self, event: ev.LedgerEvent) -> set[str]:
        return {CONSENT_SCOPE}


def test_a_group_whose_events_need_a_key_is_never_written_on_the_loop(platform: Platform) -> None:
    emails = _subjects(platform, 4)
    app = create_app(platform)
    platform.ledger.mapper = KeyedMapper(platform.ledger.codec, platform.keystore)
    appended = _count_appends(platform)
    answers, handoffs = asyncio.run(_read_all(app, list(emails)))
    assert [a.status_code for a in answers] == [200] * len(emails)
    # The keystore may be busy: every group went to a thread.
    assert handoffs == len(appended) >= 1


@pytest.mark.parametrize("on_the_loop", [True, False])
def test_a_withdrawal_between_admission_and_the_access_event_answers_403_and_opens_nothing(
    platform: Platform, on_the_loop: bool
) -> None:
    ref = "shop:" + canary("ref")
    grant, _ = submit(
        platform.ledger,
        record("consent.grant", ref, purpose="support"),
        record("data.update", ref, purpose="support", fields={"email": canary("m") + "@example.com"}),
    )
    platform.runner.refresh()
    subject = str(grant.subject_id)
    app = create_app(platform)
    ledger = platform.ledger

    def withdraw() -> None:
        # The read was admitted; the withdrawal is decided before its access event. (Its key is
        # still there: the shredder has not followed yet.)
        (withdrawn,) = submit(ledger, record("consent.withdrawal", ref, purpose="support"))
        assert withdrawn.status == "accepted"

    if on_the_loop:
        execute_async = ledger.execute_async

        async def withdrawn_first(commands: Sequence[StaffCommand]) -> list[Outcome]:
            withdraw()
            return await execute_async(commands)

        ledger.execute_async = withdrawn_first  # type: ignore[method-assign]
    else:
        platform.views.reads_inline = False  # the whole read in a thread
        execute = ledger.execute

        def withdrawn_then(commands: Sequence[StaffCommand]) -> list[Outcome]:
            withdraw()
            return execute(commands)

        ledger.execute = withdrawn_then  # type: ignore[method-assign]
    _refused_opening_nothing(platform, app, subject, 403, "no-consent")
    denied = [e for e in ledger.history(uuid.UUID(subject)) if isinstance(e, ev.AccessDenied)]
    assert [(d.purpose, d.reason) for d in denied] == [("support", "no_consent")]


def _now_writes(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, slow: Callable[[Platform], object], name: str
) -> list[bool]:
    """Whether each of 30 access groups was written on the loop's thread, with `slow(platform)`'s
    method `name` taking 5 ms more."""
    subject = uuid.UUID(next(iter(_subjects(platform, 1))))
    owner = slow(platform)
    method = getattr(owner, name)

    def sleepy(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.005)
        return method(*args, **kwargs)

    monkeypatch.setattr(owner, name, sleepy)
    actor = ev.Actor("agent-1", "support_agent")
    access = [RecordAccess(subject, actor, "support", ("email",), "profile")]
    return [platform.ledger._execute_now(access) is not None for _ in range(30)]


def test_groups_whose_commits_turn_slow_go_to_the_executor_for_a_while(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = _now_writes(platform, monkeypatch, lambda p: p.ledger.recorder, "insert_events")
    assert written[0] and not written[-1]  # paused after a few slow commits, and still paused


def test_groups_slow_only_to_decide_are_still_written_on_the_loop(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A large group takes longer to decide and seal; only the disk's part may send it away.
    assert all(_now_writes(platform, monkeypatch, lambda p: p.ledger, "_decide_staff"))
