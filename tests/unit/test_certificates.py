"""Erasure certificates: canonical bytes, Ed25519 signatures, strict parsing, offline documents."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consentry.core.errors import ConsentryError
from consentry.core.keys import LocalKeyFileProvider
from consentry.shredder.certificates import (
    CERTIFICATE_FORMAT,
    CertificateError,
    canonical_json,
    certificate_document,
    issue,
    load_public_key,
    public_key_id,
    public_key_pem,
    verify,
    verify_document,
)
from tests.support import T0, master_key

SIGNER = Ed25519PrivateKey.generate()


def _issue(signing_key: Ed25519PrivateKey = SIGNER, **overrides: Any) -> tuple[bytes, bytes]:
    values: dict[str, Any] = {
        "subject_id": uuid.uuid4(),
        "reason": "erasure",
        "scopes": ["purpose:support", "identity", "purpose:marketing"],
        "key_ids": ["b" * 32, "a" * 32],
        "requested_at": T0,
        "shredded_at": T0 + timedelta(seconds=1),
        "issued_at": T0 + timedelta(seconds=2),
        "requester": "shop",
        "causation_id": str(uuid.uuid4()),
        "chain_head": bytes(range(32)),
    }
    return issue(**(values | overrides), signing_key=signing_key)


def _resigned(certificate: bytes, **changes: Any) -> tuple[bytes, bytes]:
    """The certificate with changed content, validly signed by the real key."""
    body = canonical_json(json.loads(certificate) | changes)
    return body, SIGNER.sign(body)


def test_a_certificate_is_canonical_sorted_json_that_verifies() -> None:
    certificate, signature = _issue()

    parsed = verify(certificate, signature, SIGNER.public_key())

    content = json.loads(certificate)
    assert certificate == json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
    assert content["format"] == CERTIFICATE_FORMAT
    assert parsed.scopes == ("identity", "purpose:marketing", "purpose:support")
    assert parsed.key_ids == ("a" * 32, "b" * 32)
    assert content["requested_at"] == "2026-11-01T09:00:00.000000Z"
    assert parsed.requested_at == T0
    assert parsed.chain_head == bytes(range(32)).hex()
    assert parsed.public_key_id == public_key_id(SIGNER.public_key())
    assert len(parsed.public_key_id) == 32


def test_any_flipped_byte_or_foreign_signature_fails() -> None:
    certificate, signature = _issue()
    for position in range(0, len(certificate), 7):
        broken = bytearray(certificate)
        broken[position] ^= 0x01
        with pytest.raises(CertificateError):
            verify(bytes(broken), signature, SIGNER.public_key())
    stranger = Ed25519PrivateKey.generate()
    with pytest.raises(CertificateError, match="signature"):
        verify(certificate, stranger.sign(certificate), SIGNER.public_key())
    with pytest.raises(CertificateError, match="signature"):
        verify(certificate, signature, stranger.public_key())


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"email": "user@example.com"}, "fields"),
        ({"format": "consentry.erasure-certificate/0"}, "format"),
        ({"reason": "because"}, "reason"),
        ({"scopes": ["z", "a"]}, "sorted"),
        ({"key_ids": "a"}, "list"),
        ({"subject_id": "not-a-uuid"}, "UUID"),
        ({"issued_at": "2026-11-01 09:00"}, "timestamp"),
        ({"requester": 7}, "text"),
        ({"public_key_id": "00" * 16}, "another signing key"),
    ],
)
def test_well_signed_but_malformed_content_is_refused(changes: dict[str, Any], problem: str) -> None:
    certificate, _ = _issue()
    with pytest.raises(CertificateError, match=problem):
        verify(*_resigned(certificate, **changes), SIGNER.public_key())


def test_non_canonical_bytes_are_refused_even_when_signed() -> None:
    certificate, _ = _issue()
    spaced = json.dumps(json.loads(certificate), indent=1).encode()
    with pytest.raises(CertificateError, match="canonical"):
        verify(spaced, SIGNER.sign(spaced), SIGNER.public_key())


def test_issue_refuses_an_unknown_reason_and_naive_times() -> None:
    with pytest.raises(CertificateError):
        _issue(reason="boredom")
    with pytest.raises(CertificateError):
        _issue(issued_at=T0.replace(tzinfo=None))
    assert issubclass(CertificateError, ConsentryError)


def test_an_exported_document_verifies_offline_and_can_be_pinned_to_the_published_key() -> None:
    provider = LocalKeyFileProvider.from_master_key(master_key())
    published = load_public_key(public_key_pem(provider))
    certificate, signature = _issue(provider.signing_key())

    document = json.loads(json.dumps(certificate_document(certificate, signature, published)))

    assert verify_document(document, published).reason == "erasure"
    changed = document | {"certificate": document["certificate"] | {"reason": "retention"}}
    with pytest.raises(CertificateError, match="signature"):
        verify_document(changed)
    with pytest.raises(CertificateError, match="published"):
        verify_document(document, SIGNER.public_key())
    with pytest.raises(CertificateError, match="base64"):
        verify_document(document | {"signature": "not base64!"})
    with pytest.raises(CertificateError, match="must hold"):
        verify_document({"certificate": document["certificate"]})


def test_only_ed25519_pem_keys_are_accepted() -> None:
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = other.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    with pytest.raises(CertificateError, match="Ed25519"):
        load_public_key(pem)
    with pytest.raises(CertificateError, match="PEM"):
        load_public_key("not a key")


def test_format_1_certificates_without_processors_still_verify() -> None:
    certificate, _ = _issue()
    content = json.loads(certificate)
    del content["processors"]
    old, signature = _resigned(canonical_json(content), format="consentry.erasure-certificate/1")
    assert verify(old, signature, SIGNER.public_key()).processors == ()
    with pytest.raises(CertificateError, match="fields"):
        verify(*_resigned(old, processors=[]), SIGNER.public_key())  # /1 never names processors


def test_the_processors_to_tell_are_signed_sorted_and_unique() -> None:
    certificate, signature = _issue(processors=["mailer-example", "archive-example", "mailer-example"])
    assert verify(certificate, signature, SIGNER.public_key()).processors == (
        "archive-example",
        "mailer-example",
    )
    with pytest.raises(CertificateError, match="sorted and unique"):
        verify(*_resigned(certificate, processors=["b", "a"]), SIGNER.public_key())
