"""The anomaly rules on their own: rate above the usual, reads outside an open task."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from consentry.audit.anomalies import AnomalyWatch
from consentry.core import events as ev
from consentry.core.events import Actor, EventMeta
from consentry.core.policy import AnomalyRules, RateRule
from consentry.ledger.commands import FlagAnomaly
from tests.support import T0

RATE = AnomalyRules(rate=RateRule(window_minutes=60, baseline_days=1, factor=3, min_reads=4))
TASKS = AnomalyRules(open_task_roles=("support_agent",))
ALICE = Actor("alice", "support_agent")


def _meta(subject: uuid.UUID, at: datetime, actor: Actor | None = None) -> EventMeta:
    return EventMeta(uuid.uuid4(), subject, 1, at, at, "p", actor=actor)


def _read(
    watch: AnomalyWatch,
    rules: AnomalyRules,
    at: datetime,
    subject: uuid.UUID | None = None,
    who: Actor = ALICE,
) -> list[FlagAnomaly]:
    event = ev.DataAccessed(_meta(subject or uuid.uuid4(), at, who), "support", ("email",), "profile")
    return watch.observe(event, rules)


def test_a_burst_above_min_reads_is_flagged_once_per_window() -> None:
    watch = AnomalyWatch()
    start = T0.replace(minute=0)
    flags = [f for n in range(8) for f in _read(watch, RATE, start + timedelta(minutes=n))]
    assert [(f.rule, f.actor_id) for f in flags] == [("rate", "alice")]
    assert flags[0].detail.startswith("5 reads in a 60-minute window")
    later = [f for n in range(5) for f in _read(watch, RATE, start + timedelta(hours=1, minutes=n))]
    assert len(later) == 1 and later[0].cause != flags[0].cause
    assert _read(watch, RATE, start, who=Actor("bob", "marketer")) == []  # per actor


def test_the_usual_rate_raises_the_threshold() -> None:
    watch = AnomalyWatch()
    start = T0.replace(minute=0)
    for hour in range(24):  # ten reads an hour, every hour of the baseline day
        for n in range(10):
            _read(watch, RATE, start + timedelta(hours=hour, minutes=n))
    busy = start + timedelta(hours=24)
    flags = [f for n in range(30) for f in _read(watch, RATE, busy + timedelta(minutes=n))]
    # Usual is about 10 an hour, so 3 x usual = about 30: the 31st read is the first above it.
    assert flags == []
    assert [f.rule for f in _read(watch, RATE, busy + timedelta(minutes=31))] == ["rate"]


def test_reads_outside_an_open_task_of_the_role_are_flagged_each_time() -> None:
    watch, subject = AnomalyWatch(), uuid.uuid4()
    assert [f.rule for f in _read(watch, TASKS, T0, subject)] == ["outside_open_task"]
    watch.observe(ev.TaskUpdated(_meta(subject, T0), "ticket-1", "support_agent", "open"), TASKS)
    assert _read(watch, TASKS, T0, subject) == []
    assert _read(watch, TASKS, T0, subject, Actor("bob", "marketer")) == []  # not a task role
    watch.observe(ev.TaskUpdated(_meta(subject, T0), "ticket-1", "support_agent", "closed"), TASKS)
    assert [f.rule for f in _read(watch, TASKS, T0, subject)] == ["outside_open_task"]
