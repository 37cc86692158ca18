"""The ledger: decides intake records and staff commands, seals, chains and appends in one batch.

A batch is decided against subject states loaded once, sealed by the mapper, linked into each
subject's hash chain and inserted in one transaction. A concurrent writer on the same subject makes
the insert conflict (unique subject/version), and the whole batch is decided again on fresh state.
A record whose reference leads nowhere may be the retry of a request an erased subject answered: the
keystore's request digests of erased subjects lead back to it, and its history answers `duplicate`.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
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
from consentry.core.errors import ConflictError, KeystoreError, Reason, Rejected, ScopeShredded
from consentry.core.events import ConsentGranted, DataUpdated, LedgerEvent
from consentry.core.keystore import Keystore
from consentry.core.pending_commit import PendingCommit
from consentry.core.policy import Policy
from consentry.core.runtime import collecting_after
from consentry.core.sealing import purpose_scope
from consentry.ledger.commands import StaffCommand
from consentry.ledger.group import AsyncGroupCommit, GroupCommit
from consentry.ledger.mapper import NO_KEYS, Keys, SealingMapper
from consentry.ledger.memory import WriterMemory
from consentry.ledger.store import WaitsBeforeCommit, events_after
from consentry.ledger.subject import (
    Context,
    Decision,
    Outcome,
    SubjectState,
    decide,
    decide_staff,
    idempotency_hash,
    retry_digest,
)

MAX_ATTEMPTS: Final = 8
# When the inserts and commits of the groups written on an event loop take longer than this on
# average (an fsync gone slow, say), the next groups go to the executor for NOW_PAUSE seconds: the
# loop must not wait on a slow disk. An average (over ~10 groups), as one slow fsync in a hundred is
# normal here (p99 2.4 ms). Only the disk's part counts: deciding and sealing a large group take
# longer too. With the whole write counted, half the groups of 32 readers went to the executor,
# and 9 % of 8 readers'; with the disk's part, 17 % and none (reads/s did not move measurably).
NOW_LIMIT: Final = 0.003
NOW_PAUSE: Final = 1.0


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
    sealed: list[LedgerEvent] = field(default_factory=list)
    new: bool = False


@dataclass(slots=True)
class _KeyNeeds:
    """The keys a batch's events seal with, by (subject, scope)."""

    # Those of subjects the keystore may lack keys of: their scopes are read in one query.
    wanted: list[tuple[uuid.UUID, str]] = field(default_factory=list)
    # Those to make together before sealing (not those of a subject that re-consents: its keys
    # are made as its events ask, so a new version starts exactly where the re-consent stands).
    prepared: list[tuple[uuid.UUID, str]] = field(default_factory=list)
    renewing: bool = False

    @property
    def any(self) -> bool:
        """Whether appending the batch reads or creates a key (a sealed value, a re-consent)."""
        return self.renewing or bool(self.prepared)


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
        sole_writer: bool = False,
    ) -> None:
        self._on_close = on_close
        self.recorder = recorder
        self._waits_in_commit = (
            recorder
            if isinstance(recorder, WaitsBeforeCommit) and recorder.calls_before_commit
            else None
        )
        self.codec = codec
        self.keystore = keystore
        # Benchmarks swap in their baselines' mappers here; the platform always seals.
        self.mapper = mapper or SealingMapper(codec, keystore)
        # A sole writer's remembered states are current; others catch theirs up (ledger/memory.py).
        self._sole_writer = sole_writer
        self._memory = WriterMemory()
        self._sole_lock = threading.Lock()
        self._write_lock: AbstractContextManager[object] = (
            self._sole_lock if sole_writer else nullcontext()
        )
        self._now_paused_until = 0.0
        self._now_cost = 0.0
        self._insert_seconds = 0.0  # the last batch's insert and commit (a sole writer's)
        self._group: GroupCommit[StaffCommand, Outcome] = GroupCommit(self._execute)
        # One group per event loop: its futures belong to that loop.
        self._async_groups: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, AsyncGroupCommit[StaffCommand, Outcome]
        ] = weakref.WeakKeyDictionary()
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
        with collecting_after():
            return self._with_retries(lambda: self._submit_once(producer, records))

    def execute(self, commands: Sequence[StaffCommand]) -> list[Outcome]:
        """Decides and appends staff or platform commands; one outcome per command.

        Callers at the same time are grouped into one batch (group commit): concurrent reads
        share one transaction for their access events instead of queueing for one each.
        """
        return self._group(commands)

    async def execute_async(self, commands: Sequence[StaffCommand]) -> list[Outcome]:
        """`execute` for a coroutine: it waits without a thread, and its group's write is one
        hand-off to the event loop's executor."""
        loop = asyncio.get_running_loop()
        group = self._async_groups.get(loop)
        if group is None:
            group = self._async_groups[loop] = AsyncGroupCommit(self._execute, self._execute_now)
        return await group(commands)

    def _execute(self, commands: Sequence[StaffCommand]) -> list[Outcome]:
        return self._with_retries(lambda: self._execute_once(commands))

    def _execute_now(self, commands: Sequence[StaffCommand]) -> list[Outcome] | None:
        """The commands decided and appended in this thread at once, or None if that could wait.

        For an event loop, where handing the group to a thread costs more CPU than writing it:
        the thread and the loop pass the GIL between two cores at every SQLite call (`consentry
        run` under wrk, 8 readers, three rounds each: CPU per read 0.80-0.82 -> 0.60-0.65 ms,
        read p99 11.2-12.9 -> 8.9-10.5 ms). Only a sole writer whose lock is free writes here,
        for subjects it remembers, with no key to read or create (the keystore may be busy), and
        while its writes here stay quick; the fsync then happens on the loop, which is no loss to
        the reads: the next group could not commit before this one anyway.
        """
        if not self._sole_writer or time.monotonic() < self._now_paused_until:
            return None
        if not self._sole_lock.acquire(blocking=False):
            return None
        try:
            if not all(self._memory.holds(c.subject_id) for c in commands):
                return None
            pending, outcomes = self._decide_staff(commands)
            keys = self._key_needs(pending)
            if keys.any:
                return None
            written = self._append(pending, outcomes, keys=keys)
            self._now_cost += (self._insert_seconds - self._now_cost) * 0.1
            if self._now_cost > NOW_LIMIT:
                self._now_paused_until = time.monotonic() + NOW_PAUSE
                self._now_cost = 0.0  # after the pause, a fresh look
            return written
        except ConflictError:
            return None  # another process wrote: the executor's retries take it from here
        finally:
            self._sole_lock.release()

    def load(self, subject_id: uuid.UUID) -> SubjectState:
        """The subject's state as the store has it now (a sole writer's remembered one is)."""
        return self._states([subject_id])[subject_id]

    def remembered(self, subject_id: uuid.UUID) -> SubjectState | None:
        """A copy of the subject's state if this (sole) writer remembers it; None otherwise."""
        return self._memory.state(subject_id) if self._sole_writer else None

    def _states(self, subject_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, SubjectState]:
        """The subjects' states as the store has them now, each a copy of its own.

        A sole writer's remembered states are current; it reads only the subjects it does not
        remember. Any other writer reads, for every subject, what was appended after the version
        it remembers (another process may have written since), so a state is folded once and
        then only caught up. Either way one read for all of them (ledger/store.py).
        """
        states: dict[uuid.UUID, SubjectState] = {}
        for subject_id in subject_ids:
            if subject_id not in states:
                remembered = self._memory.state(subject_id)
                states[subject_id] = SubjectState(subject_id) if remembered is None else remembered
        behind = {
            subject_id: state.version
            for subject_id, state in states.items()
            if not (self._sole_writer and state.exists)
        }
        if behind:
            for subject_id, stored_events in events_after(self.recorder, behind).items():
                state = states[subject_id]
                for stored in stored_events:
                    state.apply(self.mapper.decode(stored.state))
                    state.head = chain_hash(stored.state)
            self._memory.folded(states[subject_id] for subject_id in behind)
        return states

    def recent(self, after: int) -> list[tuple[int, LedgerEvent]]:
        """The sealed events appended here right after a log position, as long as they run on."""
        return self._memory.recent(after)

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
        for tries in range(MAX_ATTEMPTS):
            try:
                # A sole writer decides and appends one batch at a time: its threads never conflict
                # (SQLite takes one writer at a time anyway). Other writers still can.
                with self._write_lock:
                    return attempt()
            except ConflictError:
                # Writers that collided back off for a random, growing while (at most ~0.25 s),
                # so they stop colliding in lock step.
                time.sleep(random.uniform(0, 0.002 * 2**tries))
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
        blinds = {
            i: self.keystore.blind_index(r.namespace, r.ref_value)
            for i, r in enumerate(records)
            if not isinstance(r, Rejected)
        }
        # Every reference of the batch looked up at once; the batch's own new subjects go to by_blind.
        linked = self.keystore.find_references(list(dict.fromkeys(blinds.values())))
        # A record whose reference is unknown may be a retry of a request an erased subject
        # answered (same producer, key and time): those requests are looked up at once too.
        unknown = {
            i: self._request_digest(producer, record)
            for i, record in enumerate(records)
            if not isinstance(record, Rejected) and blinds[i] not in linked
        }
        answered = self.keystore.find_erased_requests(list(dict.fromkeys(unknown.values())))
        loaded = self._states([*linked.values(), *answered.values()])
        for i, record in enumerate(records):
            if isinstance(record, Rejected):
                outcomes.append(Outcome("rejected", None, None, record.reason, record.detail))
                continue
            blind = blinds[i]
            subject_id = by_blind.get(blind) or linked.get(blind)
            erased = None if subject_id is not None else answered.get(unknown[i])
            if erased is not None:
                # A retry of a request the subject answered before its erasure dropped the reference:
                # its history answers `duplicate`. The reference stays unknown for the batch's
                # other records, as it is for later batches.
                slot = self._pending(pending, erased, loaded)
            else:
                new = subject_id is None
                if subject_id is None:
                    subject_id = self.ids()
                by_blind[blind] = subject_id
                slot = self._pending(pending, subject_id, loaded, new=new)
            decision = decide(slot.state, record, ctx)
            self._absorb(slot, decision)
            if decision.events and slot.base_version == 0:
                slot.blind = blind
            outcomes.append(decision.outcome)
        return self._append(pending, outcomes, link=True)

    @staticmethod
    def _request_digest(producer: str, record: rec.IntakeRecord) -> bytes:
        """The digest an erasure keeps of this very request (same producer, key and time)."""
        return retry_digest(idempotency_hash(producer, record.idempotency_key), record.occurred_at)

    def _execute_once(self, commands: Sequence[StaffCommand]) -> list[Outcome]:
        return self._append(*self._decide_staff(commands))

    def _decide_staff(
        self, commands: Sequence[StaffCommand]
    ) -> tuple[dict[uuid.UUID, _Pending], list[Outcome]]:
        ctx = self._context(None)
        pending: dict[uuid.UUID, _Pending] = {}
        outcomes = []
        loaded = self._states(command.subject_id for command in commands)
        for command in commands:
            slot = self._pending(pending, command.subject_id, loaded)
            decision = decide_staff(slot.state, command, ctx)
            self._absorb(slot, decision)
            outcomes.append(decision.outcome)
        return pending, outcomes

    def _pending(
        self,
        pending: dict[uuid.UUID, _Pending],
        subject_id: uuid.UUID,
        loaded: dict[uuid.UUID, SubjectState],
        *,
        new: bool = False,
    ) -> _Pending:
        """The subject's slot in the batch; its state comes from `loaded` (the batch's one read)."""
        slot = pending.get(subject_id)
        if slot is None:
            state = SubjectState(subject_id) if new else loaded.pop(subject_id, None)
            if state is None:
                state = self.load(subject_id)
            slot = pending[subject_id] = _Pending(state, state.version, new=new)
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
        links = {
            slot.blind: subject_id
            for subject_id, slot in pending.items()
            if slot.blind is not None and slot.events
        }
        winners = self.keystore.link_references(links)
        if any(winners[blind] != subject_id for blind, subject_id in links.items()):
            raise ConflictError("another writer created the subject first")

    def _append(
        self,
        pending: dict[uuid.UUID, _Pending],
        outcomes: list[Outcome],
        *,
        link: bool = False,
        keys: _KeyNeeds | None = None,
    ) -> list[Outcome]:
        stored: list[StoredEvent] = []
        refused: set[uuid.UUID] = set()
        # References and keys first, durable in one write; then the events that use them.
        needs = self._key_needs(pending) if keys is None else keys
        # A batch with no key to read or create and no reference to link (access events, say)
        # does not take the keystore: no lock, no transaction.
        batch = (
            self.keystore.batch(needs.wanted) if link or needs.any else nullcontext(PendingCommit.DONE)
        )
        with batch as keys_durable:
            for subject_id, slot in pending.items():
                if slot.new:
                    self.keystore.fresh_subject(subject_id)
            if link:
                self._link_new_subjects(pending)
            # The keys the events will seal with, the new ones made together.
            prepared = self.keystore.prepare(needs.prepared) if needs.prepared else NO_KEYS
            for subject_id, slot in pending.items():
                try:
                    stored.extend(self._chain(slot, prepared))
                except ScopeShredded:
                    # The shredder closed the subject after it was loaded: nothing of it is written.
                    refused.add(subject_id)
        written = [slot for subject_id, slot in pending.items() if subject_id not in refused]
        self._memory.forget(refused)
        self._insert_seconds = 0.0
        if stored:
            try:
                inserting = time.monotonic()
                positions = self._insert(stored, keys_durable)
                self._insert_seconds = time.monotonic() - inserting
            except IntegrityError as exc:
                # Somebody else wrote to one of these subjects: fold them from the store next time.
                self._memory.forget(pending)
                keys_durable()  # the batch's keys are durable, or out of the cache and this raises
                raise ConflictError("a subject changed while the batch was decided") from exc
            except KeystoreError:
                # The keys' commit failed, so the events were not written either.
                self._memory.forget(pending)
                raise
            # The batch is done with its slots: their states are handed over, not copied.
            self._memory.written(
                [slot.state for slot in written],
                positions or (),
                [event for slot in written for event in slot.sealed],
            )
        else:
            keys_durable()  # no event to wait for them: the batch's keys still must be durable
        if not refused:
            return outcomes
        return [
            Outcome("rejected", o.subject_id, None, Reason.SUBJECT_ERASED, "the subject is erased")
            if o.subject_id in refused and o.status == "accepted"
            else o
            for o in outcomes
        ]

    def _insert(self, stored: list[StoredEvent], keys_durable: PendingCommit) -> Sequence[int] | None:
        """Appends the events once their keys are durable: the recorder waits for the keys' commit
        just before its own, inserting the events meanwhile; any other recorder inserts after."""
        if self._waits_in_commit is not None:
            return self._waits_in_commit.insert_events(stored, before_commit=keys_durable)
        keys_durable()
        return self.recorder.insert_events(stored)

    def _key_needs(self, pending: dict[uuid.UUID, _Pending]) -> _KeyNeeds:
        """The keys the batch's events seal with. The keystore reads the scopes of existing subjects
        whose keys it lacks in one query (a subject it holds every key of needs none: a scope it
        lacks there has no key yet)."""
        knows, scopes_of = self.keystore.knows_keys_of, self.mapper.key_scopes
        needs = _KeyNeeds()
        for subject_id, slot in pending.items():
            scopes = {scope for event in slot.events for scope in scopes_of(event)}
            if not slot.new and not knows(subject_id):
                needs.wanted += [(subject_id, scope) for scope in scopes]
            if slot.renew:
                needs.renewing = True
            else:
                needs.prepared += [(subject_id, scope) for scope in scopes]
        return needs

    def _chain(self, slot: _Pending, keys: Keys) -> list[StoredEvent]:
        head = slot.state.head
        out = []
        for event in slot.events:
            # A re-consent starts a new key version exactly where it stands in the batch, so data
            # collected before it (under the withdrawn consent) stays under the old, doomed key.
            if isinstance(event, ConsentGranted | DataUpdated) and event.meta.event_id in slot.renew:
                self.keystore.create(
                    slot.state.subject_id, purpose_scope(event.purpose), new_version=True
                )
            sealed, stored_event = self.mapper.seal_event(event, head, keys)
            head = chain_hash(stored_event.state)
            slot.sealed.append(sealed)
            out.append(stored_event)
        slot.state.head = head
        return out
