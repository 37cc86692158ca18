"""The hostile intake corpus over Kafka: sealed envelopes and raw bytes into the real intake worker.

Every record case whose defect survives Avro encoding is sealed (HPKE, like the SDK does) into an
envelope of its own; record bytes that are no intake record and envelopes that do not open or
authenticate are added. All go to `consentry.intake` in one partition, in order, followed by one good
envelope. Each refusal must come out on `consentry.intake.dlq` with its documented reason in the
`consentry-reason` header (and the refused record's index in `consentry-record`); nothing of a
refused record may reach the ledger; the worker must stay up and decide the good envelope last.
The subject erased here is not shredded (no shredder runs), so records naming it are
`subject_erased`, as in distributed mode until the shredder worker has destroyed its keys.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest
from aiokafka import AIOKafkaProducer
from kafka import KafkaConsumer

from consentry.client import INTAKE_TOPIC
from consentry.cluster import DLQ_TOPIC, ensure_topics
from consentry.core.errors import Reason
from consentry.core.intake import IntakeParser
from consentry.core.transit import HEADER, IntakeKey, IntakeSealer
from tests.corpus import (
    DUPLICATE,
    Case,
    avro_byte_cases,
    avro_record,
    documented_reasons,
    new_ref,
    record_cases,
    valid,
)
from tests.distributed.conftest import Stack, launch, shut_down, start_service
from tests.services import kafka_bootstrap, pg_dsn
from tests.support import codec

SHOP, SUPPORT = "demo-shop-token", "demo-support-token"
Letter = tuple[str, int | None]
PARTITION_KEY = b"hostile-corpus"


@dataclass
class Sent:
    """An envelope (or raw bytes) produced to the intake topic and the dead letters it must give."""

    name: str
    value: bytes
    letters: list[Letter] = field(default_factory=list)


@pytest.fixture(scope="module")
def intake_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = launch(tmp_path_factory.mktemp("hostile-stack"))
    yield running
    shut_down(running)


def _send_http(stack: Stack, *records: dict[str, Any]) -> None:
    with stack.client(SHOP) as shop:
        answer = shop.post("/v1/events", json={"events": list(records)})
    assert [r["status"] for r in answer.json()["results"]] == ["accepted"] * len(records), answer.text


def _ledger() -> dict[str, list[str]]:
    """Every stored event's topic, by subject."""
    with psycopg.connect(pg_dsn("owner")) as conn:
        rows = conn.execute(
            "SELECT originator_id, topic FROM ledger.stored_events ORDER BY notification_id"
        ).fetchall()
    found: dict[str, list[str]] = {}
    for subject, topic in rows:
        found.setdefault(str(subject), []).append(str(topic))
    return found


def _subject(stack: Stack, ref: str) -> str | None:
    with stack.client(SUPPORT) as support:
        answer = support.get("/v1/subjects", params={"ref": ref})
    return str(answer.json()["subject_id"]) if answer.status_code == 200 else None


