"""`consentry demo` against a running instance, and the replay endpoint it relies on."""

from __future__ import annotations

import subprocess
import sys

from tests.e2e.conftest import Server


def _demo(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consentry.cli", "demo", "--url", url],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_the_demo_plays_its_whole_scenario_twice_against_one_instance(server: Server) -> None:
    for _ in range(2):
        played = _demo(server.base)
        assert played.returncode == 0, played.stdout + played.stderr
        assert "Demo complete" in played.stdout
        assert "VALID:" in played.stdout
        assert "410" in played.stdout and "403" in played.stdout


def test_the_demo_fails_loudly_when_no_instance_answers() -> None:
    played = _demo("http://127.0.0.1:9")
    assert played.returncode == 2
    assert "cannot reach" in played.stderr


def test_replay_needs_the_audit_permission_and_rebuilds_to_the_log_position(server: Server) -> None:
    with server.client("demo-support-token") as support:
        assert support.post("/v1/audit/replay").status_code == 403
    with server.client("demo-dpo-token") as dpo:
        replayed = dpo.post("/v1/audit/replay").json()
        health = dpo.get("/healthz").json()
    assert replayed["events"] == health["log_position"] == health["views_position"]
