"""Per-field sealing fails closed on any tampered byte, swapped context or wrong key."""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from consentry.core.errors import KeyProviderError, SealError
from consentry.core.keys import LocalKeyFileProvider, wrap_aad
from consentry.core.keystore import new_key_ids
from consentry.core.sealing import DataKey, Personal, open_many, open_sealed, seal, seal_aad, seal_many
from tests.support import canary, master_key


def _key(subject: uuid.UUID | None = None, scope: str = "purpose:marketing") -> DataKey:
    return DataKey.build(uuid.uuid4().hex, subject or uuid.uuid4(), scope, 1, os.urandom(32))


def test_a_sealed_value_opens_with_its_key_field_and_subject() -> None:
    key = _key()
    secret = canary("email")
    sealed = seal(key, "email", secret)
    assert secret.encode() not in sealed.ciphertext
    assert open_sealed(key, "email", sealed) == secret


def test_a_keys_cached_aad_is_the_aad_of_its_own_subject_scope_field_and_id() -> None:
    key = _key(scope="identity")
    moved = replace(key, subject_id=uuid.uuid4(), scope="consent", key_id=uuid.uuid4().hex)
    for k in (key, moved):
        for field_name in ("email", "given_name", "é"):
            assert k.aad(field_name) == seal_aad(k.subject_id, k.scope, field_name, k.key_id)
    assert key.aad("email") != moved.aad("email")


def _length_prefixed(*parts: bytes) -> bytes:
    """The AAD layout of DESIGN.md: each part after a two-byte big-endian length."""
    return b"".join(len(p).to_bytes(2, "big") + p for p in parts)


@pytest.mark.parametrize("scope", ["identity", "purpose:marketing", "purpose:é"])
def test_the_seal_and_wrap_aad_are_the_length_prefixed_parts_of_their_context(scope: str) -> None:
    subject, key_id = uuid.uuid4(), new_key_ids(1)[0]
    expected = _length_prefixed(
        b"consentry.seal.v1", subject.bytes, scope.encode(), b"email", key_id.encode()
    )
    assert seal_aad(subject, scope, "email", key_id) == expected
    assert DataKey.build(key_id, subject, scope, 1, os.urandom(32)).aad("email") == expected
    for version in (1, 12):
        assert wrap_aad(subject, scope, key_id, version) == _length_prefixed(
            b"consentry.wrap.v1", subject.bytes, scope.encode(), key_id.encode(), str(version).encode()
        )


def test_key_ids_have_the_form_of_uuid7_hex_do_not_repeat_and_grow_with_time() -> None:
    before = time.time_ns() // 1_000_000
    ids = [new_key_ids(1)[0] for _ in range(1000)] + new_key_ids(500) + new_key_ids(1) + new_key_ids(499)
    after = time.time_ns() // 1_000_000
    assert len(ids) == 2000
    assert len(set(ids)) == len(ids)
    for key_id in ids:
        parsed = uuid.UUID(hex=key_id)
        assert (parsed.version, parsed.variant, parsed.hex) == (7, uuid.RFC_4122, key_id)
        assert before <= int(key_id[:12], 16) <= after
    # Ids of later milliseconds sort after earlier ones (within one, in random order).
    assert [int(k[:12], 16) for k in ids] == sorted(int(k[:12], 16) for k in ids)
    assert len({k[12:] for k in ids}) == len(ids)


def test_keys_wrapped_together_each_unwrap_only_under_their_own_context() -> None:
    provider = LocalKeyFileProvider.from_master_key(master_key())
    subject = uuid.uuid4()
    contexts = [
        (subject, "consent", "key-1"),
        (subject, "identity", "key-2"),
        (uuid.uuid4(), "consent", "key-3"),
    ]
    secrets = [os.urandom(32) for _ in contexts]
    wrapped = provider.wrap_all(
        [(secret, *context) for secret, context in zip(secrets, contexts, strict=True)]
    )
    assert len({w.blob[:12] for w in wrapped}) == len(contexts)  # a nonce of its own each
    for i, w in enumerate(wrapped):
        assert w.kek_version == provider.active_version
        for j, context in enumerate(contexts):
            if i == j:
                assert provider.unwrap(w, *context) == secrets[i]
            else:
                with pytest.raises(KeyProviderError):
                    provider.unwrap(w, *context)
    assert provider.wrap_all([]) == []


