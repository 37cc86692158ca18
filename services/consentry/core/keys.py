"""Key-encryption keys: the port that wraps data keys, and the local key-file provider.

The key file holds versioned KEKs, the blind-index key, the certificate signing key and the intake
transit seed. It is created on first run with mode 0600, or every secret is derived (HKDF) from
`CONSENTRY_MASTER_KEY`.

The intake transit key (HPKE, see `core.transit`) has a seed of its own in key files created since
KEK rotation exists, so knowing one root secret never yields another. Older key files have no such
entry: their intake seed is derived from the signing seed (as it always was), and the next save
writes that derived seed into the file, so producers keep the public key they already have.

Rotating the KEK (`add_kek`, re-wrap every data key, `retire_keks`) changes the KEKs only: the
index, signing and intake secrets stay as they are. A retired KEK is gone from the file, so stray
copies of wrapped keys (old WAL pages, backups) can no longer be unwrapped. Derived KEKs cannot be
retired (the master key derives them again): `consentry keys init --from-master-key` writes the
derived secrets into a key file first. Other processes using the same key file notice a changed
file within `RELOAD_SECONDS` and reload its KEKs.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import os
import struct
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from consentry.core.errors import KeyProviderError
from consentry.core.randomness import take_random
from consentry.core.slots import maker
from consentry.core.transit import IntakeKey

KEYFILE_FORMAT: Final = "consentry.keyfile/1"
_WRAP_LABEL: Final = b"consentry.wrap.v1"
# The wrap AAD's first two parts, length-prefixed (a subject id is 16 bytes), built once.
_WRAP_HEAD: Final = struct.pack(">H", len(_WRAP_LABEL)) + _WRAP_LABEL + struct.pack(">H", 16)
RELOAD_SECONDS: Final = 1.0
"""How long another process may go on using the KEKs of a key file that was rotated."""


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A data key wrapped by one KEK version: nonce and ciphertext."""

    kek_version: int
    blob: bytes = field(repr=False)


# Built by setting its slots (see core/slots): every key the keystore creates is wrapped once.
_wrapped_key: Callable[[int, bytes], WrappedKey] = maker(WrappedKey)


def wrap_aad(subject_id: uuid.UUID, scope: str, key_id: str, kek_version: int) -> bytes:
    """AAD binding a wrapped key to its subject, scope, key id and KEK version.

    Each part is length-prefixed (two bytes, big-endian): label, subject id, scope, key id, version.
    """
    key_part = key_id.encode()
    return (
        _WRAP_HEAD
        + subject_id.bytes
        + _known_part(scope)
        + struct.pack(">H", len(key_part))
        + key_part
        + _known_part(str(kek_version))
    )


@functools.lru_cache(maxsize=1024)
def _known_part(text: str) -> bytes:
    # Scopes and KEK versions: a few dozen, each encoded once.
    data = text.encode()
    return struct.pack(">H", len(data)) + data


