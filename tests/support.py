"""Shared builders for tests: fake-but-obvious data, a ledger on real SQLite files, file scans."""

from __future__ import annotations

import base64
import os
import secrets
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from consentry.adapters.sqlite_keystore import SQLiteKeystore
from consentry.core.avro import AvroCodec
from consentry.core.clock import Clock
from consentry.core.errors import Rejected
from consentry.core.intake import IntakeParser, IntakeRecord
from consentry.core.keys import LocalKeyFileProvider
from consentry.core.policy import Policy, load_policy
from consentry.ledger.application import Ledger, open_recorder
from consentry.ledger.subject import Outcome
from tests.leaks import REGISTER

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
EXAMPLE_POLICY = ROOT / "examples" / "policy.yaml"
T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def canary(label: str = "value") -> str:
    """A value that is obviously fake and unique enough to scan files for (see tests/leaks.py)."""
    return REGISTER.canary(f"canary-{label}-{secrets.token_hex(6)}")


def until(done: Callable[[], bool], what: str, seconds: float = 20.0) -> None:
    """Polls `done` until it holds; after `seconds` the test fails, saying what did not happen."""
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def calls_of(owner: object, name: str, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """The arguments of every call of `owner.name` from now on (each call still goes through)."""
    calls: list[tuple[Any, ...]] = []
    method = getattr(owner, name)

    def recorded(*args: Any) -> Any:
        calls.append(args)
        return method(*args)

    monkeypatch.setattr(owner, name, recorded)
    return calls


def fake_email() -> str:
    """A fake address, registered as a canary like every planted personal value."""
    return REGISTER.canary(f"user-{secrets.token_hex(5)}@example.com")


def master_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def codec() -> AvroCodec:
    return AvroCodec(SCHEMAS)


def policy() -> Policy:
    return load_policy(EXAMPLE_POLICY)


class StepClock(Clock):
    """A clock that moves a millisecond every time it is read."""

    def __init__(self, start: datetime = T0) -> None:
        self.current = start

    def now(self) -> datetime:
        self.current += timedelta(milliseconds=1)
        return self.current


def sqlite_ledger(data_dir: Path, clock: Clock | None = None, *, sole_writer: bool = False) -> Ledger:
    """A ledger on SQLite files under data_dir (events.db and keystore.db), like embedded mode."""
    data_dir.mkdir(parents=True, exist_ok=True)
    provider = LocalKeyFileProvider.open(data_dir / "keys.json")
    the_clock = clock or StepClock()
    keystore = SQLiteKeystore(data_dir / "keystore.db", provider, the_clock, sole_writer=sole_writer)
    _, recorder = open_recorder(
        {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(data_dir / "events.db"),
            "CREATE_TABLE": "y",
        }
    )
    the_policy = policy()
    return Ledger(recorder, codec(), keystore, lambda: the_policy, the_clock, sole_writer=sole_writer)


def parser(clock: Clock | None = None) -> IntakeParser:
    the_clock = clock or StepClock(datetime.now(UTC))
    return IntakeParser(codec(), the_clock.now)


def record(kind: str, ref: str, **values: Any) -> dict[str, Any]:
    """The JSON form of an intake record with sensible fake defaults."""
    base: dict[str, Any] = {
        "type": kind,
        "subject_ref": ref,
        "idempotency_key": f"idem-{uuid.uuid4().hex}",
        "occurred_at": T0.isoformat(),
    }
    if kind == "consent.grant":
        base |= {"purpose": "marketing", "channel": "web", "notice_version": "n-1"}
    if kind in ("consent.withdrawal", "contact.report"):
        base |= {"purpose": "marketing", "channel": "web"}
    if kind == "data.update":
        base |= {"purpose": "marketing", "fields": {"email": fake_email()}}
    if kind == "task.report":
        base |= {"task_id": f"ticket-{secrets.token_hex(4)}", "role": "support_agent", "status": "open"}
    return base | values


def support_history(ref: str, updates: int = 1) -> list[dict[str, Any]]:
    """A subject's records for the support purpose: a grant, `updates` updates, an agent's access."""
    access = record(
        "access.report",
        ref,
        purpose="support",
        actor_id="agent-1",
        role="support_agent",
        field_names=["email"],
    )
    update = [
        record("data.update", ref, purpose="support", fields={"email": canary("mail")})
        for _ in range(updates)
    ]
    return [record("consent.grant", ref, purpose="support"), *update, access]


def files_under(root: Path) -> Iterable[Path]:
    return (p for p in root.rglob("*") if p.is_file())


def scan(root: Path, needles: Iterable[str]) -> dict[str, list[str]]:
    """Which needles appear (as UTF-8 or UTF-16 bytes) in which files under root."""
    patterns = {n: (n.encode(), n.encode("utf-16-le")) for n in needles}
    hits: dict[str, list[str]] = {}
    for path in files_under(root):
        data = path.read_bytes()
        for needle, forms in patterns.items():
            if any(form in data for form in forms):
                hits.setdefault(needle, []).append(path.name)
    return hits


def submit(ledger: Ledger, *records: dict[str, Any], producer: str = "shop") -> list[Outcome]:
    """Parses JSON intake records (refusals included, as intake would pass them) and submits them."""
    intake = parser()
    parsed: list[IntakeRecord | Rejected] = []
    for item in records:
        try:
            parsed.append(intake.from_json(item))
        except Rejected as exc:
            parsed.append(exc)
    return ledger.submit(producer, parsed)
