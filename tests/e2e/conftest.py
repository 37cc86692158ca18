"""A real embedded Consentry process (uvicorn on a free loopback port, SQLite files) per test module.

`start_server(data_dir)` starts `python -m consentry.cli run` on its own data directory and waits for
`/healthz`; `Server.stop()` ends it with SIGTERM; `running_server` does both around a with block. A
test can stop a server, change its files and start another one on the same directory. The process's
output goes to a log file next to (never inside) the data directory, so file scans of the data
directory see only what the platform stores.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import pytest

from tests.leaks import client, register_key_file
from tests.support import EXAMPLE_POLICY

STARTUP_SECONDS = 30
STOP_SECONDS = 10


@dataclass
class Server:
    base: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log: IO[bytes]

    def client(self, token: str) -> httpx.Client:
        return client(self.base, token, timeout=10)

    def stop(self) -> int:
        """Ends the process with SIGTERM (SIGKILL if it does not exit); returns its exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_SECONDS)
        self.log.close()
        return self.process.returncode


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def log_path(data_dir: Path) -> Path:
    """Where the server on data_dir writes its output: a sibling file of the data directory."""
    return data_dir.with_name(f"{data_dir.name}.server.log")


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def start_server(
    data_dir: Path,
    policy: Path = EXAMPLE_POLICY,
    *,
    port: int | None = None,
    launcher: Sequence[str] = ("-m", "consentry.cli"),
) -> Server:
    """Starts the embedded platform on data_dir and returns once it answers /healthz.

    `port` keeps a restarted server where its clients expect it; `launcher` is what Python runs
    instead of the `consentry` command (a test harness that passes the rest of the arguments on).
    """
    port = port or _free_port()
    log = log_path(data_dir).open("ab")
    process = subprocess.Popen(
        [
            sys.executable,
            *launcher,
            "run",
            "--data-dir",
            str(data_dir),
            "--policy",
            str(policy),
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=os.environ.copy(),
    )
    server = Server(f"http://127.0.0.1:{port}", data_dir, process, log)
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline and process.poll() is None:
        if _answers(server.base):
            register_key_file(data_dir / "keys.json")
            return server
        time.sleep(0.1)
    server.stop()
    output = log_path(data_dir).read_text(errors="replace")[-2000:]
    pytest.fail(
        f"the embedded server did not answer /healthz within {STARTUP_SECONDS} s "
        f"(exit code {process.returncode}); its output:\n{output}"
    )


@contextmanager
def running_server(data_dir: Path, policy: Path = EXAMPLE_POLICY) -> Iterator[Server]:
    """A server on data_dir for the duration of a with block."""
    started = start_server(data_dir, policy)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("data")) as running:
        yield running
