"""The embedded platform as the benchmarks drive it: one variant per mapper, the ingest loop, the logs.

`open_variant` opens the real embedded composition (`Platform.open`: SQLite files, keystore, views,
EmbeddedRunner, Shredder) and, for a baseline, swaps only the ledger's mapper (plus what reads the
log through it). `ingest` runs the full write path on a workload, batch after batch, each variant
in a process of its own: JSON text decoded and parsed by `IntakeParser.from_json`,
`Ledger.submit`, then `Platform.after_write()` (the shredder follows the log, the views catch up).
`LogStore` builds each size's sealed log once; the ingest benchmark measures that build and the
replay benchmark reuses it.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, cast

from bench.baselines import Variant, stored_as, use_baseline
from bench.figures import BenchError
from bench.workload import BENCH_DIR, POLICY_PATH, PRODUCER, Workload, subjects_for
from consentry.core.errors import Rejected
from consentry.core.intake import IntakeParser, IntakeRecord
from consentry.core.runtime import tune_gc
from consentry.core.settings import load_settings
from consentry.ledger.subject import Outcome
from consentry.platform import Platform
from consentry.processors.runner import EmbeddedRunner

PROGRESS_SECONDS: Final = 10.0


def say(message: str) -> None:
    """Progress goes to stderr, so stdout stays free for a child's JSON answer."""
    print(message, file=sys.stderr, flush=True)


def open_variant(data_dir: Path, variant: Variant = "sealed") -> Platform:
    """The embedded platform on data_dir; a baseline differs from it only in the ledger's mapper.

    The baseline's mapper goes into the platform `Platform.open` composed, so a baseline keeps
    every other part of the write path as it is today. The whole-state cipher also needs the
    views runner to read the log through it: that wraps the runner's log reader (a private
    attribute; an AttributeError here means the runner changed and this hook must follow).
    """
    platform = Platform.open(load_settings(data_dir=data_dir, policy=POLICY_PATH))
    if variant == "sealed":
        return platform
    mapper = use_baseline(platform.ledger, variant)
    runner = platform.runner
    if not isinstance(runner, EmbeddedRunner):
        raise BenchError("the embedded platform no longer runs an EmbeddedRunner")
    runner._log = mapper.log_reader(runner._log)
    return platform


def check_variant(data_dir: Path, variant: Variant) -> None:
    """Fails unless the stored bytes are what the variant claims (so a baseline stays one)."""
    with closing(sqlite3.connect(data_dir / "keystore.db")) as keystore:
        keys = int(keystore.execute("SELECT count(*) FROM data_keys").fetchone()[0])
    with closing(sqlite3.connect(data_dir / "events.db")) as events:
        first = events.execute("SELECT state FROM stored_events ORDER BY rowid LIMIT 1").fetchone()
    if not stored_as(variant, keys, None if first is None else bytes(first[0])):
        raise BenchError(f"the {variant} run stored bytes of another kind ({keys} data keys)")


@dataclass
class IngestStats:
    """What one ingest run did and how long each stage of the write path took."""

    variant: str
    events: int
    records: int
    seconds: float
    stages: dict[str, float] = field(default_factory=dict)
    bytes_on_disk: int = 0
    # CPU time of the lane's process over the same steps: unlike `seconds`, no I/O waits and no
    # time the hypervisor stole.
    cpu_seconds: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds


class Lane:
    """One variant's platform, fed the workload's batches one at a time; only its own work is timed."""

    def __init__(self, data_dir: Path, variant: Variant) -> None:
        self.data_dir, self.variant = data_dir, variant
        self.platform = open_variant(data_dir, variant)
        self.parser = IntakeParser(self.platform.ledger.codec, self.platform.ledger.clock.now)
        self.first = self.position()
        self.stages = {"parse": 0.0, "submit": 0.0, "after_write": 0.0}
        self.refused: Counter[str] = Counter()
        self.records = 0
        self.cpu = 0.0

    def position(self) -> int:
        return self.platform.ledger.recorder.max_notification_id() or 0

    def step(self, text: str) -> list[Outcome]:
        """One batch through the full write path: decode, parse, submit, after_write."""
        cpu_started = time.process_time()
        started = time.perf_counter()
        parsed = [_parse(self.parser, item) for item in json.loads(text)["events"]]
        parsed_at = time.perf_counter()
        outcomes = self.platform.ledger.submit(PRODUCER, parsed)
        submitted_at = time.perf_counter()
        self.platform.after_write()
        finished = time.perf_counter()
        self.cpu += time.process_time() - cpu_started
        self.stages["parse"] += parsed_at - started
        self.stages["submit"] += submitted_at - parsed_at
        self.stages["after_write"] += finished - submitted_at
        self.records += len(parsed)
        self.refused.update(str(o.reason) for o in outcomes if o.status != "accepted")
        return outcomes

    def busy(self) -> float:
        return sum(self.stages.values())

    def finish(self) -> IngestStats:
        """Closes the platform, checks what it stored, and answers its figures."""
        events = self.position() - self.first
        self.platform.close()
        if self.refused:
            refused = dict(self.refused)
            raise BenchError(f"{self.variant}: the ledger refused workload records: {refused}")
        check_variant(self.data_dir, self.variant)
        stats = IngestStats(self.variant, events, self.records, self.busy(), dict(self.stages))
        stats.bytes_on_disk = sum(p.stat().st_size for p in self.data_dir.rglob("*") if p.is_file())
        stats.cpu_seconds = self.cpu
        return stats


