"""Crash convergence of the embedded platform: `consentry run` SIGKILLed at random points of a busy run.

A client keeps sending intake batches, profile reads and DPO erasures (tests/crash.py) while the
server process is SIGKILLed at random moments and started again on the same data directory and port.
Once the last kill is behind, the log must hold every accepted record exactly once and nothing a
refused record carried, every erasure and withdrawal certified exactly once; the hash chains must
verify, and the read models must equal a replay of the whole log into a copy of the data directory.
`make test` runs a few kills, `make soak` twenty-five.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from consentry.adapters.sqlite_views import SQLiteViewStore
from tests.crash import DPO, Killer, Traffic, drive
from tests.e2e.conftest import Server, start_server
from tests.soak import report
from tests.support import EXAMPLE_POLICY, codec, sqlite_ledger
from tests.workload import Workload, check_ledger, decode_log

QUICK_KILLS = 3
SOAK_KILLS = 25


def _views(data_dir: Path) -> dict[str, list[tuple[object, ...]]]:
    store = SQLiteViewStore(data_dir / "views.db")
    try:
        return store.dump()
    finally:
        store.close()


def _settled(server: Server, timeout: float = 30) -> None:
    """Waits until the views have applied the whole log (the access log follows a little later)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = httpx.get(f"{server.base}/healthz", timeout=5).json()
        if health["views_position"] == health["log_position"]:
            return
        time.sleep(0.1)
    raise AssertionError("the views did not catch up with the log")


def crash_run(tmp_path: Path, kills: int, seed: int) -> dict[str, object]:
    """Drives the workload through `kills` SIGKILLs of the server; asserts convergence."""
    data_dir = tmp_path / "data"
    current = [start_server(data_dir)]
    port = int(current[0].base.rsplit(":", 1)[1])

    def kill_and_restart() -> None:
        server = current[0]
        server.process.kill()
        server.process.wait(timeout=30)
        server.log.close()
        current[0] = start_server(data_dir, port=port)

    traffic = Traffic(current[0].base, Workload(seed))
    plan = [("consentry run", kill_and_restart)] * kills
    killer = Killer(plan, seed, pause=(0.2, 1.0), aim=traffic.busy)
    try:
        drive(traffic.step, killer)
        _settled(current[0])
        verified = httpx.get(
            f"{current[0].base}/v1/audit/verify", headers={"Authorization": f"Bearer {DPO}"}
        ).json()
        assert verified["ok"] is True, verified["breaks"]
    finally:
        traffic.close()
        current[0].stop()

    ledger = sqlite_ledger(data_dir)
    try:
        check_ledger(traffic.workload, decode_log(codec(), ledger.notifications()))
    finally:
        ledger.keystore.close()
    live = _views(data_dir)
    replayed = tmp_path / "replayed"
    shutil.copytree(data_dir, replayed)
    command = ["replay", "--data-dir", str(replayed), "--policy", str(EXAMPLE_POLICY)]
    done = subprocess.run(
        [sys.executable, "-m", "consentry.cli", *command],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert _views(replayed) == live, "the live read models differ from a clean replay"
    return {
        "kills": len(killer.done),
        "records": len(traffic.workload.sent),
        **traffic.workload.counts(),
        "profile_reads": traffic.reads,
        "requests_cut_off": traffic.cut_off,
        "retried_requests": traffic.retries,
        "events": verified["events"],
    }


def test_sigkilled_embedded_server_loses_nothing_duplicates_nothing_and_converges(
    tmp_path: Path,
) -> None:
    numbers = crash_run(tmp_path, QUICK_KILLS, seed=6)
    report("embedded crash convergence", **numbers)


@pytest.mark.soak
@pytest.mark.parametrize("seed", [61, 62])
def test_soak_embedded_server_survives_many_kills(tmp_path: Path, seed: int) -> None:
    numbers = crash_run(tmp_path, SOAK_KILLS, seed)
    report("embedded crash convergence (soak)", seed=seed, **numbers)
