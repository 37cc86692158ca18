"""Consentry's processes collect cycles rarely and leave what start-up built out of collections."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from consentry.cli import cli
from consentry.core.runtime import GC_THRESHOLDS, tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_tuning_raises_the_thresholds_and_freezes_what_exists() -> None:
    gc.unfreeze()
    tune_gc()
    assert gc.get_threshold() == GC_THRESHOLDS
    assert GC_THRESHOLDS[0] > 700  # fewer collections than Python's default
    assert gc.get_freeze_count() > 0


@pytest.mark.usefixtures("restored_gc")
def test_every_consentry_command_runs_tuned() -> None:
    gc.set_threshold(700, 10, 10)
    assert cli.callback is not None
    cli.callback()
    assert gc.get_threshold() == GC_THRESHOLDS
