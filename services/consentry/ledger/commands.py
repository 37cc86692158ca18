"""Commands staff and the platform's own services give the ledger (intake records are the others)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from consentry.core.events import Actor


@dataclass(frozen=True, slots=True)
class RecordAccess:
    """Personal fields are about to be disclosed to an actor for a purpose."""

    subject_id: uuid.UUID
    actor: Actor
    purpose: str
    field_names: tuple[str, ...]
    access_kind: str = "profile"


@dataclass(frozen=True, slots=True)
class DenyAccess:
    """An actor was refused; the refusal is recorded like a read."""

    subject_id: uuid.UUID
    actor: Actor
    purpose: str
    reason: str
    access_kind: str = "profile"


@dataclass(frozen=True, slots=True)
class RequestErasure:
    """Staff (a data-subject-request handler) asked for full erasure."""

    subject_id: uuid.UUID
    actor: Actor
    reason: str = "customer_request"


@dataclass(frozen=True, slots=True)
class RecordShredding:
    """The shredder destroyed keys; `erased` closes the subject for good."""

    subject_id: uuid.UUID
    reason: str
    scopes: tuple[str, ...]
    key_ids: tuple[str, ...]
    certificate: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    erased: bool = False
    causation_id: str | None = None


@dataclass(frozen=True, slots=True)
class RecordContact:
    """Staff are about to contact the subject for a purpose over a channel (if the policy allows)."""

    subject_id: uuid.UUID
    actor: Actor
    purpose: str
    channel: str


@dataclass(frozen=True, slots=True)
class RecordShare:
    """Fields of a purpose are about to be sent to a sub-processor under an agreement."""

    subject_id: uuid.UUID
    actor: Actor
    purpose: str
    processor: str
    agreement: str
    field_names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FlagAnomaly:
    """A read broke an access rule; `cause` names the breach, so a repeated flag is a duplicate."""

    subject_id: uuid.UUID
    actor_id: str
    role: str
    rule: str
    access_event_id: uuid.UUID
    detail: str
    cause: str


StaffCommand = (
    RecordAccess
    | DenyAccess
    | RequestErasure
    | RecordShredding
    | RecordContact
    | RecordShare
    | FlagAnomaly
)
