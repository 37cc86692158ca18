"""Per-field sealing with AES-256-GCM.

Each personal value is sealed on its own under the data key of (subject, scope), with
AAD = subject | scope | field | key id, so a sealed value cannot be moved to another subject, scope or
field unnoticed, and processors can copy sealed values into read models without any key.
"""

from __future__ import annotations

import functools
import struct
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from consentry.core.errors import SealError
from consentry.core.randomness import take_random
from consentry.core.slots import maker

NONCE_LEN: Final = 12
_AAD_LABEL: Final = b"consentry.seal.v1"
# The AAD's first two parts, length-prefixed as `_aad_part` does (a subject id is 16 bytes).
_LABEL_PART: Final = struct.pack(">H", len(_AAD_LABEL)) + _AAD_LABEL
_SUBJECT_PREFIX: Final = struct.pack(">H", 16)


class Personal:
    """A plaintext personal value; its repr and str never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The plaintext, for the one place that needs it."""
        return self._value

    def __repr__(self) -> str:
        return "Personal(<redacted>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Personal) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Personal", self._value))


class Erased:
    """Stands where a sealed value was whose key has been destroyed."""

    _instance: Erased | None = None

    def __new__(cls) -> Erased:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ERASED"


ERASED: Final = Erased()


@dataclass(frozen=True, slots=True)
class SealedValue:
    """A value sealed under one data key; safe to store, copy and log."""

    scope: str
    key_id: str
    nonce: bytes = field(repr=False)
    ciphertext: bytes = field(repr=False)

    def to_record(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "key_id": self.key_id,
            "nonce": self.nonce,
            "ciphertext": self.ciphertext,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> SealedValue:
        return cls(record["scope"], record["key_id"], record["nonce"], record["ciphertext"])


@dataclass(frozen=True, slots=True)
class DataKey:
    """An unwrapped data-encryption key of one (subject, scope); never printed.

    It holds no cipher object and no AAD parts: `aead()` makes the cipher and `aad_parts()` the
    parts per use, once per sealed or opened group of values (about 0.9 and 0.5 us). An `AESGCM`
    object takes about 2.4 KB (OpenSSL's context) and the AAD parts about 160 bytes, against about
    220 bytes for the key itself; the keystore's cache holds every key it can in its memory.
    """

    key_id: str
    subject_id: uuid.UUID
    scope: str
    version: int
    secret: bytes = field(repr=False)

    @classmethod
    def build(
        cls, key_id: str, subject_id: uuid.UUID, scope: str, version: int, secret: bytes
    ) -> DataKey:
        return _data_key(key_id, subject_id, scope, version, secret)

    def aead(self) -> AESGCM:
        """An AES-256-GCM cipher under this key, for one group of values."""
        return AESGCM(self.secret)

    def aad_parts(self) -> tuple[bytes, bytes]:
        """The AAD's parts before and after the field name: the same for every value of the key."""
        return _aad_head(self.subject_id, self.scope), _aad_part(self.key_id.encode())

    def aad(self, field_name: str) -> bytes:
        """The associated data of this key's value of `field_name` (as `seal_aad` builds it)."""
        head, tail = self.aad_parts()
        return head + _text_part(field_name) + tail


# Built by setting its slots (see core/slots): the keystore builds one per key it creates or unwraps.
_data_key: Callable[[str, uuid.UUID, str, int, bytes], DataKey] = maker(DataKey)


def seal_aad(subject_id: uuid.UUID, scope: str, field_name: str, key_id: str) -> bytes:
    """The associated data binding a sealed value to its subject, scope, field and key."""
    return _aad_head(subject_id, scope) + _aad_part(field_name.encode()) + _aad_part(key_id.encode())


def _aad_part(data: bytes) -> bytes:
    """One length-prefixed part of the AAD (two bytes, big-endian)."""
    return struct.pack(">H", len(data)) + data


def _aad_head(subject_id: uuid.UUID, scope: str) -> bytes:
    return _LABEL_PART + _SUBJECT_PREFIX + subject_id.bytes + _text_part(scope)


@functools.lru_cache(maxsize=4096)
def _text_part(text: str) -> bytes:
    # Field names and scopes come from the schemas and the policy: a few dozen, each encoded once.
    return _aad_part(text.encode())


def seal(key: DataKey, field_name: str, plaintext: str) -> SealedValue:
    """Seals one value of `field_name` under `key`."""
    return seal_many(key, {field_name: plaintext})[field_name]


def seal_many(key: DataKey, plaintexts: Mapping[str, str]) -> dict[str, SealedValue]:
    """Seals several fields' values under one key (one draw of random bytes for all nonces)."""
    nonces = take_random(NONCE_LEN * len(plaintexts))
    encrypt, scope, key_id = key.aead().encrypt, key.scope, key.key_id
    head, tail = key.aad_parts()
    sealed = {}
    end = 0
    for field_name, plaintext in plaintexts.items():
        start, end = end, end + NONCE_LEN
        nonce = nonces[start:end]
        # key.aad(field_name), inline: this loop runs for every personal value the ledger stores.
        ciphertext = encrypt(nonce, plaintext.encode("utf-8"), head + _text_part(field_name) + tail)
        sealed[field_name] = _sealed_value(scope, key_id, nonce, ciphertext)
    return sealed


# Built by setting its slots (see core/slots): sealing builds one per personal value.
_sealed_value: Callable[[str, str, bytes, bytes], SealedValue] = maker(SealedValue)


def open_sealed(key: DataKey, field_name: str, sealed: SealedValue) -> str:
    """Opens a sealed value; fails closed on any tampered byte, swapped context or wrong key."""
    return open_many(key, {field_name: sealed})[field_name]


def open_many(key: DataKey, sealed: Mapping[str, SealedValue]) -> dict[str, str]:
    """Opens values sealed under one key, each as `open_sealed` would; one cipher for them all.

    Any value that does not open (another key or scope, a tampered byte, a moved field) fails the
    whole call with SealError.
    """
    if any(value.key_id != key.key_id or value.scope != key.scope for value in sealed.values()):
        raise SealError("sealed value belongs to another key")
    head, tail = key.aad_parts()
    opened = {}
    try:
        decrypt = key.aead().decrypt
        for field_name, value in sealed.items():
            aad = head + _text_part(field_name) + tail
            opened[field_name] = decrypt(value.nonce, value.ciphertext, aad).decode("utf-8")
    except (InvalidTag, ValueError) as exc:
        raise SealError("sealed value failed authentication") from exc
    return opened


def by_key(values: Mapping[str, object]) -> dict[str, dict[str, SealedValue]]:
    """The sealed ones of the values, grouped by the key they are sealed under (for `open_many`)."""
    groups: dict[str, dict[str, SealedValue]] = {}
    for name, value in values.items():
        if isinstance(value, SealedValue):
            groups.setdefault(value.key_id, {})[name] = value
    return groups


def purpose_scope(purpose: str) -> str:
    """The key scope of data collected for a purpose."""
    return f"purpose:{purpose}"


CONSENT_SCOPE: Final = "consent"
IDENTITY_SCOPE: Final = "identity"
