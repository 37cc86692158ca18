"""Waits until a Kafka broker answers a metadata request (used by infra/kafka/start.sh).

usage: python wait_ready.py BOOTSTRAP PID TIMEOUT_SECONDS
Exits 0 once the broker lists itself in a metadata response; 1 if the timeout passes first;
2 if process PID (the broker) exits meanwhile; 3 if aiokafka cannot be imported.
"""

import asyncio
import contextlib
import logging
import sys
import time
from pathlib import Path

try:
    from aiokafka.admin import AIOKafkaAdminClient
except ImportError:
    sys.exit(3)


def alive(pid: int) -> bool:
    """The process runs and is not a zombie (an exited broker waiting for its parent to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def ready(bootstrap: str) -> bool:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=3000, connections_max_idle_ms=5000
    )
    try:
        await asyncio.wait_for(admin.start(), 5)
        cluster = await asyncio.wait_for(admin.describe_cluster(), 5)
        return bool(cluster.get("brokers"))
    # Not up yet (refused, timed out, not registered), or any surprise: ask again until the deadline.
    except Exception:  # noqa: BLE001
        return False
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(admin.close(), 5)


async def main(bootstrap: str, pid: int, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return 2
        if await ready(bootstrap):
            return 0
        await asyncio.sleep(0.25)
    return 1


if __name__ == "__main__":
    logging.disable(logging.CRITICAL)  # aiokafka logs every refused connection
    bootstrap, pid, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    sys.exit(asyncio.run(main(bootstrap, pid, seconds)))
