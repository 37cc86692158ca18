"""The keystore port: the only mutable, deletable store.

It keeps one wrapped data key per (subject, scope, version), the blind index of external
references, and the request digests of erased subjects, so that a retried request is still known
once its reference is gone. Destroying a scope deletes its key bytes and leaves a tombstone, so the
scope can never be silently recreated: a returning customer gets a new subject, or the caller asks
for a new key version on purpose. Single versions can be destroyed too, so a withdrawal never takes
a re-consent's newer version with it. Adapters implement the storage primitives; wrapping, caching
and the rules live here, the reference look-ups in `consentry.core.references`.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime
from typing import Final

from consentry.core.clock import Clock, SystemClock
from consentry.core.errors import KeyExists, KeyNotFound, KeyProviderError, ScopeShredded
from consentry.core.key_cache import KeyCache, KnownScopes
from consentry.core.key_rows import KeyRow, Rewrapped, ScopeVersion, ShreddedKey, Tombstone
from consentry.core.keys import KeyProvider, WrappedKey
from consentry.core.pending_commit import PendingCommit
from consentry.core.randomness import take_random
from consentry.core.references import ReferenceIndex, normalise_reference
from consentry.core.sealing import DataKey
from consentry.core.slots import maker

CACHE_KEYS: Final = 400_000
"""Unwrapped keys the cache holds by default: about 150 MB (a cached key takes 330-390 bytes)."""

SUBJECT_SCOPE: Final = "*"
"""Tombstoned on full erasure: no key of any scope can be created for the subject again."""

__all__ = [
    "SUBJECT_SCOPE",
    "KeyRow",
    "Keystore",
    "Rewrapped",
    "ShreddedKey",
    "Tombstone",
    "normalise_reference",
]


def new_key_ids(count: int) -> list[str]:
    """`count` key ids in the form of UUIDv7s' hex (RFC 9562): creation milliseconds, then 74 random
    bits each; one reading of the clock and one draw of bytes for them all.

    The random bits come from core/randomness: the id is public (stored next to each sealed value).

    Time first, so the keystore's index of key ids grows at its end: with random ids every new key
    dirtied a page of its own anywhere in that index, written to the WAL at each commit (creating
    100k keys, 4 per subject, batches of 100 subjects: 43.6 -> 34.3 us per key; after 300k keys
    62.1 -> 42.0). The time says no more than the event that first uses the key.
    """
    head = (time.time_ns() // 1_000_000 % (1 << 48)).to_bytes(6, "big")
    drawn = take_random(10 * count)
    ids = []
    for start in range(0, 10 * count, 10):
        raw = bytearray(head + drawn[start : start + 10])
        raw[6] = raw[6] & 0x0F | 0x70  # version 7
        raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
        ids.append(raw.hex())
    return ids


# Built by setting its slots (see core/slots): one per key created.
_key_row: Callable[[str, uuid.UUID, str, int, WrappedKey, datetime], KeyRow] = maker(KeyRow)


class Keystore(ReferenceIndex, ABC):
    """Creates, finds and destroys data keys; finds subjects by blind-indexed references."""

    # Whether a batch may read the scopes of its subjects at once (`batch(wanted)`): where this
    # process is the sole writer of keys, or where `_hold_subjects` keeps every other writer off
    # those subjects from before that read until the batch ends.
    prefetch_scopes: bool = True

    def __init__(
        self,
        provider: KeyProvider,
        clock: Clock | None = None,
        cache_size: int = CACHE_KEYS,
        *,
        sole_writer: bool = False,
    ) -> None:
        self.provider = provider
        self.clock: Clock = clock or SystemClock()
        self._cache = KeyCache(cache_size)
        # Whether no other process creates, destroys or closes keys in this store (the embedded
        # platform): only then can the cache know that a subject has no key but the cached ones.
        self._sole_writer = sole_writer
        self._lock = threading.RLock()
        self._batch_keys: list[DataKey] | None = None
        self._batch_pending: PendingCommit | None = None
        # Ids minted here for new subjects: no key of theirs can exist but the cached ones.
        self._fresh: dict[uuid.UUID, None] = {}
        self._batch_created: dict[tuple[uuid.UUID, str], DataKey] = {}
        self._known = KnownScopes(())

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    @contextmanager
    def batch(self, wanted: Iterable[tuple[uuid.UUID, str]] = ()) -> Iterator[PendingCommit]:
        """Makes the keys created and references linked inside one durable write.

        The ledger creates a batch's keys here and commits its events only once the `PendingCommit`
        this yields has returned (after the batch: an adapter may still be committing then), so no
        event is ever stored sealed under a key that is not durable yet. On an exception nothing of
        the batch is kept, and no key of it stays in the cache. If the pending commit fails, its
        keys leave the cache when it is first waited for: by the ledger, which always waits for it
        before its next step, or by the keystore's next transaction. `wanted` names the (subject,
        scope) keys the batch will ask for: the scopes of those subjects the cache lacks are read
        in one query, when the first of them is asked for.
        """
        with self._lock:
            if self._batch_pending is not None:
                yield self._batch_pending  # a nested batch is part of the outer one
                return
            self._batch_keys = []
            pending = self._batch_pending = PendingCommit(self._batch_keys, self._forget_failed)
            prefetched = list(wanted) if self.prefetch_scopes else []
            cache = self._cache
            # A keystore that caches no key hands the same row out again, not once to its cache.
            self._known = KnownScopes(
                (
                    (s, scope)
                    for s, scope in prefetched
                    if not cache.holds(s, scope) and not cache.complete(s)
                ),
                keep_rows=not cache.keeps,
            )
            try:
                with self._batch_transaction(pending):
                    self._hold_subjects([s for s, _ in prefetched])
                    yield pending
            except BaseException:
                cache.forget_keys(self._batch_keys)
                raise
            else:
                self._mark_complete()
            finally:
                self._batch_keys = self._batch_pending = None
                # A fresh mark holds only while nobody else can know the id: until the batch that
                # links its reference is written.
                self._fresh.clear()
                self._batch_created.clear()
                self._known = KnownScopes(())

    def _forget_failed(self, keys: Sequence[DataKey]) -> None:
        """Drops a batch's keys from the cache: their commit failed after the batch ended."""
        with self._lock:
            self._cache.forget_keys(keys)

    def _mark_complete(self) -> None:
        """After a batch: notes the subjects the cache now holds every key of.

        Where the batch's commit is still running, the marks go with its keys should it fail
        (`KeyCache.forget_keys` drops the marks of the keys' subjects).

        Those are the subjects minted in the batch (their every key was created here) and those
        whose scopes the batch read, none shredded, with the newest key of each now cached; only
        where this keystore is the sole writer of its store.
        """
        cache = self._cache
        if not self._sole_writer:
            return
        for subject_id in self._fresh:
            cache.mark_complete(subject_id)
        for subject_id, scopes in self._known.read():
            if all(
                not shredded and cache.version(subject_id, scope) == version
                for scope, (version, shredded) in scopes.items()
            ):
                cache.mark_complete(subject_id)

    def knows_keys_of(self, subject_id: uuid.UUID) -> bool:
        """Whether this keystore answers any key of the subject without reading the store.

        A hint, read without the lock: a batch that relies on it and finds it no longer true
        reads the store then, as it would for a subject it never named.
        """
        return self._cache.complete(subject_id)

    def _hold_subjects(self, subject_ids: Sequence[uuid.UUID]) -> None:
        """Keeps other writers off these subjects' keys until the open batch ends (if they could
        write any: PostgresKeystore locks them); here, this process is the only writer."""

    # -- data keys ---------------------------------------------------------------------------

    def create(self, subject_id: uuid.UUID, scope: str, *, new_version: bool = False) -> DataKey:
        """Creates the scope's key; `new_version` explicitly starts a new version after a shred."""
        with self._lock:
            if self._subject_closed(subject_id):
                raise ScopeShredded("the subject is erased")
            latest = self._latest(subject_id, scope)
            if latest is not None and not new_version:
                if isinstance(latest, Tombstone):
                    raise ScopeShredded("the scope was shredded; ask for a new version explicitly")
                raise KeyExists("an active key exists for the scope")
            return self._create(subject_id, scope, 1 if latest is None else latest.version + 1)

    def get(self, subject_id: uuid.UUID, scope: str) -> DataKey:
        """The newest key of the scope; KeyNotFound or ScopeShredded if there is none."""
        with self._lock:
            found = self._find(subject_id, scope)
            if found is None:
                raise KeyNotFound("no key for the scope")
            return found

    def get_or_create(self, subject_id: uuid.UUID, scope: str) -> DataKey:
        """The scope's key, created on first use; never recreated after a shred."""
        with self._lock:
            found = self._find(subject_id, scope)
            return found if found is not None else self._create(subject_id, scope, 1)

    def fresh_subject(self, subject_id: uuid.UUID) -> None:
        """Notes an id the caller has just minted: it has no keys and no tombstones to look up.

        The note lasts until the end of the current batch (outside a batch it is ignored).
        """
        with self._lock:
            if self._batch_keys is not None:
                self._fresh[subject_id] = None

    def _find(self, subject_id: uuid.UUID, scope: str) -> DataKey | None:
        """The newest key of the scope, None if it never had one; ScopeShredded if it is closed."""
        cached = self._cache.newest(subject_id, scope)
        if cached is not None:
            return cached
        if self._cache.complete(subject_id):
            return None  # every key of the subject is cached and none of its scopes is closed
        if subject_id in self._fresh:
            # Minted in this batch: its only keys are the ones this batch created.
            return self._batch_created.get((subject_id, scope))
        known = self._known.scopes(subject_id, self._scopes_of)
        latest: KeyRow | Tombstone | None
        if known is not None and scope not in known:
            latest = None
        elif known is not None and known[scope][1]:
            raise ScopeShredded("the scope was shredded")
        else:
            # Unknown, or a live key the cache lacks: its row has the key bytes (read together
            # with the batch's other wanted rows, if it was announced).
            latest = None if known is None else self._known.live_row(subject_id, scope, self._live_rows)
            if latest is None:
                latest = self._latest(subject_id, scope)
        if isinstance(latest, Tombstone):
            raise ScopeShredded("the scope was shredded")
        if latest is None:
            closed = (
                self._subject_closed(subject_id)
                if known is None
                else SUBJECT_SCOPE in known and known[SUBJECT_SCOPE][1]
            )
            if closed:
                raise ScopeShredded("the subject is erased")
            return None
        key = self._unwrap(latest)
        self._cache.remember(key)
        return key

    def prepare(self, wanted: Iterable[tuple[uuid.UUID, str]]) -> dict[tuple[uuid.UUID, str], DataKey]:
        """Inside a batch: the newest key of each of these (subject, scope) pairs, the missing ones
        created together (the keys `get_or_create` would create one by one when first asked).

        One draw of random bytes each for the new keys' secrets, ids and wrap nonces, one clock
        reading and one staging of rows for them all, where creating them one by one paid each of
        those per key. A pair named twice is made once. A pair whose scope or subject is closed is
        left out: asking for its key raises then, as it would have.
        The keys hold while the batch lasts (nothing else changes keys meanwhile but the batch
        itself). Outside a batch this makes nothing and answers nothing.
        """
        with self._lock:
            if self._batch_keys is None:
                return {}
            keys: dict[tuple[uuid.UUID, str], DataKey] = {}
            missing = []
            for pair in dict.fromkeys(wanted):
                try:
                    found = self._find(*pair)
                except ScopeShredded:
                    continue
                if found is None:
                    missing.append(pair)
                else:
                    keys[pair] = found
            if missing:
                keys.update(zip(missing, self._create_all(missing, 1), strict=True))
            return keys

    def _create(self, subject_id: uuid.UUID, scope: str, version: int) -> DataKey:
        return self._create_all([(subject_id, scope)], version)[0]

    def _create_all(self, wanted: Sequence[tuple[uuid.UUID, str]], version: int) -> list[DataKey]:
        """Creates the keys of `version` for distinct (subject, scope) pairs none of which has it."""
        count = len(wanted)
        # The keys from the system itself; the key ids' random bits are public (core/randomness).
        secrets, key_ids = os.urandom(32 * count), new_key_ids(count)
        made = [
            (secrets[32 * i : 32 * i + 32], subject_id, scope, key_ids[i])
            for i, (subject_id, scope) in enumerate(wanted)
        ]
        wrapped, now = self.provider.wrap_all(made), self.clock.now()
        rows = [
            _key_row(key_id, subject_id, scope, version, blob, now)
            for (_, subject_id, scope, key_id), blob in zip(made, wrapped, strict=True)
        ]
        self._insert_keys(rows)
        keys = []
        batch_keys, batch_created = self._batch_keys, self._batch_created
        known, cache = self._known, self._cache
        for row, (secret, subject_id, scope, key_id) in zip(rows, made, strict=True):
            known.created(row)
            key = DataKey.build(key_id, subject_id, scope, version, secret)
            if batch_keys is not None:
                batch_keys.append(key)
                batch_created[(subject_id, scope)] = key
            cache.remember(key)
            keys.append(key)
        return keys

    def cached(self, key_id: str) -> DataKey | None:
        """The key with that id if it is cached (a destroy drops it first); no lock, no I/O.

        For a caller that must not wait behind a batch holding the keystore (an event loop); on
        None it asks `get_by_id`.
        """
        return self._cache.by_id(key_id)

    def get_by_id(self, key_id: str) -> DataKey:
        """The key with that id; ScopeShredded if destroyed, KeyNotFound if never known."""
        with self._lock:
            cached = self._cache.by_id(key_id)
            if cached is not None:
                return cached
            found = self._key_by_id(key_id)
            if found is None:
                raise KeyNotFound("no such key")
            if isinstance(found, Tombstone):
                raise ScopeShredded("the key was shredded")
            key = self._unwrap(found)
            self._cache.remember(key, newest=False)
            return key

    def destroy(self, subject_id: uuid.UUID, scopes: Iterable[str] | None = None) -> list[ShreddedKey]:
        """Deletes the key bytes of the scopes (every scope if None), leaving tombstones."""
        with self._lock:
            self._changed(subject_id)
            wanted = None if scopes is None else sorted(set(scopes))
            self._cache.forget(subject_id, lambda k: wanted is None or k.scope in wanted)
            return self._destroy(subject_id, wanted, self.clock.now())

    def destroy_keys(self, subject_id: uuid.UUID, key_ids: Iterable[str]) -> list[ShreddedKey]:
        """Deletes the key bytes of single key versions of the subject, leaving tombstones."""
        with self._lock:
            wanted = sorted(set(key_ids))
            if not wanted:
                return []
            self._changed(subject_id)
            self._cache.forget(subject_id, lambda k: k.key_id in wanted)
            return self._destroy_keys(subject_id, wanted, self.clock.now())

    def key_versions(self, subject_id: uuid.UUID, scope: str) -> list[KeyRow | Tombstone]:
        """Every version of the scope, oldest first: live rows and tombstones alike."""
        with self._lock:
            return self._versions(subject_id, scope)

    def shredded_keys(self, subject_id: uuid.UUID) -> list[Tombstone]:
        """The tombstones of the subject's destroyed keys; they outlive the key bytes."""
        with self._lock:
            rows = self._versions(subject_id, None)
            return [r for r in rows if isinstance(r, Tombstone) and r.key_id is not None]

    def erase_subject(self, subject_id: uuid.UUID, requests: Iterable[bytes] = ()) -> list[ShreddedKey]:
        """Destroys every key and reference of the subject and closes it for good, in one transaction.

        `requests` are the digests of the requests the subject's history answered (its idempotency
        digests, already in the log in the clear). They keep pointing at the subject, so a request
        retried after its reference went with the erasure is still known (`find_erased_request`).
        """
        digests = sorted(set(requests))
        with self._lock, self._transaction():
            destroyed = self.destroy(subject_id)
            self.tombstone(subject_id, SUBJECT_SCOPE)
            self.drop_references(subject_id)
            if digests:
                self._put_erased_requests(digests, subject_id)
            return destroyed

    def tombstone(self, subject_id: uuid.UUID, scope: str) -> None:
        """Closes a scope that has no active key, so it can never be created silently."""
        with self._lock:
            self._changed(subject_id)
            latest = self._latest(subject_id, scope)
            if isinstance(latest, Tombstone):
                return
            if isinstance(latest, KeyRow):
                self.destroy(subject_id, [scope])
                return
            self._insert_tombstone(Tombstone(subject_id, scope, 1, None, self.clock.now()))

    def is_shredded(self, subject_id: uuid.UUID, scope: str) -> bool:
        """True if the scope's newest key was destroyed (or the subject is erased)."""
        with self._lock:
            return self._subject_closed(subject_id) or isinstance(
                self._latest(subject_id, scope), Tombstone
            )

    def _changed(self, subject_id: uuid.UUID) -> None:
        """Forgets what the open batch knew of a subject whose keys are being destroyed or closed."""
        self._fresh.pop(subject_id, None)
        self._known.drop(subject_id)
        self._cache.incomplete(subject_id)

    def _subject_closed(self, subject_id: uuid.UUID) -> bool:
        return isinstance(self._latest(subject_id, SUBJECT_SCOPE), Tombstone)

    def _unwrap(self, row: KeyRow) -> DataKey:
        secret = self.provider.unwrap(row.wrapped, row.subject_id, row.scope, row.key_id)
        return DataKey.build(row.key_id, row.subject_id, row.scope, row.version, secret)

    # -- KEK rotation --------------------------------------------------------------------------

    def rewrap(self, batch: int = 500) -> Rewrapped:
        """Re-wraps every live key under the provider's active KEK, so older KEKs can be retired.

        A key that no KEK of the provider opens (written under another key file, or tampered with)
        is left as it is and counted as unreadable: rotation cannot make it any less readable.
        """
        done = unreadable = 0
        after = ""
        while rows := self._stale_keys(self.provider.active_version, after, batch):
            with self._lock, self._transaction():
                for row in rows:
                    try:
                        secret = self.provider.unwrap(row.wrapped, row.subject_id, row.scope, row.key_id)
                    except KeyProviderError:
                        unreadable += 1
                        continue
                    new = self.provider.wrap(secret, row.subject_id, row.scope, row.key_id)
                    done += self._replace_wrapped(row.key_id, row.wrapped, new)
            after = rows[-1].key_id
        if done:
            self._after_rewrap()
        return Rewrapped(done, unreadable)

    def kek_usage(self) -> dict[int, int]:
        """How many live keys each KEK version wraps."""
        with self._lock:
            return self._kek_counts()

    def close(self) -> None:
        """Releases the adapter's resources."""

    # -- storage primitives --------------------------------------------------------------------

    def _transaction(self) -> AbstractContextManager[None]:
        """One durable transaction around a batch or an erasure; nested calls join the open one.

        Adapters that commit per statement override it.
        """
        return nullcontext()

    def _batch_transaction(self, pending: PendingCommit) -> AbstractContextManager[None]:
        """The transaction of a batch. An adapter may commit it after it ends, on another thread:
        it then starts `pending` with that commit. By default the batch commits as it ends."""
        return self._transaction()

    @abstractmethod
    def _latest(self, subject_id: uuid.UUID, scope: str) -> KeyRow | Tombstone | None:
        """The row of the scope's highest version."""

    @abstractmethod
    def _scopes_of(self, subject_ids: Sequence[uuid.UUID]) -> list[ScopeVersion]:
        """(subject, scope, version, shredded) of every row and tombstone of these subjects."""

    def _live_rows(self, wanted: Sequence[tuple[uuid.UUID, str, int]]) -> list[KeyRow]:
        """The live rows of these (subject, scope, version)s; an adapter may read them in one query."""
        rows = [self._latest(subject_id, scope) for subject_id, scope, _ in wanted]
        return [
            row
            for row, (_, _, version) in zip(rows, wanted, strict=True)
            if isinstance(row, KeyRow) and row.version == version
        ]

    @abstractmethod
    def _key_by_id(self, key_id: str) -> KeyRow | Tombstone | None:
        """The row (or tombstone) of a key id."""

    @abstractmethod
    def _versions(self, subject_id: uuid.UUID, scope: str | None) -> list[KeyRow | Tombstone]:
        """Rows and tombstones of the scope (all scopes if None), by scope and version."""

    @abstractmethod
    def _insert_key(self, row: KeyRow) -> None:
        """Stores a new key row; KeyExists if (subject, scope, version) is taken."""

    def _insert_keys(self, rows: Sequence[KeyRow]) -> None:
        """Stores new key rows (in a batch an adapter may stage them all at once)."""
        for row in rows:
            self._insert_key(row)

    @abstractmethod
    def _insert_tombstone(self, tombstone: Tombstone) -> None:
        """Stores a tombstone for a scope that never had a key."""

    @abstractmethod
    def _destroy(
        self, subject_id: uuid.UUID, scopes: Sequence[str] | None, at: datetime
    ) -> list[ShreddedKey]:
        """Deletes key rows (all scopes if None) and writes their tombstones, atomically."""

    @abstractmethod
    def _destroy_keys(
        self, subject_id: uuid.UUID, key_ids: Sequence[str], at: datetime
    ) -> list[ShreddedKey]:
        """Deletes the subject's rows with those key ids and writes their tombstones, atomically."""

    @abstractmethod
    def _stale_keys(self, active: int, after: str, limit: int) -> list[KeyRow]:
        """Up to `limit` live rows not wrapped under `active`, with key ids above `after`, by key id."""

    @abstractmethod
    def _replace_wrapped(self, key_id: str, old: WrappedKey, new: WrappedKey) -> int:
        """Stores `new` for the key if it still holds `old` (not destroyed meanwhile); rows changed."""

    @abstractmethod
    def _kek_counts(self) -> dict[int, int]:
        """Live keys per KEK version."""

    def _after_rewrap(self) -> None:
        """Lets an adapter scrub the old wrapped bytes from its files (SQLite empties its WAL)."""
