"""The shredder: destroys keys after an erasure request or a withdrawal, then certifies and records it.

Every step is safe to repeat. Keys are destroyed first, then the certificate is issued and recorded
in the ledger as KeysShredded (plus SubjectErased for a full erasure). A crash in between leaves the
request without its record; `run_pending` finds it in the log and finishes the work, taking the key
ids from the keystore's tombstones and the sealed values in the history, since the key rows are gone.

A withdrawal destroys the key versions of the purpose that existed when it was recorded, whatever
happened since: a re-consent before the shredder ran keeps its own new version, and nothing else.

`pending` scans the whole notification log. Runners instead track their position in the log and call
`handle` for each new event (the embedded runner records that position), using the full scan once at
start-up to finish what a crash interrupted.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Literal, TypeVar

from consentry.core import events as ev
from consentry.core.clock import Clock
from consentry.core.errors import ConsentryError
from consentry.core.keystore import KeyRow, Tombstone
from consentry.core.sealing import SealedValue, purpose_scope
from consentry.ledger.application import Ledger, chain_hash
from consentry.ledger.commands import RecordShredding
from consentry.ledger.subject import SubjectState, retry_digest
from consentry.shredder import certificates
from consentry.shredder.retention import Held, RetentionSchedule, fold

log = logging.getLogger("consentry.shredder")

_REQUESTS = frozenset({ev.ErasureRequested.avro_name, ev.ConsentWithdrawn.avro_name})

Kind = Literal["erasure", "withdrawal"]
E = TypeVar("E", bound=ev.LedgerEvent)


class ShredderError(ConsentryError):
    """The shredder was asked to do something the ledger does not (yet) call for."""


@dataclass(frozen=True, slots=True)
class ShredResult:
    """What one shredding destroyed, and its signed certificate."""

    subject_id: uuid.UUID
    reason: str
    scopes: tuple[str, ...]
    key_ids: tuple[str, ...]
    certificate: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    already_done: bool = False


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """One read of a subject: its events, folded state and chain head."""

    events: list[ev.LedgerEvent]
    state: SubjectState
    head: bytes


class Shredder:
    """Destroys keys the ledger's requests call for; exactly one certificate per shredding."""

    def __init__(self, ledger: Ledger, clock: Clock) -> None:
        self.ledger = ledger
        self.clock = clock

    def erase(self, subject_id: uuid.UUID) -> ShredResult:
        """Destroys every key of a subject whose erasure was requested, certifies and records it."""
        snap = self._snapshot(subject_id)
        if snap.state.erased:
            return self._existing_erasure(snap)
        if not snap.state.erasure_requested:
            raise ShredderError("erasure was not requested for the subject")
        request = _last(snap.events, ev.ErasureRequested)
        keystore = self.ledger.keystore
        # The digests of the requests it answered outlive the reference: a retry is still a duplicate.
        keystore.erase_subject(subject_id, _retry_digests(snap.events))
        # Tombstones name every destroyed key, also on a re-run when this erase destroyed none.
        tombstones = keystore.shredded_keys(subject_id)
        scopes, key_ids = _union(tombstones, _sealed(snap.events))
        result = self._certify(
            snap, _Cause.of(request), "erasure", scopes, key_ids, _when(tombstones), _shared_with(snap)
        )
        return self._record(_Cause.of(request), result, erased=True)

    def withdraw(self, subject_id: uuid.UUID, purpose: str) -> ShredResult | None:
        """Destroys the purpose's keys as they were at its last withdrawal; None if never withdrawn."""
        snap = self._snapshot(subject_id)
        found = _last_withdrawal(snap.events, purpose)
        # A pending erasure destroys every scope anyway.
        if snap.state.erasure_requested or found is None:
            return None
        position, request = found
        done = _caused_by(snap.events[position + 1 :], str(request.meta.event_id))
        if done is not None:
            return _result(done, already_done=True)
        # Withdrawn data is what was sealed before the withdrawal; a key that existed by then goes too.
        # A version created later belongs to a re-consent and stays.
        return self._shred_scope(
            snap,
            _Cause.of(request),
            "withdrawal",
            purpose,
            snap.events[:position],
            request.meta.recorded_at,
        )

    def expire(self, subject_id: uuid.UUID, purpose: str) -> ShredResult | None:
        """Destroys a purpose's keys if its retention ran out (checked on the subject's own history).

        None if nothing is due. Keys created after this call started (a new consent or contract
        racing it) are not touched.
        """
        now = self.clock.now()
        snap = self._snapshot(subject_id)
        if snap.state.erasure_requested:
            return None
        held: dict[str, Held] = {}
        for event in snap.events:
            fold(held, event)
        deadline = held.get(purpose, Held()).deadline(self.ledger.policy, purpose)
        if deadline is None or deadline > now:
            return None
        cause = _Cause(retention_cause(purpose, deadline), deadline, "retention")
        done = _caused_by(snap.events, cause.causation_id)
        if done is not None:
            return _result(done, already_done=True)
        return self._shred_scope(snap, cause, "retention", purpose, snap.events, now)

    def sweep(self, schedule: RetentionSchedule) -> list[ShredResult]:
        """Reads the log's new events into the schedule, then shreds every purpose past retention."""
        ledger = self.ledger
        schedule.follow(
            ledger.notifications(schedule.position), ledger.codec.writer_of, ledger.mapper.decode
        )
        results = []
        for due in list(schedule.due(ledger.policy, self.clock.now())):
            result = self.expire(due.subject_id, due.purpose)
            if result is not None and not result.already_done:
                results.append(result)
        return results

    def _shred_scope(
        self,
        snap: _Snapshot,
        cause: _Cause,
        reason: str,
        purpose: str,
        events: Sequence[ev.LedgerEvent],
        until: datetime,
    ) -> ShredResult:
        """Destroys the purpose's keys sealed in `events` or created by `until`, certifies, records."""
        scope, keystore, subject_id = purpose_scope(purpose), self.ledger.keystore, snap.state.subject_id
        sealed = {s.key_id for s in _sealed(events) if s.scope == scope}
        existing = {
            row.key_id
            for row in keystore.key_versions(subject_id, scope)
            if isinstance(row, KeyRow) and row.created_at <= until
        }
        keystore.destroy_keys(subject_id, sealed | existing)
        # A crashed earlier run destroyed keys it never certified: they belong to this certificate.
        certified = {k for e in snap.events if isinstance(e, ev.KeysShredded) for k in e.key_ids}
        tombstones = [
            t
            for t in keystore.shredded_keys(subject_id)
            if t.scope == scope and t.key_id not in certified
        ]
        key_ids = {t.key_id for t in tombstones if t.key_id is not None} | (sealed - certified)
        processors = _shared_with(snap, purpose)
        result = self._certify(snap, cause, reason, [scope], key_ids, _when(tombstones), processors)
        return self._record(cause, result, erased=False)

    def handle(self, event: ev.LedgerEvent) -> ShredResult | None:
        """Reacts to one ledger event, as the runners deliver them."""
        match event:
            case ev.ErasureRequested():
                return self.erase(event.meta.subject_id)
            case ev.ConsentWithdrawn():
                return self.withdraw(event.meta.subject_id, event.purpose)
        return None

    def follow(self, after: int) -> int:
        """Handles the requests logged after a position, as a runner would; answers the new position.

        The embedded platform calls this after every write instead of scanning the whole log.
        """
        # Events this process just appended come as objects; the log is read for the rest.
        fresh = self.ledger.recent(after)
        for _, event in fresh:
            if isinstance(event, ev.ErasureRequested | ev.ConsentWithdrawn):
                self.handle(event)
        start = position = fresh[-1][0] if fresh else after
        codec = self.ledger.codec
        for position, state in self.ledger.notifications(start):
            writer = codec.writer_of(state)
            if writer is not None and writer.name not in _REQUESTS:
                continue  # only requests matter here, and the header says what an event is
            try:
                event = self.ledger.mapper.decode(state)
            except ConsentryError:
                log.warning("log position %d does not decode; skipped by the shredder", position)
                continue
            if isinstance(event, ev.ErasureRequested | ev.ConsentWithdrawn):
                self.handle(event)
        return position

    def pending(self) -> list[tuple[uuid.UUID, Kind, str | None]]:
        """Requests in the log whose shredding is not recorded yet, in log order (a full scan)."""
        erasures: dict[uuid.UUID, int] = {}
        withdrawals: dict[tuple[uuid.UUID, str], tuple[int, str]] = {}
        erased: set[uuid.UUID] = set()
        for position, state in self.ledger.notifications():
            try:
                event = self.ledger.mapper.decode(state)
            except ConsentryError:
                # A damaged stored event is for `audit verify` to report; it cannot ask for shredding.
                log.warning("log position %d does not decode; skipped by the shredder", position)
                continue
            subject_id = event.meta.subject_id
            match event:
                case ev.ErasureRequested():
                    erasures.setdefault(subject_id, position)
                case ev.SubjectErased():
                    erased.add(subject_id)
                case ev.ConsentWithdrawn():
                    # The last withdrawal covers every key an earlier, unshredded one would have.
                    withdrawals[(subject_id, event.purpose)] = (position, str(event.meta.event_id))
                case ev.KeysShredded() if event.reason == "withdrawal":
                    for scope in event.scopes:
                        slot = (subject_id, scope.removeprefix("purpose:"))
                        if slot in withdrawals and withdrawals[slot][1] == event.meta.causation_id:
                            del withdrawals[slot]
        work: list[tuple[int, uuid.UUID, Kind, str | None]] = [
            (p, s, "erasure", None) for s, p in erasures.items() if s not in erased
        ]
        work += [
            (p, s, "withdrawal", purpose)
            for (s, purpose), (p, _) in withdrawals.items()
            if s not in erasures  # the erasure shreds every scope
        ]
        return [(s, kind, purpose) for _, s, kind, purpose in sorted(work, key=lambda w: w[0])]

    def run_pending(self) -> list[ShredResult]:
        """Does every pending shredding; returns the certificates issued now."""
        results: list[ShredResult] = []
        for subject_id, kind, purpose in self.pending():
            result: ShredResult | None = None
            if kind == "erasure":
                result = self.erase(subject_id)
            elif purpose is not None:
                result = self.withdraw(subject_id, purpose)
            if result is not None and not result.already_done:
                results.append(result)
        return results

    # -- steps -------------------------------------------------------------------------------------

    def _snapshot(self, subject_id: uuid.UUID) -> _Snapshot:
        stored = self.ledger.stored_events(subject_id)
        events = [self.ledger.mapper.decode(s.state) for s in stored]
        state = SubjectState(subject_id)
        for event in events:
            state.apply(event)
        head = chain_hash(stored[-1].state) if stored else ev.GENESIS
        return _Snapshot(events, state, head)

    def _certify(
        self,
        snap: _Snapshot,
        cause: _Cause,
        reason: str,
        scopes: Iterable[str],
        key_ids: Iterable[str],
        shredded_at: datetime | None,
        processors: Iterable[str] = (),
    ) -> ShredResult:
        certificate, signature = certificates.issue(
            subject_id=snap.state.subject_id,
            reason=reason,
            scopes=scopes,
            key_ids=key_ids,
            requested_at=cause.requested_at,
            # Nothing was destroyed (no key existed): the certificate confirms that as of now.
            shredded_at=shredded_at or self.clock.now(),
            issued_at=self.clock.now(),
            requester=cause.requester,
            causation_id=cause.causation_id,
            chain_head=snap.head,
            signing_key=self.ledger.keystore.provider.signing_key(),
            processors=processors,
        )
        # Checked before it is recorded: a certificate that does not verify must never be stored.
        public_key = self.ledger.keystore.provider.signing_key().public_key()
        parsed = certificates.verify(certificate, signature, public_key)
        return ShredResult(
            snap.state.subject_id, reason, parsed.scopes, parsed.key_ids, certificate, signature
        )

    def _record(self, cause: _Cause, result: ShredResult, *, erased: bool) -> ShredResult:
        command = RecordShredding(
            subject_id=result.subject_id,
            reason=result.reason,
            scopes=result.scopes,
            key_ids=result.key_ids,
            certificate=result.certificate,
            signature=result.signature,
            erased=erased,
            causation_id=cause.causation_id,
        )
        outcome = self.ledger.execute([command])[0]
        if outcome.status == "accepted":
            return result
        if outcome.status == "duplicate":
            # Another shredder recorded this request first: its certificate is the one.
            snap = self._snapshot(result.subject_id)
            done = _caused_by(snap.events, cause.causation_id)
            if done is not None:
                return _result(done, already_done=True)
            if erased:
                return self._existing_erasure(snap)
        raise ShredderError(f"the ledger refused the shredding record ({outcome.reason})")

    def _existing_erasure(self, snap: _Snapshot) -> ShredResult:
        for shred, after in zip(snap.events, snap.events[1:], strict=False):
            if isinstance(shred, ev.KeysShredded) and isinstance(after, ev.SubjectErased):
                return _result(shred, already_done=True)
        raise ShredderError("the subject is erased but its certificate is missing from the history")


