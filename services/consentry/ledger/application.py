"""The ledger: decides intake records and staff commands, seals, chains and appends in one batch.

A batch is decided against subject states loaded once, sealed by the mapper, linked into each
subject's hash chain and inserted in one transaction. A concurrent writer on the same subject makes
the insert conflict (unique subject/version), and the whole batch is decided again on fresh state.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

from eventsourcing.persistence import (
    ApplicationRecorder,
    InfrastructureFactory,
    IntegrityError,
    StoredEvent,
)

from consentry.core import intake as rec
from consentry.core.avro import AvroCodec
from consentry.core.clock import Clock, new_id
from consentry.core.errors import ConflictError, Reason, Rejected, ScopeShredded
from consentry.core.events import ConsentGranted, LedgerEvent, with_prev_hash
from consentry.core.keystore import Keystore
from consentry.core.policy import Policy
from consentry.core.sealing import purpose_scope
from consentry.ledger.commands import StaffCommand
from consentry.ledger.mapper import SealingMapper
from consentry.ledger.subject import Context, Decision, Outcome, SubjectState, decide, decide_staff

MAX_ATTEMPTS: Final = 8


def chain_hash(state: bytes) -> bytes:
    """The hash the next event of the subject carries as `prev_hash`."""
    return hashlib.sha256(state).digest()


def open_recorder(env: dict[str, str]) -> tuple[InfrastructureFactory, ApplicationRecorder]:
    """eventsourcing's persistence (SQLite or PostgreSQL) from an environment mapping."""
    factory = InfrastructureFactory.construct(env)
    return factory, factory.application_recorder()


@dataclass(slots=True)
class _Pending:
    """One subject's state and the events a batch adds to it."""

    state: SubjectState
    base_version: int
    events: list[LedgerEvent] = field(default_factory=list)
    blind: bytes | None = None
    renew: set[uuid.UUID] = field(default_factory=set)


