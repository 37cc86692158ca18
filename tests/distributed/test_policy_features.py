"""The policy features of issue 7 in distributed mode: API, relay and faust workers on Kafka and
PostgreSQL, sharing one key file (so its KEKs can be rotated while they run).
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from consentry.cluster import migrate
from consentry.core.errors import KeyProviderError
from consentry.core.keys import LocalKeyFileProvider, WrappedKey
from consentry.shredder.certificates import verify_document
from tests.distributed.checks import SHOP, SUPPORT, eventually
from tests.distributed.conftest import Stack, launch, shut_down
from tests.distributed.test_cluster import DPO
from tests.e2e.api import MARKETING
from tests.services import pg_dsn
from tests.support import EXAMPLE_POLICY, canary, record


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Path]]:
    """The stack with a key file of its own (every process reads the same file), fast sweeps, and
    a policy that wants an open task for every support read."""
    logs = tmp_path_factory.mktemp("policy-stack")
    key_file = logs / "keys" / "keys.json"
    provider = LocalKeyFileProvider.open(key_file)
    migrate(pg_dsn("owner"), provider)
    rules = yaml.safe_load(EXAMPLE_POLICY.read_text())
    rules["anomalies"] = {"open_task_roles": ["support_agent"]}
    policy = logs / "policy.yaml"
    policy.write_text(yaml.safe_dump(rules))
    settings = {
        "CONSENTRY_KEY_FILE": str(key_file),
        "CONSENTRY_POLICY": str(policy),
        "CONSENTRY_RETENTION_INTERVAL": "0.5",
        "CONSENTRY_ANOMALY_INTERVAL": "0.5",
    }
    stack = launch(logs, "relay", "processors", "shredder", settings=settings)
    yield stack, key_file
    shut_down(stack)


def _send(stack: Stack, *records: dict[str, Any]) -> list[str]:
    """Sends intake records; every one must be accepted; their subject ids."""
    with stack.client(SHOP) as shop:
        answer = shop.post("/v1/events", json={"events": list(records)})
    results = answer.json()["results"]
    assert [r["status"] for r in results] == ["accepted"] * len(records), answer.text
    return [str(r["subject_id"]) for r in results]


def _customer(stack: Stack, purpose: str = "support") -> tuple[str, str]:
    """A subject with consent for the purpose and a canary e-mail; (subject id, e-mail)."""
    ref, email = f"shop:{canary('ref')}", f"{canary('mail')}@example.com"
    [subject, _] = _send(
        stack,
        record("consent.grant", ref, purpose=purpose),
        record("data.update", ref, purpose=purpose, fields={"email": email}),
    )
    return subject, email


def _email(stack: Stack, subject: str) -> str | None:
    with stack.client(SUPPORT) as support:
        answer = support.get(f"/v1/subjects/{subject}/profile", params={"purpose": "support"})
    if answer.status_code != 200:
        return None
    found: str | None = answer.json()["fields"].get("email")
    return found


def _wrapped_rows(subjects: list[str]) -> list[tuple[str, uuid.UUID, str, int, bytes]]:
    """The subjects' wrapped keys as a backup of the keystore would hold them."""
    with psycopg.connect(pg_dsn("owner")) as conn:
        rows = conn.execute(
            "SELECT key_id, subject_id, scope, kek_version, wrapped FROM keystore.data_keys "
            "WHERE subject_id = ANY(%s)",
            ([uuid.UUID(s) for s in subjects],),
        ).fetchall()
    return [(k, s, c, v, bytes(w)) for k, s, c, v, w in rows]


