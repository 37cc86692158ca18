"""Intake transit: producers seal intake records to the intake service's public key (HPKE, RFC 9180).

Nothing on `consentry.intake` is readable without the intake private key: neither the producer's
token nor any record. An envelope (version 1) is

    b"CSI" 0x01 | suite id (1 byte) | HPKE single-shot output (enc ‖ AEAD ciphertext)

sealed in base mode with info = b"consentry.intake.v1". Suite 0x01 is the hybrid post-quantum KEM
ML-KEM-768 + X25519 (`MLKEM768_X25519`), HKDF-SHA256 and AES-256-GCM. HPKE binds the suite into its
key schedule, so a changed suite byte fails like any other tampering. The sealed plaintext is

    token length (u16 BE) | token (UTF-8) | record count (u32 BE) | per record: length (u32 BE) | bytes

where each record is Avro single-object bytes of an intake schema (`IntakeParser.to_avro`).
The public key is published as the ML-KEM-768 encapsulation key (1184 bytes) followed by the X25519
public key (32 bytes); the private key is expanded from a 32-byte seed with SHAKE-256 into the
64-byte ML-KEM seed and the X25519 scalar, as X-Wing does, so a seed gives X-Wing's key pair.
Errors name what is wrong with an envelope, never its token or record bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from consentry.core.errors import ConsentryError, Reason

MAGIC: Final = b"CSI"
VERSION: Final = 1
HEADER: Final = MAGIC + bytes([VERSION])
INFO: Final = b"consentry.intake.v1"
SUITE_MLKEM768_X25519: Final = 0x01
MAX_ENVELOPE_BYTES: Final = 1_000_000  # under Kafka's default 1 MiB message limit
MAX_RECORDS: Final = 1000  # like CONSENTRY_MAX_BATCH's default
MAX_TOKEN_BYTES: Final = 1024
SEED_BYTES: Final = 32
PEM_LABEL: Final = "CONSENTRY INTAKE PUBLIC KEY"

_SUITES: Final = {
    SUITE_MLKEM768_X25519: hpke.Suite(
        hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM
    ),
}
_ENC_LEN: Final = {SUITE_MLKEM768_X25519: hpke.KEM.MLKEM768_X25519.enc_length()}
_TAG_LEN: Final = 16
_MLKEM_PUBLIC_LEN: Final = 1184
_X25519_LEN: Final = 32
PUBLIC_KEY_BYTES: Final = _MLKEM_PUBLIC_LEN + _X25519_LEN


class TransitError(ConsentryError):
    """Intake transit could not seal or open something."""


class IntakeKeyError(TransitError):
    """An intake public or private key is not what it must be."""


class EnvelopeError(TransitError):
    """An envelope was refused; `reason` is the code its dead letter carries."""

    reason: ClassVar[Reason] = Reason.SEALED_ENVELOPE_INVALID


class EnvelopeMalformed(EnvelopeError):
    """Wrong magic, truncated, or the opened plaintext is not token + records."""


class EnvelopeVersionUnknown(EnvelopeError):
    """The envelope's version byte is not one this code reads."""


class EnvelopeSuiteUnknown(EnvelopeError):
    """The envelope's suite id is not one this code reads."""


class EnvelopeUnopenable(EnvelopeError):
    """HPKE refused it: tampered, or sealed to another key (indistinguishable by design)."""


class EnvelopeTooLarge(EnvelopeError):
    """More bytes or more records than allowed."""

    reason: ClassVar[Reason] = Reason.OVERSIZED


