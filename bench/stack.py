"""The distributed topology as real processes, on a Kafka broker and a PostgreSQL cluster of its own.

`fresh_services` starts a fresh single-node Kafka (KRaft) and a fresh PostgreSQL cluster with
Consentry's roles through infra/'s own scripts (infra/<name>/start.sh and stop.sh, as
infra/with-services.sh runs them), in a run directory of the benchmark's, and stops them
afterwards. Every variant's stack gets services of its own, so none starts with another's topics,
consumer offsets, tables or caches. `distributed_stack` starts the services of the distributed
mode on them, each connecting as its own role, as in `make up`: API (ledger + query), relay
(processors), processors worker, shredder worker. A baseline's stack differs only in its API and,
for the whole-state cipher, its relay (bench/baseline_services.py).
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench.baseline_services import KEY_VARIABLE
from bench.baselines import Variant, whole_state_key
from bench.figures import BenchError
from bench.server import CONSENTRY, Service, free_port, running, start, wait_ready
from bench.workload import BENCH_DIR, POLICY_PATH
from consentry.cluster import migrate
from consentry.core.keys import LocalKeyFileProvider

ROLES: Final = ("owner", "ledger", "processors", "query", "shredder")
PARTITIONS: Final = 3
INFRA: Final = BENCH_DIR.parent / "infra"
SERVICE_NAMES: Final = ("kafka", "postgres")
INFRA_SECONDS: Final = 300.0
BASELINE_SERVICES: Final = "bench.baseline_services"


@dataclass(frozen=True, slots=True)
class Services:
    """Where the broker and the database are, one DSN per PostgreSQL role."""

    bootstrap: str
    dsns: dict[str, str]


def _infra(name: str, script: str, run_dir: Path) -> None:
    done = subprocess.run(
        ["bash", str(INFRA / name / script)],
        env=os.environ | {"CONSENTRY_RUN_DIR": str(run_dir)},
        capture_output=True,
        text=True,
        timeout=INFRA_SECONDS,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"infra/{name}/{script} failed ({done.returncode}): {done.stderr[-2000:]}")


def _exported(path: Path) -> dict[str, str]:
    """The KEY=VALUE lines a start.sh wrote."""
    lines = path.read_text().splitlines()
    return {key: value for key, _, value in (line.partition("=") for line in lines) if key}


@contextmanager
def fresh_services(run_dir: Path) -> Iterator[Services]:
    """A fresh Kafka broker and PostgreSQL cluster in run_dir; stopped and deleted afterwards."""
    exported: dict[str, str] = {}
    with ExitStack() as stops:
        # Last: the data (the plaintext baseline's is in the clear) goes once the services stopped.
        stops.callback(shutil.rmtree, run_dir, ignore_errors=True)
        for name in SERVICE_NAMES:
            stops.callback(_infra, name, "stop.sh", run_dir)
            _infra(name, "start.sh", run_dir)
            exported |= _exported(run_dir / name / "env")
        yield Services(
            exported["CONSENTRY_KAFKA_BOOTSTRAP"],
            {r: exported[f"CONSENTRY_PG_DSN_{r.upper()}"] for r in ROLES},
        )


@dataclass(frozen=True, slots=True)
class Stack:
    """The running topology: the API's base URL, the services it runs on, its processes."""

    base: str
    services: Services
    processes: tuple[Service, ...]


@contextmanager
def distributed_stack(workdir: Path, services: Services, variant: Variant = "sealed") -> Iterator[Stack]:
    """Migrates, starts API, relay, processors and shredder, and stops them afterwards."""
    master_key = base64.b64encode(os.urandom(32)).decode()
    migrate(services.dsns["owner"], LocalKeyFileProvider.from_master_key(master_key))
    common = {
        "CONSENTRY_MASTER_KEY": master_key,
        "CONSENTRY_POLICY": str(POLICY_PATH),
        "CONSENTRY_KAFKA_BOOTSTRAP": services.bootstrap,
        "CONSENTRY_PARTITIONS": str(PARTITIONS),
    }
    if variant == "aes_cipher":
        common[KEY_VARIABLE] = whole_state_key()
    dsn = services.dsns
    port = free_port()
    # A baseline's API, and the whole-state cipher's relay, are the bench's; the rest is `consentry`.
    api, api_module = ["serve", "--port", str(port)], CONSENTRY
    if variant != "sealed":
        api, api_module = ["serve", variant, str(port)], BASELINE_SERVICES
    relay_module = BASELINE_SERVICES if variant == "aes_cipher" else CONSENTRY
    started: list[Service] = []
    # Stopped in reverse: the workers first (a faust worker must stop while the broker is up).
    with running(started):
        api_env = common | {"CONSENTRY_PG_DSN": dsn["ledger"], "CONSENTRY_PG_VIEWS_DSN": dsn["query"]}
        started.append(start("api", api, workdir, api_env, api_module))
        relay_env = common | {"CONSENTRY_PG_DSN": dsn["processors"]}
        started.append(start("relay", ["relay"], workdir, relay_env, relay_module))
        processors_env = common | {"CONSENTRY_PG_VIEWS_DSN": dsn["processors"]}
        started.append(start("processors", ["worker", "processors"], workdir, processors_env))
        shredder_env = common | {"CONSENTRY_PG_DSN": dsn["shredder"]}
        started.append(start("shredder", ["worker", "shredder"], workdir, shredder_env))
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, started)
        yield Stack(base, services, tuple(started))
