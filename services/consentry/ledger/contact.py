"""Contact protection: may the subject be contacted for a purpose over a channel, now?

One pure rule, used both to answer `contact-check` and to decide `RecordContact`, so a contact is
recorded only if the same check allows it, in the same write (two staff cannot both take the last
contact a cap allows). The reasons, in the order they are checked: the subject is erased, the subject
opted out (withdrew consent or objected), no active consent, quiet hours, the cap is reached.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from consentry.core.errors import Reason
from consentry.core.policy import LawfulBasis, Policy

if TYPE_CHECKING:
    from consentry.ledger.subject import SubjectState


@dataclass(frozen=True, slots=True)
class ContactVerdict:
    """The answer, with what the cap counted (pseudonymous: times and channel names only)."""

    reason: Reason | None
    in_window: int = 0
    cap: int | None = None
    per_days: int | None = None
    next_allowed_at: datetime | None = None

    @property
    def allowed(self) -> bool:
        return self.reason is None


def contact_verdict(
    state: SubjectState, policy: Policy, purpose: str, channel: str | None, now: datetime
) -> ContactVerdict:
    """The policy's answer for a contact now; `channel` None asks for any channel."""
    declared = policy.purposes[purpose]
    current = state.purposes.get(purpose)
    if state.erasure_requested:
        return ContactVerdict(Reason.SUBJECT_ERASED)
    if current is not None and current.status == "withdrawn":
        return ContactVerdict(Reason.OPTED_OUT)
    if declared.lawful_basis == LawfulBasis.CONSENT:
        if current is None or current.status != "granted":
            return ContactVerdict(Reason.NO_CONSENT)
        if current.expires_at is not None and current.expires_at <= now:
            return ContactVerdict(Reason.CONSENT_EXPIRED)
    if declared.quiet_hours is not None and declared.quiet_hours.covers(now):
        return ContactVerdict(Reason.QUIET_HOURS)
    cap = declared.contact_cap
    if cap is None or not cap.counts(channel):
        return ContactVerdict(None)
    since = now - timedelta(days=cap.per_days)
    made = sorted(
        at for at, over in state.contacts.get(purpose, ()) if since < at <= now and cap.counts(over)
    )
    if len(made) < cap.max:
        return ContactVerdict(None, len(made), cap.max, cap.per_days)
    # The oldest contacts must leave the window before another one fits.
    frees = made[len(made) - cap.max] + timedelta(days=cap.per_days) if cap.max else None
    return ContactVerdict(Reason.CAP_REACHED, len(made), cap.max, cap.per_days, frees)
