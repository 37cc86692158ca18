"""The keystore's caches: unwrapped data keys, and what one batch read of its subjects' scopes.

Keys are cached so sealing and opening need no unwrap per value. A destroy must drop the subject's
cached keys before its rows go; the cache indexes keys by subject so that costs as much as the
subject has keys, not as much as the cache holds (a full scan of 50,000 keys is tens of
milliseconds per erasure, under the keystore's lock).

A batch that needs keys of subjects the cache does not hold would ask the store once per (subject,
scope), mostly to learn that a scope has no key yet. `KnownScopes` reads every scope of the batch's
subjects in one query instead, the first time one of them is missed, and the rows of the live keys
the batch wants in one more query, the first time one of them is needed.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence

from consentry.core.key_rows import KeyRow, ScopeVersion
from consentry.core.sealing import DataKey


class KeyCache:
    """The newest key of each (subject, scope) by recent use, every cached version by id."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._newest: OrderedDict[tuple[uuid.UUID, str], DataKey] = OrderedDict()
        self._by_id: dict[str, DataKey] = {}
        # Mirrors _by_id by subject, so a destroy visits only the subject's own keys.
        self._by_subject: dict[uuid.UUID, dict[str, DataKey]] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def newest(self, subject_id: uuid.UUID, scope: str) -> DataKey | None:
        """The newest cached key of the scope (now the most recently used), if any."""
        slot = (subject_id, scope)
        found = self._newest.get(slot)
        if found is not None:
            self._newest.move_to_end(slot)
        return found

    def holds(self, subject_id: uuid.UUID, scope: str) -> bool:
        """Whether a key of the scope is cached (without counting as a use)."""
        return (subject_id, scope) in self._newest

    def by_id(self, key_id: str) -> DataKey | None:
        return self._by_id.get(key_id)

    def remember(self, key: DataKey) -> None:
        """Caches a key; the least recently used scopes go once the cache is full."""
        slot = (key.subject_id, key.scope)
        newest = self._newest.get(slot)
        if newest is None:
            self._newest[slot] = key  # a new entry is the most recent already
        elif newest.version <= key.version:
            self._newest[slot] = key
            self._newest.move_to_end(slot)
        self._add(key)
        while len(self._newest) > self._size:
            self._drop(self._newest.popitem(last=False)[1])
        if len(self._by_id) > 2 * self._size:
            # Older versions pile up by id only: keep the ids of the newest keys.
            self._by_id.clear()
            self._by_subject.clear()
            for kept in self._newest.values():
                self._add(kept)

    def forget(self, subject_id: uuid.UUID, doomed: Callable[[DataKey], bool]) -> None:
        """Drops the subject's cached keys that `doomed` picks."""
        for key in [k for k in self._by_subject.get(subject_id, {}).values() if doomed(k)]:
            self._drop(key)
            slot = (key.subject_id, key.scope)
            if self._newest.get(slot) is key:
                del self._newest[slot]

    def forget_keys(self, keys: Iterable[DataKey]) -> None:
        """Drops exactly these keys (the ones a failed batch created)."""
        keys = list(keys)
        doomed = {key.key_id for key in keys}
        for subject_id in {key.subject_id for key in keys}:
            self.forget(subject_id, lambda k: k.key_id in doomed)

    def clear(self) -> None:
        self._newest.clear()
        self._by_id.clear()
        self._by_subject.clear()

    def _add(self, key: DataKey) -> None:
        self._by_id[key.key_id] = key
        self._by_subject.setdefault(key.subject_id, {})[key.key_id] = key

    def _drop(self, key: DataKey) -> None:
        if self._by_id.get(key.key_id) is key:
            del self._by_id[key.key_id]
        held = self._by_subject.get(key.subject_id)
        if held is not None and held.get(key.key_id) is key:
            del held[key.key_id]
            if not held:
                del self._by_subject[key.subject_id]


class KnownScopes:
    """The newest version of each scope of some subjects and the live rows a batch wants, read once.

    Valid only while nothing else can change those subjects' rows: the keystore's open batch
    transaction. The keystore notes its own inserts here and drops a subject it destroys or closes.
    """

    def __init__(self, wanted: Iterable[tuple[uuid.UUID, str]]) -> None:
        # The (subject, scope) keys the batch will ask for that the cache lacked when it began.
        self._wanted = dict.fromkeys(wanted)
        self._subjects = {subject for subject, _ in self._wanted}
        self._scopes: dict[uuid.UUID, dict[str, tuple[int, bool]]] | None = None
        self._rows: dict[uuid.UUID, dict[str, KeyRow]] | None = None

    def scopes(
        self,
        subject_id: uuid.UUID,
        read: Callable[[Sequence[uuid.UUID]], Iterable[ScopeVersion]],
    ) -> dict[str, tuple[int, bool]] | None:
        """The subject's newest (version, shredded) per scope; None if it was not announced."""
        if subject_id not in self._subjects:
            return None
        if self._scopes is None:
            self._scopes = {s: {} for s in self._subjects}
            # In any order: sorting UUID objects would compare them in Python.
            for subject, scope, version, shredded in read(list(self._subjects)):
                held = self._scopes[subject]
                newest = held.get(scope)
                if newest is None or newest[0] < version:
                    held[scope] = (version, shredded)
        return self._scopes[subject_id]

    def live_row(
        self,
        subject_id: uuid.UUID,
        scope: str,
        read: Callable[[Sequence[tuple[uuid.UUID, str, int]]], Iterable[KeyRow]],
    ) -> KeyRow | None:
        """The live newest row of a wanted scope (once); every wanted one is read the first time.

        None if the scope was not wanted, has no live key, or its row was handed out already.
        Call after `scopes` answered for the subject.
        """
        if self._rows is None:
            self._rows = {}
            known = self._scopes or {}
            versions = [
                (subject, scope, newest[0])
                for subject, scope in self._wanted
                if (newest := known.get(subject, {}).get(scope)) is not None and not newest[1]
            ]
            for row in read(versions) if versions else ():
                self._rows.setdefault(row.subject_id, {})[row.scope] = row
        return self._rows.get(subject_id, {}).pop(scope, None)

    def created(self, row: KeyRow) -> None:
        """Notes a key row the batch inserted."""
        if self._scopes is not None and row.subject_id in self._scopes:
            self._scopes[row.subject_id][row.scope] = (row.version, False)
        if self._rows is not None:
            self._rows.get(row.subject_id, {}).pop(row.scope, None)

    def drop(self, subject_id: uuid.UUID) -> None:
        """Forgets a subject whose rows changed otherwise: its lookups go to the store again."""
        self._subjects.discard(subject_id)
        if self._scopes is not None:
            self._scopes.pop(subject_id, None)
        if self._rows is not None:
            self._rows.pop(subject_id, None)
