"""project_new: the changes of the events the views lack, and the marks of the subjects they move."""

from __future__ import annotations

import uuid
from pathlib import Path

from consentry.core.events import LedgerEvent
from consentry.core.views import MarkApplied
from consentry.processors.projector import compact, project, project_new
from tests.support import canary, sqlite_ledger, submit, support_history


def _histories(tmp_path: Path) -> dict[uuid.UUID, list[LedgerEvent]]:
    """Three subjects' events from a real ledger: a grant, two updates and an access each."""
    ledger = sqlite_ledger(tmp_path)
    for n in range(3):
        submit(ledger, *support_history("shop:" + canary(f"ref{n}"), updates=2))
    found: dict[uuid.UUID, list[LedgerEvent]] = {}
    for _, event in ledger.recent(0):
        found.setdefault(event.meta.subject_id, []).append(event)
    ledger.close()
    return found


def test_only_events_past_each_subjects_mark_are_projected_and_moved_marks_follow(
    tmp_path: Path,
) -> None:
    histories = _histories(tmp_path)
    first, second, third = histories
    # Interleaved, as a live page is; the first subject's events twice (a redelivery).
    page = [e for events in zip(*histories.values(), strict=False) for e in events]
    page += histories[first]
    applied = {first: 2, second: len(histories[second]), uuid.uuid4(): 7}

    changes = project_new(page, applied)

    new_events = [e for e in page[: len(page) - len(histories[first])] if e.meta.subject_id != second]
    new_events = [e for e in new_events if e.meta.sequence > applied.get(e.meta.subject_id, 0)]
    expected = compact([c for e in new_events for c in project(e)])
    marks = [c for c in changes if isinstance(c, MarkApplied)]
    assert changes[: len(changes) - len(marks)] == expected
    assert sorted(marks, key=lambda m: str(m.subject_id)) == sorted(
        [
            MarkApplied(first, histories[first][-1].meta.sequence),
            MarkApplied(third, histories[third][-1].meta.sequence),
        ],
        key=lambda m: str(m.subject_id),
    )
    assert project_new(page, {s: h[-1].meta.sequence for s, h in histories.items()}) == []
