"""Erasure certificates: canonical, PII-free JSON signed with the platform's Ed25519 key.

A certificate says which keys of which subject were destroyed, why, when, at whose request, which
event of the subject's hash chain it follows, and (format 2) which sub-processors received the
subject's data of those scopes and must be told. It holds pseudonymous ids only, so it can be handed to
the customer or a regulator and verified offline with the published public key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from consentry.core.errors import ConsentryError
from consentry.core.keys import KeyProvider

CERTIFICATE_FORMAT: Final = "consentry.erasure-certificate/2"
FORMAT_1: Final = "consentry.erasure-certificate/1"
REASONS: Final = frozenset({"erasure", "withdrawal", "retention"})
_FIELDS: Final = frozenset(
    {
        "format",
        "certificate_id",
        "subject_id",
        "reason",
        "scopes",
        "key_ids",
        "requested_at",
        "shredded_at",
        "issued_at",
        "requester",
        "causation_id",
        "chain_head",
        "public_key_id",
    }
)
_FIELDS_2: Final = _FIELDS | {"processors"}


class CertificateError(ConsentryError):
    """A certificate is malformed or its signature does not verify."""


@dataclass(frozen=True, slots=True)
class Certificate:
    """The parsed content of a verified erasure certificate."""

    certificate_id: uuid.UUID
    subject_id: uuid.UUID
    reason: str
    scopes: tuple[str, ...]
    key_ids: tuple[str, ...]
    requested_at: datetime
    shredded_at: datetime
    issued_at: datetime
    requester: str
    causation_id: str
    chain_head: str
    public_key_id: str
    processors: tuple[str, ...] = ()
    """Sub-processors that received the subject's data of these scopes: they must be told."""


def canonical_json(value: Mapping[str, Any]) -> bytes:
    """Sorted keys, no spaces, UTF-8: the one byte form a certificate is signed in."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def public_key_id(public_key: Ed25519PublicKey) -> str:
    """Hex of the first 16 bytes of SHA-256 over the raw public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).digest()[:16].hex()


def _timestamp(at: datetime) -> str:
    if at.tzinfo is None:
        raise CertificateError("certificate timestamps must be timezone-aware")
    return at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def issue(
    *,
    subject_id: uuid.UUID,
    reason: str,
    scopes: Iterable[str],
    key_ids: Iterable[str],
    requested_at: datetime,
    shredded_at: datetime,
    issued_at: datetime,
    requester: str,
    causation_id: str,
    chain_head: bytes,
    signing_key: Ed25519PrivateKey,
    certificate_id: uuid.UUID | None = None,
    processors: Iterable[str] = (),
) -> tuple[bytes, bytes]:
    """The canonical certificate bytes and their Ed25519 signature."""
    if reason not in REASONS:
        raise CertificateError("unknown certificate reason")
    body = canonical_json(
        {
            "format": CERTIFICATE_FORMAT,
            "certificate_id": str(certificate_id or uuid.uuid4()),
            "subject_id": str(subject_id),
            "reason": reason,
            "scopes": sorted(set(scopes)),
            "key_ids": sorted(set(key_ids)),
            "requested_at": _timestamp(requested_at),
            "shredded_at": _timestamp(shredded_at),
            "issued_at": _timestamp(issued_at),
            "requester": requester,
            "causation_id": causation_id,
            "chain_head": chain_head.hex(),
            "public_key_id": public_key_id(signing_key.public_key()),
            "processors": sorted(set(processors)),
        }
    )
    return body, signing_key.sign(body)


