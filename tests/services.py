"""Where the real Kafka broker and PostgreSQL cluster of this test run are (infra/with-services.sh).

A missing service fails the test: distributed-mode tests are never skipped for want of a service.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import sql


def _env(name: str, service: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the tests through `make test` (it starts {service})")
    return value


def pg_dsn(role: str) -> str:
    """The DSN of one of the cluster's roles: owner, ledger, processors, query, shredder."""
    return _env(f"CONSENTRY_PG_DSN_{role.upper()}", "PostgreSQL")


def pg_data_dir() -> str:
    return _env("CONSENTRY_PG_DATA_DIR", "PostgreSQL")


def kafka_bootstrap() -> str:
    return _env("CONSENTRY_KAFKA_BOOTSTRAP", "Kafka")


def kafka_data_dir() -> str:
    return _env("CONSENTRY_KAFKA_DATA_DIR", "Kafka")


def restart_kafka() -> None:
    """Restarts this run's broker on the same port and data (`infra/kafka/start.sh --restart`)."""
    _env("CONSENTRY_RUN_DIR", "Kafka")
    script = Path(__file__).resolve().parent.parent / "infra" / "kafka" / "start.sh"
    done = subprocess.run(
        ["bash", str(script), "--restart"], capture_output=True, text=True, check=False, timeout=180
    )
    if done.returncode != 0:
        pytest.fail(f"the Kafka broker did not restart:\n{done.stdout}{done.stderr}")


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def scratch_schema(prefix: str) -> Iterator[str]:
    """A fresh schema owned by the owner role, dropped afterwards."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(pg_dsn("owner"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(pg_dsn("owner"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))
