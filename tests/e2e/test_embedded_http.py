"""The embedded platform over real HTTP: intake, reads with access events, refusals, erasure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import Server
from tests.support import canary, record, scan

SHOP, SUPPORT, MARKETING, DPO = (
    "demo-shop-token",
    "demo-support-token",
    "demo-marketing-token",
    "demo-dpo-token",
)


def _send(server: Server, *records: dict[str, Any]) -> list[dict[str, Any]]:
    with server.client(SHOP) as shop:
        answer = shop.post("/v1/events", json={"events": list(records)})
    assert answer.status_code == 200, answer.text
    results: list[dict[str, Any]] = answer.json()["results"]
    return results


def test_intake_refuses_bad_records_with_reason_codes_and_unknown_producers(server: Server) -> None:
    ref = "shop:" + canary("ref")
    results = _send(
        server,
        record("consent.grant", ref, purpose="support"),
        record("data.update", ref, purpose="support", fields={"shoe_size": "44"}),
        {"type": "data.delete", "subject_ref": ref},
    )
    assert [r["status"] for r in results] == ["accepted", "rejected", "rejected"]
    assert [r.get("reason") for r in results[1:]] == ["field_not_allowed", "unknown_event_type"]
    with server.client("forged-token") as forged:
        refused = forged.post("/v1/events", json={"events": [record("consent.grant", ref)]})
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"


def test_a_granted_read_is_recorded_before_it_answers_and_a_refusal_is_in_the_timeline(
    server: Server,
) -> None:
    ref_value, email = canary("ref"), canary("mail") + "@example.com"
    ref = f"shop:{ref_value}"
    _send(
        server,
        record("consent.grant", ref, purpose="support"),
        record("data.update", ref, purpose="support", fields={"email": email}),
    )
    with (
        server.client(SUPPORT) as support,
        server.client(MARKETING) as marketing,
        server.client(DPO) as dpo,
    ):
        subject = support.get("/v1/subjects", params={"ref": ref}).json()["subject_id"]
        profile = support.get(f"/v1/subjects/{subject}/profile", params={"purpose": "support"})
        assert profile.status_code == 200
        assert profile.json()["fields"] == {"email": email}
        denied = marketing.get(f"/v1/subjects/{subject}/profile", params={"purpose": "marketing"})
        assert denied.status_code == 403
        events = dpo.get(f"/v1/subjects/{subject}/timeline").json()["events"]
    kinds = [(e["type"], e.get("purpose")) for e in events]
    assert ("DataAccessed", "support") in kinds
    assert ("AccessDenied", "marketing") in kinds
    accessed = next(e for e in events if e["type"] == "DataAccessed")
    assert accessed["event_id"] == profile.json()["access_event_id"]
    assert email not in json.dumps(events)


def test_erasure_answers_410_purges_every_file_and_issues_a_verifiable_certificate(
    server: Server, tmp_path: Path
) -> None:
    ref_value, email, name = canary("ref"), canary("mail"), canary("name")
    ref = f"shop:{ref_value}"
    _send(
        server,
        record("consent.grant", ref, purpose="support", evidence=canary("evidence")),
        record("data.update", ref, purpose="support", fields={"email": email, "first_name": name}),
    )
    with server.client(SUPPORT) as support, server.client(DPO) as dpo:
        subject = support.get("/v1/subjects", params={"ref": ref}).json()["subject_id"]
        export = dpo.get(f"/v1/subjects/{subject}/export").json()
        assert export["data"]["support"] == {"email": email, "first_name": name}
        assert dpo.post(f"/v1/subjects/{subject}/erasure").status_code == 202
        assert (
            support.get(f"/v1/subjects/{subject}/profile", params={"purpose": "support"}).status_code
            == 410
        )
        assert dpo.get(f"/v1/subjects/{subject}/export").json()["erased"] is True
        document = dpo.get(f"/v1/subjects/{subject}/erasure").json()
        assert dpo.get("/v1/audit/verify").json()["ok"] is True
    assert scan(server.data_dir, [ref_value, email, name]) == {}
    cert = tmp_path / "cert.json"
    cert.write_text(json.dumps(document))
    verified = subprocess.run(
        [sys.executable, "-m", "consentry.cli", "erasure", "verify", str(cert)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stderr
    document["certificate"]["reason"] = "withdrawal"
    cert.write_text(json.dumps(document))
    tampered = subprocess.run(
        [sys.executable, "-m", "consentry.cli", "erasure", "verify", str(cert)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert tampered.returncode == 1


def test_health_metrics_docs_and_the_public_key_are_served(server: Server) -> None:
    with httpx.Client(base_url=server.base, timeout=10) as anyone:
        assert anyone.get("/healthz").json()["status"] == "ok"
        metrics = anyone.get("/metrics").text
        assert 'consentry_http_requests_total{route="/healthz",status="200"}' in metrics
        assert 'consentry_http_seconds_count{route="/healthz"}' in metrics
        assert anyone.get("/docs").status_code == 200
        assert "BEGIN PUBLIC KEY" in anyone.get("/v1/keys/certificate-public-key").json()["public_key"]


def test_a_profile_read_checks_its_parameters_and_publishes_them_in_the_schema(
    server: Server,
) -> None:
    ref = f"shop:{canary('ref')}"
    _send(server, record("consent.grant", ref, purpose="support"))
    with server.client(SUPPORT) as support, httpx.Client(base_url=server.base) as anyone:
        subject = support.get("/v1/subjects", params={"ref": ref}).json()["subject_id"]
        bad_id = support.get("/v1/subjects/not-a-uuid/profile", params={"purpose": "support"})
        no_purpose = support.get(f"/v1/subjects/{subject}/profile")
        no_token = anyone.get(f"/v1/subjects/{subject}/profile", params={"purpose": "support"})
        read = support.get(f"/v1/subjects/{subject.upper()}/profile", params={"purpose": "support"})
        schema = anyone.get("/openapi.json").json()
        metrics = anyone.get("/metrics").text
    for answer, where in ((bad_id, "path.subject_id"), (no_purpose, "query.purpose")):
        assert answer.status_code == 422
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["detail"] == f"invalid: {where}"
        assert answer.json()["reason"] == "invalid_value"
    assert no_token.status_code == 401
    assert read.status_code == 200
    assert read.json()["subject_id"] == subject
    operation = schema["paths"]["/v1/subjects/{subject_id}/profile"]["get"]
    assert {(p["name"], p["in"], p["required"]) for p in operation["parameters"]} == {
        ("subject_id", "path", True),
        ("purpose", "query", True),
        ("Authorization", "header", False),
    }
    answer_schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer_schema == {"$ref": "#/components/schemas/ProfileAnswer"}
    assert set(schema["components"]["schemas"]["ProfileAnswer"]["required"]) == {
        "subject_id",
        "purpose",
        "access_event_id",
        "policy_version",
        "fields",
    }
    assert 'consentry_http_requests_total{route="/v1/subjects/{subject_id}/profile",status="422"}' in (
        metrics
    )