def verify(certificate: bytes, signature: bytes, public_key: Ed25519PublicKey) -> Certificate:
    """The certificate's content, once its signature and its form are checked."""
    try:
        public_key.verify(signature, certificate)
    except InvalidSignature:
        raise CertificateError("the certificate signature does not verify") from None
    try:
        content = json.loads(certificate.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CertificateError("the certificate is not UTF-8 JSON") from exc
    if not isinstance(content, dict) or canonical_json(content) != certificate:
        raise CertificateError("the certificate is not canonical JSON")
    parsed = _parse(content)
    if parsed.public_key_id != public_key_id(public_key):
        raise CertificateError("the certificate names another signing key")
    return parsed


def _parse(content: dict[str, Any]) -> Certificate:
    # Exactly the known fields: anything extra could carry data a certificate must never hold.
    expected = {CERTIFICATE_FORMAT: _FIELDS_2, FORMAT_1: _FIELDS}.get(str(content.get("format")))
    if expected is None:
        raise CertificateError(f"the certificate format must be {CERTIFICATE_FORMAT}")
    if set(content) != expected:
        raise CertificateError("the certificate fields are not those of the format")
    if content["reason"] not in REASONS:
        raise CertificateError("unknown certificate reason")
    for name in ("requester", "causation_id", "chain_head", "public_key_id"):
        if not isinstance(content[name], str):
            raise CertificateError(f"certificate field {name} must be text")
    lists = {name: content.get(name, []) for name in ("scopes", "key_ids", "processors")}
    for name, items in lists.items():
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise CertificateError(f"certificate field {name} must be a list of text")
        if items != sorted(set(items)):
            raise CertificateError(f"certificate field {name} must be sorted and unique")
    return Certificate(
        certificate_id=_uuid(content, "certificate_id"),
        subject_id=_uuid(content, "subject_id"),
        reason=content["reason"],
        scopes=tuple(lists["scopes"]),
        key_ids=tuple(lists["key_ids"]),
        requested_at=_datetime(content, "requested_at"),
        shredded_at=_datetime(content, "shredded_at"),
        issued_at=_datetime(content, "issued_at"),
        requester=content["requester"],
        causation_id=content["causation_id"],
        chain_head=content["chain_head"],
        public_key_id=content["public_key_id"],
        processors=tuple(lists["processors"]),
    )


def _uuid(content: Mapping[str, Any], name: str) -> uuid.UUID:
    value = content[name]
    try:
        parsed = uuid.UUID(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None or str(parsed) != value:
        raise CertificateError(f"certificate field {name} must be a UUID")
    return parsed


def _datetime(content: Mapping[str, Any], name: str) -> datetime:
    value = content[name]
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None or _timestamp(parsed) != value:
        raise CertificateError(f"certificate field {name} must be an ISO-8601 UTC timestamp")
    return parsed


def public_key_pem(provider: KeyProvider) -> str:
    """The certificate verification key, as PEM text to publish."""
    return _pem(provider.signing_key().public_key())


def _pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def load_public_key(pem: str) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM text."""
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise CertificateError("the public key is not PEM") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise CertificateError("the public key is not an Ed25519 key")
    return key


def certificate_document(
    certificate: bytes, signature: bytes, public_key: Ed25519PublicKey
) -> dict[str, Any]:
    """The certificate, its signature and the public key as one JSON-ready document."""
    return {
        "certificate": json.loads(certificate.decode("utf-8")),
        "signature": base64.b64encode(signature).decode("ascii"),
        "public_key": _pem(public_key),
    }


def verify_document(
    document: Mapping[str, Any], expected_public_key: Ed25519PublicKey | None = None
) -> Certificate:
    """Verifies an exported document offline; pass the published key to pin the signer."""
    if not isinstance(document, Mapping) or set(document) != {
        "certificate",
        "signature",
        "public_key",
    }:
        raise CertificateError("the document must hold certificate, signature and public_key")
    body, signature, pem = document["certificate"], document["signature"], document["public_key"]
    if not isinstance(body, dict) or not isinstance(signature, str) or not isinstance(pem, str):
        raise CertificateError("the document fields have the wrong types")
    try:
        raw_signature = base64.b64decode(signature, validate=True)
    except binascii.Error as exc:
        raise CertificateError("the signature is not base64") from exc
    public_key = load_public_key(pem)
    # The embedded key only proves self-consistency; pinning ties it to the published key.
    if expected_public_key is not None and public_key_id(public_key) != public_key_id(
        expected_public_key
    ):
        raise CertificateError("the document is signed by another key than the published one")
    try:
        certificate = canonical_json(body)
    except ValueError as exc:
        raise CertificateError("the certificate is not canonical JSON") from exc
    return verify(certificate, raw_signature, public_key)
