"""Replaying the whole log rebuilds read models identical to the live ones."""

from __future__ import annotations

from pathlib import Path

from consentry.core.settings import load_settings
from consentry.platform import Platform
from tests.support import EXAMPLE_POLICY, canary, record, submit


def test_a_replay_rebuilds_the_same_views_as_the_live_run_and_keeps_erased_subjects_erased(
    tmp_path: Path,
) -> None:
    platform = Platform.open(load_settings(data_dir=tmp_path, policy=EXAMPLE_POLICY))
    subjects = []
    for n in range(20):
        ref = "shop:" + canary(f"ref{n}")
        outcomes = submit(
            platform.ledger,
            record("consent.grant", ref, purpose="support"),
            record("data.update", ref, purpose="support", fields={"email": canary("mail")}),
            record("consent.grant", ref),
            record("data.update", ref),
        )
        subjects.append((ref, outcomes[0].subject_id))
    submit(platform.ledger, record("consent.withdrawal", subjects[1][0]))
    submit(platform.ledger, record("erasure.request", subjects[2][0]))
    platform.after_write()
    kept, withdrawn, erased = subjects[3][1], subjects[1][1], subjects[2][1]
    assert kept is not None and withdrawn is not None and erased is not None
    live = platform.views.dump()

    replayed = platform.runner.rebuild()

    assert replayed == platform.ledger.recorder.max_notification_id()
    assert platform.views.dump() == live
    assert set(platform.views.values(kept)) == {"support", "marketing"}
    assert set(platform.views.values(withdrawn)) == {"support"}
    assert platform.views.values(erased) == {}
    assert platform.views.subject_status(erased) == "erased"
    platform.close()
