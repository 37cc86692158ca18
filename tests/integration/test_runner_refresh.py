"""A profile read waits for its subject's data in the views, and only for that."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from consentry.core.events import Actor
from consentry.core.settings import load_settings
from consentry.core.views import Change
from consentry.ledger.commands import RecordAccess
from consentry.platform import Platform
from consentry.processors.runner import BACKGROUND_PAGE, EmbeddedRunner
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


def test_the_background_thread_applies_in_small_pages_what_nobody_waits_for(tmp_path: Path) -> None:
    platform = Platform.open(load_settings(data_dir=tmp_path, policy=EXAMPLE_POLICY))
    try:
        ref = "shop:" + canary("ref")
        (grant,) = submit(platform.ledger, record("consent.grant", ref, purpose="support"))
        subject = grant.subject_id
        assert subject is not None
        platform.runner.refresh()
        actor = Actor("sam-support", "support_agent")
        reads = 3 * BACKGROUND_PAGE + 7
        for _ in range(reads):
            platform.ledger.execute([RecordAccess(subject, actor, "support", (), "profile")])
        pages: list[int] = []
        views = platform.views
        apply_at = views.apply_at

        def counted(changes: Sequence[Change], positions: Mapping[str, int]) -> None:
            pages.append(positions["views"])
            apply_at(changes, positions)

        views.apply_at = counted  # type: ignore[method-assign]
        last = platform.ledger.recorder.max_notification_id()
        assert last is not None
        runner = platform.runner
        assert isinstance(runner, EmbeddedRunner)
        runner.start(interval=0.01)
        deadline = time.monotonic() + 10
        while views.position("views") < last and time.monotonic() < deadline:
            time.sleep(0.01)
        runner.stop()
        assert len(views.accesses(subject)) == reads
        # Pages of at most BACKGROUND_PAGE events each (4 pages here, not 1 of 500).
        starts = [last - reads, *pages[:-1]]
        assert len(pages) == 4
        assert all(end - start <= BACKGROUND_PAGE for start, end in zip(starts, pages, strict=True))
    finally:
        platform.close()
