"""The distributed mode's wiring: PostgreSQL stores, Kafka topics, one process per service.

Services and the PostgreSQL role each one connects as (infra/postgres/roles.sql):

| service | command | role(s) |
|---|---|---|
| HTTP API (intake, query, audit) | `consentry serve` | ledger (ledger + keystore), query (views) |
| relay | `consentry relay` | processors (reads the ledger only) |
| processors | `consentry worker processors` | processors (ledger read, views write; no keystore) |
| shredder | `consentry worker shredder` | shredder (keystore, ledger) |
| intake over Kafka | `consentry worker intake` | ledger |

The same ledger, projector and shredder code runs here as in the embedded platform; only the
runners differ: the relay copies the log to `consentry.events`, faust agents consume it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from eventsourcing.persistence import ApplicationRecorder
from psycopg.conninfo import conninfo_to_dict

from consentry.adapters.postgres_keystore import PostgresKeystore
from consentry.adapters.postgres_ledger import RECORDER_TOPIC
from consentry.adapters.postgres_views import PostgresViewStore
from consentry.adapters.postgres_views import migrate as migrate_views
from consentry.core.avro import AvroCodec
from consentry.core.clock import SystemClock
from consentry.core.errors import ConsentryError, SettingsError
from consentry.core.event_codec import decode_event
from consentry.core.keys import KeyProvider
from consentry.core.policy import load_policy
from consentry.core.settings import Settings
from consentry.core.views import ViewStore
from consentry.ledger.application import Ledger, open_recorder
from consentry.platform import Platform, key_provider
from consentry.processors.projector import project_new
from consentry.relay.relay import EVENTS_TOPIC, EventLog, LogEntry, Relay, topic_partitions
from consentry.shredder.service import Shredder

INTAKE_TOPIC: Final = "consentry.intake"
DLQ_TOPIC: Final = "consentry.intake.dlq"
LEDGER_SCHEMA: Final = "ledger"
KEYSTORE_SCHEMA: Final = "keystore"
VIEWS_SCHEMA: Final = "views"

log = logging.getLogger("consentry.cluster")


class ReplayElsewhere(ConsentryError):
    """The read models belong to the processors worker: rebuild them with `consentry replay --kafka`."""


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic created explicitly, with its partition count and retention."""

    name: str
    partitions: int
    config: dict[str, str]


def topic_specs(partitions: int) -> list[TopicSpec]:
    """The topics of DESIGN.md §6: the history forever, intake and its DLQ for hours/days."""
    hours = 3_600_000
    return [
        TopicSpec(EVENTS_TOPIC, partitions, {"retention.ms": "-1", "cleanup.policy": "delete"}),
        TopicSpec(INTAKE_TOPIC, partitions, {"retention.ms": str(6 * hours)}),
        TopicSpec(DLQ_TOPIC, 1, {"retention.ms": str(72 * hours)}),
    ]


async def ensure_topics(bootstrap: str, partitions: int) -> None:
    """Creates the topics that do not exist yet (single broker: replication factor 1)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(s.name, s.partitions, 1, topic_configs=s.config)
            for s in topic_specs(partitions)
            if s.name not in existing
        ]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):  # another service won the race
                await admin.create_topics(wanted)
    finally:
        await admin.close()


def _require(value: str | None, name: str) -> str:
    if not value:
        raise SettingsError(f"CONSENTRY_{name} is required in distributed mode")
    return value


def dsn_of(settings: Settings, which: str) -> str:
    secret = getattr(settings, which)
    return _require(None if secret is None else secret.get_secret_value(), which.upper())


def owner_dsn(settings: Settings) -> str:
    return dsn_of(settings, "pg_owner_dsn")


def recorder_env(dsn: str, *, create: bool) -> dict[str, str]:
    """eventsourcing's PostgreSQL settings for a DSN; only the owner creates tables."""
    info = conninfo_to_dict(dsn)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": str(info.get("dbname", "")),
        "POSTGRES_HOST": str(info.get("host", "127.0.0.1")),
        "POSTGRES_PORT": str(info.get("port", "5432")),
        "POSTGRES_USER": str(info.get("user", "")),
        "POSTGRES_PASSWORD": str(info.get("password", "")),
        "POSTGRES_SCHEMA": LEDGER_SCHEMA,
        "CREATE_TABLE": "y" if create else "n",
        "APPLICATION_RECORDER_TOPIC": RECORDER_TOPIC,
    }


def provider_of(settings: Settings) -> KeyProvider:
    """Every service that seals, opens or signs shares the master key (or key file)."""
    return key_provider(settings)


def open_keystore(settings: Settings) -> PostgresKeystore:
    """The shared keystore alone (CONSENTRY_PG_DSN: ledger or shredder role), for `consentry keys`."""
    return PostgresKeystore(dsn_of(settings, "pg_dsn"), provider_of(settings), schema=KEYSTORE_SCHEMA)


def migrate(owner_dsn: str, provider: KeyProvider) -> None:
    """Creates every table of the ledger, keystore and views (as the owner role; idempotent)."""
    open_recorder(recorder_env(owner_dsn, create=True))
    PostgresKeystore(owner_dsn, provider, schema=KEYSTORE_SCHEMA, create=True).close()
    migrate_views(owner_dsn, VIEWS_SCHEMA)


