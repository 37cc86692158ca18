"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from consentry.core.settings import load_settings
from consentry.platform import Platform
from tests.support import EXAMPLE_POLICY


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    """The embedded platform on SQLite files of its own, with the example policy; closed after."""
    opened = Platform.open(load_settings(data_dir=tmp_path / "data", policy=EXAMPLE_POLICY))
    try:
        yield opened
    finally:
        opened.close()
