"""The distributed mode end to end on a real Kafka broker and a real PostgreSQL cluster."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from consentry.adapters.postgres_views import PostgresViewStore
from consentry.client import Producer, consent_grant, data_update
from consentry.shredder.certificates import verify_document
from tests.distributed.checks import customer, eventually, settled, subject_of, views
from tests.distributed.conftest import Stack, processors_env
from tests.integration.test_avro_interop import apache_read
from tests.services import kafka_bootstrap, kafka_data_dir, pg_data_dir, pg_dsn
from tests.support import canary, scan

SHOP, SUPPORT, DPO = "demo-shop-token", "demo-support-token", "demo-dpo-token"


def test_records_flow_through_kafka_into_the_views_and_erasure_purges_everything(stack: Stack) -> None:
    ref, canaries = customer(stack)
    subject = subject_of(stack, ref)
    with stack.client(SUPPORT) as support, stack.client(DPO) as dpo:
        profile = eventually(
            lambda: _fields(
                support.get(f"/v1/subjects/{subject}/profile", params={"purpose": "support"})
            ),
            "the profile in the read models",
        )
        assert sorted(profile.values()) == sorted(canaries[1:])
        assert dpo.post(f"/v1/subjects/{subject}/erasure").status_code == 202
        document = eventually(
            lambda: _json_if_ok(dpo.get(f"/v1/subjects/{subject}/erasure")), "the certificate"
        )
        gone = support.get(f"/v1/subjects/{subject}/profile", params={"purpose": "support"})
        assert gone.status_code == 410
        assert dpo.get(f"/v1/subjects/{subject}/export").json()["data"] == {}
    verified = verify_document(document)
    assert str(verified.subject_id) == subject
    eventually(lambda: _purged(uuid.UUID(subject)), "the views purged")
    for root in (kafka_data_dir(), pg_data_dir()):
        assert scan(Path(root), canaries) == {}, f"a canary value under {root}"


def test_the_workers_keep_their_faust_state_in_the_data_directory(stack: Stack) -> None:
    faust_dir = stack.logs / "data" / "faust"
    eventually(
        lambda: {"processors", "shredder"} <= {p.parent.name for p in faust_dir.glob("*/v1")} or None,
        "the workers' faust directories",
    )
    assert not list(Path.cwd().glob("consentry-*-data")), "faust state in the working directory"


def _fields(answer: Any) -> dict[str, str] | None:
    if answer.status_code != 200 or not answer.json()["fields"]:
        return None
    fields: dict[str, str] = answer.json()["fields"]
    return fields


def _json_if_ok(answer: Any) -> dict[str, Any] | None:
    return answer.json() if answer.status_code == 200 else None


def _purged(subject: uuid.UUID) -> bool | None:
    store = PostgresViewStore(pg_dsn("owner"))
    try:
        values, erasure = store.values(subject), store.erasure(subject)
        return True if values == {} and erasure and erasure.status == "erased" else None
    finally:
        store.close()


def test_a_third_party_client_reads_the_topic_with_the_schema_files_alone(stack: Stack) -> None:
    ref, _ = customer(stack)
    subject = subject_of(stack, ref)
    consumer = KafkaConsumer(
        bootstrap_servers=kafka_bootstrap(),
        isolation_level="read_committed",
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
    )
    partitions = [
        TopicPartition("consentry.events", p) for p in consumer.partitions_for_topic("consentry.events")
    ]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    decoded = eventually(
        lambda: [apache_read(m.value) for m in consumer if m.key == subject.encode()] or None,
        "the subject's events on consentry.events",
    )
    consumer.close()
    names = {type_name(d) for d in decoded}
    assert {"ReferenceLinked", "ConsentGranted", "DataUpdated"} <= names
    assert all(str(d["meta"]["subject_id"]) == subject for d in decoded)


def type_name(datum: dict[str, Any]) -> str:
    if "fields" in datum and "rectification" in datum:
        return "DataUpdated"
    if "evidence" in datum:
        return "ConsentGranted"
    if "ref" in datum and "namespace" in datum:
        return "ReferenceLinked"
    return json.dumps(sorted(datum))


def test_views_rebuilt_from_offset_zero_equal_the_live_ones(stack: Stack) -> None:
    customer(stack)
    ref, _ = customer(stack)
    subject = subject_of(stack, ref)
    with stack.client(SUPPORT) as support:
        eventually(
            lambda: _fields(
                support.get(f"/v1/subjects/{subject}/profile", params={"purpose": "support"})
            ),
            "the profile",
        )
    live = eventually(settled, "the processors to drain the topic", timeout=60)
    assert stack.stop("processors") == 0
    replayed = stack.run("replay", "--kafka", **processors_env())
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert views() == live, replayed.stdout
    stack.start("processors", "worker", "processors", **processors_env())


def test_sealed_records_over_kafka_reach_the_ledger_and_refusals_reach_the_dlq(stack: Stack) -> None:
    ref_value, email = canary("kref"), canary("kmail") + "@example.com"
    ref = f"shop:{ref_value}"
    with stack.client(SHOP) as anyone:
        public_key = anyone.get("/v1/keys/intake-public-key").json()["public_key"]

    async def send() -> None:
        async with Producer(
            "demo-shop-token", kafka_bootstrap=kafka_bootstrap(), intake_public_key=public_key
        ) as shop:
            await shop.send_kafka(
                [
                    consent_grant(ref, "support", "web", "n-1"),
                    data_update(ref, "support", {"email": email}),
                ]
            )
        async with Producer(
            "forged-token", kafka_bootstrap=kafka_bootstrap(), intake_public_key=public_key
        ) as forged:
            await forged.send_kafka([consent_grant("shop:" + canary("forged"), "support", "web", "n-1")])

    asyncio.run(send())
    stack.start("intake", "worker", "intake", CONSENTRY_PG_DSN=pg_dsn("ledger"))
    with stack.client(SUPPORT) as support:
        subject = eventually(
            lambda: _found(support.get("/v1/subjects", params={"ref": ref})), "the Kafka-fed subject"
        )
        profile = eventually(
            lambda: _fields(
                support.get(f"/v1/subjects/{subject}/profile", params={"purpose": "support"})
            ),
            "the Kafka-fed profile",
            timeout=60,
        )
    assert profile == {"email": email}
    letters = eventually(lambda: _dlq() or None, "a dead letter")
    assert [reason for reason, _ in letters] == [b"unauthorized"]
    assert all(ref_value.encode() not in value and email.encode() not in value for _, value in letters)
    assert stack.stop("intake") == 0
    for root in (kafka_data_dir(), pg_data_dir()):
        assert scan(Path(root), [ref_value, email]) == {}


def _found(answer: Any) -> str | None:
    return str(answer.json()["subject_id"]) if answer.status_code == 200 else None


def _dlq() -> list[tuple[bytes, bytes]]:
    consumer = KafkaConsumer(
        "consentry.intake.dlq",
        bootstrap_servers=kafka_bootstrap(),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=2000,
    )
    try:
        return [(dict(m.headers)["consentry-reason"], m.value) for m in consumer]
    finally:
        consumer.close()


def test_the_demo_plays_against_the_distributed_stack(stack: Stack) -> None:
    played = stack.run("demo", "--url", stack.base)
    assert played.returncode == 0, played.stdout + played.stderr
    assert "withdrawal certificate" in played.stdout and "VALID:" in played.stdout
