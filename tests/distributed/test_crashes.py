"""Crashes of the distributed mode: every service SIGKILLed in turn, the broker restarted, the shredder
worker killed between key destruction and certificate.

Crash convergence: a client keeps the API busy (tests/crash.py) and sends sealed envelopes over
Kafka, while the relay, the processors, shredder and intake workers and the API are SIGKILLed at
random moments (each started again at once) and the Kafka broker is restarted once on its port and
data. Once the plan is done, the ledger must hold every accepted record exactly once and nothing a
refused record carried, `consentry.events` every ledger position exactly once, every request for
shredding one certificate; the chains must verify and the live views equal a rebuild from offset 0.
`make test` kills each service once; `make soak` twenty-five times.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from consentry.adapters.postgres_keystore import PostgresKeystore
from consentry.client import Producer
from consentry.client.producer import ProducerError
from consentry.core import events as ev
from consentry.core.intake import IntakeRecord
from consentry.core.keys import LocalKeyFileProvider
from consentry.core.sealing import CONSENT_SCOPE, IDENTITY_SCOPE, purpose_scope
from consentry.shredder.certificates import verify_document
from tests.crash import DPO, SHOP, SUPPORT, Killer, Traffic, drive
from tests.distributed.checks import (
    customer,
    eventually,
    ledger_log,
    rebuilt_from_offset_zero,
    settled,
    subject_of,
    topic_positions,
    until_true,
)
from tests.distributed.conftest import Stack
from tests.services import kafka_bootstrap, pg_dsn, restart_kafka
from tests.soak import report
from tests.stop_in_shredder import HARNESS, reached
from tests.support import codec
from tests.workload import Workload, check_ledger, decode_log

SERVICES = ("relay", "processors", "shredder", "intake", "api")
SOAK_KILLS = 25
CONVERGE_SECONDS = 180


@dataclass
class KafkaIntake:
    """Sends new customers in sealed envelopes to `consentry.intake` until the broker takes them."""

    workload: Workload
    public_key: str
    pending: list[IntakeRecord] = field(default_factory=list)
    envelopes: int = 0

    def flush(self) -> None:
        eventually(lambda: True if not self.pending or self.send() else None, "Kafka to take them")

    def step(self, broker_up: bool) -> None:
        self.pending += self.workload.kafka_batch()
        if broker_up:
            self.send()

    def send(self) -> bool:
        """One envelope with every record not yet taken; a failed send keeps them for the next."""

        async def produce() -> None:
            async with Producer(
                SHOP, kafka_bootstrap=kafka_bootstrap(), intake_public_key=self.public_key
            ) as shop:
                await asyncio.wait_for(shop.send_kafka(self.pending), 20)

        try:
            asyncio.run(produce())
        except (ProducerError, TimeoutError):
            return False  # sent again later, with the same idempotency keys
        self.pending, self.envelopes = [], self.envelopes + 1
        return True


def _plan(
    stack: Stack, kills: int, seed: int, broker_up: threading.Event
) -> list[tuple[str, Callable[[], None]]]:
    """Each service in turn (shuffled), SIGKILLed and started again; one broker restart among them."""
    rng = random.Random(seed)
    names = [SERVICES[i % len(SERVICES)] for i in range(kills)]
    rng.shuffle(names)

    def crash(name: str) -> Callable[[], None]:
        def step() -> None:
            stack.kill(name)
            stack.restart(name)

        return step

    def restart_broker() -> None:
        broker_up.clear()
        try:
            restart_kafka()
        finally:
            broker_up.set()

    plan = [(name, crash(name)) for name in names]
    plan.insert(rng.randrange(1, len(plan)), ("kafka broker", restart_broker))
    return plan


def _converged(workload: Workload) -> None:
    log = ledger_log()
    check_ledger(workload, decode_log(codec(), log))
    relayed = topic_positions()
    assert sorted(relayed) == [position for position, _ in log], "the topic lost or duplicated events"


def crash_run(stack: Stack, kills: int, seed: int) -> dict[str, object]:
    """Drives the workload through the plan's kills; asserts convergence once it is done."""
    if "intake" not in stack.processes:
        stack.start("intake", "worker", "intake", CONSENTRY_PG_DSN=pg_dsn("ledger"))
    workload = Workload(seed)
    traffic = Traffic(stack.base, workload)
    with stack.client(SHOP) as anyone:
        public_key = anyone.get("/v1/keys/intake-public-key").json()["public_key"]
    kafka = KafkaIntake(workload, public_key)
    broker_up = threading.Event()
    broker_up.set()
    killer = Killer(_plan(stack, kills, seed, broker_up), seed, pause=(0.3, 1.5))
    steps = itertools.count()

    def step() -> None:
        traffic.step()
        if next(steps) % 3 == 0:
            kafka.step(broker_up.is_set())

    started = time.monotonic()
    try:
        drive(step, killer)
    finally:
        traffic.close()
    driven = time.monotonic()
    kafka.flush()
    until_true(lambda: _converged(workload), CONVERGE_SECONDS)
    live = eventually(settled, "the processors to drain the topic", timeout=CONVERGE_SECONDS)
    assert rebuilt_from_offset_zero() == live, "the live views differ from a rebuild from offset 0"
    with stack.client(DPO) as dpo:
        verified = dpo.get("/v1/audit/verify").json()
    assert verified["ok"] is True, verified["breaks"]
    return {
        "seconds_driving": round(driven - started, 1),
        "seconds_converging": round(time.monotonic() - driven, 1),
        "kills": sum(name in SERVICES for name in killer.done),
        "broker_restarts": killer.done.count("kafka broker"),
        "records": len(workload.sent),
        **workload.counts(),
        "kafka_envelopes": kafka.envelopes,
        "profile_reads": traffic.reads,
        "requests_cut_off": traffic.cut_off,
        "retried_requests": traffic.retries,
        "events": verified["events"],
    }


