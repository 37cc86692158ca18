"""Random ids: what uuid.uuid4() makes, built without its __init__."""

from __future__ import annotations

import pickle
import uuid

from consentry.core.clock import new_id

VERSION_AND_VARIANT = (0xF000 << 64) | (0xC000 << 48)


def test_an_id_is_a_random_version_4_uuid_like_uuid4_makes() -> None:
    ids = [new_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for made in ids[:50]:
        assert type(made) is uuid.UUID
        assert made.version == 4 and made.variant == uuid.RFC_4122
        assert uuid.UUID(str(made)) == made and uuid.UUID(bytes=made.bytes) == made
        assert hash(made) == hash(uuid.UUID(made.hex))
        assert pickle.loads(pickle.dumps(made)) == made  # noqa: S301 - our own bytes
        assert made.is_safe is uuid.SafeUUID.unknown
    # The other 122 bits are random: each is set in some ids and clear in others.
    set_somewhere = clear_somewhere = 0
    for made in ids:
        set_somewhere |= made.int
        clear_somewhere |= ~made.int
    random_bits = ~VERSION_AND_VARIANT & ((1 << 128) - 1)
    assert set_somewhere & random_bits == random_bits
    assert clear_somewhere & random_bits == random_bits
    assert {made.int & VERSION_AND_VARIANT for made in ids} == {(4 << 76) | (0x8000 << 48)}
