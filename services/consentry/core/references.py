"""The blind index of external references, and the request digests of erased subjects.

External references (`shop:123`, an email used for look-up) are never stored: the keystore keeps
HMAC-SHA256(index key, namespace + normalised value) and the subject it points at (DESIGN.md §3).
An erasure drops the subject's references, but keeps the digests of the requests its history
answered, so a request retried after the erasure is still recognised. This is the look-up half of
the keystore port; `Keystore` inherits it and its adapters implement the primitives.
"""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from consentry.core.errors import KeystoreError
from consentry.core.keys import KeyProvider


def normalise_reference(value: str) -> str:
    """The form references are indexed in: NFKC, trimmed, case-folded."""
    return unicodedata.normalize("NFKC", value).strip().casefold()


class ReferenceIndex(ABC):
    """Finds subjects by blind-indexed external references (and erased subjects by request)."""

    # Set by the keystore: the provider of the index key, and the lock around every store call.
    provider: KeyProvider
    _lock: AbstractContextManager[Any]

    def blind_index(self, namespace: str, value: str) -> bytes:
        """HMAC-SHA256 of namespace and normalised value under the index key."""
        message = namespace.encode() + b"\x00" + normalise_reference(value).encode()
        return hmac.new(self.provider.index_key(), message, hashlib.sha256).digest()

    def link_reference(self, blind: bytes, subject_id: uuid.UUID) -> uuid.UUID:
        """Points a reference at a subject unless it already points somewhere; returns the winner."""
        return self.link_references({blind: subject_id})[blind]

    def link_references(self, links: Mapping[bytes, uuid.UUID]) -> dict[bytes, uuid.UUID]:
        """`link_reference` for several references (each to its own subject): each one's winner,
        read back after the inserts (a reference linked before keeps its subject)."""
        with self._lock:
            if not links:
                return {}
            self._insert_references(links)
            found = self._get_references(list(links))
            if len(found) != len(links):
                raise KeystoreError("reference vanished while being linked")
            return found

    def find_reference(self, blind: bytes) -> uuid.UUID | None:
        """The subject a reference points at, if any."""
        with self._lock:
            return self._get_reference(blind)

    def find_references(self, blinds: Sequence[bytes]) -> dict[bytes, uuid.UUID]:
        """The subjects of those references that point somewhere (one query where possible)."""
        with self._lock:
            return self._get_references(blinds) if blinds else {}

    def drop_references(self, subject_id: uuid.UUID) -> int:
        """Removes every reference to the subject; returns how many."""
        with self._lock:
            return self._drop_references(subject_id)

    def find_erased_request(self, digest: bytes) -> uuid.UUID | None:
        """The erased subject whose history answered the request with that digest, if any."""
        with self._lock:
            return self._get_erased_request(digest)

    def find_erased_requests(self, digests: Sequence[bytes]) -> dict[bytes, uuid.UUID]:
        """The erased subjects of those request digests that have one (one query where possible)."""
        with self._lock:
            return self._get_erased_requests(digests) if digests else {}

    # -- storage primitives --------------------------------------------------------------------

    @abstractmethod
    def _insert_references(self, links: Mapping[bytes, uuid.UUID]) -> None:
        """Inserts each reference that is absent (one that exists stays as it is)."""

    @abstractmethod
    def _get_reference(self, blind: bytes) -> uuid.UUID | None:
        """The subject of a reference."""

    @abstractmethod
    def _get_references(self, blinds: Sequence[bytes]) -> dict[bytes, uuid.UUID]:
        """The subjects of those references that exist."""

    @abstractmethod
    def _drop_references(self, subject_id: uuid.UUID) -> int:
        """Deletes the subject's references."""

    @abstractmethod
    def _put_erased_requests(self, digests: Sequence[bytes], subject_id: uuid.UUID) -> None:
        """Points each request digest at the erased subject; a digest already stored stays as it is."""

    @abstractmethod
    def _get_erased_request(self, digest: bytes) -> uuid.UUID | None:
        """The erased subject of a request digest."""

    # Batch primitives: one call per item unless an adapter does better.

    def _get_erased_requests(self, digests: Sequence[bytes]) -> dict[bytes, uuid.UUID]:
        """The erased subjects of those request digests that are stored."""
        found = {digest: self._get_erased_request(digest) for digest in digests}
        return {digest: subject for digest, subject in found.items() if subject is not None}
