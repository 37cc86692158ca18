"""The CPU shares each benchmark reports, read from a /proc/stat-shaped file."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bench.machine import CpuTimes, cpu_seconds, cpu_times, describe, peak_rss_kib, shares

ROOT = Path(__file__).resolve().parents[2]


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


def test_a_process_cpu_time_grows_with_its_work() -> None:
    before = cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:
        pass
    assert cpu_seconds(os.getpid()) >= before + 0.03  # clock ticks: 10 ms steps


def test_a_process_peak_rss_grows_with_the_memory_it_touches() -> None:
    # In a fresh process: this one's peak may already lie above anything the test allocates.
    script = (
        "from bench.machine import peak_rss_kib\n"
        "before = peak_rss_kib()\n"
        "held = bytearray(64 * 1024 * 1024)\n"
        "held[::4096] = b'\\x01' * len(held[::4096])\n"  # every page touched, so resident
        "print(before, peak_rss_kib())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    before, after = map(int, done.stdout.split())
    assert after >= before + 60 * 1024
    assert peak_rss_kib(os.getpid()) == peak_rss_kib() > 0
