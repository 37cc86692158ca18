"""The read-model port: keyless views of the ledger, changed only through `Change` operations.

Projectors turn events into changes (pure code shared by the embedded and distributed runners); a
store applies a page of changes together with the processing position in one transaction, so a crash
never leaves a view ahead of or behind its recorded position.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from consentry.core.sealing import SealedValue


@dataclass(frozen=True, slots=True)
class ConsentRow:
    """A subject's consent state for one purpose, as the consent view holds it."""

    purpose: str
    status: str
    lawful_basis: str
    since: datetime
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class AccessRow:
    """One granted or denied access, as the access log view holds it."""

    event_id: uuid.UUID
    actor_id: str
    role: str
    purpose: str
    field_names: tuple[str, ...]
    kind: str
    allowed: bool
    reason: str
    at: datetime


@dataclass(frozen=True, slots=True)
class ErasureRow:
    """An entry of the erasure register (certificates are PII-free)."""

    status: str
    at: datetime
    event_id: uuid.UUID
    certificate: bytes | None = field(default=None, repr=False)
    signature: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class PutValue:
    """A sealed field value collected for a purpose (copied as it is, never opened)."""

    subject_id: uuid.UUID
    purpose: str
    field_name: str
    sealed: SealedValue
    event_id: uuid.UUID
    at: datetime


@dataclass(frozen=True, slots=True)
class DropValues:
    """Forget the sealed values of some scopes of a subject (all scopes if None)."""

    subject_id: uuid.UUID
    scopes: tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class PutConsent:
    """Sets a subject's consent state for one purpose (caused by `event_id`)."""

    subject_id: uuid.UUID
    consent: ConsentRow
    event_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class AddAccess:
    """Adds one granted or denied access to the access log view."""

    subject_id: uuid.UUID
    access: AccessRow


@dataclass(frozen=True, slots=True)
class PutSubject:
    """A subject's lifecycle status: active, erasing or erased."""

    subject_id: uuid.UUID
    status: str
    at: datetime
    version: int


@dataclass(frozen=True, slots=True)
class PutErasure:
    """Sets the subject's entry of the erasure register."""

    subject_id: uuid.UUID
    erasure: ErasureRow


@dataclass(frozen=True, slots=True)
class MarkApplied:
    """The subject's events up to `sequence` are in the views; later redeliveries are skipped."""

    subject_id: uuid.UUID
    sequence: int


Change = PutValue | DropValues | PutConsent | AddAccess | PutSubject | PutErasure | MarkApplied


class ViewStore(ABC):
    """Where read models live; apply changes and position atomically, read them back."""

    # Whether a read is quick enough for an event loop to make itself: a local file whose reads
    # never wait for a writer (no network round trip, no lock held through a page's apply).
    reads_inline: bool = False

    @abstractmethod
    def position(self, name: str) -> int:
        """The last log position applied by the named runner (0 if none)."""

    @abstractmethod
    def apply(self, name: str, changes: Sequence[Change], position: int) -> None:
        """Applies the changes and records the position in one transaction."""

    @abstractmethod
    def apply_at(self, changes: Sequence[Change], positions: Mapping[str, int]) -> None:
        """Applies the changes and records several named positions in one transaction."""

    @abstractmethod
    def positions(self, prefix: str) -> dict[str, int]:
        """Every recorded position whose name starts with the prefix."""

    @abstractmethod
    def applied(self, subject_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
        """The last sequence in the views of each subject that has one."""

    @abstractmethod
    def reset(self, name: str) -> None:
        """Empties every view and forgets the position, before a replay."""

    @contextmanager
    def bulk_writes(self) -> Iterator[None]:
        """Around a rebuild's many pages: the store may favour writing over reading meanwhile."""
        yield

    @abstractmethod
    def values(
        self, subject_id: uuid.UUID, purpose: str | None = None
    ) -> dict[str, dict[str, SealedValue]]:
        """Sealed values by purpose and field (one purpose if given)."""

    @abstractmethod
    def current_values(
        self, subject_id: uuid.UUID, purpose: str, version: int
    ) -> dict[str, SealedValue] | None:
        """The purpose's sealed values by field if the views hold the subject's events up to
        `version`; None while they are behind."""

    @abstractmethod
    def consents(self, subject_id: uuid.UUID) -> list[ConsentRow]:
        """The subject's consent state per purpose."""

    @abstractmethod
    def accesses(self, subject_id: uuid.UUID) -> list[AccessRow]:
        """Every access and denial recorded for the subject, oldest first."""

    @abstractmethod
    def subject_status(self, subject_id: uuid.UUID) -> str | None:
        """active, erasing or erased; None if unknown."""

    @abstractmethod
    def erasure(self, subject_id: uuid.UUID) -> ErasureRow | None:
        """The subject's erasure register entry."""

    @abstractmethod
    def dump(self) -> dict[str, list[tuple[object, ...]]]:
        """Every row of every view (to compare a live run with a replay)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Releases resources."""
