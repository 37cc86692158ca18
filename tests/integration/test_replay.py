"""Replaying the whole log rebuilds read models identical to the live ones."""

from __future__ import annotations

import sqlite3
from contextlib import closing
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


# The views file as layout 1 made it (no user_version): the access log keyed by event id.
_LAYOUT_1_ACCESSES = """
CREATE TABLE accesses (
    event_id BLOB PRIMARY KEY, subject_id BLOB NOT NULL, actor_id TEXT NOT NULL,
    role TEXT NOT NULL, purpose TEXT NOT NULL, field_names TEXT NOT NULL, kind TEXT NOT NULL,
    allowed INTEGER NOT NULL, reason TEXT NOT NULL, at TEXT NOT NULL);
CREATE INDEX accesses_by_subject ON accesses (subject_id, at);
"""


def test_views_of_an_older_layout_are_dropped_at_start_and_built_again_from_the_log(
    tmp_path: Path,
) -> None:
    settings = load_settings(data_dir=tmp_path, policy=EXAMPLE_POLICY)
    platform = Platform.open(settings)
    refs = ["shop:" + canary(f"ref{n}") for n in range(6)]
    for ref in refs:
        submit(
            platform.ledger,
            record("consent.grant", ref, purpose="support"),
            record("data.update", ref, purpose="support", fields={"email": canary("mail")}),
            record(
                "access.report",
                ref,
                purpose="support",
                actor_id="agent-1",
                role="support_agent",
                field_names=["email"],
            ),
        )
    platform.after_write()
    live = platform.views.dump()
    assert any(table == "accesses" and rows for table, rows in live.items())
    platform.close()
    # What layout 1 left behind: its own access table, no layout number, a position.
    with closing(sqlite3.connect(tmp_path / "views.db")) as db:
        db.executescript("DROP TABLE accesses;" + _LAYOUT_1_ACCESSES + "PRAGMA user_version=0;")
        db.execute(
            "INSERT INTO accesses SELECT randomblob(16), subject_id, actor_id, role, purpose, "
            "field_names, kind, allowed, reason, at FROM subjects CROSS JOIN "
            "(SELECT 'a' actor_id, 'r' role, 'p' purpose, '' field_names, 'k' kind, 1 allowed, "
            "'' reason) LIMIT 1"
        )
        db.commit()

    platform = Platform.open(settings)
    platform.recover()

    assert platform.views.dump() == live
    platform.close()
    with closing(sqlite3.connect(tmp_path / "views.db")) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (2,)
        sql = db.execute("SELECT sql FROM sqlite_master WHERE name='accesses'").fetchone()[0]
        assert "WITHOUT ROWID" in sql
        assert db.execute(
            "SELECT count(*) FROM sqlite_master WHERE type='index' AND sql IS NOT NULL"
        ).fetchone() == (0,)
