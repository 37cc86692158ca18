"""Consentry's processes collect cycles rarely, leave what start-up built out of collections, and
never collect in the middle of a batch or a page."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from consentry.cli import cli
from consentry.core.runtime import GC_THRESHOLDS, collecting_after, tune_gc


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


class _Collections:
    """Counts the collector's runs while it is attached."""

    def __init__(self) -> None:
        self.runs = 0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        self.runs += phase == "start"


@pytest.fixture
def collections() -> Iterator[_Collections]:
    counted = _Collections()
    thresholds, enabled = gc.get_threshold(), gc.isenabled()
    gc.set_threshold(100, 10, 10)
    gc.enable()
    gc.callbacks.append(counted)
    try:
        yield counted
    finally:
        gc.callbacks.remove(counted)
        gc.set_threshold(*thresholds)
        if not enabled:
            gc.disable()


def test_no_collection_runs_inside_the_work_and_the_next_comes_right_after(
    collections: _Collections,
) -> None:
    with collecting_after():
        held = [[n] for n in range(5_000)]  # 50 times the threshold, all alive
        assert collections.runs == 0
    assert gc.isenabled()
    garbage: list[object] = []
    garbage.append(garbage)  # one more tracked object: the count is past the threshold
    del garbage
    assert collections.runs >= 1
    assert len(held) == 5_000


def test_the_collector_is_resumed_after_a_failure_and_left_off_if_it_was_off(
    collections: _Collections,
) -> None:
    def failing_batch() -> None:
        with collecting_after():
            assert not gc.isenabled()
            raise RuntimeError("the batch failed")

    with pytest.raises(RuntimeError, match="the batch failed"):
        failing_batch()
    assert gc.isenabled()
    gc.disable()
    with collecting_after():
        assert not gc.isenabled()
    assert not gc.isenabled()
