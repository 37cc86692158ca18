"""What every benchmark of one run shares: the options, the temporary root and the logs built so far."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from bench.baselines import Variant
from bench.pipeline import IngestStats, LogStore

FULL_SIZES: Final = (10_000, 100_000, 1_000_000)
QUICK_SIZES: Final = (500, 2_000)


@dataclass(frozen=True, slots=True)
class Options:
    """How much each benchmark does; `quick` shrinks everything for the smoke test."""

    sizes: tuple[int, ...] = FULL_SIZES
    quick: bool = False
    background_subjects: int = 2_000
    erasures: int = 200
    query_subjects: int = 2_000
    query_seconds: float = 10.0
    clients: tuple[int, ...] = (1, 8, 32)
    distributed_events: int = 10_000
    distributed_erasures: int = 50
    distributed_rounds: int = 2
    replay_runs: int = 3
    # Ingest runs of each size up to `ingest_repeat_up_to` events; the run with the median sealing
    # overhead is reported. Larger sizes run once (one 1M ingest of four lanes takes ~10 minutes).
    ingest_runs: int = 3
    ingest_repeat_up_to: int = 100_000

    @classmethod
    def make(cls, *, quick: bool, sizes: tuple[int, ...] | None) -> Options:
        """The full run's options, or the quick ones; explicit sizes win either way."""
        if not quick:
            return cls(sizes=sizes or FULL_SIZES)
        return cls(
            sizes=sizes or QUICK_SIZES,
            quick=True,
            background_subjects=50,
            erasures=5,
            query_subjects=30,
            query_seconds=1.0,
            distributed_events=1_000,
            distributed_erasures=3,
            distributed_rounds=1,
        )


@dataclass(frozen=True, slots=True)
class ReplayStats:
    """One rebuild of every read model from a log, measured in a child process."""

    size: int
    events: int
    seconds: float
    rss_open_kib: int
    rss_peak_kib: int
    views_match: bool
    # The largest peak RSS of the rebuild's helper processes (0: none ran). An upper bound: Linux
    # starts a spawned child's ru_maxrss at its parent's size when it forked.
    helpers_rss_peak_kib: int = 0
    # events/s of every rebuild of this log, in the order they ran (this one's among them).
    runs: tuple[float, ...] = ()

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds


@dataclass
class RunContext:
    """One run of the suite: options, a temporary root deleted at the end, and shared measurements."""

    options: Options
    root: Path
    logs: LogStore = field(init=False)
    ingests: dict[int, dict[Variant, IngestStats]] = field(default_factory=dict)
    # Each size's sealing overheads (%), one per ingest run, in the order they ran.
    ingest_overheads: dict[int, list[float]] = field(default_factory=dict)
    replays: dict[int, ReplayStats] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.logs = LogStore(self.root)

    def scratch(self, name: str) -> Path:
        """A fresh directory under the temporary root."""
        path = self.root / name
        path.mkdir(parents=True, exist_ok=False)
        return path
