"""The embedded shredder SIGKILLed after destroying keys and before its certificate is recorded.

The real `consentry run` process runs under tests/stop_in_shredder.py, which holds the shredder
thread at one point: before the certificate is issued (keys already destroyed), or after it is
issued but before it is recorded. The test waits until the process is there, SIGKILLs it, checks the
files show exactly that moment (keys destroyed, no certificate), then starts the plain server on the
same data directory: it must issue exactly one certificate for the request, purge the read models,
answer reads as the request demands and still verify every hash chain.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import httpx

from consentry.adapters.sqlite_views import SQLiteViewStore
from consentry.core import events as ev
from consentry.core.sealing import CONSENT_SCOPE, IDENTITY_SCOPE, purpose_scope
from consentry.shredder.certificates import verify_document
from tests.e2e.api import DPO, MARKETING, SHOP, SUPPORT, send_accepted
from tests.e2e.conftest import Server, running_server, start_server
from tests.stop_in_shredder import HARNESS, reached
from tests.support import canary, record, scan, sqlite_ledger

MARKETING_SCOPE, SUPPORT_SCOPE = purpose_scope("marketing"), purpose_scope("support")


def _seed(server: Server) -> tuple[str, str, list[str]]:
    """A customer with data under marketing and support; its ref, subject id and canary values."""
    planted = [canary("ref"), canary("mail"), canary("name"), canary("phone"), canary("evidence")]
    ref = f"shop:{planted[0]}"
    results = send_accepted(
        server,
        record("consent.grant", ref, evidence=planted[4]),
        record("consent.grant", ref, purpose="support"),
        record("data.update", ref, fields={"email": planted[1] + "@example.com"}),
        record("data.update", ref, purpose="support", fields={"first_name": planted[2]}),
        record("data.update", ref, purpose="support", fields={"phone": planted[3]}),
    )
    return ref, results[0]["subject_id"], planted


def _request(server: Server, kind: str, ref: str, subject: str) -> threading.Thread:
    """Sends the erasure or withdrawal from a thread: its answer never comes, the server dies."""

    def send() -> None:
        try:
            if kind == "erasure":
                with server.client(DPO) as dpo:
                    dpo.post(f"/v1/subjects/{subject}/erasure")
            else:
                with server.client(SHOP) as shop:
                    shop.post("/v1/events", json={"events": [record("consent.withdrawal", ref)]})
        except httpx.TransportError:
            pass  # the SIGKILL cut the request off, as intended

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def _crash_at(tmp_path: Path, point: str, kind: str) -> tuple[Path, str, str, list[str]]:
    """Runs the request into the crash point and SIGKILLs the server there."""
    data_dir, signal = tmp_path / "data", tmp_path / "stopped"
    server = start_server(data_dir, launcher=(str(HARNESS), point, str(signal)))
    try:
        ref, subject, planted = _seed(server)
        request = _request(server, kind, ref, subject)
        assert reached(signal) == subject
    finally:
        server.process.kill()
        server.process.wait(timeout=30)
        server.log.close()
    request.join(timeout=30)
    return data_dir, ref, subject, planted


def _at_the_crash(data_dir: Path, subject: uuid.UUID, scopes: set[str]) -> None:
    """The files as the SIGKILL left them: the keys destroyed, no shredding recorded."""
    ledger = sqlite_ledger(data_dir)
    try:
        assert {s for s in scopes if ledger.keystore.is_shredded(subject, s)} == scopes
        assert not any(isinstance(e, ev.KeysShredded) for e in ledger.history(subject))
    finally:
        ledger.keystore.close()


def _recorded(data_dir: Path, subject: uuid.UUID) -> list[ev.LedgerEvent]:
    ledger = sqlite_ledger(data_dir)
    try:
        return ledger.history(subject)
    finally:
        ledger.keystore.close()


def _cause(history: list[ev.LedgerEvent], kind: type[ev.LedgerEvent]) -> str:
    return str(next(e for e in history if isinstance(e, kind)).meta.event_id)


def _dpo_verify(server: Server) -> None:
    with server.client(DPO) as dpo:
        report = dpo.get("/v1/audit/verify").json()
    assert report["ok"] is True, report["breaks"]


def test_an_erasure_killed_before_its_certificate_is_certified_once_after_restart(
    tmp_path: Path,
) -> None:
    data_dir, _, subject, planted = _crash_at(tmp_path, "issue", "erasure")
    subject_id = uuid.UUID(subject)
    scopes = {MARKETING_SCOPE, SUPPORT_SCOPE, CONSENT_SCOPE, IDENTITY_SCOPE}
    _at_the_crash(data_dir, subject_id, scopes)

    with running_server(data_dir) as server:
        with server.client(DPO) as dpo:
            document = dpo.get(f"/v1/subjects/{subject}/erasure")
            assert document.status_code == 200, document.text
            assert dpo.get(f"/v1/subjects/{subject}/export").json()["data"] == {}
        with server.client(SUPPORT) as support:
            read = support.get(f"/v1/subjects/{subject}/profile", params={"purpose": "support"})
            assert read.status_code == 410
        _dpo_verify(server)

    history = _recorded(data_dir, subject_id)
    shreds = [e for e in history if isinstance(e, ev.KeysShredded)]
    assert len(shreds) == 1 and shreds[0].meta.causation_id == _cause(history, ev.ErasureRequested)
    assert sum(isinstance(e, ev.SubjectErased) for e in history) == 1
    certificate = verify_document(document.json())
    assert certificate.subject_id == subject_id and set(certificate.scopes) == scopes
    assert certificate.causation_id == shreds[0].meta.causation_id
    views = SQLiteViewStore(data_dir / "views.db")
    try:
        assert views.values(subject_id) == {}
        erasure = views.erasure(subject_id)
        assert erasure is not None and erasure.certificate == shreds[0].certificate
    finally:
        views.close()
    assert scan(data_dir, planted) == {}


def test_a_withdrawal_killed_before_its_certificate_is_recorded_is_certified_once_after_restart(
    tmp_path: Path,
) -> None:
    data_dir, _, subject, planted = _crash_at(tmp_path, "record", "withdrawal")
    subject_id = uuid.UUID(subject)
    _at_the_crash(data_dir, subject_id, {MARKETING_SCOPE})

    with running_server(data_dir) as server:
        with server.client(MARKETING) as marketing:
            read = marketing.get(f"/v1/subjects/{subject}/profile", params={"purpose": "marketing"})
            assert read.status_code == 403
        with server.client(SUPPORT) as support:
            read = support.get(f"/v1/subjects/{subject}/profile", params={"purpose": "support"})
            assert read.status_code == 200
            assert sorted(read.json()["fields"].values()) == sorted(planted[2:4])
        _dpo_verify(server)

    history = _recorded(data_dir, subject_id)
    shreds = [e for e in history if isinstance(e, ev.KeysShredded)]
    assert len(shreds) == 1 and shreds[0].meta.causation_id == _cause(history, ev.ConsentWithdrawn)
    assert shreds[0].scopes == (MARKETING_SCOPE,)
    views = SQLiteViewStore(data_dir / "views.db")
    try:
        assert set(views.values(subject_id)) == {"support"}
    finally:
        views.close()
    assert scan(data_dir, [planted[1]]) == {}
