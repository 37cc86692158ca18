"""A real embedded Consentry process (uvicorn on a free loopback port, SQLite files) per test module."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import EXAMPLE_POLICY


@dataclass
class Server:
    base: str
    data_dir: Path
    process: subprocess.Popen[bytes]

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("data")
    port = _free_port()
    log = (data_dir.parent / "server.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "consentry.cli",
            "run",
            "--data-dir",
            str(data_dir),
            "--policy",
            str(EXAMPLE_POLICY),
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=os.environ.copy(),
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        process.kill()
        pytest.fail("the embedded server did not answer /healthz within 30 s")
    yield Server(base, data_dir, process)
    process.terminate()
    process.wait(timeout=10)
    log.close()
