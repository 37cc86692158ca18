"""The order every disclosure keeps: the caller admitted, the disclosure recorded, then values opened.

A refusal is recorded as `AccessDenied` before it answers; a disclosure (`DataAccessed`,
`DataShared`) is durable before any value is opened, and a value whose key went meanwhile is never
opened. The busiest disclosure, a profile read, comes two ways:
- on the event loop, when everything it needs is at hand (`ready`, then `finish`): the reads that
  arrive together append their access events in one transaction, one thread hand-off per group;
- in a thread, for anything that may block (`read_profile`): a state to fold from the store, views
  to catch up, a refusal to record, a key to read and unwrap.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from consentry.core.errors import Reason
from consentry.core.events import Actor
from consentry.core.policy import Permission
from consentry.core.problems import Problem
from consentry.core.sealing import SealedValue
from consentry.core.views import ViewStore
from consentry.ledger.application import Ledger
from consentry.ledger.commands import DenyAccess, RecordAccess
from consentry.ledger.subject import Outcome, SubjectState, purpose_usable
from consentry.query.access import Caller, caller_from_header
from consentry.query.reader import Reader


class CatchUp(Protocol):
    """Returns once the views hold the subject's events (up to `version`, if given)."""

    def __call__(self, subject_id: uuid.UUID, version: int | None = None) -> None: ...


@dataclass(frozen=True, slots=True)
class ReadyRead:
    """A profile read the event loop has admitted: its access event and the sealed values."""

    access: RecordAccess
    sealed: dict[str, SealedValue]