def _envelopes(
    public_key: str, parser: IntakeParser, cases: list[Case], ledger_event: bytes, known: str
) -> list[Sent]:
    sealer = IntakeSealer(public_key)

    def seal(*records: bytes, token: str = SHOP) -> bytes:
        return sealer.seal(token, list(records))

    sent: list[Sent] = []
    for case in cases:
        sent += [Sent(f"prelude of {case.name}", seal(avro_record(parser, r))) for r in case.prelude]
        letters = [] if case.expect == DUPLICATE else _letter(str(case.expect), 0)
        sent.append(Sent(case.name, seal(avro_record(parser, case.record)), letters))
    for item in avro_byte_cases(parser, known, ledger_event):
        sent.append(Sent(item.name, seal(item.data), [(item.expect.value, 0)]))
    good = avro_record(parser, valid("consent.grant", new_ref()))
    sealed = seal(good)
    foreign = IntakeSealer(IntakeKey.generate().public_bytes()).seal(SHOP, [good])
    too_many = IntakeSealer(public_key, max_records=5000).seal(SHOP, [good] * 1001)
    invalid, oversized = Reason.SEALED_ENVELOPE_INVALID.value, Reason.OVERSIZED.value
    for name, value, reason in (
        ("raw bytes that are no envelope", b"hello, intake", invalid),
        ("an empty message", b"", invalid),
        ("the magic alone", b"CSI", invalid),
        ("an unknown envelope version", b"CSI\x02" + sealed[4:], invalid),
        ("an unknown suite", HEADER + b"\x09" + sealed[5:], invalid),
        ("an envelope cut after its header", sealed[:5], invalid),
        ("an envelope cut in the middle", sealed[: len(sealed) // 2], invalid),
        ("an envelope with a flipped byte", _flip(sealed, len(sealed) - 20), invalid),
        ("an envelope with a flipped encapsulation byte", _flip(sealed, 40), invalid),
        ("an envelope sealed to another key", foreign, invalid),
        ("an envelope over 1,000,000 bytes", HEADER + b"\x01" + b"\x00" * 1_000_000, oversized),
        ("an envelope of 1001 records", too_many, oversized),
        ("an envelope with a forged token", seal(good, token="forged-token-1"), "unauthorized"),
        ("an envelope with a staff token", seal(good, token=SUPPORT), "unauthorized"),
    ):
        sent.append(Sent(name, value, [(reason, None)]))
    bad = avro_record(parser, valid("data.update", known) | {"fields": {"street": "x"}})
    mixed = seal(
        avro_record(parser, valid("consent.grant", new_ref())),
        b"\xc3\x01abc",
        bad,
        avro_record(parser, valid("contact.report", known)),
    )
    sent.append(
        Sent(
            "an envelope with good and bad records",
            mixed,
            [(Reason.MALFORMED_AVRO.value, 1), (Reason.FIELD_NOT_ALLOWED.value, 2)],
        )
    )
    return sent


def _letter(reason: str, index: int | None) -> list[Letter]:
    return [(reason, index)]


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


async def _produce(values: list[bytes]) -> None:
    await ensure_topics(kafka_bootstrap(), 3)
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap(), acks="all", max_request_size=2_000_000
    )
    await producer.start()
    try:
        for value in values:
            # One key: one partition, so the worker decides the envelopes in the order sent.
            await producer.send_and_wait(INTAKE_TOPIC, value=value, key=PARTITION_KEY)
    finally:
        await producer.stop()


def _dead_letters(ours: dict[bytes, str]) -> dict[str, list[Letter]]:
    consumer = KafkaConsumer(
        DLQ_TOPIC,
        bootstrap_servers=kafka_bootstrap(),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
        max_partition_fetch_bytes=4_000_000,
        fetch_max_bytes=8_000_000,
    )
    found: dict[str, list[Letter]] = {}
    digests = {hashlib.sha256(value).hexdigest().encode(): name for value, name in ours.items()}
    try:
        for message in consumer:
            headers = dict(message.headers)
            # A letter of an envelope too big to copy names it by its digest instead.
            digest = headers.get("consentry-sha256")
            name = digests.get(digest) if digest else ours.get(message.value)
            if name is None:
                continue
            index = headers.get("consentry-record")
            letter = (headers["consentry-reason"].decode(), None if index is None else int(index))
            found.setdefault(name, []).append(letter)
    finally:
        consumer.close()
    return found


def test_hostile_envelopes_are_dead_lettered_with_their_reason_and_store_nothing(
    intake_stack: Stack,
) -> None:
    stack = intake_stack
    known, erased = new_ref(), new_ref()
    _send_http(stack, valid("consent.grant", known), valid("data.update", known))
    _send_http(stack, valid("consent.grant", erased), valid("erasure.request", erased))
    people = {ref: _subject(stack, ref) for ref in (known, erased)}
    public_key = httpx.get(f"{stack.base}/v1/keys/intake-public-key", timeout=10).json()["public_key"]
    parser = IntakeParser(codec(), lambda: datetime.now(UTC))
    before = _ledger()
    ledger_event = _stored_event()
    cases = [c for c in record_cases(known, erased, shredded=False) if c.avro]
    sent = _envelopes(public_key, parser, cases, ledger_event, known)
    last = new_ref()
    sent.append(
        Sent(
            "the good envelope after all",
            IntakeSealer(public_key).seal(SHOP, [avro_record(parser, valid("consent.grant", last))]),
        )
    )
    assert len({s.value for s in sent}) == len(sent), "every envelope must be distinct"
    asyncio.run(_produce([s.value for s in sent]))
    start_service(stack, "intake")
    deadline = time.monotonic() + 120
    while _subject(stack, last) is None:
        assert stack.processes["intake"].poll() is None, (
            "the intake worker died:\n" + stack.log_text()[-3000:]
        )
        assert time.monotonic() < deadline, (
            "the good envelope was not decided:\n" + stack.log_text()[-3000:]
        )
        time.sleep(0.2)
    expected = {s.name: sorted(s.letters, key=repr) for s in sent if s.letters}
    ours = {s.value: s.name for s in sent}
    letters: dict[str, list[Letter]] = {}
    while time.monotonic() < deadline:
        letters = {k: sorted(v, key=repr) for k, v in _dead_letters(ours).items()}
        if sum(map(len, letters.values())) >= sum(map(len, expected.values())):
            break
    wrong = [
        f"{name}: {letters.get(name)} != {want}"
        for name, want in expected.items()
        if letters.get(name) != want
    ]
    wrong += [f"{name}: unexpected {got}" for name, got in letters.items() if name not in expected]
    assert wrong == [], "\n".join(wrong)
    assert {r for found in letters.values() for r, _ in found} <= documented_reasons()
    _nothing_stored(stack, before, cases, people)
    assert stack.processes["intake"].poll() is None, "the intake worker died"
    assert stack.stop("intake") == 0


def _stored_event() -> bytes:
    with psycopg.connect(pg_dsn("owner")) as conn:
        row = conn.execute("SELECT state FROM ledger.stored_events LIMIT 1").fetchone()
    assert row is not None
    return bytes(row[0])


def _nothing_stored(
    stack: Stack, before: dict[str, list[str]], cases: list[Case], people: dict[str, str | None]
) -> None:
    """Refused records added no subject and, to known subjects, only kept rejections."""
    after = _ledger()
    refused = [c for c in cases if c.expect != DUPLICATE]
    for case in refused:
        ref = case.record["subject_ref"]
        if ref not in people:
            assert _subject(stack, ref) is None, f"{case.name}: a subject was created"
    kept = Counter(c.record["subject_ref"] for c in refused if c.kept)
    for ref, subject in people.items():
        assert subject is not None
        new = after[subject][len(before[subject]) :]
        added = [t for t in new if t.endswith(".DataUpdateRejected")]
        others = [t for t in new if not t.endswith(".DataUpdateRejected")]
        # The known subject also gets the good contact report of the mixed envelope.
        allowed = ["consentry.events.ContactRecorded"] if ref == next(iter(people)) else []
        assert others == allowed, (ref, others)
        assert len(added) == kept[ref] + (1 if ref == next(iter(people)) else 0), (
            ref,
            len(added),
            kept[ref],
        )
