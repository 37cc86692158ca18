"""The in-memory keystore: a fake for unit tests that passes the same contract suite as the adapters."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime

from consentry.core.clock import Clock
from consentry.core.errors import KeyExists
from consentry.core.key_rows import ScopeVersion
from consentry.core.keys import KeyProvider, WrappedKey
from consentry.core.keystore import KeyRow, Keystore, ShreddedKey, Tombstone


class InMemoryKeystore(Keystore):
    """A fake for unit tests; passes the same contract suite as the real adapters."""

    def __init__(self, provider: KeyProvider, clock: Clock | None = None) -> None:
        # Nothing else can reach its rows: it is the sole writer of its store.
        super().__init__(provider, clock, sole_writer=True)
        self._rows: dict[tuple[uuid.UUID, str, int], KeyRow | Tombstone] = {}
        self._refs: dict[bytes, uuid.UUID] = {}
        self._erased: dict[bytes, uuid.UUID] = {}

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        rows, refs, erased = dict(self._rows), dict(self._refs), dict(self._erased)
        try:
            yield
        except BaseException:
            self._rows, self._refs, self._erased = rows, refs, erased
            raise

    def _latest(self, subject_id: uuid.UUID, scope: str) -> KeyRow | Tombstone | None:
        rows = [r for (s, sc, _), r in self._rows.items() if s == subject_id and sc == scope]
        return max(rows, key=lambda r: r.version, default=None)

    def _key_by_id(self, key_id: str) -> KeyRow | Tombstone | None:
        return next((r for r in self._rows.values() if r.key_id == key_id), None)

    def _versions(self, subject_id: uuid.UUID, scope: str | None) -> list[KeyRow | Tombstone]:
        rows = [r for r in self._rows.values() if r.subject_id == subject_id]
        return sorted((r for r in rows if scope in (None, r.scope)), key=lambda r: (r.scope, r.version))

    def _scopes_of(self, subject_ids: Sequence[uuid.UUID]) -> list[ScopeVersion]:
        wanted = set(subject_ids)
        return [
            (r.subject_id, r.scope, r.version, isinstance(r, Tombstone))
            for r in self._rows.values()
            if r.subject_id in wanted
        ]

    def _insert_key(self, row: KeyRow) -> None:
        slot = (row.subject_id, row.scope, row.version)
        if slot in self._rows:
            raise KeyExists("key version taken")
        self._rows[slot] = row

    def _insert_tombstone(self, tombstone: Tombstone) -> None:
        self._rows[(tombstone.subject_id, tombstone.scope, tombstone.version)] = tombstone

    def _destroy(
        self, subject_id: uuid.UUID, scopes: Sequence[str] | None, at: datetime
    ) -> list[ShreddedKey]:
        return self._destroy_where(subject_id, lambda r: scopes is None or r.scope in scopes, at)

    def _destroy_keys(
        self, subject_id: uuid.UUID, key_ids: Sequence[str], at: datetime
    ) -> list[ShreddedKey]:
        return self._destroy_where(subject_id, lambda r: r.key_id in key_ids, at)

    def _destroy_where(
        self, subject_id: uuid.UUID, match: Callable[[KeyRow], bool], at: datetime
    ) -> list[ShreddedKey]:
        destroyed = []
        for slot, row in list(self._rows.items()):
            if isinstance(row, KeyRow) and row.subject_id == subject_id and match(row):
                self._rows[slot] = Tombstone(subject_id, row.scope, row.version, row.key_id, at)
                destroyed.append(ShreddedKey(row.key_id, row.scope, row.version))
        return destroyed

    def _stale_keys(self, active: int, after: str, limit: int) -> list[KeyRow]:
        rows = [r for r in self._rows.values() if isinstance(r, KeyRow)]
        stale = [r for r in rows if r.wrapped.kek_version != active and r.key_id > after]
        return sorted(stale, key=lambda r: r.key_id)[:limit]

    def _replace_wrapped(self, key_id: str, old: WrappedKey, new: WrappedKey) -> int:
        for slot, row in self._rows.items():
            if isinstance(row, KeyRow) and row.key_id == key_id and row.wrapped == old:
                self._rows[slot] = replace(row, wrapped=new)
                return 1
        return 0

    def _kek_counts(self) -> dict[int, int]:
        versions = [r.wrapped.kek_version for r in self._rows.values() if isinstance(r, KeyRow)]
        return dict(Counter(versions))

    def _insert_references(self, links: Mapping[bytes, uuid.UUID]) -> None:
        for blind, subject_id in links.items():
            self._refs.setdefault(blind, subject_id)

    def _get_reference(self, blind: bytes) -> uuid.UUID | None:
        return self._refs.get(blind)

    def _get_references(self, blinds: Sequence[bytes]) -> dict[bytes, uuid.UUID]:
        return {b: self._refs[b] for b in blinds if b in self._refs}

    def _drop_references(self, subject_id: uuid.UUID) -> int:
        gone = [b for b, s in self._refs.items() if s == subject_id]
        for blind in gone:
            del self._refs[blind]
        return len(gone)

    def _put_erased_requests(self, digests: Sequence[bytes], subject_id: uuid.UUID) -> None:
        for digest in digests:
            self._erased.setdefault(digest, subject_id)

    def _get_erased_request(self, digest: bytes) -> uuid.UUID | None:
        return self._erased.get(digest)
