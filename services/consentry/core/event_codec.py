"""Events written to and read from their stored bytes straight from and into the event classes.

`event_from_record(*codec.decode(data))` reads each record into a dict, then builds the event, its
meta, actor and sealed values from the dicts through their dataclass `__init__`s. Here each event
schema has a compiled reader of its own (`AvroCodec.reader_into`) that builds those objects while
it reads: no dicts, and each slot set directly. What it builds equals what event_from_record builds
from the decoded record, and it refuses exactly the bytes `decode` refuses (property tests compare
both ways on every event schema). Bytes of an older schema version, resolved by fastavro against
the newest one, and any schema whose personal fields this reader would not build as
event_from_record does take the record way.

Writing is the mirror image: each event schema's compiled writer (`AvroCodec.writer_from`) reads
the event, its meta, actor and sealed values by attribute, with no `event_to_record` dicts between,
and writes the bytes `encode(event_to_record(event))` writes. Where event_to_record refuses an
event (a personal value not sealed, ERASED), the writer finds an object of another class where a
SealedValue must be and refuses it with the same SchemaError.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from typing import Any, Final

from consentry.core.avro import AvroCodec, Contract
from consentry.core.avro_compiled import Reader, Writer
from consentry.core.events import (
    EVENT_TYPES,
    Actor,
    EventMeta,
    LedgerEvent,
    event_from_record,
    event_to_record,
)
from consentry.core.sealing import SealedValue

SEALED_VALUE: Final = "consentry.common.SealedValue"

# The classes each record of an event is read into.
RECORD_CLASSES: Final[dict[str, type]] = {
    **EVENT_TYPES,
    "consentry.common.EventMeta": EventMeta,
    "consentry.common.Actor": Actor,
    SEALED_VALUE: SealedValue,
}

# Each codec's compiled readers by writer fingerprint (functions of the schemas alone: they hold
# no reference to the codec, so a codec nobody uses any more goes with its entry).
_READERS: weakref.WeakKeyDictionary[AvroCodec, Mapping[bytes, Reader]] = weakref.WeakKeyDictionary()
_WRITERS: weakref.WeakKeyDictionary[AvroCodec, Mapping[bytes, Writer]] = weakref.WeakKeyDictionary()


def event_readers(codec: AvroCodec) -> Mapping[bytes, Reader]:
    """The codec's compiled event readers by fingerprint, compiled on first use."""
    readers = _READERS.get(codec)
    if readers is None:
        found = {}
        for contract in codec.contracts("events"):
            read = codec.reader_into(contract, RECORD_CLASSES) if _builds_alike(contract) else None
            if read is not None:
                found[contract.fingerprint] = read
        readers = _READERS[codec] = found
    return readers


def event_writers(codec: AvroCodec) -> Mapping[bytes, Writer]:
    """The codec's compiled event writers by fingerprint (newest schemas), compiled on first use."""
    writers = _WRITERS.get(codec)
    if writers is None:
        found = {}
        for contract in codec.contracts("events"):
            if codec.contract(contract.name) is not contract or not _builds_alike(contract):
                continue
            write = codec.writer_from(contract, RECORD_CLASSES)
            if write is not None:
                found[contract.fingerprint] = write
        writers = _WRITERS[codec] = found
    return writers


def event_encoder(codec: AvroCodec) -> Callable[[LedgerEvent], bytes]:
    """The stored bytes of an event whose personal values are sealed (its newest schema);
    SchemaError for an event of no schema or with a value not sealed, Rejected as `encode` is."""
    writers, contract_of, encode_with = event_writers(codec), codec.contract, codec.encode_with

    def encode(event: LedgerEvent) -> bytes:
        contract = contract_of(event.avro_name)
        if contract.fingerprint in writers:
            return encode_with(contract, event, writers)
        return encode_with(contract, event_to_record(event), writers)

    return encode


def decode_event(codec: AvroCodec, data: bytes) -> LedgerEvent:
    """The event of stored bytes, its personal values still sealed; Rejected as `decode` is."""
    return event_decoder(codec)(data)


def event_decoder(codec: AvroCodec) -> Callable[[bytes], LedgerEvent]:
    """`decode_event` for one codec, its readers looked up once (for pages of events)."""
    readers, decode_with = event_readers(codec), codec.decode_with

    def decode(data: bytes) -> LedgerEvent:
        contract, value = decode_with(data, readers)
        return value if isinstance(value, LedgerEvent) else event_from_record(contract, value)

    return decode


def _builds_alike(contract: Contract) -> bool:
    """Whether the class reader makes SealedValues exactly where event_from_record does.

    event_from_record seals what the schema marks `pii` (a SealedValue, a nullable one or a map
    of them); the class reader builds a SealedValue wherever that record is. They agree when
    the personal fields are those shapes and no other field holds a SealedValue at any depth.
    """
    for field in contract.expanded["fields"]:
        kind = field["type"]
        if field["name"] in contract.pii:
            if not _is_sealed_shape(kind):
                return False
        elif _holds_sealed(kind):
            return False
    return True


def _is_sealed_shape(schema: Any) -> bool:
    if isinstance(schema, list):
        others = [branch for branch in schema if branch != "null"]
        return len(others) == 1 and len(schema) == 2 and _is_sealed(others[0])
    if isinstance(schema, dict) and schema.get("type") == "map":
        return _is_sealed(schema["values"])
    return _is_sealed(schema)


def _is_sealed(schema: Any) -> bool:
    return isinstance(schema, dict) and schema.get("name") == SEALED_VALUE


def _holds_sealed(schema: Any) -> bool:
    if isinstance(schema, list):
        return any(_holds_sealed(branch) for branch in schema)
    if not isinstance(schema, dict):
        return False
    if _is_sealed(schema):
        return True
    kind = schema.get("type")
    if kind == "record":
        return any(_holds_sealed(field["type"]) for field in schema["fields"])
    if kind == "map":
        return _holds_sealed(schema["values"])
    if kind == "array":
        return _holds_sealed(schema["items"])
    return False
