"""Schemathesis against `/openapi.json` of a real embedded server, with every kind of token.

Every operation of the published schema gets generated requests (derandomized: the same ones in every
run), each sent once per token kind of the example policy, with no token and with a forged one. Path
subject ids are drawn from seeded subjects (one sacrificed to erasure) and purposes from the policy
as often as generated. Checks:

- no 5xx (schemathesis `not_a_server_error`) and answers that conform to the schema;
- no answer holds a canary of a subject other than the one in its path, and no refusal holds any;
- every 2xx profile read names a `DataAccessed` event the timeline has, and every 2xx export that
  disclosed data is preceded by `DataAccessed` events for each purpose it disclosed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.corpus import valid
from tests.e2e.api import DPO, MARKETING, SHOP, SUPPORT, send_accepted, subject_of, timeline
from tests.e2e.conftest import Server
from tests.leaks import REGISTER
from tests.support import canary, fake_email

TOKENS: Final = {
    "shop": SHOP,
    "support": SUPPORT,
    "marketing": MARKETING,
    "dpo": DPO,
    "none": None,
    "forged": "forged-token-0f3c",
}
EXAMPLES: Final = 10
PURPOSES: Final = ("support", "marketing", "billing")
CHECKS: Final = [not_a_server_error, response_schema_conformance]


@dataclass
class Seeded:
    """Subjects with canary data in every purpose, by id; the victim is the one erasure may take."""

    canaries: dict[str, set[str]]
    victim: str

    def ids(self) -> list[str]:
        return sorted(self.canaries)


def _seed(server: Server) -> tuple[str, set[str]]:
    ref = f"shop:{canary('ref')}"
    values = {"email": fake_email(), "first_name": canary("name"), "last_name": canary("last")}
    records = [
        valid("consent.grant", ref, purpose="support") | {"evidence": canary("evidence")},
        valid("consent.grant", ref, purpose="marketing"),
        valid("data.update", ref, purpose="support") | {"fields": values},
        valid("data.update", ref, purpose="marketing") | {"fields": {"email": fake_email()}},
        valid("data.update", ref, purpose="billing") | {"fields": {"city": canary("city")}},
    ]
    send_accepted(server, *records)
    found = {ref.removeprefix("shop:")}
    for record in records:
        found |= {str(v) for k, v in record.items() if k == "evidence"}
        found |= {str(v) for v in record.get("fields", {}).values()}
    return subject_of(server, ref), found


@pytest.fixture(scope="module")
def seeded(server: Server) -> Seeded:
    subjects = dict(_seed(server) for _ in range(3))
    return Seeded(subjects, sorted(subjects)[0])


class AccessLog:
    """What the timelines say was accessed, so each disclosure can be matched to its event."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self._seen: dict[str, set[str]] = {}

    def new_accesses(self, subject: str) -> list[dict[str, Any]]:
        events = [e for e in timeline(self._server, subject) if e["type"] == "DataAccessed"]
        seen = self._seen.setdefault(subject, set())
        fresh = [e for e in events if e["event_id"] not in seen]
        seen |= {e["event_id"] for e in fresh}
        return fresh


def _problems(
    seeded: Seeded, log: AccessLog, op: str, subject: str | None, answer: httpx.Response
) -> list[str]:
    """What is wrong with one answer beyond the schema checks."""
    allowed = seeded.canaries.get(subject or "", set()) if answer.status_code < 300 else set()
    wrong = [
        f"{op} answered {answer.status_code} with a canary of another subject"
        for values in seeded.canaries.values()
        for value in values - allowed
        if value in answer.text
    ][:1]
    if answer.status_code >= 400:
        REGISTER.text(f"{answer.status_code} answer to {op}", answer.text)
    if answer.status_code != 200 or subject is None:
        return wrong
    body = answer.json()
    if op.endswith("/profile"):
        events = {e["event_id"]: e for e in log.new_accesses(subject)}
        event = events.get(body["access_event_id"])
        if event is None or sorted(event["field_names"]) != sorted(body["fields"]):
            wrong.append(f"{op}: no DataAccessed event {body['access_event_id']} for its fields")
    if op.endswith("/export") and body.get("data"):
        accessed = {e["purpose"]: sorted(e["field_names"]) for e in log.new_accesses(subject)}
        for purpose, fields in body["data"].items():
            if accessed.get(purpose) != sorted(fields):
                wrong.append(f"{op}: no DataAccessed event for the {purpose} data it disclosed")
    return wrong


def _runner(server: Server, seeded: Seeded, operation: Any, failures: list[str]) -> Callable[[], None]:
    log = AccessLog(server)
    path = operation.path
    erasing = operation.method.upper() == "POST" and path.endswith("/erasure")
    subjects = [seeded.victim] if erasing else seeded.ids()
    choice = st.one_of(st.none(), st.sampled_from(subjects))
    purposes = st.one_of(st.none(), st.sampled_from(PURPOSES))

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(), subject=choice, purpose=purposes)
    def run(case: Any, subject: str | None, purpose: str | None) -> None:
        # Generated values rarely hit a seeded subject or a policy purpose: mix those in.
        if subject is not None and "subject_id" in (case.path_parameters or {}):
            case.path_parameters["subject_id"] = subject
        if purpose is not None and "purpose" in (case.query or {}):
            case.query["purpose"] = purpose
        in_path = str((case.path_parameters or {}).get("subject_id", "")) or None
        for kind, token in TOKENS.items():
            case.headers = {
                k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"
            }
            if token is not None:
                case.headers["Authorization"] = f"Bearer {token}"
            response = case.call(base_url=server.base, timeout=30)
            name = f"{operation.method.upper()} {path} as {kind}"
            try:
                case.validate_response(response, checks=CHECKS)
            except AssertionError as exc:  # schemathesis raises its failures as AssertionError
                failures.append(f"{name}: {str(exc)[:600]}")
            answer = httpx.Response(response.status_code, content=response.content)
            failures.extend(_problems(seeded, log, path, in_path, answer))

    return run


def test_fuzzed_requests_with_every_token_kind_never_fail_or_leak(
    server: Server, seeded: Seeded
) -> None:
    schema = schemathesis.openapi.from_url(f"{server.base}/openapi.json")
    failures: list[str] = []
    results = list(schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results) >= 12, results
    for operation in operations:
        _runner(server, seeded, operation, failures)()
    assert failures == [], "\n".join(sorted(set(failures))[:40])
    assert server.process.poll() is None
    assert str(uuid.UUID(seeded.victim))
