"""`Producer`: how an upstream system sends intake records, over HTTP or sealed over Kafka.

Over HTTP (`send_http`) the batch goes to `POST /v1/events` with the producer's bearer token and the
answer comes back per record. Over Kafka (`send_kafka`) the token and the records (Avro single-object
bytes) are sealed with HPKE to the intake service's public key into one envelope per call, produced
to `consentry.intake` with `acks="all"` and idempotence on: the topic never holds a token or a
personal value in the clear. The Kafka key is a random id unless given, and never personal data.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from types import TracebackType
from typing import Final, Literal, Protocol, Self

import httpx
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from consentry.client.records import record_json
from consentry.core.avro import AvroCodec
from consentry.core.errors import ConsentryError, Reason, Rejected
from consentry.core.intake import IntakeParser, IntakeRecord
from consentry.core.sealing import Personal
from consentry.core.settings import REPO_ROOT
from consentry.core.transit import IntakeKeyError, IntakeSealer, TransitError

INTAKE_TOPIC: Final = "consentry.intake"
Status = Literal["accepted", "duplicate", "rejected"]
_STATUSES: Final[dict[object, Status]] = {s: s for s in ("accepted", "duplicate", "rejected")}
_KEY = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_FORCED_KAFKA_OPTIONS: Final = frozenset({"bootstrap_servers", "acks", "enable_idempotence"})
_MIN_PERSONAL_LEN: Final = 3


class ProducerError(ConsentryError):
    """A batch could not be sent, or the service refused all of it (`status` is the HTTP status)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RecordInvalid(ProducerError):
    """A record fails the intake checks before it is sealed for Kafka; nothing was sent."""

    def __init__(self, index: int, reason: Reason, detail: str) -> None:
        super().__init__(f"record {index}: {reason.value}: {detail}")
        self.index = index
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class RecordResult:
    """The intake service's answer to one record sent over HTTP."""

    status: Status
    subject_id: uuid.UUID | None = None
    event_id: uuid.UUID | None = None
    reason: Reason | None = None
    detail: str = ""


