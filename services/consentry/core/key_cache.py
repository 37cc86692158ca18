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
from collections.abc import Callable, Iterable, Iterator, Sequence

from consentry.core.key_rows import KeyRow, ScopeVersion
from consentry.core.sealing import DataKey


class KeyCache:
    """Cached keys by subject, subjects by recent use; each scope's newest key; every key by id.

    One entry per subject, not per (subject, scope): the subject's keys are looked up, evicted and
    forgotten together, and a key costs about 350 bytes here, its own ~220 included (640 with
    an entry per scope and the AAD parts kept in each key; tracemalloc over 100,000 keys of 25,000
    subjects). `size` counts keys, every version alike; the least recently used subjects go
    whole once there are more (never the subject being remembered, so one subject with more keys
    than `size` stays while it is used).
    """

    def __init__(self, size: int) -> None:
        self._size = size
        # Per subject: its newest key of each scope under the scope, an older version (rare: a
        # re-consent makes a new one) under (scope, version). Only `_by_id` holds any key else.
        self._subjects: OrderedDict[uuid.UUID, dict[str | tuple[str, int], DataKey]] = OrderedDict()
        self._by_id: dict[str, DataKey] = {}
        # Cached subjects whose every key is here and none of whose scopes is shredded, so a scope
        # they lack here has no key anywhere (see `mark_complete`). The mark goes with the subject.
        self._complete: set[uuid.UUID] = set()

    def __len__(self) -> int:
        return len(self._by_id)

    @property
    def keeps(self) -> bool:
        """Whether this cache keeps any key (a size of 0 keeps none)."""
        return self._size > 0

    def newest(self, subject_id: uuid.UUID, scope: str) -> DataKey | None:
        """The newest cached key of the scope (its subject now the most recently used), if any."""
        held = self._subjects.get(subject_id)
        if held is None:
            return None
        found = held.get(scope)
        if found is not None:
            self._subjects.move_to_end(subject_id)
        return found

    def holds(self, subject_id: uuid.UUID, scope: str) -> bool:
        """Whether a key of the scope is cached (without counting as a use)."""
        held = self._subjects.get(subject_id)
        return held is not None and scope in held

    def version(self, subject_id: uuid.UUID, scope: str) -> int | None:
        """The version of the scope's newest cached key (without counting as a use), if any."""
        found = self._subjects.get(subject_id, {}).get(scope)
        return None if found is None else found.version

    def by_id(self, key_id: str) -> DataKey | None:
        return self._by_id.get(key_id)

    def complete(self, subject_id: uuid.UUID) -> bool:
        """Whether the subject's every key is cached and none of its scopes is shredded."""
        return subject_id in self._complete

    def mark_complete(self, subject_id: uuid.UUID) -> None:
        """Notes that the store holds no key of the subject but the cached ones, and no tombstone.

        Only the keystore knows that (it created every key of a subject it minted, or read all of
        the subject's scopes); it drops the mark before anything of the subject is destroyed or
        closed. A subject with no cached key is not marked: it would hold a slot the size does not
        count.
        """
        if subject_id in self._subjects:
            self._complete.add(subject_id)

    def incomplete(self, subject_id: uuid.UUID) -> None:
        """Drops the subject's mark: a scope it lacks here is looked up in the store again."""
        self._complete.discard(subject_id)

    def remember(self, key: DataKey, *, newest: bool = True) -> None:
        """Caches a key; the least recently used subjects go once the cache is full.

        `newest` says the key is its scope's newest version in the store. A key found by its id
        may be an older one (a re-consent's withdrawn version, live until the shredder destroys
        it): it is cached to be found by its id, never as the key new values of the scope get.
        """
        if self._size <= 0:
            return
        subject_id = key.subject_id
        held = self._subjects.get(subject_id)
        if held is None:
            held = self._subjects[subject_id] = {}  # a new entry is the most recent already
        else:
            self._subjects.move_to_end(subject_id)
        # The slot of this very version, if it was an older one: the key takes one slot only.
        replaced = held.pop((key.scope, key.version), None)
        current = held.get(key.scope)
        if current is not None and current.version == key.version:
            replaced = current
            held[key.scope] = key
        elif newest and (current is None or current.version < key.version):
            if current is not None:
                held[(current.scope, current.version)] = current
            held[key.scope] = key
        else:
            held[(key.scope, key.version)] = key
        if replaced is not None and replaced.key_id != key.key_id:
            self._drop_id(replaced)  # not expected: one id per (subject, scope, version)
        self._by_id[key.key_id] = key
        subjects = self._subjects
        while len(self._by_id) > self._size and next(iter(subjects)) != subject_id:
            evicted_subject, evicted_keys = subjects.popitem(last=False)
            self._complete.discard(evicted_subject)
            for evicted in evicted_keys.values():
                self._drop_id(evicted)

    def forget(self, subject_id: uuid.UUID, doomed: Callable[[DataKey], bool]) -> None:
        """Drops the subject's cached keys that `doomed` picks."""
        held = self._subjects.get(subject_id)
        if held is None:
            return
        for slot, key in list(held.items()):
            if doomed(key):
                del held[slot]
                self._drop_id(key)
        if not held:
            del self._subjects[subject_id]
            self._complete.discard(subject_id)

    def forget_keys(self, keys: Iterable[DataKey]) -> None:
        """Drops exactly these keys (the ones a failed batch created)."""
        keys = list(keys)
        doomed = {key.key_id for key in keys}
        for subject_id in {key.subject_id for key in keys}:
            self._complete.discard(subject_id)
            self.forget(subject_id, lambda k: k.key_id in doomed)

    def clear(self) -> None:
        self._subjects.clear()
        self._by_id.clear()
        self._complete.clear()

    def _drop_id(self, key: DataKey) -> None:
        # Each cached id is in one slot of its subject: dropping the slot drops the id.
        self._by_id.pop(key.key_id, None)


