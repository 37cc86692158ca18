"""Avro contracts: every schema under `schemas/` is parsed once and used with single-object encoding.

Single-object encoding (Avro spec) is `C3 01`, the 8-byte little-endian CRC-64-AVRO fingerprint of the
writer schema's parsing canonical form, then the binary body. Any Avro implementation can read the log
with the schema files alone. Schema files carry extra attributes Avro ignores: `version` on records,
`pii` / `seal_scope` on personal fields and `intake_type` on intake records.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint as avro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from consentry.core.avro_compiled import (
    ClassMismatch,
    Reader,
    Unsupported,
    Writer,
    compile_reader,
    compile_schema,
    compile_writer,
)
from consentry.core.errors import Reason, Rejected, SchemaError

MAGIC = b"\xc3\x01"
HEADER_LEN = 10


@dataclass(frozen=True)
class Contract:
    """One parsed schema file: its name, version, fingerprint and personal fields."""

    name: str
    kind: str
    version: int
    path: Path
    parsed: Any = field(repr=False)
    expanded: dict[str, Any] = field(repr=False)
    fingerprint: bytes
    pii: Mapping[str, str | None]
    pii_maps: frozenset[str]
    intake_type: str | None
    # Compiled body writer and reader (see avro_compiled); None where fastavro does the work.
    write: Writer | None = field(default=None, repr=False, compare=False)
    read: Reader | None = field(default=None, repr=False, compare=False)

    @property
    def short_name(self) -> str:
        return self.name.rsplit(".", 1)[-1]

    @functools.cached_property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f["name"] for f in self.expanded["fields"])

    @functools.cached_property
    def required_fields(self) -> tuple[str, ...]:
        return tuple(f["name"] for f in self.expanded["fields"] if "default" not in f)

    @functools.cached_property
    def defaults(self) -> Mapping[str, Any]:
        """The default of each field that has one."""
        return {f["name"]: f["default"] for f in self.expanded["fields"] if "default" in f}


class AvroCodec:
    """Encodes and decodes records of the schemas in one directory (parsed once, at construction)."""

    def __init__(self, schema_dir: Path) -> None:
        if not schema_dir.is_dir():
            raise SchemaError(f"schema directory not found: {schema_dir}")
        self.schema_dir = schema_dir
        self._named: dict[str, Any] = {}
        # Expanded copies of the named types, so nested references expand fully (canonical form).
        self._named_expanded: dict[str, Any] = {}
        self._by_name: dict[str, Contract] = {}
        self._by_fingerprint: dict[bytes, Contract] = {}
        self._by_intake_type: dict[str, Contract] = {}
        for kind in ("common", "events", "intake"):
            for path in sorted((schema_dir / kind).glob("*.avsc")):
                self._load(kind, path)
        if not self._by_name:
            raise SchemaError(f"no schema files under {schema_dir}")

    def _load(self, kind: str, path: Path) -> None:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            parsed: dict[str, Any] = fastavro.parse_schema(raw, named_schemas=self._named)  # type: ignore[assignment]  # a record file parses to a dict
            expanded: dict[str, Any] = fastavro.parse_schema(  # type: ignore[assignment]  # likewise
                raw, named_schemas=self._named_expanded, expand=True
            )
        except (ValueError, KeyError, fastavro.schema.SchemaParseException) as exc:
            raise SchemaError(f"{path.name}: {exc}") from exc
        if not isinstance(parsed, dict) or parsed.get("type") != "record":
            raise SchemaError(f"{path.name}: each schema file must hold one record")
        canonical = to_parsing_canonical_form(expanded)
        write: Writer | None
        read: Reader | None
        try:
            write, read = compile_schema(expanded)
        except Unsupported:
            write = read = None
        contract = Contract(
            name=parsed["name"],
            kind=kind,
            version=int(raw.get("version", 1)),
            path=path,
            parsed=parsed,
            expanded=expanded,
            # fastavro prints the CRC-64-AVRO bytes little-endian, as single-object encoding wants.
            fingerprint=bytes.fromhex(avro_fingerprint(canonical, "CRC-64-AVRO")),
            pii={f["name"]: f.get("seal_scope") for f in raw["fields"] if f.get("pii")},
            pii_maps=frozenset(
                f["name"]
                for f in raw["fields"]
                if f.get("pii") and isinstance(f["type"], dict) and f["type"].get("type") == "map"
            ),
            intake_type=raw.get("intake_type"),
            write=write,
            read=read,
        )
        previous = self._by_name.get(contract.name)
        if previous is not None and previous.version >= contract.version:
            raise SchemaError(f"{path.name}: {contract.name} v{contract.version} is not newer")
        self._by_name[contract.name] = contract
        self._by_fingerprint[contract.fingerprint] = contract
        if contract.intake_type:
            self._by_intake_type[contract.intake_type] = contract

    def contract(self, name: str) -> Contract:
        """The newest contract of that full name (e.g. `consentry.events.DataUpdated`)."""
        try:
            return self._by_name[name]
        except KeyError:
            raise SchemaError(f"unknown schema {name}") from None

    def intake_contract(self, intake_type: str) -> Contract:
        """The contract of an intake record type such as `data.update`."""
        try:
            return self._by_intake_type[intake_type]
        except KeyError:
            raise Rejected(Reason.UNKNOWN_EVENT_TYPE, "unknown intake record type") from None

    def contracts(self, kind: str | None = None) -> Iterator[Contract]:
        """Every contract read from the schema directory, of one kind if given."""
        seen = {id(c): c for c in self._by_fingerprint.values()}
        return (c for c in seen.values() if kind is None or c.kind == kind)

    def encode(self, name: str, record: Mapping[str, Any]) -> bytes:
        """Single-object encoding of a record with the newest schema of that name."""
        return self.encode_with(self.contract(name), record, {})

    def writer_from(self, contract: Contract, classes: Mapping[str, type]) -> Writer | None:
        """A compiled writer of the contract's bodies that reads the records named in `classes`
        from instances of those classes (see `compile_writer`), for `encode_with`; None where
        fastavro writes the contract (no compiled codec)."""
        if contract.write is None:
            return None
        try:
            return compile_writer(contract.expanded, classes)
        except Unsupported:
            return None

    def encode_with(self, contract: Contract, value: Any, writers: Mapping[bytes, Writer]) -> bytes:
        """`encode` of a value with the newest contract of its name, through the writer given for
        the contract's fingerprint (from `writer_from`) where there is one. Same checks, same
        errors; a value of another class where that writer reads an instance is a SchemaError."""
        if self._by_name.get(contract.name) is not contract:
            raise SchemaError(f"{contract.short_name} v{contract.version} is not the newest")
        try:
            write = writers.get(contract.fingerprint) or contract.write
            if write is not None:
                out = bytearray(MAGIC)
                out += contract.fingerprint
                write(out, value)
                return bytes(out)
            buffer = io.BytesIO()
            buffer.write(MAGIC)
            buffer.write(contract.fingerprint)
            fastavro.schemaless_writer(buffer, contract.parsed, value, strict_allow_default=True)
            return buffer.getvalue()
        except ClassMismatch as exc:
            raise SchemaError(f"{contract.short_name}: {exc}") from None
        except (ValueError, TypeError, AttributeError, KeyError, OverflowError) as exc:
            raise Rejected(
                Reason.INVALID_VALUE,
                f"record does not match {contract.short_name}: {_safe_error(exc)}",
            ) from exc

    def writer_of(self, data: bytes) -> Contract | None:
        """The contract single-object bytes were written with, from the header alone (no decoding)."""
        if len(data) < HEADER_LEN or data[:2] != MAGIC:
            return None
        return self._by_fingerprint.get(data[2:HEADER_LEN])

    def reader_into(self, contract: Contract, classes: Mapping[str, type]) -> Reader | None:
        """A compiled reader of the contract's bodies that reads the records named in `classes`
        into instances of those classes (see `compile_reader`), for `decode_with`; None where
        fastavro reads the contract (no compiled codec, or an older version of its name)."""
        if contract.read is None or self._by_name[contract.name] is not contract:
            return None
        try:
            return compile_reader(contract.expanded, classes)
        except Unsupported:
            return None

    def decode(self, data: bytes) -> tuple[Contract, dict[str, Any]]:
        """Decodes single-object bytes into the writer's contract and the record."""
        contract, record = self.decode_with(data, {})
        if not isinstance(record, dict):
            raise Rejected(Reason.MALFORMED_AVRO, "body is not a record")
        return contract, record

    def decode_with(self, data: bytes, readers: Mapping[bytes, Reader]) -> tuple[Contract, Any]:
        """`decode`, with the reader given for a fingerprint (from `reader_into`) where there is
        one: the record comes back as whatever that reader builds. Same checks, same errors."""
        data = bytes(data)  # a no-op for bytes; bytearray and memoryview become bytes
        if len(data) < HEADER_LEN or data[:2] != MAGIC:
            raise Rejected(Reason.MALFORMED_AVRO, "not Avro single-object encoding")
        contract = self._by_fingerprint.get(data[2:HEADER_LEN])
        if contract is None:
            raise Rejected(Reason.UNKNOWN_SCHEMA, "schema fingerprint is not one of ours")
        reader = self._by_name[contract.name]
        read = readers.get(contract.fingerprint) or contract.read
        try:
            if reader is contract and read is not None:
                record, end = read(data, HEADER_LEN)
            else:
                buffer = io.BytesIO(data)
                buffer.seek(HEADER_LEN)
                record = fastavro.schemaless_reader(buffer, contract.parsed, reader.parsed)
                end = buffer.tell()
        except (
            EOFError,
            ValueError,
            TypeError,
            IndexError,
            KeyError,
            UnicodeDecodeError,
            OverflowError,
            MemoryError,
        ) as exc:
            raise Rejected(
                Reason.MALFORMED_AVRO, f"body does not decode as {contract.short_name}"
            ) from exc
        if end != len(data):
            raise Rejected(Reason.MALFORMED_AVRO, "trailing bytes after the record")
        return reader, record


def _safe_error(exc: Exception) -> str:
    """The exception's class only: fastavro's messages can quote the offending value."""
    return type(exc).__name__
