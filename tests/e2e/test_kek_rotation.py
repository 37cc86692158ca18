"""KEK rotation on a running embedded instance: `consentry keys rotate` over real SQLite files.

A copy of the keystore file taken before the rotation stands for a backup or a stray WAL page: after
the rotation not one key in it can be unwrapped, while the live platform reads everything as before,
keeps its intake and certificate public keys, and wraps new keys under the new KEK.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from consentry.adapters.sqlite_keystore import SQLiteKeystore
from consentry.core.errors import KeyProviderError
from consentry.core.keys import LocalKeyFileProvider
from consentry.core.keystore import KeyRow
from tests.e2e.api import DPO, SUPPORT, consentry, send_accepted, subject_of
from tests.e2e.conftest import Server, running_server
from tests.support import canary, files_under, record


def _consenting_subject(server: Server) -> tuple[str, str]:
    """A subject with support consent and one canary e-mail; (subject id, the e-mail)."""
    ref, email = f"shop:{canary('ref')}", f"{canary('mail')}@example.com"
    send_accepted(
        server,
        record("consent.grant", ref, purpose="support"),
        record("data.update", ref, purpose="support", fields={"email": email}),
    )
    return subject_of(server, ref), email


def _email(server: Server, subject: str) -> Any:
    with server.client(SUPPORT) as support:
        answer = support.get(f"/v1/subjects/{subject}/profile", params={"purpose": "support"})
    assert answer.status_code == 200, answer.text
    return answer.json()["fields"]["email"]


def _public_keys(server: Server) -> tuple[str, str]:
    with server.client(DPO) as dpo:
        intake = dpo.get("/v1/keys/intake-public-key").json()["public_key"]
        certificate = dpo.get("/v1/keys/certificate-public-key").json()["public_key"]
    return intake, certificate


def _rows(keystore_file: Path, provider: LocalKeyFileProvider) -> list[KeyRow]:
    store = SQLiteKeystore(keystore_file, provider)
    try:
        rows = store._stale_keys(0, "", 10_000)  # every live row: no key is wrapped under KEK 0
    finally:
        store.close()
    assert rows
    return rows


def test_after_rotation_a_copy_of_the_keystore_made_before_it_is_useless(tmp_path: Path) -> None:
    data = tmp_path / "data"
    backup = tmp_path / "backup"
    with running_server(data) as server:
        subject, email = _consenting_subject(server)
        assert _email(server, subject) == email
        public_keys = _public_keys(server)
        backup.mkdir()
        for name in ("keystore.db", "keystore.db-wal"):  # the stray copy: file and WAL, as they are
            if (data / name).exists():
                shutil.copy2(data / name, backup / name)
        old_blobs = [row.wrapped.blob for row in _rows(backup / "keystore.db", _provider(data))]

        rotated = consentry("keys", "rotate", "--data-dir", str(data), "--grace-seconds", "1.2")
        assert rotated.returncode == 0, rotated.stderr
        report = json.loads(rotated.stdout)
        assert report["retired"] == [1] and report["active"] == 2
        assert report["rewrapped"] == len(old_blobs) and report["unreadable"] == 0

        # The running process follows the key file: old data reads, new keys use the new KEK.
        assert _email(server, subject) == email
        newcomer, new_email = _consenting_subject(server)
        assert _public_keys(server) == public_keys

    status = consentry("keys", "status", "--data-dir", str(data))
    # The newcomer has as many keys as the first subject.
    assert json.loads(status.stdout)["keys_per_version"] == {"2": 2 * len(old_blobs)}

    provider = _provider(data)
    assert provider.kek_versions == (2,)
    for row in _rows(backup / "keystore.db", provider):
        with pytest.raises(KeyProviderError, match="retired"):
            provider.unwrap(row.wrapped, row.subject_id, row.scope, row.key_id)
    stored = [p.read_bytes() for p in files_under(data)]
    assert not [b for b in old_blobs if any(b in content for content in stored)]

    with running_server(data) as server:  # a fresh process with no cached key
        assert _email(server, subject) == email
        assert _email(server, newcomer) == new_email
        assert _public_keys(server) == public_keys
        with server.client(DPO) as dpo:
            erased = dpo.post(f"/v1/subjects/{subject}/erasure")
        assert erased.status_code == 202, erased.text
        certificate = tmp_path / "certificate.json"
        certificate.write_text(json.dumps(erased.json()["certificate"]))
    verified = consentry("erasure", "verify", str(certificate))
    assert verified.returncode == 0, verified.stderr


def test_rotation_refuses_a_master_key_and_explains_the_way_out(tmp_path: Path) -> None:
    result = consentry("keys", "rotate", "--data-dir", str(tmp_path), CONSENTRY_MASTER_KEY="a" * 44)
    assert result.returncode == 2
    assert "keys init --from-master-key" in result.stderr


def _provider(data: Path) -> LocalKeyFileProvider:
    return LocalKeyFileProvider.open(data / "keys.json")
