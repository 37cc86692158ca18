"""Benchmark 2, embedded: erasure latency over real HTTP against `consentry run`.

For each sampled subject (support consent and data, among background subjects): the clock starts
just before the DPO's POST /v1/subjects/{id}/erasure is sent, and stops for
(a) keys destroyed: no row of the subject left in keystore.db's data_keys,
(b) read models purged: views.db's erasure register says `erased` and no profile value is left,
(c) 410: the first GET of the profile after the POST answered that says 410.
(a) and (b) are observed by polling the server's SQLite files read-only from a thread of the
benchmark process every millisecond while the POST is in flight (in embedded mode the POST answers
only once the erasure is done). `time_erasure` is shared with the distributed benchmark.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing, contextmanager
from functools import partial
from pathlib import Path
from typing import Final

import httpx

from bench.context import RunContext
from bench.figures import BenchError, BenchResult, Target, latency_figures
from bench.pipeline import say
from bench.server import client, embedded_server, send, subjects_of
from bench.workload import DPO_TOKEN, READ_PURPOSE, SUPPORT_TOKEN, Workload

NAME: Final = "erasure"
KEYS: Final = Target("<=", 50.0)
PURGED: Final = Target("<=", 250.0)
TIMEOUT: Final = 30.0
FILE_POLL: Final = 0.001
HTTP_POLL: Final = 0.01
STAGES: Final = ("keys_destroyed", "views_purged", "gone_410", "response")
METHOD: Final = (
    "Real uvicorn server (`consentry run`, SQLite) over loopback HTTP; one erasure at a time. t0 = "
    "just before the POST is sent. keys_destroyed and views_purged: first time a read-only poll "
    "(every 1 ms, from a thread of the benchmark process) of keystore.db / views.db sees no "
    "data_keys row of the subject / an `erased` register entry and no profile value. gone_410: "
    "first GET of the profile after the POST's answer that returns 410. response: the POST's own "
    "round trip (the embedded POST answers once shredded, certified and projected)."
)

Probe = Callable[[], bool]


def time_erasure(
    post: Callable[[], httpx.Response], probes: Mapping[str, Probe], gone: Probe
) -> dict[str, float]:
    """Seconds from the POST to each probe's first success, to its answer and to the first 410."""
    if any(probe() for probe in probes.values()):
        raise BenchError("an erasure probe was true before the erasure was requested")
    seen: dict[str, float] = {}
    stop = threading.Event()
    started = time.perf_counter()

    def watch() -> None:
        waiting = dict(probes)
        while waiting and not stop.is_set():
            for name, probe in list(waiting.items()):
                if probe():
                    seen[name] = time.perf_counter() - started
                    del waiting[name]
            time.sleep(FILE_POLL)

    watcher = threading.Thread(target=watch, name="erasure-probes", daemon=True)
    watcher.start()
    try:
        answer = post()
        seen["response"] = time.perf_counter() - started
        if answer.status_code != 202:
            raise BenchError(f"erasure answered {answer.status_code}: {answer.text[:300]}")
        while not gone():
            if time.perf_counter() - started > TIMEOUT:
                raise BenchError("the profile was still readable long after the erasure")
            time.sleep(HTTP_POLL)
        seen["gone_410"] = time.perf_counter() - started
        watcher.join(TIMEOUT)
    finally:
        stop.set()
    missing = set(probes) - set(seen)
    if missing:
        raise BenchError(f"erasure not observed within {TIMEOUT:.0f} s: {sorted(missing)}")
    return seen


def erasure_figures(
    result: BenchResult, samples: list[dict[str, float]], targets: Mapping[str, Target], prefix: str = ""
) -> None:
    """p50/p99/max per stage of the erasure, with each stage's target on its p99."""
    for stage in STAGES:
        result.add(*latency_figures(prefix + stage, [s[stage] for s in samples], targets.get(stage)))
    result.details[prefix + "samples_ms"] = [{k: v * 1000 for k, v in s.items()} for s in samples]


@contextmanager
def sqlite_probes(data_dir: Path) -> Iterator[Callable[[uuid.UUID], dict[str, Probe]]]:
    """Read-only probes of the embedded server's keystore.db and views.db for one subject."""

    def connect(name: str) -> sqlite3.Connection:
        uri = f"file:{data_dir / name}?mode=ro"
        return sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=30)

    with closing(connect("keystore.db")) as keys, closing(connect("views.db")) as views:

        def probes(subject: uuid.UUID) -> dict[str, Probe]:
            key = (subject.bytes,)

            def keys_destroyed() -> bool:
                return keys.execute("SELECT 1 FROM data_keys WHERE subject_id=?", key).fetchone() is None

            def views_purged() -> bool:
                status = views.execute("SELECT status FROM erasures WHERE subject_id=?", key).fetchone()
                left = views.execute("SELECT 1 FROM profile_values WHERE subject_id=?", key).fetchone()
                return status is not None and status[0] == "erased" and left is None

            return {"keys_destroyed": keys_destroyed, "views_purged": views_purged}

        yield probes


def erase_all(
    base: str, subjects: list[str], probes_of: Callable[[uuid.UUID], dict[str, Probe]]
) -> list[dict[str, float]]:
    """Erases the subjects one after the other; one timing sample each."""
    samples = []
    with client(base, DPO_TOKEN) as dpo, client(base, SUPPORT_TOKEN) as support:
        for subject in subjects:
            post = partial(dpo.post, f"/v1/subjects/{subject}/erasure")
            gone = partial(answers_410, support, subject)
            samples.append(time_erasure(post, probes_of(uuid.UUID(subject)), gone))
    return samples


def answers_410(support: httpx.Client, subject: str) -> bool:
    """Whether a support agent's profile read of the subject is answered 410 Gone."""
    answer = support.get(f"/v1/subjects/{subject}/profile", params={"purpose": READ_PURPOSE})
    return answer.status_code == 410


def run(ctx: RunContext) -> BenchResult:
    """Erasure latency of the embedded platform."""
    opts = ctx.options
    result = BenchResult(NAME, "Erasure latency, embedded, over HTTP", METHOD)
    workdir = ctx.scratch("erasure")
    with embedded_server(workdir) as base:
        workload = Workload(events=0, subjects=0)
        say(f"erasure: {opts.background_subjects + opts.erasures:,} subjects, {opts.erasures} erasures")
        subjects = subjects_of(send(base, workload.profiles(opts.background_subjects + opts.erasures)))
        with sqlite_probes(workdir / "data") as probes_of:
            samples = erase_all(base, subjects[-opts.erasures :], probes_of)
    erasure_figures(
        result, samples, {"keys_destroyed": KEYS, "views_purged": PURGED, "gone_410": PURGED}
    )
    return result
