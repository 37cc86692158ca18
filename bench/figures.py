"""Figures, targets and the small statistics the benchmarks share."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Op = Literal[">=", "<="]


class BenchError(Exception):
    """A benchmark could not run as designed (a missing service, a refused record, a dead process)."""


@dataclass(frozen=True, slots=True)
class Target:
    """A threshold from issue 5; `goal` is the better value the issue hopes for, if any."""

    op: Op
    value: float
    goal: float | None = None

    def met(self, measured: float, threshold: float | None = None) -> bool:
        limit = self.value if threshold is None else threshold
        return measured >= limit if self.op == ">=" else measured <= limit

    def label(self) -> str:
        text = f"{self.op} {_number(self.value)}"
        return text if self.goal is None else f"{text} (goal {_number(self.goal)})"


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured number, with its unit, the size it was measured at and its target if any."""

    name: str
    value: float
    unit: str
    size: int | None = None
    target: Target | None = None
    note: str = ""

    @property
    def status(self) -> str:
        if self.target is None:
            return "info"
        return "pass" if self.target.met(self.value) else "miss"

    def to_json(self, benchmark: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "benchmark": benchmark,
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "size": self.size,
            "status": self.status,
            "note": self.note,
        }
        if self.target is not None:
            body["target"] = {"op": self.target.op, "value": self.target.value, "goal": self.target.goal}
            if self.target.goal is not None:
                body["goal_met"] = self.target.met(self.value, self.target.goal)
        return body


@dataclass
class BenchResult:
    """What one benchmark module measured: figures for the table, details for the JSON."""

    name: str
    title: str
    method: str
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def add(self, *figures: Figure) -> None:
        self.figures.extend(figures)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linearly interpolated between the closest ranks."""
    if not values:
        raise BenchError("no samples to take a percentile of")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_figures(
    prefix: str, seconds: Sequence[float], target: Target | None = None, note: str = ""
) -> list[Figure]:
    """p50, p99 and max of latencies in milliseconds; the target applies to p99."""
    ms = [s * 1000 for s in seconds]
    sampled = f"{len(ms)} samples" + (f"; {note}" if note else "")
    return [
        Figure(f"{prefix}.p50", percentile(ms, 50), "ms", note=sampled),
        Figure(f"{prefix}.p99", percentile(ms, 99), "ms", target=target, note=sampled),
        Figure(f"{prefix}.max", max(ms), "ms", note=sampled),
    ]


def rate(count: int, seconds: float) -> float:
    """Events (or requests) per second; a zero duration is a harness bug, not infinity."""
    if seconds <= 0:
        raise BenchError("a measured duration was not positive")
    return count / seconds


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:g}"
