"""How many processes a large rebuild runs in: one per core and one more, within the cap."""

from __future__ import annotations

import pytest

from consentry.processors.runner import MAX_PROCESSES, rebuild_processes


@pytest.mark.parametrize(("cores", "processes"), [(1, 1), (2, 3), (3, 4), (16, MAX_PROCESSES)])
def test_a_rebuild_runs_one_process_per_core_and_one_more(cores: int, processes: int) -> None:
    assert rebuild_processes(cores) == processes
