"""How busy the machine was while a benchmark ran: CPU time by kind from /proc/stat (Linux); and
how much memory a process took at its peak.

A virtual machine's vCPU can be *stolen*: the hypervisor runs somebody else on the real core while
this guest has work to do. On these machines steal has been seen anywhere from 0 to 70 % of both
cores within one hour, and it moves latency tails and throughput more than most code changes do,
so every benchmark reports the shares it ran under next to its figures.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

PROC_STAT: Final = Path("/proc/stat")


def cpu_seconds(pid: int) -> float:
    """A process's CPU time so far (user + system, its threads included), from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state is field 3
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_kib(pid: int | None = None) -> int:
    """A process's peak RSS in KiB (this one's if no pid): VmHWM, the high-water mark of its own
    address space.

    Not ru_maxrss: Linux carries that over exec from the forked parent, so a child of a large
    benchmark process would report the parent's size.
    """
    status = Path(f"/proc/{'self' if pid is None else pid}/status")
    for line in status.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM in {status} (the benchmarks measure memory on Linux)")


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """Cumulative jiffies of all CPUs together: total, idle (incl. I/O wait) and stolen."""

    total: int
    idle: int
    steal: int


def cpu_times(source: Path = PROC_STAT) -> CpuTimes | None:
    """The machine's cumulative CPU times now, or None where /proc/stat is not there."""
    try:
        first = source.read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if first[:1] != ["cpu"] or len(first) < 9:
        return None
    # user nice system idle iowait irq softirq steal (guest time is already inside user).
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    return CpuTimes(user + nice + system + idle + iowait + irq + softirq + steal, idle + iowait, steal)


def shares(start: CpuTimes | None, end: CpuTimes | None) -> dict[str, float] | None:
    """Busy and stolen time between two readings, in % of all CPUs' time (None if unknown)."""
    if start is None or end is None or end.total <= start.total:
        return None
    elapsed = end.total - start.total
    return {
        "busy_pct": 100 * (elapsed - (end.idle - start.idle)) / elapsed,
        "steal_pct": 100 * (end.steal - start.steal) / elapsed,
    }


def describe(cpu: dict[str, float] | None) -> str:
    """One sentence for the report."""
    if cpu is None:
        return "CPU shares not measured (no /proc/stat, or it ran for less than a clock tick)."
    return (
        f"While it ran, the CPUs were {cpu['busy_pct']:.0f} % busy, "
        f"{cpu['steal_pct']:.0f} % of their time stolen by the hypervisor."
    )
