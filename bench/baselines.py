"""The baselines' mappers: the same ledger without per-field sealing, and with one whole-state key.

- `PlaintextMapper`: personal values are stored as they are (a SealedValue whose key id says
  `plaintext`, no nonce, the UTF-8 bytes as "ciphertext"), and the keystore is never asked for a key.
- `WholeStateCipherMapper`: the plaintext mapper's bytes encrypted as a whole by eventsourcing's own
  single-key `AESCipher` (AES-256-GCM from `cryptography`; `eventsourcing.cipher.AESCipher` is the
  same cipher on pycryptodome, which this project does not install). The cipher is constructed
  directly from an environment holding a fresh key, so no CIPHER_KEY setting selects anything.

Both exist only to be measured against: they drop guarantees the platform must keep.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from eventsourcing.cryptography import AESCipher
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import Environment

from consentry.core.avro import AvroCodec
from consentry.core.events import LedgerEvent
from consentry.core.keystore import Keystore
from consentry.core.sealing import Personal, SealedValue
from consentry.ledger.mapper import SealingMapper

PLAINTEXT_KEY_ID = "plaintext"

LogReader = Callable[[int], Iterator[tuple[int, bytes]]]


class PlaintextMapper(SealingMapper):
    """Stores personal values unencrypted (baseline: sealing disabled)."""

    def key_scopes(self, event: LedgerEvent) -> set[str]:
        return set()

    def _seal_values(
        self, event: LedgerEvent, scope: str, values: Mapping[str, object]
    ) -> dict[str, object]:
        return {
            name: SealedValue(scope, PLAINTEXT_KEY_ID, b"", value.reveal().encode("utf-8"))
            if isinstance(value, Personal)
            else value
            for name, value in values.items()
        }

    def log_reader(self, log: LogReader) -> LogReader:
        """The notification log as the projectors must see it (here: unchanged)."""
        return log


class WholeStateCipherMapper(PlaintextMapper):
    """The plaintext mapper's stored bytes, encrypted whole under one application-wide key."""

    def __init__(self, codec: AvroCodec, keystore: Keystore) -> None:
        super().__init__(codec, keystore)
        self.whole_state = AESCipher(Environment(env={AESCipher.CIPHER_KEY: AESCipher.create_key(32)}))

    def seal_event(
        self, event: LedgerEvent, prev_hash: bytes | None = None
    ) -> tuple[LedgerEvent, StoredEvent]:
        sealed, plain = super().seal_event(event, prev_hash)
        stored = StoredEvent(
            originator_id=plain.originator_id,
            originator_version=plain.originator_version,
            topic=plain.topic,
            state=self.whole_state.encrypt(plain.state),
        )
        return sealed, stored

    def decode(self, state: bytes) -> LedgerEvent:
        return super().decode(self.whole_state.decrypt(state))

    def log_reader(self, log: LogReader) -> LogReader:
        """The log decrypted, since the keyless projectors read Avro bytes."""

        def read(after: int) -> Iterator[tuple[int, bytes]]:
            return ((position, self.whole_state.decrypt(state)) for position, state in log(after))

        return read
