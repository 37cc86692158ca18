"""The distributed stack as real processes: API, relay and faust workers on Kafka and PostgreSQL."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from consentry.cluster import migrate
from consentry.core.keys import LocalKeyFileProvider
from tests.leaks import REGISTER, client
from tests.services import free_port, kafka_bootstrap, pg_dsn
from tests.support import EXAMPLE_POLICY, master_key


@dataclass
class Stack:
    """The running services of one test module."""

    base: str
    logs: Path
    env: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    commands: dict[str, tuple[tuple[str, ...], dict[str, str]]] = field(default_factory=dict)

    def client(self, token: str) -> httpx.Client:
        return client(self.base, token, timeout=30)

    def start(self, name: str, *args: str, **env: str) -> None:
        """Starts a service: `consentry ARGS...` with the stack's environment plus `env`."""
        self.launch(name, ("-m", "consentry.cli"), args, env)
        self.commands[name] = (args, env)

    def launch(
        self, name: str, launcher: tuple[str, ...], args: tuple[str, ...], env: dict[str, str]
    ) -> None:
        """Starts `python LAUNCHER... ARGS...`: the command under a test harness, say."""
        log = (self.logs / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            [sys.executable, *launcher, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env | env,
        )

    def restart(self, name: str) -> None:
        """Starts the service again as the `consentry` command last started it."""
        args, env = self.commands[name]
        self.start(name, *args, **env)

    def stop(self, name: str) -> int:
        """SIGTERM and wait: every service must stop cleanly while the broker is up."""
        process = self.processes.pop(name)
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail(f"{name} ignored SIGTERM for 30 s")

    def kill(self, name: str) -> None:
        """SIGKILL: a crash at whatever point the process has reached."""
        process = self.processes.pop(name)
        process.kill()
        process.wait(timeout=30)

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "consentry.cli", *args],
            env=self.env | env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("*.log")))


def processors_env() -> dict[str, str]:
    return {"CONSENTRY_PG_VIEWS_DSN": pg_dsn("processors")}


def launch(logs: Path, *services: str, settings: dict[str, str] | None = None) -> Stack:
    """Starts the API plus the named services; returns once it answers.

    Without `settings` the stack gets a fresh master key (and the database is migrated for it);
    `settings` (a key file, a policy...) override the defaults, and then the caller has migrated.
    """
    if settings is None:
        key = master_key()
        REGISTER.secret(f"master key of the stack in {logs}", base64.b64decode(key))
        migrate(pg_dsn("owner"), LocalKeyFileProvider.from_master_key(key))
        settings = {"CONSENTRY_MASTER_KEY": key}
    port = free_port()
    env = (
        os.environ.copy()
        | {
            "CONSENTRY_POLICY": str(EXAMPLE_POLICY),
            "CONSENTRY_KAFKA_BOOTSTRAP": kafka_bootstrap(),
            "CONSENTRY_PARTITIONS": "3",
            # The workers' faust state, under the test's own directory rather than the cwd.
            "CONSENTRY_DATA_DIR": str(logs / "data"),
        }
        | settings
    )
    stack = Stack(f"http://127.0.0.1:{port}", logs, env)
    stack.start(
        "api",
        "serve",
        "--port",
        str(port),
        CONSENTRY_PG_DSN=pg_dsn("ledger"),
        CONSENTRY_PG_VIEWS_DSN=pg_dsn("query"),
    )
    for name in services:
        start_service(stack, name)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{stack.base}/healthz", timeout=1).status_code == 200:
                return stack
        except httpx.HTTPError:
            time.sleep(0.2)
    shut_down(stack)
    pytest.fail("the distributed API did not answer within 60 s:\n" + stack.log_text()[-3000:])


def start_service(stack: Stack, name: str) -> None:
    """Starts one service of the topology with its own PostgreSQL role."""
    if name == "relay":
        stack.start("relay", "relay", CONSENTRY_PG_DSN=pg_dsn("processors"))
    elif name == "processors":
        stack.start("processors", "worker", "processors", **processors_env())
    elif name == "shredder":
        stack.start("shredder", "worker", "shredder", CONSENTRY_PG_DSN=pg_dsn("shredder"))
    elif name == "intake":
        stack.start("intake", "worker", "intake", CONSENTRY_PG_DSN=pg_dsn("ledger"))
    else:
        raise ValueError(name)


def shut_down(stack: Stack) -> None:
    """Workers first (a faust worker must stop while the broker is up), then the relay and the API."""
    order = ("intake", "processors", "shredder", "relay", "api")
    for name in sorted(stack.processes, key=lambda n: order.index(n) if n in order else -1):
        stack.stop(name)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = launch(tmp_path_factory.mktemp("stack"), "relay", "processors", "shredder")
    yield running
    shut_down(running)
