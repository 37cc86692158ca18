"""The distributed topology as real processes, on the Kafka and PostgreSQL that infra/ started.

`make bench` runs the suite under infra/with-services.sh, which starts a fresh single-node Kafka
(KRaft) and a PostgreSQL cluster with Consentry's roles and exports where they are
(CONSENTRY_KAFKA_BOOTSTRAP, CONSENTRY_PG_DSN_<ROLE>). A missing variable fails the benchmark: the
distributed figures are never silently skipped. Each service connects as its own role, as in
`make up`: API (ledger + query), relay (processors), processors worker, shredder worker.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench.figures import BenchError
from bench.server import Service, free_port, running, start, wait_ready
from bench.workload import POLICY_PATH
from consentry.cluster import migrate
from consentry.core.keys import LocalKeyFileProvider

ROLES: Final = ("owner", "ledger", "processors", "query", "shredder")
PARTITIONS: Final = 3


@dataclass(frozen=True, slots=True)
class Services:
    """Where the broker and the database are, one DSN per PostgreSQL role."""

    bootstrap: str
    dsns: dict[str, str]

    @classmethod
    def from_environment(cls) -> Services:
        names = ["CONSENTRY_KAFKA_BOOTSTRAP", *(f"CONSENTRY_PG_DSN_{r.upper()}" for r in ROLES)]
        missing = [n for n in names if not os.environ.get(n)]
        if missing:
            raise BenchError(
                f"{', '.join(missing)} not set: run `make bench` (infra/with-services.sh starts "
                "Kafka and PostgreSQL), or leave out the distributed benchmark with --only"
            )
        return cls(
            os.environ["CONSENTRY_KAFKA_BOOTSTRAP"],
            {r: os.environ[f"CONSENTRY_PG_DSN_{r.upper()}"] for r in ROLES},
        )


@dataclass(frozen=True, slots=True)
class Stack:
    """The running topology: the API's base URL and the services it runs on."""

    base: str
    services: Services


@contextmanager
def distributed_stack(workdir: Path) -> Iterator[Stack]:
    """Migrates, starts API, relay, processors and shredder, and stops them afterwards."""
    services = Services.from_environment()
    master_key = base64.b64encode(os.urandom(32)).decode()
    migrate(services.dsns["owner"], LocalKeyFileProvider.from_master_key(master_key))
    common = {
        "CONSENTRY_MASTER_KEY": master_key,
        "CONSENTRY_POLICY": str(POLICY_PATH),
        "CONSENTRY_KAFKA_BOOTSTRAP": services.bootstrap,
        "CONSENTRY_PARTITIONS": str(PARTITIONS),
    }
    dsn = services.dsns
    port = free_port()
    started: list[Service] = []
    # Stopped in reverse: the workers first (a faust worker must stop while the broker is up).
    with running(started):
        api_env = common | {"CONSENTRY_PG_DSN": dsn["ledger"], "CONSENTRY_PG_VIEWS_DSN": dsn["query"]}
        started.append(start("api", ["serve", "--port", str(port)], workdir, api_env))
        started.append(
            start("relay", ["relay"], workdir, common | {"CONSENTRY_PG_DSN": dsn["processors"]})
        )
        processors_env = common | {"CONSENTRY_PG_VIEWS_DSN": dsn["processors"]}
        started.append(start("processors", ["worker", "processors"], workdir, processors_env))
        shredder_env = common | {"CONSENTRY_PG_DSN": dsn["shredder"]}
        started.append(start("shredder", ["worker", "shredder"], workdir, shredder_env))
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, started)
        yield Stack(base, services)