def test_rotating_the_kek_under_running_services_makes_a_backup_of_the_keys_useless(
    keyed: tuple[Stack, Path],
) -> None:
    stack, key_file = keyed
    subject, email = _customer(stack)
    assert eventually(lambda: _email(stack, subject), "the profile") == email
    with stack.client(DPO) as dpo:
        published = dpo.get("/v1/keys/intake-public-key").json()["public_key"]
    backup = _wrapped_rows([subject])
    assert backup and {row[3] for row in backup} == {1}

    rotated = stack.run(
        "keys", "rotate", "--grace-seconds", "1.2", "--skip-unreadable",
        CONSENTRY_PG_DSN=pg_dsn("shredder"),
    )  # fmt: skip
    assert rotated.returncode == 0, rotated.stderr
    report: dict[str, Any] = json.loads(rotated.stdout)
    assert (report["active"], report["retired"]) == (2, [1])
    assert report["rewrapped"] >= len(backup)
    assert {row[3] for row in _wrapped_rows([subject])} == {2}

    # Every running service follows the key file: reads, new subjects and erasure still work.
    assert _email(stack, subject) == email
    newcomer, new_email = _customer(stack)
    assert eventually(lambda: _email(stack, newcomer), "the newcomer's profile") == new_email
    assert {row[3] for row in _wrapped_rows([newcomer])} == {2}
    with stack.client(DPO) as dpo:
        assert dpo.get("/v1/keys/intake-public-key").json()["public_key"] == published
        assert dpo.post(f"/v1/subjects/{subject}/erasure").status_code == 202
        document = eventually(
            lambda: (lambda a: a.json() if a.status_code == 200 else None)(
                dpo.get(f"/v1/subjects/{subject}/erasure")
            ),
            "the certificate",
        )
    assert str(verify_document(document).subject_id) == subject

    provider = LocalKeyFileProvider.open(key_file)
    for key_id, subject_id, scope, version, blob in backup:
        with pytest.raises(KeyProviderError, match="retired"):
            provider.unwrap(WrappedKey(version, blob), subject_id, scope, key_id)


def _json_if_ok(answer: Any) -> Any:
    return answer.json() if answer.status_code in (200, 201) else None


def test_the_shredder_worker_sweeps_retention_on_a_timer(keyed: tuple[Stack, Path]) -> None:
    stack, _ = keyed
    old, recent = f"shop:{canary('old')}", f"shop:{canary('recent')}"
    subject, other = _send(
        stack,
        record("data.update", old, purpose="billing", fields={"city": canary("city")},
               occurred_at="2012-03-01T10:00:00+00:00"),
        record("data.update", recent, purpose="billing", fields={"city": canary("city")}),
    )  # fmt: skip
    with stack.client(DPO) as dpo:
        certificates = eventually(
            lambda: _json_if_ok(dpo.get(f"/v1/subjects/{subject}/certificates"))["certificates"] or None,
            "the retention certificate",
        )
        [verified] = [verify_document(c) for c in certificates]
        assert (verified.reason, verified.scopes) == ("retention", ("purpose:billing",))
        eventually(
            lambda: (
                _json_if_ok(dpo.get(f"/v1/subjects/{subject}/profile", params={"purpose": "billing"}))[
                    "fields"
                ]
                == {}
                or None
            ),
            "the views purged",
        )
        kept = dpo.get(f"/v1/subjects/{other}/profile", params={"purpose": "billing"})
        assert kept.status_code == 200 and kept.json()["fields"]["city"], kept.text
        assert dpo.get(f"/v1/subjects/{other}/certificates").json()["certificates"] == []


def test_parallel_contacts_never_exceed_the_cap_and_the_check_agrees(keyed: tuple[Stack, Path]) -> None:
    stack, _ = keyed
    ref = f"shop:{canary('ref')}"
    [subject] = _send(stack, record("consent.grant", ref, purpose="marketing"))

    def contact(_: int) -> int:
        with stack.client(MARKETING) as marketer:
            answer = marketer.post(
                f"/v1/subjects/{subject}/contacts", json={"purpose": "marketing", "channel": "email"}
            )
        return answer.status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = sorted(pool.map(contact, range(6)))
    assert statuses == [201, 201, 403, 403, 403, 403]
    with stack.client(MARKETING) as marketer:
        check = marketer.get(
            f"/v1/subjects/{subject}/contact-check", params={"purpose": "marketing", "channel": "email"}
        ).json()
    assert (check["allowed"], check["reason"], check["contacts_in_window"]) == (False, "cap_reached", 2)
    with stack.client(DPO) as dpo:
        events = dpo.get(f"/v1/subjects/{subject}/timeline").json()["events"]
    assert [e["type"] for e in events].count("ContactRecorded") == 2