def test_any_flipped_ciphertext_or_nonce_bit_fails_closed() -> None:
    key = _key()
    sealed = seal(key, "email", canary())
    for position in range(len(sealed.ciphertext)):
        broken = bytearray(sealed.ciphertext)
        broken[position] ^= 0x80
        with pytest.raises(SealError):
            open_sealed(key, "email", replace(sealed, ciphertext=bytes(broken)))
    with pytest.raises(SealError):
        open_sealed(key, "email", replace(sealed, nonce=os.urandom(12)))


def test_a_value_moved_to_another_field_subject_or_key_does_not_open() -> None:
    key = _key()
    sealed = seal(key, "email", canary())
    with pytest.raises(SealError):
        open_sealed(key, "phone", sealed)
    other_subject = replace(key, subject_id=uuid.uuid4())
    with pytest.raises(SealError):
        open_sealed(other_subject, "email", sealed)
    other_key = _key(key.subject_id)
    with pytest.raises(SealError):
        open_sealed(replace(other_key, key_id=key.key_id), "email", sealed)


def test_personal_values_and_keys_never_show_in_repr() -> None:
    secret = canary("name")
    key = _key()
    assert secret not in repr(Personal(secret))
    assert secret not in str(Personal(secret))
    assert key.secret.hex() not in repr(key)
    assert repr(seal(key, "first_name", secret)).count(secret) == 0


def test_a_wrapped_key_unwraps_only_under_its_kek_and_context() -> None:
    provider = LocalKeyFileProvider.from_master_key(master_key())
    subject = uuid.uuid4()
    wrapped = provider.wrap(b"k" * 32, subject, "consent", "key-1")
    assert provider.unwrap(wrapped, subject, "consent", "key-1") == b"k" * 32
    with pytest.raises(KeyProviderError):
        provider.unwrap(wrapped, subject, "identity", "key-1")
    with pytest.raises(KeyProviderError):
        LocalKeyFileProvider.from_master_key(master_key()).unwrap(wrapped, subject, "consent", "key-1")


def test_values_sealed_together_open_together_each_under_its_own_aad() -> None:
    key = _key()
    values = {"email": canary("mail"), "first_name": canary("name"), "é": canary("accent")}
    sealed = seal_many(key, values)
    assert open_many(key, sealed) == values
    # The same plaintexts as AES-GCM itself opens them under each value's own AAD.
    aead = AESGCM(key.secret)
    for name, value in sealed.items():
        aad = seal_aad(key.subject_id, key.scope, name, key.key_id)
        assert aead.decrypt(value.nonce, value.ciphertext, aad).decode() == values[name]
    assert open_many(key, {}) == {}
    assert open_many(key, seal_many(key, {"phone": values["email"]})) == {"phone": values["email"]}


def test_one_value_that_does_not_open_fails_its_whole_group() -> None:
    key = _key()
    sealed = seal_many(key, {"email": canary("mail"), "first_name": canary("name")})
    broken = bytearray(sealed["first_name"].ciphertext)
    broken[0] ^= 0x01
    swapped = {"email": sealed["first_name"], "first_name": sealed["email"]}
    foreign = seal(_key(key.subject_id), "phone", canary("phone"))
    other_scope = seal(_key(key.subject_id, "identity"), "phone", canary("phone"))
    for group in (
        sealed | {"first_name": replace(sealed["first_name"], ciphertext=bytes(broken))},
        swapped,
        sealed | {"phone": foreign},
        sealed | {"phone": replace(other_scope, key_id=key.key_id)},
    ):
        with pytest.raises(SealError):
            open_many(key, group)