class Ledger:
    """The write model's application service."""

    def __init__(
        self,
        recorder: ApplicationRecorder,
        codec: AvroCodec,
        keystore: Keystore,
        policy: Callable[[], Policy],
        clock: Clock,
        ids: Callable[[], uuid.UUID] = new_id,
        on_close: Callable[[], None] | None = None,
        mapper: SealingMapper | None = None,
    ) -> None:
        self._on_close = on_close
        self.recorder = recorder
        self.codec = codec
        self.keystore = keystore
        # Benchmarks swap in their baselines' mappers here; the platform always seals.
        self.mapper = mapper or SealingMapper(codec, keystore)
        self._policy = policy
        self.clock = clock
        self.ids = ids

    def close(self) -> None:
        """Closes the event store's connections (the keystore is closed by its owner)."""
        if self._on_close is not None:
            self._on_close()

    @property
    def policy(self) -> Policy:
        return self._policy()

    def submit(self, producer: str, records: Sequence[rec.IntakeRecord | Rejected]) -> list[Outcome]:
        """Decides and appends a producer's batch; one outcome per record, in order."""
        return self._with_retries(lambda: self._submit_once(producer, records))

    def execute(self, commands: Sequence[StaffCommand]) -> list[Outcome]:
        """Decides and appends staff or platform commands; one outcome per command."""
        return self._with_retries(lambda: self._execute_once(commands))

    def load(self, subject_id: uuid.UUID) -> SubjectState:
        """The subject's state folded from its stored events."""
        state = SubjectState(subject_id)
        for stored in self.recorder.select_events(subject_id):
            state.apply(self.mapper.decode(stored.state))
            state.head = chain_hash(stored.state)
        return state

    def stored_events(self, subject_id: uuid.UUID) -> Sequence[StoredEvent]:
        """The subject's stored events, in order."""
        return self.recorder.select_events(subject_id)

    def history(self, subject_id: uuid.UUID, *, reveal: bool = False) -> list[LedgerEvent]:
        """The subject's events; with `reveal`, sealed values opened or marked ERASED."""
        events = [self.mapper.decode(s.state) for s in self.recorder.select_events(subject_id)]
        return [self.mapper.reveal(e) for e in events] if reveal else events

    def notifications(self, after: int | None = 0, batch: int = 1000) -> Iterator[tuple[int, bytes]]:
        """(position, stored bytes) of every event in the log after a position."""
        while True:
            page = self.recorder.select_notifications(start=after, limit=batch, inclusive_of_start=False)
            if not page:
                return
            for notification in page:
                yield notification.id, notification.state
            after = page[-1].id

    def find_subject(self, namespace: str, value: str) -> uuid.UUID | None:
        """The subject an external reference points to (through the blind index)."""
        return self.keystore.find_reference(self.keystore.blind_index(namespace, value))

    # -- one attempt -----------------------------------------------------------------------------

    def _with_retries(self, attempt: Callable[[], list[Outcome]]) -> list[Outcome]:
        for _ in range(MAX_ATTEMPTS):
            try:
                return attempt()
            except ConflictError:
                continue
        raise ConflictError("the subjects kept changing under this batch")

    def _context(self, producer: str | None) -> Context:
        return Context(now=self.clock.now(), policy=self.policy, new_id=self.ids, producer=producer)

    def _submit_once(
        self, producer: str, records: Sequence[rec.IntakeRecord | Rejected]
    ) -> list[Outcome]:
        ctx = self._context(producer)
        pending: dict[uuid.UUID, _Pending] = {}
        by_blind: dict[bytes, uuid.UUID] = {}
        outcomes: list[Outcome] = []
        for record in records:
            if isinstance(record, Rejected):
                outcomes.append(Outcome("rejected", None, None, record.reason, record.detail))
                continue
            blind = self.keystore.blind_index(record.namespace, record.ref_value)
            subject_id = by_blind.get(blind) or self.keystore.find_reference(blind)
            if subject_id is None:
                subject_id = self.ids()
            by_blind[blind] = subject_id
            slot = self._pending(pending, subject_id)
            decision = decide(slot.state, record, ctx)
            self._absorb(slot, decision)
            if decision.events and slot.base_version == 0:
                slot.blind = blind
            outcomes.append(decision.outcome)
        return self._append(pending, outcomes, link=True)

    def _execute_once(self, commands: Sequence[StaffCommand]) -> list[Outcome]:
        ctx = self._context(None)
        pending: dict[uuid.UUID, _Pending] = {}
        outcomes = []
        for command in commands:
            slot = self._pending(pending, command.subject_id)
            decision = decide_staff(slot.state, command, ctx)
            self._absorb(slot, decision)
            outcomes.append(decision.outcome)
        return self._append(pending, outcomes)

    def _pending(self, pending: dict[uuid.UUID, _Pending], subject_id: uuid.UUID) -> _Pending:
        slot = pending.get(subject_id)
        if slot is None:
            state = self.load(subject_id)
            slot = pending[subject_id] = _Pending(state, state.version)
        return slot

    @staticmethod
    def _absorb(slot: _Pending, decision: Decision) -> None:
        for event in decision.events:
            slot.state.apply(event)
        slot.events.extend(decision.events)
        if decision.renew_scopes:
            # The re-consent is the decision's last event: the new key version starts there.
            slot.renew.add(decision.events[-1].meta.event_id)

    def _link_new_subjects(self, pending: dict[uuid.UUID, _Pending]) -> None:
        for subject_id, slot in pending.items():
            if slot.blind is not None and slot.events:
                winner = self.keystore.link_reference(slot.blind, subject_id)
                if winner != subject_id:
                    raise ConflictError("another writer created the subject first")

    def _append(
        self, pending: dict[uuid.UUID, _Pending], outcomes: list[Outcome], *, link: bool = False
    ) -> list[Outcome]:
        stored: list[StoredEvent] = []
        refused: set[uuid.UUID] = set()
        # References and keys first, durable in one write; then the events that use them.
        with self.keystore.batch():
            if link:
                self._link_new_subjects(pending)
            for subject_id, slot in pending.items():
                try:
                    stored.extend(self._chain(slot))
                except ScopeShredded:
                    # The shredder closed the subject after it was loaded: nothing of it is written.
                    refused.add(subject_id)
        if stored:
            try:
                self.recorder.insert_events(stored)
            except IntegrityError as exc:
                raise ConflictError("a subject changed while the batch was decided") from exc
        if not refused:
            return outcomes
        return [
            Outcome("rejected", o.subject_id, None, Reason.SUBJECT_ERASED, "the subject is erased")
            if o.subject_id in refused and o.status == "accepted"
            else o
            for o in outcomes
        ]

    def _chain(self, slot: _Pending) -> list[StoredEvent]:
        head = slot.state.head
        out = []
        for event in slot.events:
            # A re-consent starts a new key version exactly where it stands in the batch, so data
            # collected before it (under the withdrawn consent) stays under the old, doomed key.
            if isinstance(event, ConsentGranted) and event.meta.event_id in slot.renew:
                self.keystore.create(
                    slot.state.subject_id, purpose_scope(event.purpose), new_version=True
                )
            stored_event = self.mapper.to_stored_event(with_prev_hash(event, head))
            head = chain_hash(stored_event.state)
            out.append(stored_event)
        return out
