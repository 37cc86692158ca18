"""An erasure racing data updates and profile reads of the same subject, over real HTTP with threads.

Per round, writer threads keep POSTing `data.update` records (fresh canary values each time) and reader
threads keep reading the support profile while the DPO erases the subject at some moment. Each worker
stops once it has finished a few requests that it started after the erasure had answered. The rounds
erase at different moments so the interleavings vary. Whatever the interleaving, the DPO's timeline,
the answers and the stored bytes must agree: nothing is accepted or disclosed after the erasure
request, every disclosure was recorded before it, and no value sent in the round is left in any file.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import pytest

from tests.e2e.api import DPO, PROBLEM_JSON, SHOP, SUPPORT, problem, send_accepted, timeline
from tests.e2e.conftest import Server
from tests.support import canary, fake_email, record, scan

WRITERS = 3
READERS = 3
AFTER_ERASURE = 3
"""Requests each worker completes that it started after the erasure had answered."""
ERASE_AFTER = (0.0, 0.1, 0.25, 0.4, 0.6)
"""Seconds the workers run before the DPO erases, one round each (plus up to 50 ms of jitter)."""
FIELDS = ("email", "first_name")
REJECTED_REASONS = {"subject_erased", "no_consent", "conflict"}

T = TypeVar("T")


@dataclass(frozen=True)
class Write:
    """One data update sent by a writer and how the API answered it."""

    values: dict[str, str]
    http_status: int
    result: dict[str, Any]
    after_erasure: bool


@dataclass(frozen=True)
class Read:
    """One support profile read and its answer."""

    http_status: int
    content_type: str
    body: dict[str, Any]
    after_erasure: bool


@dataclass(frozen=True)
class Round:
    """Everything one race sent and got back."""

    ref_value: str
    subject: str
    seed: dict[str, str]
    writes: list[Write]
    reads: list[Read]
    erasure: httpx.Response

    @property
    def ref(self) -> str:
        return f"shop:{self.ref_value}"

    def sent_values(self) -> set[str]:
        """Every personal value sent for the subject in this round, accepted or not."""
        return {*self.seed.values(), *(v for w in self.writes for v in w.values.values())}


def _fresh_values() -> dict[str, str]:
    return {"email": fake_email(), "first_name": canary("name")}


def _body(answer: httpx.Response) -> dict[str, Any]:
    if "json" in answer.headers.get("content-type", ""):
        body: dict[str, Any] = answer.json()
        return body
    return {"text": answer.text}


def _until_erased_and_after(action: Callable[[bool], T], erased: threading.Event) -> list[T]:
    """Repeats action(started_after_erasure) until AFTER_ERASURE calls started after `erased` was set."""
    done: list[T] = []
    after = 0
    while after < AFTER_ERASURE:
        started_after = erased.is_set()
        done.append(action(started_after))
        after += started_after
    return done


def _writer(server: Server, ref: str, erased: threading.Event) -> list[Write]:
    with server.client(SHOP) as shop:

        def update(after: bool) -> Write:
            values = _fresh_values()
            sent = record("data.update", ref, purpose="support", fields=values)
            answer = shop.post("/v1/events", json={"events": [sent]})
            body = _body(answer)
            result = body["results"][0] if answer.status_code == 200 else body
            return Write(values, answer.status_code, result, after)

        return _until_erased_and_after(update, erased)


def _reader(server: Server, subject: str, erased: threading.Event) -> list[Read]:
    with server.client(SUPPORT) as support:

        def read(after: bool) -> Read:
            answer = support.get(f"/v1/subjects/{subject}/profile", params={"purpose": "support"})
            return Read(answer.status_code, answer.headers.get("content-type", ""), _body(answer), after)

        return _until_erased_and_after(read, erased)


def _race(server: Server, erase_after: float) -> Round:
    """Seeds a subject, runs writers and readers, erases after the delay; what everyone got back."""
    ref_value, seed = canary("ref"), _fresh_values()
    ref = f"shop:{ref_value}"
    results = send_accepted(
        server,
        record("consent.grant", ref, purpose="support"),
        record("data.update", ref, purpose="support", fields=seed),
    )
    subject = results[0]["subject_id"]
    erased = threading.Event()
    with ThreadPoolExecutor(WRITERS + READERS) as pool:
        writers = [pool.submit(_writer, server, ref, erased) for _ in range(WRITERS)]
        readers = [pool.submit(_reader, server, subject, erased) for _ in range(READERS)]
        try:
            time.sleep(erase_after + random.uniform(0, 0.05))
            with server.client(DPO) as dpo:
                erasure = dpo.post(f"/v1/subjects/{subject}/erasure")
        finally:
            erased.set()
        writes = [w for f in writers for w in f.result()]
        reads = [r for f in readers for r in f.result()]
    return Round(ref_value, subject, seed, writes, reads, erasure)


# -- checks ----------------------------------------------------------------------------------------


def _erasure_sequence(events: list[dict[str, Any]]) -> int:
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1)), "timeline not in order"
    requests = [e for e in events if e["type"] == "ErasureRequested"]
    assert len(requests) == 1, requests
    assert requests[0]["actor"] == {"actor_id": "dana-dpo", "role": "dsr"}
    cut: int = requests[0]["sequence"]
    late = [e for e in events if e["type"] == "DataUpdated" and e["sequence"] > cut]
    assert late == [], f"data updated after the erasure request (#{cut}): {late}"
    return cut


def _check_writes(race: Round, events: list[dict[str, Any]], cut: int) -> dict[str, int]:
    """Checks every write's answer against the timeline; the sequence of each accepted value."""
    by_id = {e["event_id"]: e for e in events}
    failed = [w for w in race.writes if w.http_status != 200]
    assert failed == [], f"{len(failed)} intake requests failed, first: {failed[0]}"
    accepted = [w for w in race.writes if w.result["status"] == "accepted"]
    for write in accepted:
        event = by_id.get(write.result["event_id"])
        assert event is not None and event["type"] == "DataUpdated", (write, event)
        assert write.result["subject_id"] == race.subject
        assert not write.after_erasure, (
            f"an update sent after the erasure answered was accepted: {write}"
        )
    for write in (w for w in race.writes if w.result["status"] != "accepted"):
        _check_refused_write(write, by_id, cut)
    seed_update = next(e for e in events if e["type"] == "DataUpdated")
    answered = {w.result["event_id"] for w in accepted} | {seed_update["event_id"]}
    in_timeline = {e["event_id"] for e in events if e["type"] == "DataUpdated"}
    assert in_timeline == answered, "the timeline holds updates nobody was told were accepted"
    sequence_of = dict.fromkeys(race.seed.values(), seed_update["sequence"])
    for write in accepted:
        sequence_of |= dict.fromkeys(write.values.values(), by_id[write.result["event_id"]]["sequence"])
    return sequence_of


