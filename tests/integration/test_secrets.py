"""No secret in any repr, str, log record or error text of our objects.

A real embedded platform on SQLite files (key file and master-key variants) is opened in this
process; its secrets are collected where they live (the key file's KEKs, index key and signing
seed, the intake seed, data keys unwrapped through the keystore, the producer tokens), registered for
the session's leak check (tests/conftest.py scans every log and error text for them), and looked
for in the repr and str of every object that holds one, and in the texts of the errors they raise.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from consentry.client import Producer, consent_grant
from consentry.core.errors import ConsentryError, Rejected
from consentry.core.events import Actor
from consentry.core.keys import LocalKeyFileProvider
from consentry.core.sealing import Personal, purpose_scope
from consentry.core.settings import Settings
from consentry.core.transit import IntakeOpener, IntakeSealer
from consentry.ledger.commands import RequestErasure
from consentry.platform import Platform
from tests.leaks import REGISTER, secret_forms
from tests.support import EXAMPLE_POLICY, canary, fake_email, master_key, record, submit

SHOP = "demo-shop-token"


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    opened = Platform.open(Settings(data_dir=tmp_path / "data", policy=EXAMPLE_POLICY))
    yield opened
    opened.close()


def secrets_of(platform: Platform, data_dir: Path) -> dict[str, bytes]:
    """Every secret the platform holds, by name, as raw bytes."""
    keyfile = json.loads((data_dir / "keys.json").read_text())
    found = {f"KEK {v}": base64.b64decode(k) for v, k in keyfile["keks"].items()}
    found["index key"] = base64.b64decode(keyfile["index_key"])
    found["signing seed"] = base64.b64decode(keyfile["signing_key"])
    provider = platform.provider
    assert isinstance(provider, LocalKeyFileProvider)
    found["intake seed"] = provider._intake_seed  # the secret under test, where it is kept
    found["token"] = SHOP.encode()
    for name, value in found.items():
        REGISTER.secret(name, value)
    return found


def _data_keys(platform: Platform, subject: uuid.UUID) -> dict[str, bytes]:
    found = {}
    for scope in (purpose_scope("support"), "identity", "consent"):
        try:
            found[f"DEK {scope}"] = platform.keystore.get(subject, scope).secret
        except ConsentryError:
            continue
    assert found, "no data key was created"
    for name, value in found.items():
        REGISTER.secret(name, value)
    return found


def _leaked(secrets: dict[str, bytes], texts: dict[str, str]) -> list[str]:
    hits = []
    for where, text in texts.items():
        encoded = text.encode("utf-8", "backslashreplace")
        for name, value in secrets.items():
            if any(form in encoded for form in secret_forms(value)):
                hits.append(f"{name} in {where}")
    return hits


def _texts(*objects: Any) -> dict[str, str]:
    texts = {}
    for index, obj in enumerate(objects):
        texts[f"repr of #{index} {type(obj).__name__}"] = repr(obj)
        texts[f"str of #{index} {type(obj).__name__}"] = str(obj)
    return texts


def test_no_secret_in_any_repr_str_or_error_text(
    platform: Platform, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="consentry")
    secrets = secrets_of(platform, tmp_path / "data")
    ref = f"shop:{canary('ref')}"
    outcomes = submit(
        platform.ledger,
        record("consent.grant", ref, purpose="support", evidence=canary("evidence")),
        record("data.update", ref, purpose="support", fields={"email": fake_email()}),
    )
    subject = outcomes[0].subject_id
    assert subject is not None
    platform.after_write()
    secrets |= _data_keys(platform, subject)
    provider = platform.provider
    sealer = IntakeSealer(provider.intake_public_key())
    opener = IntakeOpener(provider.intake_key())
    envelope = sealer.seal(SHOP, [b"\xc3\x01record"])
    master_text = master_key()
    master = Settings(master_key=SecretStr(master_text), policy=EXAMPLE_POLICY)
    secrets["master key"] = base64.b64decode(master_text)
    REGISTER.secret("master key", secrets["master key"])
    objects: list[Any] = [
        platform,
        platform.settings,
        master,
        provider,
        LocalKeyFileProvider.from_master_key(master_text),
        platform.keystore,
        platform.ledger,
        platform.policy,
        platform.shredder,
        provider.intake_key(),
        sealer,
        opener,
        opener.open(envelope),
        Producer(SHOP, http_url="http://127.0.0.1:9"),
        consent_grant(ref, "support", "web", "n-1"),
        Personal(SHOP),
        *[platform.keystore.get(subject, purpose_scope("support"))],
        *platform.keystore.key_versions(subject, purpose_scope("support")),
    ]
    texts = _texts(*objects)
    texts |= _error_texts(platform, subject, opener)
    texts |= {f"log record {i}": r.getMessage() for i, r in enumerate(caplog.records)}
    for where, text in texts.items():
        REGISTER.text(where, text)
    assert _leaked(secrets, texts) == []


def _error_texts(platform: Platform, subject: uuid.UUID, opener: IntakeOpener) -> dict[str, str]:
    """The messages of errors raised near secrets: a missing key, a shredded one, a bad envelope."""
    texts: dict[str, str] = {}
    attempts: dict[str, Callable[[], object]] = {
        "a missing data key": lambda: platform.keystore.get(subject, purpose_scope("billing")),
        "an unknown key id": lambda: platform.keystore.get_by_id("k-" + uuid.uuid4().hex),
        "an envelope that does not open": lambda: opener.open(b"CSI\x01\x01" + b"\x00" * 1200),
        "a bad master key": lambda: LocalKeyFileProvider.from_master_key("bm90LWJhc2U2NA" + SHOP),
        "a refused producer": lambda: Producer(""),
    }
    for name, attempt in attempts.items():
        try:
            attempt()
        except (ConsentryError, Rejected, ValueError) as exc:
            texts[f"error of {name}"] = f"{exc!r} {exc}"
        else:
            pytest.fail(f"{name} raised nothing")
    platform.ledger.execute([RequestErasure(subject, Actor("dana-dpo", "dsr"))])
    platform.shredder.erase(subject)
    try:
        platform.keystore.get(subject, purpose_scope("support"))
    except ConsentryError as exc:
        texts["error of a shredded key"] = f"{exc!r} {exc}"
    return texts