class IntakeKey:
    """The intake service's private HPKE key (ML-KEM-768 + X25519); its repr never shows it."""

    __slots__ = ("_private", "_public")

    def __init__(self, mlkem_key: MLKEM768PrivateKey, x25519_key: X25519PrivateKey) -> None:
        self._private = hpke.MLKEM768X25519PrivateKey(mlkem_key, x25519_key)
        self._public = (
            mlkem_key.public_key().public_bytes_raw() + x25519_key.public_key().public_bytes_raw()
        )

    @classmethod
    def from_seed(cls, seed: bytes) -> IntakeKey:
        """The key expanded deterministically from a 32-byte secret seed."""
        if len(seed) != SEED_BYTES:
            raise IntakeKeyError(f"an intake key seed has {SEED_BYTES} bytes")
        expanded = hashlib.shake_256(seed).digest(96)
        return cls(
            MLKEM768PrivateKey.from_seed_bytes(expanded[:64]),
            X25519PrivateKey.from_private_bytes(expanded[64:]),
        )

    @classmethod
    def generate(cls) -> IntakeKey:
        """A fresh random key."""
        return cls.from_seed(os.urandom(SEED_BYTES))

    def __repr__(self) -> str:
        return "IntakeKey(<private>)"

    @property
    def hpke_key(self) -> hpke.MLKEM768X25519PrivateKey:
        """The key object HPKE decrypts with."""
        return self._private

    def public_bytes(self) -> bytes:
        """The raw public key: ML-KEM-768 encapsulation key ‖ X25519 public key (1216 bytes)."""
        return self._public

    def public_b64(self) -> str:
        """The raw public key as base64 text."""
        return base64.b64encode(self._public).decode("ascii")

    def public_pem(self) -> str:
        """The raw public key armoured as PEM text (label `CONSENTRY INTAKE PUBLIC KEY`)."""
        body = self.public_b64()
        lines = [body[i : i + 64] for i in range(0, len(body), 64)]
        return "\n".join([f"-----BEGIN {PEM_LABEL}-----", *lines, f"-----END {PEM_LABEL}-----", ""])


def load_public_key(key: bytes | str) -> bytes:
    """Raw public key bytes from raw bytes, base64 text or the PEM text `IntakeKey.public_pem` gives."""
    raw = key if isinstance(key, bytes) else _decode_text(key)
    if len(raw) != PUBLIC_KEY_BYTES:
        raise IntakeKeyError(f"an intake public key has {PUBLIC_KEY_BYTES} bytes")
    return raw


def _decode_text(text: str) -> bytes:
    body = text.strip()
    if body.startswith("-----BEGIN"):
        lines = body.splitlines()
        if lines[0] != f"-----BEGIN {PEM_LABEL}-----" or lines[-1] != f"-----END {PEM_LABEL}-----":
            raise IntakeKeyError(f"PEM text must be labelled {PEM_LABEL}")
        body = "".join(line.strip() for line in lines[1:-1])
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise IntakeKeyError("the intake public key is not valid base64") from exc


@dataclass(frozen=True, slots=True)
class OpenedEnvelope:
    """What an envelope carried: the producer's token and its Avro records (repr shows neither)."""

    token: str = field(repr=False)
    records_avro: tuple[bytes, ...] = field(repr=False)


def _sealed_size(suite: int, plaintext_len: int) -> int:
    return len(HEADER) + 1 + _ENC_LEN[suite] + plaintext_len + _TAG_LEN


class IntakeSealer:
    """Seals a producer's token and records to the intake public key (what the SDK does)."""

    def __init__(
        self,
        public_key: bytes | str,
        *,
        max_records: int = MAX_RECORDS,
        max_bytes: int = MAX_ENVELOPE_BYTES,
    ) -> None:
        raw = load_public_key(public_key)
        try:
            self._public = hpke.MLKEM768X25519PublicKey(
                MLKEM768PublicKey.from_public_bytes(raw[:_MLKEM_PUBLIC_LEN]),
                X25519PublicKey.from_public_bytes(raw[_MLKEM_PUBLIC_LEN:]),
            )
        except ValueError as exc:
            raise IntakeKeyError("the intake public key does not load") from exc
        self._max_records = max_records
        self._max_bytes = max_bytes

    def seal(self, token: str, records_avro: Sequence[bytes]) -> bytes:
        """One envelope holding the token and the records, in order."""
        token_bytes = token.encode("utf-8")
        if not 0 < len(token_bytes) <= MAX_TOKEN_BYTES:
            raise EnvelopeMalformed(f"the token must have 1 to {MAX_TOKEN_BYTES} bytes")
        if not records_avro:
            raise EnvelopeMalformed("an envelope carries at least one record")
        if len(records_avro) > self._max_records:
            raise EnvelopeTooLarge(f"at most {self._max_records} records per envelope")
        parts = [struct.pack(">H", len(token_bytes)), token_bytes, struct.pack(">I", len(records_avro))]
        for record in records_avro:
            parts += [struct.pack(">I", len(record)), bytes(record)]
        plaintext = b"".join(parts)
        suite = SUITE_MLKEM768_X25519
        if _sealed_size(suite, len(plaintext)) > self._max_bytes:
            raise EnvelopeTooLarge(f"the envelope would exceed {self._max_bytes} bytes")
        sealed = _SUITES[suite].encrypt(plaintext, self._public, info=INFO)
        return HEADER + bytes([suite]) + sealed


