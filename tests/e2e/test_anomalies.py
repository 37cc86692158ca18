"""Access anomalies on a running embedded instance: flagged in the ledger, visible to auditors.

The policy flags support reads without an open support task, and more than 3 reads an hour by one
actor (nobody has a usual rate yet). The server sweeps every 0.3 s (CONSENTRY_ANOMALY_INTERVAL).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.e2e.api import DPO, SUPPORT, problem, send, send_accepted, subject_of, timeline
from tests.e2e.conftest import Server, running_server
from tests.support import EXAMPLE_POLICY, canary, fake_email, record


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("anomalies")
    rules = yaml.safe_load(EXAMPLE_POLICY.read_text())
    rules["anomalies"] = {
        "rate": {"window_minutes": 60, "baseline_days": 7, "factor": 3, "min_reads": 3},
        "open_task_roles": ["support_agent"],
    }
    policy = root / "policy.yaml"
    policy.write_text(yaml.safe_dump(rules))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CONSENTRY_ANOMALY_INTERVAL", "0.3")
        with running_server(root / "data", policy) as server:
            yield server


def _customer(server: Server, *more: dict[str, Any]) -> str:
    """A subject with support consent and data, plus `more` records for the same reference."""
    ref = more[0]["subject_ref"] if more else f"shop:{canary('ref')}"
    send_accepted(
        server,
        record("consent.grant", ref, purpose="support"),
        record("data.update", ref, purpose="support", fields={"email": fake_email()}),
        *more,
    )
    return subject_of(server, ref)


def _read(server: Server, subject: str) -> str:
    with server.client(SUPPORT) as support:
        answer = support.get(f"/v1/subjects/{subject}/profile", params={"purpose": "support"})
    assert answer.status_code == 200, answer.text
    event_id: str = answer.json()["access_event_id"]
    return event_id


def _anomalies(server: Server, wanted: int, **params: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 15
    while True:
        with server.client(DPO) as dpo:
            answer = dpo.get("/v1/audit/anomalies", params=params)
        assert answer.status_code == 200, answer.text
        found: list[dict[str, Any]] = answer.json()["anomalies"]
        if len(found) >= wanted or time.monotonic() > deadline:
            return found


def test_reads_outside_open_tasks_and_above_the_rate_are_flagged(watched: Server) -> None:
    ref = f"shop:{canary('ref')}"
    tasked = _customer(watched, record("task.report", ref, task_id="ticket-1", role="support_agent"))
    untasked = _customer(watched)
    reads = [_read(watched, tasked), _read(watched, untasked)]
    reads += [_read(watched, tasked) for _ in range(3)]  # the 4th read in the hour is above 3

    found = _anomalies(watched, 2, actor="alice-support")
    by_rule = {a["rule"]: a for a in found}
    assert sorted(by_rule) == ["outside_open_task", "rate"], found
    outside = by_rule["outside_open_task"]
    assert (outside["subject_id"], outside["access_event_id"]) == (untasked, reads[1])
    assert outside["role"] == "support_agent"
    assert (by_rule["rate"]["access_event_id"], by_rule["rate"]["subject_id"]) == (reads[3], tasked)
    assert by_rule["rate"]["detail"].startswith("4 reads in a 60-minute window")
    time.sleep(1)  # more sweeps change nothing: each breach is flagged once
    assert len(_anomalies(watched, 0, actor="alice-support")) == 2
    assert _anomalies(watched, 0, actor="bob-marketing") == []

    flagged = [e for e in timeline(watched, untasked) if e["type"] == "AccessAnomalyFlagged"]
    assert [(e["rule"], e["actor_id"]) for e in flagged] == [("outside_open_task", "alice-support")]
    with watched.client(DPO) as dpo:
        assert dpo.post("/v1/audit/replay").status_code == 200
        assert dpo.get("/v1/audit/verify").json()["ok"] is True


def test_a_closed_task_no_longer_covers_reads_and_bad_task_reports_are_refused(
    watched: Server,
) -> None:
    ref = f"shop:{canary('ref')}"
    task = record("task.report", ref, task_id="ticket-2", role="support_agent")
    subject = _customer(watched, task)
    before = len(_anomalies(watched, 0, actor="alice-support"))
    covered = _read(watched, subject)
    send_accepted(watched, task | {"status": "closed", "idempotency_key": canary("k")})
    uncovered = _read(watched, subject)
    found = _anomalies(watched, before + 1, actor="alice-support")
    mine = [a["access_event_id"] for a in found if a["subject_id"] == subject]
    assert mine == [uncovered] and covered not in mine
    tasks = [e for e in timeline(watched, subject) if e["type"] == "TaskUpdated"]
    assert [(e["task_id"], e["status"]) for e in tasks] == [("ticket-2", "open"), ("ticket-2", "closed")]

    for bad in ({"role": "wizard"}, {"status": "pending"}):
        [refused] = send(watched, record("task.report", ref, **bad))
        assert (refused["status"], refused["reason"]) == ("rejected", "invalid_value"), refused
    with watched.client(DPO) as dpo:
        naive = dpo.get("/v1/audit/anomalies", params={"from": "2026-11-01T00:00:00"})
    assert "time zone" in problem(naive, 422)["detail"]
