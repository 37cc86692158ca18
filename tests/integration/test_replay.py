"""Replaying the whole log rebuilds read models identical to the live ones."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from consentry.core.settings import load_settings
from consentry.platform import Platform
from tests.support import EXAMPLE_POLICY, canary, record, submit, support_history


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
_LAYOUT_1 = """
DROP TABLE accesses;
CREATE TABLE accesses (
    event_id BLOB PRIMARY KEY, subject_id BLOB NOT NULL, actor_id TEXT NOT NULL,
    role TEXT NOT NULL, purpose TEXT NOT NULL, field_names TEXT NOT NULL, kind TEXT NOT NULL,
    allowed INTEGER NOT NULL, reason TEXT NOT NULL, at TEXT NOT NULL);
CREATE INDEX accesses_by_subject ON accesses (subject_id, at);
PRAGMA user_version=0;
INSERT INTO accesses SELECT randomblob(16), subject_id, 'a', 'r', 'p', '', 'k', 1, '', at
FROM subjects LIMIT 1;
"""
# Layout 2: the subjects, their marks, values and consents in rowid tables, each with an index on
# its key. One stray row in an emptied table: left in place, the views would not match the log.
_LAYOUT_2 = """
DROP TABLE applied; DROP TABLE subjects; DROP TABLE profile_values; DROP TABLE consents;
CREATE TABLE applied (subject_id BLOB PRIMARY KEY, sequence INTEGER NOT NULL);
CREATE TABLE subjects (
    subject_id BLOB PRIMARY KEY, status TEXT NOT NULL, at TEXT NOT NULL, version INTEGER NOT NULL);
CREATE TABLE profile_values (
    subject_id BLOB NOT NULL, purpose TEXT NOT NULL, field TEXT NOT NULL, scope TEXT NOT NULL,
    key_id TEXT NOT NULL, nonce BLOB NOT NULL, ciphertext BLOB NOT NULL, event_id BLOB NOT NULL,
    at TEXT NOT NULL, PRIMARY KEY (subject_id, purpose, field));
CREATE TABLE consents (
    subject_id BLOB NOT NULL, purpose TEXT NOT NULL, status TEXT NOT NULL,
    lawful_basis TEXT NOT NULL, since TEXT NOT NULL, expires_at TEXT, event_id BLOB NOT NULL,
    PRIMARY KEY (subject_id, purpose));
PRAGMA user_version=2;
INSERT INTO subjects VALUES (randomblob(16), 'active', '2026-01-01T00:00:00+00:00', 1);
"""
# The tables keyed by something other than a rowid that are one tree each (layout 3).
_CLUSTERED = ("accesses", "applied", "subjects", "profile_values", "consents")


@pytest.mark.parametrize("older", [_LAYOUT_1, _LAYOUT_2], ids=["layout-1", "layout-2"])
def test_views_of_an_older_layout_are_dropped_at_start_and_built_again_from_the_log(
    tmp_path: Path, older: str
) -> None:
    settings = load_settings(data_dir=tmp_path, policy=EXAMPLE_POLICY)
    platform = Platform.open(settings)
    refs = ["shop:" + canary(f"ref{n}") for n in range(6)]
    for ref in refs:
        submit(platform.ledger, *support_history(ref))
    platform.after_write()
    live = platform.views.dump()
    assert all(live[table] for table in _CLUSTERED)
    platform.close()
    # What the older layout left behind: its own tables, its layout number, a position.
    with closing(sqlite3.connect(tmp_path / "views.db")) as db:
        db.executescript(older)
        db.commit()

    platform = Platform.open(settings)
    platform.recover()

    assert platform.views.dump() == live
    platform.close()
    with closing(sqlite3.connect(tmp_path / "views.db")) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (3,)
        for table in _CLUSTERED:
            sql = db.execute("SELECT sql FROM sqlite_master WHERE name=?", (table,)).fetchone()[0]
            assert "WITHOUT ROWID" in sql, table
        assert db.execute(
            "SELECT count(*) FROM sqlite_master WHERE type='index' AND sql IS NOT NULL"
        ).fetchone() == (0,)
