"""The hostile intake corpus (tests/corpus.py) over real HTTP against a real embedded server.

Each case must get its documented reason code (docs/reason-codes.md), leave the stores as they
were (no event but a kept `DataUpdateRejected`, no view row, no key, no blind index), echo none of
its values, and leave the server up and accepting good records. The leak check after the session
then finds none of the refused values in any file.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from consentry.core.errors import Reason, Rejected
from consentry.core.intake import IntakeParser
from consentry.core.settings import Settings
from tests.corpus import (
    DUPLICATE,
    Case,
    documented_reasons,
    new_ref,
    personal_values,
    record_cases,
    request_cases,
    valid,
)
from tests.e2e.api import DPO, PROBLEM_JSON, SHOP, send_accepted
from tests.e2e.conftest import Server
from tests.leaks import REGISTER
from tests.support import parser

MIN_CASES = 200
VIEW_TABLES = ("subjects", "profile_values", "consents", "accesses", "erasures")


@dataclass(frozen=True)
class Stores:
    """What the embedded server's files hold, as far as a refused record could change it."""

    events: tuple[tuple[str, int, str], ...]
    views: dict[str, list[tuple[object, ...]]]
    keystore: dict[str, int]


def _rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return db.execute(sql).fetchall()


def stores(data_dir: Path) -> Stores:
    events = _rows(
        data_dir / "events.db",
        "SELECT originator_id, originator_version, topic FROM stored_events ORDER BY rowid",
    )
    views = {t: sorted(_rows(data_dir / "views.db", _all(t)), key=repr) for t in VIEW_TABLES}
    keystore = data_dir / "keystore.db"
    tables = [r[0] for r in _rows(keystore, "SELECT name FROM sqlite_master WHERE type='table'")]
    counts = {t: len(_rows(keystore, _all(t))) for t in tables}
    return Stores(tuple(events), views, counts)


def _all(table: str) -> str:
    return f"SELECT * FROM {table}"  # noqa: S608 - our own table names, never input


def changes(before: Stores, after: Stores, kept: bool) -> list[str]:
    """What a refused record changed beyond what docs/reason-codes.md allows (empty if nothing)."""
    wrong: list[str] = []
    new = after.events[len(before.events) :]
    if after.events[: len(before.events)] != before.events:
        wrong.append("stored events changed")
    allowed = 1 if kept else 0
    known = {e[0] for e in before.events}
    if len(new) != allowed or any(
        not topic.endswith(".DataUpdateRejected") or subject not in known for subject, _, topic in new
    ):
        wrong.append(f"new events {[t for _, _, t in new]}")
    wrong += [f"view {t} changed" for t in VIEW_TABLES if before.views[t] != after.views[t]]
    if before.keystore != after.keystore:
        wrong.append(f"keystore {before.keystore} -> {after.keystore}")
    return wrong


@dataclass(frozen=True)
class Subjects:
    known: str
    erased: str


@pytest.fixture(scope="module")
def subjects(server: Server) -> Subjects:
    known, erased = new_ref(), new_ref()
    send_accepted(
        server,
        valid("consent.grant", known),
        valid("data.update", known),
        valid("consent.grant", erased),
        valid("data.update", erased),
        valid("erasure.request", erased),
    )
    return Subjects(known, erased)


def post(client: httpx.Client, records: list[Any]) -> httpx.Response:
    # json.dumps escapes lone surrogates as \\ud800, as a hostile producer would send them.
    body = json.dumps({"events": records}).encode()
    return client.post("/v1/events", content=body, headers={"Content-Type": "application/json"})


def _parse_texts(intake: IntakeParser, case: Case) -> Iterator[str]:
    """The exception text the parser gives for the case in this process (checked for values)."""
    try:
        intake.from_json(case.record)
    except Rejected as exc:
        yield str(exc)


def _outcome(case: Case, result: dict[str, Any]) -> str | None:
    """What is wrong with the answer to a one-record case (None if it is what the docs promise)."""
    if case.expect == DUPLICATE:
        return None if result["status"] == "duplicate" else f"answered {result}"
    if result["status"] != "rejected" or result.get("reason") != case.expect:
        return f"answered {result}"
    if ("event_id" in result) != case.kept:
        return f"kept a rejection event: {'event_id' in result}, expected {case.kept}"
    return None


