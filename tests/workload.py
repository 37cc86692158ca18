"""A seeded intake workload for crash tests, the answers it got, and what the ledger must then hold.

`Workload.batch()` draws the next intake batch (new customers, updates, refusals, withdrawals,
erasure requests); `answered()` keeps each record's answer, also from a retry after a crash (same
idempotency keys). `check_ledger()` then asserts on the decoded log: every accepted record is in it
exactly once, nothing refused stored data, no event is there twice, and every erasure and withdrawal
was certified exactly once. Everything here is obviously fake data.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from consentry.client import consent_grant, data_update
from consentry.core import events as ev
from consentry.core.avro import AvroCodec
from consentry.core.intake import IntakeRecord
from consentry.ledger.subject import idempotency_hash
from tests.support import canary, fake_email, record

PRODUCER = "shop"
REFUSAL_EVENTS = (ev.DataUpdateRejected, ev.ConsentExpired)
"""What a refused record may leave in the log: the refusal itself (names and reason, no values)."""


@dataclass
class Customer:
    """One fake customer of the workload."""

    ref: str
    subject_id: str | None = None
    erasing: bool = False


@dataclass
class Sent:
    """One record sent, and the answer that counts (None: sent over Kafka, no answer expected)."""

    key: str
    kind: str
    status: str | None = None
    event_id: str | None = None
    reason: str | None = None
    retried: bool = False

    @property
    def idempotency(self) -> bytes:
        return idempotency_hash(PRODUCER, self.key)


@dataclass
class Workload:
    """Draws intake batches from a seed and keeps what was answered."""

    seed: int
    customers: list[Customer] = field(default_factory=list)
    sent: dict[str, Sent] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def batch(self) -> list[dict[str, Any]]:
        """The next batch of intake records (JSON form), one to four records."""
        live = [c for c in self.customers if not c.erasing]
        roll = self.rng.random()
        if roll < 0.35 or not live:
            return self.new_customer()
        customer = self.rng.choice(live)
        ref = customer.ref
        if roll < 0.6:
            records = [_update(ref, "support")]
        elif roll < 0.7:
            records = [record("consent.grant", ref), _update(ref, "marketing")]
        elif roll < 0.78:
            # Refused: no marketing consent, or a field the purpose does not declare.
            records = [_update(ref, "marketing"), _update(ref, "support", street=canary("street"))]
        elif roll < 0.88:
            purpose = self.rng.choice(["marketing", "support"])
            records = [record("consent.withdrawal", ref, purpose=purpose)]
        elif roll < 0.94:
            customer.erasing = True
            records = [record("erasure.request", ref)]
        else:
            # Refused once the erasure is recorded (or, before it, accepted: both are fine).
            gone = [c for c in self.customers if c.erasing] or [customer]
            records = [_update(self.rng.choice(gone).ref, "support")]
        return self._track(records)

    def new_customer(self) -> list[dict[str, Any]]:
        """A consent grant and data for a new customer (always accepted)."""
        customer = Customer(f"shop:{canary('ref')}")
        self.customers.append(customer)
        grant = record("consent.grant", customer.ref, purpose="support", evidence=canary("evidence"))
        return self._track([grant, _update(customer.ref, "support")])

    def kafka_batch(self) -> list[IntakeRecord]:
        """A consent grant and data for a new customer, as SDK records for the Kafka intake."""
        ref = f"shop:{canary('kref')}"
        records = [
            consent_grant(ref, "support", "web", "n-1"),
            data_update(ref, "support", {"email": fake_email()}),
        ]
        for item in records:
            self.sent[item.idempotency_key] = Sent(item.idempotency_key, item.intake_type)
        return records

    def _track(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for item in records:
            key = item["idempotency_key"]
            self.sent[key] = Sent(key, item["type"])
        return records

    def answered(
        self, records: Sequence[dict[str, Any]], results: Sequence[dict[str, Any]], *, retried: bool
    ) -> None:
        """Keeps the answers to a batch; `retried`: they answer a batch sent again after a crash."""
        assert len(results) == len(records), results
        for item, result in zip(records, results, strict=True):
            sent = self.sent[item["idempotency_key"]]
            sent.status, sent.event_id = result["status"], result.get("event_id")
            sent.reason, sent.retried = result.get("reason"), retried
            for customer in self.customers:
                if customer.ref == item["subject_ref"] and result.get("subject_id"):
                    customer.subject_id = result["subject_id"]

    def subjects(self) -> list[str]:
        """Subject ids the answers named, of customers not being erased."""
        return [c.subject_id for c in self.customers if c.subject_id and not c.erasing]

    def counts(self) -> Counter[str]:
        return Counter(s.status or "unanswered" for s in self.sent.values())


def _update(ref: str, purpose: str, **extra: str) -> dict[str, Any]:
    fields = {"email": fake_email(), "first_name": canary("name"), **extra}
    return record("data.update", ref, purpose=purpose, fields=fields)


def decode_log(codec: AvroCodec, log: Iterable[tuple[int, bytes]]) -> list[ev.LedgerEvent]:
    """The ledger events of (position, stored bytes) pairs; sealed values stay sealed."""
    return [ev.event_from_record(*codec.decode(state)) for _, state in log]


def check_ledger(workload: Workload, events: Sequence[ev.LedgerEvent]) -> None:
    """Asserts what a crash must never change about the log; fails on the first violation."""
    ids = Counter(e.meta.event_id for e in events)
    assert [i for i, n in ids.items() if n > 1] == [], "an event is in the log twice"
    ours = {s.idempotency: s for s in workload.sent.values()}
    # The workload's subjects: other tests may share the log, never a subject.
    subjects = {e.meta.subject_id for e in events if e.meta.idempotency in ours}
    by_key: dict[bytes, list[ev.LedgerEvent]] = {}
    for event in events:
        if event.meta.idempotency is not None and event.meta.subject_id in subjects:
            by_key.setdefault(event.meta.idempotency, []).append(event)
    assert set(by_key) <= set(ours), "the log holds a record nobody sent"
    for digest, sent in ours.items():
        found = by_key.get(digest, [])
        if sent.status == "rejected":
            # A retry refused although its first attempt was written fails here, also when the
            # subject was erased (its reference dropped) in between.
            stored = [type(e).__name__ for e in found if not isinstance(e, REFUSAL_EVENTS)]
            retry = ", a retry" if sent.retried else ""
            assert stored == [], f"a refused {sent.kind} ({sent.reason}{retry}) stored {stored}"
            continue
        if sent.status == "duplicate" and sent.event_id is None:
            assert found == [], f"a {sent.kind} answered as a repeat without an event is in the log"
            continue
        # Accepted, a retry's duplicate of what a crashed attempt wrote, or sent over Kafka.
        assert len(found) == 1, f"a {sent.status or 'sent'} {sent.kind} is in the log {len(found)} times"
        if sent.status == "duplicate":
            assert str(found[0].meta.event_id) == sent.event_id
        if sent.status == "accepted":
            assert uuid.UUID(str(sent.event_id)) in ids, f"an accepted {sent.kind} lost its event"
    check_shredding(events)


def check_shredding(events: Sequence[ev.LedgerEvent]) -> None:
    """Every erasure and withdrawal is certified exactly once (an erasure covers withdrawals)."""
    causes = Counter(e.meta.causation_id for e in events if isinstance(e, ev.KeysShredded))
    assert [c for c, n in causes.items() if n > 1] == [], "a request was certified twice"
    certified = set(causes)
    erasing = {e.meta.subject_id for e in events if isinstance(e, ev.ErasureRequested)}
    erased = Counter(e.meta.subject_id for e in events if isinstance(e, ev.SubjectErased))
    assert {s for s in erasing if erased[s] != 1} == set(), "an erasure is not certified once"
    withdrawals: dict[tuple[uuid.UUID, str], list[str]] = {}
    for event in events:
        if isinstance(event, ev.ConsentWithdrawn) and event.meta.subject_id not in erasing:
            slot = (event.meta.subject_id, event.purpose)
            withdrawals.setdefault(slot, []).append(str(event.meta.event_id))
    # A later withdrawal of the same purpose covers the keys an earlier one would have destroyed.
    open_ = [slot for slot, ids in withdrawals.items() if ids[-1] not in certified]
    assert open_ == [], f"{len(open_)} withdrawals were never certified"
