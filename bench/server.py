"""Real Consentry processes for the HTTP benchmarks: the embedded server, and helpers the stack shares.

Every process is `python -m consentry.cli ...` with its output in a log file under the run's
temporary root and its working directory there too (faust workers write their state directories
into it), so nothing of a run lands in the repository. Processes end with SIGTERM (SIGKILL after a
timeout) in the reverse order of their start.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx

from bench.figures import BenchError
from bench.pipeline import say
from bench.workload import BATCH, BENCH_DIR, POLICY_PATH, SHOP_TOKEN, Record

CONSENTRY: Final = "consentry.cli"
START_SECONDS: Final = 60.0
STOP_SECONDS: Final = 30.0


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return int(sock.getsockname()[1])


@dataclass
class Service:
    """One running Consentry process and where its output goes."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self, chars: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not end in time."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_SECONDS)


def start(
    name: str,
    args: Sequence[str],
    workdir: Path,
    env: dict[str, str] | None = None,
    module: str = CONSENTRY,
) -> Service:
    """Starts `python -m MODULE ARGS` (`consentry ARGS`) with its output in workdir/NAME.log and
    workdir as its cwd."""
    log = workdir / f"{name}.log"
    environment = os.environ | (env or {})
    # The bench's own modules (a baseline's services) load from any working directory.
    paths = [str(BENCH_DIR.parent), *filter(None, [environment.get("PYTHONPATH")])]
    environment["PYTHONPATH"] = os.pathsep.join(paths)
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=environment,
        )
    return Service(name, process, log)


def wait_ready(base: str, services: Iterable[Service]) -> None:
    """Returns once base/healthz answers 200; fails with the logs if a process died or time ran out."""
    watched = list(services)
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        dead = [s for s in watched if s.process.poll() is not None]
        if dead:
            raise BenchError(f"{dead[0].name} exited at start-up:\n{dead[0].tail()}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise BenchError(f"{base} did not answer /healthz within {START_SECONDS:.0f} s")


@contextmanager
def running(services: list[Service]) -> Iterator[list[Service]]:
    """Stops the services (last started first) however the block ends; on failure shows their logs.

    The logs live in the run's temporary directory, which goes at the end: their tails (which
    hold no personal data, by the platform's design) are printed before that.
    """
    failed = True
    try:
        yield services
        failed = False
    finally:
        for service in reversed(services):
            service.stop()
        for service in services if failed else ():
            say(f"--- last lines of {service.name}'s log ---\n{service.tail()}")


@contextmanager
def embedded_server(workdir: Path) -> Iterator[str]:
    """`consentry run` on its own data directory with the bench policy; yields its base URL."""
    port = free_port()
    data_dir = workdir / "data"
    args = ["run", "--data-dir", str(data_dir), "--policy", str(POLICY_PATH), "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    with running([start("server", args, workdir)]) as services:
        wait_ready(base, services)
        yield base


def client(base: str, token: str, timeout: float = 60.0) -> httpx.Client:
    """An HTTP client with a bearer token (keep-alive, one connection)."""
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)


def send(base: str, records: Iterable[Record], batch: int = BATCH) -> list[dict[str, Any]]:
    """POSTs intake records in batches with the producer token; every one must be accepted."""
    items = list(records)
    return send_batches(base, [items[i : i + batch] for i in range(0, len(items), batch)])


def send_batches(base: str, batches: Iterable[list[Record]]) -> list[dict[str, Any]]:
    """POSTs prepared batches one after the other; every record must be accepted."""
    results: list[dict[str, Any]] = []
    with client(base, SHOP_TOKEN) as shop:
        for batch in batches:
            answer = shop.post("/v1/events", json={"events": batch})
            if answer.status_code != 200:
                raise BenchError(f"intake answered {answer.status_code}: {answer.text[:300]}")
            results += answer.json()["results"]
    refused = [r for r in results if r["status"] != "accepted"]
    if refused:
        raise BenchError(f"{len(refused)} workload records refused, e.g. {refused[0].get('reason')}")
    return results


def subjects_of(results: Sequence[dict[str, Any]]) -> list[str]:
    """The distinct subject ids in intake results, in order of first appearance."""
    return list(dict.fromkeys(str(r["subject_id"]) for r in results))
