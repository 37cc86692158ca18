"""Robustness over real HTTP: contention and a damaged stored event never become a 500 or a dead server.

1. A ledger conflict that outlasts the retries answers problem details with the documented `conflict`
   reason (docs/reason-codes.md), on intake and profile reads.
2. One undecodable stored event does not stop the platform: it starts, `/v1/audit/verify` reports
   the break, and intake for other subjects keeps working.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.e2e.api import DPO, PROBLEM_JSON, SHOP, SUPPORT, send_accepted
from tests.e2e.conftest import Server, running_server, start_server
from tests.e2e.test_audit_tamper import flip_stored_byte, middle
from tests.support import canary, fake_email, record

CLIENTS = 16
ROUNDS = 10


def _subject_with_data(server: Server) -> tuple[str, str]:
    ref = f"shop:{canary('ref')}"
    results = send_accepted(
        server,
        record("consent.grant", ref, purpose="support"),
        record("data.update", ref, purpose="support", fields={"email": fake_email()}),
        record("data.update", ref, purpose="support", fields={"email": fake_email()}),
    )
    return ref, results[0]["subject_id"]


def _hammer(server: Server, ref: str, subject: str) -> list[tuple[int, str]]:
    """Updates and reads the one subject ROUNDS times; (status, content type) of non-200 answers."""
    odd: list[tuple[int, str]] = []
    with server.client(SHOP) as shop, server.client(SUPPORT) as support:
        for _ in range(ROUNDS):
            update = record("data.update", ref, purpose="support", fields={"email": fake_email()})
            for answer in (
                shop.post("/v1/events", json={"events": [update]}),
                support.get(f"/v1/subjects/{subject}/profile", params={"purpose": "support"}),
            ):
                if answer.status_code != 200:
                    odd.append((answer.status_code, answer.headers.get("content-type", "")))
    return odd


def test_conflicts_under_contention_are_problem_details_not_500(server: Server) -> None:
    ref, subject = _subject_with_data(server)
    with ThreadPoolExecutor(CLIENTS) as pool:
        answers = [
            a
            for found in pool.map(lambda _: _hammer(server, ref, subject), range(CLIENTS))
            for a in found
        ]
    assert [a for a in answers if a[0] >= 500 or a[1] != PROBLEM_JSON] == []


def test_a_server_starts_on_a_log_with_an_undecodable_event_and_reports_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with running_server(data_dir) as server:
        _, subject = _subject_with_data(server)
    flip_stored_byte(data_dir, subject, 3, middle)
    with running_server(data_dir) as server, server.client(DPO) as dpo:  # fails: exit code 2
        report = dpo.get("/v1/audit/verify").json()
    assert report["ok"] is False


def test_one_undecodable_event_does_not_fail_intake_for_other_subjects(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with running_server(data_dir) as server:
        _, subject = _subject_with_data(server)
        flip_stored_byte(data_dir, subject, 3, middle)
        with server.client(SHOP) as shop:
            other = record("consent.grant", f"shop:{canary('ref')}", purpose="support")
            answer = shop.post("/v1/events", json={"events": [other]})
    assert answer.status_code == 200, answer.text  # fails: 500, though the grant was stored


def test_sigterm_closes_the_stores_so_no_write_ahead_log_is_left(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = start_server(data_dir)
    send_accepted(server, record("consent.grant", "shop:" + canary("ref"), purpose="support"))
    server.stop()
    assert sorted(p.name for p in data_dir.glob("*-wal") if p.stat().st_size) == []
