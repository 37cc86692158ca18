"""faust workers of the distributed mode: processors and shredder on `consentry.events`.

Both consume the relay's topic with at-least-once delivery. The processors skip redelivered events
by each subject's sequence watermark, stored with the view changes and the partition offsets in one
PostgreSQL transaction; the shredder's work is idempotent (a repeated request finds its certificate
already recorded). Both stop cleanly on SIGTERM (stop them before the broker).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable
from typing import Any, Final, cast

import faust

from consentry.adapters.postgres_views import PostgresViewStore
from consentry.audit.anomalies import AnomalyWatch
from consentry.cluster import (
    DLQ_TOPIC,
    INTAKE_TOPIC,
    VIEWS_SCHEMA,
    dsn_of,
    ensure_topics,
    open_ledger,
    project_batch,
    provider_of,
)
from consentry.core import events as ev
from consentry.core.avro import AvroCodec
from consentry.core.errors import SettingsError
from consentry.core.intake import IntakeParser
from consentry.core.settings import Settings
from consentry.core.transit import IntakeOpener
from consentry.intake.gate import DeadLetter, IntakeGate, dlq_message
from consentry.relay.relay import EVENTS_TOPIC
from consentry.shredder.retention import RetentionSchedule
from consentry.shredder.service import Shredder

KINDS: Final = ("processors", "shredder", "intake")
# The events the shredder acts on. It sees every event of the ledger and skips the others by their
# schema fingerprint, without decoding them (a decode was about a ninth of its busy time).
SHREDDING: Final = (ev.ErasureRequested, ev.ConsentWithdrawn)
_SHREDDING_NAMES: Final = frozenset(kind.avro_name for kind in SHREDDING)
log = logging.getLogger("consentry.workers")


def shredder_reads(codec: AvroCodec, value: bytes) -> bool:
    """Whether the shredder decodes this record: an event it acts on, or bytes of no schema of ours
    (whose decode raises, as it always did)."""
    contract = codec.writer_of(value)
    return contract is None or contract.name in _SHREDDING_NAMES


def _app(kind: str, settings: Settings, **extra: Any) -> faust.App:
    bootstrap = settings.kafka_bootstrap or ""
    return faust.App(
        f"consentry-{kind}",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        # faust makes "<id>-data" in the working directory unless told where its data goes.
        datadir=str(settings.data_dir / "faust" / kind).replace("{", "{{").replace("}", "}}"),
        web_enabled=False,
        autodiscover=False,
        topic_disable_leader=True,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        topic_partitions=settings.partitions,
        broker_commit_every=100,
        broker_commit_interval=0.5,
        # A killed worker's partitions move on after 10 s rather than faust's default minute.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        **extra,
    )


def processors_app(settings: Settings, views_dsn: str) -> faust.App:
    """Projects `consentry.events` into the PostgreSQL read models (keyless)."""
    app = _app("processors", settings)
    topic = app.topic(EVENTS_TOPIC, key_serializer="raw", value_serializer="raw")
    codec = AvroCodec(settings.schema_dir)
    views = PostgresViewStore(views_dsn, VIEWS_SCHEMA)

    @app.agent(topic)
    async def project(stream: faust.StreamT[Any]) -> None:
        # take_events is on every concrete Stream, not on the StreamT interface.
        batches = cast("faust.Stream[Any]", stream).take_events(500, within=0.05)
        async for batch in batches:
            records = [
                (e.message.partition, e.message.offset, e.value)
                for e in batch
                if isinstance(e.value, bytes)
            ]
            await _finish(asyncio.to_thread(project_batch, codec, views, records))

    return app


async def _finish(work: Awaitable[object]) -> None:
    """Runs a view transaction to its end even when the worker is being stopped.

    faust acks a batch once the agent leaves it, also on cancellation, and commits acked offsets on
    shutdown; so a batch must be in the views before the agent lets go of it. A batch that fails
    to apply ends the process at once, before anything is acked: the restart reads it again.
    """
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise
    except Exception:
        log.exception("a batch could not be applied to the views; stopping without acking it")
        os._exit(70)


def shredder_app(settings: Settings, dsn: str) -> faust.App:
    """Destroys keys on erasure requests and withdrawals; certificates go back into the ledger."""
    app = _app("shredder", settings)
    topic = app.topic(EVENTS_TOPIC, key_serializer="raw", value_serializer="raw")
    ledger = open_ledger(settings, provider_of(settings), dsn)
    shredder = Shredder(ledger, ledger.clock)

    # A crash between key destruction and certificate is finished before consuming anything new.
    finished = shredder.run_pending()
    log.info("shredder finished %d interrupted requests", len(finished))

    @app.agent(topic)
    async def shred(stream: faust.StreamT[Any]) -> None:
        async for value in stream:
            if not isinstance(value, bytes) or not shredder_reads(ledger.codec, value):
                continue
            event = ledger.mapper.decode(value)
            if isinstance(event, SHREDDING):
                await asyncio.to_thread(shredder.handle, event)

    schedule, watch = RetentionSchedule(), AnomalyWatch()

    @app.timer(settings.retention_interval)  # type: ignore[untyped-decorator]  # faust: untyped
    async def retention() -> None:
        # Every shredder worker sweeps; a purpose two of them shred is certified once (same cause).
        done = await asyncio.to_thread(shredder.sweep, schedule)
        if done:
            log.info("retention shredded %d purposes", len(done))

    @app.timer(settings.anomaly_interval)  # type: ignore[untyped-decorator]  # faust: untyped
    async def anomalies() -> None:
        # Flags carry their rule's window or read in their cause: two workers never flag twice.
        flagged = await asyncio.to_thread(watch.sweep, ledger)
        if flagged:
            log.info("flagged %d access anomalies", flagged)

    return app


def intake_app(settings: Settings, dsn: str) -> faust.App:
    """Opens sealed envelopes from `consentry.intake`, decides them; refusals go to the DLQ."""
    # Room on the DLQ for a whole envelope of the largest size intake takes, with its key and
    # headers (faust's default of 1,000,000 bytes is below it): Kafka's own default request limit.
    app = _app("intake", settings, producer_max_request_size=1_048_576)
    topic = app.topic(INTAKE_TOPIC, key_serializer="raw", value_serializer="raw")
    dlq = app.topic(DLQ_TOPIC, key_serializer="raw", value_serializer="raw")
    provider = provider_of(settings)
    ledger = open_ledger(settings, provider, dsn)
    opener = IntakeOpener(provider.intake_key(), max_records=settings.max_batch)
    gate = IntakeGate(opener, IntakeParser(ledger.codec, ledger.clock.now), lambda: ledger.policy)

    def decide(envelope: bytes) -> list[DeadLetter]:
        admitted = gate.admit(envelope)
        if isinstance(admitted, DeadLetter):
            return [admitted]
        outcomes = ledger.submit(admitted.producer, admitted.records)
        # Records refused before the ledger come back as rejected outcomes too: one letter each.
        return [
            DeadLetter(o.reason, o.detail, index)
            for index, o in enumerate(outcomes)
            if o.status == "rejected" and o.reason is not None
        ]

    @app.agent(topic)
    async def intake(stream: faust.StreamT[Any]) -> None:
        async for envelope in stream:
            if not isinstance(envelope, bytes):
                continue
            for letter in await asyncio.to_thread(decide, envelope):
                # The envelope stays sealed in the DLQ; the reason and detail hold no personal data.
                value, headers = dlq_message(envelope, letter)
                await dlq.send(value=value, headers=headers)

    return app


def worker_app(kind: str, settings: Settings) -> faust.App:
    """The faust app of one worker kind, with the PostgreSQL role it runs as."""
    if not settings.kafka_bootstrap:
        raise SettingsError("CONSENTRY_KAFKA_BOOTSTRAP is required in distributed mode")
    if kind == "processors":
        return processors_app(settings, dsn_of(settings, "pg_views_dsn"))
    if kind == "shredder":
        return shredder_app(settings, dsn_of(settings, "pg_dsn"))
    if kind == "intake":
        return intake_app(settings, dsn_of(settings, "pg_dsn"))
    raise SettingsError(f"unknown worker kind {kind}")


def run_worker(app: faust.App, settings: Settings) -> None:
    """Creates the topics if needed, then runs the faust worker until SIGTERM/SIGINT."""
    asyncio.run(ensure_topics(settings.kafka_bootstrap or "", settings.partitions))
    app.conf.datadir.mkdir(parents=True, exist_ok=True)  # faust makes only the last level
    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    worker.execute_from_commandline()
