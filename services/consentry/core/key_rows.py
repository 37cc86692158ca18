"""What the keystore stores and answers: key rows, tombstones and what a destroy or rewrap did."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from consentry.core.keys import WrappedKey


@dataclass(frozen=True, slots=True)
class KeyRow:
    """A stored, wrapped data key."""

    key_id: str
    subject_id: uuid.UUID
    scope: str
    version: int
    wrapped: WrappedKey = field(repr=False)
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Tombstone:
    """What is left of a destroyed key (or a scope closed before any key existed)."""

    subject_id: uuid.UUID
    scope: str
    version: int
    key_id: str | None
    shredded_at: datetime


@dataclass(frozen=True, slots=True)
class ShreddedKey:
    """A key that `destroy` or `destroy_keys` deleted."""

    key_id: str
    scope: str
    version: int


@dataclass(frozen=True, slots=True)
class Rewrapped:
    """What one `rewrap` did: keys moved to the active KEK, keys no KEK of the provider opens."""

    rewrapped: int
    unreadable: int


ScopeVersion = tuple[uuid.UUID, str, int, bool]
"""(subject, scope, version, shredded): one key row or tombstone, without its key bytes."""