def test_a_share_is_recorded_and_the_shredder_workers_certificate_names_the_processor(
    keyed: tuple[Stack, Path],
) -> None:
    stack, _ = keyed
    ref, email = f"shop:{canary('ref')}", f"{canary('mail')}@example.com"
    [subject, _] = _send(
        stack,
        record("consent.grant", ref, purpose="marketing"),
        record("data.update", ref, purpose="marketing", fields={"email": email}),
    )
    with stack.client(MARKETING) as marketer:
        shared = eventually(
            lambda: (
                _json_if_ok(
                    marketer.post(
                        f"/v1/subjects/{subject}/shares",
                        json={"processor": "mailer-example", "purpose": "marketing"},
                    )
                )
                if _email_held(stack, subject)
                else None
            ),
            "the share",
        )
    assert shared["fields"] == {"email": email}
    with stack.client(DPO) as dpo:
        assert dpo.post(f"/v1/subjects/{subject}/erasure").status_code == 202
        document = eventually(
            lambda: _json_if_ok(dpo.get(f"/v1/subjects/{subject}/erasure")), "the certificate"
        )
        types = [e["type"] for e in dpo.get(f"/v1/subjects/{subject}/timeline").json()["events"]]
    assert verify_document(document).processors == ("mailer-example",)
    assert "DataShared" in types


def _email_held(stack: Stack, subject: str) -> bool:
    """The processors worker has put the marketing e-mail into the read models."""
    with stack.client(DPO) as dpo:
        answer = dpo.get(f"/v1/subjects/{subject}/profile", params={"purpose": "marketing"})
    return answer.status_code == 200 and bool(answer.json()["fields"])


def test_the_exposure_report_reads_the_postgresql_ledger_over_http_and_the_cli(
    keyed: tuple[Stack, Path],
) -> None:
    stack, _ = keyed
    start = datetime.now(UTC).isoformat()
    subject, _ = _customer(stack)
    eventually(lambda: _email(stack, subject), "the profile")  # alice-support reads it
    with stack.client(DPO) as dpo:
        answer = dpo.get("/v1/audit/exposure", params={"actor": "alice-support", "from": start})
    assert answer.status_code == 200, answer.text
    exposed = {s["subject_id"]: s for s in answer.json()["subjects"]}
    assert exposed[subject]["fields"] == ["email"]
    assert exposed[subject]["purposes"] == ["support"]
    report = stack.run(
        "audit", "exposure", "--actor", "alice-support", "--from", start,
        CONSENTRY_PG_DSN=pg_dsn("query"),
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["subjects"] == answer.json()["subjects"]


def test_the_shredder_worker_flags_reads_outside_open_tasks(keyed: tuple[Stack, Path]) -> None:
    stack, _ = keyed
    tasked_ref = f"shop:{canary('ref')}"
    untasked, _ = _customer(stack)
    [tasked, _, _] = _send(
        stack,
        record("consent.grant", tasked_ref, purpose="support"),
        record("data.update", tasked_ref, purpose="support", fields={"email": canary("m")}),
        # A task id is pseudonymous and stored in clear (not a canary).
        record(
            "task.report", tasked_ref, task_id=f"ticket-{secrets.token_hex(4)}", role="support_agent"
        ),
    )
    for subject in (tasked, untasked):
        eventually(partial(_email, stack, subject), "the profile")

    def flagged(subject: str) -> list[dict[str, Any]]:
        with stack.client(DPO) as dpo:
            events = dpo.get(f"/v1/subjects/{subject}/timeline").json()["events"]
        return [e for e in events if e["type"] == "AccessAnomalyFlagged"]

    found = eventually(lambda: flagged(untasked) or None, "the flag")
    assert {(e["rule"], e["actor_id"]) for e in found} == {("outside_open_task", "alice-support")}
    with stack.client(DPO) as dpo:
        listed = dpo.get("/v1/audit/anomalies", params={"actor": "alice-support"}).json()
    assert untasked in {a["subject_id"] for a in listed["anomalies"]}
    assert flagged(tasked) == []