def open_ledger(settings: Settings, provider: KeyProvider, dsn: str) -> Ledger:
    """The ledger on PostgreSQL with the keystore the role may use."""
    policy = load_policy(settings.policy)
    clock = SystemClock()
    keystore = PostgresKeystore(dsn, provider, clock, schema=KEYSTORE_SCHEMA)
    factory, recorder = open_recorder(recorder_env(dsn, create=False))
    return Ledger(
        recorder,
        AvroCodec(settings.schema_dir),
        keystore,
        lambda: policy,
        clock,
        on_close=factory.close,
    )


def log_reader(recorder: ApplicationRecorder) -> EventLog:
    """Pages of the ledger's notification log for the relay (which needs no keys at all)."""

    def read(after: int, limit: int) -> Sequence[LogEntry]:
        page = recorder.select_notifications(start=after, limit=limit, inclusive_of_start=False)
        return [LogEntry(n.id, uuid.UUID(str(n.originator_id)), n.state) for n in page]

    return read


class RemoteViews:
    """Views kept by the processors worker; `refresh` waits until they hold the subject's events."""

    def __init__(self, ledger: Ledger, views: ViewStore, timeout: float = 5.0) -> None:
        self.ledger = ledger
        self.views = views
        self.timeout = timeout

    def refresh(self, subject_id: uuid.UUID | None = None, version: int | None = None) -> None:
        if subject_id is None:
            return
        wanted = version if version is not None else self.ledger.load(subject_id).version
        deadline = time.monotonic() + self.timeout
        while self.views.applied([subject_id]).get(subject_id, 0) < wanted:
            if time.monotonic() > deadline:
                log.warning("views lag behind the ledger for a subject; answering from them anyway")
                return
            time.sleep(0.01)

    def rebuild(self, progress: Callable[[int], None] | None = None) -> int:
        raise ReplayElsewhere("the processors worker owns the views: consentry replay --kafka")

    def start(self) -> None:
        """Nothing runs in this process."""

    def stop(self) -> None:
        """Nothing runs in this process."""


def open_api(settings: Settings) -> Platform:
    """The HTTP API service of the distributed mode (intake, query and audit on PostgreSQL)."""
    provider = provider_of(settings)
    ledger = open_ledger(settings, provider, dsn_of(settings, "pg_dsn"))
    views = PostgresViewStore(dsn_of(settings, "pg_views_dsn"), VIEWS_SCHEMA)
    return Platform(
        settings,
        ledger.policy,
        provider,
        ledger.keystore,
        ledger,
        views,
        RemoteViews(ledger, views),
        Shredder(ledger, ledger.clock),
        embedded=False,
    )


def project_batch(codec: AvroCodec, views: ViewStore, records: Sequence[tuple[int, int, bytes]]) -> int:
    """Projects (partition, offset, value) records into the views with their offsets, atomically."""
    events = [decode_event(codec, value) for _, _, value in records]
    applied = views.applied(list({e.meta.subject_id: None for e in events}))
    positions: dict[str, int] = {}
    for partition, offset, _ in records:
        positions[f"kafka:{partition}"] = max(positions.get(f"kafka:{partition}", 0), offset + 1)
    views.apply_at(project_new(events, applied), positions)
    return len(events)


async def rebuild_from_kafka(
    bootstrap: str,
    codec: AvroCodec,
    views: ViewStore,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Empties the views and projects `consentry.events` from offset 0 to its current end."""
    views.reset("kafka")
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level="read_committed", enable_auto_commit=False
    )
    tps = [TopicPartition(EVENTS_TOPIC, p) for p in await topic_partitions(bootstrap, EVENTS_TOPIC)]
    await consumer.start()
    done = 0
    try:
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000, max_records=1000)
            records = [
                (tp.partition, r.offset, r.value)
                for tp, rs in batch.items()
                for r in rs
                if r.value is not None
            ]
            if records:
                done += await asyncio.to_thread(project_batch, codec, views, records)
                if progress:
                    progress(done)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        return done
    finally:
        await consumer.stop()


def replay_kafka(settings: Settings) -> int:
    """`consentry replay --kafka`: the views rebuilt from the topic alone."""
    views = PostgresViewStore(dsn_of(settings, "pg_views_dsn"), VIEWS_SCHEMA)
    try:
        return asyncio.run(
            rebuild_from_kafka(
                _require(settings.kafka_bootstrap, "KAFKA_BOOTSTRAP"),
                AvroCodec(settings.schema_dir),
                views,
            )
        )
    finally:
        views.close()


def run_relay(
    settings: Settings,
    stop: asyncio.Event | None = None,
    pages: Callable[[ApplicationRecorder], EventLog] = log_reader,
) -> None:
    """The relay service: the ledger's log to `consentry.events` until SIGTERM/SIGINT.

    `pages` reads the log from the recorder (the benchmarks' whole-state cipher baseline decrypts
    what it reads there; the platform's stored states need no key to relay).
    """
    bootstrap = _require(settings.kafka_bootstrap, "KAFKA_BOOTSTRAP")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    _, recorder = open_recorder(recorder_env(dsn_of(settings, "pg_dsn"), create=False))

    async def main() -> None:
        await ensure_topics(bootstrap, settings.partitions)
        done = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, done.set)
        relay = Relay(pages(recorder), bootstrap)
        await relay.start()
        try:
            await relay.run(done)
        finally:
            await relay.stop()

    asyncio.run(main())
