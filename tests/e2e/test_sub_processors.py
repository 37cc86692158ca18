"""Sharing with sub-processors over real HTTP: only under an agreement in force, always an event.

`POST /v1/subjects/{id}/shares` exports a purpose's fields to a registered processor if one of its
agreements covers the purpose and every field and has not expired; `DataShared` is recorded before
any value is opened. Certificates of a later erasure or withdrawal name the processors to tell.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from consentry.shredder.certificates import verify_document
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
from tests.e2e.conftest import Server, running_server
from tests.support import EXAMPLE_POLICY, canary, fake_email, record


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The example policy plus a processor whose only agreement expired in 2025."""
    root = tmp_path_factory.mktemp("shares")
    rules = yaml.safe_load(EXAMPLE_POLICY.read_text())
    rules["processors"]["archive-example"] = {
        "agreements": [
            {
                "id": "dpa-2024-archive",
                "purposes": ["marketing"],
                "fields": ["email"],
                "expires": "2025-06-30",
            }
        ]
    }
    policy = root / "policy.yaml"
    policy.write_text(yaml.safe_dump(rules))
    with running_server(root / "data", policy) as running:
        yield running


def _customer(server: Server) -> tuple[str, str, dict[str, str]]:
    ref = f"shop:{canary('ref')}"
    values = {"email": fake_email(), "first_name": canary("name"), "preferred_language": "eo"}
    send_accepted(
        server,
        record("consent.grant", ref, purpose="marketing"),
        record("data.update", ref, purpose="marketing", fields=values),
    )
    return ref, subject_of(server, ref), values


def _share(server: Server, subject: str, token: str = MARKETING, **body: Any) -> Any:
    with server.client(token) as staff:
        return staff.post(
            f"/v1/subjects/{subject}/shares",
            json={"processor": "mailer-example", "purpose": "marketing"} | body,
        )


def _types(server: Server, subject: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in timeline(server, subject) if e["type"] == kind]


def test_a_share_sends_the_fields_the_agreement_covers_and_is_recorded_first(server: Server) -> None:
    _, subject, values = _customer(server)
    answer = _share(server, subject)
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert (body["processor"], body["agreement"]) == ("mailer-example", "dpa-2026-mailer")
    assert body["fields"] == {"email": values["email"], "first_name": values["first_name"]}
    [shared] = _types(server, subject, "DataShared")
    assert shared["event_id"] == body["share_event_id"]
    assert shared["field_names"] == ["email", "first_name"]
    assert shared["actor"] == {"actor_id": "bob-marketing", "role": "marketer"}
    with server.client(DPO) as dpo:
        shares = dpo.get(f"/v1/subjects/{subject}/export").json()["shares"]
    assert [(s["processor"], s["fields"]) for s in shares] == [
        ("mailer-example", ["email", "first_name"])
    ]


def test_fields_outside_the_agreement_or_an_expired_agreement_are_refused_and_recorded(
    server: Server,
) -> None:
    _, subject, _ = _customer(server)
    wider = _share(server, subject, fields=["email", "preferred_language"])
    assert problem(wider, 403)["type"].endswith("/no-agreement")
    expired = _share(server, subject, processor="archive-example")
    assert problem(expired, 403)["type"].endswith("/agreement-expired")
    denied = _types(server, subject, "AccessDenied")
    assert [(d["reason"], d["access_kind"]) for d in denied] == [
        ("no_agreement", "share"),
        ("agreement_expired", "share"),
    ]
    assert _types(server, subject, "DataShared") == []


def test_roles_consent_and_input_are_checked_before_anything_is_shared(server: Server) -> None:
    ref, subject, _ = _customer(server)
    assert problem(_share(server, subject, token=SUPPORT), 403)["type"].endswith("/role-not-allowed")
    assert problem(_share(server, subject, processor="nobody"), 422)["type"].endswith(
        "/unknown-processor"
    )
    assert problem(_share(server, subject, fields=["shoe_size"]), 422)["type"].endswith(
        "/field-not-allowed"
    )
    assert problem(_share(server, subject, extra=1), 422)["type"].endswith("/invalid-request")
    send_accepted(server, record("consent.withdrawal", ref, purpose="marketing"))
    assert problem(_share(server, subject), 403)["type"].endswith("/no-consent")
    assert _types(server, subject, "DataShared") == []


def test_certificates_name_the_processors_that_must_be_told(server: Server, tmp_path: Path) -> None:
    ref, subject, _ = _customer(server)
    assert _share(server, subject).status_code == 201
    send_accepted(server, record("consent.withdrawal", ref, purpose="marketing"))
    other, untouched, _ = _customer(server)
    send_accepted(server, record("consent.withdrawal", other, purpose="marketing"))
    with server.client(DPO) as dpo:
        [withdrawal] = dpo.get(f"/v1/subjects/{subject}/certificates").json()["certificates"]
        [unshared] = dpo.get(f"/v1/subjects/{untouched}/certificates").json()["certificates"]
        erased = dpo.post(f"/v1/subjects/{subject}/erasure").json()["certificate"]
    assert verify_document(withdrawal).processors == ("mailer-example",)
    assert verify_document(unshared).processors == ()  # its data went to nobody
    assert verify_document(erased).processors == ("mailer-example",)
    assert _share(server, subject).status_code == 410
    path = tmp_path / "certificate.json"
    path.write_text(json.dumps(erased))
    verified = consentry("erasure", "verify", str(path))
    assert verified.returncode == 0, verified.stderr
    assert "tell the sub-processors that received the data: mailer-example" in verified.stdout