def _result(event: ev.KeysShredded, *, already_done: bool) -> ShredResult:
    return ShredResult(
        event.meta.subject_id,
        event.reason,
        event.scopes,
        event.key_ids,
        event.certificate,
        event.signature,
        already_done,
    )


def _retry_digests(events: Sequence[ev.LedgerEvent]) -> set[bytes]:
    """The retry digest of every request the subject's history answered (see `retry_digest`)."""
    return {
        retry_digest(e.meta.idempotency, e.meta.occurred_at)
        for e in events
        if e.meta.idempotency is not None
    }


def _last(events: Sequence[ev.LedgerEvent], kind: type[E]) -> E:
    for event in reversed(events):
        if isinstance(event, kind):
            return event
    raise ShredderError(f"the history holds no {kind.__name__}")


def _last_withdrawal(
    events: Sequence[ev.LedgerEvent], purpose: str
) -> tuple[int, ev.ConsentWithdrawn] | None:
    for position in range(len(events) - 1, -1, -1):
        event = events[position]
        if isinstance(event, ev.ConsentWithdrawn) and event.purpose == purpose:
            return position, event
    return None


def retention_cause(purpose: str, deadline: datetime) -> str:
    """The causation id of a retention shredding: the same purpose and deadline, the same id."""
    return f"retention:{purpose}:{deadline.isoformat()}"