def _parse(parser: IntakeParser, item: object) -> IntakeRecord | Rejected:
    try:
        return parser.from_json(item)
    except Rejected as exc:
        return exc


class LaneProcess:
    """A `Lane` in a child process of its own (`python -m bench.pipeline DATA_DIR VARIANT`).

    In one process the variants would share one heap, one garbage collector and the CPU caches,
    and each would be charged for some of the others' work (at 100k events the sealing overhead
    was 29 % with the three in one process and 24 % apart; which shared cost it was is not pinned
    down). A deployment runs one platform per process; so does each lane. The child reads one
    batch (JSON text) per line and answers one JSON line per batch: its events so far and its busy
    seconds. An empty line ends it: it closes its platform, checks what it stored and answers its
    IngestStats.
    """

    def __init__(self, data_dir: Path, variant: Variant) -> None:
        self.variant = variant
        self.events, self.seconds = 0, 0.0
        self._child = subprocess.Popen(
            [sys.executable, "-m", "bench.pipeline", str(data_dir), variant],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=BENCH_DIR.parent,
            text=True,
        )

    def step(self, text: str) -> None:
        """One batch through the child's full write path; returns once it is done."""
        answer = self._ask(text)
        self.events, self.seconds = answer["events"], answer["seconds"]

    def finish(self) -> IngestStats:
        stats = IngestStats(**self._ask(""))
        self._child.wait(timeout=60)
        return stats

    def kill(self) -> None:
        if self._child.poll() is None:
            self._child.kill()
            self._child.wait()

    def _ask(self, line: str) -> dict[str, Any]:
        assert self._child.stdin is not None and self._child.stdout is not None
        try:
            self._child.stdin.write(line + "\n")
            self._child.stdin.flush()
        except BrokenPipeError:
            pass  # it died: its answer below is empty
        answer = self._child.stdout.readline()
        if not answer:
            raise BenchError(f"the {self.variant} lane exited ({self._child.wait()}); see its stderr")
        found: dict[str, Any] = json.loads(answer)
        return found


def serve_lane(data_dir: Path, variant: Variant) -> None:
    """The child's side of `LaneProcess`: batches from stdin, answers on stdout."""
    tune_gc()  # set up as `consentry run` sets up its process
    lane = Lane(data_dir, variant)
    for line in sys.stdin:
        text = line.rstrip("\n")
        if not text:
            print(json.dumps(asdict(lane.finish())), flush=True)
            return
        lane.step(text)
        print(json.dumps({"events": lane.position() - lane.first, "seconds": lane.busy()}), flush=True)
    lane.platform.close()


def ingest(events: int, lanes_dirs: Mapping[Variant, Path]) -> dict[Variant, IngestStats]:
    """Ingests one workload of about `events` events with each variant, batch by batch in turn.

    Each variant runs in its own process (`LaneProcess`), one batch at a time. Interleaving the
    variants batch by batch (and rotating who goes first) spreads the noise of a shared 2-core
    machine evenly over them, so their ratios hold even when absolute rates wobble.
    """
    workload = Workload(events, subjects_for(events))
    lanes: list[LaneProcess] = []
    try:
        for variant, data_dir in lanes_dirs.items():
            lanes.append(LaneProcess(data_dir, variant))
        next_report = time.monotonic() + PROGRESS_SECONDS
        for number, batch in enumerate(workload.batches()):
            text = json.dumps({"events": batch})  # the producer's work: not timed
            for turn in range(len(lanes)):
                lanes[(number + turn) % len(lanes)].step(text)
            if time.monotonic() >= next_report:
                next_report = time.monotonic() + PROGRESS_SECONDS
                _report(events, lanes)
        return {lane.variant: lane.finish() for lane in lanes}
    finally:
        for lane in lanes:
            lane.kill()


def _report(total: int, lanes: Sequence[LaneProcess]) -> None:
    speeds = ", ".join(f"{lane.variant} {lane.events / lane.seconds:,.0f}/s" for lane in lanes)
    say(f"  ingest {total:,}: {lanes[0].events:,}/{total:,} events ({speeds})")


@dataclass(frozen=True, slots=True)
class BuiltLog:
    """A sealed log of one size on disk, with the measured ingest that built it."""

    size: int
    data_dir: Path
    stats: IngestStats


class LogStore:
    """Each size's sealed log, built once (its build is the measured sealed ingest) and then reused."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._built: dict[int, BuiltLog] = {}

    def path(self, size: int) -> Path:
        return self.root / f"log-{size}"

    def has(self, size: int) -> bool:
        return size in self._built

    def adopt(self, size: int, stats: IngestStats) -> BuiltLog:
        """Records that the sealed log of that size was built at `path(size)`."""
        self._built[size] = BuiltLog(size, self.path(size), stats)
        return self._built[size]

    def get(self, size: int) -> BuiltLog:
        """The log of that size, built through the full sealed write path if not built yet."""
        if size not in self._built:
            say(f"building the sealed log of {size:,} events")
            self.adopt(size, ingest(size, {"sealed": self.path(size)})["sealed"])
        return self._built[size]

    def discard(self, size: int) -> None:
        """Deletes a log nobody needs any more (large sizes take gigabytes)."""
        built = self._built.pop(size, None)
        if built is not None:
            shutil.rmtree(built.data_dir, ignore_errors=True)


if __name__ == "__main__":
    _, where, kind = sys.argv
    serve_lane(Path(where), cast(Variant, kind))