class _KafkaSender(Protocol):
    """The part of `AIOKafkaProducer` the SDK uses."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send_and_wait(self, topic: str, value: bytes, key: bytes) -> object: ...


class Producer:
    """Sends a producer's intake records over HTTP and/or sealed over Kafka.

    `token` is the producer's intake token. `http_url` is the intake service's base URL (for
    `send_http`); `kafka_bootstrap` the brokers and `intake_public_key` the intake public key (raw
    bytes, base64 or PEM text) for `send_kafka`. `codec` reads the Avro schemas (default: the
    repository's `schemas/`). `kafka_config` adds AIOKafkaProducer options such as TLS or SASL.
    """

    def __init__(
        self,
        token: str,
        *,
        http_url: str | None = None,
        kafka_bootstrap: str | None = None,
        intake_public_key: bytes | str | None = None,
        codec: AvroCodec | None = None,
        kafka_topic: str = INTAKE_TOPIC,
        kafka_config: Mapping[str, object] | None = None,
        timeout: float = 10.0,
    ) -> None:
        if not token:
            raise ProducerError("a producer token is required")
        forced = sorted(_FORCED_KAFKA_OPTIONS & set(kafka_config or {}))
        if forced:
            raise ProducerError(f"kafka_config may not set {forced[0]!r}")
        self._token = token
        self.http_url = http_url
        self.kafka_bootstrap = kafka_bootstrap
        self.kafka_topic = kafka_topic
        self._kafka_config = dict(kafka_config or {})
        self._timeout = timeout
        self._codec = codec
        self._parser: IntakeParser | None = None
        self._sealer: IntakeSealer | None = None
        if intake_public_key is not None:
            try:
                self._sealer = IntakeSealer(intake_public_key)
            except IntakeKeyError as exc:
                raise ProducerError(f"intake_public_key: {exc}") from exc
        self._http: httpx.Client | None = None
        self._kafka: _KafkaSender | None = None

    def __repr__(self) -> str:
        return f"Producer(http_url={self.http_url!r}, kafka_bootstrap={self.kafka_bootstrap!r})"

    # -- HTTP ------------------------------------------------------------------------------------

    def send_http(self, records: Sequence[IntakeRecord]) -> list[RecordResult]:
        """POSTs the records as one batch; the service's answer per record, in order."""
        if not records:
            raise ProducerError("no records to send")
        if self.http_url is None:
            raise ProducerError("this producer has no http_url")
        if self._http is None:
            self._http = httpx.Client(
                base_url=self.http_url,
                headers={"Authorization": f"Bearer {self._token}"},
                timeout=self._timeout,
            )
        try:
            answer = self._http.post("/v1/events", json={"events": [record_json(r) for r in records]})
        except httpx.HTTPError as exc:
            raise ProducerError(f"intake did not answer: {type(exc).__name__}") from exc
        if answer.status_code != httpx.codes.OK:
            raise ProducerError(_problem_text(answer), status=answer.status_code)
        try:
            results = answer.json()["results"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ProducerError("intake answered without per-record results") from exc
        if not isinstance(results, list) or len(results) != len(records):
            raise ProducerError("intake answered a different number of results")
        return [_result(item) for item in results]

    # -- Kafka -----------------------------------------------------------------------------------

    def seal(self, records: Iterable[IntakeRecord]) -> bytes:
        """The sealed envelope `send_kafka` would produce (records checked as the intake worker does)."""
        if self._sealer is None:
            raise ProducerError("this producer has no intake_public_key")
        parser = self._intake_parser()
        avro: list[bytes] = []
        for index, record in enumerate(records):
            try:
                data = parser.to_avro(record)
                parser.from_avro(data)
            except Rejected as exc:
                raise RecordInvalid(index, exc.reason, exc.detail) from exc
            avro.append(data)
        if not avro:
            raise ProducerError("no records to send")
        try:
            return self._sealer.seal(self._token, avro)
        except TransitError as exc:
            raise ProducerError(str(exc)) from exc

    async def send_kafka(self, records: Sequence[IntakeRecord], key: str | None = None) -> None:
        """Produces the records as ONE sealed envelope; returns once every in-sync replica has it.

        `key` is the Kafka key: a non-personal id of at most 128 characters of `[A-Za-z0-9._:-]`
        (default: a random UUID); a key that contains, or is part of, a record's subject reference
        or personal value is refused.
        """
        if self.kafka_bootstrap is None:
            raise ProducerError("this producer has no kafka_bootstrap")
        kafka_key = _kafka_key(key, records)
        envelope = self.seal(records)
        sender = await self._kafka_sender()
        try:
            await sender.send_and_wait(self.kafka_topic, value=envelope, key=kafka_key.encode())
        except KafkaError as exc:
            raise ProducerError(f"Kafka did not take the envelope: {type(exc).__name__}") from exc

    async def _kafka_sender(self) -> _KafkaSender:
        if self._kafka is None:
            sender: _KafkaSender = AIOKafkaProducer(
                bootstrap_servers=self.kafka_bootstrap,
                acks="all",
                enable_idempotence=True,
                **self._kafka_config,
            )
            try:
                await sender.start()
            except KafkaError as exc:
                await sender.stop()
                raise ProducerError(f"Kafka is not reachable: {type(exc).__name__}") from exc
            self._kafka = sender
        return self._kafka

    def _intake_parser(self) -> IntakeParser:
        if self._parser is None:
            codec = self._codec or AvroCodec(REPO_ROOT / "schemas")
            self._parser = IntakeParser(codec, lambda: datetime.now(UTC))
        return self._parser

    # -- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        """Closes the HTTP connection pool (the Kafka producer needs `aclose`)."""
        if self._http is not None:
            self._http.close()
            self._http = None

    async def aclose(self) -> None:
        """Flushes and stops the Kafka producer and closes the HTTP connection pool."""
        if self._kafka is not None:
            kafka, self._kafka = self._kafka, None
            await kafka.stop()
        self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _kafka_key(key: str | None, records: Sequence[IntakeRecord]) -> str:
    if key is None:
        return uuid.uuid4().hex
    if not _KEY.match(key):
        raise ProducerError("a Kafka key is 1 to 128 characters of [A-Za-z0-9._:-]")
    folded = key.casefold()
    for record in records:
        for value in _personal_values(record):
            if (len(value) >= _MIN_PERSONAL_LEN and value in folded) or (
                len(folded) >= _MIN_PERSONAL_LEN and folded in value
            ):
                raise ProducerError(
                    "the Kafka key must not contain a subject reference or personal value"
                )
    return key


def _personal_values(record: IntakeRecord) -> list[str]:
    values = [record.ref_value.casefold()]
    for spec in fields(record):
        value: object = getattr(record, spec.name)
        if isinstance(value, Personal):
            values.append(value.reveal().casefold())
        elif isinstance(value, Mapping):
            values += [v.reveal().casefold() for v in value.values() if isinstance(v, Personal)]
    return values


def _result(item: object) -> RecordResult:
    if not isinstance(item, dict) or item.get("status") not in _STATUSES:
        raise ProducerError("intake answered a result without a known status")
    try:
        return RecordResult(
            status=_STATUSES[item["status"]],
            subject_id=_uuid(item.get("subject_id")),
            event_id=_uuid(item.get("event_id")),
            reason=None if item.get("reason") is None else Reason(item["reason"]),
            detail=str(item.get("detail") or ""),
        )
    except ValueError as exc:
        raise ProducerError("intake answered a result this SDK does not understand") from exc


def _uuid(value: object) -> uuid.UUID | None:
    return None if value is None else uuid.UUID(str(value))


def _problem_text(answer: httpx.Response) -> str:
    try:
        body = answer.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return f"intake refused the batch ({answer.status_code}): {body['detail']}"
    return f"intake refused the batch ({answer.status_code})"
