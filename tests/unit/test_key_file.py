"""The local key file: created once with 0600, reloaded the same, refused when readable by others."""

from __future__ import annotations

import stat
import uuid
from pathlib import Path

import pytest

from consentry.core.errors import KeyProviderError
from consentry.core.keys import LocalKeyFileProvider


def test_the_key_file_is_created_with_owner_only_permissions_and_reloads(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    first = LocalKeyFileProvider.open(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    subject = uuid.uuid4()
    wrapped = first.wrap(b"s" * 32, subject, "consent", "k")
    again = LocalKeyFileProvider.open(path)
    assert again.unwrap(wrapped, subject, "consent", "k") == b"s" * 32
    assert again.index_key() == first.index_key()
    assert str(path) in repr(again)
    assert first.index_key().hex() not in repr(again)


def test_a_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    LocalKeyFileProvider.open(path)
    path.chmod(0o644)
    with pytest.raises(KeyProviderError, match="readable by group or others"):
        LocalKeyFileProvider.open(path)


def test_a_short_or_malformed_master_key_is_refused() -> None:
    with pytest.raises(KeyProviderError, match="at least 32 bytes"):
        LocalKeyFileProvider.from_master_key("c2hvcnQ=")
    with pytest.raises(KeyProviderError, match="not valid base64"):
        LocalKeyFileProvider.from_master_key("***")
