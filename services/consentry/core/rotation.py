"""KEK rotation: a new KEK, every data key re-wrapped under it, then the old KEKs retired for good.

Once the old KEKs are gone from the key file, a copy of a wrapped key taken before the rotation (an
old WAL page, a backup of the keystore) can no longer be unwrapped: the backup horizon of DESIGN.md
§3. Only the KEKs change; the blind-index, certificate-signing and intake keys stay the same.

Other processes that share the key file see the new KEK within `RELOAD_SECONDS`; until then they may
still wrap new keys under the old one, so the re-wrap starts after a grace period, and the old KEKs
are retired only when no live key is wrapped under them any more. A rotation that stopped half-way
(more than one KEK in the file) is resumed rather than started again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from consentry.core.errors import KeyProviderError
from consentry.core.keys import RELOAD_SECONDS
from consentry.core.keystore import Keystore

GRACE_SECONDS: Final = 2 * RELOAD_SECONDS


@dataclass(frozen=True, slots=True)
class Rotation:
    """What a rotation did (no key material, safe to print)."""

    active: int
    retired: tuple[int, ...]
    rewrapped: int
    unreadable: int
    resumed: bool


def rotate_kek(
    keystore: Keystore,
    *,
    grace_seconds: float = GRACE_SECONDS,
    sleep: Callable[[float], None],
    skip_unreadable: bool = False,
) -> Rotation:
    """Adds a KEK, re-wraps every key under it and retires the older KEKs."""
    provider = keystore.provider
    resumed = len(provider.kek_versions) > 1
    if not resumed:
        provider.add_kek()
        sleep(grace_seconds)
    active = provider.active_version
    rewrapped = unreadable = 0
    for _ in range(3):  # a key wrapped by a late process meanwhile is caught by the next pass
        result = keystore.rewrap()
        rewrapped += result.rewrapped
        unreadable = result.unreadable
        if result.rewrapped == 0:
            break
    if unreadable and not skip_unreadable:
        raise KeyProviderError(
            f"{unreadable} keys open under no KEK of this key file; the old KEKs were kept "
            "(check CONSENTRY_KEY_FILE; --skip-unreadable retires them anyway)"
        )
    stale = sum(n for version, n in keystore.kek_usage().items() if version != active)
    if stale > unreadable:
        raise KeyProviderError("keys are still wrapped under an old KEK; run the rotation again")
    retired = provider.retire_keks()
    return Rotation(active, retired, rewrapped, unreadable, resumed)