class IntakeOpener:
    """Opens envelopes with the intake private key; any defect raises an `EnvelopeError`."""

    def __init__(
        self,
        key: IntakeKey,
        *,
        max_records: int = MAX_RECORDS,
        max_bytes: int = MAX_ENVELOPE_BYTES,
    ) -> None:
        self._key = key
        self._max_records = max_records
        self._max_bytes = max_bytes

    def open(self, envelope: bytes) -> OpenedEnvelope:
        """The token and records an envelope carries."""
        if len(envelope) > self._max_bytes:
            raise EnvelopeTooLarge(f"the envelope exceeds {self._max_bytes} bytes")
        if envelope[: len(MAGIC)] != MAGIC:
            raise EnvelopeMalformed("not a Consentry intake envelope")
        if len(envelope) < len(HEADER):
            raise EnvelopeMalformed("the envelope is truncated")
        if envelope[len(MAGIC)] != VERSION:
            raise EnvelopeVersionUnknown(f"envelope version {envelope[len(MAGIC)]} is unknown")
        if len(envelope) == len(HEADER):
            raise EnvelopeMalformed("the envelope is truncated")
        suite = envelope[len(HEADER)]
        if suite not in _SUITES:
            raise EnvelopeSuiteUnknown(f"envelope suite {suite} is unknown")
        if len(envelope) < _sealed_size(suite, 0):
            raise EnvelopeMalformed("the envelope is truncated")
        try:
            plaintext = _SUITES[suite].decrypt(
                envelope[len(HEADER) + 1 :], self._key.hpke_key, info=INFO
            )
        except (InvalidTag, ValueError) as exc:
            raise EnvelopeUnopenable("the envelope does not open with the intake key") from exc
        return self._parse(plaintext)

    def _parse(self, plaintext: bytes) -> OpenedEnvelope:
        reader = _Reader(plaintext)
        token_bytes = reader.take(reader.u16())
        if not token_bytes:
            raise EnvelopeMalformed("the envelope's token is empty")
        try:
            token = token_bytes.decode("utf-8")
        except UnicodeDecodeError:
            raise EnvelopeMalformed("the envelope's token is not UTF-8") from None
        count = reader.u32()
        if count == 0:
            raise EnvelopeMalformed("the envelope carries no record")
        if count > self._max_records:
            raise EnvelopeTooLarge(f"at most {self._max_records} records per envelope")
        records = tuple(reader.take(reader.u32()) for _ in range(count))
        if not reader.at_end():
            raise EnvelopeMalformed("bytes trail the envelope's last record")
        return OpenedEnvelope(token, records)


class _Reader:
    """Reads length-prefixed parts of the opened plaintext; running short is `EnvelopeMalformed`."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def take(self, size: int) -> bytes:
        if self._at + size > len(self._data):
            raise EnvelopeMalformed("the envelope's contents are truncated")
        part = self._data[self._at : self._at + size]
        self._at += size
        return part

    def u16(self) -> int:
        value: int = struct.unpack(">H", self.take(2))[0]
        return value

    def u32(self) -> int:
        value: int = struct.unpack(">I", self.take(4))[0]
        return value

    def at_end(self) -> bool:
        return self._at == len(self._data)