class Disclosures:
    """Admission, refusal and disclosure for the query endpoints."""

    def __init__(self, ledger: Ledger, views: ViewStore, catch_up: CatchUp) -> None:
        self.ledger = ledger
        self.views = views
        self.catch_up = catch_up
        self.reader = Reader(ledger, views)

    def caller(self, authorization: str | None) -> Caller:
        return caller_from_header(self.ledger.policy, authorization)

    def known(self, subject_id: uuid.UUID) -> SubjectState:
        state = self.ledger.load(subject_id)
        if not state.exists:
            raise Problem(404, "unknown-subject", "no such subject")
        return state

    def active(self, state: SubjectState, purpose: str) -> bool:
        return purpose_active(self.ledger, state, purpose)

    def refuse(
        self,
        state: SubjectState,
        who: Caller,
        role: str,
        purpose: str,
        reason: str,
        kind: str,
        status: int,
    ) -> Problem:
        """Records the refusal (AccessDenied) and returns the problem to raise."""
        actor = Actor(who.actor_id, role)
        self.ledger.execute([DenyAccess(state.subject_id, actor, purpose, reason, kind)])
        self.catch_up(state.subject_id)
        return Problem(
            status, reason.replace("_", "-"), f"access refused: {reason}", reason=Reason(reason)
        )

    def admit(
        self, state: SubjectState, who: Caller, purpose: str, permission: Permission, kind: str
    ) -> str:
        """The caller's role for a disclosure; every refusal is recorded as AccessDenied first."""
        role = who.role_for(self.ledger.policy, purpose, permission)
        if role is None:
            raise self.refuse(state, who, who.roles[0], purpose, "role_not_allowed", kind, 403)
        if state.erasure_requested:
            raise self.refuse(state, who, role, purpose, "subject_erased", kind, 410)
        if not self.active(state, purpose):
            raise self.refuse(state, who, role, purpose, "no_consent", kind, 403)
        return role

    def disclose(
        self, outcome: Outcome, subject_id: uuid.UUID, purpose: str, sealed: dict[str, SealedValue]
    ) -> dict[str, str | None]:
        """Opens the values once their disclosure event is recorded (the outcome "accepted")."""
        if outcome.status != "accepted":
            raise refused(outcome)
        fields = self.reader.open_fields(subject_id, sealed)
        if None in fields.values():
            # A key went between the disclosure event and the opening: an erasure or withdrawal won.
            fresh = self.ledger.load(subject_id)
            if fresh.erasure_requested:
                raise Problem(410, "subject-erased", "the subject was erased during the read")
            if not self.active(fresh, purpose):
                raise Problem(403, "no-consent", "consent was withdrawn during the read")
        return fields

    # -- profile reads ---------------------------------------------------------------------------

    def ready(self, subject_id: uuid.UUID, purpose: str, authorization: str | None) -> ReadyRead | None:
        """A read the event loop can make itself, or None.

        It can when everything is at hand: the caller's token (a 401 raises here), a remembered
        state that admits the read, and views that hold the subject's data and read without
        waiting. Where anything is missing, or the read must be refused (the refusal is recorded),
        `read_profile` does it all in a thread.
        """
        who = self.caller(authorization)
        ledger, views = self.ledger, self.views
        state = ledger.remembered(subject_id) if views.reads_inline else None
        if state is None or not state.exists or ledger.policy.purpose(purpose) is None:
            return None
        role = who.role_for(ledger.policy, purpose, "read")
        if role is None or not self.active(state, purpose):
            return None
        sealed = views.current_values(subject_id, purpose, state.data_version)
        if sealed is None:
            return None
        actor = Actor(who.actor_id, role)
        return ReadyRead(
            RecordAccess(subject_id, actor, purpose, tuple(sorted(sealed)), "profile"), sealed
        )

    async def finish(self, ready: ReadyRead) -> dict[str, Any]:
        """Appends the read's access event with the other reads awaiting theirs, then answers."""
        access = ready.access
        outcome = (await self.ledger.execute_async([access]))[0]
        if outcome.status != "accepted":
            raise refused(outcome)
        fields: Mapping[str, str | None] | None = self.reader.open_cached(
            access.subject_id, ready.sealed
        )
        if fields is None:
            loop = asyncio.get_running_loop()
            fields = await loop.run_in_executor(
                None, self.disclose, outcome, access.subject_id, access.purpose, ready.sealed
            )
        return self._answer(access.subject_id, access.purpose, outcome, fields)

    def read_profile(
        self, subject_id: uuid.UUID, purpose: str, authorization: str | None
    ) -> dict[str, Any]:
        """The whole read, blocking where it must (for a thread)."""
        who = self.caller(authorization)
        state = self.known(subject_id)
        if self.ledger.policy.purpose(purpose) is None:
            raise Problem(422, "unknown-purpose", "the purpose is not in the policy")
        role = self.admit(state, who, purpose, "read", "profile")
        # The answer needs the subject's data in the views, not other reads' access events.
        self.catch_up(state.subject_id, state.data_version)
        sealed = self.views.values(subject_id, purpose).get(purpose, {})
        actor = Actor(who.actor_id, role)
        access = RecordAccess(subject_id, actor, purpose, tuple(sorted(sealed)), "profile")
        outcome = self.ledger.execute([access])[0]
        # The access event is durable now; the access-log view picks it up with the next catch-up
        # (every view read catches up first), so the answer does not wait for it.
        fields = self.disclose(outcome, subject_id, purpose, sealed)
        return self._answer(subject_id, purpose, outcome, fields)

    def _answer(
        self, subject_id: uuid.UUID, purpose: str, outcome: Outcome, fields: Mapping[str, str | None]
    ) -> dict[str, Any]:
        return {
            "subject_id": str(subject_id),
            "purpose": purpose,
            "access_event_id": str(outcome.event_id),
            "policy_version": self.ledger.policy.version,
            "fields": fields,
        }


def purpose_active(ledger: Ledger, state: SubjectState, purpose: str) -> bool:
    """Whether the subject's data may be used for the purpose now (consent or another basis)."""
    return purpose_usable(state, ledger.policy, purpose, ledger.clock.now())


def refused(outcome: Outcome) -> Problem:
    """The problem a disclosure the ledger refused answers with: erased 410, no consent 403."""
    if outcome.reason in (Reason.NO_CONSENT, Reason.CONSENT_EXPIRED):
        return Problem(
            403,
            "no-consent",
            "access refused: no_consent (withdrawn during the read)",
            reason=Reason.NO_CONSENT,
        )
    return Problem(410, "subject-erased", "the subject is erased")
