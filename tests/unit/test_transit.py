"""Intake transit: envelopes round-trip, fail closed on any change, and show no token or record."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from consentry.core.intake import IntakeParser
from consentry.core.keys import LocalKeyFileProvider
from consentry.core.transit import (
    HEADER,
    INFO,
    PUBLIC_KEY_BYTES,
    SUITE_MLKEM768_X25519,
    EnvelopeError,
    EnvelopeMalformed,
    EnvelopeSuiteUnknown,
    EnvelopeTooLarge,
    EnvelopeUnopenable,
    EnvelopeVersionUnknown,
    IntakeKey,
    IntakeKeyError,
    IntakeOpener,
    IntakeSealer,
    load_public_key,
)
from tests.support import canary, fake_email, master_key, parser, record

KEY = IntakeKey.generate()
OPENER = IntakeOpener(KEY)
SEALER = IntakeSealer(KEY.public_bytes())
PARSER: IntakeParser = parser()


def _records(ref: str, *secrets: str) -> list[bytes]:
    """Avro bytes of a grant with evidence and a data update carrying the secrets."""
    grant = record("consent.grant", ref, purpose="support", evidence=secrets[0])
    update = record(
        "data.update", ref, purpose="support", fields={"email": fake_email(), "first_name": secrets[1]}
    )
    return [PARSER.to_avro(PARSER.from_json(grant)), PARSER.to_avro(PARSER.from_json(update))]


def _sealed(plaintext: bytes) -> bytes:
    """An envelope around any plaintext, sealed correctly to KEY (to test the inner structure)."""
    raw = KEY.public_bytes()
    public = hpke.MLKEM768X25519PublicKey(
        MLKEM768PublicKey.from_public_bytes(raw[:1184]), X25519PublicKey.from_public_bytes(raw[1184:])
    )
    suite = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
    return HEADER + bytes([SUITE_MLKEM768_X25519]) + suite.encrypt(plaintext, public, info=INFO)


def _inner(token: bytes, *records: bytes, count: int | None = None) -> bytes:
    body = struct.pack(">H", len(token)) + token
    body += struct.pack(">I", len(records) if count is None else count)
    return body + b"".join(struct.pack(">I", len(r)) + r for r in records)


def test_an_envelope_opens_to_the_same_token_and_records() -> None:
    token = canary("token")
    records = _records("shop:" + canary("ref"), canary("evidence"), canary("name"))
    opened = OPENER.open(SEALER.seal(token, records))
    assert opened.token == token
    assert opened.records_avro == tuple(records)
    assert [PARSER.from_avro(r) for r in opened.records_avro] == [PARSER.from_avro(r) for r in records]
    assert token not in repr(opened)


def test_the_envelope_holds_neither_the_token_nor_any_record_value() -> None:
    token, ref, evidence, name = canary("token"), canary("ref"), canary("evidence"), canary("name")
    envelope = SEALER.seal(token, _records("shop:" + ref, evidence, name))
    for needle in (token, ref, evidence, name):
        assert needle.encode() not in envelope
        assert needle.encode("utf-16-le") not in envelope
    assert envelope.startswith(b"CSI\x01\x01")


def test_every_flipped_byte_fails_closed_with_the_error_of_its_region() -> None:
    envelope = SEALER.seal(canary("token"), _records("shop:" + canary("ref"), canary("e"), canary("n")))
    positions = sorted(
        {*range(8), *range(0, len(envelope), 13), *range(len(envelope) - 40, len(envelope))}
    )
    for position in positions:
        for mask in (0x01, 0x80, 0xFF):
            tampered = bytearray(envelope)
            tampered[position] ^= mask
            expected: type[EnvelopeError] = (
                EnvelopeMalformed
                if position < 3
                else EnvelopeVersionUnknown
                if position == 3
                else EnvelopeSuiteUnknown
                if position == 4
                else EnvelopeUnopenable
            )
            with pytest.raises(expected):
                OPENER.open(bytes(tampered))


def test_an_envelope_sealed_to_another_key_does_not_open() -> None:
    envelope = IntakeSealer(IntakeKey.generate().public_bytes()).seal("t", [b"record"])
    with pytest.raises(EnvelopeUnopenable):
        OPENER.open(envelope)


@pytest.mark.parametrize(
    ("envelope", "error"),
    [
        (b"", EnvelopeMalformed),
        (b"CS", EnvelopeMalformed),
        (b"CSI", EnvelopeMalformed),
        (HEADER, EnvelopeMalformed),
        (HEADER + b"\x01" + b"\x00" * 100, EnvelopeMalformed),
        (b"garbage that is no envelope at all", EnvelopeMalformed),
        (b"\xc3\x01" + b"\x00" * 200, EnvelopeMalformed),
        (b"CSI\x02\x01" + b"\x00" * 2000, EnvelopeVersionUnknown),
        (b"CSI\x00\x01" + b"\x00" * 2000, EnvelopeVersionUnknown),
        (HEADER + b"\x02" + b"\x00" * 2000, EnvelopeSuiteUnknown),
        (HEADER + b"\x00" + b"\x00" * 2000, EnvelopeSuiteUnknown),
        (HEADER + b"\x01" + b"\x00" * 2000, EnvelopeUnopenable),
    ],
)
def test_garbage_and_unknown_versions_and_suites_are_refused(
    envelope: bytes, error: type[EnvelopeError]
) -> None:
    with pytest.raises(error):
        OPENER.open(envelope)


def test_a_truncated_envelope_is_refused_at_any_length() -> None:
    envelope = SEALER.seal(canary("token"), [b"one record"])
    for length in (*range(6), 100, 1125, 1141, len(envelope) - 16, len(envelope) - 1):
        with pytest.raises((EnvelopeMalformed, EnvelopeUnopenable)):
            OPENER.open(envelope[:length])
    with pytest.raises(EnvelopeUnopenable):
        OPENER.open(envelope + b"\x00")


def test_oversized_envelopes_and_batches_are_refused_on_both_sides() -> None:
    with pytest.raises(EnvelopeTooLarge):
        OPENER.open(HEADER + b"\x01" + b"\x00" * 1_000_000)
    with pytest.raises(EnvelopeTooLarge):
        SEALER.seal("t", [b"x" * 1_000_000])
    with pytest.raises(EnvelopeTooLarge):
        SEALER.seal("t", [b"x"] * 1001)
    small = IntakeOpener(KEY, max_records=2)
    with pytest.raises(EnvelopeTooLarge):
        small.open(SEALER.seal("t", [b"x"] * 3))
    assert small.open(SEALER.seal("t", [b"x"] * 2)).records_avro == (b"x", b"x")


@pytest.mark.parametrize(
    "plaintext",
    [
        b"",
        b"\x00",
        _inner(b"", b"record"),
        _inner(b"token"),
        _inner(b"\xff\xfe", b"record"),
        _inner(b"token", b"record") + b"trailing",
        _inner(b"token", b"record", count=2),
        _inner(b"token", b"record")[:-3],
        struct.pack(">H", 500) + b"short",
    ],
)
def test_an_envelope_that_opens_to_a_bad_structure_is_refused(plaintext: bytes) -> None:
    with pytest.raises(EnvelopeMalformed):
        OPENER.open(_sealed(plaintext))


def test_the_sealer_refuses_an_empty_token_or_batch() -> None:
    with pytest.raises(EnvelopeMalformed):
        SEALER.seal("", [b"record"])
    with pytest.raises(EnvelopeMalformed):
        SEALER.seal("t" * 1025, [b"record"])
    with pytest.raises(EnvelopeMalformed):
        SEALER.seal("token", [])


def test_errors_name_no_token_and_no_record_value() -> None:
    token, ref = canary("token"), canary("ref")
    envelope = SEALER.seal(token, _records("shop:" + ref, canary("e"), canary("n")))
    messages = []
    for bad in (envelope[:-1], envelope[:5] + b"\x00" + envelope[6:], b"CSI\x09" + envelope[4:]):
        with pytest.raises(EnvelopeError) as caught:
            IntakeOpener(IntakeKey.generate()).open(bad)
        messages.append(str(caught.value))
    assert not any(token in m or ref in m for m in messages)


@settings(max_examples=40, deadline=None)
@given(
    token=st.text(min_size=1, max_size=200).filter(lambda t: len(t.encode()) <= 1024),
    refs=st.lists(st.text(min_size=1, max_size=40).filter(str.strip), min_size=1, max_size=8),
    value=st.text(max_size=300),
)
def test_any_list_of_records_round_trips(token: str, refs: list[str], value: str) -> None:
    records = [
        PARSER.from_json(record("data.update", f"shop:{ref}", fields={"first_name": value}))
        for ref in refs
    ]
    opened = OPENER.open(SEALER.seal(token, [PARSER.to_avro(r) for r in records]))
    assert opened.token == token
    assert [PARSER.from_avro(r) for r in opened.records_avro] == records


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(max_size=500), min_size=1, max_size=30))
def test_any_list_of_byte_strings_round_trips(records: list[bytes]) -> None:
    assert OPENER.open(SEALER.seal("token", records)).records_avro == tuple(records)


def test_the_intake_key_derives_from_the_master_key_or_the_key_file_deterministically(
    tmp_path: Path,
) -> None:
    master = master_key()
    one = LocalKeyFileProvider.from_master_key(master)
    assert one.intake_public_key() == LocalKeyFileProvider.from_master_key(master).intake_public_key()
    assert (
        one.intake_public_key() != LocalKeyFileProvider.from_master_key(master_key()).intake_public_key()
    )
    assert len(one.intake_public_key()) == PUBLIC_KEY_BYTES
    first = LocalKeyFileProvider.open(tmp_path / "keys.json")
    again = LocalKeyFileProvider.open(tmp_path / "keys.json")
    assert first.intake_public_key() == again.intake_public_key()
    envelope = IntakeSealer(first.intake_public_key_pem()).seal("token", [b"record"])
    assert IntakeOpener(again.intake_key()).open(envelope).records_avro == (b"record",)
    assert "private" in repr(first.intake_key())


def test_the_public_key_loads_from_raw_base64_or_pem_and_refuses_anything_else() -> None:
    raw = KEY.public_bytes()
    assert load_public_key(raw) == load_public_key(KEY.public_b64()) == load_public_key(KEY.public_pem())
    assert KEY.public_pem().startswith("-----BEGIN CONSENTRY INTAKE PUBLIC KEY-----\n")
    for bad in (raw[:-1], "not base64 !", KEY.public_pem().replace("INTAKE", "OTHER"), b""):
        with pytest.raises(IntakeKeyError):
            IntakeSealer(bad)
    with pytest.raises(IntakeKeyError):
        IntakeKey.from_seed(b"short")


def test_the_seed_expands_to_the_x_wing_key_of_the_published_test_vector() -> None:
    # draft-connolly-cfrg-xwing-kem, appendix C, vector 1: seed -> public key (first and last bytes)
    seed = bytes.fromhex("7f9c2ba4e88f827d616045507605853ed73b8093f6efbc88eb1a6eacfa66ef26")
    public = IntakeKey.from_seed(seed).public_bytes()
    assert (
        public[:36].hex() == "e2236b35a8c24b39b10aa1323a96a919a2ced88400633a7b07131713fc14b2b5b19cfc3d"
    )
    assert public[-30:].hex() == "db06eff389b27dce59844570216223593d4ba32d9abac8cd049040ef6534"