class KeyProvider(ABC):
    """Holds the key-encryption keys and the platform's other root secrets."""

    @property
    @abstractmethod
    def active_version(self) -> int:
        """The KEK version new wraps use."""

    @abstractmethod
    def _kek(self, version: int) -> AESGCM:
        """The KEK of a version; KeyProviderError if it is retired or unknown."""

    @abstractmethod
    def index_key(self) -> bytes:
        """The HMAC key of the blind index of external references."""

    @abstractmethod
    def signing_key(self) -> Ed25519PrivateKey:
        """The Ed25519 key that signs erasure certificates."""

    @abstractmethod
    def intake_key(self) -> IntakeKey:
        """The HPKE private key producers seal Kafka intake records to."""

    def intake_public_key(self) -> bytes:
        """The raw intake public key (1216 bytes) producers seal to."""
        return self.intake_key().public_bytes()

    def intake_public_key_pem(self) -> str:
        """The intake public key as PEM text to publish."""
        return self.intake_key().public_pem()

    @property
    def kek_versions(self) -> tuple[int, ...]:
        """The KEK versions this provider can unwrap with, oldest first."""
        return (self.active_version,)

    def add_kek(self) -> int:
        """Adds a new KEK version and makes it the active one; older ones still unwrap."""
        raise KeyProviderError(f"{type(self).__name__} cannot rotate its KEK")

    def retire_keks(self) -> tuple[int, ...]:
        """Forgets every KEK version but the active one, for good; returns the retired versions."""
        raise KeyProviderError(f"{type(self).__name__} cannot rotate its KEK")

    def wrap(self, secret: bytes, subject_id: uuid.UUID, scope: str, key_id: str) -> WrappedKey:
        """Wraps a data key under the active KEK."""
        return self.wrap_all([(secret, subject_id, scope, key_id)])[0]

    def wrap_all(self, keys: Sequence[tuple[bytes, uuid.UUID, str, str]]) -> list[WrappedKey]:
        """Wraps data keys, each given as (secret, subject id, scope, key id), under the active KEK
        (one draw of random bytes for all their nonces)."""
        version = self.active_version
        encrypt = self._kek(version).encrypt
        nonces = take_random(12 * len(keys))
        wrapped = []
        for i, (secret, subject_id, scope, key_id) in enumerate(keys):
            nonce = nonces[12 * i : 12 * i + 12]
            aad = wrap_aad(subject_id, scope, key_id, version)
            wrapped.append(_wrapped_key(version, nonce + encrypt(nonce, secret, aad)))
        return wrapped

    def unwrap(self, wrapped: WrappedKey, subject_id: uuid.UUID, scope: str, key_id: str) -> bytes:
        """Unwraps a data key; fails if the KEK is retired or the context does not match."""
        aad = wrap_aad(subject_id, scope, key_id, wrapped.kek_version)
        try:
            return self._kek(wrapped.kek_version).decrypt(wrapped.blob[:12], wrapped.blob[12:], aad)
        except (InvalidTag, ValueError) as exc:
            raise KeyProviderError("wrapped key failed authentication") from exc


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, name: str) -> bytes:
    if not isinstance(text, str):
        raise KeyProviderError(f"key file: {name} must be base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise KeyProviderError(f"key file: {name} is not valid base64") from exc


def _derive(master: bytes, label: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=f"consentry {label}".encode()
    ).derive(master)


def _stamp(path: Path | None) -> tuple[int, int, int] | None:
    """What tells a rewritten key file from the one last read."""
    if path is None:
        return None
    try:
        info = path.stat()
    except OSError as exc:
        raise KeyProviderError(f"key file {path} cannot be read") from exc
    return (info.st_ino, info.st_mtime_ns, info.st_size)


def _read_key_file(path: Path) -> tuple[dict[int, bytes], int, dict[str, Any]]:
    """The KEKs, the active version and the whole document of a key file."""
    if path.stat().st_mode & 0o077:
        raise KeyProviderError(f"key file {path} must not be readable by group or others")
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise KeyProviderError(f"key file {path} cannot be read as JSON") from exc
    if data.get("format") != KEYFILE_FORMAT:
        raise KeyProviderError(f"key file {path}: format must be {KEYFILE_FORMAT}")
    keks = {int(v): _unb64(k, f"keks.{v}") for v, k in dict(data.get("keks", {})).items()}
    return keks, int(data.get("active", 0)), data


class LocalKeyFileProvider(KeyProvider):
    """KEKs in a local 0600 JSON file (or derived from a master key); the default provider."""

    def __init__(
        self,
        keks: dict[int, bytes],
        active: int,
        index_key: bytes,
        signing_seed: bytes,
        path: Path | None = None,
        intake_seed: bytes | None = None,
        *,
        derived: bool = False,
    ) -> None:
        self._set_keks(keks, active)
        self._index_key = index_key
        self._signing = Ed25519PrivateKey.from_private_bytes(signing_seed)
        self._signing_seed = signing_seed
        self.path = path
        self._derived = derived
        # Key files older than KEK rotation keep no intake seed: it derives from the signing seed.
        self._intake_seed = intake_seed or _derive(signing_seed, "intake transit")
        self._intake: IntakeKey | None = None
        self._stamp = _stamp(path) if path is not None and path.exists() else None
        self._checked = time.monotonic()
        self._reload_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalKeyFileProvider(path={self.path}, active={self._active})"

    def _set_keks(self, keks: dict[int, bytes], active: int) -> None:
        if active not in keks:
            raise KeyProviderError("key file: the active KEK version is missing")
        # One assignment each: a reader in another thread sees the old ring or the new one.
        self._keks = {v: AESGCM(k) for v, k in keks.items()}
        self._raw = dict(keks)
        self._active = active

    @classmethod
    def from_master_key(cls, master_b64: str) -> LocalKeyFileProvider:
        """All secrets derived from one base64 master key of at least 32 bytes."""
        master = _unb64(master_b64, "CONSENTRY_MASTER_KEY")
        if len(master) < 32:
            raise KeyProviderError("CONSENTRY_MASTER_KEY must hold at least 32 bytes (base64)")
        return cls(
            {1: _derive(master, "kek v1")},
            1,
            _derive(master, "blind index"),
            _derive(master, "certificate signing"),
            intake_seed=_derive(master, "intake transit"),
            derived=True,
        )

    @classmethod
    def open(cls, path: Path) -> LocalKeyFileProvider:
        """Loads the key file, creating it with fresh secrets (mode 0600) if absent."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            seeds = [os.urandom(32) for _ in range(3)]
            provider = cls({1: AESGCM.generate_key(256)}, 1, seeds[0], seeds[1], path, seeds[2])
            provider.save()
            return provider
        keks, active, data = _read_key_file(path)
        intake = data.get("intake_seed")
        return cls(
            keks,
            active,
            _unb64(data.get("index_key"), "index_key"),
            _unb64(data.get("signing_key"), "signing_key"),
            path,
            None if intake is None else _unb64(intake, "intake_seed"),
        )

    def to_key_file(self, path: Path) -> LocalKeyFileProvider:
        """The same secrets in a new key file (mode 0600), whose KEKs can then be rotated."""
        if path.exists():
            raise KeyProviderError(f"key file {path} exists already; it is never overwritten")
        path.parent.mkdir(parents=True, exist_ok=True)
        copy = LocalKeyFileProvider(
            self._raw, self._active, self._index_key, self._signing_seed, path, self._intake_seed
        )
        copy.save()
        return copy

    def save(self) -> None:
        """Writes the key file atomically with mode 0600."""
        if self.path is None:
            raise KeyProviderError("this provider has no key file (derived from a master key)")
        content = json.dumps(
            {
                "format": KEYFILE_FORMAT,
                "active": self._active,
                "keks": {str(v): _b64(k) for v, k in sorted(self._raw.items())},
                "index_key": _b64(self._index_key),
                "signing_key": _b64(self._signing_seed),
                "intake_seed": _b64(self._intake_seed),
            },
            indent=2,
        )
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(self.path)
        self._stamp = _stamp(self.path)

    @property
    def active_version(self) -> int:
        self._reload(force=False)
        return self._active

    def _kek(self, version: int) -> AESGCM:
        found = self._keks.get(version)
        if found is None:
            # Perhaps a version newer than ours: another process rotated the file meanwhile.
            self._reload(force=True)
            found = self._keks.get(version)
        if found is None:
            raise KeyProviderError(f"KEK version {version} is retired or unknown")
        return found

    def index_key(self) -> bytes:
        return self._index_key

    def signing_key(self) -> Ed25519PrivateKey:
        return self._signing

    def intake_key(self) -> IntakeKey:
        if self._intake is None:
            self._intake = IntakeKey.from_seed(self._intake_seed)
        return self._intake

    # -- rotation ----------------------------------------------------------------------------

    @property
    def kek_versions(self) -> tuple[int, ...]:
        self._reload(force=False)
        return tuple(sorted(self._raw))

    def add_kek(self) -> int:
        self._rotatable()
        with self._reload_lock:
            version = max(self._raw) + 1
            self._set_keks(self._raw | {version: AESGCM.generate_key(256)}, version)
            self.save()
        return version

    def retire_keks(self) -> tuple[int, ...]:
        self._rotatable()
        with self._reload_lock:
            retired = tuple(sorted(v for v in self._raw if v != self._active))
            self._set_keks({self._active: self._raw[self._active]}, self._active)
            self.save()
        return retired

    def _rotatable(self) -> None:
        if self._derived or self.path is None:
            raise KeyProviderError(
                "KEKs derived from CONSENTRY_MASTER_KEY cannot be retired: write them to a key file "
                "first (consentry keys init --from-master-key) and use CONSENTRY_KEY_FILE"
            )
        self._reload(force=True)

    def _reload(self, *, force: bool) -> None:
        """Takes the KEKs from the file if another process rotated them (looked at once a second)."""
        if self.path is None:
            return
        now = time.monotonic()
        if not force and now - self._checked < RELOAD_SECONDS:
            return
        with self._reload_lock:
            self._checked = now
            stamp = _stamp(self.path)
            if stamp == self._stamp:
                return
            keks, active, data = _read_key_file(self.path)
            if _unb64(data.get("signing_key"), "signing_key") != self._signing_seed:
                raise KeyProviderError(f"key file {self.path} was replaced by a different key file")
            self._set_keks(keks, active)
            self._stamp = stamp
