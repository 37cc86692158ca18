"""Small helpers for end-to-end tests that talk to a real server: demo tokens, intake, look-ups."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import httpx

from tests.e2e.conftest import Server

SHOP = "demo-shop-token"
SUPPORT = "demo-support-token"
MARKETING = "demo-marketing-token"
DPO = "demo-dpo-token"
PROBLEM_JSON = "application/problem+json"


def send(server: Server, *records: dict[str, Any]) -> list[dict[str, Any]]:
    """POSTs one intake batch with the producer token; the per-record results, in order."""
    with server.client(SHOP) as shop:
        answer = shop.post("/v1/events", json={"events": list(records)})
    assert answer.status_code == 200, answer.text
    results: list[dict[str, Any]] = answer.json()["results"]
    return results


def send_accepted(server: Server, *records: dict[str, Any]) -> list[dict[str, Any]]:
    """Like send, and every record must be accepted."""
    results = send(server, *records)
    assert [r["status"] for r in results] == ["accepted"] * len(records), results
    return results


def subject_of(server: Server, ref: str) -> str:
    """The subject id of an external reference (looked up with the support token)."""
    with server.client(SUPPORT) as support:
        found = support.get("/v1/subjects", params={"ref": ref})
    assert found.status_code == 200, found.text
    subject: str = found.json()["subject_id"]
    return subject


def timeline(server: Server, subject: str) -> list[dict[str, Any]]:
    """The subject's events' clear metadata, as the DPO sees them."""
    with server.client(DPO) as dpo:
        answer = dpo.get(f"/v1/subjects/{subject}/timeline")
    assert answer.status_code == 200, answer.text
    events: list[dict[str, Any]] = answer.json()["events"]
    return events


def consentry(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Runs the `consentry` command (output captured as text), with extra environment variables."""
    return subprocess.run(
        [sys.executable, "-m", "consentry.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=os.environ.copy() | env,
    )


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """Asserts an RFC 9457 answer with that status; its body."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == PROBLEM_JSON, response.headers["content-type"]
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("https://"), body
    return body