def test_every_service_sigkilled_and_a_broker_restart_lose_nothing_and_converge(stack: Stack) -> None:
    numbers = crash_run(stack, len(SERVICES), seed=7)
    report("distributed crash convergence", **numbers)


@pytest.mark.soak
def test_soak_distributed_services_survive_many_kills(stack: Stack) -> None:
    numbers = crash_run(stack, SOAK_KILLS, seed=71)
    report("distributed crash convergence (soak)", **numbers)


def _certificate(dpo: httpx.Client, subject: str) -> dict[str, Any] | None:
    answer = dpo.get(f"/v1/subjects/{subject}/erasure")
    return answer.json() if answer.status_code == 200 else None


def _history(subject: uuid.UUID) -> list[ev.LedgerEvent]:
    return [e for e in decode_log(codec(), ledger_log()) if e.meta.subject_id == subject]


def test_a_shredder_worker_killed_before_its_certificate_certifies_once_after_restart(
    stack: Stack, tmp_path: Path
) -> None:
    subject = subject_of(stack, customer(stack)[0])
    subject_id = uuid.UUID(subject)
    signal = tmp_path / "stopped"
    stack.kill("shredder")
    stopping = (str(HARNESS), "issue", str(signal))
    stack.launch("shredder", stopping, ("worker", "shredder"), {"CONSENTRY_PG_DSN": pg_dsn("shredder")})
    with stack.client(DPO) as dpo:
        assert dpo.post(f"/v1/subjects/{subject}/erasure").status_code == 202
    assert reached(signal, timeout=120) == subject
    stack.kill("shredder")

    # The crash point: every key destroyed, no certificate recorded.
    provider = LocalKeyFileProvider.from_master_key(stack.env["CONSENTRY_MASTER_KEY"])
    keystore = PostgresKeystore(pg_dsn("owner"), provider, schema="keystore")
    try:
        scopes = {IDENTITY_SCOPE, CONSENT_SCOPE, purpose_scope("support")}
        assert {s for s in scopes if keystore.is_shredded(subject_id, s)} == scopes
    finally:
        keystore.close()
    assert not any(isinstance(e, ev.KeysShredded) for e in _history(subject_id))

    stack.restart("shredder")
    with stack.client(DPO) as dpo, stack.client(SUPPORT) as support:
        document = eventually(lambda: _certificate(dpo, subject), "the certificate", timeout=120)
        read = support.get(f"/v1/subjects/{subject}/profile", params={"purpose": "support"})
        assert read.status_code == 410
        verified = dpo.get("/v1/audit/verify").json()
    assert verified["ok"] is True, verified["breaks"]
    certificate = verify_document(document)
    assert certificate.subject_id == subject_id and set(certificate.scopes) == scopes
    live = eventually(settled, "the processors to drain the topic", timeout=60)
    history = _history(subject_id)
    shreds = [e for e in history if isinstance(e, ev.KeysShredded)]
    request = next(e for e in history if isinstance(e, ev.ErasureRequested))
    assert [s.meta.causation_id for s in shreds] == [str(request.meta.event_id)]
    assert sum(isinstance(e, ev.SubjectErased) for e in history) == 1
    assert not [row for row in live["profile_values"] if row[0] == subject_id.bytes]
