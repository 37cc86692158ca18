"""The relay: copies the event store's notification log to `consentry.events`, byte for byte.

Each page of the log is produced inside one Kafka transaction (idempotent, `acks=all`) keyed by
subject id, with the log position in a header. The relay keeps no position of its own: on start it
reads the last committed record of every partition (`read_committed`) and resumes after the highest
position it finds. A crash before a commit aborts the page, which is produced again; a crash after
it finds the page on the topic. So the topic holds every event exactly once, in log order per
subject. Consumers still de-duplicate by subject sequence, because their own offsets commit
separately (at-least-once delivery to them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

POSITION_HEADER: Final = "consentry-position"
EVENTS_TOPIC: Final = "consentry.events"

log = logging.getLogger("consentry.relay")


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One notification of the event store: position, subject and the stored bytes."""

    position: int
    subject_id: uuid.UUID
    state: bytes


EventLog = Callable[[int, int], Sequence[LogEntry]]
"""What the relay reads: a page of at most `limit` notifications after a position."""


def position_of(headers: Sequence[tuple[str, bytes]]) -> int | None:
    """The log position a relayed record carries, if any."""
    for name, value in headers:
        if name == POSITION_HEADER:
            return int(value)
    return None


class Relay:
    """Produces the log to Kafka in transactions; resumes from what the topic already holds."""

    def __init__(
        self,
        read: EventLog,
        bootstrap: str,
        *,
        topic: str = EVENTS_TOPIC,
        transactional_id: str = "consentry-relay",
        page: int = 500,
    ) -> None:
        self._read = read
        self._bootstrap = bootstrap
        self.topic = topic
        self._transactional_id = transactional_id
        self._page = page
        self._producer: AIOKafkaProducer | None = None
        self.position = 0

    async def start(self) -> int:
        """Connects (fencing any older relay with the same id) and finds where to resume."""
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            transactional_id=self._transactional_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            max_request_size=8 * 1024 * 1024,
        )
        await self._producer.start()
        self.position = await last_relayed_position(self._bootstrap, self.topic)
        log.info("relay resumes after log position %d", self.position)
        return self.position

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def pump(self) -> int:
        """Relays one page of the log (one transaction); answers how many events."""
        producer = self._producer
        if producer is None:
            raise RuntimeError("start the relay first")
        entries = await asyncio.to_thread(self._read, self.position, self._page)
        if not entries:
            return 0
        async with producer.transaction():
            for entry in entries:
                await producer.send(
                    self.topic,
                    value=entry.state,
                    key=str(entry.subject_id).encode(),
                    headers=[(POSITION_HEADER, str(entry.position).encode())],
                )
        self.position = entries[-1].position
        return len(entries)

    async def run(self, stop: asyncio.Event, idle: float = 0.05, backoff: float = 1.0) -> None:
        """Pumps until `stop` is set, sleeping `idle` seconds whenever the log is drained.

        A failed page (broker gone, transaction fenced or timed out) is never skipped: the relay
        reconnects and resumes from what the topic holds, so the page is produced again.
        """
        while not stop.is_set():
            try:
                relayed = await self.pump()
            except (KafkaError, OSError) as exc:
                log.warning("relay page failed (%s); reconnecting", type(exc).__name__)
                await self._restart(stop, backoff)
                continue
            if relayed == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), idle)

    async def _restart(self, stop: asyncio.Event, backoff: float) -> None:
        with contextlib.suppress(KafkaError, OSError):
            await self.stop()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            try:
                await self.start()
                return
            except (KafkaError, OSError, LookupError) as exc:
                log.warning("relay cannot reconnect yet (%s)", type(exc).__name__)
                with contextlib.suppress(KafkaError, OSError):
                    await self.stop()


async def last_relayed_position(bootstrap: str, topic: str) -> int:
    """The highest log position among the last committed records of the topic's partitions."""
    tps = [TopicPartition(topic, p) for p in await topic_partitions(bootstrap, topic)]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        best = 0
        for tp in tps:
            found = await _last_position(consumer, tp, ends[tp])
            best = max(best, found or 0)
        return best
    finally:
        await consumer.stop()


async def topic_partitions(bootstrap: str, topic: str) -> list[int]:
    """The topic's partition ids, from the cluster (a consumer only knows topics it subscribed to)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    found = [d for d in described if d.get("topic") == topic and not d.get("error_code")]
    if not found:
        raise LookupError(f"topic {topic} does not exist; create the topics first")
    return sorted(int(p["partition"]) for p in found[0]["partitions"])


async def _last_position(consumer: AIOKafkaConsumer, tp: TopicPartition, end: int) -> int | None:
    """The position header of the partition's last committed record (control markers skipped)."""
    window = 16
    while True:
        start = max(0, end - window)
        consumer.seek(tp, start)
        last: int | None = None
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            for record in batch.get(tp, []):
                found = position_of(record.headers)
                if found is not None:
                    last = found
            if not batch:
                break
        if last is not None or start == 0:
            return last
        window *= 16
