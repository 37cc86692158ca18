"""A profile read waits for its subject's data in the views, and only for that."""

from __future__ import annotations

from pathlib import Path

from consentry.core.events import Actor
from consentry.core.settings import load_settings
from consentry.ledger.commands import RecordAccess
from consentry.platform import Platform
from tests.support import EXAMPLE_POLICY, canary, record, submit


def test_refresh_up_to_a_version_catches_up_only_when_the_views_lack_it(tmp_path: Path) -> None:
    platform = Platform.open(load_settings(data_dir=tmp_path, policy=EXAMPLE_POLICY))
    try:
        ref = "shop:" + canary("ref")
        grant, update = submit(
            platform.ledger,
            record("consent.grant", ref, purpose="support"),
            record("data.update", ref, purpose="support", fields={"email": canary("mail")}),
        )
        subject = grant.subject_id
        assert subject is not None and update.status == "accepted"
        views, runner = platform.views, platform.runner
        # Written but not yet projected: a read that needs the data catches the views up.
        state = platform.ledger.load(subject)
        assert views.applied([subject]).get(subject, 0) < state.data_version
        runner.refresh(subject, state.data_version)
        assert views.applied([subject])[subject] == state.version
        assert set(views.values(subject, "support")["support"]) == {"email"}
        # Another read's access event changes no data: the next read does not wait for it.
        actor = Actor("sam-support", "support_agent")
        platform.ledger.execute([RecordAccess(subject, actor, "support", ("email",), "profile")])
        state = platform.ledger.load(subject)
        assert state.version == state.data_version + 1
        runner.refresh(subject, state.data_version)
        assert views.applied([subject])[subject] == state.version - 1
        assert views.accesses(subject) == []
        # Without a version, refresh takes in everything, the access log included.
        runner.refresh(subject)
        assert views.applied([subject])[subject] == state.version
        assert [a.kind for a in views.accesses(subject)] == ["profile"]
    finally:
        platform.close()
