"""The CPU shares each benchmark reports, read from a /proc/stat-shaped file."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.machine import CpuTimes, cpu_times, describe, shares


def _stat(path: Path, user: int, idle: int, iowait: int, steal: int) -> Path:
    # user nice system idle iowait irq softirq steal guest guest_nice; guest is part of user.
    path.write_text(f"cpu  {user} 0 10 {idle} {iowait} 0 0 {steal} 7 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
    return path


def test_busy_and_stolen_shares_come_from_the_difference_of_two_readings(tmp_path: Path) -> None:
    start = cpu_times(_stat(tmp_path / "a", user=100, idle=500, iowait=0, steal=0))
    end = cpu_times(_stat(tmp_path / "b", user=160, idle=600, iowait=20, steal=30))
    assert start == CpuTimes(total=610, idle=500, steal=0)
    found = shares(start, end)
    assert found is not None
    # 210 jiffies passed: 120 idle or waiting on I/O, 30 stolen, 60 run here (guest not twice).
    assert found["busy_pct"] == pytest.approx(100 * 90 / 210)
    assert found["steal_pct"] == pytest.approx(100 * 30 / 210)
    assert "43 % busy, 14 % of their time stolen" in describe(found)


def test_without_proc_stat_the_shares_are_unknown_and_said_so(tmp_path: Path) -> None:
    assert cpu_times(tmp_path / "missing") is None
    assert cpu_times(_stat(tmp_path / "a", 1, 1, 1, 1)) is not None
    (tmp_path / "odd").write_text("intr 1 2 3\n")
    assert cpu_times(tmp_path / "odd") is None
    assert shares(None, cpu_times(_stat(tmp_path / "b", 1, 1, 1, 1))) is None
    assert describe(None).startswith("CPU shares not measured")
