"""The local key file: created once with 0600, reloaded the same, refused when readable by others."""

from __future__ import annotations

import json
import stat
import time
import uuid
from pathlib import Path

import pytest

from consentry.core.errors import KeyProviderError
from consentry.core.keys import RELOAD_SECONDS, LocalKeyFileProvider
from tests.support import master_key


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


def test_rotation_changes_the_keks_only_and_another_process_follows_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "keys.json"
    rotator, other = LocalKeyFileProvider.open(path), LocalKeyFileProvider.open(path)
    subject = uuid.uuid4()
    old = rotator.wrap(b"s" * 32, subject, "consent", "k")
    before = (rotator.index_key(), rotator.intake_public_key(), rotator.signing_key().public_key())

    assert rotator.add_kek() == 2
    new = rotator.wrap(b"s" * 32, subject, "consent", "k")
    assert new.kek_version == 2
    assert other.unwrap(new, subject, "consent", "k") == b"s" * 32  # reloads on an unknown version
    assert rotator.retire_keks() == (1,)

    with pytest.raises(KeyProviderError, match="retired"):
        rotator.unwrap(old, subject, "consent", "k")
    later = time.monotonic() + RELOAD_SECONDS
    monkeypatch.setattr(time, "monotonic", lambda: later)
    assert other.active_version == 2
    with pytest.raises(KeyProviderError, match="retired"):
        other.unwrap(old, subject, "consent", "k")  # its copy of KEK 1 went with the reload
    again = LocalKeyFileProvider.open(path)
    assert again.kek_versions == (2,)
    after = (again.index_key(), again.intake_public_key(), again.signing_key().public_key())
    assert after[:2] == before[:2]
    assert after[2].public_bytes_raw() == before[2].public_bytes_raw()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_key_file_without_an_intake_seed_keeps_its_intake_key_through_a_rotation(
    tmp_path: Path,
) -> None:
    path = tmp_path / "keys.json"
    LocalKeyFileProvider.open(path)
    document = json.loads(path.read_text())
    del document["intake_seed"]  # as written before the intake seed had an entry of its own
    path.write_text(json.dumps(document))
    legacy = LocalKeyFileProvider.open(path)
    published = legacy.intake_public_key()
    legacy.add_kek()
    legacy.retire_keks()
    assert "intake_seed" in json.loads(path.read_text())
    assert LocalKeyFileProvider.open(path).intake_public_key() == published


def test_new_key_files_do_not_derive_the_intake_key_from_the_signing_key(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    fresh = LocalKeyFileProvider.open(path)
    document = json.loads(path.read_text())
    del document["intake_seed"]
    path.write_text(json.dumps(document))
    assert LocalKeyFileProvider.open(path).intake_public_key() != fresh.intake_public_key()


def test_derived_keks_cannot_be_rotated_until_written_to_a_key_file(tmp_path: Path) -> None:
    derived = LocalKeyFileProvider.from_master_key(master_key())
    with pytest.raises(KeyProviderError, match="keys init --from-master-key"):
        derived.add_kek()
    subject = uuid.uuid4()
    wrapped = derived.wrap(b"s" * 32, subject, "consent", "k")
    moved = derived.to_key_file(tmp_path / "keys.json")
    assert moved.unwrap(wrapped, subject, "consent", "k") == b"s" * 32
    assert moved.intake_public_key() == derived.intake_public_key()
    assert moved.index_key() == derived.index_key()
    assert moved.add_kek() == 2
    with pytest.raises(KeyProviderError, match="exists already"):
        derived.to_key_file(tmp_path / "keys.json")
