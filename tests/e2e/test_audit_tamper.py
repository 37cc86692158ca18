"""Chain verification catches a flipped byte in a stored event, over HTTP and with the CLI.

Each test runs its own server on its own data directory: it records subjects, checks that both
verifications pass, stops the server, flips one byte of one stored event (one that is not its
subject's last, so a later event links to it) directly in `events.db`, and verifies again.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.api import DPO, SHOP, SUPPORT, problem, send_accepted, timeline
from tests.e2e.conftest import Server, running_server
from tests.support import EXAMPLE_POLICY, canary, codec, fake_email, record

Offset = Callable[[bytes], int]


def _record_subject(server: Server) -> str:
    """A subject with consents, data, a read and a withdrawal; its id."""
    ref = f"shop:{canary('ref')}"
    results = send_accepted(
        server,
        record("consent.grant", ref, purpose="support", evidence=canary("evidence")),
        record("consent.grant", ref, purpose="marketing"),
        record("data.update", ref, purpose="support", fields={"email": fake_email()}),
        record("data.update", ref, purpose="marketing", fields={"first_name": canary("name")}),
    )
    subject: str = results[0]["subject_id"]
    with server.client(SUPPORT) as support:
        read = support.get(f"/v1/subjects/{subject}/profile", params={"purpose": "support"})
    assert read.status_code == 200, read.text
    send_accepted(server, record("consent.withdrawal", ref, purpose="marketing"))
    return subject


def _first_support_update(server: Server, subject: str) -> int:
    """The sequence of the subject's support DataUpdated, which is not its last event."""
    events = timeline(server, subject)
    found = next(e for e in events if e["type"] == "DataUpdated" and e["purpose"] == "support")
    sequence: int = found["sequence"]
    assert sequence < events[-1]["sequence"]
    return sequence


def _http_verify(server: Server) -> dict[str, Any]:
    with server.client(DPO) as dpo:
        answer = dpo.get("/v1/audit/verify")
    assert answer.status_code == 200, answer.text
    report: dict[str, Any] = answer.json()
    return report


def _cli_verify(data_dir: Path) -> tuple[int, dict[str, Any]]:
    """`consentry audit verify` on a stopped server's data: exit code and its JSON report."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "consentry.cli",
            "audit",
            "verify",
            "--data-dir",
            str(data_dir),
            "--policy",
            str(EXAMPLE_POLICY),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.stdout.strip(), done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return done.returncode, report


# -- tampering with events.db ----------------------------------------------------------------------


def _events_table(db: sqlite3.Connection) -> str:
    """The table eventsourcing's SQLite recorder keeps stored events in (found by its columns)."""
    tables = db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall()
    found = [
        str(name)
        for name, sql in tables
        if all(column in sql for column in ("originator_id", "originator_version", "state"))
    ]
    assert len(found) == 1, tables
    return found[0]


def _stored(db: sqlite3.Connection, table: str, subject: str, version: int) -> tuple[Any, bytes]:
    """The stored originator id (as the recorder spells it) and state of one event."""
    rows = db.execute(
        f'SELECT originator_id, state FROM "{table}" WHERE originator_version = ?',  # noqa: S608
        (version,),
    ).fetchall()
    matches = [(oid, bytes(state)) for oid, state in rows if uuid.UUID(str(oid)) == uuid.UUID(subject)]
    assert len(matches) == 1, f"{len(matches)} rows for {subject} v{version}"
    return matches[0]


def flip_stored_byte(data_dir: Path, subject: str, version: int, offset: Offset) -> bytes:
    """Inverts every bit of the byte at offset(state) in one stored event; the tampered state."""
    with closing(sqlite3.connect(data_dir / "events.db")) as db:
        table = _events_table(db)
        originator_id, state = _stored(db, table, subject, version)
        tampered = bytearray(state)
        tampered[offset(state)] ^= 0xFF
        with db:
            changed = db.execute(
                f'UPDATE "{table}" SET state = ? WHERE originator_id = ? AND originator_version = ?',  # noqa: S608
                (bytes(tampered), originator_id, version),
            ).rowcount
        assert changed == 1
    return bytes(tampered)


def middle(state: bytes) -> int:
    return len(state) // 2


def middle_of_ciphertext(state: bytes) -> int:
    """The middle of the sealed email's ciphertext: a flip there still decodes as Avro."""
    _, decoded = codec().decode(state)
    ciphertext: bytes = decoded["fields"]["email"]["ciphertext"]
    assert state.count(ciphertext) == 1
    return state.index(ciphertext) + len(ciphertext) // 2


# -- tests -----------------------------------------------------------------------------------------


def _prepare(data_dir: Path) -> tuple[str, str, int]:
    """Two subjects recorded and verified (HTTP while running, CLI once stopped); which to tamper."""
    with running_server(data_dir) as server:
        untouched, tampered = _record_subject(server), _record_subject(server)
        version = _first_support_update(server, tampered)
        report = _http_verify(server)
    assert report["ok"] is True and report["breaks"] == [], report
    assert report["subjects"] == 2
    code, offline = _cli_verify(data_dir)
    assert code == 0, offline
    assert offline["ok"] is True and offline["events"] == report["events"], offline
    return untouched, tampered, version


def test_a_flipped_ciphertext_byte_breaks_the_chain_for_the_cli_and_over_http(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    untouched, subject, version = _prepare(data_dir)
    tampered = flip_stored_byte(data_dir, subject, version, middle_of_ciphertext)
    codec().decode(tampered)  # still well-formed: only the hash link can tell
    code, offline = _cli_verify(data_dir)
    assert code == 1, offline
    assert offline["ok"] is False
    assert len(offline["breaks"]) == 1, offline
    assert offline["breaks"][0].startswith(f"event {version + 1} does not link to its predecessor at ")
    with running_server(data_dir) as server:
        report = _http_verify(server)
    assert report["ok"] is False, report
    assert [(b["subject_id"], b["problem"]) for b in report["breaks"]] == [
        (subject, f"event {version + 1} does not link to its predecessor")
    ]
    assert untouched not in {b["subject_id"] for b in report["breaks"]}
    assert offline["breaks"][0].endswith(f" at {report['breaks'][0]['position']}")


def test_a_flipped_byte_in_the_middle_of_an_event_fails_the_cli_verification(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    _, subject, version = _prepare(data_dir)
    flip_stored_byte(data_dir, subject, version, middle)
    code, offline = _cli_verify(data_dir)
    assert code == 1, offline
    assert offline["ok"] is False and offline["breaks"], offline
    named = " ".join(offline["breaks"])
    assert "undecodable event" in named or f"event {version + 1} does not link" in named, named


@pytest.mark.parametrize("path", ["/v1/audit/verify", f"/v1/subjects/{uuid.uuid4()}/timeline"])
def test_audit_endpoints_need_the_audit_permission(server: Server, path: str) -> None:
    with server.client(SUPPORT) as support, server.client(SHOP) as shop:
        assert problem(support.get(path), 403)["type"].endswith("/role-not-allowed")
        problem(shop.get(path), 401)
    with httpx.Client(base_url=server.base, timeout=10) as anyone:
        assert problem(anyone.get(path), 401)["type"].endswith("/unauthorized")
