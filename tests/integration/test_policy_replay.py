"""The events of the policy features replay: views rebuilt from the log equal the live ones."""

from __future__ import annotations

from pathlib import Path

import yaml

from consentry.core.events import Actor
from consentry.core.settings import load_settings
from consentry.ledger.chain import verify_chain
from consentry.ledger.commands import RecordAccess, RecordContact, RecordShare
from consentry.platform import Platform
from tests.support import EXAMPLE_POLICY, canary, record, submit


def test_contacts_shares_tasks_anomalies_and_retention_replay_to_the_same_views(tmp_path: Path) -> None:
    rules = yaml.safe_load(EXAMPLE_POLICY.read_text())
    rules["anomalies"] = {"open_task_roles": ["support_agent"]}
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(rules))
    platform = Platform.open(load_settings(data_dir=tmp_path / "data", policy=policy))
    ledger = platform.ledger
    ref = "shop:" + canary("ref")
    submit(
        ledger,
        record("consent.grant", ref),
        record("data.update", ref, fields={"email": canary("mail") + "@example.com"}),
        record("consent.grant", ref, purpose="support"),
        record("data.update", ref, purpose="support", fields={"email": canary("s") + "@example.com"}),
        record("task.report", ref, task_id="ticket-9", role="support_agent", status="closed"),
        record("data.update", ref, purpose="billing", fields={"city": canary("c")},
               occurred_at="2012-01-01T00:00:00+00:00"),
    )  # fmt: skip
    subject = ledger.find_subject("shop", ref.removeprefix("shop:"))
    assert subject is not None
    marketer, agent = Actor("bob-marketing", "marketer"), Actor("alice-support", "support_agent")
    outcomes = ledger.execute(
        [
            RecordContact(subject, marketer, "marketing", "email"),
            RecordShare(subject, marketer, "marketing", "mailer-example", "dpa-2026-mailer", ("email",)),
            RecordAccess(subject, agent, "support", ("email",)),
        ]
    )
    assert [o.status for o in outcomes] == ["accepted"] * 3
    platform.after_write()
    assert len(platform.sweep_retention()) == 1
    assert platform.sweep_anomalies() == 1
    platform.runner.refresh()
    types = [e.type_name for e in ledger.history(subject)]
    for kind in ("ContactRecorded", "DataShared", "TaskUpdated", "AccessAnomalyFlagged", "KeysShredded"):
        assert kind in types, types
    live = platform.views.dump()

    assert platform.runner.rebuild() == ledger.recorder.max_notification_id()
    assert platform.views.dump() == live
    assert verify_chain(ledger.codec, ledger.notifications()).ok
    platform.close()
