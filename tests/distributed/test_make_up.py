"""`make up` / `make down`: the whole distributed topology as local processes, then nothing left."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

from tests.services import free_port
from tests.support import ROOT


def _script(name: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ROOT / "infra" / "stack" / name)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def _ours(run_dir: Path) -> list[str]:
    """Command lines of live processes that belong to this run directory's stack."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if str(run_dir) in cmdline or str(run_dir).encode() in environ:
            found.append(cmdline)
    return found


def test_make_up_runs_the_topology_the_demo_passes_and_make_down_stops_everything() -> None:
    # Under the repository, not /tmp: PostgreSQL's unprivileged user must be able to reach it.
    run_dir = ROOT / "var" / f"up-test-{secrets.token_hex(4)}"
    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("CONSENTRY_PG_", "CONSENTRY_KAFKA_"))
    } | {"CONSENTRY_RUN_DIR": str(run_dir), "PORT": str(port)}
    try:
        up = _script("up.sh", env)
        assert up.returncode == 0, up.stdout + up.stderr
        demo = subprocess.run(
            [sys.executable, "-m", "consentry.cli", "demo", "--url", f"http://127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            check=False,
            timeout=180,
        )
        assert demo.returncode == 0, demo.stdout + demo.stderr
        workers = {p.name for p in (run_dir / "stack" / "data" / "faust").iterdir()}
        assert workers == {"processors", "shredder", "intake"}, "faust state outside the run directory"
    finally:
        down = _script("down.sh", env)
    assert down.returncode == 0, down.stdout + down.stderr
    assert _ours(run_dir) == []
    shutil.rmtree(run_dir)
