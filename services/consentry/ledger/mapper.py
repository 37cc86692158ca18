"""The sealing mapper: ledger events to stored bytes and back, for eventsourcing's recorders.

On the way in, every personal value (schema attribute `pii`) is sealed under the key of its scope and
the event is Avro single-object encoded: those bytes are what the event store keeps and what the relay
puts on Kafka. On the way out, values stay sealed; `reveal` opens them for the one caller allowed to,
marking values whose key was shredded as ERASED instead of raising, so history always replays.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from types import MappingProxyType
from typing import Any, Final, cast
from uuid import UUID

from eventsourcing.persistence import JSONTranscoder, Mapper, StoredEvent

from consentry.core.avro import AvroCodec, Contract
from consentry.core.errors import KeyNotFound, ScopeShredded, SealError
from consentry.core.event_codec import event_decoder, event_encoder
from consentry.core.events import LedgerEvent, evolve
from consentry.core.keystore import Keystore
from consentry.core.sealing import (
    CONSENT_SCOPE,
    ERASED,
    IDENTITY_SCOPE,
    DataKey,
    Personal,
    by_key,
    open_many,
    purpose_scope,
    seal_many,
)

# How the mapper changes one scope's personal values of an event (sealing or opening them).
Change = Callable[[LedgerEvent, str, Mapping[str, object]], dict[str, object]]
# Keys a batch has at hand, by (subject, scope): those `Keystore.prepare` answered.
Keys = Mapping[tuple[UUID, str], DataKey]
NO_KEYS: Final[Keys] = MappingProxyType({})


class SealingMapper(Mapper[UUID]):
    """Seals personal fields per (subject, scope) and encodes events with Avro."""

    def __init__(self, codec: AvroCodec, keystore: Keystore) -> None:
        super().__init__(transcoder=JSONTranscoder())
        self.codec = codec
        self.keystore = keystore
        self._decode = event_decoder(codec)
        self._encode = event_encoder(codec)

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        return self.seal_event(cast(LedgerEvent, domain_event))[1]

    def seal_event(
        self, event: LedgerEvent, prev_hash: bytes | None = None, keys: Keys = NO_KEYS
    ) -> tuple[LedgerEvent, StoredEvent]:
        """The event with its personal values sealed (and linked to `prev_hash`, if given), and
        its stored form (Avro bytes). A scope's key is taken from `keys` if there, else asked of
        the keystore."""
        contract = self.codec.contract(event.avro_name)
        seal = partial(self._seal_values, keys=keys) if keys else self._seal_values
        updates = self._personal_fields(event, contract, seal)
        if prev_hash is not None:
            updates["meta"] = evolve(event.meta, prev_hash=prev_hash)
        sealed = evolve(event, **updates) if updates else event
        stored = StoredEvent(
            originator_id=event.meta.subject_id,
            originator_version=event.meta.sequence,
            topic=contract.name,
            state=self._encode(sealed),
        )
        return sealed, stored

    def key_scopes(self, event: LedgerEvent) -> set[str]:
        """The scopes whose keys sealing the event needs (those of its personal values)."""
        contract = self.codec.contract(event.avro_name)
        scopes = set()
        # Asked of every event a batch writes: plain loops, no generator per field and no ABC
        # check of a value that is missing or personal itself.
        for name, scope_kind in contract.pii.items():
            value = getattr(event, name)
            if value is None:
                continue
            if isinstance(value, Personal):
                scopes.add(_scope(event, scope_kind))
            elif isinstance(value, Mapping):
                for item in value.values():
                    if isinstance(item, Personal):
                        scopes.add(_scope(event, scope_kind))
                        break
        return scopes

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        return self.decode(stored_event.state)

    def decode(self, state: bytes) -> LedgerEvent:
        """The event of stored bytes, with its personal values still sealed."""
        return self._decode(state)

    def reveal(self, event: LedgerEvent) -> LedgerEvent:
        """The event with its sealed values opened, or ERASED where the key was shredded."""
        contract = self.codec.contract(event.avro_name)
        updates = self._personal_fields(event, contract, self._open_values)
        return evolve(event, **updates) if updates else event

    @staticmethod
    def _personal_fields(event: LedgerEvent, contract: Contract, change: Change) -> dict[str, Any]:
        """The event's personal fields changed scope by scope (a map's values all at once)."""
        updates: dict[str, Any] = {}
        for name, scope_kind in contract.pii.items():
            value = getattr(event, name)
            if value is None:
                continue
            scope = _scope(event, scope_kind)
            if isinstance(value, Mapping):
                updates[name] = change(event, scope, value)
            else:
                updates[name] = change(event, scope, {name: value})[name]
        return updates

    def _seal_values(
        self, event: LedgerEvent, scope: str, values: Mapping[str, object], keys: Keys = NO_KEYS
    ) -> dict[str, object]:
        """The personal values of one scope sealed together: one key lookup, one nonce draw."""
        personal = {name: v.reveal() for name, v in values.items() if isinstance(v, Personal)}
        if not personal:
            return dict(values)
        subject_id = event.meta.subject_id
        key = keys.get((subject_id, scope)) or self.keystore.get_or_create(subject_id, scope)
        sealed = seal_many(key, personal)
        if len(sealed) == len(values):  # all personal, as usual: no copy of the clear values
            return cast(dict[str, object], sealed)
        return dict(values) | sealed

    def _open_values(
        self, event: LedgerEvent, scope: str, values: Mapping[str, object]
    ) -> dict[str, object]:
        """The values, those sealed opened key by key (one lookup each), ERASED if it was shredded."""
        opened = dict(values)
        for key_id, sealed in by_key(values).items():
            try:
                key = self.keystore.get_by_id(key_id)
            except ScopeShredded:
                opened |= dict.fromkeys(sealed, ERASED)
                continue
            except KeyNotFound as exc:
                raise SealError("a sealed value names a key the keystore never held") from exc
            if key.subject_id != event.meta.subject_id or key.scope != scope:
                raise SealError("a sealed value names another subject's or scope's key")
            opened |= {name: Personal(text) for name, text in open_many(key, sealed).items()}
        return opened


def _scope(event: LedgerEvent, scope_kind: str | None) -> str:
    if scope_kind == "purpose":
        return purpose_scope(str(getattr(event, "purpose")))  # noqa: B009 - purpose-scoped types only
    if scope_kind == "consent":
        return CONSENT_SCOPE
    if scope_kind == "identity":
        return IDENTITY_SCOPE
    raise SealError(f"schema of {type(event).__name__} names no seal scope")
