"""What the distributed tests send and read back: customers, the ledger, the topic and the views."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

import psycopg
from kafka import KafkaConsumer, TopicPartition

from consentry.adapters.postgres_views import PostgresViewStore, migrate
from consentry.cluster import rebuild_from_kafka
from tests.distributed.conftest import Stack
from tests.services import kafka_bootstrap, pg_dsn, scratch_schema
from tests.support import canary, codec, record

SHOP, SUPPORT = "demo-shop-token", "demo-support-token"
T = TypeVar("T")
Dump = dict[str, list[tuple[object, ...]]]


def customer(stack: Stack) -> tuple[str, list[str]]:
    """A new customer with consent evidence and support data; its reference and canary values."""
    ref_value, email, name = canary("ref"), canary("mail") + "@example.com", canary("name")
    ref = f"shop:{ref_value}"
    with stack.client(SHOP) as shop:
        answer = shop.post(
            "/v1/events",
            json={
                "events": [
                    record("consent.grant", ref, purpose="support", evidence=canary("evidence")),
                    record(
                        "data.update",
                        ref,
                        purpose="support",
                        fields={"email": email, "first_name": name},
                    ),
                ]
            },
        )
    assert answer.status_code == 200, answer.text
    assert [r["status"] for r in answer.json()["results"]] == ["accepted", "accepted"]
    return ref, [ref_value, email, name]


def subject_of(stack: Stack, ref: str) -> str:
    with stack.client(SUPPORT) as support:
        found: str = support.get("/v1/subjects", params={"ref": ref}).json()["subject_id"]
        return found


def eventually(probe: Callable[[], T | None], what: str, timeout: float = 30) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def until_true(check: Callable[[], None], timeout: float) -> None:
    """Runs an asserting check until it passes; after `timeout` seconds its failure is the test's."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            check()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def views(schema: str = "views") -> Dump:
    store = PostgresViewStore(pg_dsn("owner"), schema)
    try:
        return store.dump()
    finally:
        store.close()


def ledger_log() -> list[tuple[int, bytes]]:
    """(position, stored bytes) of every event in the ledger, in log order."""
    with psycopg.connect(pg_dsn("owner")) as conn:
        rows = conn.execute(
            "SELECT notification_id, state FROM ledger.stored_events ORDER BY notification_id"
        ).fetchall()
    return [(int(position), bytes(state)) for position, state in rows]


def ledger_positions() -> list[int]:
    return [position for position, _ in ledger_log()]


def topic_positions() -> list[int]:
    """The log position header of every committed record on `consentry.events`."""
    consumer = KafkaConsumer(
        bootstrap_servers=kafka_bootstrap(),
        isolation_level="read_committed",
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
    )
    try:
        partitions = consumer.partitions_for_topic("consentry.events") or set()
        tps = [TopicPartition("consentry.events", p) for p in partitions]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        return [int(dict(m.headers)["consentry-position"]) for m in consumer]
    finally:
        consumer.close()


def caught_up(count: int) -> list[int] | None:
    found = topic_positions()
    return found if len(found) >= count else None


def settled() -> Dump | None:
    """The views once they hold every subject's last event in the ledger (None until then)."""
    with psycopg.connect(pg_dsn("owner")) as conn:
        rows = conn.execute(
            "SELECT originator_id, max(originator_version) FROM ledger.stored_events GROUP BY 1"
        ).fetchall()
    ledger = {uuid.UUID(str(subject)).bytes: int(version) for subject, version in rows}
    live = views()
    applied = {bytes(subject): int(sequence) for subject, sequence in live["applied"]}  # type: ignore[call-overload]
    return live if applied == ledger else None


def rebuilt_from_offset_zero() -> Dump:
    """The views a clean replay of `consentry.events` builds, in a scratch schema."""
    with scratch_schema("replay") as schema:
        migrate(pg_dsn("owner"), schema)
        store = PostgresViewStore(pg_dsn("owner"), schema)
        try:
            asyncio.run(rebuild_from_kafka(kafka_bootstrap(), codec(), store))
            return store.dump()
        finally:
            store.close()