class KnownScopes:
    """The newest version of each scope of some subjects and the live rows a batch wants, read once.

    Valid only while nothing else can change those subjects' rows: the keystore's open batch
    transaction. The keystore notes its own inserts here and drops a subject it destroys or closes.
    """

    def __init__(self, wanted: Iterable[tuple[uuid.UUID, str]], *, keep_rows: bool = False) -> None:
        # The (subject, scope) keys the batch will ask for that the cache lacked when it began.
        self._wanted = dict.fromkeys(wanted)
        # A row is handed out once (the key cache holds it then), or every time it is asked for.
        self._keep_rows = keep_rows
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

        None if the scope was not wanted, has no live key, or its row was handed out already
        (unless rows are kept). Call after `scopes` answered for the subject.
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
        rows = self._rows.get(subject_id, {})
        return rows.get(scope) if self._keep_rows else rows.pop(scope, None)

    def created(self, row: KeyRow) -> None:
        """Notes a key row the batch inserted (kept rows: the scope's live row from now on)."""
        if self._scopes is not None and row.subject_id in self._scopes:
            self._scopes[row.subject_id][row.scope] = (row.version, False)
        if self._rows is not None:
            if self._keep_rows and row.subject_id in self._subjects:
                self._rows.setdefault(row.subject_id, {})[row.scope] = row
            else:
                self._rows.get(row.subject_id, {}).pop(row.scope, None)

    def read(self) -> Iterator[tuple[uuid.UUID, dict[str, tuple[int, bool]]]]:
        """The subjects whose scopes were read (and not dropped since), with what was read."""
        return iter(() if self._scopes is None else self._scopes.items())

    def drop(self, subject_id: uuid.UUID) -> None:
        """Forgets a subject whose rows changed otherwise: its lookups go to the store again."""
        self._subjects.discard(subject_id)
        if self._scopes is not None:
            self._scopes.pop(subject_id, None)
        if self._rows is not None:
            self._rows.pop(subject_id, None)