def _check_refused_write(write: Write, by_id: dict[str, dict[str, Any]], cut: int) -> None:
    result = write.result
    assert result["status"] == "rejected", write
    assert result["reason"] in REJECTED_REASONS, write
    event = by_id.get(result.get("event_id", ""))
    if result["reason"] == "subject_erased" and event is not None:
        # A refused update of a known subject is kept as DataUpdateRejected (names, never values).
        assert event["type"] == "DataUpdateRejected", (write, event)
        assert event["reason"] == "subject_erased" and event["sequence"] > cut, (write, event)
        assert event["field_names"] == sorted(FIELDS)
    elif result["reason"] == "no_consent":
        # Once shredded, the reference is unlinked: the update names an unknown reference.
        assert "subject_id" not in result and event is None, write
    else:
        assert event is None, (write, event)


def _check_reads(
    race: Round, events: list[dict[str, Any]], cut: int, sequence_of: dict[str, int]
) -> None:
    by_id = {e["event_id"]: e for e in events}
    refused_values = race.sent_values() - set(sequence_of)
    for read in race.reads:
        if read.http_status != 200:
            assert read.http_status == 410, read
            assert read.content_type == PROBLEM_JSON, read
            assert read.body["type"].endswith("/subject-erased"), read
            continue
        assert not read.after_erasure, f"a read sent after the erasure answered got data: {read}"
        access = by_id.get(read.body["access_event_id"])
        assert access is not None and access["type"] == "DataAccessed", (read, access)
        assert access["sequence"] < cut, f"disclosure #{access['sequence']} after the erasure #{cut}"
        assert access["purpose"] == "support"
        assert access["actor"] == {"actor_id": "alice-support", "role": "support_agent"}
        assert access["field_names"] == sorted(read.body["fields"]), (read, access)
        for name, value in read.body["fields"].items():
            # A read whose keys went after its access event answers 410, never a field of nulls.
            assert value is not None, f"a 200 read with an unreadable field: {read}"
            assert value not in refused_values, f"a refused update's value was disclosed: {read}"
            assert value in sequence_of and value.startswith(_prefix(name)), read
            assert sequence_of[value] < access["sequence"], "a read disclosed a later update's value"


def _prefix(field_name: str) -> str:
    return "user-" if field_name == "email" else "canary-name-"


def _check_erased_everywhere(server: Server, race: Round) -> None:
    assert race.erasure.status_code == 202, race.erasure.text
    assert race.erasure.json()["status"] == "erased"
    with server.client(SUPPORT) as support, server.client(DPO) as dpo:
        profile = support.get(f"/v1/subjects/{race.subject}/profile", params={"purpose": "support"})
        problem(profile, 410)
        export = dpo.get(f"/v1/subjects/{race.subject}/export").json()
        contact = support.get(
            f"/v1/subjects/{race.subject}/contact-check", params={"purpose": "support"}
        ).json()
        lookup = support.get("/v1/subjects", params={"ref": race.ref})
    assert export["erased"] is True and export["data"] == {} and export["references"] == [], export
    assert contact == {"allowed": False, "reason": "subject_erased"}
    problem(lookup, 404)
    found = scan(server.data_dir, [race.ref_value, *race.sent_values()])
    assert found == {}, f"values of the erased subject are stored in the clear: {found}"


def _check_the_race_happened(race: Round) -> None:
    """Each worker did requests after the erasure; their answers are the refusals."""
    late_writes = [w for w in race.writes if w.after_erasure]
    late_reads = [r for r in race.reads if r.after_erasure]
    assert len(late_writes) == WRITERS * AFTER_ERASURE
    assert len(late_reads) == READERS * AFTER_ERASURE
    assert all(w.result.get("status") == "rejected" for w in late_writes)
    assert all(r.http_status == 410 for r in late_reads)


@pytest.mark.parametrize("erase_after", ERASE_AFTER, ids=[f"erase-after-{d}s" for d in ERASE_AFTER])
def test_an_erasure_racing_updates_and_reads_leaves_nothing_readable_after_it(
    server: Server, erase_after: float
) -> None:
    race = _race(server, erase_after)
    _check_erased_everywhere(server, race)
    events = timeline(server, race.subject)
    cut = _erasure_sequence(events)
    sequence_of = _check_writes(race, events, cut)
    _check_reads(race, events, cut, sequence_of)
    _check_the_race_happened(race)
