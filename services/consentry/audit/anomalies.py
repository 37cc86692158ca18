"""Access anomalies: reads above an actor's usual rate, and reads outside any open task.

The watch follows the log (access, task and anomaly events only, decoded without keys) and turns
the policy's `anomalies` rules into `AccessAnomalyFlagged` events in the stream of the subject whose
read broke the rule. Reads are never blocked: the flag is for the auditor, visible in the subject's
timeline and in `GET /v1/audit/anomalies`.

Rates are counted in fixed windows of `window_minutes` per actor; an actor is flagged at most once
per window (the window is in the flag's idempotency cause, so two watchers, or one restarted, never
flag the same window twice). A read outside any open task is flagged once per read.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from consentry.core import events as ev
from consentry.core.avro import AvroCodec
from consentry.core.event_codec import decode_event
from consentry.core.policy import AnomalyRules
from consentry.ledger.application import Ledger
from consentry.ledger.commands import FlagAnomaly

_WATCHED: Final = frozenset(
    cls.avro_name for cls in (ev.DataAccessed, ev.TaskUpdated, ev.AccessAnomalyFlagged)
)


@dataclass(slots=True)
class _Actor:
    """Reads per fixed window (by window number) and the last window flagged."""

    windows: dict[int, int]
    flagged: int = -1


class AnomalyWatch:
    """The state the rules need, folded from the log, and the flags it calls for."""

    def __init__(self) -> None:
        self.position = 0
        self._actors: dict[str, _Actor] = defaultdict(lambda: _Actor({}))
        self._open: dict[tuple[uuid.UUID, str], set[str]] = defaultdict(set)

    def observe(self, event: ev.LedgerEvent, rules: AnomalyRules) -> list[FlagAnomaly]:
        """Folds one event in; the flags its read calls for (none for other events)."""
        meta = event.meta
        match event:
            case ev.TaskUpdated():
                tasks = self._open[(meta.subject_id, event.role)]
                if event.status == "open":
                    tasks.add(event.task_id)
                else:
                    tasks.discard(event.task_id)
            case ev.AccessAnomalyFlagged() if event.rule == "rate" and rules.rate is not None:
                number = _window(meta.recorded_at, rules.rate.window_minutes)
                actor = self._actors[event.actor_id]
                actor.flagged = max(actor.flagged, number)
            case ev.DataAccessed() if meta.actor is not None:
                return self._read(event, meta.actor, rules)
        return []

    def _read(self, event: ev.DataAccessed, who: ev.Actor, rules: AnomalyRules) -> list[FlagAnomaly]:
        meta, flags = event.meta, []

        def flag(rule: str, detail: str, cause: str) -> FlagAnomaly:
            return FlagAnomaly(
                meta.subject_id, who.actor_id, who.role, rule, meta.event_id, detail, cause
            )

        if who.role in rules.open_task_roles and not self._open[(meta.subject_id, who.role)]:
            detail = f"no open task of role {who.role} for the subject"
            flags.append(flag("outside_open_task", detail, f"anomaly:task:{meta.event_id}"))
        rate = rules.rate
        if rate is None:
            return flags
        actor = self._actors[who.actor_id]
        number = _window(meta.recorded_at, rate.window_minutes)
        actor.windows[number] = actor.windows.get(number, 0) + 1
        baseline = rate.baseline_days * 24 * 60 // rate.window_minutes
        for old in [n for n in actor.windows if n < number - baseline]:
            del actor.windows[old]
        usual = sum(c for n, c in actor.windows.items() if n < number) / baseline
        current = actor.windows[number]
        threshold = max(float(rate.min_reads), rate.factor * usual)
        if current > threshold and actor.flagged < number:
            actor.flagged = number
            detail = (
                f"{current} reads in a {rate.window_minutes}-minute window; "
                f"usual {usual:.1f}, threshold {threshold:.1f}"
            )
            flags.append(flag("rate", detail, f"anomaly:rate:{who.actor_id}:{number}"))
        return flags

    def follow(
        self, codec: AvroCodec, notifications: Iterable[tuple[int, bytes]], rules: AnomalyRules
    ) -> list[FlagAnomaly]:
        """Observes the log's new events; the flags they call for."""
        flags: list[FlagAnomaly] = []
        idle = rules.rate is None and not rules.open_task_roles
        for position, state in notifications:
            self.position = position
            if idle:
                continue  # no rule to apply: a policy with rules takes effect at the next start
            writer = codec.writer_of(state)
            if writer is not None and writer.name in _WATCHED:
                flags += self.observe(decode_event(codec, state), rules)
        return flags

    def sweep(self, ledger: Ledger) -> int:
        """Flags what the log's new reads call for; answers how many flags were recorded."""
        flags = self.follow(ledger.codec, ledger.notifications(self.position), ledger.policy.anomalies)
        outcomes = ledger.execute(flags) if flags else []
        return sum(1 for o in outcomes if o.status == "accepted")


def _window(at: datetime, minutes: int) -> int:
    return int(at.timestamp()) // (minutes * 60)


def anomaly_list(
    codec: AvroCodec,
    notifications: Iterable[tuple[int, bytes]],
    keep: Callable[[ev.AccessAnomalyFlagged], bool],
) -> list[dict[str, Any]]:
    """Every flag in the log that `keep` selects, oldest first (pseudonymous metadata only)."""
    found = []
    for _, state in notifications:
        writer = codec.writer_of(state)
        if writer is None or writer.name != ev.AccessAnomalyFlagged.avro_name:
            continue
        event = decode_event(codec, state)
        if isinstance(event, ev.AccessAnomalyFlagged) and keep(event):
            found.append(
                {
                    "event_id": str(event.meta.event_id),
                    "subject_id": str(event.meta.subject_id),
                    "actor_id": event.actor_id,
                    "role": event.role,
                    "rule": event.rule,
                    "access_event_id": str(event.access_event_id),
                    "detail": event.detail,
                    "at": event.meta.recorded_at.isoformat(),
                }
            )
    return found