@dataclass(frozen=True, slots=True)
class _Cause:
    """Why a shredding happens: a request event, or a retention deadline."""

    causation_id: str
    requested_at: datetime
    requester: str

    @classmethod
    def of(cls, request: ev.LedgerEvent) -> _Cause:
        return cls(str(request.meta.event_id), request.meta.occurred_at, _requester(request))


def _caused_by(events: Iterable[ev.LedgerEvent], cause: str) -> ev.KeysShredded | None:
    """The recorded shredding of that cause, if any."""
    for event in events:
        if isinstance(event, ev.KeysShredded) and event.meta.causation_id == cause:
            return event
    return None


def _shared_with(snap: _Snapshot, purpose: str | None = None) -> set[str]:
    """The sub-processors the subject's data (of the purpose, if given) was shared with."""
    return {
        e.processor for e in snap.events if isinstance(e, ev.DataShared) and purpose in (None, e.purpose)
    }


def _sealed(events: Iterable[ev.LedgerEvent]) -> list[SealedValue]:
    """Every sealed value in the events; each names the scope and key id it was sealed under."""
    found: list[SealedValue] = []
    for event in events:
        for f in fields(event):
            value = getattr(event, f.name)
            values = value.values() if isinstance(value, Mapping) else (value,)
            found += [v for v in values if isinstance(v, SealedValue)]
    return found


def _union(tombstones: Iterable[Tombstone], sealed: Iterable[SealedValue]) -> tuple[set[str], set[str]]:
    pairs = [(t.scope, t.key_id) for t in tombstones if t.key_id is not None]
    pairs += [(v.scope, v.key_id) for v in sealed]
    return {scope for scope, _ in pairs}, {key_id for _, key_id in pairs}


def _when(tombstones: Iterable[Tombstone]) -> datetime | None:
    """When the last of the keys was destroyed, as the keystore recorded it."""
    return max((t.shredded_at for t in tombstones), default=None)


def _requester(request: ev.LedgerEvent) -> str:
    """The pseudonymous actor id or producer name that asked."""
    if request.meta.actor is not None:
        return request.meta.actor.actor_id
    return request.meta.producer or "unknown"
