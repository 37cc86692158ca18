"""The Kafka intake gate: envelopes become the records HTTP intake would parse, or dead letters."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml

from consentry.adapters.sqlite_keystore import SQLiteKeystore
from consentry.core.errors import Reason, Rejected
from consentry.core.intake import IntakeRecord
from consentry.core.keys import LocalKeyFileProvider
from consentry.core.policy import Policy, hash_token, parse_policy
from consentry.core.transit import MAX_ENVELOPE_BYTES, IntakeKey, IntakeOpener, IntakeSealer
from consentry.intake.gate import Admitted, DeadLetter, IntakeGate, dlq_message, screen
from consentry.ledger.application import Ledger, open_recorder
from tests.support import (
    EXAMPLE_POLICY,
    StepClock,
    canary,
    codec,
    fake_email,
    parser,
    record,
    sqlite_ledger,
    submit,
)

SHOP = "demo-shop-token"
NEWSLETTER = "newsletter-token-for-tests"
KEY = IntakeKey.generate()
SEALER = IntakeSealer(KEY.public_pem())
PARSER = parser()


def _policy() -> Policy:
    """The example policy plus a producer that may only send marketing records of namespace `news`."""
    raw: dict[str, Any] = yaml.safe_load(EXAMPLE_POLICY.read_text(encoding="utf-8"))
    raw["producers"]["newsletter"] = {
        "token_sha256": hash_token(NEWSLETTER),
        "namespaces": ["news"],
        "event_types": ["consent.grant", "data.update"],
        "purposes": ["marketing"],
    }
    return parse_policy(raw)


POLICY = _policy()


def _ledger(data_dir: Path) -> Ledger:
    """A ledger on SQLite files like `sqlite_ledger`, deciding with POLICY."""
    data_dir.mkdir(parents=True)
    clock = StepClock()
    keystore = SQLiteKeystore(
        data_dir / "keystore.db", LocalKeyFileProvider.open(data_dir / "keys.json"), clock
    )
    _, recorder = open_recorder(
        {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(data_dir / "events.db"),
            "CREATE_TABLE": "y",
        }
    )
    return Ledger(recorder, codec(), keystore, lambda: POLICY, clock)


GATE = IntakeGate(IntakeOpener(KEY), PARSER, lambda: POLICY)


def _seal(token: str, *items: dict[str, Any]) -> bytes:
    return SEALER.seal(token, [PARSER.to_avro(PARSER.from_json(item)) for item in items])


def _admitted(answer: Admitted | DeadLetter) -> Admitted:
    assert isinstance(answer, Admitted), answer
    return answer


def _dead(answer: Admitted | DeadLetter) -> DeadLetter:
    assert isinstance(answer, DeadLetter), answer
    return answer


def _story(ref: str, *secrets: str) -> list[dict[str, Any]]:
    fields = {"email": fake_email(), "last_name": secrets[1]}
    return [
        record("consent.grant", ref, purpose="support", evidence=secrets[0]),
        record("data.update", ref, purpose="support", fields=fields),
        record("contact.report", ref, purpose="support"),
        record(
            "access.report", ref, purpose="support", actor_id="a-1", role="agent", field_names=["email"]
        ),
        record("erasure.request", ref),
    ]


def test_a_valid_envelope_opens_into_the_records_http_intake_parses() -> None:
    items = _story("shop:" + canary("ref"), canary("evidence"), canary("name"))
    admitted = _admitted(GATE.admit(_seal(SHOP, *items)))
    assert admitted.producer == "shop"
    assert list(admitted.records) == screen(POLICY, "shop", items, PARSER.from_json)
    assert all(isinstance(r, IntakeRecord) for r in admitted.records)
    assert admitted.dead_letters() == []


def test_admitted_records_are_decided_by_the_ledger_like_an_http_batch(tmp_path: Path) -> None:
    ref = "shop:" + canary("ref")
    items = _story(ref, canary("evidence"), canary("name"))[:3]
    admitted = _admitted(GATE.admit(_seal(SHOP, *items)))
    over_kafka = sqlite_ledger(tmp_path / "kafka").submit(admitted.producer, admitted.records)
    over_http = submit(sqlite_ledger(tmp_path / "http"), *items)
    assert [o.status for o in over_kafka] == [o.status for o in over_http] == ["accepted"] * 3


def test_a_tampered_envelope_is_dead_lettered_as_invalid() -> None:
    token, ref = canary("token"), canary("ref")
    envelope = bytearray(_seal(SHOP, record("erasure.request", "shop:" + ref)))
    envelope[len(envelope) // 2] ^= 0x01
    dead = _dead(GATE.admit(bytes(envelope)))
    assert dead.reason is Reason.SEALED_ENVELOPE_INVALID
    assert ref not in dead.detail and token not in dead.detail


def test_an_envelope_sealed_to_another_key_is_dead_lettered_as_invalid() -> None:
    ref = canary("ref")
    other = IntakeSealer(IntakeKey.generate().public_bytes())
    envelope = other.seal(
        SHOP, [PARSER.to_avro(PARSER.from_json(record("erasure.request", "shop:" + ref)))]
    )
    dead = _dead(GATE.admit(envelope))
    assert dead.reason is Reason.SEALED_ENVELOPE_INVALID
    assert ref not in dead.detail


def test_garbage_and_oversized_envelopes_are_dead_lettered_with_their_reason() -> None:
    assert _dead(GATE.admit(b"not an envelope")).reason is Reason.SEALED_ENVELOPE_INVALID
    assert _dead(GATE.admit(b"CSI\x01\x01" + bytes(1_000_000))).reason is Reason.OVERSIZED


def test_a_token_of_no_producer_is_dead_lettered_as_unauthorized_without_the_token() -> None:
    token, ref = canary("token"), canary("ref")
    dead = _dead(GATE.admit(_seal(token, record("erasure.request", "shop:" + ref))))
    assert dead.reason is Reason.UNAUTHORIZED
    assert token not in dead.detail and ref not in dead.detail
    assert token not in repr(dead)


def test_malformed_avro_inside_is_refused_per_record_and_dead_lettered_with_its_reason() -> None:
    ref, name = canary("ref"), canary("name")
    good = PARSER.to_avro(PARSER.from_json(record("erasure.request", "shop:" + ref)))
    update = PARSER.to_avro(
        PARSER.from_json(record("data.update", "shop:" + ref, fields={"first_name": name}))
    )
    broken_body = update[:-4]
    unknown_schema = update[:2] + bytes(8) + update[10:]
    not_avro = b"{" + name.encode() + b"}"
    admitted = _admitted(GATE.admit(SEALER.seal(SHOP, [good, broken_body, unknown_schema, not_avro])))
    assert isinstance(admitted.records[0], IntakeRecord)
    reasons = [r.reason if isinstance(r, Rejected) else None for r in admitted.records]
    assert reasons == [None, Reason.MALFORMED_AVRO, Reason.UNKNOWN_SCHEMA, Reason.MALFORMED_AVRO]
    letters = admitted.dead_letters()
    assert [(d.record_index, d.reason) for d in letters] == [
        (1, Reason.MALFORMED_AVRO),
        (2, Reason.UNKNOWN_SCHEMA),
        (3, Reason.MALFORMED_AVRO),
    ]
    assert not any(ref in d.detail or name in d.detail for d in letters)


def test_records_the_producer_may_not_send_are_refused_per_record_like_http(tmp_path: Path) -> None:
    ref = "news:" + canary("ref")
    items = [
        record("consent.grant", ref, purpose="marketing"),
        record("consent.grant", ref, purpose="support"),
        record("consent.grant", "shop:" + canary("ref"), purpose="marketing"),
        record("erasure.request", ref),
        record("data.update", ref, purpose="marketing", fields={"email": fake_email()}),
    ]
    admitted = _admitted(GATE.admit(_seal(NEWSLETTER, *items)))
    assert admitted.producer == "newsletter"
    reasons = [r.reason if isinstance(r, Rejected) else None for r in admitted.records]
    refused = Reason.PRODUCER_NOT_ALLOWED
    assert reasons == [None, refused, refused, refused, None]
    assert [d.record_index for d in admitted.dead_letters()] == [1, 2, 3]
    over_kafka = _ledger(tmp_path / "kafka").submit(admitted.producer, admitted.records)
    over_http = submit(_ledger(tmp_path / "http"), *items, producer="newsletter")
    assert [(o.status, o.reason) for o in over_kafka] == [(o.status, o.reason) for o in over_http]
    assert [o.status for o in over_kafka] == ["accepted", "rejected", "rejected", "rejected", "accepted"]


def test_a_purpose_unknown_to_the_policy_is_left_to_the_ledger_as_for_http() -> None:
    item = record("consent.grant", "shop:" + canary("ref"), purpose="astrology")
    admitted = _admitted(GATE.admit(_seal(SHOP, item)))
    assert isinstance(admitted.records[0], IntakeRecord)


def test_a_dead_letter_carries_the_sealed_envelope_its_reason_and_record_index() -> None:
    value, headers = dlq_message(b"CSI\x01sealed", DeadLetter(Reason.NO_CONSENT, "record 2: x", 2))
    assert value == b"CSI\x01sealed"
    assert headers == {"consentry-reason": b"no_consent", "consentry-record": b"2"}


def test_a_dead_letter_of_an_envelope_over_the_cap_names_it_by_size_and_digest() -> None:
    envelope = b"CSI\x01" + b"\x00" * MAX_ENVELOPE_BYTES
    value, headers = dlq_message(envelope, DeadLetter(Reason.OVERSIZED, "too big"))
    assert value == b""
    assert headers == {
        "consentry-reason": b"oversized",
        "consentry-size": str(len(envelope)).encode(),
        "consentry-sha256": hashlib.sha256(envelope).hexdigest().encode(),
    }
