"""The producer SDK without a broker: builders, the JSON form, sealing for Kafka and the key rules."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest

from consentry.client import (
    IntakeRecord,
    Producer,
    ProducerError,
    Reason,
    RecordInvalid,
    access_report,
    consent_grant,
    consent_withdrawal,
    contact_report,
    data_update,
    erasure_request,
    record_json,
    task_report,
)
from consentry.core.transit import IntakeKey, IntakeOpener
from consentry.intake.gate import Admitted, IntakeGate
from tests.support import canary, codec, fake_email, parser, policy

KEY = IntakeKey.generate()
SHOP = "demo-shop-token"
UNUSED_BROKER = "127.0.0.1:9"


def _every_kind(ref: str, evidence: str, name: str) -> list[IntakeRecord]:
    return [
        consent_grant(ref, "support", "web", "2026-11", evidence, data_categories=["email"]),
        data_update(ref, "support", {"email": fake_email(), "first_name": name}),
        contact_report(ref, "support", "email", correlation_id="c-1"),
        access_report(ref, "support", "agent-1", "support_agent", ["email"]),
        task_report(ref, "ticket-4711", "support_agent"),
        consent_withdrawal(ref, "support", "web"),
        erasure_request(ref),
    ]


def test_the_json_form_of_every_builder_parses_back_to_the_same_record() -> None:
    records = _every_kind("shop:" + canary("ref"), canary("evidence"), canary("name"))
    assert [parser().from_json(record_json(r)) for r in records] == records


def test_builders_generate_distinct_idempotency_keys_and_hide_personal_values() -> None:
    ref, name = "shop:" + canary("ref"), canary("name")
    one, two = data_update(ref, "support", {"first_name": name}), data_update(ref, "support", {})
    assert one.idempotency_key != two.idempotency_key
    assert ref not in repr(one) and name not in repr(one)
    assert data_update(ref, "support", {}, idempotency_key="k-1").idempotency_key == "k-1"
    with pytest.raises(ValueError, match="time zone"):
        erasure_request(ref, occurred_at=datetime(2026, 11, 1, 9, 0))


def test_what_the_sdk_seals_the_gate_opens_into_the_same_records() -> None:
    shop = Producer(SHOP, intake_public_key=KEY.public_pem(), codec=codec())
    records = _every_kind("shop:" + canary("ref"), canary("evidence"), canary("name"))
    gate = IntakeGate(IntakeOpener(KEY), parser(), policy)
    admitted = gate.admit(shop.seal(records))
    assert isinstance(admitted, Admitted)
    assert admitted.producer == "shop"
    assert list(admitted.records) == records


def test_an_invalid_record_is_refused_before_anything_is_sealed() -> None:
    name = canary("name")
    shop = Producer(SHOP, intake_public_key=KEY.public_bytes(), codec=codec())
    records = [erasure_request("shop:1"), data_update("no-namespace", "support", {"first_name": name})]
    with pytest.raises(RecordInvalid) as caught:
        shop.seal(records)
    assert (caught.value.index, caught.value.reason) == (1, Reason.INVALID_VALUE)
    assert name not in str(caught.value)


def test_a_kafka_key_with_the_subject_reference_or_a_personal_value_is_refused() -> None:
    ref_value, email = canary("ref"), fake_email()
    records = [data_update("shop:" + ref_value, "support", {"email": email})]
    shop = Producer(SHOP, kafka_bootstrap=UNUSED_BROKER, intake_public_key=KEY.public_bytes())
    for key in (f"order-{ref_value}", ref_value.upper(), ref_value[:12], email.split("@")[0], "a@b", ""):
        with pytest.raises(ProducerError, match="Kafka key"):
            asyncio.run(shop.send_kafka(records, key=key))


def test_a_producer_needs_its_settings_and_never_shows_its_token() -> None:
    token = canary("token")
    with pytest.raises(ProducerError, match="http_url"):
        Producer(token).send_http([erasure_request("shop:1")])
    with pytest.raises(ProducerError, match="kafka_bootstrap"):
        asyncio.run(Producer(token).send_kafka([erasure_request("shop:1")]))
    with pytest.raises(ProducerError, match="intake_public_key"):
        Producer(token).seal([erasure_request("shop:1")])
    with pytest.raises(ProducerError, match="intake_public_key"):
        Producer(token, intake_public_key="not a key")
    with pytest.raises(ProducerError, match="acks"):
        Producer(token, kafka_config={"acks": 1})
    assert token not in repr(Producer(token, http_url="http://127.0.0.1:1"))
