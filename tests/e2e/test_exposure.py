"""The breach impact report over real HTTP and the CLI: who was exposed to which subjects' fields.

`GET /v1/audit/exposure?actor=…|producer=…|processor=…&from=…&to=…` lists, from the ledger's access,
share and update events, every subject and field the party decrypted, received or sent in the window.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from tests.e2e.api import (
    DPO,
    MARKETING,
    SUPPORT,
    consentry,
    problem,
    send_accepted,
    subject_of,
    timeline,
)
from tests.e2e.conftest import Server
from tests.support import canary, fake_email, record


def _customer(server: Server, purpose: str) -> str:
    ref = f"shop:{canary('ref')}"
    send_accepted(
        server,
        record("consent.grant", ref, purpose=purpose),
        record(
            "data.update",
            ref,
            purpose=purpose,
            fields={"email": fake_email(), "first_name": canary("n")},
        ),
    )
    return subject_of(server, ref)


def _read(server: Server, token: str, subject: str, purpose: str) -> str:
    """Reads a profile; the recorded_at of its DataAccessed event."""
    with server.client(token) as staff:
        answer = staff.get(f"/v1/subjects/{subject}/profile", params={"purpose": purpose})
    assert answer.status_code == 200, answer.text
    [event] = [e for e in timeline(server, subject) if e["event_id"] == answer.json()["access_event_id"]]
    at: str = event["recorded_at"]
    return at


def _exposure(server: Server, **params: str) -> Any:
    with server.client(DPO) as dpo:
        return dpo.get("/v1/audit/exposure", params=params)


def _subjects(answer: Any) -> dict[str, dict[str, Any]]:
    assert answer.status_code == 200, answer.text
    return {s["subject_id"]: s for s in answer.json()["subjects"]}


def test_an_actors_reads_and_a_processors_shares_are_listed_per_subject_and_window(
    server: Server,
) -> None:
    first, second, other = (_customer(server, "support") for _ in range(3))
    shared = _customer(server, "marketing")
    before = _read(server, SUPPORT, first, "support")
    between = _read(server, SUPPORT, second, "support")
    _read(server, DPO, other, "support")
    with server.client(MARKETING) as marketer:
        sent = marketer.post(
            f"/v1/subjects/{shared}/shares", json={"processor": "mailer-example", "purpose": "marketing"}
        )
    assert sent.status_code == 201, sent.text

    everything = _subjects(_exposure(server, actor="alice-support"))
    assert set(everything) == {first, second}
    assert everything[first]["fields"] == ["email", "first_name"]
    assert everything[first]["purposes"] == ["support"] and everything[first]["events"] == 1
    assert set(_subjects(_exposure(server, actor="alice-support", **{"from": between}))) == {second}
    assert set(_subjects(_exposure(server, actor="alice-support", to=between))) == {first}
    start = (datetime.fromisoformat(before) - timedelta(seconds=1)).isoformat()
    assert set(_subjects(_exposure(server, actor="alice-support", **{"from": start}))) == {first, second}

    received = _subjects(_exposure(server, processor="mailer-example"))
    assert set(received) == {shared} and received[shared]["fields"] == ["email", "first_name"]
    assert set(_subjects(_exposure(server, actor="bob-marketing"))) == {shared}
    sent_by_shop = _subjects(_exposure(server, producer="shop"))
    assert {first, second, other, shared} <= set(sent_by_shop)

    with server.client(DPO) as dpo:
        assert dpo.post(f"/v1/subjects/{first}/erasure").status_code == 202
    after = _subjects(_exposure(server, actor="alice-support"))
    assert after[first]["erased"] is True and after[second]["erased"] is False

    report = consentry(
        "audit", "exposure", "--actor", "alice-support", "--data-dir", str(server.data_dir)
    )
    assert report.returncode == 0, report.stderr
    assert (
        json.loads(report.stdout)["subjects"]
        == _exposure(server, actor="alice-support").json()["subjects"]
    )


def test_the_report_needs_one_party_a_sane_window_and_the_audit_permission(server: Server) -> None:
    assert problem(_exposure(server), 422)["type"].endswith("/invalid-request")
    assert problem(_exposure(server, actor="a", producer="shop"), 422)["type"].endswith(
        "/invalid-request"
    )
    backwards = _exposure(
        server, actor="a", **{"from": "2026-11-02T00:00:00+00:00"}, to="2026-11-01T00:00:00+00:00"
    )
    assert "after" in problem(backwards, 422)["detail"]
    naive = _exposure(server, actor="a", **{"from": "2026-11-02T00:00:00"})
    assert "time zone" in problem(naive, 422)["detail"]
    with server.client(SUPPORT) as support:
        assert problem(support.get("/v1/audit/exposure", params={"actor": "a"}), 403)
    refused = consentry("audit", "exposure", "--data-dir", str(server.data_dir))
    assert refused.returncode == 2 and "exactly one" in refused.stderr
