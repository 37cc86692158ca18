"""The pure part of the Kafka intake worker: one sealed envelope in, parsed records or a dead letter out.

`IntakeGate.admit` opens an envelope with the intake private key, authenticates the producer by the
token sealed inside, and parses each Avro record exactly as HTTP intake parses JSON records: a bad
record becomes a `Rejected` in its place, a record the producer may not send is refused with
`producer_not_allowed`, and the rest go to `Ledger.submit` like an HTTP batch. An envelope that does
not open, or whose token is no producer's, becomes one `DeadLetter` whose detail holds no token and
no record value. No Kafka here: the worker around it consumes, submits and dead-letters.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from consentry.core.errors import Reason, Rejected
from consentry.core.intake import IntakeParser, IntakeRecord
from consentry.core.policy import Policy
from consentry.core.transit import MAX_ENVELOPE_BYTES, EnvelopeError, IntakeOpener

Item = TypeVar("Item")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Why an envelope (or one of its records) was refused; the detail names no personal data."""

    reason: Reason
    detail: str
    record_index: int | None = None


def dlq_message(envelope: bytes, letter: DeadLetter) -> tuple[bytes, dict[str, bytes]]:
    """The value and headers of a letter on the DLQ: the envelope, still sealed, and why.

    An envelope over `MAX_ENVELOPE_BYTES` is not copied (the DLQ producer could not carry it):
    its letter names its size and SHA-256, which find it on the intake topic.
    """
    headers = {"consentry-reason": str(letter.reason).encode()}
    if letter.record_index is not None:
        headers["consentry-record"] = str(letter.record_index).encode()
    if len(envelope) <= MAX_ENVELOPE_BYTES:
        return envelope, headers
    headers["consentry-size"] = str(len(envelope)).encode()
    headers["consentry-sha256"] = hashlib.sha256(envelope).hexdigest().encode()
    return b"", headers


@dataclass(frozen=True, slots=True)
class Admitted:
    """An opened, authenticated envelope: the producer and its records as `Ledger.submit` takes them."""

    producer: str
    records: tuple[IntakeRecord | Rejected, ...]

    def dead_letters(self) -> list[DeadLetter]:
        """One dead letter per record refused before the ledger (its index, reason and detail)."""
        return [
            DeadLetter(item.reason, f"record {index}: {item.detail}", index)
            for index, item in enumerate(self.records)
            if isinstance(item, Rejected)
        ]


def refusal(policy: Policy, producer: str, record: IntakeRecord) -> Rejected | None:
    """`producer_not_allowed` if the policy does not let the producer send this record, else None.

    A record for a purpose the policy does not know is left to the ledger, which refuses it as
    `unknown_purpose` first, so both intake paths answer with the same reason as before.
    """
    purpose: object = getattr(record, "purpose", None)
    if isinstance(purpose, str) and policy.purpose(purpose) is None:
        return None
    allowed = policy.producers.get(producer)
    if (
        allowed is None
        or record.intake_type not in allowed.event_types
        or record.namespace not in allowed.namespaces
        or (isinstance(purpose, str) and allowed.purposes and purpose not in allowed.purposes)
    ):
        return Rejected(Reason.PRODUCER_NOT_ALLOWED, "the producer may not send this record")
    return None


def screen(
    policy: Policy, producer: str, items: Iterable[Item], parse: Callable[[Item], IntakeRecord]
) -> list[IntakeRecord | Rejected]:
    """Each item parsed and checked against the producer's permissions; a refusal in its place."""
    screened: list[IntakeRecord | Rejected] = []
    for item in items:
        try:
            record = parse(item)
        except Rejected as exc:
            screened.append(exc)
            continue
        screened.append(refusal(policy, producer, record) or record)
    return screened


class IntakeGate:
    """Opens, authenticates and parses Kafka intake envelopes."""

    def __init__(self, opener: IntakeOpener, parser: IntakeParser, policy: Callable[[], Policy]) -> None:
        self._opener = opener
        self._parser = parser
        self._policy = policy

    def admit(self, envelope: bytes) -> Admitted | DeadLetter:
        """The producer and its parsed records, or the dead letter of the whole envelope."""
        try:
            opened = self._opener.open(envelope)
        except EnvelopeError as exc:
            # Envelope errors are fixed texts (sizes and ids at most): no token, no record bytes.
            return DeadLetter(exc.reason, str(exc))
        policy = self._policy()
        producer = policy.producer_for_token(opened.token)
        if producer is None:
            return DeadLetter(Reason.UNAUTHORIZED, "the envelope's token belongs to no producer")
        records = screen(policy, producer, opened.records_avro, self._parser.from_avro)
        return Admitted(producer, tuple(records))
