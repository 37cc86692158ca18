"""The baselines' mappers: the same ledger without per-field sealing, and with one whole-state key.

- `PlaintextMapper`: personal values are stored as they are (a SealedValue whose key id says
  `plaintext`, no nonce, the UTF-8 bytes as "ciphertext"), and the keystore is never asked for a key.
- `KeysOnlyMapper`: an ablation, not a baseline. Every key the platform would seal with is created,
  wrapped and stored durable before the events, as the platform does, but the values stay clear as
  in the plaintext mapper. Its rate splits the sealing overhead into key management (plaintext
  against keys_only) and the encryption of the values (keys_only against sealed).
- `WholeStateCipherMapper`: the plaintext mapper's bytes encrypted as a whole by eventsourcing's own
  single-key `AESCipher` (AES-256-GCM from `cryptography`; `eventsourcing.cipher.AESCipher` is the
  same cipher on pycryptodome, which this project does not install). The cipher is constructed
  directly from an environment holding a fresh key, so no CIPHER_KEY setting selects anything.

Both exist only to be measured against: they drop guarantees the platform must keep. `use_baseline`
puts one into a ledger the platform composed, embedded or distributed, so nothing else differs;
whatever reads the log without the ledger (the embedded views runner, the distributed relay) reads
it through the mapper's `open_state`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Final, Literal

from eventsourcing.cryptography import AESCipher
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import Environment

from consentry.core.avro import AvroCodec
from consentry.core.events import LedgerEvent
from consentry.core.keystore import Keystore
from consentry.core.sealing import Personal, SealedValue
from consentry.ledger.application import Ledger
from consentry.ledger.mapper import NO_KEYS, Keys, SealingMapper

Variant = Literal["sealed", "plaintext", "aes_cipher", "keys_only"]
VARIANTS: Final[tuple[Variant, ...]] = ("sealed", "plaintext", "aes_cipher")
"""The platform and its two baselines: every benchmark with baselines runs these."""
ABLATIONS: Final[tuple[Variant, ...]] = ("keys_only",)
"""Variants the embedded ingest runs beside VARIANTS to say where the sealing overhead goes."""
PLAINTEXT_KEY_ID: Final = "plaintext"
AVRO_MAGIC: Final = b"\xc3\x01"

LogReader = Callable[[int], Iterator[tuple[int, bytes]]]


class PlaintextMapper(SealingMapper):
    """Stores personal values unencrypted (baseline: sealing disabled)."""

    def key_scopes(self, event: LedgerEvent) -> set[str]:
        return set()

    def _seal_values(
        self, event: LedgerEvent, scope: str, values: Mapping[str, object], keys: Keys = NO_KEYS
    ) -> dict[str, object]:
        return {
            name: SealedValue(scope, PLAINTEXT_KEY_ID, b"", value.reveal().encode("utf-8"))
            if isinstance(value, Personal)
            else value
            for name, value in values.items()
        }

    def open_state(self, state: bytes) -> bytes:
        """A stored state as the keyless readers of the log need it: Avro bytes (here: unchanged)."""
        return state

    def log_reader(self, log: LogReader) -> LogReader:
        """The notification log as the projectors must see it."""

        def read(after: int) -> Iterator[tuple[int, bytes]]:
            return ((position, self.open_state(state)) for position, state in log(after))

        return read


class KeysOnlyMapper(PlaintextMapper):
    """Creates and stores every key sealing would use, and leaves the values clear (ablation)."""

    def key_scopes(self, event: LedgerEvent) -> set[str]:
        # As the platform's: the ledger reads the scopes of those subjects the cache lacks first.
        return SealingMapper.key_scopes(self, event)

    def _seal_values(
        self, event: LedgerEvent, scope: str, values: Mapping[str, object], keys: Keys = NO_KEYS
    ) -> dict[str, object]:
        # The key as sealing finds it: among those the batch prepared, else asked for.
        subject_id = event.meta.subject_id
        personal = any(isinstance(value, Personal) for value in values.values())
        if personal and (subject_id, scope) not in keys:
            self.keystore.get_or_create(subject_id, scope)
        return super()._seal_values(event, scope, values)


def whole_state_key() -> str:
    """A fresh key for the whole-state cipher (base64 of 32 random bytes)."""
    return AESCipher.create_key(32)


def whole_state_cipher(key: str | None = None) -> AESCipher:
    """eventsourcing's AESCipher on the given key, or on a fresh one."""
    return AESCipher(Environment(env={AESCipher.CIPHER_KEY: key or whole_state_key()}))


class WholeStateCipherMapper(PlaintextMapper):
    """The plaintext mapper's stored bytes, encrypted whole under one application-wide key.

    The key is fresh unless given: processes that share one log (the distributed API and relay)
    must be given the same one.
    """

    def __init__(self, codec: AvroCodec, keystore: Keystore, key: str | None = None) -> None:
        super().__init__(codec, keystore)
        self.whole_state = whole_state_cipher(key)

    def seal_event(
        self, event: LedgerEvent, prev_hash: bytes | None = None, keys: Keys = NO_KEYS
    ) -> tuple[LedgerEvent, StoredEvent]:
        sealed, plain = super().seal_event(event, prev_hash, keys)
        stored = StoredEvent(
            originator_id=plain.originator_id,
            originator_version=plain.originator_version,
            topic=plain.topic,
            state=self.whole_state.encrypt(plain.state),
        )
        return sealed, stored

    def decode(self, state: bytes) -> LedgerEvent:
        return super().decode(self.whole_state.decrypt(state))

    def open_state(self, state: bytes) -> bytes:
        """Decrypted, since the keyless readers of the log read Avro bytes."""
        return self.whole_state.decrypt(state)


def use_baseline(ledger: Ledger, variant: Variant, key: str | None = None) -> PlaintextMapper:
    """Puts a baseline's mapper into the ledger (`key`: the whole-state cipher's, if shared)."""
    if variant == "sealed":
        raise ValueError("the sealed variant is the platform as composed: it has no baseline mapper")
    mapper: PlaintextMapper
    if variant == "plaintext":
        mapper = PlaintextMapper(ledger.codec, ledger.keystore)
    elif variant == "keys_only":
        mapper = KeysOnlyMapper(ledger.codec, ledger.keystore)
    else:
        mapper = WholeStateCipherMapper(ledger.codec, ledger.keystore, key)
    ledger.mapper = mapper
    return mapper


def stored_as(variant: Variant, data_keys: int, first_state: bytes | None) -> bool:
    """Whether a store holds what the variant claims: data keys and Avro (sealed values, or clear
    ones for keys_only), or no keys, or no Avro. The first event of a workload's log (its first
    subject's reference, or its consent grant) holds a personal value: sealed, it names a key;
    clear, its key id says `plaintext`."""
    avro = first_state is not None and first_state.startswith(AVRO_MAGIC)
    clear = first_state is not None and PLAINTEXT_KEY_ID.encode() in first_state
    if variant == "sealed":
        return data_keys > 0 and avro and not clear
    if variant == "keys_only":
        return data_keys > 0 and avro and clear
    if variant == "plaintext":
        return data_keys == 0 and avro
    return data_keys == 0 and first_state is not None and not avro
