"""Retention on a running embedded instance: the sweep shreds what is past its time, on its own.

The server sweeps every 0.3 s (CONSENTRY_RETENTION_INTERVAL). Data whose consent or contract ended
long ago (back-filled with old `occurred_at` values) goes with a signed `retention` certificate;
data under an open-ended consent and recent billing data stay readable.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from consentry.shredder.certificates import verify_document
from tests.e2e.api import DPO, send_accepted, subject_of
from tests.e2e.conftest import Server, running_server
from tests.support import canary, fake_email, record


@pytest.fixture(scope="module")
def sweeping(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CONSENTRY_RETENTION_INTERVAL", "0.3")
        with running_server(tmp_path_factory.mktemp("retention") / "data") as server:
            yield server


def _certificates(server: Server, subject: str) -> list[dict[str, Any]]:
    with server.client(DPO) as dpo:
        answer = dpo.get(f"/v1/subjects/{subject}/certificates")
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()["certificates"]
    return found


def _profile(server: Server, subject: str, purpose: str) -> Any:
    with server.client(DPO) as dpo:
        return dpo.get(f"/v1/subjects/{subject}/profile", params={"purpose": purpose})


def test_the_sweep_shreds_expired_purposes_and_keeps_the_rest(sweeping: Server) -> None:
    old, recent = f"shop:{canary('old')}", f"shop:{canary('recent')}"
    send_accepted(
        sweeping,
        # Billing (contract, 3650 days) from 2012; marketing consent that ended in 2014 (365 days).
        record("data.update", old, purpose="billing", fields={"city": canary("city")},
               occurred_at="2012-03-01T10:00:00+00:00"),
        record("consent.grant", old, purpose="marketing", occurred_at="2013-01-01T10:00:00+00:00",
               expires_at="2014-01-01T10:00:00+00:00"),
        record("data.update", old, purpose="marketing", fields={"email": fake_email()},
               occurred_at="2013-06-01T10:00:00+00:00"),
        record("consent.grant", old, purpose="support"),
        record("data.update", old, purpose="support", fields={"email": fake_email()}),
        record("data.update", recent, purpose="billing", fields={"city": canary("city")}),
    )  # fmt: skip
    subject, other = subject_of(sweeping, old), subject_of(sweeping, recent)

    deadline = time.monotonic() + 20
    while len(found := _certificates(sweeping, subject)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    certificates = [verify_document(document) for document in found]
    assert sorted(c.scopes for c in certificates) == [("purpose:billing",), ("purpose:marketing",)]
    assert {c.reason for c in certificates} == {"retention"}
    assert all(c.key_ids for c in certificates)

    billing = _profile(sweeping, subject, "billing")
    assert billing.status_code == 200 and billing.json()["fields"] == {}, billing.text
    support = _profile(sweeping, subject, "support")
    assert support.status_code == 200 and support.json()["fields"]["email"], support.text
    kept = _profile(sweeping, other, "billing")
    assert kept.status_code == 200 and kept.json()["fields"]["city"], kept.text
    assert _certificates(sweeping, other) == []

    with sweeping.client(DPO) as dpo:
        events = dpo.get(f"/v1/subjects/{subject}/timeline").json()["events"]
        assert dpo.get("/v1/audit/verify").json()["ok"] is True
        replayed = dpo.post("/v1/audit/replay")
    assert replayed.status_code == 200, replayed.text
    shredded = [e for e in events if e["type"] == "KeysShredded"]
    assert [e["reason"] for e in shredded] == ["retention", "retention"]
    again = _profile(sweeping, subject, "billing")  # the views rebuilt from the log agree
    assert again.status_code == 200 and again.json()["fields"] == {}, again.text
