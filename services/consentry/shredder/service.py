"""The shredder: destroys keys after an erasure request or a withdrawal, then certifies and records it.

Every step is safe to repeat. Keys are destroyed first, then the certificate is issued and recorded
in the ledger as KeysShredded (plus SubjectErased for a full erasure). A crash in between leaves the
request without its record; `run_pending` finds it in the log and finishes the work, taking the key
ids from the sealed values in the history because the keystore no longer has them.

`pending` scans the whole notification log. Runners instead track their position in the log and call
`handle` for each new event (the embedded runner records that position), using the full scan once at
start-up to finish what a crash interrupted.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Literal, TypeVar

from consentry.core import events as ev
from consentry.core.clock import Clock
from consentry.core.errors import ConsentryError
from consentry.core.keystore import ShreddedKey
from consentry.core.sealing import SealedValue, purpose_scope
from consentry.ledger.application import Ledger, chain_hash
from consentry.ledger.commands import RecordShredding
from consentry.ledger.subject import SubjectState
from consentry.shredder import certificates

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
        destroyed = self.ledger.keystore.erase_subject(subject_id)
        scopes, key_ids = _union(destroyed, _sealed(snap.events))
        result = self._certify(snap, request, "erasure", scopes, key_ids)
        return self._record(request, result, erased=True)

    def withdraw(self, subject_id: uuid.UUID, purpose: str) -> ShredResult | None:
        """Destroys the purpose's key after a withdrawal; None if its consent is not withdrawn."""
        snap = self._snapshot(subject_id)
        current = snap.state.purposes.get(purpose)
        # A pending erasure destroys every scope anyway; a re-consent owns the scope's new version.
        if snap.state.erasure_requested or current is None or current.status != "withdrawn":
            return None
        scope = purpose_scope(purpose)
        position, request = _last_withdrawal(snap.events, purpose)
        done = _withdrawal_shred(snap.events[position + 1 :], scope)
        if done is not None:
            return _result(done, already_done=True)
        certified = {k for e in snap.events if isinstance(e, ev.KeysShredded) for k in e.key_ids}
        destroyed = self.ledger.keystore.destroy(subject_id, [scope])
        sealed = [s for s in _sealed(snap.events) if s.scope == scope and s.key_id not in certified]
        _, key_ids = _union(destroyed, sealed)
        result = self._certify(snap, request, "withdrawal", [scope], key_ids)
        return self._record(request, result, erased=False)

    def handle(self, event: ev.LedgerEvent) -> ShredResult | None:
        """Reacts to one ledger event, as the runners deliver them."""
        match event:
            case ev.ErasureRequested():
                return self.erase(event.meta.subject_id)
            case ev.ConsentWithdrawn():
                return self.withdraw(event.meta.subject_id, event.purpose)
        return None

    def pending(self) -> list[tuple[uuid.UUID, Kind, str | None]]:
        """Requests in the log whose shredding is not recorded yet, in log order (a full scan)."""
        erasures: dict[uuid.UUID, int] = {}
        withdrawals: dict[tuple[uuid.UUID, str], int] = {}
        erased: set[uuid.UUID] = set()
        for position, state in self.ledger.notifications():
            event = self.ledger.mapper.decode(state)
            subject_id = event.meta.subject_id
            match event:
                case ev.ErasureRequested():
                    erasures.setdefault(subject_id, position)
                case ev.SubjectErased():
                    erased.add(subject_id)
                case ev.ConsentWithdrawn():
                    withdrawals[(subject_id, event.purpose)] = position
                case ev.ConsentGranted():
                    withdrawals.pop((subject_id, event.purpose), None)
                case ev.KeysShredded() if event.reason == "withdrawal":
                    for scope in event.scopes:
                        purpose = scope.removeprefix("purpose:")
                        withdrawals.pop((subject_id, purpose), None)
        work: list[tuple[int, uuid.UUID, Kind, str | None]] = [
            (p, s, "erasure", None) for s, p in erasures.items() if s not in erased
        ]
        work += [
            (p, s, "withdrawal", purpose)
            for (s, purpose), p in withdrawals.items()
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
        request: ev.LedgerEvent,
        reason: str,
        scopes: Iterable[str],
        key_ids: Iterable[str],
    ) -> ShredResult:
        # After a crash the keys were destroyed earlier, so this is when destruction was confirmed.
        shredded_at = self.clock.now()
        certificate, signature = certificates.issue(
            subject_id=snap.state.subject_id,
            reason=reason,
            scopes=scopes,
            key_ids=key_ids,
            requested_at=request.meta.occurred_at,
            shredded_at=shredded_at,
            issued_at=self.clock.now(),
            requester=_requester(request),
            causation_id=str(request.meta.event_id),
            chain_head=snap.head,
            signing_key=self.ledger.keystore.provider.signing_key(),
        )
        # Checked before it is recorded: a certificate that does not verify must never be stored.
        public_key = self.ledger.keystore.provider.signing_key().public_key()
        parsed = certificates.verify(certificate, signature, public_key)
        return ShredResult(
            snap.state.subject_id, reason, parsed.scopes, parsed.key_ids, certificate, signature
        )

    def _record(self, request: ev.LedgerEvent, result: ShredResult, *, erased: bool) -> ShredResult:
        command = RecordShredding(
            subject_id=result.subject_id,
            reason=result.reason,
            scopes=result.scopes,
            key_ids=result.key_ids,
            certificate=result.certificate,
            signature=result.signature,
            erased=erased,
            causation_id=str(request.meta.event_id),
        )
        outcome = self.ledger.execute([command])[0]
        if outcome.status == "accepted":
            return result
        if outcome.status == "duplicate" and erased:
            # Another shredder recorded this erasure first: its certificate is the one.
            return self._existing_erasure(self._snapshot(result.subject_id))
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


def _last(events: Sequence[ev.LedgerEvent], kind: type[E]) -> E:
    for event in reversed(events):
        if isinstance(event, kind):
            return event
    raise ShredderError(f"the history holds no {kind.__name__}")


def _last_withdrawal(events: Sequence[ev.LedgerEvent], purpose: str) -> tuple[int, ev.ConsentWithdrawn]:
    for position in range(len(events) - 1, -1, -1):
        event = events[position]
        if isinstance(event, ev.ConsentWithdrawn) and event.purpose == purpose:
            return position, event
    raise ShredderError("the history holds no withdrawal for the purpose")


def _withdrawal_shred(events: Sequence[ev.LedgerEvent], scope: str) -> ev.KeysShredded | None:
    for event in events:
        if isinstance(event, ev.KeysShredded) and event.reason == "withdrawal" and scope in event.scopes:
            return event
    return None


def _sealed(events: Iterable[ev.LedgerEvent]) -> list[SealedValue]:
    """Every sealed value in the events; each names the scope and key id it was sealed under."""
    found: list[SealedValue] = []
    for event in events:
        for f in fields(event):
            value = getattr(event, f.name)
            values = value.values() if isinstance(value, Mapping) else (value,)
            found += [v for v in values if isinstance(v, SealedValue)]
    return found


def _union(destroyed: Iterable[ShreddedKey], sealed: Iterable[SealedValue]) -> tuple[set[str], set[str]]:
    pairs = [(k.scope, k.key_id) for k in destroyed] + [(v.scope, v.key_id) for v in sealed]
    return {scope for scope, _ in pairs}, {key_id for _, key_id in pairs}


def _requester(request: ev.LedgerEvent) -> str:
    """The pseudonymous actor id or producer name that asked."""
    if request.meta.actor is not None:
        return request.meta.actor.actor_id
    return request.meta.producer or "unknown"