def test_every_hostile_record_gets_its_reason_and_stores_nothing(
    server: Server, subjects: Subjects
) -> None:
    cases = record_cases(subjects.known, subjects.erased, shredded=True)
    assert len(cases) >= MIN_CASES, len(cases)
    failures: list[str] = []
    seen: set[str] = set()
    intake = parser()
    after = stores(server.data_dir)
    with server.client(SHOP) as shop:
        for case in cases:
            for record in case.prelude:
                answered = post(shop, [record]).json()["results"][0]
                assert answered["status"] == "accepted", (case.name, answered)
            before = stores(server.data_dir) if case.prelude else after
            answer = post(shop, [case.record])
            after = stores(server.data_dir)
            if answer.status_code != 200:
                failures.append(f"{case.name}: HTTP {answer.status_code} {answer.text[:200]}")
                continue
            result = answer.json()["results"][0]
            seen.add(str(result.get("reason") or result["status"]))
            wrong = _outcome(case, result)
            wrong_stores = changes(before, after, case.kept)
            echoed = [v for v in personal_values(case.record) if v in answer.text]
            for text in _parse_texts(intake, case):
                REGISTER.text(f"parser refusal of {case.name}", text)
                echoed += [v for v in personal_values(case.record) if v in text]
            failures += [f"{case.name}: {w}" for w in [wrong, *wrong_stores] if w]
            failures += [f"{case.name}: echoed a value" for _ in echoed[:1]]
    assert failures == [], "\n".join(failures)
    assert seen - {DUPLICATE} <= documented_reasons(), seen
    _still_up(server)


def test_hostile_requests_get_problem_details_with_their_reason(server: Server) -> None:
    settings = Settings()
    failures: list[str] = []
    for case in request_cases(settings.max_batch, settings.max_request_bytes):
        before = stores(server.data_dir)
        headers = dict(case.headers)
        if case.token is not None:
            headers.setdefault("Authorization", f"Bearer {case.token}")
        # An iterator body goes without Content-Length, in chunks, so the cap must count bytes.
        content = iter([case.body[i : i + 65536] for i in range(0, len(case.body), 65536)])
        body = content if case.chunked else case.body
        answer = httpx.post(f"{server.base}/v1/events", content=body, headers=headers, timeout=30)
        REGISTER.text(f"answer to {case.name}", answer.text)
        problem = answer.json() if answer.headers.get("content-type") == PROBLEM_JSON else {}
        if (answer.status_code, problem.get("reason")) != (case.status, case.reason.value):
            failures.append(f"{case.name}: {answer.status_code} {answer.text[:200]}")
        failures += [f"{case.name}: {w}" for w in changes(before, stores(server.data_dir), kept=False)]
    assert failures == [], "\n".join(failures)
    _still_up(server)


def test_a_batch_with_bad_records_answers_per_record_and_stores_only_the_good_ones(
    server: Server, subjects: Subjects
) -> None:
    fresh = new_ref()
    bad_update = valid("data.update", subjects.known) | {"fields": {"street": "canary-x"}}
    batch = [
        valid("consent.grant", fresh),
        valid("data.update", fresh) | {"occurred_at": "9999-01-01T00:00:00+00:00"},
        valid("data.update", fresh),
        {"type": "data.updated"},
        bad_update,
        valid("contact.report", fresh, purpose="astrology"),
    ]
    with server.client(SHOP) as shop:
        results = post(shop, batch).json()["results"]
    assert [(r["status"], r.get("reason")) for r in results] == [
        ("accepted", None),
        ("rejected", Reason.INVALID_VALUE),
        ("accepted", None),
        ("rejected", Reason.UNKNOWN_EVENT_TYPE),
        ("rejected", Reason.FIELD_NOT_ALLOWED),
        ("rejected", Reason.UNKNOWN_PURPOSE),
    ]
    with server.client(DPO) as dpo:
        events = dpo.get(f"/v1/subjects/{results[0]['subject_id']}/timeline").json()["events"]
    assert [e["type"] for e in events] == ["ReferenceLinked", "ConsentGranted", "DataUpdated"]


def test_every_reason_code_is_documented() -> None:
    assert {r.value for r in Reason} == documented_reasons()


def _still_up(server: Server) -> None:
    """The process answers, still accepts a good record, and its metrics leak nothing."""
    assert server.process.poll() is None, "the server died"
    assert httpx.get(f"{server.base}/healthz", timeout=5).status_code == 200
    send_accepted(server, valid("consent.grant", new_ref()))
    metrics = httpx.get(f"{server.base}/metrics", timeout=5)
    assert metrics.status_code == 200
    REGISTER.text("/metrics of the embedded server", metrics.text)
